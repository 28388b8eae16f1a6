"""Cross-entropy weightings and Lovasz-softmax against independent numpy implementations."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from explicit_mesh import run_batch_sharded
from scipy.special import log_softmax, softmax

from leakjax.losses import class_weights, cross_entropy, lovasz_softmax


def test_class_weight_schemes():
    counts = np.array([500.0, 300.0, 100.0, 0.0, 100.0])  # class 0 ignored, class 3 never seen
    f = np.array([0.0, 0.6, 0.2, 0.0, 0.2])  # frequencies of the non-ignored classes
    np.testing.assert_allclose(class_weights(counts, "none", 0), [0, 1, 1, 1, 1])
    np.testing.assert_allclose(class_weights(counts, "inverse", 0), [0, 1 / 0.6, 5, 0, 5], 1e-6)
    np.testing.assert_allclose(
        class_weights(counts, "salsanext", 0),
        [0, 1 / np.sqrt(0.6), 1 / np.sqrt(0.2), 0, 1 / np.sqrt(0.2)],
        1e-6,
    )
    randla = 1 / (f + 0.02)
    randla[0] = 0
    np.testing.assert_allclose(class_weights(counts, "randla", 0), randla, 1e-6)
    rangenet = 1 / (f + 0.001)
    rangenet[0] = 0
    np.testing.assert_allclose(class_weights(counts, "rangenet", 0), rangenet, 1e-6)
    normalized = class_weights(counts, "randla", 0, normalize=True)
    assert normalized[1:].mean() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="scheme"):
        class_weights(counts, "median")
    with pytest.raises(ValueError, match="class_counts"):
        class_weights(-counts, "none")


def numpy_cross_entropy(logits, labels, valid, weights):
    rows = np.flatnonzero(valid)
    nll = -log_softmax(logits[rows].astype(np.float64), axis=-1)[np.arange(len(rows)), labels[rows]]
    w = weights[labels[rows]]
    return np.sum(w * nll) / np.sum(w)


def test_cross_entropy_weighted_masked_and_ignored():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 30, 5)).astype(np.float32) * 2
    labels = rng.integers(0, 5, (2, 30))
    valid = rng.random((2, 30)) < 0.8
    weights = class_weights(np.bincount(labels.ravel(), minlength=5), "salsanext", 0)
    fn = jax.jit(cross_entropy, static_argnames="ignore_index")
    got = fn(logits, labels, valid, weights, ignore_index=0)
    keep = (valid & (labels != 0)).ravel()
    expected = numpy_cross_entropy(logits.reshape(-1, 5), labels.ravel(), keep, weights)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    got = fn(logits, labels, valid, np.ones(5, np.float32), ignore_index=None)
    expected = numpy_cross_entropy(logits.reshape(-1, 5), labels.ravel(), valid.ravel(), np.ones(5))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(fn(logits, labels, np.zeros_like(valid), None)) == 0.0


def jaccard_loss_of_set(mistakes: set, foreground: set) -> float:
    """Delta_J(M) = |M| / |F u M| (Berman et al., eq. 3), with Delta_J(empty) = 0."""
    union = foreground | mistakes
    return len(mistakes) / len(union) if union else 0.0


def numpy_lovasz_class(probs_c, is_foreground) -> float:
    """Lovasz extension of Delta_J for one class, from its definition: errors sorted decreasingly,
    sum_k e_(k) * (Delta_J({top k}) - Delta_J({top k-1}))."""
    foreground = set(np.flatnonzero(is_foreground).tolist())
    errors = np.abs(is_foreground.astype(np.float64) - probs_c.astype(np.float64))
    total, previous, top = 0.0, 0.0, set()
    for i in np.argsort(-errors, kind="stable"):
        top.add(int(i))
        current = jaccard_loss_of_set(top, foreground)
        total += errors[i] * (current - previous)
        previous = current
    return total


def numpy_lovasz(probs, labels, classes, skip=()):
    """Mean over classes ("present": with a foreground point) of `numpy_lovasz_class`."""
    losses = [
        numpy_lovasz_class(probs[:, c], labels == c)
        for c in range(probs.shape[1])
        if c not in skip and (classes == "all" or np.any(labels == c))
    ]
    return float(np.mean(losses))


@pytest.mark.parametrize("classes", ["present", "all"])
def test_lovasz_softmax_matches_the_set_definition(classes):
    rng = np.random.default_rng(1)
    num_classes = 6
    probs = softmax(rng.normal(size=(2, 25, num_classes)) * 2, axis=-1).astype(np.float32)
    labels = rng.integers(0, num_classes - 1, (2, 25))  # the last class is absent
    valid = rng.random((2, 25)) < 0.75
    got = jax.jit(lovasz_softmax, static_argnames="classes")(probs, labels, valid, classes=classes)
    keep = valid.ravel()
    expected = numpy_lovasz(probs.reshape(-1, num_classes)[keep], labels.ravel()[keep], classes)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_lovasz_ignore_index_drops_points_and_class():
    rng = np.random.default_rng(2)
    probs = softmax(rng.normal(size=(40, 4)), axis=-1).astype(np.float32)
    labels = rng.integers(0, 4, 40)
    got = lovasz_softmax(probs, labels, np.ones(40, bool), ignore_index=0)
    keep = labels != 0
    expected = numpy_lovasz(probs[keep], labels[keep], "present", skip=(0,))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def argsort_lovasz(probs, labels, valid):
    """Lovasz-softmax ("present") written with `jnp.argsort` and gathers, differentiable through
    them: the formulation of Berman et al.'s released code, as a reference for the gradient."""
    num_classes = probs.shape[-1]
    probs, labels, valid = probs.reshape(-1, num_classes), labels.ravel(), valid.ravel()
    foreground = ((labels[None] == jnp.arange(num_classes)[:, None]) & valid[None]) * 1.0
    errors = jnp.where(valid[None], jnp.abs(foreground - probs.T), 0.0)
    order = jnp.argsort(-errors, axis=-1)
    sorted_errors = jnp.take_along_axis(errors, order, -1)
    sorted_foreground = jnp.take_along_axis(foreground, order, -1)
    total = sorted_foreground.sum(-1, keepdims=True)
    jaccard = 1 - (total - jnp.cumsum(sorted_foreground, -1)) / (
        total + jnp.cumsum(1 - sorted_foreground, -1)
    )
    increments = jnp.diff(jaccard, axis=-1, prepend=0.0)
    present = foreground.sum(-1) > 0
    return jnp.sum(jnp.sum(sorted_errors * increments, -1) * present) / present.sum()


