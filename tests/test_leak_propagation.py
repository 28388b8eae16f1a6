"""Label propagation to feature resolution: kept points and nearest image down-sampling vs numpy
loops (the voxel majority vote is the sparse core's, tested there)."""

import jax
import numpy as np
import pytest

from leakjax import sparse
from leakjax.leak import kept_point_labels, nearest_downsample_labels, voxel_majority_label


def test_kept_point_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (2, 12))
    valid = rng.random((2, 12)) < 0.7
    kept = rng.integers(0, 12, (2, 5))
    kept_mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], bool)
    got_labels, got_valid = jax.jit(kept_point_labels)(labels, valid, kept, kept_mask)
    for b in range(2):
        for j in range(5):
            assert got_labels[b, j] == labels[b, kept[b, j]]
            assert got_valid[b, j] == (valid[b, kept[b, j]] and kept_mask[b, j])


def test_nearest_downsample_labels():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 9, (2, 8, 12))
    valid = rng.random((2, 8, 12)) < 0.8
    for out_shape in [(4, 6), (3, 5), (8, 12)]:
        got_labels, got_valid = nearest_downsample_labels(labels, valid, out_shape)
        for i in range(out_shape[0]):
            for j in range(out_shape[1]):
                src_i = int(np.floor(i * 8 / out_shape[0]))
                src_j = int(np.floor(j * 12 / out_shape[1]))
                np.testing.assert_array_equal(got_labels[:, i, j], labels[:, src_i, src_j])
                np.testing.assert_array_equal(got_valid[:, i, j], valid[:, src_i, src_j])
    with pytest.raises(ValueError, match="out_shape"):
        nearest_downsample_labels(labels, valid, (9, 12))


def test_voxel_majority_is_the_sparse_core_function():
    assert voxel_majority_label is sparse.voxel_majority_label
