"""The S3DIS and Semantic3D TFDS builders prepare array_record files and read them back without
TensorFlow, in a fresh Python process (so that no module another test loaded fools the check).
Every stored example is compared with the package readers (and the streamed pre-processing with
the in-memory one)."""

import json
import pathlib
import subprocess
import sys
import textwrap

from datasets.s3dis import synthetic as s3dis_synthetic
from datasets.semantic3d import synthetic as semantic3d_synthetic

REPO = pathlib.Path(__file__).resolve().parent.parent

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import datasets.s3dis as s3dis
    import datasets.semantic3d as s3d
    from datasets.scenes import subsample_cloud
    from datasets.s3dis.tfds_builder import S3disConfig, fold_splits, prepare as prepare_s3dis
    from datasets.semantic3d.tfds_builder import Semantic3dConfig, prepare as prepare_s3d

    s3dis_root, s3d_root, data_dir = sys.argv[1:4]
    result = {"files": [], "rooms": 0, "scans": 0}
    builder = prepare_s3dis(s3dis_root, data_dir, S3disConfig(name="test", areas=(1, 2, 5)))
    result["files"] += [p.name for p in builder.data_path.iterdir()]
    for area in (1, 2, 5):
        rooms = {r.name: r for r in s3dis.list_rooms(s3dis_root, area)}
        for example in builder.as_data_source(split=f"area{area}"):
            points, labels = s3dis.load_room(rooms[example["room"].decode()])
            assert int(example["area"]) == area and example["points"].dtype == np.float32
            np.testing.assert_array_equal(example["points"], points)
            np.testing.assert_array_equal(example["labels"], labels)
            result["rooms"] += 1
    fold = fold_splits(5, areas=(1, 2, 5))
    result["fold"] = fold
    result["fold_sizes"] = [len(builder.as_data_source(split=s)) for s in fold.values()]

    config = Semantic3dConfig(
        name="test", grid_size_m=0.5, chunk_points=300,
        splits={"train": "train", "validation": "validation", "test": "reduced-8"},
        scan_names={"train": s3d.TRAIN_SCANS[:2]},
    )
    builder = prepare_s3d(s3d_root, data_dir, config)
    result["files"] += [p.name for p in builder.data_path.iterdir()]
    for split, labelled in (("train", True), ("validation", True), ("test", False)):
        for example in builder.as_data_source(split=split):
            name = example["scan"].decode()
            labels_path = f"{s3d_root}/{name}.labels" if labelled else None
            points, labels = s3d.load_scan(f"{s3d_root}/{name}.txt", labels_path)
            expected = subsample_cloud(points[:, :3], points[:, 4:7] / 255.0, labels, 0.5, 9)
            np.testing.assert_allclose(example["points"], expected.points, atol=1e-5)
            np.testing.assert_allclose(example["colors"], expected.features, atol=1e-6)
            assert int(example["num_raw"]) == len(points)
            if labelled:
                np.testing.assert_array_equal(example["labels"], expected.labels)
                np.testing.assert_array_equal(example["label_hist"], expected.label_hist)
            else:
                assert not example["labels"].any() and not example["label_hist"].any()
            result["scans"] += 1
    result["tensorflow_imported"] = sorted(
        m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")
    )
    print("RESULT" + json.dumps(result))
    """
)


def test_scene_builders_prepare_and_read_without_tensorflow(tmp_path):
    s3dis_synthetic.generate(tmp_path / "s3dis", seed=1, areas=(1, 2, 5), rooms_per_area=1,
                             points_per_m2=20.0)  # fmt: skip
    semantic3d_synthetic.generate(tmp_path / "s3d", seed=1, points_per_scan=1200)
    completed = subprocess.run(
        [sys.executable, "-c", _SCRIPT, *(str(tmp_path / n) for n in ("s3dis", "s3d", "tfds"))],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT"))
    result = json.loads(line[len("RESULT") :])
    assert result["tensorflow_imported"] == []
    assert result["rooms"] == 3 and result["scans"] == 2 + 2 + 4
    assert result["fold"] == {"train": "area1+area2", "test": "area5"}
    assert result["fold_sizes"] == [2, 1]
    assert sum(name.endswith("array_record-00000-of-00001") for name in result["files"]) == 6
    assert not any("tfrecord" in name for name in result["files"])
