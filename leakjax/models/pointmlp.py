"""PointMLP: a per-point multilayer perceptron for LiDAR segmentation (no neighbourhood at all).

A real but deliberately small model: every point is classified from its own hand-made features
(x, y, z, remission, horizontal range), through Dense -> masked BatchNorm -> ReLU layers. It has no
spatial context, so it is a weak segmenter; it exists because it compiles in about a second, which
lets the trainer's tests (sharding equivalence, checkpoints, determinism) run many steps cheaply.
It honours the full model contract: the LEAK features are the last hidden layer at point
resolution, so the feature labels are the point labels themselves.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from leakjax.layers import Dropout
from leakjax.train.batch import BatchSpec, point_cloud_spec


class PointMLP(nn.Module):
    """Per-point MLP.

    Attributes:
      num_classes: output classes C (label ids 0..C-1; 20 for SemanticKITTI).
      ignore_index: the label space's no-label id (written on padding).
      input_channels: channels of `points` (4: x, y, z, remission; 6: x, y, z, r, g, b).
      hidden_sizes: widths of the hidden layers; the last one is the LEAK feature width D.
      dropout_rate: dropout before the classifier (training only; needs the "dropout" rng).
      height_scale_m: heights and ranges are divided by this to keep inputs near unit scale.
    """

    num_classes: int = 20
    ignore_index: int = 0
    input_channels: int = 4
    hidden_sizes: Sequence[int] = (64, 64, 32)
    dropout_rate: float = 0.0
    height_scale_m: float = 10.0

    def input_spec(self) -> BatchSpec:
        """The batch it reads: points float32 [B, P, input_channels], labels, point_mask."""
        return point_cloud_spec(self.input_channels)

    @nn.compact
    def __call__(self, batch: dict[str, jax.Array], train: bool = False):
        """Classifies every point of a padded batch.

        Args:
          batch: "points" float32 [B, P, input_channels] (x, y, z metres, then remission or
            colours), "point_mask" bool [B, P], "labels" int32 [B, P] (label ids).
          train: batch statistics (global over the real points of the whole batch) vs running ones.

        Returns:
          (logits float32 [B, P, num_classes], aux dict per docs/model_api.md).
        """
        points = batch["points"]
        point_mask = batch["point_mask"]
        labels = batch["labels"]
        xyz = points[..., :3] / self.height_scale_m
        range_xy = jnp.linalg.norm(points[..., :2], axis=-1, keepdims=True) / self.height_scale_m
        # [B, P, input_channels + 1]: remission (or colours) as given
        x = jnp.concatenate([xyz, points[..., 3:], range_xy], axis=-1)
        mask = point_mask[..., None]
        for width in self.hidden_sizes:
            x = nn.Dense(width, use_bias=False)(x)
            # Masked statistics: padding never shifts the means, and under a sharded jit the sums
            # are global, so the device count does not change them either.
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x, mask=mask)
            x = nn.relu(x) * mask
        features = x  # [B, P, D]
        x = Dropout(self.dropout_rate)(x, deterministic=not train)
        logits = nn.Dense(self.num_classes)(x)  # [B, P, num_classes]
        logits = jnp.where(mask, logits, 0.0)
        labels = jnp.where(point_mask, labels, self.ignore_index)
        aux = {
            "features": features,
            "feature_mask": point_mask,
            "feature_labels": labels,
            "loss_logits": logits,
            "loss_labels": labels,
            "loss_mask": point_mask,
            "overflow": jnp.zeros(points.shape[:1], dtype=bool),
        }
        return logits, aux
