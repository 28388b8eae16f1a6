"""A damaged checkpoint does not end a run: the newest one that restores is resumed (with a warning
naming the damaged step and its path) and the run ends as if nothing had happened; when none
restores, the error says what to delete, and nothing is trained from scratch behind the user's back.
"""

import logging
import pathlib

import jax
import numpy as np
import pytest
from train_fixtures import InMemorySource, in_memory_dataset, tiny_config

from leakjax import leak
from leakjax.train import checkpoint, trainer
from leakjax.train import logging as train_logging
from leakjax.train import mesh as mesh_lib
from leakjax.train.steps import LeakSettings

MICRO_TO_MACRO = (0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4)
LEAK = LeakSettings(MICRO_TO_MACRO, leak.LeakConfig(lambda_micro=0.05, lambda_macro=0.05))


def _config():
    config = tiny_config(num_steps=6)
    config.train.checkpoint_every = 2
    config.train.max_checkpoints_to_keep = 3
    return config


def _train(run_dir: pathlib.Path, **kwargs):
    config = _config()
    data = in_memory_dataset(InMemorySource(10))
    loss = trainer.loss_settings(config, data.label_space, None)
    state = trainer.train(config, run_dir, data, mesh_lib.make_data_mesh(), loss, LEAK, **kwargs)
    return jax.device_get(state)


def _losses_by_step(run_dir: pathlib.Path) -> dict[int, float]:
    """The loss logged for each step (the latest record of a step that was trained twice)."""
    return {r["step"]: r["loss"] for r in train_logging.read_jsonl(run_dir / "metrics.jsonl")}


def _damage(step_dir: pathlib.Path, how: str) -> list[pathlib.Path]:
    """Truncates to half, or overwrites 64 bytes in the middle of, every data file of the state."""
    files = sorted(
        p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"
    )
    assert files, f"no data files under {step_dir}"
    for path in files:
        data = bytearray(path.read_bytes())
        if how == "truncate":
            data = data[: len(data) // 2]
        else:
            middle = len(data) // 2
            data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])
        path.write_bytes(bytes(data))
    return files


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    return _train(run_dir), _losses_by_step(run_dir)


@pytest.mark.parametrize("how", ["truncate", "corrupt"])
def test_damaged_latest_checkpoint_resumes_from_the_previous_one(straight, tmp_path, how, caplog):
    state, losses = straight
    run_dir = tmp_path / "run"
    _train(run_dir, stop_at_step=4)
    checkpoints = run_dir / "checkpoints"
    assert checkpoint.Checkpointer(checkpoints).all_steps() == [2, 4]
    _damage(checkpoints / "4", how)
    with caplog.at_level(logging.WARNING, logger="leakjax"):
        resumed = _train(run_dir)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"checkpoint step 4 at {checkpoints / '4'} does not restore" in w for w in warnings)
    assert any("resuming from step 2" in w for w in warnings), warnings
    # Steps 3-6 were trained again from step 2: the end is the uninterrupted run's, bit for bit.
    assert _losses_by_step(run_dir) == losses
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    # The damaged step was set aside (kept for inspection) and written again by the resumed run.
    assert (tmp_path / "run" / "checkpoints_damaged" / "4" / "state").is_dir()
    assert checkpoint.Checkpointer(checkpoints).all_steps() == [2, 4, 6]
    restored = _train(run_dir)  # finished: restores step 6, including the rewritten step 4's
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)


def test_no_restorable_checkpoint_is_an_error_that_says_what_to_delete(tmp_path):
    run_dir = tmp_path / "run"
    _train(run_dir, stop_at_step=4)
    checkpoints = run_dir / "checkpoints"
    _damage(checkpoints / "4", "truncate")
    _damage(checkpoints / "2", "corrupt")
    log_before = (run_dir / "metrics.jsonl").read_text()
    with pytest.raises(checkpoint.NoRestorableCheckpointError) as error:
        _train(run_dir)
    message = str(error.value)
    assert f"no checkpoint in {checkpoints} restores" in message
    assert (
        f"step 4 at {checkpoints / '4'}" in message and f"step 2 at {checkpoints / '2'}" in message
    )
    assert "delete the damaged step directories" in message
    # Nothing was trained or moved: no silent restart from scratch.
    assert (run_dir / "metrics.jsonl").read_text() == log_before
    assert checkpoint.Checkpointer(checkpoints).all_steps() == [2, 4]
    assert not (run_dir / "checkpoints_damaged").exists()
