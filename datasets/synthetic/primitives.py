"""Scene primitives of the synthetic world and the vectorised ray caster that intersects them.

The world is a flat ground plane (z = 0) plus boxes (yawed about z), vertical cylinders and
axis-aligned ellipsoids, stored as a struct of arrays. `cast_rays` finds the nearest hit of every
LiDAR ray: each primitive is tested only against the rays of the azimuth columns and beams its
bounding volume covers as seen from the sensor, so the work grows with the points a primitive
receives rather than with rays x primitives.
"""

import dataclasses

import numpy as np

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
GROUND = -1  # hit index of the ground plane
NO_HIT = -2

_FIELDS = (
    "kind",  # int8 [M]: BOX, CYLINDER or ELLIPSOID
    "center",  # [M, 3] metres, world frame; cylinders: centre of the axis
    "half_size",  # [M, 3] box half extents; cylinder (radius, radius, half height); ellipsoid radii
    "yaw",  # [M] radians, boxes only
    "raw_label",  # int32 [M] SemanticKITTI raw id
    "instance",  # int32 [M] instance id, 0 for stuff
    "reflectivity",  # [M] in [0, 1]
    "porosity",  # [M] probability that a ray passes through (foliage, fences, glass)
    "depth_jitter_m",  # [M] uniform extra depth of a hit: volumetric look of foliage
    "roughness_m",  # [M] std of the height noise of a hit: bumpy terrain
    "velocity_x",  # [M] m/s along the street; primitives of one object share it
    "anchor_x",  # [M] the object's reference x at t = 0, shared by its primitives
    "wrap_center_x",  # [M] moving objects cycle within +-wrap_half_m of this x
)


@dataclasses.dataclass
class Primitives:
    """Struct of arrays describing M primitives (see `_FIELDS` for shapes and units)."""

    kind: np.ndarray
    center: np.ndarray
    half_size: np.ndarray
    yaw: np.ndarray
    raw_label: np.ndarray
    instance: np.ndarray
    reflectivity: np.ndarray
    porosity: np.ndarray
    depth_jitter_m: np.ndarray
    roughness_m: np.ndarray
    velocity_x: np.ndarray
    anchor_x: np.ndarray
    wrap_center_x: np.ndarray

    def __len__(self) -> int:
        return self.kind.shape[0]

    def select(self, index: np.ndarray) -> "Primitives":
        return Primitives(**{name: getattr(self, name)[index] for name in _FIELDS})

    def at_time(self, time_s: float, wrap_half_m: float) -> "Primitives":
        """Primitives with moving objects advanced to `time_s` (cycling within their window)."""
        moving = self.velocity_x != 0
        if not moving.any():
            return self
        start = self.wrap_center_x - wrap_half_m
        new_anchor = start + np.mod(
            self.anchor_x + self.velocity_x * time_s - start, 2 * wrap_half_m
        )
        center = self.center.copy()
        center[:, 0] += np.where(moving, new_anchor - self.anchor_x, 0.0)
        return dataclasses.replace(self, center=center)


def concatenate(parts: list[Primitives]) -> Primitives:
    return Primitives(
        **{name: np.concatenate([getattr(p, name) for p in parts]) for name in _FIELDS}
    )


