"""Render scans of the synthetic street world and write them in the SemanticKITTI layout.

`generate` writes `<out>/sequences/<NN>/velodyne/<NNNNNN>.bin`, `labels/<NNNNNN>.label`,
`poses.txt`, `calib.txt` and `times.txt` for each requested sequence, plus `<out>/synthetic.json`
recording how the data was made. Every scan draws its randomness (azimuth phase, porosity, noise,
dropout) from its own `np.random.Generator` seeded by (seed, sequence, scan index), and the world
from generators seeded by (seed, sequence, block), so the output bytes depend only on the seed and
the options, not on which scans were generated before.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from datasets.semantic_kitti.io import (
    write_calib,
    write_labels,
    write_poses,
    write_scan,
    write_times,
)
from datasets.semantic_kitti.layout import sequence_name
from datasets.synthetic.objects import RAW_ID
from datasets.synthetic.primitives import GROUND, NO_HIT, cast_rays
from datasets.synthetic.sensor import (
    SensorConfig,
    beam_elevations_rad,
    keep_mask,
    ray_directions,
    remission,
)
from datasets.synthetic.world import StreetWorld, WorldConfig

SCAN_PERIOD_S = 0.1  # the HDL-64E spins at 10 Hz
OUTLIER_RATE = 3e-4  # spurious short returns, labelled raw 1 "outlier"
_STREAM_SCAN = 0


@dataclasses.dataclass
class Scan:
    """One rendered scan in the sensor frame."""

    points: np.ndarray  # float32 [N, 4]: x, y, z in metres, remission in [0, 1]
    semantic: np.ndarray  # int32 [N] raw SemanticKITTI ids
    instance: np.ndarray  # int32 [N] instance ids, 0 for stuff
    pose: np.ndarray  # float64 [4, 4] sensor pose in the world frame


def sensor_pose(world: StreetWorld, sensor: SensorConfig, time_s: float) -> np.ndarray:
    """Homogeneous sensor pose [4, 4] in the world frame (the ground is z = 0)."""
    x, y, yaw = world.ego_pose(time_s)
    pose = np.eye(4)
    pose[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    pose[:3, 3] = (x, y, sensor.height_m)
    return pose


def render_scan(world: StreetWorld, sensor: SensorConfig, index: int, seed: int) -> Scan:
    """Ray-cast scan `index` of `world`'s sequence."""
    rng = np.random.default_rng([seed, world.sequence, _STREAM_SCAN, index])
    time_s = index * SCAN_PERIOD_S
    pose = sensor_pose(world, sensor, time_s)
    origin = pose[:3, 3]
    yaw = np.arctan2(pose[1, 0], pose[0, 0])
    scene = world.scene(origin[0], time_s, view_m=sensor.max_range_m)
    elevations = beam_elevations_rad()
    azimuth_start = yaw + rng.uniform(0, 2 * np.pi / sensor.azimuth_steps)
    directions = ray_directions(elevations, sensor.azimuth_steps, azimuth_start)
    hits = cast_rays(
        scene.primitives, origin, directions, elevations, azimuth_start, sensor.max_range_m, rng
    )

    rays = np.flatnonzero((hits.hit_index != NO_HIT) & (hits.distance_m >= sensor.min_range_m))
    hit_index = hits.hit_index[rays]
    distance = hits.distance_m[rays]
    direction = directions[rays]
    on_ground = hit_index == GROUND
    primitive = np.where(on_ground, 0, hit_index)
    prims = scene.primitives
    semantic = prims.raw_label[primitive].copy()
    instance = prims.instance[primitive].copy()
    reflectivity = prims.reflectivity[primitive].copy()
    roughness = prims.roughness_m[primitive].copy()
    jitter = prims.depth_jitter_m[primitive].copy()
    ground_xy = origin[:2] + distance[on_ground, None] * direction[on_ground, :2]
    ground_raw, ground_reflectivity, ground_roughness = world.ground_labels(
        ground_xy[:, 0], ground_xy[:, 1], scene
    )
    semantic[on_ground], instance[on_ground] = ground_raw, 0
    reflectivity[on_ground], roughness[on_ground], jitter[on_ground] = (
        ground_reflectivity,
        ground_roughness,
        0.0,
    )

    distance = distance + jitter * rng.uniform(size=distance.shape)
    distance = distance + rng.normal(scale=sensor.range_noise_m, size=distance.shape)
    keep = keep_mask(distance, sensor, rng)
    outlier = keep & (rng.uniform(size=distance.shape) < OUTLIER_RATE)
    distance[outlier] *= rng.uniform(0.1, 0.9, size=int(outlier.sum()))
    semantic[outlier], instance[outlier], roughness[outlier] = RAW_ID["outlier"], 0, 0.0
    keep &= (distance >= sensor.min_range_m) & (distance <= sensor.max_range_m)

    world_points = origin + distance[keep, None] * direction[keep]
    world_points[:, 2] += roughness[keep] * rng.standard_normal(int(keep.sum()))
    relative = world_points - origin
    cos_yaw, sin_yaw = np.cos(yaw), np.sin(yaw)
    points = np.empty((relative.shape[0], 4), dtype=np.float32)
    points[:, 0] = cos_yaw * relative[:, 0] + sin_yaw * relative[:, 1]
    points[:, 1] = -sin_yaw * relative[:, 0] + cos_yaw * relative[:, 1]
    points[:, 2] = relative[:, 2]
    points[:, 3] = remission(reflectivity[keep], hits.cos_incidence[rays][keep], sensor, rng)
    return Scan(points, semantic[keep], instance[keep], pose)


