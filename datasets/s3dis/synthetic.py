"""Synthetic stand-in for S3DIS: indoor rooms as seen by a dense RGB scanner, in the release layout.

`generate` writes `<out>/Stanford3dDataset_v1.2_Aligned_Version/Area_N/<room>/Annotations/
<class>_<k>.txt` and the whole-room file `<room>.txt`, lines `x y z r g b` (3 decimals, colours
0..255), exactly what `datasets.s3dis.load_room` reads for the real release.

Each room is a box (a corridor for hallways) sampled on its surfaces at a uniform density with
millimetre noise: ceiling, floor and four walls (they dominate the point count, as in S3DIS), a beam
under the ceiling and a column against a wall painted like the ceiling and walls, windows, a door
and a whiteboard set in the walls (the wall is cut where they are, and they sit a few centimetres
off its plane with wall-like colours: the wall / window / door / board look-alike group), tables and
bookcases of the same wood, chairs and a sofa of similar fabric (the furniture look-alike group),
and clutter (small boxes on tables and the floor, posters on walls). Every room has at least one
object of each of the 13 classes. Colours get a per-room lighting factor and per-point noise.

Every room draws from its own `np.random.Generator` seeded by (seed, area, room index), so the
output bytes depend only on the arguments.
"""

from pathlib import Path

import numpy as np

from datasets.s3dis.io import write_points_txt
from datasets.s3dis.layout import AREAS, RELEASE_DIR_NAME, area_name

ROOM_TYPES = ("office", "conferenceRoom", "hallway", "storage")
_ROOM_TYPE_WEIGHTS = (0.6, 0.15, 0.15, 0.1)

# Base colours: wall / window / door / board / ceiling / beam / column close together; table and
# bookcase the same wood; chair and sofa similar fabric.
_BASE_COLOURS = {
    "ceiling": (205, 203, 196),
    "floor": (128, 116, 102),
    "wall": (192, 186, 174),
    "beam": (200, 197, 188),
    "column": (188, 182, 170),
    "window": (176, 182, 188),
    "door": (170, 150, 125),
    "board": (214, 212, 206),
    "table": (150, 114, 80),
    "bookcase": (142, 108, 76),
    "chair": (78, 74, 82),
    "sofa": (92, 84, 98),
}
_NOISE_M = 0.004
_COLOUR_NOISE = 9.0


def generate(
    out_dir: str | Path,
    seed: int = 0,
    areas: tuple[int, ...] = AREAS,
    rooms_per_area: int = 2,
    points_per_m2: float = 150.0,
) -> Path:
    """Write synthetic rooms in the S3DIS release layout; returns the release directory."""
    if rooms_per_area < 1 or points_per_m2 <= 0:
        raise ValueError("rooms_per_area must be >= 1 and points_per_m2 > 0")
    release = Path(out_dir) / RELEASE_DIR_NAME
    for area in areas:
        names = _room_names(np.random.default_rng([seed, int(area)]), rooms_per_area)
        for room_index, room_name in enumerate(names):
            rng = np.random.default_rng([seed, int(area), room_index, 1])
            objects = synthetic_room(rng, room_name.split("_")[0], points_per_m2)
            offset = np.array([12.0 * room_index, 15.0 * int(area), 0.0])
            room_dir = release / area_name(area) / room_name
            counters: dict[str, int] = {}
            room_points = []
            for class_name, points in objects:
                counters[class_name] = counters.get(class_name, 0) + 1
                points[:, :3] += offset
                path = room_dir / "Annotations" / f"{class_name}_{counters[class_name]}.txt"
                write_points_txt(path, points)
                room_points.append(points)
            write_points_txt(room_dir / f"{room_name}.txt", np.concatenate(room_points))
    return release


