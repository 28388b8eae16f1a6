"""SemanticKITTI reader and writer: round trips, and every bad input raises a named ValueError."""

import re

import numpy as np
import pytest

import datasets.semantic_kitti as sk


def _random_scan(rng, n=37):
    points = rng.normal(size=(n, 4)).astype(np.float32) * 20
    points[:, 3] = rng.uniform(size=n)
    return points


def _random_raw_labels(rng, n=37):
    known = np.flatnonzero(sk.KNOWN_RAW_IDS)
    return rng.choice(known, size=n), rng.integers(0, 65536, size=n)


def _make_sequence(root, sequence, n_scans=2, with_labels=True, seed=0):
    rng = np.random.default_rng(seed)
    for index in range(n_scans):
        directory = root / "sequences" / sequence
        points = _random_scan(rng, n=10 + index)
        sk.write_scan(directory / "velodyne" / f"{index:06d}.bin", points)
        if with_labels:
            semantic, instance = _random_raw_labels(rng, n=10 + index)
            sk.write_labels(directory / "labels" / f"{index:06d}.label", semantic, instance)


def test_scan_round_trip_is_bytewise(tmp_path):
    points = _random_scan(np.random.default_rng(0))
    path = tmp_path / "a.bin"
    sk.write_scan(path, points)
    assert path.read_bytes() == points.astype("<f4").tobytes()
    np.testing.assert_array_equal(sk.load_scan(path), points)


def test_labels_round_trip_packs_semantic_and_instance(tmp_path):
    semantic, instance = _random_raw_labels(np.random.default_rng(1))
    path = tmp_path / "a.label"
    sk.write_labels(path, semantic, instance)
    packed = np.frombuffer(path.read_bytes(), dtype="<u4")
    # independent packing: semantic + 65536 * instance
    np.testing.assert_array_equal(packed, semantic + 65536 * instance)
    loaded_semantic, loaded_instance = sk.load_labels(path, num_points=semantic.size)
    assert loaded_semantic.dtype == np.int32 and loaded_instance.dtype == np.int32
    np.testing.assert_array_equal(loaded_semantic, semantic)
    np.testing.assert_array_equal(loaded_instance, instance)


def test_predictions_written_through_learning_map_inv(tmp_path):
    train_ids = np.arange(40) % 20
    path = tmp_path / "sequences" / "11" / "predictions" / "000000.label"
    sk.write_predictions(path, train_ids)
    raw = np.frombuffer(path.read_bytes(), dtype="<u4")
    official_inv = [0, 10, 11, 15, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 70, 71, 72, 80, 81]
    np.testing.assert_array_equal(raw, np.array(official_inv)[train_ids])
    semantic, instance = sk.load_labels(path)
    np.testing.assert_array_equal(sk.LEARNING_MAP[semantic], train_ids)
    assert not instance.any()


def test_poses_calib_times_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, :3, :] = rng.normal(size=(3, 3, 4))
    sk.write_poses(tmp_path / "poses.txt", poses)
    lines = (tmp_path / "poses.txt").read_text().splitlines()
    assert len(lines) == 3 and all(len(line.split()) == 12 for line in lines)
    np.testing.assert_allclose(sk.load_poses(tmp_path / "poses.txt"), poses, rtol=1e-8)
    calib = {"P0": rng.normal(size=(3, 4)), "Tr": np.eye(4)[:3]}
    sk.write_calib(tmp_path / "calib.txt", calib)
    loaded = sk.load_calib(tmp_path / "calib.txt")
    assert list(loaded) == ["P0", "Tr"]
    np.testing.assert_allclose(loaded["P0"], calib["P0"], rtol=1e-10)
    times = np.arange(5) * 0.1
    sk.write_times(tmp_path / "times.txt", times)
    np.testing.assert_allclose(sk.load_times(tmp_path / "times.txt"), times)


def _raises_naming(path, message):
    return pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message)


