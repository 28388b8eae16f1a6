"""LEAK on SemanticKITTI, end to end: `python -m experiments.semkitti [--workdir DIR] ...`.

The four phases of the paper, each a plain function call in `run_pipeline`, each resuming from its
checkpoint or skipping when its outputs exist:
  1. train the baseline                                   -> <workdir>/baseline/
  2. predict on validation, confusion matrix, hierarchy   -> hierarchy.json, *.png
  3. train with LEAK (from scratch, same schedule)        -> <workdir>/leak/
  4. evaluate both                                         -> report.md, report.json

Without --data_dir the synthetic LiDAR world is generated once into <workdir>/../synthetic_cache
(keyed by its settings; --cache_dir overrides) and its sequences 00 (train) and 08 (validation) are
used. Data-parallel over every device (batch sharded on the `data` mesh axis, state replicated).
"""

import dataclasses
import json
import logging
import pathlib
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from datasets import semantic_kitti
from experiments import semkitti_data, semkitti_plots, semkitti_report
from leakjax import leak
from leakjax.leak import Hierarchy, a_priori_grouping, discover_hierarchy, random_grouping
from leakjax.train import mesh as mesh_lib
from leakjax.train import trainer
from leakjax.train.steps import LeakSettings, LossSettings

logger = logging.getLogger("leakjax")
MICRO_CLASS_NAMES = list(semantic_kitti.CLASS_NAMES[1:])  # the 19 micro classes (id 0 ignored)
ALL_PHASES = (1, 2, 3, 4)


@dataclasses.dataclass
class Pipeline:
    """What every phase needs."""

    config: ml_collections.ConfigDict
    workdir: pathlib.Path
    mesh: jax.sharding.Mesh
    train_source: semkitti_data.SemanticKittiSource
    val_source: semkitti_data.SemanticKittiSource
    data_description: str
    loss: LossSettings


def setup(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    data_dir: str | None = None,
    cache_dir: str | None = None,
) -> Pipeline:
    """Work directory, resolved config, data mesh and data sources."""
    workdir = pathlib.Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=1, sort_keys=True))
    mesh = mesh_lib.make_data_mesh()
    cache_root = pathlib.Path(cache_dir) if cache_dir else workdir.parent / "synthetic_cache"
    train_source, val_source, description = semkitti_data.make_sources(
        config.data, data_dir, cache_root
    )
    class_counts = None
    if config.loss.ce_weighting != "none":
        class_counts = train_source.class_counts(config.data.num_classes)
    loss = trainer.loss_settings(config, class_counts)
    logger.info(
        "data: %s (%d train, %d val scans); %d devices",
        description,
        len(train_source),
        len(val_source),
        mesh.devices.size,
    )
    return Pipeline(config, workdir, mesh, train_source, val_source, description, loss)


def leak_settings(config: ml_collections.ConfigDict, hierarchy: Hierarchy) -> LeakSettings:
    """LEAK's objective weights (config.leak) and the micro -> macro map."""
    objective = leak.LeakConfig(
        lambda_micro=config.leak.lambda_proto_micro,
        lambda_macro=config.leak.lambda_proto_macro,
        lambda_fairness=config.leak.lambda_fairness,
        prototype_distance=config.leak.prototype_distance,
        fairness_detach=config.leak.fairness_detach,
    )
    micro_to_macro = tuple(int(v) for v in hierarchy.micro_to_macro)
    return LeakSettings(micro_to_macro=micro_to_macro, objective=objective)


def validation_confusion(
    pipe: Pipeline, run_dir: pathlib.Path, settings: LeakSettings | None
) -> np.ndarray:
    """int64 [20, 20] validation confusion of a run's latest checkpoint (cached beside it)."""
    model, state, _ = trainer.load_state(pipe.config, run_dir, pipe.mesh, settings)
    cache = run_dir / f"val_confusion_step{int(jax.device_get(state.step))}.npy"
    if cache.exists():
        return np.load(cache)
    confusion = trainer.evaluate(model, state, pipe.val_source, pipe.mesh, pipe.config)
    if jax.process_index() == 0:
        np.save(cache, confusion)
    return confusion


def phase1_train_baseline(pipe: Pipeline, baseline_checkpoint: str | None) -> pathlib.Path:
    """Trains the baseline (or uses `baseline_checkpoint`, a run directory); returns its dir."""
    if baseline_checkpoint:
        return pathlib.Path(baseline_checkpoint).absolute()
    run_dir = pipe.workdir / "baseline"
    trainer.train(
        pipe.config,
        run_dir,
        pipe.train_source,
        pipe.mesh,
        pipe.loss,
        metadata={"config": pipe.config.to_dict(), "phase": "baseline"},
    )
    return run_dir


