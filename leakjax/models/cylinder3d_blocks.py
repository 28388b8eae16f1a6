"""The building blocks of Cylinder3D's asymmetric residual 3D U-Net, on leakjax.sparse.

Each block mirrors one class of the released `network/segmentator_3d_asymm_spconv.py`
(xinge008/Cylinder3D) layer for layer: the same kernel shapes, channel widths and the released
order Conv -> LeakyReLU(0.01) -> BatchNorm (Conv -> BatchNorm -> Sigmoid in the DDCM block).
Kernel axes are the grid axes (rho, phi, z); "(1, 3, 3)" means 1 cell along rho, 3 along phi and
3 along z. Every submanifold conv of a level reads the one 3x3x3 kernel map of that level (spconv
builds one map per `indice_key`; all of them describe the same voxel set, so sharing is exact).

Released quirk kept on purpose (switchable): in ResContextBlock the output of `bn1` is assigned to
a misspelt variable (`reaA`) and then dropped, so the second branch runs conv2 -> LeakyReLU ->
conv3 without that BatchNorm. `context_bn1_as_released=True` reproduces it (bn1 still exists, so
the parameter count matches, and its running statistics still update as in PyTorch).
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from leakjax import sparse
from leakjax.layers import TORCH_INIT

Kernel = tuple[int, int, int]
K_1x3x3: Kernel = (1, 3, 3)
K_3x1x3: Kernel = (3, 1, 3)
K_3x3x3: Kernel = (3, 3, 3)
K_3x1x1: Kernel = (3, 1, 1)
K_1x3x1: Kernel = (1, 3, 1)
K_1x1x3: Kernel = (1, 1, 3)

LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU() default, used throughout the released network


def leaky_relu(x: sparse.SparseTensor) -> sparse.SparseTensor:
    """LeakyReLU(0.01) on the features; padded rows stay zero since f(0) = 0."""
    return x.replace(feats=jax.nn.leaky_relu(x.feats, LEAKY_SLOPE))


def add_features(a: sparse.SparseTensor, b: sparse.SparseTensor) -> sparse.SparseTensor:
    """Sum of two tensors on the same voxel set (same rows)."""
    return a.replace(feats=a.feats + b.feats)


class ConvActNorm(nn.Module):
    """Submanifold conv -> LeakyReLU(0.01) -> BatchNorm, the released unit.

    Attributes:
      features: output channels.
      kernel_size: one of the sub-kernels of 3x3x3.
      norm: a SparseBatchNorm factory (momentum etc. bound by the model).
      skip_norm: compute the BatchNorm (it keeps its parameters and running statistics) but
        return the un-normalised activations: the released ResContextBlock's bn1 typo.
      method: the sparse conv dataflow ("auto" | "pairs" | "gather", see leakjax.sparse).
    """

    features: int
    kernel_size: Kernel
    norm: Callable[..., nn.Module]
    skip_norm: bool = False
    method: str = "auto"

    @nn.compact
    def __call__(
        self, x: sparse.SparseTensor, kernel_map: sparse.KernelMap, train: bool
    ) -> sparse.SparseTensor:
        y = sparse.SubMConv3d(
            self.features, kernel_size=self.kernel_size, kernel_init=TORCH_INIT, method=self.method
        )(x, kernel_map)
        y = leaky_relu(y)
        normed = self.norm()(y, use_running_average=not train)
        return y if self.skip_norm else normed


class ResContextBlock(nn.Module):
    """Two asymmetric branches, (1,3,3)->(3,1,3) and (3,1,3)->(1,3,3), summed (no pooling)."""

    features: int
    norm: Callable[..., nn.Module]
    context_bn1_as_released: bool = True
    method: str = "auto"

    @nn.compact
    def __call__(self, x, kernel_map, train: bool) -> sparse.SparseTensor:
        shortcut = ConvActNorm(self.features, K_1x3x3, self.norm, method=self.method, name="conv1")(
            x, kernel_map, train
        )
        shortcut = ConvActNorm(
            self.features, K_3x1x3, self.norm, method=self.method, name="conv1_2"
        )(shortcut, kernel_map, train)
        branch = ConvActNorm(
            self.features,
            K_3x1x3,
            self.norm,
            skip_norm=self.context_bn1_as_released,
            method=self.method,
            name="conv2",
        )(x, kernel_map, train)
        branch = ConvActNorm(self.features, K_1x3x3, self.norm, method=self.method, name="conv3")(
            branch, kernel_map, train
        )
        return add_features(branch, shortcut)


class ResBlock(nn.Module):
    """Branches (3,1,3)->(1,3,3) and (1,3,3)->(3,1,3) summed, then a strided sparse conv.

    Returns (pooled tensor on the coarse set, pre-pooling tensor kept as the U-Net skip). The
    pooling conv (kernel 3, padding 1, no bias, no norm or activation, as released) runs on the
    down-sampling map built by the caller, which keeps the map for the inverse conv.
    """

    features: int
    stride: Kernel
    norm: Callable[..., nn.Module]
    method: str = "auto"

    @nn.compact
    def __call__(
        self,
        x: sparse.SparseTensor,
        kernel_map: sparse.KernelMap,
        down_map: sparse.KernelMap,
        coarse: sparse.SparseTensor,
        train: bool,
    ) -> tuple[sparse.SparseTensor, sparse.SparseTensor]:
        shortcut = ConvActNorm(self.features, K_3x1x3, self.norm, method=self.method, name="conv1")(
            x, kernel_map, train
        )
        shortcut = ConvActNorm(
            self.features, K_1x3x3, self.norm, method=self.method, name="conv1_2"
        )(shortcut, kernel_map, train)
        branch = ConvActNorm(self.features, K_1x3x3, self.norm, method=self.method, name="conv2")(
            x, kernel_map, train
        )
        branch = ConvActNorm(self.features, K_3x1x3, self.norm, method=self.method, name="conv3")(
            branch, kernel_map, train
        )
        skip = add_features(branch, shortcut)
        pooled = sparse.SparseConv3d(
            self.features,
            kernel_size=K_3x3x3,
            stride=self.stride,
            kernel_init=TORCH_INIT,
            method=self.method,
            name="pool",
        )(skip, down_map, coarse)
        return pooled, skip


class UpBlock(nn.Module):
    """3x3x3 conv on the coarse set, inverse conv to the finer set, + skip, (1,3,3),(3,1,3),(3,3,3).

    `down_map` is the map that produced the coarse set from the finer one (spconv's `up_key`), so
    the inverse conv restores exactly the finer set of the skip tensor.
    """

    features: int
    norm: Callable[..., nn.Module]
    method: str = "auto"

    @nn.compact
    def __call__(
        self,
        x: sparse.SparseTensor,
        skip: sparse.SparseTensor,
        coarse_map: sparse.KernelMap,
        down_map: sparse.KernelMap,
        fine_map: sparse.KernelMap,
        train: bool,
    ) -> sparse.SparseTensor:
        up = ConvActNorm(self.features, K_3x3x3, self.norm, method=self.method, name="trans")(
            x, coarse_map, train
        )
        up = sparse.SparseInverseConv3d(
            self.features,
            kernel_size=K_3x3x3,
            kernel_init=TORCH_INIT,
            method=self.method,
            name="up",
        )(up, down_map, skip)
        up = add_features(up, skip)
        up = ConvActNorm(self.features, K_1x3x3, self.norm, method=self.method, name="conv1")(
            up, fine_map, train
        )
        up = ConvActNorm(self.features, K_3x1x3, self.norm, method=self.method, name="conv2")(
            up, fine_map, train
        )
        return ConvActNorm(self.features, K_3x3x3, self.norm, method=self.method, name="conv3")(
            up, fine_map, train
        )


class ReconBlock(nn.Module):
    """DDCM: sigmoid(BN((3,1,1) conv)) + ... (1,3,1) + ... (1,1,3), times the input features."""

    features: int
    norm: Callable[..., nn.Module]
    method: str = "auto"

    @nn.compact
    def __call__(self, x: sparse.SparseTensor, kernel_map, train: bool) -> sparse.SparseTensor:
        gate = jnp.zeros(x.feats.shape[:-1] + (self.features,), x.feats.dtype)
        for index, kernel in enumerate((K_3x1x1, K_1x3x1, K_1x1x3)):
            y = sparse.SubMConv3d(
                self.features,
                kernel_size=kernel,
                kernel_init=TORCH_INIT,
                method=self.method,
                name=f"conv{index + 1}",
            )(x, kernel_map)
            y = self.norm(name=f"bn{index + 1}")(y, use_running_average=not train)
            gate = gate + jax.nn.sigmoid(y.feats)
        # sigmoid(0) = 0.5 on padded rows; the product with x (zero there) restores the invariant.
        return x.replace(feats=gate * x.feats)
