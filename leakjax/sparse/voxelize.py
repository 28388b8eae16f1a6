"""Points -> voxels on Cartesian or cylindrical grids, reductions to voxels, voxel -> point gather.

Voxelisation is a fixed-size sort/unique per sample: point keys are sorted once, segment boundaries
give each point its voxel row, and voxels beyond the static capacity are reported by `overflow`
(their points get -1) instead of being cut silently.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from leakjax.sharding import per_device_samples
from leakjax.sparse.tensor import SENTINEL_KEY, check_key_range, decode_keys, encode_keys

_SYSTEMS = ("cartesian", "cylindrical")
_OUT_OF_RANGE = ("clip", "drop")
_REDUCTIONS = ("mean", "max", "sum")


@dataclasses.dataclass(frozen=True)
class VoxelGrid:
    """A static voxel grid.

    lower, upper: metres (cartesian x, y, z) or (rho m, phi rad, z m) (cylindrical).
    shape: number of cells per axis.
    out_of_range: "clip" points into the border cells (Cylinder3D as released) or "drop" them.
    """

    lower: tuple[float, float, float]
    upper: tuple[float, float, float]
    shape: tuple[int, int, int]
    system: str = "cartesian"
    out_of_range: str = "clip"

    def __post_init__(self):
        if self.system not in _SYSTEMS:
            raise ValueError(f"VoxelGrid.system must be one of {_SYSTEMS}, got {self.system!r}")
        if self.out_of_range not in _OUT_OF_RANGE:
            raise ValueError(
                f"VoxelGrid.out_of_range must be one of {_OUT_OF_RANGE}, got {self.out_of_range!r}"
            )
        if any(u <= lo for lo, u in zip(self.lower, self.upper)) or len(self.lower) != 3:
            raise ValueError(
                f"VoxelGrid needs lower < upper on 3 axes, got {self.lower}, {self.upper}"
            )
        check_key_range(self.shape, "VoxelGrid.shape")

    @property
    def cell_size(self) -> tuple[float, float, float]:
        return tuple((u - lo) / s for lo, u, s in zip(self.lower, self.upper, self.shape))


@struct.dataclass
class Voxelization:
    """Result of `voxelize` (see field comments for shapes)."""

    coords: jax.Array  # int32 [B, N, 3] unique active voxels, sorted, padded with zeros
    mask: jax.Array  # bool [B, N]
    point_to_voxel: jax.Array  # int32 [B, P] row in N; -1 for masked, dropped or overflowed points
    grid_points: jax.Array  # float32 [B, P, 3] points in the grid's system (x,y,z or rho,phi,z)
    num_voxels: jax.Array  # int32 [B] active voxels before capping at N
    overflow: jax.Array  # bool [B] num_voxels > N: the caller must act (raise / bigger bucket)


def to_grid_system(points: jax.Array, system: str) -> jax.Array:
    """Cartesian metres [..., 3] -> the grid's system: (x, y, z) or (rho m, phi rad, z m)."""
    if system == "cartesian":
        return points
    rho = jnp.sqrt(points[..., 0] ** 2 + points[..., 1] ** 2)
    phi = jnp.arctan2(points[..., 1], points[..., 0])
    return jnp.stack([rho, phi, points[..., 2]], axis=-1)


def _voxelize_one(points, point_mask, grid: VoxelGrid, capacity: int):
    grid_points = to_grid_system(points.astype(jnp.float32), grid.system)
    lower = jnp.asarray(grid.lower, jnp.float32)
    cell = jnp.asarray(grid.cell_size, jnp.float32)
    shape = jnp.asarray(grid.shape, jnp.int32)
    cells = jnp.floor((grid_points - lower) / cell).astype(jnp.int32)
    inside = jnp.all((cells >= 0) & (cells < shape), axis=-1)
    cells = jnp.clip(cells, 0, shape - 1)
    valid = point_mask & (inside if grid.out_of_range == "drop" else True)
    keys = encode_keys(cells, valid, grid.shape)
    order = jnp.argsort(keys, stable=True)
    sorted_keys = keys[order]
    is_new = (sorted_keys != jnp.roll(sorted_keys, 1)).at[0].set(True) & (
        sorted_keys != SENTINEL_KEY
    )
    voxel_of_sorted = jnp.cumsum(is_new) - 1
    num_voxels = jnp.sum(is_new).astype(jnp.int32)
    kept = (sorted_keys != SENTINEL_KEY) & (voxel_of_sorted < capacity)
    voxel_keys = (
        jnp.full((capacity,), SENTINEL_KEY, jnp.int32)
        .at[jnp.where(kept, voxel_of_sorted, capacity)]
        .min(sorted_keys, mode="drop")
    )
    voxel_mask = jnp.arange(capacity) < num_voxels
    coords = jnp.where(voxel_mask[:, None], decode_keys(voxel_keys, grid.shape), 0)
    point_to_voxel = (
        jnp.full(keys.shape, -1, jnp.int32)
        .at[order]
        .set(jnp.where(kept, voxel_of_sorted, -1).astype(jnp.int32))
    )
    return Voxelization(
        coords=coords,
        mask=voxel_mask,
        point_to_voxel=point_to_voxel,
        grid_points=grid_points,
        num_voxels=num_voxels,
        overflow=num_voxels > capacity,
    )


