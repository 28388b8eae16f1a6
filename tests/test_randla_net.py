"""RandLA-Net: blocks against numpy restatements, parameter counts against the released layer
list, padding invariance, overfitting one scan, host-side indices, and the trainer on it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_fixtures import in_memory_dataset, tiny_config

from leakjax import leak
from leakjax.models import MODELS
from leakjax.models.randla_net import RandLANet
from leakjax.models.randla_net_blocks import (
    AttentivePooling,
    LocalSpatialEncoding,
    max_pool_neighbours,
    nearest_upsample,
)
from leakjax.points import sampling_hierarchy_host
from leakjax.train import logging as train_logging
from leakjax.train import mesh as mesh_lib
from leakjax.train import trainer
from leakjax.train.steps import LeakSettings

LABELS = in_memory_dataset(None).label_space  # SemanticKITTI's: 20 ids, 0 ignored
# 256 -> 64 -> 16 points; the last encoder level (64) holds more than k = 8 points.
TINY = {"d_out": (8, 16), "sub_sampling_ratio": (4, 4), "k_n": 8, "bn_momentum": 0.9}
MOMENTUM = 0.9


def _leaky(x):
    return np.where(x > 0, x, 0.2 * x)


def _batch_norm_train(h, valid, scale, bias):
    """Training-mode BatchNorm over the valid rows of h [..., C] (biased variance, eps 1e-6)."""
    rows = h[valid]
    mean, var = rows.mean(axis=0), rows.var(axis=0)
    return (h - mean) / np.sqrt(var + 1e-6) * scale + bias, mean


def _randomise(params, seed):
    """Parameters replaced by random values (BatchNorm scale and bias included)."""
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(
        tree, [jnp.asarray(rng.normal(0.0, 0.5, leaf.shape), jnp.float32) for leaf in leaves]
    )


def _apply_training(module, params, args):
    """module.apply in training mode from zero running statistics -> (out, updated variables)."""
    stats = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), _stats_shapes(module, args))
    apply = jax.jit(
        lambda p, s, a: module.apply(
            {"params": p, "batch_stats": s}, *a, train=True, mutable=["batch_stats"]
        )
    )
    return apply(params, stats, args)


def _stats_shapes(module, args):
    return jax.eval_shape(lambda: module.init(jax.random.key(0), *args, train=False))["batch_stats"]


def _neighbour_case(seed, batch=2, points=9, slots=4):
    """Random neighbour indices with sentinel slots, and padded points (last 2 of sample 1)."""
    rng = np.random.default_rng(seed)
    xyz = rng.normal(0.0, 2.0, (batch, points, 3)).astype(np.float32)
    point_mask = np.ones((batch, points), bool)
    point_mask[1, -2:] = False
    neighbours = np.stack(
        [rng.choice(points - 2, size=(points, slots)) for _ in range(batch)]
    ).astype(np.int32)
    neighbours[:, :, 0] = np.arange(points)  # itself first, as the kNN returns it
    neighbours[0, 3, 2:] = points  # a point with 2 of its 4 slots empty
    neighbours[1, 5, 1:] = points
    neighbours[~point_mask] = points  # padded points have no neighbours
    found = (neighbours < points) & point_mask[..., None]
    return xyz, neighbours, found, point_mask


def test_local_spatial_encoding_matches_numpy():
    xyz, neighbours, found, _ = _neighbour_case(0)
    module = LocalSpatialEncoding(features=5, bn_momentum=MOMENTUM)
    args = (jnp.asarray(xyz), jnp.asarray(neighbours), jnp.asarray(found))
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, train=False))
    params = _randomise(variables["params"], 1)
    out, updates = _apply_training(module, params, args)
    # numpy: for every point i and slot k, [|p_i - p_k|, p_i - p_k, p_i, p_k] -> dense -> BN over
    # the found slots -> LeakyReLU(0.2); slots that are not found give 0.
    centre = np.broadcast_to(xyz[:, :, None], neighbours.shape + (3,))
    neighbour = np.take_along_axis(
        xyz[:, None], np.minimum(neighbours, xyz.shape[1] - 1)[..., None], axis=2
    )
    relative = centre - neighbour
    distance = np.linalg.norm(relative, axis=-1, keepdims=True)
    encoding = np.concatenate([distance, relative, centre, neighbour], axis=-1)
    conv, bn = params["mlp"]["conv"], params["mlp"]["bn"]
    hidden = encoding @ np.asarray(conv["kernel"]) + np.asarray(conv["bias"])
    normed, mean = _batch_norm_train(hidden, found, np.asarray(bn["scale"]), np.asarray(bn["bias"]))
    expected = np.where(found[..., None], _leaky(normed), 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        updates["batch_stats"]["mlp"]["bn"]["mean"], (1 - MOMENTUM) * mean, rtol=1e-4, atol=1e-5
    )


def test_attentive_pooling_matches_numpy():
    _, _, found, point_mask = _neighbour_case(2)
    rng = np.random.default_rng(3)
    feature_set = rng.normal(size=found.shape + (6,)).astype(np.float32)
    feature_set[~found] = 1e3  # whatever is in an empty slot must not count
    module = AttentivePooling(features=4, bn_momentum=MOMENTUM)
    args = (jnp.asarray(feature_set), jnp.asarray(found), jnp.asarray(point_mask))
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, train=False))
    params = _randomise(variables["params"], 4)
    out, _ = _apply_training(module, params, args)
    # numpy: scores = set @ W (no bias), softmax over the found slots, weighted sum, then
    # dense -> BN over the valid points -> LeakyReLU(0.2).
    logits = feature_set.astype(np.float64) @ np.asarray(params["fc"]["kernel"], np.float64)
    logits = np.where(found[..., None], logits, -np.inf)
    peak = np.max(logits, axis=2, keepdims=True)
    peak[~np.isfinite(peak)] = 0.0
    exps = np.where(found[..., None], np.exp(logits - peak), 0.0)
    scores = exps / np.maximum(exps.sum(axis=2, keepdims=True), 1e-30)
    pooled = np.sum(np.where(found[..., None], feature_set * scores, 0.0), axis=2)
    conv, bn = params["mlp"]["conv"], params["mlp"]["bn"]
    hidden = pooled @ np.asarray(conv["kernel"]) + np.asarray(conv["bias"])
    normed, _ = _batch_norm_train(
        hidden, point_mask, np.asarray(bn["scale"]), np.asarray(bn["bias"])
    )
    expected = np.where(point_mask[..., None], _leaky(normed), 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_pooling_and_upsampling_match_numpy():
    rng = np.random.default_rng(13)
    features = rng.normal(-3.0, 1.0, (2, 7, 5)).astype(np.float32)  # negative: 0 is no max
    pools = rng.integers(0, 7, (2, 3, 4)).astype(np.int32)
    pools[0, 1, 1:] = 7  # sentinel slots: never in the max
    pools[1, 2] = 7  # a padded kept point: 0
    upsamples = rng.integers(0, 3, (2, 7, 1)).astype(np.int32)
    upsamples[1, 5:] = 3  # padded points: 0
    pooled = max_pool_neighbours(jnp.asarray(features), jnp.asarray(pools))
    expected = np.zeros((2, 3, 5), np.float32)
    for b, i in np.ndindex(2, 3):
        slots = pools[b, i][pools[b, i] < 7]
        if len(slots):
            expected[b, i] = features[b, slots].max(axis=0)
    np.testing.assert_array_equal(pooled, expected)
    coarse = features[:, :3]
    upsampled = nearest_upsample(jnp.asarray(coarse), jnp.asarray(upsamples))
    expected = np.stack([coarse[b, np.minimum(upsamples[b, :, 0], 2)] for b in range(2)])
    expected[1, 5:] = 0
    np.testing.assert_array_equal(upsampled, expected)


def _released_parameter_count(input_channels, d_out, num_classes):
    """Trainable variables of the released RandLANet.py (conv2d helpers: weights, biases, BN
    gamma and beta; tf.layers.dense fc0 with bias and BN; attention fc without bias)."""

    def conv_bn(c_in, c_out):
        return c_in * c_out + c_out + 2 * c_out

    total = input_channels * 8 + 8 + 2 * 8  # fc0 + its BN
    width, skips = 8, []
    for layer, d in enumerate(d_out):
        total += conv_bn(width, d // 2)  # mlp1
        total += conv_bn(10, d // 2)  # LFA mlp1 (relative position encoding, d_in = d / 2)
        total += d * d + conv_bn(d, d // 2)  # att_pooling_1: fc on [features, LocSE], mlp
        total += conv_bn(d // 2, d // 2)  # LFA mlp2
        total += d * d + conv_bn(d, d)  # att_pooling_2
        total += conv_bn(d // 2 * 2, 2 * d)  # mlp2 (no activation, BN)
        total += conv_bn(width, 2 * d)  # shortcut
        width = 2 * d
        skips += [width, width] if layer == 0 else [width]
    total += conv_bn(width, width)  # decoder_0
    for skip in reversed(skips[:-1]):  # Decoder_layer_j: [skip, up-sampled] -> skip's width
        total += conv_bn(skip + width, skip)
        width = skip
    total += conv_bn(width, 64) + conv_bn(64, 32)  # fc1, fc2
    return total + 32 * num_classes + num_classes  # fc: conv without BN


def _empty_batch(points, channels, batch=1):
    return {
        "points": np.zeros((batch, points, channels), np.float32),
        "labels": np.zeros((batch, points), np.int32),
        "point_mask": np.zeros((batch, points), bool),
    }


def _parameter_count(model, capacity):
    batch = model.prepare_batch(_empty_batch(capacity, model.input_channels))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), batch))
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes["params"]))


def test_parameter_counts_equal_the_released_layer_list():
    # The list itself: the paper's SemanticKITTI network (xyz input, 19 classes) has 1.24 M.
    assert round(_released_parameter_count(3, (16, 64, 128, 256), 19) / 1e4) == 124
    kitti = RandLANet(num_classes=20, input_channels=4)
    assert _parameter_count(kitti, 1024) == _released_parameter_count(4, (16, 64, 128, 256), 20)
    s3dis = RandLANet(
        num_classes=13,
        input_channels=6,
        d_out=(16, 64, 128, 256, 512),
        sub_sampling_ratio=(4, 4, 4, 4, 2),
    )
    expected = _released_parameter_count(6, (16, 64, 128, 256, 512), 13)
    assert _parameter_count(s3dis, 4096) == expected
    # The LEAK features default to the 512-wide bottleneck at the last level (1024 / 256 = 4).
    batch = kitti.prepare_batch(_empty_batch(1024, 4))
    aux = jax.eval_shape(lambda: kitti.init_with_output(jax.random.key(0), batch)[0][1])
    assert aux["features"].shape == (1, 4, 512)


def _scan(num_points, seed, capacity=None, garbage=False):
    """One shuffled scan (x, y, z, remission) with height-band labels, padded to capacity."""
    capacity = capacity or num_points
    rng = np.random.default_rng(seed)
    points = np.zeros((capacity, 4), np.float32)
    points[:num_points] = rng.normal(0.0, 1.0, (num_points, 4))
    points[:num_points, :2] *= 5.0
    labels = np.zeros(capacity, np.int32)
    labels[:num_points] = np.clip(np.floor(points[:num_points, 2] * 2 + 4), 0, 8) + 1
    if garbage:  # padding the model must never read (the input pipeline pads with zeros)
        points[num_points:] = rng.normal(0.0, 1e4, (capacity - num_points, 4))
        points[num_points::7, 0] = np.nan
        labels[num_points:] = rng.integers(0, 20, capacity - num_points)
    return points, labels


def _stack(*scans):
    points, labels, masks = zip(*scans)
    return {"points": np.stack(points), "labels": np.stack(labels), "point_mask": np.stack(masks)}


def _padded(num_points, seed, capacity, garbage=False):
    points, labels = _scan(num_points, seed, capacity, garbage)
    return points, labels, np.arange(capacity) < num_points


def test_padding_and_batching_do_not_change_a_sample():
    model = RandLANet(num_classes=20, dropout_rate=0.0, **TINY)
    # Random parameters and running statistics (variances > 0): no trained values needed.
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), model.prepare_batch(_stack(_padded(128, 0, 128))))
    )
    variables = {"params": _randomise(shapes["params"], 5)}
    variables["batch_stats"] = jax.tree.map(
        lambda x: np.abs(np.random.default_rng(6).normal(size=x.shape)) + 0.5,
        shapes["batch_stats"],
    )
    # 128 valid points keep 32 and 8 at levels 1 and 2 whether the capacity is 128 or 192.
    alone = model.prepare_batch(_stack(_padded(128, 7, 128)))
    padded = model.prepare_batch(_stack(_padded(128, 7, 192, garbage=True)))
    # The other sample has 20 points: 5 < k at level 1, so its kNN rows hold sentinel slots.
    batched = model.prepare_batch(_stack(_padded(128, 7, 192, garbage=True), _padded(20, 8, 192)))

    evaluate = jax.jit(lambda v, b: model.apply(v, b, train=False))
    logits, aux = evaluate(variables, alone)
    logits_b, aux_b = evaluate(variables, batched)
    np.testing.assert_allclose(logits_b[0, :128], logits[0], rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(logits_b[0, 128:]) == 0)
    assert np.all(np.isfinite(logits_b)) and np.abs(logits_b[1, :20]).min() > 0
    assert aux["features"].shape == (1, 8, 32) and aux_b["features"].shape == (2, 12, 32)
    np.testing.assert_allclose(aux_b["features"][0, :8], aux["features"][0], rtol=1e-5, atol=1e-5)
    assert np.array_equal(aux_b["feature_mask"][0], np.arange(12) < 8)
    assert np.array_equal(aux_b["feature_labels"][0, :8], alone["labels"][0, :8])
    assert np.all(np.asarray(aux_b["feature_labels"][0, 8:]) == 0)

    # Training mode: BatchNorm statistics over the valid points only, so the garbage padding
    # changes neither the logits nor the running statistics.
    step = jax.jit(lambda v, b: model.apply(v, b, train=True, mutable=["batch_stats"]))
    (logits, _), stats = step(variables, alone)
    (logits_p, _), stats_p = step(variables, padded)
    np.testing.assert_allclose(logits_p[0, :128], logits[0], rtol=1e-4, atol=1e-4)
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(stats_p)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_prepare_batch_shuffles_each_valid_prefix_alike():
    """shuffle_input: every sample's valid points and labels move by one permutation, seeded by
    the count (np.random.default_rng(n).permutation(n)); padding stays in place."""
    batch = _stack(_padded(200, 10, 256), _padded(37, 11, 256))
    prepared = RandLANet(num_classes=20, **TINY).prepare_batch(batch)
    for row, count in enumerate((200, 37)):
        order = np.random.default_rng(count).permutation(count)
        for key in ("points", "labels", "point_mask"):
            np.testing.assert_array_equal(prepared[key][row, :count], batch[key][row, order])
            np.testing.assert_array_equal(prepared[key][row, count:], batch[key][row, count:])


def test_prepare_batch_adds_the_sampling_hierarchy():
    model = RandLANet(num_classes=20, shuffle_input=False, **TINY)
    batch = _stack(_padded(200, 10, 256), _padded(37, 11, 256))
    prepared = model.prepare_batch(batch)
    for key in batch:
        assert prepared[key] is batch[key]
    pyramid = sampling_hierarchy_host(batch["points"][..., :3], (4, 4), 8, np.array([200, 37]))
    sizes = (256, 64, 16)
    for level in range(2):
        np.testing.assert_array_equal(prepared[f"neighbours_{level}"], pyramid.neighbours[level])
        np.testing.assert_array_equal(prepared[f"pools_{level}"], pyramid.pools[level])
        np.testing.assert_array_equal(prepared[f"upsamples_{level}"], pyramid.upsamples[level])
        assert prepared[f"neighbours_{level}"].shape == (2, sizes[level], 8)
        assert prepared[f"pools_{level}"].shape == (2, sizes[level + 1], 8)
    # Valid points per level, restated: n_{l+1} = min(N_{l+1}, ceil(n_l / r)), as a prefix.
    counts = np.array([200, 37])
    for level, size in enumerate(sizes):
        expected = np.arange(size)[None, :] < counts[:, None]
        np.testing.assert_array_equal(prepared[f"level_mask_{level}"], expected)
        counts = np.minimum(sizes[min(level + 1, 2)], -(-counts // 4))
    # The level-0 neighbours are the 8 nearest valid points (brute force, numpy).
    xyz = batch["points"][1, :37, :3].astype(np.float64)
    distances = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    found = np.take_along_axis(distances, prepared["neighbours_0"][1, :37], axis=1)
    np.testing.assert_allclose(found, np.sort(distances, axis=1)[:, :8], rtol=1e-6)
    assert np.all(prepared["neighbours_0"][1, 37:] == 256)  # padded rows: sentinels only

    shuffled_mask = batch["point_mask"].copy()
    shuffled_mask[0, 0] = False
    with pytest.raises(ValueError, match="prefix"):
        model.prepare_batch({**batch, "point_mask": shuffled_mask})


class _OneScan:
    """A source of one scan (the `Source` protocol of leakjax.data)."""

    def __init__(self, num_points, seed):
        points, labels = _scan(num_points, seed)
        self.scan = {"points": points, "labels": labels}

    def __len__(self):
        return 1

    def size(self, index):
        return (len(self.scan["points"]),)

    def __getitem__(self, index):
        return self.scan


OVERFIT_STEPS = 150
SCAN_POINTS = 240  # in a 256 bucket: 60 valid of 64 at level 1, 15 of 16 at level 2


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory):
    """The trainer (its make_train_step, prepare_batch hook, LEAK terms and evaluation) on one
    scan for OVERFIT_STEPS steps on one device, validated on the same scan at the end."""
    config = tiny_config(num_steps=OVERFIT_STEPS)
    config.model.name = "randla_net"
    config.model.kwargs = dict(TINY)
    config.train.batch_size = 1
    config.eval.batch_size = 1
    config.train.checkpoint_every = OVERFIT_STEPS
    config.train.eval_every = OVERFIT_STEPS
    data = in_memory_dataset(_OneScan(SCAN_POINTS, 12))
    micro_to_macro = tuple(i // 4 for i in range(19))
    settings = LeakSettings(micro_to_macro, leak.LeakConfig(lambda_micro=0.05, lambda_macro=0.05))
    mesh = mesh_lib.make_data_mesh(jax.devices()[:1])
    loss = trainer.loss_settings(config, data.label_space, None)
    run_dir = tmp_path_factory.mktemp("randla_overfit")
    state = trainer.train(config, run_dir, data, mesh, loss, settings)
    return data, run_dir, jax.device_get(state)


def test_overfits_one_scan(overfit_run):
    data, run_dir, _ = overfit_run
    labels = data.train[0]["labels"]
    assert len(np.unique(labels)) >= 6  # chance is well below 1 / 6 per class
    records = train_logging.read_jsonl(run_dir / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == OVERFIT_STEPS and losses[-1] < 0.3 * losses[0]
    # Point mIoU from the trainer's validation confusion (every point of the scan predicted).
    confusion = np.load(trainer.confusion_path(run_dir, OVERFIT_STEPS))
    assert confusion.sum() == np.count_nonzero(labels)  # label 0 is not scored
    present = [c for c in range(1, 20) if confusion[c].sum()]
    ious = [
        confusion[c, c] / (confusion[c].sum() + confusion[:, c].sum() - confusion[c, c])
        for c in present
    ]
    assert np.mean(ious) > 0.7


def test_trainer_feeds_leak_the_kept_point_labels(overfit_run):
    assert MODELS["randla_net"] is RandLANet
    data, _, state = overfit_run
    assert int(state.step) == OVERFIT_STEPS
    # LEAK's micro prototypes counted, at every step, the scored labels of the bottleneck's
    # kept points: the first 15 points of the shuffled scan (240 -> 60 -> 15, as a prefix;
    # prepare_batch's shuffle_input permutation restated).
    level_1 = -(-SCAN_POINTS // 4)
    order = np.random.default_rng(SCAN_POINTS).permutation(SCAN_POINTS)
    kept = data.train[0]["labels"][order][: -(-level_1 // 4)]
    assert len(kept) == 15
    expected = OVERFIT_STEPS * np.bincount(kept[kept > 0] - 1, minlength=19)
    np.testing.assert_array_equal(state.prototypes["micro_counts"], expected)
