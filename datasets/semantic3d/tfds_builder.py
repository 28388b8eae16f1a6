"""TFDS builder for Semantic3D (the benchmark's text files or the synthetic scans), TensorFlow-free.

A real scan holds up to 5 x 10^8 points (gigabytes of text): one record per raw scan is not
practical, so each example is a **grid-sub-sampled scan** (config `grid_size_m`, 0.06 m as the
released network input), made by the pipeline's streamed pre-processing with bounded memory
(datasets/scenes/preprocess.py: chunked parse with `iter_chunks`, per-cell sums merged as it
reads). With each sub-sampled point comes the histogram of the raw labels projected to it (each raw
point's nearest sub-sampled point, the released `proj`), so every raw labelled point can still be
scored from the stored examples; the projection itself (one int32 per raw point) is not stored.
Splits: "train" (13 scans), "validation" (bildstein_station3, sg27_station2) and "test" (the
reduced-8 scans, unlabelled: labels and histograms 0), datasets/semantic3d/layout.py. Written as
`array_record` files read back by `builder.as_data_source(split)` without TensorFlow; always
prepare with `file_format="array_record"` (tfrecord needs TensorFlow).

Features: points float32 [S, 3] (metres, scanner frame), colors float32 [S, 3] (mean r, g, b / 255),
labels int32 [S] (majority id 0..8, 0 = unlabelled), label_hist int32 [S, 9], num_raw int64,
scan (text).

    builder = prepare(root, data_dir)          # config "grid_0.06"
    validation = builder.as_data_source(split="validation")
"""

import dataclasses
import pathlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from datasets.scenes.preprocess import subsample_chunks
from datasets.semantic3d.labels import NUM_CLASSES
from datasets.semantic3d.layout import split_files
from datasets.semantic3d.source import scan_clouds

ARRAY_RECORD = "array_record"


@dataclasses.dataclass
class Semantic3dConfig(tfds.core.BuilderConfig):
    """Grid, chunk size of the streamed parse, and which layout split forms each TFDS split."""

    grid_size_m: float = 0.06
    chunk_points: int = 1_000_000
    splits: Mapping[str, str] = dataclasses.field(default_factory=dict)
    scan_names: Mapping[str, Sequence[str]] | None = None  # replaces a split's official list


GRID_006 = Semantic3dConfig(
    name="grid_0.06",
    description="Scans sub-sampled at 0.06 m with raw label histograms; train/validation/test.",
    splits={"train": "train", "validation": "validation", "test": "reduced-8"},
)


class Semantic3d(tfds.core.GeneratorBasedBuilder):
    """Grid-sub-sampled Semantic3D scans with majority labels and raw label histograms."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Sub-sampled points, colours, labels and raw label histograms."}
    BUILDER_CONFIGS = [GRID_006]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Extract the benchmark's scans so that `<manual_dir>/<name>.txt` and, for the training "
        "scans, `<name>.labels` exist (or generate the stand-in with "
        "datasets.semantic3d.synthetic.generate)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "points": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
                    "colors": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
                    "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    "label_hist": tfds.features.Tensor(shape=(None, NUM_CLASSES), dtype=np.int32),
                    "num_raw": tfds.features.Scalar(dtype=np.int64),
                    "scan": tfds.features.Text(),
                }
            ),
            description="Semantic3D scans, grid-sub-sampled, label ids 0..8 (0 unlabelled).",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        if not config.splits:
            raise ValueError(f"builder config {config.name!r} defines no splits")
        root = pathlib.Path(dl_manager.manual_dir)
        names = config.scan_names or {}
        return {
            split: self._generate_examples(split_files(root, layout_split, names.get(split)))
            for split, layout_split in config.splits.items()
        }

    def _generate_examples(self, files) -> Iterator[tuple[str, dict]]:
        config = self.builder_config
        for cloud in scan_clouds(files, config.chunk_points):
            with tempfile.TemporaryDirectory() as scratch:
                result = subsample_chunks(
                    cloud.read, config.grid_size_m, NUM_CLASSES, pathlib.Path(scratch) / "p.npy"
                )
                num_raw = len(result.proj)
                result.proj = None  # the memory map, before its directory goes
            size = len(result.points)
            labelled = result.labels is not None
            example = {
                "points": result.points,
                "colors": result.features,
                "labels": result.labels if labelled else np.zeros(size, np.int32),
                "label_hist": (
                    result.label_hist if labelled else np.zeros((size, NUM_CLASSES), np.int32)
                ),
                "num_raw": np.int64(num_raw),
                "scan": cloud.name,
            }
            yield cloud.name, example


def prepare(root, data_dir, config: Semantic3dConfig = GRID_006) -> Semantic3d:
    """Build (once) the array_record dataset of the scans under `root` into `data_dir`."""
    builder = Semantic3d(data_dir=str(data_dir), config=config)
    builder.download_and_prepare(
        file_format=ARRAY_RECORD,
        download_config=tfds.download.DownloadConfig(manual_dir=str(root)),
    )
    return builder
