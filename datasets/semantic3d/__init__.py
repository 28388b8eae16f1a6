"""Semantic3D: reader and writer for the benchmark's text files, label space, splits, submissions.

`load_scan(txt, labels)` reads a scan that fits in memory; `iter_chunks` streams one with bounded
memory; `write_predictions` writes a submission. The synthetic stand-in lives in
`datasets.semantic3d.synthetic` and is imported from there.
"""

from datasets.ascii_table import MalformedLineError
from datasets.semantic3d.io import (
    DEFAULT_CHUNK_POINTS,
    POINT_COLUMNS,
    ScanChunk,
    iter_chunks,
    load_labels,
    load_scan,
    write_labels,
    write_predictions,
    write_scan,
)
from datasets.semantic3d.labels import (
    CATEGORIES,
    CLASS_COLORS,
    CLASS_NAMES,
    IGNORE_INDEX,
    LABEL_SPACE,
    NUM_CLASSES,
    RANDLA_CLASS_POINT_COUNTS,
)
from datasets.semantic3d.layout import (
    KPCONV_SPLIT_IDS,
    REDUCED8_TEST_SCANS,
    SEMANTIC8_TEST_SCANS,
    SPLITS,
    SUBMISSION_NAMES,
    TRAIN_SCANS,
    TRAINING_SCANS,
    VALIDATION_SCANS,
    scan_files,
    split_files,
    submission_file_name,
)

__all__ = [
    "CATEGORIES",
    "CLASS_COLORS",
    "CLASS_NAMES",
    "DEFAULT_CHUNK_POINTS",
    "IGNORE_INDEX",
    "KPCONV_SPLIT_IDS",
    "LABEL_SPACE",
    "MalformedLineError",
    "NUM_CLASSES",
    "POINT_COLUMNS",
    "RANDLA_CLASS_POINT_COUNTS",
    "REDUCED8_TEST_SCANS",
    "SEMANTIC8_TEST_SCANS",
    "SPLITS",
    "SUBMISSION_NAMES",
    "ScanChunk",
    "TRAINING_SCANS",
    "TRAIN_SCANS",
    "VALIDATION_SCANS",
    "iter_chunks",
    "load_labels",
    "load_scan",
    "scan_files",
    "split_files",
    "submission_file_name",
    "write_labels",
    "write_predictions",
    "write_scan",
]
