"""Input pipeline tests: padding and buckets, epoch coverage, resume replay, eval coverage."""

import numpy as np
import pytest
from train_fixtures import InMemorySource, in_memory_dataset, tiny_config

from experiments.configs import semkitti as semkitti_configs
from leakjax import augment
from leakjax.train import batch as batch_lib
from leakjax.train import input_pipeline, trainer
from leakjax.transforms import build_transforms

SPEC = batch_lib.point_cloud_spec(4)
RELEASED = build_transforms(["cylinder3d_augment"])


@pytest.fixture(scope="module")
def source():
    return InMemorySource(10, seed=3, min_points=40, max_points=90)


def _rows(points, mask):
    return {tuple(row) for row in points[mask].tolist()}


def test_pad_batch_and_capacity_errors():
    points = np.arange(12, dtype=np.float32).reshape(3, 4)
    samples = [
        {"points": points, "labels": np.array([1, 2, 3])},
        {"points": points[:1], "labels": np.array([7])},
    ]
    batch = input_pipeline.pad_batch(samples, 5, SPEC, label_fill=0)
    assert batch["points"].shape == (2, 5, 4) and batch["labels"].dtype == np.int32
    np.testing.assert_array_equal(batch["point_mask"].sum(axis=1), [3, 1])
    np.testing.assert_array_equal(batch["points"][0, :3], points)
    assert not batch["points"][0, 3:].any() and not batch["labels"][1, 1:].any()
    assert (input_pipeline.pad_batch(samples, 5, SPEC, label_fill=-1)["labels"][1, 1:] == -1).all()
    assert batch_lib.choose_capacity((100,), [128, 64], SPEC, "x") == (128,)
    assert batch_lib.choose_capacity((64,), [128, 64], SPEC, "x") == (64,)
    with pytest.raises(ValueError, match="scan 7: 200 points exceed the largest"):
        batch_lib.choose_capacity((200,), [128, 64], SPEC, "scan 7")
    with pytest.raises(ValueError, match="the data does not fit the model"):
        SPEC.check_compatible(batch_lib.point_cloud_spec(6), "model x")


def test_image_batches_pad_both_dims_with_a_pixel_mask():
    """Images of their own sizes: padded to the smallest (H, W) bucket, never resized or cropped;
    the mask marks exactly the real pixels (checked against a per-pixel loop)."""
    spec = batch_lib.image_spec(3)
    rng = np.random.default_rng(0)
    sizes = [(5, 7), (3, 9)]
    samples = [
        {
            "image": rng.normal(size=(h, w, 3)).astype(np.float32),
            "labels": rng.integers(0, 21, size=(h, w)).astype(np.int32),
        }
        for h, w in sizes
    ]
    capacity = batch_lib.choose_capacity((5, 9), [[8, 8], [6, 10], [16, 16]], spec, "x")
    assert capacity == (6, 10)  # the smallest area holding both dims
    batch = input_pipeline.pad_batch(samples, capacity, spec, label_fill=255)
    assert batch["image"].shape == (2, 6, 10, 3) and batch["pixel_mask"].shape == (2, 6, 10)
    for row, (h, w) in enumerate(sizes):
        for i in range(6):
            for j in range(10):
                inside = i < h and j < w
                assert batch["pixel_mask"][row, i, j] == inside
                if inside:
                    assert batch["labels"][row, i, j] == samples[row]["labels"][i, j]
                    np.testing.assert_array_equal(
                        batch["image"][row, i, j], samples[row]["image"][i, j]
                    )
                else:
                    assert batch["labels"][row, i, j] == 255
                    assert not batch["image"][row, i, j].any()
    with pytest.raises(ValueError, match=r"\(20, 3\) pixels \(H, W\) exceed"):
        batch_lib.choose_capacity((20, 3), [[8, 8], [6, 10], [16, 16]], spec, "image 4")


