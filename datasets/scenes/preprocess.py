"""Grid sub-sampling of a static scene with every raw point's projection, in memory or streamed.

For a cloud of N raw points (xyz in metres, features, label ids 0..C-1) and a cell side d:

  points      float32 [S, 3]  barycentre of each non-empty cubic cell (leakjax/points/grid.py)
  features    float32 [S, F]  mean features of the cell's points (e.g. colours / 255)
  labels      int32 [S]       majority label of the cell's points (ties: the smallest id)
  proj        int32 [N]       each raw point's nearest sub-sampled point (scipy cKDTree): the
                              released "proj" indices that carry predictions back to raw points
  label_hist  int32 [S, C]    per sub-sampled point, the raw points of each label whose proj it is

`subsample_cloud` does it in memory with `grid_subsample`. `subsample_chunks` streams a cloud too
large for memory (Semantic3D scans hold up to 5 x 10^8 points) in two passes over its chunks:
pass 1 accumulates per-cell sums (`CellAccumulator`: tables of cell, coordinate and feature sums,
count and label histogram, merged as they grow) and gives the cells of `grid_subsample` on the
whole cloud, in its order (ascending (z, y, x) cell), with the same majority labels and
barycentres up to float64 summation order (equal after the cast to float32 but for rare 1-ulp
differences); pass 2 reads the chunks again and queries each raw point's nearest sub-sampled
point, writing proj chunk by chunk into a memory-mapped .npy. Memory: one chunk plus O(S).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Iterable

import numpy as np
from scipy.spatial import cKDTree

from leakjax.points import grid_subsample

# A chunk of raw points in file order: xyz float [n, 3] metres, features float [n, F], labels
# int [n] (ids 0..C-1) or None for an unlabelled cloud.
Chunk = tuple[np.ndarray, np.ndarray, np.ndarray | None]


@dataclasses.dataclass
class SubsampledCloud:
    """The sub-sampled cloud and its projection (module docstring); hist None without labels."""

    points: np.ndarray  # float32 [S, 3]
    features: np.ndarray  # float32 [S, F]
    labels: np.ndarray | None  # int32 [S]
    proj: np.ndarray  # int32 [N] (possibly memory-mapped)
    label_hist: np.ndarray | None  # int32 [S, C]


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}"
        )
    return labels.astype(np.int64)


def add_label_histogram(hist: np.ndarray, proj: np.ndarray, labels: np.ndarray) -> None:
    """hist [S, C] += the raw points of each label (labels [n]) per projected row (proj [n])."""
    num_classes = hist.shape[1]
    keys = np.asarray(proj, np.int64) * num_classes + np.asarray(labels, np.int64)
    values, counts = np.unique(keys, return_counts=True)
    hist.reshape(-1)[values] += counts.astype(hist.dtype)  # values are unique: no lost updates


def nearest_rows(tree: cKDTree, xyz: np.ndarray) -> np.ndarray:
    """int32 [n]: the nearest point of `tree` to each row of xyz [n, 3]."""
    _, index = tree.query(np.asarray(xyz, np.float64), k=1, workers=-1)
    return np.asarray(index, np.int64).reshape(-1).astype(np.int32)


def subsample_cloud(
    xyz: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray | None,
    cell_size_m: float,
    num_classes: int,
) -> SubsampledCloud:
    """The module docstring's arrays for a cloud in memory (xyz [N, 3], features [N, F])."""
    if labels is not None:
        labels = _check_labels(labels, num_classes)
    grid = grid_subsample(xyz, cell_size_m, features=np.asarray(features), labels=labels)
    proj = nearest_rows(cKDTree(np.asarray(grid.points, np.float64)), xyz)
    hist = None
    if labels is not None:
        hist = np.zeros((len(grid.points), num_classes), np.int32)
        add_label_histogram(hist, proj, labels)
    return SubsampledCloud(grid.points, grid.features, grid.labels, proj, hist)


@dataclasses.dataclass
class _CellTable:
    """Per-cell sums, cells in ascending (z, y, x) order, each cell once."""

    cells: np.ndarray  # int64 [m, 3] cell coordinates floor(xyz / d)
    xyz_sum: np.ndarray  # float64 [m, 3]
    feature_sum: np.ndarray  # float64 [m, F]
    count: np.ndarray  # int64 [m]
    hist: np.ndarray | None  # int32 [m, C]


def _reduce_cells(table: _CellTable) -> _CellTable:
    """Sorts the rows by cell (z, y, x) and sums the rows of equal cells."""
    cells = table.cells
    order = np.lexsort((cells[:, 0], cells[:, 1], cells[:, 2]))
    sorted_cells = cells[order]
    new_cell = np.r_[True, np.any(sorted_cells[1:] != sorted_cells[:-1], axis=1)]
    starts = np.flatnonzero(new_cell)

    def total(values):
        return None if values is None else np.add.reduceat(values[order], starts, axis=0)

    return _CellTable(
        sorted_cells[starts],
        total(table.xyz_sum),
        total(table.feature_sum),
        total(table.count),
        total(table.hist),
    )


