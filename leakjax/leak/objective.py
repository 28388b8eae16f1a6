"""The LEAK objective  L = L0 + lambda_micro L_micro + lambda_macro L_macro + lambda_fairness L_F.

docs/leak_method.md, section 4. L0 is the backbone's own loss (leakjax/losses.py), L_micro /
L_macro the micro / macro prototype alignment losses (prototypes.py), L_F the fairness loss
(fairness.py). `leak_objective` computes LEAK's part from a model's `aux` (docs/model_api.md), the
prototype bank, the hierarchy and the dataset's label space, in one model-agnostic call; the train
step adds it to L0 (leakjax/train/steps.py). One name per quantity, from the config to the metrics:
config.leak.lambda_micro -> LeakConfig.lambda_micro, and the metric "loss_micro" (likewise macro,
fairness; "loss_model" is L0 and "loss" the total).

Default lambdas: the paper gives no values ("tuned using a validation set"), so the defaults come
from a magnitude-balancing argument, not from the paper:
  * L_P is an L1 norm summed over D channels. Encoder features after BatchNorm + ReLU have
    per-channel deviations of order 0.5, so early in training L_P ~ 0.5 D, i.e. 30-60 for the
    usual D = 64-128; lambda_micro = lambda_macro = 0.01 brings each term to ~0.3-0.6, the order
    of a mid-training cross-entropy (the paper notes that the prototype terms at first dominate CE
    and delay mIoU, so we do not go higher). Rescale by 64 / D for much wider features.
  * L_F lies in [0, 1 - 1/|C|) and is typically 0.05-0.3; lambda_fairness = 1 keeps it at the CE's
    order.
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
from leakjax.leak.fairness import fairness_loss
from leakjax.leak.prototypes import PrototypeBank


@dataclasses.dataclass(frozen=True)
class LeakConfig:
    """LEAK loss settings (see the module docstring for how the defaults were set).

    Attributes:
      lambda_micro: weight of the micro prototype alignment loss L_micro.
      lambda_macro: weight of the macro prototype alignment loss L_macro.
      lambda_fairness: lambda_F, weight of the fairness loss.
      prototype_distance: "l1" (paper) or "l2_channel" (authors' unfinished code).
      fairness_detach: True reproduces the authors' snapshot (no gradient from L_F).
    """

    lambda_micro: float = 0.01
    lambda_macro: float = 0.01
    lambda_fairness: float = 1.0
    prototype_distance: str = "l1"
    fairness_detach: bool = False


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
            self.num_micro, self.num_macro, feature_dim, distance=self.objective.prototype_distance
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
      (lambda-weighted sum of the LEAK terms, {"loss_micro", "loss_macro", "loss_fairness"}
      unweighted, new prototypes, number of valid feature labels outside the micro classes).
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
    )
    terms = {
        "loss_micro": proto_losses["loss_micro"],
        "loss_macro": proto_losses["loss_macro"],
        "loss_fairness": fairness,
    }
    extra = (
        config.lambda_micro * terms["loss_micro"]
        + config.lambda_macro * terms["loss_macro"]
        + config.lambda_fairness * terms["loss_fairness"]
    )
    label_errors = label_errors + proto_losses["num_out_of_range"]
    return extra, terms, updates["prototypes"], label_errors
