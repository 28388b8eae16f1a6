"""RangeNet++ (Milioto et al., IROS 2019): DarkNet21 / DarkNet53 on spherical range images, in Flax.

Matches the released code (PRBonn/lidar-bonnetal: `backbones/darknet.py`,
`tasks/semantic/decoders/darknet.py`, `tasks/semantic/modules/segmentator.py`,
`config/arch/darknet{21,53}.yaml`), with channels last:

  * input: the scans of the point batch projected on device (64 x 2048, fov +3 / -25 degrees,
    5 channels normalised with the released means and stds; `leakjax.range_image`);
  * stem: conv3x3 5 -> 32 (no bias), BN, LeakyReLU(0.1);
  * 5 encoder stages to 64, 128, 256, 512, 1024 channels: conv3x3 with stride (1, 2) (width only,
    padding 1, no bias), BN, LeakyReLU, then n residual blocks (DarkNet21: 1, 1, 2, 2, 1;
    DarkNet53: 1, 2, 8, 8, 4), each 1x1 to half the channels and 3x3 back (no bias, BN +
    LeakyReLU after each), plus the input; Dropout2d(0.01) after every stage;
  * output stride 32 on the width only (64 x 2048 -> 64 x 64); a smaller `output_stride` turns the
    last encoder strides (and the first decoder ones) to 1, as the release's "stride play" does;
  * decoder: 5 stages to 512, 256, 128, 64, 32 channels: ConvTranspose (kernel (1, 4), stride
    (1, 2), padding (0, 1), with bias; a conv3x3 with bias where the stride is 1), BN, LeakyReLU,
    one residual block (1x1 to the stage's input width, 3x3 back), then, where the width doubled,
    the encoder map of that width is added; Dropout2d(0.01) at the end;
  * head: Dropout2d(0.01), conv3x3 32 -> C with bias (the released softmax is in the loss).
BatchNorm momentum 0.01 in PyTorch's convention (`bn_d`), i.e. Flax momentum 0.99.

Detached skips: the release stores every skip as `x.detach()` in the backbone and adds
`skips[os].detach()` in the decoder, so no gradient flows from the decoder into the encoder
through the skips, only through the bottleneck. `detach_skips=True` (the default) reproduces that;
False lets the skips carry gradients.

kNN post-processing ("RangeNet++" proper; `post: KNN: use: False` in the released configs): with
`use_knn=True` the model's evaluation output (train=False) is the released kNN vote on the
predicted label image (`leakjax.range_image.knn_postprocess`, parameters `knn_*`), returned as
one-hot per-point logits so that the trainer's evaluation (an argmax) scores exactly that label.
Training never uses it (the loss is on the range image) and the parameters do not change, so
`"use_knn": True` in `config.model.kwargs` can be set for a whole run (every validation and the
final evaluation are then post-processed) or only when evaluating a finished run's checkpoint
(the key must be in the config's kwargs for `--config.model.kwargs.use_knn=True` to override it).

LEAK: `aux["features"]` are the encoder output of level `feature_level` (0 = stem, 1..5 = encoder
stages; default 5, the bottleneck) flattened to [B, H * W', D]; their labels are the projected label
image down-sampled by nearest neighbour (the pixel each strided conv is centred on).
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

# Residual blocks per encoder stage (`model_blocks` of the released backbone).
MODEL_BLOCKS = {21: (1, 1, 2, 2, 1), 53: (1, 2, 8, 8, 4)}
NUM_STAGES = 5

# PyTorch's ConvTranspose2d initialisation: fan_in is read off the output channels (its weight is
# [C_in, C_out, kh, kw] and PyTorch takes dim 1), i.e. U(+-1/sqrt(C_out * kernel volume)).
_TRANSPOSE_INIT = nn.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform", in_axis=-1, out_axis=-2
)


def released_strides(output_stride: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(encoder, decoder) width strides of the 5 stages for an output stride (1, 2, ..., 32): the
    encoder drops its last strides to 1, the decoder its first ones, as released."""
    if output_stride not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"output_stride must be a power of 2 in [1, 32], got {output_stride}")
    num_strided = output_stride.bit_length() - 1
    encoder = (2,) * num_strided + (1,) * (NUM_STAGES - num_strided)
    return encoder, encoder[::-1]


