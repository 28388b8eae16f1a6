"""The LEAK pipeline for any registered dataset and model: four phases as plain functions.

  1. `train_baseline`      train the model alone                      -> <workdir>/baseline/
  2. `discover_hierarchy`  validation confusion of the baseline, macro classes, figures
                                                                       -> hierarchy.json, *.png
  3. `train_leak`          retrain with LEAK (from scratch, same schedule, as in the paper)
                                                                       -> <workdir>/leak/
  4. `write_report`        evaluate every run on validation            -> report.md / report.json

Each phase resumes from its checkpoint or is skipped when its outputs exist. Runs are named
`<name>` for the pipeline's own seed and `<name>-seed<k>` for another seed, so any number of LEAK
variants (a `Variant` is a name plus config overrides) and seeds share one work directory and one
baseline: `run_pipeline(..., variants=[Variant("leak"), Variant("no_fairness",
{"leak.lambda_fairness": 0.0})], seeds=[0, 1])` trains one baseline, discovers its hierarchy once
per distinct grouping, and trains four LEAK runs. Data-parallel over every local device.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import pathlib
import time
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from datasets.registry import load_dataset
from leakjax.data import Dataset
from leakjax.leak import (
    Hierarchy,
    LeakConfig,
    LeakSettings,
    a_priori_grouping,
    feature_geometry,
    given_grouping,
    random_grouping,
)
from leakjax.leak import discover_hierarchy as discover
from leakjax.pipeline import plots, renders, report
from leakjax.train import mesh as mesh_lib
from leakjax.train import trainer
from leakjax.train.checkpoint import Checkpointer
from leakjax.train.logging import read_jsonl
from leakjax.train.steps import LossSettings

logger = logging.getLogger("leakjax")
ALL_PHASES = (1, 2, 3, 4)
GROUPINGS = ("spectral", "random", "a_priori")


@dataclasses.dataclass(frozen=True)
class Variant:
    """A LEAK variant: a run name and config overrides {"leak.lambda_fairness": 0.0, ...}."""

    name: str = "leak"
    overrides: dict = dataclasses.field(default_factory=dict, hash=False)

    def apply(self, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        """A copy of `config` with the overrides set (each must name an existing field)."""
        config = copy.deepcopy(config)
        for dotted, value in self.overrides.items():
            *parents, leaf = dotted.split(".")
            node = config
            for part in parents:
                node = node[part]
            if leaf not in node:
                raise ValueError(f"variant {self.name}: {dotted!r} is not a config field")
            node[leaf] = value
        return config


@dataclasses.dataclass
class Pipeline:
    """What every phase needs."""

    config: ml_collections.ConfigDict
    workdir: pathlib.Path
    mesh: jax.sharding.Mesh
    data: Dataset
    _class_counts: np.ndarray | None = None

    def loss(self, config: ml_collections.ConfigDict | None = None) -> LossSettings:
        """L0 settings of a run's config (a variant may change the loss); the training split's
        class counts are read once, when a weighting first needs them."""
        config = config or self.config
        if self._class_counts is None and trainer.needs_class_counts(config):
            self._class_counts = self.data.train_class_counts()
        return trainer.loss_settings(config, self.data.label_space, self._class_counts)


def setup(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    data_dir: str | None = None,
    cache_dir: str | None = None,
) -> Pipeline:
    """Work directory, resolved config, data mesh and the dataset (config.data.name)."""
    workdir = pathlib.Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=1, sort_keys=True))
    mesh = mesh_lib.make_data_mesh()
    cache_root = pathlib.Path(cache_dir) if cache_dir else workdir.parent / "synthetic_cache"
    # Process 0 first: a synthetic stand-in is generated once, not by every process at once.
    data = load_dataset(config.data, data_dir, cache_root) if jax.process_index() == 0 else None
    _sync_processes("dataset ready")
    data = data or load_dataset(config.data, data_dir, cache_root)
    logger.info(
        "data: %s (%d train, %d validation samples); %d devices",
        data.description,
        len(data.train),
        len(data.validation),
        mesh.devices.size,
    )
    return Pipeline(config, workdir, mesh, data)


def _sync_processes(name: str) -> None:
    """Waits until every process gets here (nothing to do with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"leakjax: {name}")


