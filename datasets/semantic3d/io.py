"""Read and write Semantic3D scans: `<name>.txt` points, `<name>.labels` labels, submissions.

`<name>.txt` holds one point per line, `x y z intensity r g b` (metres in the scanner frame, the
scanner's raw intensity, colours 0..255); a training scan's `<name>.labels` holds one integer label
id 0..8 per line, line i labelling point i (0 = unlabelled). A benchmark submission is a `.labels`
file of the same form with one predicted id 1..8 per point of the test scan.

Real scans have 10^7 - 5 x 10^8 points, gigabytes of text: `load_scan` is for files that fit in
memory, `iter_chunks` streams a scan and its labels in lockstep, `chunk_points` lines at a time,
so memory stays bounded by the chunk. Both raise a ValueError naming the file and line number for
a malformed line (wrong column count, non-numeric or non-finite value, empty line inside the data,
colour outside 0..255, label outside 0..8) and for a label count that differs from the point count.
"""

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from datasets.ascii_table import (
    MalformedLineError,
    PathLike,
    check_range,
    format_rows,
    parse_float_rows,
    parse_int_lines,
    read_text_lines,
    strip_trailing_blank,
)
from datasets.semantic3d.labels import IGNORE_INDEX, NUM_CLASSES

POINT_COLUMNS = 7  # x, y, z, intensity, r, g, b
DEFAULT_CHUNK_POINTS = 1_000_000
_POINT_FORMATS = ("%.3f", "%.3f", "%.3f", "%d", "%d", "%d", "%d")


class ScanChunk(NamedTuple):
    """Consecutive points of a scan, as yielded by `iter_chunks`."""

    points: np.ndarray  # float32 [n, 7]: x, y, z metres, intensity, r, g, b 0..255
    labels: np.ndarray | None  # int32 [n] label ids 0..8, or None without a labels file
    first_line: int  # 1-based line number of points[0] in the .txt (and .labels) file


