"""Figures of the LEAK pipeline: the baseline's confusion matrix, the conductance curve and the
dendrogram (phase 2), and the validation curves of every run (phase 4)."""

import pathlib

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.cluster import hierarchy as scipy_hierarchy  # noqa: E402

from leakjax.leak.grouping import Hierarchy  # noqa: E402


def plot_confusion(
    confusion: np.ndarray, class_names: list[str], order: list[int], path: pathlib.Path
) -> None:
    """Row-normalised confusion [m, m] (rows truth), classes in dendrogram `order`, log colours."""
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    normalised = normalised[np.ix_(order, order)]
    names = [class_names[i] for i in order]
    fig, ax = plt.subplots(figsize=(8, 7))
    image = ax.imshow(np.log10(normalised + 1e-4), cmap="viridis", vmin=-4, vmax=0)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("baseline confusion, P(pred | truth), log10")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_conductance(hierarchy: Hierarchy, path: pathlib.Path) -> None:
    """Aggregated conductance per candidate k, the chosen k marked.

    The chosen k counts the macro classes of the clustered micro classes only: classes absent from
    the validation ground truth (`hierarchy.unclustered`) may add macro classes of their own.
    """
    ks = sorted(hierarchy.conductance)
    values = [hierarchy.conductance[k] for k in ks]
    clustered = [i for i in range(hierarchy.num_micro) if i not in set(hierarchy.unclustered)]
    chosen = len(set(int(hierarchy.micro_to_macro[i]) for i in clustered))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ks, values, "o-")
    ax.axvline(chosen, color="red", linestyle="--", label=f"chosen k = {chosen}")
    ax.set_xlabel("number of clusters k")
    ax.set_ylabel(f"{hierarchy.aggregation} conductance")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_dendrogram(hierarchy: Hierarchy, path: pathlib.Path) -> None:
    """The hierarchy's tree (Fig. 3), leaves coloured by macro class.

    For the paper's bisection (hierarchy.tree), every split is labelled with its conductance,
    the splits that make the macro classes in black, the finer ones in grey.
    """
    fig, ax = plt.subplots(figsize=(9, 4.5))
    if hierarchy.linkage is not None and len(hierarchy.linkage):
        drawn = scipy_hierarchy.dendrogram(
            hierarchy.linkage,
            labels=hierarchy.class_names,
            ax=ax,
            leaf_rotation=90,
            color_threshold=0,
        )
        colours = plt.get_cmap("tab10")
        for label in ax.get_xmajorticklabels():
            micro = hierarchy.class_names.index(label.get_text())
            label.set_color(colours(int(hierarchy.micro_to_macro[micro]) % 10))
        splits = {round(float(n["height"]), 6): n for n in hierarchy.tree if "height" in n}
        for xs, ys in zip(drawn["icoord"], drawn["dcoord"]):
            split = splits.get(round(float(ys[1]), 6))
            if split is not None and split.get("conductance") is not None:
                ax.annotate(
                    f"{split['conductance']:.2f}",
                    ((xs[1] + xs[2]) / 2, ys[1]),
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    color="black" if split.get("macro") else "grey",
                )
    title = "classes merged by confusion (leaf colour = macro class)"
    if hierarchy.tree:
        title += "; split conductance at each node"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(runs: dict[str, list[dict]], path: pathlib.Path, metric: str = "val_miou") -> bool:
    """Validation `metric` (%) over training steps, one line per run; runs = {name: jsonl records}.

    Returns False (and writes nothing) when no run has a record of `metric`.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for name, records in runs.items():
        points = [(r["step"], 100 * r[metric]) for r in records if metric in r]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, "o-", label=name)
            drawn = True
    if drawn:
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def plot_curve_bands(
    curves: dict[str, dict[int, list[dict]]], path: pathlib.Path, metric: str = "val_miou"
) -> bool:
    """Fig. 5: `metric` (%) over training per arm, the mean over seeds with a min-max band.

    curves = {arm: {seed: metrics.jsonl records}}; steps missing in some seed are left out of the
    mean. Returns False (writes nothing) when no record has `metric`.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4))
    drawn = False
    for arm, seeds in curves.items():
        by_step: dict[int, list[float]] = {}
        for records in seeds.values():
            for record in records:
                if metric in record:
                    by_step.setdefault(record["step"], []).append(100 * record[metric])
        steps = sorted(s for s, v in by_step.items() if len(v) == len(seeds))
        if not steps:
            continue
        values = [np.asarray(by_step[s]) for s in steps]
        line = ax.plot(steps, [v.mean() for v in values], "o-", label=arm)[0]
        ax.fill_between(
            steps,
            [v.min() for v in values],
            [v.max() for v in values],
            alpha=0.2,
            color=line.get_color(),
        )
        drawn = True
    if drawn:
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{metric} (%), mean over seeds, min-max band")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn
