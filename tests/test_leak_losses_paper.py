"""LEAK's loss switches against hand computation and numpy loops: the per-channel vs summed
prototype distance, Eq. (2)'s per-class vs per-feature normaliser, the two L2 variants, the
fairness singletons rule, and the fair_weighted_ce mode's weights, loss and gradient."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs.base import base_config
from leakjax.label_space import LabelSpace
from leakjax.leak import (
    LeakConfig,
    LeakSettings,
    fair_class_weights,
    fairness_loss,
    given_grouping,
    leak_objective,
    prototype_loss,
)
from leakjax.pipeline.phases import leak_settings

NUM_CLASSES, DIM = 4, 5


def random_batch(seed, points=40):
    """Features [2, P, D] with out-of-range labels in padding, class 3 absent, prototypes [m, D]."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(2, points, DIM)).astype(np.float32)
    labels = rng.choice([0, 0, 0, 1, 2], size=(2, points))  # unbalanced: class 0 frequent
    valid = rng.random((2, points)) < 0.75
    labels = np.where(valid, labels, rng.choice([-1, NUM_CLASSES, 3], size=(2, points)))
    means = rng.normal(size=(NUM_CLASSES, DIM)).astype(np.float32)
    return feats, labels.astype(np.int32), valid, means


def numpy_prototype_loss(feats, labels, valid, means, distance, normalization, normalizer):
    """prototypes.py's definitions, point by point and channel by channel."""
    feats, labels, valid = feats.reshape(-1, DIM), labels.ravel(), valid.ravel()
    scale = 1.0 / DIM if normalization == "per_channel" else 1.0
    rows = [i for i in range(len(labels)) if valid[i] and 0 <= labels[i] < len(means)]
    if distance == "l2_channel":  # every class pooled, per channel
        norms = [
            np.sqrt(sum((feats[i, d] - means[labels[i], d]) ** 2 for i in rows)) for d in range(DIM)
        ]
        return scale * sum(norms)
    per_class, per_feature = [], []
    for c in range(len(means)):
        members = [i for i in rows if labels[i] == c]
        if not members:
            continue
        if distance == "l1":
            dists = [scale * np.abs(feats[i] - means[c]).sum() for i in members]
            per_feature += dists
            per_class.append(np.mean(dists))
        else:  # l2_channel_per_class
            norms = [
                np.sqrt(sum((feats[i, d] - means[c, d]) ** 2 for i in members)) for d in range(DIM)
            ]
            per_class.append(scale * sum(norms))
    return np.mean(per_feature) if normalizer == "per_feature" else np.mean(per_class)


OPTIONS = [
    ("l1", "per_class"),
    ("l1", "per_feature"),
    ("l2_channel", "per_class"),
    ("l2_channel_per_class", "per_class"),
]


@pytest.mark.parametrize("distance,normalizer", OPTIONS)
def test_prototype_loss_variants_match_numpy_loops_and_per_channel_is_sum_over_d(
    distance, normalizer
):
    feats, labels, valid, means = random_batch(0)
    values = {}
    for normalization in ("per_channel", "sum"):
        got = prototype_loss(feats, labels, valid, means, distance, normalization, normalizer)
        expected = numpy_prototype_loss(
            feats, labels, valid, means, distance, normalization, normalizer
        )
        assert float(got) == pytest.approx(expected, rel=1e-5)
        values[normalization] = float(got)
    # lambda_P independent of D: the per-channel loss is the summed one divided by D exactly
    assert values["sum"] / values["per_channel"] == pytest.approx(DIM, rel=1e-6)


