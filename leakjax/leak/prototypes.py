"""Class prototypes: cumulative running means of encoder features and the alignment loss.

docs/leak_method.md, section 2. Labels are dense class ids 0..m-1 and a boolean `valid` mask says
which features count (padding, ignored points and features without a propagated label are not
valid).
Valid labels must lie in [0, m): inside jit they cannot be reported, and an out-of-range label is
counted nowhere (`PrototypeBank` returns a `num_out_of_range` count so the trainer can raise).

Update (pure, from GLOBAL sums and counts: under jit with the batch sharded over a `data` mesh the
plain sums below are all-reduced by XLA, so every device computes the same state, independent of
padding and device count):

    n_c = sum of valid features of class c,   s_c = their sum
    Gamma_c <- Gamma_c + (s_c - n_c Gamma_c) / (k_c + n_c)     ( = (k_c Gamma_c + s_c)/(k_c + n_c) )
    k_c     <- k_c + n_c                                        (unchanged where n_c = 0)

The incremental form is used because it stays accurate when k_c is huge. Counts are float32 (exact
up to 2**24 features per class, then rounding only perturbs a batch's weight by ~1e-7 relative);
int32 would overflow over a long SemanticKITTI training (~1e10 features per class) and int64 needs
jax_enable_x64.

Alignment loss, distance "l1" (the paper's Eq. (2); the normaliser is lost in the text version,
so it is a switch):
    d(phi, c)  = ||phi - Gamma_c||_1 / D         normalization "per_channel" (default)
               = ||phi - Gamma_c||_1             normalization "sum" (the earlier code)
    L = mean over classes c present in the batch of ( mean over phi in B_c of d(phi, c) )
                                                 normalizer "per_class" (default, **choice**:
                                                 frequent classes do not dominate)
    L = (1 / |B|) sum over valid phi in B of d(phi, y_phi)
                                                 normalizer "per_feature" (Eq. (2)'s 1/B read as
                                                 the number of features: frequent classes weigh
                                                 more)
with Gamma stop-gradient. "per_channel" makes the loss, and so lambda_P, independent of the feature
width D: the same lambda means the same weight at D = 64 and D = 512 (the mean absolute deviation
per channel, ~0.5 for BatchNorm + ReLU features, whatever D).

Distances "l2_channel" and "l2_channel_per_class" are L2 variants; the normalizer above does not
apply to them (they define their own pooling; "per_feature" with them is an error):
  * "l2_channel", the authors' unfinished snapshot (`torch.nanmean(torch.linalg.vector_norm(
    phi - Gamma_y, dim=0, ord=2))`): for every channel the L2 norm over ALL valid features of the
    batch, pooled across classes, of (phi - Gamma_{y_phi}); then the mean over channels
    ("per_channel", which is the snapshot) or their sum ("sum"). Not divided by the number of
    features, as in the snapshot: it grows like sqrt(|B|).
  * "l2_channel_per_class", what "l2_channel" computed earlier: the same norm per class
    (over the class's features only), mean (or sum) over channels, then the mean over present
    classes.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from leakjax.sharding import per_device_samples, take_table

DISTANCES = ("l1", "l2_channel", "l2_channel_per_class")
NORMALIZATIONS = ("per_channel", "sum")  # over the D channels of one distance
NORMALIZERS = ("per_class", "per_feature")  # Eq. (2): over the features of the batch


def _flatten(feats: jax.Array, labels: jax.Array, valid: jax.Array):
    """[..., D], [...], [...] -> [N, D], [N], [N] with leading dims merged."""
    if feats.shape[:-1] != labels.shape or labels.shape != valid.shape:
        raise ValueError(
            f"feats {feats.shape}, labels {labels.shape} and valid {valid.shape} must share their "
            "leading dims"
        )
    feats = feats.reshape(-1, feats.shape[-1]).astype(jnp.float32)
    return feats, labels.reshape(-1).astype(jnp.int32), valid.reshape(-1).astype(bool)


def class_sums(
    feats: jax.Array, labels: jax.Array, valid: jax.Array, num_classes: int
) -> tuple[jax.Array, jax.Array]:
    """Per-class feature sums [m, D] and counts [m] (float32) over valid entries (global)."""

    def local(batch, _):
        feats, labels, valid = batch
        counted = valid & (labels >= 0) & (labels < num_classes)
        safe = jnp.where(counted, labels, 0)
        sums = jax.ops.segment_sum(jnp.where(counted[:, None], feats, 0.0), safe, num_classes)
        counts = jax.ops.segment_sum(counted.astype(jnp.float32), safe, num_classes)
        return sums, counts

    # per device, then added over devices, when the batch is sharded on Explicit axes
    return per_device_samples(local, _flatten(feats, labels, valid), summed=True)


def update_prototypes(
    means: jax.Array, counts: jax.Array, feats: jax.Array, labels: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """One cumulative running-mean step.

    Args:
      means: [m, D] current prototypes Gamma.
      counts: [m] features seen so far per class (k).
      feats: [N, D] or [..., D] features of the batch.
      labels: [N] or [...] class ids in [0, m) where valid.
      valid: [N] or [...] bool.

    Returns:
      (means [m, D], counts [m]) float32; rows of classes absent from the batch are unchanged.
    """
    num_classes = means.shape[0]
    sums, batch_counts = class_sums(feats, labels, valid, num_classes)
    means = means.astype(jnp.float32)
    new_counts = counts.astype(jnp.float32) + batch_counts
    step = (sums - batch_counts[:, None] * means) / jnp.maximum(new_counts, 1.0)[:, None]
    new_means = jnp.where(batch_counts[:, None] > 0, means + step, means)
    return new_means, new_counts


def check_prototype_options(distance: str, normalization: str, normalizer: str) -> None:
    """Raises ValueError naming the accepted values (module docstring)."""
    if distance not in DISTANCES:
        raise ValueError(f"prototype distance {distance!r} not in {DISTANCES}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"prototype normalization {normalization!r} not in {NORMALIZATIONS}")
    if normalizer not in NORMALIZERS:
        raise ValueError(f"prototype normalizer {normalizer!r} not in {NORMALIZERS}")
    if normalizer == "per_feature" and distance != "l1":
        raise ValueError(
            f"prototype normalizer 'per_feature' applies to the 'l1' distance only, not to "
            f"{distance!r} (the L2 variants define their own pooling)"
        )


def _safe_sqrt(squares: jax.Array) -> jax.Array:
    """sqrt with zero gradient at 0 (sqrt's derivative there is infinite)."""
    positive = squares > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)


