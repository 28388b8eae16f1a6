"""Per-model training transforms of host samples, named in the config (`build_transforms`).

A transform maps one sample (a dict of numpy arrays, leakjax/train/batch.py) and that sample's own
`np.random.Generator` (seeded by (seed, epoch, index) in leakjax/train/input_pipeline.py) to a new
sample of the same spatial size. The config names them in order and gives their arguments:

    config.data.transforms = ("cylinder3d_augment",)            # applied in this order
    config.data.transform_kwargs.cylinder3d_augment = {...}       # optional; defaults as released

`config.data.transforms = ()` trains without any. A transform that changes the sample's size
(a crop, dropped points) says so with an `output_size(size) -> size` attribute giving the size, or
an upper bound of it, so the input pipeline can choose a batch's capacity bucket before loading the
samples (each process loads only its own share).
Registry (a plain dict, like `MODELS`):

  cylinder3d_augment  Cylinder3D's released LiDAR augmentation (leakjax/augment.py): rotation about
                      z, x/y flips, x-y scaling, translation; remission untouched.
  randla_crop         RandLA-Net's released training crop: a random centre point and its
                      `num_points` nearest points (all points if fewer), in random order.
  salsanext_augment   SalsaNext's released LiDAR augmentation: with p = 0.5 per scan, a translation
                      (p = 0.5), a sign flip of y (p = 0.5) and a dropped fraction U(0, 0.5) of the
                      points.
  deeplab_augment     DeepLabV3's image augmentation on a normalised image sample: random scale
                      in [0.5, 2], horizontal flip, random crop_size^2 window padded with the mean
                      colour and ignored labels (leakjax/image_ops.py).

Models and datasets bring their own entries (RandLA-Net, range-image and image models).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from leakjax.augment import AugmentConfig, augment_points
from leakjax.image_ops import scale_flip_crop

Sample = dict[str, np.ndarray]
Transform = Callable[[Sample, np.random.Generator], Sample]


def cylinder3d_augment(**kwargs) -> Transform:
    """Cylinder3D's released augmentation of `sample["points"]` [N, >=3] (AugmentConfig kwargs)."""
    if "scale_range" in kwargs:
        kwargs["scale_range"] = tuple(kwargs["scale_range"])
    config = AugmentConfig(**kwargs)

    def transform(sample: Sample, rng: np.random.Generator) -> Sample:
        return {**sample, "points": augment_points(sample["points"], rng, config)}

    return transform


def randla_crop(num_points: int) -> Transform:
    """The released crop: centre = a uniformly drawn point, the `num_points` points nearest to it
    in 3-D (every point when the sample has fewer), shuffled; every per-point field alike."""
    if num_points < 1:
        raise ValueError(f"randla_crop: num_points {num_points} must be >= 1")

    def transform(sample: Sample, rng: np.random.Generator) -> Sample:
        xyz = np.asarray(sample["points"])[:, :3]
        count = len(xyz)
        centre = xyz[rng.integers(count)] if count else np.zeros(3)
        if count > num_points:
            distance = np.sum((xyz - centre) ** 2, axis=1)
            keep = np.argpartition(distance, num_points - 1)[:num_points]
        else:
            keep = np.arange(count)
        keep = keep[rng.permutation(len(keep))]
        return {key: np.asarray(value)[keep] for key, value in sample.items()}

    transform.output_size = lambda size: (min(int(size[0]), num_points),)
    return transform


