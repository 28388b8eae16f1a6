"""The trainer: one function that reads top to bottom, plus evaluation and checkpoint loading.

`train` follows big_vision's order: model and optimiser -> state shapes (`jax.eval_shape`) and
shardings -> jitted step -> resume (Orbax) -> loop with periodic logging, validation, checks and
checkpoints. It knows no dataset: it reads a `leakjax.data.Dataset` (samples, their batch contract,
the label space) and a model from `MODELS` honouring docs/model_api.md.
"""

import dataclasses
import functools
import logging
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from leakjax import losses
from leakjax.data import Dataset
from leakjax.label_space import LabelSpace
from leakjax.leak.objective import LeakSettings
from leakjax.metrics import segmentation_metrics
from leakjax.models import MODELS, torch_import
from leakjax.train import input_pipeline, votes
from leakjax.train.checkpoint import Checkpointer, restore_or_initialize
from leakjax.train.entries import INDEX_KEY, prepare_batches, with_positions
from leakjax.train.logging import MetricWriter, Progress, check_finite, format_eta
from leakjax.train.mesh import (
    batch_sharding,
    check_batch_size,
    global_batch,
    replicated_sharding,
)
from leakjax.train.optim import make_optimizer
from leakjax.train.state import TrainState, init_train_state
from leakjax.train.steps import LossSettings, make_eval_step, make_train_step
from leakjax.transforms import build_transforms

logger = logging.getLogger("leakjax")
_FLAGS = ("overflow", "label_errors")  # per-step error indicators, checked, not logged


class CapacityOverflowError(RuntimeError):
    """A model's internal capacity (voxels, kernel-map pairs) was exceeded: results are wrong."""


@dataclasses.dataclass
class Run:
    """Everything static about a run: model, optimiser, how to make and where to find its state."""

    model: nn.Module
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    init_fn: Callable[[], TrainState]
    abstract_state: TrainState
    checkpointer: Checkpointer


def build_model(config: ml_collections.ConfigDict, label_space: LabelSpace) -> nn.Module:
    """MODELS[config.model.name](num_classes=C, ignore_index=no_label, **config.model.kwargs).

    The model's input contract (`input_spec()`, docs/model_api.md) is checked against the data's
    by `build_run`.
    """
    if config.model.name not in MODELS:
        raise ValueError(f"config.model.name={config.model.name!r}: not in {sorted(MODELS)}")
    return MODELS[config.model.name](
        num_classes=label_space.num_classes,
        ignore_index=label_space.no_label,
        **config.model.kwargs,
    )


def example_batch(
    config: ml_collections.ConfigDict, data: Dataset, model: nn.Module | None = None
) -> dict[str, np.ndarray]:
    """One all-padding sample of the smallest bucket: parameter shapes do not depend on it."""
    spec = data.spec
    capacity = min((spec.capacity(b) for b in config.data.buckets), key=lambda s: np.prod(s))
    batch = input_pipeline.pad_batch(
        [spec.empty_sample()], capacity, spec, data.label_space.no_label
    )
    prepare = getattr(model, "prepare_batch", None)
    return batch if prepare is None else prepare(batch)


def build_run(
    config: ml_collections.ConfigDict,
    run_dir: pathlib.Path,
    mesh: Mesh,
    data: Dataset,
    leak_settings: LeakSettings | None,
) -> Run:
    """Model, optimiser, state initialiser, its abstract (shape + sharding) twin, checkpointer."""
    model = build_model(config, data.label_space)
    data.spec.check_compatible(model.input_spec(), f"model {config.model.name}")
    tx, schedule = make_optimizer(config.optimizer, config.train.num_steps)
    init_prototypes = None if leak_settings is None else leak_settings.init_prototypes
    example = example_batch(config, data, model)
    # Parameter init only: XLA:CPU compiles threefry for a large network slowly (about 60 s for
    # Cylinder3D against 4 s with the RBG generator); still deterministic for a seed.
    init_key = jax.random.key(config.seed, impl="unsafe_rbg")
    replicated = replicated_sharding(mesh)
    # config.model.pretrained: converted torchvision weights (leakjax/models/torch_import.py)
    # replace the fresh params/batch_stats["backbone"] (and the optimiser state is re-initialised);
    # the file is read only when a state is initialised, not for shapes, resuming or evaluation.
    init_state = jax.jit(
        lambda backbone: torch_import.with_backbone(
            init_train_state(model, tx, example, init_key, init_prototypes), backbone, tx
        ),
        out_shardings=replicated,
    )
    pretrained = config.model.pretrained
    init_fn = lambda: init_state(torch_import.load_backbone(pretrained) if pretrained else None)
    abstract_state = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated),
        jax.eval_shape(init_state, None),
    )
    checkpointer = Checkpointer(
        run_dir / "checkpoints",
        max_to_keep=config.train.max_checkpoints_to_keep,
        async_save=config.train.async_checkpointing,
    )
    return Run(model, tx, schedule, init_fn, abstract_state, checkpointer)