def test_lovasz_gradient_matches_the_argsort_formulation():
    """Distinct errors (random probabilities): the gradient is the Delta_J increment at each
    entry's place in the decreasing order, as in the argsort formulation."""
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(2, 300, 7)).astype(np.float32) * 3
    labels = rng.integers(0, 6, (2, 300)).astype(np.int32)
    valid = rng.random((2, 300)) < 0.8

    def ours(logits):
        return lovasz_softmax(jax.nn.softmax(logits, -1), labels, valid)

    def reference(logits):
        return argsort_lovasz(jax.nn.softmax(logits, -1), labels, valid)

    np.testing.assert_allclose(jax.jit(ours)(logits), jax.jit(reference)(logits), rtol=1e-6)
    got, want = jax.jit(jax.grad(ours))(logits), jax.jit(jax.grad(reference))(logits)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-10)
    assert np.abs(want).max() > 1e-4


def numpy_lovasz_gradient_over_tie_orders(errors, is_foreground) -> np.ndarray:
    """d/d errors of the Lovasz extension for one class, averaged over every order of the entries
    that sorts errors decreasingly and, at equal errors, foreground entries first: each order's
    gradient is the Delta_J increment at each entry's place (enumerated with permutations)."""
    foreground = set(np.flatnonzero(is_foreground).tolist())
    groups = {}
    for i, key in enumerate(zip(-errors, ~is_foreground)):
        groups.setdefault(key, []).append(i)
    runs = [groups[key] for key in sorted(groups)]
    total, count = np.zeros(len(errors)), 0
    for orders in itertools.product(*(itertools.permutations(run) for run in runs)):
        previous, top = 0.0, set()
        for i in itertools.chain(*orders):
            top.add(i)
            current = jaccard_loss_of_set(top, foreground)
            total[i] += current - previous
            previous = current
        count += 1
    return total / count


