"""The TFDS builder prepares array_record files and reads them back without TensorFlow.

The builder runs in a fresh Python process so that the check that TensorFlow was never imported
is not fooled by modules other tests loaded.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

from datasets.synthetic import generate

REPO = pathlib.Path(__file__).resolve().parent.parent

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow_datasets as tfds
    import datasets.semantic_kitti as sk
    from datasets.semantic_kitti.tfds_builder import SemanticKittiConfig, grain_batches, prepare

    root, data_dir = sys.argv[1], sys.argv[2]
    config = SemanticKittiConfig(
        name="synthetic_test",
        splits={"train": ("00",), "validation": ("08",), "test": ("11",)},
        unlabelled_splits=("test",),
    )
    builder = prepare(root, data_dir, config)
    result = {"files": sorted(p.name for p in builder.data_path.iterdir())}
    by_name = tfds.data_source("semantic_kitti/synthetic_test", data_dir=data_dir, download=False)
    checked = 0
    for split, sequence in (("train", "00"), ("validation", "08"), ("test", "11")):
        source = builder.as_data_source(split=split)
        assert len(source) == len(by_name[split]) == 3, (split, len(source))
        for example in source:
            assert int(example["sequence"]) == int(sequence)
            name = f"{int(example['scan_index']):06d}"
            scan = f"{root}/sequences/{sequence}/velodyne/{name}.bin"
            if split == "test":
                points, labels = sk.load_scan(scan), np.zeros(len(example["points"]), np.int32)
                instance = labels
            else:
                label = f"{root}/sequences/{sequence}/labels/{name}.label"
                points, labels, instance = sk.load_pair(scan, label)
            assert example["points"].dtype == np.float32 and example["labels"].dtype == np.int32
            np.testing.assert_array_equal(example["points"], points)
            np.testing.assert_array_equal(example["labels"], labels)
            np.testing.assert_array_equal(example["instance"], instance)
            checked += 1
    source = builder.as_data_source(split="train")
    capacity = max(len(e["points"]) for e in source) + 7
    batches = grain_batches(source, batch_size=2, capacity=capacity, seed=0)
    batch = batches[0]
    result["batch_shapes"] = {k: list(v.shape) for k, v in batch.items()}
    sizes = sorted(len(e["points"]) for e in source)
    result["mask_counts_in_sizes"] = all(int(m.sum()) in sizes for m in batch["point_mask"])
    result["padding_zero"] = bool((batch["points"][~batch["point_mask"]] == 0).all())
    try:
        grain_batches(source, batch_size=2, capacity=sizes[0] - 1, seed=None)[0]
        result["overflow"] = "not raised"
    except ValueError as error:
        result["overflow"] = str(error)
    result["checked"] = checked
    result["tensorflow_imported"] = sorted(
        m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")
    )
    print("RESULT" + json.dumps(result))
    """
)


def test_builder_prepares_and_reads_without_tensorflow(tmp_path):
    root = generate(tmp_path / "layout", seed=0, sequences=("00", "08", "11"),
                    scans_per_sequence=3, azimuth_steps=64)  # fmt: skip
    shutil.rmtree(root / "sequences" / "11" / "labels")  # the test split has no labels
    completed = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(root), str(tmp_path / "tfds")],
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
    assert result["checked"] == 9
    assert any(name.endswith("array_record-00000-of-00001") for name in result["files"])
    assert not any("tfrecord" in name for name in result["files"])
    capacity = result["batch_shapes"]["points"][1]
    assert result["batch_shapes"] == {
        "points": [2, capacity, 4],
        "point_mask": [2, capacity],
        "labels": [2, capacity],
    }
    assert result["mask_counts_in_sizes"] and result["padding_zero"]
    assert "more than the capacity" in result["overflow"]
