"""The random-sampling index pyramid (host and device) against a numpy restatement of the
released RandLA-Net pipeline (brute-force distances), on a padded batch with a level of fewer than
k points."""

import jax
import numpy as np
import pytest

from leakjax import points as pts

RATIOS = (4, 4, 2)
K = 8
CAPACITY = 256
NUM_VALID = np.array([256, 150, 10])  # sample 2: 10 -> 3 -> 1 valid points (fewer than K)


def reference_pyramid(cloud, num_valid, ratios, k):
    """The released tf_map for one crop, restated with numpy: per layer the kNN of the level's
    (valid) points among themselves, the first N/r points kept, their neighbourhoods as pooling
    indices and every point's nearest kept point. Unfilled slots: the sentinel of the module."""
    sizes = [len(cloud)]
    for ratio in ratios:
        sizes.append(sizes[-1] // ratio)
    counts = [num_valid]
    for size, ratio in zip(sizes[1:], ratios):
        counts.append(min(size, int(np.ceil(counts[-1] / ratio))))
    coords = cloud.astype(np.float64)
    out = {"neighbours": [], "found": [], "pools": [], "upsamples": [], "mask": []}
    for layer in range(len(ratios)):
        size, count, next_size = sizes[layer], counts[layer], sizes[layer + 1]
        level = coords[:count]
        d2 = ((level[:, None] - level[None]) ** 2).sum(-1)
        num_found = min(k, count)
        neighbours = np.full((size, k), size)
        neighbours[:count, :num_found] = np.argsort(d2, axis=1, kind="stable")[:, :num_found]
        found = np.zeros((size, k), bool)
        found[:count, :num_found] = True
        upsamples = np.full((size, 1), next_size)
        upsamples[:count, 0] = np.argmin(d2[:, : counts[layer + 1]], axis=1)
        out["neighbours"].append(neighbours)
        out["found"].append(found)
        out["pools"].append(neighbours[:next_size])
        out["upsamples"].append(upsamples)
        out["mask"].append(np.arange(size) < count)
    return out


def padded_crops(seed):
    rng = np.random.default_rng(seed)
    crops = rng.uniform(-5, 5, (3, CAPACITY, 3)).astype(np.float32)
    crops[2, 10:] = 1e3  # padding far away would be everyone's neighbour if it leaked
    return crops


def test_hierarchy_sizes_are_the_released_counts():
    assert pts.hierarchy_sizes(45056, (4, 4, 4, 4)) == (45056, 11264, 2816, 704, 176)
    assert pts.hierarchy_sizes(40960, (4, 4, 4, 4, 2)) == (40960, 10240, 2560, 640, 160, 80)
    with pytest.raises(ValueError, match="empty level"):
        pts.hierarchy_sizes(10, (4, 4))


def test_host_hierarchy_equals_numpy_restatement():
    crops = padded_crops(0)
    pyramid = pts.sampling_hierarchy_host(crops, RATIOS, K, NUM_VALID, num_threads=2)
    assert len(pyramid.neighbours) == len(RATIOS)
    for b in range(3):
        expected = reference_pyramid(crops[b], NUM_VALID[b], RATIOS, K)
        for layer in range(len(RATIOS)):
            size = len(expected["mask"][layer])
            np.testing.assert_array_equal(pyramid.points[layer][b], crops[b, :size])
            np.testing.assert_array_equal(pyramid.point_mask[layer][b], expected["mask"][layer])
            for name, ref in [
                ("neighbours", "neighbours"),
                ("neighbour_found", "found"),
                ("pools", "pools"),
                ("upsamples", "upsamples"),
            ]:
                got = getattr(pyramid, name)[layer][b]
                np.testing.assert_array_equal(got, expected[ref][layer], err_msg=f"{name} {layer}")
            np.testing.assert_array_equal(
                pyramid.pool_found[layer][b],
                expected["found"][layer][: len(expected["pools"][layer])],
            )
    assert pyramid.neighbours[0].dtype == np.int32 and pyramid.upsamples[0].dtype == np.int32


def assert_same_distances(got, expected, found, level_points, target_points):
    """Index arrays may differ on equidistant neighbours: compare the distances they select."""
    rows = np.nonzero(found.any(axis=1))[0]
    for row in rows:
        cols = found[row]
        d_got = ((level_points[row] - target_points[got[row, cols]]) ** 2).sum(-1)
        d_exp = ((level_points[row] - target_points[expected[row, cols]]) ** 2).sum(-1)
        np.testing.assert_allclose(d_got, d_exp, rtol=1e-5, atol=1e-6)


def test_device_hierarchy_equals_numpy_restatement():
    crops = padded_crops(1)
    build = jax.jit(lambda c, n: pts.sampling_hierarchy_device(c, RATIOS, K, n, chunk_size=48))
    pyramid = jax.tree.map(np.asarray, build(crops, NUM_VALID))
    for b in range(3):
        expected = reference_pyramid(crops[b], NUM_VALID[b], RATIOS, K)
        for layer in range(len(RATIOS)):
            level = crops[b, : len(expected["mask"][layer])].astype(np.float64)
            next_level = level[: len(expected["pools"][layer])]
            found = expected["found"][layer]
            np.testing.assert_array_equal(pyramid.point_mask[layer][b], expected["mask"][layer])
            np.testing.assert_array_equal(pyramid.neighbour_found[layer][b], found)
            for name, ref in [("neighbours", "neighbours"), ("upsamples", "upsamples")]:
                got, exp = getattr(pyramid, name)[layer][b], expected[ref][layer]
                unfound = ~(found if name == "neighbours" else expected["mask"][layer][:, None])
                np.testing.assert_array_equal(got[unfound], exp[unfound])
                target = level if name == "neighbours" else next_level
                assert_same_distances(got, exp, ~unfound, level, target)
            np.testing.assert_array_equal(
                pyramid.pools[layer][b], pyramid.neighbours[layer][b][: len(next_level)]
            )


def test_bad_pyramid_inputs_are_errors():
    crops = padded_crops(2)
    with pytest.raises(ValueError, match="fewer than k"):
        pts.sampling_hierarchy_host(crops, (4, 4, 4, 2), K)
    with pytest.raises(ValueError, match="num_valid"):
        pts.sampling_hierarchy_host(crops, RATIOS, K, np.array([1, 2, 300]))
    with pytest.raises(ValueError, match="ratios"):
        pts.sampling_hierarchy_device(crops, (4, 0), K)
    with pytest.raises(ValueError, match=r"\[B, N, 3\]"):
        pts.sampling_hierarchy_device(crops[0], RATIOS, K)
