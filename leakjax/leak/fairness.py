"""Attentive fair weighting: Jain's index of per-class confidence within each macro class.

docs/leak_method.md, section 3. Labels are dense micro class ids 0..m-1 and `valid` says which
entries count. For each micro class c present in the batch:

    ybar_c = mean over valid points with ground truth c of p_i[c]   (prob. of the right class)

(the c-th entry of the mean softmax vector pbar_c, computed without forming pbar_c). For each macro
class C, with P(C) its members present in the batch:

    J(C) = (sum_{c in P(C)} ybar_c)^2 / (|P(C)| * sum_{c in P(C)} ybar_c^2)    in (0, 1]

Two ways to use it (LeakConfig.fairness_mode):

* "jain_loss" (the paper's equations, `fairness_loss`): L_F = mean over the counted macro classes
  of (1 - J(C)). A macro class with a single present member has J = 1 by construction, so counting
  it only dilutes lambda_F by a factor that changes from batch to batch: `singletons="skip"`
  (default) counts the macro classes with |P(C)| >= 2 only; `singletons="count"` (the earlier code)
  counts every macro class with a present member. J(C) = 1 when every ybar_c of C is 0 (an equal,
  if empty, allocation). The loss is differentiable with respect to the probabilities (and hence
  the logits); `detach=True` reproduces the authors' unfinished snapshot, in which the loss carried
  no gradient (for ablation only).

* "fair_weighted_ce" (`fair_class_weights`; our interpretation of the paper's prose, "an attentive
  per-class weighting scheme", "a balanced per-class weighting", not of its equations): the
  within-macro fairness turned into cross-entropy weights, recomputed at every training step from
  the batch and treated as constants (stop-gradient):

      ybar_C = (1 / |P(C)|) sum_{c in P(C)} ybar_c                (the macro class's mean)
      r_c    = max(ybar_C, floor) / max(ybar_c, floor)             for every present class c
      w_c    = r_c * |P| / sum_{c' in P} r_c'                      (mean 1 over present classes P)

  A class less confident than its macro class's mean gets w_c > 1, a more confident one w_c < 1;
  w = 1 everywhere exactly when every J(C) = 1 (and a singleton macro class has r_c = 1). The
  implied loss (leakjax.leak.objective) is the weighted cross-entropy
  sum_i w_{y_i} nll_i / sum_i w_{y_i} over the valid points.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from leakjax.sharding import per_device_samples

SINGLETONS = ("skip", "count")
WEIGHT_FLOOR = 1e-6  # ybar below this is taken as this: r_c stays finite when p -> 0


def _macro_statistics(probs, labels, valid, micro_to_macro, num_macro):
    """Per micro class: present [m] and ybar [m]; per macro class: the number of present members,
    the sum and the sum of squares of their ybar [M]; the mapping as int32 [m]."""
    num_micro = probs.shape[-1]
    if probs.shape[:-1] != labels.shape or labels.shape != valid.shape:
        raise ValueError(
            f"probs {probs.shape}, labels {labels.shape} and valid {valid.shape} must share their "
            "leading dims"
        )
    if num_macro is None:
        num_macro = int(np.max(np.asarray(micro_to_macro))) + 1
    mapping = jnp.asarray(micro_to_macro, jnp.int32)
    if mapping.shape != (num_micro,):
        raise ValueError(f"micro_to_macro: expected shape ({num_micro},), got {mapping.shape}")
    dtype = jnp.promote_types(probs.dtype, jnp.float32)  # at least float32 (bf16 in: f32 out)
    probs = probs.reshape(-1, num_micro).astype(dtype)
    labels = labels.reshape(-1).astype(jnp.int32)
    valid = valid.reshape(-1).astype(bool) & (labels >= 0) & (labels < num_micro)

    def local(batch, _):
        """Per-class counts and sums of p_i[y_i] [m] of these entries."""
        probs, labels, valid = batch
        safe = jnp.where(valid, labels, 0)
        right_prob = jnp.take_along_axis(probs, safe[:, None], axis=-1)[:, 0]  # p_i[y_i], [N]
        counts = jax.ops.segment_sum(valid.astype(dtype), safe, num_micro)
        return counts, jax.ops.segment_sum(jnp.where(valid, right_prob, 0.0), safe, num_micro)

    # per device, then added over devices, when the batch is sharded on Explicit axes
    counts, sums = per_device_samples(local, (probs, labels, valid), summed=True)
    present = counts > 0
    ybar = jnp.where(present, sums / jnp.maximum(counts, 1.0), 0.0)
    total = jax.ops.segment_sum(ybar, mapping, num_macro)
    total_sq = jax.ops.segment_sum(ybar**2, mapping, num_macro)
    members = jax.ops.segment_sum(present.astype(dtype), mapping, num_macro)
    return present, ybar, members, total, total_sq, mapping


def fairness_loss(
    probs: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    micro_to_macro: jax.Array | np.ndarray,
    detach: bool = False,
    num_macro: int | None = None,
    singletons: str = "skip",
) -> jax.Array:
    """L_F = mean over the counted macro classes of (1 - Jain's index) (module docstring).

    Args:
      probs: [N, m] or [..., m] softmax probabilities of the micro classes.
      labels: [N] or [...] micro class ids in [0, m) where valid.
      valid: [N] or [...] bool.
      micro_to_macro: int [m] macro id of every micro class.
      detach: stop the gradient (the authors' snapshot; an ablation, not the method).
      num_macro: M; needed only when `micro_to_macro` is a traced array.
      singletons: "skip" (macro classes with fewer than two present members do not count) or
        "count" (every macro class with a present member counts, with J = 1 for a singleton).

    Returns:
      scalar in [0, 1) (float32, or float64 for float64 probs); 0 when no macro class counts.
    """
    if singletons not in SINGLETONS:
        raise ValueError(f"fairness singletons {singletons!r} not in {SINGLETONS}")
    _, _, members, total, total_sq, _ = _macro_statistics(
        probs, labels, valid, micro_to_macro, num_macro
    )
    active = members >= (2 if singletons == "skip" else 1)
    defined = active & (total_sq > 0)
    # Double where: keep the 0/0 branch out of the gradient.
    jain = jnp.where(
        defined, total**2 / (jnp.maximum(members, 1.0) * jnp.where(defined, total_sq, 1.0)), 1.0
    )
    num_active = active.sum()
    loss = jnp.where(
        num_active > 0,
        jnp.sum(jnp.where(active, 1.0 - jain, 0.0)) / jnp.maximum(num_active, 1),
        0.0,
    )
    return jax.lax.stop_gradient(loss) if detach else loss


def fair_class_weights(
    probs: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    micro_to_macro: jax.Array | np.ndarray,
    num_macro: int | None = None,
    floor: float = WEIGHT_FLOOR,
) -> jax.Array:
    """The "fair_weighted_ce" class weights w_c (module docstring), stop-gradient.

    Args: as `fairness_loss`; floor: the smallest ybar used in r_c.

    Returns:
      [m] weights (float32, or float64 for float64 probs): mean 1 over the classes present in the
      batch, 0 for absent classes (they have no point to weigh); all 0 when nothing is valid.
    """
    present, ybar, members, total, _, mapping = _macro_statistics(
        probs, labels, valid, micro_to_macro, num_macro
    )
    macro_mean = total / jnp.maximum(members, 1.0)  # [M]
    ratio = jnp.maximum(macro_mean[mapping], floor) / jnp.maximum(ybar, floor)
    ratio = jnp.where(present, ratio, 0.0)  # [m]
    ratio_sum = ratio.sum()
    weights = jnp.where(
        ratio_sum > 0, ratio * present.sum() / jnp.where(ratio_sum > 0, ratio_sum, 1.0), 0.0
    )
    return jax.lax.stop_gradient(weights)
