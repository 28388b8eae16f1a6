"""Pascal VOC 2012 segmentation: reader of the official layout (+ SBD), label space, transforms.

`load_example(root, image_id)` -> (RGB uint8 [H, W, 3], label ids uint8 [H, W]); `split_ids(root,
split)` lists "train", "val", "trainval" and, with SBD in place, "train_aug" (layout.py says where
its files go). `LABEL_SPACE`: 21 classes (0 = background, scored), 255 ignored. Host-side numpy
augmentation and evaluation padding live in `transforms`; `synthetic.generate` writes a small
stand-in in the same layout. The TFDS builder lives in `datasets.pascal_voc.tfds_builder` and is
imported from there, so that reading files never imports tensorflow_datasets.
"""

from datasets.pascal_voc.io import (
    check_label_values,
    image_size,
    load_image,
    load_mask,
    write_image,
    write_mask,
)
from datasets.pascal_voc.labels import (
    CATEGORIES,
    CLASS_NAMES,
    COLORS,
    IGNORE_INDEX,
    LABEL_SPACE,
    NUM_CLASSES,
    PALETTE,
    colorize,
    voc_palette,
)
from datasets.pascal_voc.layout import (
    MASK_DIR_OF_SPLIT,
    OFFICIAL_SPLIT_SIZES,
    SEGMENTATION_CLASS,
    SEGMENTATION_CLASS_AUG,
    SPLITS,
    image_path,
    load_example,
    mask_path,
    read_id_list,
    split_ids,
    split_list_path,
    voc_root,
)

__all__ = [
    "CATEGORIES",
    "CLASS_NAMES",
    "COLORS",
    "IGNORE_INDEX",
    "LABEL_SPACE",
    "MASK_DIR_OF_SPLIT",
    "NUM_CLASSES",
    "OFFICIAL_SPLIT_SIZES",
    "PALETTE",
    "SEGMENTATION_CLASS",
    "SEGMENTATION_CLASS_AUG",
    "SPLITS",
    "check_label_values",
    "colorize",
    "image_path",
    "image_size",
    "load_example",
    "load_image",
    "load_mask",
    "mask_path",
    "read_id_list",
    "split_ids",
    "split_list_path",
    "voc_palette",
    "voc_root",
    "write_image",
    "write_mask",
]
