"""Semantic3D: in-memory and streaming readers on handmade files, errors naming file and line, label
and point count mismatches, bounded memory, submissions, splits, label space and the generator."""

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import datasets.semantic3d as s3d
from datasets.semantic3d import synthetic

REFERENCE_TRAINING = [
    "bildstein_station1_xyz_intensity_rgb", "bildstein_station3_xyz_intensity_rgb",
    "bildstein_station5_xyz_intensity_rgb", "domfountain_station1_xyz_intensity_rgb",
    "domfountain_station2_xyz_intensity_rgb", "domfountain_station3_xyz_intensity_rgb",
    "neugasse_station1_xyz_intensity_rgb", "sg27_station1_intensity_rgb",
    "sg27_station2_intensity_rgb", "sg27_station4_intensity_rgb", "sg27_station5_intensity_rgb",
    "sg27_station9_intensity_rgb", "sg28_station4_intensity_rgb",
    "untermaederbrunnen_station1_xyz_intensity_rgb",
    "untermaederbrunnen_station3_xyz_intensity_rgb",
]  # fmt: skip


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("latin-1"))
    return path


def _read_all(txt, labels, reader, chunk_points=2):
    if reader == "memory":
        return s3d.load_scan(txt, labels)
    chunks = list(s3d.iter_chunks(txt, labels, chunk_points=chunk_points))
    points = np.concatenate([c.points for c in chunks])
    return points, None if labels is None else np.concatenate([c.labels for c in chunks])


POINTS_TEXT = (
    "1.5 -2.25 0.125 -1024 10 20 30\n"
    "100.001 0 -3 2047 255 0 1\r\n"
    "-0.5 0.5 7 -2048 0 0 0\n"
    "3 4 5 12 200 100 50\n"
    "\n"  # trailing empty lines are not points
)
EXPECTED_POINTS = np.array(
    [
        [1.5, -2.25, 0.125, -1024, 10, 20, 30],
        [100.001, 0, -3, 2047, 255, 0, 1],
        [-0.5, 0.5, 7, -2048, 0, 0, 0],
        [3, 4, 5, 12, 200, 100, 50],
    ],
    np.float32,
)


@pytest.mark.parametrize("reader", ["memory", "stream"])
def test_readers_on_a_handmade_scan(tmp_path, reader):
    txt = _write(tmp_path / "scan.txt", POINTS_TEXT)
    labels_path = _write(tmp_path / "scan.labels", "0\n8\n3\n1\n")
    points, labels = _read_all(txt, labels_path, reader)
    assert points.dtype == np.float32 and labels.dtype == np.int32
    np.testing.assert_array_equal(points, EXPECTED_POINTS)
    np.testing.assert_array_equal(labels, [0, 8, 3, 1])
    points, labels = _read_all(txt, None, reader)
    assert labels is None
    np.testing.assert_array_equal(points, EXPECTED_POINTS)


@pytest.mark.parametrize("reader", ["memory", "stream"])
@pytest.mark.parametrize(
    ("points_text", "labels_text", "bad_file", "bad_line", "problem"),
    [
        ("1 2 3 4 5 6 7\n1 2 3 4 5 6\n", "1\n1\n", "scan.txt", 2, "expected 7 columns, got 6"),
        ("1 2 3 4 5 6 7\n1 2 3 4 5 6 7\n1 2 3 a 5 6 7\n", "1\n1\n1\n", "scan.txt", 3, "column 4"),
        ("1 2 3 4 5 6 7\n1 2 3 4 5 6 256\n", "1\n1\n", "scan.txt", 2, "colour outside 0..255"),
        ("1 2 3 4 5 6 7\n\n1 2 3 4 5 6 7\n", "1\n1\n", "scan.txt", 2, "empty line"),
        ("1 2 3 4 5 6 7\n" * 3, "1\n1.5\n1\n", "scan.labels", 2, "not an integer"),
        ("1 2 3 4 5 6 7\n" * 3, "1\n2\n9\n", "scan.labels", 3, "label outside 0..8"),
        ("1 2 3 4 5 6 7\n" * 3, "-1\n2\n3\n", "scan.labels", 1, "label outside 0..8"),
        ("1 2 3 4 5 6 7\n" * 3, "1 2\n2\n3\n", "scan.labels", 1, "expected 1 columns, got 2"),
        ("1 2 3 4 5 6 7\n" * 3, "1\n2\n\n3\n", "scan.labels", 3, "empty line"),
    ],
)
def test_malformed_lines_name_file_and_line(
    tmp_path, reader, points_text, labels_text, bad_file, bad_line, problem
):
    txt = _write(tmp_path / "scan.txt", points_text)
    labels_path = _write(tmp_path / "scan.labels", labels_text)
    with pytest.raises(ValueError) as error:
        _read_all(txt, labels_path, reader)
    message = str(error.value)
    assert f"{bad_file}:{bad_line}: " in message and problem in message, message


