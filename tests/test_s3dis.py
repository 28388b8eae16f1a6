"""S3DIS: readers on handmade official-layout files and the real mmdetection3d sample, the hallway_6
defect, errors naming file and line, protocols and the pooled 6-fold confusion, the generator."""

import logging
import struct
from pathlib import Path

import numpy as np
import pytest

import datasets.s3dis as s3dis
from datasets.s3dis import synthetic

DATA = Path(__file__).parent / "data" / "s3dis"
REFERENCE_CLASSES = [
    "ceiling", "floor", "wall", "beam", "column", "window", "door",
    "table", "chair", "sofa", "bookcase", "board", "clutter",
]  # fmt: skip


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("latin-1"))
    return path


def _room(tmp_path: Path, files: dict[str, str], area="Area_1", room="office_1") -> Path:
    room_dir = tmp_path / s3dis.RELEASE_DIR_NAME / area / room
    for name, text in files.items():
        _write(room_dir / "Annotations" / name, text)
    return room_dir


def test_label_space_matches_the_release_class_list():
    space = s3dis.LABEL_SPACE
    assert list(space.class_names) == REFERENCE_CLASSES
    assert space.ignore_index is None and space.num_micro == 13 and space.no_label == -1
    members = sorted(name for names in space.categories.values() for name in names)
    assert members == sorted(REFERENCE_CLASSES)  # every class in exactly one category


def test_load_room_concatenates_annotations_with_prefix_labels(tmp_path, caplog):
    room_dir = _room(
        tmp_path,
        {
            "wall_2.txt": "5 5 5 1 1 1\n",
            "wall_1.txt": "4.25 -4 0.5 10 20 30\n4 4 4 40 50 60\n",
            "chair_10.txt": "3 3 3 7 7 7\n",
            "chair_2.txt": "2.5 2 2 8 8 8\r\n\n",  # CRLF and a trailing empty line are fine
            "ceiling_1.txt": "1 1 2.75 255 254 253\n1.5 1 2.75 0 0 0",  # no final newline
            "zzweird_1.txt": "6 6 6 9 9 9\n",  # unknown prefix -> clutter
        },
    )
    _write(room_dir / "Annotations" / "notes.md", "not an annotation\n")
    with caplog.at_level(logging.WARNING, logger="datasets.s3dis.labels"):
        points, labels = s3dis.load_room(room_dir)
        s3dis.load_room(room_dir)
    # sorted by (prefix, k): ceiling_1, chair_2, chair_10, wall_1, wall_2, zzweird_1
    expected_points = [
        [1, 1, 2.75, 255, 254, 253],
        [1.5, 1, 2.75, 0, 0, 0],
        [2.5, 2, 2, 8, 8, 8],
        [3, 3, 3, 7, 7, 7],
        [4.25, -4, 0.5, 10, 20, 30],
        [4, 4, 4, 40, 50, 60],
        [5, 5, 5, 1, 1, 1],
        [6, 6, 6, 9, 9, 9],
    ]
    assert points.dtype == np.float32 and labels.dtype == np.int32
    np.testing.assert_array_equal(points, np.array(expected_points, np.float32))
    np.testing.assert_array_equal(labels, [0, 0, 8, 8, 2, 2, 2, 12])
    warnings = [r for r in caplog.records if "zzweird" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not per file or per call


def test_points_writer_round_trip_and_text(tmp_path):
    points = np.array([[1.23449, -0.5, 2.0, 10.0, 20.6, 255.0], [0.0, 0.001, -7.25, 0, 1, 2]])
    path = tmp_path / "room" / "room.txt"
    s3dis.write_points_txt(path, points)
    assert path.read_text() == "1.234 -0.500 2.000 10 21 255\n0.000 0.001 -7.250 0 1 2\n"
    np.testing.assert_allclose(s3dis.load_room_file(path.parent), [
        [1.234, -0.5, 2.0, 10, 21, 255], [0.0, 0.001, -7.25, 0, 1, 2]
    ], rtol=0, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "bad_line", "problem"),
    [
        ("1 2 3 4 5 6\n1 2 3 4 5\n", 2, "expected 6 columns, got 5"),
        ("1 2 3 4 5 6\n1 2 3 4 5 6\n1 2 x 4 5 6\n", 3, "column 3 is not a number"),
        ("1 2 3 4 5 6 7\n", 1, "expected 6 columns, got 7"),
        ("1 2 3 4 5 6\nnan 2 3 4 5 6\n", 2, "column 1 is not a number"),
        ("1 2 3 4 5 6\n1 2 1e999 4 5 6\n", 2, "non-finite"),
        ("1 2 3 4 5 6\n\n1 2 3 4 5 6\n", 2, "empty line"),
        ("1 2 3 4 5 6\n1 2 3 4 300 6\n", 2, "colour outside 0..255"),
        ("1 2 3 -1 5 6\n", 1, "colour outside 0..255"),
    ],
)
def test_malformed_annotation_names_file_and_line(tmp_path, text, bad_line, problem):
    room_dir = _room(tmp_path, {"wall_1.txt": "0 0 0 1 1 1\n", "wall_2.txt": text})
    with pytest.raises(ValueError) as error:
        s3dis.load_room(room_dir)
    message = str(error.value)
    assert f"wall_2.txt:{bad_line}: " in message and problem in message