def loss_fields(config: ml_collections.ConfigDict) -> dict:
    """config.loss with its preset applied: the model's LOSS_PRESETS[config.loss.preset] replaces
    the fields it names (no preset: the fields as given)."""
    fields = {key: config.loss[key] for key in config.loss if key != "preset"}
    preset = config.loss.preset
    if preset:
        presets = getattr(MODELS.get(config.model.name), "LOSS_PRESETS", {})
        if preset not in presets:
            raise ValueError(
                f"config.loss.preset={preset!r}: model {config.model.name!r} declares "
                f"{sorted(presets)}"
            )
        fields.update(presets[preset])
    return fields


def needs_class_counts(config: ml_collections.ConfigDict) -> bool:
    """Whether L0 uses a class weighting (so the training split's class counts are needed)."""
    fields = loss_fields(config)
    return fields["ce_weighting"] != "none" or fields["point_ce_weighting"] != "none"


def loss_settings(
    config: ml_collections.ConfigDict, label_space: LabelSpace, class_counts: np.ndarray | None
) -> LossSettings:
    """L0 settings from config.loss (and its preset); `class_counts` [C] for a CE weighting."""
    fields = loss_fields(config)

    def weights(scheme: str) -> tuple[float, ...] | None:
        if scheme == "none":
            return None
        if class_counts is None:
            raise ValueError(f"config.loss: the weighting {scheme!r} needs class counts")
        values = losses.class_weights(
            class_counts, scheme, ignore_index=label_space.ignore_in_range, normalize=True
        )
        return tuple(float(w) for w in values)

    return LossSettings(
        class_weights=weights(fields["ce_weighting"]),
        lovasz_weight=float(fields["lovasz_weight"]),
        point_ce_weight=float(fields["point_ce_weight"]),
        ce_weight=float(fields["ce_weight"]),
        point_class_weights=weights(fields["point_ce_weighting"]),
        ce_reduction=fields["ce_reduction"],
        coarse_steps=int(round(fields["coarse_fraction"] * config.train.num_steps)),
    )


def _check_step_metrics(step: int, metrics: dict[str, Any], where: str) -> None:
    if bool(metrics["overflow"]):
        raise CapacityOverflowError(
            f"{where}: model capacity overflow at step {step}; raise the model's capacities "
            "(config.model.kwargs) for this data"
        )
    if int(metrics["label_errors"]):
        raise ValueError(
            f"{where}: {int(metrics['label_errors'])} feature labels at step {step} are neither a "
            "class of the label space nor its no-label id; check the data and the model's aux"
        )
    check_finite(step, {k: v for k, v in metrics.items() if k not in _FLAGS}, where)


