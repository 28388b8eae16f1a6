"""The procedural street world: a straight street cut into 40 m blocks, generated on demand.

A sequence's world is a street along the world x axis with a fixed cross-section (lanes, parking
strips, curbs, sidewalks) whose sides are filled block by block with one of three kinds of
frontage: urban (continuous buildings), residential (grass strip, fences or hedges, gardens,
houses, trees) or green (terrain, fences, dense vegetation), with occasional crossings. Each block
is generated from its own `np.random.Generator` seeded by (seed, sequence, block), so a scan only
depends on the blocks it sees and any sequence length is possible. Moving traffic and pedestrians
cycle within a window around their block, so they move between scans of a sequence.
"""

import dataclasses

import numpy as np

from datasets.synthetic.blocks import BlockBuilder
from datasets.synthetic.objects import RAW_ID
from datasets.synthetic.primitives import Primitives, concatenate

_STREAM_BLOCK, _STREAM_LAYOUT = 1, 2
_BLOCK_OFFSET = 1 << 20  # keeps negative block indices valid as seed entropy


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Knobs of the procedural world. Distances in metres, speeds in m/s."""

    block_length_m: float = 40.0
    wrap_half_m: float = 60.0  # moving objects cycle within +- this of their block centre
    crossing_probability: float = 0.15
    frontage_probabilities: tuple[float, float, float] = (0.3, 0.3, 0.4)  # urban, resid., green
    parked_car_probability: float = 0.75  # per parking slot
    traffic_per_lane: float = 0.25  # moving vehicles per lane and block
    pedestrians_per_side: float = 0.12
    bicyclists_per_block: float = 0.08
    motorcyclists_per_block: float = 0.03


@dataclasses.dataclass(frozen=True)
class StreetLayout:
    """Cross-section of a sequence's street (y is lateral, left positive)."""

    num_lanes: int
    lane_width_m: float
    sidewalk_width_m: tuple[float, float]  # left, right
    curb_height_m: float
    road_reflectivity: float
    ego_speed_mps: float

    @property
    def half_width_m(self) -> float:
        return 0.5 * self.num_lanes * self.lane_width_m

    @property
    def ego_lane_y(self) -> float:
        return -self.half_width_m + 0.5 * self.lane_width_m

    def lane_centers(self) -> np.ndarray:
        return -self.half_width_m + (np.arange(self.num_lanes) + 0.5) * self.lane_width_m

    def lane_lines(self) -> np.ndarray:
        return -self.half_width_m + np.arange(1, self.num_lanes) * self.lane_width_m


@dataclasses.dataclass
class Scene:
    """What a scan sees: primitives plus the ground zones (rectangles x0, x1, y0, y1 [K, 4])."""

    primitives: Primitives
    parking_zones: np.ndarray
    road_zones: np.ndarray


class StreetWorld:
    """The world of one sequence; blocks are generated lazily and cached."""

    def __init__(self, seed: int, sequence: int, config: WorldConfig | None = None):
        self.seed, self.sequence = seed, sequence
        self.config = config or WorldConfig()
        rng = np.random.default_rng([seed, sequence, _STREAM_LAYOUT])
        self.layout = StreetLayout(
            num_lanes=int(rng.choice([2, 2, 2, 3, 4])),
            lane_width_m=rng.uniform(3.0, 3.5),
            sidewalk_width_m=(rng.uniform(1.5, 3.5), rng.uniform(1.5, 3.5)),
            curb_height_m=rng.uniform(0.1, 0.17),
            road_reflectivity=rng.uniform(0.17, 0.24),
            ego_speed_mps=rng.uniform(7.0, 11.0),
        )
        self._blocks: dict[int, tuple[Primitives, list, list]] = {}

    def ego_pose(self, time_s: float) -> tuple[float, float, float]:
        """Sensor (x, y, yaw) at `time_s`: driving along the ego lane with a gentle weave."""
        x = self.layout.ego_speed_mps * time_s
        wavelength = 90.0
        y = self.layout.ego_lane_y + 0.25 * np.sin(2 * np.pi * x / wavelength)
        yaw = np.arctan(0.25 * 2 * np.pi / wavelength * np.cos(2 * np.pi * x / wavelength))
        return x, y, float(yaw)

    def scene(self, x_m: float, time_s: float, view_m: float) -> Scene:
        """Primitives and ground zones of every block within `view_m` (+ the motion window)."""
        length = self.config.block_length_m
        reach = view_m + self.config.wrap_half_m
        first, last = int(np.floor((x_m - reach) / length)), int(np.floor((x_m + reach) / length))
        parts, parking, road = [], [], []
        for index in range(first, last + 1):
            if index not in self._blocks:
                self._blocks[index] = self._make_block(index)
            primitives, block_parking, block_road = self._blocks[index]
            parts.append(primitives)
            parking += block_parking
            road += block_road
        zones = lambda rects: np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        primitives = concatenate(parts).at_time(time_s, self.config.wrap_half_m)
        return Scene(primitives, zones(parking), zones(road))

    def ground_labels(self, x: np.ndarray, y: np.ndarray, scene: Scene):
        """Raw id, reflectivity and roughness (m) of ground-plane hits at (x, y) [N]."""
        layout = self.layout
        in_rects = lambda rects: (
            (x[:, None] >= rects[:, 0]) & (x[:, None] <= rects[:, 1])
            & (y[:, None] >= rects[:, 2]) & (y[:, None] <= rects[:, 3])
        ).any(axis=1)  # fmt: skip
        road = (np.abs(y) <= layout.half_width_m) | in_rects(scene.road_zones)
        parking = in_rects(scene.parking_zones) & ~road
        raw = np.full(x.shape, RAW_ID["terrain"], dtype=np.int32)
        reflectivity = np.full(x.shape, 0.4)
        roughness = np.full(x.shape, 0.04)
        raw[road], reflectivity[road], roughness[road] = RAW_ID["road"], layout.road_reflectivity, 0
        raw[parking], reflectivity[parking], roughness[parking] = RAW_ID["parking"], 0.23, 0.0
        on_main_road = np.abs(y) <= layout.half_width_m
        line_offsets = np.abs(y[:, None] - layout.lane_lines()[None, :]).min(axis=1, initial=np.inf)
        dashed = (np.mod(x, 12.0) < 4.0) & (line_offsets < 0.07)
        edge = np.abs(np.abs(y) - (layout.half_width_m - 0.25)) < 0.07
        marking = on_main_road & (dashed | edge) & ~in_rects(scene.road_zones)
        raw[marking], reflectivity[marking] = RAW_ID["lane-marking"], 0.7
        return raw, reflectivity, roughness

    def _make_block(self, index: int) -> tuple[Primitives, list, list]:
        rng = np.random.default_rng(
            [self.seed, self.sequence, _STREAM_BLOCK, index + _BLOCK_OFFSET]
        )
        return BlockBuilder(self, index, rng).build()
