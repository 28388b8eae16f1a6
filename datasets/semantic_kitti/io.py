"""Read and write the files of the official SemanticKITTI layout.

`velodyne/NNNNNN.bin` holds float32 (x, y, z, remission) per point, x, y, z in metres in the sensor
frame; `labels/NNNNNN.label` holds one uint32 per point, the low 16 bits the raw semantic id and
the high 16 bits the instance id; `poses.txt` has one 3x4 row-major pose per scan; `calib.txt` has
named 3x4 matrices; `times.txt` one timestamp in seconds per scan. Every malformed input raises a
ValueError that names the file and the problem: nothing is dropped or truncated silently.
"""

import os
from pathlib import Path

import numpy as np

from datasets.semantic_kitti.labels import KNOWN_RAW_IDS, LEARNING_MAP_INV, NUM_CLASSES

PathLike = str | os.PathLike

_POINT_BYTES = 16  # 4 x float32
_LABEL_BYTES = 4  # 1 x uint32
_MAX_INSTANCE_ID = 0xFFFF


def load_scan(path: PathLike) -> np.ndarray:
    """Load a `.bin` scan: float32 [N, 4] (x, y, z in metres, remission)."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path}: empty scan (0 bytes)")
    if size % _POINT_BYTES:
        raise ValueError(
            f"{path}: size {size} bytes is not a multiple of {_POINT_BYTES} (4 float32 per point)"
        )
    points = np.fromfile(path, dtype="<f4").reshape(-1, 4)
    _check_finite(points, str(path))
    return points


def load_labels(path: PathLike, num_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load a `.label` file: (raw semantic ids int32 [N], instance ids int32 [N]).

    With `num_points`, the file must hold exactly that many entries (the scan's point count).
    Raw ids that are not in the official configuration are an error, not ignored.
    """
    path = Path(path)
    size = path.stat().st_size
    if size % _LABEL_BYTES:
        raise ValueError(
            f"{path}: size {size} bytes is not a multiple of {_LABEL_BYTES} (one uint32 per point)"
        )
    count = size // _LABEL_BYTES
    if num_points is not None and count != num_points:
        raise ValueError(f"{path}: {count} labels but the scan has {num_points} points")
    if count == 0:
        raise ValueError(f"{path}: empty label file (0 bytes)")
    packed = np.fromfile(path, dtype="<u4")
    semantic = (packed & 0xFFFF).astype(np.int32)
    instance = (packed >> 16).astype(np.int32)
    _check_raw_ids(semantic, str(path))
    return semantic, instance


