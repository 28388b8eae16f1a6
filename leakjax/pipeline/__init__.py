"""The LEAK pipeline for any registered dataset and model (phases.py), its report and figures.

  phases.py  setup, train_baseline, discover_hierarchy, train_leak, write_report, run_pipeline,
             Variant (a LEAK variant: name + config overrides)
  report.py  per-run metrics and report.md / report.json
  plots.py   confusion, conductance, dendrogram and validation-curve figures

Entry points (experiments/semkitti.py, ...) are thin command lines over `run_pipeline`.
"""

from leakjax.pipeline.phases import (
    ALL_PHASES,
    Pipeline,
    Variant,
    discover_hierarchy,
    leak_settings,
    run_pipeline,
    setup,
    train_baseline,
    train_leak,
    validation_confusion,
    write_report,
)

__all__ = [
    "ALL_PHASES",
    "Pipeline",
    "Variant",
    "discover_hierarchy",
    "leak_settings",
    "run_pipeline",
    "setup",
    "train_baseline",
    "train_leak",
    "validation_confusion",
    "write_report",
]