def test_bad_annotation_name_and_missing_annotations_are_errors(tmp_path):
    room_dir = _room(tmp_path, {"wall 3 (1).txt": "0 0 0 1 1 1\n"})
    with pytest.raises(ValueError, match=r"wall 3 \(1\)\.txt.*not <class>_<k>"):
        s3dis.load_room(room_dir)
    with pytest.raises(ValueError, match="missing Annotations"):
        s3dis.load_room(tmp_path / "nowhere")
    empty = tmp_path / "empty_room"
    (empty / "Annotations").mkdir(parents=True)
    with pytest.raises(ValueError, match="no annotation files"):
        s3dis.load_room(empty)


def _hallway6_text(defect_line: int, num_lines: int = s3dis.KNOWN_DEFECT_LINE + 2) -> str:
    lines = [f"{i % 97}.5 {i % 89}.25 2.9 120 121 122" for i in range(1, num_lines + 1)]
    lines[defect_line - 1] = "-13.5 7.25 2.875 103\x10101 99"  # two numbers fused, 5 columns
    return "\n".join(lines) + "\n"


def test_hallway6_defect_is_repaired_with_a_log_line(tmp_path, caplog):
    line = s3dis.KNOWN_DEFECT_LINE
    room_dir = _room(tmp_path, {"ceiling_1.txt": _hallway6_text(line)}, "Area_5", "hallway_6")
    with caplog.at_level(logging.WARNING, logger="datasets.s3dis.io"):
        points, labels = s3dis.load_room(room_dir)
    assert points.shape == (line + 2, 6) and (labels == 0).all()
    np.testing.assert_array_equal(points[line - 1], np.float32([-13.5, 7.25, 2.875, 103, 101, 99]))
    next_row = [(line + 1) % 97 + 0.5, (line + 1) % 89 + 0.25, 2.9, 120, 121, 122]
    np.testing.assert_array_equal(points[line], np.float32(next_row))
    logged = [r.getMessage() for r in caplog.records if "known defect" in r.getMessage()]
    assert len(logged) == 1 and f"ceiling_1.txt:{line}:" in logged[0] and "\\x10" in logged[0]

    with pytest.raises(s3dis.MalformedLineError, match=f"ceiling_1.txt:{line}: expected 6 columns"):
        s3dis.load_room(room_dir, repair_known_defect=False)


def test_same_defect_elsewhere_is_an_error(tmp_path):
    line = s3dis.KNOWN_DEFECT_LINE
    other_line = _room(tmp_path, {"ceiling_1.txt": _hallway6_text(3, 10)}, "Area_5", "hallway_6")
    with pytest.raises(s3dis.MalformedLineError, match="ceiling_1.txt:3: expected 6 columns"):
        s3dis.load_room(other_line)
    other_room = _room(tmp_path, {"ceiling_1.txt": _hallway6_text(line)}, "Area_5", "hallway_7")
    with pytest.raises(s3dis.MalformedLineError, match=f"ceiling_1.txt:{line}: expected 6 columns"):
        s3dis.load_room(other_room)


