"""RandLA-Net (Hu et al., CVPR 2020) in Flax, as released (QingyongHu/RandLA-Net, `RandLANet.py`).

Network (blocks in `randla_net_blocks.py`):
  * fc0: dense input_channels -> 8, BatchNorm, LeakyReLU(0.2);
  * encoder layer l: a dilated residual block (local spatial encoding + attentive pooling) to
    2 d_out[l] channels at level l, then random sampling: the level-(l+1) points are the first
    N_{l+1} points, each max-pooled over its level-l neighbourhood;
  * decoder_0: a 1x1 conv at the last level (the 512-wide bottleneck with the released widths);
  * decoder stage per level, coarse to fine: nearest up-sampling, concatenation [encoder skip,
    up-sampled], 1x1 (transposed) conv to the skip's width;
  * head: 1x1 convs to 64 and 32, dropout (0.5 released), 1x1 conv to num_classes (no BN).
Every conv is the released helper: dense with bias, BatchNorm (momentum 0.99, epsilon 1e-6),
LeakyReLU(0.2) unless stated.

Neighbour indices are computed on the host, as released (`prepare_batch`, the input pipeline's
thread): per level, the k nearest neighbours (itself included), the pooling neighbourhoods of the
kept points and every point's nearest kept point (`leakjax.points.sampling_hierarchy_host`).
**The model relies on the input order being random**: level l+1 keeps the first N_{l+1} points of
level l, which is a random sample only because the crop was shuffled (the released crop transform
shuffles its points). Unshuffled input (e.g. points sorted by azimuth) makes the sampling keep one
region of the scene. Valid points are the first ones of each sample (the input pipeline pads at
the end); padded rows are never read (inputs zeroed, sentinel index slots skipped, BatchNorm over
valid rows only), so a sample's logits do not depend on its padding or on the other samples of
an evaluation batch.

Batch fields added by `prepare_batch` for a batch of capacity P (levels N_0 = P,
N_{l+1} = N_l // r_l, see `leakjax.points.hierarchy_sizes`), each with leading dim B:
  neighbours_l  int32 [B, N_l, k]      kNN of each level-l point among them (sentinel N_l)
  pools_l       int32 [B, N_{l+1}, k]  = neighbours_l[:, :N_{l+1}] (sentinel N_l)
  upsamples_l   int32 [B, N_l, 1]      nearest level-(l+1) point (sentinel N_{l+1})
  level_mask_l  bool  [B, N_l]         valid level-l points, l = 0..L (level 0: point_mask)
for l = 0..L-1. The level-l coordinates are points[:, :N_l, :3]; nothing else is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from leakjax.layers import Dropout, RowDense
from leakjax.leak.propagation import kept_point_labels
from leakjax.models.randla_net_blocks import (
    GLOROT_UNIFORM,
    DilatedResidualBlock,
    SharedMLP,
    max_pool_neighbours,
    nearest_upsample,
    released_conv_init,
)
from leakjax.points import hierarchy_sizes, sampling_hierarchy_host
from leakjax.train.batch import BatchSpec, point_cloud_spec


def shuffle_valid_points(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each sample's valid prefix (point_mask) permuted by np.random.default_rng(n).permutation(n),
    n its number of valid points; every field of shape [B, P, ...] moves alike."""
    mask = np.asarray(batch["point_mask"])
    rows, capacity = mask.shape
    out = {key: np.array(value) for key, value in batch.items()}
    for row in range(rows):
        count = int(mask[row].sum())
        order = np.random.default_rng(count).permutation(count)
        for value in out.values():
            if value.shape[:2] == (rows, capacity):
                value[row, :count] = value[row, order]
    return out


