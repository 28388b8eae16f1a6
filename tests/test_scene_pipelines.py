"""S3DIS and Semantic3D through the registry and the whole LEAK pipeline on their synthetic
stand-ins: every raw validation point is scored (the confusion total equals the raw points counted
in the files), Semantic3D test predictions in the submission format, the pooled 6-fold metrics."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from datasets.registry import DATASETS, load_dataset
from datasets.s3dis import protocols
from datasets.scenes import evaluation_tag
from datasets.semantic3d import layout
from experiments import s3dis as s3dis_entry
from experiments import semantic3d as semantic3d_entry
from experiments.configs import s3dis as s3dis_configs
from experiments.configs import semantic3d as semantic3d_configs
from leakjax import pipeline
from leakjax.train.batch import LABEL_COUNTS

POINTMLP = {"input_channels": 6, "hidden_sizes": (16, 16)}  # compiles in seconds


def _config(module):
    config = module.get_config("smoke")
    config.model.name = "pointmlp"
    config.model.kwargs = POINTMLP
    return config


def _final_confusion(run_dir: pathlib.Path) -> np.ndarray:
    return s3dis_entry.final_confusion(run_dir)


@pytest.fixture(scope="module")
def s3dis_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("s3dis") / "run"
    config = _config(s3dis_configs)
    report = pipeline.run_pipeline(config, workdir)
    return config, workdir, report


@pytest.fixture(scope="module")
def semantic3d_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("semantic3d") / "run"
    config = _config(semantic3d_configs)
    report = pipeline.run_pipeline(config, workdir)
    return config, workdir, report


def test_registry_reads_both_stand_ins(s3dis_run, semantic3d_run):
    for name, (config, workdir, _) in (("s3dis", s3dis_run), ("semantic3d", semantic3d_run)):
        data = load_dataset(config.data, None, workdir.parent / "synthetic_cache")
        assert data.name == name and data.spec == DATASETS[name].spec
        assert len(data.train) == config.data.scene.crops_per_epoch
        crop = data.train.sample(config.seed, 1, 2)
        assert crop["points"].shape == (config.data.scene.crop_points, 6)
        whole = data.validation[0]
        counts = whole[LABEL_COUNTS]
        assert counts.shape == (len(whole["points"]), data.label_space.num_classes)
        assert counts.sum() == data.validation.num_scored_raw_points(0) > len(whole["points"]) / 2


def _lines(path: pathlib.Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def test_s3dis_pipeline_scores_every_raw_point_of_the_test_area(s3dis_run):
    config, workdir, report = s3dis_run
    release = next((workdir.parent / "synthetic_cache").glob("s3dis-*/Stanford3d*"))
    annotations = sorted((release / f"Area_{config.data.test_area}").glob("*/Annotations/*.txt"))
    raw_points = sum(_lines(path) for path in annotations)  # S3DIS: every point is scored
    assert raw_points > 0
    for run in ("baseline", "leak"):
        assert report["runs"][run]["num_labelled"] == raw_points
        assert _final_confusion(workdir / run).sum() == raw_points
    assert len(report["runs"]["leak"]["iou_per_class"]) == 13
    assert (workdir / "hierarchy.json").is_file() and (workdir / "render_0.png").is_file()


def test_the_released_voted_test_on_a_finished_run(s3dis_run, tmp_path):
    """The finished work directory re-evaluated with the released test (crops, votes): training
    is not repeated, the voted confusions are cached beside the whole-room ones under their own
    tag, still count every raw point of the test area once, and 6-fold pooling reads them."""
    config, workdir, _ = s3dis_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    voted = config.copy_and_resolve_references()
    voted.data.scene.evaluation = "possibility_votes"
    tag = evaluation_tag(voted.data.scene)
    assert tag.startswith("_votes-n512-")
    report = pipeline.run_pipeline(voted, copy, cache_dir=str(workdir.parent / "synthetic_cache"))
    for run in ("baseline", "leak"):
        whole = _final_confusion(workdir / run)
        np.testing.assert_array_equal(_final_confusion(copy / run), whole)  # untouched
        confusion = s3dis_entry.final_confusion(copy / run, tag)
        assert confusion.sum() == whole.sum() == report["runs"][run]["num_labelled"]
        assert sorted(p.name for p in (copy / run).glob("checkpoints/*")) == sorted(
            p.name for p in (workdir / run).glob("checkpoints/*")
        )  # no training step added
    # 6-fold pooling reads each fold's confusions of its own protocol (config.json): six folds
    # holding this run's voted confusions and, at a later step, a whole-room decoy
    folds = []
    for area in range(1, 7):
        fold = tmp_path / f"area{area}"
        saved = json.loads(voted.to_json_best_effort())
        saved["data"]["test_area"] = area
        (fold / "leak").mkdir(parents=True)
        (fold / "baseline").mkdir()
        (fold / "config.json").write_text(json.dumps(saved))
        for run in ("baseline", "leak"):
            np.save(fold / run / f"val_confusion_step6{tag}.npy", confusion)
            np.save(fold / run / "val_confusion_step7.npy", confusion + 1000)
        folds.append(fold)
    pooled = s3dis_entry.pool_folds(folds, tmp_path / "pooled")
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    expected = np.where(union > 0, np.diag(confusion) / np.maximum(union, 1), 0.0)
    assert pooled["leak"]["miou"] == pytest.approx(expected.mean())


def test_semantic3d_pipeline_scores_every_labelled_raw_point_and_writes_a_submission(
    semantic3d_run, tmp_path
):
    config, workdir, report = semantic3d_run
    scans = next((workdir.parent / "synthetic_cache").glob("semantic3d-*"))
    labels = [np.loadtxt(scans / f"{n}.labels", dtype=int) for n in layout.VALIDATION_SCANS]
    scored = sum(int((values != 0).sum()) for values in labels)  # 0 = unlabelled, not scored
    assert 0 < scored < sum(len(values) for values in labels)
    for run in ("baseline", "leak"):
        confusion = _final_confusion(workdir / run)
        assert confusion.sum() == scored and not confusion[0].any() and not confusion[:, 0].any()
    out = tmp_path / "submission"
    accuracy = semantic3d_entry.write_test_predictions(workdir, out)
    assert sorted(accuracy) == sorted(layout.REDUCED8_TEST_SCANS)
    for name in layout.REDUCED8_TEST_SCANS:
        written = np.loadtxt(out / layout.submission_file_name(name), dtype=int)
        assert len(written) == _lines(scans / f"{name}.txt")  # one prediction per raw point
        assert written.min() >= 1 and written.max() <= 8
        truth = np.loadtxt(scans / "test_ground_truth" / f"{name}.labels", dtype=int)
        labelled = truth != 0
        assert accuracy[name] == pytest.approx(np.mean(written[labelled] == truth[labelled]))


def test_pooled_six_fold_metrics_from_six_work_directories(tmp_path):
    rng = np.random.default_rng(0)
    workdirs, totals = [], {"baseline": 0, "leak": 0}
    for area in (3, 1, 2, 6, 5, 4):
        workdir = tmp_path / f"area{area}"
        (workdir / "baseline").mkdir(parents=True)
        (workdir / "leak").mkdir()
        config = json.loads(s3dis_configs.get_config("smoke").to_json_best_effort())
        config["data"]["test_area"] = area
        (workdir / "config.json").write_text(json.dumps(config))
        for run in totals:
            confusion = rng.integers(0, 50, (13, 13))
            np.save(workdir / run / "val_confusion_step10.npy", confusion)
            np.save(workdir / run / "val_confusion_step9.npy", confusion + 1000)  # older
            totals[run] = totals[run] + confusion
        workdirs.append(workdir)
    result = s3dis_entry.pool_folds(workdirs, tmp_path / "pooled")
    for run, total in totals.items():
        iou = np.diag(total) / (total.sum(axis=0) + total.sum(axis=1) - np.diag(total))
        assert result[run]["miou"] == pytest.approx(iou.mean())
        assert result[run]["test_areas"] == [1, 2, 3, 4, 5, 6]
    assert json.loads((tmp_path / "pooled" / "pooled_6fold.json").read_text()) == result
    with pytest.raises(ValueError, match="test area 5 given twice"):
        s3dis_entry.pool_folds(workdirs + [workdirs[4]], tmp_path / "pooled")
    assert protocols.AREAS == (1, 2, 3, 4, 5, 6)