def load_scan(
    txt_path: PathLike, labels_path: PathLike | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Load a whole scan: (points float32 [N, 7], labels int32 [N] or None without labels_path)."""
    txt_path = Path(txt_path)
    lines = read_text_lines(txt_path)
    if not lines:
        raise ValueError(f"{txt_path}: no points (empty file)")
    points = _parse_points(lines, txt_path, 1)
    if labels_path is None:
        return points, None
    labels_path = Path(labels_path)
    labels = _parse_labels(read_text_lines(labels_path), labels_path, 1)
    if len(labels) != len(points):
        raise _count_mismatch(labels_path, txt_path, len(labels), len(points))
    return points, labels


def load_labels(labels_path: PathLike) -> np.ndarray:
    """Load a `.labels` file (training labels or a submission): int32 [N] ids 0..8."""
    labels_path = Path(labels_path)
    lines = read_text_lines(labels_path)
    if not lines:
        raise ValueError(f"{labels_path}: no labels (empty file)")
    return _parse_labels(lines, labels_path, 1)


def iter_chunks(
    txt_path: PathLike,
    labels_path: PathLike | None = None,
    chunk_points: int = DEFAULT_CHUNK_POINTS,
) -> Iterator[ScanChunk]:
    """Stream a scan (and its labels) in chunks of at most `chunk_points` points, in file order.

    Concatenating the chunks gives `load_scan`'s arrays. Only one chunk of each file is held in
    memory. A label/point count mismatch raises when the shorter file ends, naming the first line
    of the longer one that has no counterpart.
    """
    if chunk_points < 1:
        raise ValueError(f"chunk_points must be >= 1, got {chunk_points}")
    with contextlib.ExitStack() as files:
        point_reader = _LineChunks(files, Path(txt_path))
        label_reader = None if labels_path is None else _LineChunks(files, Path(labels_path))
        yield from _chunks(point_reader, label_reader, chunk_points)


def write_scan(txt_path: PathLike, points: np.ndarray) -> None:
    """Write points [N, 7] (x, y, z metres, intensity, r, g, b 0..255) as a Semantic3D `.txt`.

    Coordinates get 3 decimals (millimetres), intensity and colours are written as integers.
    """
    txt_path = Path(txt_path)
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != POINT_COLUMNS or points.shape[0] == 0:
        raise ValueError(
            f"{txt_path}: points must have shape [N, 7] with N > 0, got {points.shape}"
        )
    if not np.isfinite(points).all():
        raise ValueError(f"{txt_path}: points contain NaN or infinite values")
    if points[:, 4:7].min() < 0 or points[:, 4:7].max() > 255:
        raise ValueError(f"{txt_path}: colours must lie in 0..255")
    txt_path.parent.mkdir(parents=True, exist_ok=True)
    txt_path.write_text(format_rows(points, _POINT_FORMATS))


def write_labels(labels_path: PathLike, labels: np.ndarray) -> None:
    """Write label ids int [N] in 0..8 (0 = unlabelled) as a `.labels` file, one per line."""
    _write_ids(Path(labels_path), labels, 0)


def write_predictions(path: PathLike, labels: np.ndarray) -> None:
    """Write a benchmark submission: predicted ids int [N] in 1..8, one per line, no header.

    The benchmark scores every point of the test scan, so `labels` must hold one prediction per
    point of the `.txt`, in file order; 0 (unlabelled) is not a prediction and is refused. Name the
    file with `layout.submission_file_name`.
    """
    _write_ids(Path(path), labels, 1)


class _LineChunks:
    """Reads a text file `count` lines at a time, tracking line numbers; no data after a blank."""

    def __init__(self, files: contextlib.ExitStack, path: Path):
        self.path = path
        self.file = files.enter_context(open(path, encoding="latin-1"))
        self.next_line = 1  # 1-based number of the next line to be read
        self.blank_line: int | None = None  # first of the blank lines that ended the last chunk

    def read(self, count: int) -> tuple[list[str], int]:
        """(up to `count` lines, trailing blank lines removed; line number of the first)."""
        first = self.next_line
        lines = [line.rstrip("\r\n") for line in itertools.islice(self.file, count)]
        self.next_line += len(lines)
        if lines and self.blank_line is not None:
            raise MalformedLineError(self.path, self.blank_line, "empty line inside the data", "")
        num_read = len(lines)
        strip_trailing_blank(lines)
        if len(lines) < num_read:
            self.blank_line = first + len(lines)
        return lines, first


def _chunks(
    point_reader: _LineChunks, label_reader: _LineChunks | None, chunk_points: int
) -> Iterator[ScanChunk]:
    total = 0  # points yielded so far
    while True:
        point_lines, first = point_reader.read(chunk_points)
        if not point_lines:
            if total == 0:
                raise ValueError(f"{point_reader.path}: no points (empty file)")
            if label_reader is not None and label_reader.read(1)[0]:
                raise _count_mismatch(label_reader.path, point_reader.path, total + 1, total, True)
            return
        points = _parse_points(point_lines, point_reader.path, first)
        labels = None
        if label_reader is not None:
            label_lines, label_first = label_reader.read(len(point_lines))
            if len(label_lines) < len(point_lines):
                label_reader.read(1)  # raises if the labels only paused at a blank line
                num_labels = label_first - 1 + len(label_lines)
                num_points = total + len(point_lines)
                raise _count_mismatch(
                    label_reader.path, point_reader.path, num_labels, num_points, True
                )
            labels = _parse_labels(label_lines, label_reader.path, label_first)
        total += len(points)
        yield ScanChunk(points, labels, first)


def _parse_points(lines: list[str], path: Path, first_line: int) -> np.ndarray:
    values = parse_float_rows(lines, POINT_COLUMNS, path, first_line)
    check_range(values[:, 4:7], 0, 255, "colour", path, lines, first_line)
    return values.astype(np.float32)


def _parse_labels(lines: list[str], path: Path, first_line: int) -> np.ndarray:
    labels = parse_int_lines(lines, path, first_line)
    check_range(labels, 0, NUM_CLASSES - 1, "label", path, lines, first_line)
    return labels.astype(np.int32)


def _count_mismatch(
    labels_path: Path, txt_path: Path, num_labels: int, num_points: int, streaming: bool = False
) -> ValueError:
    """The error for a label count != point count, at the first line without a counterpart.

    While streaming, the longer file has not been read to its end: its count is a lower bound.
    """
    longer, line = (
        (labels_path, num_points + 1) if num_labels > num_points else (txt_path, num_labels + 1)
    )
    at_least = "at least " if streaming else ""
    labels_text = f"{at_least if longer == labels_path else ''}{num_labels} labels in {labels_path}"
    points_text = f"{at_least if longer == txt_path else ''}{num_points} points in {txt_path}"
    return ValueError(f"{longer}:{line}: label/point count mismatch ({labels_text}, {points_text})")


def _write_ids(path: Path, labels: np.ndarray, low: int) -> None:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] == 0:
        raise ValueError(f"{path}: labels must have shape [N] with N > 0, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: labels must be integers, got dtype {labels.dtype}")
    if labels.min() < low or labels.max() >= NUM_CLASSES:
        what = (
            "predictions (0 = unlabelled is not a prediction)" if low > IGNORE_INDEX else "labels"
        )
        raise ValueError(
            f"{path}: {what} must lie in {low}..{NUM_CLASSES - 1}, got "
            f"{labels.min()}..{labels.max()}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{label}\n" for label in labels.tolist()))
