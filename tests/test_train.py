"""Trainer tests: sharded step == 1-device step, Orbax round trip, determinism, resume, NaN stop."""

import contextlib

import jax
import numpy as np
import pytest
from explicit_mesh import explicit_mesh
from train_fixtures import InMemorySource, in_memory_dataset, tiny_config

from experiments.configs import semkitti as semkitti_configs
from leakjax import leak
from leakjax.train import checkpoint, input_pipeline, trainer
from leakjax.train import logging as train_logging
from leakjax.train import mesh as mesh_lib
from leakjax.train.steps import LeakSettings, make_train_step

LABELS = in_memory_dataset(None).label_space

# 19 micro classes in 5 macro classes (any fixed grouping serves the trainer tests).
MICRO_TO_MACRO = (0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4)
LEAK = LeakSettings(MICRO_TO_MACRO, leak.LeakConfig(lambda_micro=0.05, lambda_macro=0.05))


def _host_batches(source, config, num):
    data = in_memory_dataset(source)
    batches = input_pipeline.train_batches(
        source, data.spec, config.train.batch_size, config.seed, 0, config.data.buckets
    )
    return [next(batches) for _ in range(num)]


def _run_steps(devices, config, host_batches, tmp_path, mesh=None):
    """Train steps on the trainer's `data` mesh over `devices`, or on the given mesh (one with
    Explicit axes is used under jax.set_mesh, as JAX requires)."""
    explicit = mesh is not None
    mesh = mesh_lib.make_data_mesh(devices) if mesh is None else mesh
    data = in_memory_dataset(InMemorySource(1))
    run = trainer.build_run(config, tmp_path, mesh, data, LEAK)
    run.checkpointer.close()
    with jax.set_mesh(mesh) if explicit else contextlib.nullcontext():
        state = run.init_fn()
        step = make_train_step(
            run.model,
            run.tx,
            mesh,
            jax.random.key(config.seed),
            trainer.loss_settings(config, data.label_space, None),
            data.label_space,
            data.spec,
            LEAK,
            donate=False,
        )
        losses = []
        for batch in host_batches:
            state, metrics = step(state, mesh_lib.global_batch(batch, mesh))
            losses.append(float(metrics["loss"]))
    return jax.device_get(state), losses


@pytest.fixture(scope="module")
def config():
    return tiny_config()


@pytest.fixture(scope="module")
def source():
    return InMemorySource(12)


def test_four_devices_equal_one_device(config, source, tmp_path):
    assert len(jax.devices()) == 4, "tests/conftest.py should give 4 simulated CPU devices"
    batches = _host_batches(source, config, 3)
    # Unequal real points per device: the padding differs, the global statistics must not.
    assert len({int(m.sum()) for m in batches[0]["point_mask"]}) > 1
    single, single_losses = _run_steps(jax.devices()[:1], config, batches, tmp_path / "one")
    sharded, sharded_losses = _run_steps(jax.devices(), config, batches, tmp_path / "four")
    # the same on a mesh of Explicit axes (jax.make_mesh's default; dropout included)
    explicit, explicit_losses = _run_steps(None, config, batches, tmp_path / "x", explicit_mesh())
    assert config.model.kwargs["dropout_rate"] > 0
    assert single.prototypes["micro_counts"].sum() > 0  # the bank was really updated
    assert np.abs(single.batch_stats["BatchNorm_0"]["mean"]).max() > 0
    for other, other_losses in ((sharded, sharded_losses), (explicit, explicit_losses)):
        np.testing.assert_allclose(other_losses, single_losses, rtol=1e-6, atol=1e-6)
        for name in ("params", "batch_stats", "prototypes"):
            for a, b in zip(
                jax.tree.leaves(getattr(single, name)), jax.tree.leaves(getattr(other, name))
            ):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=name)


def test_cylinder3d_step_four_devices_equal_one_device(source, tmp_path):
    """The default model, sharded: same loss, gradients (through SGD), BN statistics, prototypes
    on the trainer's mesh of Auto axes. (Explicit axes, where the sparse ops and LEAK's class sums
    run per device, leakjax.sharding: the trainer with LEAK in `test_four_devices_equal_one_device`,
    the sparse network in tests/test_sparse_layers.py; a third Cylinder3D compile here cost ~50 s.)

    SGD rather than Adam: Adam's first step is about lr * sign(g), so a parameter whose true
    gradient is zero (e.g. a bias right before a BatchNorm) moves by +-lr on float32 rounding noise
    of the reduction order; SGD keeps the comparison a comparison of gradients.
    """
    config = tiny_config()
    smoke = semkitti_configs.get_config("smoke")
    config.model = smoke.model
    config.data.buckets = [256]
    config.optimizer.name = "sgd"
    batches = _host_batches(source, config, 1)
    single, single_losses = _run_steps(jax.devices()[:1], config, batches, tmp_path / "one")
    sharded, sharded_losses = _run_steps(jax.devices(), config, batches, tmp_path / "four")
    assert single.prototypes["micro_counts"].sum() > 0
    np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-6)
    for name, other in [(n, sharded) for n in ("params", "batch_stats", "prototypes")]:
        for a, b in zip(
            jax.tree.leaves(getattr(single, name)), jax.tree.leaves(getattr(other, name))
        ):
            # Sums over ~10^3 rows in another order: float32 rounding of about 1e-6 of the
            # array's scale (measured: params within 2e-7, BN variance and prototypes 2e-6 of
            # values up to 12 and 2.4).
            scale = float(np.abs(a).max())
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale + 1e-7, err_msg=name)


