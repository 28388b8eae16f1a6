"""Semantic3D as a registered dataset: the released train / validation split of its labelled scans.

The data directory holds the benchmark's text files, `<name>.txt` and `<name>.labels` (RandLA-Net's
`original_data/`); the splits are datasets/semantic3d/layout.py's: validation = bildstein_station3
and sg27_station2 (RandLA-Net's, from KPConv), train = the 13 others. Without a data directory the
synthetic scans of datasets/semantic3d/synthetic.py (config.data.synthetic: seed, points_per_scan;
the 15 training names and the 4 reduced-8 test names) are generated once into the cache and read
through the same reader.

Pre-processing: grid sub-sampling at config.data.scene.grid_size_m (0.06 m as released for the
network input; the released 0.01 m "original" step is skipped: every raw point is scored), colours
/ 255 as features (intensity is not used, as released), streamed: each scan is parsed
config.data.scene.chunk_points lines at a time (`iter_chunks`) and sub-sampled as it is read with
bounded memory (datasets/scenes/preprocess.py), then cached. Label 0 (unlabelled) is ignored: never
a target, never scored. Samples (`SPEC`): points float32 [n, 6] = xyz relative to the scan's
centroid, then r, g, b / 255, labels int32 [n]: possibility-guided crops of
config.data.scene.crop_points in training, whole scans with `label_counts` int32 [n, 9] in
validation.
"""

from __future__ import annotations

import pathlib

import ml_collections
import numpy as np

from datasets.cache import ensure_generated
from datasets.scenes import (
    CachedCloud,
    CloudFiles,
    PossibilityCrops,
    evaluation_source,
    preprocess,
)
from datasets.semantic3d.io import iter_chunks
from datasets.semantic3d.labels import LABEL_SPACE, NUM_CLASSES
from datasets.semantic3d.layout import REDUCED8_TEST_SCANS, TRAINING_SCANS, split_files
from leakjax.data import Dataset
from leakjax.train.batch import point_cloud_spec

SPEC = point_cloud_spec(6, label_counts=NUM_CLASSES)
READER = "semantic3d text: xyz, rgb / 255"


def scan_clouds(files, chunk_points: int) -> list[CloudFiles]:
    """A CloudFiles per (txt, labels or None) pair, streamed `chunk_points` lines at a time."""

    def read(txt: pathlib.Path, labels: pathlib.Path | None):
        for chunk in iter_chunks(txt, labels, chunk_points):
            rgb = chunk.points[:, 4:7].astype(np.float32) / 255.0
            yield chunk.points[:, :3].astype(np.float64), rgb, chunk.labels

    return [
        CloudFiles(
            txt.name[: -len(".txt")],
            (txt,) if labels is None else (txt, labels),
            lambda txt=txt, labels=labels: read(txt, labels),
            READER,
        )
        for txt, labels in files
    ]


def ensure_synthetic(settings: ml_collections.ConfigDict, cache_root: pathlib.Path) -> pathlib.Path:
    """Generates the synthetic scans of `settings` once; returns their directory."""

    def generate(directory: pathlib.Path) -> None:
        from datasets.semantic3d import synthetic  # noqa: PLC0415 - only without a data directory

        synthetic.generate(
            directory,
            seed=settings.seed,
            scan_names=TRAINING_SCANS,
            test_scan_names=REDUCED8_TEST_SCANS,
            points_per_scan=settings.points_per_scan,
        )

    return ensure_generated(
        settings, cache_root, generate, "the synthetic Semantic3D scans", "semantic3d"
    )


def data_root(
    data_config: ml_collections.ConfigDict, data_dir: str | None, cache_root: pathlib.Path
) -> tuple[pathlib.Path, str]:
    """(directory of the scans, a description): `data_dir` or the synthetic scans."""
    if data_dir:
        return pathlib.Path(data_dir), f"Semantic3D at {data_dir}"
    root = ensure_synthetic(data_config.synthetic, cache_root)
    return root, f"synthetic Semantic3D scans at {root}"


def split_clouds(
    data_config: ml_collections.ConfigDict, root: pathlib.Path, split: str, cache_root
) -> list[CachedCloud]:
    """The pre-processed (cached) clouds of a split of layout.SPLITS."""
    scene = data_config.scene
    clouds = scan_clouds(split_files(root, split), scene.chunk_points)
    return preprocess(clouds, scene.grid_size_m, NUM_CLASSES, cache_root, "semantic3d")


def load_dataset(
    data_config: ml_collections.ConfigDict, data_dir: str | None, cache_root: pathlib.Path
) -> Dataset:
    """Train (possibility-guided crops of the 13 training scans) and validation (the 2 whole
    validation scans) splits, from `data_dir` or the synthetic scans."""
    root, where = data_root(data_config, data_dir, cache_root)
    train_clouds = split_clouds(data_config, root, "train", cache_root)
    validation_clouds = split_clouds(data_config, root, "validation", cache_root)
    scene = data_config.scene
    train = PossibilityCrops(
        train_clouds,
        scene.crop_points,
        scene.crops_per_epoch,
        centre_noise_m=scene.centre_noise_m,
        num_classes=NUM_CLASSES,
    )
    validation = evaluation_source(validation_clouds, LABEL_SPACE, scene)
    description = (
        f"{where}, validation {[c.name for c in validation_clouds]} vs {len(train_clouds)} "
        f"training scans, grid {scene.grid_size_m} m"
    )
    return Dataset("semantic3d", LABEL_SPACE, SPEC, train, validation, description)
