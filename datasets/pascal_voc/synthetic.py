"""A small synthetic stand-in for Pascal VOC 2012, written in the official layout.

Each image (64-96 pixels a side) shows one to three objects on a textured background. An object's
class fixes its look: the shape comes from its a-priori category (vehicles are rectangles, animals
ellipses, indoor objects triangles, people tall ellipses) and its colour is the category's hue
shifted a little per class, so classes of one category look alike. Classes are drawn with falling
frequencies (class k about 1 / sqrt(k) as often), so the set is imbalanced as VOC is. As in VOC's
masks, a 255 (void) band two pixels wide separates every two regions of different classes.

    root = generate(out_dir, seed=0, num_train=24, num_val=8)   # out_dir/VOCdevkit/VOC2012
    image, mask = datasets.pascal_voc.load_example(root, split_ids(root, "train")[0])

Images are JPEGs, masks palette PNGs; `num_aug` > 0 also writes an SBD-style extension (8-bit
`SegmentationClassAug/` masks for train and the extra images, `train_aug.txt` = train + extra).
The output is a function of the arguments only (same seed, same bytes).
"""

from pathlib import Path

import numpy as np

from datasets.pascal_voc.io import PathLike, write_image, write_mask
from datasets.pascal_voc.labels import CATEGORIES, CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from datasets.pascal_voc.layout import SEGMENTATION_CLASS, SEGMENTATION_CLASS_AUG

_SIZE_RANGE = (64, 96)  # pixels, each side
_CATEGORY_SHAPE = {"vehicle": "rectangle", "animal": "ellipse", "indoor": "triangle"}
_CATEGORY_HUE = {"vehicle": (60, 90, 200), "animal": (170, 110, 50), "indoor": (60, 170, 80)}
_PERSON_COLOR = (220, 170, 150)


def class_appearance(class_id: int) -> tuple[str, np.ndarray, float]:
    """(shape name, RGB float32 [3] in 0..255, stripe frequency in radians per pixel) of a class."""
    name = CLASS_NAMES[class_id]
    if name == "person":
        return "tall_ellipse", np.array(_PERSON_COLOR, np.float32), 0.3
    category = next(c for c, names in CATEGORIES.items() if name in names)
    rank = CATEGORIES[category].index(name)
    shift = np.array([(-1) ** rank * 9 * rank, 7 * rank, -5 * rank], np.float32)
    color = np.clip(np.array(_CATEGORY_HUE[category], np.float32) + shift, 0, 255)
    return _CATEGORY_SHAPE[category], color, 0.25 + 0.08 * rank


def void_band(labels: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels whose 3 x 3 neighbourhood holds more than one label of `labels`."""
    padded = np.pad(labels, 1, mode="edge")
    height, width = labels.shape
    band = np.zeros(labels.shape, bool)
    for dy in range(3):
        for dx in range(3):
            band |= padded[dy : dy + height, dx : dx + width] != labels
    return band


def render(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (RGB uint8 [H, W, 3], label ids uint8 [H, W] with 0..20 and the 255 band)."""
    height, width = (int(v) for v in rng.integers(*_SIZE_RANGE, size=2, endpoint=True))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(70, 190, size=3).astype(np.float32)
    angle, frequency = rng.uniform(0, np.pi), rng.uniform(0.05, 0.15)
    wave = np.sin(frequency * (x * np.cos(angle) + y * np.sin(angle)))[..., None]
    image = base * (1.0 + 0.25 * wave) + rng.normal(0, 8, size=(height, width, 3))
    labels = np.zeros((height, width), np.uint8)
    weights = 1.0 / np.sqrt(np.arange(1, NUM_CLASSES))
    for _ in range(int(rng.integers(1, 3, endpoint=True))):
        class_id = int(rng.choice(np.arange(1, NUM_CLASSES), p=weights / weights.sum()))
        shape, color, stripes = class_appearance(class_id)
        center_y, center_x = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        half_h, half_w = rng.uniform(8, height / 3), rng.uniform(8, width / 3)
        if shape == "tall_ellipse":
            half_h, half_w = max(half_h, half_w), min(half_h, half_w) / 2
        inside = _shape_mask(shape, y - center_y, x - center_x, half_h, half_w)
        texture = color * (1.0 + 0.15 * np.sin(stripes * (x + y)))[..., None]
        image[inside] = texture[inside] + rng.normal(0, 6, size=(int(inside.sum()), 3))
        labels[inside] = class_id
    mask = np.where(void_band(labels), IGNORE_INDEX, labels).astype(np.uint8)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


def generate(
    out_dir: PathLike, seed: int = 0, num_train: int = 24, num_val: int = 8, num_aug: int = 0
) -> Path:
    """Write the stand-in under `out_dir/VOCdevkit/VOC2012` and return that directory.

    Ids are `2012_000000`, ... in the order train, val, SBD extras; lists train.txt, val.txt,
    trainval.txt (and train_aug.txt when `num_aug` > 0) in `ImageSets/Segmentation/`.
    """
    if num_train < 1 or num_val < 1 or num_aug < 0:
        raise ValueError(
            f"generate: need num_train, num_val >= 1 and num_aug >= 0, got "
            f"{num_train}, {num_val}, {num_aug}"
        )
    root = Path(out_dir) / "VOCdevkit" / "VOC2012"
    ids = [f"2012_{index:06d}" for index in range(num_train + num_val + num_aug)]
    train, val, extra = (
        ids[:num_train],
        ids[num_train : num_train + num_val],
        ids[num_train + num_val :],
    )
    for index, image_id in enumerate(ids):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index])))
        image, mask = render(rng)
        write_image(root / "JPEGImages" / f"{image_id}.jpg", image)
        if image_id not in extra:
            write_mask(root / SEGMENTATION_CLASS / f"{image_id}.png", mask, palette=True)
        if num_aug and image_id not in val:
            write_mask(root / SEGMENTATION_CLASS_AUG / f"{image_id}.png", mask, palette=False)
    lists = {"train": train, "val": val, "trainval": train + val}
    if num_aug:
        lists["train_aug"] = train + extra
    list_dir = root / "ImageSets" / "Segmentation"
    list_dir.mkdir(parents=True, exist_ok=True)
    for split, split_ids in lists.items():
        (list_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in split_ids))
    return root


def _shape_mask(
    shape: str, dy: np.ndarray, dx: np.ndarray, half_h: float, half_w: float
) -> np.ndarray:
    """bool [H, W]: inside a shape centred at dy = dx = 0 with half extents (half_h, half_w)."""
    if shape == "rectangle":
        return (np.abs(dy) <= half_h) & (np.abs(dx) <= half_w)
    if shape == "triangle":  # apex up, base at dy = +half_h
        return (dy <= half_h) & (np.abs(dx) <= half_w * (dy + half_h) / (2 * half_h))
    return (dy / half_h) ** 2 + (dx / half_w) ** 2 <= 1.0
