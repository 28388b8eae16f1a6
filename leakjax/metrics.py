"""Confusion-matrix accumulation (on device, under jit) and segmentation metrics (on the host).

Conventions used everywhere in leakjax:
  * a confusion matrix has ROWS = ground truth and COLUMNS = prediction;
  * labels are dense class ids 0..C-1 and a boolean `valid` mask says which entries count
    (padding and ignored points are simply not valid);
  * when a matrix still contains an "ignored" class (e.g. SemanticKITTI training id 0), pass its
    index as `ignore_index` to `segmentation_metrics`; the official SemanticKITTI rules then apply:
    rows of the ignored ground truth are dropped, and a point predicted as the ignored class stays
    in its true class's row, i.e. it is a miss (false negative) for the true class and a false
    positive for nobody.

`confusion_matrix` returns int32 counts of one batch (a single batch never holds 2**31 points);
accumulate batches on the host in int64 (`np.asarray(cm, np.int64)` before summing) so that a whole
validation split cannot overflow. Metrics are computed on the host in float64 numpy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(
    pred: jax.Array, labels: jax.Array, valid: jax.Array, num_classes: int
) -> jax.Array:
    """Counts of (ground truth, prediction) pairs over the valid entries; jit-friendly.

    Args:
      pred: int [N] or [B, P] predicted class ids in [0, num_classes).
      labels: int, same shape, ground-truth class ids in [0, num_classes) where valid.
      valid: bool, same shape; False entries (padding, ignored label) are not counted.
      num_classes: C (static).

    Returns:
      int32 [C, C], rows ground truth, columns prediction. Valid entries with an id outside
      [0, C) cannot be reported from inside jit; they are counted nowhere, so check labels upstream
      (``confusion.sum() != valid.sum()`` reveals them).
    """
    if pred.shape != labels.shape or labels.shape != valid.shape:
        raise ValueError(
            f"confusion_matrix: pred {pred.shape}, labels {labels.shape} and valid {valid.shape} "
            "must have the same shape"
        )
    pred = pred.reshape(-1).astype(jnp.int32)
    labels = labels.reshape(-1).astype(jnp.int32)
    valid = valid.reshape(-1)
    in_range = (labels >= 0) & (labels < num_classes) & (pred >= 0) & (pred < num_classes)
    counted = valid & in_range
    pair_id = jnp.where(counted, labels * num_classes + pred, 0)
    counts = jax.ops.segment_sum(
        counted.astype(jnp.int32), pair_id, num_segments=num_classes * num_classes
    )
    return counts.reshape(num_classes, num_classes)


def _check_confusion(confusion: np.ndarray) -> np.ndarray:
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion: expected a square [C, C] matrix, got shape {confusion.shape}")
    if np.any(confusion < 0):
        raise ValueError("confusion: counts must be non-negative")
    return confusion.astype(np.float64)


def iou_from_confusion(
    confusion: np.ndarray, ignore_index: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class IoU with the official SemanticKITTI rules.

    Args:
      confusion: [C, C] counts, rows ground truth, columns prediction.
      ignore_index: a class whose ground truth is excluded and whose predictions are misses.

    Returns:
      (iou [C], gt_count [C], included bool [C]): `iou` is 0 for a class absent from both ground
      truth and prediction (the official evaluator's convention) and NaN at `ignore_index`;
      `included` marks the classes that are scored (all but `ignore_index`).
    """
    conf = _check_confusion(confusion).copy()
    num_classes = conf.shape[0]
    included = np.ones(num_classes, bool)
    if ignore_index is not None:
        if not 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index: {ignore_index} outside [0, {num_classes})")
        included[ignore_index] = False
        conf[ignore_index, :] = 0.0  # ignored ground truth counts nowhere
    true_positive = np.diag(conf).copy()
    gt_count = conf.sum(axis=1)  # includes predictions of the ignored class: misses
    pred_count = conf[:, included].sum(axis=0)  # predictions of the ignored class are nobody's FP
    pred_count_full = np.zeros(num_classes)
    pred_count_full[included] = pred_count
    union = gt_count + pred_count_full - true_positive
    iou = np.divide(true_positive, union, out=np.zeros(num_classes), where=union > 0)
    iou[~included] = np.nan
    gt_count[~included] = 0.0
    return iou, gt_count, included


def _balance(iou: np.ndarray) -> tuple[float, float, float]:
    """MSE around the mean, population std and entropy (nats) of IoUs normalised to sum to 1."""
    mse = float(np.mean((iou - iou.mean()) ** 2))
    total = iou.sum()
    if total <= 0:
        return mse, float(np.sqrt(mse)), 0.0
    share = iou / total
    nonzero = share > 0
    entropy = float(-np.sum(share[nonzero] * np.log(share[nonzero])))
    return mse, float(np.sqrt(mse)), entropy


