"""SemanticKITTI as a registered dataset: samples from a real root or from the synthetic world.

With a data directory, the official layout and splits (train 00-07, 09-10; validation 08). Without
one, the synthetic LiDAR world (datasets/synthetic/) is generated once into a cache directory keyed
by the generator settings, and its train / validation sequences (config.data.synthetic) are used.
Samples: {"points": float32 [N, 4] x, y, z (m), remission; "labels": int32 [N] training ids}.
"""

import logging
import os
import pathlib

import ml_collections
import numpy as np

from datasets import semantic_kitti
from datasets.cache import ensure_generated
from datasets.semantic_kitti.labels import LABEL_SPACE
from leakjax.data import Dataset
from leakjax.train.batch import point_cloud_spec

logger = logging.getLogger("leakjax")


class SemanticKittiSource:
    """Random access to labelled scans of the official layout (a `Source`).

    Args:
      pairs: (scan path, label path) per scan, e.g. from `semantic_kitti.split_pairs`.
    """

    def __init__(self, pairs: list[tuple[pathlib.Path, pathlib.Path | None]]):
        if any(label is None for _, label in pairs):
            raise ValueError("SemanticKittiSource: every scan needs a label file (train/valid)")
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def size(self, index: int) -> tuple[int]:
        """(points of scan `index`,) from the file size, without reading it."""
        scan_path = self.pairs[index][0]
        size = os.path.getsize(scan_path)
        if size % 16:
            raise ValueError(f"{scan_path}: size {size} bytes is not a multiple of 16")
        return (size // 16,)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        points, train_ids, _ = semantic_kitti.load_pair(*self.pairs[index])
        return {"points": points, "labels": train_ids}

    def labels(self, index: int) -> np.ndarray:
        """int32 [N] training ids of scan `index` (reads the label file only)."""
        scan_path, label_path = self.pairs[index]
        semantic, _ = semantic_kitti.load_labels(label_path, self.size(index)[0])
        return semantic_kitti.LEARNING_MAP[semantic]


def ensure_synthetic(config: ml_collections.ConfigDict, cache_root: pathlib.Path) -> pathlib.Path:
    """Generates the synthetic world of `config` (config.data.synthetic) once; returns its root."""

    def generate(root: pathlib.Path) -> None:
        from datasets import synthetic  # noqa: PLC0415 - only needed without a data directory

        synthetic.generate(
            root,
            seed=config.seed,
            sequences=list(config.train_sequences) + list(config.val_sequences),
            scans_per_sequence=config.scans_per_sequence,
            **config.generator_kwargs,
        )

    return ensure_generated(config, cache_root, generate, "the synthetic LiDAR world")


SPEC = point_cloud_spec(4)


def load_dataset(
    data_config: ml_collections.ConfigDict, data_dir: str | None, cache_root: pathlib.Path
) -> Dataset:
    """Train and validation splits: official, or the synthetic world when `data_dir` is None."""
    if data_dir:
        train = SemanticKittiSource(semantic_kitti.split_pairs(data_dir, "train"))
        valid = SemanticKittiSource(semantic_kitti.split_pairs(data_dir, "valid"))
        description = f"SemanticKITTI at {data_dir}"
    else:
        synthetic_config = data_config.synthetic
        root = ensure_synthetic(synthetic_config, cache_root)
        train = SemanticKittiSource(
            semantic_kitti.list_scan_label_pairs(root, list(synthetic_config.train_sequences))
        )
        valid = SemanticKittiSource(
            semantic_kitti.list_scan_label_pairs(root, list(synthetic_config.val_sequences))
        )
        description = f"synthetic LiDAR world at {root}"
    return Dataset("semantic_kitti", LABEL_SPACE, SPEC, train, valid, description)