def test_orbax_round_trip_is_bitwise(config, source, tmp_path):
    mesh = mesh_lib.make_data_mesh()
    state, _ = _run_steps(jax.devices(), config, _host_batches(source, config, 2), tmp_path / "a")
    run = trainer.build_run(config, tmp_path / "b", mesh, in_memory_dataset(source), LEAK)
    state = jax.device_put(state, mesh_lib.replicated_sharding(mesh))
    metadata = {"config": config.to_dict(), "hierarchy": {"micro_to_macro": list(MICRO_TO_MACRO)}}
    run.checkpointer.save(state, metadata)
    run.checkpointer.wait()
    restored, restored_metadata = run.checkpointer.restore(run.abstract_state)
    run.checkpointer.close()
    assert int(restored.step) == 2
    assert restored_metadata["hierarchy"] == metadata["hierarchy"]
    saved_leaves, restored_leaves = jax.tree.leaves(state), jax.tree.leaves(restored)
    assert jax.tree.structure(state) == jax.tree.structure(restored)
    for saved, loaded in zip(saved_leaves, restored_leaves):
        saved, loaded = np.asarray(saved), np.asarray(loaded)
        assert saved.dtype == loaded.dtype and saved.shape == loaded.shape
        assert saved.tobytes() == loaded.tobytes()


def _train(config, source, run_dir, **kwargs):
    mesh = mesh_lib.make_data_mesh()
    data = in_memory_dataset(source)
    loss = trainer.loss_settings(config, data.label_space, None)
    state = trainer.train(config, run_dir, data, mesh, loss, LEAK, **kwargs)
    losses = [r["loss"] for r in train_logging.read_jsonl(run_dir / "metrics.jsonl")]
    return jax.device_get(state), losses


@pytest.fixture(scope="module")
def straight_run(config, source, tmp_path_factory):
    return _train(config, source, tmp_path_factory.mktemp("straight"))


def test_same_seed_same_losses(config, source, straight_run, tmp_path):
    _, losses = straight_run
    assert len(losses) == config.train.num_steps
    _, again = _train(config, source, tmp_path / "again")
    assert again == losses
    _, other_seed = _train(tiny_config(seed=1), source, tmp_path / "seed1")
    assert other_seed != losses


def test_resume_continues_exactly(config, source, straight_run, tmp_path):
    state, losses = straight_run
    run_dir = tmp_path / "resumed"
    _, first = _train(config, source, run_dir, stop_at_step=3)
    assert len(first) == 3
    assert checkpoint.Checkpointer(run_dir / "checkpoints").latest_step() == 3
    resumed, all_losses = _train(config, source, run_dir)
    assert all_losses == losses  # steps 1-3 from the first call, 4-6 after resuming
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)


def test_non_finite_loss_stops_clearly(config, tmp_path):
    source = InMemorySource(8, nan_scan=5)
    with pytest.raises(
        train_logging.NonFiniteLossError, match="non-finite training metrics at step"
    ):
        _train(config, source, tmp_path / "nan")
    steps = checkpoint.Checkpointer(tmp_path / "nan" / "checkpoints").all_steps()
    assert steps == []  # the NaN appears before the first checkpoint: nothing was saved


def test_pointmlp_dropout_equals_flax_dropout():
    """PointMLP's Dropout (mask drawn with the input's sharding) gives flax's nn.Dropout outputs:
    same rng stream, module name and mask."""
    import flax.linen as nn
    import jax.numpy as jnp

    from leakjax.layers import Dropout

    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 50, 8)).astype(np.float32))

    class Flax(nn.Module):
        @nn.compact
        def __call__(self, x, deterministic):
            return nn.Dropout(0.3)(x, deterministic=deterministic)

    class Ours(nn.Module):
        @nn.compact
        def __call__(self, x, deterministic):
            return Dropout(0.3)(x, deterministic=deterministic)

    rngs = {"dropout": jax.random.key(3)}
    want = Flax().apply({}, x, False, rngs=rngs)
    assert 0.2 < float(jnp.mean(want == 0)) < 0.4
    np.testing.assert_array_equal(Ours().apply({}, x, False, rngs=rngs), want)
    np.testing.assert_array_equal(Ours().apply({}, x, True), x)