def test_bin_size_not_multiple_of_16(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(np.zeros(9, dtype="<f4").tobytes())
    with _raises_naming(path, "not a multiple of 16"):
        sk.load_scan(path)


def test_empty_scan(tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    with _raises_naming(path, "empty scan"):
        sk.load_scan(path)
    with _raises_naming(path, "empty scan"):
        sk.write_scan(path, np.zeros((0, 4), np.float32))


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_coordinates(tmp_path, bad_value):
    points = _random_scan(np.random.default_rng(3))
    points[5, 1] = bad_value
    path = tmp_path / "nan.bin"
    points.astype("<f4").tofile(path)
    with _raises_naming(path, "NaN or infinite"):
        sk.load_scan(path)
    with _raises_naming(tmp_path / "x.bin", "NaN or infinite"):
        sk.write_scan(tmp_path / "x.bin", points)


def test_label_count_differs_from_scan(tmp_path):
    scan_path, label_path = tmp_path / "s.bin", tmp_path / "s.label"
    sk.write_scan(scan_path, _random_scan(np.random.default_rng(4), n=12))
    sk.write_labels(label_path, np.full(11, 40))
    with _raises_naming(label_path, "11 labels but the scan has 12 points"):
        sk.load_labels(label_path, num_points=12)
    with _raises_naming(label_path, "11 labels but the scan has 12 points"):
        sk.load_pair(scan_path, label_path)


def test_label_size_not_multiple_of_4(tmp_path):
    path = tmp_path / "odd.label"
    path.write_bytes(b"\x28\x00\x00\x00\x28\x00")
    with _raises_naming(path, "not a multiple of 4"):
        sk.load_labels(path)


def test_unknown_raw_ids(tmp_path):
    path = tmp_path / "unknown.label"
    # 41 and 300 are not SemanticKITTI raw ids; 40 (road) is
    np.array([40, 41, 300 + (7 << 16), 40], dtype="<u4").tofile(path)
    with _raises_naming(
        path, r"2 labels with raw ids not in the SemanticKITTI configuration: \[41, 300\]"
    ):
        sk.load_labels(path)
    with _raises_naming(tmp_path / "w.label", "not in the SemanticKITTI"):
        sk.write_labels(tmp_path / "w.label", np.array([40, 41]))


def test_bad_predictions_and_instances(tmp_path):
    with _raises_naming(tmp_path / "p.label", "0..19"):
        sk.write_predictions(tmp_path / "p.label", np.array([0, 20]))
    with _raises_naming(tmp_path / "p.label", "integers"):
        sk.write_predictions(tmp_path / "p.label", np.array([0.0, 1.0]))
    with _raises_naming(tmp_path / "i.label", "instance ids"):
        sk.write_labels(tmp_path / "i.label", np.array([10]), np.array([70000]))


def test_bad_poses_line(tmp_path):
    path = tmp_path / "poses.txt"
    path.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0 0 1 0 0 0 0 1\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:2") + ".*expected 12 numbers"):
        sk.load_poses(path)


def test_list_pairs_and_splits(tmp_path):
    _make_sequence(tmp_path, "08", n_scans=3)
    _make_sequence(tmp_path, "11", n_scans=2, with_labels=False)
    pairs = sk.list_scan_label_pairs(tmp_path, [8])
    assert [(s.name, label.name) for s, label in pairs] == [
        (f"{i:06d}.bin", f"{i:06d}.label") for i in range(3)
    ]
    assert all(s.parent.parent.name == "08" for s, _ in pairs)
    assert sk.split_pairs(tmp_path, "valid") == pairs
    test_pairs = sk.list_scan_label_pairs(tmp_path, ["11"], require_labels=False)
    assert [label for _, label in test_pairs] == [None, None]
    for scan_path, label_path in pairs:
        points, train_ids, instance = sk.load_pair(scan_path, label_path)
        semantic, _ = sk.load_labels(label_path)
        assert points.shape[0] == train_ids.shape[0] == instance.shape[0]
        np.testing.assert_array_equal(train_ids, sk.LEARNING_MAP[semantic])


def test_missing_directories(tmp_path):
    _make_sequence(tmp_path, "00", n_scans=1, with_labels=False)
    with _raises_naming(tmp_path / "sequences" / "00" / "labels", "missing labels/"):
        sk.list_scan_label_pairs(tmp_path, ["00"])
    (tmp_path / "sequences" / "03").mkdir()
    with _raises_naming(tmp_path / "sequences" / "03" / "velodyne", "missing velodyne/"):
        sk.list_scan_label_pairs(tmp_path, ["03"], require_labels=False)
    with _raises_naming(tmp_path / "sequences" / "05", "does not exist"):
        sk.list_scan_label_pairs(tmp_path, ["05"])
    with pytest.raises(ValueError, match="not a sequence number"):
        sk.list_scan_label_pairs(tmp_path, ["train"])
    with pytest.raises(ValueError, match="split 'training'"):
        sk.split_pairs(tmp_path, "training")


def test_scans_and_labels_must_match(tmp_path):
    _make_sequence(tmp_path, "02", n_scans=2)
    (tmp_path / "sequences" / "02" / "labels" / "000001.label").unlink()
    with _raises_naming(
        tmp_path / "sequences" / "02" / "labels", r"scans without labels: \['000001'\]"
    ):
        sk.list_scan_label_pairs(tmp_path, ["02"])
