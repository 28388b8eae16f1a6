"""Benchmark of Cylinder3D: parameter count vs. the released architecture, and CPU cost.

  python -m experiments.bench_cylinder3d [--init-sizes 8 16 32] [--reps 7] [--out PATH]

1. Parameter count of our Flax model at init_size 32 (trainable `params` only) next to the count
   of the released PyTorch model computed independently from its layer list (see
   `released_parameter_count`): conv weights are kernel volume x C_in x C_out (spconv convs have no
   bias except the classifier), Linear layers C_in x C_out + C_out, BatchNorm 2 x C (weight and
   bias; running statistics are buffers, not parameters, in both frameworks).
2. On one ~120k-point synthetic scan, CPU with 2 threads: forward time (eval mode), train-step time
   (forward + backward + adam update, loss = CE + Lovasz-softmax on the voxel logits) and peak
   memory, for each init_size. Every (init_size, mode) runs in its own subprocess so that
   `ru_maxrss` is that setting's peak resident memory (compilation included); XLA's own estimate
   (arguments + outputs + temporaries of the compiled executable) is reported beside it.
   Times are the median of `--reps` runs after one warm-up run.
Prints a table and writes JSON (default bench_results/bench_cylinder3d.json).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

DEFAULT_OUT = "bench_results/bench_cylinder3d.json"
NUM_CLASSES = 20


def released_parameter_count(
    init_size: int = 32,
    num_classes: int = NUM_CLASSES,
    point_feature_dim: int = 9,
    point_widths: tuple[int, ...] = (64, 128, 256, 256),
    compressed: int = 16,
) -> dict[str, int]:
    """Parameters of the released `cylinder_asym`, per component, from its layer shapes."""

    def conv(kernel, c_in, c_out):
        return int(np.prod(kernel)) * c_in * c_out

    def bn(c):
        return 2 * c

    counts = {}
    # cylinder_fea: BN(9), then Linear/BN/ReLU x3, then a bare Linear; compression Linear + ReLU.
    point = bn(point_feature_dim)
    c_in = point_feature_dim
    for index, width in enumerate(point_widths):
        point += c_in * width + width
        if index < len(point_widths) - 1:
            point += bn(width)
        c_in = width
    point += point_widths[-1] * compressed + compressed
    counts["point_net"] = point
    i = init_size
    k133, k313, k333 = (1, 3, 3), (3, 1, 3), (3, 3, 3)
    # ResContextBlock(16, i): conv1 (1,3,3), conv1_2 (3,1,3), conv2 (3,1,3), conv3 (1,3,3), 4 BN.
    counts["context"] = (
        conv(k133, compressed, i)
        + conv(k313, i, i)
        + conv(k313, compressed, i)
        + conv(k133, i, i)
        + 4 * bn(i)
    )
    # ResBlocks: conv1 (3,1,3) in->out, conv1_2 (1,3,3), conv2 (1,3,3) in->out, conv3 (3,1,3),
    # 4 BN, pooling SparseConv3d 3x3x3 out->out.
    down_channels = [(i, 2 * i), (2 * i, 4 * i), (4 * i, 8 * i), (8 * i, 16 * i)]
    for index, (c_in, c_out) in enumerate(down_channels):
        counts[f"down{index}"] = (
            conv(k313, c_in, c_out)
            + conv(k133, c_out, c_out)
            + conv(k133, c_in, c_out)
            + conv(k313, c_out, c_out)
            + 4 * bn(c_out)
            + conv(k333, c_out, c_out)
        )
    # UpBlocks: trans 3x3x3 in->out + BN, inverse conv 3x3x3 out->out, conv1 (1,3,3), conv2
    # (3,1,3), conv3 3x3x3 out->out, each + BN.
    up_channels = [(16 * i, 16 * i), (16 * i, 8 * i), (8 * i, 4 * i), (4 * i, 2 * i)]
    for index, (c_in, c_out) in enumerate(up_channels):
        counts[f"up{index}"] = (
            conv(k333, c_in, c_out)
            + bn(c_out)
            + conv(k333, c_out, c_out)
            + conv(k133, c_out, c_out)
            + conv(k313, c_out, c_out)
            + conv(k333, c_out, c_out)
            + 3 * bn(c_out)
        )
    # ReconBlock(2i, 2i): (3,1,1), (1,3,1), (1,1,3) convs, each + BN.
    counts["recon"] = 3 * conv((3, 1, 1), 2 * i, 2 * i) + 3 * bn(2 * i)
    # Classifier: SubMConv3d(4i, classes, 3x3x3, bias=True).
    counts["logits"] = conv(k333, 4 * i, num_classes) + num_classes
    counts["total"] = sum(counts.values())
    return counts


def flax_parameter_count(init_size: int) -> dict[str, int]:
    """Our model's `params` per top-level submodule (shape evaluation only, no compute)."""
    import jax

    from leakjax.models.cylinder3d import Cylinder3D

    model = Cylinder3D(init_size=init_size, capacities=(64, 64, 64, 64, 64))
    batch = _tiny_batch()
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))
    counts = {
        name: int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))
        for name, tree in variables["params"].items()
    }
    counts["total"] = sum(counts.values())
    return counts