def phase2_discover_hierarchy(pipe: Pipeline, baseline_dir: pathlib.Path) -> Hierarchy:
    """Confusion of the baseline on validation -> hierarchy.json and the three figures."""
    path = pipe.workdir / "hierarchy.json"
    if path.exists():
        return Hierarchy.load(path)
    confusion = validation_confusion(pipe, baseline_dir, None)[1:, 1:]  # drop ignored class 0
    grouping = pipe.config.leak.grouping
    if grouping == "spectral":
        hierarchy = discover_hierarchy(
            confusion,
            k_max=pipe.config.leak.k_max,
            seed=pipe.config.seed,
            criterion=pipe.config.leak.criterion,
            class_names=MICRO_CLASS_NAMES,
        )
    elif grouping == "a_priori":
        hierarchy = a_priori_grouping(MICRO_CLASS_NAMES)
    elif grouping == "random":
        found = discover_hierarchy(
            confusion,
            k_max=pipe.config.leak.k_max,
            seed=pipe.config.seed,
            class_names=MICRO_CLASS_NAMES,
        )
        hierarchy = random_grouping(
            found.micro_to_macro, seed=pipe.config.seed, class_names=MICRO_CLASS_NAMES
        )
    else:
        raise ValueError(f"config.leak.grouping={grouping!r}: expected spectral, a_priori, random")
    if jax.process_index() == 0:
        semkitti_plots.plot_confusion(
            confusion, MICRO_CLASS_NAMES, hierarchy.order, pipe.workdir / "confusion.png"
        )
        if hierarchy.conductance:
            semkitti_plots.plot_conductance(hierarchy, pipe.workdir / "conductance.png")
        semkitti_plots.plot_dendrogram(hierarchy, pipe.workdir / "dendrogram.png")
        hierarchy.save(path)  # last: its existence means phase 2 is done
    logger.info("hierarchy (%d macro classes): %s", hierarchy.num_macro, hierarchy.macro_names)
    return hierarchy


def phase3_train_leak(
    pipe: Pipeline, hierarchy: Hierarchy, baseline_dir: pathlib.Path
) -> pathlib.Path:
    """Trains with LEAK: from scratch with the baseline's schedule (or fine-tunes, config.leak)."""
    run_dir = pipe.workdir / "leak"
    init_from = None
    if pipe.config.leak.finetune_from_baseline:
        init_from = str(baseline_dir / "checkpoints")
    trainer.train(
        pipe.config,
        run_dir,
        pipe.train_source,
        pipe.mesh,
        pipe.loss,
        leak_settings=leak_settings(pipe.config, hierarchy),
        metadata={
            "config": pipe.config.to_dict(),
            "phase": "leak",
            "hierarchy": json.loads(hierarchy.to_json()),
        },
        init_from=init_from,
    )
    return run_dir


def phase4_report(
    pipe: Pipeline, hierarchy: Hierarchy, baseline_dir: pathlib.Path, leak_dir: pathlib.Path
) -> dict:
    """Evaluates both runs on validation and writes report.md / report.json."""
    runs = {
        "baseline": semkitti_report.run_metrics(
            validation_confusion(pipe, baseline_dir, None), hierarchy
        ),
        "leak": semkitti_report.run_metrics(
            validation_confusion(pipe, leak_dir, leak_settings(pipe.config, hierarchy)), hierarchy
        ),
    }
    return semkitti_report.write_report(
        pipe.workdir,
        runs,
        hierarchy,
        pipe.data_description,
        extra={"train_steps": pipe.config.train.num_steps, "model": pipe.config.model.name},
    )


def run_pipeline(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    data_dir: str | None = None,
    phases: tuple[int, ...] = ALL_PHASES,
    baseline_checkpoint: str | None = None,
    cache_dir: str | None = None,
) -> dict | None:
    """Runs the requested phases in order; returns the report (phase 4) or None."""
    unknown = set(phases) - set(ALL_PHASES)
    if unknown:
        raise ValueError(
            f"--phases: unknown phases {sorted(unknown)}; expected a subset of 1,2,3,4"
        )
    start = time.perf_counter()
    pipe = setup(config, workdir, data_dir, cache_dir)
    baseline_dir = (
        pathlib.Path(baseline_checkpoint).absolute()
        if baseline_checkpoint
        else pipe.workdir / "baseline"
    )
    if 1 in phases:
        baseline_dir = phase1_train_baseline(pipe, baseline_checkpoint)
    hierarchy = None
    if 2 in phases:
        hierarchy = phase2_discover_hierarchy(pipe, baseline_dir)
    if hierarchy is None and ({3, 4} & set(phases)):
        path = pipe.workdir / "hierarchy.json"
        if not path.exists():
            raise ValueError(f"{path}: phases 3 and 4 need phase 2's hierarchy; run phase 2 first")
        hierarchy = Hierarchy.load(path)
    leak_dir = pipe.workdir / "leak"
    if 3 in phases:
        leak_dir = phase3_train_leak(pipe, hierarchy, baseline_dir)
    report = None
    if 4 in phases:
        report = phase4_report(pipe, hierarchy, baseline_dir, leak_dir)
    logger.info("phases %s done in %.1f s", ",".join(map(str, phases)), time.perf_counter() - start)
    return report


_CONFIG = config_flags.DEFINE_config_file(
    "config",
    "experiments/configs/semkitti.py",
    "Pipeline config (path[:variant]).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/semkitti", "Output directory.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "SemanticKITTI root holding sequences/; default: the synthetic world."
)
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", None, "Synthetic-world cache (default beside workdir)."
)
_PHASES = flags.DEFINE_list("phases", ["1", "2", "3", "4"], "Phases to run, e.g. 1,2.")
_BASELINE = flags.DEFINE_string(
    "baseline_checkpoint", None, "Run directory of an existing baseline (skips training it)."
)


_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache_dir",
    None,
    "JAX persistent compilation cache (default <workdir>/../jax_cache; '' disables it).",
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    mesh_lib.maybe_initialize_distributed()
    cache = _COMPILATION_CACHE.value
    if cache is None:
        cache = str(pathlib.Path(_WORKDIR.value).absolute().parent / "jax_cache")
    if cache:  # a resumed or repeated run skips the (minutes of) compilation of the sparse model
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax is chatty at INFO
    run_pipeline(
        _CONFIG.value,
        _WORKDIR.value,
        _DATA_DIR.value,
        tuple(int(p) for p in _PHASES.value),
        _BASELINE.value,
        _CACHE_DIR.value,
    )


if __name__ == "__main__":
    app.run(main)
