"""Static scenes (datasets/scenes/): sub-sampling, proj and label histograms against numpy
references, the streamed path, the keyed cache, every raw point scored through `label_counts`, and
the possibility-guided crops (reference plan, covering, determinism, resume, process slices)."""

import collections
import dataclasses

import jax
import numpy as np
import pytest

from datasets.scenes import (
    CloudFiles,
    PossibilityCrops,
    WholeClouds,
    preprocess,
    subsample_chunks,
    subsample_cloud,
)
from datasets.semantic3d.labels import LABEL_SPACE as SEMANTIC3D_LABELS
from leakjax.models import MODELS
from leakjax.train import input_pipeline
from leakjax.train import mesh as mesh_lib
from leakjax.train.batch import LABEL_COUNTS, pad_batch, point_cloud_spec
from leakjax.train.steps import make_eval_step

CELL = 0.25


def _cloud(seed, count=3000, num_classes=9, extent=(4.0, 3.0, 1.0)):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(0.0, 1.0, (count, 3)) * extent + np.array([-1.3, 0.7, 2.0])
    features = rng.uniform(0.0, 1.0, (count, 3)).astype(np.float32)
    labels = rng.integers(0, num_classes, count).astype(np.int32)
    return xyz, features, labels


def _reference(xyz, features, labels, cell, num_classes):
    """Dict of cells (cell -> rows), sorted by (z, y, x); brute-force nearest barycentre."""
    cells = collections.defaultdict(list)
    for row, point in enumerate(xyz):
        i, j, k = (int(np.floor(v / cell)) for v in point)
        cells[(k, j, i)].append(row)
    keys = sorted(cells)
    points = np.array([xyz[cells[key]].mean(axis=0) for key in keys])
    means = np.array([features[cells[key]].mean(axis=0) for key in keys])
    majority = []
    for key in keys:
        votes = np.bincount(labels[cells[key]], minlength=num_classes)
        majority.append(int(np.flatnonzero(votes == votes.max())[0]))
    distance = ((xyz[:, None, :] - points.astype(np.float32)[None, :, :]) ** 2).sum(axis=-1)
    proj = distance.argmin(axis=1)
    hist = np.zeros((len(keys), num_classes), np.int64)
    for row, target in enumerate(proj):
        hist[target, labels[row]] += 1
    return points, means, np.array(majority), proj, hist


@pytest.fixture(scope="module")
def cloud():
    return _cloud(0)


@pytest.fixture(scope="module")
def reference(cloud):
    return _reference(*cloud, CELL, 9)


