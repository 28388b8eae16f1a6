"""The LEAK objective  L = L0 + lambda_micro L_micro + lambda_macro L_macro + lambda_fairness L_F.

docs/leak_method.md, section 4. L0 is the backbone's own loss (leakjax/losses.py), L_micro /
L_macro the micro / macro prototype alignment losses (prototypes.py), L_F the fairness loss
(fairness.py; with fairness_mode "fair_weighted_ce", lambda_fairness weighs the fairness-weighted
cross-entropy "loss_fair_ce" instead, and "loss_fairness" = 1 - J is only reported).
`leak_objective` computes LEAK's part from a model's `aux` (docs/model_api.md), the prototype bank,
the hierarchy and the dataset's label space, in one model-agnostic call; the train step adds it to
L0 (leakjax/train/steps.py). One name per quantity, from the config to the metrics:
config.leak.lambda_micro -> LeakConfig.lambda_micro, and the metric "loss_micro" (likewise macro,
fairness; "loss_model" is L0 and "loss" the total).

Default lambdas: the paper gives no values ("tuned using a validation set"), so the defaults come
from a magnitude-balancing argument, not from the paper:
  * L_P is the L1 distance divided by the D channels (prototype_normalization "per_channel"), so
    lambda_P means the same weight whatever the feature width. Encoder features after BatchNorm +
    ReLU have per-channel deviations of order 0.5, so early in training L_P ~ 0.5, and a weight of
    order 1 brings each term to the order of a mid-training cross-entropy (the paper notes that the
    prototype terms at first dominate CE and delay mIoU, so we do not go higher). The exact value,
    lambda_micro = lambda_macro = 1.28, is the earlier default re-expressed: 0.01 on the L1 distance
    summed over channels at D = 128, the width of the default run's features (Cylinder3D with
    init_size 8, bottleneck 16 * init_size; experiments/configs/semkitti.py), so the default run
    keeps its effective weight exactly. With "per_channel" the `full` config (D = 512) gets the same
    per-channel weight, which is 0.0025 in the old summed units (the old advice was to rescale
    0.01 by 64 / D by hand). prototype_normalization "sum" restores the summed distance; then the
    lambdas must be divided by D (0.01 at D = 128).
  * L_F lies in [0, 1 - 1/|C|) and is typically 0.05-0.3; lambda_fairness = 1 keeps it at the CE's
    order. Since macro classes with a single present member no longer count (fairness_singletons
    "skip"), L_F is larger than the earlier code's on batches that have such macro classes, by the
    factor (counted + skipped) / counted. In "fair_weighted_ce" mode, lambda_fairness = 1 adds a
    second cross-entropy of L0's order.
Ablations are lambdas set to 0 (prototypes only: lambda_fairness = 0; fairness only:
lambda_micro = lambda_macro = 0).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from leakjax.label_space import LabelSpace
from leakjax.leak.fairness import SINGLETONS, fair_class_weights, fairness_loss
from leakjax.leak.prototypes import PrototypeBank, check_prototype_options
from leakjax.losses import cross_entropy

FAIRNESS_MODES = ("jain_loss", "fair_weighted_ce")


@dataclasses.dataclass(frozen=True)
class LeakConfig:
    """LEAK loss settings (see the module docstring for how the defaults were set).

    Attributes:
      lambda_micro: weight of the micro prototype alignment loss L_micro.
      lambda_macro: weight of the macro prototype alignment loss L_macro.
      lambda_fairness: lambda_F, weight of the fairness loss (of "loss_fair_ce" in
        "fair_weighted_ce" mode).
      prototype_distance: "l1" (paper), "l2_channel" (the authors' unfinished snapshot: per-channel
        L2 over all features pooled) or "l2_channel_per_class" (the same per class; what
        "l2_channel" meant earlier). leakjax/leak/prototypes.py.
      prototype_normalization: "per_channel" (the distance divided by D: lambda_P independent of
        the feature width) or "sum" (summed over channels, the earlier code).
      prototype_normalizer: Eq. (2)'s average over the batch, "per_class" (mean per class, then
        over present classes) or "per_feature" (mean over all valid features); "l1" only.
      fairness_mode: "jain_loss" (the paper's equations: L_F = mean of 1 - J) or
        "fair_weighted_ce" (our reading of the prose: per-class CE weights from the within-macro
        confidences, recomputed each step; leakjax/leak/fairness.py).
      fairness_singletons: "skip" (macro classes with fewer than two members present in the batch
        do not count in L_F's mean) or "count" (the earlier code); "jain_loss" only.
      fairness_detach: True reproduces the authors' snapshot (no gradient from L_F; "jain_loss").
    """

    lambda_micro: float = 1.28
    lambda_macro: float = 1.28
    lambda_fairness: float = 1.0
    prototype_distance: str = "l1"
    prototype_normalization: str = "per_channel"
    prototype_normalizer: str = "per_class"
    fairness_mode: str = "jain_loss"
    fairness_singletons: str = "skip"
    fairness_detach: bool = False

    def __post_init__(self):
        check_prototype_options(
            self.prototype_distance, self.prototype_normalization, self.prototype_normalizer
        )
        if self.fairness_mode not in FAIRNESS_MODES:
            raise ValueError(f"fairness_mode {self.fairness_mode!r} not in {FAIRNESS_MODES}")
        if self.fairness_singletons not in SINGLETONS:
            raise ValueError(
                f"fairness_singletons {self.fairness_singletons!r} not in {SINGLETONS}"
            )


def combine_objective(
    base_loss: jax.Array,
    loss_micro: jax.Array,
    loss_macro: jax.Array,
    loss_fairness: jax.Array,
    config: LeakConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss and its named terms (unweighted) from precomputed scalars.

    Returns (loss, {"loss_model", "loss_micro", "loss_macro", "loss_fairness", "loss"}).
    """
    total = (
        base_loss
        + config.lambda_micro * loss_micro
        + config.lambda_macro * loss_macro
        + config.lambda_fairness * loss_fairness
    )
    terms = {
        "loss_model": base_loss,
        "loss_micro": loss_micro,
        "loss_macro": loss_macro,
        "loss_fairness": loss_fairness,
        "loss": total,
    }
    return total, terms


@dataclasses.dataclass(frozen=True)
class LeakSettings:
    """LEAK's hierarchy and weights for one run.

    Attributes:
      micro_to_macro: int [m] macro class of every micro class (leakjax/label_space.py).
      objective: the lambdas, prototype distance and fairness variant.
    """

    micro_to_macro: tuple[int, ...]
    objective: LeakConfig = LeakConfig()

    @property
    def num_micro(self) -> int:
        return len(self.micro_to_macro)

    @property
    def num_macro(self) -> int:
        return int(max(self.micro_to_macro)) + 1

    def prototype_bank(self, feature_dim: int) -> PrototypeBank:
        return PrototypeBank(
            self.num_micro,
            self.num_macro,
            feature_dim,
            distance=self.objective.prototype_distance,
            normalization=self.objective.prototype_normalization,
            normalizer=self.objective.prototype_normalizer,
        )

    def init_prototypes(self, feature_dim: int) -> dict[str, jax.Array]:
        """The zero prototype bank (collection "prototypes") for features of width D."""
        feats = jnp.zeros((1, feature_dim), jnp.float32)
        labels = jnp.zeros((1,), jnp.int32)
        variables = self.prototype_bank(feature_dim).init(
            jax.random.key(0), feats, labels, labels > 0, np.asarray(self.micro_to_macro), False
        )
        return variables["prototypes"]


def leak_objective(
    aux: dict[str, jax.Array],
    prototypes: Any,
    settings: LeakSettings,
    label_space: LabelSpace,
    update: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array], Any, jax.Array]:
    """LEAK's terms from a model's outputs: the extra loss to add to L0.

    Args:
      aux: the model's aux dict (docs/model_api.md): "features" [B, Nf, D] with "feature_labels"
        (label ids) and "feature_mask" [B, Nf]; "loss_logits" [B, M, C] with "loss_labels" and
        "loss_mask" [B, M] (M may be several dims, e.g. H x W).
      prototypes: the collection "prototypes" (LeakSettings.init_prototypes).
      settings: the hierarchy and weights.
      label_space: converts label ids to micro classes (ignored ids never count).
      update: update the running means (training) or not.

    Returns:
      (lambda-weighted sum of the LEAK terms, {"loss_micro", "loss_macro", "loss_fairness"} and in
      "fair_weighted_ce" mode "loss_fair_ce" (the term lambda_fairness weighs there; then
      "loss_fairness" is reported, stop-gradient, not added), all unweighted, new prototypes,
      number of valid feature labels outside the micro classes).
    """
    if settings.num_micro != label_space.num_micro:
        raise ValueError(
            f"LEAK hierarchy has {settings.num_micro} micro classes, the label space "
            f"{label_space.name} {label_space.num_micro}"
        )
    config = settings.objective
    micro_to_macro = jnp.asarray(np.asarray(settings.micro_to_macro, np.int32))
    feats = aux["features"]
    feats = feats.reshape(-1, feats.shape[-1])  # [B * Nf, D]
    feature_labels = aux["feature_labels"].reshape(-1)
    feature_mask = aux["feature_mask"].reshape(-1)
    feature_micro, feature_valid = label_space.micro_labels(feature_labels, feature_mask)
    # A label id that is neither scored nor the ignored / no-label id is a data or model bug.
    known = feature_valid | (feature_labels == label_space.no_label)
    label_errors = jnp.sum(feature_mask & ~known)
    logits = aux["loss_logits"]
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., label_space.scored_ids]
    probs = probs.reshape(-1, probs.shape[-1])  # [B * M, m]
    loss_micro_labels, loss_valid = label_space.micro_labels(
        aux["loss_labels"].reshape(-1), aux["loss_mask"].reshape(-1)
    )
    bank = settings.prototype_bank(feats.shape[-1])
    proto_losses, updates = bank.apply(
        {"prototypes": prototypes},
        feats,
        feature_micro,
        feature_valid,
        micro_to_macro,
        update,
        mutable=["prototypes"],
    )
    fairness = fairness_loss(
        probs,
        loss_micro_labels,
        loss_valid,
        micro_to_macro,
        detach=config.fairness_detach,
        num_macro=settings.num_macro,
        singletons=config.fairness_singletons,
    )
    terms = {
        "loss_micro": proto_losses["loss_micro"],
        "loss_macro": proto_losses["loss_macro"],
        "loss_fairness": fairness,
    }
    fairness_term = fairness
    if config.fairness_mode == "fair_weighted_ce":
        micro_weights = fair_class_weights(
            probs, loss_micro_labels, loss_valid, micro_to_macro, settings.num_macro
        )
        label_weights = jnp.zeros(logits.shape[-1], micro_weights.dtype)
        label_weights = label_weights.at[label_space.scored_ids].set(micro_weights)
        terms["loss_fairness"] = jax.lax.stop_gradient(fairness)  # reported only
        terms["loss_fair_ce"] = cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            aux["loss_labels"].reshape(-1),
            loss_valid,
            label_weights,
        )
        fairness_term = terms["loss_fair_ce"]
    extra = (
        config.lambda_micro * terms["loss_micro"]
        + config.lambda_macro * terms["loss_macro"]
        + config.lambda_fairness * fairness_term
    )
    return extra, terms, updates["prototypes"], label_errors
