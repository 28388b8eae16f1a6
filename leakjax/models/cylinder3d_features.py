"""Cylinder3D's input side and label plumbing: the cylindrical grid, the 9-d point features and
the released voxel label vote.

Kept apart from the network so the numpy-reference tests can exercise them without compiling
the U-Net.
"""

import jax
import jax.numpy as jnp

from leakjax import sparse


def cylinder_grid(
    shape: tuple[int, int, int],
    lower: tuple[float, float, float],
    upper: tuple[float, float, float],
    released_intervals: bool = True,
) -> sparse.VoxelGrid:
    """The cylindrical VoxelGrid over (rho m, phi rad, z m), clipping out-of-range points.

    With `released_intervals` the cell size is (upper - lower) / (shape - 1) as in the released
    loader; extending the upper bound by one such cell gives a grid whose clip-into-border-cell
    behaviour equals the released clip(lower, upper) followed by floor((p - lower) / size).
    """
    if any(n < 2 for n in shape):
        raise ValueError(f"cylinder_grid: every axis needs >= 2 cells, got shape {shape}")
    if any(hi <= lo for lo, hi in zip(lower, upper)):
        raise ValueError(f"cylinder_grid: need lower < upper, got {lower} and {upper}")
    if released_intervals:
        upper = tuple(lo + (hi - lo) * n / (n - 1) for lo, hi, n in zip(lower, upper, shape))
    return sparse.VoxelGrid(
        lower=tuple(float(v) for v in lower),
        upper=tuple(float(v) for v in upper),
        shape=tuple(int(n) for n in shape),
        system="cylindrical",
        out_of_range="clip",
    )


def cylindrical_point_features(
    points: jax.Array, voxels: sparse.Voxelization, grid: sparse.VoxelGrid
) -> jax.Array:
    """The released 9-d point features.

    Args:
      points: float32 [B, P, 4]: x, y, z (m), remission.
      voxels: the voxelisation of `points` on `grid`.
      grid: the cylindrical grid.

    Returns:
      float32 [B, P, 9]: (rho, phi, z) minus the centre of the point's cell, rho (m), phi (rad),
      z (m), x (m), y (m), remission. The polar coordinates are not clipped (as released). Rows of
      points without a voxel (masked or overflowed) are zero.
    """
    polar = voxels.grid_points  # [B, P, 3] rho, phi, z
    has_voxel = voxels.point_to_voxel >= 0
    cells = jnp.take_along_axis(
        voxels.coords, jnp.maximum(voxels.point_to_voxel, 0)[..., None], axis=1
    )  # [B, P, 3]
    # The same float32 cell size as the voxeliser, so a point's centre is its own cell's centre.
    cell = jnp.asarray(grid.cell_size, jnp.float32)
    centres = (cells.astype(jnp.float32) + 0.5) * cell + jnp.asarray(grid.lower, jnp.float32)
    feats = jnp.concatenate([polar - centres, polar, points[..., :2], points[..., 3:4]], axis=-1)
    return jnp.where(has_voxel[..., None], feats, 0.0)


def majority_label_all_votes(
    labels: jax.Array, point_to_voxel: jax.Array, capacity: int, num_classes: int
) -> jax.Array:
    """Per-voxel label voted by ALL its points, class 0 included (the released nb_process_label).

    labels int32 [B, P], point_to_voxel int32 [B, P] (-1 = none) -> int32 [B, N]; ties go to the
    smallest class id (numpy argmax); empty voxels get 0.
    """
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # [B, P, K]
    counts = sparse.voxel_reduce(one_hot, point_to_voxel, capacity, reduce="sum")  # [B, N, K]
    return jnp.argmax(counts, axis=-1).astype(jnp.int32)
