"""The paper's hierarchy: recursive spectral bisection of the confusion graph.

docs/leak_method.md, section 1.

The paper: spectral clustering "progressively subdivides the network in two clusters until the
optimal number of communities is reached. This number is estimated a priori thanks to the graph
conductance measure where the optimal number of clusters corresponds to the number of local
minima", and the class tree "is derived bottom-up with this approach". The reading implemented here
works on a symmetric affinity W [n, n] of the n clusterable classes: `discover_hierarchy`
(hierarchy.py) builds W with `affinity_from_confusion` and places the absent / never-confused
classes (`Hierarchy.unclustered`) afterwards. Deterministic: no k-means, no seed.

Conductance of a cut of a cluster C into S and C \\ S, measured in the SUBGRAPH induced by C:
    phi_C(S) = cut_C(S, C \\ S) / min(vol_C S, vol_C (C \\ S)),  vol_C S = sum_{i in S, j in C} W_ij
i.e. `hierarchy.conductances` applied to W restricted to C (edges leaving C were cut before). A cut
that no edge crosses has conductance 0, also when one side has zero volume (a class with no edge
inside C; `conductances` would say 1 there).

One bisection. C's classes are sorted by the Fiedler vector of its normalised Laplacian
I - D^-1/2 W_C D^-1/2 (the eigenvector of the second smallest eigenvalue, times D^-1/2 as in the
Cheeger sweep; ties by class id), oriented to agree with the order of C's parent (the root: the
end with the smaller class id first). The cut is the prefix of that order with the lowest phi_C
(the sweep); ties (1e-9 relative) go to the lighter cut (e.g. in a 3-class cluster, where every
cut has conductance 1), then the most balanced volumes (e.g. among the cuts between disconnected
parts), then the most balanced counts, then the shorter prefix. A disconnected C is ordered
component by component (in order of smallest class id, each by its own Fiedler vector), so its
best cut separates components at conductance 0.

Order of splits. From the cluster of all n classes, repeatedly split the cluster whose best cut has
the lowest conductance (ties: the cluster holding the smallest class id), down to single classes.
The n - 1 splits are the tree; the partition into k clusters is the one after the first k - 1
splits, so partitions are nested, and the macro classes are the clusters after num_macro - 1
splits. The whole tree (below the macro level too) is kept, so the dendrogram is complete: split t
(1-based) merges at height n - t, and scipy's fcluster(linkage, k, "maxclust") gives the k clusters.

Number of macro classes, a priori (the tree does not depend on it):
  * the graph's conductance profile is phi_V of every prefix, p = 1..n-1 classes, of the tree's
    leaf order (the recursive spectral order: the graph's Fiedler order, refined inside each
    cluster by the cluster's own; at the first level it is the plain Fiedler sweep of the graph,
    whose single vector would interleave communities it does not separate). Both ends are 1 (one
    class against the rest), so local minima are interior;
  * a local minimum is a position, or a plateau of equal values (1e-9 relative), strictly lower
    than its neighbours. It counts only if prominent (**choice**): on each side the profile rises
    to at least (1 + min_rise) times its value before it falls below that value again (or ends).
    min_rise = 0 is the raw count, which also counts the shallow wiggles left by the arbitrary
    order of classes inside one community and by weaker sub-communities (on the planted
    hierarchies of tests/test_leak_bisection.py it finds the macro level in about 60% of cases).
    A minimum at conductance 0 (between disconnected parts) always counts;
  * num_macro = counted minima + 1 (**choice**: minima are the boundaries between consecutive
    communities along the order, "count + 1 segments"), clipped to [2, n]: with n >= 3
    clusterable classes there are always at least 2 macro classes.
DEFAULT_MIN_RISE = 0.3 was chosen on planted hierarchical matrices (seeds disjoint from the tests';
0.2-0.4 do about as well). It misses the planted macro level when communities leak more than about
a fifth of their errors outside, or when sub-communities are nearly as separate as the
communities; tests/test_leak_bisection.py gives the rates.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.sparse.csgraph import connected_components

DEFAULT_MIN_RISE = 0.3
_RTOL = 1e-9


@dataclasses.dataclass(frozen=True)
class Split:
    """One bisection: `members` (in the cluster's oriented spectral order) = `left` + `right`."""

    members: np.ndarray  # int [c], local class ids
    left: np.ndarray  # int [p], the prefix side, drawn first
    right: np.ndarray  # int [c - p]
    conductance: float  # phi_C of the cut, in the cluster's subgraph


@dataclasses.dataclass(frozen=True)
class Bisection:
    """The full tree of a graph of n classes and the macro level chosen on it."""

    splits: list[Split]  # n - 1 splits, in the order they were made
    order: np.ndarray  # int [n], the tree's leaf order
    profile: np.ndarray  # float [n - 1], phi_V of each prefix of `order`
    minima: np.ndarray  # int, prefix sizes p of the counted minima (num_macro - 1 unless fixed)
    num_macro: int
    labels: np.ndarray  # int [n], cluster of each class after num_macro - 1 splits


def sweep_conductance(affinity: np.ndarray, order: np.ndarray) -> np.ndarray:
    """phi of every prefix order[:p], p = 1..len(order)-1, in the graph `affinity`. -> [n - 1]."""
    ordered = affinity[np.ix_(order, order)]
    degree = ordered.sum(axis=1)
    total = degree.sum()
    out = np.zeros(len(order) - 1)
    for p in range(1, len(order)):
        cut = ordered[:p, p:].sum()
        volume = degree[:p].sum()
        denom = min(volume, total - volume)
        out[p - 1] = cut / denom if cut > 0 else 0.0
    return out


def _fiedler_order(affinity: np.ndarray) -> np.ndarray:
    """Classes of a connected graph (n >= 2) sorted by D^-1/2 times the Fiedler vector."""
    num = len(affinity)
    inv_sqrt = 1.0 / np.sqrt(affinity.sum(axis=1))
    laplacian = np.eye(num) - inv_sqrt[:, None] * affinity * inv_sqrt[None, :]
    _, vectors = np.linalg.eigh(laplacian)
    value = inv_sqrt * vectors[:, 1]
    value = np.round(value / np.abs(value).max(), 9)  # equal up to round-off -> ties by id
    return np.lexsort((np.arange(num), value))


def spectral_order(affinity: np.ndarray) -> np.ndarray:
    """A graph's classes in spectral order (module docstring), components one after the other."""
    num = len(affinity)
    if num <= 2:
        return np.arange(num)
    num_parts, part = connected_components(affinity > 0, directed=False)
    if num_parts == 1:
        return _fiedler_order(affinity)
    pieces = []
    for label in range(num_parts):
        members = np.flatnonzero(part == label)
        pieces.append(members[spectral_order(affinity[np.ix_(members, members)])])
    return np.concatenate(sorted(pieces, key=lambda piece: piece.min()))


def _oriented(order: np.ndarray, rank: np.ndarray | None) -> np.ndarray:
    """`order` or its reverse, whichever agrees with the parent's `rank` of each class."""
    if rank is None:
        return order if order[0] <= order[-1] else order[::-1]  # root: smaller end first
    position = np.empty(len(order))
    position[order] = np.arange(len(order))
    agreement = np.dot(position - position.mean(), rank - rank.mean())
    return order[::-1] if agreement < 0 else order


def best_cut(affinity: np.ndarray, rank: np.ndarray | None = None) -> tuple[np.ndarray, int, float]:
    """The minimum-conductance sweep cut of a graph [c, c] -> (order [c], prefix size p, phi)."""
    order = _oriented(spectral_order(affinity), rank)
    sweep = sweep_conductance(affinity, order)
    degree = affinity.sum(axis=1)
    volume = np.cumsum(degree[order])[:-1]
    balance = np.minimum(volume, degree.sum() - volume)
    prefix = np.arange(1, len(order))
    count_balance = np.minimum(prefix, len(order) - prefix)
    cut = np.round(sweep * balance / max(degree.sum(), 1e-300), 9)  # share of the volume cut
    lowest = np.flatnonzero(sweep <= sweep.min() * (1 + _RTOL) + 1e-15)
    keys = (lowest, -count_balance[lowest], -balance[lowest], cut[lowest])
    choice = lowest[np.lexsort(keys)[0]]
    return order, int(choice) + 1, float(sweep[choice])


def recursive_bisection(affinity: np.ndarray) -> tuple[list[Split], np.ndarray]:
    """The full tree: n - 1 splits in the order made, and its leaf order int [n]."""
    num = len(affinity)
    pending = {}  # smallest member -> (members, rank in the parent's order, best cut)

    def add(members: np.ndarray, rank: np.ndarray | None) -> None:
        if len(members) > 1:
            sub = affinity[np.ix_(members, members)]
            pending[int(members.min())] = (members, rank, best_cut(sub, rank))

    add(np.arange(num), None)
    splits = []
    while pending:
        lowest = min(cut[2] for _, _, cut in pending.values())
        key = min(k for k in pending if pending[k][2][2] <= lowest * (1 + _RTOL) + 1e-15)
        members, _, (order, size, phi) = pending.pop(key)
        ordered = members[order]
        splits.append(Split(ordered, ordered[:size], ordered[size:], phi))
        add(ordered[:size], np.arange(size, dtype=np.float64))
        add(ordered[size:], np.arange(len(ordered) - size, dtype=np.float64))
    by_cluster = {tuple(sorted(s.members.tolist())): s for s in splits}

    def leaves(members: np.ndarray) -> list[int]:
        if len(members) == 1:
            return [int(members[0])]
        split = by_cluster[tuple(sorted(members.tolist()))]
        return leaves(split.left) + leaves(split.right)

    return splits, np.asarray(leaves(np.arange(num)))


def prominent_minima(profile: np.ndarray, min_rise: float = DEFAULT_MIN_RISE) -> np.ndarray:
    """Prefix sizes p (1-based, a plateau's first) of the counted local minima (module doc)."""
    values, starts = [], []
    for index, value in enumerate(profile):  # collapse plateaus
        if values and abs(value - values[-1]) <= _RTOL * max(abs(value), abs(values[-1])):
            continue
        values.append(float(value))
        starts.append(index + 1)
    kept = []
    for i in range(1, len(values) - 1):
        value = values[i]
        if not (value < values[i - 1] and value < values[i + 1]):
            continue
        rises = []
        for step in (-1, 1):
            j, peak = i + step, value
            while 0 <= j < len(values) and values[j] >= value:
                peak = max(peak, values[j])
                j += step
            rises.append(peak)
        if value == 0.0 or min(rises) >= (1.0 + min_rise) * value:
            kept.append(starts[i])
    return np.asarray(kept, np.int64)


def partition(splits: list[Split], num: int, num_clusters: int) -> np.ndarray:
    """Cluster id of each of `num` classes after the first num_clusters - 1 splits. -> int [num]."""
    labels = np.zeros(num, np.int64)
    for step, split in enumerate(splits[: num_clusters - 1], start=1):
        labels[split.right] = step
    return labels


def bisect(
    affinity: np.ndarray, num_macro: int | None = None, min_rise: float = DEFAULT_MIN_RISE
) -> Bisection:
    """The tree, the profile and the macro level of a graph [n, n], n >= 2 (module docstring).

    Args:
      affinity: symmetric non-negative W with a zero diagonal; every class has an edge.
      num_macro: a fixed number of macro classes (1..n) instead of the a-priori estimate.
      min_rise: prominence a local minimum of the profile needs to count (module docstring).
    """
    affinity = np.asarray(affinity, np.float64)
    num = len(affinity)
    splits, order = recursive_bisection(affinity)
    profile = sweep_conductance(affinity, order)
    minima = prominent_minima(profile, min_rise)
    if num_macro is None:
        num_macro = min(max(2, len(minima) + 1), num)
    elif not 1 <= num_macro <= num:
        raise ValueError(f"num_macro: {num_macro} not in 1..{num} (the clusterable classes)")
    labels = partition(splits, num, num_macro)
    return Bisection(splits, order, profile, minima, int(num_macro), labels)


def tree_records(result: Bisection, nodes: np.ndarray) -> list[dict]:
    """The splits as JSON-ready dicts, class ids mapped through `nodes` (micro id of each class).

    Each: split (1-based order), members / left / right (sorted micro ids; left is drawn first),
    conductance (phi of the cut in the cluster's subgraph), height (in the linkage, n - split),
    macro (True for the num_macro - 1 splits that make the macro classes).
    """
    num = len(nodes)

    def micro(local: np.ndarray) -> list[int]:
        return sorted(int(nodes[i]) for i in local)

    return [
        {
            "split": step,
            "members": micro(split.members),
            "left": micro(split.left),
            "right": micro(split.right),
            "conductance": float(split.conductance),
            "height": float(num - step),
            "macro": step < result.num_macro,
        }
        for step, split in enumerate(result.splits, start=1)
    ]


def tree_linkage(
    result: Bisection,
    nodes: np.ndarray,
    num_micro: int,
    joined: dict[int, list[int]] | None = None,
    alone: list[int] = (),
) -> np.ndarray:
    """Scipy linkage [num_micro - 1, 4] that draws the tree of splits.

    Split t of the n clustered classes merges its two sides at height n - t. Classes placed without
    clustering: `joined` {cluster label in result.labels: micro ids} hang under their macro class
    (between its own first split and the split that made it), `alone` (micro ids, singleton macro
    classes) are merged one by one above the root, at heights n, n + 1, ...
    """
    num = len(nodes)
    joined = joined or {}
    split_of = {tuple(sorted(s.members.tolist())): t for t, s in enumerate(result.splits, 1)}
    macro_key = {
        tuple(np.flatnonzero(result.labels == label).tolist()): label
        for label in range(result.num_macro)
    }
    internal = []  # [height, left node, right node, count]; a node is a micro id or a list

    def merge(left, right, height: float) -> list:
        node = [height, left, right, _count(left) + _count(right)]
        internal.append(node)
        return node

    def build(members: np.ndarray):
        key = tuple(sorted(members.tolist()))
        if len(members) == 1:
            node, height = int(nodes[members[0]]), 0.0
        else:
            step = split_of[key]
            split = result.splits[step - 1]
            height = float(num - step)
            node = merge(build(split.left), build(split.right), height)
        extra = joined.get(macro_key[key], []) if key in macro_key else []
        for index, micro in enumerate(extra, start=1):
            node = merge(node, int(micro), height + index / (len(extra) + 1))
        return node

    root = build(np.arange(num))
    for index, micro in enumerate(alone):
        root = merge(root, int(micro), float(num + index))
    ids = {}
    rows = []
    for node in sorted(internal, key=lambda node: node[0]):  # children sit strictly lower
        ids[id(node)] = num_micro + len(rows)
        left, right = (n if isinstance(n, int) else ids[id(n)] for n in node[1:3])
        rows.append([left, right, node[0], node[3]])
    return np.asarray(rows, np.float64).reshape(-1, 4)


def _count(node) -> int:
    return 1 if isinstance(node, int) else node[3]