def train(
    config: ml_collections.ConfigDict,
    run_dir: str | pathlib.Path,
    data: Dataset,
    mesh: Mesh,
    loss: LossSettings,
    leak_settings: LeakSettings | None = None,
    metadata: dict[str, Any] | None = None,
    init_from: str | None = None,
    resume_from: str | None = None,
    stop_at_step: int | None = None,
) -> TrainState:
    """Trains (or resumes) one run to config.train.num_steps and returns its final state.

    Every config.train.eval_every steps (and at the last step; 0 = never) the run is evaluated on
    `data.validation`: "val_miou", "val_oa", "val_macc" and "val_iou/<class>" go to metrics.jsonl
    and TensorBoard, the confusion to `<run_dir>/val_confusion_step<N>.npy` (reused by
    `validation_confusion`, so a later evaluation of the same checkpoint costs nothing).

    Args:
      config: the resolved config (data, model, optimizer, loss, train, eval, seed).
      run_dir: the run's directory (checkpoints/, metrics.jsonl, tensorboard/).
      data: the dataset (its train split is trained on, its validation split evaluated).
      mesh: the `data` mesh.
      loss: L0 settings (`loss_settings`).
      leak_settings: None for a baseline, LEAK's hierarchy and weights otherwise.
      metadata: JSON-able dict saved in every checkpoint (the resolved config, the hierarchy).
      init_from: checkpoint directory to take params/batch_stats from (fine-tuning).
      resume_from: checkpoint directory of another run to continue.
      stop_at_step: stop (with a checkpoint) before num_steps, e.g. to test resuming.
    """
    run_dir = pathlib.Path(run_dir)
    num_steps = config.train.num_steps
    stop = num_steps if stop_at_step is None else min(stop_at_step, num_steps)
    check_batch_size(config.train.batch_size, mesh, "config.train.batch_size")
    run = build_run(config, run_dir, mesh, data, leak_settings)
    state, origin = restore_or_initialize(
        run.checkpointer, run.abstract_state, run.init_fn, resume_from, init_from
    )
    start = int(jax.device_get(state.step))
    logger.info("%s: %s (step %d of %d)", run_dir.name, origin, start, num_steps)
    if start >= stop:
        run.checkpointer.close()
        return state

    root_key = jax.random.key(config.seed)
    label_space = data.label_space
    train_step = make_train_step(
        run.model, run.tx, mesh, root_key, loss, label_space, data.spec, leak_settings
    )
    batches = input_pipeline.prefetch(
        prepare_batches(run.model, training_batches(config, data, start)),
        size=config.data.prefetch,
    )
    writer = MetricWriter(run_dir, tensorboard=config.train.tensorboard)
    progress = Progress(num_steps, start)
    pending: list[dict[str, jax.Array]] = []
    metadata = metadata or {}
    eval_every = config.train.eval_every

    def flush(step: int) -> None:
        """Fetches the pending step metrics, checks them, writes their mean (step = last one)."""
        host_metrics = jax.device_get(pending)
        first = step - len(host_metrics) + 1
        for offset, step_metrics in enumerate(host_metrics):
            _check_step_metrics(first + offset, step_metrics, run_dir.name)
        pending.clear()
        names = [k for k in host_metrics[0] if k not in _FLAGS]
        scalars = {k: float(np.mean([m[k] for m in host_metrics])) for k in names}
        scalars["learning_rate"] = float(run.schedule(step))
        speed = progress.update(step)
        writer.write_scalars(step, {**scalars, **speed})
        logger.info(
            "%s step %d/%d loss %.4f | %.2f steps/s | ETA %s",
            run_dir.name,
            step,
            num_steps,
            scalars["loss"],
            speed["steps_per_sec"],
            format_eta(speed["eta_sec"]),
        )

    def validate(step: int) -> None:
        confusion = evaluate(run.model, state, data, mesh, config)
        save_confusion(run_dir, step, confusion, evaluation_tag(data))
        scalars = validation_scalars(confusion, label_space)
        writer.write_scalars(step, scalars)
        progress.pause()  # evaluation time is not training time in steps/s and the ETA
        logger.info(
            "%s step %d validation: mIoU %.2f%% OA %.2f%%",
            run_dir.name,
            step,
            100 * scalars["val_miou"],
            100 * scalars["val_oa"],
        )

    try:
        for step in range(start + 1, stop + 1):
            batch = global_batch(next(batches), mesh)
            state, step_metrics = train_step(state, batch)
            pending.append(step_metrics)
            save_now = step % config.train.checkpoint_every == 0 or step == stop
            eval_now = eval_every > 0 and (step % eval_every == 0 or step == num_steps)
            if step % config.train.log_every == 0 or save_now or eval_now:
                flush(step)  # also guarantees no non-finite state is ever checkpointed
            if eval_now:
                validate(step)
            if save_now:
                run.checkpointer.save(state, metadata)
    finally:
        writer.close()
        batches.close()
        run.checkpointer.close()
    return state


def training_batches(
    config: ml_collections.ConfigDict, data: Dataset, start_step: int
) -> Iterator[dict[str, np.ndarray]]:
    """The host batches `train` consumes from step `start_step` on, transforms from the config
    (config.data.transforms / transform_kwargs, leakjax/transforms.py)."""
    return input_pipeline.train_batches(
        data.train,
        data.spec,
        config.train.batch_size,
        config.seed,
        start_step,
        config.data.buckets,
        transforms=build_transforms(config.data.transforms, config.data.transform_kwargs),
        max_points=config.data.train_max_points,
        label_fill=data.label_space.no_label,
    )