def _calibration() -> dict[str, np.ndarray]:
    """A pinhole camera calibration and Tr = identity: poses.txt holds LiDAR poses directly."""
    projection = np.array([[700.0, 0.0, 610.0, 0.0], [0.0, 700.0, 185.0, 0.0], [0, 0, 1.0, 0]])
    return {"P0": projection, "P1": projection, "P2": projection, "P3": projection,
            "Tr": np.eye(4)[:3]}  # fmt: skip


def generate(
    out_dir: str | Path,
    seed: int = 0,
    sequences: tuple[str | int, ...] | list[str | int] = ("00",),
    scans_per_sequence: int = 20,
    *,
    azimuth_steps: int | None = None,
    frame_step: int = 1,
    sensor: SensorConfig | None = None,
    world: WorldConfig | None = None,
) -> Path:
    """Write `scans_per_sequence` scans for each of `sequences` under `out_dir`; returns out_dir.

    `azimuth_steps` overrides `sensor.azimuth_steps` (2048 by default; fewer gives smaller, faster
    scans for tests and smoke runs). `frame_step` > 1 keeps every frame_step-th sensor frame
    (0.1 s apart), so a few scans cover more of the street. Poses are relative to each sequence's
    first scan, as in KITTI.
    """
    if scans_per_sequence < 1:
        raise ValueError(f"scans_per_sequence must be >= 1, got {scans_per_sequence}")
    if frame_step < 1:
        raise ValueError(f"frame_step must be >= 1, got {frame_step}")
    sensor = sensor or SensorConfig()
    if azimuth_steps is not None:
        sensor = dataclasses.replace(sensor, azimuth_steps=azimuth_steps)
    world_config = world or WorldConfig()
    out_dir = Path(out_dir)
    names = [sequence_name(sequence) for sequence in sequences]
    for name in names:
        street = StreetWorld(seed, int(name), world_config)
        directory = out_dir / "sequences" / name
        poses = []
        for index in range(scans_per_sequence):
            scan = render_scan(street, sensor, index * frame_step, seed)
            write_scan(directory / "velodyne" / f"{index:06d}.bin", scan.points)
            write_labels(directory / "labels" / f"{index:06d}.label", scan.semantic, scan.instance)
            poses.append(scan.pose)
        first_inverse = np.linalg.inv(poses[0])
        write_poses(directory / "poses.txt", np.stack([first_inverse @ pose for pose in poses]))
        write_calib(directory / "calib.txt", _calibration())
        write_times(
            directory / "times.txt", np.arange(scans_per_sequence) * frame_step * SCAN_PERIOD_S
        )
    record = {
        "generator": "datasets.synthetic",
        "seed": seed,
        "sequences": names,
        "scans_per_sequence": scans_per_sequence,
        "frame_step": frame_step,
        "sensor": dataclasses.asdict(sensor),
        "world": dataclasses.asdict(world_config),
    }
    (out_dir / "synthetic.json").write_text(json.dumps(record, indent=2) + "\n")
    return out_dir
