"""Read a user's point clouds from common file formats as LiDAR samples (x, y, z, remission).

Used by `python -m experiments.predict` to run a trained model on scans that are not part of a
registered dataset. Every reader returns a `PointCloud`: float32 [N, 4] (x, y, z in the file's
units, taken as metres; remission) with one row per point of the file, in file order.

    .bin        KITTI velodyne: float32 x, y, z, remission per point
    .npy        numpy array [N, 3] (x, y, z) or [N, 4] (x, y, z, remission)
    .ply        ASCII or binary PLY, element `vertex` with x, y, z (needs `plyfile`)
    .pcd        PCL's PCD, DATA ascii, binary or binary_compressed (own reader, numpy only)
    .las .laz   LAS 1.0-1.4 (needs `laspy`; `.laz` also `lazrs`)

Remission: `.bin` and `.npy` as stored (column 4); PLY and PCD: a property / field named
`remission`, `intensity` or `reflectance` (or `scalar_` + one of them, as CloudCompare writes);
LAS: `intensity` / 65535 (the LAS specification normalises intensity to 16 bits).
Integer remission fields are divided by their type's maximum (uint8: 255, uint16: 65535), float
fields are taken as they are (SemanticKITTI's remission lies in [0, 1]). A file without a remission
field gets `fill_remission` (default 0) in every row and `has_remission=False`; the caller says so.

`write_labelled_ply` writes a cloud with per-point labels and their colours (predictions).

Non-finite values (NaN, inf) are kept where they are, never dropped: `PointCloud.finite` and
`nonfinite_indices` tell the caller which rows they are. A file that cannot be read (bad size, bad
header, missing coordinates, no points, a missing optional package) raises a ValueError that names
the file.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from leakjax.label_space import LabelSpace

PathLike = str | os.PathLike
SUFFIXES = (".bin", ".npy", ".ply", ".pcd", ".las", ".laz")
REMISSION_NAMES = ("remission", "intensity", "reflectance")
_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8"}
_PCD_TYPES.update({(kind, size): f"{kind.lower()}{size}" for kind in "IU" for size in (1, 2, 4, 8)})
_PIP = {
    "plyfile": "pip install plyfile==1.1.5",
    "laspy": "pip install laspy==2.7.0 lazrs==0.8.2",
    "lazrs": "pip install lazrs==0.8.2",
}


@dataclasses.dataclass
class PointCloud:
    """One file's points.

    Attributes:
      path: the file read.
      points: float32 [N, 4]: x, y, z (m), remission; rows of non-finite values kept in place.
      has_remission: whether the file had a remission field (else column 3 is the fill value).
    """

    path: pathlib.Path
    points: np.ndarray
    has_remission: bool

    @property
    def finite(self) -> np.ndarray:
        """bool [N]: rows whose four values are all finite."""
        return np.isfinite(self.points).all(axis=1)

    @property
    def nonfinite_indices(self) -> np.ndarray:
        """int64 [K]: indices (file order) of the rows with a NaN or infinite value."""
        return np.flatnonzero(~self.finite)


def list_point_cloud_files(path: PathLike) -> list[pathlib.Path]:
    """A supported file as [path], or every supported file under a directory (recursive, sorted).

    Other files in a directory (e.g. `.label`, `poses.txt` of a KITTI sequence) are skipped; a
    single file of another suffix, a missing path or a directory without scans is a ValueError.
    """
    path = pathlib.Path(path)
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise ValueError(f"{path}: unsupported point cloud suffix; expected one of {SUFFIXES}")
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or directory")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise ValueError(f"{path}: no point cloud files ({', '.join(SUFFIXES)}) under it")
    return files


def read_point_cloud(path: PathLike, fill_remission: float = 0.0) -> PointCloud:
    """Reads one file by its suffix (module docstring); ValueError naming the file if it fails."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    readers = {
        ".bin": _read_kitti_bin,
        ".npy": _read_npy,
        ".ply": _read_ply,
        ".pcd": _read_pcd,
        ".las": _read_las,
        ".laz": _read_las,
    }
    if suffix not in readers:
        raise ValueError(f"{path}: unsupported point cloud suffix; expected one of {SUFFIXES}")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        xyz, remission = readers[suffix](path)
    except ValueError as error:
        message = str(error)
        raise ValueError(message if str(path) in message else f"{path}: {message}") from None
    except Exception as error:  # noqa: BLE001 - a third-party parser's error, made to name the file
        raise ValueError(f"{path}: cannot read as {suffix[1:]}: {error}") from error
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"{path}: coordinates of shape {xyz.shape}, expected [N, 3]")
    if xyz.shape[0] == 0:
        raise ValueError(f"{path}: no points")
    points = np.empty((xyz.shape[0], 4), np.float32)
    points[:, :3] = xyz
    points[:, 3] = fill_remission if remission is None else remission
    return PointCloud(path, points, remission is not None)


