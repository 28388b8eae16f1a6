"""Vote-averaged evaluation over overlapping crops (the released RandLA-Net test protocol).

A *voted source* is an evaluation `Source` (leakjax/train/input_pipeline.py) whose samples are
overlapping crops of a few whole clouds (datasets/scenes/voting.py `VotingCrops`), with:
  num_clouds                 the clouds evaluated
  cloud_size(c) -> S_c       entries of cloud c
  crop_entries(i) -> (c, idx int [n])  the entries of cloud c that crop i holds, in its order
  cloud_label_counts(c) -> int32 [S_c, C]  raw points of each scored label id per entry
  smoothing                  s of the vote p <- s p + (1 - s) new
  optional_fields = ()       its crops carry no per-entry raw label counts (they overlap: the
                             votes count raw points per cloud, on the host)
`vote` runs the network once on every crop, in crop order, and folds each crop's class
probabilities (softmax over the scored label ids, or over all with `predict_ignored`) into its
cloud's running vote float32 [S_c, C]; `voted_predictions` predicts each entry by its vote's
argmax and `voted_confusion` counts every raw point it stands for (rows ground truth).
Multi-process: the crops of a batch are split across processes like any evaluation batch
(input_pipeline.eval_batches), the probabilities come back replicated, so every process folds
every crop and holds the same votes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from leakjax.label_space import LabelSpace
from leakjax.train import input_pipeline
from leakjax.train.batch import BatchSpec
from leakjax.train.entries import INDEX_KEY, in_source_order, prepare_batches, with_positions
from leakjax.train.mesh import batch_sharding, global_batch, replicated_sharding


def is_voted(source: Any) -> bool:
    """Whether an evaluation source is a voted source (module docstring)."""
    return callable(getattr(source, "crop_entries", None))


def class_probabilities(logits: jax.Array, label_space: LabelSpace, predict_ignored: bool):
    """float32 [..., C]: softmax of logits [..., C] over the scored label ids (the others get 0,
    as `LabelSpace.predict` never predicts them) or over all ids with `predict_ignored`."""
    logits = logits.astype(jnp.float32)
    if not predict_ignored:
        scored = label_space.is_scored(np.arange(label_space.num_classes))
        logits = jnp.where(scored, logits, -jnp.inf)
    return jax.nn.softmax(logits, axis=-1)


def probability_step(
    model: nn.Module, mesh: Mesh, label_space: LabelSpace, mask_key: str, predict_ignored: bool
) -> Callable[[dict, dict], dict[str, jax.Array]]:
    """jit (variables, batch with INDEX_KEY) -> replicated {probabilities [B, *S, C], position,
    mask, overflow}; cached per (model, mesh, ...) so a baseline and a LEAK run share it (a model
    with an unhashable field gets its own, as trainer.inspect_step does)."""
    try:
        hash((model, mesh, label_space))
    except TypeError:
        return _make_probability_step(model, mesh, label_space, mask_key, predict_ignored)
    return _cached_probability_step(model, mesh, label_space, mask_key, predict_ignored)


def _make_probability_step(model, mesh, label_space, mask_key, predict_ignored):
    def step(variables, batch):
        batch = dict(batch)
        position = batch.pop(INDEX_KEY)
        logits, aux = model.apply(variables, batch, train=False)
        return {
            "probabilities": class_probabilities(logits, label_space, predict_ignored),
            "position": position,
            "mask": batch[mask_key],
            "overflow": jnp.any(aux["overflow"]),
        }

    replicated = replicated_sharding(mesh)
    return jax.jit(step, in_shardings=(replicated, batch_sharding(mesh)), out_shardings=replicated)


_cached_probability_step = functools.lru_cache(maxsize=4)(_make_probability_step)


def vote(
    model: nn.Module,
    variables: dict[str, Any],
    source,
    spec: BatchSpec,
    mesh: Mesh,
    label_space: LabelSpace,
    batch_size: int,
    buckets: list,
    predict_ignored: bool = False,
) -> list[np.ndarray]:
    """Every cloud's vote float32 [S_c, C] after all crops of `source` (module docstring).

    Raises trainer.CapacityOverflowError naming the batch when the model's capacity overflowed.
    """
    num_classes = label_space.num_classes
    votes = [
        np.zeros((source.cloud_size(c), num_classes), np.float32) for c in range(source.num_clouds)
    ]
    keep = np.float32(source.smoothing)
    step = probability_step(model, mesh, label_space, spec.mask_key, bool(predict_ignored))
    batches = input_pipeline.eval_batches(
        source, spec, batch_size, buckets, label_fill=label_space.no_label
    )
    batches = prepare_batches(model, (with_positions(b, spec.mask_key) for b in batches))
    crop = 0
    for index, host_batch in enumerate(input_pipeline.prefetch(batches)):
        outputs = jax.device_get(step(variables, global_batch(host_batch, mesh)))
        if bool(outputs["overflow"]):
            from leakjax.train.trainer import CapacityOverflowError  # noqa: PLC0415 - a cycle

            raise CapacityOverflowError(f"voted evaluation batch {index}: model capacity overflow")
        for row in range(batch_size):
            if crop == len(source):
                break
            cloud, entries = source.crop_entries(crop)
            new = in_source_order(
                outputs["probabilities"][row],
                outputs["position"][row],
                outputs["mask"][row],
                (len(entries),),
                0.0,
                f"voting crop {crop}",
            )
            votes[cloud][entries] = keep * votes[cloud][entries] + (1 - keep) * new
            crop += 1
    return votes


def voted_predictions(
    votes: list[np.ndarray], label_space: LabelSpace, predict_ignored: bool = False
) -> list[np.ndarray]:
    """int32 [S_c] per cloud: the argmax of each entry's vote (over the scored ids unless
    `predict_ignored`). An entry no crop held is an error (the plan covers every entry)."""
    predictions = []
    for cloud, cloud_votes in enumerate(votes):
        unvoted = int(np.sum(~np.any(cloud_votes > 0, axis=-1)))
        if unvoted:
            raise ValueError(f"voted evaluation: {unvoted} entries of cloud {cloud} got no vote")
        if predict_ignored:
            predictions.append(np.argmax(cloud_votes, axis=-1).astype(np.int32))
        else:
            predictions.append(label_space.predict(cloud_votes))
    return predictions


def voted_confusion(
    votes: list[np.ndarray], source, label_space: LabelSpace, predict_ignored: bool = False
) -> np.ndarray:
    """int64 [C, C] (rows ground truth): every raw point scored with its entry's
    `voted_predictions`, counted from the source's `cloud_label_counts`."""
    num_classes = label_space.num_classes
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for cloud, prediction in enumerate(voted_predictions(votes, label_space, predict_ignored)):
        counts = np.asarray(source.cloud_label_counts(cloud), np.int64)
        for predicted in np.unique(prediction):
            confusion[:, predicted] += counts[prediction == predicted].sum(axis=0)
    return confusion
