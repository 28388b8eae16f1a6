"""Benchmark of RandLA-Net: forward, train step and input pipeline, host vs device kNN.

  python -m experiments.bench_randla [--points 45056] [--batch 1] [--reps 7] [--device-reps 3]
      [--device-points N] [--parts forward train host device] [--threads 2] [--out PATH]

The released SemanticKITTI setting (variant `randla_full` of experiments/configs/semkitti.py:
4 layers, d_out 16-64-128-256, k 16, ratios 4-4-4-4, xyz input; CE weighted 1 / (f + 0.02) over
one synthetic scan's class counts, averaged over points; Adam 1e-2) on crops of `--points` points
(45056 released) of one ~120k-point synthetic scan, batch `--batch`, on the backend jax picks
(the table says which):

1. forward (eval mode) and train step (forward + backward + Adam, the trainer's
   `make_train_step`) on batches prepared by the model's own `prepare_batch`;
2. input pipeline, crops with all their indices per second: the released crop (`randla_crop`),
   padding and `prepare_batch` (shuffle + the cKDTree index pyramid, `sampling_hierarchy_host`),
   in one thread and in a pool of `--threads` worker threads (`--host-crops` crops per rep),
   against the train step's consumption (steps/s x batch); the better of the two thread counts
   is the input's rate (on a loaded host the pool can lose to one thread);
3. the same pyramid on device (`sampling_hierarchy_device`, chunked brute-force kNN), jitted,
   timed with `--device-reps` reps (default 3: ~6 s per 45056-point crop on 2 CPU cores) on crops
   of `--device-points` points (default --points; a smaller crop is extrapolated to --points as
   N^2, and the table says so), with its agreement with the host pyramid (fraction of equal
   level-0 neighbour indices; equidistant ties may be ordered differently).
Each part runs in its own subprocess pinned to `--threads` cores: `ru_maxrss` is its peak
resident memory (compilation included), with the device's peak where the backend reports one.
Times are medians after one warm-up run. Prints a table and a recommendation derived from the
measured ratios; writes JSON (default bench_results/bench_randla.json).
"""

import argparse
import itertools
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

from experiments.bench_cylinder3d import synthetic_scan

DEFAULT_OUT = "bench_results/bench_randla.json"
PARTS = ("forward", "train", "host", "device")


