"""Benchmark of Cylinder3D: parameter count vs. the released architecture, and CPU cost, optionally
next to the released PyTorch + spconv network (the "peer") timed on the same scans.

  python -m experiments.bench_cylinder3d [--config released|default] [--init-sizes 8 16 32]
      [--reps 7] [--out PATH] [--peer ../shared/tools/cylinder3d_peer.py]

1. Parameter count of our Flax model at init_size 32 (trainable `params` only) next to the count
   of the released PyTorch model computed independently from its layer list (see
   `released_parameter_count`): conv weights are kernel volume x C_in x C_out (spconv convs have no
   bias except the classifier), Linear layers C_in x C_out + C_out, BatchNorm 2 x C (weight and
   bias; running statistics are buffers, not parameters, in both frameworks).
2. CPU with 2 threads: forward time (eval mode), train-step time (forward + backward + adam
   update, the trainer's `make_train_step` with loss = CE + Lovasz-softmax on the voxel logits,
   no class weights) and peak memory, per setting. Every (init_size, mode) runs in its own
   subprocess so that `ru_maxrss` is that setting's peak resident memory (compilation included);
   XLA's own estimate (arguments + outputs + temporaries of the compiled executable) is reported
   beside it. Times are the median of `--reps` runs after one warm-up run. Workers run as the
   entry points do (`--host-buffers keep`, leakjax/train/host_memory.py: synchronous CPU dispatch,
   XLA's step buffers kept in the process); `--host-buffers fresh` measures JAX's defaults.
   `--config` picks what runs (`bench_setup`):
     released  (the default) the released grid 480x360x32 and point widths 64 128 256 256 at each
               of `--init-sizes`, capacities sized on the scan; one ~120k-point synthetic scan
               (2800 azimuth steps) padded to a multiple of 4096 points.
     default   leakjax's CPU default Cylinder3D: the model kwargs of the default variant of
               experiments/configs/semkitti.py as they are (grid 120x90x16, init_size 8,
               point widths 16 32 64 64, its capacities); a batch of its train.batch_size (2)
               different synthetic scans (seeds 0, 1) of its sensor (512 azimuth steps, ~30k
               points each) padded to its smallest fitting bucket.
3. With `--peer PATH` (the external tool cylinder3d_peer.py; the project does not need it): after
   our forward and train-step runs of each init_size, the peer times the released network (torch
   + spconv 2, CPU) on the same scans (the batch's real points and labels, exported to an .npz;
   the workers' batch checksum must match it), with the same grid, init_size, point widths, voxel
   input width, ResContextBlock bn1 quirk, threads (pinned to the same CPUs), reps and warm-up.
   Its train step is forward + Lovasz-softmax + CrossEntropy (ignore 0) on the active voxels'
   logits + Adam 1e-3, i.e. our loss: it runs with `--ce-weights none` (its default, unweighted CE
   as ours). Ours and the peer's measurements alternate per init_size, so machine noise hits both
   alike; the load average at start and end is recorded (ours and the peer's). Reported per
   setting: the peer's forward / train-step medians and peak RSS (after its forward timings, and
   at its end: one process does both, so its train peak includes the forward's), the ratios
   ours / peer `ratio_forward` and `ratio_train` (> 1: we are slower), our own
   `train_over_forward`, both parameter counts and whether both found the same active voxels per
   level and scan. Without `--peer` the benchmark prints only its own figures.
Prints tables and writes JSON (default bench_results/bench_cylinder3d.json).

Full comparison, from the repository root (the peer is /work/shared/tools/cylinder3d_peer.py;
it creates or reuses its venv /tmp/spconv_peer_venv); add `--out PATH` to keep both JSONs:
  python -m experiments.bench_cylinder3d --config released --peer ../shared/tools/cylinder3d_peer.py
  python -m experiments.bench_cylinder3d --config default --peer ../shared/tools/cylinder3d_peer.py
"""

import argparse
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

DEFAULT_OUT = "bench_results/bench_cylinder3d.json"
NUM_CLASSES = 20
CONFIGS = ("released", "default")
RELEASED_AZIMUTH_STEPS = 2800  # -> ~120k points
WARMUP = 1  # untimed runs before the timed ones, ours and the peer's


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


def flax_parameter_count(init_size: int, model_kwargs: dict | None = None) -> dict[str, int]:
    """Our model's `params` per top-level submodule (shape evaluation only, no compute);
    `model_kwargs` (e.g. a config's) override the released architecture at `init_size`."""
    import jax

    from leakjax.models.cylinder3d import Cylinder3D

    model = Cylinder3D(
        **{"init_size": init_size, "capacities": (64, 64, 64, 64, 64), **(model_kwargs or {})}
    )
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


