"""ResNet-50/101 for padded image batches: torchvision's layout, dilation, masked BatchNorm.

The backbone of DeepLabV3 (leakjax/models/deeplabv3.py). It follows torchvision's `resnet50` /
`resnet101` (ResNet v1.5: the stride of a bottleneck sits on its 3x3 conv) without the classifier,
with torchvision's `replace_stride_with_dilation`: a dilated stage keeps the resolution and
multiplies the dilation by the stride it drops, its first block still using the previous dilation.

Padded batches (leakjax/train/batch.py): an image sits in the top-left H x W corner of its
capacity with `pixel_mask` marking it. Every conv has torchvision's padding (k // 2 * dilation on
each side), so an output pixel i of a stride-s layer is centred on input pixel s * i and the valid
outputs of an h-pixel side are exactly the first ceil(h / s) = what the unpadded image gives. The
mask follows the same rule (`mask[:, ::s, ::s]`); after every BatchNorm (statistics over the valid
pixels of the whole batch: `PixelBatchNorm`) and after the max-pool, padded pixels are set to 0,
which is exactly what the unpadded image's zero padding gives to the next conv. Hence the backbone
output on the valid pixels of a padded image equals (up to float rounding) that of the image
alone, border included, and its BatchNorm statistics do not see the padding.

Parameter tree (for loading torchvision ImageNet weights; no loader here, no weights ship with
the project, so the model starts from random init unless the user loads them):

    torchvision key                      Flax variables (under the backbone's scope)
    conv1.weight [64, 3, 7, 7]           params  conv1/kernel [7, 7, 3, 64]  (transpose 2, 3, 1, 0)
    bn1.{weight, bias}                   params  bn1/{scale, bias}
    bn1.{running_mean, running_var}      batch_stats  bn1/{mean, var}
    layerL.K.convN.weight (N = 1, 2, 3)  params  layerL_K/convN/kernel  (same transpose)
    layerL.K.bnN.*                       layerL_K/bnN/* as bn1
    layerL.K.downsample.0.weight         params  layerL_K/downsample_conv/kernel
    layerL.K.downsample.1.*              layerL_K/downsample_bn/*
    fc.*                                 (not used)

Convs have no bias, as in torchvision. Inputs are expected ImageNet-normalised (mean
(0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) on [0, 1] RGB) when such weights are loaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from leakjax.layers import MaskedBatchNorm

# Blocks per stage (torchvision).
STAGE_SIZES: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
EXPANSION = 4  # bottleneck output channels / its width

# torchvision's (and VainF's DeepLab) init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class PixelBatchNorm(MaskedBatchNorm):
    """BatchNorm of x [B, H, W, C] over the pixels where mask [B, H, W] is True (whole batch);
    masked pixels come out 0. Variables as flax's BatchNorm (scale, bias; mean, var)."""

    @nn.compact
    def __call__(self, x, mask, use_running_average: bool | None = None):
        batch, height, width, channels = x.shape
        rows = x.reshape(batch, height * width, channels)
        y = self.normalize(rows, mask.reshape(batch, height * width), use_running_average)
        return y.reshape(x.shape)


def conv2d(
    features: int, kernel: int, stride: int = 1, dilation: int = 1, name: str | None = None
) -> nn.Conv:
    """A bias-free conv with torchvision's padding (kernel // 2 * dilation on every side)."""
    pad = kernel // 2 * dilation
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        kernel_dilation=(dilation, dilation),
        use_bias=False,
        kernel_init=KAIMING_FAN_OUT,
        name=name,
    )


def downsample_mask(mask: jax.Array, stride: int) -> jax.Array:
    """bool [B, H, W] -> [B, ceil(H / stride), ceil(W / stride)]: output pixel i of a stride-s conv
    with torchvision padding is centred on input pixel s * i; it is valid when that one is."""
    return mask[:, ::stride, ::stride]


