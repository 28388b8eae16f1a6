"""Phase 4's report: the baseline and the LEAK runs side by side, as report.json and report.md."""

import json
import math
import pathlib

import numpy as np

from leakjax.label_space import LabelSpace
from leakjax.leak.grouping import Hierarchy
from leakjax.metrics import hierarchical_iou, segmentation_metrics

SUMMARY_KEYS = (
    "miou",
    "miou_present",
    "hiou",
    "hiou_shared",
    "oa",
    "macc",
    "fwiou",
)
# Tab. VI: feature geometry (leakjax/leak/geometry.py), Tab. VII: balance of the per-class IoUs
GEOMETRY_KEYS = ("theta_gamma", "ccd", "pd", "pcd")
BALANCE_KEYS = ("iou_mse", "iou_std", "iou_entropy")


def run_metrics(
    confusion: np.ndarray,
    hierarchy: Hierarchy,
    label_space: LabelSpace,
    shared: Hierarchy | None = None,
) -> dict:
    """Metrics of one run from its [C, C] validation confusion (label ids).

    hiou goes through the run's own `hierarchy`, hiou_shared through `shared` (one grouping for
    every run of a report; default: the run's own). iou_per_class lists the m scored classes in
    micro order (label_space.micro_names). Values are fractions (IoU MSE: squared fractions).
    """
    ignore = label_space.ignore_in_range
    result = segmentation_metrics(
        confusion, label_space.label_to_macro(hierarchy.micro_to_macro), ignore_index=ignore
    )
    shared = hierarchy if shared is None else shared
    result["hiou_shared"] = hierarchical_iou(
        confusion, label_space.label_to_macro(shared.micro_to_macro), ignore
    )
    return {
        **{key: float(result[key]) for key in SUMMARY_KEYS + BALANCE_KEYS},
        "iou_per_class": [
            float(v) for v in np.asarray(result["iou_per_class"])[label_space.scored_ids]
        ],
        "num_labelled": int(result["num_labelled"]),
    }


def json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def write_report(
    workdir: pathlib.Path,
    runs: dict[str, dict],
    hierarchy: Hierarchy,
    data_description: str,
    extra: dict,
    label_space: LabelSpace,
    curves: str | None = None,
) -> dict:
    """Writes report.json and report.md; `runs` = {run name: run_metrics}, baseline first.

    `curves`: file name of the validation-curve figure beside the report, if one was drawn.
    """
    report = {
        "data": data_description,
        "class_names": hierarchy.class_names,
        "hierarchy": {
            "macro_names": hierarchy.macro_names,
            "micro_to_macro": [int(v) for v in hierarchy.micro_to_macro],
            "method": hierarchy.method,
        },
        "runs": runs,
        **extra,
    }
    report = json_safe(report)  # NaN -> null, so the returned dict equals the file's content
    (workdir / "report.json").write_text(json.dumps(report, indent=1))
    names = list(runs)
    lines = [
        f"# LEAK on {label_space.name}: " + " vs ".join(names),
        "",
        f"Data: {data_description}. Validation metrics in % ({_ignore_rule(label_space)}",
        f"mIoU over all {label_space.num_micro} classes with absent classes scoring 0;",
        "mIoU_present over classes present in the ground truth). hIoU: mean IoU of the macro",
        "classes, through each run's own grouping (hiou) and through the shared grouping below",
        "(hiou_shared, comparable across runs).",
        "",
        "Macro classes (the shared grouping, found from the baseline's mistakes):",
        "",
    ]
    lines += [f"- M{i}: {name}" for i, name in enumerate(hierarchy.macro_names)]
    lines += ["", "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in SUMMARY_KEYS:
        lines.append(f"| {key} | " + " | ".join(_cell(runs[n][key], 100.0) for n in names) + " |")
    lines += [
        "",
        "Tab. VI, feature geometry at the end of training (validation features, Euclidean, means",
        "over features): theta_gamma = mean angle between micro prototypes (degrees); CCD / PD =",
        "mean distance of a feature to its class centre / prototype; PCD = centre-prototype",
        "distance.",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key in GEOMETRY_KEYS:
        scale = 180.0 / math.pi if key == "theta_gamma" else 1.0
        cells = [_cell((runs[n].get("geometry") or {}).get(key), scale) for n in names]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Tab. VII, balance of the per-class IoUs (in %): MSE around their mean (%^2), its square",
        "root sigma (%), entropy (nats) of the IoUs normalised to sum to 1 (higher = more even).",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, scale in zip(BALANCE_KEYS, (1e4, 100.0, 1.0)):
        lines.append(f"| {key} | " + " | ".join(_cell(runs[n][key], scale) for n in names) + " |")
    lines += ["", "Per-class IoU (%):", "", "| class | " + " | ".join(names) + " |"]
    lines.append("|---|" + "---|" * len(names))
    for index, class_name in enumerate(hierarchy.class_names):
        cells = [f"{runs[n]['iou_per_class'][index] * 100:.2f}" for n in names]
        lines.append(f"| {class_name} | " + " | ".join(cells) + " |")
    if curves:
        lines += ["", f"Validation mIoU during training: ![curves]({curves})"]
    renders = sorted(p.name for p in workdir.glob("render_*.png"))
    if renders:
        lines += ["", "Validation samples (ground truth, runs, where they differ):", ""]
        lines += [f"![{name}]({name})" for name in renders]
    for key, value in extra.items():
        lines.append(f"\n{key}: {value}")
    (workdir / "report.md").write_text("\n".join(lines) + "\n")
    return report


def _cell(value, scale: float) -> str:
    if value is None or value != value:
        return "-"
    return f"{value * scale:.2f}"


def _ignore_rule(label_space: LabelSpace) -> str:
    if label_space.ignore_index is None:
        return "no ignored label;"
    name = (
        f"id {label_space.ignore_index} ({label_space.class_names[label_space.ignore_in_range]})"
        if label_space.ignore_in_range is not None
        else f"id {label_space.ignore_index}"
    )
    return f"label {name} ignored;"
