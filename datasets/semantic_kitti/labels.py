"""Lookup arrays derived from the embedded SemanticKITTI label configuration.

The tables in `label_config` are the official YAML as dicts; this module turns them into the arrays
the reader, the trainer and the metrics index with: raw id -> training id, training id -> raw id,
class names, per-class point frequencies for loss weighting, and the `LabelSpace` (20 training
ids, 0 ignored; colours RGB; the official categories).
"""

import numpy as np

from datasets.semantic_kitti import label_config
from leakjax.label_space import LabelSpace

NUM_CLASSES = 20  # training ids 0..19, 0 = unlabeled / ignored
IGNORE_TRAIN_ID = 0

# raw id -> training id; entries for raw ids absent from the configuration are 0, and
# `KNOWN_RAW_IDS` tells them apart (the reader rejects unknown raw ids rather than ignore them).
LEARNING_MAP = np.zeros(max(label_config.LABEL_NAMES) + 1, dtype=np.int32)  # [260]
for _raw_id, _train_id in label_config.LEARNING_MAP_TABLE.items():
    LEARNING_MAP[_raw_id] = _train_id
LEARNING_MAP.setflags(write=False)

KNOWN_RAW_IDS = np.zeros(LEARNING_MAP.shape[0], dtype=bool)  # [260]
KNOWN_RAW_IDS[list(label_config.LABEL_NAMES)] = True
KNOWN_RAW_IDS.setflags(write=False)

# training id -> raw id written into submission files
LEARNING_MAP_INV = np.array(
    [label_config.LEARNING_MAP_INV_TABLE[t] for t in range(NUM_CLASSES)], dtype=np.int32
)  # [20]
LEARNING_MAP_INV.setflags(write=False)

CLASS_NAMES: tuple[str, ...] = tuple(
    label_config.LABEL_NAMES[label_config.LEARNING_MAP_INV_TABLE[t]] for t in range(NUM_CLASSES)
)

LEARNING_IGNORE = np.array(
    [label_config.LEARNING_IGNORE_TABLE[t] for t in range(NUM_CLASSES)], dtype=bool
)  # [20]
LEARNING_IGNORE.setflags(write=False)


def class_frequencies(exclude_ignored: bool = False) -> np.ndarray:
    """Fraction of SemanticKITTI training points per training id, from the official `content`.

    Raw ids are summed into their training id (e.g. car + moving-car). Returns float64 [20] summing
    to 1 (over all points, or over non-ignored points with `exclude_ignored`, where entry 0 is 0).
    Use it for class-weighted cross entropy, e.g. weights proportional to 1 / sqrt(frequency).
    """
    frequencies = np.zeros(NUM_CLASSES, dtype=np.float64)
    for raw_id, fraction in label_config.CONTENT.items():
        frequencies[label_config.LEARNING_MAP_TABLE[raw_id]] += fraction
    if exclude_ignored:
        frequencies[LEARNING_IGNORE] = 0.0
    return frequencies / frequencies.sum()


def to_train_ids(raw_ids: np.ndarray) -> np.ndarray:
    """Map raw semantic ids [N] (already validated as known) to training ids int32 [N]."""
    return LEARNING_MAP[raw_ids]


# SemanticKITTI's official categories of the 19 scored classes (the "a priori grouping" ablation).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "ground": ("road", "parking", "sidewalk", "other-ground"),
    "structure": ("building",),
    "vehicle": ("car", "truck", "bicycle", "motorcycle", "other-vehicle"),
    "nature": ("vegetation", "trunk", "terrain"),
    "human": ("person", "bicyclist", "motorcyclist"),
    "object": ("fence", "pole", "traffic-sign"),
}

LABEL_SPACE = LabelSpace(
    name="semantic_kitti",
    class_names=CLASS_NAMES,
    ignore_index=IGNORE_TRAIN_ID,
    colors=tuple(
        tuple(int(c) for c in reversed(label_config.COLOR_MAP_BGR[int(raw)]))
        for raw in LEARNING_MAP_INV
    ),
    categories=CATEGORIES,
)