def write_labelled_ply(
    path: pathlib.Path, points: np.ndarray, labels: np.ndarray, label_space: LabelSpace
) -> None:
    """Binary little-endian PLY: x y z remission float, red green blue uchar, label int [N]."""
    colors = label_colors(labels, label_space)
    vertex = np.empty(
        len(points),
        dtype=[
            ("x", "<f4"),
            ("y", "<f4"),
            ("z", "<f4"),
            ("remission", "<f4"),
            ("red", "u1"),
            ("green", "u1"),
            ("blue", "u1"),
            ("label", "<i4"),
        ],
    )
    for column, name in enumerate(("x", "y", "z", "remission")):
        vertex[name] = points[:, column]
    for column, name in enumerate(("red", "green", "blue")):
        vertex[name] = colors[:, column]
    vertex["label"] = labels
    comments = [f"comment label {i} {name}" for i, name in enumerate(label_space.class_names)]
    properties = [
        "property float x",
        "property float y",
        "property float z",
        "property float remission",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
        "property int label",
    ]
    header = "\n".join(
        ["ply", "format binary_little_endian 1.0", *comments, f"element vertex {len(points)}"]
        + properties
        + ["end_header"]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode("ascii") + b"\n" + vertex.tobytes())


def label_colors(labels: np.ndarray, label_space: LabelSpace) -> np.ndarray:
    """uint8 [N, 3]: the label space's colours (a fixed palette if it has none); black for ids
    outside 0..C-1 (e.g. -1, a space without ignored id)."""
    if label_space.colors is not None:
        palette = np.asarray(label_space.colors, np.uint8)
    else:
        palette = np.random.default_rng(0).integers(0, 256, (label_space.num_classes, 3), np.uint8)
    colors = np.zeros((len(labels), 3), np.uint8)
    valid = (labels >= 0) & (labels < label_space.num_classes)
    colors[valid] = palette[labels[valid]]
    return colors


