"""TFDS builder for Pascal VOC 2012 segmentation (or the synthetic stand-in), TensorFlow-free.

TFDS 4.9's own `voc` builder is detection-only and needs TensorFlow to read files, so the project
has its own. It reads `<manual_dir>` (the `VOC2012` directory or one holding `VOCdevkit/VOC2012`)
with this package's reader, which validates every image and mask, and writes `array_record`
files that `builder.as_data_source(split)` reads back by random access without TensorFlow.

Features: `image` keeps the original JPEG bytes (decoded with PIL on access: uint8 [H, W, 3]),
`labels` the label ids uint8 [H, W] (0..20, 255), zlib-compressed, and `image_id` the VOC id as
bytes. Always prepare with `file_format="array_record"`: TFDS's default, tfrecord, needs
TensorFlow.

    builder = prepare(root, data_dir)                  # config OFFICIAL: train and val
    source = builder.as_data_source(split="validation")
    batches = grain_eval_batches(source, batch_size=8, capacity=(512, 512))
"""

import dataclasses
import io
from collections.abc import Iterator, Mapping, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from datasets.pascal_voc.layout import MASK_DIR_OF_SPLIT, image_path, load_example, split_ids
from datasets.pascal_voc.transforms import (
    AugmentConfig,
    eval_sample,
    pad_eval_batch,
    train_sample,
)

ARRAY_RECORD = "array_record"


@dataclasses.dataclass
class PascalVocConfig(tfds.core.BuilderConfig):
    """Which VOC list ("train", "val", "trainval", "train_aug") forms each TFDS split."""

    splits: Mapping[str, str] = dataclasses.field(default_factory=dict)


OFFICIAL = PascalVocConfig(
    name="official",
    description="VOC 2012 segmentation: train (1,464 images) and validation = val (1,449).",
    splits={"train": "train", "validation": "val"},
)
TRAIN_AUG = PascalVocConfig(
    name="train_aug",
    description="SBD-augmented training set train_aug (10,582 images) and validation = val.",
    splits={"train": "train_aug", "validation": "val"},
)


class PascalVoc(tfds.core.GeneratorBasedBuilder):
    """Pascal VOC 2012 images with per-pixel label ids 0..20 and 255 (void)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "JPEG image, label ids and id per segmentation image."}
    BUILDER_CONFIGS = [OFFICIAL, TRAIN_AUG]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Extract VOCtrainval_11-May-2012.tar so that `<manual_dir>/VOCdevkit/VOC2012/JPEGImages` "
        "exists (or generate the stand-in with datasets.pascal_voc.synthetic.generate). For "
        "train_aug, add SBD's SegmentationClassAug/ and ImageSets/Segmentation/train_aug.txt "
        "(datasets/pascal_voc/layout.py)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "labels": tfds.features.Tensor(
                        shape=(None, None), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB
                    ),
                    "image_id": tfds.features.Text(),
                }
            ),
            description="Pascal VOC 2012 segmentation: label ids 0..20, 255 = void (ignored).",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = dl_manager.manual_dir
        config = self.builder_config
        if not config.splits:
            raise ValueError(f"builder config {config.name!r} defines no splits")
        return {
            split: self._generate_examples(root, voc_split)
            for split, voc_split in config.splits.items()
        }

    def _generate_examples(self, root, voc_split: str) -> Iterator[tuple[str, dict]]:
        for image_id in split_ids(root, voc_split):
            image, mask = load_example(root, image_id, MASK_DIR_OF_SPLIT[voc_split])
            yield (
                image_id,
                {
                    "image": _image_bytes(image_path(root, image_id), image),
                    "labels": mask,
                    "image_id": image_id,
                },
            )


def _image_bytes(path, image: np.ndarray) -> bytes:
    """The file's own bytes when PIL reads them as RGB; else the RGB pixels as a lossless PNG."""
    with Image.open(path) as original:
        if original.mode == "RGB":
            return path.read_bytes()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def prepare(root, data_dir, config: PascalVocConfig = OFFICIAL) -> PascalVoc:
    """Build (once) the array_record dataset of the layout under `root` into `data_dir`."""
    builder = PascalVoc(data_dir=str(data_dir), config=config)
    builder.download_and_prepare(
        file_format=ARRAY_RECORD,
        download_config=tfds.download.DownloadConfig(manual_dir=str(root)),
    )
    return builder


@dataclasses.dataclass(frozen=True)
class AugmentExample(grain.transforms.RandomMap):
    """A stored example -> a training sample (datasets/pascal_voc/transforms.py `train_sample`)."""

    config: AugmentConfig = AugmentConfig()

    def random_map(self, example: dict, rng: np.random.Generator) -> dict:
        return train_sample(example["image"], example["labels"], rng, self.config)


def grain_train_batches(
    source: Sequence[dict], batch_size: int, seed: int, config: AugmentConfig | None = None
) -> grain.MapDataset:
    """Shuffled, augmented batches: image float32 [B, S, S, 3], labels int32 [B, S, S]."""
    dataset = grain.MapDataset.source(source).shuffle(seed=seed)
    augment = AugmentExample(config or AugmentConfig())
    return dataset.random_map(augment, seed=seed).batch(batch_size, drop_remainder=True)


def grain_eval_batches(
    source: Sequence[dict], batch_size: int, capacity: tuple[int, int]
) -> grain.MapDataset:
    """Whole images in order, padded to `capacity` (transforms.pad_eval_batch); the last batch
    is filled with empty samples. Keys image [B, H, W, 3], labels [B, H, W], pixel_mask."""

    def pad(examples: list[dict]) -> dict:
        samples = [eval_sample(e["image"], e["labels"]) for e in examples]
        names = [_id_text(e["image_id"]) for e in examples]
        return pad_eval_batch(samples, capacity, batch_size, names)

    dataset = grain.MapDataset.source(source)
    return dataset.batch(batch_size, drop_remainder=False, batch_fn=pad)


def _id_text(image_id) -> str:
    return image_id.decode() if isinstance(image_id, bytes) else str(image_id)
