"""Shared helpers of the trainer tests: an in-memory scan source and a tiny trainer config."""

import ml_collections
import numpy as np


class InMemorySource:
    """A `ScanSource` of random scans whose labels follow height bands (learnable, imbalanced).

    Args:
      num_scans: number of scans.
      seed: generator seed.
      min_points, max_points: points per scan, uniform.
      nan_scan: index of a scan whose first coordinate is NaN (to test the non-finite stop).
    """

    def __init__(self, num_scans, seed=0, min_points=150, max_points=250, nan_scan=None):
        rng = np.random.default_rng(seed)
        self.scans = []
        for index in range(num_scans):
            count = int(rng.integers(min_points, max_points + 1))
            points = rng.normal(0.0, 1.0, size=(count, 4)).astype(np.float32)
            points[:, :2] *= 10.0
            labels = np.clip(np.floor(points[:, 2] * 4 + 10), 0, 19).astype(np.int32)
            if index == nan_scan:
                points[0, 0] = np.nan
            self.scans.append((points, labels))

    def __len__(self):
        return len(self.scans)

    def num_points(self, index):
        return len(self.scans[index][0])

    def __getitem__(self, index):
        return self.scans[index]


def tiny_config(num_steps=6, seed=0) -> ml_collections.ConfigDict:
    """The pointmlp trainer config the tests use (one 256-point bucket, batch 4)."""
    config = ml_collections.ConfigDict()
    config.seed = seed
    config.data = ml_collections.ConfigDict(
        {
            "num_classes": 20,
            "point_buckets": [256],
            "train_max_points": None,
            "augment": {},
            "prefetch": 2,
        }
    )
    config.model = ml_collections.ConfigDict(
        {"name": "pointmlp", "kwargs": {"hidden_sizes": (16, 16), "dropout_rate": 0.1}}
    )
    config.optimizer = ml_collections.ConfigDict(
        {"name": "adam", "learning_rate": 1e-2, "schedule": "constant", "warmup_steps": 0}
    )
    config.loss = ml_collections.ConfigDict({"ce_weighting": "none", "lovasz_weight": 1.0})
    config.train = ml_collections.ConfigDict(
        {
            "batch_size": 4,
            "num_steps": num_steps,
            "log_every": 1,
            "checkpoint_every": 3,
            "max_checkpoints_to_keep": 2,
            "async_checkpointing": False,
            "tensorboard": False,
        }
    )
    config.eval = ml_collections.ConfigDict({"batch_size": 4, "predict_ignored": False})
    return config
