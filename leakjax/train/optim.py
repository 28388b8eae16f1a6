"""Optimisers and learning-rate schedules, as the paper trains its backbones.

The paper keeps each backbone's own recipe: Adam for Cylinder3D (released config: lr 1e-3,
constant) and for RandLA-Net (lr 1e-2, x0.95 per epoch: "exponential"). The schedule is a config
choice ("constant", "poly", "cosine", "exponential"), each with an optional linear warm-up, so
short CPU runs can use a decaying schedule while a full run reproduces the released one.
"""

import ml_collections
import optax


def make_schedule(config: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Learning rate as a function of the step.

    Args:
      config: fields `learning_rate`, `schedule` ("constant" | "poly" | "cosine" |
        "exponential"), `warmup_steps`, `poly_power` (for "poly"), `end_learning_rate_factor`
        (final lr / peak lr), `decay_rate` / `decay_every_steps` (for "exponential").
      num_steps: total optimiser steps of the run.
    """
    peak = float(config.learning_rate)
    warmup = int(config.warmup_steps)
    decay_steps = max(num_steps - warmup, 1)
    end = peak * float(config.end_learning_rate_factor)
    if config.schedule == "constant":
        main = optax.constant_schedule(peak)
    elif config.schedule == "poly":
        main = optax.polynomial_schedule(peak, end, float(config.poly_power), decay_steps)
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
    elif config.schedule == "exponential":  # staircase: x decay_rate after every period
        main = optax.exponential_decay(
            peak, int(config.decay_every_steps), float(config.decay_rate), staircase=True
        )
    else:
        raise ValueError(
            f"config.optimizer.schedule={config.schedule!r}: expected constant, poly, cosine or "
            "exponential"
        )
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def make_optimizer(
    config: ml_collections.ConfigDict, num_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Builds the optimiser of `config.name` ("adam" | "adamw" | "sgd") with its schedule.

    Args:
      config: the `optimizer` section (see `make_schedule`, plus `weight_decay`, `momentum` for
        sgd, `grad_clip_norm` (0 disables clipping)).
      num_steps: total optimiser steps of the run.

    Returns:
      (optimiser, schedule) — the schedule is returned so the trainer can log the learning rate.
    """
    schedule = make_schedule(config, num_steps)
    weight_decay = float(config.weight_decay)
    if config.name == "adam":
        tx = optax.adam(schedule)
        if weight_decay:  # coupled L2 as in torch.optim.Adam(weight_decay=...)
            tx = optax.chain(optax.add_decayed_weights(weight_decay), tx)
    elif config.name == "adamw":
        tx = optax.adamw(schedule, weight_decay=weight_decay)
    elif config.name == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(weight_decay),
            optax.sgd(schedule, momentum=float(config.momentum), nesterov=True),
        )
    else:
        raise ValueError(f"config.optimizer.name={config.name!r}: expected adam, adamw or sgd")
    clip = float(config.grad_clip_norm)
    if clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    return tx, schedule