def validation_scalars(confusion: np.ndarray, label_space: LabelSpace) -> dict[str, float]:
    """The validation metrics logged during training, from a [C, C] confusion."""
    result = segmentation_metrics(confusion, ignore_index=label_space.ignore_in_range)
    iou = np.asarray(result["iou_per_class"])
    scalars = {
        "val_miou": result["miou"],
        "val_oa": result["oa"],
        "val_macc": result["macc"],
    }
    for label_id, name in zip(label_space.scored_ids, label_space.micro_names):
        scalars[f"val_iou/{name}"] = float(iou[label_id])
    return scalars


def confusion_path(run_dir: pathlib.Path, step: int, tag: str = "") -> pathlib.Path:
    """Where the validation confusion of a run's checkpoint at `step` is cached; `tag`
    (`evaluation_tag`) keeps the confusions of different evaluation protocols apart."""
    return pathlib.Path(run_dir) / f"val_confusion_step{step}{tag}.npy"


def evaluation_tag(data: Dataset, split: str = "validation") -> str:
    """The split source's `evaluation_tag` ('' for one pass per sample; e.g. the static scenes'
    voted crops name their settings, datasets/scenes/voting.py)."""
    return str(getattr(getattr(data, split), "evaluation_tag", ""))


def save_confusion(run_dir: pathlib.Path, step: int, confusion: np.ndarray, tag: str = "") -> None:
    if jax.process_index() == 0:
        np.save(confusion_path(run_dir, step, tag), confusion)


def load_state(
    config: ml_collections.ConfigDict,
    run_dir: str | pathlib.Path,
    mesh: Mesh,
    data: Dataset,
    leak_settings: LeakSettings | None = None,
) -> tuple[nn.Module, TrainState, dict[str, Any]]:
    """(model, latest state, its metadata) of a finished or interrupted run."""
    run = build_run(config, pathlib.Path(run_dir), mesh, data, leak_settings)
    state, metadata = run.checkpointer.restore(run.abstract_state)
    run.checkpointer.close()
    return run.model, state, metadata


def evaluate(
    model: nn.Module,
    state: TrainState,
    data: Dataset,
    mesh: Mesh,
    config: ml_collections.ConfigDict,
    split: str = "validation",
) -> np.ndarray:
    """Predicts every entry of a split; returns the summed confusion int64 [C, C] (rows truth).

    A voted split (leakjax/train/votes.py: overlapping crops, e.g. the released static-scene test)
    is evaluated by its votes instead: every crop once, each entry by its averaged probabilities.
    """
    check_batch_size(config.eval.batch_size, mesh, "config.eval.batch_size")
    label_space, spec = data.label_space, data.spec
    source = getattr(data, split)
    if votes.is_voted(source):
        predict_ignored = bool(config.eval.predict_ignored)
        cloud_votes = votes.vote(
            model,
            state.variables(),
            source,
            spec,
            mesh,
            label_space,
            config.eval.batch_size,
            list(config.data.buckets),
            predict_ignored,
        )
        return votes.voted_confusion(cloud_votes, source, label_space, predict_ignored)
    eval_step = make_eval_step(
        model, mesh, label_space, spec, predict_ignored=config.eval.predict_ignored
    )
    num_classes = label_space.num_classes
    confusion = np.zeros((num_classes, num_classes), np.int64)
    batches = input_pipeline.eval_batches(
        source,
        spec,
        config.eval.batch_size,
        config.data.buckets,
        label_fill=label_space.no_label,
    )
    batches = prepare_batches(model, batches)
    variables = state.variables()
    pending = None
    for index, host_batch in enumerate(input_pipeline.prefetch(batches)):
        outputs = eval_step(variables, global_batch(host_batch, mesh))
        if pending is not None:  # fetch one batch late so the host never waits on the device
            confusion += _fetch_confusion(pending, index - 1)
        pending = outputs
    if pending is not None:
        confusion += _fetch_confusion(pending, -1)
    return confusion


