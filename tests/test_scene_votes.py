"""The released test of static scenes (datasets/scenes/voting.py, leakjax/train/votes.py): the
crop plan against a brute-force restatement of the released rule, and the voted confusion against
a numpy restatement that runs the network crop by crop, folds the votes in crop order and scores
every raw point through its nearest sub-sampled point."""

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from datasets.scenes import (
    CloudFiles,
    VotingCrops,
    WholeClouds,
    evaluation_source,
    preprocess,
)
from datasets.semantic3d.labels import LABEL_SPACE
from leakjax.data import Dataset
from leakjax.models.pointmlp import PointMLP
from leakjax.models.randla_net import shuffle_valid_points
from leakjax.train import mesh as mesh_lib
from leakjax.train import trainer, votes
from leakjax.train.batch import point_cloud_spec

NUM_CLASSES = 9  # Semantic3D's label ids: 0 unlabelled (not scored), 1..8


def _raw_cloud(seed: int, count: int):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(0, 1, (count, 3)) * (3.0, 2.0, 1.0)
    rgb = rng.integers(0, 256, (count, 3)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, count).astype(np.int32)  # 0 = unlabelled, ignored
    return xyz, rgb, labels


@pytest.fixture(scope="module")
def clouds(tmp_path_factory):
    """Two labelled clouds of different sizes, sub-sampled at 0.1 m, in a cache."""
    root = tmp_path_factory.mktemp("vote_scenes")
    files = []
    for index, count in enumerate((1200, 500)):
        path = root / f"scan{index}.txt"
        path.write_text(str(index))
        data = _raw_cloud(20 + index, count)
        files.append(CloudFiles(f"scan{index}", (path,), lambda data=data: [data], "test"))
    return preprocess(files, 0.1, NUM_CLASSES, root / "cache", "test")


