"""Voxelisation, voxel reductions and voxel -> point gather against numpy loops."""

import jax
import numpy as np
import pytest

from leakjax import sparse as sp

NUM_POINTS = 400
CAPACITY = 256


def random_points(seed, batch=2):
    rng = np.random.default_rng(seed)
    points = rng.uniform(-6, 6, (batch, NUM_POINTS, 3)).astype(np.float32)
    points[..., 2] = rng.uniform(-2.5, 2.5, (batch, NUM_POINTS))
    mask = rng.random((batch, NUM_POINTS)) < 0.9
    return points, mask


def numpy_cells(points, grid):
    if grid.system == "cylindrical":
        points = np.stack(
            [
                np.hypot(points[:, 0], points[:, 1]),
                np.arctan2(points[:, 1], points[:, 0]),
                points[:, 2],
            ],
            -1,
        )
    cell = (points - np.asarray(grid.lower)) / np.asarray(grid.cell_size)
    cells = np.floor(cell).astype(np.int64)
    inside = np.all((cells >= 0) & (cells < np.asarray(grid.shape)), -1)
    return np.clip(cells, 0, np.asarray(grid.shape) - 1), inside


GRIDS = [
    sp.VoxelGrid((-4.0, -4.0, -2.0), (4.0, 4.0, 2.0), (8, 8, 4), "cartesian", "clip"),
    sp.VoxelGrid((-4.0, -4.0, -2.0), (4.0, 4.0, 2.0), (8, 8, 4), "cartesian", "drop"),
    sp.VoxelGrid((0.0, -np.pi, -2.0), (8.0, np.pi, 2.0), (6, 12, 4), "cylindrical", "drop"),
]


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g.system}-{g.out_of_range}")
def test_voxelize_matches_numpy(grid):
    points, mask = random_points(0)
    vox = jax.jit(sp.voxelize, static_argnums=(2, 3))(points, mask, grid, CAPACITY)
    for b in range(points.shape[0]):
        cells, inside = numpy_cells(points[b], grid)
        keep = mask[b] & (inside if grid.out_of_range == "drop" else True)
        expected = np.unique(cells[keep], axis=0)  # lexicographically sorted
        n = len(expected)
        assert int(vox.num_voxels[b]) == n and not bool(vox.overflow[b])
        np.testing.assert_array_equal(np.asarray(vox.coords[b])[:n], expected)
        np.testing.assert_array_equal(np.asarray(vox.mask[b]), np.arange(CAPACITY) < n)
        p2v = np.asarray(vox.point_to_voxel[b])
        assert np.all(p2v[~keep] == -1)
        np.testing.assert_array_equal(np.asarray(vox.coords[b])[p2v[keep]], cells[keep])


def test_voxelize_overflow_flagged_never_silent():
    points, mask = random_points(1)
    grid = GRIDS[0]
    vox = jax.jit(sp.voxelize, static_argnums=(2, 3))(points, mask, grid, 16)
    for b in range(points.shape[0]):
        cells, _ = numpy_cells(points[b], grid)
        n = len(np.unique(cells[mask[b]], axis=0))
        assert n > 16 and bool(vox.overflow[b]) and int(vox.num_voxels[b]) == n
        p2v = np.asarray(vox.point_to_voxel[b])
        kept = p2v >= 0
        # points of the 16 kept voxels map correctly; every other point is -1
        np.testing.assert_array_equal(np.asarray(vox.coords[b])[p2v[kept]], cells[kept])
        assert len(np.unique(p2v[kept])) == 16
    with pytest.raises(ValueError, match="out_of_range"):
        sp.VoxelGrid((0, 0, 0), (1, 1, 1), (2, 2, 2), out_of_range="wrap")


def test_reductions_and_gather_match_numpy():
    points, mask = random_points(2)
    grid = GRIDS[0]
    vox = jax.jit(sp.voxelize, static_argnums=(2, 3))(points, mask, grid, CAPACITY)
    rng = np.random.default_rng(3)
    values = rng.normal(size=points.shape[:2] + (2,)).astype(np.float32)
    labels = rng.integers(0, 5, points.shape[:2]).astype(np.int32)
    p2v = np.asarray(vox.point_to_voxel)
    means = np.asarray(sp.voxel_reduce(values, vox.point_to_voxel, CAPACITY, "mean"))
    maxes = np.asarray(sp.voxel_reduce(values, vox.point_to_voxel, CAPACITY, "max"))
    sums = np.asarray(sp.voxel_reduce(values, vox.point_to_voxel, CAPACITY, "sum"))
    majority = np.asarray(sp.voxel_majority_label(labels, vox.point_to_voxel, CAPACITY, 5, 0))
    back = np.asarray(sp.gather_to_points(means, vox.point_to_voxel))
    for b in range(points.shape[0]):
        for v in range(CAPACITY):
            members = p2v[b] == v
            if not members.any():
                assert np.all(means[b, v] == 0) and np.all(maxes[b, v] == 0)
                assert majority[b, v] == 0
                continue
            np.testing.assert_allclose(
                means[b, v], values[b, members].mean(0), rtol=1e-5, atol=1e-6
            )
            np.testing.assert_allclose(maxes[b, v], values[b, members].max(0))
            np.testing.assert_allclose(sums[b, v], values[b, members].sum(0), rtol=1e-5, atol=1e-6)
            counts = np.bincount(labels[b, members], minlength=5)
            counts[0] = 0  # ignored label
            expected = int(np.argmax(counts)) if counts.max() > 0 else 0  # ties -> smallest id
            assert majority[b, v] == expected
        kept = p2v[b] >= 0
        np.testing.assert_allclose(back[b, kept], means[b, p2v[b, kept]])
        assert np.all(back[b, ~kept] == 0)
    with pytest.raises(ValueError, match="reduce"):
        sp.voxel_reduce(values, vox.point_to_voxel, CAPACITY, "median")