def test_real_mmdet3d_sample_matches_a_struct_decoding():
    assert s3dis.list_mmdet3d_scenes(DATA) == ["Area_1_office_2"]
    points, labels = s3dis.load_mmdet3d_scene(DATA, "Area_1_office_2")
    raw_points = (DATA / "points" / "Area_1_office_2.bin").read_bytes()
    raw_labels = (DATA / "semantic_mask" / "Area_1_office_2.bin").read_bytes()
    expected_points = np.array(struct.unpack(f"<{len(raw_points) // 4}f", raw_points), np.float32)
    expected_labels = struct.unpack(f"<{len(raw_labels) // 8}q", raw_labels)
    assert points.shape == (100, 6) and labels.shape == (100,)
    np.testing.assert_array_equal(points, expected_points.reshape(100, 6))
    np.testing.assert_array_equal(labels, expected_labels)
    assert min(expected_labels) >= 0 and max(expected_labels) <= 12
    assert points[:, 3:].min() >= 0 and points[:, 3:].max() <= 255
    counts = s3dis.LABEL_SPACE.class_counts(labels)
    assert counts.sum() == 100 and counts[2] == sum(1 for v in expected_labels if v == 2)


def test_mmdet3d_count_mismatch_and_bad_label_name_the_file(tmp_path):
    (tmp_path / "points").mkdir()
    (tmp_path / "semantic_mask").mkdir()
    (tmp_path / "points" / "s.bin").write_bytes(
        (DATA / "points" / "Area_1_office_2.bin").read_bytes()
    )
    mask = tmp_path / "semantic_mask" / "s.bin"
    mask.write_bytes(struct.pack("<99q", *([1] * 99)))
    with pytest.raises(ValueError, match=r"semantic_mask/s\.bin: 99 labels but .* has 100"):
        s3dis.load_mmdet3d_scene(tmp_path, "s")
    mask.write_bytes(struct.pack("<100q", *([1] * 57 + [13] + [1] * 42)))
    with pytest.raises(ValueError, match=r"s\.bin: label 13 of point 57 outside 0..12"):
        s3dis.load_mmdet3d_scene(tmp_path, "s")


def test_official_rooms_match_the_release_counts(tmp_path):
    reference = {1: 44, 2: 40, 3: 23, 4: 49, 5: 68, 6: 48}
    counts = {area: len(s3dis.official_room_names(area)) for area in s3dis.AREAS}
    assert counts == reference and sum(counts.values()) == 272
    assert "hallway_6" in s3dis.official_room_names("Area_5")
    assert "office_42" in s3dis.official_room_names(
        5
    ) and "office_43" not in s3dis.official_room_names(5)
    _room(tmp_path, {"wall_1.txt": "0 0 0 1 1 1\n"}, "Area_3", "office_2")
    _room(tmp_path, {"wall_1.txt": "0 0 0 1 1 1\n"}, "Area_3", "WC_1")
    rooms = s3dis.list_rooms(tmp_path, 3)
    assert [room.name for room in rooms] == ["WC_1", "office_2"]
    assert s3dis.scene_name(rooms[1]) == "Area_3_office_2"
    with pytest.raises(ValueError, match="21 rooms of the release are missing"):
        s3dis.list_rooms(tmp_path, 3, require_official=True)
    with pytest.raises(ValueError, match="Area_4: area directory does not exist"):
        s3dis.list_rooms(tmp_path, 4)


def test_protocol_splits():
    assert s3dis.AREA5_SPLIT == {"train": (1, 2, 3, 4, 6), "test": (5,)}
    for area, fold in s3dis.CV_FOLDS.items():
        assert fold["test"] == (area,)
        assert sorted(fold["train"] + fold["test"]) == [1, 2, 3, 4, 5, 6]
    assert s3dis.protocol_split("fold3")["train"] == (1, 2, 4, 5, 6)
    with pytest.raises(ValueError, match="fold7"):
        s3dis.protocol_split("fold7")