def test_config_transforms_reach_the_trainer(source):
    """The trainer's batches are the samples transformed by the config's transform list with the
    sample's own generator (the Cylinder3D default), and untransformed when the list is empty."""
    config = tiny_config()
    config.data.buckets = [96]
    config.data.transforms = semkitti_configs.get_config().data.transforms
    config.data.transform_kwargs = semkitti_configs.get_config().data.transform_kwargs
    assert list(config.data.transforms) == ["cylinder3d_augment"]
    data = in_memory_dataset(source)
    batch = next(trainer.training_batches(config, data, 0))
    permutation = input_pipeline._epoch_permutation(config.seed, 0, len(source))
    for row in range(config.train.batch_size):
        index = int(permutation[row])
        rng = input_pipeline.sample_generator(config.seed, 0, index)
        expected = augment.augment_points(source[index]["points"], rng, augment.AugmentConfig())
        mask = batch["point_mask"][row]
        np.testing.assert_array_equal(batch["points"][row][mask], expected)
        assert not np.array_equal(expected, source[index]["points"])
    config.data.transforms = ()
    plain = next(trainer.training_batches(config, data, 0))
    index = int(permutation[0])
    np.testing.assert_array_equal(
        plain["points"][0][plain["point_mask"][0]], source[index]["points"]
    )


def test_epoch_sees_every_scan_once_without_augmentation(source):
    batches = input_pipeline.train_batches(
        source, SPEC, 5, seed=0, start_step=0, buckets=[96, 128], transforms=()
    )
    seen = []
    for _ in range(2):  # 2 steps x 5 = one epoch of 10 scans
        batch = next(batches)
        assert batch["points"].shape[1] == 96  # the smallest bucket holding the batch
        for row in range(5):
            mask = batch["point_mask"][row]
            matches = [
                i
                for i in range(len(source))
                if source.size(i)[0] == mask.sum()
                and np.array_equal(source[i]["points"], batch["points"][row][mask])
                and np.array_equal(source[i]["labels"], batch["labels"][row][mask])
            ]
            assert len(matches) == 1
            seen.append(matches[0])
    assert sorted(seen) == list(range(len(source)))


def test_resume_replays_the_same_batches(source):
    full = input_pipeline.train_batches(
        source, SPEC, 4, seed=5, start_step=0, buckets=[96], transforms=RELEASED
    )
    reference = [next(full) for _ in range(6)]
    resumed = input_pipeline.train_batches(
        source, SPEC, 4, seed=5, start_step=3, buckets=[96], transforms=RELEASED
    )
    for expected in reference[3:]:
        got = next(resumed)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    # Augmentation really ran: coordinates differ from the raw scans, labels and remission kept.
    first = reference[0]
    mask = first["point_mask"][0]
    matching = [i for i in range(len(source)) if source.size(i)[0] == mask.sum()]
    assert not any(np.array_equal(source[i]["points"], first["points"][0][mask]) for i in matching)
    assert any(
        np.array_equal(source[i]["points"][:, 3], first["points"][0][mask][:, 3])
        and np.array_equal(source[i]["labels"], first["labels"][0][mask])
        for i in matching
    )
    other_seed = next(
        input_pipeline.train_batches(
            source, SPEC, 4, seed=6, start_step=0, buckets=[96], transforms=RELEASED
        )
    )
    assert not np.array_equal(other_seed["points"], first["points"])


def test_max_points_subsamples_explicitly(source):
    batch = next(
        input_pipeline.train_batches(
            source, SPEC, 10, seed=0, start_step=0, buckets=[32, 96], transforms=(), max_points=30
        )
    )
    assert batch["points"].shape[1] == 32
    np.testing.assert_array_equal(batch["point_mask"].sum(axis=1), 30)
    all_rows = set().union(
        *(_rows(source[i]["points"], np.ones(source.size(i)[0], bool)) for i in range(len(source)))
    )
    for row in range(10):
        assert _rows(batch["points"][row], batch["point_mask"][row]) <= all_rows


def test_eval_batches_cover_every_point_once(source):
    batches = list(input_pipeline.eval_batches(source, SPEC, 4, buckets=[64, 96]))
    assert len(batches) == 3  # 10 scans in batches of 4, the last padded with 2 empty samples
    assert not batches[-1]["point_mask"][2:].any()
    index = 0
    for batch in batches:
        for row in range(4):
            if index >= len(source):
                break
            mask = batch["point_mask"][row]
            np.testing.assert_array_equal(batch["points"][row][mask], source[index]["points"])
            np.testing.assert_array_equal(batch["labels"][row][mask], source[index]["labels"])
            index += 1
    assert index == len(source)


