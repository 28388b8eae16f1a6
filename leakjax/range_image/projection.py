"""Spherical projection of a LiDAR scan to a range image, as released by RangeNet++.

Restates `do_range_projection` of lidar-bonnetal's `train/common/laserscan.py` (also used by
SalsaNext) in JAX, for one scan with a static point capacity and a point mask, so it runs under
jit and `jax.vmap` over a padded batch:

  * yaw = -atan2(y, x), pitch = asin(z / r) with r = ||(x, y, z)||;
  * u = (yaw / pi + 1) / 2 * W and v = (1 - (pitch + |fov_down|) / fov) * H with
    fov = |fov_down| + |fov_up|; the pixel is (floor, then clamped to [0, W-1] and [0, H-1]);
  * points are written in decreasing range, so the closest point wins each pixel. The released
    `np.argsort(depth)[::-1]` leaves equal ranges in an unspecified order; here the tie rule is
    explicit: among points of equal range in one pixel the lowest point index wins (the release
    with a stable sort);
  * empty pixels hold -1 in range, xyz, remission and point index;
  * the released mask is `proj_idx > 0`, so the pixel won by point 0 counts as empty (a quirk kept
    by default, see `mask_excludes_point_zero`).

Two cases the release leaves undefined get a stated value: a point at the origin (r = 0, NaN pitch
in the release) gets pitch 0 and range 0, and z / r is clipped to [-1, 1] before asin so rounding
cannot give NaN.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = [
    "DEFAULT_FOV_DOWN_DEG",
    "DEFAULT_FOV_UP_DEG",
    "DEFAULT_HEIGHT",
    "DEFAULT_WIDTH",
    "RangeProjection",
    "check_projection_geometry",
    "spherical_projection",
]

# HDL-64E as in lidar-bonnetal `config/arch/darknet53.yaml` and SalsaNext `salsanext.yml`.
DEFAULT_HEIGHT = 64
DEFAULT_WIDTH = 2048
DEFAULT_FOV_UP_DEG = 3.0
DEFAULT_FOV_DOWN_DEG = -25.0


@struct.dataclass
class RangeProjection:
    """Result of `spherical_projection` for one scan (add a leading [B] under `jax.vmap`)."""

    range: jax.Array  # float32 [H, W] metres of the winning point; -1 where empty
    xyz: jax.Array  # float32 [H, W, 3] metres of the winning point; -1 where empty
    remission: jax.Array  # float32 [H, W] of the winning point; -1 where empty
    point_index: jax.Array  # int32 [H, W] index into N of the winning point; -1 where empty
    mask: jax.Array  # bool [H, W] pixel holds a point (False for point 0's pixel, as released)
    px: jax.Array  # int32 [N] column of every point, in [0, W-1]; -1 for padded points
    py: jax.Array  # int32 [N] row of every point, in [0, H-1]; -1 for padded points
    point_range: jax.Array  # float32 [N] metres of every point (`unproj_range`); -1 if padded


def check_projection_geometry(
    height: int, width: int, fov_up_deg: float, fov_down_deg: float
) -> None:
    """Raise ValueError unless the image size and field of view fit the released formula."""
    if not all(isinstance(size, int | np.integer) and size > 0 for size in (height, width)):
        raise ValueError(f"height and width must be positive ints, got {height!r}, {width!r}")
    # The release divides by |fov_down| + |fov_up| and offsets by |fov_down|: that is the vertical
    # field of view only when it spans the horizon from below.
    if not (fov_down_deg < 0.0 <= fov_up_deg <= 90.0 and fov_down_deg >= -90.0):
        raise ValueError(
            f"fov_up_deg={fov_up_deg}, fov_down_deg={fov_down_deg}: the released projection needs "
            "-90 <= fov_down_deg < 0 <= fov_up_deg <= 90"
        )


def _pixel_of_points(xyz: jax.Array, height: int, width: int, fov_up: float, fov_down: float):
    """Pixel (px, py) int32 [N] and range float32 [N] of points xyz [N, 3] (angles in rad)."""
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    point_range = jnp.sqrt(x * x + y * y + z * z)
    fov = abs(fov_down) + abs(fov_up)
    yaw = -jnp.arctan2(y, x)
    sin_pitch = jnp.where(point_range > 0, z / jnp.where(point_range > 0, point_range, 1.0), 0.0)
    pitch = jnp.arcsin(jnp.clip(sin_pitch, -1.0, 1.0))
    u = 0.5 * (yaw / math.pi + 1.0) * width
    v = (1.0 - (pitch + abs(fov_down)) / fov) * height
    px = jnp.clip(jnp.floor(u), 0, width - 1).astype(jnp.int32)
    py = jnp.clip(jnp.floor(v), 0, height - 1).astype(jnp.int32)
    return px, py, point_range


def spherical_projection(
    points: jax.Array,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    fov_up_deg: float = DEFAULT_FOV_UP_DEG,
    fov_down_deg: float = DEFAULT_FOV_DOWN_DEG,
    point_mask: jax.Array | None = None,
    mask_excludes_point_zero: bool = True,
) -> RangeProjection:
    """Project one scan to a range image (laserscan.py `do_range_projection`).

    Args:
      points: float [N, 4] x, y, z in metres and remission; N is a static capacity. Points must
        be finite: a NaN coordinate gives an undefined pixel, as in the release.
      height, width: image size H, W in pixels (static).
      fov_up_deg, fov_down_deg: vertical field of view in degrees (static), e.g. +3 / -25.
      point_mask: optional bool [N], False for padded points: they write no pixel and get
        px = py = -1 and point_range = -1 (the padding of the released parser).
      mask_excludes_point_zero: as released (`proj_idx > 0`) the pixel won by point 0 is not in
        `mask`; False gives the plain occupancy `point_index >= 0`.

    Returns:
      RangeProjection (shapes in its field comments). Winner of a pixel: the smallest range, then
      the lowest point index.

    jit with height, width, fov_up_deg, fov_down_deg and mask_excludes_point_zero static; vmap over
    points and point_mask for a padded batch.
    """
    check_projection_geometry(height, width, fov_up_deg, fov_down_deg)
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"points must be [N, 4] (x, y, z, remission), got {points.shape}")
    num_points = points.shape[0]
    if point_mask is None:
        point_mask = jnp.ones((num_points,), bool)
    elif point_mask.shape != (num_points,):
        raise ValueError(f"point_mask must be [{num_points}] like points, got {point_mask.shape}")
    points = points.astype(jnp.float32)
    point_mask = point_mask.astype(bool)

    # Degrees to radians in the released order of operations (deg / 180 * pi).
    fov_up, fov_down = fov_up_deg / 180.0 * math.pi, fov_down_deg / 180.0 * math.pi
    px, py, point_range = _pixel_of_points(points[:, :3], height, width, fov_up, fov_down)
    num_pixels = height * width
    # Padded points scatter out of bounds, which `mode="drop"` ignores.
    flat_pixel = jnp.where(point_mask, py * width + px, num_pixels)

    # Closest range per pixel, then the lowest index among the points at that range: the point
    # the released write order (decreasing range, stable) leaves in the pixel.
    closest_range = jnp.full((num_pixels,), jnp.inf, jnp.float32)
    closest_range = closest_range.at[flat_pixel].min(point_range, mode="drop")
    at_closest = point_mask & (
        point_range == closest_range[jnp.minimum(flat_pixel, num_pixels - 1)]
    )
    point_ids = jnp.arange(num_points, dtype=jnp.int32)
    winner = jnp.full((num_pixels,), num_points, jnp.int32)
    winner = winner.at[jnp.where(at_closest, flat_pixel, num_pixels)].min(point_ids, mode="drop")
    occupied = winner < num_points
    safe_winner = jnp.where(occupied, winner, 0)

    def image(values: jax.Array) -> jax.Array:
        pixels = jnp.where(
            occupied.reshape((-1,) + (1,) * (values.ndim - 1)), values[safe_winner], -1.0
        )
        return pixels.reshape((height, width) + values.shape[1:])

    point_index = jnp.where(occupied, winner, -1).reshape(height, width)
    mask = point_index > 0 if mask_excludes_point_zero else point_index >= 0
    return RangeProjection(
        range=image(point_range),
        xyz=image(points[:, :3]),
        remission=image(points[:, 3]),
        point_index=point_index,
        mask=mask,
        px=jnp.where(point_mask, px, -1),
        py=jnp.where(point_mask, py, -1),
        point_range=jnp.where(point_mask, point_range, -1.0),
    )
