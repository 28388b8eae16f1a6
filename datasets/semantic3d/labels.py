"""The Semantic3D label space: ids 0..8, 0 = unlabelled (ignored), 8 scored classes.

Ids are the values of the release's `.labels` files (benchmark `sem8`): 1 man-made terrain,
2 natural terrain, 3 high vegetation, 4 low vegetation, 5 buildings, 6 hard scape, 7 scanning
artefacts, 8 cars; 0 marks unlabelled points, never scored nor predicted. Models output 9 logits
(id 0 included, never trained), `LABEL_SPACE.predict` never picks it.

The colours and the a-priori `categories` are this project's choice (the benchmark defines neither):
ground (man-made and natural terrain), vegetation (high and low), built (buildings and hard scape)
and other (scanning artefacts and cars). They feed the "a priori grouping" ablation only.
"""

import numpy as np

from leakjax.label_space import LabelSpace

CLASS_NAMES: tuple[str, ...] = (
    "unlabelled",
    "man-made terrain",
    "natural terrain",
    "high vegetation",
    "low vegetation",
    "buildings",
    "hard scape",
    "scanning artefacts",
    "cars",
)
NUM_CLASSES = len(CLASS_NAMES)  # 9 label ids, 8 scored
IGNORE_INDEX = 0

CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),  # unlabelled
    (200, 200, 200),  # man-made terrain
    (160, 120, 60),  # natural terrain
    (0, 120, 0),  # high vegetation
    (120, 220, 80),  # low vegetation
    (230, 80, 60),  # buildings
    (250, 170, 30),  # hard scape
    (150, 60, 200),  # scanning artefacts
    (30, 90, 250),  # cars
)

CATEGORIES: dict[str, tuple[str, ...]] = {
    "ground": ("man-made terrain", "natural terrain"),
    "vegetation": ("high vegetation", "low vegetation"),
    "built": ("buildings", "hard scape"),
    "other": ("scanning artefacts", "cars"),
}

LABEL_SPACE = LabelSpace(
    name="semantic3d",
    class_names=CLASS_NAMES,
    ignore_index=IGNORE_INDEX,
    colors=CLASS_COLORS,
    categories=CATEGORIES,
)

# Points per label id 1..8 in RandLA-Net's pre-processed training set (after its grid
# sub-sampling); RandLA weights its loss by 1 / (f + 0.02).
RANDLA_CLASS_POINT_COUNTS = np.array(
    [5181602, 5012952, 6830086, 1311528, 10476365, 946982, 334860, 269353], dtype=np.int64
)
RANDLA_CLASS_POINT_COUNTS.setflags(write=False)
