"""What the range-image models (RangeNet++, SalsaNext) share around their 2D networks.

* `project_scans`: the released spherical projection of every scan of a padded point batch, on
  device (`leakjax.range_image`): the 5 normalised input channels [B, H, W, 5], the label image
  and the pixel of every point;
* `range_outputs`: from the network's pixel logits back to the model contract
  (docs/model_api.md): per-point logits read at each point's pixel (every real point is scored,
  also one hidden behind a closer point: it reads the pixel its occluder won, as the released
  unprojection does), optionally the released kNN post-processing at evaluation, and `aux` with
  the LEAK features, their nearest-down-sampled labels and the range-image loss tensors;
* `ChannelDropout`: PyTorch's Dropout2d (whole channels of a sample) on NHWC images;
* `torch_conv`: an `nn.Conv` with PyTorch's explicit, symmetric padding and initialisation.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from leakjax.layers import TORCH_INIT, Dropout
from leakjax.leak.propagation import nearest_downsample_labels
from leakjax.range_image import (
    RangeProjection,
    image_to_points,
    knn_postprocess,
    normalized_input,
    project_labels,
    spherical_projection,
)

__all__ = [
    "ChannelDropout",
    "check_image_size",
    "knn_arguments",
    "project_scans",
    "range_outputs",
    "torch_conv",
]


def torch_conv(
    features: int,
    kernel: int | tuple[int, int],
    padding: int | tuple[int, int] = 0,
    stride: int | tuple[int, int] = 1,
    dilation: int = 1,
    use_bias: bool = True,
    name: str | None = None,
) -> nn.Conv:
    """`nn.Conv2d(C_in, features, kernel, stride, padding, dilation, bias)` of PyTorch as an NHWC
    flax conv: explicit zero padding on both sides of each axis, PyTorch's default weight
    initialisation (the bias starts at 0 where PyTorch draws it uniformly)."""
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    pad_h, pad_w = pair(padding)
    return nn.Conv(
        features,
        kernel_size=pair(kernel),
        strides=pair(stride),
        padding=((pad_h, pad_h), (pad_w, pad_w)),
        kernel_dilation=pair(dilation),
        use_bias=use_bias,
        kernel_init=TORCH_INIT,
        name=name,
    )


class ChannelDropout(nn.Module):
    """PyTorch's Dropout2d on x [B, H, W, C]: each (sample, channel) is zeroed with probability
    `rate` over the whole image, the kept ones scaled by 1 / (1 - rate). The mask is drawn by
    `leakjax.layers.Dropout` (stream "dropout", mask sharded like the batch) on [B, 1, 1, C]."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if self.rate == 0.0 or deterministic:
            return x
        # ones_like of a slice keeps x's batch sharding, so the mask follows it too.
        keep = Dropout(self.rate, name="mask")(jnp.ones_like(x[:, :1, :1, :]), deterministic)
        return x * keep


def check_image_size(model: str, height: int, width: int, height_div: int, width_div: int):
    """Raise ValueError unless the image size fits the network's down-sampling."""
    if height % height_div or width % width_div:
        raise ValueError(
            f"{model}: image {height} x {width} must be a multiple of {height_div} x {width_div} "
            "(the encoder's down-sampling, undone exactly by the decoder)"
        )


def knn_arguments(model: nn.Module, train: bool) -> dict[str, float | int] | None:
    """The `knn` argument of `range_outputs` from a model's `use_knn` and `knn_*` attributes:
    None (no post-processing) in training or when `use_knn` is off."""
    if train or not model.use_knn:
        return None
    return {
        "knn": model.knn_k,
        "search": model.knn_search,
        "sigma": model.knn_sigma,
        "cutoff": model.knn_cutoff,
    }