def _scaled_remission(values: np.ndarray) -> np.ndarray:
    """Integers / their type's maximum, floats as they are."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float64) / np.iinfo(values.dtype).max
    return values.astype(np.float64)


def _remission_field(names) -> str | None:
    """The first field name that means remission (REMISSION_NAMES, `scalar_` prefix allowed)."""
    lower = {name.lower(): name for name in names}
    for wanted in REMISSION_NAMES:
        for candidate in (wanted, f"scalar_{wanted}"):
            if candidate in lower:
                return lower[candidate]
    return None


def _read_kitti_bin(path: pathlib.Path):
    size = path.stat().st_size
    if size % 16:
        raise ValueError(f"{path}: size {size} bytes is not a multiple of 16 (4 float32 per point)")
    points = np.fromfile(path, dtype="<f4").reshape(-1, 4)
    return points[:, :3], points[:, 3]


def _read_npy(path: pathlib.Path):
    array = np.load(path, allow_pickle=False)
    if array.ndim != 2 or array.shape[1] not in (3, 4):
        raise ValueError(f"{path}: array of shape {array.shape}, expected [N, 3] or [N, 4]")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{path}: array of dtype {array.dtype}, expected numbers")
    return array[:, :3], (array[:, 3].astype(np.float64) if array.shape[1] == 4 else None)


def _import(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise ValueError(f"reading this format needs the package {name!r}: {_PIP[name]}") from None


def _read_ply(path: pathlib.Path):
    plyfile = _import("plyfile")
    data = plyfile.PlyData.read(str(path))
    if "vertex" not in data:
        raise ValueError(f"{path}: no 'vertex' element")
    vertex = data["vertex"].data
    names = vertex.dtype.names or ()
    missing = [axis for axis in "xyz" if axis not in names]
    if missing:
        raise ValueError(f"{path}: vertex has no {missing} coordinates (properties {names})")
    xyz = np.stack([np.asarray(vertex[axis], np.float64) for axis in "xyz"], axis=1)
    field = _remission_field(names)
    return xyz, None if field is None else _scaled_remission(vertex[field])


def _read_las(path: pathlib.Path):
    laspy = _import("laspy")
    try:
        las = laspy.read(str(path))
    except laspy.errors.LaspyException as error:
        if "LazBackend" in str(error) or "laz" in str(error).lower():
            raise ValueError(f"{path}: cannot decompress LAZ ({error}); {_PIP['lazrs']}") from None
        raise
    xyz = np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], axis=1)
    return xyz, np.asarray(las.intensity, np.float64) / 65535.0


def _read_pcd(path: pathlib.Path):
    raw = path.read_bytes()
    header, offset = _pcd_header(raw, path)
    names, counts, dtypes = header["FIELDS"], header["COUNT"], header["DTYPES"]
    num_points = header["POINTS"]
    mode = header["DATA"]
    body = raw[offset:]
    if mode == "ascii":
        columns = _pcd_ascii(body, path, sum(counts), num_points)
        fields, start = {}, 0
        for name, count in zip(names, counts):
            fields[name] = columns[:, start : start + count].astype(dtypes[name])
            start += count
    elif mode == "binary":
        record = np.dtype([(name, dtypes[name], (count,)) for name, count in zip(names, counts)])
        if len(body) != num_points * record.itemsize:
            raise ValueError(
                f"{path}: binary data of {len(body)} bytes, expected {num_points} points x "
                f"{record.itemsize} bytes"
            )
        table = np.frombuffer(body, record, count=num_points)
        fields = {name: table[name].reshape(num_points, -1) for name in names}
    elif mode == "binary_compressed":
        fields = _pcd_compressed(body, path, names, counts, dtypes, num_points)
    else:
        raise ValueError(f"{path}: DATA {mode!r} is not ascii, binary or binary_compressed")
    missing = [axis for axis in "xyz" if axis not in fields]
    if missing:
        raise ValueError(f"{path}: no {missing} fields (FIELDS {' '.join(names)})")
    xyz = np.stack([fields[axis][:, 0].astype(np.float64) for axis in "xyz"], axis=1)
    field = _remission_field(names)
    return xyz, None if field is None else _scaled_remission(fields[field][:, 0])


def _pcd_header(raw: bytes, path: pathlib.Path) -> tuple[dict, int]:
    """The header's entries and the byte offset of the data after the DATA line."""
    entries, offset = {}, 0
    while True:
        end = raw.find(b"\n", offset)
        if end < 0:
            raise ValueError(f"{path}: PCD header without a DATA line")
        line = raw[offset:end].decode("ascii", errors="replace").strip()
        offset = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        entries[key.upper()] = values
        if key.upper() == "DATA":
            break
    for key in ("FIELDS", "SIZE", "TYPE", "WIDTH", "HEIGHT"):
        if key not in entries:
            raise ValueError(f"{path}: PCD header has no {key} line")
    names = entries["FIELDS"]
    try:
        sizes = [int(v) for v in entries["SIZE"]]
        counts = [int(v) for v in entries.get("COUNT", ["1"] * len(names))]
        num_points = int(entries["WIDTH"][0]) * int(entries["HEIGHT"][0])
        if "POINTS" in entries:
            num_points = int(entries["POINTS"][0])
    except (ValueError, IndexError) as error:
        raise ValueError(f"{path}: malformed PCD header ({error})") from None
    types = [v.upper() for v in entries["TYPE"]]
    if not len(names) == len(sizes) == len(types) == len(counts):
        raise ValueError(f"{path}: FIELDS, SIZE, TYPE and COUNT disagree on the number of fields")
    dtypes = {}
    for name, kind, size in zip(names, types, sizes):
        if (kind, size) not in _PCD_TYPES:
            raise ValueError(f"{path}: field {name!r} has unsupported TYPE {kind} SIZE {size}")
        dtypes[name] = np.dtype("<" + _PCD_TYPES[(kind, size)])
    header = {
        "FIELDS": names,
        "COUNT": counts,
        "DTYPES": dtypes,
        "POINTS": num_points,
        "DATA": entries["DATA"][0].lower() if entries["DATA"] else "",
    }
    return header, offset


