"""Test-time possibility-guided crops with vote averaging: the released RandLA-Net test protocol.

An evaluation option of the static scenes (config.data.scene.evaluation = "possibility_votes";
the other, "whole_clouds", is datasets/scenes/sources.py `WholeClouds`). As released: every
sub-sampled point of every evaluated cloud gets a possibility (uniform [0, 1e-3)); crops are taken
where it is lowest, with the training crops' centre noise, and raise it by (1 - d^2 / max d^2)^2
(datasets/scenes/sources.py `possibility_plan`) until every point's possibility exceeds
`min_possibility` (0.5 released); the network's class probabilities on each crop are folded into
its cloud's running vote p <- s p + (1 - s) new (s = `smoothing`, 0.98 released), in crop order;
each sub-sampled point is predicted by the argmax of its vote and every raw point is scored with
its nearest sub-sampled point's prediction (the released `proj`, here the raw label histogram per
sub-sampled point, `label_counts`).

The crops depend on geometry only, so the whole plan is drawn once from `seed` before the network
runs: the number of crops is known (len), every crop is a sample of this `Source` (its xyz in the
cloud's centroid frame, as in training: sources.py), and `crop_entries(index)` says which
sub-sampled points of which cloud it holds. The evaluation that consumes it is
leakjax/train/votes.py. A baseline and a LEAK run are evaluated on the same crops.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from datasets.scenes.cache import CachedCloud
from datasets.scenes.sources import (
    CropPlan,
    NearestPoints,
    WholeClouds,
    _generator,
    _inputs,
    centroid,
    possibility_plan,
)
from leakjax.label_space import LabelSpace
from leakjax.train.batch import LABEL_COUNTS

_VOTE_STREAM = 2**31 + 3  # SeedSequence stream id, apart from the training crops'


class VotingCrops:
    """Evaluation samples: the released test's crops of whole clouds (module docstring).

    Args:
      clouds: the evaluated clouds (labelled or not).
      label_space: their label ids (the scored ones count).
      num_points: points per crop (all of a smaller cloud).
      centre_noise_m: standard deviation of the crop centre's noise (metres).
      min_possibility: the plan ends once every point's possibility exceeds it.
      smoothing: s of the vote p <- s p + (1 - s) new.
      seed: draws the plan (possibilities and noise).
    """

    # The crops overlap: no per-entry raw label counts (leakjax/train/input_pipeline.py); the
    # voted evaluation counts raw points per cloud (`cloud_label_counts`).
    optional_fields = ()

    def __init__(
        self,
        clouds: Sequence[CachedCloud],
        label_space: LabelSpace,
        num_points: int,
        centre_noise_m: float,
        min_possibility: float = 0.5,
        smoothing: float = 0.98,
        seed: int = 0,
    ):
        if num_points < 1:
            raise ValueError("VotingCrops: num_points must be >= 1")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"VotingCrops: smoothing {smoothing} is not in [0, 1)")
        if not clouds:
            raise ValueError("VotingCrops: no clouds to evaluate")
        self.whole = WholeClouds(clouds, label_space)
        self.label_space = label_space
        self.num_points = int(num_points)
        self.centre_noise_m = float(centre_noise_m)
        self.min_possibility = float(min_possibility)
        self.smoothing = float(smoothing)
        self.seed = int(seed)
        self._arrays = [cloud.arrays() for cloud in clouds]
        self._xyz = [arrays["points"] for arrays in self._arrays]
        self._centroids = [centroid(xyz) for xyz in self._xyz]
        self._nearest = NearestPoints(self._xyz)
        self._plan: CropPlan | None = None

    @property
    def evaluation_tag(self) -> str:
        """Names the protocol and its settings (leakjax/train/trainer.py `evaluation_tag`): a
        run's cached confusions of different protocols or settings stay apart."""
        return votes_tag(
            self.num_points, self.centre_noise_m, self.min_possibility, self.smoothing, self.seed
        )

    @property
    def num_clouds(self) -> int:
        return len(self._xyz)

    def cloud_size(self, cloud: int) -> int:
        """Sub-sampled points of cloud `cloud` (the entries its vote holds)."""
        return len(self._xyz[cloud])

    def cloud_label_counts(self, cloud: int) -> np.ndarray:
        """int32 [S, C]: the raw points of each scored label id each sub-sampled point stands
        for (zeros for an unlabelled cloud), as `WholeClouds` gives them."""
        return self.whole[cloud][LABEL_COUNTS]

    def _neighbours(self, cloud: int, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._nearest(cloud, centre, self.num_points)

    @property
    def plan(self) -> CropPlan:
        """Every crop of the evaluation (cloud, noisy centre), drawn once from `seed`."""
        if self._plan is None:
            self._plan = possibility_plan(
                self._xyz,
                self._neighbours,
                _generator(self.seed, _VOTE_STREAM),
                self.centre_noise_m,
                min_possibility=self.min_possibility,
            )
        return self._plan

    def __len__(self) -> int:
        return len(self.plan.cloud)

    def size(self, index: int) -> tuple[int]:
        return (min(self.num_points, self.cloud_size(int(self.plan.cloud[index]))),)

    def crop_entries(self, index: int) -> tuple[int, np.ndarray]:
        """(cloud, indices int64 [n]): the sub-sampled points crop `index` holds, in its order."""
        cloud = int(self.plan.cloud[index])
        indices, _ = self._neighbours(cloud, self.plan.centre[index])
        return cloud, indices

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        cloud, indices = self.crop_entries(index)
        arrays = self._arrays[cloud]
        if "labels" in arrays:
            labels = arrays["labels"][indices].astype(np.int32)
        else:
            labels = np.full(len(indices), self.label_space.no_label, np.int32)
        features = arrays["features"][indices]
        return {
            "points": _inputs(self._xyz[cloud][indices], self._centroids[cloud], features),
            "labels": labels,
        }


def votes_tag(
    num_points: int, centre_noise_m: float, min_possibility: float, smoothing: float, seed: int
) -> str:
    """The suffix of a voted evaluation's cached confusion files (`val_confusion_step<N><tag>`)."""
    return (
        f"_votes-n{int(num_points)}-noise{float(centre_noise_m):g}-p{float(min_possibility):g}"
        f"-s{float(smoothing):g}-seed{int(seed)}"
    )


def evaluation_tag(scene) -> str:
    """The confusion-file suffix of config.data.scene's evaluation (a ConfigDict or the dict of a
    saved config.json): '' for whole clouds, `votes_tag` of its settings for votes."""
    evaluation = scene.get("evaluation", "whole_clouds")
    if evaluation == "whole_clouds":
        return ""
    return votes_tag(
        scene["crop_points"],
        scene["centre_noise_m"],
        scene["vote_min_possibility"],
        scene["vote_smoothing"],
        scene["vote_seed"],
    )


def evaluation_source(clouds: Sequence[CachedCloud], label_space: LabelSpace, scene) -> object:
    """The evaluation samples config.data.scene asks for: `WholeClouds` ("whole_clouds") or
    `VotingCrops` ("possibility_votes", with its crop size, noise, threshold and smoothing)."""
    if scene.evaluation == "whole_clouds":
        return WholeClouds(clouds, label_space)
    if scene.evaluation == "possibility_votes":
        return VotingCrops(
            clouds,
            label_space,
            scene.crop_points,
            scene.centre_noise_m,
            min_possibility=scene.vote_min_possibility,
            smoothing=scene.vote_smoothing,
            seed=scene.vote_seed,
        )
    raise ValueError(
        f"config.data.scene.evaluation {scene.evaluation!r}: expected 'whole_clouds' or "
        "'possibility_votes'"
    )


__all__ = ["VotingCrops", "evaluation_source", "evaluation_tag", "votes_tag"]
