"""Static scenes (S3DIS rooms, Semantic3D scans): pre-processing cache and samples, shared.

preprocess.py  grid sub-sampling with each raw point's projection and the raw label histogram
               per sub-sampled point, in memory or streamed in chunks with bounded memory
cache.py       `preprocess`: every cloud once into the cache, keyed by its settings and files
sources.py     `PossibilityCrops` (training, RandLA-Net's possibility-guided crops, deterministic
               and resumable) and `WholeClouds` (evaluation: every raw point scored once)
"""

from datasets.scenes.cache import CachedCloud, CloudFiles, preprocess
from datasets.scenes.preprocess import (
    CellAccumulator,
    SubsampledCloud,
    subsample_chunks,
    subsample_cloud,
)
from datasets.scenes.sources import CropPlan, PossibilityCrops, WholeClouds

__all__ = [
    "CachedCloud",
    "CellAccumulator",
    "CloudFiles",
    "CropPlan",
    "PossibilityCrops",
    "SubsampledCloud",
    "WholeClouds",
    "preprocess",
    "subsample_chunks",
    "subsample_cloud",
]