def _pcd_ascii(body: bytes, path: pathlib.Path, columns: int, num_points: int) -> np.ndarray:
    lines = [line.split() for line in body.decode("ascii").splitlines() if line.strip()]
    if len(lines) != num_points:
        raise ValueError(f"{path}: {len(lines)} data lines, the header says {num_points} points")
    bad = next((i for i, tokens in enumerate(lines) if len(tokens) != columns), None)
    if bad is not None:
        raise ValueError(
            f"{path}: data line {bad} has {len(lines[bad])} values, expected {columns}"
        )
    try:
        return np.asarray(lines, np.float64).reshape(num_points, columns)
    except ValueError as error:
        raise ValueError(f"{path}: not a number in the data ({error})") from None


def _pcd_compressed(body, path, names, counts, dtypes, num_points) -> dict[str, np.ndarray]:
    """binary_compressed: uint32 compressed size, uint32 size, LZF data of the fields one after
    another (all points' values of the first field, then of the second, ...)."""
    if len(body) < 8:
        raise ValueError(f"{path}: binary_compressed data shorter than its 8-byte size header")
    compressed_size, size = np.frombuffer(body[:8], "<u4")
    if 8 + int(compressed_size) > len(body):
        raise ValueError(f"{path}: compressed data truncated")
    data = lzf_decompress(body[8 : 8 + int(compressed_size)], int(size))
    fields, start = {}, 0
    for name, count in zip(names, counts):
        nbytes = num_points * count * dtypes[name].itemsize
        if start + nbytes > len(data):
            raise ValueError(f"{path}: decompressed data too short for field {name!r}")
        fields[name] = np.frombuffer(data[start : start + nbytes], dtypes[name]).reshape(
            num_points, count
        )
        start += nbytes
    return fields


def lzf_decompress(data: bytes, size: int) -> bytes:
    """LZF (liblzf) decompression, as PCL writes binary_compressed PCD files; `size` is the
    expected output length (a mismatch is an error)."""
    out = bytearray()
    index = 0
    while index < len(data):
        control = data[index]
        index += 1
        if control < 32:  # a literal run of control + 1 bytes
            end = index + control + 1
            if end > len(data):
                raise ValueError("LZF literal run past the end of the data")
            out += data[index:end]
            index = end
            continue
        length = control >> 5
        if length == 7:
            length += data[index]
            index += 1
        length += 2
        start = len(out) - ((control & 0x1F) << 8) - data[index] - 1
        index += 1
        if start < 0:
            raise ValueError("LZF back-reference before the start of the output")
        if start + length <= len(out):
            out += out[start : start + length]
        else:  # overlapping copy: repeats the last bytes
            for k in range(length):
                out.append(out[start + k])
    if len(out) != size:
        raise ValueError(f"LZF data decompressed to {len(out)} bytes, expected {size}")
    return bytes(out)
