"""The LEAK objective  L = L0 + lambda_Pm L_Pm + lambda_PM L_PM + lambda_F L_F  (LEAK_METHOD.md, 4).

L0 is the backbone's own loss (leakjax.losses), L_Pm / L_PM the micro / macro prototype alignment
losses (prototypes.py), L_F the fairness loss (fairness.py).

Default lambdas: the paper gives no values ("tuned using a validation set"), so the defaults come
from a magnitude-balancing argument, not from the paper:
  * L_P is an L1 norm summed over D channels. Encoder features after BatchNorm + ReLU have
    per-channel deviations of order 0.5, so early in training L_P ~ 0.5 D, i.e. 30-60 for the
    usual D = 64-128; lambda_Pm = lambda_PM = 0.01 brings each term to ~0.3-0.6, the order of a
    mid-training cross-entropy (the paper notes that the prototype terms at first dominate CE
    and delay mIoU, so we do not go higher). Rescale by 64 / D for much wider features.
  * L_F lies in [0, 1 - 1/|C|) and is typically 0.05-0.3; lambda_F = 1 keeps it at the CE's order.
Ablations are lambdas set to 0 (prototypes only: lambda_F = 0; fairness only: lambda_P* = 0).
"""

from __future__ import annotations

import dataclasses

import jax


@dataclasses.dataclass(frozen=True)
class LeakConfig:
    """LEAK loss settings (see the module docstring for how the defaults were set).

    Attributes:
      lambda_micro: lambda_Pm, weight of the micro prototype alignment loss.
      lambda_macro: lambda_PM, weight of the macro prototype alignment loss.
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
    prototype_micro: jax.Array,
    prototype_macro: jax.Array,
    fairness: jax.Array,
    config: LeakConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss and its named terms (unweighted) from precomputed scalars."""
    total = (
        base_loss
        + config.lambda_micro * prototype_micro
        + config.lambda_macro * prototype_macro
        + config.lambda_fairness * fairness
    )
    terms = {
        "base": base_loss,
        "prototype_micro": prototype_micro,
        "prototype_macro": prototype_macro,
        "fairness": fairness,
        "total": total,
    }
    return total, terms
