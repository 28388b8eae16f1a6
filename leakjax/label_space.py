"""A dataset's label space: label ids, which one (if any) is ignored, names, colours, categories.

Every dataset package defines one `LabelSpace` (e.g. `datasets/semantic_kitti/labels.py`), and
everything that depends on label conventions takes it: the models' class count, the losses, LEAK's
micro classes, the evaluation's prediction rule, the hierarchy's class names, metrics and reports.

Conventions (docs/model_api.md):
  * label ids are what the dataset's reader returns: ints 0..C-1, plus possibly an `ignore_index`
    that is either one of them (SemanticKITTI: 0 = unlabelled, C = 20) or outside that range
    (Pascal VOC: 255, C = 21, class 0 = background is real), or no ignored id at all (S3DIS,
    C = 13);
  * models output C logits (one per label id 0..C-1, the ignored one included when it is in range,
    never trained nor predicted);
  * LEAK works on **micro classes**: the m scored label ids (all of 0..C-1 but `ignore_index`)
    renumbered densely 0..m-1 in label-id order; `micro_labels` converts;
  * `no_label` is the id models and label propagation write where a voxel / pixel / padded point
    has no label: `ignore_index`, or -1 for a label space without one (never a real class).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from leakjax.sharding import take_table


@dataclasses.dataclass(frozen=True)
class LabelSpace:
    """The label ids of a dataset and their meaning.

    Attributes:
      name: short name, e.g. "semantic_kitti".
      class_names: C names, one per label id 0..C-1 (the ignored id included when in range).
      ignore_index: the ignored label id (in or outside 0..C-1), or None.
      colors: optional C RGB colours (0-255) for figures and prediction images.
      categories: optional a-priori grouping of the scored classes, {category: class names}, used
        by the "a priori grouping" ablation (leakjax.leak.a_priori_grouping).
    """

    name: str
    class_names: tuple[str, ...]
    ignore_index: int | None = None
    colors: tuple[tuple[int, int, int], ...] | None = None
    categories: dict[str, tuple[str, ...]] | None = dataclasses.field(default=None, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"{self.name}: need >= 2 distinct class names, got {self.class_names}")
        if self.colors is not None and len(self.colors) != len(self.class_names):
            raise ValueError(
                f"{self.name}: {len(self.colors)} colours for {len(self.class_names)} classes"
            )
        if self.num_micro < 2:
            raise ValueError(f"{self.name}: fewer than 2 scored classes")
        if self.categories is not None:
            members = [n for names in self.categories.values() for n in names]
            unknown = sorted(set(members) - set(self.micro_names))
            if unknown:
                raise ValueError(f"{self.name}: categories name unknown classes {unknown}")

    @property
    def num_classes(self) -> int:
        """C: label ids 0..C-1 and model logits."""
        return len(self.class_names)

    @property
    def ignore_in_range(self) -> int | None:
        """`ignore_index` when it is one of the ids 0..C-1 (a row of the confusion), else None."""
        if self.ignore_index is not None and 0 <= self.ignore_index < self.num_classes:
            return self.ignore_index
        return None

    @property
    def no_label(self) -> int:
        """The id written where there is no label (module docstring)."""
        return -1 if self.ignore_index is None else int(self.ignore_index)

    @property
    def scored_ids(self) -> np.ndarray:
        """int32 [m]: the label ids of the micro classes, ascending."""
        ids = np.arange(self.num_classes, dtype=np.int32)
        return ids[ids != self.ignore_in_range] if self.ignore_in_range is not None else ids

    @property
    def num_micro(self) -> int:
        return len(self.scored_ids)

    @property
    def micro_names(self) -> list[str]:
        return [self.class_names[i] for i in self.scored_ids]

    @property
    def micro_of_label(self) -> np.ndarray:
        """int32 [C]: micro id of every label id, -1 at the ignored one."""
        table = np.full(self.num_classes, -1, np.int32)
        table[self.scored_ids] = np.arange(self.num_micro, dtype=np.int32)
        return table

    def is_scored(self, labels):
        """bool, shape of `labels`: a label id of a micro class (in range and not ignored)."""
        scored = (labels >= 0) & (labels < self.num_classes)
        if self.ignore_in_range is not None:
            scored = scored & (labels != self.ignore_in_range)
        return scored

    def micro_labels(self, labels, valid=None):
        """Label ids -> (micro ids int32, valid bool), same shape (jnp or numpy, as given).

        `valid` (optional) is and-ed in; entries that are not valid get micro id 0.
        """
        xp = jnp if not isinstance(labels, np.ndarray) else np
        scored = self.is_scored(labels)
        if valid is not None:
            scored = scored & valid
        safe = xp.where(scored, labels, 0).astype(xp.int32)
        micro = (
            xp.asarray(self.micro_of_label)[safe] if xp is np else _take(self.micro_of_label, safe)
        )
        return xp.where(scored, micro, 0).astype(xp.int32), scored

    def predict(self, logits):
        """Predicted label ids int32 [...] from logits [..., C]: argmax over the scored ids only."""
        xp = jnp if not isinstance(logits, np.ndarray) else np
        if logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"{self.name}: logits have {logits.shape[-1]} classes, expected {self.num_classes}"
            )
        best = xp.argmax(logits[..., self.scored_ids], axis=-1)
        if xp is np:
            return self.scored_ids[best].astype(np.int32)
        return _take(self.scored_ids, best.astype(jnp.int32)).astype(jnp.int32)

    def micro_confusion(self, confusion: np.ndarray) -> np.ndarray:
        """[C, C] confusion over label ids -> [m, m] over micro classes (ignored row/col gone)."""
        confusion = np.asarray(confusion)
        if confusion.shape != (self.num_classes, self.num_classes):
            raise ValueError(
                f"{self.name}: confusion of shape {confusion.shape}, expected "
                f"({self.num_classes}, {self.num_classes})"
            )
        return confusion[np.ix_(self.scored_ids, self.scored_ids)]

    def label_to_macro(self, micro_to_macro) -> np.ndarray:
        """int32 [C]: macro id of every label id, -1 at the ignored one (for hIoU on [C, C])."""
        mapping = np.asarray(micro_to_macro, np.int32)
        if mapping.shape != (self.num_micro,):
            raise ValueError(
                f"{self.name}: micro_to_macro has shape {mapping.shape}, expected "
                f"({self.num_micro},)"
            )
        out = np.full(self.num_classes, -1, np.int32)
        out[self.scored_ids] = mapping
        return out

    def class_counts(self, labels: np.ndarray) -> np.ndarray:
        """int64 [C]: points per label id 0..C-1 (the ignored id, if in range, counted too)."""
        labels = np.asarray(labels).reshape(-1)
        labels = labels[(labels >= 0) & (labels < self.num_classes)]
        return np.bincount(labels, minlength=self.num_classes).astype(np.int64)


def _take(table: np.ndarray, index):
    """table[index] on device, also for indices sharded on Explicit mesh axes."""
    return take_table(jnp.asarray(table), index)
