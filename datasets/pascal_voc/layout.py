"""The `VOCdevkit/VOC2012` directory layout: split lists, file paths, loading one example.

    VOCdevkit/VOC2012/
      JPEGImages/<id>.jpg                        every image (17,125 in the trainval tarball)
      SegmentationClass/<id>.png                 palette PNG masks of the 2,913 segmentation images
      ImageSets/Segmentation/train.txt           1,464 ids, one per line
      ImageSets/Segmentation/val.txt             1,449 ids
      ImageSets/Segmentation/trainval.txt        2,913 ids
      SegmentationClassAug/<id>.png              optional, SBD (see below)
      ImageSets/Segmentation/train_aug.txt       optional, SBD (see below)

SBD ("trainaug"): put the 8-bit label PNGs of the augmented set (DrSleep's
`SegmentationClassAug.zip`) in `VOC2012/SegmentationClassAug/` and the standard 10,582-id list
(VOC train + SBD train and val, minus VOC val) in `VOC2012/ImageSets/Segmentation/train_aug.txt`.
Every SBD image is one of VOC2012's `JPEGImages`, so no images are added. The `train_aug` split
takes its masks from `SegmentationClassAug/`, the other splits from `SegmentationClass/`.

A list line is either an id (`2007_000032`) or DrSleep's pair of paths
(`/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png`), whose image stem is the id.
`root` may be the `VOC2012` directory itself or a directory that holds `VOCdevkit/VOC2012`.
"""

import re
from pathlib import Path

import numpy as np

from datasets.pascal_voc.io import PathLike, load_image, load_mask

SEGMENTATION_CLASS = "SegmentationClass"
SEGMENTATION_CLASS_AUG = "SegmentationClassAug"
SPLITS = ("train", "val", "trainval", "train_aug")
MASK_DIR_OF_SPLIT = {
    "train": SEGMENTATION_CLASS,
    "val": SEGMENTATION_CLASS,
    "trainval": SEGMENTATION_CLASS,
    "train_aug": SEGMENTATION_CLASS_AUG,
}
OFFICIAL_SPLIT_SIZES = {"train": 1464, "val": 1449, "trainval": 2913, "train_aug": 10582}

_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def voc_root(root: PathLike) -> Path:
    """The `VOC2012` directory: `root` itself when it holds `JPEGImages/`, else
    `root/VOCdevkit/VOC2012`; ValueError when neither exists."""
    root = Path(root)
    for candidate in (root, root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise ValueError(
        f"{root}: not a VOC2012 directory (no JPEGImages/ in it nor in VOCdevkit/VOC2012/)"
    )


def image_path(root: PathLike, image_id: str) -> Path:
    """`<VOC2012>/JPEGImages/<id>.jpg`."""
    return voc_root(root) / "JPEGImages" / f"{image_id}.jpg"


def mask_path(root: PathLike, image_id: str, mask_dir: str = SEGMENTATION_CLASS) -> Path:
    """`<VOC2012>/<mask_dir>/<id>.png` (mask_dir `SegmentationClass` or `SegmentationClassAug`)."""
    if mask_dir not in (SEGMENTATION_CLASS, SEGMENTATION_CLASS_AUG):
        raise ValueError(
            f"mask_dir {mask_dir!r} is not {SEGMENTATION_CLASS!r} or {SEGMENTATION_CLASS_AUG!r}"
        )
    return voc_root(root) / mask_dir / f"{image_id}.png"


def split_list_path(root: PathLike, split: str) -> Path:
    """`<VOC2012>/ImageSets/Segmentation/<split>.txt`; ValueError for an unknown split."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    return voc_root(root) / "ImageSets" / "Segmentation" / f"{split}.txt"


def read_id_list(path: PathLike) -> list[str]:
    """The ids of a list file, in file order (module docstring for the line formats).

    Blank lines are skipped; a malformed line, a repeated id or an empty list is a ValueError
    naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: split list does not exist")
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) == 1:
            image_id = tokens[0]
        elif len(tokens) == 2 and tokens[0].endswith(".jpg"):
            image_id = Path(tokens[0]).stem
        else:
            raise ValueError(f"{path}:{line_number}: expected an image id, got {line!r}")
        if not _ID_PATTERN.fullmatch(image_id):
            raise ValueError(f"{path}:{line_number}: {image_id!r} is not an image id")
        if image_id in first_line:
            raise ValueError(
                f"{path}:{line_number}: id {image_id} repeated (first on line "
                f"{first_line[image_id]})"
            )
        first_line[image_id] = line_number
        ids.append(image_id)
    if not ids:
        raise ValueError(f"{path}: split list has no ids")
    return ids


def split_ids(root: PathLike, split: str) -> list[str]:
    """The image ids of `split` ("train", "val", "trainval", "train_aug"), in list order.

    Every id must have its image in `JPEGImages/` and its mask in the split's mask directory
    (`MASK_DIR_OF_SPLIT`); otherwise a ValueError names the list, the count and the first
    missing files. Nothing is dropped.
    """
    list_path = split_list_path(root, split)
    ids = read_id_list(list_path)
    base, mask_dir = voc_root(root), MASK_DIR_OF_SPLIT[split]
    if not (base / mask_dir).is_dir():
        raise ValueError(
            f"{base / mask_dir}: missing mask directory for split {split!r} (listed in {list_path})"
        )
    files = {
        "image": [base / "JPEGImages" / f"{image_id}.jpg" for image_id in ids],
        "mask": [base / mask_dir / f"{image_id}.png" for image_id in ids],
    }
    for kind, paths in files.items():
        missing = [path for path in paths if not path.is_file()]
        if missing:
            shown = ", ".join(str(path) for path in missing[:3])
            raise ValueError(
                f"{list_path}: {len(missing)} of {len(ids)} ids have no {kind} file ({shown}"
                f"{', ...' if len(missing) > 3 else ''})"
            )
    return ids


def load_example(
    root: PathLike, image_id: str, mask_dir: str = SEGMENTATION_CLASS
) -> tuple[np.ndarray, np.ndarray]:
    """Load one image and its mask: (RGB uint8 [H, W, 3], label ids uint8 [H, W]).

    Mask values are 0..20 (0 = background) and 255 (void, ignored). A missing or unreadable file,
    a value outside those, or an image and mask of different sizes is a ValueError naming the
    file. `mask_dir` is `SegmentationClass` (official) or `SegmentationClassAug` (SBD).
    """
    image_file = image_path(root, image_id)
    mask_file = mask_path(root, image_id, mask_dir)
    if not mask_file.is_file():
        raise ValueError(f"{mask_file}: mask file does not exist for image {image_file}")
    image = load_image(image_file)
    mask = load_mask(mask_file)
    if image.shape[:2] != mask.shape:
        raise ValueError(
            f"{mask_file}: mask size {mask.shape} (H, W) differs from image size "
            f"{image.shape[:2]} of {image_file}"
        )
    return image, mask
