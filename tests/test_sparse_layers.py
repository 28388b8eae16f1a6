"""Flax sparse layers: convs against dense lax.conv, masked BatchNorm against numpy, padding and
device-count invariance of the BatchNorm statistics (4 simulated CPU devices)."""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from explicit_mesh import explicit_mesh
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.test_util import check_grads

from leakjax import sparse as sp

GRID = (6, 7, 8)


def random_tensor(seed, capacity, num_active=(40, 0, 25, 60), channels=3):
    """Same active voxels for a given seed whatever the capacity (extra rows are padding)."""
    rng = np.random.default_rng(seed)
    batch = len(num_active)
    coords = np.zeros((batch, capacity, 3), np.int32)
    feats = np.zeros((batch, capacity, channels), np.float32)
    mask = np.zeros((batch, capacity), bool)
    cells = np.argwhere(np.ones(GRID, bool))
    for b, n in enumerate(num_active):
        chosen = cells[rng.choice(len(cells), n, replace=False)]
        values = rng.normal(2.0, 3.0, (n, channels)).astype(np.float32)
        rows = np.sort(np.random.default_rng(seed + b).permutation(capacity)[:n])
        coords[b, rows], feats[b, rows], mask[b, rows] = chosen, values, True
    return sp.SparseTensor(jnp.asarray(coords), jnp.asarray(feats), jnp.asarray(mask), GRID)


class TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        kmap = sp.submanifold_map(x, pair_kernels=[(3, 3, 3), (1, 3, 3)])
        y = sp.SubMConv3d(5, (1, 3, 3), use_bias=True)(x, kmap)
        y = sp.SparseBatchNorm(use_running_average=False)(y)
        coarse, dmap, _ = sp.downsample_map(y, (3, 3, 3), (2, 2, 1), 160)
        z = sp.SparseConv3d(6, stride=(2, 2, 1))(y, dmap, coarse)
        return sp.SparseInverseConv3d(4)(z, dmap, y)


def test_submconv_layer_matches_dense_conv():
    x = random_tensor(0, 80)
    layer = sp.SubMConv3d(4, (3, 1, 3), use_bias=True)
    kmap = jax.jit(lambda x: sp.submanifold_map(x, pair_kernels=[(3, 1, 3)]))(x)
    params = jax.jit(layer.init)(jax.random.key(0), x, kmap)
    params = jax.tree.map(lambda p: p + 0.5, params)  # non-zero bias
    out = jax.jit(layer.apply)(params, x, kmap)
    kernel, bias = params["params"]["kernel"], params["params"]["bias"]
    assert kernel.shape == (3, 1, 3, 3, 4)
    for b in range(x.coords.shape[0]):
        mask = np.asarray(x.mask[b])
        active = np.asarray(x.coords[b])[mask]
        dense = np.zeros(GRID + (3,), np.float32)
        dense[tuple(active.T)] = np.asarray(x.feats[b])[mask]
        ref = jax.lax.conv_general_dilated(
            dense[None],
            kernel,
            (1, 1, 1),
            [(1, 1), (0, 0), (1, 1)],
            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
            precision="highest",
        )[0]
        np.testing.assert_allclose(
            np.asarray(out.feats[b])[mask],
            np.asarray(ref)[tuple(active.T)] + bias,
            rtol=1e-5,
            atol=1e-5,
        )
        assert np.all(np.asarray(out.feats[b])[~mask] == 0)