def prototype_loss(
    feats: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    means: jax.Array,
    distance: str = "l1",
    normalization: str = "per_channel",
    normalizer: str = "per_class",
) -> jax.Array:
    """Feature-to-prototype alignment loss (module docstring); 0 when no feature is valid.

    Args:
      feats: [N, D] or [..., D] features (gradient flows into them).
      labels: [N] or [...] class ids in [0, m) where valid.
      valid: [N] or [...] bool.
      means: [m, D] prototypes (treated as constants: stop-gradient).
      distance: "l1" (the paper), "l2_channel" (the authors' snapshot: all features pooled) or
        "l2_channel_per_class" (the same per class, then the mean over present classes).
      normalization: "per_channel" (mean over the D channels) or "sum" (sum over them).
      normalizer: "per_class" or "per_feature" (Eq. (2)'s average; "l1" only).
    """
    check_prototype_options(distance, normalization, normalizer)
    num_classes, dim = means.shape

    def local(batch, prototypes):
        """Per-class counts [m] and the sums [m] (l1), [m, D] (l2 per class) or [D] (l2)."""
        feats, labels, valid = batch
        counted = valid & (labels >= 0) & (labels < num_classes)
        safe = jnp.where(counted, labels, 0)
        residual = jnp.where(counted[:, None], feats - prototypes[safe], 0.0)  # [N, D]
        class_counts = jax.ops.segment_sum(counted.astype(jnp.float32), safe, num_classes)
        if distance == "l1":
            return class_counts, jax.ops.segment_sum(jnp.abs(residual).sum(-1), safe, num_classes)
        if distance == "l2_channel_per_class":
            return class_counts, jax.ops.segment_sum(residual**2, safe, num_classes)
        return class_counts, jnp.sum(residual**2, axis=0)  # l2_channel: every class pooled

    prototypes = jax.lax.stop_gradient(means.astype(jnp.float32))
    class_counts, sums = per_device_samples(
        local, _flatten(feats, labels, valid), prototypes, summed=True
    )
    channel_scale = 1.0 / dim if normalization == "per_channel" else 1.0
    if distance == "l2_channel":
        return _safe_sqrt(sums).sum() * channel_scale  # 0 when nothing is valid
    if distance == "l1" and normalizer == "per_feature":
        total = class_counts.sum()
        return jnp.where(total > 0, sums.sum() / jnp.maximum(total, 1.0), 0.0) * channel_scale
    if distance == "l1":
        per_class = sums / jnp.maximum(class_counts, 1.0)
    else:
        per_class = _safe_sqrt(sums).sum(axis=-1)
    per_class = per_class * channel_scale
    present = class_counts > 0
    num_present = present.sum()
    return jnp.where(
        num_present > 0,
        jnp.sum(jnp.where(present, per_class, 0.0)) / jnp.maximum(num_present, 1),
        0.0,
    )