def bench_setup(
    config: str, init_size: int | None = None, azimuth_steps: int | None = None
) -> dict:
    """What `--config` runs (module docstring): our model kwargs, the scans and their padding.

    released: {"init_size": init_size} (the released grid and widths; capacities are sized on the
    scan in `run_worker`), one scan of 2800 azimuth steps padded to a multiple of 4096.
    default: experiments/configs/semkitti.py's default variant: its model.kwargs as they are
    (`init_size`, if given, must be its own), train.batch_size scans (seeds 0, 1, ...) of its
    sensor's azimuth steps, padded to the smallest of its buckets that holds the longest.
    `azimuth_steps` replaces the scans' azimuth steps.
    """
    if config == "released":
        return {
            "model_kwargs": {"init_size": init_size},
            "seeds": (0,),
            "azimuth_steps": azimuth_steps or RELEASED_AZIMUTH_STEPS,
            "buckets": None,
        }
    if config != "default":
        raise ValueError(f"config {config!r}: expected one of {CONFIGS}")
    from experiments.configs.semkitti import get_config

    default = get_config("default")
    kwargs = dict(default.model.kwargs)
    if init_size is not None and init_size != kwargs["init_size"]:
        raise ValueError(f"--config default has init_size {kwargs['init_size']}, not {init_size}")
    return {
        "model_kwargs": kwargs,
        "seeds": tuple(range(default.train.batch_size)),
        "azimuth_steps": azimuth_steps
        or int(default.data.synthetic.generator_kwargs["azimuth_steps"]),
        "buckets": tuple(int(b) for b in default.data.buckets),
    }


