"""One 40 m block of the synthetic street: frontage, street furniture, parked and moving traffic.

Called by `world.StreetWorld` with the block's own random generator. Each side of the street gets
a parking strip (sometimes), a curb and sidewalk, street lights, signs, bins, pedestrians and
parked two-wheelers, then one of three frontages: urban (continuous buildings with fences or
walls in the gaps), residential (grass strip, fence or hedge, garden terrain, houses, trees,
bushes, sheds) or green (terrain, fences, dense vegetation, trees). Crossings cut both sides and
add a crossing street. Counts and sizes are tuned so that per-class point frequencies come close
to SemanticKITTI's (see experiments/bench_synthetic.py).
"""

import numpy as np

from datasets.synthetic import objects
from datasets.synthetic.objects import RAW_ID
from datasets.synthetic.primitives import PrimitiveBuilder

MAX_OBJECTS_PER_BLOCK = 127  # instance ids stay below 2 ** 16


class BlockBuilder:
    """Fills one block of street: both sides' frontage, street furniture, vehicles and people."""

    def __init__(self, world, index: int, rng: np.random.Generator):
        self.world, self.layout, self.config = world, world.layout, world.config
        self.rng = rng
        self.x0 = index * self.config.block_length_m
        self.x1 = self.x0 + self.config.block_length_m
        self.center_x = 0.5 * (self.x0 + self.x1)
        self.instance_base = (index % 511) * 128
        self.num_objects = 0
        self.b = PrimitiveBuilder()
        self.parking_zones: list[tuple] = []
        self.road_zones: list[tuple] = []

    def next_instance(self) -> int:
        self.num_objects = min(self.num_objects + 1, MAX_OBJECTS_PER_BLOCK)
        return self.instance_base + self.num_objects

    def build(self):
        rng, layout = self.rng, self.layout
        half = layout.half_width_m
        cut = None
        if rng.uniform() < self.config.crossing_probability:
            crossing_x = rng.uniform(self.x0 + 12, self.x1 - 12)
            cut = (crossing_x - half, crossing_x + half)
            self.road_zones += [(cut[0], cut[1], -200.0, 200.0)]
        for side in (1, -1):
            self._side(side, cut)
        self._traffic()
        return self.b.build(), self.parking_zones, self.road_zones

    # --- helpers --------------------------------------------------------------------------------
    def segments(self, cut, margin=0.0):
        if cut is None:
            return [(self.x0, self.x1)]
        return [(self.x0, cut[0] - margin), (cut[1] + margin, self.x1)]

    def lateral_box(self, side, x0, x1, u0, u1, z0, z1, raw, reflectivity, **kwargs):
        """Box spanning x0..x1 along the street and u0..u1 away from the centre line on `side`."""
        if x1 - x0 <= 0.05 or u1 - u0 <= 0.01:
            return
        center = (0.5 * (x0 + x1), side * 0.5 * (u0 + u1), 0.5 * (z0 + z1))
        self.b.box(
            center, (0.5 * (x1 - x0), 0.5 * (u1 - u0), 0.5 * (z1 - z0)), raw, reflectivity, **kwargs
        )

    def moving(self, velocity_x, x):
        return (velocity_x, x, self.center_x)

    def poisson_positions(self, rate, x0, x1):
        return np.sort(self.rng.uniform(x0, x1, size=self.rng.poisson(rate)))

    # --- frontage ---------------------------------------------------------------------------------
    def _side(self, side, cut):
        rng, layout = self.rng, self.layout
        frontage = rng.choice(
            ["urban", "residential", "green"], p=self.config.frontage_probabilities
        )
        curb = layout.half_width_m
        if frontage != "green" and rng.uniform() < 0.45:
            for x0, x1 in self.segments(cut):
                self.parking_zones.append(
                    (
                        x0,
                        x1,
                        min(side * curb, side * (curb + 2.4)),
                        max(side * curb, side * (curb + 2.4)),
                    )
                )
                self._parked_vehicles(side, x0, x1, curb + 1.2)
            curb += 2.4
        sidewalk_width = layout.sidewalk_width_m[0 if side > 0 else 1]
        walk_top = layout.curb_height_m
        outer = curb + sidewalk_width
        sidewalk_reflectivity = rng.uniform(0.27, 0.33)
        for x0, x1 in self.segments(cut):
            self.lateral_box(
                side, x0, x1, curb, outer, -0.3, walk_top, RAW_ID["sidewalk"], sidewalk_reflectivity
            )
        if cut is not None:  # sidewalks along the crossing street
            for x0, x1 in ((cut[0] - sidewalk_width, cut[0]), (cut[1], cut[1] + sidewalk_width)):
                self.lateral_box(
                    side,
                    x0,
                    x1,
                    curb,
                    curb + 60,
                    -0.3,
                    walk_top,
                    RAW_ID["sidewalk"],
                    sidewalk_reflectivity,
                )
        self._street_furniture(side, cut, curb, outer, walk_top)
        inner_cut = None if cut is None else (cut[0] - sidewalk_width, cut[1] + sidewalk_width)
        for x0, x1 in self.segments(inner_cut):
            getattr(self, f"_{frontage}")(side, x0, x1, outer, walk_top)

    def _urban(self, side, x0, x1, outer, walk_top):
        rng = self.rng
        front = outer + (rng.uniform(0.5, 3.0) if rng.uniform() < 0.3 else 0.0)
        if front > outer:  # forecourt
            self.lateral_box(
                side,
                x0,
                x1,
                outer,
                front,
                -0.3,
                walk_top * rng.uniform(0.3, 1.0),
                RAW_ID["other-ground"],
                0.27,
            )
        x = x0
        while x < x1 - 1.0:
            length = min(rng.uniform(10, 30), x1 - x)
            height = rng.uniform(7, 20)
            setback = rng.uniform(0, 0.6)
            self.lateral_box(
                side,
                x,
                x + length,
                front + setback,
                front + setback + rng.uniform(10, 16),
                0.0,
                height,
                RAW_ID["building"],
                rng.uniform(0.2, 0.45),
            )
            x += length
            if rng.uniform() < 0.6:
                gap = min(rng.uniform(2, 6), x1 - x)
                raw = RAW_ID["fence"] if rng.uniform() < 0.8 else RAW_ID["other-structure"]
                self.lateral_box(
                    side,
                    x,
                    x + gap,
                    front + 0.3,
                    front + 0.4,
                    0.0,
                    rng.uniform(1.5, 2.5),
                    raw,
                    0.3,
                    porosity=0.2,
                )
                x += gap

    def _residential(self, side, x0, x1, outer, walk_top):
        rng = self.rng
        grass = rng.uniform(0.3, 2.0)
        prop = outer + grass
        self.lateral_box(
            side,
            x0,
            x1,
            outer,
            prop,
            -0.3,
            walk_top - rng.uniform(0.0, 0.06),
            RAW_ID["terrain"],
            rng.uniform(0.33, 0.45),
            roughness_m=0.03,
        )
        garden_top = rng.uniform(0.0, 0.15)
        self.lateral_box(
            side,
            x0,
            x1,
            prop,
            prop + 40,
            -0.3,
            garden_top,
            RAW_ID["terrain"],
            rng.uniform(0.33, 0.45),
            roughness_m=0.04,
        )
        # driveway through the grass strip and the property line
        drive_x = rng.uniform(x0, x1)
        drive = (drive_x - 1.5, drive_x + 1.5)
        self.lateral_box(
            side,
            drive[0],
            drive[1],
            outer - 0.01,
            prop + 8,
            -0.3,
            walk_top * 0.8,
            RAW_ID["other-ground"],
            0.26,
        )
        boundary = rng.choice(["fence", "hedge", "none"], p=[0.45, 0.5, 0.05])
        for sx0, sx1 in ((x0, drive[0]), (drive[1], x1)):
            if boundary == "fence":
                self.lateral_box(
                    side,
                    sx0,
                    sx1,
                    prop,
                    prop + 0.06,
                    0.0,
                    rng.uniform(1.0, 2.0),
                    RAW_ID["fence"],
                    rng.uniform(0.25, 0.4),
                    porosity=0.25,
                )
            elif boundary == "hedge":
                self.lateral_box(
                    side,
                    sx0,
                    sx1,
                    prop,
                    prop + 0.9,
                    0.0,
                    rng.uniform(0.8, 2.0),
                    RAW_ID["vegetation"],
                    0.45,
                    porosity=0.1,
                    depth_jitter_m=0.3,
                )
        x = x0 + rng.uniform(0, 6)
        while x < x1 - 6:
            length = min(rng.uniform(8, 15), x1 - x)
            setback = prop + rng.uniform(4, 9)
            self.lateral_box(
                side,
                x,
                x + length,
                setback,
                setback + rng.uniform(8, 12),
                0.0,
                rng.uniform(5, 9),
                RAW_ID["building"],
                rng.uniform(0.2, 0.45),
            )
            x += length + rng.uniform(4, 10)
        for tree_x in self.poisson_positions(2.5, x0, x1):
            objects.tree(self.b, rng, tree_x, side * (prop + rng.uniform(2, 5)))
        for bush_x in self.poisson_positions(3.0, x0, x1):
            objects.bush(
                self.b, rng, bush_x, side * (prop + rng.uniform(1, 3)), rng.uniform(0.5, 1.3)
            )
        if rng.uniform() < 0.6:
            shed_x = rng.uniform(x0, x1)
            self.lateral_box(
                side,
                shed_x,
                shed_x + rng.uniform(2, 4),
                prop + 1,
                prop + 3.5,
                0,
                rng.uniform(2, 2.8),
                RAW_ID["unlabeled"],
                0.3,
            )

    def _green(self, side, x0, x1, outer, walk_top):
        rng = self.rng
        strip = outer + rng.uniform(0.3, 2.0)
        self.lateral_box(
            side,
            x0,
            x1,
            outer,
            strip + 30,
            -0.3,
            rng.uniform(0.0, 0.2),
            RAW_ID["terrain"],
            rng.uniform(0.33, 0.45),
            roughness_m=0.05,
        )
        if rng.uniform() < 0.75:
            self.lateral_box(
                side,
                x0,
                x1,
                strip - 0.5,
                strip - 0.44,
                0.0,
                rng.uniform(1.2, 2.0),
                RAW_ID["fence"],
                rng.uniform(0.25, 0.4),
                porosity=0.3,
            )
        x = x0
        while x < x1 - 0.5:
            length = min(rng.uniform(5, 12), x1 - x)
            depth_start = strip + rng.uniform(0, 1.5)
            self.lateral_box(
                side,
                x,
                x + length,
                depth_start,
                depth_start + 15,
                0.0,
                rng.uniform(2.5, 9),
                RAW_ID["vegetation"],
                rng.uniform(0.38, 0.55),
                porosity=0.15,
                depth_jitter_m=0.8,
            )
            x += length + (rng.uniform(1, 5) if rng.uniform() < 0.3 else 0)
        for tree_x in self.poisson_positions(2.0, x0, x1):
            objects.tree(
                self.b,
                rng,
                tree_x,
                side * (strip - rng.uniform(0.5, 1.5)),
                scale=rng.uniform(0.7, 1.1),
            )

    # --- street furniture and people --------------------------------------------------------------
    def _street_furniture(self, side, cut, curb, outer, walk_top):
        rng, b = self.rng, self.b
        for x0, x1 in self.segments(cut, margin=self.layout.sidewalk_width_m[0 if side > 0 else 1]):
            if x1 - x0 < 2:
                continue
            for light_x in self.poisson_positions(0.8, x0, x1):
                objects.street_light(b, rng, light_x, side * (curb + 0.5), side)
            for sign_x in self.poisson_positions(0.5 + 1.0 * (cut is not None), x0, x1):
                objects.traffic_sign(b, rng, sign_x, side * (curb + 0.4))
            if rng.uniform() < 0.6:
                for tree_x in np.arange(x0 + rng.uniform(2, 6), x1, rng.uniform(8, 15)):
                    objects.tree(b, rng, tree_x, side * (curb + 0.9), scale=rng.uniform(0.8, 1.1))
            for bin_x in self.poisson_positions(3.0, x0, x1):
                if rng.uniform() < 0.5:
                    b.cylinder(
                        bin_x, side * (curb + 0.3), 0, 1.0, 0.1, RAW_ID["other-object"], 0.35
                    )
                else:
                    b.box(
                        (bin_x, side * (outer - 0.5), walk_top + 0.5),
                        (0.3, 0.3, 0.5),
                        RAW_ID["other-object"],
                        0.3,
                    )
            for person_x in self.poisson_positions(self.config.pedestrians_per_side, x0, x1):
                walking = rng.uniform() < 0.5
                raw = RAW_ID["moving-person" if walking else "person"]
                motion = self.moving(rng.choice([-1.4, 1.4]) if walking else 0.0, person_x)
                objects.person(
                    b,
                    rng,
                    person_x,
                    side * rng.uniform(curb + 0.5, outer - 0.4),
                    walk_top,
                    raw,
                    self.next_instance(),
                    motion,
                )
            for bike_x in self.poisson_positions(0.06, x0, x1):
                for k in range(rng.integers(1, 4)):
                    objects.bicycle_frame(
                        b,
                        rng,
                        bike_x + 0.7 * k,
                        side * (outer - 0.9),
                        np.pi / 2,
                        RAW_ID["bicycle"],
                        self.next_instance(),
                    )
            for motorcycle_x in self.poisson_positions(0.08, x0, x1):
                yaw = np.pi / 2 + rng.normal(0, 0.3)
                objects.motorcycle_frame(b, rng, motorcycle_x, side * (curb + 1.1), yaw,
                                         RAW_ID["motorcycle"], self.next_instance())  # fmt: skip
            if rng.uniform() < 0.1:
                shelter_x = rng.uniform(x0, x1)
                self.lateral_box(
                    side,
                    shelter_x,
                    shelter_x + 3.5,
                    outer - 1.5,
                    outer - 0.2,
                    walk_top,
                    walk_top + 2.4,
                    RAW_ID["other-structure"],
                    0.25,
                    porosity=0.5,
                )

    def _parked_vehicles(self, side, x0, x1, lateral):
        rng = self.rng
        x = x0 + rng.uniform(0.0, 3.0)
        while x < x1 - 5:
            kind = rng.choice(
                ["car", "truck", "other-vehicle", "motorcycle"], p=[0.905, 0.03, 0.04, 0.025]
            )
            if kind == "motorcycle":
                objects.motorcycle_frame(
                    self.b,
                    rng,
                    x + 1.0,
                    side * lateral,
                    np.pi / 2,
                    RAW_ID["motorcycle"],
                    self.next_instance(),
                )
                x += 2.5
                continue
            length = objects.VEHICLE_SIZES[kind][0][1]
            if rng.uniform() < self.config.parked_car_probability:
                yaw = (0.0 if side < 0 else np.pi) + rng.normal(0, 0.03)
                objects.vehicle(
                    self.b,
                    rng,
                    x + 0.5 * length,
                    side * lateral,
                    yaw,
                    RAW_ID[kind],
                    self.next_instance(),
                    kind,
                )
            x += length + rng.uniform(0.8, 3.0)

    def _traffic(self):
        """Moving vehicles in every lane but the ego's, and riders coming towards the ego.

        Same-direction traffic overtakes the ego and riders are oncoming, so nothing travels
        beside the sensor for many scans (which would make rare classes frequent).
        """
        rng, layout, b = self.rng, self.layout, self.b
        for lane_y in layout.lane_centers():
            if abs(lane_y - layout.ego_lane_y) < 0.1:
                continue
            oncoming = lane_y > 0
            for x in self.poisson_positions(self.config.traffic_per_lane, self.x0, self.x1):
                kind = rng.choice(["car", "truck", "other-vehicle"], p=[0.9, 0.04, 0.06])
                bus = kind == "other-vehicle" and rng.uniform() < 0.5
                raw = RAW_ID["moving-bus" if bus else _MOVING[kind]]
                speed = (
                    -rng.uniform(6, 14) if oncoming else layout.ego_speed_mps + rng.uniform(3, 7)
                )
                yaw = np.pi if oncoming else 0.0
                instance = self.next_instance()
                objects.vehicle(b, rng, x, lane_y, yaw, raw, instance, kind, self.moving(speed, x))
        oncoming_lane = layout.lane_centers().max()
        for x in self.poisson_positions(self.config.bicyclists_per_block, self.x0, self.x1):
            motion = self.moving(-rng.uniform(3, 6), x)
            y = layout.half_width_m - 0.45
            raw, instance = RAW_ID["moving-bicyclist"], self.next_instance()
            objects.rider(b, rng, x, y, np.pi, raw, instance, motion, motorised=False)
        for x in self.poisson_positions(self.config.motorcyclists_per_block, self.x0, self.x1):
            motion = self.moving(-rng.uniform(8, 14), x)
            raw, instance = RAW_ID["moving-motorcyclist"], self.next_instance()
            objects.rider(b, rng, x, oncoming_lane, np.pi, raw, instance, motion, motorised=True)


_MOVING = {"car": "moving-car", "truck": "moving-truck", "other-vehicle": "moving-other-vehicle"}