def write_scan(path: PathLike, points: np.ndarray) -> None:
    """Write points [N, 4] (x, y, z in metres, remission) as a float32 `.bin` scan."""
    path = Path(path)
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"{path}: points must have shape [N, 4], got {points.shape}")
    if points.shape[0] == 0:
        raise ValueError(f"{path}: refusing to write an empty scan")
    _check_finite(points, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    points.astype("<f4").tofile(path)


def write_labels(path: PathLike, semantic: np.ndarray, instance: np.ndarray | None = None) -> None:
    """Write raw semantic ids [N] and instance ids [N] (0..65535) as a uint32 `.label` file."""
    path = Path(path)
    semantic = np.asarray(semantic)
    instance = np.zeros_like(semantic) if instance is None else np.asarray(instance)
    if semantic.ndim != 1 or instance.shape != semantic.shape:
        raise ValueError(
            f"{path}: semantic {semantic.shape} and instance {instance.shape} must be equal [N]"
        )
    _check_integer(semantic, f"{path}: semantic ids")
    _check_integer(instance, f"{path}: instance ids")
    if semantic.size and (semantic.min() < 0 or semantic.max() >= KNOWN_RAW_IDS.shape[0]):
        raise ValueError(f"{path}: raw semantic ids outside 0..{KNOWN_RAW_IDS.shape[0] - 1}")
    _check_raw_ids(semantic, str(path))
    if instance.size and (instance.min() < 0 or instance.max() > _MAX_INSTANCE_ID):
        raise ValueError(f"{path}: instance ids must lie in 0..{_MAX_INSTANCE_ID}")
    packed = semantic.astype(np.uint32) | (instance.astype(np.uint32) << 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    packed.astype("<u4").tofile(path)


def write_predictions(path: PathLike, train_ids: np.ndarray) -> None:
    """Write predicted training ids int [N] (0..19) in the submission `.label` format.

    Training ids go back to raw ids through `learning_map_inv` (instance bits 0), as the official
    evaluation expects.
    """
    path = Path(path)
    train_ids = np.asarray(train_ids)
    if train_ids.ndim != 1:
        raise ValueError(f"{path}: predictions must have shape [N], got {train_ids.shape}")
    _check_integer(train_ids, f"{path}: predictions")
    if train_ids.size and (train_ids.min() < 0 or train_ids.max() >= NUM_CLASSES):
        raise ValueError(
            f"{path}: predicted training ids must lie in 0..{NUM_CLASSES - 1}, "
            f"got {train_ids.min()}..{train_ids.max()}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    LEARNING_MAP_INV[train_ids].astype("<u4").tofile(path)


def load_poses(path: PathLike) -> np.ndarray:
    """Load `poses.txt` (12 floats per line, 3x4 row-major) as float64 [T, 4, 4] homogeneous poses.

    For real SemanticKITTI these are camera poses; the LiDAR pose is inv(Tr) @ pose @ Tr with Tr
    from `calib.txt`. The synthetic world writes LiDAR poses and Tr = identity.
    """
    path = Path(path)
    rows = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        rows.append(_parse_floats(line.split(), 12, path, line_number))
    if not rows:
        raise ValueError(f"{path}: no poses")
    poses = np.zeros((len(rows), 4, 4), dtype=np.float64)
    poses[:, :3, :] = np.asarray(rows).reshape(-1, 3, 4)
    poses[:, 3, 3] = 1.0
    return poses


def write_poses(path: PathLike, poses: np.ndarray) -> None:
    """Write poses [T, 4, 4] or [T, 3, 4] as `poses.txt` (12 floats per line)."""
    path = Path(path)
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] not in ((4, 4), (3, 4)):
        raise ValueError(f"{path}: poses must have shape [T, 4, 4] or [T, 3, 4], got {poses.shape}")
    _check_finite(poses, str(path))
    lines = [" ".join(f"{v:.9e}" for v in pose[:3].reshape(-1)) for pose in poses]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def load_calib(path: PathLike) -> dict[str, np.ndarray]:
    """Load `calib.txt`: name -> float64 [3, 4] (P0..P3 projections, Tr velodyne -> camera)."""
    path = Path(path)
    calib = {}
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, values = line.partition(":")
        if not sep:
            raise ValueError(f"{path}:{line_number}: expected 'NAME: 12 floats', got {line!r}")
        calib[name.strip()] = np.asarray(
            _parse_floats(values.split(), 12, path, line_number)
        ).reshape(3, 4)
    return calib


def write_calib(path: PathLike, calib: dict[str, np.ndarray]) -> None:
    """Write name -> [3, 4] matrices as `calib.txt`."""
    path = Path(path)
    lines = []
    for name, matrix in calib.items():
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape != (3, 4):
            raise ValueError(f"{path}: calib {name!r} must have shape [3, 4], got {matrix.shape}")
        lines.append(f"{name}: " + " ".join(f"{v:.12e}" for v in matrix.reshape(-1)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def load_times(path: PathLike) -> np.ndarray:
    """Load `times.txt`: float64 [T] timestamps in seconds."""
    path = Path(path)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return np.asarray([_parse_floats([v], 1, path, i + 1)[0] for i, v in enumerate(lines)])


def write_times(path: PathLike, times_s: np.ndarray) -> None:
    """Write timestamps float [T] in seconds as `times.txt`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{t:.6e}\n" for t in np.asarray(times_s, dtype=np.float64)))


def _parse_floats(tokens: list[str], count: int, path: Path, line_number: int) -> list[float]:
    if len(tokens) != count:
        raise ValueError(f"{path}:{line_number}: expected {count} numbers, got {len(tokens)}")
    try:
        values = [float(token) for token in tokens]
    except ValueError as error:
        raise ValueError(f"{path}:{line_number}: not a number ({error})") from None
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{path}:{line_number}: non-finite value")
    return values


def _check_finite(values: np.ndarray, where: str) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.reshape(finite.shape[0], -1).all(axis=1))
        raise ValueError(
            f"{where}: {bad_rows.size} entries with NaN or infinite values (first at index "
            f"{bad_rows[0]})"
        )


def _check_integer(values: np.ndarray, where: str) -> None:
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{where} must be integers, got dtype {values.dtype}")


def _check_raw_ids(semantic: np.ndarray, where: str) -> None:
    in_range = semantic < KNOWN_RAW_IDS.shape[0]
    known = np.zeros(semantic.shape, dtype=bool)
    known[in_range] = KNOWN_RAW_IDS[semantic[in_range]]
    if not known.all():
        unknown = np.unique(semantic[~known])
        raise ValueError(
            f"{where}: {int((~known).sum())} labels with raw ids not in the SemanticKITTI "
            f"configuration: {unknown[:10].tolist()}"
        )
