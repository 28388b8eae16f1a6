"""Shared helpers of the trainer tests: an in-memory point-cloud source, a tiny trainer config."""

import ml_collections
import numpy as np

from datasets.semantic_kitti.labels import LABEL_SPACE as SEMANTIC_KITTI_LABELS
from experiments.configs.base import base_config
from leakjax.data import Dataset
from leakjax.train.batch import point_cloud_spec


class InMemorySource:
    """A `Source` of random scans whose labels follow height bands (learnable, imbalanced).

    Args:
      num_scans: number of scans.
      seed: generator seed.
      min_points, max_points: points per scan, uniform.
      nan_scan: index of a scan whose first coordinate is NaN (to test the non-finite stop).
      label_of_band: int [20] label id of each of the 20 height bands (default: the band index,
        SemanticKITTI's 20 training ids with 0 = ignored at the bottom).
    """

    def __init__(
        self, num_scans, seed=0, min_points=150, max_points=250, nan_scan=None, label_of_band=None
    ):
        rng = np.random.default_rng(seed)
        label_of_band = np.arange(20) if label_of_band is None else np.asarray(label_of_band)
        self.scans = []
        for index in range(num_scans):
            count = int(rng.integers(min_points, max_points + 1))
            points = rng.normal(0.0, 1.0, size=(count, 4)).astype(np.float32)
            points[:, :2] *= 10.0
            bands = np.clip(np.floor(points[:, 2] * 4 + 10), 0, 19).astype(np.int64)
            labels = label_of_band[bands].astype(np.int32)
            if index == nan_scan:
                points[0, 0] = np.nan
            self.scans.append({"points": points, "labels": labels})

    def __len__(self):
        return len(self.scans)

    def size(self, index):
        return (len(self.scans[index]["points"]),)

    def __getitem__(self, index):
        return self.scans[index]


def in_memory_dataset(train, validation=None, label_space=SEMANTIC_KITTI_LABELS) -> Dataset:
    """A Dataset of in-memory point clouds (4 channels) in `label_space`."""
    return Dataset(
        "in_memory",
        label_space,
        point_cloud_spec(4),
        train,
        validation if validation is not None else train,
        "in-memory test scans",
    )


def tiny_config(num_steps=6, seed=0) -> ml_collections.ConfigDict:
    """The pointmlp trainer config the tests use: the base schema (experiments/configs/base.py)
    with one 256-point bucket, batch 4, no transforms, no validation during training."""
    config = base_config()
    config.seed = seed
    config.data.buckets = [256]
    config.data.transforms = ()
    config.model.name = "pointmlp"
    config.model.kwargs = {"hidden_sizes": (16, 16), "dropout_rate": 0.1}
    config.optimizer.learning_rate = 1e-2
    config.train.batch_size = 4
    config.train.num_steps = num_steps
    config.train.log_every = 1
    config.train.checkpoint_every = 3
    config.train.eval_every = 0
    config.train.async_checkpointing = False
    config.train.tensorboard = False
    config.eval.batch_size = 4
    return config