def test_pooled_confusion_against_counting_points():
    rng = np.random.default_rng(3)
    per_area, all_gt, all_pred, fold_mious = {}, [], [], []
    for area in s3dis.AREAS:
        size = 50 * area * area  # unequal areas: pooling and averaging differ
        gt = rng.integers(0, 13, size)
        pred = np.where(rng.random(size) < 0.4 + 0.08 * area, gt, rng.integers(0, 13, size))
        confusion = np.zeros((13, 13), np.int64)
        for g, p in zip(gt, pred):
            confusion[g, p] += 1
        per_area[area] = confusion
        all_gt.append(gt)
        all_pred.append(pred)
        fold_mious.append(np.mean(_iou_by_counting(gt, pred)))
    gt, pred = np.concatenate(all_gt), np.concatenate(all_pred)
    pooled = s3dis.pooled_confusion(per_area)
    assert pooled.dtype == np.int64 and pooled.sum() == len(gt)
    assert pooled[4, 7] == np.sum((gt == 4) & (pred == 7))
    miou, iou = s3dis.pooled_miou(per_area)
    np.testing.assert_allclose(iou, _iou_by_counting(gt, pred), rtol=1e-12)
    assert abs(miou - np.mean(fold_mious)) > 1e-3  # not the mean of per-fold mIoUs

    with pytest.raises(ValueError, match="six test areas"):
        s3dis.pooled_confusion({k: v for k, v in per_area.items() if k != 5})
    with pytest.raises(ValueError, match="area 2 confusion has shape"):
        s3dis.pooled_confusion({**per_area, 2: np.zeros((12, 12), np.int64)})


def _iou_by_counting(gt, pred):
    ious = []
    for c in range(13):
        tp = int(np.sum((gt == c) & (pred == c)))
        union = int(np.sum(gt == c)) + int(np.sum(pred == c)) - tp
        ious.append(tp / union if union else 0.0)
    return np.array(ious)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_generator_is_deterministic_and_has_every_class(tmp_path):
    options = dict(areas=(1, 5), rooms_per_area=2, points_per_m2=25.0)
    first = synthetic.generate(tmp_path / "a", seed=7, **options)
    second = synthetic.generate(tmp_path / "b", seed=7, **options)
    third = synthetic.generate(tmp_path / "c", seed=8, **options)
    assert _tree_bytes(first) == _tree_bytes(second)
    assert _tree_bytes(first) != _tree_bytes(third)
    totals = np.zeros(13, np.int64)
    for area in (1, 5):
        rooms = s3dis.list_rooms(tmp_path / "a", area)
        assert len(rooms) == 2
        for room in rooms:
            points, labels = s3dis.load_room(room)
            counts = np.bincount(labels, minlength=13)
            assert (counts > 0).all(), (room, counts)
            totals += counts
            whole = s3dis.load_room_file(room)  # <room>.txt holds the same points
            assert sorted(map(tuple, whole.tolist())) == sorted(map(tuple, points.tolist()))
    shell = totals[[0, 1, 2]].sum() / totals.sum()
    assert shell > 0.5 and totals[9] < totals[2] / 5  # walls/floor/ceiling dominate; sofas rare


def test_generator_look_alikes_share_colours():
    rng = np.random.default_rng(0)
    objects = synthetic.synthetic_room(rng, "office", 60.0)
    mean = {}
    for name, points in objects:
        mean.setdefault(name, []).append(points[:, 3:6])
    mean = {name: np.concatenate(parts).mean(axis=0) for name, parts in mean.items()}
    distance = lambda a, b: np.linalg.norm(mean[a] - mean[b])
    for opening in ("window", "board", "column", "beam"):
        assert distance("wall", opening) < distance("wall", "chair")
    assert distance("table", "bookcase") < distance("table", "chair")
    assert distance("chair", "sofa") < distance("chair", "table")
