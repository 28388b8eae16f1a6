"""The LEAK pipeline's bookkeeping with a fast model (resume after a phase, variants x seeds in
one work directory) and the RandLA-Net variant of the main command; apart from
tests/test_pipeline.py (the Cylinder3D smoke run) so that the two run in different test processes.
"""

import json
import os
import pathlib

import numpy as np
import pytest

from experiments.configs import semkitti as semkitti_configs
from leakjax import pipeline
from leakjax.train import logging as train_logging


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic_cache")


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
