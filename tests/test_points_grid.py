"""Grid sub-sampling against a plain-Python dict-of-cells loop: barycentres, mean features,
majority labels (ties to the smallest label), each point's cell, the (z, y, x) cell order."""

import math
from collections import Counter

import numpy as np
import pytest

from leakjax import points as pts


def reference_grid(points, cell_size, features, labels):
    """One point at a time into a dict of cells keyed by (floor(x/d), floor(y/d), floor(z/d))."""
    cells = {}
    for i, point in enumerate(points.tolist()):
        key = tuple(math.floor(c / cell_size) for c in point)
        cells.setdefault(key, []).append(i)
    ordered = sorted(cells, key=lambda key: (key[2], key[1], key[0]))
    row_of = {key: row for row, key in enumerate(ordered)}
    sub_points, sub_features, sub_labels = [], [], []
    point_to_cell = [0] * len(points)
    for key in ordered:
        members = cells[key]
        for i in members:
            point_to_cell[i] = row_of[key]
        sub_points.append([sum(points[i][a] for i in members) / len(members) for a in range(3)])
        sub_features.append(
            [sum(float(features[i][c]) for i in members) / len(members) for c in range(2)]
        )
        votes = Counter(int(labels[i]) for i in members)
        sub_labels.append(max(votes, key=lambda label: (votes[label], -label)))
    return np.array(sub_points), np.array(sub_features), np.array(sub_labels), point_to_cell


def clustered_cloud(seed):
    """Clumps around a few centres (several points per cell, label ties), negative coordinates,
    exact duplicates."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-2, 2, (12, 3))
    points = centres[rng.integers(0, 12, 400)] + rng.normal(0, 0.08, (400, 3))
    points[-30:] = points[:30]
    features = rng.uniform(0, 1, (400, 2)).astype(np.float32)
    labels = rng.integers(0, 4, 400).astype(np.int32)
    return points.astype(np.float32), features, labels


@pytest.mark.parametrize("cell_size", [0.1, 0.37])
def test_grid_subsample_equals_dict_of_cells(cell_size):
    points, features, labels = clustered_cloud(0)
    result = pts.grid_subsample(points, cell_size, features=features, labels=labels)
    ref_points, ref_features, ref_labels, ref_point_to_cell = reference_grid(
        points.astype(np.float64), cell_size, features, labels
    )
    assert len(ref_points) < len(points)  # the cloud was really sub-sampled
    np.testing.assert_array_equal(result.point_to_cell, ref_point_to_cell)
    np.testing.assert_allclose(result.points, ref_points, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(result.features, ref_features, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(result.labels, ref_labels)
    assert result.points.dtype == np.float32 and result.labels.dtype == np.int32
    assert result.point_to_cell.dtype == np.int32


def test_ties_go_to_the_smallest_label_and_optional_outputs():
    points = np.array([[0.01, 0.01, 0.01], [0.02, 0.02, 0.02], [0.5, 0, 0], [0.03, 0, 0]])
    labels = np.array([7, 3, 5, 7])
    result = pts.grid_subsample(points, 0.1, labels=labels)
    np.testing.assert_array_equal(result.labels, [7, 5])
    result = pts.grid_subsample(points[:2], 0.1, labels=labels[:2])
    np.testing.assert_array_equal(result.labels, [3])
    assert result.features is None
    assert pts.grid_subsample(points, 0.1).labels is None


def test_bad_grid_inputs_are_errors():
    points, features, labels = clustered_cloud(1)
    with pytest.raises(ValueError, match="cell_size_m"):
        pts.grid_subsample(points, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        pts.grid_subsample(np.full((3, 3), np.nan), 0.1)
    with pytest.raises(ValueError, match="features"):
        pts.grid_subsample(points, 0.1, features=features[:-1])
    with pytest.raises(ValueError, match="labels"):
        pts.grid_subsample(points, 0.1, labels=labels.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        pts.grid_subsample(points[:0], 0.1)
