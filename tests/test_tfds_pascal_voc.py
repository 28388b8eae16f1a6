"""The Pascal VOC TFDS builder prepares array_record files and reads them back without TensorFlow.

The builder runs in a fresh Python process so that the check that TensorFlow was never imported
is not fooled by modules other tests loaded. Every stored example is compared with the package's
reader on the synthetic layout (one image replaced by a CMYK JPEG, which is stored re-encoded).
"""

import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image

from datasets.pascal_voc.synthetic import generate

REPO = pathlib.Path(__file__).resolve().parent.parent

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow_datasets as tfds
    import datasets.pascal_voc as voc
    from datasets.pascal_voc.tfds_builder import (
        OFFICIAL, TRAIN_AUG, grain_eval_batches, grain_train_batches, prepare)
    from datasets.pascal_voc.transforms import AugmentConfig

    root, data_dir = sys.argv[1], sys.argv[2]
    result = {"checked": 0, "files": []}
    for config in (OFFICIAL, TRAIN_AUG):
        builder = prepare(root, data_dir, config)
        result["files"] += sorted(p.name for p in builder.data_path.iterdir())
        by_name = tfds.data_source(f"pascal_voc/{config.name}", data_dir=data_dir, download=False)
        for split, voc_split in config.splits.items():
            source = builder.as_data_source(split=split)
            ids = voc.split_ids(root, voc_split)
            stored = sorted(e["image_id"].decode() for e in source)
            assert stored == sorted(ids) and len(by_name[split]) == len(ids), (split, stored)
            for example in source:
                image_id = example["image_id"].decode()
                image, mask = voc.load_example(root, image_id, voc.MASK_DIR_OF_SPLIT[voc_split])
                assert example["image"].dtype == np.uint8 and example["labels"].dtype == np.uint8
                np.testing.assert_array_equal(example["image"], image)
                np.testing.assert_array_equal(example["labels"], mask)
                result["checked"] += 1
    validation = builder.as_data_source(split="validation")
    batches = grain_eval_batches(validation, batch_size=2, capacity=(100, 100))
    last = batches[len(batches) - 1]
    result["eval_batches"] = len(batches)
    result["eval_shapes"] = {k: list(v.shape) for k, v in last.items()}
    result["eval_counts"] = [int(m.sum()) for b in batches for m in b["pixel_mask"]]
    result["sizes"] = [int(e["labels"].size) for e in validation]
    train = grain_train_batches(builder.as_data_source(split="train"), 2, seed=0,
                                config=AugmentConfig(crop_size=40))
    batch = train[0]
    result["train_shapes"] = {k: [list(v.shape), str(v.dtype)] for k, v in batch.items()}
    result["train_labels"] = sorted(int(v) for v in np.unique(batch["labels"]))
    try:
        grain_eval_batches(validation, batch_size=2, capacity=(60, 60))[0]
        result["overflow"] = "not raised"
    except ValueError as error:
        result["overflow"] = str(error)
    result["tensorflow_imported"] = sorted(
        m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")
    )
    print("RESULT" + json.dumps(result))
    """
)


def test_builder_prepares_and_reads_without_tensorflow(tmp_path):
    root = generate(tmp_path / "layout", seed=0, num_train=3, num_val=3, num_aug=2)
    cmyk = Image.open(root / "JPEGImages" / "2012_000003.jpg").convert("CMYK")
    cmyk.save(root / "JPEGImages" / "2012_000003.jpg", format="JPEG")  # a val image
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
    assert result["checked"] == (3 + 3) + (5 + 3)  # official train + val, train_aug + val
    assert sum(name.endswith("array_record-00000-of-00001") for name in result["files"]) == 4
    assert not any("tfrecord" in name for name in result["files"])
    assert result["eval_batches"] == 2
    assert result["eval_shapes"] == {
        "image": [2, 100, 100, 3],
        "labels": [2, 100, 100],
        "pixel_mask": [2, 100, 100],
    }
    # every validation image counted once, at its own size; the filler sample has no pixels
    assert sorted(result["eval_counts"]) == sorted(result["sizes"] + [0])
    assert result["train_shapes"] == {
        "image": [[2, 40, 40, 3], "float32"],
        "labels": [[2, 40, 40], "int32"],
    }
    assert set(result["train_labels"]) <= set(range(21)) | {255}
    assert "exceeds the capacity 60 x 60" in result["overflow"]
    assert np.all(np.asarray(result["sizes"]) >= 64 * 64)