def test_prefetch_keeps_order_and_raises_errors():
    assert list(input_pipeline.prefetch(iter(range(20)), size=3)) == list(range(20))

    def failing():
        yield 1
        raise ValueError("bad scan file")

    got = input_pipeline.prefetch(failing(), size=2)
    assert next(got) == 1
    with pytest.raises(ValueError, match="bad scan file"):
        next(got)


def test_randla_crop_keeps_the_nearest_points_of_a_scan_point_and_sizes_the_bucket(source):
    """randla_crop: the kept points are exactly the num_points nearest (brute force) to one of the
    scan's points, labels travel with their points, and the batch bucket is chosen from the
    declared output size before any sample is loaded."""
    crop = build_transforms(["randla_crop"], {"randla_crop": {"num_points": 32}})
    sample = source[0]
    out = crop[0](sample, np.random.default_rng(3))
    assert out["points"].shape == (32, 4) and out["labels"].shape == (32,)
    rows = {tuple(r) for r in out["points"].tolist()}
    pairs = {
        (tuple(p), int(label)) for p, label in zip(sample["points"].tolist(), sample["labels"])
    }
    assert {
        (tuple(p), int(label)) for p, label in zip(out["points"].tolist(), out["labels"])
    } <= pairs
    xyz = sample["points"][:, :3]
    matches = []
    for centre in xyz:
        nearest = np.argsort(np.sum((xyz - centre) ** 2, axis=1), kind="stable")[:32]
        matches.append({tuple(r) for r in sample["points"][nearest].tolist()} == rows)
    assert any(matches)
    small = {k: v[:10] for k, v in sample.items()}
    assert len(crop[0](small, np.random.default_rng(0))["points"]) == 10  # fewer: all kept
    batch = next(
        input_pipeline.train_batches(
            source, SPEC, 4, seed=0, start_step=0, buckets=[32, 96], transforms=crop
        )
    )
    assert batch["points"].shape[1] == 32 and batch["point_mask"].all()


def _released_salsanext_drop(count: int, fraction: float, draws: np.ndarray) -> np.ndarray:
    """The released deletion (np.delete of randint(0, N - 1, int(N f)) indices): kept ids."""
    assert len(draws) == int(count * fraction) and (draws < count - 1).all()
    return np.delete(np.arange(count), draws)


def test_salsanext_augment_follows_the_released_draws():
    """salsanext_augment against a restatement of the released rule on 400 scans: about half
    untouched; otherwise y flipped and/or a translation inside the released box, and the distinct
    dropped indices deleted from points and labels alike (labels travel with their points)."""
    (augment_fn,) = build_transforms(["salsanext_augment"])
    count = 200
    xyz = np.random.default_rng(0).normal(size=(count, 3)).astype(np.float32) * 10
    ids = np.arange(count, dtype=np.float32)
    sample = {"points": np.column_stack([xyz, ids]), "labels": np.arange(count, dtype=np.int32)}
    untouched = flipped = translated = 0
    for seed in range(400):
        out = augment_fn(sample, np.random.default_rng(seed))
        kept = out["points"][:, 3].astype(int)
        np.testing.assert_array_equal(out["labels"], kept)  # the same rows of every field
        if out is sample:
            untouched += 1
            continue
        # replay the released draws with the same generator: apply, DA, flip, fraction, shift
        rng = np.random.default_rng(seed)
        assert rng.random() < 0.5
        do_translate, do_flip = rng.random() < 0.5, rng.random() < 0.5
        fraction = rng.uniform(0.0, 0.5)
        shift = rng.uniform([-5, -3, -1], [5, 3, 0]) if do_translate else np.zeros(3)
        expected_ids = _released_salsanext_drop(
            count, fraction, rng.integers(0, count - 1, size=int(count * fraction))
        )
        np.testing.assert_array_equal(kept, expected_ids)
        assert count - 1 in kept  # the released range never drops the last point
        expected = xyz[kept] * np.array([1, -1 if do_flip else 1, 1], np.float32)
        np.testing.assert_allclose(out["points"][:, :3], expected + shift, atol=1e-4)
        flipped += do_flip
        translated += do_translate
    assert 160 < untouched < 240 and 60 < flipped < 140 and 60 < translated < 140
    np.testing.assert_array_equal(sample["labels"], np.arange(count))  # input not modified
