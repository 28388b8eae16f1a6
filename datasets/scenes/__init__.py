"""Static scenes (S3DIS rooms, Semantic3D scans): pre-processing cache and samples, shared.

preprocess.py  grid sub-sampling with each raw point's projection and the raw label histogram
               per sub-sampled point, in memory or streamed in chunks with bounded memory
cache.py       `preprocess`: every cloud once into the cache, keyed by its settings and files
sources.py     `PossibilityCrops` (training, RandLA-Net's possibility-guided crops, deterministic
               and resumable) and `WholeClouds` (evaluation: every raw point scored once)
voting.py      `VotingCrops`: the released test's possibility-guided crops, votes averaged
               (evaluation option config.data.scene.evaluation = "possibility_votes")
"""

from datasets.scenes.cache import CachedCloud, CloudFiles, preprocess
from datasets.scenes.preprocess import (
    CellAccumulator,
    SubsampledCloud,
    subsample_chunks,
    subsample_cloud,
)
from datasets.scenes.sources import CropPlan, PossibilityCrops, WholeClouds, possibility_plan
from datasets.scenes.voting import VotingCrops, evaluation_source, evaluation_tag

__all__ = [
    "CachedCloud",
    "CellAccumulator",
    "CloudFiles",
    "CropPlan",
    "PossibilityCrops",
    "SubsampledCloud",
    "VotingCrops",
    "WholeClouds",
    "evaluation_source",
    "evaluation_tag",
    "possibility_plan",
    "preprocess",
    "subsample_chunks",
    "subsample_cloud",
]