def _concatenate(tables: list[_CellTable]) -> _CellTable:
    hists = [t.hist for t in tables]
    return _CellTable(
        np.concatenate([t.cells for t in tables]),
        np.concatenate([t.xyz_sum for t in tables]),
        np.concatenate([t.feature_sum for t in tables]),
        np.concatenate([t.count for t in tables]),
        None if hists[0] is None else np.concatenate(hists),
    )


class CellAccumulator:
    """Pass 1 of the streamed sub-sampling: add chunks, then `result()` (module docstring).

    Chunk tables wait in a list and are merged into the running table once they hold as many
    rows as it does, so every row is re-merged O(log(chunks)) times.
    """

    def __init__(self, cell_size_m: float, num_classes: int):
        if not (np.isfinite(cell_size_m) and cell_size_m > 0):
            raise ValueError(f"cell_size_m must be a finite float > 0, got {cell_size_m!r}")
        self.cell_size_m = float(cell_size_m)
        self.num_classes = num_classes
        self.merged: _CellTable | None = None
        self.pending: list[_CellTable] = []
        self.num_raw = 0
        self.labelled: bool | None = None

    def add(self, xyz: np.ndarray, features: np.ndarray, labels: np.ndarray | None) -> None:
        coords = np.asarray(xyz, np.float64)
        if coords.ndim != 2 or coords.shape[1] != 3 or not np.all(np.isfinite(coords)):
            raise ValueError(f"chunk xyz must be finite [n, 3], got {coords.shape}")
        if self.labelled is None:
            self.labelled = labels is not None
        if self.labelled != (labels is not None):
            raise ValueError("every chunk of a cloud must have labels, or none")
        if len(coords) == 0:
            return
        hist = None
        if labels is not None:
            labels = _check_labels(labels, self.num_classes)
            hist = np.zeros((len(coords), self.num_classes), np.int32)
            hist[np.arange(len(coords)), labels] = 1
        cells = np.floor(coords / self.cell_size_m).astype(np.int64)
        chunk = _CellTable(
            cells, coords, np.asarray(features, np.float64), np.ones(len(coords), np.int64), hist
        )
        self.pending.append(_reduce_cells(chunk))
        self.num_raw += len(coords)
        merged_rows = 0 if self.merged is None else len(self.merged.cells)
        if sum(len(t.cells) for t in self.pending) >= merged_rows:
            self._merge()

    def _merge(self) -> None:
        tables = ([] if self.merged is None else [self.merged]) + self.pending
        self.merged = _reduce_cells(_concatenate(tables)) if tables else None
        self.pending = []

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(points float32 [S, 3], features float32 [S, F], labels int32 [S] or None)."""
        self._merge()
        if self.merged is None:
            raise ValueError("the cloud has no points")
        table = self.merged
        count = table.count[:, None].astype(np.float64)
        labels = None if table.hist is None else np.argmax(table.hist, axis=1).astype(np.int32)
        return (
            (table.xyz_sum / count).astype(np.float32),
            (table.feature_sum / count).astype(np.float32),
            labels,
        )


def subsample_chunks(
    read_chunks: Callable[[], Iterable[Chunk]],
    cell_size_m: float,
    num_classes: int,
    proj_path: str | pathlib.Path,
) -> SubsampledCloud:
    """The module docstring's arrays for a streamed cloud; proj is written to `proj_path` (.npy,
    returned memory-mapped). `read_chunks()` must give the same chunks on both calls."""
    accumulator = CellAccumulator(cell_size_m, num_classes)
    for xyz, features, labels in read_chunks():
        accumulator.add(xyz, features, labels)
    points, features, labels = accumulator.result()
    tree = cKDTree(np.asarray(points, np.float64))
    proj = np.lib.format.open_memmap(
        pathlib.Path(proj_path), mode="w+", dtype=np.int32, shape=(accumulator.num_raw,)
    )
    hist = np.zeros((len(points), num_classes), np.int32) if labels is not None else None
    offset = 0
    for xyz, _, chunk_labels in read_chunks():
        rows = nearest_rows(tree, xyz)
        if offset + len(rows) > len(proj):
            raise ValueError("read_chunks gave more points on its second pass than on its first")
        proj[offset : offset + len(rows)] = rows
        offset += len(rows)
        if hist is not None:
            add_label_histogram(hist, rows, _check_labels(chunk_labels, num_classes))
    if offset != len(proj):
        raise ValueError("read_chunks gave fewer points on its second pass than on its first")
    proj.flush()
    return SubsampledCloud(points, features, labels, proj, hist)


__all__ = [
    "CellAccumulator",
    "Chunk",
    "SubsampledCloud",
    "add_label_histogram",
    "nearest_rows",
    "subsample_chunks",
    "subsample_cloud",
]
