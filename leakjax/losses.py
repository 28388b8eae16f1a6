"""Backbone losses L0: class-weighted cross-entropy and the Lovasz-softmax loss, both masked.

Labels are dense class ids 0..C-1 and a boolean `valid` mask says which entries count (padding and
ignored points are not valid); an optional `ignore_index` additionally drops one class id, so a
SemanticKITTI label tensor with 0 = unlabelled can be passed as is.

Class weightings (`class_weights`), from per-class frequencies f_c = count_c / sum(counts):
  none        w_c = 1
  inverse     w_c = 1 / f_c                (inverse class frequency, RangeNet++ / Cylinder3D option)
  salsanext   w_c = 1 / sqrt(f_c)          (SalsaNext: square root of the inverse frequency)
  randla      w_c = 1 / (f_c + 0.02)       (RandLA-Net's SemanticKITTI weights)
  rangenet    w_c = 1 / (f_c + 0.001)      (RangeNet++ and SalsaNext as released, `epsilon_w`)
Classes with zero frequency (never seen) get weight 0 under `inverse` and `salsanext` instead of
infinity (they have no points to weight anyway); the ignored class always gets weight 0.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from leakjax.sharding import unsharded

WEIGHTINGS = ("none", "inverse", "salsanext", "randla", "rangenet")
RANDLA_EPSILON = 0.02
RANGENET_EPSILON = 0.001


def class_weights(
    class_counts: np.ndarray,
    scheme: str,
    ignore_index: int | None = None,
    normalize: bool = False,
) -> np.ndarray:
    """Per-class cross-entropy weights from class frequencies.

    Args:
      class_counts: [C] non-negative point counts (or frequencies) per class.
      scheme: one of WEIGHTINGS (see the module docstring).
      ignore_index: a class that gets weight 0 and is left out of the frequencies.
      normalize: rescale so that the weights of the non-ignored classes average to 1 (changes
        only the loss scale, not the relative weighting).

    Returns:
      float32 [C] weights.
    """
    counts = np.asarray(class_counts, np.float64)
    if counts.ndim != 1 or np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError(f"class_counts: expected finite non-negative [C], got {counts}")
    if scheme not in WEIGHTINGS:
        raise ValueError(f"scheme: {scheme!r} not in {WEIGHTINGS}")
    keep = np.ones(counts.shape, bool)
    if ignore_index is not None:
        keep[ignore_index] = False
    total = counts[keep].sum()
    if total <= 0 and scheme != "none":
        raise ValueError("class_counts: all (non-ignored) counts are zero")
    freq = np.where(keep, counts / max(total, 1e-300), 0.0)
    seen = freq > 0
    if scheme == "none":
        weights = np.ones_like(freq)
    elif scheme == "inverse":
        weights = np.where(seen, 1.0 / np.where(seen, freq, 1.0), 0.0)
    elif scheme == "salsanext":
        weights = np.where(seen, 1.0 / np.sqrt(np.where(seen, freq, 1.0)), 0.0)
    elif scheme == "randla":
        weights = 1.0 / (freq + RANDLA_EPSILON)
    else:
        weights = 1.0 / (freq + RANGENET_EPSILON)
    weights = np.where(keep, weights, 0.0)
    if normalize:
        weights = weights / weights[keep].mean()
    return weights.astype(np.float32)


def _mask(labels: jax.Array, valid: jax.Array, ignore_index: int | None) -> jax.Array:
    if ignore_index is not None:
        valid = valid & (labels != ignore_index)
    return valid


def cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    weights: jax.Array | np.ndarray | None = None,
    ignore_index: int | None = None,
    reduction: str = "weighted_mean",
) -> jax.Array:
    """Masked, optionally class-weighted softmax cross-entropy (nats).

    `reduction` "weighted_mean" follows PyTorch's `CrossEntropyLoss(weight=w)`:
    sum_i w_{y_i} * nll_i / sum_i w_{y_i} over valid entries; "mean" divides the same sum by the
    number of valid entries instead (RandLA-Net's released `reduce_mean` of weighted losses).
    0 when nothing is valid.

    Args:
      logits: [..., C] float.
      labels: [...] int class ids (anything where not valid).
      valid: [...] bool.
      weights: optional [C] class weights (`class_weights`).
      ignore_index: optional class id that is never counted.
      reduction: "weighted_mean" (default) or "mean" (see above).
    """
    valid = _mask(labels, valid, ignore_index)
    num_classes = logits.shape[-1]
    safe_labels = jnp.where(valid, labels, 0).astype(jnp.int32)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
    if weights is None:
        point_weight = valid.astype(jnp.float32)
    else:
        weights = jnp.asarray(weights, jnp.float32)
        if weights.shape != (num_classes,):
            raise ValueError(f"weights: expected shape ({num_classes},), got {weights.shape}")
        point_weight = jnp.where(valid, weights[safe_labels], 0.0)
    if reduction not in ("weighted_mean", "mean"):
        raise ValueError(f"reduction: {reduction!r} not in ('weighted_mean', 'mean')")
    denom = point_weight.sum() if reduction == "weighted_mean" else valid.sum().astype(jnp.float32)
    return jnp.where(denom > 0, (point_weight * nll).sum() / jnp.maximum(denom, 1e-12), 0.0)


def _sort_keys(errors: jax.Array, foreground: jax.Array) -> jax.Array:
    """uint32 keys whose ascending order is the decreasing order of the errors. [C, N] -> [C, N].

    A non-negative float32's bit pattern orders like its value and fits in 31 bits, so
    `bits << 1 | foreground` keeps both the error and the foreground bit, exactly; `~` flips the
    order. One single-operand integer sort is XLA CPU's direct `std::sort` (the general sort calls
    a compiled comparator per comparison: ~8x slower on the Cylinder3D batch).
    """
    bits = jax.lax.bitcast_convert_type(errors, jnp.uint32)
    return ~((bits << 1) | foreground.astype(jnp.uint32))


def _jaccard_curve(sorted_keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Errors in decreasing order and Delta_J of each prefix of that order. [C, N] -> 2 x [C, N].

    jaccard[k] = 1 - |F minus top k+1| / |F union top k+1| (Berman et al., Alg. 1), with F the
    foreground entries; its increments are the Lovasz extension's gradient along the order.
    """
    decoded = ~sorted_keys
    sorted_foreground = (decoded & 1).astype(jnp.float32)
    sorted_errors = jax.lax.bitcast_convert_type(decoded >> 1, jnp.float32)
    num_foreground = sorted_foreground.sum(axis=-1, keepdims=True)
    intersection = num_foreground - jnp.cumsum(sorted_foreground, axis=-1)
    union = num_foreground + jnp.cumsum(1.0 - sorted_foreground, axis=-1)
    return sorted_errors, 1.0 - intersection / union


