"""Feature geometry (Theta_Gamma, CCD, PD, PCD) against hand computation."""

import numpy as np
import pytest

from leakjax.leak import feature_geometry


def test_feature_geometry_by_hand():
    feats = np.array([[0, 0], [2, 0], [0, 1], [0, 3], [0, 5], [9, 9]], np.float32)
    labels = np.array([0, 0, 1, 1, 1, 2])
    valid = np.array([True, True, True, True, True, False])  # class 2: prototype, no features
    prototypes = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    out = feature_geometry(
        feats, labels, valid, prototypes, prototype_counts=np.array([5, 5, 5]), weighting="class"
    )
    # angles between prototypes: 90, 45, 45 degrees
    assert out["theta_gamma"] == pytest.approx(np.pi / 3)
    # class 0: mean (1, 0), distances 1, 1; class 1: mean (0, 3), distances 2, 0, 2
    assert out["ccd"] == pytest.approx((1 + 4 / 3) / 2)
    # to prototypes: class 0 distances 1, 1; class 1 distances 0, 2, 4
    assert out["pd"] == pytest.approx((1 + 2) / 2)
    # |(1, 0) - (1, 0)| = 0, |(0, 3) - (0, 1)| = 2
    assert out["pcd"] == pytest.approx(1.0)
    # a class without a prototype (count 0) leaves Theta_Gamma, PD and PCD
    out = feature_geometry(
        feats, labels, valid, prototypes, prototype_counts=np.array([5, 0, 5]), weighting="class"
    )
    assert out["theta_gamma"] == pytest.approx(np.pi / 4)
    assert out["pd"] == pytest.approx(1.0) and out["pcd"] == pytest.approx(0.0)
    assert out["ccd"] == pytest.approx((1 + 4 / 3) / 2)


def test_feature_geometry_l1_and_bad_labels():
    feats = np.array([[1.0, 1.0], [3.0, 2.0]])
    labels = np.array([0, 0])
    prototypes = np.array([[0.0, 0.0], [1.0, 0.0]])
    out = feature_geometry(
        feats, labels, np.ones(2, bool), prototypes, norm="l1", weighting="class"
    )
    # mean (2, 1.5); L1 distances 1.5, 1.5; to prototype 0 (no count given: it is all zeros,
    # so it has no prototype): PD/PCD over no class -> NaN
    assert out["ccd"] == pytest.approx(1.5)
    assert np.isnan(out["pd"]) and np.isnan(out["theta_gamma"])
    with pytest.raises(ValueError, match="labels"):
        feature_geometry(feats, np.array([0, 2]), np.ones(2, bool), prototypes)


def test_point_weighting_is_a_mean_over_features():
    """Default weighting: CCD / PD are means over every valid feature (numpy loop), PCD weights
    each class by its feature count."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(200, 5))
    labels = rng.choice(4, size=200, p=[0.6, 0.3, 0.08, 0.02])
    valid = rng.random(200) > 0.1
    prototypes = rng.normal(size=(4, 5))
    out = feature_geometry(feats, labels, valid, prototypes, prototype_counts=np.ones(4))
    to_center, to_prototype, pcd_terms = [], [], []
    for i in range(200):
        if not valid[i]:
            continue
        members = feats[valid & (labels == labels[i])]
        center = members.mean(axis=0)
        to_center.append(np.linalg.norm(feats[i] - center))
        to_prototype.append(np.linalg.norm(feats[i] - prototypes[labels[i]]))
        pcd_terms.append(np.linalg.norm(center - prototypes[labels[i]]))
    assert out["ccd"] == pytest.approx(np.mean(to_center), rel=1e-10)
    assert out["pd"] == pytest.approx(np.mean(to_prototype), rel=1e-10)
    assert out["pcd"] == pytest.approx(np.mean(pcd_terms), rel=1e-10)
    by_class = feature_geometry(
        feats, labels, valid, prototypes, prototype_counts=np.ones(4), weighting="class"
    )
    assert by_class["ccd"] != pytest.approx(out["ccd"])  # imbalanced: the two differ
