"""Sparse convolutions against dense `jax.lax.conv_general_dilated` on random sparse grids.

Every conv type and kernel shape, both dataflows ("pairs" and the "gather" reference), several
densities, padding rows interleaved with active rows, and an empty sample. Shapes are shared across
cases so each jitted function compiles once.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from leakjax import sparse as sp

GRID = (7, 8, 9)
CAPACITY = 160
DENSITIES = (0.05, 0.3, 0.0, 0.15)  # one sample per density; 0.0 = an empty sample
C_IN, C_OUT = 3, 4
SUB_KERNELS = ((3, 3, 3), (1, 3, 3), (3, 1, 3), (3, 1, 1), (1, 3, 1), (1, 1, 3))
DENSE_DIMS = ("NDHWC", "DHWIO", "NDHWC")


def random_batch(seed, densities=DENSITIES, grid=GRID, capacity=CAPACITY, channels=C_IN):
    """Sparse batch with shuffled padding rows (garbage coords, zero feats)."""
    rng = np.random.default_rng(seed)
    coords = rng.integers(0, 50, (len(densities), capacity, 3)).astype(np.int32)
    mask = np.zeros((len(densities), capacity), bool)
    for b, density in enumerate(densities):
        active = np.argwhere(rng.random(grid) < density)[:capacity]
        rows = rng.permutation(capacity)[: len(active)]
        coords[b, rows] = active
        mask[b, rows] = True
    feats = (
        rng.normal(size=(len(densities), capacity, channels)).astype(np.float32) * mask[..., None]
    )
    return sp.SparseTensor(jnp.asarray(coords), jnp.asarray(feats), jnp.asarray(mask), grid)


def to_dense(coords, mask, feats, grid):
    dense = np.zeros(tuple(grid) + (feats.shape[-1],), np.float32)
    active = np.asarray(coords)[np.asarray(mask)]
    dense[tuple(active.T)] = np.asarray(feats)[np.asarray(mask)]
    return dense


def dense_conv(dense, weight, stride=(1, 1, 1), dilation=(1, 1, 1)):
    return np.asarray(dense_conv_jnp(jnp.asarray(dense), weight, stride, dilation))


def centred(weight, kernel):
    slices = tuple(slice((3 - k) // 2, (3 + k) // 2) for k in kernel)
    return weight[slices]


@functools.partial(jax.jit, static_argnames=("method", "dilation"))
def subm_all_kernels(x, weights, method, dilation=(1, 1, 1)):
    """One 3x3x3 map serving every sub-kernel."""
    kmap = sp.submanifold_map(x, (3, 3, 3), dilation, pair_kernels=SUB_KERNELS)
    return [sp.sparse_conv(x.feats, kmap, w, in_mask=x.mask, method=method) for w in weights]


@pytest.fixture(scope="module")
def batch():
    return random_batch(0)


@pytest.fixture(scope="module")
def weight3():
    rng = np.random.default_rng(1)
    return jnp.asarray(rng.normal(size=(3, 3, 3, C_IN, C_OUT)).astype(np.float32))


@pytest.mark.parametrize("method", ["pairs", "gather"])
@pytest.mark.parametrize("dilation", [(1, 1, 1), (2, 2, 2)])
def test_submanifold_matches_dense(batch, weight3, method, dilation):
    weights = [centred(weight3, k) for k in SUB_KERNELS]
    outs = subm_all_kernels(batch, weights, method, dilation)
    for w, out in zip(weights, outs):
        for b in range(len(DENSITIES)):
            mask = np.asarray(batch.mask[b])
            dense = to_dense(batch.coords[b], mask, batch.feats[b], GRID)
            ref = dense_conv(dense, w, dilation=dilation)
            active = np.asarray(batch.coords[b])[mask]
            got = np.asarray(out[b])
            np.testing.assert_allclose(got[mask], ref[tuple(active.T)], rtol=1e-5, atol=1e-5)
            assert np.all(got[~mask] == 0)


@functools.partial(jax.jit, static_argnames=("stride", "mode", "method", "dilation"))
def down_and_up(x, weight, weight_up, stride, mode, method, dilation=(1, 1, 1)):
    coarse, dmap, overflow = sp.downsample_map(
        x, (3, 3, 3), stride, CAPACITY, mode, dilation=dilation
    )
    down = sp.sparse_conv(x.feats, dmap, weight, out_mask=coarse.mask, method=method)
    up = sp.sparse_conv(down, dmap, weight_up, out_mask=x.mask, transpose=True, method=method)
    return coarse, down, up, overflow


def expected_coarse_set(coords, mask, stride, mode, dilation=(1, 1, 1)):
    active = np.asarray(coords)[np.asarray(mask)]
    if mode == "floor":
        return {tuple(c) for c in active // np.asarray(stride)}
    out_shape = [-(-g // s) for g, s in zip(GRID, stride)]
    cells = set()
    for p in active:  # q reached iff p = q * s + o * d for an offset o in [-1, 1]^3
        for o in np.ndindex(3, 3, 3):
            q = p - (np.asarray(o) - 1) * np.asarray(dilation)
            if np.all(q % stride == 0):
                q = q // stride
                if np.all((q >= 0) & (q < out_shape)):
                    cells.add(tuple(q))
    return cells


@pytest.mark.parametrize("method", ["pairs", "gather"])
@pytest.mark.parametrize(
    "stride, dilation", [((2, 2, 2), (1, 1, 1)), ((2, 2, 1), (1, 1, 1)), ((2, 3, 2), (3, 2, 2))]
)
@pytest.mark.parametrize("mode", ["spconv", "floor"])
def test_strided_and_inverse_match_dense(batch, weight3, method, stride, dilation, mode):
    rng = np.random.default_rng(2)
    weight_up = jnp.asarray(rng.normal(size=(3, 3, 3, C_OUT, C_IN)).astype(np.float32))
    coarse, down, up, overflow = down_and_up(
        batch, weight3, weight_up, stride, mode, method, dilation
    )
    assert not np.any(overflow)
    for b in range(len(DENSITIES)):
        mask = np.asarray(batch.mask[b])
        cmask = np.asarray(coarse.mask[b])
        ccoords = np.asarray(coarse.coords[b])[cmask]
        assert {tuple(c) for c in ccoords} == expected_coarse_set(
            batch.coords[b], mask, stride, mode, dilation
        )
        dense = to_dense(batch.coords[b], mask, batch.feats[b], GRID)
        ref = dense_conv(dense, weight3, stride=stride, dilation=dilation)
        np.testing.assert_allclose(
            np.asarray(down[b])[cmask], ref[tuple(ccoords.T)], rtol=1e-5, atol=1e-5
        )
        # Inverse conv = transpose of the dense strided conv (with in/out channels swapped),
        # applied to the coarse result placed on the coarse grid, read on the fine set.
        coarse_dense = np.zeros(ref.shape[:3] + (C_OUT,), np.float32)
        coarse_dense[tuple(ccoords.T)] = np.asarray(down[b])[cmask]
        _, vjp = jax.vjp(
            lambda d: dense_conv_jnp(d, jnp.swapaxes(weight_up, 3, 4), stride, dilation),
            jnp.zeros(GRID + (C_IN,)),
        )
        (ref_up,) = vjp(jnp.asarray(coarse_dense))
        active = np.asarray(batch.coords[b])[mask]
        np.testing.assert_allclose(
            np.asarray(up[b])[mask], np.asarray(ref_up)[tuple(active.T)], rtol=1e-4, atol=1e-4
        )
        assert np.all(np.asarray(up[b])[~mask] == 0)


def dense_conv_jnp(dense, weight, stride, dilation=(1, 1, 1)):
    pad = [((k // 2) * d, (k // 2) * d) for k, d in zip(weight.shape[:3], dilation)]
    out = jax.lax.conv_general_dilated(
        dense[None],
        weight,
        stride,
        pad,
        rhs_dilation=dilation,
        dimension_numbers=DENSE_DIMS,
        precision="highest",
    )
    return out[0]


@functools.partial(jax.jit, static_argnames=("method",))
def subm_loss_grads(x, weight, cotangent, method):
    kmap = sp.submanifold_map(x, (3, 3, 3))

    def loss(feats, w):
        return jnp.vdot(sp.sparse_conv(feats, kmap, w, in_mask=x.mask, method=method), cotangent)

    return jax.grad(loss, argnums=(0, 1))(x.feats, weight)


@pytest.mark.parametrize("method", ["pairs", "gather"])
def test_gradients_match_dense(batch, weight3, method):
    rng = np.random.default_rng(3)
    raw = jnp.asarray(rng.normal(size=(len(DENSITIES), CAPACITY, C_OUT)).astype(np.float32))
    # Padded output rows are zero whatever the input, so their cotangent must change nothing.
    grad_feats, grad_w = subm_loss_grads(batch, weight3, raw, method)
    cotangent = raw * batch.mask[..., None]
    ref_w = np.zeros(weight3.shape, np.float32)
    for b in range(len(DENSITIES)):
        mask = np.asarray(batch.mask[b])
        active = np.asarray(batch.coords[b])[mask]
        dense = jnp.asarray(to_dense(batch.coords[b], mask, batch.feats[b], GRID))
        dense_cot = np.zeros(GRID + (C_OUT,), np.float32)
        dense_cot[tuple(active.T)] = np.asarray(cotangent[b])[mask]
        occupied = jnp.asarray(to_dense(batch.coords[b], mask, np.ones((CAPACITY, 1)), GRID))

        def dense_loss(d, w, occupied=occupied, dense_cot=dense_cot):
            # submanifold = dense conv read at active sites (cotangent is zero elsewhere)
            return jnp.vdot(dense_conv_jnp(d * occupied, w, (1, 1, 1)), dense_cot)

        g_dense, g_w = jax.grad(dense_loss, argnums=(0, 1))(dense, weight3)
        np.testing.assert_allclose(
            np.asarray(grad_feats[b])[mask],
            np.asarray(g_dense)[tuple(active.T)],
            rtol=1e-4,
            atol=1e-4,
        )
        assert np.all(np.asarray(grad_feats[b])[~mask] == 0)
        ref_w += np.asarray(g_w)
    np.testing.assert_allclose(np.asarray(grad_w), ref_w, rtol=1e-4, atol=1e-4)


def test_check_grads_pairs_and_strided(weight3):
    x = random_batch(4, densities=(0.2, 0.0), capacity=CAPACITY)
    kmap = jax.jit(lambda x: sp.submanifold_map(x, (3, 3, 3), pair_kernels=[(3, 1, 3)]))(x)
    w = centred(weight3, (3, 1, 3))
    check_grads(
        jax.jit(lambda f, w: sp.sparse_conv(f, kmap, w, in_mask=x.mask, method="pairs")),
        (x.feats, w),
        order=1,
        modes=["rev"],
        atol=2e-2,
        rtol=2e-2,
    )
    coarse, dmap, _ = jax.jit(lambda x: sp.downsample_map(x, (3, 3, 3), (2, 2, 1), CAPACITY))(x)
    check_grads(
        jax.jit(lambda f, w: sp.sparse_conv(f, dmap, w, out_mask=coarse.mask, method="pairs")),
        (x.feats, weight3),
        order=1,
        modes=["rev"],
        atol=2e-2,
        rtol=2e-2,
    )


def test_public_submanifold_conv_jit_grad(batch, weight3):
    coords, mask = batch.coords[1], batch.mask[1]
    feats = jnp.where(mask[:, None], batch.feats[1], jnp.nan)  # masked rows must never be read
    w = centred(weight3, (1, 3, 3))
    out = jax.jit(sp.submanifold_conv)(coords, feats, w, mask)
    m = np.asarray(mask)
    active = np.asarray(coords)[m]
    ref = dense_conv(to_dense(coords, m, np.asarray(batch.feats[1]), GRID), w)
    np.testing.assert_allclose(np.asarray(out)[m], ref[tuple(active.T)], rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(out)[~m] == 0)
    grad = jax.jit(
        jax.grad(lambda f, w: jnp.sum(sp.submanifold_conv(coords, f, w, mask) ** 2), argnums=(0, 1))
    )(feats, w)
    assert np.all(np.asarray(grad[0])[~m] == 0)
    # gradients equal those of the dense conv read at the active sites
    dense = jnp.asarray(to_dense(coords, m, np.asarray(batch.feats[1]), GRID))
    occupied = jnp.asarray(to_dense(coords, m, np.ones((CAPACITY, 1)), GRID))
    sites = tuple(active.T)
    dense_grad = jax.grad(
        lambda d, w: jnp.sum(dense_conv_jnp(d * occupied, w, (1, 1, 1))[sites] ** 2),
        argnums=(0, 1),
    )(dense, w)
    np.testing.assert_allclose(
        np.asarray(grad[0])[m], np.asarray(dense_grad[0])[sites], rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(np.asarray(grad[1]), np.asarray(dense_grad[1]), rtol=1e-4, atol=1e-3)
    # negative and large coordinates work without a grid extent (coordinates shifted)
    shifted = jax.jit(sp.submanifold_conv)(coords - 1000, feats, w, mask)
    np.testing.assert_array_equal(np.asarray(shifted), np.asarray(out))


def test_deterministic_and_no_recompilation(weight3):
    step = jax.jit(
        lambda x, w: sp.sparse_conv(
            x.feats, sp.submanifold_map(x, (3, 3, 3)), w, in_mask=x.mask, method="pairs"
        )
    )
    first = random_batch(10)
    out1 = np.asarray(step(first, weight3))
    out2 = np.asarray(step(first, weight3))
    assert np.array_equal(out1, out2)  # bitwise
    for seed in (11, 12):  # new data, same shapes: no new compilation
        step(random_batch(seed), weight3)
    assert step._cache_size() == 1


def test_pair_capacity_overflow_flagged_and_method_fallback(weight3):
    x = random_batch(5, densities=(0.6, 0.05))
    small = jax.jit(lambda x: sp.submanifold_map(x, (3, 3, 3), pair_capacity=8, tile_size=8))(x)
    assert bool(small.overflow[0]) and not bool(small.overflow[1])
    exact = jax.jit(lambda x: sp.submanifold_map(x, (3, 3, 3)))(x)
    assert not np.any(exact.overflow)
    with pytest.raises(ValueError, match="no pair list"):
        sp.sparse_conv(x.feats, exact, centred(weight3, (1, 1, 3)), method="pairs")
