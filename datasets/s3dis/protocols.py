"""S3DIS evaluation protocols: the Area-5 split and 6-fold cross-validation with a pooled confusion.

* Area 5: train on Areas 1, 2, 3, 4, 6 and test on Area 5 (the usual single-split protocol).
* 6-fold cross-validation: fold k trains on the five other areas and tests on Area k. The released
  `utils/6_fold_cv.py` of RandLA-Net scores the predictions of all six test areas together: it sums
  the per-class ground-truth, prediction and true-positive counts over every room of the six areas
  and computes IoU once from the totals. That is the IoU of the **sum** of the six test areas'
  confusion matrices (`pooled_confusion`), not the mean of six per-fold mIoUs; with unequal
  areas the two differ.

Confusions have rows = ground truth and columns = prediction (leakjax.metrics convention), over the
13 class ids; S3DIS has no ignored class, so every row counts.
"""

import numpy as np

from datasets.s3dis.labels import NUM_CLASSES
from datasets.s3dis.layout import AREAS

AREA5_SPLIT: dict[str, tuple[int, ...]] = {"train": (1, 2, 3, 4, 6), "test": (5,)}

# fold k (1..6) -> {"train": the five other areas, "test": (k,)}
CV_FOLDS: dict[int, dict[str, tuple[int, ...]]] = {
    test_area: {"train": tuple(a for a in AREAS if a != test_area), "test": (test_area,)}
    for test_area in AREAS
}

PROTOCOLS: dict[str, dict[str, tuple[int, ...]]] = {
    "area5": AREA5_SPLIT,
    **{f"fold{k}": split for k, split in CV_FOLDS.items()},
}


def protocol_split(protocol: str) -> dict[str, tuple[int, ...]]:
    """{"train": areas, "test": areas} of "area5" or "fold1".."fold6"."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def pooled_confusion(per_area: dict[int, np.ndarray]) -> np.ndarray:
    """Sum the test confusions of the six folds: int64 [13, 13].

    Args:
      per_area: test area (1..6) -> int [13, 13] confusion of the model trained without that
        area, evaluated on it. All six areas must be present, each exactly once.
    """
    keys = sorted(int(area) for area in per_area)
    if keys != list(AREAS):
        raise ValueError(f"pooled_confusion: need the six test areas {AREAS}, got {keys}")
    total = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for area, confusion in per_area.items():
        confusion = np.asarray(confusion)
        if confusion.shape != (NUM_CLASSES, NUM_CLASSES):
            raise ValueError(
                f"pooled_confusion: area {area} confusion has shape {confusion.shape}, expected "
                f"({NUM_CLASSES}, {NUM_CLASSES})"
            )
        if not np.issubdtype(confusion.dtype, np.integer):
            raise ValueError(f"pooled_confusion: area {area} counts must be integers")
        if (confusion < 0).any():
            raise ValueError(f"pooled_confusion: area {area} has negative counts")
        total += confusion.astype(np.int64)
    return total


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """float64 [C]: TP / (GT + predicted - TP) per class of a [C, C] confusion; 0 where empty."""
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    return np.divide(true_positive, union, out=np.zeros_like(true_positive), where=union > 0)


def pooled_miou(per_area: dict[int, np.ndarray]) -> tuple[float, np.ndarray]:
    """(mIoU, IoU [13]) of the pooled 6-fold confusion, the released `6_fold_cv` number."""
    iou = iou_per_class(pooled_confusion(per_area))
    return float(iou.mean()), iou
