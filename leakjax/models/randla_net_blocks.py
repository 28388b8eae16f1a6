"""RandLA-Net's building blocks on padded point sets (Hu et al., CVPR 2020; released TF1 code).

Every array carries a batch axis B and padded rows. Neighbour, pooling and up-sampling indices
come from `leakjax.points.sampling_hierarchy_host` (see `randla_net.py`): a slot without a
neighbour holds the sentinel "number of rows of the level indexed", so `index < rows` is its
validity. Sentinel slots never contribute: gathers fill them with zeros, attention softmaxes and
max-pools skip them, and BatchNorm statistics are taken over the valid rows (neighbour slots for
the per-neighbour MLPs) of the whole batch only (`MaskedBatchNorm`).

Layer names follow the released `RandLANet.py` (mlp1, mlp2, shortcut, att_pooling_1, ...).
Weights of the released conv helper are drawn from a truncated normal of standard deviation
sqrt(2 / C_out) (C_in for the decoder's transposed convs, whose TF kernel is [1, 1, out, in])
rounded to 3 decimals; `tf.layers.dense` (fc0, attention scores) uses Glorot uniform.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from leakjax.layers import MaskedBatchNorm, RowDense, take_rows
from leakjax.sharding import map_samples

LEAKY_SLOPE = 0.2  # tf.nn.leaky_relu's default, used by every released conv helper
BN_EPSILON = 1e-6  # the released tf.layers.batch_normalization(..., epsilon=1e-6)
GLOROT_UNIFORM = nn.initializers.xavier_uniform()


def released_conv_init(transposed: bool = False) -> nn.initializers.Initializer:
    """The released `_variable_with_weight_decay(use_xavier=False)` for a [C_in, C_out] kernel:
    truncated normal (2 standard deviations) with std sqrt(2 / fan), rounded to 3 decimals, where
    fan is the TF kernel's last dim: C_out for a conv, C_in for a transposed conv."""

    def init(key, shape, dtype=jnp.float32):
        fan = shape[0] if transposed else shape[-1]
        weights = jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)
        weights = weights * jnp.sqrt(2.0 / fan)
        return (jnp.round(weights * 1000.0) / 1000.0).astype(dtype)

    return init


def gather_rows(x: jax.Array, index: jax.Array) -> jax.Array:
    """x [B, N, C] gathered at int index [B, *S] -> [B, *S, C]; the sentinel N gives zeros."""
    return map_samples(take_rows, x.shape[0])(x, index)


def masked_softmax(logits: jax.Array, mask: jax.Array, axis: int) -> jax.Array:
    """Softmax of logits over `axis` restricted to `mask` (broadcastable): masked entries get 0,
    an all-masked slice gets all zeros; no NaN or inf in the values or gradients."""
    mask = jnp.broadcast_to(mask, logits.shape)
    peak = jnp.max(jnp.where(mask, logits, -jnp.inf), axis=axis, keepdims=True)
    peak = jax.lax.stop_gradient(jnp.where(jnp.isfinite(peak), peak, 0.0))
    exps = jnp.where(mask, jnp.exp(jnp.where(mask, logits - peak, 0.0)), 0.0)
    total = jnp.sum(exps, axis=axis, keepdims=True)
    return exps / jnp.where(total > 0, total, 1.0)


def relative_position_encoding(xyz: jax.Array, neighbours: jax.Array) -> jax.Array:
    """The released LocSE input for each point i and neighbour slot k:
    [||p_i - p_k||, p_i - p_k, p_i, p_k] (10 channels).

    xyz float [B, N, 3] (metres); neighbours int [B, N, K] (sentinel N: the slot is zero).
    Returns float [B, N, K, 10].
    """
    found = neighbours < xyz.shape[1]
    neighbour_xyz = gather_rows(xyz, neighbours)  # [B, N, K, 3]
    centre = jnp.broadcast_to(xyz[:, :, None, :], neighbour_xyz.shape)
    relative = centre - neighbour_xyz
    distance = jnp.sqrt(jnp.sum(relative * relative, axis=-1, keepdims=True))
    encoding = jnp.concatenate([distance, relative, centre, neighbour_xyz], axis=-1)
    return jnp.where(found[..., None], encoding, 0.0)


def max_pool_neighbours(features: jax.Array, pools: jax.Array) -> jax.Array:
    """The released `random_sample`: the max over each kept point's neighbourhood.

    features [B, N, C]; pools int [B, M, K] into the N rows (sentinel N skipped).
    Returns [B, M, C]; rows without any neighbour (padding) are 0.
    """
    found = pools < features.shape[1]
    gathered = gather_rows(features, pools)  # [B, M, K, C]
    pooled = jnp.max(jnp.where(found[..., None], gathered, -jnp.inf), axis=2)
    return jnp.where(jnp.any(found, axis=-1)[..., None], pooled, 0.0)


def nearest_upsample(features: jax.Array, upsamples: jax.Array) -> jax.Array:
    """The released `nearest_interpolation`: features [B, M, C] of the coarser level gathered
    at upsamples int [B, N, 1] (sentinel M: zeros) -> [B, N, C]."""
    return gather_rows(features, upsamples[..., 0])