def _assert_matches(result, reference):
    points, means, majority, proj, hist = reference
    np.testing.assert_allclose(result.points, points, rtol=0, atol=2e-6)
    np.testing.assert_allclose(result.features, means, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(result.labels, majority)
    np.testing.assert_array_equal(np.asarray(result.proj), proj)
    np.testing.assert_array_equal(result.label_hist, hist)


def test_subsample_cloud_matches_a_dict_of_cells(cloud, reference):
    result = subsample_cloud(*cloud, CELL, 9)
    assert len(result.points) < len(cloud[0]) / 3  # the cells really merge points
    _assert_matches(result, reference)


def test_streamed_chunks_give_the_in_memory_result(cloud, reference, tmp_path):
    xyz, features, labels = cloud
    bounds = [0, 1, 700, 701, 1900, 3000]  # uneven chunks, a 1-point one

    def chunks():
        for start, stop in zip(bounds[:-1], bounds[1:]):
            yield xyz[start:stop], features[start:stop], labels[start:stop]

    result = subsample_chunks(chunks, CELL, 9, tmp_path / "proj.npy")
    _assert_matches(result, reference)
    np.testing.assert_array_equal(np.load(tmp_path / "proj.npy"), reference[3])


def test_cache_is_built_once_and_keyed_by_its_files(cloud, tmp_path):
    xyz, features, labels = cloud
    source = tmp_path / "room.txt"
    source.write_text("x")
    reads = []

    def read():
        reads.append(1)
        return [(xyz, features, labels)]

    files = [CloudFiles("room", (source,), read, "test reader")]
    first = preprocess(files, CELL, 9, tmp_path / "cache", "test")[0]
    again = preprocess(files, CELL, 9, tmp_path / "cache", "test")[0]
    assert len(reads) == 1 and again.directory == first.directory
    assert (first.num_raw, first.num_points) == (len(xyz), len(first.arrays()["points"]))
    np.testing.assert_array_equal(first.proj(), subsample_cloud(*cloud, CELL, 9).proj)
    source.write_text("changed")  # another size: a new entry, never the stale one
    changed = preprocess(files, CELL, 9, tmp_path / "cache", "test")[0]
    other_grid = preprocess(files, 2 * CELL, 9, tmp_path / "cache", "test")[0]
    assert len(reads) == 3 and len({first.directory, changed.directory, other_grid.directory}) == 3


@pytest.fixture(scope="module")
def clouds(tmp_path_factory):
    """Three labelled clouds of different sizes in a cache."""
    root = tmp_path_factory.mktemp("scenes")
    files = []
    for index, count in enumerate((900, 400, 1500)):
        path = root / f"cloud{index}.txt"
        path.write_text(str(index))
        data = _cloud(10 + index, count, extent=(3.0, 2.0, 1.0))
        files.append(CloudFiles(f"cloud{index}", (path,), lambda data=data: [data], "test"))
    return preprocess(files, 0.1, 9, root / "cache", "test")


def test_label_counts_score_every_raw_point_through_proj(clouds):
    """The eval step's confusion from `label_counts` equals a numpy count over the raw points,
    each with the prediction of its nearest sub-sampled point (label 0 ignored, Semantic3D)."""
    space = SEMANTIC3D_LABELS
    source = WholeClouds(clouds[:2], space)
    spec = point_cloud_spec(6, label_counts=space.num_classes)
    model = MODELS["pointmlp"](num_classes=9, ignore_index=0, input_channels=6, hidden_sizes=(8,))
    samples = [source[0], source[1], spec.empty_sample(), spec.empty_sample()]
    batch = pad_batch(samples, 1024, spec, space.no_label)
    variables = model.init(jax.random.key(0), batch)
    mesh = mesh_lib.make_data_mesh()
    confusion = np.asarray(make_eval_step(model, mesh, space, spec)(variables, batch)["confusion"])
    logits, _ = model.apply(variables, batch)
    prediction = np.asarray(space.predict(logits))
    expected = np.zeros((9, 9), np.int64)
    for row, cached in enumerate(clouds[:2]):
        raw_labels = _cloud(10 + row, cached.num_raw, extent=(3.0, 2.0, 1.0))[2]
        raw_prediction = prediction[row][np.asarray(cached.proj())]
        scored = raw_labels != 0
        np.add.at(expected, (raw_labels[scored], raw_prediction[scored]), 1)
    np.testing.assert_array_equal(confusion, expected)
    assert confusion.sum() == sum(source.num_scored_raw_points(i) for i in range(2))
    # without the field, the same batch is scored on its sub-sampled points' majority labels
    plain = {k: v for k, v in batch.items() if k != LABEL_COUNTS}
    majority = np.asarray(make_eval_step(model, mesh, space, spec)(variables, plain)["confusion"])
    assert majority.sum() == int((batch["point_mask"] & (batch["labels"] != 0)).sum())


def test_optional_label_counts_are_padded_and_never_silently_missing():
    spec = point_cloud_spec(6, label_counts=3)
    counted = {
        "points": np.ones((2, 6), np.float32),
        "labels": np.array([0, 1], np.int32),
        LABEL_COUNTS: np.array([[1, 0, 0], [0, 2, 5]], np.int32),
    }
    plain = {"points": np.ones((1, 6), np.float32), "labels": np.array([2], np.int32)}
    batch = pad_batch([counted, spec.empty_sample()], 4, spec, label_fill=-1)
    expected = np.zeros((2, 4, 3), np.int32)
    expected[0, :2] = counted[LABEL_COUNTS]
    np.testing.assert_array_equal(batch[LABEL_COUNTS], expected)
    assert LABEL_COUNTS not in pad_batch([plain, plain], 4, spec)
    with pytest.raises(ValueError, match="sample 1 lacks the optional field 'label_counts'"):
        pad_batch([counted, plain], 4, spec)
    needs_counts = point_cloud_spec(6)
    needs_counts.fields[LABEL_COUNTS] = dataclasses.replace(
        spec.fields[LABEL_COUNTS], optional=False
    )
    with pytest.raises(ValueError, match="optional in the data, the model needs it"):
        spec.check_compatible(needs_counts, "model x")
    spec.check_compatible(point_cloud_spec(6), "model x")  # models that do not read it


def _reference_plan(clouds, num_points, num_crops, noise, seed, epoch):
    """The possibility-guided plan restated with brute-force distances."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, 2**31 + 1])))
    xyz = [c.arrays()["points"].astype(np.float64) for c in clouds]
    possibility = [rng.random(len(x)) * 1e-3 for x in xyz]
    plan, covered = [], [np.zeros(len(x), bool) for x in xyz]
    for _ in range(num_crops):
        cloud = int(np.argmin([p.min() for p in possibility]))
        centre = xyz[cloud][np.argmin(possibility[cloud])] + rng.normal(scale=noise, size=3)
        squared = ((xyz[cloud] - centre) ** 2).sum(axis=1)
        crop = np.argsort(squared)[: min(num_points, len(squared))]
        possibility[cloud][crop] += (1 - squared[crop] / squared[crop].max()) ** 2
        covered[cloud][crop] = True
        plan.append((cloud, centre, set(crop.tolist())))
    return plan, covered


def test_possibility_crops_follow_the_released_rule_and_cover_every_point(clouds):
    crops = PossibilityCrops(clouds, 300, 24, centre_noise_m=0.35, num_classes=9)
    plan, covered = _reference_plan(clouds, 300, 24, 0.35, seed=3, epoch=2)
    got = crops.plan(3, 2)
    assert [int(c) for c in got.cloud] == [c for c, _, _ in plan]
    np.testing.assert_allclose(got.centre, [centre for _, centre, _ in plan], atol=1e-12)
    assert all(c.all() for c in covered)  # 24 crops of 300 reach every point of the 3 clouds
    arrays = [c.arrays() for c in clouds]
    for index in (0, 7, 23):
        sample = crops.sample(3, 2, index)
        cloud, centre, members = plan[index]
        xyz = sample["points"][:, :3].astype(np.float64) + arrays[cloud]["points"].mean(axis=0)
        rows = [int(np.argmin(((arrays[cloud]["points"] - p) ** 2).sum(axis=1))) for p in xyz]
        assert set(rows) == members and len(rows) == len(members)
        np.testing.assert_array_equal(sample["labels"], arrays[cloud]["labels"][rows])
        np.testing.assert_allclose(sample["points"][:, 3:], arrays[cloud]["features"][rows])
    assert crops.size(0) == (300,)
    counts = sum(np.bincount(a["labels"], minlength=9) for a in arrays)
    np.testing.assert_array_equal(crops.class_counts(), counts)


def test_crops_are_deterministic_and_resume_in_the_middle_of_an_epoch(clouds, monkeypatch):
    crops = PossibilityCrops(clouds, 128, 10, centre_noise_m=0.35, num_classes=9)
    spec = point_cloud_spec(6, label_counts=9)

    def batches(start, seed=5):
        stream = input_pipeline.train_batches(crops, spec, 4, seed, start, buckets=[128])
        return [next(stream) for _ in range(6 - start)]

    full = batches(0)  # 6 steps x 4 = 2.4 epochs of 10 crops
    assert LABEL_COUNTS not in full[0]
    fresh = PossibilityCrops(clouds, 128, 10, centre_noise_m=0.35, num_classes=9)
    resumed = input_pipeline.train_batches(fresh, spec, 4, 5, 1, buckets=[128])  # epoch 0, crop 4
    for expected in full[1:]:
        got = next(resumed)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    other = batches(0, seed=6)
    assert not np.array_equal(other[0]["points"], full[0]["points"])
    assert not np.array_equal(crops.plan(5, 0).centre, crops.plan(5, 1).centre)
    # two processes: each builds its half of every batch, the halves make the whole batch
    halves = []
    for process in (0, 1):
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        monkeypatch.setattr(jax, "process_index", lambda process=process: process)
        stream = input_pipeline.train_batches(crops, spec, 4, 5, 2, buckets=[128])
        halves.append(next(stream))
    for key in full[2]:
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), full[2][key])
