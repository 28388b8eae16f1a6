"""kNN (host cKDTree and device top_k back-ends) against brute-force numpy distances: random clouds
with duplicate points, N < k, padded batches (masks and sentinels), the batch sharded over 4
devices. Where ties are possible, distances are compared, not indices."""

import jax
import numpy as np
import pytest
from explicit_mesh import run_batch_sharded

from leakjax import points as pts


def cloud_with_duplicates(seed, num_points=120, num_queries=70):
    """Points with 20 exact duplicates; queries: 35 of the points themselves and 35 others."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-3, 3, (num_points, 3)).astype(np.float32)
    points[-20:] = points[rng.choice(num_points - 20, 20, replace=False)]
    half = num_queries // 2
    queries = np.concatenate(
        [points[rng.choice(num_points, half, replace=False)], rng.uniform(-3, 3, (half, 3))]
    ).astype(np.float32)
    return queries, points


def squared_distances(queries, points):
    """float64 [M, N], one pair at a time in the inner sum as a brute force reference."""
    q, p = np.asarray(queries, np.float64), np.asarray(points, np.float64)
    return ((q[:, None, :] - p[None, :, :]) ** 2).sum(-1)


def assert_nearest(index, queries, points, k, candidates=None):
    """index [M, k] must be k distinct candidates whose distances are the k smallest, sorted."""
    candidates = np.arange(len(points)) if candidates is None else candidates
    index = np.asarray(index)
    assert index.shape == (len(queries), k) and index.dtype == np.int32
    d2 = squared_distances(queries, points)
    expected = np.sort(d2[:, candidates], axis=1)[:, :k]
    got = np.take_along_axis(d2, index, axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.isin(index, candidates))
    assert all(len(set(row)) == k for row in index.tolist())


@pytest.mark.parametrize("backend", pts.BACKENDS)
def test_knn_matches_brute_force_with_duplicates(backend):
    queries, points = cloud_with_duplicates(0)
    k = 8
    # chunk_size 16 leaves a partial last chunk of 70 queries.
    index = pts.knn(queries, points, k, backend=backend, chunk_size=16)
    assert_nearest(index, queries, points, k)
    # A query that is one of the points finds a point at distance 0 first (itself or a copy).
    d2_first = squared_distances(queries, points)[np.arange(len(queries)), np.asarray(index)[:, 0]]
    assert np.all(d2_first[:35] == 0)
    one = pts.knn(queries, points, 1, backend=backend, chunk_size=32)
    assert_nearest(one, queries, points, 1)


def test_backends_agree_without_ties_and_dispatch():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(90, 3)).astype(np.float32)
    queries = rng.normal(size=(33, 3)).astype(np.float32)
    reference = np.argsort(squared_distances(queries, points), axis=1)[:, :5]
    np.testing.assert_array_equal(pts.knn_host(queries, points, 5), reference)
    np.testing.assert_array_equal(pts.knn_device(queries, points, 5, chunk_size=8), reference)
    with pytest.raises(ValueError, match="backend"):
        pts.knn(queries, points, 5, backend="gpu")


@pytest.mark.parametrize("backend", pts.BACKENDS)
def test_fewer_points_than_k_is_an_error(backend):
    points = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match="smaller than k"):
        pts.knn(points, points, 6, backend=backend)
    with pytest.raises(ValueError, match="smaller than k"):
        pts.knn_batch(points[None], points[None], 6, backend=backend)


def test_bad_inputs_are_errors():
    points = np.zeros((8, 3), np.float32)
    with pytest.raises(ValueError, match="3 coordinates"):
        pts.knn_host(points[:, :2], points, 2)
    with pytest.raises(ValueError, match="k must be"):
        pts.knn_device(points, points, 0)
    with pytest.raises(ValueError, match="chunk_size"):
        pts.knn_device(points, points, 2, chunk_size=0)
    with pytest.raises(ValueError, match="NaN"):
        pts.knn_host(points, np.full((8, 3), np.nan), 2)
    with pytest.raises(ValueError, match="point_mask"):
        pts.knn_host_batch(points[None], points[None], 2, point_mask=np.ones((1, 7), bool))
    with pytest.raises(ValueError, match="batch sizes"):
        pts.knn_device_batch(points[None], np.stack([points, points]), 2)


def padded_batch(seed):
    """3 samples of capacity 40 points / 30 queries: full; random masks with padded points
    sitting on valid queries; 4 valid points (< k) with NaN padding."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-2, 2, (3, 40, 3)).astype(np.float32)
    queries = rng.uniform(-2, 2, (3, 30, 3)).astype(np.float32)
    point_mask = np.ones((3, 40), bool)
    query_mask = np.ones((3, 30), bool)
    point_mask[1] = rng.random(40) < 0.6
    query_mask[1] = rng.random(30) < 0.7
    padded = np.flatnonzero(~point_mask[1])
    points[1, padded] = queries[1, rng.integers(0, 30, len(padded))]  # distance 0 if not masked
    point_mask[2, 4:] = False
    query_mask[2, 25:] = False
    points[2, 4:] = np.nan
    queries[2, 25:] = np.nan
    return queries, points, query_mask, point_mask


@pytest.mark.parametrize("backend", pts.BACKENDS)
def test_padded_batch_against_brute_force(backend):
    queries, points, query_mask, point_mask = padded_batch(2)
    k, capacity = 6, points.shape[1]
    index, found = pts.knn_batch(
        queries, points, k, query_mask, point_mask, backend=backend, chunk_size=8, num_threads=2
    )
    index, found = np.asarray(index), np.asarray(found)
    assert index.shape == found.shape == (3, 30, k)
    for b in range(3):
        valid_points = np.flatnonzero(point_mask[b])
        num_found = min(k, len(valid_points))
        expected_found = np.zeros((30, k), bool)
        expected_found[query_mask[b], :num_found] = True
        np.testing.assert_array_equal(found[b], expected_found)
        assert np.all(index[b][~expected_found] == capacity)
        rows = np.flatnonzero(query_mask[b])
        assert_nearest(
            index[b][rows, :num_found], queries[b][rows], points[b], num_found, valid_points
        )


def test_device_batch_sharded_equals_one_device():
    queries, points, query_mask, point_mask = padded_batch(3)
    batch = [np.concatenate([a, a[:1]]) for a in (queries, points, query_mask, point_mask)]
    fn = jax.jit(lambda q, p, qm, pm: pts.knn_device_batch(q, p, 6, qm, pm, chunk_size=8))
    index, found = fn(*batch)
    index_sharded, found_sharded = run_batch_sharded(fn, *batch)
    np.testing.assert_array_equal(found_sharded, found)
    np.testing.assert_array_equal(index_sharded, index)
