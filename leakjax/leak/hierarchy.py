"""Hierarchy from mistakes: micro -> macro classes by spectral clustering of a confusion matrix.

Runs on the host (numpy / scipy / scikit-learn) between training phases (docs/leak_method.md,
section 1):

  1. A = the row-normalised confusion (A_ij = P(pred = j | gt = i)), rows ground truth.
  2. W = (A + A^T) / 2 with a zero diagonal (**choice**: the paper uses A as the edge weights of a
     complete graph; a symmetric affinity is what spectral clustering needs).

Then one of two methods (`discover_hierarchy(method=...)`):

  "bisection" (default, the paper's procedure; bisection.py documents the reading): recursive
     spectral bisection of W down to single classes, split by split in order of conductance; the
     number of macro classes from the prominent local minima of the graph's conductance profile
     (or `num_macro`); the tree of splits is the dendrogram (`Hierarchy.tree`, `linkage`).
     Deterministic.

  "kway" (NOT from the paper; the earlier reading, kept as a switch):
  3. For k = 2..k_max: sklearn SpectralClustering(affinity="precomputed", seeded) on W; score each
     partition by the conductance phi(S) = cut(S, not S) / min(vol S, vol not S) of its clusters,
     vol S = sum_{i in S} sum_j W_ij, aggregated by the mean (**choice**; "max" is the alternative).
  4. Pick k (`criterion`):
       "largest_relative_increase" (default): the k before the largest RELATIVE increase
           c(k+1) / c(k) of the conductance curve. Mean conductance stays low while every cluster is
           a real community and jumps once a true community is split; past that point it keeps
           rising roughly linearly, so the absolute steps after the true k are often as large as
           the first one, while the ratio singles out the first jump. On the 50 planted confusion
           matrices of tests/test_leak_hierarchy.py (`planted_report`) it picks the planted k in
           48 cases, the absolute step in 33;
       "largest_increase": docs/leak_method.md's literal **choice**, the k before the largest
       absolute
           increase c(k+1) - c(k);
       "first_local_minimum": the paper's literal wording, the first k whose successor is higher;
       "eigengap": argmax_k (lambda_{k+1} - lambda_k) of the normalised Laplacian of W;
       "fixed": `fixed_k`.
  5. Macro ids are numbered by the smallest micro id they contain; macro names join member names.

Classes that cannot be clustered are handled before step 3 and recorded in `Hierarchy.unclustered`:
  * a class with no ground-truth point (zero row) has no error distribution of its own; it joins the
    macro class to which it has the largest total affinity (other classes predicted as it), or
    becomes a singleton macro class if it has no affinity at all;
  * a present class with zero affinity to every other class (never confused either way) is its own
    community: a singleton macro class.
(Both methods.) With "bisection", an absent class that joins a macro class hangs under it in the
dendrogram, and singleton unclustered classes are merged above the root of the tree.
The k-way dendrogram is a scipy linkage matrix over all m classes built to agree with
the partition: average linkage on d = 1 - W / max(W) inside each macro class, then average linkage
between the macro classes (heights raised where needed to stay monotone), so leaves come out
cluster by cluster.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.cluster.hierarchy as sch
from scipy.spatial.distance import squareform
from sklearn.cluster import SpectralClustering

from leakjax.leak import bisection
from leakjax.leak.grouping import Hierarchy, canonical_labels, macro_names_from

CRITERIA = (
    "largest_relative_increase",
    "largest_increase",
    "first_local_minimum",
    "eigengap",
    "fixed",
)
AGGREGATIONS = ("mean", "max")
METHODS = ("bisection", "kway")


def affinity_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """W = (A + A^T) / 2, zero diagonal, A the row-normalised confusion. [m, m] -> [m, m] float64.

    Zero rows (classes without ground truth) stay zero in A.
    """
    conf = np.asarray(confusion, np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion: expected a square [m, m] matrix, got shape {conf.shape}")
    if np.any(conf < 0) or not np.all(np.isfinite(conf)):
        raise ValueError("confusion: counts must be finite and non-negative")
    row_sum = conf.sum(axis=1, keepdims=True)
    rates = np.divide(conf, row_sum, out=np.zeros_like(conf), where=row_sum > 0)
    affinity = 0.5 * (rates + rates.T)
    np.fill_diagonal(affinity, 0.0)
    return affinity


def conductances(affinity: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi(S) = cut(S, not S) / min(vol S, vol not S) for every cluster S of `labels`. -> [k]."""
    degree = affinity.sum(axis=1)
    total_volume = degree.sum()
    out = []
    for cluster in np.unique(labels):
        inside = labels == cluster
        volume = degree[inside].sum()
        cut = affinity[np.ix_(inside, ~inside)].sum()
        denom = min(volume, total_volume - volume)
        out.append(cut / denom if denom > 0 else 1.0)
    return np.asarray(out)