def test_per_feature_and_per_class_normalisers_by_hand():
    feats = np.array([[1.0, 2.0], [3.0, -1.0], [2.0, 1.0], [0.0, 0.0], [7.0, 7.0]], np.float32)
    labels = np.array([0, 0, 0, 1, 1])
    valid = np.array([True, True, True, True, False])
    means = np.array([[0.5, 1.5], [1.0, 0.5]], np.float32)
    # L1 distances: class 0: |0.5|+|0.5| = 1, |2.5|+|-2.5| = 5, |1.5|+|-0.5| = 2;
    # class 1: |-1|+|-0.5| = 1.5 (the point with label 1 at [7, 7] is padding)
    per_class = prototype_loss(feats, labels, valid, means, "l1", "sum", "per_class")
    assert float(per_class) == pytest.approx((8 / 3 + 1.5) / 2)
    per_feature = prototype_loss(feats, labels, valid, means, "l1", "sum", "per_feature")
    assert float(per_feature) == pytest.approx((1 + 5 + 2 + 1.5) / 4)  # class 0 weighs more
    per_feature = prototype_loss(feats, labels, valid, means, "l1", "per_channel", "per_feature")
    assert float(per_feature) == pytest.approx((1 + 5 + 2 + 1.5) / 4 / 2)
    # gradient of the per-feature mean: sign(phi - Gamma) / (|B| = 4 features * D = 2)
    grad = jax.grad(prototype_loss)(feats, labels, valid, means, "l1", "per_channel", "per_feature")
    expected = np.where(valid[:, None], np.sign(feats - means[labels]) / 8, 0.0)
    np.testing.assert_allclose(np.asarray(grad), expected)
    nothing = np.zeros(5, bool)
    for distance, normalizer in OPTIONS:
        assert (
            float(prototype_loss(feats, labels, nothing, means, distance, "sum", normalizer)) == 0
        )


def test_unknown_or_inconsistent_prototype_options_raise_naming_the_choices():
    feats, labels, valid, means = random_batch(1)
    with pytest.raises(ValueError, match="l2_channel_per_class"):
        prototype_loss(feats, labels, valid, means, distance="l2")
    with pytest.raises(ValueError, match="per_channel"):
        LeakConfig(prototype_normalization="mean")
    with pytest.raises(ValueError, match="'l1' distance only"):
        LeakConfig(prototype_distance="l2_channel", prototype_normalizer="per_feature")
    with pytest.raises(ValueError, match="fair_weighted_ce"):
        LeakConfig(fairness_mode="weighted")
    with pytest.raises(ValueError, match="skip"):
        LeakConfig(fairness_singletons="drop")


def one_hot_probs(right, labels, num_classes):
    """Softmax-like rows: probability `right[i]` on labels[i], the rest spread evenly."""
    probs = np.empty((len(labels), num_classes))
    for i, (p, c) in enumerate(zip(right, labels)):
        probs[i] = (1 - p) / (num_classes - 1)
        probs[i, c] = p
    return probs.astype(np.float32)


def test_fairness_singleton_macro_classes_skip_vs_count_by_hand():
    mapping = np.array([0, 0, 0, 1, 1, 2])  # macro 0 = {0, 1, 2}, 1 = {3, 4}, 2 = {5}
    labels = np.array([0, 0, 1, 3, 5, 5])
    right = np.array([0.9, 0.5, 0.3, 0.6, 0.2, 0.4])
    probs = one_hot_probs(right, labels, 6)
    valid = np.ones(6, bool)
    # macro 0: ybar_0 = 0.7, ybar_1 = 0.3: J = 1 / (2 * 0.58); macro 1 = {3} and macro 2 = {5}
    # have one present member each (J = 1 by construction)
    jain = 1.0 / (2 * 0.58)
    skip = fairness_loss(probs, labels, valid, mapping)
    assert float(skip) == pytest.approx(1 - jain, rel=1e-6)
    count = fairness_loss(probs, labels, valid, mapping, singletons="count")
    assert float(count) == pytest.approx((1 - jain) / 3, rel=1e-6)
    # only singletons present: nothing counts with "skip", J = 1 everywhere with "count"
    only_singletons = labels != 1
    assert float(fairness_loss(probs, labels, only_singletons, mapping)) == 0.0
    count = fairness_loss(probs, labels, only_singletons, mapping, singletons="count")
    assert float(count) == pytest.approx(0.0, abs=1e-7)
    # the singletons carry no gradient in either mode; with "skip" the loss is (count * 3)
    grad = jax.grad(lambda p: fairness_loss(p, labels, valid, mapping))(probs)
    grad_count = jax.grad(lambda p: fairness_loss(p, labels, valid, mapping, singletons="count"))(
        probs
    )
    np.testing.assert_allclose(np.asarray(grad), 3 * np.asarray(grad_count), rtol=1e-5, atol=1e-7)
    assert not np.any(np.asarray(grad)[labels >= 3])


