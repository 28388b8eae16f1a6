"""Row products (leakjax.layers.rows) against numpy and plain matmuls."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from explicit_mesh import explicit_mesh
from jax.sharding import NamedSharding, PartitionSpec
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


def test_row_gram_and_row_dense_on_an_explicit_axis_mesh():
    """With the batch sharded on Explicit mesh axes, row_gram sums each device's rows and adds
    the devices' sums (per_device_samples(summed=True)); RowDense's gradients match one device."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 30, 5)).astype(np.float32)
    cot = rng.normal(size=(4, 30, 3)).astype(np.float32)
    mask = rng.random((4, 30)) < 0.7
    layer = sp.RowDense(3)
    params = layer.init(jax.random.key(0), x)

    def loss(params, x):
        return jnp.vdot(layer.apply(params, x), cot)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    gram = jax.jit(lambda a, b, m: sp.row_gram(a, b, m, chunk=8))
    want_grads, want_gram = grad(params, x), gram(x, cot, mask)
    mesh = explicit_mesh()
    batch = NamedSharding(mesh, PartitionSpec("data"))
    with jax.set_mesh(mesh):
        got_grads = grad(
            jax.device_put(params, NamedSharding(mesh, PartitionSpec())), jax.device_put(x, batch)
        )
        got_gram = gram(*jax.device_put((x, cot, mask), batch))
    np.testing.assert_allclose(got_gram, want_gram, rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