def normalized_laplacian_spectrum(affinity: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of I - D^-1/2 W D^-1/2 (isolated nodes get degree 1)."""
    degree = affinity.sum(axis=1)
    inv_sqrt = 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0))
    laplacian = np.eye(len(degree)) - inv_sqrt[:, None] * affinity * inv_sqrt[None, :]
    return np.sort(np.linalg.eigvalsh(laplacian))


def _spectral(affinity: np.ndarray, k: int, seed: int, assign_labels: str) -> np.ndarray:
    model = SpectralClustering(
        n_clusters=k, affinity="precomputed", random_state=seed, assign_labels=assign_labels
    )
    with warnings.catch_warnings():
        # A disconnected affinity is legitimate here (separate communities); sklearn warns.
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        return model.fit_predict(affinity)


def choose_k(
    curve: dict[int, float],
    criterion: str,
    eigenvalues: np.ndarray | None = None,
    fixed_k: int | None = None,
) -> int:
    """Pick the number of macro classes from the conductance curve {k: score} (see module doc)."""
    ks = sorted(curve)
    if criterion == "fixed":
        if fixed_k is None or fixed_k not in curve:
            raise ValueError(f"fixed_k: {fixed_k} must be one of the candidate k {ks}")
        return fixed_k
    if criterion == "eigengap":
        gaps = {k: eigenvalues[k] - eigenvalues[k - 1] for k in ks if k < len(eigenvalues)}
        return max(gaps, key=lambda k: (gaps[k], -k))
    if len(ks) == 1:
        return ks[0]
    if criterion in ("largest_increase", "largest_relative_increase"):
        if criterion == "largest_increase":
            increases = {k: curve[k + 1] - curve[k] for k in ks[:-1]}
        else:  # tiny offset: a partition into disconnected communities has conductance 0
            increases = {k: (curve[k + 1] + 1e-12) / (curve[k] + 1e-12) for k in ks[:-1]}
        return max(increases, key=lambda k: (increases[k], -k))
    if criterion == "first_local_minimum":
        for k in ks[:-1]:
            if curve[k + 1] > curve[k]:
                return k
        return ks[-1]
    raise ValueError(f"criterion: {criterion!r} not in {CRITERIA}")


def discover_hierarchy(
    confusion: np.ndarray,
    k_max: int = 10,
    seed: int = 0,
    criterion: str = "largest_relative_increase",
    aggregation: str = "mean",
    fixed_k: int | None = None,
    class_names: list[str] | None = None,
    assign_labels: str = "kmeans",
    method: str = "bisection",
    num_macro: int | None = None,
    min_rise: float = bisection.DEFAULT_MIN_RISE,
) -> Hierarchy:
    """Macro classes from the mistakes in a confusion matrix.

    Args:
      confusion: [m, m] counts, rows ground truth, columns prediction, ignored class excluded.
      k_max: (kway) largest candidate number of clusters (clipped to the number of clusterable
        classes minus 1; candidates are 2..k_max).
      seed: (kway) random_state of the spectral clustering (k-means label assignment).
      criterion: (kway) one of CRITERIA (module docstring); default the k before the largest
        relative increase of the conductance curve.
      aggregation: (kway) "mean" (**choice**) or "max" of the per-cluster conductances.
      fixed_k: (kway) the k for criterion="fixed".
      class_names: m micro class names (default "class_i").
      assign_labels: (kway) SpectralClustering's label assignment ("kmeans", "discretize",
        "cluster_qr").
      method: "bisection" (default, the paper) or "kway" (not from the paper).
      num_macro: (bisection) a fixed number of macro classes of the clusterable classes, 1..n,
        instead of the a-priori estimate; unclustered classes may add singleton macro classes.
      min_rise: (bisection) prominence a local minimum of the conductance profile needs to count.

    Returns:
      Hierarchy(method="spectral") with micro_to_macro int [m], macro_names, the eigenvalues of
      the clustered classes' normalised Laplacian, the dendrogram linkage and leaf order, and
        bisection: criterion "bisection" ("bisection_fixed" with num_macro), aggregation "split",
          conductance {k: conductance of the split that made the k-th cluster}, tree (the splits,
          `bisection.tree_records`), seed None;
        kway: criterion, aggregation, conductance {k: aggregated conductance}, seed, no tree.
    """
    if method not in METHODS:
        raise ValueError(f"method: {method!r} not in {METHODS}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: {criterion!r} not in {CRITERIA}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation: {aggregation!r} not in {AGGREGATIONS}")
    if num_macro is not None and method != "bisection":
        raise ValueError("num_macro: bisection only; with kway use criterion='fixed', fixed_k")
    affinity = affinity_from_confusion(confusion)
    num_micro = affinity.shape[0]
    names = (
        list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_micro)]
    )
    if len(names) != num_micro:
        raise ValueError(f"class_names: {len(names)} names for a {num_micro}-class confusion")
    has_gt = np.asarray(confusion).sum(axis=1) > 0
    connected = affinity.sum(axis=1) > 0
    clusterable = has_gt & connected
    nodes = np.flatnonzero(clusterable)
    if len(nodes) < 3:
        raise ValueError(
            f"confusion: only {len(nodes)} classes have ground truth and mistakes; need >= 3 to "
            "cluster"
        )
    sub_affinity = affinity[np.ix_(nodes, nodes)]
    eigenvalues = [float(v) for v in normalized_laplacian_spectrum(sub_affinity)]
    unclustered = [int(i) for i in np.flatnonzero(~clusterable)]
    if method == "bisection":
        result = bisection.bisect(sub_affinity, num_macro, min_rise)
        assignment = _place_unclustered(affinity, has_gt, clusterable, result.labels)
        joined: dict[int, list[int]] = {}
        for cls in unclustered:
            if assignment[cls] < result.num_macro:
                joined.setdefault(int(assignment[cls]), []).append(cls)
        alone = [cls for cls in unclustered if assignment[cls] >= result.num_macro]
        linkage = bisection.tree_linkage(result, nodes, num_micro, joined, alone)
        micro_to_macro = canonical_labels(assignment)
        return Hierarchy(
            micro_to_macro=micro_to_macro,
            class_names=names,
            macro_names=macro_names_from(micro_to_macro, names),
            method="spectral",
            criterion="bisection" if num_macro is None else "bisection_fixed",
            aggregation="split",
            conductance={
                k: float(split.conductance) for k, split in enumerate(result.splits, start=2)
            },
            eigenvalues=eigenvalues,
            linkage=linkage,
            order=[int(i) for i in sch.leaves_list(linkage)],
            unclustered=unclustered,
            seed=None,
            tree=bisection.tree_records(result, nodes),
        )

    k_top = min(k_max, len(nodes) - 1)
    if k_top < 2:
        raise ValueError(f"k_max: {k_max} leaves no candidate k >= 2")
    aggregate = np.mean if aggregation == "mean" else np.max
    partitions, curve = {}, {}
    for k in range(2, k_top + 1):
        labels = _spectral(sub_affinity, k, seed, assign_labels)
        partitions[k] = labels
        curve[k] = float(aggregate(conductances(sub_affinity, labels)))
    chosen = choose_k(curve, criterion, np.asarray(eigenvalues), fixed_k)
    assignment = _place_unclustered(affinity, has_gt, clusterable, partitions[chosen])
    micro_to_macro = canonical_labels(assignment)
    linkage = partition_linkage(affinity, micro_to_macro)
    return Hierarchy(
        micro_to_macro=micro_to_macro,
        class_names=names,
        macro_names=macro_names_from(micro_to_macro, names),
        method="spectral",
        criterion=criterion,
        aggregation=aggregation,
        conductance=curve,
        eigenvalues=eigenvalues,
        linkage=linkage,
        order=[int(i) for i in sch.leaves_list(linkage)],
        unclustered=unclustered,
        seed=seed,
    )


def _place_unclustered(
    affinity: np.ndarray, has_gt: np.ndarray, clusterable: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """Cluster id int [m] of every class, given `labels` [n] of the clusterable ones (module doc).

    Unclustered classes take ids from labels.max() + 1 up when they become singleton macro classes.
    """
    nodes = np.flatnonzero(clusterable)
    num_clusters = int(labels.max()) + 1
    assignment = np.full(len(clusterable), -1)
    assignment[nodes] = labels
    next_id = num_clusters
    for cls in np.flatnonzero(~clusterable):
        pull = np.bincount(labels, weights=affinity[cls, nodes], minlength=num_clusters)
        if has_gt[cls] or pull.max() <= 0:
            assignment[cls] = next_id  # never confused (or unconnected): its own community
            next_id += 1
        else:
            assignment[cls] = int(np.argmax(pull))
    return assignment


def _average_linkage(distance: np.ndarray) -> np.ndarray:
    return sch.linkage(squareform(distance, checks=False), method="average")


def partition_linkage(affinity: np.ndarray, micro_to_macro: np.ndarray) -> np.ndarray:
    """Scipy linkage [m-1, 4] over all classes that respects the partition (module docstring)."""
    num_micro = len(micro_to_macro)
    scale = affinity.max() if affinity.max() > 0 else 1.0
    distance = 1.0 - affinity / scale
    np.fill_diagonal(distance, 0.0)
    rows: list[list[float]] = []
    next_node = num_micro
    roots, root_height = [], []
    for macro in range(int(micro_to_macro.max()) + 1):
        members = np.flatnonzero(micro_to_macro == macro)
        if len(members) == 1:
            roots.append(int(members[0]))
            root_height.append(0.0)
            continue
        local = _average_linkage(distance[np.ix_(members, members)])
        local_ids = [int(i) for i in members]
        for left, right, height, count in local:
            rows.append([local_ids[int(left)], local_ids[int(right)], float(height), int(count)])
            local_ids.append(next_node)
            next_node += 1
        roots.append(local_ids[-1])
        root_height.append(float(local[-1, 2]))
    if len(roots) > 1:
        macro_of = [micro_to_macro == c for c in range(len(roots))]
        between = np.array([[distance[np.ix_(a, b)].mean() for b in macro_of] for a in macro_of])
        np.fill_diagonal(between, 0.0)
        sizes = [int(m.sum()) for m in macro_of]
        node_ids, heights = list(roots), list(root_height)
        for left, right, height, _ in _average_linkage(between):
            left, right = int(left), int(right)
            merged = max(float(height), heights[left], heights[right])  # keep heights monotone
            sizes.append(sizes[left] + sizes[right])
            rows.append([node_ids[left], node_ids[right], merged, sizes[-1]])
            node_ids.append(next_node)
            heights.append(merged)
            next_node += 1
    return np.asarray(rows, np.float64).reshape(-1, 4)
