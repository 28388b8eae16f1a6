"""Synthetic LiDAR world: determinism, layout, sensor geometry, class coverage and imbalance."""

import json

import numpy as np
import pytest
from scipy.spatial import cKDTree

import datasets.semantic_kitti as sk
from datasets.synthetic import SensorConfig, StreetWorld, generate, render_scan
from datasets.synthetic.__main__ import main as cli_main

# HDL-64E as specified for KITTI, written out independently of the generator's sensor module
HDL64_ELEVATIONS_DEG = np.concatenate([np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.9, 32)])
THING_RAW_IDS = {10, 11, 13, 15, 16, 18, 20, 30, 31, 32, 252, 253, 254, 255, 256, 257, 258, 259}
# seed 3, scan 0 of sequences 00-03: a fixed sample of four full-resolution scans
COVERAGE_SEED, COVERAGE_SEQUENCES = 3, (0, 1, 2, 3)


@pytest.fixture(scope="module")
def full_scans():
    sensor = SensorConfig()
    return [
        render_scan(StreetWorld(COVERAGE_SEED, sequence), sensor, 0, COVERAGE_SEED)
        for sequence in COVERAGE_SEQUENCES
    ]


def _tree_bytes(root):
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    options = dict(sequences=("00", "08"), scans_per_sequence=2, azimuth_steps=128)
    first = _tree_bytes(generate(tmp_path / "a", seed=5, **options))
    second = _tree_bytes(generate(tmp_path / "b", seed=5, **options))
    other = _tree_bytes(generate(tmp_path / "c", seed=6, **options))
    assert first == second
    assert len(first) == 2 * (2 * 2 + 3) + 1  # scans + labels + poses/calib/times, json
    scans = [name for name in first if name.endswith(".bin")]
    assert all(first[name] != other[name] for name in scans)
    # a scan does not depend on the scans generated before it
    alone = generate(tmp_path / "d", seed=5, sequences=("08",), scans_per_sequence=1,
                     azimuth_steps=128)  # fmt: skip
    assert (alone / "sequences/08/velodyne/000000.bin").read_bytes() == first[
        "sequences/08/velodyne/000000.bin"
    ]


def test_generated_layout_reads_back_and_poses_register_scans(tmp_path):
    root = generate(tmp_path, seed=1, sequences=[4], scans_per_sequence=3, azimuth_steps=1024)
    pairs = sk.list_scan_label_pairs(root, ["04"])
    assert [scan.name for scan, _ in pairs] == ["000000.bin", "000001.bin", "000002.bin"]
    poses = sk.load_poses(root / "sequences/04/poses.txt")
    assert poses.shape == (3, 4, 4)
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(sk.load_calib(root / "sequences/04/calib.txt")["Tr"], np.eye(4)[:3])
    np.testing.assert_allclose(sk.load_times(root / "sequences/04/times.txt"), [0.0, 0.1, 0.2])
    assert json.loads((root / "synthetic.json").read_text())["sensor"]["azimuth_steps"] == 1024
    travelled = np.linalg.norm(poses[2, :3, 3])
    assert 1.0 < travelled < 3.0  # 10 Hz at 5-11 m/s
    # thin static objects seen from two poses land on the same spots in the first scan's frame
    frames = []
    for (scan_path, label_path), pose in zip(pairs[::2], poses[::2]):
        points, train_ids, _ = sk.load_pair(scan_path, label_path)
        thin = np.isin(train_ids, [16, 18, 19])  # trunk, pole, traffic-sign
        assert thin.sum() > 50
        frames.append((np.c_[points[thin, :3], np.ones(thin.sum())], pose))
    (first, first_pose), (last, last_pose) = frames
    first_tree = cKDTree((first @ first_pose.T)[:, :3])
    assert np.median(first_tree.query((last @ last_pose.T)[:, :3])[0]) < 0.1
    # without the pose they would be off by about the distance travelled
    assert np.median(first_tree.query(last[:, :3])[0]) > 0.5


def test_sensor_geometry(full_scans):
    for scan in full_scans:
        points, semantic = scan.points, scan.semantic
        assert points.dtype == np.float32 and np.isfinite(points).all()
        assert 100_000 <= points.shape[0] <= 130_000
        ranges = np.linalg.norm(points[:, :3], axis=1)
        assert ranges.max() <= 80.0 and ranges.min() >= 2.0
        assert points[:, 3].min() >= 0.0 and points[:, 3].max() <= 1.0
        assert points[:, 3].std() > 0.05  # remission varies with surface and incidence
        elevation = np.degrees(np.arcsin(points[:, 2] / ranges))
        # terrain gets height roughness; every other return lies exactly on one of the 64 beams
        smooth = semantic != 72
        offset = np.abs(elevation[smooth, None] - HDL64_ELEVATIONS_DEG[None, :]).min(axis=1)
        assert offset.max() < 0.01
        beams_seen = np.unique(
            np.abs(elevation[smooth, None] - HDL64_ELEVATIONS_DEG).argmin(axis=1)
        )
        assert beams_seen.size >= 60
        road = semantic == 40
        assert abs(np.median(points[road, 2]) + 1.73) < 0.02  # sensor 1.73 m above the road


def test_class_coverage_and_imbalance(full_scans):
    semantic = np.concatenate([scan.semantic for scan in full_scans])
    instance = np.concatenate([scan.instance for scan in full_scans])
    train_ids = sk.LEARNING_MAP[semantic]
    counts = np.bincount(train_ids, minlength=20)
    assert (counts[1:] > 0).all(), [sk.CLASS_NAMES[c] for c in np.flatnonzero(counts == 0)]
    ranking = [sk.CLASS_NAMES[c] for c in np.argsort(-counts[1:]) + 1]
    assert {"road", "sidewalk", "building", "vegetation"} <= set(ranking[:5]), ranking
    fractions = counts / counts.sum()
    assert fractions[7] < 0.005 and fractions[8] < 0.005  # bicyclist, motorcyclist
    assert fractions[[7, 8]].max() < fractions[[9, 11, 13, 15]].min() / 20
    # official raw ids: moving things, lane markings, and raw ids that map to the ignored class
    present = set(np.unique(semantic).tolist())
    assert {60, 252} <= present and len(present & {253, 254, 255, 257, 258, 259}) >= 2
    assert len(present & {0, 1, 52, 99}) >= 3 and fractions[0] > 0
    is_thing = np.isin(semantic, list(THING_RAW_IDS))
    assert (instance[is_thing] > 0).all() and (instance[~is_thing] == 0).all()


def test_cli_writes_requested_sequences(tmp_path, capsys):
    cli_main(["--out", str(tmp_path), "--seed", "3", "--sequences", "00", "8", "--scans", "2",
              "--azimuth_steps", "64"])  # fmt: skip
    assert "wrote 4 scans" in capsys.readouterr().out
    for sequence in ("00", "08"):
        pairs = sk.list_scan_label_pairs(tmp_path, [sequence])
        assert len(pairs) == 2
        assert len(sk.load_poses(tmp_path / "sequences" / sequence / "poses.txt")) == 2


def test_bad_generator_arguments(tmp_path):
    with pytest.raises(ValueError, match="scans_per_sequence"):
        generate(tmp_path, scans_per_sequence=0)
    with pytest.raises(ValueError, match="azimuth_steps"):
        generate(tmp_path, azimuth_steps=4)
    with pytest.raises(ValueError, match="not a sequence number"):
        generate(tmp_path, sequences=("train",), azimuth_steps=64)