def synthetic_room(
    rng: np.random.Generator, room_type: str, points_per_m2: float
) -> list[tuple[str, np.ndarray]]:
    """One room as (class name, points float64 [n, 6]: x, y, z metres, r, g, b 0..255) objects."""
    if room_type == "hallway":
        width, depth = rng.uniform(1.8, 2.6), rng.uniform(8.0, 14.0)
    else:
        width, depth = rng.uniform(4.0, 8.0), rng.uniform(4.5, 9.0)
    height = rng.uniform(2.7, 3.3)
    light = rng.uniform(0.85, 1.1)
    sample = _Sampler(rng, points_per_m2, light)
    objects: list[tuple[str, np.ndarray]] = []

    def add(name: str, xyz: np.ndarray, colour=None) -> None:
        objects.append((name, sample.colour(xyz, colour or _BASE_COLOURS[name])))

    # Openings per wall: (wall index, start along the wall, end, bottom z, top z, class)
    walls = [((0, 0, 0), (width, 0, 0)), ((width, 0, 0), (0, depth, 0))]
    walls += [((width, depth, 0), (-width, 0, 0)), ((0, depth, 0), (0, -depth, 0))]
    openings = []
    for _ in range(rng.integers(1, 3)):
        start = rng.uniform(0.3, max(0.4, width - 1.6))
        openings.append(
            (0, start, start + rng.uniform(0.8, 1.3), 0.9, min(2.3, height - 0.3), "window")
        )
    for door_start in rng.uniform(0.3, depth - 1.3, size=rng.integers(1, 3)):
        openings.append((1, door_start, door_start + 0.9, 0.0, 2.1, "door"))
    board_wall = 3
    board_start = rng.uniform(0.5, max(0.6, depth - 2.8))
    openings.append(
        (board_wall, board_start, board_start + rng.uniform(1.2, 2.2), 0.9, 2.0, "board")
    )

    add("ceiling", sample.rect((0, 0, height), (width, 0, 0), (0, depth, 0)))
    add("floor", sample.rect((0, 0, 0), (width, 0, 0), (0, depth, 0)))
    for wall_index, (origin, along) in enumerate(walls):
        length = np.linalg.norm(along)
        xyz = sample.rect(origin, along, (0, 0, height))
        along_m = (xyz - origin) @ (np.asarray(along) / length)
        cut = np.zeros(len(xyz), bool)
        for index, start, end, bottom, top, _ in openings:
            if index == wall_index:
                cut |= (
                    (along_m > start) & (along_m < end) & (xyz[:, 2] > bottom) & (xyz[:, 2] < top)
                )
        add("wall", xyz[~cut])
    for index, start, end, bottom, top, name in openings:
        origin, along = (np.asarray(v, float) for v in walls[index])
        unit = along / np.linalg.norm(along)
        inward = np.array([-unit[1], unit[0], 0.0])
        offset = -0.04 if name == "window" else 0.02  # windows recessed, doors/boards proud
        corner = origin + unit * start + inward * offset + (0, 0, bottom)
        painted_door = name == "door" and rng.random() < 0.5  # painted like the wall
        colour = _BASE_COLOURS["wall"] if painted_door else None
        add(name, sample.rect(corner, unit * (end - start), (0, 0, top - bottom)), colour)

    beam_y = rng.uniform(0.3 * depth, 0.7 * depth)
    add("beam", sample.box((0, beam_y, height - 0.4), (width, beam_y + 0.3, height)))
    column_x = rng.uniform(0.2, width - 0.6)
    add("column", sample.box((column_x, 0.0, 0.0), (column_x + 0.4, 0.4, height)))

    tables = []
    table_length = min(1.4, width - 0.9)
    for _ in range(rng.integers(1, 3)):
        x = rng.uniform(0.4, width - table_length - 0.4)
        y = rng.uniform(1.0, depth - 2.0)
        tables.append((x, y))
        parts = [sample.box((x, y, 0.72), (x + table_length, y + 0.8, 0.76))]
        far_x = x + table_length - 0.05
        for leg_x, leg_y in ((x, y), (far_x, y), (x, y + 0.75), (far_x, y + 0.75)):
            parts.append(sample.box((leg_x, leg_y, 0), (leg_x + 0.05, leg_y + 0.05, 0.72)))
        add("table", np.concatenate(parts))
        for _ in range(rng.integers(2, 5)):
            cx, cy = x + rng.uniform(-0.3, table_length - 0.1), y + rng.choice([-0.55, 0.95])
            seat = sample.box((cx, cy, 0.42), (cx + 0.45, cy + 0.45, 0.47))
            back = sample.box((cx, cy + 0.4, 0.47), (cx + 0.45, cy + 0.45, 0.95))
            stem = sample.box((cx + 0.2, cy + 0.2, 0.0), (cx + 0.25, cy + 0.25, 0.42))
            add("chair", np.concatenate([seat, back, stem]))
    sofa_length = min(rng.uniform(1.0, 1.8), width - 0.4)
    sofa_x = rng.uniform(0.1, width - sofa_length - 0.1)
    seat = sample.box((sofa_x, depth - 0.9, 0.0), (sofa_x + sofa_length, depth - 0.1, 0.42))
    back = sample.box((sofa_x, depth - 0.3, 0.42), (sofa_x + sofa_length, depth - 0.1, 0.85))
    add("sofa", np.concatenate([seat, back]))
    for _ in range(rng.integers(1, 3)):
        y = rng.uniform(0.5, depth - 1.5)
        add("bookcase", sample.box((0.02, y, 0.0), (0.38, y + rng.uniform(0.8, 1.4), 2.0)))

    for _ in range(rng.integers(8, 16)):
        size = rng.uniform(0.15, 0.6, size=3)
        if tables and rng.random() < 0.6:
            x, y = tables[rng.integers(len(tables))]
            lo = np.array([x + rng.uniform(0, table_length - 0.4), y + rng.uniform(0, 0.4), 0.76])
        else:
            lo = np.array([rng.uniform(0.3, width - 0.8), rng.uniform(0.3, depth - 0.8), 0.0])
        add("clutter", sample.box(lo, lo + size), tuple(rng.integers(30, 230, size=3)))
    for poster_x in rng.uniform(0.3, width - 1.0, size=rng.integers(1, 3)):
        poster = sample.rect((poster_x, depth - 0.01, 1.2), (0.6, 0, 0), (0, 0, 0.8))
        add("clutter", poster, tuple(rng.integers(150, 230, size=3)))
    return objects