def _reference_plan(clouds, num_points, noise, min_possibility, seed):
    """The released test's crop sequence, restated with brute-force distances: (cloud, centre,
    crop indices nearest first) until every possibility exceeds `min_possibility`."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 2**31 + 3])))
    xyz = [c.arrays()["points"].astype(np.float64) for c in clouds]
    possibility = [rng.random(len(x)) * 1e-3 for x in xyz]
    plan = []
    while min(p.min() for p in possibility) <= min_possibility:
        cloud = int(np.argmin([p.min() for p in possibility]))
        centre = xyz[cloud][np.argmin(possibility[cloud])] + rng.normal(scale=noise, size=3)
        squared = ((xyz[cloud] - centre) ** 2).sum(axis=1)
        crop = np.argsort(squared, kind="stable")[: min(num_points, len(squared))]
        possibility[cloud][crop] += (1 - squared[crop] / squared[crop].max()) ** 2
        plan.append((cloud, centre, crop))
    return plan


def test_the_plan_follows_the_released_test_rule_and_covers_every_point(clouds):
    crops = VotingCrops(clouds, LABEL_SPACE, 256, 0.35, min_possibility=0.5, seed=4)
    plan = _reference_plan(clouds, 256, 0.35, 0.5, seed=4)
    assert len(crops) == len(plan) > len(clouds)
    np.testing.assert_array_equal(crops.plan.cloud, [cloud for cloud, _, _ in plan])
    np.testing.assert_allclose(crops.plan.centre, [centre for _, centre, _ in plan], atol=1e-12)
    covered = [np.zeros(crops.cloud_size(c), bool) for c in range(crops.num_clouds)]
    arrays = [c.arrays() for c in clouds]
    for index, (cloud, _, members) in enumerate(plan):
        got_cloud, entries = crops.crop_entries(index)
        assert got_cloud == cloud and set(entries.tolist()) == set(members.tolist())
        covered[cloud][entries] = True
        sample = crops[index]
        assert crops.size(index) == (len(entries),) == (len(sample["points"]),)
        np.testing.assert_array_equal(sample["labels"], arrays[cloud]["labels"][entries])
        centred = arrays[cloud]["points"][entries] - arrays[cloud]["points"].mean(axis=0)
        np.testing.assert_allclose(sample["points"][:, :3], centred, atol=1e-5)
    assert all(c.all() for c in covered)
    # a higher threshold needs more crops; another seed draws another plan
    more = VotingCrops(clouds, LABEL_SPACE, 256, 0.35, min_possibility=1.0, seed=4)
    assert len(more) > len(crops)
    other = VotingCrops(clouds, LABEL_SPACE, 256, 0.35, min_possibility=0.5, seed=5)
    assert not np.array_equal(other.plan.centre[:1], crops.plan.centre[:1])


class CropPointMLP(PointMLP):
    """PointMLP on xyz relative to its crop's mean, behind RandLA-Net's host-side shuffle: a point
    gets other probabilities in every crop (so the votes' order and smoothing matter), and the
    votes must find their entries through the shuffle."""

    def prepare_batch(self, batch):
        return shuffle_valid_points(batch)

    def __call__(self, batch, train=False):
        mask = batch["point_mask"][..., None]
        xyz = batch["points"][..., :3]
        mean = (xyz * mask).sum(axis=1, keepdims=True) / jnp.maximum(
            mask.sum(axis=1, keepdims=True), 1
        )
        points = jnp.concatenate([(xyz - mean) * 10.0, batch["points"][..., 3:]], axis=-1)
        return super().__call__({**batch, "points": points}, train)


def _softmax_scored(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    logits[..., 0] = -np.inf  # label 0 is not scored
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_voted_confusion_against_a_crop_by_crop_restatement(clouds):
    crops = VotingCrops(clouds, LABEL_SPACE, 200, 0.35, min_possibility=0.5, smoothing=0.9, seed=1)
    spec = point_cloud_spec(6, label_counts=NUM_CLASSES)
    model = CropPointMLP(
        num_classes=NUM_CLASSES, ignore_index=0, input_channels=6, hidden_sizes=(16,)
    )
    mesh = mesh_lib.make_data_mesh()
    data = Dataset("semantic3d", LABEL_SPACE, spec, crops, crops, "handmade")
    config = ml_collections.ConfigDict(
        {"eval": {"batch_size": 4, "predict_ignored": False}, "data": {"buckets": [64, 200]}}
    )
    variables = model.init(jax.random.key(0), trainer.example_batch(config, data))
    state = types.SimpleNamespace(variables=lambda: variables)
    confusion = trainer.evaluate(model, state, data, mesh, config)

    # reference: each crop alone and unpadded, votes folded in crop order, raw points via proj
    arrays = [c.arrays() for c in clouds]
    vote = [np.zeros((len(a["points"]), NUM_CLASSES)) for a in arrays]
    for index, (cloud, _, members) in enumerate(_reference_plan(clouds, 200, 0.35, 0.5, 1)):
        inputs = crops[index]["points"]
        centred = arrays[cloud]["points"][members] - arrays[cloud]["points"].mean(axis=0)
        rows = [int(np.argmin(((centred - p) ** 2).sum(axis=1))) for p in inputs[:, :3]]
        single = {
            "points": inputs[None],
            "labels": crops[index]["labels"][None],
            "point_mask": np.ones((1, len(inputs)), bool),
        }
        logits, _ = model.apply(variables, single)
        entries = members[rows]
        vote[cloud][entries] = 0.9 * vote[cloud][entries] + 0.1 * _softmax_scored(logits[0])
    expected = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for cloud, (cached, cloud_vote) in enumerate(zip(clouds, vote)):
        assert np.all(cloud_vote.sum(axis=1) > 0)  # every sub-sampled point voted
        raw_labels = _raw_cloud(20 + cloud, cached.num_raw)[2]
        raw_prediction = np.argmax(cloud_vote, axis=1)[np.asarray(cached.proj())]
        scored = raw_labels != 0
        np.add.at(expected, (raw_labels[scored], raw_prediction[scored]), 1)
    np.testing.assert_array_equal(confusion, expected)
    scored = sum(int((_raw_cloud(20 + c, x.num_raw)[2] != 0).sum()) for c, x in enumerate(clouds))
    assert confusion.sum() == scored  # every labelled raw point once


def test_the_config_picks_the_evaluation(clouds):
    scene = ml_collections.ConfigDict(
        {
            "evaluation": "whole_clouds",
            "crop_points": 128,
            "centre_noise_m": 0.35,
            "vote_min_possibility": 0.5,
            "vote_smoothing": 0.98,
            "vote_seed": 0,
        }
    )
    assert isinstance(evaluation_source(clouds, LABEL_SPACE, scene), WholeClouds)
    assert not votes.is_voted(evaluation_source(clouds, LABEL_SPACE, scene))
    scene.evaluation = "possibility_votes"
    voting = evaluation_source(clouds, LABEL_SPACE, scene)
    assert votes.is_voted(voting) and voting.num_points == 128 and voting.smoothing == 0.98
    scene.evaluation = "crops"
    with pytest.raises(ValueError, match="'crops': expected 'whole_clouds' or 'possibility_votes'"):
        evaluation_source(clouds, LABEL_SPACE, scene)