def _from_process_zero(text: str) -> str:
    """Process 0's `text` on every process (one process: `text`), over JAX's own collectives."""
    if jax.process_count() == 1:
        return text
    data = np.frombuffer(text.encode(), np.uint8) if jax.process_index() == 0 else None
    size = int(multihost_utils.broadcast_one_to_all(np.int32(0 if data is None else len(data))))
    buffer = np.zeros(size, np.uint8) if data is None else data
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer))).decode()


def run_name(pipe: Pipeline, name: str, seed: int | None) -> str:
    """`name` for the pipeline's seed (or None), `name-seed<k>` for another seed."""
    return name if seed is None or seed == pipe.config.seed else f"{name}-seed{seed}"


def seeded(config: ml_collections.ConfigDict, seed: int | None) -> ml_collections.ConfigDict:
    if seed is None or seed == config.seed:
        return config
    config = copy.deepcopy(config)
    config.seed = seed
    return config


def leak_settings(config: ml_collections.ConfigDict, hierarchy: Hierarchy) -> LeakSettings:
    """LEAK's objective weights (config.leak) and the micro -> macro map."""
    objective = LeakConfig(
        lambda_micro=config.leak.lambda_micro,
        lambda_macro=config.leak.lambda_macro,
        lambda_fairness=config.leak.lambda_fairness,
        prototype_distance=config.leak.prototype_distance,
        prototype_normalization=config.leak.prototype_normalization,
        prototype_normalizer=config.leak.prototype_normalizer,
        fairness_mode=config.leak.fairness_mode,
        fairness_singletons=config.leak.fairness_singletons,
        fairness_detach=config.leak.fairness_detach,
    )
    return LeakSettings(tuple(int(v) for v in hierarchy.micro_to_macro), objective)


def baseline_settings(config: ml_collections.ConfigDict, num_micro: int) -> LeakSettings | None:
    """The baseline's prototype tracking (config.leak.track_prototypes_in_baseline): micro
    prototypes updated every step with every LEAK weight 0, so the loss and the parameters are
    the baseline's; None when off."""
    if not config.leak.track_prototypes_in_baseline:
        return None
    settings = leak_settings(config, given_grouping(np.zeros(num_micro, np.int32)))
    off = dataclasses.replace(
        settings.objective, lambda_micro=0.0, lambda_macro=0.0, lambda_fairness=0.0
    )
    return dataclasses.replace(settings, objective=off)


def validation_confusion(
    pipe: Pipeline,
    run_dir: pathlib.Path,
    settings: LeakSettings | None = None,
    config: ml_collections.ConfigDict | None = None,
) -> np.ndarray:
    """int64 [C, C] validation confusion of a run's latest checkpoint (cached beside it)."""
    config = config or pipe.config
    checkpointer = Checkpointer(pathlib.Path(run_dir) / "checkpoints")
    latest = checkpointer.latest_step()
    checkpointer.close()
    tag = trainer.evaluation_tag(pipe.data)  # another protocol on the same run: its own file
    if latest is not None and trainer.confusion_path(run_dir, latest, tag).exists():
        return np.load(trainer.confusion_path(run_dir, latest, tag))  # e.g. the final validation
    model, state, _ = trainer.load_state(config, run_dir, pipe.mesh, pipe.data, settings)
    confusion = trainer.evaluate(model, state, pipe.data, pipe.mesh, config)
    trainer.save_confusion(run_dir, int(jax.device_get(state.step)), confusion, tag)
    return confusion