class PrimitiveBuilder:
    """Collects primitives one at a time (world generation), then packs them into arrays."""

    def __init__(self):
        self._rows: list[tuple] = []

    def add(
        self,
        kind: int,
        center,
        half_size,
        raw_label: int,
        reflectivity: float,
        *,
        yaw: float = 0.0,
        instance: int = 0,
        porosity: float = 0.0,
        depth_jitter_m: float = 0.0,
        roughness_m: float = 0.0,
        motion: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> None:
        """Add one primitive; `motion` is (velocity_x m/s, anchor_x m, wrap_center_x m)."""
        self._rows.append(
            (kind, tuple(center), tuple(half_size), yaw, raw_label, instance, reflectivity)
            + (porosity, depth_jitter_m, roughness_m)
            + tuple(motion)
        )

    def box(self, center, half_size, raw_label, reflectivity, **kwargs) -> None:
        self.add(BOX, center, half_size, raw_label, reflectivity, **kwargs)

    def cylinder(self, x, y, z_bottom, z_top, radius, raw_label, reflectivity, **kwargs) -> None:
        center = (x, y, 0.5 * (z_bottom + z_top))
        half_size = (radius, radius, 0.5 * (z_top - z_bottom))
        self.add(CYLINDER, center, half_size, raw_label, reflectivity, **kwargs)

    def ellipsoid(self, center, radii, raw_label, reflectivity, **kwargs) -> None:
        self.add(ELLIPSOID, center, radii, raw_label, reflectivity, **kwargs)

    def build(self) -> Primitives:
        rows = self._rows
        column = lambda i, dtype: np.array([row[i] for row in rows], dtype=dtype)
        count = len(rows)
        return Primitives(
            kind=column(0, np.int8),
            center=np.array([row[1] for row in rows], dtype=np.float64).reshape(count, 3),
            half_size=np.array([row[2] for row in rows], dtype=np.float64).reshape(count, 3),
            yaw=column(3, np.float64),
            raw_label=column(4, np.int32),
            instance=column(5, np.int32),
            reflectivity=column(6, np.float64),
            porosity=column(7, np.float64),
            depth_jitter_m=column(8, np.float64),
            roughness_m=column(9, np.float64),
            velocity_x=column(10, np.float64),
            anchor_x=column(11, np.float64),
            wrap_center_x=column(12, np.float64),
        )


@dataclasses.dataclass
class RayHits:
    """Nearest hit per ray: distance [R] (inf: none), hit index [R] (GROUND, NO_HIT or primitive),
    and |cos| of the incidence angle [R]."""

    distance_m: np.ndarray
    hit_index: np.ndarray
    cos_incidence: np.ndarray


def cast_rays(
    primitives: Primitives,
    origin: np.ndarray,
    directions: np.ndarray,
    elevations_rad: np.ndarray,
    azimuth_start_rad: float,
    max_range_m: float,
    rng: np.random.Generator,
) -> RayHits:
    """Nearest intersection of rays from `origin` [3] with the ground plane and the primitives.

    `directions` [B * A, 3] are unit world-frame directions, beam-major, beams ascending in
    elevation (`elevations_rad` [B]), column c at world azimuth azimuth_start + (c + 0.5) * 2pi / A.
    Porous primitives let each ray through with their porosity (drawn from `rng`).
    """
    num_beams = elevations_rad.shape[0]
    num_columns = directions.shape[0] // num_beams
    best = np.full(directions.shape[0], np.inf)
    down = directions[:, 2] < 0
    best[down] = -origin[2] / directions[down, 2]  # ground plane z = 0
    best[best > max_range_m] = np.inf

    ray_parts, prim_parts, t_parts = [], [], []
    for kind, intersect in ((BOX, _intersect_boxes), (CYLINDER, _intersect_cylinders),
                            (ELLIPSOID, _intersect_ellipsoids)):  # fmt: skip
        indices = np.flatnonzero(primitives.kind == kind)
        if indices.size == 0:
            continue
        subset = primitives.select(indices)
        pair_prim, pair_ray = _candidate_pairs(
            subset, origin, elevations_rad, num_columns, azimuth_start_rad, max_range_m
        )
        if pair_ray.size == 0:
            continue
        t = intersect(subset, origin, directions, pair_prim, pair_ray)
        porosity = subset.porosity[pair_prim]
        porous = np.flatnonzero(porosity > 0)
        passed = rng.uniform(size=porous.size) < porosity[porous]
        t[porous[passed]] = np.inf
        hit = np.isfinite(t)
        ray_parts.append(pair_ray[hit])
        prim_parts.append(indices[pair_prim[hit]])
        t_parts.append(t[hit])

    hit_index = np.where(np.isfinite(best), GROUND, NO_HIT)
    if ray_parts:
        pair_ray = np.concatenate(ray_parts)
        pair_prim = np.concatenate(prim_parts)
        pair_t = np.concatenate(t_parts)
        np.minimum.at(best, pair_ray, pair_t)
        winners = pair_t == best[pair_ray]
        hit_index[pair_ray[winners]] = pair_prim[winners]
    best[best > max_range_m] = np.inf
    hit_index[~np.isfinite(best)] = NO_HIT
    cos_incidence = _cos_incidence(primitives, origin, directions, best, hit_index)
    return RayHits(distance_m=best, hit_index=hit_index, cos_incidence=cos_incidence)


def _candidate_pairs(prims, origin, elevations_rad, num_columns, azimuth_start_rad, max_range_m):
    """(primitive, ray) pairs whose ray lies in the primitive's azimuth and elevation span."""
    relative = prims.center[:, :2] - origin[:2]
    distance = np.hypot(relative[:, 0], relative[:, 1])
    center_azimuth = np.arctan2(relative[:, 1], relative[:, 0])
    is_box = prims.kind == BOX
    # boxes: exact angular span of the 4 footprint corners seen from outside the footprint
    cos_yaw, sin_yaw = np.cos(prims.yaw), np.sin(prims.yaw)
    local_x = cos_yaw * -relative[:, 0] + sin_yaw * -relative[:, 1]
    local_y = -sin_yaw * -relative[:, 0] + cos_yaw * -relative[:, 1]
    hx, hy = prims.half_size[:, 0], prims.half_size[:, 1]
    signs = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=np.float64)
    corner_x = (
        relative[:, None, 0]
        + cos_yaw[:, None] * signs[:, 0] * hx[:, None]
        - (sin_yaw[:, None] * signs[:, 1] * hy[:, None])
    )
    corner_y = (
        relative[:, None, 1]
        + sin_yaw[:, None] * signs[:, 0] * hx[:, None]
        + (cos_yaw[:, None] * signs[:, 1] * hy[:, None])
    )
    corner_delta = np.angle(np.exp(1j * (np.arctan2(corner_y, corner_x) - center_azimuth[:, None])))
    inside = is_box & (np.abs(local_x) <= hx) & (np.abs(local_y) <= hy)
    box_min_distance = np.hypot(
        np.maximum(np.abs(local_x) - hx, 0), np.maximum(np.abs(local_y) - hy, 0)
    )
    box_max_distance = np.hypot(corner_x, corner_y).max(axis=1)
    # round primitives: bounding circle
    radius = np.maximum(hx, hy)
    round_half_span = np.arcsin(np.clip(radius / np.maximum(distance, 1e-9), 0, 1))
    inside |= ~is_box & (distance <= radius)
    low = np.where(
        is_box, center_azimuth + corner_delta.min(axis=1), center_azimuth - round_half_span
    )
    high = np.where(
        is_box, center_azimuth + corner_delta.max(axis=1), center_azimuth + round_half_span
    )
    min_distance = np.where(is_box, box_min_distance, np.maximum(distance - radius, 0))
    max_distance = np.where(is_box, box_max_distance, distance + radius)

    step = 2 * np.pi / num_columns
    column_low = np.ceil((low - azimuth_start_rad) / step - 0.5).astype(np.int64)
    column_high = np.floor((high - azimuth_start_rad) / step - 0.5).astype(np.int64)
    num_cols = np.clip(column_high - column_low + 1, 0, num_columns)
    column_low = np.where(inside, 0, column_low)
    num_cols = np.where(inside, num_columns, num_cols)

    dz_low = prims.center[:, 2] - prims.half_size[:, 2] - origin[2]
    dz_high = prims.center[:, 2] + prims.half_size[:, 2] - origin[2]
    elevation_high = np.arctan2(dz_high, np.where(dz_high > 0, min_distance, max_distance))
    elevation_low = np.arctan2(dz_low, np.where(dz_low > 0, max_distance, min_distance))
    beam_low = np.searchsorted(elevations_rad, elevation_low - 1e-9, side="left")
    beam_high = np.searchsorted(elevations_rad, elevation_high + 1e-9, side="right")
    num_beams = np.maximum(beam_high - beam_low, 0)
    num_beams[min_distance > max_range_m] = 0

    counts = num_cols * num_beams
    total = int(counts.sum())
    pair_prim = np.repeat(np.arange(len(prims)), counts)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    local = np.arange(total) - offsets
    beams_of_pair = num_beams[pair_prim]
    column = np.mod(column_low[pair_prim] + local // beams_of_pair, num_columns)
    beam = beam_low[pair_prim] + local % beams_of_pair
    return pair_prim, beam * num_columns + column


def _local_directions(prims, directions, pair_prim, pair_ray):
    cos_yaw, sin_yaw = np.cos(prims.yaw)[pair_prim], np.sin(prims.yaw)[pair_prim]
    d = directions[pair_ray]
    local = np.empty_like(d)
    local[:, 0] = cos_yaw * d[:, 0] + sin_yaw * d[:, 1]
    local[:, 1] = -sin_yaw * d[:, 0] + cos_yaw * d[:, 1]
    local[:, 2] = d[:, 2]
    return local


def _local_origins(prims, origin):
    relative = origin - prims.center  # [M, 3]
    cos_yaw, sin_yaw = np.cos(prims.yaw), np.sin(prims.yaw)
    local = relative.copy()
    local[:, 0] = cos_yaw * relative[:, 0] + sin_yaw * relative[:, 1]
    local[:, 1] = -sin_yaw * relative[:, 0] + cos_yaw * relative[:, 1]
    return local


def _intersect_boxes(prims, origin, directions, pair_prim, pair_ray):
    """Slab test; distance of the entry point per pair, inf on a miss."""
    d = _local_directions(prims, directions, pair_prim, pair_ray)
    d[d == 0] = 1e-12
    inverse = 1.0 / d
    o = _local_origins(prims, origin)[pair_prim]
    h = prims.half_size[pair_prim]
    t1 = (-h - o) * inverse
    t2 = (h - o) * inverse
    t_near = np.minimum(t1, t2).max(axis=1)
    t_far = np.maximum(t1, t2).min(axis=1)
    return np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)


