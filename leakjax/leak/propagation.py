"""Labels propagated to the resolution of the features LEAK aligns (docs/leak_method.md, section 2).

Labels follow the encoder's own subsampling:
  * voxel models: majority vote of the non-ignored point labels inside each down-sampled voxel,
    `voxel_majority_label` of the sparse core (leakjax.sparse, re-exported here; it is not
    re-implemented);
  * point models that subsample by index (RandLA-Net's random sampling): the labels of the kept
    points, `kept_point_labels`;
  * 2D models: nearest-neighbour down-sampling of the label image, `nearest_downsample_labels`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from leakjax.sparse import voxel_majority_label

__all__ = ["kept_point_labels", "nearest_downsample_labels", "voxel_majority_label"]


def kept_point_labels(
    labels: jax.Array, valid: jax.Array, kept_index: jax.Array, kept_mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Labels of the points kept by an index subsampling.

    Args:
      labels: int [B, P] point labels.
      valid: bool [B, P].
      kept_index: int [B, K] indices into P of the kept points (the same indices the model used).
      kept_mask: optional bool [B, K], False for padded slots of kept_index.

    Returns:
      (labels int32 [B, K], valid bool [B, K]).
    """
    if labels.shape != valid.shape or kept_index.shape[0] != labels.shape[0]:
        raise ValueError(
            f"labels {labels.shape}, valid {valid.shape}, kept_index {kept_index.shape}: "
            "batch shapes differ"
        )
    in_range = (kept_index >= 0) & (kept_index < labels.shape[1])
    safe = jnp.clip(kept_index, 0, labels.shape[1] - 1)
    kept_labels = jnp.take_along_axis(labels, safe, axis=1).astype(jnp.int32)
    kept_valid = jnp.take_along_axis(valid, safe, axis=1) & in_range
    if kept_mask is not None:
        kept_valid = kept_valid & kept_mask
    return kept_labels, kept_valid


def nearest_downsample_labels(
    labels: jax.Array, valid: jax.Array, out_shape: tuple[int, int]
) -> tuple[jax.Array, jax.Array]:
    """Nearest-neighbour down-sampling of a label image (like `interpolate(mode="nearest")`).

    Output pixel (i, j) takes input pixel (floor(i * H / H'), floor(j * W / W')): for an integer
    stride s that is (s i, s j), the pixel a stride-s convolution is centred on with padding "same"
    and an odd kernel in the top-left convention.

    Args:
      labels: int [B, H, W].
      valid: bool [B, H, W].
      out_shape: (H', W') with H' <= H, W' <= W.

    Returns:
      (labels int32 [B, H', W'], valid bool [B, H', W']).
    """
    height, width = labels.shape[-2:]
    out_height, out_width = out_shape
    if labels.shape != valid.shape or not (0 < out_height <= height and 0 < out_width <= width):
        raise ValueError(
            f"labels {labels.shape}, valid {valid.shape}, out_shape {out_shape}: need equal shapes "
            "and 0 < out_shape <= the input size"
        )
    rows = (jnp.arange(out_height) * height) // out_height
    cols = (jnp.arange(out_width) * width) // out_width
    pick = lambda image: image[..., rows[:, None], cols[None, :]]  # noqa: E731
    return pick(labels).astype(jnp.int32), pick(valid)
