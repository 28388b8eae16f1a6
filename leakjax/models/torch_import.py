"""torchvision ResNet checkpoints -> the Flax ResNet backbone's variables (models/resnet.py).

No weights can be downloaded at run time and none ship with the project: the user brings
torchvision's ImageNet checkpoint of `resnet50` / `resnet101` (e.g. `resnet101-63fe2227.pth`,
a state dict) and points `config.model.pretrained` at it; the trainer (`build_run`) then replaces
the freshly initialised `params["backbone"]` / `batch_stats["backbone"]` with the converted ones
(the ASPP and head start from scratch, as in the paper).

File formats:
  * `.npz`: a state dict saved by numpy (`np.savez(path, **{name: array})`), torchvision's names
    and shapes; read without torch;
  * `.pth` / `.pt`: read with torch (`torch.load(..., weights_only=True)`), the only use of torch
    in the project, an optional extra (`pip install torch`). To train where torch is absent,
    convert once where it is: `python -m leakjax.models.torch_import resnet101.pth resnet101.npz`.

Mapping (resnet.py's docstring): `conv1.weight` [out, in, kh, kw] -> `conv1/kernel`
[kh, kw, in, out]; `bn1.{weight, bias}` -> params `bn1/{scale, bias}`,
`bn1.{running_mean, running_var}` -> batch_stats `bn1/{mean, var}`; `layerL.K.convN` /
`layerL.K.bnN` -> `layerL_K/convN` / `layerL_K/bnN`; `layerL.K.downsample.{0, 1}` ->
`layerL_K/downsample_{conv, bn}`. `fc.*` and `*.num_batches_tracked` are not used; any other name
is an error. BatchNorm epsilon (1e-5) is torch's; dilation changes no parameter shape, so the same
checkpoint serves output stride 8, 16 and 32. Inputs must then be ImageNet-normalised.

Public API:
  read_state_dict(path, prefix="") -> {torchvision name: np.ndarray}
  convert_resnet(state_dict) -> Backbone(params, batch_stats, sources)
  load_backbone(path, prefix="") -> Backbone                    (read + convert)
  merge_backbone(params, batch_stats, backbone, scope="backbone") -> (params, batch_stats)
  with_backbone(state, backbone, tx, scope="backbone") -> state (fresh opt_state; None: as is)
Every name or shape mismatch raises ValueError naming the parameter (Flax path and torchvision
name).
"""

from __future__ import annotations

import argparse
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import flax.struct
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

# torchvision BatchNorm entry -> (Flax collection, variable name)
_BN_FIELDS = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}
_STEM = re.compile(r"^(conv1|bn1)\.(\w+)$")
_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)$")
_UNUSED = re.compile(r"^fc\.|\.num_batches_tracked$|^num_batches_tracked$")
_BLOCK_MODULES = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}


@flax.struct.dataclass
class Backbone:
    """Converted variables of a ResNet backbone (nested dicts of float32 numpy arrays); a pytree
    (arrays as leaves, `sources` static) that can be passed to a jitted function.

    Attributes:
      params: {"conv1": {"kernel"}, "bn1": {"scale", "bias"}, "layer1_0": {...}, ...}.
      batch_stats: {"bn1": {"mean", "var"}, "layer1_0": {...}, ...}.
      sources: ("collection/flax/path", torchvision name) pairs, for messages.
    """

    params: dict
    batch_stats: dict
    sources: tuple[tuple[str, str], ...] = flax.struct.field(pytree_node=False, default=())


def _torch_load(path: pathlib.Path) -> Mapping[str, Any]:
    try:
        import torch  # noqa: PLC0415  (optional extra, only for .pth files)
    except ImportError as error:
        raise ImportError(
            f"{path}: reading a .pth checkpoint needs torch (`pip install torch`), an optional "
            "extra; or convert it once where torch is installed: "
            f"`python -m leakjax.models.torch_import {path.name} {path.stem}.npz`"
        ) from error
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):  # training checkpoints that wrap the state dict
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(loaded).__name__}")
    return {
        name: value.detach().cpu().numpy()
        for name, value in loaded.items()
        if isinstance(value, torch.Tensor)
    }


