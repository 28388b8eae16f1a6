"""The config schema: every variant restores from its JSON form on today's schema."""

import json

import pytest

from experiments.configs import s3dis, semantic3d, semkitti, voc
from experiments.configs.base import base_config, restore_config

SEMKITTI = (
    *("", "smoke", "full", "randla", "randla_smoke", "randla_full"),
    *("rangenet", "salsanext", "rangenet_full", "salsanext_full"),
)
VARIANTS = [(semkitti, v) for v in SEMKITTI] + [
    (module, v) for module in (voc, s3dis, semantic3d) for v in ("", "smoke", "full")
]


@pytest.mark.parametrize("module,variant", VARIANTS)
def test_saved_configs_restore_exactly(module, variant):
    config = module.get_config(variant)
    saved = json.loads(config.to_json_best_effort())
    restored = restore_config(saved)
    assert restored.to_json_best_effort(sort_keys=True) == config.to_json_best_effort(
        sort_keys=True
    )
    assert restored.model.kwargs == config.model.kwargs  # tuples again, not JSON lists


def test_old_configs_gain_new_fields_and_unknown_fields_are_errors():
    saved = json.loads(semkitti.get_config("smoke").to_json_best_effort())
    del saved["model"]["pretrained"], saved["leak"]["method"]
    del saved["data"]["scene"]["evaluation"]  # a nested section gains its new fields too
    restored = restore_config(saved)
    assert restored.model.pretrained == base_config().model.pretrained
    assert restored.leak.method == base_config().leak.method
    assert restored.data.scene.evaluation == "whole_clouds"
    saved["leak"]["no_such_switch"] = 1
    with pytest.raises(ValueError, match="leak.no_such_switch is not in the schema"):
        restore_config(saved)
