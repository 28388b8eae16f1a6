"""The one config schema: every field the library and the pipelines read, with its default.

Entry-point configs (experiments/configs/semkitti.py, ...) start from `base_config()` and change
values, never add fields the code reads with a default of its own; the tests' small configs are
variants of the same schema. Any field can be overridden from the command line, e.g.
`--config.train.num_steps=2000` or `--config.leak.criterion=fixed --config.leak.fixed_k=4`.
"""

import dataclasses

import ml_collections

from leakjax.augment import AugmentConfig


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.name = "semantic_kitti"  # a key of datasets.registry.DATASETS
    # Capacities a batch is padded to (the smallest that holds every sample): ints (points) for
    # point sets, [H, W] for images. A sample larger than the largest bucket is an error.
    config.data.buckets = [131072, 163840]
    # Point sets, training only: keep a random subset of this many points per sample (None: all).
    config.data.train_max_points = None
    # Training transforms in order (leakjax/transforms.py) and their arguments.
    config.data.transforms = ("cylinder3d_augment",)
    config.data.transform_kwargs = ml_collections.ConfigDict(
        {"cylinder3d_augment": dataclasses.asdict(AugmentConfig())}
    )
    config.data.prefetch = 2
    # The dataset's synthetic stand-in, used when no data directory is given (its generator's
    # settings; the dataset package reads the ones it knows).
    config.data.synthetic = ml_collections.ConfigDict()
    config.data.synthetic.seed = 0
    config.data.synthetic.train_sequences = ["00"]
    config.data.synthetic.val_sequences = ["08"]
    config.data.synthetic.scans_per_sequence = 20
    config.data.synthetic.generator_kwargs = {}

    config.model = ml_collections.ConfigDict()
    config.model.name = "cylinder3d"  # a key of leakjax.models.MODELS
    config.model.kwargs = {}

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"  # adam | adamw | sgd
    config.optimizer.learning_rate = 1e-3
    config.optimizer.schedule = "constant"  # constant | poly | cosine
    config.optimizer.warmup_steps = 0
    config.optimizer.poly_power = 0.95
    config.optimizer.end_learning_rate_factor = 0.0
    config.optimizer.weight_decay = 0.0
    config.optimizer.momentum = 0.9  # sgd only
    config.optimizer.grad_clip_norm = 0.0

    config.loss = ml_collections.ConfigDict()
    config.loss.ce_weighting = "none"  # none | inverse | salsanext | randla (leakjax.losses)
    config.loss.lovasz_weight = 1.0  # Cylinder3D as released: CE + Lovasz-softmax
    # Extra CE on the per-point logits: set it with model.kwargs.point_refinement=True.
    config.loss.point_ce_weight = 0.0

    config.leak = ml_collections.ConfigDict()
    config.leak.grouping = "spectral"  # spectral | random | a_priori
    # bisection: the paper's recursive spectral bisection (leakjax/leak/bisection.py); kway: k-way
    # spectral clustering for k = 2..k_max with the number of macro classes chosen by `criterion`
    # (leakjax/leak/hierarchy.py; not from the paper). criterion "fixed": fixed_k (both methods).
    config.leak.method = "bisection"
    config.leak.k_max = 8
    config.leak.criterion = "largest_relative_increase"
    config.leak.fixed_k = 0
    # Defaults of leakjax.leak.LeakConfig (how they were set: leakjax/leak/objective.py).
    config.leak.lambda_micro = 0.01
    config.leak.lambda_macro = 0.01
    config.leak.lambda_fairness = 1.0
    config.leak.fairness_detach = False
    config.leak.prototype_distance = "l1"  # the paper; "l2_channel" = the authors' snapshot
    config.leak.finetune_from_baseline = False  # the paper retrains from scratch

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 2  # global (all devices); a multiple of the device count
    config.train.num_steps = 1000
    config.train.log_every = 50
    config.train.checkpoint_every = 500
    config.train.eval_every = 500  # validation during training (and at the end); 0 = never
    config.train.max_checkpoints_to_keep = 2
    config.train.async_checkpointing = True
    config.train.tensorboard = True

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 2
    config.eval.predict_ignored = False
    return config