def train_baseline(
    pipe: Pipeline, seed: int | None = None, baseline_checkpoint: str | None = None
) -> pathlib.Path:
    """Phase 1: trains the baseline (or uses `baseline_checkpoint`, a run directory)."""
    if baseline_checkpoint:
        return pathlib.Path(baseline_checkpoint).absolute()
    config = seeded(pipe.config, seed)
    run_dir = pipe.workdir / run_name(pipe, "baseline", seed)
    metadata = {"config": config.to_dict(), "phase": "baseline"}
    settings = baseline_settings(config, pipe.data.label_space.num_micro)
    loss = pipe.loss(config)
    trainer.train(config, run_dir, pipe.data, pipe.mesh, loss, settings, metadata=metadata)
    return run_dir


def hierarchy_path(
    pipe: Pipeline, baseline_dir: pathlib.Path, config: ml_collections.ConfigDict
) -> pathlib.Path:
    """`hierarchy.json` for the pipeline's own grouping of its baseline, else a keyed name."""
    key = _grouping_key(config, baseline_dir)
    if key == _grouping_key(pipe.config, pipe.workdir / "baseline"):
        return pipe.workdir / "hierarchy.json"
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    return pipe.workdir / f"hierarchy-{config.leak.grouping}-{digest}.json"


def _grouping_key(config: ml_collections.ConfigDict, baseline_dir: pathlib.Path) -> dict:
    leak = config.leak
    key = {
        "baseline": str(pathlib.Path(baseline_dir).absolute()),
        "grouping": leak.grouping,
        "method": leak.method,
        "k_max": leak.k_max,
        "criterion": leak.criterion,
        "fixed_k": leak.fixed_k,
    }
    if leak.grouping == "random":  # each seed draws its own random partition
        key["seed"] = config.seed
    return key


def discover_hierarchy(
    pipe: Pipeline,
    baseline_dir: pathlib.Path,
    config: ml_collections.ConfigDict | None = None,
) -> Hierarchy:
    """Phase 2: the baseline's validation confusion -> macro classes (config.leak) and figures.

    Spectral clustering uses the pipeline's seed (one hierarchy shared by every LEAK seed); a
    random grouping draws one partition per run seed. With several processes, process 0 computes
    it and every process uses that one (not a recomputation that another host's BLAS could
    change).
    """
    config = config or pipe.config
    path = hierarchy_path(pipe, baseline_dir, config)
    # Process 0 decides: another process may look just after process 0 wrote the file.
    if _from_process_zero(str(path.exists())) == "True":
        return Hierarchy.load(path)
    label_space = pipe.data.label_space
    confusion = validation_confusion(
        pipe, baseline_dir, baseline_settings(pipe.config, label_space.num_micro)
    )
    confusion = label_space.micro_confusion(confusion)
    names = label_space.micro_names
    found = ""
    if jax.process_index() == 0:
        found = group_classes(confusion, label_space, config, pipe.config.seed).to_json()
    hierarchy = Hierarchy.from_json(_from_process_zero(found))
    if jax.process_index() == 0:
        stem = path.with_suffix("").name.replace("hierarchy", "")
        out = pipe.workdir
        plots.plot_confusion(confusion, names, hierarchy.order, out / f"confusion{stem}.png")
        if hierarchy.conductance:
            plots.plot_conductance(hierarchy, out / f"conductance{stem}.png")
        plots.plot_dendrogram(hierarchy, out / f"dendrogram{stem}.png")
        hierarchy.save(path)  # last: its existence means phase 2 is done
    logger.info("hierarchy (%d macro classes): %s", hierarchy.num_macro, hierarchy.macro_names)
    return hierarchy


