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
    # The official training list, for datasets that have several (Pascal VOC: train | train_aug).
    config.data.train_split = "train"
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
    # S3DIS: the fold's test area (its validation split); the other five areas train.
    config.data.test_area = 5
    # Static scenes (S3DIS, Semantic3D; datasets/scenes/): the pre-processing grid, the
    # possibility-guided training crops (RandLA-Net's) and the streamed reading of huge files.
    config.data.scene = ml_collections.ConfigDict()
    config.data.scene.grid_size_m = 0.04
    config.data.scene.crop_points = 40960
    config.data.scene.crops_per_epoch = 3000  # released: 500 steps x batch 6
    config.data.scene.centre_noise_m = 0.35
    config.data.scene.chunk_points = 1_000_000  # text lines parsed at a time (Semantic3D)
    # Evaluation (datasets/scenes/voting.py): "whole_clouds" = one pass per sub-sampled cloud,
    # every raw point scored once; "possibility_votes" = the released test: possibility-guided
    # crops until every point's possibility exceeds vote_min_possibility, class probabilities
    # averaged p <- s p + (1 - s) new (s = vote_smoothing), crops drawn from vote_seed.
    config.data.scene.evaluation = "whole_clouds"
    config.data.scene.vote_min_possibility = 0.5
    config.data.scene.vote_smoothing = 0.98
    config.data.scene.vote_seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.name = "cylinder3d"  # a key of leakjax.models.MODELS
    config.model.kwargs = {}
    # Path of torchvision ResNet-50/101 ImageNet weights (.npz state dict, or .pth with torch) for
    # the model's "backbone" (DeepLabV3; leakjax/models/torch_import.py); "": from scratch.
    config.model.pretrained = ""

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"  # adam | adamw | sgd
    config.optimizer.learning_rate = 1e-3
    config.optimizer.schedule = "constant"  # constant | poly | cosine | exponential
    config.optimizer.warmup_steps = 0
    config.optimizer.poly_power = 0.95
    config.optimizer.end_learning_rate_factor = 0.0
    # exponential: lr x decay_rate every decay_every_steps (RandLA-Net: x0.95 per epoch)
    config.optimizer.decay_rate = 0.95
    config.optimizer.decay_every_steps = 1000
    config.optimizer.weight_decay = 0.0
    config.optimizer.momentum = 0.9  # sgd only
    config.optimizer.grad_clip_norm = 0.0

    config.loss = ml_collections.ConfigDict()
    # A named L0 preset the model declares (e.g. Cylinder3D's "released" / "paper",
    # leakjax/models/cylinder3d.py LOSS_PRESETS) replaces the fields below; "" uses them as given.
    config.loss.preset = ""
    config.loss.ce_weight = 1.0  # cross-entropy on the loss logits (voxels for Cylinder3D)
    config.loss.ce_weighting = "none"  # none | inverse | salsanext | randla (leakjax.losses)
    config.loss.ce_reduction = "weighted_mean"  # or "mean": / entries (RandLA-Net as released)
    config.loss.lovasz_weight = 1.0  # Cylinder3D as released: CE + Lovasz-softmax
    # Extra CE on the per-point output logits (Cylinder3D: with model.kwargs.point_refinement).
    config.loss.point_ce_weight = 0.0
    config.loss.point_ce_weighting = "none"
    # Coarse-to-fine (Tab. V; LEAK runs): this fraction of the steps trains on the macro classes.
    config.loss.coarse_fraction = 0.0

    config.leak = ml_collections.ConfigDict()
    config.leak.grouping = "spectral"  # spectral | random | a_priori
    # bisection: the paper's recursive spectral bisection (leakjax/leak/bisection.py); kway: k-way
    # spectral clustering for k = 2..k_max with the number of macro classes chosen by `criterion`
    # (leakjax/leak/hierarchy.py; not from the paper). criterion "fixed": fixed_k (both methods).
    config.leak.method = "bisection"
    config.leak.k_max = 8
    config.leak.criterion = "largest_relative_increase"
    config.leak.fixed_k = 0
    # Defaults of leakjax.leak.LeakConfig (how they were set: leakjax/leak/objective.py). The
    # prototype lambdas weigh the distance per channel, so they mean the same at any feature width
    # (1.28 = the earlier 0.01 on the channel-summed distance at the default run's D = 128).
    config.leak.lambda_micro = 1.28
    config.leak.lambda_macro = 1.28
    config.leak.lambda_fairness = 1.0
    config.leak.fairness_detach = False  # True: the authors' snapshot (no gradient from L_F)
    # l1: the paper; l2_channel: the authors' snapshot (per-channel L2 over all features pooled);
    # l2_channel_per_class: the same per class, then the mean over classes (leak/prototypes.py).
    config.leak.prototype_distance = "l1"
    # per_channel: the distance divided by the D channels; sum: summed (then divide lambdas by D).
    config.leak.prototype_normalization = "per_channel"
    # Eq. (2)'s average: per_class (per class, then over present classes) | per_feature (all).
    config.leak.prototype_normalizer = "per_class"
    # jain_loss: the paper's 1 - J; fair_weighted_ce: per-class CE weights from the within-macro
    # confidences, recomputed each step (our reading of the prose; leakjax/leak/fairness.py).
    config.leak.fairness_mode = "jain_loss"
    # skip: macro classes with < 2 members present in the batch do not count; count: they do.
    config.leak.fairness_singletons = "skip"
    config.leak.finetune_from_baseline = False  # the paper retrains from scratch
    # Track micro prototypes (no loss) while training the baseline, so Tab. VI's PD / PCD exist for
    # it too; the baseline's parameters are unchanged (its LEAK weights are 0).
    config.leak.track_prototypes_in_baseline = True
    # Tab. VI geometry from a uniform sample of at most this many validation features per class.
    config.leak.geometry_max_per_class = 2000

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
    # Phase 4 renders this many validation samples (render_<k>.png: truth, baseline, LEAK, diff).
    config.eval.renders = 2
    return config


