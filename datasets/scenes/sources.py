"""Samples of pre-processed static scenes: possibility-guided training crops, whole-cloud eval.

Both read the clouds of datasets/scenes/cache.py; a sample's `points` are float32 [n, 3 + F]: xyz
in metres relative to the cloud's centroid (the mean of its sub-sampled points), then the cloud's
features (colours / 255). **Choice**: the released RandLA-Net feeds xyz relative to the crop's
centre, which its crop-based test also does; a whole-cloud pass has one frame for the whole
cloud, so training crops use that frame too, or the coordinates the network sees in training
(within a few metres of 0) and in evaluation (the whole room or scan) would differ (measured on
the synthetic rooms: 45% accuracy on crops against 30% on whole rooms with crop-centred training).

**Training: `PossibilityCrops`**, RandLA-Net's `spatially_regular_gen` made deterministic and
resumable. As released: every point of every training cloud has a possibility, initialised with
small random values (uniform [0, 1e-3)); a crop takes the cloud with the lowest possibility and its
lowest-possibility point, moves that centre by Gaussian noise (sigma `centre_noise_m`, 0.35 m
released), takes the `num_points` sub-sampled points nearest the centre (all of a smaller cloud;
cKDTree), shuffles them, and raises the possibility of
each by (1 - d^2 / max d^2)^2 (d its distance to the centre), so the next crops go where the
network has seen least. The released possibility lives for the whole run; here it is drawn again
at each epoch from (seed, epoch), and the epoch's crop plan (cloud, centre per crop) is computed
sequentially from it, so crop `index` of epoch `epoch` (`sample(seed, epoch, index)`, the hook of
leakjax/train/input_pipeline.py, seed = config.seed) is a function of (seed, epoch, index): a
resumed run sees the batches of an uninterrupted one. An epoch is `crops_per_epoch` crops
(released: 500 steps x the batch). The plan costs one kNN query per crop, computed once per epoch
on first use (and again by every process of a multi-process run).

**Evaluation: `WholeClouds`**, one sample per cloud: the whole sub-sampled cloud, labels = the
majority labels of its points, and the batch
contract's optional `label_counts` int32 [S, C] = the cloud's raw label histogram per sub-sampled
point (unscored label ids zeroed). The evaluation counts the confusion from it (leakjax/train/
steps.py), which equals scoring every raw point with the prediction of its nearest sub-sampled
point (the released `proj`): every raw point is scored exactly once, in one static-shape pass per
cloud (the cloud must fit a capacity bucket, config.data.buckets). The released test instead
repeats possibility-guided crops and averages their softmax (p <- 0.98 p + 0.02 new) until every
point is covered: datasets/scenes/voting.py `VotingCrops`, the other evaluation option.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from scipy.spatial import cKDTree

from datasets.scenes.cache import CachedCloud
from leakjax.label_space import LabelSpace
from leakjax.train.batch import LABEL_COUNTS

_PLAN_STREAM = 2**31 + 1  # SeedSequence stream ids, apart from the input pipeline's
_SHUFFLE_STREAM = 2**31 + 2


def _generator(*entropy: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(entropy))))


def centroid(xyz: np.ndarray) -> np.ndarray:
    """float64 [3]: the mean of a cloud's sub-sampled points, the origin of its samples' xyz."""
    return np.asarray(xyz, np.float64).mean(axis=0)


def _inputs(xyz: np.ndarray, centre: np.ndarray, features: np.ndarray) -> np.ndarray:
    """float32 [n, 3 + F]: xyz - centre, features."""
    centred = np.asarray(xyz, np.float64) - np.asarray(centre, np.float64)
    return np.concatenate([centred.astype(np.float32), features.astype(np.float32)], axis=1)


class WholeClouds:
    """Evaluation samples: one whole sub-sampled cloud each (module docstring); a `Source`."""

    def __init__(self, clouds: Sequence[CachedCloud], label_space: LabelSpace):
        self.clouds = list(clouds)
        self.label_space = label_space

    def __len__(self) -> int:
        return len(self.clouds)

    def size(self, index: int) -> tuple[int]:
        return (self.clouds[index].num_points,)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        arrays = self.clouds[index].arrays()
        xyz = arrays["points"]
        num_points = len(xyz)
        scored = self.label_space.is_scored(np.arange(self.label_space.num_classes))
        if "label_hist" in arrays:
            labels, counts = arrays["labels"], arrays["label_hist"] * scored
        else:  # unlabelled (a test cloud): nothing to count
            labels = np.full(num_points, self.label_space.no_label, np.int32)
            counts = np.zeros((num_points, self.label_space.num_classes), np.int32)
        return {
            "points": _inputs(xyz, centroid(xyz), arrays["features"]),
            "labels": labels.astype(np.int32),
            LABEL_COUNTS: counts.astype(np.int32),
        }

    def labels(self, index: int) -> np.ndarray:
        return self[index]["labels"]

    def num_scored_raw_points(self, index: int) -> int:
        """Raw points with a scored label in cloud `index` (what its evaluation counts)."""
        return int(self[index][LABEL_COUNTS].sum())


@dataclasses.dataclass(frozen=True)
class CropPlan:
    """One epoch's crops: cloud int32 [n] and noisy centre float64 [n, 3] of each."""

    cloud: np.ndarray
    centre: np.ndarray