def salsanext_augment(
    apply_probability: float = 0.5,
    translation_probability: float = 0.5,
    flip_probability: float = 0.5,
    max_drop_fraction: float = 0.5,
    translation_range: tuple = ((-5.0, 5.0), (-3.0, 3.0), (-1.0, 0.0)),
) -> Transform:
    """SalsaNext's training augmentation as released (train/tasks/semantic/dataset/kitti/parser.py
    and train/common/laserscan.py of TiagoCortinhal/SalsaNext).

    With probability `apply_probability` per scan: a translation (x ~ U(-5, 5), y ~ U(-3, 3),
    z ~ U(-1, 0) m) with `translation_probability`, the sign flip of y with `flip_probability`
    (flip first, then translate, as released), and a drop: int(N f) indices drawn uniformly with
    replacement from [0, N - 1) with f ~ U(0, max_drop_fraction), the distinct ones deleted from
    every per-point field (so fewer than N f points go, and the last point never does, as
    released). The released random rotation applies only to unlabelled scans: not here.
    Remission untouched; sample["points"] is [N, >=3].
    """
    bounds = np.asarray(translation_range, np.float64)
    if bounds.shape != (3, 2):
        raise ValueError(f"salsanext_augment: translation_range {translation_range} is not 3 pairs")

    def transform(sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= apply_probability:
            return sample
        translate = rng.random() < translation_probability
        flip = rng.random() < flip_probability
        fraction = rng.uniform(0.0, max_drop_fraction)
        points = np.array(sample["points"], copy=True)
        count = len(points)
        if flip:
            points[:, 1] = -points[:, 1]
        if translate:
            points[:, :3] += rng.uniform(bounds[:, 0], bounds[:, 1]).astype(points.dtype)
        sample = {**sample, "points": points}
        if count < 2:
            return sample
        dropped = rng.integers(0, count - 1, size=int(count * fraction))
        keep = np.ones(count, bool)
        keep[dropped] = False
        return {
            key: value[keep] if np.ndim(value) and len(value) == count else value
            for key, value in sample.items()
        }

    transform.output_size = lambda size: tuple(size)  # an upper bound: drops only shrink it
    return transform


def deeplab_augment(
    crop_size: int = 513,
    scale_range: tuple[float, float] = (0.5, 2.0),
    flip_probability: float = 0.5,
    label_fill: int = 255,
) -> Transform:
    """Scale / flip / crop of sample["image"] [H, W, 3] (normalised) and sample["labels"]."""
    scale_range = tuple(scale_range)

    def transform(sample: Sample, rng: np.random.Generator) -> Sample:
        image, labels = scale_flip_crop(
            sample["image"],
            sample["labels"],
            rng,
            crop_size,
            scale_range,
            flip_probability,
            label_fill=label_fill,
            normalize_image=False,
        )
        return {**sample, "image": image, "labels": labels}

    transform.output_size = lambda size: (crop_size, crop_size)
    return transform


TRANSFORMS: dict[str, Callable[..., Transform]] = {
    "cylinder3d_augment": cylinder3d_augment,
    "randla_crop": randla_crop,
    "salsanext_augment": salsanext_augment,
    "deeplab_augment": deeplab_augment,
}


def output_size(transforms: Sequence[Transform], size: tuple[int, ...]) -> tuple[int, ...]:
    """The sample size after `transforms`, or an upper bound of it (each transform keeps the size
    unless it has an `output_size`)."""
    for transform in transforms:
        size = tuple(getattr(transform, "output_size", lambda s: s)(size))
    return size


def build_transforms(
    names: Sequence[str], kwargs: Mapping[str, Mapping] | None = None
) -> list[Transform]:
    """The transforms `names` (in order) with their arguments `kwargs[name]` (default: none)."""
    kwargs = dict(kwargs or {})
    unknown = [name for name in list(names) + list(kwargs) if name not in TRANSFORMS]
    if unknown:
        raise ValueError(f"config.data.transforms: unknown {unknown}; known: {sorted(TRANSFORMS)}")
    return [TRANSFORMS[name](**dict(kwargs.get(name, {}))) for name in names]


def apply_transforms(
    sample: Sample, transforms: Sequence[Transform], rng: np.random.Generator
) -> Sample:
    """Applies `transforms` in order with one generator (the sample's)."""
    for transform in transforms:
        sample = transform(sample, rng)
    return sample
