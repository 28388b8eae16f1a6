"""The micro -> macro class grouping (`Hierarchy`), its JSON form, and the ablation groupings.

A `Hierarchy` maps m micro classes (dense ids 0..m-1, ignored label excluded) to M macro classes.
It is produced by `discover_hierarchy` (spectral clustering of mistakes, hierarchy.py) or by one of
the ablation groupings here, which replace the clustering step (docs/leak_method.md, section 1):

  random_grouping   a random partition with the same cluster sizes as a reference one (seeded);
  a_priori_grouping a dataset's a-priori categories (LabelSpace.categories, e.g. SemanticKITTI's
                    official ones in datasets/semantic_kitti/labels.py), looked up by class NAME;
  given_grouping    a user's mapping.

Macro ids are canonical: numbered in order of their smallest micro id (a_priori: category order).
The JSON form is what is saved next to checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np


@dataclasses.dataclass
class Hierarchy:
    """A micro -> macro grouping and how it was obtained.

    Attributes:
      micro_to_macro: int [m], macro id of every micro class.
      class_names: m micro class names.
      macro_names: M macro names (members joined by "+", or category names for a_priori).
      method: "spectral", "random", "a_priori" or "given".
      criterion: how k was chosen (spectral only), e.g. "largest_increase"; "bisection" or
        "bisection_fixed" for the recursive bisection (hierarchy.py, bisection.py).
      aggregation: "mean" or "max" of per-cluster conductances (spectral only); "split" for the
        bisection, whose conductance[k] is that of the split that made the k-th cluster.
      conductance: {k: aggregated conductance} for every candidate k (spectral only).
      eigenvalues: ascending eigenvalues of the normalised Laplacian of the clustered classes.
      linkage: scipy linkage matrix [m-1, 4] consistent with the partition (dendrogram), or None.
      order: dendrogram leaf order (micro ids), macro class by macro class.
      unclustered: micro ids placed without clustering (absent or never-confused classes).
      seed: the seed used (spectral clustering or random grouping).
      tree: the bisection's splits in order, JSON-ready dicts (bisection.tree_records); else [].
    """

    micro_to_macro: np.ndarray
    class_names: list[str]
    macro_names: list[str]
    method: str
    criterion: str | None = None
    aggregation: str | None = None
    conductance: dict[int, float] = dataclasses.field(default_factory=dict)
    eigenvalues: list[float] = dataclasses.field(default_factory=list)
    linkage: np.ndarray | None = None
    order: list[int] = dataclasses.field(default_factory=list)
    unclustered: list[int] = dataclasses.field(default_factory=list)
    seed: int | None = None
    tree: list[dict] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.micro_to_macro = validate_mapping(self.micro_to_macro, "micro_to_macro")
        if len(self.class_names) != len(self.micro_to_macro):
            raise ValueError(
                f"class_names: {len(self.class_names)} names for {len(self.micro_to_macro)} classes"
            )
        if len(self.macro_names) != self.num_macro:
            raise ValueError(
                f"macro_names: {len(self.macro_names)} names for {self.num_macro} macro classes"
            )
        if not self.order:
            self.order = [int(i) for i in np.argsort(self.micro_to_macro, kind="stable")]

    @property
    def num_micro(self) -> int:
        return len(self.micro_to_macro)

    @property
    def num_macro(self) -> int:
        return int(self.micro_to_macro.max()) + 1

    def with_ignored(self, ignore_index: int = 0) -> np.ndarray:
        """int [m + 1]: the map with -1 inserted at `ignore_index` (metrics on raw label ids)."""
        return np.insert(self.micro_to_macro, ignore_index, -1)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["micro_to_macro"] = [int(v) for v in self.micro_to_macro]
        data["conductance"] = {str(k): float(v) for k, v in self.conductance.items()}
        data["linkage"] = None if self.linkage is None else np.asarray(self.linkage).tolist()
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Hierarchy:
        data = json.loads(text)
        data["micro_to_macro"] = np.asarray(data["micro_to_macro"], np.int32)
        data["conductance"] = {int(k): float(v) for k, v in data["conductance"].items()}
        if data["linkage"] is not None:
            data["linkage"] = np.asarray(data["linkage"], np.float64).reshape(-1, 4)
        return cls(**data)

    def save(self, path: str | pathlib.Path) -> None:
        pathlib.Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | pathlib.Path) -> Hierarchy:
        return cls.from_json(pathlib.Path(path).read_text())


def validate_mapping(micro_to_macro, argument: str) -> np.ndarray:
    """int32 [m] with every macro id in 0..M-1 used at least once; ValueError otherwise."""
    mapping = np.asarray(micro_to_macro)
    if mapping.ndim != 1 or mapping.size == 0 or not np.issubdtype(mapping.dtype, np.integer):
        raise ValueError(f"{argument}: expected a non-empty int [m] array, got {mapping!r}")
    if mapping.min() < 0:
        raise ValueError(f"{argument}: macro ids must be >= 0, got {mapping.tolist()}")
    missing = sorted(set(range(int(mapping.max()) + 1)) - set(mapping.tolist()))
    if missing:
        raise ValueError(f"{argument}: macro ids {missing} have no member, got {mapping.tolist()}")
    return mapping.astype(np.int32)


def canonical_labels(assignment: np.ndarray) -> np.ndarray:
    """Renumber cluster labels in order of their smallest member. int [m] -> int32 [m]."""
    assignment = np.asarray(assignment)
    first_seen: dict[int, int] = {}
    for label in assignment.tolist():
        first_seen.setdefault(label, len(first_seen))
    return np.asarray([first_seen[label] for label in assignment.tolist()], np.int32)


def macro_names_from(micro_to_macro: np.ndarray, class_names: list[str]) -> list[str]:
    """Each macro class named by its members joined with "+" (micro id order)."""
    return [
        "+".join(class_names[i] for i in np.flatnonzero(micro_to_macro == macro))
        for macro in range(int(micro_to_macro.max()) + 1)
    ]


def _default_names(num_micro: int, class_names: list[str] | None) -> list[str]:
    return (
        list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_micro)]
    )


def given_grouping(
    micro_to_macro, class_names: list[str] | None = None, macro_names: list[str] | None = None
) -> Hierarchy:
    """A user's mapping int [m] (every macro id 0..M-1 used) as a Hierarchy."""
    mapping = validate_mapping(micro_to_macro, "micro_to_macro")
    names = _default_names(len(mapping), class_names)
    return Hierarchy(
        micro_to_macro=mapping,
        class_names=names,
        macro_names=list(macro_names) if macro_names else macro_names_from(mapping, names),
        method="given",
    )


