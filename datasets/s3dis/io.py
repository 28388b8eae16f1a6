"""Read and write S3DIS rooms: the official text release and mmdetection3d's pre-processed binaries.

Official release (`Stanford3dDataset_v1.2_Aligned_Version/Area_N/<room>/`): `<room>.txt` holds the
whole room and `Annotations/<class>_<k>.txt` one object each; every line is `x y z r g b` (metres in
the area's aligned frame, colours 0-255). A room's labelled points are its annotation files
concatenated, each labelled by its name prefix (`labels.class_id_of_prefix`). Coordinates are
returned as stored: the minimum-corner shift of RandLA-Net and mmdetection3d is pre-processing.

mmdetection3d layout (its `tools/create_data.py s3dis`): `points/<Area_N>_<room>.bin` float32
(x, y, z, r, g, b) per point, xyz shifted so the room's minimum corner is 0, and
`semantic_mask/<Area_N>_<room>.bin` int64 class id 0..12 per point (the real sample under
`tests/data/s3dis/` has exactly these dtypes).

The release's known defect: line 180389 of `Area_5/hallway_6/Annotations/ceiling_1.txt` holds a
stray character that fuses two numbers, so the line has 5 columns instead of 6. The released
pre-processing of PointNet, DGCNN and mmdetection3d overwrites that one character with a space. This
reader does the same repair in memory (the user's file is never modified), and only there: the file
must end in that path, the bad line must be that line, it must hold exactly one character that
cannot be part of a number, and replacing it by a space must give 6 numbers. The repair is logged as
a warning naming file, line and both texts. Repairing rather than refusing keeps Area 5, the
standard test area, usable without a manual edit and gives the same points as every published
number. Pass `repair_known_defect=False` to refuse instead (the error names file and line). Any
other malformed line is an error naming its file and line.
"""

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np

from datasets.ascii_table import (
    MalformedLineError,
    PathLike,
    check_range,
    format_rows,
    parse_float_rows,
    read_text_lines,
)
from datasets.s3dis.labels import NUM_CLASSES, annotation_class_name, class_id_of_prefix

KNOWN_DEFECT_PATH = ("Area_5", "hallway_6", "Annotations", "ceiling_1.txt")
KNOWN_DEFECT_LINE = 180389
_NUMBER_CHARACTERS = re.compile(r"[0-9+\-.eE\s]")
_POINT_FORMATS = ("%.3f", "%.3f", "%.3f", "%d", "%d", "%d")

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Annotation:
    """One annotation file of a room: an object instance and its points."""

    path: Path
    class_name: str  # the file-name prefix as written (e.g. "stairs")
    class_id: int  # 0..12 (unknown prefixes -> clutter)
    points: np.ndarray  # float32 [n, 6]: x, y, z in metres, r, g, b in 0..255


def load_points_txt(path: PathLike, repair_known_defect: bool = True) -> np.ndarray:
    """Load an `x y z r g b` text file: float32 [N, 6] (metres; colours 0..255).

    Raises MalformedLineError (a ValueError naming file and line) for a line without exactly 6
    finite numbers or a colour outside 0..255, and ValueError for a file without points.
    """
    path = Path(path)
    lines = read_text_lines(path)
    if not lines:
        raise ValueError(f"{path}: no points (empty file)")
    try:
        values = parse_float_rows(lines, 6, path)
    except MalformedLineError as error:
        if not (repair_known_defect and _repair_known_defect(path, lines, error)):
            raise
        values = parse_float_rows(lines, 6, path)
    check_range(values[:, 3:6], 0, 255, "colour", path, lines)
    return values.astype(np.float32)


def load_room_annotations(room_dir: PathLike, repair_known_defect: bool = True) -> list[Annotation]:
    """The annotation files of a room, sorted by (class prefix, k).

    Only `*.txt` files of `Annotations/` are annotations. Raises ValueError for a missing
    `Annotations/`, a room without annotation files, a file name that is not `<class>_<k>.txt`,
    or any malformed file (see `load_points_txt`).
    """
    room_dir = Path(room_dir)
    annotation_dir = room_dir / "Annotations"
    if not annotation_dir.is_dir():
        raise ValueError(f"{annotation_dir}: missing Annotations/ directory of room {room_dir}")
    keyed = []
    for path in annotation_dir.glob("*.txt"):
        try:
            prefix = annotation_class_name(path.stem)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        keyed.append(((prefix, int(path.stem.rpartition("_")[2]), path.name), prefix, path))
    if not keyed:
        raise ValueError(f"{annotation_dir}: no annotation files (<class>_<k>.txt)")
    annotations = []
    for _, prefix, path in sorted(keyed):
        points = load_points_txt(path, repair_known_defect=repair_known_defect)
        annotations.append(Annotation(path, prefix, class_id_of_prefix(prefix), points))
    return annotations


