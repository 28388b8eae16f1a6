"""Data-parallel scaling: training throughput (scans/s) for 1, 2, 4, 8, ... devices and processes.

    python -m experiments.bench_scaling [--models pointmlp,randla_net] [--devices 1,2,4,8]
        [--processes 1,2] [--global_batch 8] [--per_device_batch 2] [--steps 10] [--size default]

Strong scaling keeps the global batch fixed (`--global_batch`), weak scaling the per-device batch
(`--per_device_batch`); efficiency = throughput(n devices) / (n x throughput(1 device)). Every
configuration runs in fresh processes (the device count is fixed when JAX starts), the train step
is the trainer's (`make_train_step` on the `data` mesh, state replicated, batch sharded) on the
smoke SemanticKITTI synthetic world, timed after two warm-up steps and synced every step. Each
process also times its host input pipeline alone (read, transforms, padding, the model's
`prepare_batch`) for its share of the global batch: `input_headroom` = host scans/s over the scans/s
that process's devices consume (< 1: data loading is the bottleneck).

Devices: on CPU, `n` simulated devices per configuration (XLA's host platform device count) spread
over the processes, one coordinator on 127.0.0.1 (JAX's own distributed runtime, gloo
collectives). The simulated devices share the machine's cores, so on CPU the figures measure the
overhead of sharding and collectives only, not a speed-up. On GPUs or TPUs each process uses
`n / processes` of its local devices. Models at their `MODELS` defaults (`--size default`) or the
smoke configs' sizes (`--size smoke`). JSON and a plot go to `bench_results/`.

The loss is the smoke config's: CE + Lovasz-softmax (Cylinder3D's). The Lovasz sort runs over the
global batch (the same numbers on any number of devices), which XLA cannot partition: the
probabilities are gathered and every device computes it whole, so it grows with the device count
(measured: pointmlp, global batch 8, 4 simulated devices on 2 cores: 2.77 s a step with it,
0.065 s without; one device 0.49 s / 0.14 s). `--lovasz_weight 0` measures the sharding alone.
"""

import argparse
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
SMOKE_KWARGS = {  # --size smoke: the sizes the smoke configs train in the tests
    "pointmlp": {"hidden_sizes": (16, 16)},
    "cylinder3d": "smoke",
    "randla_net": "randla_smoke",
}
CPU_NOTE = (
    "CPU: the simulated devices share this machine's cores, so these figures measure the "
    "overhead of sharding and collectives only (not a speed-up)."
)


def _config(model: str, size: str, global_batch: int, lovasz_weight: float | None = None):
    from experiments.configs import semkitti  # noqa: PLC0415 - after jax.distributed

    config = semkitti.get_config("smoke")
    config.model.name = model
    config.model.kwargs = {}
    if size == "smoke" and model in SMOKE_KWARGS:
        kwargs = SMOKE_KWARGS[model]
        if isinstance(kwargs, str):
            variant = semkitti.get_config(kwargs)
            config.model, config.data, config.loss = variant.model, variant.data, variant.loss
        else:
            config.model.kwargs = kwargs
    config.train.batch_size = global_batch
    if lovasz_weight is not None:
        config.loss.lovasz_weight = lovasz_weight
    return config


