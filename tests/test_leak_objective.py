"""The LEAK objective's composition: values and gradients are the lambda-weighted sums of the
terms, each term computed by its own function."""

import jax
import numpy as np
import pytest

from leakjax.leak import LeakConfig, PrototypeBank, combine_objective, fairness_loss
from leakjax.losses import cross_entropy

MICRO_TO_MACRO = np.array([0, 0, 1, 1, 2, 2], np.int32)


def make_inputs(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(2, 10, 6)).astype(np.float32)
    feats = rng.normal(size=(2, 10, 4)).astype(np.float32)
    labels = rng.integers(0, 6, (2, 10)).astype(np.int32)
    valid = rng.random((2, 10)) < 0.8
    return logits, feats, labels, valid


def objective(logits, feats, labels, valid, prototypes, config):
    bank = PrototypeBank(6, 3, feats.shape[-1])
    terms, _ = bank.apply(
        {"prototypes": prototypes}, feats, labels, valid, MICRO_TO_MACRO, True, mutable=True
    )
    base = cross_entropy(logits, labels, valid)
    fairness = fairness_loss(jax.nn.softmax(logits), labels, valid, MICRO_TO_MACRO)
    return combine_objective(base, terms["loss_micro"], terms["loss_macro"], fairness, config)


def test_total_and_gradients_are_weighted_sums():
    logits, feats, labels, valid = make_inputs()
    bank = PrototypeBank(6, 3, 4)
    prototypes = bank.init(jax.random.key(0), feats, labels, valid, MICRO_TO_MACRO, False)
    _, warm = bank.apply(prototypes, feats[::-1], labels, valid, MICRO_TO_MACRO, True, mutable=True)
    prototypes = warm["prototypes"]  # non-zero prototypes, so the terms are not trivial
    config = LeakConfig(lambda_micro=0.3, lambda_macro=0.2, lambda_fairness=0.7)
    total, terms = objective(logits, feats, labels, valid, prototypes, config)
    assert set(terms) == {"loss_model", "loss_micro", "loss_macro", "loss_fairness", "loss"}
    weighted = (
        terms["loss_model"]
        + 0.3 * terms["loss_micro"]
        + 0.2 * terms["loss_macro"]
        + 0.7 * terms["loss_fairness"]
    )
    assert float(total) == pytest.approx(float(weighted), rel=1e-6)
    assert all(float(v) > 0 for v in terms.values())

    def terms_of(logits, feats):
        return objective(logits, feats, labels, valid, prototypes, config)[1]

    # one compiled program for all the gradients: d(terms)/d(logits, feats)
    grads = jax.jit(jax.jacrev(terms_of, argnums=(0, 1)))(logits, feats)
    grad_logits, grad_feats = grads["loss"]
    expected_logits = grads["loss_model"][0] + 0.7 * grads["loss_fairness"][0]
    expected_feats = 0.3 * grads["loss_micro"][1] + 0.2 * grads["loss_macro"][1]
    np.testing.assert_allclose(grad_logits, expected_logits, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_feats, expected_feats, rtol=1e-5, atol=1e-7)
    assert np.abs(np.asarray(grads["loss_fairness"][0])).max() > 0


def test_zero_lambdas_give_the_base_loss_and_defaults_are_documented():
    logits, feats, labels, valid = make_inputs(1)
    prototypes = PrototypeBank(6, 3, 4).init(
        jax.random.key(0), feats, labels, valid, MICRO_TO_MACRO, False
    )["prototypes"]
    off = LeakConfig(lambda_micro=0.0, lambda_macro=0.0, lambda_fairness=0.0)
    total, terms = objective(logits, feats, labels, valid, prototypes, off)
    assert float(total) == float(terms["loss_model"])
    assert float(terms["loss_model"]) == pytest.approx(float(cross_entropy(logits, labels, valid)))
    defaults = LeakConfig()
    # 1.28 per channel = the earlier 0.01 on the channel-summed distance at D = 128 (objective.py)
    assert (defaults.lambda_micro, defaults.lambda_macro, defaults.lambda_fairness) == (
        0.01 * 128,
        0.01 * 128,
        1.0,
    )
    assert defaults.prototype_distance == "l1" and not defaults.fairness_detach
    assert (defaults.prototype_normalization, defaults.prototype_normalizer) == (
        "per_channel",
        "per_class",
    )
    assert (defaults.fairness_mode, defaults.fairness_singletons) == ("jain_loss", "skip")
