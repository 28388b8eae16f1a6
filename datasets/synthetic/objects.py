"""Shape templates of the synthetic world's objects, built from boxes, cylinders and ellipsoids.

Look-alike classes share templates on purpose, so that a model confuses them the way it does on
real scans: car, truck and other-vehicle are one two-box body differing mostly in size; person,
bicyclist and motorcyclist share the human figure; pole, trunk and the traffic-sign post are thin
vertical cylinders. Every function adds one object to a `PrimitiveBuilder` at ground level z = 0.
"""

import numpy as np

from datasets.semantic_kitti.label_config import LABEL_NAMES
from datasets.synthetic.primitives import PrimitiveBuilder

RAW_ID = {name: raw_id for raw_id, name in LABEL_NAMES.items()}

# (length, width, height) ranges in metres and the share of the length taken by the cabin
VEHICLE_SIZES = {
    "car": ((3.9, 4.9), (1.7, 1.9), (1.4, 1.6), 0.55),
    "truck": ((6.5, 10.0), (2.3, 2.55), (2.8, 3.6), 0.85),
    "other-vehicle": ((5.0, 12.0), (2.0, 2.55), (2.2, 3.3), 0.8),  # vans, buses, trailers
}


def vehicle(b: PrimitiveBuilder, rng, x, y, yaw, raw_label, instance, kind, motion=None):
    """A two-box vehicle (body and cabin) centred at (x, y) facing `yaw`."""
    (l_lo, l_hi), (w_lo, w_hi), (h_lo, h_hi), cabin_share = VEHICLE_SIZES[kind]
    length, width, height = (
        rng.uniform(l_lo, l_hi),
        rng.uniform(w_lo, w_hi),
        rng.uniform(h_lo, h_hi),
    )
    paint = rng.choice([0.08, 0.2, 0.35, 0.55])
    common = dict(instance=instance, motion=motion or (0.0, 0.0, 0.0), yaw=yaw)
    clearance, body_top = 0.25, 0.2 + 0.5 * height
    b.box(
        (x, y, 0.5 * (clearance + body_top)),
        (0.5 * length, 0.5 * width, 0.5 * (body_top - clearance)),
        raw_label,
        paint,
        **common,
    )
    cabin_length = cabin_share * length
    shift = -0.5 * (length - cabin_length) * (0.4 if kind == "car" else -1.0)
    b.box(
        (x + shift * np.cos(yaw), y + shift * np.sin(yaw), 0.5 * (body_top + height)),
        (0.5 * cabin_length, 0.47 * width, 0.5 * (height - body_top)),
        raw_label,
        0.6 * paint,
        porosity=0.25 if kind == "car" else 0.1,  # windows return less
        **common,
    )


def human(b: PrimitiveBuilder, x, y, base_z, height, raw_label, instance, motion, rng):
    """Legs, torso and head of a human figure standing at (x, y, base_z)."""
    common = dict(instance=instance, motion=motion)
    cloth = rng.uniform(0.1, 0.45)
    leg_top = base_z + 0.5 * height
    b.box(
        (x, y, 0.5 * (base_z + leg_top)),
        (0.14, 0.18, 0.5 * (leg_top - base_z)),
        raw_label,
        cloth,
        **common,
    )
    shoulder = base_z + 0.83 * height
    b.cylinder(x, y, leg_top, shoulder, 0.19, raw_label, cloth, **common)
    head = 0.07 * height
    b.ellipsoid((x, y, shoulder + head + 0.02), (head, head, 1.2 * head), raw_label, 0.3, **common)


def person(b, rng, x, y, base_z, raw_label, instance, motion=None):
    human(b, x, y, base_z, rng.uniform(1.55, 1.9), raw_label, instance, motion or (0, 0, 0), rng)


def bicycle_frame(b, rng, x, y, yaw, raw_label, instance, motion=None):
    """A bicycle: thin porous frame box with wheels."""
    common = dict(instance=instance, motion=motion or (0.0, 0.0, 0.0), yaw=yaw)
    b.box((x, y, 0.55), (0.85, 0.05, 0.45), raw_label, 0.3, porosity=0.55, **common)


def motorcycle_frame(b, rng, x, y, yaw, raw_label, instance, motion=None):
    common = dict(instance=instance, motion=motion or (0.0, 0.0, 0.0), yaw=yaw)
    b.box(
        (x, y, 0.6), (1.05, 0.35, 0.42), raw_label, rng.uniform(0.15, 0.5), porosity=0.15, **common
    )


def rider(b, rng, x, y, yaw, raw_label, instance, motion, motorised):
    """Bicyclist or motorcyclist: vehicle frame plus a seated human, all one label."""
    (motorcycle_frame if motorised else bicycle_frame)(
        b, rng, x, y, yaw, raw_label, instance, motion
    )
    human(b, x, y, 0.55, rng.uniform(1.4, 1.6), raw_label, instance, motion, rng)


def pole(b, x, y, height, radius, raw_label=None, reflectivity=0.3):
    b.cylinder(
        x, y, 0.0, height, radius, RAW_ID["pole"] if raw_label is None else raw_label, reflectivity
    )


def street_light(b, rng, x, y, side):
    height = rng.uniform(6.0, 9.0)
    radius = rng.uniform(0.08, 0.15)
    pole(b, x, y, height, radius)
    arm = rng.uniform(1.0, 2.0)
    b.box((x, y - side * 0.5 * arm, height - 0.05), (0.08, 0.5 * arm, 0.06), RAW_ID["pole"], 0.3)


def traffic_sign(b, rng, x, y):
    """Sign plate (retro-reflective, hence bright) on a thin post; the post is labelled pole."""
    top = rng.uniform(2.2, 3.2)
    pole(b, x, y, top, rng.uniform(0.03, 0.05))
    size = rng.uniform(0.25, 0.4)
    for level in range(1 + (rng.uniform() < 0.25)):
        b.box(
            (x, y, top - level * 2.2 * size),
            (0.03, size, size),
            RAW_ID["traffic-sign"],
            rng.uniform(0.8, 1.0),
        )


def tree(b, rng, x, y, scale=1.0):
    """Trunk plus a porous crown of foliage."""
    trunk_height = rng.uniform(1.5, 3.0) * scale
    trunk_radius = rng.uniform(0.08, 0.18) * scale
    b.cylinder(x, y, 0.0, trunk_height + 0.5, trunk_radius, RAW_ID["trunk"], rng.uniform(0.2, 0.35))
    radius = rng.uniform(2.2, 4.0) * scale
    crown_z = trunk_height + 0.7 * radius
    b.ellipsoid(
        (x, y, crown_z),
        (radius, radius * rng.uniform(0.85, 1.15), radius * rng.uniform(0.8, 1.2)),
        RAW_ID["vegetation"],
        rng.uniform(0.35, 0.55),
        porosity=0.3,
        depth_jitter_m=0.6,
    )


def bush(b, rng, x, y, radius):
    b.ellipsoid(
        (x, y, 0.6 * radius),
        (radius, radius * rng.uniform(0.7, 1.3), radius * rng.uniform(0.6, 0.9)),
        RAW_ID["vegetation"],
        rng.uniform(0.35, 0.55),
        porosity=0.15,
        depth_jitter_m=0.3,
    )
