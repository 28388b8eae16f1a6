"""Spherical projection, normalised input, label image and unprojection against a numpy
restatement of lidar-bonnetal's `laserscan.py` / kitti `parser.py`, written here with loops."""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leakjax import range_image as ri

HEIGHT, WIDTH = 16, 128
FOV_UP_DEG, FOV_DOWN_DEG = 3.0, -25.0


def released_projection(points, height, width, fov_up_deg, fov_down_deg):
    """`LaserScan.do_range_projection` with a stable sort (ties: lowest index written last)."""
    fov_up = fov_up_deg / 180.0 * np.pi
    fov_down = fov_down_deg / 180.0 * np.pi
    fov = abs(fov_down) + abs(fov_up)
    depth = np.linalg.norm(points[:, :3], 2, axis=1)
    yaw = -np.arctan2(points[:, 1], points[:, 0])
    pitch = np.arcsin(points[:, 2] / depth)
    proj_x = 0.5 * (yaw / np.pi + 1.0) * width
    proj_y = (1.0 - (pitch + abs(fov_down)) / fov) * height
    proj_x = np.maximum(0, np.minimum(width - 1, np.floor(proj_x))).astype(np.int32)
    proj_y = np.maximum(0, np.minimum(height - 1, np.floor(proj_y))).astype(np.int32)
    out = {
        "range": np.full((height, width), -1, np.float32),
        "xyz": np.full((height, width, 3), -1, np.float32),
        "remission": np.full((height, width), -1, np.float32),
        "point_index": np.full((height, width), -1, np.int32),
    }
    for i in np.argsort(depth, kind="stable")[::-1]:  # decreasing depth, later writes win
        row, col = proj_y[i], proj_x[i]
        out["range"][row, col] = depth[i]
        out["xyz"][row, col] = points[i, :3]
        out["remission"][row, col] = points[i, 3]
        out["point_index"][row, col] = i
    out["mask"] = out["point_index"] > 0
    out.update(px=proj_x, py=proj_y, point_range=depth)
    return out


def points_at_pixels(rng, rows, cols, ranges, height=HEIGHT, width=WIDTH):
    """float32 [n, 4] points whose continuous pixel coordinates are inside (row, col), away from
    the pixel borders so float rounding cannot move them."""
    fov_up, fov_down = np.radians(FOV_UP_DEG), np.radians(FOV_DOWN_DEG)
    u = cols + rng.uniform(0.2, 0.8, len(cols))
    v = rows + rng.uniform(0.2, 0.8, len(rows))
    yaw = (2.0 * u / width - 1.0) * np.pi
    pitch = (1.0 - v / height) * (fov_up - fov_down) + fov_down
    xyz = ranges[:, None] * np.stack(
        [np.cos(pitch) * np.cos(-yaw), np.cos(pitch) * np.sin(-yaw), np.sin(pitch)], -1
    )
    remission = rng.uniform(0, 1, len(rows))
    return np.concatenate([xyz, remission[:, None]], -1).astype(np.float32)


