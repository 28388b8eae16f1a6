"""Prototypes: running means vs a numpy loop over batches, the Flax bank (update / eval, 4 devices
== 1 device) and the alignment loss vs hand computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from explicit_mesh import explicit_mesh
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from leakjax.leak import PrototypeBank, prototype_loss, update_prototypes

NUM_MICRO, NUM_MACRO, DIM = 5, 2, 3
MICRO_TO_MACRO = np.array([0, 1, 0, 1, 1], np.int32)


def make_batch(rng, batch=4, points=12, absent=(3,)):
    """Features [B, P, D], labels with padding garbage (-1, m) and absent classes, valid mask."""
    feats = rng.normal(size=(batch, points, DIM)).astype(np.float32)
    present = [c for c in range(NUM_MICRO) if c not in absent]
    labels = rng.choice(present, size=(batch, points))
    valid = rng.random((batch, points)) < 0.7
    labels = np.where(valid, labels, rng.choice([-1, NUM_MICRO, 3], size=(batch, points)))
    return feats, labels.astype(np.int32), valid


def numpy_running_means(batches, num_classes, label_map=None):
    """Eq. (1) literally: Gamma <- (k Gamma + sum phi) / (k + n), k <- k + n, point by point."""
    means = np.zeros((num_classes, DIM))
    counts = np.zeros(num_classes)
    for feats, labels, valid in batches:
        sums = np.zeros((num_classes, DIM))
        batch_counts = np.zeros(num_classes)
        for phi, label, ok in zip(feats.reshape(-1, DIM), labels.ravel(), valid.ravel()):
            if ok:
                c = label if label_map is None else label_map[label]
                sums[c] += phi
                batch_counts[c] += 1
        for c in range(num_classes):
            if batch_counts[c]:
                means[c] = (counts[c] * means[c] + sums[c]) / (counts[c] + batch_counts[c])
                counts[c] += batch_counts[c]
    return means, counts


def test_update_matches_numpy_loop_over_batches():
    rng = np.random.default_rng(0)
    batches = [make_batch(rng, absent=absent) for absent in [(3,), (0, 3), (1, 3)]]
    update = jax.jit(update_prototypes)
    means = jnp.zeros((NUM_MICRO, DIM))
    counts = jnp.zeros(NUM_MICRO)
    for feats, labels, valid in batches:
        means, counts = update(means, counts, feats, labels, valid)  # [B, P, D] accepted
    expected_means, expected_counts = numpy_running_means(batches, NUM_MICRO)
    np.testing.assert_allclose(np.asarray(counts), expected_counts)
    np.testing.assert_allclose(np.asarray(means), expected_means, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(means)[3] == 0)  # never seen: still the initial 0


def bank_step(variables, feats, labels, valid, update):
    bank = PrototypeBank(NUM_MICRO, NUM_MACRO, DIM)
    if update:
        return bank.apply(variables, feats, labels, valid, MICRO_TO_MACRO, True, mutable=True)
    return bank.apply(variables, feats, labels, valid, MICRO_TO_MACRO, False), variables


def test_bank_updates_micro_and_macro_and_never_in_eval():
    rng = np.random.default_rng(1)
    batches = [make_batch(rng) for _ in range(3)]
    bank = PrototypeBank(NUM_MICRO, NUM_MACRO, DIM)
    variables = bank.init(jax.random.key(0), *batches[0], MICRO_TO_MACRO, True)
    assert set(variables) == {"prototypes"}
    for leaf in jax.tree.leaves(variables):
        assert not np.any(np.asarray(leaf))  # zeros at init even with update=True
    step = jax.jit(bank_step, static_argnums=4)
    for batch in batches:
        losses, variables = step(variables, *batch, True)
    protos = variables["prototypes"]
    micro_means, micro_counts = numpy_running_means(batches, NUM_MICRO)
    macro_means, macro_counts = numpy_running_means(batches, NUM_MACRO, MICRO_TO_MACRO)
    np.testing.assert_allclose(protos["micro_means"], micro_means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(protos["micro_counts"], micro_counts)
    np.testing.assert_allclose(protos["macro_means"], macro_means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(protos["macro_counts"], macro_counts)
    # the loss of a step uses the prototypes updated with that step's batch
    feats, labels, valid = batches[-1]
    expected = prototype_loss(feats, labels, valid, protos["micro_means"])
    assert float(losses["loss_micro"]) == pytest.approx(float(expected), rel=1e-6)
    assert int(losses["num_out_of_range"]) == 0
    # evaluation: same loss computation, no state change
    eval_losses, unchanged = step(variables, *batches[0], False)
    jax.tree.map(np.testing.assert_array_equal, unchanged, variables)
    macro_labels = MICRO_TO_MACRO[np.where(batches[0][2], batches[0][1], 0)]
    expected = prototype_loss(batches[0][0], macro_labels, batches[0][2], protos["macro_means"])
    assert float(eval_losses["loss_macro"]) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("axes", ["auto", "explicit"])
def test_four_devices_equal_one_device(axes):
    """Auto axes (the trainer's mesh) and Explicit axes (jax.make_mesh's default, where the
    class sums run per device and are added: leakjax.sharding.per_device_samples)."""
    devices = jax.devices()
    assert len(devices) == 4, "tests/conftest.py should provide 4 CPU devices"
    if axes == "auto":
        mesh = Mesh(np.asarray(devices), ("data",))
    else:
        mesh = explicit_mesh()
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    rng = np.random.default_rng(2)
    batches = [make_batch(rng, batch=4) for _ in range(2)]
    bank = PrototypeBank(NUM_MICRO, NUM_MACRO, DIM)
    init = bank.init(jax.random.key(0), *batches[0], MICRO_TO_MACRO, False)

    single = jax.jit(bank_step, static_argnums=4)
    sharded = jax.jit(
        bank_step,
        static_argnums=4,
        in_shardings=(replicated, batch_sharding, batch_sharding, batch_sharding),
        out_shardings=(replicated, replicated),
    )
    one, many = init, jax.device_put(init, replicated)
    for batch in batches:
        one_losses, one = single(one, *batch, True)
        with jax.set_mesh(mesh):
            many_losses, many = sharded(
                many, *[jax.device_put(x, batch_sharding) for x in batch], True
            )
    for a, b in zip(jax.tree.leaves((one_losses, one)), jax.tree.leaves((many_losses, many))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    shards = [np.asarray(s.data) for s in many["prototypes"]["micro_means"].addressable_shards]
    assert len(shards) == 4 and all(np.array_equal(shards[0], s) for s in shards)


def test_prototype_loss_by_hand():
    feats = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 0.0], [5.0, 5.0], [9.0, 9.0]], np.float32)
    labels = np.array([0, 0, 2, 2, 1])
    valid = np.array([True, True, True, True, False])  # class 1 only in padding: not present
    means = np.array([[1.0, 1.0], [100.0, 100.0], [1.0, 0.0]], np.float32)
    # class 0: |0|+|1| = 1 and |2|+|2| = 4 -> 2.5; class 2: |-1|+|0| = 1 and |4|+|5| = 9 -> 5.
    summed = prototype_loss(feats, labels, valid, means, normalization="sum")
    assert float(summed) == pytest.approx((2.5 + 5.0) / 2)
    # per channel (the default): the same divided by D = 2
    assert float(prototype_loss(feats, labels, valid, means)) == pytest.approx((2.5 + 5.0) / 4)
    # l2_channel_per_class: class 0 channels sqrt(0+4)=2, sqrt(1+4)=sqrt5; class 2 sqrt(1+16),
    # sqrt(0+25)=5; mean over channels, then over classes
    expected = ((2 + np.sqrt(5)) / 2 + (np.sqrt(17) + 5) / 2) / 2
    got = prototype_loss(feats, labels, valid, means, distance="l2_channel_per_class")
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # l2_channel (the authors' snapshot): residuals (0,1), (2,-2), (-1,0), (4,5) pooled over
    # classes: channel 0 sqrt(0+4+1+16) = sqrt21, channel 1 sqrt(1+4+0+25) = sqrt30; their mean
    got = prototype_loss(feats, labels, valid, means, distance="l2_channel")
    assert float(got) == pytest.approx((np.sqrt(21) + np.sqrt(30)) / 2, rel=1e-6)
    assert float(prototype_loss(feats, labels, np.zeros(5, bool), means)) == 0.0


def test_prototype_loss_gradient_flows_to_features_only():
    feats = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]], np.float32)
    labels = np.array([0, 0, 1])
    valid = np.ones(3, bool)
    means = np.array([[2.0, 1.5], [0.0, 1.0]], np.float32)
    grad_feats, grad_means = jax.grad(prototype_loss, argnums=(0, 3))(feats, labels, valid, means)
    # d/dphi of mean_c mean_{i in c} |phi_i - Gamma_c|_1 / D
    #   = sign(phi_i - Gamma_c) / (n_c * 2 classes * D = 2 channels)
    expected = np.sign(feats - means[labels]) / (np.array([2, 2, 1])[:, None] * 2 * 2)
    np.testing.assert_allclose(np.asarray(grad_feats), expected)
    assert not np.any(np.asarray(grad_means))  # prototypes are constants (stop-gradient)


def test_bank_reports_out_of_range_labels_and_wrong_dim():
    bank = PrototypeBank(NUM_MICRO, NUM_MACRO, DIM)
    feats = np.ones((4, DIM), np.float32)
    labels = np.array([0, 7, -2, 1])
    variables = bank.init(jax.random.key(0), feats, labels, np.ones(4, bool), MICRO_TO_MACRO, False)
    losses, _ = bank.apply(
        variables, feats, labels, np.ones(4, bool), MICRO_TO_MACRO, True, mutable=True
    )
    assert int(losses["num_out_of_range"]) == 2
    with pytest.raises(ValueError, match="feature_dim"):
        bank.apply(
            variables, np.ones((4, DIM + 1)), labels, np.ones(4, bool), MICRO_TO_MACRO, False
        )
