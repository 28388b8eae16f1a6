"""The embedded SemanticKITTI label configuration equals the official YAML; the real scan maps."""

from pathlib import Path

import numpy as np
import yaml

import datasets.semantic_kitti as sk
from datasets.semantic_kitti import label_config

DATA = Path(__file__).parent / "data"
REAL_SEQUENCE = DATA / "semantickitti" / "sequences" / "00"


def _official():
    with open(DATA / "semantic-kitti.yaml") as f:
        return yaml.safe_load(f)


def test_embedded_tables_equal_official_yaml():
    official = _official()
    assert label_config.LABEL_NAMES == official["labels"]
    assert label_config.COLOR_MAP_BGR == {k: tuple(v) for k, v in official["color_map"].items()}
    assert label_config.CONTENT == official["content"]
    assert label_config.LEARNING_MAP_TABLE == official["learning_map"]
    assert label_config.LEARNING_MAP_INV_TABLE == official["learning_map_inv"]
    assert label_config.LEARNING_IGNORE_TABLE == official["learning_ignore"]
    assert sk.SPLITS == {
        name: [f"{number:02d}" for number in numbers] for name, numbers in official["split"].items()
    }


def test_lookup_arrays_follow_official_maps():
    official = _official()
    for raw_id, train_id in official["learning_map"].items():
        assert sk.LEARNING_MAP[raw_id] == train_id
        assert sk.KNOWN_RAW_IDS[raw_id]
    assert int(sk.KNOWN_RAW_IDS.sum()) == len(official["labels"])
    assert sk.LEARNING_MAP_INV.tolist() == [official["learning_map_inv"][t] for t in range(20)]
    assert sk.CLASS_NAMES == tuple(
        official["labels"][official["learning_map_inv"][t]] for t in range(20)
    )
    assert sk.CLASS_NAMES[0] == "unlabeled" and len(sk.CLASS_NAMES) == 20
    # every training id round-trips through learning_map_inv
    assert sk.LEARNING_MAP[sk.LEARNING_MAP_INV].tolist() == list(range(20))


def test_class_frequencies_sum_content_per_training_id():
    official = _official()
    expected = np.zeros(20)
    for raw_id, train_id in official["learning_map"].items():
        expected[train_id] += official["content"][raw_id]
    np.testing.assert_allclose(sk.class_frequencies(), expected / expected.sum())
    kept = expected.copy()
    kept[0] = 0.0
    np.testing.assert_allclose(sk.class_frequencies(exclude_ignored=True), kept / kept.sum())
    # car includes moving-car
    assert expected[1] == official["content"][10] + official["content"][252]


def test_real_scan_loads_and_maps():
    scan_path = REAL_SEQUENCE / "velodyne" / "000000.bin"
    label_path = REAL_SEQUENCE / "labels" / "000000.label"
    points = sk.load_scan(scan_path)
    raw_bytes = np.frombuffer(scan_path.read_bytes(), dtype="<f4")
    assert points.dtype == np.float32 and points.shape == (50, 4)
    np.testing.assert_array_equal(points.reshape(-1), raw_bytes)
    assert np.all((points[:, 3] >= 0) & (points[:, 3] <= 1))

    semantic, instance = sk.load_labels(label_path, num_points=50)
    packed = np.frombuffer(label_path.read_bytes(), dtype="<u4")
    np.testing.assert_array_equal(semantic, packed % 65536)
    np.testing.assert_array_equal(instance, packed // 65536)
    assert set(np.unique(semantic).tolist()) == {0, 50, 52, 70, 71, 80}

    _, train_ids, _ = sk.load_pair(scan_path, label_path)
    expected = {0: 0, 52: 0, 50: 13, 70: 15, 71: 16, 80: 18}
    for raw_id, train_id in expected.items():
        assert np.all(train_ids[semantic == raw_id] == train_id), raw_id
    assert sk.CLASS_NAMES[13] == "building" and sk.CLASS_NAMES[15] == "vegetation"
    assert sk.CLASS_NAMES[16] == "trunk" and sk.CLASS_NAMES[18] == "pole"
    pairs = sk.list_scan_label_pairs(DATA / "semantickitti", ["00"])
    assert pairs == [(scan_path, label_path)]