def occluded_scan(seed, num_pixels=150):
    """A scan with 1-4 points per pixel, exact duplicates (range ties), points outside the
    vertical field of view and on the +-pi seam."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(HEIGHT * WIDTH, num_pixels, replace=False)
    per_pixel = rng.integers(1, 5, num_pixels)
    rows, cols = np.repeat(flat // WIDTH, per_pixel), np.repeat(flat % WIDTH, per_pixel)
    points = points_at_pixels(rng, rows, cols, rng.uniform(1.0, 60.0, len(rows)))
    duplicates = points[rng.choice(len(points), 20, replace=False)].copy()
    duplicates[:, 3] = rng.uniform(0, 1, 20)  # same xyz and range, another remission
    outside_fov = np.array(
        [[5.0, 1.0, 2.0, 0.1], [5.0, -1.0, -4.0, 0.2], [-3.0, 0.5, 3.0, 0.3]], np.float32
    )
    seam = np.array([[-7.0, 0.0, -1.0, 0.4], [-7.0, -0.0, -1.0, 0.5]], np.float32)
    points = np.concatenate([points, duplicates, outside_fov, seam])
    return points[rng.permutation(len(points))]


def check_against_reference(got, points, mask_excludes_point_zero=True):
    want = released_projection(points, HEIGHT, WIDTH, FOV_UP_DEG, FOV_DOWN_DEG)
    np.testing.assert_array_equal(got.px, want["px"])
    np.testing.assert_array_equal(got.py, want["py"])
    np.testing.assert_array_equal(got.point_index, want["point_index"])
    want_mask = want["mask"] if mask_excludes_point_zero else want["point_index"] >= 0
    np.testing.assert_array_equal(got.mask, want_mask)
    for name in ["range", "xyz", "remission", "point_range"]:
        np.testing.assert_allclose(got.__getattribute__(name), want[name], rtol=1e-6, atol=1e-6)
    return want


def test_projection_matches_released_laserscan():
    points = occluded_scan(0)
    got = jax.jit(ri.spherical_projection, static_argnums=(1, 2, 3, 4))(
        points, HEIGHT, WIDTH, FOV_UP_DEG, FOV_DOWN_DEG
    )
    want = check_against_reference(got, points)
    # The scan really has occlusions, range ties, clamped rows and both seam columns.
    flat = want["py"].astype(np.int64) * WIDTH + want["px"]
    assert np.bincount(flat).max() >= 3
    xyz_keys = [tuple(p) for p in points[:, :3]]
    assert len(set(xyz_keys)) < len(xyz_keys)
    assert {0, HEIGHT - 1} <= set(want["py"].tolist())
    assert {0, WIDTH - 1} <= set(want["px"].tolist())
    # Ties: among equal ranges in a pixel the lowest index wins.
    for row, col in zip(*np.nonzero(want["point_index"] >= 0)):
        in_pixel = np.nonzero(flat == row * WIDTH + col)[0]
        closest = in_pixel[want["point_range"][in_pixel] == want["point_range"][in_pixel].min()]
        assert got.point_index[row, col] == closest.min()


def test_point_zero_mask_quirk_and_plain_occupancy():
    points = occluded_scan(1, num_pixels=40)
    points = np.concatenate(
        [
            points_at_pixels(
                np.random.default_rng(5), np.array([3]), np.array([7]), np.array([0.5])
            ),
            points,
        ]
    )
    for excludes in (True, False):
        got = ri.spherical_projection(
            points, HEIGHT, WIDTH, FOV_UP_DEG, FOV_DOWN_DEG, mask_excludes_point_zero=excludes
        )
        check_against_reference(got, points, mask_excludes_point_zero=excludes)
        assert got.point_index[3, 7] == 0 and bool(got.mask[3, 7]) == (not excludes)


def test_padded_batch_under_vmap_equals_each_scan():
    scans = [occluded_scan(2, 60), occluded_scan(3, 90)]
    capacity = max(len(s) for s in scans) + 7
    rng = np.random.default_rng(4)
    batch = rng.uniform(-20, 20, (2, capacity, 4)).astype(np.float32)  # garbage in the padding
    point_mask = np.zeros((2, capacity), bool)
    for b, scan in enumerate(scans):
        batch[b, : len(scan)] = scan
        point_mask[b, : len(scan)] = True
    project = functools.partial(ri.spherical_projection, height=HEIGHT, width=WIDTH)
    got = jax.jit(jax.vmap(lambda p, m: project(p, point_mask=m)))(batch, point_mask)
    for b, scan in enumerate(scans):
        num = len(scan)
        one = jax.tree_util.tree_map(lambda x, b=b: np.asarray(x[b]), got)
        np.testing.assert_array_equal(one.px[num:], -1)
        np.testing.assert_array_equal(one.py[num:], -1)
        np.testing.assert_array_equal(one.point_range[num:], -1.0)
        trimmed = one.replace(px=one.px[:num], py=one.py[:num], point_range=one.point_range[:num])
        check_against_reference(trimmed, scan)


def test_normalized_input_and_label_image_as_parser():
    points = occluded_scan(6, num_pixels=80)
    labels = np.random.default_rng(7).integers(0, 20, len(points)).astype(np.int32)
    proj = ri.spherical_projection(points, HEIGHT, WIDTH)
    want = released_projection(points, HEIGHT, WIDTH, 3.0, -25.0)
    # kitti parser.py: channels first, (proj - means) / stds, times the mask.
    means = np.array([12.12, 10.88, 0.23, -1.04, 0.21], np.float32)  # darknet53.yaml img_means
    stds = np.array([12.32, 11.47, 6.91, 0.86, 0.16], np.float32)  # darknet53.yaml img_stds
    stacked = np.concatenate(
        [want["range"][None], want["xyz"].transpose(2, 0, 1), want["remission"][None]]
    )
    normalized = (stacked - means[:, None, None]) / stds[:, None, None] * want["mask"]
    np.testing.assert_allclose(
        ri.normalized_input(proj), normalized.transpose(1, 2, 0), rtol=1e-5, atol=1e-5
    )
    # SemLaserScan.do_label_projection, then parser.py `proj_labels * proj_mask`.
    label_image = np.zeros((HEIGHT, WIDTH), np.int32)
    for row, col in zip(*np.nonzero(want["point_index"] >= 0)):
        label_image[row, col] = labels[want["point_index"][row, col]]
    label_image = label_image * want["mask"]
    np.testing.assert_array_equal(ri.project_labels(labels, proj), label_image)
    with pytest.raises(ValueError, match="point_labels"):
        ri.project_labels(labels[:-1], proj)


def test_unprojection_round_trip_and_gather():
    points = occluded_scan(8, num_pixels=70)
    proj = ri.spherical_projection(points, HEIGHT, WIDTH)
    point_index = np.asarray(proj.point_index)
    winners = point_index[point_index >= 0]
    back_range = np.asarray(ri.image_to_points(proj.range, proj.px, proj.py))
    back_xyz = np.asarray(ri.image_to_points(proj.xyz, proj.px, proj.py))
    np.testing.assert_array_equal(back_range[winners], np.asarray(proj.point_range)[winners])
    np.testing.assert_array_equal(back_xyz[winners], points[winners, :3])
    # A hidden point reads the pixel of the closer point that won it.
    hidden = np.setdiff1d(np.arange(len(points)), winners)
    assert len(hidden) > 0
    occluder = point_index[np.asarray(proj.py)[hidden], np.asarray(proj.px)[hidden]]
    np.testing.assert_array_equal(back_xyz[hidden], points[occluder, :3])
    assert np.all(back_range[hidden] <= np.asarray(proj.point_range)[hidden])
    # Batched multi-channel image with padded points (-1) against numpy fancy indexing.
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(2, HEIGHT, WIDTH, 3)).astype(np.float32)
    px = rng.integers(0, WIDTH, (2, 11)).astype(np.int32)
    py = rng.integers(0, HEIGHT, (2, 11)).astype(np.int32)
    px[1, 8:], py[1, 8:] = -1, -1
    got = np.asarray(ri.image_to_points(logits, px, py, fill_value=-5.0))
    for b in range(2):
        for n in range(11):
            want = -5.0 if px[b, n] < 0 else logits[b, py[b, n], px[b, n]]
            np.testing.assert_array_equal(got[b, n], want)


def test_origin_point_and_defaults():
    # The release leaves r = 0 undefined (NaN pitch); here: pitch 0, range 0.
    points = np.array([[0.0, 0.0, 0.0, 0.7], [3.0, 0.0, 0.0, 0.1]], np.float32)
    got = ri.spherical_projection(points, HEIGHT, WIDTH)
    horizon_row = int(np.floor((1.0 - 25.0 / 28.0) * HEIGHT))
    np.testing.assert_array_equal(got.py, [horizon_row, horizon_row])
    np.testing.assert_array_equal(got.px, [WIDTH // 2, WIDTH // 2])
    assert got.point_index[horizon_row, WIDTH // 2] == 0 and got.range[horizon_row, 64] == 0.0
    # Released sensor: HDL-64E, 64 x 2048, fov +3 / -25 (darknet53.yaml, salsanext.yml).
    defaults = inspect.signature(ri.spherical_projection).parameters
    assert [defaults[k].default for k in ("height", "width", "fov_up_deg", "fov_down_deg")] == [
        64,
        2048,
        3.0,
        -25.0,
    ]


def test_bad_inputs_raise():
    points = jnp.zeros((5, 4))
    with pytest.raises(ValueError, match="points must be"):
        ri.spherical_projection(jnp.zeros((5, 3)), HEIGHT, WIDTH)
    with pytest.raises(ValueError, match="point_mask"):
        ri.spherical_projection(points, HEIGHT, WIDTH, point_mask=jnp.ones(4, bool))
    with pytest.raises(ValueError, match="fov"):
        ri.spherical_projection(points, HEIGHT, WIDTH, -2.0, -25.0)
    with pytest.raises(ValueError, match="height and width"):
        ri.spherical_projection(points, 0, WIDTH)
    with pytest.raises(ValueError, match="means and stds"):
        ri.normalized_input(ri.spherical_projection(points, HEIGHT, WIDTH), means=(0.0,) * 4)
