"""Config of `python -m experiments.voc` (LEAK with DeepLabV3 on Pascal VOC 2012 or its stand-in).

`get_config(arg)` variants:
  ""/"default"  CPU-sized: a narrow ResNet-50-shaped DeepLabV3 (width 16) on the synthetic
                VOC-layout images (64-96 px; 128 px crops), 1500 steps per phase (about 5
                minutes in all on 2 CPU cores).
  "smoke"       everything shrunk so the whole pipeline runs in about a minute (the tests).
  "full"        DeepLabV3-ResNet101 at output stride 16 as in VainF/DeepLabV3Plus-Pytorch (no
                ImageNet weights here: from scratch unless loaded): SBD train_aug, 513 crops,
                batch 16, SGD 0.01 poly 0.9, 30k iterations.
Every field (experiments/configs/base.py) can be overridden from the command line.
"""

import ml_collections

from experiments.configs.base import base_config, smoke_schedule


def _voc(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """What every variant shares: the dataset, its augmentation, the loss and the optimiser."""
    config.data.name = "pascal_voc"
    config.data.synthetic = ml_collections.ConfigDict({"seed": 0, "num_train": 24, "num_val": 8})
    config.data.transforms = ("deeplab_augment",)
    config.data.transform_kwargs = {"deeplab_augment": {"crop_size": 513}}
    config.model.name = "deeplabv3"
    config.loss.lovasz_weight = 0.0  # CrossEntropyLoss(ignore_index=255)
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.01
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "poly"
    config.optimizer.poly_power = 0.9
    config.leak.k_max = 8
    return config


def _cpu_default(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    config = _voc(config)
    config.data.synthetic.num_train = 48
    config.data.synthetic.num_val = 16
    config.data.transform_kwargs = {"deeplab_augment": {"crop_size": 128}}
    config.data.buckets = [[128, 128], [96, 96]]
    config.model.kwargs = {"depth": 50, "width": 16, "aspp_channels": 64}
    config.train.batch_size = 4
    config.eval.batch_size = 4
    config.train.num_steps = 1500  # ~12 steps/s on 2 CPU cores: about 2 minutes per run
    config.train.log_every = 100
    config.train.checkpoint_every = 500
    config.train.eval_every = 500
    return config


def _smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    config = _voc(config)
    config.data.synthetic.num_train = 8
    config.data.synthetic.num_val = 4
    config.data.transform_kwargs = {"deeplab_augment": {"crop_size": 64}}
    config.data.buckets = [[64, 64], [96, 96]]
    config.model.kwargs = {"stage_sizes": (1, 1, 1, 1), "width": 8, "aspp_channels": 16}
    return smoke_schedule(config)


def _full(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    config = _voc(config)
    config.data.train_split = "train_aug"
    config.data.buckets = [[513, 513]]  # VOC images are at most 500 x 500
    config.model.kwargs = {"depth": 101, "output_stride": 16}
    config.train.batch_size = 16
    config.eval.batch_size = 16
    config.train.num_steps = 30_000
    config.train.log_every = 100
    config.train.checkpoint_every = 2000
    config.train.eval_every = 2000
    return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The pipeline config; `arg` picks a variant (module docstring)."""
    variants = {"": _cpu_default, "default": _cpu_default, "smoke": _smoke, "full": _full}
    arg = arg or ""
    if arg not in variants:
        raise ValueError(f"config arg {arg!r}: expected one of {sorted(variants)}")
    return variants[arg](base_config())