def make_batch(
    scans: list[tuple[np.ndarray, np.ndarray]], buckets: tuple[int, ...] | None = None
) -> dict[str, np.ndarray]:
    """A batch of scans [(points, labels), ...] padded to the smallest of `buckets` that holds
    the longest scan (no buckets, or none large enough: a multiple of 4096 points)."""
    longest = max(len(points) for points, _ in scans)
    fitting = [b for b in buckets or () if b >= longest]
    capacity = min(fitting) if fitting else -(-longest // 4096) * 4096
    batch = {
        "points": np.zeros((len(scans), capacity, 4), np.float32),
        "point_mask": np.zeros((len(scans), capacity), bool),
        "labels": np.zeros((len(scans), capacity), np.int32),
    }
    for index, (points, labels) in enumerate(scans):
        batch["points"][index, : len(points)] = points
        batch["point_mask"][index, : len(points)] = True
        batch["labels"][index, : len(points)] = labels
    return batch


def bench_batch(setup: dict) -> dict[str, np.ndarray]:
    """The batch a setting measures (the same in our workers and, exported, for the peer)."""
    scans = [synthetic_scan(setup["azimuth_steps"], seed) for seed in setup["seeds"]]
    return make_batch(scans, setup["buckets"])


def real_scans(batch: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The scans of a padded batch: points float32 [P_b, 4], labels int32 [P_b], real entries."""
    return [
        (batch["points"][b][mask], batch["labels"][b][mask].astype(np.int32))
        for b, mask in enumerate(batch["point_mask"])
    ]


def batch_digest(batch: dict[str, np.ndarray]) -> str:
    """SHA-1 of the batch's real points and labels, scan by scan."""
    digest = hashlib.sha1()
    for points, labels in real_scans(batch):
        digest.update(np.ascontiguousarray(points, np.float32).tobytes())
        digest.update(np.ascontiguousarray(labels, np.int32).tobytes())
    return digest.hexdigest()


def export_scans(batch: dict[str, np.ndarray], path: str | os.PathLike) -> str:
    """Writes the batch's real points/labels as the peer's input .npz (points_0, labels_0,
    points_1, ...: one batch; no padding); returns their `batch_digest`."""
    arrays = {}
    for index, (points, labels) in enumerate(real_scans(batch)):
        arrays[f"points_{index}"] = points
        arrays[f"labels_{index}"] = labels
    np.savez(path, **arrays)
    return batch_digest(batch)


def level_counts(batch: dict[str, np.ndarray], grid) -> list[list[int]]:
    """Active voxels per scan (outer) and level (input grid first) on `grid` (a VoxelGrid) with
    the released down-sampling."""
    import jax

    from leakjax import sparse
    from leakjax.models.cylinder3d import DOWN_STRIDES

    capacity = batch["points"].shape[1]

    @jax.jit
    def counts(points, mask):
        voxels = sparse.voxelize(points[..., :3], mask, grid, capacity)
        x = sparse.SparseTensor(voxels.coords, voxels.coords, voxels.mask, grid.shape)
        out = [voxels.mask.sum(-1)]
        for stride in DOWN_STRIDES:
            x, _, _ = sparse.downsample_map(x, stride=stride, out_capacity=capacity)
            out.append(x.mask.sum(-1))
        return out

    per_level = np.asarray(counts(batch["points"], batch["point_mask"]))  # [levels, B]
    return per_level.T.astype(int).tolist()


def bucket(count: int, margin: float = 1.1, step: int = 1024) -> int:
    return int(-(-int(count * margin) // step) * step)


def run_worker(
    init_size: int, mode: str, reps: int, azimuth_steps: int | None, config: str = "released"
) -> dict:
    """Times one (init_size, mode) of `config` in this process; returns the measurements."""
    import resource

    import jax
    import optax

    from datasets.semantic_kitti.labels import LABEL_SPACE
    from leakjax.models.cylinder3d import Cylinder3D
    from leakjax.train import mesh as mesh_lib
    from leakjax.train.batch import point_cloud_spec
    from leakjax.train.state import state_from_variables
    from leakjax.train.steps import LossSettings, make_train_step

    setup = bench_setup(config, init_size, azimuth_steps)
    batch = bench_batch(setup)
    kwargs = setup["model_kwargs"]
    per_scan = level_counts(batch, Cylinder3D(**kwargs).grid)
    counts = [max(level) for level in zip(*per_scan)]  # capacities are per scan
    capacities = tuple(kwargs.get("capacities") or (bucket(c) for c in counts))
    model = Cylinder3D(**{**kwargs, "capacities": capacities})
    variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch)

    if mode == "forward":

        def step(variables, batch):
            logits, aux = model.apply(variables, batch, train=False)
            return logits, aux["overflow"]

        args = (variables, batch)
        fn = jax.jit(step)
    else:
        # The trainer's own step (leakjax/train/steps.py): voxel CE + Lovasz, Adam, one device;
        # the loss of both configs (config.loss: unweighted CE, lovasz_weight 1).
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
    for rep in range(WARMUP + reps):
        start = time.perf_counter()
        out = compiled(*args)
        jax.block_until_ready(out)
        if rep >= WARMUP:
            times.append(time.perf_counter() - start)
        overflow = bool(np.asarray(out[1]).any())
        if mode == "train":
            args = (out[0], batch)
    return {
        "init_size": init_size,
        "mode": mode,
        "num_points": int(batch["point_mask"].sum()),
        "scan_points": [int(n) for n in batch["point_mask"].sum(1)],
        "level_voxels": counts,
        "level_voxels_per_scan": per_scan,
        "batch_sha1": batch_digest(batch),
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


def pinned_cpus(threads: int) -> list[int] | None:
    """The CPUs a measurement runs on: the first `threads` this process may use."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))[:threads]


def peer_command(
    peer: str | os.PathLike,
    npz: str | os.PathLike,
    json_out: str | os.PathLike,
    model,
    threads: int,
    reps: int,
    warmup: int = WARMUP,
) -> list[str]:
    """cylinder3d_peer.py's command line for the setting of `model` (our Cylinder3D): the same
    grid, init_size, point widths, voxel input width and ResContextBlock bn1 quirk; unweighted
    CE (+ Lovasz) as our loss. Run with `python3`: the tool re-executes itself in its venv."""
    return [
        "python3",
        str(peer),
        str(npz),
        "--grid",
        *(str(n) for n in model.grid_shape),
        "--init-size",
        str(model.init_size),
        "--point-widths",
        *(str(n) for n in model.point_widths),
        "--compressed",
        str(model.compressed_features),
        "--context-bn1",
        "dropped" if model.context_bn1_as_released else "applied",
        "--ce-weights",
        "none",
        "--threads",
        str(threads),
        "--reps",
        str(reps),
        "--warmup",
        str(warmup),
        "--json",
        str(json_out),
    ]


def run_peer(command: list[str], threads: int) -> dict:
    """Runs the peer on the CPUs our workers use; returns its JSON."""
    # The child inherits this thread's CPU set (pinned meanwhile); a preexec_fn would fork a
    # process in which jax's threads run.
    cpus = pinned_cpus(threads)
    if cpus is not None:
        own = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cpus)
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    finally:
        if cpus is not None:
            os.sched_setaffinity(0, own)
    if done.returncode != 0:
        raise RuntimeError(f"peer failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return json.loads(pathlib.Path(command[command.index("--json") + 1]).read_text())


def _load(load_avg) -> str:
    return "/".join(f"{x:.2f}" for x in load_avg)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def compare_setting(
    init_size: int, runs: list[dict], peer: dict | None, params: int | None = None
) -> dict:
    """One init_size: our medians and peaks (forward / train), train_over_forward, and with the
    peer its JSON under "peer", the ratios ours / peer, our parameter count `params` (the peer's
    is peer["params"]) and whether both found the same active voxels per level and scan."""
    ours = {run["mode"]: run for run in runs if run["init_size"] == init_size}
    median = lambda mode: ours[mode]["median_s"] if mode in ours else None  # noqa: E731
    setting = {
        "init_size": init_size,
        "forward_s": median("forward"),
        "train_s": median("train"),
        "train_over_forward": _ratio(median("train"), median("forward")),
        "peak_rss_mib": {mode: run["peak_rss_mib"] for mode, run in ours.items()},
    }
    if peer is not None:
        per_scan = next(iter(ours.values()))["level_voxels_per_scan"] if ours else None
        setting.update(
            peer=peer,
            params=params,
            ratio_forward=_ratio(setting["forward_s"], peer["forward"]["median_s"]),
            ratio_train=_ratio(setting["train_s"], peer["train_step"]["median_s"]),
            # the peer lists voxels per level, then per scan; ours per scan, then per level
            same_voxels=per_scan is not None
            and [list(level) for level in zip(*per_scan)] == peer["voxels_per_level_per_scan"],
        )
    return setting


def print_peer_table(settings: list[dict], threads: int) -> None:
    def cell(value, width, digits=3):
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    print(
        f"\nOurs vs. the peer ({settings[0]['peer']['peer']}), CPU, {threads} threads, "
        "median seconds; ratio = ours / peer (> 1: ours slower)"
    )
    print(
        f"{'init':>5} {'fwd ours':>9} {'fwd peer':>9} {'ratio':>6} {'train ours':>11} "
        f"{'train peer':>11} {'ratio':>6} {'ours t/f':>9} {'RSS ours f/t':>13} "
        f"{'RSS peer f/t':>13} {'params ours/peer':>20} {'voxels':>7}"
    )
    for s in settings:
        peer, rss = s["peer"], s["peak_rss_mib"]
        ours_rss = "/".join(f"{rss[m]:.0f}" if m in rss else "-" for m in ("forward", "train"))
        peer_rss = f"{peer['peak_rss_mib_after_forward']:.0f}/{peer['peak_rss_mib']:.0f}"
        params = f"{s['params'] or 0:,}/{peer['params']:,}"
        print(
            f"{s['init_size']:>5} {cell(s['forward_s'], 9)} {cell(peer['forward']['median_s'], 9)} "
            f"{cell(s['ratio_forward'], 6, 2)} {cell(s['train_s'], 11)} "
            f"{cell(peer['train_step']['median_s'], 11)} {cell(s['ratio_train'], 6, 2)} "
            f"{cell(s['train_over_forward'], 9, 2)} {ours_rss:>13} {peer_rss:>13} {params:>20} "
            f"{'same' if s['same_voxels'] else 'DIFFER':>7}"
        )
        print(
            f"{'':>5} peer load avg (1/5/15 min) at start {_load(peer['load_avg_start'])}, "
            f"end {_load(peer['load_avg_end'])}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", choices=CONFIGS, default="released", help="see bench_setup")
    parser.add_argument(
        "--init-sizes", type=int, nargs="*", default=None, help="released: 8 16 32; default: 8"
    )
    parser.add_argument("--modes", nargs="+", default=["forward", "train"])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--reps-32", type=int, default=None, help="fewer reps for init_size 32")
    parser.add_argument(
        "--azimuth-steps",
        type=int,
        default=None,
        help="scan size; released: 2800 (~120k points), default: its config's 512 (~30k)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--peer", default=None, help="path of cylinder3d_peer.py: compare")
    parser.add_argument(
        "--host-buffers",
        choices=("keep", "fresh"),
        default="keep",
        help="keep: XLA's step buffers kept in the process, as the entry points run "
        "(leakjax/train/host_memory.py); fresh: JAX's defaults (mapped anew every step)",
    )
    parser.add_argument("--worker", nargs=2, metavar=("INIT_SIZE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        cpus = pinned_cpus(args.threads)
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        kept = False
        if args.host_buffers == "keep":
            from leakjax.train.host_memory import keep_host_buffers

            kept = keep_host_buffers()
        result = run_worker(
            int(args.worker[0]), args.worker[1], args.reps, args.azimuth_steps, args.config
        )
        result["host_buffers_kept"] = kept
        print("RESULT " + json.dumps(result), flush=True)
        return

    if args.peer is not None and not pathlib.Path(args.peer).is_file():
        parser.error(f"--peer {args.peer}: no such file")
    load_avg_start = os.getloadavg()
    setup = bench_setup(args.config, azimuth_steps=args.azimuth_steps)
    if args.init_sizes is None:
        default_sizes = [8, 16, 32] if args.config == "released" else []
        args.init_sizes = default_sizes or [setup["model_kwargs"]["init_size"]]
    for init_size in args.init_sizes:
        try:
            bench_setup(args.config, init_size)
        except ValueError as error:
            parser.error(str(error))

    ours = flax_parameter_count(32)
    released = released_parameter_count(32)
    print("Parameters at init_size 32 (trainable only; BN running stats excluded)")
    print(f"{'component':<12}{'ours':>12}{'released':>12}")
    for name in released:
        print(f"{name:<12}{ours.get(name, 0):>12,}{released[name]:>12,}")

    peer_dir = digest = None
    if args.peer is not None:  # the scans every worker measures, real entries only
        peer_dir = tempfile.TemporaryDirectory(prefix="bench_cylinder3d_peer_")
        npz = pathlib.Path(peer_dir.name) / "scans.npz"
        digest = export_scans(bench_batch(setup), npz)

    runs, settings = [], []
    for init_size in args.init_sizes:
        reps = args.reps_32 if (init_size == 32 and args.reps_32) else args.reps
        for mode in args.modes:
            command = [
                sys.executable,
                "-m",
                "experiments.bench_cylinder3d",
                "--worker",
                str(init_size),
                mode,
                "--config",
                args.config,
                "--reps",
                str(reps),
                "--azimuth-steps",
                str(setup["azimuth_steps"]),
                "--threads",
                str(args.threads),
                "--host-buffers",
                args.host_buffers,
            ]
            done = subprocess.run(
                command, env=_worker_env(args.threads), capture_output=True, text=True
            )
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                raise RuntimeError(f"worker {init_size} {mode} failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(lines[-1][len("RESULT ") :]))
            print(json.dumps(runs[-1]), flush=True)
            if digest is not None and runs[-1]["batch_sha1"] != digest:
                raise RuntimeError("the worker measured other scans than those given to the peer")
        peer = params = None
        if peer_dir is not None:  # right after ours, so that both see the same machine
            from leakjax.models.cylinder3d import Cylinder3D

            kwargs = bench_setup(args.config, init_size)["model_kwargs"]
            json_out = pathlib.Path(peer_dir.name) / f"peer_{init_size}.json"
            command = peer_command(
                args.peer, npz, json_out, Cylinder3D(**kwargs), args.threads, reps
            )
            peer = run_peer(command, args.threads)
            print("PEER " + json.dumps(peer), flush=True)
            params = flax_parameter_count(init_size, kwargs)["total"]
        settings.append(compare_setting(init_size, runs, peer, params))
    if peer_dir is not None:
        peer_dir.cleanup()
    load_avg_end = os.getloadavg()

    if runs:
        first = runs[0]
        scan = f"{first['num_points']} points, voxels per level {first['level_voxels']}"
        if len(first["scan_points"]) > 1:
            scan = (
                f"{len(first['scan_points'])} scans of {first['scan_points']} points, voxels "
                f"per level {first['level_voxels_per_scan']}"
            )
        print(f"\nScan: {scan}, capacities {first['capacities']}; CPU, {args.threads} threads")
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
    if args.peer is not None and settings:
        print_peer_table(settings, args.threads)
        print(f"load avg (1/5/15 min) at start {_load(load_avg_start)}, end {_load(load_avg_end)}")
    result = {
        "parameters_init32": {"ours": ours, "released": released},
        "config": args.config,
        "model_kwargs": None if args.config == "released" else setup["model_kwargs"],
        "seeds": list(setup["seeds"]),
        "azimuth_steps": setup["azimuth_steps"],
        "threads": args.threads,
        "load_avg_start": load_avg_start,
        "load_avg_end": load_avg_end,
        "runs": runs,
        "settings": settings,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
