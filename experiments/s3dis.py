"""LEAK with RandLA-Net on S3DIS: `python -m experiments.s3dis [--workdir DIR] [--data_dir DIR]`.

The same four phases as experiments/semkitti.py (leakjax/pipeline/phases.py) on one fold of S3DIS:
train on five areas, validate on `config.data.test_area` (default 5, the Area-5 protocol), every
raw point of the test area scored (whole rooms by default; the released test-time crops with
averaged votes with --config.data.scene.evaluation=possibility_votes, the `:full` recipe's
choice: datasets/scenes/voting.py).
Without --data_dir the synthetic rooms (datasets/s3dis/synthetic.py) are generated once into
<workdir>/../synthetic_cache; with it, the official release or mmdetection3d's layout. Configs:
experiments/configs/s3dis.py (`:smoke`, `:full` = the paper's RandLA-Net recipe).

6-fold cross-validation is six runs of this command, one per fold, each in its own work directory
(`--config.data.test_area=N --workdir workdirs/s3dis_areaN`). Each fold builds its own hierarchy
from its own baseline's confusion on its own test area (phase 2), and trains and reports its own
LEAK run: a fold never sees another fold's test area. The 6-fold number is then the released
`6_fold_cv` rule, IoU of the confusion pooled over the six test areas (not the mean of six mIoUs):

    python -m experiments.s3dis --pool_folds workdirs/s3dis_area1,...,workdirs/s3dis_area6 \
        --workdir workdirs/s3dis_6fold      # -> pooled_6fold.json (baseline and leak)
"""

import json
import pathlib
import re

import numpy as np
from absl import flags

from datasets.s3dis.labels import CLASS_NAMES
from datasets.s3dis.protocols import pooled_miou
from datasets.scenes import evaluation_tag
from experiments import pipeline_cli


def final_confusion(run_dir: pathlib.Path, tag: str = "") -> np.ndarray:
    """The validation confusion of a run's last evaluated step (`val_confusion_step<N><tag>.npy`,
    `tag` naming the evaluation protocol: datasets/scenes/voting.py `evaluation_tag`)."""
    pattern = re.compile(rf"val_confusion_step(\d+){re.escape(tag)}\.npy")
    steps = {
        int(match.group(1)): path
        for path in pathlib.Path(run_dir).glob("val_confusion_step*.npy")
        if (match := pattern.fullmatch(path.name))
    }
    if not steps:
        raise ValueError(f"{run_dir}: no val_confusion_step<N>{tag}.npy; run phases 1-4 first")
    return np.load(steps[max(steps)])


def pool_folds(workdirs, out_dir, runs=("baseline", "leak")) -> dict:
    """{run: {"miou", "iou_per_class", "test_areas"}} of the six fold work directories' pooled
    confusions (datasets/s3dis/protocols.py), also written to `<out_dir>/pooled_6fold.json`."""
    per_run = {run: {} for run in runs}
    for workdir in map(pathlib.Path, workdirs):
        config = json.loads((workdir / "config.json").read_text())
        if config["data"]["name"] != "s3dis":
            raise ValueError(f"{workdir}: not an S3DIS run (data.name {config['data']['name']!r})")
        area = int(config["data"]["test_area"])
        tag = evaluation_tag(config["data"].get("scene", {}))  # the fold's evaluation protocol
        for run in runs:
            if area in per_run[run]:
                raise ValueError(f"{workdir}: test area {area} given twice")
            per_run[run][area] = final_confusion(workdir / run, tag)
    result = {}
    for run, confusions in per_run.items():
        miou, iou = pooled_miou(confusions)
        result[run] = {
            "miou": miou,
            "iou_per_class": dict(zip(CLASS_NAMES, iou.tolist())),
            "test_areas": sorted(confusions),
        }
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pooled_6fold.json").write_text(json.dumps(result, indent=1))
    for run, values in result.items():
        print(f"{run}: pooled 6-fold mIoU {100 * values['miou']:.2f}%")
    return result


if __name__ == "__main__":
    folds = flags.DEFINE_list(
        "pool_folds",
        None,
        "Six fold work directories (one per test area): write the pooled 6-fold metrics into "
        "--workdir instead of running the pipeline.",
    )
    pipeline_cli.run(
        "experiments/configs/s3dis.py",
        "workdirs/s3dis",
        "S3DIS release (Stanford3dDataset_v1.2_Aligned_Version or its parent) or mmdetection3d's "
        "points/ + semantic_mask/; default: the synthetic rooms.",
        instead=lambda workdir: bool(folds.value) and bool(pool_folds(folds.value, workdir)),
    )