def load_room(
    room_dir: PathLike, repair_known_defect: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Load a room of the official layout from its annotations.

    Returns:
      points: float32 [N, 6], x, y, z in metres (aligned area frame, not shifted), r, g, b 0..255;
      labels: int32 [N], class ids 0..12, the annotation files concatenated in
        `load_room_annotations` order.
    """
    annotations = load_room_annotations(room_dir, repair_known_defect=repair_known_defect)
    points = np.concatenate([annotation.points for annotation in annotations])
    labels = np.concatenate(
        [np.full(len(a.points), a.class_id, np.int32) for a in annotations]
    ).astype(np.int32)
    return points, labels


def load_room_file(room_dir: PathLike) -> np.ndarray:
    """The unlabelled whole-room file `<room_dir>/<room>.txt`: float32 [N, 6]."""
    room_dir = Path(room_dir)
    return load_points_txt(room_dir / f"{room_dir.name}.txt")


def write_points_txt(path: PathLike, points: np.ndarray) -> None:
    """Write points [N, 6] (x, y, z metres; r, g, b 0..255) as `x y z r g b` lines (mm, ints)."""
    path = Path(path)
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 6 or points.shape[0] == 0:
        raise ValueError(f"{path}: points must have shape [N, 6] with N > 0, got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{path}: points contain NaN or infinite values")
    if points[:, 3:6].min() < 0 or points[:, 3:6].max() > 255:
        raise ValueError(f"{path}: colours must lie in 0..255")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_rows(points, _POINT_FORMATS))


def list_mmdet3d_scenes(root: PathLike) -> list[str]:
    """Scene names (e.g. "Area_1_office_2") of mmdetection3d's `points/*.bin`, sorted."""
    points_dir = Path(root) / "points"
    if not points_dir.is_dir():
        raise ValueError(f"{points_dir}: missing points/ directory of the mmdetection3d layout")
    names = sorted(path.stem for path in points_dir.glob("*.bin"))
    if not names:
        raise ValueError(f"{points_dir}: no .bin scenes")
    return names


def load_mmdet3d_scene(root: PathLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Load `points/<name>.bin` and `semantic_mask/<name>.bin` of mmdetection3d's layout.

    Returns (points float32 [N, 6]: x, y, z metres from the room's minimum corner, r, g, b 0..255;
    labels int32 [N], class ids 0..12). Raises ValueError naming the file for a size that is not a
    whole number of records, a label count that differs from the point count, a label outside
    0..12, a colour outside 0..255 or a non-finite value.
    """
    root = Path(root)
    points_path = root / "points" / f"{name}.bin"
    mask_path = root / "semantic_mask" / f"{name}.bin"
    points = _read_records(points_path, "<f4", 6).reshape(-1, 6)
    labels = _read_records(mask_path, "<i8", 1)
    if labels.shape[0] != points.shape[0]:
        raise ValueError(
            f"{mask_path}: {labels.shape[0]} labels but {points_path} has {len(points)}"
        )
    bad_point = ~np.isfinite(points).all(axis=1) | (points[:, 3:6] < 0).any(axis=1)
    bad_point |= (points[:, 3:6] > 255).any(axis=1)
    if bad_point.any():
        raise ValueError(
            f"{points_path}: point {int(np.argmax(bad_point))} has a non-finite value or a colour "
            "outside 0..255"
        )
    bad_label = (labels < 0) | (labels >= NUM_CLASSES)
    if bad_label.any():
        index = int(np.argmax(bad_label))
        raise ValueError(
            f"{mask_path}: label {labels[index]} of point {index} outside 0..{NUM_CLASSES - 1}"
        )
    return points.astype(np.float32), labels.astype(np.int32)


def _read_records(path: Path, dtype: str, values_per_record: int) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{path}: file does not exist")
    record_bytes = np.dtype(dtype).itemsize * values_per_record
    size = path.stat().st_size
    if size == 0 or size % record_bytes:
        raise ValueError(
            f"{path}: size {size} bytes is not a positive multiple of {record_bytes} "
            f"({values_per_record} x {np.dtype(dtype).name} per point)"
        )
    return np.fromfile(path, dtype=dtype)


def _repair_known_defect(path: Path, lines: list[str], error: MalformedLineError) -> bool:
    """Repair `lines` in place if `error` is the release's known defect (module docstring)."""
    if path.parts[-4:] != KNOWN_DEFECT_PATH or error.line_number != KNOWN_DEFECT_LINE:
        return False
    original = lines[error.line_number - 1]
    strays = [i for i, ch in enumerate(original) if not _NUMBER_CHARACTERS.fullmatch(ch)]
    if len(strays) != 1:
        return False
    repaired = original[: strays[0]] + " " + original[strays[0] + 1 :]
    try:
        parse_float_rows([repaired], 6, path, error.line_number)
    except MalformedLineError:
        return False
    lines[error.line_number - 1] = repaired
    _log.warning(
        "%s:%d: repaired the S3DIS release's known defect, stray character %r replaced by a "
        "space: %r -> %r",
        path,
        error.line_number,
        original[strays[0]],
        original,
        repaired,
    )
    return True
