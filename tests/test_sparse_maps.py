"""Kernel maps, pair lists and coordinate lookup against brute-force numpy neighbour search."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leakjax import sparse as sp

GRID = (9, 10, 11)
CAPACITY = 200


def random_tensor(seed, densities=(0.25, 0.05, 0.0), capacity=CAPACITY, grid=GRID):
    rng = np.random.default_rng(seed)
    coords = rng.integers(0, 40, (len(densities), capacity, 3)).astype(np.int32)
    mask = np.zeros((len(densities), capacity), bool)
    for b, density in enumerate(densities):
        active = np.argwhere(rng.random(grid) < density)[:capacity]
        rows = rng.permutation(capacity)[: len(active)]
        coords[b, rows], mask[b, rows] = active, True
    feats = np.zeros((len(densities), capacity, 1), np.float32)
    return sp.SparseTensor(jnp.asarray(coords), jnp.asarray(feats), jnp.asarray(mask), grid)


def row_of(coords, mask):
    return {tuple(c): i for i, (c, m) in enumerate(zip(np.asarray(coords), np.asarray(mask))) if m}


def brute_submanifold(coords, mask, kernel, dilation):
    rows = row_of(coords, mask)
    offsets = sp.kernel_offsets(kernel, dilation)
    table = np.full((len(mask), len(offsets)), -1)
    for c, i in rows.items():
        for k, o in enumerate(offsets):
            table[i, k] = rows.get(tuple(np.asarray(c) + o), -1)
    return table


def pair_triples(pairs, b, mirrored, num_in=CAPACITY, num_out=CAPACITY):
    """{(in_row, out_row, offset index)} held by sample b of a batched PairList."""
    in_rows, out_rows = np.asarray(pairs.in_rows[b]), np.asarray(pairs.out_rows[b])
    tile_offset = np.repeat(np.asarray(pairs.tile_offset[b]), pairs.tile_size)
    triples = set()
    for i, o, t in zip(in_rows, out_rows, tile_offset):
        if i < num_in and o < num_out:
            triples.add((int(i), int(o), pairs.offsets[t]))
            if mirrored:
                triples.add((int(o), int(i), pairs.mirror_offsets[t]))
    return triples


def table_triples(table, offsets):
    return {
        (int(table[q, k]), q, int(k))
        for q in range(table.shape[0])
        for k in offsets
        if table[q, k] >= 0
    }


@pytest.mark.parametrize(
    "kernel,dilation", [((3, 3, 3), (1, 1, 1)), ((3, 3, 3), (1, 2, 3)), ((5, 3, 1), (1, 1, 1))]
)
def test_submanifold_map_and_pairs_match_brute_force(kernel, dilation):
    x = random_tensor(0)
    sub = (1, 3, 1) if kernel[2] == 1 else (1, 3, 3)
    kmap = jax.jit(
        lambda x: sp.submanifold_map(x, kernel, dilation, pair_kernels=[kernel, sub], tile_size=8)
    )(x)
    centre = np.prod(kernel) // 2
    for b in range(x.coords.shape[0]):
        ref = brute_submanifold(x.coords[b], x.mask[b], kernel, dilation)
        np.testing.assert_array_equal(np.asarray(kmap.neighbours[b]), ref)
        for shape in (kernel, sub):
            sel = sp.sub_kernel_indices(kernel, shape)
            expected = table_triples(ref, [k for k in sel if k != centre])
            assert pair_triples(kmap.pairs[shape], b, mirrored=True) == expected
    assert not np.any(kmap.overflow)


@pytest.mark.parametrize(
    "stride, dilation",
    [
        ((2, 2, 2), (1, 1, 1)),
        ((2, 2, 1), (1, 1, 1)),
        ((3, 1, 2), (1, 1, 1)),
        ((2, 2, 2), (2, 2, 2)),  # gcd(d, s) = 2: only even p + r d reach a coarse cell
        ((4, 3, 1), (2, 2, 3)),  # gcd 2, 1, 1 with modular inverses of d / gcd
    ],
)
@pytest.mark.parametrize("mode", ["spconv", "floor"])
def test_downsample_map_matches_brute_force(stride, dilation, mode):
    x = random_tensor(1)
    out_capacity = 3 * CAPACITY  # stride 1 on an axis can give more coarse cells than fine ones
    sub_kernels = [(3, 3, 3), (1, 3, 3), (3, 1, 1)]
    coarse, dmap, overflow = jax.jit(
        lambda x: sp.downsample_map(
            x,
            (3, 3, 3),
            stride,
            out_capacity,
            mode,
            dilation=dilation,
            tile_size=8,
            pair_kernels=sub_kernels,
        )
    )(x)
    assert not np.any(overflow) and not np.any(dmap.overflow)
    assert coarse.stride == stride and dmap.dilation == dilation
    assert coarse.spatial_shape == tuple(-(-g // s) for g, s in zip(GRID, stride))
    offsets = sp.kernel_offsets((3, 3, 3), dilation)
    for b in range(x.coords.shape[0]):
        fine = row_of(x.coords[b], x.mask[b])
        cells = np.asarray(coarse.coords[b])[np.asarray(coarse.mask[b])]
        # output set sorted and unique, and equal to the brute-force set
        keys = [tuple(c) for c in cells]
        assert keys == sorted(set(keys))
        if mode == "floor":
            expected = {tuple(np.asarray(c) // stride) for c in fine}
        else:
            out_shape = coarse.spatial_shape
            expected = {
                tuple((np.asarray(c) - o) // stride)
                for c in fine
                for o in offsets
                if np.all((np.asarray(c) - o) % stride == 0)
                and np.all((np.asarray(c) - o) >= 0)
                and np.all((np.asarray(c) - o) // stride < out_shape)
            }
        assert set(keys) == expected
        table = np.full((out_capacity, 27), -1)
        for q, c in enumerate(np.asarray(coarse.coords[b])):
            if coarse.mask[b, q]:
                for k, o in enumerate(offsets):
                    table[q, k] = fine.get(tuple(c * np.asarray(stride) + o), -1)
        np.testing.assert_array_equal(np.asarray(dmap.neighbours[b]), table)
        reverse = np.full((CAPACITY, 27), -1)
        for q, k in zip(*np.nonzero(table >= 0)):
            reverse[table[q, k], k] = q
        np.testing.assert_array_equal(np.asarray(dmap.reverse[b]), reverse)
        for sub in sub_kernels:  # each sub-kernel's list holds exactly its offsets' pairs
            assert pair_triples(dmap.pairs[sub], b, False, CAPACITY, out_capacity) == (
                table_triples(table, sp.sub_kernel_indices((3, 3, 3), sub))
            )
        if mode == "spconv" and max(stride) <= 2 and dilation == (1, 1, 1):
            # going down then up (the inverse map) reaches exactly the fine set (with k=3, s=3
            # the last fine cell of an axis of length 9 is reached by no coarse cell, as in spconv)
            reached = np.any(reverse >= 0, axis=1)
            np.testing.assert_array_equal(reached, np.asarray(x.mask[b]))


def test_overflow_flags():
    x = random_tensor(2, densities=(0.5, 0.002))
    for mode in ("spconv", "floor"):
        coarse, _, overflow = jax.jit(
            lambda x, mode=mode: sp.downsample_map(x, (3, 3, 3), (2, 2, 2), 20, mode)
        )(x)
        np.testing.assert_array_equal(np.asarray(overflow), [True, False])
        assert int(coarse.mask[0].sum()) == 20  # capped, and flagged
    kmap = jax.jit(lambda x: sp.submanifold_map(x, pair_capacity=40, tile_size=8))(x)
    np.testing.assert_array_equal(np.asarray(kmap.overflow), [True, False])
    for mode in ("spconv", "floor"):  # too small a pair capacity for the dense sample only
        _, dmap, _ = jax.jit(
            lambda x, mode=mode: sp.downsample_map(
                x, (3, 3, 3), (2, 2, 2), 3 * CAPACITY, mode, pair_capacity=40, tile_size=8
            )
        )(x)
        np.testing.assert_array_equal(np.asarray(dmap.overflow), [True, False])
    with pytest.raises(ValueError, match="spatial_shape"):
        sp.submanifold_map(x.replace(spatial_shape=(2048, 2048, 1024)))
    with pytest.raises(ValueError, match="mode"):
        sp.downsample_map(x, mode="ceil")


@pytest.mark.parametrize("spatial_shape", [None, GRID])
def test_find_rows_matches_brute_force(spatial_shape):
    x = random_tensor(3)
    rng = np.random.default_rng(4)
    query = rng.integers(-1, 12, (x.coords.shape[0], 300, 3)).astype(np.int32)
    query_mask = rng.random((x.coords.shape[0], 300)) < 0.9
    rows = np.asarray(
        jax.jit(sp.find_rows, static_argnums=4)(
            x.coords, x.mask, jnp.asarray(query), jnp.asarray(query_mask), spatial_shape
        )
    )
    for b in range(query.shape[0]):
        lookup = row_of(x.coords[b], x.mask[b])
        expected = [lookup.get(tuple(q), -1) if m else -1 for q, m in zip(query[b], query_mask[b])]
        np.testing.assert_array_equal(rows[b], expected)


def test_sorted_search_matches_numpy_searchsorted():
    """The kernel maps' binary search equals np.searchsorted on sorted keys with duplicates,
    queries outside the key range, both sides, under vmap, and for 0, 1 and 2**k +- 1 keys."""
    from leakjax.sparse.search import sorted_search

    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 7, 8, 9, 31, 32, 33, 200):
        keys = np.sort(rng.integers(-20, 20, n)).astype(np.int32)
        queries = rng.integers(-25, 25, (3, 17)).astype(np.int32)
        for side in ("left", "right"):
            got = jax.jit(lambda k, q, s=side: sorted_search(k, q, s))(keys, queries)
            np.testing.assert_array_equal(got, np.searchsorted(keys, queries, side=side))
    batch_keys = np.sort(rng.integers(0, 50, (3, 40)), axis=1).astype(np.int32)
    batch_queries = rng.integers(-5, 55, (3, 11)).astype(np.int32)
    got = jax.vmap(sorted_search)(batch_keys, batch_queries)
    want = [np.searchsorted(k, q) for k, q in zip(batch_keys, batch_queries)]
    np.testing.assert_array_equal(got, np.stack(want))
