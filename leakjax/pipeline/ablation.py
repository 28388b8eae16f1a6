"""The paper's ablations as one command: LEAK variants x seeds, mean +- std, paired differences.

`run_ablation(config, workdir, variants, seeds)` trains, in one work directory (every run
resumable, a finished one skipped; leakjax/pipeline/phases.py):
  * one baseline per seed (`baseline`, `baseline-seed<k>`): the reference of the paired
    differences, with the same seed as the variants it is compared with;
  * the LEAK hierarchy once, from the pipeline seed's baseline: every variant that groups by
    spectral clustering uses it, and every run's hIoU is also scored through it (`hiou_shared`,
    comparable across runs as in Tab. IV);
  * every (variant, seed) run (`<variant>`, `<variant>-seed<k>`).
Then `ablation.json` / `ablation.md` (`summarize`): per arm and metric the mean and sample std over
seeds; per variant the paired difference against the baseline of the same seed, its mean and the
95% confidence interval mean +- t_{0.975, n-1} s / sqrt(n) (Student t over the n seeds), and a
plain statement of what that supports; `ablation_curves.png`: the validation mIoU over training,
mean over seeds with a min-max band (Fig. 5).

VARIANTS holds the rows of Tab. IV and V that need no new machinery; any other variant is a name
plus config overrides (`Variant`).
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from scipy import stats

from leakjax.pipeline import phases, plots, report
from leakjax.pipeline.phases import Variant

logger = logging.getLogger("leakjax")

_NO_LEAK = {"leak.lambda_micro": 0.0, "leak.lambda_macro": 0.0, "leak.lambda_fairness": 0.0}
VARIANTS: dict[str, Variant] = {
    # Tab. IV
    "prototypes_only": Variant("prototypes_only", {"leak.lambda_fairness": 0.0}),
    "fairness_only": Variant("fairness_only", {"leak.lambda_micro": 0.0, "leak.lambda_macro": 0.0}),
    "random_grouping": Variant("random_grouping", {"leak.grouping": "random"}),
    "leak": Variant("leak"),
    # Tab. V
    "a_priori_grouping": Variant("a_priori_grouping", {"leak.grouping": "a_priori"}),
    "coarse_to_fine": Variant("coarse_to_fine", {**_NO_LEAK, "loss.coarse_fraction": 0.5}),
    "inverse_weighting": Variant("inverse_weighting", {**_NO_LEAK, "loss.ce_weighting": "inverse"}),
    "salsanext_weighting": Variant(
        "salsanext_weighting", {**_NO_LEAK, "loss.ce_weighting": "salsanext"}
    ),
}
TABLE_IV = ("prototypes_only", "fairness_only", "random_grouping", "leak")
METRICS = ("miou", "fwiou", "hiou_shared", "oa", "macc")


def run_ablation(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    variants: Sequence[Variant],
    seeds: Sequence[int],
    data_dir: str | None = None,
    cache_dir: str | None = None,
) -> dict:
    """Trains every missing run, evaluates all and writes the ablation table (module docstring)."""
    names = [v.name for v in variants]
    if len(set(names)) != len(names) or "baseline" in names or not seeds:
        raise ValueError(f"variants {names} must be distinct, not 'baseline'; seeds {list(seeds)}")
    pipe = phases.setup(config, workdir, data_dir, cache_dir)
    label_space = pipe.data.label_space
    baselines = {seed: phases.train_baseline(pipe, seed) for seed in seeds}
    shared_dir = phases.train_baseline(pipe)  # the pipeline seed's: the shared hierarchy's source
    shared = phases.discover_hierarchy(pipe, shared_dir)
    per_run: dict[str, dict[int, dict]] = {"baseline": {}}
    curves: dict[str, dict[int, list[dict]]] = {"baseline": {}}
    for seed, run_dir in baselines.items():
        run_config = phases.seeded(config, seed)
        settings = phases.baseline_settings(run_config, label_space.num_micro)
        confusion = phases.validation_confusion(pipe, run_dir, settings, run_config)
        per_run["baseline"][seed] = report.run_metrics(confusion, shared, label_space, shared)
        curves["baseline"][seed] = phases.records(run_dir)
    for variant in variants:
        per_run[variant.name], curves[variant.name] = {}, {}
        for seed in seeds:
            run_config = phases.seeded(variant.apply(config), seed)
            hierarchy = phases.discover_hierarchy(pipe, shared_dir, run_config)
            run_dir = phases.train_leak(pipe, hierarchy, shared_dir, variant, seed)
            settings = phases.leak_settings(run_config, hierarchy)
            confusion = phases.validation_confusion(pipe, run_dir, settings, run_config)
            per_run[variant.name][seed] = report.run_metrics(
                confusion, hierarchy, label_space, shared
            )
            curves[variant.name][seed] = phases.records(run_dir)
    table = summarize(per_run, list(seeds))
    table["data"] = pipe.data.description
    table["shared_grouping"] = shared.macro_names
    if jax.process_index() == 0:
        (pipe.workdir / "ablation.json").write_text(
            json.dumps(report.json_safe({**table, "runs": per_run}), indent=1)
        )
        drawn = plots.plot_curve_bands(curves, pipe.workdir / "ablation_curves.png")
        write_markdown(
            pipe.workdir / "ablation.md", table, "ablation_curves.png" if drawn else None
        )
    return table


def summarize(per_run: dict[str, dict[int, dict]], seeds: list[int]) -> dict:
    """{"arms": {arm: {metric: {mean, std, values}}}, "differences": {variant: {metric: {mean,
    ci_low, ci_high, values, verdict}}}, "seeds"} from per-run metrics (fractions)."""
    arms = {}
    for arm, runs in per_run.items():
        arms[arm] = {}
        for metric in METRICS:
            values = [runs[seed][metric] for seed in seeds]
            arms[arm][metric] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
                "values": values,
            }
    differences = {}
    for arm in per_run:
        if arm == "baseline":
            continue
        differences[arm] = {}
        for metric in METRICS:
            values = [per_run[arm][s][metric] - per_run["baseline"][s][metric] for s in seeds]
            differences[arm][metric] = paired_difference(values)
    return {"seeds": seeds, "arms": arms, "differences": differences}


def paired_difference(values: Sequence[float]) -> dict:
    """Mean of per-seed differences and its 95% Student-t interval; a verdict in words."""
    values = [float(v) for v in values]
    count = len(values)
    mean = float(np.mean(values))
    if count < 2:
        return {
            "mean": mean,
            "ci_low": float("nan"),
            "ci_high": float("nan"),
            "values": values,
            "verdict": "one seed: no interval, no conclusion",
        }
    half = float(stats.t.ppf(0.975, count - 1) * np.std(values, ddof=1) / math.sqrt(count))
    low, high = mean - half, mean + half
    if low > 0:
        verdict = f"better than the baseline at 95% over {count} seeds"
    elif high < 0:
        verdict = f"worse than the baseline at 95% over {count} seeds"
    else:
        verdict = f"not distinguishable from the baseline over {count} seeds"
    return {"mean": mean, "ci_low": low, "ci_high": high, "values": values, "verdict": verdict}


def write_markdown(path: pathlib.Path, table: dict, curves: str | None) -> None:
    """ablation.md: arms (mean +- std, %) and paired differences (mean [95% CI], points)."""
    seeds = table["seeds"]
    arms, diffs = table["arms"], table["differences"]
    lines = [
        f"# Ablation: {len(arms) - 1} variants x {len(seeds)} seeds (seeds {seeds})",
        "",
        f"Data: {table['data']}. Validation metrics in %, mean +- sample std over seeds (one seed:"
        " no spread, no interval). hIoU on",
        "the shared grouping: " + "; ".join(table["shared_grouping"]) + ".",
        "",
        "| arm | " + " | ".join(METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for arm, metrics in arms.items():
        cells = [
            f"{100 * m['mean']:.2f}" + (f" +- {100 * m['std']:.2f}" if len(seeds) > 1 else "")
            for m in metrics.values()
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Paired differences against the baseline of the same seed (points of %): mean [95% CI].",
        "",
        "| variant | " + " | ".join(METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for arm, metrics in diffs.items():
        cells = [
            f"{100 * d['mean']:+.2f}"
            + (f" [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]" if len(seeds) > 1 else "")
            for d in metrics.values()
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "What the data supports (mIoU):", ""]
    for arm, metrics in diffs.items():
        lines.append(f"- {arm}: {metrics['miou']['verdict']}.")
    lines += [
        "",
        "A difference whose interval contains 0 is not evidence of an effect in either direction;",
        "with few seeds the intervals are wide (the paper's effects are +0.5 to +1.3 mIoU).",
    ]
    if curves:
        lines += ["", f"Validation mIoU during training: ![curves]({curves})"]
    path.write_text("\n".join(lines) + "\n")