class PrototypeBank(nn.Module):
    """Micro and macro prototypes in the Flax variable collection `prototypes`.

    Variables (all zeros at init): micro_means [m, D], micro_counts [m], macro_means [M, D],
    macro_counts [M]. Apply with `mutable=["prototypes"]` when `update=True` (training); with
    `update=False` (evaluation) nothing is written. The update happens before the loss, so the loss
    of a step uses the prototypes including that step's batch (docs/leak_method.md).

    Attributes:
      num_micro: m.
      num_macro: M.
      feature_dim: D.
      distance, normalization, normalizer: see `prototype_loss`.
    """

    num_micro: int
    num_macro: int
    feature_dim: int
    distance: str = "l1"
    normalization: str = "per_channel"
    normalizer: str = "per_class"

    @nn.compact
    def __call__(
        self,
        feats: jax.Array,
        labels: jax.Array,
        valid: jax.Array,
        micro_to_macro: jax.Array,
        update: bool,
    ) -> dict[str, jax.Array]:
        """Update (if `update`) and compute the alignment losses.

        Args:
          feats: [..., D] features, e.g. [B, Nf, D].
          labels: [...] micro class ids in [0, m) where valid.
          valid: [...] bool.
          micro_to_macro: int [m] macro id of every micro class.
          update: whether to update the running means (never in evaluation).

        Returns:
          {"loss_micro": L_micro, "loss_macro": L_macro, "num_out_of_range": valid labels
          outside [0, m)}.
        """
        if feats.shape[-1] != self.feature_dim:
            raise ValueError(f"feats: last dim {feats.shape[-1]} != feature_dim {self.feature_dim}")
        zeros = lambda shape: jnp.zeros(shape, jnp.float32)  # noqa: E731
        micro_means = self.variable(
            "prototypes", "micro_means", zeros, (self.num_micro, self.feature_dim)
        )
        micro_counts = self.variable("prototypes", "micro_counts", zeros, (self.num_micro,))
        macro_means = self.variable(
            "prototypes", "macro_means", zeros, (self.num_macro, self.feature_dim)
        )
        macro_counts = self.variable("prototypes", "macro_counts", zeros, (self.num_macro,))

        labels = labels.astype(jnp.int32)
        valid = valid.astype(bool)
        in_range = (labels >= 0) & (labels < self.num_micro)
        num_out_of_range = jnp.sum(valid & ~in_range)
        valid = valid & in_range
        macro_labels = take_table(
            jnp.asarray(micro_to_macro, jnp.int32), jnp.where(valid, labels, 0)
        )

        if update and not self.is_initializing():
            micro_means.value, micro_counts.value = update_prototypes(
                micro_means.value, micro_counts.value, feats, labels, valid
            )
            macro_means.value, macro_counts.value = update_prototypes(
                macro_means.value, macro_counts.value, feats, macro_labels, valid
            )
        options = (self.distance, self.normalization, self.normalizer)
        return {
            "loss_micro": prototype_loss(feats, labels, valid, micro_means.value, *options),
            "loss_macro": prototype_loss(feats, macro_labels, valid, macro_means.value, *options),
            "num_out_of_range": num_out_of_range,
        }
