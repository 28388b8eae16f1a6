"""The command line shared by the LEAK pipeline's entry points (experiments/semkitti.py, voc.py).

    python -m experiments.<name> [--workdir DIR] [--data_dir DIR] [--config PATH[:variant]]
        [--phases 1,2,3,4] [--baseline_checkpoint DIR] [--cache_dir DIR]
        [--compilation_cache_dir DIR] [--config.<field>=<value> ...]

`run(default_config, default_workdir)` defines the flags and runs `leakjax.pipeline.run_pipeline`;
an entry point may pass `instead`, a function of the work directory that does another job (e.g.
experiments/s3dis.py's `--pool_folds`) and returns True when it did, so the pipeline is not run.
"""

import pathlib
from collections.abc import Callable

import jax
from absl import app, flags
from ml_collections import config_flags

from leakjax.pipeline import ALL_PHASES, run_pipeline
from leakjax.train import host_memory
from leakjax.train import mesh as mesh_lib
from leakjax.train.logging import readable_logs


def configure_runtime(workdir: str, compilation_cache: str | None) -> None:
    """Multi-host init, on CPU XLA's step buffers kept in the process (host_memory.py), the
    persistent compilation cache and readable logs (our lines only)."""
    mesh_lib.maybe_initialize_distributed()
    host_memory.keep_host_buffers()
    if compilation_cache is None:
        compilation_cache = str(pathlib.Path(workdir).absolute().parent / "jax_cache")
    if compilation_cache:  # a resumed or repeated run skips the (minutes of) compilation
        jax.config.update("jax_compilation_cache_dir", compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    readable_logs()


def run(
    default_config: str,
    default_workdir: str,
    data_help: str,
    instead: Callable[[str], bool] | None = None,
) -> None:
    """Defines the flags (defaults given) and runs the pipeline under absl (module docstring)."""
    config = config_flags.DEFINE_config_file(
        "config", default_config, "Pipeline config (path[:variant]).", lock_config=True
    )
    workdir = flags.DEFINE_string("workdir", default_workdir, "Output directory.")
    data_dir = flags.DEFINE_string("data_dir", None, data_help)
    cache_dir = flags.DEFINE_string(
        "cache_dir", None, "Synthetic stand-in cache (default beside workdir)."
    )
    phases = flags.DEFINE_list("phases", [str(p) for p in ALL_PHASES], "Phases, e.g. 1,2.")
    baseline = flags.DEFINE_string(
        "baseline_checkpoint", None, "Run directory of an existing baseline (skips training it)."
    )
    compilation_cache = flags.DEFINE_string(
        "compilation_cache_dir",
        None,
        "JAX persistent compilation cache (default <workdir>/../jax_cache; '' disables it).",
    )

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        configure_runtime(workdir.value, compilation_cache.value)
        if instead is not None and instead(workdir.value):
            return
        run_pipeline(
            config.value,
            workdir.value,
            data_dir.value,
            tuple(int(p) for p in phases.value),
            baseline.value,
            cache_dir.value,
        )

    app.run(main)
