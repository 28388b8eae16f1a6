"""Feature-space geometry of the paper's Tab. VI, from features collected at the end of training.

Host numpy. With features phi of micro class c (dense ids 0..m-1 where `valid`), their class mean
mu_c and the running-mean prototypes Gamma_c:

  theta_gamma  mean pairwise angle (radians) between the prototypes of the classes that have one
               (prototype count > 0 when counts are given, else a non-zero prototype);
  ccd          Class Center Distance: mean distance ||phi - mu_c|| of the features to their own
               class mean;
  pd           Prototype Distance: the same with Gamma_c in place of mu_c;
  pcd          Proto-Center Distance: mean of ||mu_c - Gamma_c||.

Weighting (`weighting`): "point" (default) averages over features, the paper's 1/N in front of a
sum over features (PCD: each class weighted by its number of features); "class" averages per class
first, then over classes (every class counts once). **Choice** (the paper's formulas came through
OCR damaged; docs/leak_method.md): Euclidean distances (`norm="l2"`; "l1" available); PD and PCD
use only classes that are present in the features and have a prototype.
"""

from __future__ import annotations

import numpy as np


def _distance(diff: np.ndarray, norm: str) -> np.ndarray:
    if norm == "l2":
        return np.sqrt(np.sum(diff**2, axis=-1))
    if norm == "l1":
        return np.sum(np.abs(diff), axis=-1)
    raise ValueError(f"norm: {norm!r} not in ('l2', 'l1')")


def mean_pairwise_angle(prototypes: np.ndarray) -> float:
    """Mean angle (radians) over unordered pairs of rows of [K, D] (K >= 2); NaN otherwise."""
    if len(prototypes) < 2:
        return float("nan")
    unit = prototypes / np.linalg.norm(prototypes, axis=1, keepdims=True)
    cosine = np.clip(unit @ unit.T, -1.0, 1.0)
    upper = np.triu_indices(len(prototypes), k=1)
    return float(np.mean(np.arccos(cosine[upper])))


def feature_geometry(
    feats: np.ndarray,
    labels: np.ndarray,
    valid: np.ndarray,
    prototypes: np.ndarray,
    prototype_counts: np.ndarray | None = None,
    norm: str = "l2",
    weighting: str = "point",
) -> dict[str, float]:
    """theta_gamma, ccd, pd, pcd (module docstring).

    Args:
      feats: [N, D] (or [..., D]) collected features.
      labels: [N] (or [...]) micro class ids in [0, m) where valid.
      valid: [N] (or [...]) bool.
      prototypes: [m, D] micro prototypes Gamma.
      prototype_counts: optional [m] counts k_c; a class has a prototype where k_c > 0.
      norm: "l2" (default) or "l1" distance.
      weighting: "point" (default: averages over features) or "class" (module docstring).
    """
    if weighting not in ("point", "class"):
        raise ValueError(f"weighting: {weighting!r} not in ('point', 'class')")
    feats = np.asarray(feats, np.float64)
    feats = feats.reshape(-1, feats.shape[-1])
    labels = np.asarray(labels).reshape(-1)
    valid = np.asarray(valid, bool).reshape(-1)
    prototypes = np.asarray(prototypes, np.float64)
    num_classes = prototypes.shape[0]
    if len(labels) != len(feats) or len(valid) != len(feats):
        raise ValueError(f"feats {feats.shape}, labels {labels.shape}, valid {valid.shape} differ")
    if np.any(valid & ((labels < 0) | (labels >= num_classes))):
        raise ValueError(f"labels: valid labels must lie in [0, {num_classes})")
    if prototype_counts is None:
        has_prototype = np.any(prototypes != 0, axis=1)
    else:
        has_prototype = np.asarray(prototype_counts) > 0
    feats, labels = feats[valid], labels[valid]
    counts = np.bincount(labels, minlength=num_classes)
    sums = np.zeros_like(prototypes)
    np.add.at(sums, labels, feats)
    present = counts > 0
    centers = sums / np.maximum(counts, 1)[:, None]
    to_center = np.bincount(
        labels, weights=_distance(feats - centers[labels], norm), minlength=num_classes
    )
    to_prototype = np.bincount(
        labels, weights=_distance(feats - prototypes[labels], norm), minlength=num_classes
    )
    both = present & has_prototype
    # per-class means; "point" weights them by their feature counts (= a mean over features)
    to_center, to_prototype = (
        to_center / np.maximum(counts, 1),
        to_prototype / np.maximum(counts, 1),
    )
    weights = counts.astype(np.float64) if weighting == "point" else np.ones(num_classes)

    def mean_over(values: np.ndarray, mask: np.ndarray) -> float:
        if not mask.any():
            return float("nan")
        return float(np.sum(values[mask] * weights[mask]) / np.sum(weights[mask]))

    return {
        "theta_gamma": mean_pairwise_angle(prototypes[has_prototype]),
        "ccd": mean_over(to_center, present),
        "pd": mean_over(to_prototype, both),
        "pcd": mean_over(_distance(centers - prototypes, norm), both),
    }