def segmentation_metrics(
    confusion: np.ndarray,
    micro_to_macro: np.ndarray | None = None,
    ignore_index: int | None = None,
) -> dict:
    """All the paper's output-level metrics from one accumulated confusion matrix.

    Args:
      confusion: [C, C] counts, rows ground truth, columns prediction (e.g. summed
        `confusion_matrix` outputs).
      micro_to_macro: optional int [C] macro id of every class of the matrix; the ignored class
        (if any) must map to -1 and no other class may. Enables `hiou`.
      ignore_index: optional index of the ignored class inside the matrix (official rules, see the
        module docstring).

    Returns a dict (floats in [0, 1] unless said otherwise; scored classes = all but ignore_index):
      miou:          official mean IoU over ALL scored classes, a class absent from both ground
                     truth and prediction scoring 0 (what the SemanticKITTI evaluator reports).
      miou_present:  mean IoU over scored classes present in the ground truth (NaN-aware mean).
      oa:            correct / labelled points (labelled = scored ground truth).
      oa_official:   the official evaluator's accuracy, whose denominator leaves out labelled
                     points predicted as the ignored class; equals `oa` when none are.
      macc:          mean over classes present in the ground truth of their recall.
      fwiou:         sum over scored classes of (ground-truth frequency * IoU).
      hiou:          (with micro_to_macro) the matrix aggregated through the map (ignored class kept
                     as its own ignored bucket, so predicting it stays a miss), then mean IoU over
                     the macro classes (official convention: a macro absent everywhere scores 0).
      iou_per_class: float [C] numpy, NaN at ignore_index.
      iou_mse, iou_std, iou_entropy: balance of the per-class IoUs over the scored classes: mean
                     squared deviation from their mean, its square root (population std), and the
                     Shannon entropy in nats of the IoUs normalised to sum to 1 (Tab. VII).
      num_labelled:  number of labelled points (int).
    """
    conf = _check_confusion(confusion)
    iou, gt_count, included = iou_from_confusion(conf, ignore_index)
    scored_iou = iou[included]
    present = included & (gt_count > 0)
    num_labelled = float(gt_count.sum())
    true_positive = np.diag(conf) * included
    correct = float(true_positive.sum())
    predicted_scored = float(conf[np.ix_(included, included)].sum())
    recall = np.divide(true_positive, gt_count, out=np.zeros_like(gt_count), where=gt_count > 0)
    mse, std, entropy = _balance(scored_iou)
    out = {
        "miou": float(scored_iou.mean()),
        "miou_present": float(iou[present].mean()) if present.any() else float("nan"),
        "oa": correct / num_labelled if num_labelled > 0 else float("nan"),
        "oa_official": correct / predicted_scored if predicted_scored > 0 else float("nan"),
        "macc": float(recall[present].mean()) if present.any() else float("nan"),
        "fwiou": float(np.sum(gt_count[included] * scored_iou) / num_labelled)
        if num_labelled > 0
        else float("nan"),
        "iou_per_class": iou,
        "iou_mse": mse,
        "iou_std": std,
        "iou_entropy": entropy,
        "num_labelled": int(num_labelled),
    }
    if micro_to_macro is not None:
        out["hiou"] = hierarchical_iou(conf, micro_to_macro, ignore_index)
    return out


def hierarchical_iou(
    confusion: np.ndarray, micro_to_macro: np.ndarray, ignore_index: int | None = None
) -> float:
    """hIoU: mean IoU over macro classes of the confusion aggregated through `micro_to_macro`.

    Args:
      confusion: [C, C] counts, rows ground truth, columns prediction.
      micro_to_macro: int [C], macro id >= 0 per class, -1 exactly at `ignore_index`.
      ignore_index: the ignored class of the matrix, or None.
    """
    conf = _check_confusion(confusion)
    mapping = np.asarray(micro_to_macro)
    num_classes = conf.shape[0]
    if mapping.shape != (num_classes,):
        raise ValueError(
            f"micro_to_macro: expected shape ({num_classes},) to match confusion, "
            f"got {mapping.shape}"
        )
    expected_ignored = np.zeros(num_classes, bool)
    if ignore_index is not None:
        expected_ignored[ignore_index] = True
    if not np.array_equal(mapping < 0, expected_ignored) or np.any(mapping < -1):
        raise ValueError(
            "micro_to_macro: must be -1 exactly at ignore_index "
            f"({ignore_index}) and >= 0 elsewhere, got {mapping.tolist()}"
        )
    num_macro = int(mapping.max()) + 1
    bucket = np.where(mapping < 0, num_macro, mapping)  # the ignored class gets its own bucket
    macro_conf = np.zeros((num_macro + 1, num_macro + 1))
    np.add.at(macro_conf, (bucket[:, None], bucket[None, :]), conf)
    macro_iou, _, included = iou_from_confusion(macro_conf, ignore_index=num_macro)
    return float(macro_iou[included].mean())
