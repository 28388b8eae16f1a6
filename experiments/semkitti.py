"""LEAK on SemanticKITTI, end to end: `python -m experiments.semkitti [--workdir DIR] ...`.

A thin command line (experiments/pipeline_cli.py) over the generic pipeline
(leakjax/pipeline/phases.py): the four phases of the paper, each resuming from its checkpoint or
skipped when its outputs exist:
  1. train the baseline                                   -> <workdir>/baseline/
  2. predict on validation, confusion matrix, hierarchy   -> hierarchy.json, *.png
  3. train with LEAK (from scratch, same schedule)        -> <workdir>/leak/
  4. evaluate both                                         -> report.md, report.json, curves.png

Without --data_dir the synthetic LiDAR world is generated once into <workdir>/../synthetic_cache
(keyed by its settings; --cache_dir overrides) and its sequences 00 (train) and 08 (validation) are
used. The model is the config variant's (experiments/configs/semkitti.py: Cylinder3D by default,
`:randla`, `:rangenet`, `:salsanext`). Data-parallel over every device.
"""

from experiments import pipeline_cli

if __name__ == "__main__":
    pipeline_cli.run(
        "experiments/configs/semkitti.py",
        "workdirs/semkitti",
        "SemanticKITTI root holding sequences/; default: the synthetic world.",
    )