# Shared with experiments/bench_range.py.
def pin_threads(threads: int) -> None:
    """Pin this process to its first `threads` cores (XLA's CPU pool and numpy follow)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])


def run_workers(module: str, jobs: list[list[str]], common: list[str]) -> list[dict]:
    """Runs `python -m module --worker *job *common` per job, one subprocess each (the backend is
    left to jax, unlike bench_cylinder3d's CPU-only workers); returns their RESULT dicts."""
    runs = []
    for job in jobs:
        command = [sys.executable, "-m", module, "--worker", *job, *common]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"worker {job} failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(lines[-1][len("RESULT ") :]))
        print(json.dumps(runs[-1]), flush=True)
    return runs


def time_compiled(fn, args: tuple, reps: int, carry=None) -> tuple:
    """jit-compiles fn(*args), runs it once (warm-up) then `reps` timed times; `carry(args, out)`
    gives the next call's arguments (a train state). Returns (last output, timing dict)."""
    import jax

    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    xla_mib = None
    if memory is not None:
        total = memory.argument_size_in_bytes + memory.output_size_in_bytes
        xla_mib = (total + memory.temp_size_in_bytes) / 2**20
    times = []
    for rep in range(reps + 1):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        if rep > 0:
            times.append(time.perf_counter() - start)
        if carry is not None:
            args = carry(args, out)
    timing = {"compile_s": compile_s, "times_s": times, "median_s": float(np.median(times))}
    return out, {**timing, "xla_executable_mib": xla_mib}


def time_train_step(config, model, variables, batch, class_counts, reps: int) -> dict:
    """`time_compiled` of the trainer's own step (`make_train_step`, one device, no LEAK) with
    the config's optimiser and L0 (`loss_settings`, class weights from `class_counts`)."""
    import jax

    from datasets.semantic_kitti.labels import LABEL_SPACE
    from leakjax.train import mesh as mesh_lib
    from leakjax.train.optim import make_optimizer
    from leakjax.train.state import state_from_variables
    from leakjax.train.steps import make_train_step
    from leakjax.train.trainer import loss_settings

    mesh = mesh_lib.make_data_mesh(jax.devices()[:1])
    tx, _ = make_optimizer(config.optimizer, config.train.num_steps)
    losses = loss_settings(config, LABEL_SPACE, class_counts)
    spec, key = model.input_spec(), jax.random.key(0)
    step = make_train_step(model, tx, mesh, key, losses, LABEL_SPACE, spec, donate=False)
    state = state_from_variables(variables, tx, mesh_lib.replicated_sharding(mesh))
    carry = lambda args, out: (out[0], args[1])  # noqa: E731  the next step's state
    return time_compiled(step, (state, batch), reps, carry)[1]


def time_host(fn, reps: int) -> dict:
    """fn() once (warm-up) then `reps` timed times."""
    times = []
    for rep in range(reps + 1):
        start = time.perf_counter()
        fn()
        if rep > 0:
            times.append(time.perf_counter() - start)
    return {"times_s": times, "median_s": float(np.median(times))}


def process_info() -> dict:
    """Backend, device kind, peak resident memory of this process and the device's peak."""
    import resource

    import jax

    device = jax.devices()[0]
    peak = (device.memory_stats() or {}).get("peak_bytes_in_use")
    return {
        "backend": jax.default_backend(),
        "device": device.device_kind,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "device_peak_mib": None if peak is None else peak / 2**20,
    }


def brute_force_pairs(points: int, ratios=(4, 4, 4, 4)) -> int:
    """Distances the device pyramid evaluates per crop: per level, N_l^2 (kNN) + N_l N_{l+1}
    (nearest kept point)."""
    from leakjax.points import hierarchy_sizes

    sizes = hierarchy_sizes(points, tuple(ratios))
    return sum(n * n + n * m for n, m in zip(sizes[:-1], sizes[1:]))


def recommend(backend: str, train_cps: float, host_cps: float, device_cps: float) -> dict:
    """Which kNN keeps the train step fed, from measured crops/s. On a CPU backend the input
    threads and the step share the cores, so their costs add; on an accelerator the host's input
    threads overlap the device step (the slower of the two sets the pace), while a device kNN
    adds its time to every step's."""
    host_path = 1 / (1 / host_cps + 1 / train_cps) if backend == "cpu" else min(host_cps, train_cps)
    device_path = 1 / (1 / device_cps + 1 / train_cps)
    return {
        "input_over_consumption": host_cps / train_cps,
        "host_path_cps": host_path,
        "device_path_cps": device_path,
        "choice": "host" if host_path >= device_path else "device",
    }


def run_worker(part: str, args) -> dict:
    import jax

    from datasets.semantic_kitti.labels import LABEL_SPACE
    from experiments.configs.semkitti import get_config
    from leakjax.train.input_pipeline import pad_batch
    from leakjax.train.trainer import build_model
    from leakjax.transforms import apply_transforms, build_transforms

    scan_points, scan_labels = synthetic_scan(args.azimuth_steps)
    points = args.device_points if part == "device" and args.device_points else args.points
    config = get_config("randla_full")
    config.data.transform_kwargs = {"randla_crop": {"num_points": points}}
    model = build_model(config, LABEL_SPACE)
    transforms = build_transforms(config.data.transforms, config.data.transform_kwargs)

    def crops(seeds):  # the released crops, padded into a batch (the trainer's collation)
        scan = {"points": scan_points, "labels": scan_labels}
        samples = [apply_transforms(scan, transforms, np.random.default_rng(s)) for s in seeds]
        return pad_batch(samples, points, model.input_spec(), LABEL_SPACE.no_label)

    result = {"part": part, "points": points, "batch": args.batch, "scan_points": len(scan_points)}
    seeds = itertools.count(1000)
    if part == "host":
        from concurrent.futures import ThreadPoolExecutor

        def prepared_crop(seed):
            return model.prepare_batch(crops([seed]))

        n = args.host_crops
        crop_only = time_host(lambda: crops([next(seeds)]), args.reps)
        single = time_host(lambda: [prepared_crop(next(seeds)) for _ in range(n)], args.reps)
        with ThreadPoolExecutor(args.threads) as pool:
            batch_seeds = lambda: [next(seeds) for _ in range(n)]  # noqa: E731
            pooled = time_host(lambda: list(pool.map(prepared_crop, batch_seeds())), args.reps)
        result.update(
            crops_per_rep=n,
            crop_only_s=crop_only["median_s"],
            one_thread=single,
            pool=pooled,
            one_thread_cps=n / single["median_s"],
            pool_cps=n / pooled["median_s"],
        )
        return {**result, **process_info()}

    batch = model.prepare_batch(crops(range(args.batch)))
    if part == "device":
        from leakjax.points import sampling_hierarchy_device

        ratios, k = tuple(model.sub_sampling_ratio), model.k_n

        def pyramid(xyz, mask):
            return sampling_hierarchy_device(xyz[..., :3], ratios, k, mask.sum(axis=1))

        inputs = (batch["points"], batch["point_mask"])
        out, timing = time_compiled(pyramid, inputs, args.device_reps)
        agree = float(np.mean(np.asarray(out.neighbours[0]) == batch["neighbours_0"]))
        return {**result, **timing, "agree_neighbours_0": agree, **process_info()}

    batch = jax.device_put(batch)
    variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch)
    if part == "forward":
        forward = lambda v, b: model.apply(v, b, train=False)[0]  # noqa: E731
        _, timing = time_compiled(forward, (variables, batch), args.reps)
    else:
        counts = np.bincount(scan_labels, minlength=LABEL_SPACE.num_classes)
        timing = time_train_step(config, model, variables, batch, counts, args.reps)
    return {**result, **timing, **process_info()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=45056)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--device-reps", type=int, default=3)
    parser.add_argument("--device-points", type=int, default=None, help="default: --points")
    parser.add_argument("--host-crops", type=int, default=4, help="crops per host rep")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--azimuth-steps", type=int, default=2800, help="2800 -> ~120k points")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        pin_threads(args.threads)
        print("RESULT " + json.dumps(run_worker(args.worker, args)), flush=True)
        return

    common = [*(argv if argv is not None else sys.argv[1:])]
    runs = {
        r["part"]: r
        for r in run_workers("experiments.bench_randla", [[p] for p in args.parts], common)
    }
    first = next(iter(runs.values()))
    print(
        f"\nRandLA-Net (randla_full) on {first['backend']} ({first['device']}), {args.threads} "
        f"threads; crops of {args.points} points of a {first['scan_points']}-point scan, "
        f"batch {args.batch}; forward / train per batch, host and device pyramid per crop"
    )
    rates, rows = {}, []  # rows: (name, seconds, reps, compile s, run, crops/s)
    for part, name in (("forward", "forward (eval)"), ("train", "train step (fwd+bwd+Adam)")):
        if part in runs:
            r = runs[part]
            rates[part] = args.batch / r["median_s"]
            rows.append((name, r["median_s"], len(r["times_s"]), r["compile_s"], r, rates[part]))
    if "host" in runs:
        r = runs["host"]
        rates["host"] = max(r["one_thread_cps"], r["pool_cps"])  # a pipeline picks the best
        for name, cps in (
            ("host: crop only", 1 / r["crop_only_s"]),
            ("host: crop + pyramid, 1 thread", r["one_thread_cps"]),
            (f"host: crop + pyramid, {args.threads} threads", r["pool_cps"]),
        ):
            rows.append((name, 1 / cps, args.reps, None, r, cps))
    if "device" in runs:
        r = runs["device"]
        per_crop = r["median_s"] / args.batch
        scale = (args.points / r["points"]) ** 2  # brute force: N^2
        rates["device"] = 1 / (per_crop * scale)
        name = f"device pyramid ({r['points']} pts, --device-reps)"
        rows.append((name, per_crop, len(r["times_s"]), r["compile_s"], r, 1 / per_crop))
    print(
        f"{'part':<40}{'median s':>9}{'reps':>5}{'compile s':>10}{'peak RSS MiB':>13}"
        f"{'dev MiB':>8}{'crops/s':>9}"
    )
    nan = float("nan")
    for name, seconds, reps, compile_s, run, cps in rows:
        dev = nan if run.get("device_peak_mib") is None else run["device_peak_mib"]
        print(
            f"{name:<40}{seconds:>9.3f}{reps:>5}{compile_s or nan:>10.1f}"
            f"{run['peak_rss_mib']:>13.0f}{dev:>8.0f}{cps:>9.2f}"
        )
    if "device" in runs:
        if scale != 1:
            print(f"device pyramid extrapolated (N^2) to {args.points} points: ", end="")
            print(f"{1 / rates['device']:.3f} s per crop")
        agree = runs["device"]["agree_neighbours_0"]
        print(f"device vs host pyramid, equal level-0 neighbour indices: {agree:.4f}")

    result = {"args": vars(args), "runs": runs, "rates_crops_per_s": rates}
    if {"train", "host", "device"} <= set(rates):
        backend = first["backend"]
        rec = recommend(backend, rates["train"], rates["host"], rates["device"])
        result["recommendation"] = rec
        ratio = rec["input_over_consumption"]
        threshold = args.batch / rates["host"]
        pairs = brute_force_pairs(args.points)
        print("\nRecommendation (from the measured rates):")
        print(
            f"  input: host crop + cKDTree pyramid (best of 1 / {args.threads} threads) "
            f"{rates['host']:.2f} crops/s vs train step consumption {rates['train']:.2f} crops/s: "
            f"ratio {ratio:.2f} "
            f"({'the input keeps up' if ratio >= 1 else 'the input is the bottleneck'})"
        )
        print(
            f"  device pyramid {rates['device']:.3f} crops/s: host / device = "
            f"{rates['host'] / rates['device']:.1f} ({pairs:.3g} brute-force distances per crop)"
        )
        how = "cores shared, costs add" if backend == "cpu" else "input overlaps the step"
        print(
            f"  this {backend}: host kNN {rec['host_path_cps']:.2f} crops/s ({how}) vs device kNN "
            f"{rec['device_path_cps']:.2f} crops/s -> use {rec['choice']} kNN"
        )
        print(
            f"  GPU/TPU: host kNN on {args.threads} input cores keeps up while a step of batch "
            f"{args.batch} takes >= {threshold:.3f} s (scales ~ with input cores per chip) and "
            "overlaps the step for free; move kNN on device only where the host is the "
            "bottleneck (fast steps, few host cores per chip, e.g. TPU hosts) and the device "
            "pyramid costs less than the step's wait for input."
        )
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