def project_scans(
    batch: dict[str, jax.Array],
    *,
    height: int,
    width: int,
    fov_up_deg: float,
    fov_down_deg: float,
    img_means: tuple[float, ...],
    img_stds: tuple[float, ...],
    ignore_index: int,
) -> tuple[RangeProjection, jax.Array, jax.Array]:
    """The released projection of each scan of a padded point batch.

    Args:
      batch: "points" float32 [B, P, 4] (x, y, z metres, remission), "point_mask" bool [B, P],
        "labels" int32 [B, P].
      height, width, fov_up_deg, fov_down_deg: the projection (static).
      img_means, img_stds: the 5 channel normalisation constants (range, x, y, z, remission).
      ignore_index: label of the pixels outside the projection mask.

    Returns:
      (projection with images [B, H, W] and points [B, P], inputs float32 [B, H, W, 5],
       label image int32 [B, H, W]).
    """
    project = functools.partial(
        spherical_projection,
        height=height,
        width=width,
        fov_up_deg=fov_up_deg,
        fov_down_deg=fov_down_deg,
    )
    point_mask = batch["point_mask"].astype(bool)
    projection = jax.vmap(lambda scan, mask: project(scan, point_mask=mask))(
        batch["points"], point_mask
    )
    inputs = normalized_input(projection, tuple(img_means), tuple(img_stds))
    labels = jnp.where(point_mask, batch["labels"], ignore_index)
    label_image = project_labels(labels, projection, ignore_label=ignore_index)
    return projection, inputs, label_image


def range_outputs(
    pixel_logits: jax.Array,
    features: jax.Array,
    projection: RangeProjection,
    label_image: jax.Array,
    point_mask: jax.Array,
    *,
    ignore_index: int,
    knn: dict[str, float | int] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-point logits and the contract's aux from the outputs of a range-image network.

    Args:
      pixel_logits: float [B, H, W, C] the network's logits on the range image.
      features: float [B, H', W', D] the encoder features LEAK aligns.
      projection: the batch's RangeProjection (images [B, H, W], points [B, P]).
      label_image: int32 [B, H, W] projected labels, `ignore_index` outside the mask.
      point_mask: bool [B, P].
      ignore_index: the label space's no-label id (never predicted by the kNN vote when in range).
      knn: None: every point takes the logits of its pixel. Else the released kNN
        post-processing with these keyword arguments (knn, search, sigma, cutoff): its label per
        point is returned as one-hot "logits", so an argmax gives it.

    Returns:
      (logits float32 [B, P, C], zero for padded points; aux per docs/model_api.md).
    """
    num_classes = pixel_logits.shape[-1]
    ignore_in_range = ignore_index if 0 <= ignore_index < num_classes else None
    if knn is None:
        point_logits = image_to_points(pixel_logits, projection.px, projection.py, fill_value=0.0)
    else:
        scores = pixel_logits
        if ignore_in_range is not None:  # the ignored id is never predicted (LabelSpace.predict)
            scores = scores.at[..., ignore_in_range].set(-jnp.inf)
        point_labels = knn_postprocess(
            projection.range,
            projection.point_range,
            jnp.argmax(scores, axis=-1),
            projection.px,
            projection.py,
            point_mask,
            num_classes=num_classes,
            ignore_class=ignore_in_range,
            **knn,
        )
        point_logits = jax.nn.one_hot(point_labels, num_classes, dtype=pixel_logits.dtype)

    batch_size, feature_height, feature_width, depth = features.shape
    feature_labels, feature_mask = nearest_downsample_labels(
        label_image, projection.mask, (feature_height, feature_width)
    )
    feature_labels = jnp.where(feature_mask, feature_labels, ignore_index)
    flat = (batch_size, feature_height * feature_width)
    aux = {
        "features": features.reshape(flat + (depth,)),
        "feature_mask": feature_mask.reshape(flat),
        "feature_labels": feature_labels.reshape(flat),
        "loss_logits": pixel_logits,
        "loss_labels": label_image,
        "loss_mask": projection.mask,
        "overflow": jnp.zeros((batch_size,), bool),
    }
    return point_logits, aux


def segment_through_range_image(
    model: nn.Module, batch: dict[str, jax.Array], network: nn.Module, train: bool
):
    """A range-image model's forward: project the batch's scans (the model's height, width, field
    of view and sensor statistics), run the 2-D `network` (inputs [B, H, W, 5] -> (pixel logits,
    features)) and read every point's logits back (`range_outputs`, with the model's kNN
    post-processing settings). Returns (logits [B, P, C], aux)."""
    projection, inputs, label_image = project_scans(
        batch,
        height=model.height,
        width=model.width,
        fov_up_deg=model.fov_up_deg,
        fov_down_deg=model.fov_down_deg,
        img_means=model.img_means,
        img_stds=model.img_stds,
        ignore_index=model.ignore_index,
    )
    pixel_logits, features = network(inputs, train)
    return range_outputs(
        pixel_logits,
        features,
        projection,
        label_image,
        batch["point_mask"],
        ignore_index=model.ignore_index,
        knn=knn_arguments(model, train),
    )
