"""The native CPU pair_conv kernel (leakjax.sparse.native) against the pure-JAX pair dataflow.

Every conv type and kernel shape of tests/test_sparse_conv.py (padding rows, an empty sample):
outputs and both gradients equal pure JAX; bitwise repeatable across runs and thread counts;
jit + vmap (weights shared or batched); a batch sharded on 4 devices; the fallback when the
kernel cannot be built or is disabled; the cache's atomic build. The library is built once
(module fixture; cached across sessions).
"""

import contextlib
import logging
import os
import shutil
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from leakjax import sparse as sp
from leakjax.sparse import native
from leakjax.sparse.conv import pair_conv
from leakjax.train.mesh import make_data_mesh
from tests.explicit_mesh import run_batch_sharded
from tests.test_sparse_conv import C_IN, C_OUT, CAPACITY, SUB_KERNELS, centred, random_batch


@pytest.fixture(scope="module")
def built():
    if not native.load():
        pytest.skip(f"native kernel unavailable: {native._state.get('error')}")
    return native._state["library"]


@contextlib.contextmanager
def switch(on: bool):
    """LEAKJAX_NATIVE set for the code inside (read when a function is traced)."""
    old = os.environ.get(native.ENV_SWITCH)
    os.environ[native.ENV_SWITCH] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ[native.ENV_SWITCH]
        else:
            os.environ[native.ENV_SWITCH] = old


def traced(fn, on: bool):
    """A fresh jit of fn, traced with the native kernel on or off (a new function each time:
    jit shares its traces between wrappers of one function)."""
    jitted = jax.jit(lambda *args: fn(*args))

    def call(*args):
        with switch(on):
            return jitted(*args)

    return call


def assert_close(a, b, rtol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-6)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


def value_and_grads(conv, feats, weight, cotangent):
    out, pullback = jax.vjp(conv, feats, weight)
    return (out,) + pullback(cotangent)


def check_both(fn, *args):
    """fn natively (the trace holds the FFI call) equals fn in pure JAX; returns the native."""
    with switch(True):
        assert "leakjax_pair_conv" in str(jax.make_jaxpr(fn)(*args))
    ours, ref = traced(fn, True)(*args), traced(fn, False)(*args)
    jax.tree.map(assert_close, ours, ref)
    assert any(
        not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref))
    )
    return ours


def test_submanifold_every_kernel_and_gradients(built):
    x = random_batch(0)
    rng = np.random.default_rng(1)
    weight3 = jnp.asarray(rng.normal(size=(3, 3, 3, C_IN, C_OUT)).astype(np.float32))
    cot = jnp.asarray(rng.normal(size=(len(x.mask), CAPACITY, C_OUT)).astype(np.float32))

    def all_kernels(x, weight3, cot):
        kmap = sp.submanifold_map(x, (3, 3, 3), (1, 2, 1), pair_kernels=SUB_KERNELS)
        results = []
        for kernel in SUB_KERNELS:
            conv = lambda f, w: sp.sparse_conv(f, kmap, w, in_mask=x.mask, method="pairs")
            results.append(value_and_grads(conv, x.feats, centred(weight3, kernel), cot))
        return results

    results = check_both(all_kernels, x, weight3, cot)
    for out, grad_feats, _ in results:  # padded rows: zero output, zero gradient
        assert np.all(np.asarray(out)[~np.asarray(x.mask)] == 0)
        assert np.all(np.asarray(grad_feats)[~np.asarray(x.mask)] == 0)


@pytest.mark.parametrize(
    "stride, dilation, mode", [((2, 2, 2), (1, 1, 1), "spconv"), ((2, 3, 2), (3, 2, 2), "floor")]
)
def test_strided_and_inverse_and_gradients(built, stride, dilation, mode):
    x = random_batch(1)
    rng = np.random.default_rng(2)
    w_down = jnp.asarray(rng.normal(size=(3, 3, 3, C_IN, C_OUT)).astype(np.float32))
    w_up = jnp.asarray(rng.normal(size=(3, 3, 3, C_OUT, C_IN)).astype(np.float32))
    cot_down = jnp.asarray(rng.normal(size=(len(x.mask), CAPACITY, C_OUT)).astype(np.float32))

    def down_up(x, w_down, w_up, cot_down):
        coarse, dmap, _ = sp.downsample_map(x, (3, 3, 3), stride, CAPACITY, mode, dilation=dilation)
        down = lambda f, w: sp.sparse_conv(f, dmap, w, out_mask=coarse.mask)
        first = value_and_grads(down, x.feats, w_down, cot_down)
        up = lambda f, w: sp.sparse_conv(f, dmap, w, out_mask=x.mask, transpose=True)
        return first, value_and_grads(up, first[0], w_up, x.feats)

    check_both(down_up, x, w_down, w_up, cot_down)


