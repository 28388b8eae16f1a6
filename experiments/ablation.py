"""The paper's ablation study: `python -m experiments.ablation [--variants ...] [--seeds 0,1,2]`.

Runs the baseline and every LEAK variant for every seed in one work directory (each run resumes;
a finished one is skipped) and writes ablation.md / ablation.json / ablation_curves.png
(leakjax/pipeline/ablation.py): mean +- std per metric, paired differences against the baseline
with 95% confidence intervals over seeds, and what they support. Variants: the names of
leakjax.pipeline.ablation.VARIANTS (default: Tab. IV's rows) plus any of your own:

    --variant 'no_macro:leak.lambda_macro=0.0' --variant 'kway:leak.method="kway"'

Any dataset and model of the pipeline's configs, e.g.
--config experiments/configs/semkitti.py:randla.
"""

import ast

from absl import app, flags
from ml_collections import config_flags

from experiments.pipeline_cli import configure_runtime
from leakjax.pipeline.ablation import TABLE_IV, VARIANTS, run_ablation
from leakjax.pipeline.phases import Variant

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    "experiments/configs/semkitti.py",
    "Pipeline config (path[:variant]).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/ablation", "Output directory.")
_VARIANTS = flags.DEFINE_list("variants", list(TABLE_IV), f"Named variants: {sorted(VARIANTS)}.")
_CUSTOM = flags.DEFINE_multi_string("variant", [], "NAME:field=value[,field=value...]")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every arm.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset root; default: the synthetic stand-in.")
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Synthetic cache (default beside workdir).")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache_dir", None, "JAX persistent compilation cache ('' disables it)."
)


def parse_variant(text: str) -> Variant:
    """'name:field=value,field=value' -> Variant (values as Python literals, else strings)."""
    name, _, body = text.partition(":")
    if not name or not body:
        raise ValueError(f"--variant {text!r}: expected NAME:field=value[,field=value...]")
    overrides = {}
    for item in body.split(","):
        field, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--variant {text!r}: {item!r} is not field=value")
        try:
            overrides[field.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            overrides[field.strip()] = value.strip()
    return Variant(name, overrides)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = [name for name in _VARIANTS.value if name not in VARIANTS]
    if unknown:
        raise app.UsageError(f"--variants: unknown {unknown}; known {sorted(VARIANTS)}")
    variants = [VARIANTS[name] for name in _VARIANTS.value]
    variants += [parse_variant(text) for text in _CUSTOM.value]
    configure_runtime(_WORKDIR.value, _COMPILATION_CACHE.value)
    run_ablation(
        _CONFIG.value,
        _WORKDIR.value,
        variants,
        [int(seed) for seed in _SEEDS.value],
        _DATA_DIR.value,
        _CACHE_DIR.value,
    )


if __name__ == "__main__":
    app.run(main)
