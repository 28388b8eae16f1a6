"""Host-side (numpy) augmentation and batching of VOC images for semantic segmentation.

Training (DeepLabV3's recipe): random scale in [0.5, 2.0] (bilinear for the image, nearest for
the mask), ImageNet normalisation, random crop of 513 x 513 where an image smaller than the crop
is placed at a random position and padded, random horizontal flip. Padding is 0 in the normalised
image (the ImageNet mean colour before normalisation) and 255 (ignored) in the mask, so padding
never looks like a class. Every random draw comes from the sample's own `np.random.Generator`
(seeded by (seed, epoch, index), leakjax/train/input_pipeline.py), never the global one.

Evaluation: whole images at their own size, normalised, padded at the bottom and right to a static
capacity (H_cap, W_cap) with a bool pixel mask; the ground truth is never resized. The batch
follows the image contract of leakjax/train/batch.py: image float32 [B, H, W, 3], labels int32
[B, H, W] (255 outside the image), pixel_mask bool [B, H, W].

Resizing conventions (pixel centres at half-integers, as TF2's `tf.image.resize` and torch's
`align_corners=False`): output pixel i samples the input at (i + 0.5) * in / out - 0.5. Bilinear
clamps that coordinate to [0, in - 1] and does not anti-alias when shrinking; nearest takes input
pixel floor((i + 0.5) * in / out), so a mask only ever holds values of the input mask.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

from datasets.pascal_voc.labels import IGNORE_INDEX
from leakjax.train.batch import image_spec, pad_batch

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # RGB, fraction of full scale
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """The training augmentation: crop side in pixels, scale range, flip probability."""

    crop_size: int = 513
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip_probability: float = 0.5

    def __post_init__(self):
        low, high = self.scale_range
        if self.crop_size < 1 or not 0 < low <= high or not 0 <= self.flip_probability <= 1:
            raise ValueError(f"AugmentConfig: invalid settings {self}")


def normalize(image: np.ndarray) -> np.ndarray:
    """RGB [H, W, 3] in 0..255 (uint8 or float) -> float32 (image / 255 - mean) / std."""
    return ((np.asarray(image, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(
        np.float32
    )


def denormalize(image: np.ndarray) -> np.ndarray:
    """Inverse of `normalize`: float32 [H, W, 3] in 0..255 (not rounded, not clipped)."""
    return ((np.asarray(image, np.float32) * IMAGENET_STD + IMAGENET_MEAN) * 255.0).astype(
        np.float32
    )


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(round(H * scale), round(W * scale)), at least 1 pixel each."""
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of [H, W, C] to float32 [height, width, C] (module docstring)."""
    image = np.asarray(image, np.float32)
    low_y, high_y, weight_y = _linear_taps(image.shape[0], height)
    low_x, high_x, weight_x = _linear_taps(image.shape[1], width)
    weight_y, weight_x = weight_y[:, None, None], weight_x[None, :, None]
    rows = image[low_y] * (1.0 - weight_y) + image[high_y] * weight_y  # [height, W, C]
    return rows[:, low_x] * (1.0 - weight_x) + rows[:, high_x] * weight_x


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of [H, W, ...] to [height, width, ...], same dtype."""
    rows = _nearest_taps(mask.shape[0], height)
    cols = _nearest_taps(mask.shape[1], width)
    return mask[rows[:, None], cols[None, :]]


def crop_or_pad(
    array: np.ndarray, offset_y: int, offset_x: int, height: int, width: int, fill
) -> np.ndarray:
    """Window [height, width, ...] of `array` [H, W, ...] whose pixel (i, j) is array[i + offset_y,
    j + offset_x], or `fill` where that lies outside the array.

    A positive offset crops (the window starts inside the array), a negative one pads (the array
    starts inside the window).
    """
    out = np.full((height, width, *array.shape[2:]), fill, array.dtype)
    src_y0, src_x0 = max(offset_y, 0), max(offset_x, 0)
    src_y1 = min(offset_y + height, array.shape[0])
    src_x1 = min(offset_x + width, array.shape[1])
    if src_y1 > src_y0 and src_x1 > src_x0:
        out[src_y0 - offset_y : src_y1 - offset_y, src_x0 - offset_x : src_x1 - offset_x] = array[
            src_y0:src_y1, src_x0:src_x1
        ]
    return out


