"""The jitted train and eval steps: one program each, data-parallel over the `data` mesh.

The train step computes, in one pass: the model forward (BatchNorm statistics global over the
batch), the backbone's own loss L0 (cross-entropy with an optional class weighting, plus
Lovasz-softmax when `lovasz_weight` > 0), and with LEAK on, LEAK's terms and prototype update
(`leakjax.leak.leak_objective`): loss = L0 + LEAK terms; then one optimiser update. The input batch
is sharded on `data`, the state replicated: every batch reduction (BatchNorm moments, prototype
sums/counts, loss means, Lovasz sort) is an ordinary global reduction, so results do not depend on
the number of devices.

Label conventions come from the dataset's `LabelSpace` (leakjax/label_space.py): entries whose
label id is not scored (the ignored id, or outside 0..C-1) count in no loss and no metric.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from leakjax import losses, metrics
from leakjax.label_space import LabelSpace
from leakjax.leak.objective import LeakSettings, leak_objective
from leakjax.sharding import take_table
from leakjax.train.batch import LABEL_COUNTS, BatchSpec
from leakjax.train.mesh import batch_sharding, replicated_sharding
from leakjax.train.state import TrainState, step_rng

DROPOUT_STREAM = 0  # step_rng stream ids

__all__ = [
    "LeakSettings",
    "LossSettings",
    "counted_confusion",
    "make_eval_step",
    "make_train_step",
    "model_loss",
]


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """The backbone's own loss L0 (docs/model_api.md: computed on aux["loss_logits"]).

    Attributes:
      class_weights: float [C] weights of the loss-logit cross-entropy (leakjax.losses
        .class_weights) or None.
      lovasz_weight: weight of the Lovasz-softmax term (1 for Cylinder3D as released, 0 = off).
      point_ce_weight: weight of an extra cross-entropy on the returned per-point logits (for
        models whose point logits are not the loss logits, e.g. Cylinder3D's point refinement).
      ce_weight: weight of the cross-entropy on the loss logits (0 = off: the paper's Cylinder3D
        L0 is Lovasz on voxels + CE on points).
      point_class_weights: float [C] weights of the point cross-entropy, or None.
      ce_reduction: "weighted_mean" (sum w nll / sum w) or "mean" (/ number of entries, RandLA-Net
        as released); leakjax.losses.cross_entropy.
      coarse_steps: coarse-to-fine training (Tab. V; needs a hierarchy): for the first
        coarse_steps steps L0 is `coarse_loss` on the macro classes instead, then as above.
    """

    class_weights: tuple[float, ...] | None = None
    lovasz_weight: float = 0.0
    point_ce_weight: float = 0.0
    ce_weight: float = 1.0
    point_class_weights: tuple[float, ...] | None = None
    ce_reduction: str = "weighted_mean"
    coarse_steps: int = 0


def model_loss(
    point_logits: jax.Array,
    batch: dict[str, jax.Array],
    aux: dict[str, jax.Array],
    settings: LossSettings,
    label_space: LabelSpace,
    spec: BatchSpec,
) -> jax.Array:
    """L0 = ce_weight * (weighted) CE + lovasz_weight * Lovasz-softmax on the loss logits
    + point_ce_weight * (weighted) CE on the output logits [B, *S, C]; unscored labels ignored."""
    logits, labels = aux["loss_logits"], aux["loss_labels"]
    valid = aux["loss_mask"] & label_space.is_scored(labels)
    loss = jnp.zeros((), jnp.float32)
    if settings.ce_weight:
        weights = None if settings.class_weights is None else np.asarray(settings.class_weights)
        loss = loss + settings.ce_weight * losses.cross_entropy(
            logits, labels, valid, weights, reduction=settings.ce_reduction
        )
    if settings.lovasz_weight:
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        loss = loss + settings.lovasz_weight * losses.lovasz_softmax(probs, labels, valid)
    if settings.point_ce_weight:
        labels = batch[spec.label_key]
        valid = batch[spec.mask_key] & label_space.is_scored(labels)
        weights = settings.point_class_weights
        weights = None if weights is None else np.asarray(weights)
        loss = loss + settings.point_ce_weight * losses.cross_entropy(
            point_logits, labels, valid, weights, reduction=settings.ce_reduction
        )
    return loss


def coarse_loss(
    aux: dict[str, jax.Array], label_space: LabelSpace, micro_to_macro: np.ndarray
) -> jax.Array:
    """Cross-entropy on the macro classes of the loss logits [B, *M, C]: the log-probability of a
    macro class is the log of the summed softmax probabilities of its micro classes (the model's
    own head serves both phases of coarse-to-fine training; **choice**: the paper switches heads,
    a second head would need every model's cooperation). Mean over the scored entries."""
    logits, labels = aux["loss_logits"], aux["loss_labels"]
    micro, valid = label_space.micro_labels(labels, aux["loss_mask"])
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)[..., label_space.scored_ids]
    mapping = np.asarray(micro_to_macro, np.int32)
    num_macro = int(mapping.max()) + 1
    members = np.arange(num_macro)[:, None] == mapping[None, :]  # [M, m]
    macro_log_probs = jax.nn.logsumexp(
        jnp.where(members, log_probs[..., None, :], -jnp.inf), axis=-1
    )  # [B, *M, num_macro]
    macro = take_table(jnp.asarray(mapping), micro)
    nll = -jnp.take_along_axis(macro_log_probs, macro[..., None], axis=-1)[..., 0]
    count = valid.sum()
    return jnp.where(count > 0, jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(count, 1), 0.0)


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    root_key: jax.Array,
    loss_settings: LossSettings,
    label_space: LabelSpace,
    spec: BatchSpec,
    leak_settings: LeakSettings | None = None,
    donate: bool = True,
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds the jitted `train_step(state, batch) -> (state, metrics)`.

    Coarse-to-fine training (loss_settings.coarse_steps > 0) needs `leak_settings` for its
    micro -> macro map.

    Args:
      model: the Flax module (docs/model_api.md).
      tx: the optimiser.
      mesh: the one-axis `data` mesh.
      root_key: the run's root PRNG key; the step's dropout key is derived from it and state.step.
      loss_settings: L0 settings.
      label_space: the dataset's label ids (which count, which are ignored).
      spec: the batch contract (mask and label keys).
      leak_settings: None for a baseline run; else LEAK's hierarchy and weights (the state must
        then hold a prototype bank).
      donate: donate the input state's buffers (the caller must not reuse the old state).

    Returns:
      The jitted step. metrics: scalars "loss", "loss_model" (and with LEAK "loss_micro",
      "loss_macro", "loss_fairness"), "grad_norm", "num_points" (scored loss entries),
      "overflow" (any model capacity overflow in the batch), "label_errors" (feature labels that
      are neither a class nor the no-label id: a data or model bug).
    """

    if loss_settings.coarse_steps and leak_settings is None:
        raise ValueError("coarse-to-fine training (coarse_steps > 0) needs a hierarchy")

    def loss_fn(params, state: TrainState, batch, dropout_key):
        variables = {"params": params}
        mutable = []
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
            mutable = ["batch_stats"]
        (point_logits, aux), updates = model.apply(
            variables, batch, train=True, mutable=mutable, rngs={"dropout": dropout_key}
        )
        loss = model_loss(point_logits, batch, aux, loss_settings, label_space, spec)
        if loss_settings.coarse_steps:
            coarse = coarse_loss(aux, label_space, leak_settings.micro_to_macro)
            loss = jnp.where(state.step < loss_settings.coarse_steps, coarse, loss)
        terms = {"loss_model": loss}
        prototypes = state.prototypes
        label_errors = jnp.zeros((), jnp.int32)
        if leak_settings is not None:
            extra, leak_terms, prototypes, label_errors = leak_objective(
                aux, prototypes, leak_settings, label_space
            )
            loss = loss + extra
            terms.update(leak_terms)
        extras = {
            "terms": terms,
            "batch_stats": updates.get("batch_stats", state.batch_stats),
            "prototypes": prototypes,
            "num_points": jnp.sum(aux["loss_mask"] & label_space.is_scored(aux["loss_labels"])),
            "overflow": jnp.any(aux["overflow"]),
            "label_errors": label_errors,
        }
        return loss, extras

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        dropout_key = step_rng(root_key, state.step, DROPOUT_STREAM)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, extras), grads = grad_fn(state.params, state, batch, dropout_key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            batch_stats=extras["batch_stats"],
            prototypes=extras["prototypes"],
            opt_state=opt_state,
        )
        step_metrics = {
            "loss": loss,
            **extras["terms"],
            "grad_norm": optax.tree.norm(grads),
            "num_points": extras["num_points"],
            "overflow": extras["overflow"],
            "label_errors": extras["label_errors"],
        }
        return new_state, step_metrics

    replicated = replicated_sharding(mesh)
    return jax.jit(
        train_step,
        in_shardings=(replicated, batch_sharding(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,) if donate else (),
    )


def counted_confusion(
    prediction: jax.Array, counts: jax.Array, mask: jax.Array, label_space: LabelSpace
) -> jax.Array:
    """int32 [C, C] (rows ground truth): counts^T @ onehot(prediction) over the real entries.

    Args:
      prediction: int [B, *S] predicted label ids.
      counts: int32 [B, *S, C] raw points of each label id an entry stands for.
      mask: bool [B, *S] real entries.
      label_space: the label ids; the columns of unscored ids are not counted.
    """
    num_classes = label_space.num_classes
    scored = label_space.is_scored(np.arange(num_classes))
    counts = jnp.where(mask[..., None] & scored, counts, 0).reshape(-1, num_classes)
    prediction = prediction.reshape(-1).astype(jnp.int32)
    in_range = (prediction >= 0) & (prediction < num_classes)
    counts = jnp.where(in_range[:, None], counts, 0).astype(jnp.int32)
    # Row p: the raw label counts of every entry predicted p (a sum, not a float matmul: exact).
    by_prediction = jax.ops.segment_sum(
        counts, jnp.where(in_range, prediction, 0), num_segments=num_classes
    )
    return by_prediction.T


def make_eval_step(
    model: nn.Module,
    mesh: Mesh,
    label_space: LabelSpace,
    spec: BatchSpec,
    predict_ignored: bool = False,
) -> Callable[[dict[str, Any], dict[str, jax.Array]], dict[str, jax.Array]]:
    """Builds the jitted `eval_step(variables, batch) -> {"confusion", "overflow"}`.

    `variables` = `state.variables()` (params and batch_stats only), so a baseline and a LEAK run
    of the same model share one compiled program.

    The prediction of an entry is the argmax of its logits over the scored label ids
    (`LabelSpace.predict`: the ignored id is never trained as a target, so it is not predicted)
    unless `predict_ignored`; with the official rules a predicted ignored id counts as a miss.
    confusion: int32 [C, C] over the batch's entries with a scored label (rows ground truth,
    columns prediction; the ignored id's row, if it is in range, stays empty).

    When the batch has the optional LABEL_COUNTS field int32 [B, *S, C] (leakjax/train/batch.py),
    each real entry counts for the raw points it stands for instead: confusion[g, p] = the sum of
    counts[e, g] over the real entries e predicted p (unscored label ids g count nowhere), i.e.
    every raw point is scored with the prediction of the entry it was projected to.
    """
    num_classes = label_space.num_classes

    def eval_step(variables: dict[str, Any], batch: dict[str, jax.Array]):
        logits, aux = model.apply(variables, batch, train=False)
        if predict_ignored:
            prediction = jnp.argmax(logits, axis=-1)
        else:
            prediction = label_space.predict(logits)
        if LABEL_COUNTS in batch:
            confusion = counted_confusion(
                prediction, batch[LABEL_COUNTS], batch[spec.mask_key], label_space
            )
        else:
            labels = batch[spec.label_key]
            valid = batch[spec.mask_key] & label_space.is_scored(labels)
            confusion = metrics.confusion_matrix(prediction, labels, valid, num_classes)
        return {"confusion": confusion, "overflow": jnp.any(aux["overflow"])}

    replicated = replicated_sharding(mesh)
    return jax.jit(
        eval_step,
        in_shardings=(replicated, batch_sharding(mesh)),
        out_shardings=replicated,
    )
