"""Images derived from a spherical projection: normalised network input, label image, and the way
back from an image to the points.

As released by lidar-bonnetal (`train/tasks/semantic/dataset/kitti/parser.py`) and SalsaNext:

  * input: the 5 channels [range, x, y, z, remission], each normalised with the sensor mean and
    std of the arch config, then multiplied by the projection mask (empty pixels are 0);
  * labels: the label of the point that won each pixel, times the mask, so empty pixels (and the
    pixel of point 0, see `RangeProjection.mask`) get the ignore label 0;
  * back to points: point n reads pixel (py[n], px[n]) (`proj_argmax[p_y, p_x]` in `user.py`),
    so a point hidden behind a closer one reads the pixel its occluder won.

Channels are last ([H, W, 5]), the JAX convolution layout, where the release stacks them first.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from leakjax.range_image.projection import RangeProjection

__all__ = [
    "HDL64_IMG_MEANS",
    "HDL64_IMG_STDS",
    "INPUT_CHANNELS",
    "image_to_points",
    "normalized_input",
    "project_labels",
]

INPUT_CHANNELS = ("range", "x", "y", "z", "remission")
# `img_means` / `img_stds` of the HDL-64E sensor in lidar-bonnetal `config/arch/darknet53.yaml`
# (identical in `darknet21.yaml` and SalsaNext `salsanext.yml`); order as INPUT_CHANNELS,
# range and x, y, z in metres.
HDL64_IMG_MEANS = (12.12, 10.88, 0.23, -1.04, 0.21)
HDL64_IMG_STDS = (12.32, 11.47, 6.91, 0.86, 0.16)


def normalized_input(
    projection: RangeProjection,
    means: tuple[float, ...] = HDL64_IMG_MEANS,
    stds: tuple[float, ...] = HDL64_IMG_STDS,
) -> jax.Array:
    """The released 5-channel network input: (channel - mean) / std, zero where not in the mask.

    Args:
      projection: a RangeProjection with images [..., H, W] (any leading batch dims).
      means, stds: 5 values each, ordered as INPUT_CHANNELS.

    Returns:
      float32 [..., H, W, 5].
    """
    if len(means) != len(INPUT_CHANNELS) or len(stds) != len(INPUT_CHANNELS):
        raise ValueError(
            f"means and stds need {len(INPUT_CHANNELS)} values {INPUT_CHANNELS}, "
            f"got {len(means)} and {len(stds)}"
        )
    if any(std <= 0 for std in stds):
        raise ValueError(f"stds must be positive, got {stds}")
    channels = jnp.concatenate(
        [projection.range[..., None], projection.xyz, projection.remission[..., None]], axis=-1
    ).astype(jnp.float32)
    normalized = (channels - jnp.asarray(means, jnp.float32)) / jnp.asarray(stds, jnp.float32)
    return normalized * projection.mask[..., None].astype(jnp.float32)


def project_labels(
    point_labels: jax.Array, projection: RangeProjection, ignore_label: int = 0
) -> jax.Array:
    """Label image: the label of the point that won each pixel, `ignore_label` outside the mask.

    Args:
      point_labels: int [..., N] per-point labels (already in the learning label space).
      projection: the RangeProjection of the same points ([..., H, W] images).
      ignore_label: label of pixels outside `projection.mask` (0 as released).

    Returns:
      int32 [..., H, W].
    """
    batch_shape = projection.point_index.shape[:-2]
    if point_labels.shape[:-1] != batch_shape or point_labels.shape[-1] != projection.px.shape[-1]:
        raise ValueError(
            f"point_labels {point_labels.shape} do not match the projection's points "
            f"{projection.px.shape}"
        )
    height, width = projection.point_index.shape[-2:]
    flat_index = projection.point_index.reshape(batch_shape + (height * width,))
    labels = jnp.take_along_axis(point_labels, jnp.maximum(flat_index, 0), axis=-1)
    labels = labels.reshape(batch_shape + (height, width)).astype(jnp.int32)
    return jnp.where(projection.mask, labels, jnp.int32(ignore_label))


def image_to_points(
    image: jax.Array, px: jax.Array, py: jax.Array, fill_value: float | int = 0
) -> jax.Array:
    """Per-point values read from an image at each point's pixel (the released unprojection).

    Args:
      image: [..., H, W, *C] any dtype, e.g. logits [H, W, K] or an argmax label image [H, W].
      px, py: int [..., N] column in [0, W-1] and row in [0, H-1] of every point, as given by
        `spherical_projection`; -1 marks a padded point.
      fill_value: value given to padded points.

    Returns:
      [..., N, *C] with image's dtype.
    """
    if px.shape != py.shape:
        raise ValueError(f"px {px.shape} and py {py.shape} differ")
    batch_shape = px.shape[:-1]
    if image.shape[: len(batch_shape)] != batch_shape or image.ndim < len(batch_shape) + 2:
        raise ValueError(f"image {image.shape} does not match px, py {px.shape} + [H, W, ...]")
    height, width = image.shape[len(batch_shape) : len(batch_shape) + 2]
    channel_shape = image.shape[len(batch_shape) + 2 :]
    padded = (px < 0) | (py < 0)
    flat_pixel = jnp.where(padded, 0, py * width + px)
    flat_image = image.reshape(batch_shape + (height * width,) + channel_shape)
    index = flat_pixel.reshape(flat_pixel.shape + (1,) * len(channel_shape))
    values = jnp.take_along_axis(flat_image, index, axis=len(batch_shape))
    padded = padded.reshape(padded.shape + (1,) * len(channel_shape))
    return jnp.where(padded, jnp.asarray(fill_value, image.dtype), values)
