"""The simulated spinning LiDAR: KITTI's Velodyne HDL-64E geometry and its measurement model.

64 beams from +2.0 to -24.9 degrees elevation in the HDL-64E's two blocks (upper 32 lasers about
1/3 degree apart down to -8.33 degrees, lower 32 about 1/2 degree apart), mounted 1.73 m above the
ground, `azimuth_steps` firings per revolution, returns up to 80 m. Range noise, random dropout
that grows with range, and a remission in [0, 1] from the surface reflectivity and the incidence
angle (Lambertian-like falloff) complete the measurement.
"""

import dataclasses

import numpy as np

UPPER_BLOCK_DEG = (2.0, -8.33)
LOWER_BLOCK_DEG = (-8.83, -24.9)
BEAMS_PER_BLOCK = 32


@dataclasses.dataclass(frozen=True)
class SensorConfig:
    """Sensor geometry and noise. Distances in metres, angles in degrees."""

    azimuth_steps: int = 2048
    height_m: float = 1.73
    max_range_m: float = 80.0
    min_range_m: float = 2.5  # closer returns hit the recording car itself and are removed
    range_noise_m: float = 0.015
    dropout: float = 0.02  # probability that a return is lost at short range
    far_dropout: float = 0.12  # extra loss probability at max range (grows quadratically)
    remission_noise: float = 0.03
    remission_cosine_weight: float = 0.6  # 0: no incidence dependence, 1: purely Lambertian

    def __post_init__(self):
        if self.azimuth_steps < 8:
            raise ValueError(f"azimuth_steps must be >= 8, got {self.azimuth_steps}")
        if not 0 < self.min_range_m < self.max_range_m:
            raise ValueError(
                f"need 0 < min_range_m < max_range_m, got {self.min_range_m}, {self.max_range_m}"
            )


def beam_elevations_rad() -> np.ndarray:
    """Elevation of the 64 beams in radians, ascending (beam 0 is the lowest): float64 [64]."""
    upper = np.linspace(*UPPER_BLOCK_DEG, BEAMS_PER_BLOCK)
    lower = np.linspace(*LOWER_BLOCK_DEG, BEAMS_PER_BLOCK)
    return np.deg2rad(np.sort(np.concatenate([upper, lower])))


def ray_directions(
    elevations_rad: np.ndarray, azimuth_steps: int, azimuth_start_rad: float
) -> np.ndarray:
    """Unit ray directions in the sensor frame, beam-major: float64 [B * A, 3].

    Ray (b, c) has elevation `elevations_rad[b]` and azimuth `azimuth_start_rad + (c + 0.5) * step`.
    """
    azimuths = azimuth_start_rad + (np.arange(azimuth_steps) + 0.5) * (2 * np.pi / azimuth_steps)
    cos_elevation = np.cos(elevations_rad)[:, None]
    directions = np.stack(
        [
            cos_elevation * np.cos(azimuths)[None, :],
            cos_elevation * np.sin(azimuths)[None, :],
            np.broadcast_to(np.sin(elevations_rad)[:, None], (elevations_rad.size, azimuth_steps)),
        ],
        axis=-1,
    )
    return directions.reshape(-1, 3)


def keep_mask(ranges_m: np.ndarray, config: SensorConfig, rng: np.random.Generator) -> np.ndarray:
    """Which returns survive dropout: bool [N] for ranges [N] in metres."""
    loss = config.dropout + config.far_dropout * (ranges_m / config.max_range_m) ** 2
    return rng.uniform(size=ranges_m.shape) >= loss


def remission(
    reflectivity: np.ndarray,
    cos_incidence: np.ndarray,
    config: SensorConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Remission in [0, 1], float32 [N], from reflectivity [N] and |cos incidence| [N]."""
    weight = config.remission_cosine_weight
    value = reflectivity * ((1 - weight) + weight * np.abs(cos_incidence))
    value = value + rng.normal(scale=config.remission_noise, size=value.shape)
    return np.clip(value, 0.0, 1.0).astype(np.float32)