def randla_training(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """RandLA-Net's released loss and optimiser, on every dataset: CE weighted 1 / (f + 0.02)
    averaged over points, no Lovasz, Adam 1e-2 x0.95 per epoch, no warm-up (the caller sets
    config.optimizer.decay_every_steps to one epoch of its data); and LEAK's weights for it."""
    config.loss.ce_weighting = "randla"
    config.loss.ce_reduction = "mean"
    config.loss.lovasz_weight = 0.0
    config.optimizer.learning_rate = 1e-2
    config.optimizer.schedule = "exponential"
    config.optimizer.decay_rate = 0.95
    config.optimizer.warmup_steps = 0
    # LEAK's weights for RandLA-Net, a tenth of the defaults: with lambda_fairness 1 the Jain loss
    # outweighs its mean-reduced CE (~0.5) and cost 7-12 mIoU points; chosen on the S3DIS
    # stand-in's validation (Area 5, seed 0, 200 steps): baseline 35.9, LEAK at the defaults 24.2,
    # lambda_fairness 0.1 alone 35.2, all three / 10: 37.4, prototypes only 38.2 (one seed each:
    # a choice, not evidence of an effect).
    config.leak.lambda_micro = 0.128
    config.leak.lambda_macro = 0.128
    config.leak.lambda_fairness = 0.1
    return config


def smoke_schedule(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The tests' schedule for any `smoke` variant: batch 4, 6 steps, logs every 2, checkpoints
    and validation every 3, synchronous checkpoints, no TensorBoard, no prefetch thread."""
    config.data.prefetch = 0
    config.leak.k_max = 5
    config.train.batch_size = 4
    config.eval.batch_size = 4
    config.train.num_steps = 6
    config.train.log_every = 2
    config.train.checkpoint_every = 3
    config.train.eval_every = 3
    config.train.async_checkpointing = False
    config.train.tensorboard = False
    return config


def restore_config(saved: dict) -> ml_collections.ConfigDict:
    """A config saved as JSON (checkpoint metadata, config.json) on today's schema: fields the
    saved one lacks keep their defaults (a run saved before a field existed still loads); a saved
    field the schema does not know is an error naming it; JSON lists become tuples where the
    schema holds tuples, and the model's keyword arguments become tuples too (Flax modules hash
    their fields)."""
    config = base_config()

    def merge(node: ml_collections.ConfigDict, values: dict, path: str) -> None:
        for key, value in values.items():
            if key not in node:
                raise ValueError(f"saved config field {path}{key} is not in the schema")
            current = node[key]
            if isinstance(current, ml_collections.ConfigDict) and path + key in _SECTIONS:
                merge(current, value, f"{path}{key}.")
            elif isinstance(current, tuple) and isinstance(value, list):
                node[key] = _tuples(value)
            else:
                node[key] = _tuples(value) if path + key == "model.kwargs" else value

    merge(config, saved, "")
    return config


_SECTIONS = ("data", "data.scene", "model", "optimizer", "loss", "leak", "train", "eval")


def _tuples(value):
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_tuples(item) for item in value)
    return value
