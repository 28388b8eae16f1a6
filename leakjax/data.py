"""A dataset resolved for a run: its splits, label space and batch contract (`Dataset`).

`datasets/registry.py` maps a config's `data.name` to the entry that builds one of these from a data
directory (the official layout) or from the dataset's embedded synthetic world. The trainer, the
evaluation and the LEAK pipeline (leakjax/pipeline/) read only this object, never a dataset's own
conventions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from leakjax.label_space import LabelSpace
from leakjax.train.batch import BatchSpec
from leakjax.train.input_pipeline import Source


@dataclasses.dataclass
class Dataset:
    """Splits of one dataset and how to read them.

    Attributes:
      name: the registry name (config.data.name).
      label_space: label ids, ignored id, names, colours, a-priori categories.
      spec: the batch contract of its samples (keys, channels, spatial rank, mask).
      train: training samples.
      validation: validation samples (labelled).
      description: one sentence for logs and reports (which data, where).
      test: optional unlabelled test samples.
    """

    name: str
    label_space: LabelSpace
    spec: BatchSpec
    train: Source
    validation: Source
    description: str
    test: Source | None = None

    def train_class_counts(self) -> np.ndarray:
        """int64 [C]: training entries per label id (for class-weighted losses).

        Uses the source's `class_counts()` when it has one (e.g. training crops of static scenes
        count their clouds' points once, not once per crop), else its `labels(index)` (reads
        labels only), else its samples.
        """
        class_counts = getattr(self.train, "class_counts", None)
        if callable(class_counts):
            return np.asarray(class_counts(), np.int64)
        counts = np.zeros(self.label_space.num_classes, np.int64)
        read_labels = getattr(self.train, "labels", None)
        for index in range(len(self.train)):
            labels = read_labels(index) if read_labels else self.train[index][self.spec.label_key]
            counts += self.label_space.class_counts(labels)
        return counts
