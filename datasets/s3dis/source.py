"""S3DIS as a registered dataset: one fold of the release (or of its synthetic stand-in).

The protocol comes from the config: `config.data.test_area` (default 5) is the fold's test area and
its validation split; the five other areas train (datasets/s3dis/protocols.py: `area5` and the six
folds of 6-fold cross-validation). The data directory holds the official release
(`Stanford3dDataset_v1.2_Aligned_Version/Area_N/<room>/Annotations/`, or that directory itself) or
mmdetection3d's pre-processed layout (`points/` and `semantic_mask/` with `Area_N_<room>.bin`).
Without one, the synthetic rooms of datasets/s3dis/synthetic.py (config.data.synthetic: seed,
rooms_per_area, points_per_m2; all six areas) are generated once into the cache and read through
the official-layout reader.

Pre-processing as released (RandLA-Net `data_prepare_s3dis.py`): each room's minimum corner is
subtracted, then grid sub-sampling at config.data.scene.grid_size_m (0.04 m) with colours / 255,
each raw point's nearest sub-sampled point and its label histogram (datasets/scenes/, cached).
Samples (`SPEC`): points float32 [n, 6] = xyz relative to the room's centroid (in training crops
too: datasets/scenes/sources.py says why) and r, g, b / 255; labels int32 [n] class ids 0..12;
validation adds
`label_counts` int32 [n, 13], so every raw point of the test area is scored (datasets/scenes/
sources.py). Training samples are possibility-guided crops of config.data.scene.crop_points.
"""

from __future__ import annotations

import pathlib

import ml_collections
import numpy as np

from datasets.cache import ensure_generated
from datasets.s3dis.io import list_mmdet3d_scenes, load_mmdet3d_scene, load_room
from datasets.s3dis.labels import LABEL_SPACE, NUM_CLASSES
from datasets.s3dis.layout import AREAS, area_name, list_rooms, scene_name
from datasets.scenes import CloudFiles, PossibilityCrops, evaluation_source, preprocess
from leakjax.data import Dataset
from leakjax.train.batch import point_cloud_spec

SPEC = point_cloud_spec(6, label_counts=NUM_CLASSES)


def _room_chunks(points: np.ndarray, labels: np.ndarray):
    """The one chunk of a room: xyz minus the room's minimum corner, rgb / 255, labels."""
    xyz = points[:, :3].astype(np.float64)
    return [(xyz - xyz.min(axis=0), points[:, 3:6].astype(np.float32) / 255.0, labels)]


def official_clouds(root: pathlib.Path, areas) -> list[CloudFiles]:
    """The rooms of `areas` in the official layout, sorted by area then room name."""
    clouds = []
    for area in areas:
        for room in list_rooms(root, area):
            files = tuple(sorted((room / "Annotations").glob("*.txt")))
            clouds.append(
                CloudFiles(
                    scene_name(room),
                    files,
                    lambda room=room: _room_chunks(*load_room(room)),
                    "s3dis official annotations: xyz - min, rgb / 255",
                )
            )
    return clouds


def mmdet3d_clouds(root: pathlib.Path, areas) -> list[CloudFiles]:
    """The scenes of `areas` in mmdetection3d's layout (`Area_N_<room>`), sorted by name."""
    wanted = {area_name(a) for a in areas}
    clouds = []
    for name in list_mmdet3d_scenes(root):
        if "_".join(name.split("_")[:2]) not in wanted:
            continue
        files = (root / "points" / f"{name}.bin", root / "semantic_mask" / f"{name}.bin")
        clouds.append(
            CloudFiles(
                name,
                files,
                lambda name=name: _room_chunks(*load_mmdet3d_scene(root, name)),
                "s3dis mmdetection3d bins: xyz - min, rgb / 255",
            )
        )
    return clouds


def fold_clouds(root: pathlib.Path, test_area: int) -> tuple[list[CloudFiles], list[CloudFiles]]:
    """(train rooms, test-area rooms) of a data directory in either layout."""
    train_areas = [a for a in AREAS if a != test_area]
    if (root / "points").is_dir() and (root / "semantic_mask").is_dir():
        train, test = mmdet3d_clouds(root, train_areas), mmdet3d_clouds(root, [test_area])
    else:
        train, test = official_clouds(root, train_areas), official_clouds(root, [test_area])
    if not train or not test:
        raise ValueError(
            f"{root}: S3DIS fold with test area {test_area} needs rooms in the test area and in "
            f"at least one other area; found {len(train)} train and {len(test)} test rooms"
        )
    return train, test


def ensure_synthetic(settings: ml_collections.ConfigDict, cache_root: pathlib.Path) -> pathlib.Path:
    """Generates the synthetic rooms of `settings` (all six areas) once; returns their root."""

    def generate(directory: pathlib.Path) -> None:
        from datasets.s3dis import synthetic  # noqa: PLC0415 - only needed without a data directory

        synthetic.generate(
            directory,
            seed=settings.seed,
            areas=AREAS,
            rooms_per_area=settings.rooms_per_area,
            points_per_m2=settings.points_per_m2,
        )

    return ensure_generated(settings, cache_root, generate, "the synthetic S3DIS rooms", "s3dis")


def load_dataset(
    data_config: ml_collections.ConfigDict, data_dir: str | None, cache_root: pathlib.Path
) -> Dataset:
    """Train (possibility-guided crops of the five other areas) and validation (whole rooms of
    config.data.test_area) splits, from `data_dir` or the synthetic rooms."""
    test_area = int(area_name(data_config.test_area)[len("Area_") :])
    if data_dir:
        root = pathlib.Path(data_dir)
        where = f"S3DIS at {data_dir}"
    else:
        root = ensure_synthetic(data_config.synthetic, cache_root)
        where = f"synthetic S3DIS rooms at {root}"
    train_files, test_files = fold_clouds(root, test_area)
    scene = data_config.scene
    train_clouds = preprocess(train_files, scene.grid_size_m, NUM_CLASSES, cache_root, "s3dis")
    test_clouds = preprocess(test_files, scene.grid_size_m, NUM_CLASSES, cache_root, "s3dis")
    train = PossibilityCrops(
        train_clouds,
        scene.crop_points,
        scene.crops_per_epoch,
        centre_noise_m=scene.centre_noise_m,
        num_classes=NUM_CLASSES,
    )
    description = (
        f"{where}, test area {test_area} ({len(test_clouds)} rooms) vs {len(train_clouds)} "
        f"training rooms, grid {scene.grid_size_m} m"
    )
    validation = evaluation_source(test_clouds, LABEL_SPACE, scene)
    return Dataset("s3dis", LABEL_SPACE, SPEC, train, validation, description)
