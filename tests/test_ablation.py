"""The ablation runner on the synthetic smoke world with a fast model: two variants x two seeds,
the table against a numpy recomputation from the per-run metrics, resume without repeating."""

import json

import numpy as np
import pytest

from experiments.ablation import parse_variant
from experiments.configs import semkitti as semkitti_configs
from leakjax.pipeline import ablation
from leakjax.pipeline.ablation import METRICS, VARIANTS, run_ablation
from leakjax.pipeline.phases import Variant

T_975_1 = 12.706204736174696  # Student t, 97.5% quantile, 1 degree of freedom (n = 2 seeds)


def _config():
    config = semkitti_configs.get_config("smoke")
    config.model.name = "pointmlp"  # compiles in about a second: the runner is under test
    config.model.kwargs = {"hidden_sizes": (16, 16)}
    config.train.num_steps = 4
    config.train.checkpoint_every = 2
    config.train.eval_every = 2
    # Bookkeeping: no Lovasz-softmax. Over the global batch its sort cannot be partitioned, so on
    # the 4 simulated devices every device computes it whole (~2.5 s a step on 2 cores).
    config.loss.lovasz_weight = 0.0
    return config


def test_ablation_table_against_numpy_and_resume(tmp_path_factory):
    cache = tmp_path_factory.mktemp("synthetic_cache")
    workdir = tmp_path_factory.mktemp("ablation") / "run"
    config = _config()
    seeds = [0, 1]
    # first call: one variant (as if the runner was killed before the second variant started)
    run_ablation(config, workdir, [VARIANTS["leak"]], seeds, cache_dir=str(cache))
    logs = {p.parent.name: p.read_text() for p in workdir.glob("*/metrics.jsonl")}
    assert sorted(logs) == ["baseline", "baseline-seed1", "leak", "leak-seed1"]
    variants = [VARIANTS["leak"], VARIANTS["prototypes_only"]]
    table = run_ablation(config, workdir, variants, seeds, cache_dir=str(cache))
    for name, text in logs.items():  # finished runs were not trained again
        assert (workdir / name / "metrics.jsonl").read_text() == text
    assert (workdir / "prototypes_only-seed1" / "metrics.jsonl").exists()
    saved = json.loads((workdir / "ablation.json").read_text())
    runs = saved["runs"]
    assert set(runs) == {"baseline", "leak", "prototypes_only"}
    for arm, per_seed in runs.items():
        for metric in METRICS:
            values = np.array([per_seed[str(s)][metric] for s in seeds])
            assert table["arms"][arm][metric]["mean"] == pytest.approx(values.mean(), abs=1e-12)
            assert table["arms"][arm][metric]["std"] == pytest.approx(
                np.sqrt(np.sum((values - values.mean()) ** 2) / (len(values) - 1)), abs=1e-12
            )
            if arm == "baseline":
                continue
            base = np.array([runs["baseline"][str(s)][metric] for s in seeds])
            diff = values - base
            half = T_975_1 * diff.std(ddof=1) / np.sqrt(2)
            got = table["differences"][arm][metric]
            assert got["mean"] == pytest.approx(diff.mean(), abs=1e-12)
            assert got["ci_low"] == pytest.approx(diff.mean() - half, abs=1e-9)
            assert got["ci_high"] == pytest.approx(diff.mean() + half, abs=1e-9)
    # the variants really differ from the baseline in what they train
    assert json.loads((workdir / "config.json").read_text())["model"]["name"] == "pointmlp"
    markdown = (workdir / "ablation.md").read_text()
    assert "| prototypes_only |" in markdown and "95% CI" in markdown
    assert (workdir / "ablation_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_paired_difference_verdicts_and_custom_variants():
    assert "better" in ablation.paired_difference([0.02, 0.021, 0.019])["verdict"]
    assert "worse" in ablation.paired_difference([-0.02, -0.021, -0.019])["verdict"]
    assert "not distinguishable" in ablation.paired_difference([0.02, -0.01, 0.005])["verdict"]
    assert "one seed" in ablation.paired_difference([0.02])["verdict"]
    variant = parse_variant("no_macro:leak.lambda_macro=0.0,leak.method=kway")
    assert variant == Variant("no_macro", {"leak.lambda_macro": 0.0, "leak.method": "kway"})
    applied = variant.apply(_config())
    assert applied.leak.lambda_macro == 0.0 and applied.leak.method == "kway"
    with pytest.raises(ValueError, match="not a config field"):
        Variant("bad", {"leak.no_such_field": 1}).apply(_config())
    with pytest.raises(ValueError, match="expected NAME"):
        parse_variant("just_a_name")