class Bottleneck(nn.Module):
    """torchvision's Bottleneck: 1x1 -> 3x3 (stride, dilation) -> 1x1 (x4), each with BN; ReLU
    after the residual sum; a 1x1 conv + BN shortcut when the shape changes."""

    width: int
    stride: int = 1
    dilation: int = 1
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x, mask, train: bool):
        """x float32 [B, H, W, C_in] (0 where mask is False), mask bool [B, H, W] ->
        (y [B, H', W', width * 4], mask [B, H', W']) with H' = ceil(H / stride)."""
        norm = lambda name: PixelBatchNorm(  # noqa: E731
            use_running_average=not train, momentum=self.bn_momentum, name=name
        )
        out_mask = downsample_mask(mask, self.stride)
        y = nn.relu(norm("bn1")(conv2d(self.width, 1, name="conv1")(x), mask))
        y = conv2d(self.width, 3, self.stride, self.dilation, name="conv2")(y)
        y = nn.relu(norm("bn2")(y, out_mask))
        y = norm("bn3")(conv2d(self.width * EXPANSION, 1, name="conv3")(y), out_mask)
        if self.stride != 1 or x.shape[-1] != self.width * EXPANSION:
            shortcut = conv2d(self.width * EXPANSION, 1, self.stride, name="downsample_conv")(x)
            shortcut = norm("downsample_bn")(shortcut, out_mask)
        else:
            shortcut = x
        return nn.relu(y + shortcut), out_mask


class ResNet(nn.Module):
    """ResNet-50/101 feature extractor (torchvision layout, no classifier; see module docstring).

    Attributes:
      stage_sizes: bottleneck blocks per stage, e.g. STAGE_SIZES[101].
      width: stem channels and width of the first stage's bottlenecks (64 in torchvision; the
        output has width * 8 * 4 channels, 2048).
      replace_stride_with_dilation: for stages 2, 3, 4, as torchvision (output stride 16:
        (False, False, True); 8: (False, True, True)).
      bn_momentum: running-average decay, flax convention (torch momentum m -> 1 - m).
    """

    stage_sizes: Sequence[int] = STAGE_SIZES[101]
    width: int = 64
    replace_stride_with_dilation: Sequence[bool] = (False, False, False)
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, image, mask, train: bool):
        """Features of a padded image batch.

        Args:
          image: float32 [B, H, W, 3] (values where mask is False are ignored).
          mask: bool [B, H, W], each image's pixels (top-left block, as `pad_batch` writes).
          train: batch statistics (global over the valid pixels) vs running averages.

        Returns:
          (features float32 [B, h, w, width * 32], mask bool [B, h, w]) with
          h = ceil(H / s), s = 32 halved per dilated stage; features are 0 where the mask
          is False.
        """
        if len(self.stage_sizes) != 4 or len(self.replace_stride_with_dilation) != 3:
            raise ValueError(
                f"ResNet: 4 stage sizes and 3 dilation flags expected, got {self.stage_sizes} "
                f"and {self.replace_stride_with_dilation}"
            )
        x = jnp.where(mask[..., None], image, 0.0)
        x = conv2d(self.width, 7, 2, name="conv1")(x)
        mask = downsample_mask(mask, 2)
        norm = PixelBatchNorm(use_running_average=not train, momentum=self.bn_momentum, name="bn1")
        x = nn.relu(norm(x, mask))
        # Inputs are >= 0 and every window holds its (valid) centre, so padding with -inf (torch)
        # or with the zeros of masked pixels gives the same maximum.
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        mask = downsample_mask(mask, 2)
        x = jnp.where(mask[..., None], x, 0.0)
        dilation = 1
        for stage, num_blocks in enumerate(self.stage_sizes):
            stride = 1 if stage == 0 else 2
            previous_dilation = dilation
            if stage > 0 and self.replace_stride_with_dilation[stage - 1]:
                dilation *= stride
                stride = 1
            for block in range(num_blocks):
                x, mask = Bottleneck(
                    self.width * 2**stage,
                    stride=stride if block == 0 else 1,
                    dilation=previous_dilation if block == 0 else dilation,
                    bn_momentum=self.bn_momentum,
                    name=f"layer{stage + 1}_{block}",
                )(x, mask, train)
        return x, mask
