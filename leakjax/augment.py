"""Training augmentation of LiDAR scans as in the released Cylinder3D (host-side numpy).

The released data loader (xinge008/Cylinder3D, `cylinder_dataset`) applies, in this order:
  1. rotation about z by an angle uniform in [-45, +45] degrees,
  2. a flip chosen uniformly among {none, x, y, x and y} (x -> -x and/or y -> -y),
  3. a scaling of x and y (not z) by a factor uniform in [0.95, 1.05],
  4. a translation of x, y, z by independent N(0, 0.1 m) offsets (one offset per scan).
Remission is untouched. Randomness comes only from the `np.random.Generator` passed in (one per
sample, seeded by (seed, epoch, index) by the caller), so the same generator state gives the same
scan. Sampling the parameters and applying them are separate so tests and tools can apply known
parameters.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run and their ranges (defaults as released).

    Attributes:
      max_rotation_rad: rotation about z uniform in [-max, +max] radians; 0 disables it.
      flip: random flip of x and/or y.
      scale_range: (low, high) factor for x and y; (1, 1) disables it.
      translation_std_m: standard deviation of the per-axis translation in metres; 0 disables it.
    """

    max_rotation_rad: float = np.pi / 4
    flip: bool = True
    scale_range: tuple[float, float] = (0.95, 1.05)
    translation_std_m: float = 0.1


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """One draw of the augmentation parameters for one scan."""

    rotation_rad: float
    flip_x: bool
    flip_y: bool
    scale: float
    translation_m: tuple[float, float, float]


def sample_augment_params(
    rng: np.random.Generator, config: AugmentConfig = AugmentConfig()
) -> AugmentParams:
    """Draws augmentation parameters; every draw is made even when a step is disabled so the
    generator advances identically whatever the config (reproducible streams across ablations)."""
    low, high = config.scale_range
    if not 0 < low <= high:
        raise ValueError(f"AugmentConfig.scale_range must satisfy 0 < low <= high, got {low, high}")
    if config.translation_std_m < 0 or config.max_rotation_rad < 0:
        raise ValueError("AugmentConfig: max_rotation_rad and translation_std_m must be >= 0")
    rotation = rng.uniform(-1.0, 1.0) * config.max_rotation_rad
    flip_type = int(rng.integers(4))  # 0 none, 1 x, 2 y, 3 both (as released)
    scale = rng.uniform(low, high)
    translation = rng.normal(0.0, 1.0, size=3) * config.translation_std_m
    if not config.flip:
        flip_type = 0
    return AugmentParams(
        rotation_rad=float(rotation),
        flip_x=flip_type in (1, 3),
        flip_y=flip_type in (2, 3),
        scale=float(scale),
        translation_m=tuple(float(t) for t in translation),
    )


def apply_augment(points: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Applies rotation, flip, xy-scaling and translation to one scan.

    Args:
      points: float [P, 4]: x, y, z in metres, remission.
      params: the transformation.

    Returns:
      float32 [P, 4], a new array (the input is not modified).
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"apply_augment: points must have shape [P, 4], got {points.shape}")
    out = points.astype(np.float32, copy=True)
    cos, sin = np.cos(params.rotation_rad), np.sin(params.rotation_rad)
    # Counter-clockwise rotation of (x, y) by rotation_rad: the released row-vector product
    # xy @ [[c, s], [-s, c]].
    rotation = np.array([[cos, sin], [-sin, cos]], dtype=np.float64)
    xy = points[:, :2].astype(np.float64) @ rotation
    if params.flip_x:
        xy[:, 0] = -xy[:, 0]
    if params.flip_y:
        xy[:, 1] = -xy[:, 1]
    xy *= params.scale
    xyz = np.concatenate([xy, points[:, 2:3].astype(np.float64)], axis=1)
    xyz += np.asarray(params.translation_m, dtype=np.float64)
    out[:, :3] = xyz.astype(np.float32)
    return out


def augment_points(
    points: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()
) -> np.ndarray:
    """Samples parameters from `rng` and augments one scan: [P, 4] -> float32 [P, 4]."""
    return apply_augment(points, sample_augment_params(rng, config))
