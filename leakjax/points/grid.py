"""Grid sub-sampling as the released RandLA-Net / KPConv `grid_subsampling` does it (host numpy).

Points are binned into cubic cells of side `cell_size_m`: cell (i, j, l) holds the points with
floor(x / d) = i, floor(y / d) = j, floor(z / d) = l. The released C++ anchors its grid at
floor(min / d) * d, a multiple of d, so its cells are these same cells; it computes in float32
and this module in float64, so a point within float32 rounding of a cell face can land in the
neighbouring cell compared with the released code. Each non-empty cell gives one point:

* the barycentre of its points;
* the mean of its points' features (e.g. colours / 255);
* the majority label of its points, counting every label (the released vote has no ignore
  class); ties go to the smallest label id (the released tie-break is the iteration order of a
  C++ unordered_map, i.e. unspecified).

Output order (deterministic): cells sorted by (z cell, y cell, x cell), ascending, the order of
the released linear cell key i + n_x (j + n_y l). `point_to_cell` gives each input point the row
of its cell's sub-sampled point, so every raw point can be scored through it. (The released
pre-processing saves instead each raw point's nearest sub-sampled point, a KD-tree query,
`knn_host(raw, sub, 1)`; the two differ only for points nearer a neighbouring cell's barycentre.)
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class GridSubsampling:
    """Result of `grid_subsample`, S = number of non-empty cells."""

    points: np.ndarray  # float32 [S, 3] barycentres (metres)
    point_to_cell: np.ndarray  # int32 [N] row in [0, S) of each input point's cell
    features: np.ndarray | None = None  # float32 [S, C] mean features, if features were given
    labels: np.ndarray | None = None  # int32 [S] majority labels, if labels were given


def _majority_labels(cell: np.ndarray, labels: np.ndarray, num_cells: int) -> np.ndarray:
    """Most frequent label per cell (ties: smallest label) without a loop over points."""
    order = np.lexsort((labels, cell))
    cell_sorted, label_sorted = cell[order], labels[order]
    run_start = np.flatnonzero(
        np.r_[
            True,
            (cell_sorted[1:] != cell_sorted[:-1]) | (label_sorted[1:] != label_sorted[:-1]),
        ]
    )
    run_cell, run_label = cell_sorted[run_start], label_sorted[run_start]
    run_count = np.diff(np.r_[run_start, len(cell)])
    # Runs of each cell ordered by count (descending) then label (ascending): take the first.
    best = np.lexsort((run_label, -run_count, run_cell))
    first = np.r_[True, run_cell[best][1:] != run_cell[best][:-1]]
    majority = np.empty(num_cells, np.int64)
    majority[run_cell[best][first]] = run_label[best][first]
    return majority


def grid_subsample(points, cell_size_m: float, features=None, labels=None) -> GridSubsampling:
    """Sub-sample a cloud to one point per non-empty cubic cell.

    Args:
      points: float [N, 3] (metres), N >= 1, finite.
      cell_size_m: cell side (metres), > 0 (0.06 SemanticKITTI, 0.04 S3DIS as released).
      features: optional float [N, C] averaged per cell.
      labels: optional int [N] voted per cell.

    Returns:
      A `GridSubsampling` (cells in ascending (z, y, x) cell order, see the module docstring).
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise ValueError(f"grid_subsample: points must be [N, 3] with N >= 1, got {points.shape}")
    if len(points) > np.iinfo(np.int32).max:
        raise ValueError(f"grid_subsample: {len(points)} points exceed int32 indices")
    if not (np.isscalar(cell_size_m) and np.isfinite(cell_size_m) and cell_size_m > 0):
        raise ValueError(
            f"grid_subsample: cell_size_m must be a finite float > 0, got {cell_size_m!r}"
        )
    coords = np.asarray(points, np.float64)
    if not np.all(np.isfinite(coords)):
        raise ValueError("grid_subsample: points contain NaN or infinite coordinates")
    if features is not None:
        features = np.asarray(features)
        if features.ndim != 2 or len(features) != len(points):
            raise ValueError(
                f"grid_subsample: features must be [N, C] with N = {len(points)}, "
                f"got {features.shape}"
            )
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(points),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"grid_subsample: labels must be integers [N] = [{len(points)}], got "
                f"{labels.dtype} {labels.shape}"
            )

    cell_xyz = np.floor(coords / cell_size_m).astype(np.int64)
    cell_xyz -= cell_xyz.min(axis=0)
    extent = cell_xyz.max(axis=0) + 1
    if np.prod(extent.astype(np.float64)) >= 2.0**62:
        raise ValueError(
            f"grid_subsample: a grid of {extent.tolist()} cells of {cell_size_m} m overflows the "
            "int64 cell key; use a larger cell or split the cloud"
        )
    key = cell_xyz[:, 0] + extent[0] * (cell_xyz[:, 1] + extent[1] * cell_xyz[:, 2])
    _, cell = np.unique(key, return_inverse=True)
    cell = cell.reshape(-1)
    order = np.argsort(cell, kind="stable")
    starts = np.flatnonzero(np.r_[True, cell[order][1:] != cell[order][:-1]])
    counts = np.diff(np.r_[starts, len(cell)])[:, None]

    def cell_mean(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.asarray(values, np.float64)[order], starts, axis=0) / counts

    return GridSubsampling(
        points=cell_mean(coords).astype(np.float32),
        point_to_cell=cell.astype(np.int32),
        features=None if features is None else cell_mean(features).astype(np.float32),
        labels=None
        if labels is None
        else _majority_labels(cell, labels.astype(np.int64), len(starts)).astype(np.int32),
    )


__all__ = ["GridSubsampling", "grid_subsample"]