def random_offset(size: int, crop: int, rng: np.random.Generator) -> int:
    """Uniform offset for `crop_or_pad` along one axis: 0..size-crop when cropping, crop-size..0
    (a random placement of the image in the window) when padding."""
    return int(rng.integers(min(0, size - crop), max(0, size - crop), endpoint=True))


def augment(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig = AugmentConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """One training example: (RGB uint8 [H, W, 3], ids uint8 [H, W]) -> (float32 [S, S, 3]
    normalised, ids uint8 [S, S]) with S = crop_size (module docstring).

    Draws, in order: the scale, the flip, the vertical and the horizontal offset.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"augment: image {image.shape} and mask {mask.shape} differ in size")
    low, high = config.scale_range
    scale = float(rng.uniform(low, high))
    flip = bool(rng.random() < config.flip_probability)
    height, width = scaled_size(*mask.shape, scale)
    image = normalize(resize_bilinear(image, height, width))
    mask = resize_nearest(mask, height, width)
    if flip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    size = config.crop_size
    offset_y = random_offset(height, size, rng)
    offset_x = random_offset(width, size, rng)
    image = crop_or_pad(image, offset_y, offset_x, size, size, fill=0.0)
    mask = crop_or_pad(mask, offset_y, offset_x, size, size, fill=IGNORE_INDEX)
    return image, mask


def train_sample(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig = AugmentConfig(),
) -> dict[str, np.ndarray]:
    """`augment` as a sample of the image contract: image float32 [S, S, 3], labels int32 [S, S]."""
    image, mask = augment(image, mask, rng, config)
    return {"image": image, "labels": mask.astype(np.int32)}


def eval_sample(image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """A whole image at its own size: image float32 [H, W, 3] normalised, labels int32 [H, W]."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"eval_sample: image {image.shape} and mask {mask.shape} differ in size")
    return {"image": normalize(image), "labels": np.asarray(mask, np.int32)}


def pad_eval_batch(
    samples: Sequence[dict[str, np.ndarray]],
    capacity: tuple[int, int],
    batch_size: int | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Stack `eval_sample`s padded to `capacity` = (H_cap, W_cap), at the top-left corner.

    Returns image float32 [B, H_cap, W_cap, 3] (0 = mean colour outside the image), labels int32
    [B, H_cap, W_cap] (255 outside), pixel_mask bool [B, H_cap, W_cap] (True on the image's
    pixels). With `batch_size`, B = batch_size and the missing samples are empty (all-False
    mask). An image larger than the capacity is a ValueError naming it (`names`, else its index).
    """
    capacity = (int(capacity[0]), int(capacity[1]))
    batch_size = len(samples) if batch_size is None else batch_size
    if len(samples) > batch_size:
        raise ValueError(f"pad_eval_batch: {len(samples)} samples for a batch of {batch_size}")
    for index, sample in enumerate(samples):
        size = np.shape(sample["labels"])
        if size[0] > capacity[0] or size[1] > capacity[1]:
            name = names[index] if names is not None else f"sample {index}"
            raise ValueError(
                f"pad_eval_batch: {name} of {size[0]} x {size[1]} pixels exceeds the capacity "
                f"{capacity[0]} x {capacity[1]} (images are never resized or cropped)"
            )
    spec = image_spec()
    padded = list(samples) + [spec.empty_sample()] * (batch_size - len(samples))
    return pad_batch(padded, capacity, spec, label_fill=IGNORE_INDEX)


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper input index and upper weight, each [out_size], of bilinear resizing."""
    source = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    source = np.clip(source, 0.0, in_size - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (source - low).astype(np.float32)


def _nearest_taps(in_size: int, out_size: int) -> np.ndarray:
    """Input index [out_size] of nearest-neighbour resizing."""
    source = np.floor((np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size))
    return np.minimum(source.astype(np.int64), in_size - 1)