def _fetch_confusion(outputs: dict[str, jax.Array], index: int) -> np.ndarray:
    host = jax.device_get(outputs)
    if bool(host["overflow"]):
        raise CapacityOverflowError(f"evaluation batch {index}: model capacity overflow")
    return np.asarray(host["confusion"], np.int64)


def inspect_step(
    model: nn.Module, mesh: Mesh, label_space: LabelSpace, mask_key: str, predict_ignored: bool
) -> Callable[[dict, dict], dict[str, jax.Array]]:
    """jit (variables, batch with INDEX_KEY) -> replicated {prediction, position, mask, overflow,
    features, feature_labels, feature_mask}: per-entry predictions (as the eval step predicts) and
    the features LEAK aligns, for figures and Tab. VI. One compilation per equal model (cached),
    so a baseline and a LEAK run of one architecture share it. Replicated outputs: with several
    processes every process can fetch the whole batch."""
    try:
        hash((model, mesh, label_space))
    except TypeError:  # a model field that is not hashable (e.g. a list)
        return _make_inspect_step(model, mesh, label_space, mask_key, predict_ignored)
    return _cached_inspect_step(model, mesh, label_space, mask_key, predict_ignored)


def _make_inspect_step(model, mesh, label_space, mask_key, predict_ignored):
    def inspect(variables, batch):
        batch = dict(batch)
        position = batch.pop(INDEX_KEY)
        logits, aux = model.apply(variables, batch, train=False)
        if predict_ignored:
            prediction = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            prediction = label_space.predict(logits)
        return {
            "prediction": prediction,
            "position": position,
            "mask": batch[mask_key],
            "overflow": jnp.any(aux["overflow"]),
            "features": aux["features"],
            "feature_labels": aux["feature_labels"],
            "feature_mask": aux["feature_mask"],
        }

    replicated = replicated_sharding(mesh)
    return jax.jit(
        inspect, in_shardings=(replicated, batch_sharding(mesh)), out_shardings=replicated
    )


_cached_inspect_step = functools.lru_cache(maxsize=4)(_make_inspect_step)


def collect_features(
    model: nn.Module,
    state: TrainState,
    data: Dataset,
    mesh: Mesh,
    config: ml_collections.ConfigDict,
    max_per_class: int,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A uniform random sample of the validation features LEAK aligns, at most `max_per_class`
    per micro class: (feats float32 [N, D], micro labels int32 [N]).

    Every valid feature with a scored label gets a random key (seeded); the sample keeps the
    smallest keys of each class, i.e. a uniform sample without replacement of that class's
    features over the whole split (the feature geometry of Tab. VI is computed on it).
    """
    label_space = data.label_space
    inspect = inspect_step(model, mesh, label_space, data.spec.mask_key, False)

    rng = np.random.default_rng(seed)
    kept_feats, kept_labels, kept_keys = [], [], []
    batches = input_pipeline.eval_batches(
        data.validation,
        data.spec,
        config.eval.batch_size,
        config.data.buckets,
        label_fill=label_space.no_label,
    )
    variables = state.variables()
    batches = (with_positions(batch, data.spec.mask_key) for batch in batches)
    for host_batch in input_pipeline.prefetch(prepare_batches(model, batches)):
        outputs = inspect(variables, global_batch(host_batch, mesh))
        feats, labels, mask = jax.device_get(
            (outputs["features"], outputs["feature_labels"], outputs["feature_mask"])
        )
        feats = np.asarray(feats).reshape(-1, feats.shape[-1])
        micro, valid = label_space.micro_labels(np.asarray(labels).reshape(-1), mask.reshape(-1))
        kept_feats.append(feats[valid].astype(np.float32))
        kept_labels.append(micro[valid])
        kept_keys.append(rng.random(int(valid.sum())))
        feats_all, labels_all, keys_all = (
            np.concatenate(kept_feats),
            np.concatenate(kept_labels),
            np.concatenate(kept_keys),
        )
        order = np.lexsort((keys_all, labels_all))  # by class, then key
        rank = np.arange(len(order)) - np.searchsorted(labels_all[order], labels_all[order])
        keep = order[rank < max_per_class]
        kept_feats, kept_labels, kept_keys = [feats_all[keep]], [labels_all[keep]], [keys_all[keep]]
    if not kept_feats:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int32)
    return kept_feats[0], kept_labels[0].astype(np.int32)
