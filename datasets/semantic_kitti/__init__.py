"""SemanticKITTI: reader and writer for the official layout, embedded label configuration.

The TFDS builder lives in `datasets.semantic_kitti.tfds_builder` and is imported from there, so
that reading files never imports tensorflow_datasets.
"""

from datasets.semantic_kitti.io import (
    load_calib,
    load_labels,
    load_poses,
    load_scan,
    load_times,
    write_calib,
    write_labels,
    write_poses,
    write_predictions,
    write_scan,
    write_times,
)
from datasets.semantic_kitti.labels import (
    CLASS_NAMES,
    IGNORE_TRAIN_ID,
    KNOWN_RAW_IDS,
    LEARNING_IGNORE,
    LEARNING_MAP,
    LEARNING_MAP_INV,
    NUM_CLASSES,
    class_frequencies,
)
from datasets.semantic_kitti.layout import (
    SPLITS,
    list_scan_label_pairs,
    load_pair,
    sequence_dir,
    sequence_name,
    split_pairs,
)

__all__ = [
    "CLASS_NAMES",
    "IGNORE_TRAIN_ID",
    "KNOWN_RAW_IDS",
    "LEARNING_IGNORE",
    "LEARNING_MAP",
    "LEARNING_MAP_INV",
    "NUM_CLASSES",
    "SPLITS",
    "class_frequencies",
    "list_scan_label_pairs",
    "load_calib",
    "load_labels",
    "load_pair",
    "load_poses",
    "load_scan",
    "load_times",
    "sequence_dir",
    "sequence_name",
    "split_pairs",
    "write_calib",
    "write_labels",
    "write_poses",
    "write_predictions",
    "write_scan",
    "write_times",
]
