"""The S3DIS label space: 13 classes, ids 0..12, no ignored class; annotation file name -> class.

Class order is the release's `class_names.txt` as used by RandLA-Net, mmdetection3d and PointNet:
ceiling, floor, wall, beam, column, window, door, table, chair, sofa, bookcase, board, clutter.
An annotation file `Annotations/<class>_<k>.txt` takes the class of its name prefix; prefixes
outside the 13 (the release has `stairs`) go to clutter, as every released pre-processing does.

The colours and the a-priori `categories` are this project's choice (the release defines neither):
structure (the room's shell: ceiling, floor, wall, beam, column), openings (flat things set in or on
a wall: window, door, board), furniture (table, chair, sofa, bookcase) and other (clutter). They
feed the "a priori grouping" ablation only.
"""

import logging

import numpy as np

from leakjax.label_space import LabelSpace

CLASS_NAMES: tuple[str, ...] = (
    "ceiling",
    "floor",
    "wall",
    "beam",
    "column",
    "window",
    "door",
    "table",
    "chair",
    "sofa",
    "bookcase",
    "board",
    "clutter",
)
NUM_CLASSES = len(CLASS_NAMES)  # 13
CLUTTER_ID = CLASS_NAMES.index("clutter")  # 12

CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (150, 200, 230),  # ceiling
    (120, 90, 60),  # floor
    (200, 200, 120),  # wall
    (250, 160, 40),  # beam
    (190, 110, 200),  # column
    (100, 180, 255),  # window
    (200, 60, 60),  # door
    (170, 120, 200),  # table
    (255, 80, 160),  # chair
    (90, 60, 200),  # sofa
    (60, 160, 90),  # bookcase
    (240, 240, 240),  # board
    (90, 90, 90),  # clutter
)

CATEGORIES: dict[str, tuple[str, ...]] = {
    "structure": ("ceiling", "floor", "wall", "beam", "column"),
    "openings": ("window", "door", "board"),
    "furniture": ("table", "chair", "sofa", "bookcase"),
    "other": ("clutter",),
}

LABEL_SPACE = LabelSpace(
    name="s3dis",
    class_names=CLASS_NAMES,
    ignore_index=None,
    colors=CLASS_COLORS,
    categories=CATEGORIES,
)

# Points per class over the whole release as counted by RandLA-Net's pre-processing (after its
# 0.04 m grid sub-sampling), class order as CLASS_NAMES; RandLA weights its loss by 1 / (f + 0.02).
RANDLA_CLASS_POINT_COUNTS = np.array(
    [
        3370714,
        2856755,
        4919229,
        318158,
        375640,
        478001,
        974733,
        650464,
        791496,
        88727,
        1284130,
        229758,
        2272837,
    ],
    dtype=np.int64,
)
RANDLA_CLASS_POINT_COUNTS.setflags(write=False)

_log = logging.getLogger(__name__)
_reported_unknown_prefixes: set[str] = set()


def annotation_class_name(file_stem: str) -> str:
    """The class prefix of an annotation file stem: "wall_12" -> "wall", "stairs_1" -> "stairs".

    Raises ValueError unless the stem is `<name>_<k>` with a non-empty name and an integer k.
    """
    prefix, separator, index = file_stem.rpartition("_")
    if not separator or not prefix or not index.isdigit():
        raise ValueError(f"annotation name {file_stem!r} is not <class>_<k>")
    return prefix


def class_id_of_prefix(prefix: str) -> int:
    """Class id 0..12 of an annotation prefix; unknown prefixes are clutter (logged once each)."""
    if prefix in CLASS_NAMES:
        return CLASS_NAMES.index(prefix)
    if prefix not in _reported_unknown_prefixes:
        _reported_unknown_prefixes.add(prefix)
        _log.warning(
            "S3DIS: annotation class %r is not one of the 13 classes; using clutter", prefix
        )
    return CLUTTER_ID