def direct(feats, pairs, weights, mask, threads, native_on=True):
    """pair_conv on a mirrored submanifold list with a centre tap: output and both gradients."""
    weight, mirror, centre = weights

    def conv(f, w, m, c):
        if native_on:
            return native.pair_conv(
                f, pairs.in_rows, pairs.out_rows, pairs.tile_offset, pairs.num_tiles,
                pairs.tile_size, w, m, None, c, mask, threads=threads,
            )  # fmt: skip
        return pair_conv(f, pairs, w, m, centre_weight=c, mask=mask, native=False)

    out, pullback = jax.vjp(conv, feats, weight, mirror, centre)
    return (out,) + pullback(jnp.cos(out))


def big_problem(c_in=20, c_out=24):
    """Several row blocks per sample, two non-empty samples (the weight gradient adds partial
    sums), and (with the channel counts used) every vector width and the scalar columns."""
    x = random_batch(7, densities=(0.5, 0.0, 0.35), grid=(10, 10, 10), capacity=640, channels=c_in)
    kmap = jax.jit(lambda x: sp.submanifold_map(x, (3, 3, 3), tile_size=64))(x)
    pairs = kmap.pairs[(3, 3, 3)]
    rng = np.random.default_rng(3)
    k = len(pairs.offsets)
    weights = tuple(
        jnp.asarray(rng.normal(size=s).astype(np.float32))
        for s in ((k, c_in, c_out), (k, c_in, c_out), (c_in, c_out))
    )
    return x, pairs, weights


@pytest.mark.parametrize("c_in, c_out", [(20, 24), (64, 80)])
def test_bitwise_across_runs_and_thread_counts_and_equal_to_pure_jax(built, c_in, c_out):
    x, pairs, weights = big_problem(c_in, c_out)
    fn = jax.jit(direct, static_argnums=(4, 5))
    first = fn(x.feats, pairs, weights, x.mask, 1)
    ref = fn(x.feats, pairs, weights, x.mask, 1, False)
    jax.tree.map(assert_close, first, ref)
    for threads in (1, 2, 3, 8):
        again = fn(x.feats, pairs, weights, x.mask, threads)
        for a, b in zip(first, again):
            assert np.array_equal(np.asarray(a), np.asarray(b)), threads


def test_jit_vmap_shared_and_batched_weights(built):
    x = random_batch(4)
    rng = np.random.default_rng(5)
    w = jnp.asarray(rng.normal(size=(1, 3, 3, C_IN, C_OUT)).astype(np.float32))
    w_batch = jnp.asarray(rng.normal(size=(len(x.mask), 3, 1, 3, C_IN, C_OUT)).astype(np.float32))

    def per_sample(coords, feats, mask, w):
        return jnp.sum(jnp.sin(sp.submanifold_conv(coords, feats, w, mask)))

    def vmapped(x, w, w_batch):
        loss = jax.vmap(per_sample, (0, 0, 0, None))
        shared = jax.value_and_grad(lambda f, w: jnp.sum(loss(x.coords, f, x.mask, w)), (0, 1))
        batched = jax.vmap(jax.value_and_grad(per_sample, (1, 3)))
        return shared(x.feats, w), batched(x.coords, x.feats, x.mask, w_batch)

    check_both(vmapped, x, w, w_batch)


