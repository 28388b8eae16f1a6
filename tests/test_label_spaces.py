"""Label spaces other than SemanticKITTI's through the train step, evaluation, hierarchy and report.

Two toy label spaces: one with no ignored class (like S3DIS: every id is a class) and one with an
ignored id 255 outside the classes and a real class 0 (like Pascal VOC's background). Every count
is checked against numpy counts made in the test: no class lost, none shifted.
"""

import jax
import numpy as np
import pytest
from train_fixtures import InMemorySource, in_memory_dataset, tiny_config

from leakjax import pipeline
from leakjax.label_space import LabelSpace
from leakjax.leak import LeakSettings, given_grouping
from leakjax.pipeline import report
from leakjax.train import mesh as mesh_lib
from leakjax.train import trainer

NO_IGNORE = LabelSpace("toy_no_ignore", ("a", "b", "c", "d", "e"), None)
VOC_LIKE = LabelSpace("toy_voc", ("background", "x", "y", "z"), 255)
# label id of each of InMemorySource's 20 height bands
BANDS = {
    "toy_no_ignore": np.arange(20) // 4,
    "toy_voc": np.array([255] * 3 + [0] * 5 + [1] * 5 + [2] * 4 + [3] * 3),
}


def test_label_space_conversions_against_numpy():
    labels = np.array([255, 0, 3, 1, 255, 2, 7, -1])
    micro, valid = VOC_LIKE.micro_labels(labels)
    np.testing.assert_array_equal(valid, [0, 1, 1, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(micro[valid], labels[valid])  # ids 0..3 are micro 0..3
    kitti = LabelSpace("k", ("unlabeled", "car", "road"), 0)
    micro, valid = kitti.micro_labels(np.array([0, 1, 2, 2]))
    np.testing.assert_array_equal(valid, [0, 1, 1, 1])
    np.testing.assert_array_equal(micro[1:], [0, 1, 1])
    logits = np.random.default_rng(0).normal(size=(6, 3))
    logits[:, 0] = 100.0  # the ignored id's logit never wins
    np.testing.assert_array_equal(kitti.predict(logits), logits[:, 1:].argmax(-1) + 1)
    # background (0) is a real class of VOC: predicted like any other
    np.testing.assert_array_equal(VOC_LIKE.predict(np.eye(4)[[2, 0, 3]] * 5), [2, 0, 3])
    assert NO_IGNORE.micro_names == list(NO_IGNORE.class_names) and NO_IGNORE.no_label == -1
    confusion = np.arange(9).reshape(3, 3)
    np.testing.assert_array_equal(kitti.micro_confusion(confusion), [[4, 5], [7, 8]])
    np.testing.assert_array_equal(kitti.label_to_macro([1, 0]), [-1, 1, 0])
    np.testing.assert_array_equal(VOC_LIKE.label_to_macro([0, 1, 1, 0]), [0, 1, 1, 0])


@pytest.mark.parametrize("label_space", [NO_IGNORE, VOC_LIKE], ids=lambda s: s.name)
def test_train_evaluate_hierarchy_report(label_space, tmp_path):
    config = tiny_config(num_steps=3)
    source = InMemorySource(8, seed=4, label_of_band=BANDS[label_space.name])
    data = in_memory_dataset(source, label_space=label_space)
    mesh = mesh_lib.make_data_mesh()
    m = label_space.num_micro
    hierarchy = given_grouping(np.arange(m) % 2, class_names=label_space.micro_names)
    settings = LeakSettings(tuple(int(v) for v in hierarchy.micro_to_macro))
    loss = trainer.loss_settings(config, label_space, None)
    state = trainer.train(config, tmp_path / "run", data, mesh, loss, settings)

    # Prototype counts: every scored label of every training batch, in its own micro class.
    batches = trainer.training_batches(config, data, 0)
    expected_counts = np.zeros(m)
    for _ in range(config.train.num_steps):
        batch = next(batches)
        labels = batch["labels"][batch["point_mask"]]
        scored = labels[np.isin(labels, label_space.scored_ids)]
        expected_counts += np.bincount(label_space.micro_of_label[scored], minlength=m)
    np.testing.assert_array_equal(np.asarray(state.prototypes["micro_counts"]), expected_counts)
    assert expected_counts.all()  # every class seen: none lost

    # Evaluation: equal to predicting every scan alone with numpy's argmax over scored ids.
    model, state, _ = trainer.load_state(config, tmp_path / "run", mesh, data, settings)
    confusion = trainer.evaluate(model, state, data, mesh, config)
    apply = jax.jit(lambda v, b: model.apply(v, b, train=False)[0])
    variables = jax.device_get(state.variables())
    expected = np.zeros((label_space.num_classes,) * 2, np.int64)
    for index in range(len(source)):
        sample = source[index]
        batch = trainer.input_pipeline.pad_batch([sample], 256, data.spec, label_space.no_label)
        logits = np.asarray(apply(variables, batch))[0, : len(sample["labels"])]
        prediction = label_space.scored_ids[logits[:, label_space.scored_ids].argmax(-1)]
        keep = np.isin(sample["labels"], label_space.scored_ids)
        np.add.at(expected, (sample["labels"][keep], prediction[keep]), 1)
    np.testing.assert_array_equal(confusion, expected)
    all_labels = np.concatenate([source[i]["labels"] for i in range(len(source))])
    np.testing.assert_array_equal(
        confusion.sum(axis=1), np.bincount(all_labels[all_labels < 100], minlength=m)
    )

    # Hierarchy on the micro confusion, names of the micro classes (background kept for VOC).
    micro_confusion = label_space.micro_confusion(confusion)
    assert micro_confusion.shape == (m, m) and micro_confusion.sum() == confusion.sum()
    assert hierarchy.class_names == label_space.micro_names

    # Report: per-class IoU of the m classes, in micro order, against a numpy IoU.
    metrics = report.run_metrics(confusion, hierarchy, label_space)
    tp = np.diag(micro_confusion)
    iou = tp / (micro_confusion.sum(0) + micro_confusion.sum(1) - tp)
    np.testing.assert_allclose(metrics["iou_per_class"], iou, rtol=1e-12)
    assert metrics["num_labelled"] == int(confusion.sum())
    assert pipeline.leak_settings(tiny_config(), hierarchy).num_micro == m


def _planted_confusion(groups, error, seed=0):
    """Counts [m, m]: each class confused within its group at rate `error`, rarely elsewhere."""
    rng = np.random.default_rng(seed)
    m = sum(groups)
    group = np.repeat(np.arange(len(groups)), groups)
    confusion = np.zeros((m, m))
    for i in range(m):
        same = np.flatnonzero((group == group[i]) & (np.arange(m) != i))
        confusion[i, i] = 1000
        confusion[i, same] = 1000 * error / len(same) * rng.uniform(0.5, 1.5, len(same))
        confusion[i, group != group[i]] = rng.uniform(0, 2, int((group != group[i]).sum()))
    return np.round(confusion).astype(np.int64), group


@pytest.mark.parametrize("method", ["bisection", "kway"])
def test_fixed_criterion_and_random_grouping_honour_the_config(method):
    """criterion=fixed with fixed_k reaches the clustering (both methods); a random grouping
    follows the same criterion: a partition with the sizes of the fixed-k spectral one."""
    label_space = LabelSpace("planted", tuple(f"c{i}" for i in range(9)), None)
    confusion, _ = _planted_confusion([3, 3, 3], 0.3)
    config = tiny_config()
    config.leak.method = method
    config.leak.criterion = "fixed"
    config.leak.fixed_k = 4
    spectral = pipeline.phases.group_classes(confusion, label_space, config, 0)
    assert spectral.num_macro == 4
    config.leak.grouping = "random"
    randomised = pipeline.phases.group_classes(confusion, label_space, config, 0)
    assert sorted(np.bincount(randomised.micro_to_macro)) == sorted(
        np.bincount(spectral.micro_to_macro)
    )
    assert randomised.method == "random"
    config.leak.fixed_k = 2
    config.leak.grouping = "spectral"
    assert pipeline.phases.group_classes(confusion, label_space, config, 0).num_macro == 2
