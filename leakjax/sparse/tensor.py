"""The sparse tensor pytree and the integer coordinate keys that every kernel map searches.

Layout: one sample per row of a leading batch axis, padded to a static capacity N with a bool mask,
so per-sample ops can be `vmap`ped and a batch axis sharded over devices keeps gathers local.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

# Padding rows get this key so that they sort after every real voxel.
SENTINEL_KEY = np.iinfo(np.int32).max


@struct.dataclass
class SparseTensor:
    """Active voxels of a batch at one resolution.

    coords: int32 [B, N, 3] voxel coordinates at this level, 0 <= c < spatial_shape.
    feats:  [B, N, C] features; rows where mask is False are zero.
    mask:   bool [B, N] which rows are active voxels.
    spatial_shape: grid extent at this level (static).
    stride: cell size at this level in units of the input grid's cells (static).
    `x.replace(feats=new_feats)` keeps the coordinate set.
    """

    coords: jax.Array
    feats: jax.Array
    mask: jax.Array
    spatial_shape: tuple[int, int, int] = struct.field(pytree_node=False)
    stride: tuple[int, int, int] = struct.field(pytree_node=False, default=(1, 1, 1))

    @property
    def capacity(self) -> int:
        return self.coords.shape[-2]

    @property
    def num_channels(self) -> int:
        return self.feats.shape[-1]


def check_key_range(spatial_shape: tuple[int, ...], what: str = "spatial_shape") -> None:
    """Raise ValueError if a grid is too large for int32 coordinate keys (sentinel reserved)."""
    if len(spatial_shape) != 3 or min(spatial_shape) < 1:
        raise ValueError(f"{what} must be three positive ints, got {spatial_shape}")
    if math.prod(int(s) for s in spatial_shape) >= SENTINEL_KEY:
        raise ValueError(
            f"{what}={spatial_shape} has >= 2**31 - 1 cells: int32 coordinate keys would overflow"
        )


def encode_keys(coords: jax.Array, valid: jax.Array, spatial_shape: tuple[int, int, int]):
    """Row-major int32 key of each voxel; SENTINEL_KEY where `valid` is False.

    coords int32 [..., 3] (any values where invalid), valid bool [...] -> int32 [...].
    Keys preserve the lexicographic (x, y, z) order, so sorted keys are sorted coordinates.
    """
    _, size_y, size_z = spatial_shape
    key = (coords[..., 0] * size_y + coords[..., 1]) * size_z + coords[..., 2]
    return jnp.where(valid, key, SENTINEL_KEY).astype(jnp.int32)


def decode_keys(keys: jax.Array, spatial_shape: tuple[int, int, int]) -> jax.Array:
    """Inverse of `encode_keys` for real keys: int32 [...] -> int32 [..., 3]."""
    _, size_y, size_z = spatial_shape
    z = keys % size_z
    y = (keys // size_z) % size_y
    x = keys // (size_z * size_y)
    return jnp.stack([x, y, z], axis=-1).astype(jnp.int32)


def in_bounds(coords: jax.Array, spatial_shape: tuple[int, int, int]) -> jax.Array:
    """bool [...]: 0 <= coords[..., a] < spatial_shape[a] on every axis."""
    shape = jnp.asarray(spatial_shape, jnp.int32)
    return jnp.all((coords >= 0) & (coords < shape), axis=-1)
