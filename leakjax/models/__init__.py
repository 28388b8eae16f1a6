"""Model registry: a plain dict from the config's `model.name` to a Flax Linen module class.

Every model honours the contract of docs/model_api.md (see `leakjax/models/pointmlp.py` for the
smallest example): it is built as `MODELS[name](num_classes=C, ignore_index=no_label, **kwargs)`,
declares the batch it reads with `input_spec()` (leakjax/train/batch.py), and
`model.apply(variables, batch, train=...)` returns `(logits [B, *S, C], aux)` where `aux` carries
the features LEAK aligns and the tensors the model's own loss is computed on.
"""

from leakjax.models.cylinder3d import Cylinder3D
from leakjax.models.deeplabv3 import DeepLabV3
from leakjax.models.pointmlp import PointMLP
from leakjax.models.randla_net import RandLANet
from leakjax.models.rangenet import RangeNet
from leakjax.models.salsanext import SalsaNext

MODELS = {
    "cylinder3d": Cylinder3D,
    "deeplabv3": DeepLabV3,
    "pointmlp": PointMLP,
    "randla_net": RandLANet,
    "rangenet": RangeNet,
    "salsanext": SalsaNext,
}
