"""Benchmark of the range-image models (RangeNet++, SalsaNext): per-scan inference and train step.

  python -m experiments.bench_range [--models rangenet21 salsanext] [--width 2048] [--batch 1]
      [--reps 7] [--modes infer train] [--threads 2] [--out PATH]

Models as released (variants `rangenet` / `salsanext` of experiments/configs/semkitti.py, at
64 x `--width`; `rangenet53` = DarkNet53), on synthetic ~120k-point scans (`--azimuth-steps`
2800), on the backend jax picks (the table says which):

* infer (one scan, eval mode, kNN post-processing on, as RangeNet++ evaluates): the spherical
  projection (`project_scans`: range image, normalised 5-channel input, label image), the 2-D
  network forward (the model's own "network" submodule and variables), the released kNN
  post-processing (`range_outputs` with the model's knn settings), each jitted and timed
  separately, and their sum next to the whole model jitted end to end ("total"); "agree" is the
  fraction of points whose label from the three parts equals the end-to-end one.
* train (batch `--batch`): the trainer's `make_train_step` with the released loss (CE weighted
  1 / (f + 0.001) over the scans' class counts, + Lovasz for SalsaNext) and optimiser (SGD,
  Nesterov momentum 0.9, weight decay 1e-4).
RangeNet's transposed width convs (`WidthUpConv`) were first an lhs-dilated conv, whose kernel
gradient XLA:CPU ran ~100x slower than its forward (train step ~40x the forward: 132 s at
64 x 2048 on 2 loaded cores); in polyphase form (two dense matmuls) the step at 64 x 512 went from
14.7 s to 3.1 s, both measured here on loaded cores.
Each (model, mode) runs in its own subprocess pinned to `--threads` cores: `ru_maxrss` is its peak
resident memory (compilation included), with the device's peak where the backend reports one.
Times are medians of `--reps` runs after one warm-up run. Prints tables; writes JSON (default
bench_results/bench_range.json).
"""

import argparse
import dataclasses
import json
import pathlib
import sys

import numpy as np

from experiments.bench_cylinder3d import synthetic_scan
from experiments.bench_randla import (
    pin_threads,
    process_info,
    run_workers,
    time_compiled,
    time_train_step,
)

DEFAULT_OUT = "bench_results/bench_range.json"
MODELS = ("rangenet21", "rangenet53", "salsanext")


def model_config(name: str, width: int):
    """The released config of `name` (rangenet21 | rangenet53 | salsanext) at 64 x width, with
    the kNN post-processing on (used at evaluation only)."""
    from experiments.configs.semkitti import get_config

    config = get_config("salsanext" if name == "salsanext" else "rangenet")
    kwargs = {"width": width, "use_knn": True}
    if name.startswith("rangenet"):
        kwargs["depth"] = int(name[len("rangenet") :])
    config.model.kwargs = kwargs
    return config


def network_of(model):
    """The 2-D network the model builds as its "network" submodule, with the model's same-named
    fields (docstrings of RangeNet / SalsaNext: "Attributes: as the same-named ones")."""
    from leakjax.models.rangenet import DarkNetSegmenter, RangeNet
    from leakjax.models.salsanext import SalsaNextNetwork

    cls = DarkNetSegmenter if isinstance(model, RangeNet) else SalsaNextNetwork
    names = [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]
    return cls(**{name: getattr(model, name) for name in names if hasattr(model, name)})


