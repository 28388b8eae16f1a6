"""The jitted train and eval steps: one program each, data-parallel over the `data` mesh.

The train step computes, in one pass: the model forward (BatchNorm statistics global over the
batch), the backbone's own loss L0 (cross-entropy with an optional class weighting, plus
Lovasz-softmax when `lovasz_weight` > 0), and with LEAK on, the prototype update and the LEAK
objective terms (leakjax.leak); then one optimiser update. The input batch is sharded on `data`,
the state replicated: every batch reduction (BatchNorm moments, prototype sums/counts, loss means,
Lovasz sort) is an ordinary global reduction, so results do not depend on the number of devices.

SemanticKITTI convention (MODEL_API): training ids 0..C-1 with 0 ignored; LEAK works on micro
classes 0..m-1 = training id - 1, valid where the training id is not 0. The conversion happens here
and nowhere else.
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

from leakjax import leak, losses, metrics
from leakjax.train.mesh import batch_sharding, replicated_sharding
from leakjax.train.state import TrainState, step_rng

IGNORE_INDEX = 0  # the ignored training id
DROPOUT_STREAM = 0  # step_rng stream ids


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """The backbone's own loss L0 (MODEL_API: computed on aux["loss_logits"]).

    Attributes:
      class_weights: float [C] cross-entropy weights (leakjax.losses.class_weights) or None.
      lovasz_weight: weight of the Lovasz-softmax term (1 for Cylinder3D as released, 0 = off).
      point_ce_weight: weight of an extra cross-entropy on the returned per-point logits (for
        models whose point logits are not the loss logits, e.g. Cylinder3D's point refinement).
    """

    class_weights: tuple[float, ...] | None = None
    lovasz_weight: float = 0.0
    point_ce_weight: float = 0.0


@dataclasses.dataclass(frozen=True)
class LeakSettings:
    """LEAK's terms (LEAK_METHOD.md section 4) and the hierarchy they use.

    Attributes:
      micro_to_macro: int [m] macro class of every micro class (m = C - 1).
      objective: the lambdas, prototype distance and fairness variant (leak.LeakConfig; its
        defaults and how they were set are documented in leakjax/leak/objective.py).
    """

    micro_to_macro: tuple[int, ...]
    objective: leak.LeakConfig = leak.LeakConfig()

    @property
    def num_micro(self) -> int:
        return len(self.micro_to_macro)

    @property
    def num_macro(self) -> int:
        return int(max(self.micro_to_macro)) + 1

    def prototype_bank(self, feature_dim: int) -> leak.PrototypeBank:
        return leak.PrototypeBank(
            self.num_micro, self.num_macro, feature_dim, distance=self.objective.prototype_distance
        )

    def init_prototypes(self, feature_dim: int) -> dict[str, jax.Array]:
        """The zero prototype bank (collection "prototypes") for features of width D."""
        bank = self.prototype_bank(feature_dim)
        feats = jnp.zeros((1, feature_dim), jnp.float32)
        labels = jnp.zeros((1,), jnp.int32)
        variables = bank.init(
            jax.random.key(0), feats, labels, labels > 0, np.asarray(self.micro_to_macro), False
        )
        return variables["prototypes"]


def model_loss(
    point_logits: jax.Array,
    batch: dict[str, jax.Array],
    aux: dict[str, jax.Array],
    settings: LossSettings,
) -> jax.Array:
    """L0: masked (weighted) cross-entropy + lovasz_weight * Lovasz-softmax on the loss logits
    (+ point_ce_weight * cross-entropy on the point logits [B, P, C]), class 0 ignored."""
    logits, labels, valid = aux["loss_logits"], aux["loss_labels"], aux["loss_mask"]
    weights = None if settings.class_weights is None else np.asarray(settings.class_weights)
    loss = losses.cross_entropy(logits, labels, valid, weights, ignore_index=IGNORE_INDEX)
    if settings.lovasz_weight:
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        loss = loss + settings.lovasz_weight * losses.lovasz_softmax(
            probs, labels, valid, ignore_index=IGNORE_INDEX
        )
    if settings.point_ce_weight:
        loss = loss + settings.point_ce_weight * losses.cross_entropy(
            point_logits, batch["labels"], batch["point_mask"], weights, ignore_index=IGNORE_INDEX
        )
    return loss


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    root_key: jax.Array,
    loss_settings: LossSettings,
    leak_settings: LeakSettings | None = None,
    donate: bool = True,
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds the jitted `train_step(state, batch) -> (state, metrics)`.

    Args:
      model: the Flax module (MODEL_API).
      tx: the optimiser.
      mesh: the one-axis `data` mesh.
      root_key: the run's root PRNG key; the step's dropout key is derived from it and state.step.
      loss_settings: L0 settings.
      leak_settings: None for a baseline run; else LEAK's hierarchy and weights (the state must
        then hold a prototype bank).
      donate: donate the input state's buffers (the caller must not reuse the old state).

    Returns:
      The jitted step. metrics: scalars "loss", "loss_model" (and with LEAK the objective's terms),
      "num_points" (valid labelled points), "overflow" (any model capacity overflow in the batch),
      "label_errors" (valid feature labels outside the micro classes: a data/model bug).
    """
    micro_to_macro = None
    if leak_settings is not None:
        micro_to_macro = jnp.asarray(np.asarray(leak_settings.micro_to_macro, np.int32))

    def loss_fn(params, state: TrainState, batch, dropout_key):
        variables = {"params": params}
        mutable = []
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
            mutable = ["batch_stats"]
        (point_logits, aux), updates = model.apply(
            variables, batch, train=True, mutable=mutable, rngs={"dropout": dropout_key}
        )
        loss0 = model_loss(point_logits, batch, aux, loss_settings)
        terms = {"loss_model": loss0}
        prototypes = state.prototypes
        total = loss0
        label_errors = jnp.zeros((), jnp.int32)
        if leak_settings is not None:
            feats = aux["features"]
            feats = feats.reshape(-1, feats.shape[-1])  # [B * Nf, D]
            feature_labels = aux["feature_labels"].reshape(-1)
            feature_valid = aux["feature_mask"].reshape(-1) & (feature_labels != IGNORE_INDEX)
            logits = aux["loss_logits"]
            probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 1:]
            probs = probs.reshape(-1, probs.shape[-1])  # [B * M, m]
            loss_labels = aux["loss_labels"].reshape(-1)
            loss_valid = aux["loss_mask"].reshape(-1) & (loss_labels != IGNORE_INDEX)
            bank = leak_settings.prototype_bank(feats.shape[-1])
            proto_losses, bank_updates = bank.apply(
                {"prototypes": prototypes},
                feats,
                feature_labels - 1,
                feature_valid,
                micro_to_macro,
                True,
                mutable=["prototypes"],
            )
            prototypes = bank_updates["prototypes"]
            fairness = leak.fairness_loss(
                probs,
                loss_labels - 1,
                loss_valid,
                micro_to_macro,
                detach=leak_settings.objective.fairness_detach,
                num_macro=leak_settings.num_macro,
            )
            total, leak_terms = leak.combine_objective(
                loss0,
                proto_losses["micro"],
                proto_losses["macro"],
                fairness,
                leak_settings.objective,
            )
            leak_terms = {
                "loss_proto_micro": leak_terms["prototype_micro"],
                "loss_proto_macro": leak_terms["prototype_macro"],
                "loss_fairness": leak_terms["fairness"],
            }
            label_errors = proto_losses["num_out_of_range"]
            terms.update(leak_terms)
        new_batch_stats = updates.get("batch_stats", state.batch_stats)
        extras = {
            "terms": terms,
            "batch_stats": new_batch_stats,
            "prototypes": prototypes,
            "num_points": jnp.sum(aux["loss_mask"] & (aux["loss_labels"] != IGNORE_INDEX)),
            "overflow": jnp.any(aux["overflow"]),
            "label_errors": label_errors,
        }
        return total, extras

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


