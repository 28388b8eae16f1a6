"""The SemanticKITTI directory layout: official splits, scan/label file pairs, loading a pair.

`<root>/sequences/<NN>/velodyne/<NNNNNN>.bin` with `labels/<NNNNNN>.label` beside it (train and
validation sequences only) and `poses.txt`. A requested sequence without the files its split needs
is an error, never an empty result.
"""

from pathlib import Path

import numpy as np

from datasets.semantic_kitti.io import PathLike, load_labels, load_scan
from datasets.semantic_kitti.label_config import SPLIT_SEQUENCES
from datasets.semantic_kitti.labels import LEARNING_MAP

SPLITS: dict[str, list[str]] = {name: list(seqs) for name, seqs in SPLIT_SEQUENCES.items()}
LABELLED_SPLITS = ("train", "valid")


def sequence_name(sequence: str | int) -> str:
    """Normalise a sequence number (8, "8", "08") to its two-digit directory name "08"."""
    text = str(sequence)
    if not text.isdigit() or int(text) > 99:
        raise ValueError(f"sequence {sequence!r} is not a sequence number 00..99")
    return f"{int(text):02d}"


def sequence_dir(root: PathLike, sequence: str | int) -> Path:
    """`<root>/sequences/<NN>`; raises ValueError when it does not exist."""
    root = Path(root)
    directory = root / "sequences" / sequence_name(sequence)
    if not directory.is_dir():
        raise ValueError(f"{directory}: sequence directory does not exist under root {root}")
    return directory


def list_scan_label_pairs(
    root: PathLike, sequences: list[str | int] | tuple[str | int, ...], require_labels: bool = True
) -> list[tuple[Path, Path | None]]:
    """(scan path, label path) for every scan of `sequences`, sorted by sequence then scan index.

    With `require_labels`, every sequence must have `labels/` with exactly one `.label` per `.bin`;
    without, label paths are None (test split). Raises ValueError for a missing `velodyne/`, a
    missing `labels/`, a sequence without scans, or scans and labels that do not match one to one.
    """
    pairs: list[tuple[Path, Path | None]] = []
    for sequence in sequences:
        directory = sequence_dir(root, sequence)
        velodyne_dir = directory / "velodyne"
        if not velodyne_dir.is_dir():
            raise ValueError(f"{velodyne_dir}: missing velodyne/ directory for sequence {sequence}")
        scan_paths = sorted(velodyne_dir.glob("*.bin"))
        if not scan_paths:
            raise ValueError(f"{velodyne_dir}: no .bin scans")
        if not require_labels:
            pairs.extend((scan_path, None) for scan_path in scan_paths)
            continue
        label_dir = directory / "labels"
        if not label_dir.is_dir():
            raise ValueError(f"{label_dir}: missing labels/ directory for sequence {sequence}")
        label_stems = {path.stem for path in label_dir.glob("*.label")}
        scan_stems = {path.stem for path in scan_paths}
        if label_stems != scan_stems:
            missing = sorted(scan_stems - label_stems)[:5]
            extra = sorted(label_stems - scan_stems)[:5]
            raise ValueError(
                f"{label_dir}: labels do not match scans one to one "
                f"(scans without labels: {missing}, labels without scans: {extra})"
            )
        pairs.extend((path, label_dir / f"{path.stem}.label") for path in scan_paths)
    return pairs


def split_pairs(root: PathLike, split: str) -> list[tuple[Path, Path | None]]:
    """Scan/label pairs of an official split ("train", "valid", "test"; test has no labels)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {sorted(SPLITS)}")
    return list_scan_label_pairs(root, SPLITS[split], require_labels=split in LABELLED_SPLITS)


def load_pair(
    scan_path: PathLike, label_path: PathLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load a scan and its labels: (points float32 [N, 4], training ids int32 [N], instance [N]).

    The label count must equal the scan's point count; raw ids map to training ids 0..19.
    """
    points = load_scan(scan_path)
    semantic, instance = load_labels(label_path, num_points=points.shape[0])
    return points, LEARNING_MAP[semantic], instance
