"""TFDS builder for SemanticKITTI (or the synthetic world) in the official layout, TensorFlow-free.

The builder reads `<manual_dir>/sequences/NN/...` with the reader of this package and writes
`array_record` files, which `tfds.data_source` / `builder.as_data_source` read back by random
access without TensorFlow; `grain_batches` pads examples to a fixed point capacity and batches
them with grain. Always prepare with `file_format="array_record"`: TFDS's default, tfrecord, needs
TensorFlow. Points have a variable count per scan, stored as Tensor features of shape (None, ...).

    builder = SemanticKitti(data_dir=out, config=SemanticKittiConfig(name="synthetic",
                            splits={"train": ("00",), "validation": ("08",)}))
    builder.download_and_prepare(file_format="array_record",
                                 download_config=tfds.download.DownloadConfig(manual_dir=root))
    source = builder.as_data_source(split="train")   # source[i]["points"]: float32 [N, 4]
"""

import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds

from datasets.semantic_kitti.io import load_scan
from datasets.semantic_kitti.labels import LABEL_SPACE
from datasets.semantic_kitti.layout import SPLITS, list_scan_label_pairs, load_pair, sequence_name
from leakjax.train.batch import pad_batch, point_cloud_spec

ARRAY_RECORD = "array_record"
_SPEC = point_cloud_spec(4)  # points float32 [P, 4], labels int32 [P], point_mask


@dataclasses.dataclass
class SemanticKittiConfig(tfds.core.BuilderConfig):
    """Which sequences form each split; `unlabelled_splits` have no `labels/` (labels stored 0)."""

    splits: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    unlabelled_splits: tuple[str, ...] = ()


OFFICIAL = SemanticKittiConfig(
    name="official",
    description="Official splits: train 00-07 and 09-10, validation 08, test 11-21 (no labels).",
    splits={"train": SPLITS["train"], "validation": SPLITS["valid"], "test": SPLITS["test"]},
    unlabelled_splits=("test",),
)


class SemanticKitti(tfds.core.GeneratorBasedBuilder):
    """SemanticKITTI scans with per-point training ids 0..19 (raw ids mapped by learning_map)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Points, training ids and instance ids per scan."}
    BUILDER_CONFIGS = [OFFICIAL]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Place the SemanticKITTI data (or `python -m datasets.synthetic --out DIR`) so that "
        "`<manual_dir>/sequences/NN/velodyne/*.bin` and `labels/*.label` exist."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "points": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
                    "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    "instance": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    "sequence": tfds.features.Scalar(dtype=np.int32),
                    "scan_index": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            description="LiDAR scans in the SemanticKITTI layout, labels as training ids 0..19.",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = dl_manager.manual_dir
        config = self.builder_config
        if not config.splits:
            raise ValueError(f"builder config {config.name!r} defines no splits")
        generators = {}
        for split, sequences in config.splits.items():
            pairs = list_scan_label_pairs(
                root, list(sequences), require_labels=split not in config.unlabelled_splits
            )
            generators[split] = self._generate_examples(pairs)
        return generators

    def _generate_examples(self, pairs) -> Iterator[tuple[str, dict]]:
        for scan_path, label_path in pairs:
            sequence = sequence_name(scan_path.parent.parent.name)
            if label_path is None:
                points = load_scan(scan_path)
                train_ids = np.zeros(points.shape[0], np.int32)
                instance = np.zeros(points.shape[0], np.int32)
            else:
                points, train_ids, instance = load_pair(scan_path, label_path)
            example = {
                "points": points,
                "labels": train_ids.astype(np.int32),
                "instance": instance.astype(np.int32),
                "sequence": np.int32(sequence),
                "scan_index": np.int32(scan_path.stem),
            }
            yield f"{sequence}_{scan_path.stem}", example


def prepare(root, data_dir, config: SemanticKittiConfig = OFFICIAL) -> SemanticKitti:
    """Build (once) the array_record dataset of the layout under `root` into `data_dir`."""
    builder = SemanticKitti(data_dir=str(data_dir), config=config)
    builder.download_and_prepare(
        file_format=ARRAY_RECORD,
        download_config=tfds.download.DownloadConfig(manual_dir=str(root)),
    )
    return builder


@dataclasses.dataclass(frozen=True)
class PadToCapacity(grain.transforms.Map):
    """Pad one example to `capacity` points with a mask; more points than that is an error."""

    capacity: int

    def map(self, example: dict) -> dict:
        num_points = example["points"].shape[0]
        if num_points > self.capacity:
            raise ValueError(
                f"scan {int(example['sequence']):02d}/{int(example['scan_index']):06d} has "
                f"{num_points} points, more than the capacity {self.capacity}"
            )
        sample = {"points": example["points"], "labels": example["labels"]}
        # the trainer's padding (leakjax/train/batch.py), one sample at a time; grain batches
        padded = pad_batch([sample], self.capacity, _SPEC, LABEL_SPACE.no_label)
        return {key: value[0] for key, value in padded.items()}


def grain_batches(
    source: Sequence[dict],
    batch_size: int,
    capacity: int,
    seed: int | None = 0,
    drop_remainder: bool = True,
) -> grain.MapDataset:
    """Padded batches, shuffled unless `seed` is None.

    Each batch: points float32 [B, P, 4], point_mask bool [B, P], labels int32 [B, P] with
    P = `capacity`; a scan with more than P points raises ValueError (never truncated).
    """
    dataset = grain.MapDataset.source(source)
    if seed is not None:
        dataset = dataset.shuffle(seed=seed)
    return dataset.map(PadToCapacity(capacity)).batch(batch_size, drop_remainder=drop_remainder)
