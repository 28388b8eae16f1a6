"""kNN post-processing of range-image predictions, as released (RangeNet++ `postproc/KNN.py`,
also used by SalsaNext), batched with static shapes.

Every point of the scan gets a label, including points hidden behind a closer one (those read
their own range but the window of the pixel their occluder won). For a point with range r at pixel
(py, px), with window size S (odd), k neighbours, Gaussian sigma and a cutoff:

  1. take the S x S window of the range image around (py, px); outside the image the window is
     zero padded (range 0 and label 0, `F.unfold` padding); empty pixels (range < 0) get range
     +inf; the window centre gets the point's own range r;
  2. distance = |range - r| * (1 - G), with G the S x S Gaussian of `sigma` normalised to sum 1;
  3. keep the k smallest distances (ties: the lowest window position in row-major order wins,
     where `torch.topk` leaves ties unspecified);
  4. if cutoff > 0, neighbours with distance > cutoff vote for an extra "invalid" class;
  5. the label is the most voted class among the classes other than the ignored class 0 and the
     invalid class (ties: the lowest class; no vote at all gives the lowest such class, 1, as
     the release's argmax over zeros does).

The release handles one unbatched scan; here scans are [B, ...] with a point mask.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["KNN_DEFAULTS", "gaussian_window_weights", "knn_postprocess"]

# `post: KNN: params` of lidar-bonnetal `config/arch/darknet53.yaml` and SalsaNext `salsanext.yml`.
KNN_DEFAULTS = {"knn": 5, "search": 5, "sigma": 1.0, "cutoff": 1.0}


def gaussian_window_weights(search: int, sigma: float) -> np.ndarray:
    """The released S x S Gaussian (mean at the centre, variance sigma^2), summing to 1.

    Computed in float64 and rounded to float32 (the release computes it in float32).

    Returns:
      float32 [S, S]; entry (row, col) is the weight of window offset (row - S//2, col - S//2).
    """
    centre = (search - 1) / 2.0
    offsets = np.arange(search, dtype=np.float64) - centre
    squared = offsets[:, None] ** 2 + offsets[None, :] ** 2
    weights = np.exp(-squared / (2.0 * sigma**2)) / (2.0 * math.pi * sigma**2)
    return (weights / weights.sum()).astype(np.float32)


def _check_arguments(knn, search, sigma, cutoff, num_classes, ignore_class):
    if not (isinstance(search, int) and search > 0 and search % 2 == 1):
        raise ValueError(f"search window must be a positive odd int, got {search!r}")
    if not (isinstance(knn, int) and 0 < knn <= search * search):
        raise ValueError(f"knn must be an int in [1, search^2 = {search * search}], got {knn!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    if not math.isfinite(cutoff):
        raise ValueError(f"cutoff must be finite (<= 0 disables it), got {cutoff!r}")
    if ignore_class is not None and not 0 <= ignore_class < num_classes:
        raise ValueError(f"ignore_class {ignore_class} is not a class of {num_classes}")
    if num_classes < (2 if ignore_class is not None else 1):
        raise ValueError(f"num_classes {num_classes} leaves no class to vote for")


def _knn_one_scan(range_image, point_range, label_image, px, py, point_mask, *, knn, search,
                  sigma, cutoff, num_classes, ignore_class):  # fmt: skip
    """`knn_postprocess` for one scan: images [H, W], points [N]."""
    pad = search // 2
    # Zero padding, as F.unfold pads: outside the image the range is 0 (not "empty") and label 0.
    padded_range = jnp.pad(range_image.astype(jnp.float32), pad)
    padded_labels = jnp.pad(label_image.astype(jnp.int32), pad)
    row_offset, col_offset = np.divmod(np.arange(search * search), search)  # row-major window
    rows = jnp.where(point_mask, py, 0)[:, None] + row_offset[None, :]  # [N, S*S] padded coords
    cols = jnp.where(point_mask, px, 0)[:, None] + col_offset[None, :]
    window_range = padded_range[rows, cols]
    window_labels = padded_labels[rows, cols]

    window_range = jnp.where(window_range < 0, jnp.inf, window_range)
    centre = (search * search - 1) // 2
    window_range = window_range.at[:, centre].set(point_range.astype(jnp.float32))
    inverse_weights = jnp.asarray(1.0 - gaussian_window_weights(search, sigma).reshape(-1))
    distances = jnp.abs(window_range - point_range[:, None]) * inverse_weights  # [N, S*S]

    # lax.top_k returns the lower index first among equal values.
    neg_distances, nearest = jax.lax.top_k(-distances, knn)  # [N, k]
    votes = jnp.take_along_axis(window_labels, nearest, axis=1)
    invalid_class = num_classes
    if cutoff > 0:
        votes = jnp.where(-neg_distances > cutoff, invalid_class, votes)
    counts = jnp.sum(jax.nn.one_hot(votes, num_classes + 1, dtype=jnp.int32), axis=1)
    counts = counts[:, :num_classes]  # the invalid class never wins
    if ignore_class is not None:
        # Below every real count, so an all-zero vote still picks the lowest other class.
        counts = counts.at[:, ignore_class].set(-1)
    labels = jnp.argmax(counts, axis=1).astype(jnp.int32)
    return jnp.where(point_mask, labels, -1)


def knn_postprocess(
    range_image: jax.Array,
    point_range: jax.Array,
    label_image: jax.Array,
    px: jax.Array,
    py: jax.Array,
    point_mask: jax.Array,
    *,
    num_classes: int,
    knn: int = KNN_DEFAULTS["knn"],
    search: int = KNN_DEFAULTS["search"],
    sigma: float = KNN_DEFAULTS["sigma"],
    cutoff: float = KNN_DEFAULTS["cutoff"],
    ignore_class: int | None = 0,
) -> jax.Array:
    """Per-point labels from a predicted label image by the released kNN vote (module docstring).

    Args:
      range_image: float [B, H, W] projected range in metres, < 0 where empty
        (`RangeProjection.range`).
      point_range: float [B, N] range of every point in metres (`RangeProjection.point_range`).
      label_image: int [B, H, W] predicted class per pixel (the argmax of the logits), in
        [0, num_classes); empty pixels keep their prediction, as released (it votes only when
        the cutoff is disabled and fewer than k non-empty neighbours are in the window).
      px, py: int [B, N] pixel of every point (`RangeProjection.px`, `.py`).
      point_mask: bool [B, N], False for padded points.
      num_classes: C, the number of classes of label_image (static).
      knn, search, sigma, cutoff: k, window size S (odd), Gaussian sigma in pixels and range
        cutoff in metres (static; released defaults 5, 5, 1.0, 1.0; cutoff <= 0 disables it).
      ignore_class: the class that never wins and whose votes are discarded (0 as released); None
        lets every class win.

    Returns:
      int32 [B, N] label of every point; -1 for padded points.
    """
    _check_arguments(knn, search, sigma, cutoff, num_classes, ignore_class)
    if range_image.ndim != 3 or label_image.shape != range_image.shape:
        raise ValueError(
            f"range_image {range_image.shape} and label_image {label_image.shape} must both be "
            "[B, H, W]"
        )
    point_shape = (range_image.shape[0], point_range.shape[-1])
    for name, array in [("point_range", point_range), ("px", px), ("py", py),
                        ("point_mask", point_mask)]:  # fmt: skip
        if array.shape != point_shape:
            raise ValueError(f"{name} must be [B, N] = {list(point_shape)}, got {array.shape}")
    one_scan = lambda *scan: _knn_one_scan(  # noqa: E731
        *scan, knn=knn, search=search, sigma=float(sigma), cutoff=float(cutoff),
        num_classes=num_classes, ignore_class=ignore_class,
    )  # fmt: skip
    return jax.vmap(one_scan)(
        range_image, point_range.astype(jnp.float32), label_image, px, py, point_mask.astype(bool)
    )
