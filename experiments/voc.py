"""LEAK on Pascal VOC 2012 with DeepLabV3: `python -m experiments.voc [--workdir DIR] ...`.

The paper's task-generalisation experiment (Sec. VI-A): the same four phases as
experiments/semkitti.py (leakjax/pipeline/phases.py) on images. Without --data_dir the synthetic
VOC-layout stand-in (datasets/pascal_voc/synthetic.py) is generated once into
<workdir>/../synthetic_cache; with it, the official `VOCdevkit/VOC2012` layout (and SBD's
`train_aug` with `--config.data.train_split=train_aug`). Configs: experiments/configs/voc.py.
"""

from experiments import pipeline_cli

if __name__ == "__main__":
    pipeline_cli.run(
        "experiments/configs/voc.py",
        "workdirs/voc",
        "Folder holding VOCdevkit/VOC2012 (or that folder); default: the synthetic stand-in.",
    )
