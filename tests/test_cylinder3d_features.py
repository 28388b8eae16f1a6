"""Cylinder3D input side vs. a numpy re-statement of the released loader (no U-Net compiled)."""

import collections
import math

import jax
import numpy as np
import pytest

from leakjax import sparse
from leakjax.models.cylinder3d_features import (
    cylinder_grid,
    cylindrical_point_features,
    majority_label_all_votes,
)

SHAPE = (32, 24, 16)
LOWER = (0.0, -math.pi, -4.0)
UPPER = (50.0, math.pi, 2.0)


def _released_numpy(points: np.ndarray):
    """The released cylinder_dataset: clip, floor with cell range / (shape - 1), 9-d features."""
    xyz = points[:, :3].astype(np.float64)
    rho = np.sqrt(xyz[:, 0] ** 2 + xyz[:, 1] ** 2)
    phi = np.arctan2(xyz[:, 1], xyz[:, 0])
    polar = np.stack([rho, phi, xyz[:, 2]], axis=1)
    lower, upper = np.array(LOWER), np.array(UPPER)
    intervals = (upper - lower) / (np.array(SHAPE) - 1)
    cells = np.floor((np.clip(polar, lower, upper) - lower) / intervals).astype(np.int64)
    centres = (cells + 0.5) * intervals + lower
    feats = np.concatenate([polar - centres, polar, xyz[:, :2], points[:, 3:4]], axis=1)
    return cells, feats


def _points(seed: int, num_points: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rho = rng.uniform(0.5, 60.0, num_points)  # some beyond 50 m: clipped into the last cell
    phi = rng.uniform(-np.pi, np.pi, num_points)
    z = rng.uniform(-6.0, 4.0, num_points)  # some below -4 m and above 2 m
    remission = rng.uniform(0.0, 1.0, num_points)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z, remission], 1).astype(np.float32)


@pytest.fixture(scope="module")
def voxelised():
    points = np.stack([_points(0, 400), _points(1, 400)])
    point_mask = np.ones((2, 400), bool)
    point_mask[1, 300:] = False  # padding in the second sample
    grid = cylinder_grid(SHAPE, LOWER, UPPER, released_intervals=True)
    voxels = jax.jit(lambda p, m: sparse.voxelize(p[..., :3], m, grid, 512))(points, point_mask)
    feats = jax.jit(lambda p, v: cylindrical_point_features(p, v, grid))(points, voxels)
    return points, point_mask, voxels, np.asarray(feats)


def test_cells_and_voxel_set_match_released_loader(voxelised):
    points, point_mask, voxels, _ = voxelised
    assert not np.asarray(voxels.overflow).any()
    for b in range(2):
        real = point_mask[b]
        cells, _ = _released_numpy(points[b][real])
        expected_set = np.unique(cells, axis=0)  # lexicographic, like the voxeliser's order
        mask = np.asarray(voxels.mask[b])
        np.testing.assert_array_equal(np.asarray(voxels.coords[b])[mask], expected_set)
        p2v = np.asarray(voxels.point_to_voxel[b])
        assert (p2v[~real] == -1).all() and (p2v[real] >= 0).all()
        np.testing.assert_array_equal(np.asarray(voxels.coords[b])[p2v[real]], cells)
        # Clipping put out-of-range points into border cells, none were dropped.
        assert cells[:, 0].max() == SHAPE[0] - 1 and cells[:, 2].min() == 0


def test_nine_features_match_released_loader(voxelised):
    points, point_mask, _, feats = voxelised
    assert feats.shape == (2, 400, 9)
    for b in range(2):
        real = point_mask[b]
        _, expected = _released_numpy(points[b][real])
        np.testing.assert_allclose(feats[b][real], expected, rtol=1e-5, atol=2e-5)
        np.testing.assert_array_equal(feats[b][~real], 0.0)


def test_grid_cell_sizes_and_bad_config():
    released = cylinder_grid(SHAPE, LOWER, UPPER, released_intervals=True)
    plain = cylinder_grid(SHAPE, LOWER, UPPER, released_intervals=False)
    ranges = np.array(UPPER) - np.array(LOWER)
    np.testing.assert_allclose(released.cell_size, ranges / (np.array(SHAPE) - 1))
    np.testing.assert_allclose(plain.cell_size, ranges / np.array(SHAPE))
    with pytest.raises(ValueError, match="lower < upper"):
        cylinder_grid(SHAPE, UPPER, LOWER)
    with pytest.raises(ValueError, match=">= 2 cells"):
        cylinder_grid((1, 24, 16), LOWER, UPPER)


def test_all_votes_majority_vs_python():
    rng = np.random.default_rng(3)
    num_voxels, num_points, num_classes = 40, 300, 6
    p2v = rng.integers(-1, num_voxels, size=(2, num_points)).astype(np.int32)
    labels = rng.integers(0, num_classes, size=(2, num_points)).astype(np.int32)
    labels[0, :150] = 0  # plenty of unlabelled points, which vote in the released scheme
    got = np.asarray(majority_label_all_votes(labels, p2v, num_voxels, num_classes))
    for b in range(2):
        for v in range(num_voxels):
            votes = collections.Counter(labels[b][p2v[b] == v].tolist())
            if not votes:
                assert got[b, v] == 0
                continue
            top = max(votes.values())
            assert got[b, v] == min(c for c, n in votes.items() if n == top)