@pytest.mark.parametrize("reader", ["memory", "stream"])
@pytest.mark.parametrize(
    ("num_points", "num_labels", "bad_file", "bad_line"),
    [(7, 5, "scan.txt", 6), (7, 8, "scan.labels", 8), (4, 6, "scan.labels", 5)],
)
def test_label_point_count_mismatch_is_an_error(
    tmp_path, reader, num_points, num_labels, bad_file, bad_line
):
    txt = _write(tmp_path / "scan.txt", "1 2 3 4 5 6 7\n" * num_points)
    labels_path = _write(tmp_path / "scan.labels", "2\n" * num_labels)
    with pytest.raises(ValueError, match="label/point count mismatch") as error:
        _read_all(txt, labels_path, reader, chunk_points=2)
    assert f"{bad_file}:{bad_line}: " in str(error.value)


def _random_scan_text(rng, num_points):
    xyz = np.round(rng.uniform(-80, 80, (num_points, 3)), 3)
    other = rng.integers([-2048, 0, 0, 0], [2048, 256, 256, 256], (num_points, 4))
    lines = [
        f"{x:.3f} {y:.3f} {z:.3f} {i} {r} {g} {b}"
        for (x, y, z), (i, r, g, b) in zip(xyz.tolist(), other.tolist())
    ]
    return "\n".join(lines) + "\n", np.column_stack([xyz, other]).astype(np.float32)


def test_stream_equals_memory_over_many_chunks(tmp_path):
    rng = np.random.default_rng(0)
    text, expected = _random_scan_text(rng, 1000)
    labels = rng.integers(0, 9, 1000)
    txt = _write(tmp_path / "scan.txt", text)
    labels_path = _write(tmp_path / "scan.labels", "".join(f"{v}\n" for v in labels) + "\n\n")
    chunks = list(s3d.iter_chunks(txt, labels_path, chunk_points=128))
    assert [c.first_line for c in chunks] == list(range(1, 1001, 128))
    assert all(len(c.points) == len(c.labels) <= 128 for c in chunks)
    points, memory_labels = s3d.load_scan(txt, labels_path)
    np.testing.assert_array_equal(np.concatenate([c.points for c in chunks]), points)
    np.testing.assert_array_equal(np.concatenate([c.labels for c in chunks]), memory_labels)
    np.testing.assert_array_equal(points, expected)
    np.testing.assert_array_equal(memory_labels, labels)


def test_stream_rejects_an_empty_line_at_a_chunk_boundary(tmp_path):
    txt = _write(tmp_path / "scan.txt", "1 2 3 4 5 6 7\n" * 4 + "\n" + "1 2 3 4 5 6 7\n")
    with pytest.raises(ValueError, match=r"scan\.txt:5: empty line"):
        list(s3d.iter_chunks(txt, chunk_points=5))


def test_stream_memory_is_bounded_by_the_chunk(tmp_path):
    text, _ = _random_scan_text(np.random.default_rng(1), 60_000)
    txt = _write(tmp_path / "big.txt", text)  # about 2.6 MB of text, 1.7 MB as float32
    tracemalloc.start()
    try:
        count = sum(len(chunk.points) for chunk in s3d.iter_chunks(txt, chunk_points=2000))
        _, stream_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        points, _ = s3d.load_scan(txt)
        _, memory_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == len(points) == 60_000
    assert stream_peak < 1_000_000 < len(text) < memory_peak


def test_submission_round_trip(tmp_path):
    predictions = np.random.default_rng(2).integers(1, 9, 500)
    path = (
        tmp_path / "predictions" / s3d.submission_file_name("sg27_station10_rgb_intensity-reduced")
    )
    s3d.write_predictions(path, predictions)
    assert path.name == "sg27_10-reduced.labels"
    assert path.read_text() == "".join(f"{v}\n" for v in predictions.tolist())
    np.testing.assert_array_equal(s3d.load_labels(path), predictions)
    with pytest.raises(ValueError, match="0 = unlabelled is not a prediction"):
        s3d.write_predictions(path, np.array([1, 0, 2]))
    with pytest.raises(ValueError, match="1..8"):
        s3d.write_predictions(path, np.array([1, 9]))
    with pytest.raises(ValueError, match="integers"):
        s3d.write_predictions(path, np.array([1.0, 2.0]))