def test_sharded_batch_equals_one_device(built):
    x = random_batch(6)
    w = jnp.asarray(np.random.default_rng(6).normal(size=(3, 3, 3, C_IN, C_OUT)), jnp.float32)

    def loss(feats, w, coords, mask):
        t = sp.SparseTensor(coords, feats, mask, x.spatial_shape)
        kmap = sp.submanifold_map(t)
        out = sp.sparse_conv(feats, kmap, w, in_mask=mask)
        return jnp.sum(out**2), out

    step = jax.value_and_grad(loss, (0, 1), has_aux=True)
    single = traced(step, True)(x.feats, w, x.coords, x.mask)
    ref = traced(step, False)(x.feats, w, x.coords, x.mask)
    jax.tree.map(assert_close, single, ref)
    explicit = run_batch_sharded(
        lambda f, c, m: traced(step, True)(f, w, c, m), x.feats, x.coords, x.mask
    )
    jax.tree.map(assert_close, explicit, single)
    mesh = make_data_mesh(jax.devices())  # the trainer's mesh (Auto axes)
    sharded = jax.device_put(
        (x.feats, x.coords, x.mask), NamedSharding(mesh, PartitionSpec("data"))
    )
    auto = traced(lambda f, c, m: step(f, w, c, m), True)(*sharded)
    jax.tree.map(assert_close, auto, single)


@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
    """native's per-process state emptied (restored afterwards), a private cache folder."""
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setattr(native, "_logged", set())
    monkeypatch.setenv(native.ENV_CACHE, str(tmp_path / "cache"))
    return tmp_path


def test_fallback_without_compiler_logs_one_line(fresh_state, monkeypatch, caplog):
    monkeypatch.setattr(native, "compiler", lambda: None)
    monkeypatch.delenv(native.ENV_SWITCH, raising=False)
    x = random_batch(8)
    w = jnp.asarray(np.random.default_rng(8).normal(size=(3, 3, 3, C_IN, C_OUT)), jnp.float32)

    def conv(x, w):
        return sp.sparse_conv(x.feats, sp.submanifold_map(x), w, in_mask=x.mask)

    with caplog.at_level(logging.WARNING, logger=native.__name__):
        fallback = jax.jit(conv)(x, w)
        jax.jit(lambda x, w: conv(x, w) + 1)(x, w)  # a second trace logs nothing more
    lines = [r.getMessage() for r in caplog.records if r.name == native.__name__]
    assert len(lines) == 1 and "no C++ compiler" in lines[0] and "pure-JAX" in lines[0]
    assert "leakjax_pair_conv" not in str(jax.make_jaxpr(conv)(x, w))
    ref = traced(conv, False)(x, w)
    assert np.array_equal(np.asarray(fallback), np.asarray(ref))


def test_disabled_by_env_logs_one_line(monkeypatch, caplog):
    monkeypatch.setattr(native, "_logged", set())
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    x = random_batch(9)
    w = jnp.asarray(np.random.default_rng(9).normal(size=(1, 3, 3, C_IN, C_OUT)), jnp.float32)
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        jaxprs = [
            str(jax.make_jaxpr(sp.submanifold_conv)(x.coords[0], x.feats[0], w)) for _ in "ab"
        ]
    assert all("leakjax_pair_conv" not in j for j in jaxprs)
    lines = [r.getMessage() for r in caplog.records if r.name == native.__name__]
    assert len(lines) == 1 and "LEAKJAX_NATIVE=0" in lines[0]


def test_cache_key_and_concurrent_atomic_build(built, fresh_state, monkeypatch):
    """Two concurrent first builds (a fake compiler copying the built library after a pause)
    give one complete library and leave no temporary file; a changed source is a new key."""
    fake = fresh_state / "fake-cxx"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import shutil, sys, time\n"
        "if '--version' in sys.argv: print('fake 1.0'); sys.exit()\n"
        "time.sleep(0.3)\n"
        f"shutil.copy({str(built)!r}, sys.argv[sys.argv.index('-o') + 1])\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    paths = []
    builders = [threading.Thread(target=lambda: paths.append(native.build())) for _ in range(2)]
    for b in builders:
        b.start()
    for b in builders:
        b.join()
    assert len(paths) == 2 and paths[0] == paths[1] and paths[0].exists()
    assert paths[0].read_bytes() == built.read_bytes()
    assert [p.name for p in paths[0].parent.iterdir()] == [paths[0].name]
    source = fresh_state / "pair_conv.cc"
    shutil.copy(native.SOURCE, source)
    source.write_text(source.read_text() + "\n// changed\n")
    monkeypatch.setattr(native, "SOURCE", source)
    assert native.library_path(str(fake)) != paths[0]