def scan_batch(batch: int, azimuth_steps: int):
    """`batch` synthetic scans (seeds 0..batch-1) padded to a multiple of 4096 points, and their
    class counts."""
    from datasets.semantic_kitti.labels import LABEL_SPACE
    from leakjax.train.batch import point_cloud_spec
    from leakjax.train.input_pipeline import pad_batch

    scans = [synthetic_scan(azimuth_steps, seed) for seed in range(batch)]
    capacity = -(-max(len(p) for p, _ in scans) // 4096) * 4096
    samples = [{"points": p, "labels": labels} for p, labels in scans]
    counts = np.bincount(
        np.concatenate([labels for _, labels in scans]), minlength=LABEL_SPACE.num_classes
    )
    return pad_batch(samples, capacity, point_cloud_spec(4), LABEL_SPACE.no_label), counts


def run_worker(name: str, mode: str, args) -> dict:
    import jax

    from datasets.semantic_kitti.labels import LABEL_SPACE
    from leakjax.models.range_common import knn_arguments, project_scans, range_outputs
    from leakjax.train.trainer import build_model

    config = model_config(name, args.width)
    model = build_model(config, LABEL_SPACE)
    batch, counts = scan_batch(1 if mode == "infer" else args.batch, args.azimuth_steps)
    num_points = int(batch["point_mask"].sum())
    batch = jax.device_put(batch)
    variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch)
    result = {"model": name, "mode": mode, "width": args.width, "points": num_points}
    result["batch"] = int(batch["points"].shape[0])

    if mode == "infer":
        geometry = ("height", "width", "fov_up_deg", "fov_down_deg", "img_means", "img_stds")
        settings = {key: getattr(model, key) for key in geometry}

        def project(b):
            return project_scans(b, ignore_index=model.ignore_index, **settings)

        network = network_of(model)
        network_variables = {col: tree["network"] for col, tree in variables.items()}

        def forward(v, inputs):
            return network.apply(v, inputs, False)

        def post(outputs, projection, label_image, point_mask):
            logits, features = outputs
            knn = knn_arguments(model, train=False)
            return range_outputs(
                logits, features, projection, label_image, point_mask,
                ignore_index=model.ignore_index, knn=knn,
            )[0]  # fmt: skip

        reps = args.reps
        parts = {}
        (projection, inputs, label_image), parts["projection"] = time_compiled(
            project, (batch,), reps
        )
        outputs, parts["forward"] = time_compiled(forward, (network_variables, inputs), reps)
        post_args = (outputs, projection, label_image, batch["point_mask"])
        split, parts["knn_post"] = time_compiled(post, post_args, reps)
        total_fn = lambda v, b: model.apply(v, b, train=False)[0]  # noqa: E731
        total, parts["total"] = time_compiled(total_fn, (variables, batch), reps)
        mask = np.asarray(batch["point_mask"])
        same = np.asarray(split).argmax(-1) == np.asarray(total).argmax(-1)
        result.update(parts=parts, agree=float(same[mask].mean()))
    else:
        timing = time_train_step(config, model, variables, batch, counts, args.reps)
        result.update(timing)
    return {**result, **process_info()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["rangenet21", "salsanext"])
    parser.add_argument(
        "--modes", nargs="+", choices=("infer", "train"), default=["infer", "train"]
    )
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1, help="train step batch")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--azimuth-steps", type=int, default=2800, help="2800 -> ~120k points")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        pin_threads(args.threads)
        print("RESULT " + json.dumps(run_worker(*args.worker, args)), flush=True)
        return

    common = list(argv if argv is not None else sys.argv[1:])
    jobs = [[name, mode] for name in args.models for mode in args.modes]
    runs = run_workers("experiments.bench_range", jobs, common)
    first = runs[0]
    print(
        f"\nRange models at 64 x {args.width} on {first['backend']} ({first['device']}), "
        f"{args.threads} threads; synthetic scans of ~{first['points'] // first['batch']} points"
    )
    nan = float("nan")

    def memory(run):
        dev = nan if run["device_peak_mib"] is None else run["device_peak_mib"]
        return f"{run['peak_rss_mib']:>13.0f}{dev:>8.0f}"

    infer = [run for run in runs if run["mode"] == "infer"]
    if infer:
        print("\nPer-scan inference (batch 1, eval, kNN post-processing), ms, median of reps")
        print(
            f"{'model':<12}{'project':>9}{'forward':>9}{'kNN post':>9}{'sum':>9}{'total':>9}"
            f"{'agree':>7}{'compile s':>10}{'peak RSS MiB':>13}{'dev MiB':>8}"
        )
        for run in infer:
            parts = run["parts"]
            ms = {key: 1e3 * value["median_s"] for key, value in parts.items()}
            split = ms["projection"] + ms["forward"] + ms["knn_post"]
            compile_s = sum(value["compile_s"] for value in parts.values())
            print(
                f"{run['model']:<12}{ms['projection']:>9.1f}{ms['forward']:>9.1f}"
                f"{ms['knn_post']:>9.1f}{split:>9.1f}{ms['total']:>9.1f}{run['agree']:>7.3f}"
                f"{compile_s:>10.1f}{memory(run)}"
            )
    train = [run for run in runs if run["mode"] == "train"]
    if train:
        print(f"\nTrain step (forward + backward + SGD, released loss), batch {args.batch}")
        print(
            f"{'model':<12}{'median s':>9}{'reps':>5}{'scans/s':>8}{'compile s':>10}"
            f"{'XLA MiB':>8}{'peak RSS MiB':>13}{'dev MiB':>8}"
        )
        for run in train:
            xla = nan if run["xla_executable_mib"] is None else run["xla_executable_mib"]
            print(
                f"{run['model']:<12}{run['median_s']:>9.3f}{len(run['times_s']):>5}"
                f"{run['batch'] / run['median_s']:>8.2f}{run['compile_s']:>10.1f}{xla:>8.0f}"
                f"{memory(run)}"
            )
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
