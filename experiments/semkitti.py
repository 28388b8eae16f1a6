"""LEAK on SemanticKITTI, end to end: `python -m experiments.semkitti [--workdir DIR] ...`.

A thin command line over the generic pipeline (leakjax/pipeline/phases.py): the four phases of the
paper, each resuming from its checkpoint or skipped when its outputs exist:
  1. train the baseline                                   -> <workdir>/baseline/
  2. predict on validation, confusion matrix, hierarchy   -> hierarchy.json, *.png
  3. train with LEAK (from scratch, same schedule)        -> <workdir>/leak/
  4. evaluate both                                         -> report.md, report.json, curves.png

Without --data_dir the synthetic LiDAR world is generated once into <workdir>/../synthetic_cache
(keyed by its settings; --cache_dir overrides) and its sequences 00 (train) and 08 (validation) are
used. Data-parallel over every device (batch sharded on the `data` mesh axis, state replicated).
"""

import pathlib

import jax
from absl import app, flags
from ml_collections import config_flags

from leakjax.pipeline import ALL_PHASES, run_pipeline
from leakjax.train import mesh as mesh_lib
from leakjax.train.logging import readable_logs

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
_PHASES = flags.DEFINE_list("phases", [str(p) for p in ALL_PHASES], "Phases to run, e.g. 1,2.")
_BASELINE = flags.DEFINE_string(
    "baseline_checkpoint", None, "Run directory of an existing baseline (skips training it)."
)
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache_dir",
    None,
    "JAX persistent compilation cache (default <workdir>/../jax_cache; '' disables it).",
)


def configure_runtime(workdir: str, compilation_cache: str | None) -> None:
    """Multi-host init, the persistent compilation cache and readable logs (our lines only)."""
    mesh_lib.maybe_initialize_distributed()
    if compilation_cache is None:
        compilation_cache = str(pathlib.Path(workdir).absolute().parent / "jax_cache")
    if compilation_cache:  # a resumed or repeated run skips the (minutes of) compilation
        jax.config.update("jax_compilation_cache_dir", compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    readable_logs()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    configure_runtime(_WORKDIR.value, _COMPILATION_CACHE.value)
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
