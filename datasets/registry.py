"""The dataset registry: a plain dict from the config's `data.name` to a `DatasetEntry`.

An entry gives the dataset's label space, the batch contract of its samples (keys, channels) and
`load(data_config, data_dir, cache_root) -> leakjax.data.Dataset`, which reads the official layout
under `data_dir`, or, when `data_dir` is None, generates the dataset's embedded synthetic stand-in
once into `cache_root` (keyed by its settings) and reads that through the same reader.

Adding a dataset: a package `datasets/<name>/` with its reader, `LABEL_SPACE` and a `load_dataset`
function, then one line in `DATASETS` (docs/model_api.md, "A new dataset").
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable

import ml_collections

from datasets.pascal_voc import source as pascal_voc_source
from datasets.pascal_voc.labels import LABEL_SPACE as PASCAL_VOC_LABELS
from datasets.s3dis import source as s3dis_source
from datasets.s3dis.labels import LABEL_SPACE as S3DIS_LABELS
from datasets.semantic3d import source as semantic3d_source
from datasets.semantic3d.labels import LABEL_SPACE as SEMANTIC3D_LABELS
from datasets.semantic_kitti import source as semantic_kitti_source
from datasets.semantic_kitti.labels import LABEL_SPACE as SEMANTIC_KITTI_LABELS
from leakjax.data import Dataset
from leakjax.label_space import LabelSpace
from leakjax.train.batch import BatchSpec


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """What the pipeline needs to know about a dataset before reading it.

    Attributes:
      label_space: its label ids (leakjax/label_space.py).
      spec: the batch contract of its samples (leakjax/train/batch.py).
      load: (config.data, data_dir or None, cache_root) -> Dataset with train / validation splits.
    """

    label_space: LabelSpace
    spec: BatchSpec
    load: Callable[[ml_collections.ConfigDict, str | None, pathlib.Path], Dataset]


DATASETS: dict[str, DatasetEntry] = {
    "semantic_kitti": DatasetEntry(
        SEMANTIC_KITTI_LABELS, semantic_kitti_source.SPEC, semantic_kitti_source.load_dataset
    ),
    "pascal_voc": DatasetEntry(
        PASCAL_VOC_LABELS, pascal_voc_source.SPEC, pascal_voc_source.load_dataset
    ),
    "s3dis": DatasetEntry(S3DIS_LABELS, s3dis_source.SPEC, s3dis_source.load_dataset),
    "semantic3d": DatasetEntry(
        SEMANTIC3D_LABELS, semantic3d_source.SPEC, semantic3d_source.load_dataset
    ),
}


def load_dataset(
    data_config: ml_collections.ConfigDict, data_dir: str | None, cache_root: pathlib.Path
) -> Dataset:
    """DATASETS[data_config.name].load(...), with a clear error for an unknown name."""
    if data_config.name not in DATASETS:
        raise ValueError(f"config.data.name={data_config.name!r}: not in {sorted(DATASETS)}")
    return DATASETS[data_config.name].load(data_config, data_dir, cache_root)