def numpy_fair_weights(probs, labels, valid, mapping, floor=1e-6):
    """fairness.py's w_c by loops: r_c = macro mean of ybar / ybar_c, normalised to mean 1."""
    ybar = {}
    for c in range(probs.shape[1]):
        rows = valid & (labels == c)
        if rows.any():
            ybar[c] = probs[rows, c].mean()
    ratio = {}
    for c, value in ybar.items():
        macro_mean = np.mean([v for k, v in ybar.items() if mapping[k] == mapping[c]])
        ratio[c] = max(macro_mean, floor) / max(value, floor)
    weights = np.zeros(probs.shape[1])
    for c, r in ratio.items():
        weights[c] = r * len(ratio) / sum(ratio.values())
    return weights


def test_fair_class_weights_by_hand_and_against_numpy():
    mapping = np.array([0, 0, 1, 1, 2])
    labels = np.array([0, 0, 1, 3, 2])
    right = np.array([0.7, 0.5, 0.2, 0.4, 0.9])
    probs = one_hot_probs(right, labels, 5)
    valid = np.array([True, True, True, True, False])  # class 2 only in padding: absent
    # macro 0: ybar 0.6, 0.2, mean 0.4: r = 2/3, 2; macro 1: only class 3 present: r = 1.
    # sum r = 11/3 over 3 present classes: w = r * 9 / 11
    weights = fair_class_weights(probs, labels, valid, mapping)
    np.testing.assert_allclose(
        np.asarray(weights), [6 / 11, 18 / 11, 0, 9 / 11, 0], rtol=1e-6, atol=1e-7
    )
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 30, 5))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, 5, (3, 30))
    valid = rng.random((3, 30)) < 0.8
    got = jax.jit(lambda p, y, v: fair_class_weights(p, y, v, mapping))(
        probs.astype(np.float32), labels, valid
    )
    expected = numpy_fair_weights(probs.reshape(-1, 5), labels.ravel(), valid.ravel(), mapping)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
    assert float(np.mean(np.asarray(got)[expected > 0])) == pytest.approx(1.0, rel=1e-6)
    # weights are constants: no gradient into the probabilities
    grad = jax.grad(lambda p: fair_class_weights(p, labels, valid, mapping) @ np.arange(5.0))(
        probs.astype(np.float32)
    )
    assert not np.any(np.asarray(grad))


# Label ids 0..5 with 0 ignored: micro classes = ids 1..5 (m = 5), macro classes {0,1}, {2,3}, {4}.
LABEL_SPACE = LabelSpace("toy", ("unlabelled", "a", "b", "c", "d", "e"), ignore_index=0)
MICRO_TO_MACRO = (0, 0, 1, 1, 2)


def make_aux(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(2, 25, 6)).astype(np.float32)
    loss_labels = rng.integers(0, 6, (2, 25)).astype(np.int32)  # id 0 = ignored
    loss_mask = rng.random((2, 25)) < 0.9
    features = rng.normal(size=(2, 12, 3)).astype(np.float32)
    feature_labels = rng.integers(0, 6, (2, 12)).astype(np.int32)
    feature_mask = rng.random((2, 12)) < 0.9
    return {
        "loss_logits": logits,
        "loss_labels": loss_labels,
        "loss_mask": loss_mask,
        "features": features,
        "feature_labels": feature_labels,
        "feature_mask": feature_mask,
    }


def numpy_weighted_ce(logits, label_ids, valid, micro_weights):
    """sum_i w_{y_i} nll_i / sum_i w_{y_i}, nll over all 6 logits, w indexed by micro class."""
    numerator = denominator = 0.0
    for row, label, ok in zip(logits.reshape(-1, 6), label_ids.ravel(), valid.ravel()):
        if ok and label != 0:
            shifted = row.astype(np.float64) - row.max()
            nll = np.log(np.exp(shifted).sum()) - shifted[label]
            weight = micro_weights[label - 1]
            numerator += weight * nll
            denominator += weight
    return numerator / denominator