def measure(
    model: str,
    size: str,
    global_batch: int,
    steps: int,
    cache: str,
    lovasz_weight: float | None = None,
) -> dict:
    """One configuration in this (already initialised) process: device and host throughput."""
    import jax  # noqa: PLC0415

    from datasets.registry import load_dataset  # noqa: PLC0415
    from leakjax.train import entries, trainer  # noqa: PLC0415
    from leakjax.train import mesh as mesh_lib  # noqa: PLC0415
    from leakjax.train.steps import make_train_step  # noqa: PLC0415

    config = _config(model, size, global_batch, lovasz_weight)
    mesh = mesh_lib.make_data_mesh()
    mesh_lib.check_batch_size(global_batch, mesh, "global batch")
    data = load_dataset(config.data, None, pathlib.Path(cache))
    with tempfile.TemporaryDirectory() as run_dir:
        run = trainer.build_run(config, pathlib.Path(run_dir), mesh, data, None)
        run.checkpointer.close()
    state = run.init_fn()
    loss = trainer.loss_settings(config, data.label_space, data.train_class_counts())
    step = make_train_step(
        run.model, run.tx, mesh, jax.random.key(0), loss, data.label_space, data.spec
    )
    warmup = 2
    host = entries.prepare_batches(run.model, trainer.training_batches(config, data, 0))
    start = time.perf_counter()
    host_batches = [next(host) for _ in range(warmup + steps)]
    host_seconds = time.perf_counter() - start
    local_scans = (warmup + steps) * global_batch // jax.process_count()
    device_batches = [mesh_lib.global_batch(b, mesh) for b in host_batches]
    jax.block_until_ready(device_batches)
    for batch in device_batches[:warmup]:
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
    start = time.perf_counter()
    for batch in device_batches[warmup:]:
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)  # every step: multi-device CPU collectives need it
    seconds = time.perf_counter() - start
    scans_per_s = steps * global_batch / seconds
    consumed = scans_per_s / jax.process_count()
    host_rate = local_scans / host_seconds
    return {
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "platform": jax.devices()[0].platform,
        "global_batch": global_batch,
        "step_s": seconds / steps,
        "scans_per_s": scans_per_s,
        "host_scans_per_s": host_rate,
        "input_headroom": host_rate / consumed,
    }


