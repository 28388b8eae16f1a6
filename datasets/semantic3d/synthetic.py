"""Synthetic stand-in for Semantic3D: outdoor terrestrial laser scans in the benchmark text format.

`generate` writes `<out>/<name>.txt` (`x y z intensity r g b`) for every scan and `<name>.labels`
for the training scans (by default the 15 released training names, so the official splits apply),
and the test scans' ground truth under `<out>/test_ground_truth/<name>.labels`, out of the readers'
way, to score a submission.

A scan is a street square seen from a scanner at the origin, 1.7 m above the ground: ground split
into man-made terrain (asphalt road, paved sidewalk) and natural terrain (grass, and a gravel path
coloured like the paving), buildings (plaster or stone facades and roofs), hard scape (low walls,
bollards and benches in the buildings' stone colours), trees (high vegetation) and bushes and hedges
(low vegetation) of nearly the same greens, cars on the road, and scanning artefacts (ghost points
floating in the air, as moving people and mixed pixels leave). Points beyond 85 % of the scene
radius are unlabelled (0), as much of the far background of the real scans is. Surfaces are sampled
at a uniform density and then thinned with the distance to the scanner, as a terrestrial scanner's
density falls off. Every scan holds every label id 0..8.

Each scan draws from its own `np.random.Generator` seeded by (seed, scan index), so the bytes depend
only on the arguments.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from datasets.semantic3d.io import write_labels, write_scan
from datasets.semantic3d.layout import REDUCED8_TEST_SCANS, TRAINING_SCANS

SCENE_RADIUS_M = 40.0
SCANNER_HEIGHT_M = 1.7
_CANDIDATES_PER_POINT = 8  # surface samples drawn per output point, before distance thinning
_ARTEFACT_FRACTION = 0.012

# Materials: (label id, base colour, base intensity); look-alike groups share nearby values.
_MATERIALS: dict[str, tuple[int, tuple[int, int, int], float]] = {
    "asphalt": (1, (98, 98, 104), -1100),
    "paving": (1, (150, 144, 136), -700),
    "grass": (2, (92, 116, 62), -900),
    "gravel": (2, (146, 138, 122), -750),
    "tree": (3, (66, 92, 48), -1000),
    "trunk": (3, (92, 76, 60), -800),
    "bush": (4, (80, 104, 54), -950),
    "plaster": (5, (196, 184, 160), -400),
    "stone": (5, (158, 152, 146), -500),
    "hardscape": (6, (156, 150, 142), -550),
}
Material = str | tuple[int, tuple[int, int, int], float]  # name or (label, colour, intensity)
_GROUND = ("asphalt", "paving", "grass", "gravel")
_GROUND_LABELS = np.array([_MATERIALS[m][0] for m in _GROUND], np.int32)
_GROUND_COLOURS = np.array([_MATERIALS[m][1] for m in _GROUND], np.float64)
_GROUND_INTENSITIES = np.array([_MATERIALS[m][2] for m in _GROUND], np.float64)


def generate(
    out_dir: str | Path,
    seed: int = 0,
    scan_names: tuple[str, ...] = TRAINING_SCANS,
    test_scan_names: tuple[str, ...] = REDUCED8_TEST_SCANS,
    points_per_scan: int = 60_000,
) -> Path:
    """Write labelled `scan_names` and unlabelled `test_scan_names`; returns `out_dir`."""
    out_dir = Path(out_dir)
    for index, name in enumerate((*scan_names, *test_scan_names)):
        points, labels = synthetic_scan(np.random.default_rng([seed, index]), points_per_scan)
        write_scan(out_dir / f"{name}.txt", points)
        if index < len(scan_names):
            write_labels(out_dir / f"{name}.labels", labels)
        else:
            write_labels(out_dir / "test_ground_truth" / f"{name}.labels", labels)
    return out_dir


def synthetic_scan(rng: np.random.Generator, num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """One scan: (points float64 [N, 7] x y z intensity r g b, labels int32 [N] ids 0..8).

    N is `num_points` unless distance thinning leaves fewer candidates (then all of them).
    """
    if num_points < 100:
        raise ValueError(f"num_points must be >= 100, got {num_points}")
    scene = _Scene(rng)
    road_y = rng.uniform(-12.0, -6.0)  # road centre line; the scanner stands on the lawn side
    scene.add_ground(road_y)
    x = rng.uniform(-38.0, -30.0)
    while x < 34.0:  # a row of buildings behind the far sidewalk
        width, depth, height = rng.uniform(6, 14), rng.uniform(6, 10), rng.uniform(6, 15)
        lo = np.array([x, road_y - 7.0 - depth, -SCANNER_HEIGHT_M])
        scene.box("plaster" if rng.random() < 0.6 else "stone", lo, lo + (width, depth, height))
        x += width + rng.uniform(1.0, 6.0)
    for _ in range(rng.integers(1, 4)):  # a few buildings behind the lawn
        lo = np.array([rng.uniform(-35, 25), rng.uniform(18, 26), -SCANNER_HEIGHT_M])
        material = "plaster" if rng.random() < 0.6 else "stone"
        scene.box(material, lo, lo + (rng.uniform(6, 12), rng.uniform(6, 10), rng.uniform(5, 12)))
    sizes = ((6.0, 0.3, 0.8), (0.25, 0.25, 0.9), (1.8, 0.5, 0.45))  # low wall, bollard, bench
    for _ in range(rng.integers(6, 14)):
        side = rng.choice([-1.0, 1.0])
        lo = np.array([rng.uniform(-25, 25), road_y + side * rng.uniform(4.5, 6.2), 0.0])
        lo[2] = -SCANNER_HEIGHT_M
        scene.box("hardscape", lo, lo + sizes[rng.integers(len(sizes))])
    for _ in range(rng.integers(5, 11)):  # trees on the lawn
        base = np.array([rng.uniform(-30, 30), rng.uniform(road_y + 10, 16), -SCANNER_HEIGHT_M])
        trunk = rng.uniform(2.0, 4.0)
        scene.cylinder("trunk", base, 0.2, trunk)
        radius = rng.uniform(1.8, 3.5)
        scene.ellipsoid("tree", base + (0, 0, trunk + 0.7 * radius), (radius, radius, 1.2 * radius))
    for _ in range(rng.integers(4, 10)):  # bushes and hedges
        centre = np.array([rng.uniform(-30, 30), rng.uniform(road_y + 8, 16), 0.5])
        centre[2] -= SCANNER_HEIGHT_M
        radii = (rng.uniform(0.5, 3.0), rng.uniform(0.4, 0.9), rng.uniform(0.4, 0.8))
        scene.ellipsoid("bush", centre, radii)
    for _ in range(rng.integers(2, 6)):  # cars on the road
        lo = np.array([rng.uniform(-20, 20), road_y + rng.uniform(-3.5, 1.5), -SCANNER_HEIGHT_M])
        paint = (8, tuple(rng.integers(20, 235, size=3)), -300.0)
        scene.box(paint, lo + (0, 0, 0.3), lo + (4.3, 1.8, 1.1))
        scene.box(paint, lo + (1.0, 0.05, 1.1), lo + (3.3, 1.75, 1.55))
    return scene.sample(num_points)


class _Scene:
    """Surfaces with a material; sampled in proportion to area, then thinned with range."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        # (area m2, sampler n -> xyz [n, 3], material name or (label, colour, intensity) or None)
        self.surfaces: list[tuple[float, Callable[[int], np.ndarray], Material | None]] = []
        self.road_y = 0.0
        self.path_x = 0.0

    def rect(self, material: Material, origin, u, v) -> None:
        origin, u, v = (np.asarray(x, np.float64) for x in (origin, u, v))

        def sampler(n: int) -> np.ndarray:
            return origin + self.rng.random((n, 1)) * u + self.rng.random((n, 1)) * v

        self.surfaces.append((float(np.linalg.norm(np.cross(u, v))), sampler, material))

    def box(self, material: Material, lo, hi) -> None:
        """The four sides and the top of an axis-aligned box."""
        (x0, y0, z0), (x1, y1, z1) = lo, hi
        dx, dy, dz = (x1 - x0, 0, 0), (0, y1 - y0, 0), (0, 0, z1 - z0)
        self.rect(material, (x0, y0, z0), dx, dz)
        self.rect(material, (x0, y1, z0), dx, dz)
        self.rect(material, (x0, y0, z0), dy, dz)
        self.rect(material, (x1, y0, z0), dy, dz)
        self.rect(material, (x0, y0, z1), dx, dy)

    def cylinder(self, material: Material, base, radius: float, height: float) -> None:
        def sampler(n: int) -> np.ndarray:
            angle, z = self.rng.uniform(0, 2 * np.pi, n), self.rng.uniform(0, height, n)
            return base + np.stack([radius * np.cos(angle), radius * np.sin(angle), z], axis=1)

        self.surfaces.append((2 * np.pi * radius * height, sampler, material))

    def ellipsoid(self, material: Material, centre, radii) -> None:
        radii = np.asarray(radii, np.float64)

        def sampler(n: int) -> np.ndarray:  # a porous shell: foliage returns from its outer part
            direction = self.rng.normal(size=(n, 3))
            direction /= np.linalg.norm(direction, axis=1, keepdims=True)
            return centre + direction * radii * self.rng.uniform(0.7, 1.0, (n, 1))

        self.surfaces.append((4 * np.pi * float(np.mean(radii)) ** 2, sampler, material))

    def add_ground(self, road_y: float) -> None:
        """The ground square; its material depends on where a point falls (`_ground_material`)."""
        self.road_y, self.path_x = road_y, self.rng.uniform(-20, 20)

        def sampler(n: int) -> np.ndarray:
            xy = self.rng.uniform(-SCENE_RADIUS_M, SCENE_RADIUS_M, (n, 2))
            z = np.full(n, -SCANNER_HEIGHT_M)
            lawn = xy[:, 1] > road_y + 7.0
            z[lawn] += 0.1 * np.sin(0.3 * xy[lawn, 0]) + 0.05 * np.cos(0.5 * xy[lawn, 1])
            return np.column_stack([xy, z])

        self.surfaces.append(((2 * SCENE_RADIUS_M) ** 2, sampler, None))

    def _ground_material(self, xyz: np.ndarray) -> np.ndarray:
        """int [n] index into _GROUND: road asphalt, sidewalks paving, lawn grass, gravel path."""
        offset = xyz[:, 1] - self.road_y
        kind = np.where(offset > 7.0, 2, np.where(np.abs(offset) < 4.0, 0, 1))
        kind[(kind == 2) & (np.abs(xyz[:, 0] - self.path_x) < 1.5)] = 3
        return kind

    def _appearance(self, material: Material | None, xyz: np.ndarray):
        """(labels int32 [n], colours float64 [n, 3], intensities float64 [n]) of a surface."""
        n = len(xyz)
        if material is None:
            kind = self._ground_material(xyz)
            return _GROUND_LABELS[kind], _GROUND_COLOURS[kind], _GROUND_INTENSITIES[kind]
        label, colour, intensity = _MATERIALS[material] if isinstance(material, str) else material
        colours = np.tile(np.asarray(colour, np.float64), (n, 1))
        return np.full(n, label, np.int32), colours, np.full(n, float(intensity))

    def sample(self, num_points: int) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        num_artefacts = int(_ARTEFACT_FRACTION * num_points)
        num_surface = num_points - num_artefacts
        areas = np.array([area for area, _, _ in self.surfaces])
        counts = rng.multinomial(_CANDIDATES_PER_POINT * num_surface, areas / areas.sum())
        parts = []
        for (_, sampler, material), count in zip(self.surfaces, counts):
            xyz = sampler(int(count)) + rng.normal(0.0, 0.005, (int(count), 3))
            labels, colours, intensity = self._appearance(material, xyz)
            parts.append((xyz, labels, colours + rng.normal(0.0, 5.0, 3), intensity))
        xyz, labels, colour, intensity = (np.concatenate(p) for p in zip(*parts))
        range_m = np.maximum(np.linalg.norm(xyz, axis=1), 1e-3)
        keep = rng.random(len(xyz)) < np.minimum(1.0, (6.0 / range_m) ** 1.5)
        chosen = np.flatnonzero(keep & (np.abs(xyz[:, :2]).max(axis=1) <= SCENE_RADIUS_M))
        chosen = np.sort(rng.choice(chosen, min(num_surface, len(chosen)), replace=False))
        xyz, labels, colour, intensity = (
            xyz[chosen],
            labels[chosen],
            colour[chosen],
            intensity[chosen],
        )
        labels[np.linalg.norm(xyz[:, :2], axis=1) > 0.85 * SCENE_RADIUS_M] = 0  # far: unlabelled

        # scanning artefacts: ghost returns in the air (moving people, mixed pixels)
        ghost = rng.uniform((-15, -15, -1.0), (15, 15, 2.5), (num_artefacts, 3))
        xyz = np.concatenate([xyz, ghost])
        labels = np.concatenate([labels, np.full(num_artefacts, 7, np.int32)])
        colour = np.concatenate([colour, rng.uniform(40, 200, (num_artefacts, 1)).repeat(3, 1)])
        intensity = np.concatenate([intensity, rng.uniform(-1800, -200, num_artefacts)])

        colour = np.clip(np.round(colour + rng.normal(0.0, 8.0, colour.shape)), 0, 255)
        intensity += rng.normal(0.0, 120.0, len(intensity)) - 8.0 * np.linalg.norm(xyz, axis=1)
        intensity = np.clip(np.round(intensity), -2048, 2047)
        return np.column_stack([xyz, intensity, colour]), labels.astype(np.int32)
