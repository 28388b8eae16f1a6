"""SalsaNext (Cortinhal et al., ISVC 2020) on spherical range images, in Flax.

Matches the released code (TiagoCortinhal/SalsaNext `train/tasks/semantic/modules/SalsaNext.py`,
`salsanext.yml`), with channels last. Every conv has a bias; LeakyReLU slope 0.01 (PyTorch's
default); BatchNorm momentum 0.1 in PyTorch's convention (Flax 0.9); every dropout is Dropout2d
(whole channels) with rate 0.2. With w = `base_width` (32 as released):

  * input: the scans of the point batch projected on device (64 x 2048, fov +3 / -25 degrees,
    5 channels normalised with the released means and stds; `leakjax.range_image`);
  * 3 ResContextBlocks (5 -> w, w -> w, w -> w): s = LReLU(conv1x1(x)); a = BN(LReLU(conv3x3(s)));
    b = BN(LReLU(conv3x3 dilation 2(a))); out = s + b;
  * 5 ResBlocks (w -> 2w, 2w -> 4w, 4w -> 8w, 8w -> 8w, 8w -> 8w): s = LReLU(conv1x1(x));
    a1 = BN(LReLU(conv3x3(x))), a2 = BN(LReLU(conv3x3 dil 2(a1))), a3 = BN(LReLU(conv2x2 dil 2,
    padding 1 (a2))); r = s + BN(LReLU(conv1x1(concat(a1, a2, a3)))). The first four return
    AvgPool(3, stride 2, padding 1, zeros counted)(dropout(r)) and r as the skip (no dropout in the
    first); the fifth returns dropout(r) (the bottleneck, at 1/16 of the image on both axes);
  * 4 UpBlocks (8w -> 4w, 4w -> 4w, 4w -> 2w, 2w -> w): u = dropout(PixelShuffle(2)(x));
    u = dropout(concat(u, skip)); e1 = BN(LReLU(conv3x3(u))), e2 = BN(LReLU(conv3x3 dil 2(e1))),
    e3 = BN(LReLU(conv2x2 dil 2, padding 1 (e2))); out = dropout(BN(LReLU(conv1x1(concat(e1, e2,
    e3))))); the last block has no dropout at all;
  * logits: conv1x1 w -> C (the released softmax is in the loss).

kNN post-processing (`post: KNN: use: True` in the released `salsanext.yml`, off by default here as
it only applies to evaluation): `use_knn=True` makes the evaluation output (train=False) the
released kNN vote on the predicted label image, as one-hot per-point logits (see
`leakjax/models/rangenet.py` for how to turn it on for a run or for evaluation only).

LEAK: `aux["features"]` are the encoder output of level `feature_level` (0 = context blocks,
1..4 = the pooled outputs of the first four ResBlocks, 5 = the bottleneck, the default) flattened
to [B, H' * W', D]; their labels are the projected label image down-sampled by nearest neighbour
(the pixel each pooling window is centred on).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from leakjax.models.range_common import (
    ChannelDropout,
    check_image_size,
    segment_through_range_image,
    torch_conv,
)
from leakjax.range_image import (
    DEFAULT_FOV_DOWN_DEG,
    DEFAULT_FOV_UP_DEG,
    DEFAULT_HEIGHT,
    DEFAULT_WIDTH,
    HDL64_IMG_MEANS,
    HDL64_IMG_STDS,
    KNN_DEFAULTS,
)
from leakjax.train.batch import BatchSpec, point_cloud_spec

NUM_POOLINGS = 4
NUM_LEVELS = 6  # feature levels 0..5


def pixel_shuffle(x: jax.Array, factor: int = 2) -> jax.Array:
    """PyTorch's PixelShuffle on NHWC: [B, H, W, C * f^2] -> [B, f H, f W, C], output
    (f h + i, f w + j, c) = input (h, w, c f^2 + i f + j)."""
    batch, height, width, channels = x.shape
    if channels % (factor * factor):
        raise ValueError(f"pixel_shuffle: {channels} channels not divisible by {factor}^2")
    out_channels = channels // (factor * factor)
    x = x.reshape(batch, height, width, out_channels, factor, factor)
    x = x.transpose(0, 1, 4, 2, 5, 3)  # [B, H, i, W, j, C]
    return x.reshape(batch, height * factor, width * factor, out_channels)


def _norm(train: bool, momentum: float, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5, name=name)


class ResContextBlock(nn.Module):
    """The released ResContextBlock (module docstring)."""

    features: int
    bn_momentum: float = 0.9
    negative_slope: float = 0.01

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = lambda y: nn.leaky_relu(y, self.negative_slope)  # noqa: E731
        shortcut = act(torch_conv(self.features, 1, name="conv1")(x))
        y = act(torch_conv(self.features, 3, padding=1, name="conv2")(shortcut))
        y = _norm(train, self.bn_momentum, "bn1")(y)
        y = act(torch_conv(self.features, 3, padding=2, dilation=2, name="conv3")(y))
        y = _norm(train, self.bn_momentum, "bn2")(y)
        return shortcut + y


def _dilated_triple(x, features, train, momentum, act):
    """conv3x3 -> conv3x3 dil 2 -> conv2x2 dil 2 (each LReLU + BN), the three outputs concatenated
    (the shared core of the released ResBlock and UpBlock)."""
    y1 = _norm(train, momentum, "bn1")(act(torch_conv(features, 3, padding=1, name="conv_a")(x)))
    y2 = act(torch_conv(features, 3, padding=2, dilation=2, name="conv_b")(y1))
    y2 = _norm(train, momentum, "bn2")(y2)
    y3 = act(torch_conv(features, 2, padding=1, dilation=2, name="conv_c")(y2))
    y3 = _norm(train, momentum, "bn3")(y3)
    return jnp.concatenate([y1, y2, y3], axis=-1)


class ResBlock(nn.Module):
    """The released ResBlock: returns (pooled, skip) with `pooling`, else the dropped-out output."""

    features: int
    dropout_rate: float = 0.2
    pooling: bool = True
    drop_out: bool = True
    bn_momentum: float = 0.9
    negative_slope: float = 0.01

    @nn.compact
    def __call__(self, x: jax.Array, train: bool):
        act = lambda y: nn.leaky_relu(y, self.negative_slope)  # noqa: E731
        shortcut = act(torch_conv(self.features, 1, name="conv_shortcut")(x))
        y = _dilated_triple(x, self.features, train, self.bn_momentum, act)
        y = act(torch_conv(self.features, 1, name="conv_merge")(y))
        y = shortcut + _norm(train, self.bn_momentum, "bn4")(y)
        out = y
        if self.drop_out:
            out = ChannelDropout(self.dropout_rate, name="dropout")(out, deterministic=not train)
        if not self.pooling:
            return out
        # AvgPool2d(3, stride 2, padding 1) with PyTorch's default count_include_pad=True.
        pooled = nn.avg_pool(out, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        return pooled, y


class UpBlock(nn.Module):
    """The released UpBlock: pixel shuffle, concat the skip, the dilated triple, 1x1 merge."""

    features: int
    dropout_rate: float = 0.2
    drop_out: bool = True
    bn_momentum: float = 0.9
    negative_slope: float = 0.01

    @nn.compact
    def __call__(self, x: jax.Array, skip: jax.Array, train: bool) -> jax.Array:
        act = lambda y: nn.leaky_relu(y, self.negative_slope)  # noqa: E731
        dropout = lambda y, name: (  # noqa: E731
            ChannelDropout(self.dropout_rate, name=name)(y, deterministic=not train)
            if self.drop_out
            else y
        )
        y = dropout(pixel_shuffle(x, 2), "dropout1")
        y = dropout(jnp.concatenate([y, skip], axis=-1), "dropout2")
        y = _dilated_triple(y, self.features, train, self.bn_momentum, act)
        y = act(torch_conv(self.features, 1, name="conv_merge")(y))
        y = _norm(train, self.bn_momentum, "bn4")(y)
        return dropout(y, "dropout3")


class SalsaNextNetwork(nn.Module):
    """The released 2D network on range images.

    Attributes: as the same-named ones of `SalsaNext`.
    """

    num_classes: int = 20
    base_width: int = 32
    dropout_rate: float = 0.2
    bn_momentum: float = 0.9
    negative_slope: float = 0.01
    feature_level: int = NUM_LEVELS - 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        """Images x [B, H, W, 5] (H, W multiples of 16) -> (pixel logits [B, H, W, C], encoder
        features of `feature_level` [B, H', W', D])."""
        if self.base_width < 2 or self.base_width % 2:
            raise ValueError(
                f"SalsaNext base_width must be even (pixel shuffle): {self.base_width}"
            )
        if not 0 <= self.feature_level < NUM_LEVELS:
            raise ValueError(
                f"feature_level must be in [0, {NUM_LEVELS - 1}]: {self.feature_level}"
            )
        w = self.base_width
        common = {"bn_momentum": self.bn_momentum, "negative_slope": self.negative_slope}
        for index in range(3):
            x = ResContextBlock(w, name=f"context{index + 1}", **common)(x, train)
        levels = [x]
        skips = []
        block_widths = (2 * w, 4 * w, 8 * w, 8 * w)
        for index, features in enumerate(block_widths):
            x, skip = ResBlock(
                features, self.dropout_rate, drop_out=index > 0, name=f"res{index + 1}", **common
            )(x, train)
            levels.append(x)
            skips.append(skip)
        x = ResBlock(8 * w, self.dropout_rate, pooling=False, name="res5", **common)(x, train)
        levels.append(x)

        for index, features in enumerate((4 * w, 4 * w, 2 * w, w)):
            x = UpBlock(
                features, self.dropout_rate, drop_out=index < 3, name=f"up{index + 1}", **common
            )(x, skips[-1 - index], train)
        logits = torch_conv(self.num_classes, 1, name="logits")(x)
        return logits.astype(jnp.float32), levels[self.feature_level]


class SalsaNext(nn.Module):
    """SalsaNext on the points of a SemanticKITTI batch.

    Attributes:
      num_classes: output classes C (20 for SemanticKITTI).
      ignore_index: the label space's no-label id (empty pixels, padded points).
      base_width: w, the width of the context blocks (32 as released; must be even).
      dropout_rate: every Dropout2d (0.2 as released).
      bn_momentum: Flax BatchNorm momentum (0.9 = PyTorch's default 0.1, as released).
      negative_slope: LeakyReLU slope (0.01, PyTorch's default, as released).
      height, width, fov_up_deg, fov_down_deg: the spherical projection (64 x 2048, +3 / -25);
        height and width must be multiples of 16.
      img_means, img_stds: the input normalisation (HDL-64E values of the release).
      feature_level: encoder level of the LEAK features (module docstring; 5 = bottleneck).
      use_knn: kNN post-processing at evaluation; knn_k, knn_search, knn_sigma, knn_cutoff: its
        parameters (5, 5, 1.0, 1.0 as released).
    """

    num_classes: int = 20
    ignore_index: int = 0
    base_width: int = 32
    dropout_rate: float = 0.2
    bn_momentum: float = 0.9
    negative_slope: float = 0.01
    height: int = DEFAULT_HEIGHT
    width: int = DEFAULT_WIDTH
    fov_up_deg: float = DEFAULT_FOV_UP_DEG
    fov_down_deg: float = DEFAULT_FOV_DOWN_DEG
    img_means: tuple[float, ...] = HDL64_IMG_MEANS
    img_stds: tuple[float, ...] = HDL64_IMG_STDS
    feature_level: int = NUM_LEVELS - 1
    use_knn: bool = False
    knn_k: int = KNN_DEFAULTS["knn"]
    knn_search: int = KNN_DEFAULTS["search"]
    knn_sigma: float = KNN_DEFAULTS["sigma"]
    knn_cutoff: float = KNN_DEFAULTS["cutoff"]

    def input_spec(self) -> BatchSpec:
        """The batch it reads: points float32 [B, P, 4] (x, y, z, remission), labels, point_mask."""
        return point_cloud_spec(4)

    def _check(self) -> None:
        factor = 2**NUM_POOLINGS
        check_image_size("SalsaNext", self.height, self.width, factor, factor)

    @nn.compact
    def __call__(self, batch: dict[str, jax.Array], train: bool = False):
        """Segments every point of a padded batch through its range image.

        Args:
          batch: "points" float32 [B, P, 4], "point_mask" bool [B, P], "labels" int32 [B, P].
          train: batch statistics and dropout (needs the "dropout" rng) vs running statistics.

        Returns:
          (logits float32 [B, P, num_classes], aux per docs/model_api.md; aux["loss_*"] are the
          range image's pixel logits [B, H, W, C], label image and projection mask).
        """
        self._check()
        network = SalsaNextNetwork(
            num_classes=self.num_classes,
            base_width=self.base_width,
            dropout_rate=self.dropout_rate,
            bn_momentum=self.bn_momentum,
            negative_slope=self.negative_slope,
            feature_level=self.feature_level,
            name="network",
        )
        return segment_through_range_image(self, batch, network, train)