def test_scan_lists_and_splits(tmp_path):
    assert sorted(s3d.TRAINING_SCANS) == sorted(REFERENCE_TRAINING)
    assert s3d.VALIDATION_SCANS == (
        "bildstein_station3_xyz_intensity_rgb",
        "sg27_station2_intensity_rgb",
    )
    assert len(s3d.TRAIN_SCANS) == 13 and not set(s3d.TRAIN_SCANS) & set(s3d.VALIDATION_SCANS)
    assert len(s3d.SEMANTIC8_TEST_SCANS) == 15 and len(s3d.REDUCED8_TEST_SCANS) == 4
    assert not set(s3d.SEMANTIC8_TEST_SCANS) & set(REFERENCE_TRAINING)
    assert s3d.submission_file_name("birdfountain_station1_xyz_intensity_rgb") == (
        "birdfountain1.labels"
    )
    with pytest.raises(ValueError, match="not a semantic-8 or reduced-8 test scan"):
        s3d.submission_file_name("bildstein_station1_xyz_intensity_rgb")
    _write(tmp_path / "bildstein_station3_xyz_intensity_rgb.txt", "1 2 3 4 5 6 7\n")
    _write(tmp_path / "bildstein_station3_xyz_intensity_rgb.labels", "1\n")
    _write(tmp_path / "sg27_station2_intensity_rgb.txt", "1 2 3 4 5 6 7\n")
    with pytest.raises(ValueError, match=r"sg27_station2_intensity_rgb\.labels: labels of scan"):
        s3d.split_files(tmp_path, "validation")
    _write(tmp_path / "sg27_station2_intensity_rgb.labels", "1\n")
    pairs = s3d.split_files(tmp_path, "validation")
    assert [txt.name for txt, _ in pairs] == [
        "bildstein_station3_xyz_intensity_rgb.txt",
        "sg27_station2_intensity_rgb.txt",
    ]


def test_label_space():
    space = s3d.LABEL_SPACE
    assert space.num_classes == 9 and space.ignore_index == 0 and space.num_micro == 8
    assert space.micro_names == [
        "man-made terrain", "natural terrain", "high vegetation", "low vegetation",
        "buildings", "hard scape", "scanning artefacts", "cars",
    ]  # fmt: skip
    logits = np.zeros((2, 9), np.float32)
    logits[:, 0] = 10.0  # the unlabelled id is never predicted
    logits[0, 5], logits[1, 2] = 1.0, 2.0
    np.testing.assert_array_equal(space.predict(logits), [5, 2])
    members = sorted(name for names in space.categories.values() for name in names)
    assert members == sorted(space.micro_names)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_generator_is_deterministic_and_has_every_label(tmp_path):
    options = dict(
        scan_names=("sg27_station2_intensity_rgb", "bildstein_station3_xyz_intensity_rgb"),
        test_scan_names=("sg28_Station2_rgb_intensity-reduced",),
        points_per_scan=4000,
    )
    first = synthetic.generate(tmp_path / "a", seed=3, **options)
    assert _tree_bytes(first) == _tree_bytes(synthetic.generate(tmp_path / "b", seed=3, **options))
    assert _tree_bytes(first) != _tree_bytes(synthetic.generate(tmp_path / "c", seed=4, **options))
    for txt, labels_path in s3d.split_files(first, "validation"):
        points, labels = s3d.load_scan(txt, labels_path)
        assert len(points) == 4000
        assert (np.bincount(labels, minlength=9) > 0).all()
        assert points[:, 4:7].min() >= 0 and points[:, 4:7].max() <= 255
    ((test_txt, no_labels),) = s3d.split_files(
        first, "reduced-8", ("sg28_Station2_rgb_intensity-reduced",)
    )
    assert no_labels is None and not test_txt.with_suffix(".labels").exists()
    truth = s3d.load_labels(
        first / "test_ground_truth" / "sg28_Station2_rgb_intensity-reduced.labels"
    )
    assert len(truth) == len(s3d.load_scan(test_txt)[0])