@jax.custom_vjp
def _lovasz_per_class(errors: jax.Array, foreground: jax.Array) -> jax.Array:
    """Lovasz extension of Delta_J per class: [C, N] errors >= 0, [C, N] bool -> [C].

    sum_k e_(k) (Delta_J(top k) - Delta_J(top k-1)) over the errors in decreasing order. Equal
    errors leave the value unchanged in any order; the gradient gives each entry of a run of equal
    (error, foreground) keys the mean of the run's increments (the gradient averaged over the
    run's orders), so it does not depend on how the sort breaks ties.
    """
    return _lovasz_forward(errors, foreground)[0]


def _lovasz_forward(errors, foreground):
    keys = _sort_keys(errors, foreground)
    sorted_keys = jax.lax.sort(keys, dimension=-1, is_stable=False)
    sorted_errors, jaccard = _jaccard_curve(sorted_keys)
    increments = jnp.concatenate([jaccard[:, :1], jnp.diff(jaccard, axis=-1)], axis=-1)
    return jnp.sum(sorted_errors * increments, axis=-1), (keys, sorted_keys, jaccard)


def _lovasz_backward(residuals, cotangent):
    keys, sorted_keys, jaccard = residuals
    # the run of keys equal to each entry's: positions [first, end) of the sorted order
    first = jax.vmap(functools.partial(jnp.searchsorted, side="left"))(sorted_keys, keys)
    end = jax.vmap(functools.partial(jnp.searchsorted, side="right"))(sorted_keys, keys)
    prefix = jnp.pad(jaccard, ((0, 0), (1, 0)))  # prefix[k] = Delta_J of the top k entries
    run_increment = jnp.take_along_axis(prefix, end, -1) - jnp.take_along_axis(prefix, first, -1)
    gradient = run_increment / (end - first).astype(jnp.float32)
    return cotangent[:, None] * gradient, None


_lovasz_per_class.defvjp(_lovasz_forward, _lovasz_backward)


def lovasz_softmax(
    probs: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    classes: str = "present",
    ignore_index: int | None = None,
) -> jax.Array:
    """Lovasz-softmax loss (Berman et al., CVPR 2018) over the valid entries.

    For each class c: errors e_i = |[y_i = c] - p_i[c]| over valid entries, sorted decreasingly,
    dotted with the discrete gradient of the Jaccard loss along that order; then the mean over
    classes. Masked entries get error 0 and foreground 0, so they sort after every non-zero error
    and change neither the gradient of the entries before them nor the sum.

    Args:
      probs: [..., C] softmax probabilities.
      labels: [...] int class ids.
      valid: [...] bool.
      classes: "present" (mean over classes present among the valid labels, Berman's default) or
        "all" (mean over all classes except ignore_index).
      ignore_index: optional class id never counted (and never averaged over).
    """
    if classes not in ("present", "all"):
        raise ValueError(f"classes: {classes!r} not in ('present', 'all')")
    valid = _mask(labels, valid, ignore_index).reshape(-1)
    num_classes = probs.shape[-1]
    probs = probs.reshape(-1, num_classes).astype(jnp.float32)
    labels = labels.reshape(-1)
    # one sort over the whole batch: every entry on every device
    probs, labels, valid = unsharded(probs), unsharded(labels), unsharded(valid)
    class_ids = jnp.arange(num_classes)
    foreground = ((labels[None, :] == class_ids[:, None]) & valid[None, :]).astype(jnp.float32)
    errors = jnp.where(valid[None, :], jnp.abs(foreground - probs.T), 0.0)  # [C, N]
    per_class = _lovasz_per_class(errors, foreground > 0)  # [C]
    counted = foreground.sum(axis=-1) > 0 if classes == "present" else jnp.ones(num_classes, bool)
    if ignore_index is not None:
        counted = counted.at[ignore_index].set(False)
    num_counted = counted.sum()
    return jnp.where(
        num_counted > 0, jnp.sum(per_class * counted) / jnp.maximum(num_counted, 1), 0.0
    )