def test_batchnorm_matches_numpy_and_ignores_padding():
    bn = sp.SparseBatchNorm(momentum=0.9)
    small, large = random_tensor(1, 80), random_tensor(1, 200)
    variables = bn.init(jax.random.key(0), small, use_running_average=False)
    out_small, upd_small = bn.apply(
        variables, small, use_running_average=False, mutable=["batch_stats"]
    )
    out_large, upd_large = bn.apply(
        variables, large, use_running_average=False, mutable=["batch_stats"]
    )
    active = np.asarray(small.feats)[np.asarray(small.mask)]
    mean, var = active.mean(0), active.var(0)
    np.testing.assert_allclose(np.asarray(upd_small["batch_stats"]["mean"]), 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(upd_small["batch_stats"]["var"]), 0.9 + 0.1 * var, rtol=1e-5
    )
    for key in ("mean", "var"):
        np.testing.assert_allclose(
            np.asarray(upd_large["batch_stats"][key]),
            np.asarray(upd_small["batch_stats"][key]),
            rtol=1e-6,
        )
    expected = (active - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(
        np.asarray(out_small.feats)[np.asarray(small.mask)], expected, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(out_large.feats)[np.asarray(large.mask)], expected, rtol=1e-4, atol=1e-5
    )
    assert np.all(np.asarray(out_large.feats)[~np.asarray(large.mask)] == 0)
    # inference uses the running statistics
    frozen = bn.apply({**variables, **upd_small}, small, use_running_average=True)
    ra_mean, ra_var = 0.1 * mean, 0.9 + 0.1 * var
    np.testing.assert_allclose(
        np.asarray(frozen.feats)[np.asarray(small.mask)],
        (active - ra_mean) / np.sqrt(ra_var + 1e-5),
        rtol=1e-4,
        atol=1e-5,
    )


def test_network_sharded_over_four_devices_matches_single_device():
    devices = jax.devices()
    assert len(devices) == 4
    x = random_tensor(2, 96)
    net = TinyNet()
    variables = jax.jit(net.init)(jax.random.key(0), x)

    def apply(v, x):
        return net.apply(v, x, mutable=["batch_stats"])

    step = jax.jit(apply)
    out_single, stats_single = step(variables, x)
    mesh = Mesh(np.asarray(devices), ("data",))
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    x_sharded = jax.tree.map(lambda a: jax.device_put(a, batch_sharding), x)
    replicated = jax.device_put(variables, NamedSharding(mesh, PartitionSpec()))
    # a separate function: jit caches are shared between jax.jit wrappers of one function
    out_sharded, stats_sharded = jax.jit(lambda v, x: apply(v, x))(replicated, x_sharded)
    assert len(out_sharded.feats.sharding.device_set) == 4
    np.testing.assert_allclose(
        np.asarray(out_sharded.feats), np.asarray(out_single.feats), rtol=1e-5, atol=1e-5
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
        stats_sharded,
        stats_single,
    )
    # steady state: new data of the same shapes does not recompile, results are bitwise stable
    again, _ = step(variables, x)
    step(variables, random_tensor(3, 96))
    assert step._cache_size() == 1
    assert np.array_equal(np.asarray(again.feats), np.asarray(out_single.feats))


def test_network_on_an_explicit_axis_mesh_matches_single_device():
    """With the batch sharded on Explicit mesh axes (jax.make_mesh's default in jax 0.10) the
    per-sample ops run under shard_map (tensor.per_device_samples): outputs, BatchNorm
    statistics and parameter gradients equal the one-device run; voxelize too."""
    x = random_tensor(2, 96)
    net = TinyNet()
    variables = jax.jit(net.init)(jax.random.key(0), x)

    def loss(params, x):
        out, stats = net.apply({**variables, "params": params}, x, mutable=["batch_stats"])
        return jnp.sum(out.feats**2), (out.feats, stats)

    step = jax.value_and_grad(loss, has_aux=True)
    (_, (out_single, stats_single)), grads_single = jax.jit(step)(variables["params"], x)
    points = jnp.asarray(np.random.default_rng(5).uniform(0, 1, (4, 50, 3)).astype(np.float32))
    grid = sp.VoxelGrid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (4, 4, 4))
    vox_single = jax.jit(lambda p: sp.voxelize(p, p[..., 0] < 0.8, grid, 40))(points)

    mesh = explicit_mesh()
    batch = NamedSharding(mesh, PartitionSpec("data"))
    with jax.set_mesh(mesh):
        params = jax.device_put(variables["params"], NamedSharding(mesh, PartitionSpec()))
        (_, (out, stats)), grads = jax.jit(step)(params, jax.device_put(x, batch))
        vox = jax.jit(lambda p: sp.voxelize(p, p[..., 0] < 0.8, grid, 40))(
            jax.device_put(points, batch)
        )
    assert out.sharding.spec[0] == "data"
    close = partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5)
    close(np.asarray(out), np.asarray(out_single))
    jax.tree.map(lambda a, b: close(np.asarray(a), np.asarray(b)), stats, stats_single)
    jax.tree.map(lambda a, b: close(np.asarray(a), np.asarray(b)), grads, grads_single)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), vox, vox_single)


def test_strided_layer_checks_its_map():
    """SparseConv3d refuses a map built for another stride or dilation (it would be wrong)."""
    x = random_tensor(5, 96)
    coarse, dmap, _ = sp.downsample_map(x, (3, 3, 3), (2, 2, 2), 96, dilation=(1, 2, 1))
    layer = sp.SparseConv3d(4, stride=(2, 2, 2), dilation=(1, 2, 1))
    params = layer.init(jax.random.key(0), x, dmap, coarse)
    assert layer.apply(params, x, dmap, coarse).feats.shape == (4, 96, 4)
    for wrong in (
        sp.SparseConv3d(4, stride=(2, 2, 2)),
        sp.SparseConv3d(4, stride=(2, 2, 1), dilation=(1, 2, 1)),
    ):
        with pytest.raises(ValueError, match="stride and dilation"):
            wrong.init(jax.random.key(0), x, dmap, coarse)


def test_masked_batch_norm_backward_matches_autodiff_of_plain_batchnorm():
    """The hand-written backward equals autodiff of a plain BatchNorm over the valid rows only;
    padded rows (NaN here) are never read and get zero gradient."""
    rng = np.random.default_rng(7)
    x = rng.normal(1.0, 2.0, (2, 30, 5)).astype(np.float32)
    mask = rng.random((2, 30)) < 0.7
    scale, bias = rng.normal(size=5).astype(np.float32), rng.normal(size=5).astype(np.float32)
    cotangent = rng.normal(size=x.shape).astype(np.float32)
    x_padded = np.where(mask[..., None], x, np.nan).astype(np.float32)

    def ours(x, scale, bias):
        return jnp.vdot(sp.masked_batch_norm(x, jnp.asarray(mask), scale, bias)[0], cotangent)

    def plain(rows, scale, bias):  # the valid rows only, no mask anywhere
        mean = rows.mean(0)
        var = ((rows - mean) ** 2).mean(0)
        y = (rows - mean) / jnp.sqrt(var + 1e-5) * scale + bias
        return jnp.vdot(y, cotangent[mask])

    got = jax.jit(jax.grad(ours, argnums=(0, 1, 2)))(x_padded, scale, bias)
    ref = jax.grad(plain, argnums=(0, 1, 2))(jnp.asarray(x[mask]), scale, bias)
    np.testing.assert_allclose(np.asarray(got[0])[mask], ref[0], rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(got[0])[~mask] == 0)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-4, atol=1e-5)
    check_grads(
        lambda x, s, b: sp.masked_batch_norm(x, jnp.asarray(mask), s, b)[0],
        (jnp.asarray(x), jnp.asarray(scale), jnp.asarray(bias)),
        order=1,
        modes=["rev"],
        atol=2e-2,
        rtol=2e-2,
    )
