"""Sparse voxel convolutions in JAX: sparse tensors, voxelisation, kernel maps, conv ops, layers.

Per-sample padded layout ([B, N, ...] with a static capacity N and a bool mask) so everything runs
under jit / vmap / grad and with the batch sharded over a `data` mesh. Typical use:

    vox = voxelize(points, point_mask, grid, capacity)          # check vox.overflow
    x = SparseTensor(vox.coords, voxel_reduce(point_feats, vox.point_to_voxel, N), vox.mask,
                     grid.shape)
    kmap = submanifold_map(x, (3, 3, 3), pair_kernels=[(3, 3, 3), (1, 3, 3), (3, 1, 3)])
    x = SubMConv3d(32, (1, 3, 3))(x, kmap)
    down, dmap, overflow = downsample_map(x, (3, 3, 3), (2, 2, 1), out_capacity=N // 2)
    y = SparseConv3d(64, stride=(2, 2, 1))(x, dmap, down)
    x_up = SparseInverseConv3d(32)(y, dmap, x)                  # exactly x's set again
"""

from leakjax.layers.norm import MaskedBatchNorm, masked_batch_norm
from leakjax.layers.rows import RowDense, row_gram, row_matmul
from leakjax.sparse.conv import gather_conv, pair_conv, sparse_conv, submanifold_conv
from leakjax.sparse.kernel_map import (
    DOWNSAMPLE_MODES,
    KernelMap,
    downsample_map,
    kernel_offsets,
    sub_kernel_indices,
    submanifold_map,
)
from leakjax.sparse.layers import SparseBatchNorm, SparseConv3d, SparseInverseConv3d, SubMConv3d
from leakjax.sparse.pairs import PairList, build_pair_list
from leakjax.sparse.search import find_rows
from leakjax.sparse.tensor import SparseTensor
from leakjax.sparse.voxelize import (
    VoxelGrid,
    Voxelization,
    gather_to_points,
    to_grid_system,
    voxel_majority_label,
    voxel_reduce,
    voxelize,
)

__all__ = [
    "DOWNSAMPLE_MODES",
    "KernelMap",
    "MaskedBatchNorm",
    "PairList",
    "RowDense",
    "SparseBatchNorm",
    "SparseConv3d",
    "SparseInverseConv3d",
    "SparseTensor",
    "SubMConv3d",
    "VoxelGrid",
    "Voxelization",
    "build_pair_list",
    "downsample_map",
    "find_rows",
    "gather_conv",
    "gather_to_points",
    "kernel_offsets",
    "masked_batch_norm",
    "pair_conv",
    "row_gram",
    "row_matmul",
    "sparse_conv",
    "sub_kernel_indices",
    "submanifold_conv",
    "submanifold_map",
    "to_grid_system",
    "voxel_majority_label",
    "voxel_reduce",
    "voxelize",
]
