"""The LEAK pipeline end to end with the smoke config: all phases, report, resume, CLI subset."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import semkitti as semkitti_configs
from leakjax import pipeline
from leakjax.leak import Hierarchy
from leakjax.metrics import segmentation_metrics
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
    report = pipeline.run_pipeline(config, workdir, cache_dir=str(cache_dir))
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
        "curves.png",
        "render_0.png",
        "render_1.png",
    ):
        assert (workdir / name).is_file(), name
    for name in (
        "confusion.png",
        "conductance.png",
        "dendrogram.png",
        "curves.png",
        "render_0.png",
    ):
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
        assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
        train_records = [r for r in records if "loss" in r]
        assert train_records[-1]["step"] == config.train.num_steps
        assert "loss_fairness" in train_records[-1]
        if run == "baseline":  # prototypes tracked, LEAK's terms weightless: loss = L0
            assert all(r["loss"] == r["loss_model"] for r in train_records)
        else:
            assert any(r["loss"] > r["loss_model"] for r in train_records)
        # validation during training: every eval_every steps, per-class IoU included
        val_steps = [r["step"] for r in records if "val_miou" in r]
        assert val_steps == list(range(3, config.train.num_steps + 1, config.train.eval_every))
        assert "val_iou/car" in next(r for r in records if "val_miou" in r)
    markdown = (workdir / "report.md").read_text()
    assert "| miou |" in markdown and "| hiou |" in markdown and "curves.png" in markdown
    assert "Tab. VI" in markdown and "Tab. VII" in markdown and "| hiou_shared |" in markdown
    for run in ("baseline", "leak"):
        geometry = report["runs"][run]["geometry"]
        assert set(geometry) == {"theta_gamma", "ccd", "pd", "pcd"}
        assert all(np.isfinite(v) and v >= 0 for v in geometry.values())
    # the LEAK run's own grouping is the shared one here
    assert report["runs"]["leak"]["hiou_shared"] == report["runs"]["leak"]["hiou"]


def test_leak_checkpoint_carries_the_hierarchy(smoke_run, cache_dir):
    config, workdir, _ = smoke_run
    hierarchy = Hierarchy.load(workdir / "hierarchy.json")
    settings = pipeline.leak_settings(config, hierarchy)
    pipe = pipeline.setup(config, workdir, cache_dir=str(cache_dir))
    _, state, metadata = trainer.load_state(
        config, workdir / "leak", pipe.mesh, pipe.data, settings
    )
    assert metadata["hierarchy"]["micro_to_macro"] == list(settings.micro_to_macro)
    assert metadata["config"]["train"]["num_steps"] == config.train.num_steps
    counts = np.asarray(state.prototypes["micro_counts"])
    assert counts.sum() > 0 and counts.shape == (19,)


def test_evaluation_matches_a_per_scan_numpy_count(smoke_run, cache_dir):
    """The sharded, padded, batched evaluation equals predicting each scan alone and counting."""
    config, workdir, _ = smoke_run
    pipe = pipeline.setup(config, workdir, cache_dir=str(cache_dir))
    tracking = pipeline.phases.baseline_settings(config, 19)
    model, state, _ = trainer.load_state(
        config, workdir / "baseline", pipe.mesh, pipe.data, tracking
    )
    # the baseline tracked its micro prototypes (Tab. VI) without using them
    assert np.asarray(state.prototypes["micro_counts"]).sum() > 0
    cached = np.load(workdir / "baseline" / f"val_confusion_step{config.train.num_steps}.npy")
    expected = np.zeros((20, 20), np.int64)
    apply = jax.jit(lambda variables, batch: model.apply(variables, batch, train=False)[0])
    variables = jax.device_get(state.variables())
    for index in range(len(pipe.data.validation)):
        sample = pipe.data.validation[index]
        points, labels = sample["points"], sample["labels"]
        batch = input_pipeline.pad_batch([sample], max(config.data.buckets), pipe.data.spec)
        logits = np.asarray(apply(variables, batch))[0, : len(points)]
        prediction = logits[:, 1:].argmax(axis=-1) + 1
        keep = labels != 0
        np.add.at(expected, (labels[keep], prediction[keep]), 1)
    np.testing.assert_array_equal(cached, expected)
    # The validation logged during training (at the last step) is this same evaluation.
    records = train_logging.read_jsonl(workdir / "baseline" / "metrics.jsonl")
    logged = [r for r in records if "val_miou" in r][-1]
    assert logged["step"] == config.train.num_steps
    independent = segmentation_metrics(expected, ignore_index=0)
    assert logged["val_miou"] == pytest.approx(independent["miou"], abs=1e-12)
    assert logged["val_oa"] == pytest.approx(independent["oa"], abs=1e-12)
    assert logged["val_iou/car"] == pytest.approx(independent["iou_per_class"][1], abs=1e-12)


def _pointmlp_smoke():
    """The smoke pipeline with a model that compiles in about a second (bookkeeping tests)."""
    config = semkitti_configs.get_config("smoke")
    config.model.name = "pointmlp"
    config.model.kwargs = {"hidden_sizes": (16, 16)}
    # Bookkeeping: no Lovasz-softmax. Over the global batch its sort cannot be partitioned, so on
    # the 4 simulated devices every device computes it whole (~2.5 s a step on 2 cores).
    config.loss.lovasz_weight = 0.0
    return config


def test_resume_after_phase_one_does_not_repeat_it(tmp_path, cache_dir):
    config = _pointmlp_smoke()
    report = pipeline.run_pipeline(config, tmp_path / "straight", cache_dir=str(cache_dir))
    workdir = tmp_path / "resumed"
    pipeline.run_pipeline(config, workdir, phases=(1,), cache_dir=str(cache_dir))
    assert not (workdir / "hierarchy.json").exists()
    baseline_log = (workdir / "baseline" / "metrics.jsonl").read_text()
    checkpoints = sorted(os.listdir(workdir / "baseline" / "checkpoints"))
    resumed = pipeline.run_pipeline(config, workdir, cache_dir=str(cache_dir))
    assert (workdir / "baseline" / "metrics.jsonl").read_text() == baseline_log  # not retrained
    assert sorted(os.listdir(workdir / "baseline" / "checkpoints")) == checkpoints
    assert resumed["runs"] == report["runs"]  # same numbers as the uninterrupted run
    assert resumed["hierarchy"] == report["hierarchy"]


def test_bad_phase_requests_are_errors(tmp_path, cache_dir):
    config = semkitti_configs.get_config("smoke")
    with pytest.raises(ValueError, match="unknown phases"):
        pipeline.run_pipeline(config, tmp_path / "a", phases=(5,), cache_dir=str(cache_dir))
    with pytest.raises(ValueError, match="need phase 2's hierarchy"):
        pipeline.run_pipeline(config, tmp_path / "b", phases=(3,), cache_dir=str(cache_dir))
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
    # our progress lines reach the terminal, dependencies' INFO floods (Orbax) do not
    assert "phases 4 done in" in result.stderr
    assert "orbax" not in result.stderr.lower()
    rewritten = json.loads((workdir / "report.json").read_text())
    assert rewritten["runs"] == json.loads(json.dumps(report["runs"]))


def test_variants_and_seeds_share_one_baseline_and_resume(tmp_path, cache_dir):
    """Two LEAK variants x two seeds in one work directory: one baseline, one hierarchy per
    distinct grouping, four LEAK runs; a second call (as after a kill) trains nothing again."""
    config = _pointmlp_smoke()
    config.train.num_steps = 3
    config.train.eval_every = 3
    workdir = tmp_path / "variants"
    variants = [
        pipeline.Variant("leak"),
        pipeline.Variant("no_fairness", {"leak.lambda_fairness": 0.0, "leak.grouping": "random"}),
    ]
    first = pipeline.run_pipeline(
        config, workdir, cache_dir=str(cache_dir), variants=variants, seeds=[0, 1]
    )
    runs = ["baseline", "leak", "leak-seed1", "no_fairness", "no_fairness-seed1"]
    assert list(first["runs"]) == runs
    assert sorted(p.name for p in workdir.glob("baseline*")) == ["baseline"]
    for name in runs[1:]:
        metadata_config = json.loads(json.dumps(trainer_metadata(workdir / name)))
        assert metadata_config["train"]["num_steps"] == 3
    # seed 1 really is another seed, the fairness-free variant really has lambda_F = 0
    assert trainer_metadata(workdir / "leak-seed1")["seed"] == 1
    assert trainer_metadata(workdir / "no_fairness")["leak"]["lambda_fairness"] == 0.0
    leak_log = train_logging.read_jsonl(workdir / "leak" / "metrics.jsonl")
    seed1_log = train_logging.read_jsonl(workdir / "leak-seed1" / "metrics.jsonl")
    assert [r["loss"] for r in leak_log if "loss" in r] != [
        r["loss"] for r in seed1_log if "loss" in r
    ]
    # spectral grouping: one hierarchy for both seeds; random grouping: one per seed
    assert (workdir / "hierarchy.json").exists()
    assert len(list(workdir.glob("hierarchy-random-*.json"))) == 2
    logs = {name: (workdir / name / "metrics.jsonl").read_text() for name in runs}
    again = pipeline.run_pipeline(
        config, workdir, cache_dir=str(cache_dir), variants=variants, seeds=[0, 1]
    )
    assert {name: (workdir / name / "metrics.jsonl").read_text() for name in runs} == logs
    assert again["runs"] == first["runs"]


def trainer_metadata(run_dir: pathlib.Path) -> dict:
    from leakjax.train.checkpoint import Checkpointer

    checkpointer = Checkpointer(run_dir / "checkpoints")
    try:
        return checkpointer.restore_metadata()["config"]
    finally:
        checkpointer.close()


def test_randla_variant_scores_every_validation_point(tmp_path, cache_dir):
    """The RandLA-Net variant of the main command (crops in training, whole scans in evaluation):
    all four phases, and the validation confusion counts every labelled point of every scan."""
    config = semkitti_configs.get_config("randla_smoke")
    workdir = tmp_path / "randla"
    result = pipeline.run_pipeline(config, workdir, cache_dir=str(cache_dir))
    assert list(result["runs"]) == ["baseline", "leak"]
    data = pipeline.setup(config, workdir, cache_dir=str(cache_dir)).data
    labelled = sum(
        int(np.sum(data.validation[i]["labels"] != 0)) for i in range(len(data.validation))
    )
    for run in ("baseline", "leak"):
        assert result["runs"][run]["num_labelled"] == labelled
        assert result["runs"][run]["geometry"]["pd"] > 0