def test_lovasz_gradient_at_equal_errors_is_the_mean_over_their_orders():
    """Equal errors (runs of equal probabilities, two classes): the value is the same in any order
    and the gradient is the mean over the orders of equal entries, whatever the sort does."""
    rng = np.random.default_rng(6)
    shuffle = rng.permutation(9)
    p0 = np.array([0.75, 0.75, 0.75, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25], np.float32)[shuffle]
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1, 1], np.int32)[shuffle]
    probs = np.stack([p0, 1 - p0], -1)
    valid = np.ones(9, bool)
    # within a run of background entries the increments differ: one order's gradient is not the mean
    errors0 = np.abs((labels == 0) - p0.astype(np.float64))
    one_order = np.zeros(9)
    previous, top = 0.0, set()
    for i in np.argsort(-errors0, kind="stable"):
        top.add(int(i))
        current = jaccard_loss_of_set(top, set(np.flatnonzero(labels == 0).tolist()))
        one_order[i], previous = current - previous, current
    assert not np.allclose(one_order, numpy_lovasz_gradient_over_tie_orders(errors0, labels == 0))

    def loss(probs):
        return lovasz_softmax(probs, labels, valid, classes="all")

    got = jax.jit(jax.grad(loss))(probs)
    want = np.zeros_like(probs, np.float64)
    for c in range(2):
        is_foreground = labels == c
        errors = np.abs(is_foreground - probs[:, c].astype(np.float64))
        # d|fg - p| / dp = sign(p - fg); the loss is the mean over the two classes
        d_errors = numpy_lovasz_gradient_over_tie_orders(errors, is_foreground)
        want[:, c] = d_errors * np.sign(probs[:, c] - is_foreground) / 2
    assert float(loss(probs)) == pytest.approx(numpy_lovasz(probs, labels, "all"), rel=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_lovasz_on_an_explicit_axis_mesh_matches_one_device():
    """Lovasz sorts over the whole batch: with the batch sharded on Explicit mesh axes the loss
    gathers it first (Auto axes do this implicitly); loss and gradient equal the one-device run."""
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(4, 40, 5)).astype(np.float32)
    labels = rng.integers(0, 5, (4, 40)).astype(np.int32)
    valid = rng.random((4, 40)) < 0.8

    def loss(logits, labels, valid):
        return lovasz_softmax(jax.nn.softmax(logits, -1), labels, valid, ignore_index=0)

    step = jax.jit(jax.value_and_grad(loss))
    want_loss, want_grad = step(logits, labels, valid)
    got_loss, got_grad = run_batch_sharded(step, logits, labels, valid)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-7)


def test_cylinder3d_loss_presets_against_hand_computation():
    """The model's L0 presets through the trainer's loss_settings and the step's model_loss:
    "released" = voxel CE + Lovasz, "paper" = Lovasz on voxels + inverse-frequency CE on the
    point logits (CE written out in numpy here)."""
    from datasets.semantic_kitti.labels import LABEL_SPACE
    from experiments.configs.semkitti import get_config
    from leakjax.train import trainer
    from leakjax.train.batch import point_cloud_spec
    from leakjax.train.steps import model_loss

    rng = np.random.default_rng(0)
    voxel_logits = rng.normal(size=(1, 30, 20)).astype(np.float32)
    voxel_labels = rng.integers(0, 20, size=(1, 30)).astype(np.int32)
    point_logits = rng.normal(size=(1, 50, 20)).astype(np.float32)
    point_labels = rng.integers(0, 20, size=(1, 50)).astype(np.int32)
    aux = {
        "loss_logits": voxel_logits,
        "loss_labels": voxel_labels,
        "loss_mask": np.ones((1, 30), bool),
    }
    batch = {"labels": point_labels, "point_mask": np.arange(50)[None] < 45}
    counts = np.arange(20, dtype=np.int64) * 10 + 5

    def nll(logits, labels):
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        return -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]

    lovasz = float(
        lovasz_softmax(jax.nn.softmax(voxel_logits, -1), voxel_labels, voxel_labels != 0)
    )
    config = get_config("smoke")
    spec = point_cloud_spec(4)
    for preset in ("released", "paper"):
        config.loss.preset = preset
        settings = trainer.loss_settings(config, LABEL_SPACE, counts)
        got = float(model_loss(point_logits, batch, aux, settings, LABEL_SPACE, spec))
        if preset == "released":
            keep = voxel_labels != 0
            want = nll(voxel_logits, voxel_labels)[keep].mean() + lovasz
        else:
            keep = batch["point_mask"] & (point_labels != 0)
            freq = counts[1:] / counts[1:].sum()
            weights = np.concatenate([[0.0], 1.0 / freq])
            weights[1:] /= weights[1:].mean()
            w = weights[point_labels][keep]
            want = lovasz + (w * nll(point_logits, point_labels)[keep]).sum() / w.sum()
        assert got == pytest.approx(want, rel=1e-5), preset
    config.loss.preset = "unknown"
    with pytest.raises(ValueError, match="declares"):
        trainer.loss_settings(config, LABEL_SPACE, counts)
