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

The image primitives (resizing conventions, normalisation, crops) are in leakjax/image_ops.py.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

from datasets.pascal_voc.labels import IGNORE_INDEX
from leakjax.image_ops import (  # noqa: F401 - re-exported: the image primitives live there
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop_or_pad,
    denormalize,
    normalize,
    random_offset,
    resize_bilinear,
    resize_nearest,
    scale_flip_crop,
    scaled_size,
)
from leakjax.train.batch import image_spec, pad_batch


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
    return scale_flip_crop(
        image,
        mask,
        rng,
        config.crop_size,
        config.scale_range,
        config.flip_probability,
        label_fill=IGNORE_INDEX,
        normalize_image=True,
    )


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
