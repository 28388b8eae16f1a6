"""Row products (leakjax.sparse.rows) against numpy and plain matmuls."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from leakjax import sparse as sp


def test_row_gram_matches_numpy_with_mask_and_partial_chunk():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 50, 4)).astype(np.float32)
    b = rng.normal(size=(3, 50, 6)).astype(np.float32)
    mask = rng.random((3, 50)) < 0.6
    ref = np.einsum("bnc,bnd->cd", a * mask[..., None], b)
    a_nan = np.where(mask[..., None], a, np.nan)  # rows outside the mask are never read
    got = jax.jit(lambda a, b, m: sp.row_gram(a, b, m, chunk=16))(a_nan, b, mask)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # batch of one (per-sample path) and no mask
    got_one = sp.row_gram(jnp.asarray(a[:1]), jnp.asarray(b[:1]), chunk=7)
    np.testing.assert_allclose(got_one, a[0].T @ b[0], rtol=1e-5, atol=1e-5)


def test_row_matmul_and_row_dense_gradients_match_plain_matmul():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 37, 5)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(5, 3)).astype(np.float32))
    cot = jnp.asarray(rng.normal(size=(2, 37, 3)).astype(np.float32))
    got = jax.grad(lambda x, k: jnp.vdot(sp.row_matmul(x, k), cot), argnums=(0, 1))(x, kernel)
    ref = jax.grad(lambda x, k: jnp.vdot(jnp.einsum("bnc,cd->bnd", x, k), cot), argnums=(0, 1))(
        x, kernel
    )
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)
    check_grads(sp.row_matmul, (x, kernel), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    # RowDense: nn.Dense's parameters and outputs
    ours = sp.RowDense(3)
    params = ours.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, nn.Dense(3).init(jax.random.key(0), x)
    )
    np.testing.assert_allclose(
        ours.apply(params, x), nn.Dense(3).apply(params, x), rtol=1e-5, atol=1e-5
    )
