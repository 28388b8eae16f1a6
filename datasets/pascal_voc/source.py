"""Pascal VOC 2012 as a registered dataset: samples from a VOCdevkit root or the synthetic stand-in.

With a data directory (holding `VOCdevkit/VOC2012`, or that folder itself), the official splits:
`config.data.train_split` ("train", or "train_aug" with SBD in place) and "val". Without one, the
stand-in of datasets/pascal_voc/synthetic.py is generated once into the cache (keyed by
config.data.synthetic: seed, num_train, num_val). Samples follow the image contract
(leakjax/train/batch.py): {"image": float32 [H, W, 3] ImageNet-normalised, "labels": int32 [H, W]
with 0..20 and 255 (ignored)}; training crops come from the "deeplab_augment" transform,
evaluation sees whole images at their own size.
"""

import pathlib

import ml_collections
import numpy as np

from datasets.cache import ensure_generated
from datasets.pascal_voc.io import image_size
from datasets.pascal_voc.labels import LABEL_SPACE
from datasets.pascal_voc.layout import MASK_DIR_OF_SPLIT, image_path, load_example, split_ids
from leakjax.data import Dataset
from leakjax.image_ops import normalize
from leakjax.train.batch import image_spec

SPEC = image_spec(3)


class VocSource:
    """Random access to the images of one split (a `Source`).

    Args:
      root: the VOCdevkit root (or VOC2012 folder).
      split: "train", "val", "trainval" or "train_aug".
    """

    def __init__(self, root, split: str):
        self.root = pathlib.Path(root)
        self.ids = split_ids(root, split)
        self.mask_dir = MASK_DIR_OF_SPLIT[split]

    def __len__(self) -> int:
        return len(self.ids)

    def size(self, index: int) -> tuple[int, int]:
        """(H, W) from the JPEG header, without decoding the image."""
        return tuple(image_size(image_path(self.root, self.ids[index])))

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        image, mask = load_example(self.root, self.ids[index], self.mask_dir)
        return {"image": normalize(image), "labels": mask.astype(np.int32)}

    def labels(self, index: int) -> np.ndarray:
        return load_example(self.root, self.ids[index], self.mask_dir)[1].astype(np.int32)


def load_dataset(
    data_config: ml_collections.ConfigDict, data_dir: str | None, cache_root: pathlib.Path
) -> Dataset:
    """Train (config.data.train_split) and validation ("val") splits."""
    if data_dir:
        root, description = pathlib.Path(data_dir), f"Pascal VOC 2012 at {data_dir}"
        train_split = data_config.train_split
    else:
        settings = data_config.synthetic

        def generate(directory: pathlib.Path) -> None:
            from datasets.pascal_voc import synthetic  # noqa: PLC0415 - only without data

            synthetic.generate(
                directory,
                seed=settings.seed,
                num_train=settings.num_train,
                num_val=settings.num_val,
            )

        root = ensure_generated(settings, cache_root, generate, "the synthetic VOC images", "voc")
        description = f"synthetic VOC-layout images at {root}"
        train_split = "train"
    return Dataset(
        "pascal_voc",
        LABEL_SPACE,
        SPEC,
        VocSource(root, train_split),
        VocSource(root, "val"),
        description,
    )
