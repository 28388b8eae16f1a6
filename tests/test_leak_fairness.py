"""Fairness loss vs hand computation; its gradient vs central finite differences (float64)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from explicit_mesh import run_batch_sharded

from leakjax.leak import fairness_loss

MICRO_TO_MACRO = np.array([0, 0, 0, 1, 1, 2])


def numpy_fairness(probs, labels, valid, micro_to_macro, singletons="skip"):
    """The definition, by loops: ybar_c per present class, Jain's index per macro class; with
    "skip" only macro classes with at least two present members count."""
    per_macro = {}
    for c in range(probs.shape[1]):
        rows = valid & (labels == c)
        if rows.any():
            ybar = probs[rows].mean(axis=0)[c]
            per_macro.setdefault(micro_to_macro[c], []).append(ybar)
    smallest = 2 if singletons == "skip" else 1
    losses = [
        1 - sum(y) ** 2 / (len(y) * sum(v * v for v in y))
        for y in per_macro.values()
        if len(y) >= smallest
    ]
    return np.mean(losses) if losses else 0.0


def test_fairness_by_hand():
    probs = np.array(
        [
            [0.8, 0.1, 0.0, 0.0, 0.1, 0.0],  # class 0
            [0.6, 0.2, 0.1, 0.0, 0.0, 0.1],  # class 0
            [0.3, 0.4, 0.1, 0.1, 0.1, 0.0],  # class 1
            [0.1, 0.1, 0.1, 0.5, 0.2, 0.0],  # class 3
            [0.0, 0.0, 0.0, 0.3, 0.2, 0.5],  # class 4
            [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # class 5, padding
        ],
        np.float32,
    )
    labels = np.array([0, 0, 1, 3, 4, 5])
    valid = np.array([True, True, True, True, True, False])
    # macro 0: ybar_0 = 0.7, ybar_1 = 0.4 (class 2 absent): J = 1.1^2 / (2 * 0.65)
    # macro 1: ybar_3 = 0.5, ybar_4 = 0.2: J = 0.49 / (2 * 0.29); macro 2: no present member.
    expected = ((1 - 1.21 / 1.3) + (1 - 0.49 / 0.58)) / 2
    got = fairness_loss(probs, labels, valid, MICRO_TO_MACRO)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(got) == pytest.approx(numpy_fairness(probs, labels, valid, MICRO_TO_MACRO), 1e-6)
    # a macro class with one present member is perfectly fair (J = 1): skipped by default,
    # counted in the mean with singletons="count"
    single_valid = valid & (labels != 1)
    single = fairness_loss(probs, labels, single_valid, MICRO_TO_MACRO)
    assert float(single) == pytest.approx(1 - 0.49 / 0.58, rel=1e-6)
    single = fairness_loss(probs, labels, single_valid, MICRO_TO_MACRO, singletons="count")
    assert float(single) == pytest.approx((0 + (1 - 0.49 / 0.58)) / 2, rel=1e-6)
    assert float(fairness_loss(probs, labels, np.zeros(6, bool), MICRO_TO_MACRO)) == 0.0


def test_fairness_on_batched_input_matches_loops():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 50, 6))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, 6, (2, 50))
    valid = rng.random((2, 50)) < 0.8
    flat = probs.reshape(-1, 6), labels.ravel(), valid.ravel(), MICRO_TO_MACRO
    # macro class 2 = {5} is always a singleton here: "skip" and "count" differ
    for singletons in ("skip", "count"):
        loss = jax.jit(
            lambda p, y, v, s=singletons: fairness_loss(p, y, v, MICRO_TO_MACRO, singletons=s)
        )
        got = loss(probs.astype(np.float32), labels, valid)
        expected = numpy_fairness(*flat, singletons=singletons)
        assert float(got) == pytest.approx(expected, rel=1e-5)
    assert numpy_fairness(*flat, "skip") > numpy_fairness(*flat, "count")


def test_fairness_gradient_equals_finite_differences():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 30)
    valid = rng.random(30) < 0.9

    @functools.partial(jax.jit, static_argnums=1)
    def loss_of_logits(logits, detach=False):
        probs = jax.nn.softmax(logits, axis=-1)
        return fairness_loss(probs, labels, valid, MICRO_TO_MACRO, detach=detach)

    with jax.enable_x64(True):
        logits = jnp.asarray(rng.normal(size=(30, 6)), jnp.float64)
        grad = np.asarray(jax.grad(loss_of_logits)(logits))
        assert np.abs(grad).max() > 1e-3
        eps = 1e-6
        numeric = np.zeros_like(grad)
        flat = np.asarray(logits).ravel()
        for i in range(flat.size):
            up, down = flat.copy(), flat.copy()
            up[i] += eps
            down[i] -= eps
            numeric.ravel()[i] = (
                float(loss_of_logits(up.reshape(30, 6)))
                - float(loss_of_logits(down.reshape(30, 6)))
            ) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, atol=1e-8, rtol=1e-5)
        # invalid points get no gradient; the authors' detached variant gets none at all
        assert not np.any(grad[~valid])
        assert not np.any(np.asarray(jax.grad(loss_of_logits)(logits, True)))


def test_fairness_on_an_explicit_axis_mesh_matches_one_device():
    """With the batch sharded on Explicit mesh axes the per-class sums run per device and are
    added (leakjax.sharding.per_device_samples); loss and gradient equal the one-device run."""
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(4, 25, 5)).astype(np.float32)
    labels = rng.integers(0, 5, (4, 25)).astype(np.int32)
    valid = rng.random((4, 25)) < 0.8
    mapping = np.array([0, 0, 1, 1, 1])

    def loss(logits, labels, valid):
        return fairness_loss(jax.nn.softmax(logits, -1), labels, valid, mapping)

    step = jax.jit(jax.value_and_grad(loss))
    want_loss, want_grad = step(logits, labels, valid)
    got_loss, got_grad = run_batch_sharded(step, logits, labels, valid)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-7)