class SharedMLP(nn.Module):
    """The released 1x1 `conv2d` helper: dense with bias -> BatchNorm -> LeakyReLU(0.2).

    Applied to rows x [B, *S, C_in] with a bool mask [B, *S] of the valid rows (points or
    neighbour slots): BatchNorm statistics over the valid rows of the batch; others come out 0.
    """

    features: int
    activation: bool = True
    transposed: bool = False  # the decoder's conv2d_transpose (only its init differs)
    kernel_init: nn.initializers.Initializer | None = None  # None: released_conv_init
    bn_momentum: float = 0.99

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
        rows_shape = x.shape[:-1]
        rows = x.reshape(x.shape[0], -1, x.shape[-1])
        kernel_init = self.kernel_init or released_conv_init(self.transposed)
        y = RowDense(self.features, kernel_init=kernel_init, name="conv")(rows)
        y = MaskedBatchNorm(momentum=self.bn_momentum, epsilon=BN_EPSILON, name="bn")(
            y, mask.reshape(rows.shape[:2]), use_running_average=not train
        )
        if self.activation:
            y = nn.leaky_relu(y, LEAKY_SLOPE)
        return y.reshape(*rows_shape, self.features)


class LocalSpatialEncoding(nn.Module):
    """LocSE: `relative_position_encoding` -> SharedMLP(features) per neighbour slot.

    xyz [B, N, 3], neighbours int [B, N, K] (sentinel N), found bool [B, N, K] (valid slots of
    valid points) -> [B, N, K, features], zero on the slots that are not found.
    """

    features: int
    bn_momentum: float = 0.99

    @nn.compact
    def __call__(self, xyz, neighbours, found, train: bool) -> jax.Array:
        encoding = relative_position_encoding(xyz, neighbours)
        return SharedMLP(self.features, bn_momentum=self.bn_momentum, name="mlp")(
            encoding, found, train
        )


class AttentivePooling(nn.Module):
    """The released `att_pooling`: scores = dense without bias (d -> d) per neighbour slot,
    softmax over the K slots (found ones only), sum of slot features weighted by their scores,
    then SharedMLP(features).

    feature_set [B, N, K, d], found bool [B, N, K], point_mask bool [B, N] -> [B, N, features].
    """

    features: int
    bn_momentum: float = 0.99

    @nn.compact
    def __call__(self, feature_set, found, point_mask, train: bool) -> jax.Array:
        batch, points, slots, channels = feature_set.shape
        rows = feature_set.reshape(batch, points * slots, channels)
        logits = RowDense(channels, use_bias=False, kernel_init=GLOROT_UNIFORM, name="fc")(rows)
        scores = masked_softmax(logits.reshape(feature_set.shape), found[..., None], axis=2)
        pooled = jnp.sum(feature_set * scores, axis=2)  # [B, N, d]
        return SharedMLP(self.features, bn_momentum=self.bn_momentum, name="mlp")(
            pooled, point_mask, train
        )


class LocalFeatureAggregation(nn.Module):
    """The released `building_block` (LFA) with output width d_out, input width d = d_out / 2:
    LocSE (-> d), attentive pooling of [neighbour features, LocSE] (-> d_out / 2), a SharedMLP on
    the LocSE (-> d_out / 2), attentive pooling of [neighbours of the pooled features, that]
    (-> d_out)."""

    d_out: int
    bn_momentum: float = 0.99

    @nn.compact
    def __call__(self, features, xyz, neighbours, found, point_mask, train: bool):
        momentum = self.bn_momentum
        half = self.d_out // 2
        f_xyz = LocalSpatialEncoding(features.shape[-1], momentum, name="locse")(
            xyz, neighbours, found, train
        )
        f_set = jnp.concatenate([gather_rows(features, neighbours), f_xyz], axis=-1)
        pooled = AttentivePooling(half, momentum, name="att_pooling_1")(
            f_set, found, point_mask, train
        )
        f_xyz = SharedMLP(half, bn_momentum=momentum, name="mlp2")(f_xyz, found, train)
        f_set = jnp.concatenate([gather_rows(pooled, neighbours), f_xyz], axis=-1)
        return AttentivePooling(self.d_out, momentum, name="att_pooling_2")(
            f_set, found, point_mask, train
        )


class DilatedResidualBlock(nn.Module):
    """The released `dilated_res_block`: mlp1 (-> d_out / 2), LFA (-> d_out), mlp2 (-> 2 d_out,
    no activation) plus a shortcut (-> 2 d_out, no activation), LeakyReLU of the sum.

    features [B, N, C], xyz [B, N, 3], neighbours int [B, N, K] (sentinel N), point_mask [B, N]
    -> [B, N, 2 d_out] (padded rows 0).
    """

    d_out: int
    bn_momentum: float = 0.99

    @nn.compact
    def __call__(self, features, xyz, neighbours, point_mask, train: bool) -> jax.Array:
        momentum = self.bn_momentum
        found = (neighbours < features.shape[1]) & point_mask[..., None]
        x = SharedMLP(self.d_out // 2, bn_momentum=momentum, name="mlp1")(
            features, point_mask, train
        )
        x = LocalFeatureAggregation(self.d_out, momentum, name="lfa")(
            x, xyz, neighbours, found, point_mask, train
        )
        x = SharedMLP(2 * self.d_out, activation=False, bn_momentum=momentum, name="mlp2")(
            x, point_mask, train
        )
        shortcut = SharedMLP(
            2 * self.d_out, activation=False, bn_momentum=momentum, name="shortcut"
        )(features, point_mask, train)
        return nn.leaky_relu(x + shortcut, LEAKY_SLOPE)


__all__ = [
    "AttentivePooling",
    "DilatedResidualBlock",
    "LocalFeatureAggregation",
    "LocalSpatialEncoding",
    "SharedMLP",
    "gather_rows",
    "masked_softmax",
    "max_pool_neighbours",
    "nearest_upsample",
    "relative_position_encoding",
    "released_conv_init",
]