def _tiny_batch():
    points = np.zeros((1, 8, 4), np.float32)
    points[0, :, 0] = np.linspace(2.0, 20.0, 8)
    return {
        "points": points,
        "point_mask": np.ones((1, 8), bool),
        "labels": np.ones((1, 8), np.int32),
    }


def synthetic_scan(azimuth_steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One scan of the synthetic street world: points float32 [P, 4], training ids int32 [P]."""
    from datasets.semantic_kitti.labels import to_train_ids
    from datasets.synthetic import SensorConfig, StreetWorld, render_scan

    scan = render_scan(StreetWorld(seed, 0), SensorConfig(azimuth_steps=azimuth_steps), 0, seed)
    return scan.points, to_train_ids(scan.semantic).astype(np.int32)


def make_batch(points: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """A batch of one scan padded to a multiple of 4096 points."""
    capacity = -(-len(points) // 4096) * 4096
    batch = {
        "points": np.zeros((1, capacity, 4), np.float32),
        "point_mask": np.zeros((1, capacity), bool),
        "labels": np.zeros((1, capacity), np.int32),
    }
    batch["points"][0, : len(points)] = points
    batch["point_mask"][0, : len(points)] = True
    batch["labels"][0, : len(points)] = labels
    return batch


def level_counts(batch: dict[str, np.ndarray]) -> list[int]:
    """Active voxels per level (input grid first) of the released grid and down-sampling."""
    import jax

    from leakjax import sparse
    from leakjax.models.cylinder3d import DOWN_STRIDES, Cylinder3D

    grid = Cylinder3D().grid
    capacity = batch["points"].shape[1]

    @jax.jit
    def counts(points, mask):
        voxels = sparse.voxelize(points[..., :3], mask, grid, capacity)
        x = sparse.SparseTensor(voxels.coords, voxels.coords, voxels.mask, grid.shape)
        out = [voxels.mask.sum()]
        for stride in DOWN_STRIDES:
            x, _, _ = sparse.downsample_map(x, stride=stride, out_capacity=capacity)
            out.append(x.mask.sum())
        return out

    return [int(c) for c in counts(batch["points"], batch["point_mask"])]


def bucket(count: int, margin: float = 1.1, step: int = 1024) -> int:
    return int(-(-int(count * margin) // step) * step)


def run_worker(init_size: int, mode: str, reps: int, azimuth_steps: int) -> dict:
    """Times one (init_size, mode) in this process; returns the measurements."""
    import resource

    import jax
    import optax

    from datasets.semantic_kitti.labels import LABEL_SPACE
    from leakjax.models.cylinder3d import Cylinder3D
    from leakjax.train import mesh as mesh_lib
    from leakjax.train.batch import point_cloud_spec
    from leakjax.train.state import state_from_variables
    from leakjax.train.steps import LossSettings, make_train_step

    points, labels = synthetic_scan(azimuth_steps)
    batch = make_batch(points, labels)
    counts = level_counts(batch)
    capacities = tuple(bucket(c) for c in counts)
    model = Cylinder3D(init_size=init_size, capacities=capacities)
    variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch)

    if mode == "forward":

        def step(variables, batch):
            logits, aux = model.apply(variables, batch, train=False)
            return logits, aux["overflow"]

        args = (variables, batch)
        fn = jax.jit(step)
    else:
        # The trainer's own step (leakjax/train/steps.py): voxel CE + Lovasz, Adam, one device.
        mesh = mesh_lib.make_data_mesh(jax.devices()[:1])
        optimizer = optax.adam(1e-3)
        train_step = make_train_step(
            model,
            optimizer,
            mesh,
            jax.random.key(0),
            LossSettings(lovasz_weight=1.0),
            LABEL_SPACE,
            point_cloud_spec(4),
            donate=False,
        )
        state = state_from_variables(variables, optimizer, mesh_lib.replicated_sharding(mesh))

        def step(state, batch):
            state, metrics = train_step(state, batch)
            return state, metrics["overflow"]

        args = (state, batch)
        fn = jax.jit(step)

    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    xla_bytes = None
    if memory is not None:
        xla_bytes = int(
            memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
        )
    times = []
    for rep in range(reps + 1):
        start = time.perf_counter()
        out = compiled(*args)
        jax.block_until_ready(out)
        if rep > 0:  # the first run is the warm-up
            times.append(time.perf_counter() - start)
        overflow = bool(np.asarray(out[1]).any())
        if mode == "train":
            args = (out[0], batch)
    return {
        "init_size": init_size,
        "mode": mode,
        "num_points": int(len(points)),
        "level_voxels": counts,
        "capacities": list(capacities),
        "overflow": overflow,
        "compile_s": compile_s,
        "times_s": times,
        "median_s": float(np.median(times)),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "xla_executable_mib": None if xla_bytes is None else xla_bytes / 2**20,
    }


def _worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "")
        + f" --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}"
    )
    return env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--init-sizes", type=int, nargs="*", default=[8, 16, 32])
    parser.add_argument("--modes", nargs="+", default=["forward", "train"])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--reps-32", type=int, default=None, help="fewer reps for init_size 32")
    parser.add_argument("--azimuth-steps", type=int, default=2800, help="2800 -> ~120k points")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--worker", nargs=2, metavar=("INIT_SIZE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        if hasattr(os, "sched_setaffinity"):
            cpus = sorted(os.sched_getaffinity(0))[: args.threads]
            os.sched_setaffinity(0, cpus)
        result = run_worker(int(args.worker[0]), args.worker[1], args.reps, args.azimuth_steps)
        print("RESULT " + json.dumps(result), flush=True)
        return

    ours = flax_parameter_count(32)
    released = released_parameter_count(32)
    print("Parameters at init_size 32 (trainable only; BN running stats excluded)")
    print(f"{'component':<12}{'ours':>12}{'released':>12}")
    for name in released:
        print(f"{name:<12}{ours.get(name, 0):>12,}{released[name]:>12,}")

    runs = []
    for init_size in args.init_sizes:
        for mode in args.modes:
            reps = args.reps_32 if (init_size == 32 and args.reps_32) else args.reps
            command = [
                sys.executable,
                "-m",
                "experiments.bench_cylinder3d",
                "--worker",
                str(init_size),
                mode,
                "--reps",
                str(reps),
                "--azimuth-steps",
                str(args.azimuth_steps),
                "--threads",
                str(args.threads),
            ]
            done = subprocess.run(
                command, env=_worker_env(args.threads), capture_output=True, text=True
            )
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                raise RuntimeError(f"worker {init_size} {mode} failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(lines[-1][len("RESULT ") :]))
            print(json.dumps(runs[-1]), flush=True)

    if runs:
        first = runs[0]
        print(
            f"\nScan: {first['num_points']} points, voxels per level {first['level_voxels']}, "
            f"capacities {first['capacities']}; CPU, {args.threads} threads"
        )
        print(
            f"{'init':>5} {'mode':>8} {'median s':>9} {'reps':>5} {'compile s':>10} "
            f"{'peak RSS MiB':>13} {'XLA MiB':>8} {'overflow':>9}"
        )
        for run in runs:
            xla = run["xla_executable_mib"]
            print(
                f"{run['init_size']:>5} {run['mode']:>8} {run['median_s']:>9.3f} "
                f"{len(run['times_s']):>5} {run['compile_s']:>10.1f} {run['peak_rss_mib']:>13.0f} "
                f"{(xla if xla is not None else float('nan')):>8.0f} {run['overflow']!s:>9}"
            )
    result = {
        "parameters_init32": {"ours": ours, "released": released},
        "threads": args.threads,
        "runs": runs,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
