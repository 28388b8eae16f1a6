"""DeepLabV3 (Chen et al. 2017) for padded image batches: dilated ResNet, ASPP, head, up-sampling.

Architecture (torchvision's / VainF's `deeplabv3_resnet{50,101}` without the auxiliary head):
  * backbone: ResNet-50/101 (leakjax/models/resnet.py) with `replace_stride_with_dilation`
    (False, False, True) for output stride 16 and (False, True, True) for 8; no multi-grid;
  * ASPP on the backbone output: a 1x1 conv, three 3x3 atrous convs (rates (6, 12, 18) at output
    stride 16, doubled at 8), image pooling (global average -> 1x1 conv -> broadcast), each to
    `aspp_channels` (256) with BN + ReLU; concatenated, projected by 1x1 conv + BN + ReLU, then
    dropout (0.1);
  * head: 3x3 conv 256 + BN + ReLU, 1x1 conv (with bias) to the C classes;
  * bilinear up-sampling of the logits to the input size.
Convs are bias-free (but the classifier) with torchvision's padding and kaiming-normal (fan out)
init. No ImageNet weights ship with the project: the model starts from random init unless the user
loads torchvision weights into `params["backbone"]` / `batch_stats["backbone"]` (the mapping is in
resnet.py's docstring; the ASPP and head always start from scratch, as in the paper).

Padding invariance (batches from `pad_batch`: each image in the top-left corner of its capacity,
`pixel_mask` True there). Every BatchNorm takes its statistics over the valid pixels of the whole
batch, padded pixels are zeroed after every normalisation, image pooling averages the valid
pixels only, and the up-sampling (below) reads valid feature pixels only. Therefore, for an image
of size h x w padded to any H x W >= h x w, together with any number of other samples that are
entirely padding:
  * INVARIANT (equal up to float rounding, border pixels included): the logits on its h x w
    pixels, the features and their mask, and the BatchNorm batch statistics (so the updated
    running averages) in training mode, and the logits with running averages in evaluation;
  * NOT INVARIANT: the values written on padded pixels (logits 0 there); dropout's random mask,
    which is drawn over the padded shape (train mode with dropout_rate > 0 differs by the draw,
    not in distribution); and, when the batch holds other real images, anything through the batch
    statistics (which is the point of BatchNorm).
The up-sampling places input pixel y at feature coordinate y / output_stride (the centre of feature
pixel i is input pixel output_stride * i, see resnet.py) and clamps to the image's valid feature
pixels, instead of torch's `interpolate(size=(H, W), align_corners=False)`, whose sampling grid
depends on the padded size H and would break the invariance; both agree up to a sub-pixel shift.

LEAK (docs/model_api.md): `aux["features"]` is the ASPP output (after the projection's ReLU,
before dropout; `feature_level="aspp"`) or the backbone output (`"backbone"`), flattened to
[B, h * w, D]; its labels are the label image down-sampled by nearest neighbour at the centres of
the feature pixels (pixel (s i, s j) for output stride s; pixels outside the image -> no label).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from leakjax.layers import Dropout
from leakjax.leak.propagation import nearest_downsample_labels
from leakjax.models.resnet import (
    KAIMING_FAN_OUT,
    STAGE_SIZES,
    PixelBatchNorm,
    ResNet,
    conv2d,
)
from leakjax.train.batch import BatchSpec, image_spec

# ASPP atrous rates of the paper and of VainF's code, per output stride.
ASPP_RATES: dict[int, tuple[int, int, int]] = {16: (6, 12, 18), 8: (12, 24, 36)}
DILATED_STAGES: dict[int, tuple[bool, bool, bool]] = {
    16: (False, False, True),
    8: (False, True, True),
}
FEATURE_LEVELS = ("aspp", "backbone")


class ConvBNReLU(nn.Module):
    """A bias-free conv (torchvision padding), masked BatchNorm and ReLU; 0 on masked pixels."""

    features: int
    kernel: int = 1
    dilation: int = 1
    bn_momentum: float = 0.99

    @nn.compact
    def __call__(self, x, mask, train: bool):
        """x [B, h, w, C_in], mask bool [B, h, w] -> [B, h, w, features]."""
        x = conv2d(self.features, self.kernel, dilation=self.dilation, name="conv")(x)
        norm = PixelBatchNorm(use_running_average=not train, momentum=self.bn_momentum, name="bn")
        return nn.relu(norm(x, mask))


class ImagePooling(nn.Module):
    """ASPP's image-level branch: the mean over each image's valid pixels, 1x1 conv, BN over the
    batch's non-empty images, ReLU, broadcast back to the valid pixels (0 elsewhere)."""

    features: int
    bn_momentum: float = 0.99

    @nn.compact
    def __call__(self, x, mask, train: bool):
        """x [B, h, w, C], mask bool [B, h, w] -> [B, h, w, features]."""
        count = jnp.sum(mask, axis=(1, 2), dtype=jnp.float32)  # [B]
        total = jnp.sum(jnp.where(mask[..., None], x, 0.0), axis=(1, 2))  # [B, C]
        pooled = (total / jnp.maximum(count, 1.0)[:, None])[:, None, None, :]  # [B, 1, 1, C]
        pooled = conv2d(self.features, 1, name="conv")(pooled)
        norm = PixelBatchNorm(use_running_average=not train, momentum=self.bn_momentum, name="bn")
        pooled = nn.relu(norm(pooled, (count > 0)[:, None, None]))
        return jnp.where(mask[..., None], pooled, 0.0)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (module docstring): 1x1, atrous 3x3 per rate, image pooling;
    concatenated and projected by 1x1 conv + BN + ReLU (dropout is the caller's)."""

    rates: Sequence[int] = ASPP_RATES[16]
    channels: int = 256
    bn_momentum: float = 0.99

    @nn.compact
    def __call__(self, x, mask, train: bool):
        """x [B, h, w, C] (values on masked pixels are ignored), mask bool [B, h, w] ->
        [B, h, w, channels], 0 on masked pixels."""
        x = jnp.where(mask[..., None], x, 0.0)
        branch = lambda kernel, dilation, name: ConvBNReLU(  # noqa: E731
            self.channels, kernel, dilation, self.bn_momentum, name=name
        )(x, mask, train)
        branches = [branch(1, 1, "conv_1x1")]
        branches += [branch(3, rate, f"atrous_{i}") for i, rate in enumerate(self.rates)]
        branches.append(
            ImagePooling(self.channels, self.bn_momentum, name="pooling")(x, mask, train)
        )
        y = jnp.concatenate(branches, axis=-1)
        return ConvBNReLU(self.channels, 1, bn_momentum=self.bn_momentum, name="project")(
            y, mask, train
        )


def interpolation_matrix(out_size: int, in_size: int, stride: int, num_valid: jax.Array):
    """Linear-interpolation weights along one axis: float32 [B, out_size, in_size].

    Output pixel y samples input coordinate min(y / stride, num_valid[b] - 1): the centre of input
    pixel i is output pixel stride * i, and the image's valid inputs are its first num_valid[b]
    (int [B]); weights on inputs beyond them are 0.
    """
    last = jnp.maximum(num_valid - 1, 0).astype(jnp.float32)[:, None]  # [B, 1]
    coord = jnp.minimum(jnp.arange(out_size, dtype=jnp.float32)[None, :] / stride, last)
    low = jnp.floor(coord)
    frac = coord - low
    high = jnp.minimum(low + 1, last)
    onehot = lambda index: jax.nn.one_hot(index.astype(jnp.int32), in_size)  # noqa: E731
    return (1.0 - frac)[..., None] * onehot(low) + frac[..., None] * onehot(high)


def upsample_logits(logits, feature_mask, out_shape: tuple[int, int], stride: int):
    """Bilinear up-sampling of feature-resolution maps to the input size (module docstring).

    Args:
      logits: float32 [B, h, w, C].
      feature_mask: bool [B, h, w], each image's valid feature pixels (a top-left block).
      out_shape: (H, W) of the input.
      stride: the output stride s (h = ceil(H / s)).

    Returns:
      float32 [B, H, W, C].
    """
    rows = jnp.sum(jnp.any(feature_mask, axis=2), axis=1)  # [B] valid feature rows
    cols = jnp.sum(jnp.any(feature_mask, axis=1), axis=1)
    weight_rows = interpolation_matrix(out_shape[0], logits.shape[1], stride, rows)
    weight_cols = interpolation_matrix(out_shape[1], logits.shape[2], stride, cols)
    y = jnp.einsum("byi,bijc->byjc", weight_rows, logits)
    return jnp.einsum("bxj,byjc->byxc", weight_cols, y)


def feature_pixel_labels(labels, pixel_mask, feature_shape: tuple[int, int], stride: int, no_label):
    """Label ids and validity of the feature pixels: those of their centre pixels (s i, s j).

    `nearest_downsample_labels` on the label image first padded (no label, not valid) to
    stride * feature_shape, so that its nearest pixel is exactly the centre (s i, s j) even when H
    is not a multiple of the stride (on the raw H x W it would pick floor(i H / h) instead).

    Args:
      labels: int [B, H, W]; pixel_mask: bool [B, H, W]; feature_shape: (h, w) =
        (ceil(H / s), ceil(W / s)); stride: s; no_label: the id written where none.

    Returns:
      (labels int32 [B, h, w], valid bool [B, h, w]); no_label where not valid.
    """
    height, width = labels.shape[1:]
    pad = ((0, 0), (0, stride * feature_shape[0] - height), (0, stride * feature_shape[1] - width))
    labels = jnp.pad(jnp.where(pixel_mask, labels, no_label), pad, constant_values=no_label)
    pixel_mask = jnp.pad(pixel_mask, pad, constant_values=False)
    return nearest_downsample_labels(labels, pixel_mask, feature_shape)


class DeepLabV3(nn.Module):
    """DeepLabV3 with a ResNet backbone (module docstring).

    Attributes:
      num_classes: output classes C (21 for Pascal VOC: background 0 and 20 objects).
      ignore_index: the label space's no-label id (255 for VOC), written where no label.
      depth: ResNet depth, 50 or 101 (STAGE_SIZES).
      stage_sizes: blocks per stage, overriding `depth` (tiny variants for tests and smoke runs).
      width: the backbone's base width (64; the backbone output has width * 32 channels).
      output_stride: 16 (last stage dilated) or 8 (last two).
      aspp_rates: atrous rates; None: (6, 12, 18) at output stride 16, (12, 24, 36) at 8.
      aspp_channels: channels of every ASPP branch, the projection and the head (256).
      dropout_rate: dropout after the ASPP projection (training only; "dropout" rng).
      feature_level: "aspp" (ASPP output, aspp_channels wide) or "backbone" (width * 32 wide):
        the features LEAK aligns.
      bn_momentum: running-average decay of every BatchNorm, flax convention (0.99 = torch
        momentum 0.01, VainF's recipe for the backbone; the paper's 0.9997).
    """

    num_classes: int = 21
    ignore_index: int = 255
    depth: int = 101
    stage_sizes: Sequence[int] | None = None
    width: int = 64
    output_stride: int = 16
    aspp_rates: Sequence[int] | None = None
    aspp_channels: int = 256
    dropout_rate: float = 0.1
    feature_level: str = "aspp"
    bn_momentum: float = 0.99

    def input_spec(self) -> BatchSpec:
        """The batch it reads: image float32 [B, H, W, 3], labels int32 [B, H, W], pixel_mask."""
        return image_spec(3)

    def _check(self):
        if self.output_stride not in DILATED_STAGES:
            raise ValueError(f"DeepLabV3: output_stride {self.output_stride} not in (8, 16)")
        if self.stage_sizes is None and self.depth not in STAGE_SIZES:
            raise ValueError(f"DeepLabV3: depth {self.depth} not in {tuple(STAGE_SIZES)}")
        if self.feature_level not in FEATURE_LEVELS:
            raise ValueError(
                f"DeepLabV3: feature_level {self.feature_level!r} not in {FEATURE_LEVELS}"
            )

    @nn.compact
    def __call__(self, batch: dict[str, jax.Array], train: bool = False):
        """Segments a padded image batch.

        Args:
          batch: "image" float32 [B, H, W, 3] (normalised RGB), "pixel_mask" bool [B, H, W]
            (each image in the top-left corner), "labels" int32 [B, H, W] (label ids).
          train: batch statistics (global over the valid pixels of the whole batch) and dropout
            vs running averages.

        Returns:
          (logits float32 [B, H, W, num_classes] (0 on padding), aux per docs/model_api.md with
          features [B, h * w, D], h = ceil(H / output_stride)).
        """
        self._check()
        image, pixel_mask = batch["image"], batch["pixel_mask"]
        height, width = image.shape[1:3]
        stage_sizes = STAGE_SIZES[self.depth] if self.stage_sizes is None else self.stage_sizes
        backbone = ResNet(
            stage_sizes=tuple(stage_sizes),
            width=self.width,
            replace_stride_with_dilation=DILATED_STAGES[self.output_stride],
            bn_momentum=self.bn_momentum,
            name="backbone",
        )
        backbone_out, feature_mask = backbone(image, pixel_mask, train)
        rates = ASPP_RATES[self.output_stride] if self.aspp_rates is None else self.aspp_rates
        aspp = ASPP(tuple(rates), self.aspp_channels, self.bn_momentum, name="aspp")
        aspp_out = aspp(backbone_out, feature_mask, train)
        x = Dropout(self.dropout_rate)(aspp_out, deterministic=not train)
        x = ConvBNReLU(self.aspp_channels, 3, bn_momentum=self.bn_momentum, name="head")(
            x, feature_mask, train
        )
        x = nn.Conv(self.num_classes, (1, 1), kernel_init=KAIMING_FAN_OUT, name="classifier")(
            x
        )  # [B, h, w, C]
        logits = upsample_logits(x, feature_mask, (height, width), self.output_stride)
        logits = jnp.where(pixel_mask[..., None], logits, 0.0)

        features = aspp_out if self.feature_level == "aspp" else backbone_out
        batch_size, feature_height, feature_width, channels = features.shape
        feature_labels, _ = feature_pixel_labels(
            batch["labels"],
            pixel_mask,
            (feature_height, feature_width),
            self.output_stride,
            self.ignore_index,
        )
        num_features = feature_height * feature_width
        labels = jnp.where(pixel_mask, batch["labels"], self.ignore_index)
        aux = {
            "features": features.reshape(batch_size, num_features, channels),
            "feature_mask": feature_mask.reshape(batch_size, num_features),
            "feature_labels": feature_labels.reshape(batch_size, num_features),
            "loss_logits": logits,
            "loss_labels": labels,
            "loss_mask": pixel_mask,
            "overflow": jnp.zeros((batch_size,), dtype=bool),
        }
        return logits, aux
