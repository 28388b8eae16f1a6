"""Benchmark of the synthetic LiDAR world: class frequencies against SemanticKITTI, points per scan,
and generation speed on one core.

    python -m experiments.bench_synthetic [--sequences 4 --scans_per_sequence 5 --out FILE]

Generates a set (default 4 sequences x 5 scans = 20 scans, every 10th frame, about 9 m apart)
with `datasets.synthetic.generate`, reads it back with the SemanticKITTI reader, and prints
per-training-class point frequencies beside SemanticKITTI's official `content` (raw ids summed per
training id) with their ratio. A larger set (default 20 sequences x 10 scans, every 10th frame)
gives a steadier estimate: a 20-scan set is dominated by the few objects near the sensor. Speed
is the median over >= 7 scans (after 2 warm-up scans) of rendering plus writing one full
2048-step scan, with the process pinned to one CPU core. Writes everything as JSON.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import datasets.semantic_kitti as sk
from datasets.synthetic import SensorConfig, StreetWorld, generate, render_scan


def class_frequency_table(root: Path, sequences: list[str]) -> tuple[np.ndarray, list[int]]:
    counts = np.zeros(sk.NUM_CLASSES, dtype=np.int64)
    points_per_scan = []
    for scan_path, label_path in sk.list_scan_label_pairs(root, sequences):
        points, train_ids, _ = sk.load_pair(scan_path, label_path)
        counts += np.bincount(train_ids, minlength=sk.NUM_CLASSES)
        points_per_scan.append(int(points.shape[0]))
    return counts, points_per_scan


def time_scans(seed: int, warmup: int, repeats: int, out_dir: Path) -> list[float]:
    """Seconds to render and write each of `repeats` consecutive scans of one sequence."""
    sensor = SensorConfig()
    world = StreetWorld(seed, 99)
    times = []
    for index in range(warmup + repeats):
        start = time.perf_counter()
        scan = render_scan(world, sensor, index, seed)
        sk.write_scan(out_dir / f"{index:06d}.bin", scan.points)
        sk.write_labels(out_dir / f"{index:06d}.label", scan.semantic, scan.instance)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--scans_per_sequence", type=int, default=5)
    parser.add_argument("--large_sequences", type=int, default=20)
    parser.add_argument("--large_scans_per_sequence", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", default="bench_results/bench_synthetic.json")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    sequences = [f"{s:02d}" for s in range(args.sequences)]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate(tmp, seed=args.seed, sequences=sequences,
                 scans_per_sequence=args.scans_per_sequence, frame_step=10)  # fmt: skip
        generate_s = time.perf_counter() - start
        counts, points_per_scan = class_frequency_table(Path(tmp), sequences)
        large_sequences = [f"{s:02d}" for s in range(args.large_sequences)]
        large_root = Path(tmp) / "large"
        generate(large_root, seed=args.seed, sequences=large_sequences,
                 scans_per_sequence=args.large_scans_per_sequence, frame_step=10)  # fmt: skip
        large_counts, large_points = class_frequency_table(large_root, large_sequences)
        scan_times = time_scans(args.seed, warmup=2, repeats=args.repeats, out_dir=Path(tmp))

    synthetic = counts / counts.sum()
    large = large_counts / large_counts.sum()
    reference = sk.class_frequencies()
    num_scans, num_large = len(points_per_scan), len(large_points)
    print(f"per-class point frequency: {num_scans}-scan set, {num_large}-scan set, SemanticKITTI")
    print(f"{'id':>2} {'class':<14} {'synth20':>9} {'ratio':>7} {'synthL':>9} {'ratio':>7} "
          f"{'semkitti':>9}")  # fmt: skip
    rows = []
    for train_id, name in enumerate(sk.CLASS_NAMES):
        ratio = synthetic[train_id] / reference[train_id]
        large_ratio = large[train_id] / reference[train_id]
        rows.append({"train_id": train_id, "class": name, "synthetic": synthetic[train_id],
                     "ratio": ratio, "synthetic_large": large[train_id],
                     "ratio_large": large_ratio, "semantickitti": reference[train_id]})  # fmt: skip
        print(
            f"{train_id:>2} {name:<14} {synthetic[train_id]:>9.5f} {ratio:>7.2f} "
            f"{large[train_id]:>9.5f} {large_ratio:>7.2f} {reference[train_id]:>9.5f}"
        )
    median_s = float(np.median(scan_times))
    summary = {
        "num_scans": num_scans,
        "num_scans_large": num_large,
        "points_per_scan_large": {
            "mean": float(np.mean(large_points)),
            "min": min(large_points),
            "max": max(large_points),
        },  # fmt: skip
        "points_per_scan": {
            "mean": float(np.mean(points_per_scan)),
            "min": min(points_per_scan),
            "max": max(points_per_scan),
        },  # fmt: skip
        "render_and_write_s": {"median": median_s, "runs": scan_times},
        "scans_per_s_one_core": 1.0 / median_s,
        "generate_set_s": generate_s,
        "generate_set_scans_per_s": num_scans / generate_s,
        "cpu_affinity": sorted(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
    }
    pts = summary["points_per_scan"]
    print(f"points per scan: mean {pts['mean']:.0f}, min {pts['min']}, max {pts['max']}")
    print(f"one scan (render + write, 2048 azimuth steps, one core): median {median_s:.3f} s over "
          f"{len(scan_times)} runs = {1 / median_s:.2f} scans/s; whole {num_scans}-scan set "
          f"{generate_s:.1f} s ({num_scans / generate_s:.2f} scans/s)")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"classes": rows, **summary}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