class DarkNetBlock(nn.Module):
    """The released residual `BasicBlock`: x + LReLU(BN(conv3x3(LReLU(BN(conv1x1(x)))))).

    Attributes:
      planes: (width of the 1x1 output, width of the 3x3 output = the input width).
      bn_momentum: Flax momentum (0.99 = the released bn_d 0.01).
    """

    planes: tuple[int, int]
    bn_momentum: float = 0.99

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        norm = lambda name: nn.BatchNorm(  # noqa: E731
            use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5, name=name
        )
        y = torch_conv(self.planes[0], 1, use_bias=False, name="conv1")(x)
        y = nn.leaky_relu(norm("bn1")(y), 0.1)
        y = torch_conv(self.planes[1], 3, padding=1, use_bias=False, name="conv2")(y)
        y = nn.leaky_relu(norm("bn2")(y), 0.1)
        return y + x


class WidthUpConv(nn.Module):
    """PyTorch's ConvTranspose2d(C_in, features, kernel (1, 4), stride (1, 2), padding (0, 1)) on
    NHWC: doubles the width, out[w] = bias + sum over (i, k) with w = 2 i - 1 + k of
    x[i] @ kernel[k]. Kernel [1, 4, C_in, features]."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", _TRANSPOSE_INIT, (1, 4, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        # Polyphase form of the transposed conv (w = 2 i - 1 + k): even outputs
        # out[2j] = x[j] K1 + x[j-1] K3, odd outputs out[2j+1] = x[j+1] K0 + x[j] K2, two dense
        # matmuls interleaved. Same numbers as the lhs-dilated conv, whose weight gradient XLA's
        # CPU backend ran ~100x slower than its forward (experiments/bench_range.py).
        kernel = kernel[0].astype(x.dtype)  # [4, C_in, F]
        padded = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
        previous, following = padded[:, :, :-2], padded[:, :, 2:]  # x[j-1], x[j+1] (0 outside)
        even = jnp.concatenate([x, previous], -1) @ jnp.concatenate([kernel[1], kernel[3]], 0)
        odd = jnp.concatenate([following, x], -1) @ jnp.concatenate([kernel[0], kernel[2]], 0)
        batch, height, width, _ = x.shape
        y = jnp.stack([even, odd], axis=3).reshape(batch, height, 2 * width, self.features)
        return y + bias.astype(y.dtype)


class DarkNetSegmenter(nn.Module):
    """The released 2D network: DarkNet backbone, decoder and head on range images.

    Attributes: as the same-named ones of `RangeNet`.
    """

    num_classes: int = 20
    depth: int = 53
    base_width: int = 32
    output_stride: int = 32
    dropout_rate: float = 0.01
    bn_momentum: float = 0.99
    detach_skips: bool = True
    feature_level: int = NUM_STAGES

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        """Images x [B, H, W, 5] -> (pixel logits [B, H, W, C], encoder features of
        `feature_level` [B, H, W', D])."""
        if self.depth not in MODEL_BLOCKS:
            raise ValueError(f"RangeNet depth must be one of {sorted(MODEL_BLOCKS)}: {self.depth}")
        if not 0 <= self.feature_level <= NUM_STAGES:
            raise ValueError(f"feature_level must be in [0, {NUM_STAGES}]: {self.feature_level}")
        norm = lambda name: nn.BatchNorm(  # noqa: E731
            use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5, name=name
        )
        dropout = lambda x, name: ChannelDropout(self.dropout_rate, name=name)(  # noqa: E731
            x, deterministic=not train
        )
        skip = jax.lax.stop_gradient if self.detach_skips else lambda x: x
        encoder_strides, decoder_strides = released_strides(self.output_stride)
        widths = [self.base_width * 2**level for level in range(NUM_STAGES + 1)]

        x = torch_conv(widths[0], 3, padding=1, use_bias=False, name="stem_conv")(x)
        x = nn.leaky_relu(norm("stem_bn")(x), 0.1)
        levels = [x]
        skips = {}  # by output stride, the released `skips[os]`: each stage's input it shrinks
        output_stride = 1
        for stage, (blocks, stride) in enumerate(zip(MODEL_BLOCKS[self.depth], encoder_strides)):
            name = f"enc{stage + 1}"
            if stride == 2:
                skips[output_stride] = skip(x)
                output_stride *= 2
            x = torch_conv(
                widths[stage + 1], 3, padding=1, stride=(1, stride), use_bias=False,
                name=f"{name}_conv",
            )(x)  # fmt: skip
            x = nn.leaky_relu(norm(f"{name}_bn")(x), 0.1)
            for block in range(blocks):
                x = DarkNetBlock(
                    (widths[stage], widths[stage + 1]), self.bn_momentum, name=f"{name}_res{block}"
                )(x, train)
            x = dropout(x, f"{name}_dropout")
            levels.append(x)

        for stage, stride in enumerate(decoder_strides):
            name = f"dec{NUM_STAGES - stage}"
            planes = (widths[NUM_STAGES - stage], widths[NUM_STAGES - stage - 1])
            if stride == 2:
                x = WidthUpConv(planes[1], name=f"{name}_upconv")(x)
            else:
                x = torch_conv(planes[1], 3, padding=1, name=f"{name}_conv")(x)
            x = nn.leaky_relu(norm(f"{name}_bn")(x), 0.1)
            x = DarkNetBlock(planes, self.bn_momentum, name=f"{name}_res")(x, train)
            if stride == 2:
                output_stride //= 2
                x = x + skip(skips[output_stride])
        x = dropout(x, "dec_dropout")

        x = dropout(x, "head_dropout")
        logits = torch_conv(self.num_classes, 3, padding=1, name="head_conv")(x)
        return logits.astype(jnp.float32), levels[self.feature_level]


class RangeNet(nn.Module):
    """RangeNet++ (DarkNet backbone + released decoder) on the points of a SemanticKITTI batch.

    Attributes:
      num_classes: output classes C (20 for SemanticKITTI).
      ignore_index: the label space's no-label id (empty pixels, padded points).
      depth: 21 or 53 (DarkNet21 / DarkNet53 block counts).
      base_width: stem width (32 as released); stage k has base_width * 2^k channels.
      output_stride: horizontal output stride of the encoder (32 as released).
      dropout_rate: every Dropout2d (backbone, decoder and head: 0.01 as released).
      bn_momentum: Flax BatchNorm momentum (0.99 = the released bn_d 0.01).
      detach_skips: no gradient through the skip connections, as released (module docstring).
      height, width, fov_up_deg, fov_down_deg: the spherical projection (64 x 2048, +3 / -25).
      img_means, img_stds: the input normalisation (HDL-64E values of the release).
      feature_level: encoder level of the LEAK features (0 = stem, 5 = bottleneck).
      use_knn: kNN post-processing at evaluation (module docstring); knn_k, knn_search,
        knn_sigma, knn_cutoff: its parameters (5, 5, 1.0, 1.0 as released).
    """

    num_classes: int = 20
    ignore_index: int = 0
    depth: int = 53
    base_width: int = 32
    output_stride: int = 32
    dropout_rate: float = 0.01
    bn_momentum: float = 0.99
    detach_skips: bool = True
    height: int = DEFAULT_HEIGHT
    width: int = DEFAULT_WIDTH
    fov_up_deg: float = DEFAULT_FOV_UP_DEG
    fov_down_deg: float = DEFAULT_FOV_DOWN_DEG
    img_means: tuple[float, ...] = HDL64_IMG_MEANS
    img_stds: tuple[float, ...] = HDL64_IMG_STDS
    feature_level: int = NUM_STAGES
    use_knn: bool = False
    knn_k: int = KNN_DEFAULTS["knn"]
    knn_search: int = KNN_DEFAULTS["search"]
    knn_sigma: float = KNN_DEFAULTS["sigma"]
    knn_cutoff: float = KNN_DEFAULTS["cutoff"]

    def input_spec(self) -> BatchSpec:
        """The batch it reads: points float32 [B, P, 4] (x, y, z, remission), labels, point_mask."""
        return point_cloud_spec(4)

    def _check(self) -> None:
        released_strides(self.output_stride)
        check_image_size("RangeNet", self.height, self.width, 1, self.output_stride)

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
        network = DarkNetSegmenter(
            num_classes=self.num_classes,
            depth=self.depth,
            base_width=self.base_width,
            output_stride=self.output_stride,
            dropout_rate=self.dropout_rate,
            bn_momentum=self.bn_momentum,
            detach_skips=self.detach_skips,
            feature_level=self.feature_level,
            name="network",
        )
        return segment_through_range_image(self, batch, network, train)
