"""One process of the multi-process tests (tests/test_multiprocess.py): the whole LEAK pipeline
(pointmlp on the smoke synthetic world) on this process's share of the data, then this process's
view of the results, written for the test to compare with a one-process run.

    python tests/multiprocess_worker.py --workdir W --cache_dir C --out O [--phases 1]
        [--die_after_step N]

A multi-process launch sets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID
(leakjax.train.mesh.maybe_initialize_distributed) and XLA_FLAGS with one CPU device per process.
`--die_after_step N`: the last process kills itself (SIGKILL) once the baseline's checkpoint of
step N is written, as a crashed host would.
"""

import argparse
import json
import logging
import os
import pathlib
import signal

import jax
import numpy as np

from experiments.configs import semkitti as semkitti_configs
from leakjax import pipeline
from leakjax.leak import Hierarchy
from leakjax.train import checkpoint, trainer
from leakjax.train import mesh as mesh_lib


def config():
    """The smoke pipeline with pointmlp (compiles in about a second) and dropout on."""
    config = semkitti_configs.get_config("smoke")
    config.model.name = "pointmlp"
    config.model.kwargs = {"hidden_sizes": (16, 16), "dropout_rate": 0.1}
    config.train.num_steps = 4
    config.train.checkpoint_every = 2
    config.train.eval_every = 2
    config.train.max_checkpoints_to_keep = 3
    return config


def die_after_checkpoint(step_to_die: int) -> None:
    """The last process SIGKILLs itself right after saving (its part of) checkpoint `step`."""
    save = checkpoint.Checkpointer.save

    def save_then_die(self, state, metadata, force=False):
        save(self, state, metadata, force)
        step = int(jax.device_get(state.step))
        if step == step_to_die and jax.process_index() == jax.process_count() - 1:
            self.wait()
            logging.getLogger("leakjax").info(
                "process %d: killed at step %d", jax.process_index(), step
            )
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.Checkpointer.save = save_then_die


def flat(tree) -> dict[str, np.ndarray]:
    """{"params/Dense_0/kernel": array, ...} of a pytree of (replicated) arrays."""
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(v) for path, v in leaves
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--cache_dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--phases", default="1,2,3,4")
    parser.add_argument("--die_after_step", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    mesh_lib.maybe_initialize_distributed(initialization_timeout_s=60)
    if args.die_after_step is not None:
        die_after_checkpoint(args.die_after_step)
    run_config = config()
    phases = tuple(int(p) for p in args.phases.split(","))
    report = pipeline.run_pipeline(
        run_config, args.workdir, phases=phases, cache_dir=args.cache_dir
    )

    # This process's view: the final states (restored by every process), the hierarchy it used.
    pipe = pipeline.setup(run_config, args.workdir, cache_dir=args.cache_dir)
    runs = {
        "baseline": pipeline.phases.baseline_settings(run_config, pipe.data.label_space.num_micro)
    }
    if 3 in phases:
        hierarchy = Hierarchy.load(pipe.workdir / "hierarchy.json")
        runs["leak"] = pipeline.leak_settings(run_config, hierarchy)
    arrays = {}
    for run, settings in runs.items():
        _, state, _ = trainer.load_state(
            run_config, pipe.workdir / run, pipe.mesh, pipe.data, settings
        )
        for name in ("params", "batch_stats", "prototypes"):
            arrays.update({f"{run}/{name}/{k}": v for k, v in flat(getattr(state, name)).items()})
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index = jax.process_index()
    np.savez(out / f"process{index}.npz", **arrays)
    view = {
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "report": report,
    }
    (out / f"process{index}.json").write_text(json.dumps(view, default=str))


if __name__ == "__main__":
    main()