def test_fair_weighted_ce_mode_in_leak_objective():
    aux = make_aux(4)
    config = LeakConfig(lambda_micro=0.5, lambda_macro=0.25, lambda_fairness=0.7)
    jain = LeakSettings(MICRO_TO_MACRO, config)
    fair_ce = LeakSettings(
        MICRO_TO_MACRO, dataclasses.replace(config, fairness_mode="fair_weighted_ce")
    )
    prototypes = jain.init_prototypes(3)

    @functools.partial(jax.jit, static_argnums=0)
    def run(settings, logits):
        return leak_objective({**aux, "loss_logits": logits}, prototypes, settings, LABEL_SPACE)

    logits = aux["loss_logits"]
    extra, terms, _, _ = run(jain, logits)
    assert set(terms) == {"loss_micro", "loss_macro", "loss_fairness"}
    extra_ce, terms_ce, _, _ = run(fair_ce, logits)
    assert set(terms_ce) == {"loss_micro", "loss_macro", "loss_fairness", "loss_fair_ce"}
    # the weights and the weighted CE against numpy, from the softmax over all 6 label ids
    valid = aux["loss_mask"] & (aux["loss_labels"] != 0)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    weights = numpy_fair_weights(
        probs[..., 1:].reshape(-1, 5),
        np.where(valid, aux["loss_labels"] - 1, 0).ravel(),
        valid.ravel(),
        np.asarray(MICRO_TO_MACRO),
    )
    expected_ce = numpy_weighted_ce(logits, aux["loss_labels"], valid, weights)
    assert float(terms_ce["loss_fair_ce"]) == pytest.approx(expected_ce, rel=1e-5)
    # the same 1 - J reported in both modes; the extra term is lambda_F * loss_fair_ce instead
    assert float(terms_ce["loss_fairness"]) == pytest.approx(float(terms["loss_fairness"]))
    prototype_part = 0.5 * float(terms["loss_micro"]) + 0.25 * float(terms["loss_macro"])
    assert float(extra) == pytest.approx(prototype_part + 0.7 * float(terms["loss_fairness"]))
    assert float(extra_ce) == pytest.approx(prototype_part + 0.7 * expected_ce, rel=1e-5)

    # gradient flows only through the CE: the weights are constants (numpy above), so the
    # logits' gradient is that of lambda_F * CE with fixed weights; loss_fairness gets none
    fixed = np.zeros(6)
    fixed[1:] = weights

    def fixed_weight_ce(logits):
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(log_probs, aux["loss_labels"][..., None], axis=-1)[..., 0]
        point_weight = jnp.where(valid, fixed[aux["loss_labels"]], 0.0)
        return (point_weight * nll).sum() / point_weight.sum()

    grad = jax.grad(lambda x: run(fair_ce, x)[0])(logits)
    expected_grad = 0.7 * jax.grad(fixed_weight_ce)(logits)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(expected_grad), rtol=1e-4, atol=1e-7)
    fairness_grad = jax.grad(lambda x: run(fair_ce, x)[1]["loss_fairness"])(logits)
    assert not np.any(np.asarray(fairness_grad))
    assert np.abs(np.asarray(grad)).max() > 1e-4


def test_leak_settings_passes_every_switch_from_the_config():
    config = base_config()
    defaults = leak_settings(config, given_grouping(np.array([0, 0, 1]))).objective
    assert defaults == LeakConfig()  # base.py declares LeakConfig's defaults
    overrides = {
        "lambda_micro": 0.3,
        "lambda_macro": 0.2,
        "lambda_fairness": 0.1,
        "prototype_distance": "l2_channel_per_class",
        "prototype_normalization": "sum",
        "prototype_normalizer": "per_class",
        "fairness_mode": "fair_weighted_ce",
        "fairness_singletons": "count",
        "fairness_detach": True,
    }
    config.leak.update(ml_collections.ConfigDict(overrides))
    settings = leak_settings(config, given_grouping(np.array([0, 0, 1])))
    assert settings.micro_to_macro == (0, 0, 1)
    for name, value in overrides.items():
        assert getattr(settings.objective, name) == value, name
