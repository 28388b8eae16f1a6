"""Coarse-to-fine training (Tab. V): macro-class loss for the first steps, then the usual L0."""

import jax
import numpy as np
import pytest
from train_fixtures import InMemorySource, in_memory_dataset, tiny_config

from leakjax.leak import LeakConfig, LeakSettings
from leakjax.train import input_pipeline, trainer
from leakjax.train import mesh as mesh_lib
from leakjax.train.steps import coarse_loss, make_train_step, model_loss

OFF = LeakConfig(lambda_micro=0.0, lambda_macro=0.0, lambda_fairness=0.0)


def _numpy_coarse(logits, labels, valid, micro_to_macro):
    """Macro log-probability = log of the summed member probabilities (label ids 1..19, 0 off)."""
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    total, count = 0.0, 0
    for p, label, ok in zip(probs.reshape(-1, 20), labels.reshape(-1), valid.reshape(-1)):
        if not ok or label == 0:
            continue
        macro = micro_to_macro[label - 1]
        members = [c + 1 for c in range(19) if micro_to_macro[c] == macro]
        total -= np.log(p[members].sum())
        count += 1
    return total / count


def test_coarse_loss_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 30, 20)).astype(np.float32)
    labels = rng.integers(0, 20, size=(2, 30)).astype(np.int32)
    valid = rng.random((2, 30)) > 0.2
    mapping = np.arange(19) % 4
    data = in_memory_dataset(InMemorySource(1))
    aux = {"loss_logits": logits, "loss_labels": labels, "loss_mask": valid}
    got = float(coarse_loss(aux, data.label_space, mapping))
    assert got == pytest.approx(_numpy_coarse(logits, labels, valid, mapping), rel=1e-5)


def test_train_step_switches_from_macro_to_micro_labels(tmp_path):
    """With coarse_fraction 0.5 of 4 steps: steps 1-2 report the macro loss of their batch, steps
    3-4 the usual L0 (each recomputed here from the step's own parameters)."""
    config = tiny_config(num_steps=4)
    config.loss.coarse_fraction = 0.5
    config.loss.lovasz_weight = 0.0
    config.model.kwargs = {"hidden_sizes": (16, 16), "dropout_rate": 0.0}
    source = InMemorySource(8)
    data = in_memory_dataset(source)
    mapping = tuple(int(v) for v in np.arange(19) % 3)
    settings = LeakSettings(mapping, OFF)
    loss = trainer.loss_settings(config, data.label_space, None)
    assert loss.coarse_steps == 2
    mesh = mesh_lib.make_data_mesh(jax.devices()[:1])
    run = trainer.build_run(config, tmp_path, mesh, data, settings)
    run.checkpointer.close()
    state = run.init_fn()
    step = make_train_step(
        run.model,
        run.tx,
        mesh,
        jax.random.key(0),
        loss,
        data.label_space,
        data.spec,
        settings,
        donate=False,
    )
    batches = input_pipeline.train_batches(
        source, data.spec, 4, 0, 0, config.data.buckets, label_fill=0
    )
    for index in range(4):
        batch = next(batches)
        logits, aux = run.model.apply(
            state.variables(), batch, train=True, mutable=["batch_stats"]
        )[0]
        fine = float(model_loss(logits, batch, aux, loss, data.label_space, data.spec))
        coarse = _numpy_coarse(
            np.asarray(aux["loss_logits"]), batch["labels"], batch["point_mask"], mapping
        )
        state, metrics = step(state, mesh_lib.global_batch(batch, mesh))
        want = coarse if index < 2 else fine
        assert float(metrics["loss_model"]) == pytest.approx(want, rel=1e-4), index
        assert abs(coarse - fine) > 1e-3  # the two phases really differ
    with pytest.raises(ValueError, match="needs a hierarchy"):
        make_train_step(
            run.model, run.tx, mesh, jax.random.key(0), loss, data.label_space, data.spec, None
        )
