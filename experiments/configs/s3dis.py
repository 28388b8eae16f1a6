"""Config of `python -m experiments.s3dis` (LEAK with RandLA-Net on S3DIS or its synthetic rooms).

`get_config(arg)` variants:
  ""/"default"  CPU-sized, on the synthetic rooms (2 per area): RandLA-Net with the S3DIS layout
                (5 layers, ratios 4-4-4-4-2, k 16, xyz + rgb input) at half the released widths,
                BatchNorm momentum 0.9 (0.99 released: its running statistics would still hold
                13% of their initial values after 200 steps), 4096-point crops, batch 4;
                whole-room validation (every raw point scored).
  "smoke"       tiny (2 layers, 512-point crops, 6 steps): the tests.
  "full"        the paper's RandLA-Net S3DIS recipe (released `ConfigS3DIS`): 5 layers, d_out
                16-64-128-256-512, 40960-point crops, 0.04 m grid, batch 6, Adam 1e-2 x0.95 per
                epoch of 500 steps, 100 epochs, CE weighted 1 / (f + 0.02) averaged over points;
                the released test (possibility-guided crops, votes averaged).
The fold is `config.data.test_area` (default 5: the Area-5 protocol; 1..6 for 6-fold CV, one run
per fold). Every field (experiments/configs/base.py) can be overridden from the command line.
"""

import ml_collections

from experiments.configs.base import base_config, randla_training, smoke_schedule

RELEASED_D_OUT = (16, 64, 128, 256, 512)
RELEASED_RATIOS = (4, 4, 4, 4, 2)


def _s3dis(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """What every variant shares: the dataset, RandLA-Net's S3DIS network, loss and optimiser."""
    config.data.name = "s3dis"
    config.data.test_area = 5
    config.data.transforms = ()  # the crops come from the source (datasets/scenes/sources.py)
    config.data.transform_kwargs = {}
    config.data.synthetic = ml_collections.ConfigDict(
        {"seed": 0, "rooms_per_area": 2, "points_per_m2": 150.0}
    )
    config.data.scene.grid_size_m = 0.04
    config.data.scene.crop_points = 40960
    config.data.scene.centre_noise_m = 0.35  # released noise_init 3.5 / 10
    config.model.name = "randla_net"
    config.model.kwargs = {
        "input_channels": 6,  # xyz relative to the room's centroid, rgb / 255: all fed to fc0
        "d_out": RELEASED_D_OUT,
        "sub_sampling_ratio": RELEASED_RATIOS,
    }
    return randla_training(config)


def scene_epoch(config: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
    """An epoch of `steps` steps: its crops and the learning rate's x0.95 per epoch."""
    config.data.scene.crops_per_epoch = steps * config.train.batch_size
    config.optimizer.decay_every_steps = steps
    return config


def scene_cpu_schedule(
    config: ml_collections.ConfigDict, buckets: list
) -> ml_collections.ConfigDict:
    """The static scenes' CPU-sized run (S3DIS and Semantic3D): RandLA-Net at half the released
    widths, BatchNorm momentum 0.9 (short run), 4096-point crops, batch 4, 200 steps, epochs of 50
    steps; `buckets`: the crops' and the whole clouds' capacities."""
    config.model.kwargs = {
        "input_channels": 6,
        "d_out": tuple(d // 2 for d in RELEASED_D_OUT),
        "sub_sampling_ratio": RELEASED_RATIOS,
        "bn_momentum": 0.9,
    }
    config.data.scene.crop_points = 4096
    config.data.buckets = list(buckets)
    config.train.batch_size = 4
    config.eval.batch_size = 2
    config.train.num_steps = 200
    config.train.log_every = 20
    config.train.checkpoint_every = 100
    config.train.eval_every = 100
    return scene_epoch(config, 50)


def _cpu_default(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """About 4.5-5 minutes for the whole pipeline on 2 shared CPU cores (measured 4 min 24 s and
    5 min 12 s from a fresh work directory): ~40 s to compile each train step, ~0.5 s per step.
    LEAK's weights: RandLA-Net's (experiments/configs/base.py `randla_training`)."""
    config = _s3dis(config)
    # crops; whole synthetic rooms (~20-32k points)
    return scene_cpu_schedule(config, [4096, 32768, 49152])


def _smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    config = _s3dis(config)
    config.data.synthetic.rooms_per_area = 1
    config.data.synthetic.points_per_m2 = 40.0
    config.data.scene.grid_size_m = 0.1
    config.data.scene.crop_points = 512
    config.data.buckets = [512, 4096, 8192]
    config.model.kwargs = {
        "input_channels": 6,
        "d_out": (8, 16),
        "sub_sampling_ratio": (4, 4),
        "k_n": 8,
        "head_widths": (16, 16),
    }
    config = smoke_schedule(config)
    config.eval.renders = 1
    return scene_epoch(config, 3)


def _full(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The released recipe, its test included: possibility-guided crops with averaged votes
    (datasets/scenes/voting.py), so one 40960-point bucket holds every sample of any room
    (`--config.data.scene.evaluation=whole_clouds` needs buckets that hold the largest
    sub-sampled room of the test area; a larger one is an error naming it)."""
    config = _s3dis(config)
    config.data.scene.evaluation = "possibility_votes"
    config.data.buckets = [40960]
    config.train.batch_size = 6
    config.eval.batch_size = 2
    config.train.num_steps = 100 * 500
    config.train.log_every = 100
    config.train.checkpoint_every = 2500
    config.train.eval_every = 2500  # every 5 epochs: a whole test area per evaluation
    return scene_epoch(config, 500)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The pipeline config; `arg` picks a variant (module docstring)."""
    variants = {"": _cpu_default, "default": _cpu_default, "smoke": _smoke, "full": _full}
    arg = arg or ""
    if arg not in variants:
        raise ValueError(f"config arg {arg!r}: expected one of {sorted(variants)}")
    return variants[arg](base_config())
