"""Image primitives on the host (numpy): ImageNet normalisation, resizing, crops, and the usual
segmentation training augmentation (random scale, flip, crop with padding).

Resizing conventions (pixel centres at half-integers, as TF2's `tf.image.resize` and torch's
`align_corners=False`): output pixel i samples the input at (i + 0.5) * in / out - 0.5. Bilinear
clamps that coordinate to [0, in - 1] and does not anti-alias when shrinking; nearest takes input
pixel floor((i + 0.5) * in / out), so a mask only ever holds values of the input mask. Used by
datasets/pascal_voc/transforms.py and the "deeplab_augment" transform (leakjax/transforms.py).
"""

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # RGB, fraction of full scale
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


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


def scale_flip_crop(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    crop_size: int,
    scale_range: tuple[float, float],
    flip_probability: float,
    label_fill: int,
    normalize_image: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Random scale (bilinear image, nearest labels), optional ImageNet normalisation, horizontal
    flip, random crop_size x crop_size window with padding (image 0 = the mean colour once
    normalised, labels `label_fill`). Draws, in order: scale, flip, vertical and horizontal offset.

    image [H, W, 3] (uint8 0..255 with normalize_image, else already normalised float), labels
    [H, W] -> (float32 [S, S, 3], labels [S, S] of the input dtype).
    """
    if image.shape[:2] != labels.shape:
        raise ValueError(f"augment: image {image.shape} and labels {labels.shape} differ in size")
    low, high = scale_range
    scale = float(rng.uniform(low, high))
    flip = bool(rng.random() < flip_probability)
    height, width = scaled_size(*labels.shape, scale)
    image = resize_bilinear(image, height, width)
    if normalize_image:
        image = normalize(image)
    labels = resize_nearest(labels, height, width)
    if flip:
        image, labels = image[:, ::-1], labels[:, ::-1]
    offset_y = random_offset(height, crop_size, rng)
    offset_x = random_offset(width, crop_size, rng)
    image = crop_or_pad(image, offset_y, offset_x, crop_size, crop_size, fill=0.0)
    labels = crop_or_pad(labels, offset_y, offset_x, crop_size, crop_size, fill=label_fill)
    return image, labels


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
