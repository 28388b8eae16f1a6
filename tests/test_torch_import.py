"""The torchvision ResNet converter (leakjax/models/torch_import.py), without torch.

A tiny ResNet (one bottleneck per stage, base width 4) gets torchvision-layout weights written
here with numpy (torchvision's names and [out, in, kh, kw] shapes, BatchNorm running statistics,
`num_batches_tracked`, the classifier `fc.*`), saved as a `.npz`. The converted weights, loaded
into DeepLabV3's "backbone" scope, must give the backbone features that a numpy forward pass of the
same torch-layout weights gives (NCHW, float64: convolutions as sums over the taps of the padded
input, BatchNorm with the running statistics, ReLU, max-pool padded with -inf, torchvision's
`_make_layer` with `replace_stride_with_dilation`). Then: every kind of mismatch is an error
naming the parameter, and the trainer starts from the file when `config.model.pretrained` is set.
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datasets.pascal_voc.labels import LABEL_SPACE
from experiments.configs.base import base_config
from leakjax.data import Dataset
from leakjax.models.deeplabv3 import DILATED_STAGES, DeepLabV3
from leakjax.models.resnet import ResNet
from leakjax.models.torch_import import (
    convert_resnet,
    load_backbone,
    merge_backbone,
    read_state_dict,
)
from leakjax.train import mesh as mesh_lib
from leakjax.train import trainer
from leakjax.train.batch import image_spec

STAGES = (1, 1, 1, 1)
WIDTH = 4
OUTPUT_STRIDE = 8  # layer2 strided, layer3 and layer4 dilated: both code paths
TINY = dict(stage_sizes=STAGES, width=WIDTH, aspp_channels=8, output_stride=OUTPUT_STRIDE)
EPS = 1e-5  # torch's BatchNorm2d default


# ------------------------------------------------------------ torchvision-layout weights (numpy)


def torchvision_state_dict(seed=0, stage_sizes=STAGES, width=WIDTH, num_classes=10):
    """torchvision's `ResNet(Bottleneck, stage_sizes)` state dict with base width `width`:
    names, shapes and entries as `model.state_dict()` has them, random values."""
    rng = np.random.default_rng(seed)
    state = {}

    def conv(name, out, inp, k):
        std = np.sqrt(2.0 / (out * k * k))  # kaiming_normal_(mode="fan_out")
        state[f"{name}.weight"] = rng.normal(0.0, std, (out, inp, k, k)).astype(np.float32)

    def bn(name, c):
        state[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(0.0, 0.2, c).astype(np.float32)
        state[f"{name}.running_mean"] = rng.normal(0.0, 0.3, c).astype(np.float32)
        state[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
        state[f"{name}.num_batches_tracked"] = np.array(1000, np.int64)

    conv("conv1", width, 3, 7)
    bn("bn1", width)
    inplanes = width
    for stage, blocks in enumerate(stage_sizes):
        planes = width * 2**stage
        for block in range(blocks):
            prefix = f"layer{stage + 1}.{block}"
            conv(f"{prefix}.conv1", planes, inplanes, 1)
            bn(f"{prefix}.bn1", planes)
            conv(f"{prefix}.conv2", planes, planes, 3)
            bn(f"{prefix}.bn2", planes)
            conv(f"{prefix}.conv3", 4 * planes, planes, 1)
            bn(f"{prefix}.bn3", 4 * planes)
            if block == 0:  # stride 2 or inplanes != 4 * planes: torchvision's downsample
                conv(f"{prefix}.downsample.0", 4 * planes, inplanes, 1)
                bn(f"{prefix}.downsample.1", 4 * planes)
            inplanes = 4 * planes
    state["fc.weight"] = rng.normal(0.0, 0.01, (num_classes, inplanes)).astype(np.float32)
    state["fc.bias"] = np.zeros(num_classes, np.float32)
    return state


# ------------------------------------------------------------ numpy reference forward (NCHW)


def np_conv(x, weight, stride=1, dilation=1):
    """torch Conv2d(bias=False, padding=k // 2 * dilation): x [N, C, H, W], weight [O, C, k, k]."""
    kernel = weight.shape[2]
    pad = kernel // 2 * dilation
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out_h = (x.shape[2] + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    out_w = (x.shape[3] + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    y = np.zeros((x.shape[0], weight.shape[0], out_h, out_w))
    for i in range(kernel):
        for j in range(kernel):
            rows = slice(i * dilation, i * dilation + stride * (out_h - 1) + 1, stride)
            cols = slice(j * dilation, j * dilation + stride * (out_w - 1) + 1, stride)
            y += np.einsum("nchw,oc->nohw", padded[:, :, rows, cols], weight[:, :, i, j])
    return y


def np_bn(x, state, name):
    """Eval-mode BatchNorm2d with the running statistics."""
    get = lambda field: state[f"{name}.{field}"].astype(np.float64)[None, :, None, None]  # noqa: E731
    return (x - get("running_mean")) / np.sqrt(get("running_var") + EPS) * get("weight") + get(
        "bias"
    )


def np_relu(x):
    return np.maximum(x, 0.0)


def np_max_pool(x):
    """MaxPool2d(3, stride=2, padding=1) (padding with -inf)."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    out_h, out_w = (x.shape[2] - 1) // 2 + 1, (x.shape[3] - 1) // 2 + 1
    windows = [
        padded[:, :, i : i + 2 * (out_h - 1) + 1 : 2, j : j + 2 * (out_w - 1) + 1 : 2]
        for i in range(3)
        for j in range(3)
    ]
    return np.max(np.stack(windows), axis=0)


def np_bottleneck(x, state, prefix, stride, dilation):
    w = lambda name: state[f"{prefix}.{name}.weight"].astype(np.float64)  # noqa: E731
    out = np_relu(np_bn(np_conv(x, w("conv1")), state, f"{prefix}.bn1"))
    out = np_relu(np_bn(np_conv(out, w("conv2"), stride, dilation), state, f"{prefix}.bn2"))
    out = np_bn(np_conv(out, w("conv3")), state, f"{prefix}.bn3")
    if f"{prefix}.downsample.0.weight" in state:
        shortcut = np_bn(np_conv(x, w("downsample.0"), stride), state, f"{prefix}.downsample.1")
    else:
        shortcut = x
    return np_relu(out + shortcut)


def np_resnet(image_nhwc, state, stage_sizes, replace_stride_with_dilation):
    """torchvision ResNet.forward up to layer4 (no avgpool / fc), as NHWC float64."""
    x = image_nhwc.astype(np.float64).transpose(0, 3, 1, 2)
    x = np_relu(np_bn(np_conv(x, state["conv1.weight"].astype(np.float64), 2), state, "bn1"))
    x = np_max_pool(x)
    dilation = 1
    for stage, blocks in enumerate(stage_sizes):  # torchvision's _make_layer
        stride = 1 if stage == 0 else 2
        previous_dilation = dilation
        if stage > 0 and replace_stride_with_dilation[stage - 1]:
            dilation *= stride
            stride = 1
        for block in range(blocks):
            prefix = f"layer{stage + 1}.{block}"
            if block == 0:
                x = np_bottleneck(x, state, prefix, stride, previous_dilation)
            else:
                x = np_bottleneck(x, state, prefix, 1, dilation)
    return x.transpose(0, 2, 3, 1)


# ------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """(path of the .npz, its state dict)."""
    state = torchvision_state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet_tiny.npz"
    np.savez(path, **state)
    return path, state


def abstract_variables(**kwargs):
    """DeepLabV3's variable shapes (no compilation)."""
    model = DeepLabV3(num_classes=21, **{**TINY, **kwargs})
    batch = {
        "image": jnp.zeros((1, 32, 32, 3), jnp.float32),
        "pixel_mask": jnp.ones((1, 32, 32), bool),
        "labels": jnp.zeros((1, 32, 32), jnp.int32),
    }
    return jax.eval_shape(lambda: model.init(jax.random.key(0), batch))


def test_converter_forward_equals_numpy_reference(weights_file):
    path, state = weights_file
    backbone = load_backbone(path)
    # the mapping of resnet.py's docstring, checked on a few entries
    np.testing.assert_array_equal(
        backbone.params["conv1"]["kernel"], state["conv1.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        backbone.batch_stats["layer3_0"]["downsample_bn"]["var"],
        state["layer3.0.downsample.1.running_var"],
    )
    np.testing.assert_array_equal(
        backbone.params["layer2_0"]["bn2"]["scale"], state["layer2.0.bn2.weight"]
    )

    variables = abstract_variables()
    params, batch_stats = merge_backbone(variables["params"], variables["batch_stats"], backbone)
    for name in ("aspp", "head", "classifier"):  # the rest of the model is left as it was
        assert params[name] is variables["params"][name]

    rng = np.random.default_rng(1)
    image = rng.normal(0.0, 1.0, (2, 37, 45, 3)).astype(np.float32)  # odd sizes: borders
    mask = np.ones(image.shape[:3], bool)
    dilate = DILATED_STAGES[OUTPUT_STRIDE]
    resnet = ResNet(stage_sizes=STAGES, width=WIDTH, replace_stride_with_dilation=dilate)
    forward = jax.jit(lambda v, x, m: resnet.apply(v, x, m, train=False))
    features, feature_mask = forward(
        {"params": params["backbone"], "batch_stats": batch_stats["backbone"]}, image, mask
    )
    expected = np_resnet(image, state, STAGES, dilate)
    assert features.shape == expected.shape == (2, 5, 6, 32 * WIDTH)
    assert bool(np.all(feature_mask))
    scale = np.abs(expected).max()
    assert scale > 0.1  # the comparison is not between two maps of zeros
    np.testing.assert_allclose(np.asarray(features), expected, rtol=1e-4, atol=1e-4 * scale)


def test_mismatches_name_the_parameter(weights_file, tmp_path):
    path, state = weights_file
    target = abstract_variables()
    merge = lambda backbone: merge_backbone(  # noqa: E731
        target["params"], target["batch_stats"], backbone
    )

    # one shape that differs, with both names; a different width
    wrong = {**state, "layer2.0.conv2.weight": np.zeros((8, 8, 1, 1), np.float32)}
    with pytest.raises(
        ValueError,
        match=r"params/backbone/layer2_0/conv2/kernel \(torchvision 'layer2\.0\.conv2\.weight'\) "
        r"has shape \(1, 1, 8, 8\), the model's has \(3, 3, 8, 8\)",
    ):
        merge(convert_resnet(wrong))
    with pytest.raises(ValueError, match=r"\(torchvision '[\w.]+'\) has shape \(8,"):
        merge(convert_resnet(torchvision_state_dict(width=8)))
    # a deeper network (ResNet-101 into ResNet-50, here 2 blocks in layer1 into 1)
    with pytest.raises(ValueError, match=r"backbone/layer1_1/.*'layer1\.1\..*not a parameter"):
        merge(convert_resnet(torchvision_state_dict(stage_sizes=(2, 1, 1, 1))))
    # a missing entry (a running variance)
    partial = {k: v for k, v in state.items() if k != "layer2.0.bn1.running_var"}
    with pytest.raises(ValueError, match=r"batch_stats/backbone/layer2_0/bn1/var is not in"):
        merge(convert_resnet(partial))
    # names that are no torchvision ResNet parameter, and wrong ranks
    with pytest.raises(ValueError, match=r"'layer1\.0\.conv1\.bias' is not a torchvision"):
        convert_resnet({**state, "layer1.0.conv1.bias": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match=r"'classifier\.4\.weight' is not a torchvision"):
        convert_resnet({**state, "classifier.4.weight": np.zeros((21, 8, 1, 1), np.float32)})
    with pytest.raises(ValueError, match=r"'bn1\.weight' has shape \(4, 1\)"):
        convert_resnet({**state, "bn1.weight": np.ones((4, 1), np.float32)})
    # a model without the scope
    with pytest.raises(ValueError, match=r"no 'params' scope 'encoder'"):
        merge_backbone(
            target["params"], target["batch_stats"], convert_resnet(state), scope="encoder"
        )
    # files: a prefix (torchvision's deeplabv3 checkpoints hold "backbone.<name>"), bad files
    prefixed = tmp_path / "deeplab.npz"
    np.savez(prefixed, **{f"backbone.{k}": v for k, v in state.items()}, **{"aux.w": np.ones(2)})
    assert read_state_dict(prefixed, prefix="backbone.").keys() == state.keys()
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        read_state_dict(tmp_path / "absent.npz")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"weights\.bin: expected a \.npz, \.pth or \.pt"):
        read_state_dict(tmp_path / "weights.bin")
    if importlib.util.find_spec("torch") is None:
        (tmp_path / "resnet50.pth").write_bytes(b"not read")
        with pytest.raises(ImportError, match="pip install torch"):
            read_state_dict(tmp_path / "resnet50.pth")


def test_trainer_starts_from_pretrained_backbone(weights_file, tmp_path):
    path, state = weights_file
    config = base_config()
    config.data.name = "pascal_voc"
    config.data.buckets = [[32, 32]]
    config.model.name = "deeplabv3"
    config.model.kwargs = dict(TINY)
    config.model.pretrained = str(path)
    config.optimizer.name = "sgd"
    data = Dataset("voc_test", LABEL_SPACE, image_spec(3), [], [], "no samples: shapes only")
    mesh = mesh_lib.make_data_mesh(jax.devices()[:1])
    run = trainer.build_run(config, tmp_path / "run", mesh, data, None)
    state_ = run.init_fn()
    jax.tree.map(  # the abstract twin (computed without the file) matches the loaded state
        lambda a, b: np.testing.assert_equal((a.shape, a.dtype), (b.shape, b.dtype)),
        run.abstract_state,
        state_,
    )
    backbone = convert_resnet(state)
    loaded = jax.device_get(state_.params["backbone"])
    jax.tree.map(np.testing.assert_array_equal, loaded, backbone.params)
    stats = jax.device_get(state_.batch_stats["backbone"])
    jax.tree.map(np.testing.assert_array_equal, stats, backbone.batch_stats)
    run.checkpointer.close()

    config.model.pretrained = str(tmp_path / "missing.npz")
    run = trainer.build_run(config, tmp_path / "run2", mesh, data, None)  # no read for shapes
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        run.init_fn()
    run.checkpointer.close()
