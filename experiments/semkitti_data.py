"""Where the SemanticKITTI pipeline's scans come from: a real dataset root or the synthetic world.

With `--data_dir`, the official layout and splits (train 00-07, 09-10; validation 08). Without it,
the synthetic LiDAR world (datasets.synthetic) is generated once into a cache directory keyed by
the generator settings, and its train / validation sequences (config.data.synthetic) are used.
"""

import hashlib
import json
import logging
import os
import pathlib

import ml_collections
import numpy as np

from datasets import semantic_kitti

logger = logging.getLogger("leakjax")


class SemanticKittiSource:
    """Random access to labelled scans of the official layout (a `ScanSource`).

    Args:
      pairs: (scan path, label path) per scan, e.g. from `semantic_kitti.split_pairs`.
    """

    def __init__(self, pairs: list[tuple[pathlib.Path, pathlib.Path | None]]):
        if any(label is None for _, label in pairs):
            raise ValueError("SemanticKittiSource: every scan needs a label file (train/valid)")
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def num_points(self, index: int) -> int:
        scan_path = self.pairs[index][0]
        size = os.path.getsize(scan_path)
        if size % 16:
            raise ValueError(f"{scan_path}: size {size} bytes is not a multiple of 16")
        return size // 16

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        points, train_ids, _ = semantic_kitti.load_pair(*self.pairs[index])
        return points, train_ids

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Points per training id over the whole split, int64 [num_classes] (reads every label)."""
        counts = np.zeros(num_classes, np.int64)
        for index in range(len(self)):
            counts += np.bincount(self[index][1], minlength=num_classes)[:num_classes]
        return counts


def synthetic_cache_dir(
    config: ml_collections.ConfigDict, cache_root: pathlib.Path
) -> pathlib.Path:
    """`<cache_root>/<hash of the generator settings>`: one cache per distinct synthetic world."""
    settings = json.dumps(config.to_dict(), sort_keys=True)
    digest = hashlib.sha256(settings.encode()).hexdigest()[:12]
    return cache_root / f"synthetic-{digest}"


def ensure_synthetic(config: ml_collections.ConfigDict, cache_root: pathlib.Path) -> pathlib.Path:
    """Generates the synthetic world once (atomically: a finished marker is written last)."""
    from datasets import synthetic  # noqa: PLC0415 - only needed without --data_dir

    root = synthetic_cache_dir(config, cache_root)
    marker = root / "COMPLETE.json"
    if marker.exists():
        return root
    logger.info("generating the synthetic LiDAR world into %s", root)
    sequences = list(config.train_sequences) + list(config.val_sequences)
    synthetic.generate(
        root,
        seed=config.seed,
        sequences=sequences,
        scans_per_sequence=config.scans_per_sequence,
        **config.get("generator_kwargs", {}),
    )
    marker.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
    return root


def make_sources(
    data_config: ml_collections.ConfigDict, data_dir: str | None, cache_root: pathlib.Path
) -> tuple[SemanticKittiSource, SemanticKittiSource, str]:
    """(train source, validation source, a sentence describing the data)."""
    if data_dir:
        train = SemanticKittiSource(semantic_kitti.split_pairs(data_dir, "train"))
        valid = SemanticKittiSource(semantic_kitti.split_pairs(data_dir, "valid"))
        return train, valid, f"SemanticKITTI at {data_dir}"
    synthetic_config = data_config.synthetic
    root = ensure_synthetic(synthetic_config, cache_root)
    train = SemanticKittiSource(
        semantic_kitti.list_scan_label_pairs(root, list(synthetic_config.train_sequences))
    )
    valid = SemanticKittiSource(
        semantic_kitti.list_scan_label_pairs(root, list(synthetic_config.val_sequences))
    )
    return train, valid, f"synthetic LiDAR world at {root}"