class NearestPoints:
    """The k sub-sampled points of a cloud nearest a centre (cKDTree per cloud, built on first
    use): `(cloud, centre, k)` -> (indices int64 [min(k, S)], squared distances), nearest first."""

    def __init__(self, xyz: Sequence[np.ndarray]):
        self.xyz = xyz
        self._trees: list[cKDTree] | None = None

    def __call__(self, cloud: int, centre: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._trees is None:
            self._trees = [cKDTree(np.asarray(xyz, np.float64)) for xyz in self.xyz]
        distance, index = self._trees[cloud].query(centre, k=min(k, len(self.xyz[cloud])))
        return np.asarray(index, np.int64).reshape(-1), np.square(distance).reshape(-1)


def possibility_plan(
    xyz: Sequence[np.ndarray],
    neighbours: Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]],
    rng: np.random.Generator,
    centre_noise_m: float,
    num_crops: int | None = None,
    min_possibility: float | None = None,
) -> CropPlan:
    """RandLA-Net's possibility-guided crop sequence (module docstring), as released.

    Every point of every cloud gets a possibility uniform in [0, 1e-3) from `rng`; each crop takes
    the cloud with the lowest possibility and its lowest point, adds Gaussian noise (sigma
    `centre_noise_m`) to that centre, and raises the possibility of each of the centre's
    `neighbours(cloud, centre)` = (indices [k], squared distances [k]) by (1 - d^2 / max d^2)^2.
    The geometry alone drives it (never the predictions), so the whole sequence is known before
    the network runs. It stops after `num_crops` crops (training epochs) or once every point's
    possibility exceeds `min_possibility` (the released test); exactly one of the two is given.
    """
    if (num_crops is None) == (min_possibility is None):
        raise ValueError("possibility_plan: give exactly one of num_crops and min_possibility")
    possibility = [rng.random(len(points)) * 1e-3 for points in xyz]
    lowest = np.array([p.min() for p in possibility])
    clouds, centres = [], []
    while (len(clouds) < num_crops) if num_crops is not None else (lowest.min() <= min_possibility):
        cloud = int(np.argmin(lowest))
        point = int(np.argmin(possibility[cloud]))
        centre = xyz[cloud][point].astype(np.float64)
        centre = centre + rng.normal(scale=centre_noise_m, size=3)
        index, squared = neighbours(cloud, centre)
        if len(index) > 1:
            possibility[cloud][index] += np.square(1.0 - squared / max(squared.max(), 1e-12))
        else:  # a one-point crop is its own farthest point: it would never rise
            possibility[cloud][index] += 1.0
        lowest[cloud] = possibility[cloud].min()
        clouds.append(cloud)
        centres.append(centre)
    return CropPlan(np.asarray(clouds, np.int32), np.asarray(centres, np.float64).reshape(-1, 3))