def _intersect_cylinders(prims, origin, directions, pair_prim, pair_ray):
    """Vertical cylinder side wall (caps are ignored: they are rarely seen from the sensor)."""
    d = directions[pair_ray]
    p = (origin - prims.center)[pair_prim]
    radius = prims.half_size[pair_prim, 0]
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (p[:, 0] * d[:, 0] + p[:, 1] * d[:, 1])
    c = p[:, 0] ** 2 + p[:, 1] ** 2 - radius**2
    discriminant = b * b - 4 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (-b - np.sqrt(discriminant)) / (2 * a)
    z = p[:, 2] + t * d[:, 2]
    ok = (discriminant >= 0) & (a > 0) & (t > 0) & (np.abs(z) <= prims.half_size[pair_prim, 2])
    return np.where(ok, t, np.inf)


def _intersect_ellipsoids(prims, origin, directions, pair_prim, pair_ray):
    radii = prims.half_size[pair_prim]
    d = directions[pair_ray] / radii
    p = (origin - prims.center)[pair_prim] / radii
    a = (d * d).sum(axis=1)
    b = 2 * (p * d).sum(axis=1)
    c = (p * p).sum(axis=1) - 1
    discriminant = b * b - 4 * a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(discriminant)) / (2 * a)
    return np.where((discriminant >= 0) & (t > 0), t, np.inf)


