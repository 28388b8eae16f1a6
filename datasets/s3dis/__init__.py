"""S3DIS: readers (official text release, mmdetection3d binaries), label space and protocols.

`load_room(room_dir)` reads one room of `Stanford3dDataset_v1.2_Aligned_Version/Area_N/<room>/`;
`load_mmdet3d_scene(root, name)` reads mmdetection3d's pre-processed `points/` + `semantic_mask/`.
The synthetic stand-in lives in `datasets.s3dis.synthetic` and is imported from there.
"""

from datasets.ascii_table import MalformedLineError
from datasets.s3dis.io import (
    KNOWN_DEFECT_LINE,
    KNOWN_DEFECT_PATH,
    Annotation,
    list_mmdet3d_scenes,
    load_mmdet3d_scene,
    load_points_txt,
    load_room,
    load_room_annotations,
    load_room_file,
    write_points_txt,
)
from datasets.s3dis.labels import (
    CATEGORIES,
    CLASS_COLORS,
    CLASS_NAMES,
    CLUTTER_ID,
    LABEL_SPACE,
    NUM_CLASSES,
    RANDLA_CLASS_POINT_COUNTS,
)
from datasets.s3dis.layout import (
    AREAS,
    RELEASE_DIR_NAME,
    ROOM_TYPE_COUNTS,
    area_dir,
    area_name,
    list_rooms,
    official_room_names,
    release_dir,
    scene_name,
)
from datasets.s3dis.protocols import (
    AREA5_SPLIT,
    CV_FOLDS,
    PROTOCOLS,
    iou_per_class,
    pooled_confusion,
    pooled_miou,
    protocol_split,
)

__all__ = [
    "AREA5_SPLIT",
    "AREAS",
    "Annotation",
    "CATEGORIES",
    "CLASS_COLORS",
    "CLASS_NAMES",
    "CLUTTER_ID",
    "CV_FOLDS",
    "KNOWN_DEFECT_LINE",
    "KNOWN_DEFECT_PATH",
    "LABEL_SPACE",
    "MalformedLineError",
    "NUM_CLASSES",
    "PROTOCOLS",
    "RANDLA_CLASS_POINT_COUNTS",
    "RELEASE_DIR_NAME",
    "ROOM_TYPE_COUNTS",
    "area_dir",
    "area_name",
    "iou_per_class",
    "list_mmdet3d_scenes",
    "list_rooms",
    "load_mmdet3d_scene",
    "load_points_txt",
    "load_room",
    "load_room_annotations",
    "load_room_file",
    "official_room_names",
    "pooled_confusion",
    "pooled_miou",
    "protocol_split",
    "release_dir",
    "scene_name",
    "write_points_txt",
]