def read_state_dict(path: str | pathlib.Path, prefix: str = "") -> dict[str, np.ndarray]:
    """A torchvision-layout state dict from a `.npz` (numpy) or `.pth` / `.pt` (torch) file.

    Args:
      path: the file.
      prefix: keep only the names starting with it, stripped (e.g. "backbone." for the backbone
        of torchvision's `deeplabv3_resnet101` checkpoint); "" keeps every name.

    Returns:
      {name: np.ndarray} with torchvision's names and shapes.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            state = {name: np.asarray(archive[name]) for name in archive.files}
    elif suffix in (".pth", ".pt"):
        state = dict(_torch_load(path))
    else:
        raise ValueError(f"pretrained weights {path}: expected a .npz, .pth or .pt file")
    if prefix:
        state = {name[len(prefix) :]: v for name, v in state.items() if name.startswith(prefix)}
    if not state:
        raise ValueError(f"pretrained weights {path}: no arrays (prefix {prefix!r})")
    return state


def _flax_location(name: str) -> tuple[str, tuple[str, ...]] | None:
    """(collection, Flax path) of a torchvision ResNet name; None for unused names."""
    if _UNUSED.search(name):
        return None
    stem = _STEM.match(name)
    block = _BLOCK.match(name)
    if stem:
        module, field = stem.groups()
        scope: tuple[str, ...] = ()
    elif block:
        stage, index, module, field = block.groups()
        scope = (f"layer{stage}_{index}",)
        module = _BLOCK_MODULES.get(module, module)
    else:
        raise ValueError(f"pretrained weights: {name!r} is not a torchvision ResNet parameter")
    is_conv = module.startswith("conv") or module == "downsample_conv"
    if is_conv and field == "weight":
        return "params", (*scope, module, "kernel")
    if not is_conv and field in _BN_FIELDS:
        collection, variable = _BN_FIELDS[field]
        return collection, (*scope, module, variable)
    raise ValueError(f"pretrained weights: {name!r} is not a torchvision ResNet parameter")


def convert_resnet(state_dict: Mapping[str, Any]) -> Backbone:
    """torchvision ResNet state dict -> the Flax backbone's variables (module docstring).

    Conv weights [out, in, kh, kw] become kernels [kh, kw, in, out]; BatchNorm weight / bias go
    to params scale / bias, running mean / var to batch_stats mean / var; all float32.
    """
    flat: dict[str, dict[tuple[str, ...], np.ndarray]] = {"params": {}, "batch_stats": {}}
    sources: dict[str, str] = {}
    for name, value in state_dict.items():
        location = _flax_location(name)
        if location is None:
            continue
        collection, path = location
        array = np.asarray(value, dtype=np.float32)
        if path[-1] == "kernel":
            if array.ndim != 4:
                raise ValueError(
                    f"pretrained weights: {name!r} has shape {array.shape}, expected a conv "
                    "weight [out, in, kh, kw]"
                )
            array = np.ascontiguousarray(array.transpose(2, 3, 1, 0))
        elif array.ndim != 1:
            raise ValueError(
                f"pretrained weights: {name!r} has shape {array.shape}, expected a BatchNorm "
                "vector [C]"
            )
        flat[collection][path] = array
        sources["/".join((collection, *path))] = name
    if not flat["params"]:
        raise ValueError("pretrained weights: no torchvision ResNet parameter found")
    return Backbone(
        traverse_util.unflatten_dict(flat["params"]),
        traverse_util.unflatten_dict(flat["batch_stats"]),
        tuple(sorted(sources.items())),
    )


def load_backbone(path: str | pathlib.Path, prefix: str = "") -> Backbone:
    """`convert_resnet(read_state_dict(path, prefix))`."""
    return convert_resnet(read_state_dict(path, prefix))


def _merge_collection(target, source, collection: str, scope: str, sources: dict[str, str]):
    if scope not in target:
        raise ValueError(
            f"pretrained weights: the model has no {collection!r} scope {scope!r} to load a "
            f"ResNet backbone into (it has {sorted(target)})"
        )
    wanted = traverse_util.flatten_dict(dict(target[scope]), sep="/")
    given = traverse_util.flatten_dict(dict(source), sep="/")

    def describe(path: str) -> str:
        torch_name = sources.get(f"{collection}/{path}")
        suffix = f" (torchvision {torch_name!r})" if torch_name else ""
        return f"{collection}/{scope}/{path}{suffix}"

    missing = sorted(set(wanted) - set(given))
    if missing:
        raise ValueError(
            f"pretrained weights: the model's {collection}/{scope}/{missing[0]} is not in the "
            f"file ({len(missing)} missing; a different depth or a non-ResNet checkpoint?)"
        )
    extra = sorted(set(given) - set(wanted))
    if extra:
        raise ValueError(
            f"pretrained weights: {describe(extra[0])} is not a parameter of the model "
            f"({len(extra)} extra; a different depth?)"
        )
    merged = {}
    for path, leaf in wanted.items():
        value = given[path]
        if tuple(np.shape(value)) != tuple(leaf.shape):
            raise ValueError(
                f"pretrained weights: {describe(path)} has shape {tuple(np.shape(value))}, the "
                f"model's has {tuple(leaf.shape)} (a different width?)"
            )
        merged[path] = jnp.asarray(value, dtype=leaf.dtype)
    return {**target, scope: traverse_util.unflatten_dict(merged, sep="/")}


def merge_backbone(params, batch_stats, backbone: Backbone, scope: str = "backbone"):
    """(params, batch_stats) with their `scope` subtrees replaced by the converted backbone's.

    Every variable of the model's scope must be in `backbone` with the same shape and vice
    versa (ValueError naming the first that is not). Works on arrays and on tracers (in jit).
    """
    sources = dict(backbone.sources)
    return (
        _merge_collection(params, backbone.params, "params", scope, sources),
        _merge_collection(batch_stats, backbone.batch_stats, "batch_stats", scope, sources),
    )


def with_backbone(state, backbone: Backbone | None, tx, scope: str = "backbone"):
    """A fresh TrainState with the pretrained backbone loaded (the optimiser state re-initialised
    on the new params); `backbone` None: the state unchanged."""
    if backbone is None:
        return state
    params, batch_stats = merge_backbone(state.params, state.batch_stats, backbone, scope)
    return state.replace(params=params, batch_stats=batch_stats, opt_state=tx.init(params))


def main(argv: list[str] | None = None) -> None:
    """Converts a `.pth` torchvision checkpoint to a `.npz` state dict (needs torch)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("source", help="torchvision ResNet checkpoint (.pth / .pt / .npz)")
    parser.add_argument("target", help="the .npz to write (torchvision names, numpy arrays)")
    parser.add_argument(
        "--prefix", default="", help='keep names with this prefix, e.g. "backbone."'
    )
    args = parser.parse_args(argv)
    state = read_state_dict(args.source, args.prefix)
    backbone = convert_resnet(state)  # fails here on a non-ResNet file, before writing
    kept = {name: state[name] for _, name in backbone.sources}
    np.savez(args.target, **kept)
    print(f"{args.target}: {len(kept)} arrays of {args.source}")


if __name__ == "__main__":
    main()