def _cos_incidence(prims, origin, directions, distance, hit_index):
    """|cos| between each hit ray and the surface normal at its hit point; 0 where no hit."""
    cos_incidence = np.zeros(distance.shape[0])
    ground = hit_index == GROUND
    cos_incidence[ground] = np.abs(directions[ground, 2])
    rays = np.flatnonzero(hit_index >= 0)
    prim = hit_index[rays]
    kind = prims.kind[prim]
    points = origin + distance[rays, None] * directions[rays]
    for this_kind in (BOX, CYLINDER, ELLIPSOID):
        select = kind == this_kind
        ray, p_index = rays[select], prim[select]
        if ray.size == 0:
            continue
        d = directions[ray]
        relative = points[select] - prims.center[p_index]
        half = prims.half_size[p_index]
        if this_kind == BOX:
            cos_yaw, sin_yaw = np.cos(prims.yaw[p_index]), np.sin(prims.yaw[p_index])
            local = np.stack(
                [
                    cos_yaw * relative[:, 0] + sin_yaw * relative[:, 1],
                    -sin_yaw * relative[:, 0] + cos_yaw * relative[:, 1],
                    relative[:, 2],
                ],
                axis=1,
            )
            local_d = _local_directions(prims, directions, p_index, ray)
            axis = np.argmax(np.abs(local) / half, axis=1)
            value = np.abs(local_d[np.arange(ray.size), axis])
        elif this_kind == CYLINDER:
            normal = relative[:, :2] / np.linalg.norm(relative[:, :2], axis=1, keepdims=True)
            value = np.abs((normal * d[:, :2]).sum(axis=1))
        else:
            normal = relative / half**2
            normal /= np.linalg.norm(normal, axis=1, keepdims=True)
            value = np.abs((normal * d).sum(axis=1))
        cos_incidence[ray] = value
    return cos_incidence