def group_classes(
    confusion: np.ndarray,
    label_space,
    config: ml_collections.ConfigDict,
    clustering_seed: int,
) -> Hierarchy:
    """The macro classes of config.leak.grouping from a micro confusion [m, m].

    spectral: `discover_hierarchy` with config.leak.method ("bisection", the paper's; or "kway"
    with k_max / criterion, seeded by `clustering_seed`); criterion "fixed" takes fixed_k macro
    classes with either method; random: a random partition (seeded by config.seed) with the sizes
    of that
    spectral grouping (same criterion); a_priori: the label space's categories.
    """
    names = label_space.micro_names
    leak = config.leak
    fixed = leak.fixed_k if leak.criterion == "fixed" else None
    options = {"class_names": names, "method": leak.method}
    if leak.method == "kway":
        options.update(
            k_max=leak.k_max, seed=clustering_seed, criterion=leak.criterion, fixed_k=fixed
        )
    else:  # the paper's bisection: deterministic; criterion "fixed" fixes the number of macros
        options.update(num_macro=fixed)
    if leak.grouping == "spectral":
        return discover(confusion, **options)
    if leak.grouping == "a_priori":
        if not label_space.categories:
            raise ValueError(f"{label_space.name}: the label space has no a-priori categories")
        return a_priori_grouping(names, label_space.categories)
    if leak.grouping == "random":
        found = discover(confusion, **options)
        return random_grouping(found.micro_to_macro, seed=config.seed, class_names=names)
    raise ValueError(f"config.leak.grouping={leak.grouping!r}: expected one of {GROUPINGS}")


def train_leak(
    pipe: Pipeline,
    hierarchy: Hierarchy,
    baseline_dir: pathlib.Path,
    variant: Variant = Variant(),
    seed: int | None = None,
) -> pathlib.Path:
    """Phase 3: trains a LEAK variant from scratch with the baseline's schedule (or fine-tunes
    from the baseline when config.leak.finetune_from_baseline)."""
    config = seeded(variant.apply(pipe.config), seed)
    run_dir = pipe.workdir / run_name(pipe, variant.name, seed)
    init_from = str(baseline_dir / "checkpoints") if config.leak.finetune_from_baseline else None
    metadata = {
        "config": config.to_dict(),
        "phase": "leak",
        "variant": variant.name,
        "hierarchy": json.loads(hierarchy.to_json()),
    }
    trainer.train(
        config,
        run_dir,
        pipe.data,
        pipe.mesh,
        pipe.loss(config),
        leak_settings=leak_settings(config, hierarchy),
        metadata=metadata,
        init_from=init_from,
    )
    return run_dir


def run_geometry(
    pipe: Pipeline,
    run_dir: pathlib.Path,
    settings: LeakSettings | None,
    config: ml_collections.ConfigDict,
) -> dict | None:
    """Tab. VI (theta_gamma, CCD, PD, PCD; leakjax/leak/geometry.py) of a run's latest checkpoint
    on a sample of validation features and its micro prototypes (cached beside it); None for a
    run without prototypes."""
    if settings is None:
        return None
    model, state, _ = trainer.load_state(config, run_dir, pipe.mesh, pipe.data, settings)
    cache = pathlib.Path(run_dir) / f"geometry_step{int(jax.device_get(state.step))}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    feats, labels = trainer.collect_features(
        model, state, pipe.data, pipe.mesh, config, config.leak.geometry_max_per_class, config.seed
    )
    prototypes = jax.device_get(state.prototypes)
    geometry = feature_geometry(
        feats,
        labels,
        np.ones(len(labels), bool),
        prototypes["micro_means"],
        prototypes["micro_counts"],
    )
    if jax.process_index() == 0:
        cache.write_text(json.dumps(geometry))
    return geometry