class _Sampler:
    """Uniform surface sampling with millimetre noise and noisy, lit colours."""

    def __init__(self, rng: np.random.Generator, points_per_m2: float, light: float):
        self.rng, self.density, self.light = rng, points_per_m2, light

    def rect(self, origin, u, v) -> np.ndarray:
        """Points float64 [n, 3] on the parallelogram origin + a u + b v, a, b in [0, 1]."""
        origin, u, v = (np.asarray(x, np.float64) for x in (origin, u, v))
        area = np.linalg.norm(np.cross(u, v))
        count = max(2, int(round(area * self.density)))
        a, b = self.rng.random((2, count, 1))
        return origin + a * u + b * v + self.rng.normal(0.0, _NOISE_M, (count, 3))

    def box(self, lo, hi) -> np.ndarray:
        """Points on the five visible faces (all but the bottom) of an axis-aligned box."""
        (x0, y0, z0), (x1, y1, z1) = lo, hi
        dx, dy, dz = (x1 - x0, 0, 0), (0, y1 - y0, 0), (0, 0, z1 - z0)
        faces = [
            self.rect((x0, y0, z1), dx, dy),
            self.rect((x0, y0, z0), dx, dz),
            self.rect((x0, y1, z0), dx, dz),
            self.rect((x0, y0, z0), dy, dz),
            self.rect((x1, y0, z0), dy, dz),
        ]
        return np.concatenate(faces)

    def colour(self, xyz: np.ndarray, base) -> np.ndarray:
        """[n, 6]: xyz and the base colour lit by the room and jittered per object and point."""
        tint = np.asarray(base, np.float64) * self.light + self.rng.normal(0.0, 4.0, 3)
        rgb = tint + self.rng.normal(0.0, _COLOUR_NOISE, (len(xyz), 3))
        return np.concatenate([xyz, np.clip(np.round(rgb), 0, 255)], axis=1)


def _room_names(rng: np.random.Generator, count: int) -> list[str]:
    kinds = rng.choice(len(ROOM_TYPES), size=count, p=_ROOM_TYPE_WEIGHTS)
    seen: dict[str, int] = {}
    names = []
    for kind in kinds:
        name = ROOM_TYPES[kind]
        seen[name] = seen.get(name, 0) + 1
        names.append(f"{name}_{seen[name]}")
    return names