def hierarchy_fields(
    points: np.ndarray,
    point_mask: np.ndarray,
    ratios: Sequence[int],
    k: int,
    num_threads: int = 1,
) -> dict[str, np.ndarray]:
    """The index fields RandLA-Net reads (module docstring), computed on the host.

    Args:
      points: float [B, P, >= 3] (x, y, z metres first), shuffled, valid points first.
      point_mask: bool [B, P], True on a prefix of each sample.
      ratios: sub-sampling ratio per encoder layer.
      k: neighbours per point.
      num_threads: samples processed in parallel.

    Returns:
      {"neighbours_l", "pools_l", "upsamples_l" (l < L), "level_mask_l" (l <= L)} numpy arrays.
    """
    point_mask = np.asarray(point_mask, bool)
    num_valid = point_mask.sum(axis=1)
    prefix = np.arange(point_mask.shape[1])[None, :] < num_valid[:, None]
    if not np.array_equal(point_mask, prefix):
        raise ValueError(
            "RandLA-Net needs the valid points of each sample first (padding at the end); "
            "point_mask is not a prefix mask"
        )
    pyramid = sampling_hierarchy_host(
        np.asarray(points)[..., :3], tuple(ratios), k, num_valid, num_threads=num_threads
    )
    fields = {}
    for layer in range(len(ratios)):
        fields[f"neighbours_{layer}"] = pyramid.neighbours[layer]
        fields[f"pools_{layer}"] = pyramid.pools[layer]
        fields[f"upsamples_{layer}"] = pyramid.upsamples[layer]
        fields[f"level_mask_{layer}"] = pyramid.point_mask[layer]
    # The last level has no kNN of its own: its valid count follows the hierarchy's rule
    # n_{l+1} = min(N_{l+1}, ceil(n_l / r_l)) (leakjax/points/sampling.py).
    last_size = pyramid.pools[-1].shape[1]
    last_count = np.minimum(last_size, -(-pyramid.point_mask[-1].sum(axis=1) // ratios[-1]))
    fields[f"level_mask_{len(ratios)}"] = np.arange(last_size)[None, :] < last_count[:, None]
    return fields


class RandLANet(nn.Module):
    """RandLA-Net with LEAK hooks; see the module docstring and docs/model_api.md.

    Attributes:
      num_classes: output classes C (label ids 0..C-1, the ignored one included).
      ignore_index: the label space's no-label id (written where a feature has no label).
      input_channels: channels of `points` (4: x, y, z, remission; 6: x, y, z, r, g, b).
      feature_channels: the first channels of `points` fed to fc0 (None: all input_channels;
        3 = xyz only, as released for SemanticKITTI).
      d_out: per encoder layer, half its output width: (16, 64, 128, 256) for SemanticKITTI,
        (16, 64, 128, 256, 512) for S3DIS / Semantic3D.
      sub_sampling_ratio: per encoder layer, N_{l+1} = N_l // ratio ((4, 4, 4, 4) KITTI,
        (4, 4, 4, 4, 2) S3DIS / Semantic3D).
      k_n: neighbours per point (16).
      feature_level: 0..L, the features LEAK aligns; L (None) = the bottleneck (decoder_0 output,
        2 d_out[-1] = 512 wide as released, at the N_L kept points); l < L = the decoder stage
        output at level l (l = 0: the per-point features at full resolution, 2 d_out[0] wide).
        Labels are those of the level's kept points (its first N_l points).
      stem_width: fc0 width (8).
      head_widths: the head's 1x1 convs before the classifier ((64, 32)).
      dropout_rate: dropout before the classifier (0.5 = the released keep_prob 0.5).
      bn_momentum: Flax momentum of every BatchNorm (0.99 as released).
      host_threads: samples whose indices `prepare_batch` computes in parallel.
      shuffle_input: `prepare_batch` first permutes each sample's valid points (every per-point
        field alike, labels included) by a fixed permutation seeded by their count, so that the
        prefix sampling is a random sample also for whole scans stored in sensor order
        (evaluation); a confusion matrix does not depend on the order.
    """

    num_classes: int = 20
    ignore_index: int = 0
    input_channels: int = 4
    feature_channels: int | None = None
    d_out: Sequence[int] = (16, 64, 128, 256)
    sub_sampling_ratio: Sequence[int] = (4, 4, 4, 4)
    k_n: int = 16
    feature_level: int | None = None
    stem_width: int = 8
    head_widths: Sequence[int] = (64, 32)
    dropout_rate: float = 0.5
    bn_momentum: float = 0.99
    host_threads: int = 1
    shuffle_input: bool = True

    @property
    def num_layers(self) -> int:
        return len(self.d_out)

    def input_spec(self) -> BatchSpec:
        """The batch it reads: points float32 [B, P, input_channels], labels, point_mask (plus
        the fields `prepare_batch` adds)."""
        return point_cloud_spec(self.input_channels)

    def _check_config(self) -> None:
        if len(self.sub_sampling_ratio) != self.num_layers:
            raise ValueError(
                f"RandLANet: d_out {tuple(self.d_out)} and sub_sampling_ratio "
                f"{tuple(self.sub_sampling_ratio)} need one entry per encoder layer"
            )
        level = self._feature_level()
        if not 0 <= level <= self.num_layers:
            raise ValueError(f"RandLANet.feature_level must be in [0, {self.num_layers}]")
        channels = self.feature_channels
        if channels is not None and not 1 <= channels <= self.input_channels:
            raise ValueError(f"RandLANet.feature_channels must be in [1, {self.input_channels}]")

    def _feature_level(self) -> int:
        return self.num_layers if self.feature_level is None else int(self.feature_level)

    def level_sizes(self, capacity: int) -> tuple[int, ...]:
        """Point capacities N_0..N_L of the levels for a batch of capacity P."""
        return hierarchy_sizes(capacity, tuple(self.sub_sampling_ratio))

    def prepare_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host-side (numpy): the batch plus the index fields of the module docstring, computed
        from points[..., :3] and point_mask (`hierarchy_fields`). Deterministic."""
        self._check_config()
        if self.shuffle_input:
            batch = shuffle_valid_points(batch)
        fields = hierarchy_fields(
            batch["points"],
            batch["point_mask"],
            tuple(self.sub_sampling_ratio),
            self.k_n,
            self.host_threads,
        )
        return {**batch, **fields}

    @nn.compact
    def __call__(self, batch: dict[str, jax.Array], train: bool = False):
        """Segments a padded batch of shuffled point clouds.

        Args:
          batch: "points" float32 [B, P, input_channels] (x, y, z metres, then remission or
            colours), "point_mask" bool [B, P] (a prefix), "labels" int32 [B, P], and the fields
            of `prepare_batch`.
          train: batch statistics (over the valid rows of the whole batch) vs running ones;
            dropout on (needs the "dropout" rng).

        Returns:
          (logits float32 [B, P, num_classes] (0 on padding), aux per docs/model_api.md).
        """
        self._check_config()
        num_layers = self.num_layers
        missing = [k for k in ("neighbours_0", f"level_mask_{num_layers}") if k not in batch]
        if missing:
            raise KeyError(f"RandLANet: batch lacks {missing}; apply model.prepare_batch first")
        point_mask, labels = batch["point_mask"], batch["labels"]
        sizes = self.level_sizes(point_mask.shape[1])
        level_masks = [batch[f"level_mask_{level}"] for level in range(num_layers + 1)]
        # Padded rows may hold anything (NaN included): zero them so no gradient can see them.
        points = jnp.where(point_mask[..., None], batch["points"], 0.0)
        channels = self.feature_channels or self.input_channels
        momentum = self.bn_momentum

        x = SharedMLP(
            self.stem_width, kernel_init=GLOROT_UNIFORM, bn_momentum=momentum, name="fc0"
        )(points[..., :channels], point_mask, train)
        skips = []  # per level l: the encoder features at N_l points
        for layer, d_out in enumerate(self.d_out):
            xyz = points[:, : sizes[layer], :3]
            x = DilatedResidualBlock(d_out, momentum, name=f"encoder_{layer}")(
                x, xyz, batch[f"neighbours_{layer}"], level_masks[layer], train
            )
            if layer == 0:
                skips.append(x)
            x = max_pool_neighbours(x, batch[f"pools_{layer}"])  # [B, N_{l+1}, 2 d_out]
            skips.append(x)

        x = SharedMLP(x.shape[-1], bn_momentum=momentum, name="decoder_0")(
            x, level_masks[num_layers], train
        )
        decoded = {num_layers: x}  # level -> features at N_level points
        for stage in range(num_layers):
            level = num_layers - 1 - stage
            skip = skips[level]
            up = nearest_upsample(x, batch[f"upsamples_{level}"])  # [B, N_level, C]
            x = SharedMLP(
                skip.shape[-1], transposed=True, bn_momentum=momentum, name=f"decoder_{stage + 1}"
            )(jnp.concatenate([skip, up], axis=-1), level_masks[level], train)
            decoded[level] = x

        for index, width in enumerate(self.head_widths):
            x = SharedMLP(width, bn_momentum=momentum, name=f"fc{index + 1}")(x, point_mask, train)
        x = Dropout(self.dropout_rate)(x, deterministic=not train)
        logits = RowDense(self.num_classes, kernel_init=released_conv_init(), name="fc")(x)
        logits = jnp.where(point_mask[..., None], logits, 0.0)  # [B, P, num_classes]

        level = self._feature_level()
        kept = jnp.broadcast_to(jnp.arange(sizes[level]), (point_mask.shape[0], sizes[level]))
        feature_labels, feature_mask = kept_point_labels(
            labels, point_mask, kept, level_masks[level]
        )
        point_labels = jnp.where(point_mask, labels, self.ignore_index)
        aux = {
            "features": decoded[level],  # [B, N_level, D]
            "feature_mask": feature_mask,
            "feature_labels": jnp.where(feature_mask, feature_labels, self.ignore_index),
            "loss_logits": logits,
            "loss_labels": point_labels,
            "loss_mask": point_mask,
            "overflow": jnp.zeros(point_mask.shape[:1], dtype=bool),
        }
        return logits, aux


__all__ = ["RandLANet", "hierarchy_fields"]
