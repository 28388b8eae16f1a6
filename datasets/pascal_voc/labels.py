"""The Pascal VOC 2012 segmentation label space: 21 classes, 255 ignored, the official palette.

Mask pixels hold label ids: 0 = background (a real, scored class), 1..20 the object classes in the
devkit's alphabetical order, and 255 = "void", the band drawn along object outlines and over
ambiguous regions, which is ignored by training and evaluation. `SegmentationClass/*.png` are
palette PNGs whose palette indices are these ids (the palette only colours them for viewing);
SBD's `SegmentationClassAug/*.png` are plain 8-bit PNGs with the same ids.

The a-priori categories are the four groups of the VOC challenge documentation (person, animal,
vehicle, indoor) plus background as its own category; the project uses them for the "a priori
grouping" ablation of LEAK's hierarchy.
"""

import numpy as np

from leakjax.label_space import LabelSpace

CLASS_NAMES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
NUM_CLASSES = len(CLASS_NAMES)  # 21: label ids 0..20
IGNORE_INDEX = 255

CATEGORIES: dict[str, tuple[str, ...]] = {
    "background": ("background",),
    "person": ("person",),
    "animal": ("bird", "cat", "cow", "dog", "horse", "sheep"),
    "vehicle": ("aeroplane", "bicycle", "boat", "bus", "car", "motorbike", "train"),
    "indoor": ("bottle", "chair", "diningtable", "pottedplant", "sofa", "tvmonitor"),
}


def voc_palette(num_entries: int = 256) -> np.ndarray:
    """The VOC devkit colour map: uint8 [num_entries, 3] RGB, entry i the colour of label id i.

    The devkit spreads the bits of i over the channels: bit 3k (red), 3k+1 (green) and 3k+2
    (blue) of i set bit 7-k of the channel. Entry 255 (void) is (224, 224, 192).
    """
    ids = np.arange(num_entries, dtype=np.int64)
    palette = np.zeros((num_entries, 3), np.int64)
    for level in range(8):
        for channel in range(3):
            bit = (ids >> (3 * level + channel)) & 1
            palette[:, channel] |= bit << (7 - level)
    return palette.astype(np.uint8)


PALETTE = voc_palette()  # [256, 3]
PALETTE.setflags(write=False)

COLORS: tuple[tuple[int, int, int], ...] = tuple(
    (int(r), int(g), int(b)) for r, g, b in PALETTE[:NUM_CLASSES]
)

LABEL_SPACE = LabelSpace(
    name="pascal_voc",
    class_names=CLASS_NAMES,
    ignore_index=IGNORE_INDEX,
    colors=COLORS,
    categories=CATEGORIES,
)


def invalid_label_values(mask: np.ndarray) -> np.ndarray:
    """The distinct values of an integer `mask` that are neither a label id 0..20 nor 255."""
    values = np.unique(np.asarray(mask))
    return values[((values < 0) | (values >= NUM_CLASSES)) & (values != IGNORE_INDEX)]


def colorize(mask: np.ndarray) -> np.ndarray:
    """Label ids uint8 [H, W] (0..20, 255) -> uint8 [H, W, 3] RGB in the VOC palette."""
    return PALETTE[np.asarray(mask, np.uint8)]