def random_grouping(
    reference_micro_to_macro, seed: int = 0, class_names: list[str] | None = None
) -> Hierarchy:
    """A random partition with the same cluster sizes as `reference_micro_to_macro` (int [m]).

    The micro classes are permuted with np.random.default_rng(seed) and dealt into clusters of the
    reference's sizes; macro ids are then renumbered canonically.
    """
    reference = validate_mapping(reference_micro_to_macro, "reference_micro_to_macro")
    sizes = np.bincount(reference)
    permutation = np.random.default_rng(seed).permutation(len(reference))
    assignment = np.empty(len(reference), np.int64)
    assignment[permutation] = np.repeat(np.arange(len(sizes)), sizes)
    mapping = canonical_labels(assignment)
    names = _default_names(len(mapping), class_names)
    return Hierarchy(
        micro_to_macro=mapping,
        class_names=names,
        macro_names=macro_names_from(mapping, names),
        method="random",
        seed=seed,
    )


def _normalise_name(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def a_priori_grouping(
    class_names: list[str],
    categories: dict[str, tuple[str, ...]],
) -> Hierarchy:
    """A-priori categories {category: member names} (a label space's `categories`) as a Hierarchy.

    Names are matched case-insensitively with "_" and " " read as "-". Every name must belong to a
    category (ValueError naming the unknown ones); categories without a member are dropped; macro
    ids follow the category order of `categories`.
    """
    category_of = {
        _normalise_name(member): category
        for category, members in categories.items()
        for member in members
    }
    unknown = [name for name in class_names if _normalise_name(name) not in category_of]
    if unknown:
        raise ValueError(f"class_names: {unknown} belong to no a-priori category")
    used = [c for c in categories if any(category_of[_normalise_name(n)] == c for n in class_names)]
    mapping = np.asarray(
        [used.index(category_of[_normalise_name(name)]) for name in class_names], np.int32
    )
    return Hierarchy(
        micro_to_macro=mapping,
        class_names=list(class_names),
        macro_names=used,
        method="a_priori",
    )