def write_report(
    pipe: Pipeline,
    hierarchy: Hierarchy,
    baseline_dir: pathlib.Path,
    leak_runs: dict[str, tuple[pathlib.Path, ml_collections.ConfigDict, Hierarchy]],
) -> dict:
    """Phase 4: evaluates the baseline and every LEAK run; report.md / report.json / curves.png.

    `leak_runs` = {run name: (run dir, its config, its hierarchy)}. hIoU is computed through each
    run's own hierarchy (the baseline through `hierarchy`) and, for every run, through the one
    shared grouping `hierarchy` (the pipeline's spectral grouping: comparable across runs, Tab.
    IV). Tab. VI (feature geometry) for every run with prototypes, Tab. VII (IoU balance).
    """
    label_space = pipe.data.label_space
    runs, curves = {}, {}
    entries = {
        "baseline": (
            baseline_dir,
            pipe.config,
            hierarchy,
            baseline_settings(pipe.config, label_space.num_micro),
        )
    }
    for name, (run_dir, config, run_hierarchy) in leak_runs.items():
        entries[name] = (run_dir, config, run_hierarchy, leak_settings(config, run_hierarchy))
    for name, (run_dir, config, run_hierarchy, settings) in entries.items():
        confusion = validation_confusion(pipe, run_dir, settings, config)
        runs[name] = report.run_metrics(confusion, run_hierarchy, label_space, hierarchy)
        runs[name]["geometry"] = run_geometry(pipe, run_dir, settings, config)
        curves[name] = records(run_dir)
    # Fig. 4: the first validation samples, ground truth / baseline / LEAK / where they differ
    render_runs = {
        name: (run_dir, config, settings)
        for name, (run_dir, config, _, settings) in list(entries.items())[:2]
    }
    renders.render_validation(pipe, render_runs, pipe.workdir, num_samples=pipe.config.eval.renders)
    curves_name = None
    if jax.process_index() == 0 and plots.plot_curves(curves, pipe.workdir / "curves.png"):
        curves_name = "curves.png"
    return report.write_report(
        pipe.workdir,
        runs,
        hierarchy,
        pipe.data.description,
        extra={"train_steps": pipe.config.train.num_steps, "model": pipe.config.model.name},
        label_space=label_space,
        curves=curves_name,
    )


def records(run_dir: pathlib.Path) -> list[dict]:
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    return read_jsonl(path) if path.exists() else []


def run_pipeline(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    data_dir: str | None = None,
    phases: Sequence[int] = ALL_PHASES,
    baseline_checkpoint: str | None = None,
    cache_dir: str | None = None,
    variants: Sequence[Variant] = (Variant(),),
    seeds: Sequence[int] | None = None,
) -> dict | None:
    """Runs the requested phases in order for every variant x seed; returns the report or None.

    One baseline (the pipeline's seed) serves every LEAK run; `seeds` (default: config.seed)
    are the LEAK runs' seeds.
    """
    unknown = set(phases) - set(ALL_PHASES)
    if unknown:
        raise ValueError(
            f"--phases: unknown phases {sorted(unknown)}; expected a subset of 1,2,3,4"
        )
    names = [v.name for v in variants]
    if len(set(names)) != len(names) or "baseline" in names:
        raise ValueError(f"variants: names must be distinct and not 'baseline', got {names}")
    start = time.perf_counter()
    pipe = setup(config, workdir, data_dir, cache_dir)
    if baseline_checkpoint:
        baseline_dir = pathlib.Path(baseline_checkpoint).absolute()
    else:
        baseline_dir = pipe.workdir / "baseline"
    if 1 in phases:
        baseline_dir = train_baseline(pipe, baseline_checkpoint=baseline_checkpoint)
    seeds = [config.seed] if seeds is None else list(seeds)
    leak_runs = {}
    hierarchy = None
    for variant in variants:
        for seed in seeds:
            run_config = seeded(variant.apply(config), seed)
            path = hierarchy_path(pipe, baseline_dir, run_config)
            if 2 in phases:
                run_hierarchy = discover_hierarchy(pipe, baseline_dir, run_config)
            elif {3, 4} & set(phases):
                if not path.exists():
                    raise ValueError(
                        f"{path}: phases 3 and 4 need phase 2's hierarchy; run phase 2 first"
                    )
                run_hierarchy = Hierarchy.load(path)
            else:
                continue
            if hierarchy is None or path.name == "hierarchy.json":
                hierarchy = run_hierarchy
            name = run_name(pipe, variant.name, seed)
            if 3 in phases:
                train_leak(pipe, run_hierarchy, baseline_dir, variant, seed)
            leak_runs[name] = (pipe.workdir / name, run_config, run_hierarchy)
    result = None
    if 4 in phases:
        result = write_report(pipe, hierarchy, baseline_dir, leak_runs)
    logger.info("phases %s done in %.1f s", ",".join(map(str, phases)), time.perf_counter() - start)
    return result
