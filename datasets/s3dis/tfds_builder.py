"""TFDS builder for S3DIS (the official release layout, or the synthetic rooms), TensorFlow-free.

The builder reads `<manual_dir>` (the release directory `Stanford3dDataset_v1.2_Aligned_Version`
or its parent) room by room with this package's reader (`load_room`: labels from the annotation
names, the hallway_6 defect repaired as the reader does) and writes `array_record` files, which
`builder.as_data_source(split)` reads back by random access without TensorFlow. One example per
room, one split per area, so every protocol is a split expression (`fold_splits`): the Area-5 fold
trains on "area1+area2+area3+area4+area6" and tests on "area5". Always prepare with
`file_format="array_record"`: TFDS's default, tfrecord, needs TensorFlow.

Features: points float32 [N, 6] (x, y, z metres as stored, r, g, b 0..255), labels int32 [N]
(class ids 0..12), area int32, room (text, e.g. "office_1"). Pre-processing (grid sub-sampling,
projection) stays the pipeline's (datasets/scenes/): the stored rooms are the raw points.

    builder = prepare(root, data_dir)
    train = builder.as_data_source(split=fold_splits(5)["train"])   # train[i]["points"]: [N, 6]
"""

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from datasets.s3dis.io import load_room
from datasets.s3dis.layout import AREAS, area_name, list_rooms

ARRAY_RECORD = "array_record"


@dataclasses.dataclass
class S3disConfig(tfds.core.BuilderConfig):
    """Which areas are written (one split "areaN" each)."""

    areas: tuple[int, ...] = AREAS


OFFICIAL = S3disConfig(
    name="official",
    description="The six areas of Stanford3dDataset_v1.2_Aligned_Version, one split each.",
)


def fold_splits(test_area: int, areas=AREAS) -> dict[str, str]:
    """{"train": "area<a>+..." (the other areas), "test": "area<test_area>"}."""
    test = int(area_name(test_area)[len("Area_") :])
    train = "+".join(f"area{a}" for a in areas if a != test)
    return {"train": train, "test": f"area{test}"}


class S3dis(tfds.core.GeneratorBasedBuilder):
    """S3DIS rooms with per-point class ids 0..12 (no ignored class)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Raw points, class ids, area and room name per room."}
    BUILDER_CONFIGS = [OFFICIAL]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Extract Stanford3dDataset_v1.2_Aligned_Version.zip so that "
        "`<manual_dir>/Stanford3dDataset_v1.2_Aligned_Version/Area_N/<room>/Annotations/` exists "
        "(or generate the stand-in with datasets.s3dis.synthetic.generate)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "points": tfds.features.Tensor(shape=(None, 6), dtype=np.float32),
                    "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    "area": tfds.features.Scalar(dtype=np.int32),
                    "room": tfds.features.Text(),
                }
            ),
            description="S3DIS rooms in the official release layout, class ids 0..12.",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = dl_manager.manual_dir
        return {f"area{a}": self._generate_examples(root, a) for a in self.builder_config.areas}

    def _generate_examples(self, root, area: int) -> Iterator[tuple[str, dict]]:
        for room in list_rooms(root, area):
            points, labels = load_room(room)
            example = {
                "points": points,
                "labels": labels,
                "area": np.int32(area),
                "room": room.name,
            }
            yield f"{area_name(area)}_{room.name}", example


def prepare(root, data_dir, config: S3disConfig = OFFICIAL) -> S3dis:
    """Build (once) the array_record dataset of the release under `root` into `data_dir`."""
    builder = S3dis(data_dir=str(data_dir), config=config)
    builder.download_and_prepare(
        file_format=ARRAY_RECORD,
        download_config=tfds.download.DownloadConfig(manual_dir=str(root)),
    )
    return builder
