"""Flax Linen layers on SparseTensors: submanifold, strided and inverse convs, masked BatchNorm.

Convs take the level's KernelMap (built once per resolution, shared); their kernel must be a centred
sub-kernel of the map's kernel. Weights are [kx, ky, kz, C_in, C_out] (lecun-normal like nn.Conv).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from leakjax.layers.norm import MaskedBatchNorm
from leakjax.sparse.conv import sparse_conv
from leakjax.sparse.kernel_map import KernelMap
from leakjax.sparse.tensor import SparseTensor


class _ConvBase(nn.Module):
    def _conv(self, x: SparseTensor, kernel_map: KernelMap, out: SparseTensor, transpose: bool):
        weight = self.param(
            "kernel",
            self.kernel_init,
            tuple(self.kernel_size) + (x.num_channels, self.features),
            jnp.float32,
        )
        feats = sparse_conv(
            x.feats,
            kernel_map,
            weight.astype(x.feats.dtype),
            in_mask=x.mask,
            out_mask=out.mask,
            transpose=transpose,
            method=self.method,
        )
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            feats = jnp.where(out.mask[..., None], feats + bias.astype(feats.dtype), 0)
        return out.replace(feats=feats)


class SubMConv3d(_ConvBase):
    """Submanifold conv: output on the same set as x. __call__(x, kernel_map) -> SparseTensor."""

    features: int
    kernel_size: tuple[int, int, int] = (3, 3, 3)
    dilation: tuple[int, int, int] = (1, 1, 1)
    use_bias: bool = False
    method: str = "auto"
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: SparseTensor, kernel_map: KernelMap) -> SparseTensor:
        if not kernel_map.submanifold or tuple(kernel_map.dilation) != tuple(self.dilation):
            raise ValueError(
                f"SubMConv3d(dilation={self.dilation}) needs a submanifold map with that dilation, "
                f"got submanifold={kernel_map.submanifold}, dilation={kernel_map.dilation}"
            )
        return self._conv(x, kernel_map, x, transpose=False)


class SparseConv3d(_ConvBase):
    """Strided conv onto the coarse set `out` (the skeleton from `downsample_map`)."""

    features: int
    kernel_size: tuple[int, int, int] = (3, 3, 3)
    stride: tuple[int, int, int] = (2, 2, 2)
    use_bias: bool = False
    method: str = "auto"
    kernel_init: Callable = nn.initializers.lecun_normal()
    dilation: tuple[int, int, int] = (1, 1, 1)

    @nn.compact
    def __call__(self, x: SparseTensor, kernel_map: KernelMap, out: SparseTensor) -> SparseTensor:
        if (
            kernel_map.submanifold
            or tuple(kernel_map.stride) != tuple(self.stride)
            or tuple(kernel_map.dilation) != tuple(self.dilation)
        ):
            raise ValueError(
                f"SparseConv3d(stride={self.stride}, dilation={self.dilation}) needs a "
                f"down-sampling map with that stride and dilation, got "
                f"submanifold={kernel_map.submanifold}, stride={kernel_map.stride}, "
                f"dilation={kernel_map.dilation}"
            )
        return self._conv(x, kernel_map, out, transpose=False)


class SparseInverseConv3d(_ConvBase):
    """Inverse of a strided conv: x on the coarse set, kernel_map = the SAME map used to go down,
    out = the fine skeleton to restore (exactly the finer set)."""

    features: int
    kernel_size: tuple[int, int, int] = (3, 3, 3)
    use_bias: bool = False
    method: str = "auto"
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: SparseTensor, kernel_map: KernelMap, out: SparseTensor) -> SparseTensor:
        return self._conv(x, kernel_map, out, transpose=True)


class SparseBatchNorm(MaskedBatchNorm):
    """BatchNorm over the active rows of a batch.

    Statistics are global masked sums / counts over batch and rows (under jit with a sharded batch
    the sums are global), so neither padding nor the number of devices changes them. Running
    mean/var (biased variance, flax convention) live in `batch_stats`; padded rows stay zero.
    The backward is hand-written (see norm.py: autodiff's is slow on CPU).
    """

    @nn.compact
    def __call__(self, x: SparseTensor, use_running_average: bool | None = None) -> SparseTensor:
        return x.replace(feats=self.normalize(x.feats, x.mask, use_running_average))
