"""Benchmark: the LEAK train step's time over the baseline train step's (goal <= 1.05).

Same model, same batch, same optimiser; the LEAK step adds the prototype update, the two alignment
losses and the fairness loss. Both steps are compiled and warmed up, then timed interleaved
(baseline, LEAK, baseline, ...) so machine load hits both alike; the medians are compared. The
batch comes from the pipeline's data (synthetic world by default). Prints a table and writes JSON.

    python -m experiments.bench_leak_step [--config experiments/configs/semkitti.py:smoke]
        [--repeats 7] [--out bench_results/bench_leak_step.json]
"""

import json
import pathlib
import platform
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from datasets.registry import load_dataset
from leakjax import leak
from leakjax.leak import LeakSettings, a_priori_grouping
from leakjax.train import mesh as mesh_lib
from leakjax.train import trainer
from leakjax.train.logging import readable_logs
from leakjax.train.steps import make_train_step

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/semkitti.py", "Pipeline config (model, data, batch size)."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "SemanticKITTI root (default: synthetic).")
_CACHE_DIR = flags.DEFINE_string("cache_dir", "workdirs/synthetic_cache", "Synthetic cache.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed runs of each step (>= 7).")
_OUT = flags.DEFINE_string("out", "bench_results/bench_leak_step.json", "JSON output path.")


def _time_call(step, state, batch) -> float:
    start = time.perf_counter()
    jax.block_until_ready(step(state, batch))
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    del argv
    readable_logs()
    config = _CONFIG.value
    if _REPEATS.value < 7:
        raise app.UsageError("--repeats must be >= 7")
    mesh = mesh_lib.make_data_mesh()
    data = load_dataset(config.data, _DATA_DIR.value, pathlib.Path(_CACHE_DIR.value))
    description = data.description
    host_batch = next(trainer.training_batches(config, data, 0))
    batch = mesh_lib.global_batch(host_batch, mesh)
    # Any grouping has the same cost; the a-priori categories need no baseline.
    labels = data.label_space
    settings = LeakSettings(
        tuple(
            int(v) for v in a_priori_grouping(labels.micro_names, labels.categories).micro_to_macro
        ),
        leak.LeakConfig(),
    )
    loss = trainer.loss_settings(config, labels, None)
    steps, states = {}, {}
    for name, leak_settings in (("baseline", None), ("leak", settings)):
        run_dir = pathlib.Path("/tmp") / f"bench_{name}"
        run = trainer.build_run(config, run_dir, mesh, data, leak_settings)
        run.checkpointer.close()
        states[name] = run.init_fn()
        steps[name] = make_train_step(
            run.model,
            run.tx,
            mesh,
            jax.random.key(0),
            loss,
            labels,
            data.spec,
            leak_settings,
            donate=False,
        )
        for _ in range(2):  # compile + warm-up
            _time_call(steps[name], states[name], batch)
    times = {"baseline": [], "leak": []}
    for _ in range(_REPEATS.value):
        for name in ("baseline", "leak"):
            times[name].append(_time_call(steps[name], states[name], batch))
    medians = {name: float(np.median(values)) for name, values in times.items()}
    ratio = medians["leak"] / medians["baseline"]
    result = {
        "benchmark": "leak_step_over_baseline_step",
        "model": config.model.name,
        "model_kwargs": {k: str(v) for k, v in config.model.kwargs.items()},
        "batch_size": config.train.batch_size,
        "point_capacity": int(host_batch["points"].shape[1]),
        "data": description,
        "devices": [str(d) for d in jax.devices()],
        "machine": platform.platform(),
        "repeats": _REPEATS.value,
        "times_s": times,
        "median_s": medians,
        "ratio": ratio,
        "goal": 1.05,
    }
    print(f"{'step':<10}{'median s':>12}{'min s':>10}{'max s':>10}")
    for name, values in times.items():
        print(f"{name:<10}{medians[name]:>12.4f}{min(values):>10.4f}{max(values):>10.4f}")
    print(f"LEAK / baseline = {ratio:.3f} (goal <= 1.05)")
    out = pathlib.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