class PossibilityCrops:
    """Training samples: possibility-guided crops (module docstring); a `Source` with `sample`.

    Args:
      clouds: the training clouds (labelled).
      num_points: points per crop (40960 S3DIS, 65536 Semantic3D as released).
      crops_per_epoch: crops per epoch (= len(self)).
      centre_noise_m: standard deviation of the centre's noise (metres).
      num_classes: label ids C (for `class_counts`).
    """

    def __init__(
        self,
        clouds: Sequence[CachedCloud],
        num_points: int,
        crops_per_epoch: int,
        centre_noise_m: float,
        num_classes: int,
    ):
        if num_points < 1 or crops_per_epoch < 1:
            raise ValueError("PossibilityCrops: num_points and crops_per_epoch must be >= 1")
        if not clouds:
            raise ValueError("PossibilityCrops: no training clouds")
        self.num_points = int(num_points)
        self.crops_per_epoch = int(crops_per_epoch)
        self.centre_noise_m = float(centre_noise_m)
        self.num_classes = int(num_classes)
        self.names = [cloud.name for cloud in clouds]
        arrays = [cloud.arrays() for cloud in clouds]
        if any("labels" not in a for a in arrays):
            raise ValueError("PossibilityCrops: every training cloud needs labels")
        self.xyz = [a["points"] for a in arrays]
        self.centroids = [centroid(xyz) for xyz in self.xyz]
        self.features = [a["features"] for a in arrays]
        self.cloud_labels = [a["labels"].astype(np.int32) for a in arrays]
        self._nearest = NearestPoints(self.xyz)
        self._plan: tuple[tuple[int, int], CropPlan] | None = None

    def __len__(self) -> int:
        return self.crops_per_epoch

    def size(self, index: int) -> tuple[int]:
        """An upper bound of every crop's size: num_points, or the largest cloud if smaller."""
        return (min(self.num_points, max(len(xyz) for xyz in self.xyz)),)

    def _neighbours(self, cloud: int, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._nearest(cloud, centre, self.num_points)

    def plan(self, seed: int, epoch: int) -> CropPlan:
        """The crops of `epoch` (module docstring), computed once and kept for the last epoch."""
        if self._plan is not None and self._plan[0] == (seed, epoch):
            return self._plan[1]
        rng = _generator(seed, epoch, _PLAN_STREAM)
        plan = possibility_plan(
            self.xyz, self._neighbours, rng, self.centre_noise_m, num_crops=self.crops_per_epoch
        )
        self._plan = ((seed, epoch), plan)
        return plan

    def sample(self, seed: int, epoch: int, index: int) -> dict[str, np.ndarray]:
        """Crop `index` of `epoch`: its points shuffled (seeded by (seed, epoch, index))."""
        plan = self.plan(seed, epoch)
        cloud, centre = int(plan.cloud[index]), plan.centre[index]
        neighbours, _ = self._neighbours(cloud, centre)
        rng = _generator(seed, epoch, index, _SHUFFLE_STREAM)
        neighbours = neighbours[rng.permutation(len(neighbours))]
        features = self.features[cloud][neighbours]
        return {
            "points": _inputs(self.xyz[cloud][neighbours], self.centroids[cloud], features),
            "labels": self.cloud_labels[cloud][neighbours],
        }

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """Crop `index` of epoch 0 with seed 0."""
        return self.sample(0, 0, index)

    def class_counts(self) -> np.ndarray:
        """int64 [C]: sub-sampled training points per label id, each counted once (the released
        RandLA-Net class counts are taken the same way)."""
        counts = np.zeros(self.num_classes, np.int64)
        for labels in self.cloud_labels:
            counts += np.bincount(labels, minlength=self.num_classes)[: self.num_classes]
        return counts


__all__ = ["CropPlan", "NearestPoints", "PossibilityCrops", "WholeClouds", "possibility_plan"]
