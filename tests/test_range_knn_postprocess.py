"""kNN post-processing against a loop-by-loop numpy restatement of the released `KNN.py`, on
small scans with occlusions (several points per pixel), empty pixels, image borders and ties."""

import math

import jax
import numpy as np
import pytest

from leakjax import range_image as ri

HEIGHT, WIDTH = 8, 24


def released_gaussian(search, sigma):
    """`get_gaussian_kernel` of KNN.py, in float64 with plain loops, rounded to float32."""
    mean = (search - 1) / 2.0
    kernel = np.zeros((search, search))
    for row in range(search):
        for col in range(search):
            squared = (col - mean) ** 2 + (row - mean) ** 2
            kernel[row, col] = math.exp(-squared / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    return (kernel / kernel.sum()).astype(np.float32)


def released_knn(proj_range, unproj_range, proj_argmax, px, py, knn, search, sigma, cutoff,
                 nclasses, ignore_class=0):  # fmt: skip
    """KNN.forward for one scan. Ties as stated by leakjax: lowest window position in the top-k,
    lowest class in the vote."""
    pad = (search - 1) // 2
    inverse_gauss = (1 - released_gaussian(search, sigma)).reshape(-1)
    labels = np.zeros(len(px), np.int64)
    for n in range(len(px)):
        window_range, window_label = [], []
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                row, col = py[n] + dy, px[n] + dx
                if 0 <= row < proj_range.shape[0] and 0 <= col < proj_range.shape[1]:
                    value, label = proj_range[row, col], proj_argmax[row, col]
                    value = np.float32(np.inf) if value < 0 else value
                else:  # F.unfold zero padding
                    value, label = np.float32(0.0), 0
                window_range.append(value)
                window_label.append(label)
        window_range = np.array(window_range, np.float32)
        window_range[(search * search - 1) // 2] = unproj_range[n]
        distances = np.abs(window_range - unproj_range[n]) * inverse_gauss
        nearest = np.argsort(distances, kind="stable")[:knn]
        votes = np.array(window_label)[nearest]
        if cutoff > 0:
            votes[distances[nearest] > cutoff] = nclasses
        counts = np.bincount(votes, minlength=nclasses + 1)[:nclasses]
        if ignore_class is None:
            labels[n] = np.argmax(counts)
        else:
            candidates = [c for c in range(nclasses) if c != ignore_class]
            labels[n] = candidates[int(np.argmax(counts[candidates]))]
    return labels


def occluded_scan(seed, num_points, occupancy, num_classes):
    """Pixels and ranges of a scan (closest point wins each pixel), quantised ranges so equal
    distances are common, and a predicted label image that also covers empty pixels."""
    rng = np.random.default_rng(seed)
    num_pixels = max(1, int(occupancy * HEIGHT * WIDTH))
    occupied = rng.choice(HEIGHT * WIDTH, num_pixels, replace=False)
    flat = np.concatenate([occupied, rng.choice(occupied, num_points - num_pixels)])
    px, py = (flat % WIDTH).astype(np.int32), (flat // WIDTH).astype(np.int32)
    point_range = (rng.integers(2, 24, num_points) * 0.5).astype(np.float32)
    range_image = np.full((HEIGHT, WIDTH), -1.0, np.float32)
    for n in np.argsort(point_range, kind="stable")[::-1]:
        range_image[py[n], px[n]] = point_range[n]
    label_image = rng.integers(0, num_classes, (HEIGHT, WIDTH)).astype(np.int32)
    return range_image, point_range, label_image, px, py


SETTINGS = [
    dict(knn=5, search=5, sigma=1.0, cutoff=1.0, ignore_class=0),  # released defaults
    # The cutoff equals the distance of a neighbour 1 m away at a side of the 3 x 3 window, so
    # "distance > cutoff" (not >=) decides those votes.
    dict(
        knn=4,
        search=3,
        sigma=0.7,
        cutoff=float(1 - released_gaussian(3, 0.7)[0, 1]),
        ignore_class=0,
    ),  # fmt: skip
    dict(knn=7, search=5, sigma=2.0, cutoff=0.0, ignore_class=None),  # no cutoff: empties vote
]


@pytest.mark.parametrize("setting", SETTINGS)
def test_knn_matches_released_rule_on_padded_batch(setting):
    num_classes = 4
    scans = [occluded_scan(10, 150, 0.5, num_classes), occluded_scan(11, 90, 0.15, num_classes)]
    capacity = 160
    batch = {
        "range_image": np.stack([s[0] for s in scans]),
        "label_image": np.stack([s[2] for s in scans]),
        "point_range": np.full((2, capacity), -1.0, np.float32),
        "px": np.full((2, capacity), -1, np.int32),
        "py": np.full((2, capacity), -1, np.int32),
        "point_mask": np.zeros((2, capacity), bool),
    }
    for b, (_, point_range, _, px, py) in enumerate(scans):
        num = len(px)
        batch["point_range"][b, :num], batch["px"][b, :num], batch["py"][b, :num] = (
            point_range,
            px,
            py,
        )
        batch["point_mask"][b, :num] = True
    post = jax.jit(lambda arrays: ri.knn_postprocess(**arrays, num_classes=num_classes, **setting))
    got = np.asarray(post(batch))
    for b, (range_image, point_range, label_image, px, py) in enumerate(scans):
        num = len(px)
        want = released_knn(
            range_image, point_range, label_image, px, py, setting["knn"], setting["search"],
            setting["sigma"], setting["cutoff"], num_classes, setting["ignore_class"],
        )  # fmt: skip
        np.testing.assert_array_equal(got[b, :num], want)
        np.testing.assert_array_equal(got[b, num:], -1)
        if setting["ignore_class"] == 0:
            assert np.all(got[b, :num] != 0)
        # Every point is labelled, including the ones hidden behind a closer point.
        assert np.any(range_image[py, px] < point_range)


def test_gaussian_weights_match_the_released_float32_kernel():
    for search, sigma in [(3, 0.5), (5, 1.0), (7, 2.0)]:
        np.testing.assert_array_equal(
            ri.gaussian_window_weights(search, sigma), released_gaussian(search, sigma)
        )
        # KNN.py computes it in float32 (torch); equal up to float32 rounding.
        grid = np.arange(search, dtype=np.float32)
        squared = (grid[None, :] - (search - 1) / 2) ** 2 + (grid[:, None] - (search - 1) / 2) ** 2
        kernel = np.exp(-squared / np.float32(2 * sigma**2)) / np.float32(2 * np.pi * sigma**2)
        np.testing.assert_allclose(
            ri.gaussian_window_weights(search, sigma), kernel / kernel.sum(), rtol=1e-6
        )


def test_bad_arguments_raise():
    arrays = {
        "range_image": np.zeros((1, HEIGHT, WIDTH), np.float32),
        "point_range": np.zeros((1, 3), np.float32),
        "label_image": np.zeros((1, HEIGHT, WIDTH), np.int32),
        "px": np.zeros((1, 3), np.int32),
        "py": np.zeros((1, 3), np.int32),
        "point_mask": np.ones((1, 3), bool),
    }
    with pytest.raises(ValueError, match="odd"):
        ri.knn_postprocess(**arrays, num_classes=4, search=4)
    with pytest.raises(ValueError, match="knn"):
        ri.knn_postprocess(**arrays, num_classes=4, knn=26, search=5)
    with pytest.raises(ValueError, match="ignore_class"):
        ri.knn_postprocess(**arrays, num_classes=4, ignore_class=4)
    with pytest.raises(ValueError, match="px must be"):
        ri.knn_postprocess(**{**arrays, "px": np.zeros((1, 2), np.int32)}, num_classes=4)
    with pytest.raises(ValueError, match="label_image"):
        ri.knn_postprocess(**{**arrays, "label_image": np.zeros((HEIGHT, WIDTH))}, num_classes=4)