def worker(args: argparse.Namespace) -> None:
    from leakjax.train import mesh as mesh_lib  # noqa: PLC0415

    mesh_lib.maybe_initialize_distributed(initialization_timeout_s=120)
    import jax  # noqa: PLC0415

    results = [
        {
            "scaling": scaling,
            **measure(args.model, args.size, batch, args.steps, args.cache, args.lovasz_weight),
        }
        for scaling, batch in (("strong", args.global_batch), ("weak", args.weak_batch))
    ]
    out = pathlib.Path(args.worker_out) / f"process{jax.process_index()}.json"
    out.write_text(json.dumps(results))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_configuration(args, model: str, devices: int, processes: int, platform: str) -> list:
    """Launches `processes` workers with `devices` devices in all; their results (or [])."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as out:
        children = []
        for index in range(processes):
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            if platform == "cpu":
                # XLA's concurrency-optimised CPU scheduler can deadlock the all-reduces of
                # several simulated devices (tests/conftest.py sets the same flag).
                flags = (
                    f"--xla_force_host_platform_device_count={devices // processes} "
                    "--xla_cpu_enable_concurrency_optimized_scheduler=false"
                )
                env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
            else:  # this process's share of the local accelerators
                share = range(index * devices // processes, (index + 1) * devices // processes)
                env["JAX_LOCAL_DEVICE_IDS"] = ",".join(map(str, share))
            if processes > 1:
                env.update(
                    JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                    JAX_NUM_PROCESSES=str(processes),
                    JAX_PROCESS_ID=str(index),
                )
            command = [sys.executable, "-m", "experiments.bench_scaling", "--worker_out", out]
            command += ["--model", model, "--size", args.size, "--steps", str(args.steps)]
            command += ["--global_batch", str(args.global_batch), "--cache", args.cache]
            command += ["--weak_batch", str(args.per_device_batch * devices)]
            if args.lovasz_weight is not None:
                command += ["--lovasz_weight", str(args.lovasz_weight)]
            # a file, not a pipe: nobody reads a pipe while waiting, and a full one blocks the child
            log = open(pathlib.Path(out) / f"process{index}.log", "wb")  # noqa: SIM115
            children.append(
                subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
            log.close()
        deadline = time.monotonic() + args.timeout_s
        while any(c.poll() is None for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        timed_out = any(c.poll() is None for c in children)
        for child in children:  # a hung JAX process ignores SIGTERM
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
            child.wait()
        if any(c.returncode for c in children):
            tail = (pathlib.Path(out) / "process0.log").read_text(errors="replace")[-2000:]
            why = f"killed after --timeout_s {args.timeout_s} s" if timed_out else "failed"
            print(f"{model} {devices} devices / {processes} processes: {why}, no row:\n{tail}")
            return []
        per_process = [
            json.loads((pathlib.Path(out) / f"process{i}.json").read_text())
            for i in range(processes)
        ]
    rows = []
    for position, first in enumerate(per_process[0]):
        row = {"model": model, **first}
        row["input_headroom"] = min(p[position]["input_headroom"] for p in per_process)
        row["host_scans_per_s"] = min(p[position]["host_scans_per_s"] for p in per_process)
        rows.append(row)
    return rows


def add_efficiency(rows: list[dict]) -> None:
    """efficiency = throughput / (devices x throughput of 1 device, 1 process), per model/mode."""
    for row in rows:
        base = [
            r
            for r in rows
            if (r["model"], r["scaling"], r["devices"], r["processes"])
            == (row["model"], row["scaling"], 1, 1)
        ]
        row["efficiency"] = (
            row["scans_per_s"] / (row["devices"] * base[0]["scans_per_s"]) if base else None
        )


def table(rows: list[dict]) -> str:
    lines = [
        "| model | scaling | processes | devices | global batch | step (s) | scans/s | efficiency "
        "| host scans/s per process | input headroom |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["model"], r["scaling"], r["processes"], r["devices"])):
        efficiency = "-" if r["efficiency"] is None else f"{r['efficiency']:.2f}"
        lines.append(
            f"| {r['model']} | {r['scaling']} | {r['processes']} | {r['devices']} | "
            f"{r['global_batch']} | {r['step_s']:.3f} | {r['scans_per_s']:.1f} | {efficiency} | "
            f"{r['host_scans_per_s']:.1f} | {r['input_headroom']:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: pathlib.Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, scaling in zip(axes, ("strong", "weak")):
        for model in sorted({r["model"] for r in rows}):
            for processes in sorted({r["processes"] for r in rows}):
                points = sorted(
                    (r["devices"], r["scans_per_s"])
                    for r in rows
                    if (r["model"], r["scaling"], r["processes"]) == (model, scaling, processes)
                )
                if points:
                    axis.plot(*zip(*points), marker="o", label=f"{model}, {processes} proc")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("devices")
        axis.set_ylabel("training scans/s")
        axis.set_title(f"{scaling} scaling")
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="pointmlp")
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--global_batch", type=int, default=8)
    parser.add_argument("--per_device_batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", choices=("default", "smoke"), default="default")
    parser.add_argument(
        "--lovasz_weight",
        type=float,
        default=None,
        help="override the smoke config's Lovasz-softmax weight (1: Cylinder3D's loss). Its sort "
        "over the global batch cannot be partitioned: every device computes it whole, so with "
        "it on, N devices cost more than one (0 measures the sharding itself)",
    )
    parser.add_argument("--platform", default=None, help="cpu, gpu or tpu (default: detected)")
    parser.add_argument("--timeout_s", type=int, default=600)
    parser.add_argument("--out", default=str(REPO / "bench_results"))
    parser.add_argument("--cache", default=str(REPO / "bench_results" / "synthetic_cache"))
    # a worker (one process of one configuration; set by the driver)
    parser.add_argument("--worker_out", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--weak_batch", type=int, default=None)
    args = parser.parse_args()
    if args.worker_out:
        worker(args)
        return
    platform = args.platform
    if platform is None:  # asked of a child, so this process never holds the accelerators
        probe = "import jax; print(jax.default_backend())"
        platform = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.split()[-1]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.models.split(","):
        for processes in map(int, args.processes.split(",")):
            for devices in map(int, args.devices.split(",")):
                if devices % processes or args.global_batch % devices:
                    continue
                print(f"{model}: {devices} devices over {processes} processes ...", flush=True)
                rows += run_configuration(args, model, devices, processes, platform)
    add_efficiency(rows)
    note = CPU_NOTE if platform == "cpu" else f"{platform}: real devices."
    result = {
        "platform": platform,
        "note": note,
        "steps": args.steps,
        "lovasz_weight": args.lovasz_weight,
        "rows": rows,
    }
    (out / "bench_scaling.json").write_text(json.dumps(result, indent=1))
    plot(rows, out / "bench_scaling.png")
    print(table(rows))
    print(note)
    print(f"written: {out / 'bench_scaling.json'}, {out / 'bench_scaling.png'}")


if __name__ == "__main__":
    main()
