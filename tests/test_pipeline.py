"""The LEAK pipeline end to end with the smoke config: all phases, report, resume, CLI subset."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import semkitti
from experiments.configs import semkitti as semkitti_configs
from leakjax.leak import Hierarchy
from leakjax.train import input_pipeline, trainer
from leakjax.train import logging as train_logging

REPO = pathlib.Path(__file__).resolve().parent.parent
REPORT_KEYS = (
    "miou",
    "miou_present",
    "hiou",
    "oa",
    "macc",
    "fwiou",
    "iou_mse",
    "iou_std",
    "iou_entropy",
    "iou_per_class",
)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic_cache")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, cache_dir):
    """One full smoke pipeline (all phases) shared by the tests below."""
    workdir = tmp_path_factory.mktemp("smoke") / "run"
    config = semkitti_configs.get_config("smoke")
    report = semkitti.run_pipeline(config, workdir, cache_dir=str(cache_dir))
    return config, workdir, report


def test_all_phases_write_their_outputs(smoke_run):
    config, workdir, report = smoke_run
    for name in (
        "config.json",
        "hierarchy.json",
        "report.md",
        "report.json",
        "confusion.png",
        "conductance.png",
        "dendrogram.png",
    ):
        assert (workdir / name).is_file(), name
    for name in ("confusion.png", "conductance.png", "dendrogram.png"):
        assert (workdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hierarchy = Hierarchy.load(workdir / "hierarchy.json")
    assert hierarchy.num_micro == 19 and hierarchy.class_names[0] == "car"
    assert json.loads((workdir / "report.json").read_text())["hierarchy"]["micro_to_macro"] == [
        int(v) for v in hierarchy.micro_to_macro
    ]
    for run in ("baseline", "leak"):
        for key in REPORT_KEYS:
            assert key in report["runs"][run], (run, key)
        assert len(report["runs"][run]["iou_per_class"]) == 19
        assert 0.0 <= report["runs"][run]["oa"] <= 1.0
        records = train_logging.read_jsonl(workdir / run / "metrics.jsonl")
        assert records[-1]["step"] == config.train.num_steps
        assert all(np.isfinite(r["loss"]) for r in records)
        assert ("loss_fairness" in records[-1]) == (run == "leak")
    markdown = (workdir / "report.md").read_text()
    assert "| miou |" in markdown and "| hiou |" in markdown


def test_leak_checkpoint_carries_the_hierarchy(smoke_run):
    config, workdir, _ = smoke_run
    hierarchy = Hierarchy.load(workdir / "hierarchy.json")
    settings = semkitti.leak_settings(config, hierarchy)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    _, state, metadata = trainer.load_state(config, workdir / "leak", mesh, settings)
    assert metadata["hierarchy"]["micro_to_macro"] == list(settings.micro_to_macro)
    assert metadata["config"]["train"]["num_steps"] == config.train.num_steps
    counts = np.asarray(state.prototypes["micro_counts"])
    assert counts.sum() > 0 and counts.shape == (19,)


def test_evaluation_matches_a_per_scan_numpy_count(smoke_run, cache_dir):
    """The sharded, padded, batched evaluation equals predicting each scan alone and counting."""
    config, workdir, _ = smoke_run
    pipe = semkitti.setup(config, workdir, cache_dir=str(cache_dir))
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    model, state, _ = trainer.load_state(config, workdir / "baseline", mesh)
    cached = np.load(workdir / "baseline" / f"val_confusion_step{config.train.num_steps}.npy")
    expected = np.zeros((20, 20), np.int64)
    apply = jax.jit(lambda variables, batch: model.apply(variables, batch, train=False)[0])
    variables = jax.device_get(state.variables())
    for index in range(len(pipe.val_source)):
        points, labels = pipe.val_source[index]
        batch = input_pipeline.pad_batch([(points, labels)], max(config.data.point_buckets))
        logits = np.asarray(apply(variables, batch))[0, : len(points)]
        prediction = logits[:, 1:].argmax(axis=-1) + 1
        keep = labels != 0
        np.add.at(expected, (labels[keep], prediction[keep]), 1)
    np.testing.assert_array_equal(cached, expected)


def test_resume_after_phase_one_does_not_repeat_it(smoke_run, tmp_path, cache_dir):
    config, _, report = smoke_run
    workdir = tmp_path / "resumed"
    semkitti.run_pipeline(config, workdir, phases=(1,), cache_dir=str(cache_dir))
    assert not (workdir / "hierarchy.json").exists()
    baseline_log = (workdir / "baseline" / "metrics.jsonl").read_text()
    checkpoints = sorted(os.listdir(workdir / "baseline" / "checkpoints"))
    resumed = semkitti.run_pipeline(config, workdir, cache_dir=str(cache_dir))
    assert (workdir / "baseline" / "metrics.jsonl").read_text() == baseline_log  # not retrained
    assert sorted(os.listdir(workdir / "baseline" / "checkpoints")) == checkpoints
    assert resumed["runs"] == report["runs"]  # same numbers as the uninterrupted run
    assert resumed["hierarchy"] == report["hierarchy"]


def test_bad_phase_requests_are_errors(tmp_path, cache_dir):
    config = semkitti_configs.get_config("smoke")
    with pytest.raises(ValueError, match="unknown phases"):
        semkitti.run_pipeline(config, tmp_path / "a", phases=(5,), cache_dir=str(cache_dir))
    with pytest.raises(ValueError, match="need phase 2's hierarchy"):
        semkitti.run_pipeline(config, tmp_path / "b", phases=(3,), cache_dir=str(cache_dir))
    with pytest.raises(ValueError, match="expected one of"):
        semkitti_configs.get_config("huge")


def test_command_line_runs_a_phase_subset(smoke_run, cache_dir):
    """`python -m experiments.semkitti --phases 4` on a finished workdir rewrites its report."""
    _, workdir, report = smoke_run
    (workdir / "report.json").unlink()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.semkitti",
            "--workdir",
            str(workdir),
            "--config",
            f"{REPO}/experiments/configs/semkitti.py:smoke",
            "--phases",
            "4",
            "--cache_dir",
            str(cache_dir),
            "--compilation_cache_dir",
            str(REPO / ".jax_cache"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rewritten = json.loads((workdir / "report.json").read_text())
    assert rewritten["runs"] == json.loads(json.dumps(report["runs"]))