def voxelize(points: jax.Array, point_mask: jax.Array, grid: VoxelGrid, capacity: int):
    """Voxelise a batch of points.

    points float32 [B, P, 3] Cartesian metres; point_mask bool [B, P]; capacity N (static).
    Returns a `Voxelization` whose voxels are sorted by (x, y, z) and padded to N rows.
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"voxelize: points must be [B, P, 3], got {points.shape}")
    if point_mask.shape != points.shape[:2]:
        raise ValueError(
            f"voxelize: point_mask {point_mask.shape} != points[:2] {points.shape[:2]}"
        )
    if capacity < 1:
        raise ValueError(f"voxelize: capacity must be >= 1, got {capacity}")
    one = jax.vmap(lambda p, m: _voxelize_one(p, m, grid, capacity))
    return per_device_samples(lambda b, _: one(*b), (points, point_mask))


def voxel_reduce(values, point_to_voxel, capacity: int, reduce: str = "mean") -> jax.Array:
    """Reduce point values into voxels: [B, P, C] -> [B, N, C]; empty voxels give 0.

    point_to_voxel int32 [B, P] (-1 = point not in any voxel); reduce in {"mean", "max", "sum"}.
    """
    if reduce not in _REDUCTIONS:
        raise ValueError(f"voxel_reduce: reduce must be one of {_REDUCTIONS}, got {reduce!r}")

    def one(vals, p2v):
        seg = jnp.where(p2v >= 0, p2v, capacity)
        count = jax.ops.segment_sum(jnp.ones_like(seg), seg, capacity + 1)[:capacity]
        if reduce == "max":
            out = jax.ops.segment_max(vals, seg, capacity + 1)[:capacity]
            return jnp.where(count[:, None] > 0, out, 0).astype(vals.dtype)
        total = jax.ops.segment_sum(vals, seg, capacity + 1)[:capacity]
        if reduce == "sum":
            return total
        return (total / jnp.maximum(count, 1)[:, None].astype(vals.dtype)).astype(vals.dtype)

    return per_device_samples(lambda b, _: jax.vmap(one)(*b), (values, point_to_voxel))


def voxel_majority_label(
    labels, point_to_voxel, capacity: int, num_classes: int, ignore_index: int = 0
) -> jax.Array:
    """Most frequent non-ignored label per voxel: int32 [B, P] -> int32 [B, N].

    Ties go to the smallest label id; voxels without a non-ignored label get `ignore_index`.
    """

    def one(lab, p2v):
        counted = (p2v >= 0) & (lab != ignore_index) & (lab >= 0) & (lab < num_classes)
        seg = jnp.where(counted, p2v * num_classes + lab, capacity * num_classes)
        hist = jax.ops.segment_sum(jnp.ones_like(seg), seg, capacity * num_classes + 1)[
            :-1
        ].reshape(capacity, num_classes)
        best = jnp.argmax(hist, axis=-1).astype(jnp.int32)
        return jnp.where(hist.max(axis=-1) > 0, best, ignore_index).astype(jnp.int32)

    return per_device_samples(lambda b, _: jax.vmap(one)(*b), (labels, point_to_voxel))


def gather_to_points(voxel_values, point_to_voxel) -> jax.Array:
    """Voxel values back to points: [B, N, C] -> [B, P, C]; zeros where point_to_voxel == -1."""

    def one(vals, p2v):
        out = jnp.take(vals, jnp.maximum(p2v, 0), axis=0)
        return jnp.where((p2v >= 0)[:, None], out, 0)

    return per_device_samples(lambda b, _: jax.vmap(one)(*b), (voxel_values, point_to_voxel))


__all__ = [
    "VoxelGrid",
    "Voxelization",
    "voxelize",
    "voxel_reduce",
    "voxel_majority_label",
    "gather_to_points",
    "to_grid_system",
]
