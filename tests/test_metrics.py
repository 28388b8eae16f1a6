"""Metrics against a numpy re-derivation of the official SemanticKITTI evaluator's rules and a
hand-computed case; the jitted confusion matrix against np.add.at."""

import jax
import numpy as np
import pytest

from leakjax.metrics import confusion_matrix, hierarchical_iou, segmentation_metrics


def official_scores(pred, gt, num_classes, ignore):
    """The official evaluator's rules, re-derived: its matrix is indexed [pred, gt]; the ignored
    ground-truth column is zeroed; per class tp = diagonal, fp = row sum - tp, fn = column sum - tp,
    IoU = tp / (tp + fp + fn + 1e-15) (so a class absent everywhere scores 0), the mean over the
    non-ignored classes; accuracy = sum(tp) / (sum over non-ignored of tp + fp)."""
    conf = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(conf, (pred, gt), 1)
    conf[:, ignore] = 0
    tp = np.diag(conf).astype(np.float64)
    fp = conf.sum(axis=1) - tp
    fn = conf.sum(axis=0) - tp
    iou = tp / (tp + fp + fn + 1e-15)
    include = np.array([c not in ignore for c in range(num_classes)])
    acc = tp.sum() / (tp[include].sum() + fp[include].sum() + 1e-15)
    return iou, iou[include].mean(), acc


def test_confusion_matrix_matches_add_at_under_jit():
    rng = np.random.default_rng(0)
    num_classes = 5
    pred = rng.integers(0, num_classes, (3, 40))
    labels = rng.integers(0, num_classes, (3, 40))
    valid = rng.random((3, 40)) < 0.7
    expected = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(expected, (labels[valid], pred[valid]), 1)
    got = jax.jit(confusion_matrix, static_argnums=3)(pred, labels, valid, num_classes)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_metrics_follow_the_official_rules():
    rng = np.random.default_rng(1)
    num_classes, ignore = 7, 0
    gt = rng.choice([0, 1, 2, 3, 4, 6], size=3000, p=[0.15, 0.4, 0.2, 0.15, 0.05, 0.05])
    pred = np.where(rng.random(3000) < 0.6, gt, rng.integers(0, num_classes - 2, 3000))
    # class 5 appears nowhere; class 6 is in the ground truth but never predicted; some points
    # are predicted as the ignored class 0.
    conf = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(conf, (gt, pred), 1)
    out = segmentation_metrics(conf, ignore_index=ignore)
    iou, miou, acc = official_scores(pred, gt, num_classes, [ignore])
    assert out["miou"] == pytest.approx(miou, abs=1e-12)
    np.testing.assert_allclose(out["iou_per_class"][1:], iou[1:], atol=1e-12)
    assert np.isnan(out["iou_per_class"][0]) and out["iou_per_class"][5] == 0.0
    assert out["oa_official"] == pytest.approx(acc, abs=1e-12)

    labelled = gt != ignore
    assert out["oa"] == pytest.approx(np.mean(pred[labelled] == gt[labelled]))
    present = [c for c in range(1, num_classes) if np.any(gt == c)]
    assert out["miou_present"] == pytest.approx(np.mean(iou[present]))
    recall = [np.mean(pred[gt == c] == c) for c in present]
    assert out["macc"] == pytest.approx(np.mean(recall))
    freq = np.array([np.sum(gt == c) for c in range(1, num_classes)]) / labelled.sum()
    assert out["fwiou"] == pytest.approx(np.sum(freq * iou[1:]))
    scored = iou[1:]
    assert out["iou_mse"] == pytest.approx(np.var(scored))
    assert out["iou_std"] == pytest.approx(np.std(scored))
    share = scored[scored > 0] / scored.sum()
    assert out["iou_entropy"] == pytest.approx(-np.sum(share * np.log(share)))

    # hIoU = official mIoU of the predictions and labels mapped through f (ignored stays ignored).
    micro_to_macro = np.array([-1, 0, 0, 1, 2, 2, 1])
    to_macro = np.array([3, 0, 0, 1, 2, 2, 1])  # ignored class -> its own bucket 3
    _, macro_miou, _ = official_scores(to_macro[pred], to_macro[gt], 4, [3])
    out = segmentation_metrics(conf, micro_to_macro, ignore_index=ignore)
    assert out["hiou"] == pytest.approx(macro_miou, abs=1e-12)


def test_hand_computed_three_classes():
    conf = np.array([[4, 1, 0], [2, 3, 1], [0, 0, 0]])  # class 2: no ground truth, predicted once
    out = segmentation_metrics(conf, micro_to_macro=np.array([0, 0, 1]))
    iou = np.array([4 / 7, 3 / 7, 0.0])
    np.testing.assert_allclose(out["iou_per_class"], iou)
    assert out["miou"] == pytest.approx(1 / 3)
    assert out["miou_present"] == pytest.approx(1 / 2)
    assert out["oa"] == pytest.approx(7 / 11)
    assert out["macc"] == pytest.approx((4 / 5 + 3 / 6) / 2)
    assert out["fwiou"] == pytest.approx(38 / 77)
    assert out["hiou"] == pytest.approx((10 / 11 + 0.0) / 2)
    mean = 1 / 3
    assert out["iou_mse"] == pytest.approx(
        ((4 / 7 - mean) ** 2 + (3 / 7 - mean) ** 2 + mean**2) / 3
    )
    assert out["iou_entropy"] == pytest.approx(-(4 / 7 * np.log(4 / 7) + 3 / 7 * np.log(3 / 7)))


def test_hand_computed_with_ignored_class():
    # rows gt, cols pred; class 0 ignored: its row is dropped, its column is a miss
    conf = np.array([[5, 2, 1], [2, 3, 1], [1, 0, 4]])
    out = segmentation_metrics(conf, micro_to_macro=np.array([-1, 0, 0]), ignore_index=0)
    assert out["iou_per_class"][1] == pytest.approx(3 / 6)
    assert out["iou_per_class"][2] == pytest.approx(4 / 6)
    assert out["miou"] == pytest.approx(7 / 12)
    assert out["oa"] == pytest.approx(7 / 11)
    assert out["oa_official"] == pytest.approx(7 / 8)
    assert out["hiou"] == pytest.approx(8 / 11)
    assert out["num_labelled"] == 11


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="square"):
        segmentation_metrics(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="micro_to_macro"):
        hierarchical_iou(np.eye(3), np.array([-1, 0, 1]))  # -1 without an ignore_index
    with pytest.raises(ValueError, match="micro_to_macro"):
        hierarchical_iou(np.eye(3), np.array([0, 1]))
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(np.zeros(3, int), np.zeros(4, int), np.ones(4, bool), 2)