def make_eval_step(
    model: nn.Module, mesh: Mesh, num_classes: int, predict_ignored: bool = False
) -> Callable[[dict[str, Any], dict[str, jax.Array]], dict[str, jax.Array]]:
    """Builds the jitted `eval_step(variables, batch) -> {"confusion", "overflow"}`.

    `variables` = `state.variables()` (params and batch_stats only), so a baseline and a LEAK run
    of the same model share one compiled program.

    The prediction of a point is the argmax of its logits over classes 1..C-1 (the ignored class is
    never trained as a target, so it is not predicted) unless `predict_ignored`; with the official
    rules a predicted 0 would count as a miss anyway. confusion: int32 [C, C] over the batch's
    labelled points (rows ground truth, columns prediction, row 0 empty).
    """

    def eval_step(variables: dict[str, Any], batch: dict[str, jax.Array]):
        logits, aux = model.apply(variables, batch, train=False)
        if predict_ignored:
            prediction = jnp.argmax(logits, axis=-1)
        else:
            prediction = jnp.argmax(logits[..., 1:], axis=-1) + 1
        labels = batch["labels"]
        valid = batch["point_mask"] & (labels != IGNORE_INDEX)
        confusion = metrics.confusion_matrix(prediction, labels, valid, num_classes)
        return {"confusion": confusion, "overflow": jnp.any(aux["overflow"])}

    replicated = replicated_sharding(mesh)
    return jax.jit(
        eval_step,
        in_shardings=(replicated, batch_sharding(mesh)),
        out_shardings=replicated,
    )
