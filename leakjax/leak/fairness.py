"""Attentive fair weighting: a Jain's-index loss on per-class confidence within each macro class.

docs/leak_method.md, section 3. Labels are dense micro class ids 0..m-1 and `valid` says which
entries
count. For each micro class c present in the batch:

    ybar_c = mean over valid points with ground truth c of p_i[c]   (prob. of the right class)

(the c-th entry of the mean softmax vector pbar_c, computed without forming pbar_c). For each macro
class C with at least one present member:

    J(C) = (sum_{c in C} ybar_c)^2 / (|C_present| * sum_{c in C} ybar_c^2)    in (0, 1]
    L_F  = mean over those macro classes of (1 - J(C))

J(C) = 1 when every ybar_c of C is 0 (an equal, if empty, allocation). The loss is differentiable
with respect to the probabilities (and hence the logits); `detach=True` reproduces the authors'
unfinished snapshot, in which the loss carried no gradient (for ablation only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from leakjax.sharding import per_device_samples


def fairness_loss(
    probs: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    micro_to_macro: jax.Array | np.ndarray,
    detach: bool = False,
    num_macro: int | None = None,
) -> jax.Array:
    """L_F = mean over macro classes with a present member of (1 - Jain's index).

    Args:
      probs: [N, m] or [..., m] softmax probabilities of the micro classes.
      labels: [N] or [...] micro class ids in [0, m) where valid.
      valid: [N] or [...] bool.
      micro_to_macro: int [m] macro id of every micro class.
      detach: stop the gradient (the authors' snapshot; an ablation, not the method).
      num_macro: M; needed only when `micro_to_macro` is a traced array.

    Returns:
      scalar in [0, 1) (float32, or float64 for float64 probs); 0 when nothing is valid.
    """
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
    ybar = sums / jnp.maximum(counts, 1.0)
    present = counts > 0
    ybar = jnp.where(present, ybar, 0.0)
    total = jax.ops.segment_sum(ybar, mapping, num_macro)
    total_sq = jax.ops.segment_sum(ybar**2, mapping, num_macro)
    members = jax.ops.segment_sum(present.astype(dtype), mapping, num_macro)
    active = members > 0
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
