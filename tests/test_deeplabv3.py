"""DeepLabV3: parameter counts vs layer lists and torchvision's published counts, ASPP branches vs
lax.conv_general_dilated and numpy masked BatchNorm, image pooling over valid pixels vs numpy,
up-sampling vs a numpy bilinear reference, padding invariance on odd sizes, LEAK feature labels
vs numpy nearest sampling, and overfitting one tiny scene with the trainer's step.

The full-size networks only go through jax.eval_shape. Everything compiled uses a tiny variant
(one bottleneck per stage, base width 4, 8 ASPP channels, output stride 8, rates (1, 2, 3) so
that the atrous taps reach the image border on feature maps of a few pixels).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from datasets.pascal_voc.labels import IGNORE_INDEX, LABEL_SPACE, NUM_CLASSES
from leakjax import metrics
from leakjax.models import MODELS
from leakjax.models.deeplabv3 import ASPP, DeepLabV3, upsample_logits
from leakjax.train import mesh as mesh_lib
from leakjax.train.batch import image_spec, pad_batch
from leakjax.train.state import state_from_variables
from leakjax.train.steps import LossSettings, make_eval_step, make_train_step

TINY = dict(
    stage_sizes=(1, 1, 1, 1),
    width=4,
    aspp_channels=8,
    output_stride=8,
    aspp_rates=(1, 2, 3),
    bn_momentum=0.5,
)
OVERFIT_STEPS = 150
# An rbg key: threefry initialisers of the ~50 parameter arrays dominate the init compile time.
INIT_KEY = jax.random.key(0, impl="unsafe_rbg")


def ceil_div(a, b):
    return -(-a // b)


# ---------------------------------------------------------------- parameter counts (layer list)


def conv_params(c_in, c_out, k):
    return c_in * c_out * k * k  # bias-free


def bn_params(c):
    return 2 * c  # scale and bias (running statistics are not parameters)


def resnet_params(stage_sizes, width=64):
    """torchvision's ResNet layer list without fc: stem, then bottlenecks (1x1, 3x3, 1x1 x4)
    whose first block per stage has a 1x1 projection shortcut."""
    total = conv_params(3, width, 7) + bn_params(width)
    c_in = width
    for stage, blocks in enumerate(stage_sizes):
        planes = width * 2**stage
        for block in range(blocks):
            total += conv_params(c_in, planes, 1) + bn_params(planes)
            total += conv_params(planes, planes, 3) + bn_params(planes)
            total += conv_params(planes, 4 * planes, 1) + bn_params(4 * planes)
            if block == 0:
                total += conv_params(c_in, 4 * planes, 1) + bn_params(4 * planes)
            c_in = 4 * planes
    return total


def deeplab_head_params(c_in, num_classes, channels=256):
    """ASPP (1x1, three 3x3, pooling 1x1; BN each), projection 1x1 + BN, 3x3 + BN, classifier."""
    aspp = 2 * conv_params(c_in, channels, 1) + 3 * conv_params(c_in, channels, 3)
    aspp += 5 * bn_params(channels)
    project = conv_params(5 * channels, channels, 1) + bn_params(channels)
    head = conv_params(channels, channels, 3) + bn_params(channels)
    classifier = channels * num_classes + num_classes
    return aspp + project + head + classifier


def count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def abstract_variables(model):
    batch = {
        "image": jax.ShapeDtypeStruct((1, 33, 33, 3), jnp.float32),
        "labels": jax.ShapeDtypeStruct((1, 33, 33), jnp.int32),
        "pixel_mask": jax.ShapeDtypeStruct((1, 33, 33), jnp.bool_),
    }
    return jax.eval_shape(lambda b: model.init(jax.random.key(0), b), batch)


def test_registered_and_spec():
    assert MODELS["deeplabv3"] is DeepLabV3
    assert DeepLabV3().input_spec() == image_spec(3)


@pytest.mark.parametrize("depth,stages", [(50, (3, 4, 6, 3)), (101, (3, 4, 23, 3))])
def test_parameter_counts(depth, stages):
    # torchvision's published counts: resnet{50,101} classifiers, deeplabv3_resnet{50,101}
    # (which include an auxiliary FCNHead(1024, 21): 3x3 conv 256 + BN + 1x1 conv to 21).
    published_resnet = {50: 25_557_032, 101: 44_549_160}[depth]
    published_deeplab = {50: 42_004_074, 101: 60_996_202}[depth]
    fc = 2048 * 1000 + 1000
    aux_head = conv_params(1024, 256, 3) + bn_params(256) + 256 * 21 + 21
    assert resnet_params(stages) == published_resnet - fc
    for output_stride in (16, 8):  # dilation adds no parameters
        variables = abstract_variables(
            DeepLabV3(num_classes=21, depth=depth, output_stride=output_stride)
        )
        params = variables["params"]
        assert count(params["backbone"]) == resnet_params(stages)
        assert count(params) == resnet_params(stages) + deeplab_head_params(2048, 21)
        assert count(params) == published_deeplab - aux_head
        # torchvision layout (resnet.py docstring): layer4.K.conv2 is a 3x3 512 -> 512 conv
        last = f"layer4_{stages[3] - 1}"
        assert params["backbone"][last]["conv2"]["kernel"].shape == (3, 3, 512, 512)
        assert variables["batch_stats"]["backbone"]["bn1"]["var"].shape == (64,)


# ---------------------------------------------------------------- ASPP vs lax / numpy


def numpy_bn_train(y, valid, scale, bias, eps=1e-5):
    """BatchNorm with the biased variance over the valid entries; 0 elsewhere. y [..., C]."""
    rows = y[valid]
    mean, var = rows.mean(0), rows.var(0)
    out = (y - mean) / np.sqrt(var + eps) * scale + bias
    return np.where(valid[..., None], out, 0.0), mean, var


@pytest.fixture(scope="module")
def aspp_run():
    rng = np.random.default_rng(1)
    sizes = [(7, 9), (9, 11), (3, 2), (0, 0)]  # the last sample is entirely padding
    x = rng.normal(size=(4, 9, 11, 5)).astype(np.float32)
    mask = np.zeros((4, 9, 11), bool)
    for b, (h, w) in enumerate(sizes):
        mask[b, :h, :w] = True
    x[~mask] = 1e3 * rng.normal(size=((~mask).sum(), 1))  # garbage
    module = ASPP(rates=(2, 3, 5), channels=6, bn_momentum=0.9)
    variables = module.init(INIT_KEY, x, mask, train=False)
    # non-trivial BN affine parameters
    params = jax.tree.map(
        lambda p: p + jnp.asarray(rng.normal(size=p.shape, scale=0.3), p.dtype),
        variables["params"],
    )
    variables = {**variables, "params": params}
    apply = jax.jit(
        lambda v, x, m: module.apply(
            v,
            x,
            m,
            train=True,
            capture_intermediates=True,
            mutable=["batch_stats", "intermediates"],
        )
    )
    out, state = apply(variables, x, mask)
    inter = jax.tree.map(np.asarray, state["intermediates"])
    return x, mask, jax.tree.map(np.asarray, params), state["batch_stats"], inter, out


def test_aspp_atrous_branches_vs_lax_conv(aspp_run):
    x, mask, params, batch_stats, inter, _ = aspp_run
    clean = np.where(mask[..., None], x, 0.0)
    for i, rate in enumerate((2, 3, 5)):
        branch = params[f"atrous_{i}"]
        conv = jax.lax.conv_general_dilated(
            jnp.asarray(clean),
            jnp.asarray(branch["conv"]["kernel"]),
            window_strides=(1, 1),
            padding=[(rate, rate), (rate, rate)],
            rhs_dilation=(rate, rate),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=jax.lax.Precision.HIGHEST,
        )
        expected, mean, var = numpy_bn_train(
            np.asarray(conv, np.float64), mask, branch["bn"]["scale"], branch["bn"]["bias"]
        )
        got = inter[f"atrous_{i}"]["__call__"][0]
        np.testing.assert_allclose(got, np.maximum(expected, 0.0), atol=2e-4)
        stats = batch_stats[f"atrous_{i}"]["bn"]
        np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * var, rtol=1e-4)


def test_image_pooling_averages_valid_pixels_only(aspp_run):
    x, mask, params, _, inter, out = aspp_run
    pooling = params["pooling"]
    counts = mask.sum((1, 2))
    means = np.stack(
        [x[b][mask[b]].mean(0) if counts[b] else np.zeros(x.shape[-1]) for b in range(len(x))]
    )
    projected = means.astype(np.float64) @ pooling["conv"]["kernel"][0, 0]  # [B, 6]
    nonempty = counts > 0
    normed, _, _ = numpy_bn_train(
        projected, nonempty, pooling["bn"]["scale"], pooling["bn"]["bias"]
    )
    expected = np.maximum(normed, 0.0)[:, None, None, :] * mask[..., None]
    np.testing.assert_allclose(inter["pooling"]["__call__"][0], expected, atol=1e-4)
    # the ASPP output is zero on padding (and the empty sample)
    assert np.all(np.asarray(out)[~mask] == 0.0)


# ---------------------------------------------------------------- up-sampling vs numpy


def numpy_upsample(x, rows, cols, out_shape, stride):
    """Bilinear: output (y, z) samples feature coordinate (y / s, z / s) clamped to the valid
    block [0, rows - 1] x [0, cols - 1], from its four neighbours."""
    out = np.zeros((*out_shape, x.shape[-1]))
    for y in range(out_shape[0]):
        for z in range(out_shape[1]):
            cy, cz = min(y / stride, rows - 1), min(z / stride, cols - 1)
            y0, z0 = int(np.floor(cy)), int(np.floor(cz))
            y1, z1 = min(y0 + 1, rows - 1), min(z0 + 1, cols - 1)
            fy, fz = cy - y0, cz - z0
            out[y, z] = (
                (1 - fy) * (1 - fz) * x[y0, z0]
                + (1 - fy) * fz * x[y0, z1]
                + fy * (1 - fz) * x[y1, z0]
                + fy * fz * x[y1, z1]
            )
    return out


def test_upsampling_vs_numpy_bilinear():
    rng = np.random.default_rng(2)
    height, width, stride = 29, 23, 4
    h, w = ceil_div(height, stride), ceil_div(width, stride)
    x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
    mask = np.zeros((2, h, w), bool)
    mask[0] = True
    mask[1, :5, :3] = True
    x[1][~mask[1]] = 1e4  # never read
    upsample = jax.jit(upsample_logits, static_argnums=(2, 3))
    got = np.asarray(upsample(jnp.asarray(x), jnp.asarray(mask), (height, width), stride))
    np.testing.assert_allclose(
        got[0], numpy_upsample(x[0], h, w, (height, width), stride), atol=1e-5
    )
    np.testing.assert_allclose(
        got[1], numpy_upsample(x[1], 5, 3, (height, width), stride), atol=1e-5
    )
    # Away from the clamped bottom/right edge this is a standard half-pixel bilinear resize
    # with scale s, translated so that feature pixel i lands on input pixel s * i.
    resize = jax.jit(
        jax.image.scale_and_translate,
        static_argnames=("shape", "spatial_dims", "method", "antialias"),
    )
    resized = resize(
        jnp.asarray(x[:1]),
        shape=(1, height, width, 3),
        spatial_dims=(1, 2),
        scale=jnp.array([stride, stride], jnp.float32),
        translation=jnp.array([(1 - stride) / 2] * 2, jnp.float32),
        method="linear",
        antialias=False,
    )
    inside = (slice(None), slice(0, stride * (h - 1) + 1), slice(0, stride * (w - 1) + 1))
    np.testing.assert_allclose(got[:1][inside], np.asarray(resized)[inside], atol=1e-5)


# ---------------------------------------------------------------- whole model on odd sizes


def scene(height, width, seed):
    """A tiny VOC-like scene: background with three objects (cat, dog, person rectangles) whose
    colours differ, plus noise; a 1-pixel 255 band around every object as in VOC masks."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), np.int32)
    colours = {0: (0.2, 0.3, 0.2), 8: (0.9, 0.5, 0.1), 12: (0.6, 0.4, 0.3), 15: (0.1, 0.2, 0.9)}
    boxes = [  # label, rows, cols as fractions of the image
        (8, (0.08, 0.45), (0.08, 0.48)),
        (12, (0.55, 0.92), (0.08, 0.48)),
        (15, (0.2, 0.85), (0.58, 0.92)),
    ]
    for label, (top, bottom), (left, right) in boxes:
        rows = slice(int(top * height), int(bottom * height))
        labels[rows, int(left * width) : int(right * width)] = label
    image = np.zeros((height, width, 3), np.float32)
    for label, colour in colours.items():
        image[labels == label] = colour
    image += rng.normal(scale=0.1, size=image.shape).astype(np.float32)
    # void band: pixels next to a different label
    padded = np.pad(labels, 1, mode="edge")
    border = np.zeros_like(labels, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        border |= padded[dy : dy + height, dx : dx + width] != labels
    labels[border & (labels != 0)] = IGNORE_INDEX
    return {"image": (image - 0.45) / 0.25, "labels": labels}


@pytest.fixture(scope="module")
def tiny_model():
    model = DeepLabV3(num_classes=NUM_CLASSES, ignore_index=IGNORE_INDEX, dropout_rate=0.0, **TINY)
    spec = model.input_spec()
    sample = scene(29, 23, seed=3)
    alone = pad_batch([sample], (29, 23), spec, IGNORE_INDEX)
    empty = {  # a sample with no pixels: only padding in the padded batch
        "image": np.zeros((0, 0, 3), np.float32),
        "labels": np.zeros((0, 0), np.int32),
    }
    # the image on the first of 4 samples, the 3 others entirely padding (one per device below)
    padded = pad_batch([sample, empty, empty, empty], (37, 33), spec, IGNORE_INDEX)
    rng = np.random.default_rng(4)
    padded["image"][~padded["pixel_mask"]] = rng.normal(size=3) * 5  # garbage on padding
    padded["labels"][~padded["pixel_mask"]] = 3  # a real class id where there are no pixels
    variables = jax.jit(lambda b: model.init(INIT_KEY, b, train=False))(alone)

    def forward(variables, batch):
        (logits, aux), updates = model.apply(variables, batch, train=True, mutable=["batch_stats"])
        trained = {**variables, "batch_stats": updates["batch_stats"]}
        eval_logits, _ = model.apply(trained, batch, train=False)
        return logits, aux, updates["batch_stats"], eval_logits

    return {
        "variables": variables,
        "alone": alone,
        "padded": padded,
        "forward": forward,
        "out_alone": jax.jit(forward)(variables, alone),
        "out_padded": jax.jit(forward)(variables, padded),
    }


def test_padding_invariance_on_odd_sizes(tiny_model):
    padded = tiny_model["padded"]
    logits_a, aux_a, stats_a, eval_a = jax.tree.map(np.asarray, tiny_model["out_alone"])
    logits_p, aux_p, stats_p, eval_p = jax.tree.map(np.asarray, tiny_model["out_padded"])
    assert logits_a.shape == (1, 29, 23, NUM_CLASSES)  # output size = input size
    assert logits_p.shape == (4, 37, 33, NUM_CLASSES)
    scale = np.abs(logits_a).max()
    assert scale > 0.1
    # training mode (batch statistics) and evaluation with the updated running averages
    np.testing.assert_allclose(logits_p[0, :29, :23], logits_a[0], atol=1e-4 * scale)
    np.testing.assert_allclose(eval_p[0, :29, :23], eval_a[0], atol=1e-4 * scale)
    assert np.all(logits_p[~padded["pixel_mask"]] == 0.0)
    jax.tree.map(
        lambda p, a: np.testing.assert_allclose(p, a, rtol=1e-4, atol=1e-5), stats_p, stats_a
    )
    # features at stride 8: [29, 23] -> [4, 3] inside [37, 33] -> [5, 5]
    features_a = aux_a["features"].reshape(1, 4, 3, -1)
    features_p = aux_p["features"].reshape(4, 5, 5, -1)
    feature_scale = np.abs(features_a).max()
    np.testing.assert_allclose(features_p[0, :4, :3], features_a[0], atol=1e-4 * feature_scale)
    assert np.all(features_p[~aux_p["feature_mask"].reshape(4, 5, 5)] == 0.0)


def test_four_devices_equal_one_device(tiny_model):
    """BatchNorm statistics and image pooling are global sums: sharding the padded batch over 4
    devices (3 of which hold only padding) changes nothing."""
    assert len(jax.devices()) == 4, "tests/conftest.py should give 4 simulated CPU devices"
    mesh = mesh_lib.make_data_mesh(jax.devices())
    sharded = jax.jit(
        tiny_model["forward"],
        in_shardings=(mesh_lib.replicated_sharding(mesh), mesh_lib.batch_sharding(mesh)),
    )(tiny_model["variables"], tiny_model["padded"])
    jax.tree.map(
        lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5),
        jax.device_get(sharded),
        jax.device_get(tiny_model["out_padded"]),
    )


def numpy_feature_labels(labels, mask, stride, no_label):
    """Nearest sampling at the feature pixels' centres (s i, s j); no label where not valid."""
    batch, height, width = labels.shape
    h, w = ceil_div(height, stride), ceil_div(width, stride)
    out = np.full((batch, h, w), no_label, np.int32)
    valid = np.zeros((batch, h, w), bool)
    for b in range(batch):
        for i in range(h):
            for j in range(w):
                if mask[b, stride * i, stride * j]:
                    out[b, i, j] = labels[b, stride * i, stride * j]
                    valid[b, i, j] = True
    return out.reshape(batch, -1), valid.reshape(batch, -1)


def test_aux_feature_labels_and_loss_tensors(tiny_model):
    alone, out_padded = tiny_model["alone"], tiny_model["out_padded"]
    cases = ((alone, tiny_model["out_alone"]), (tiny_model["padded"], out_padded))
    for batch, (logits, aux, _, _) in cases:
        aux = jax.tree.map(np.asarray, aux)
        labels, valid = numpy_feature_labels(batch["labels"], batch["pixel_mask"], 8, IGNORE_INDEX)
        np.testing.assert_array_equal(aux["feature_labels"], labels)
        np.testing.assert_array_equal(aux["feature_mask"], valid)
        assert aux["features"].shape == (*labels.shape, TINY["aspp_channels"])
        expected_labels = np.where(batch["pixel_mask"], batch["labels"], IGNORE_INDEX)
        np.testing.assert_array_equal(aux["loss_labels"], expected_labels)
        np.testing.assert_array_equal(aux["loss_mask"], batch["pixel_mask"])
        np.testing.assert_array_equal(aux["loss_logits"], np.asarray(logits))
        assert not aux["overflow"].any() and aux["overflow"].shape == (len(labels),)
    # the padded batch's labels hold class 3 on padding: it must not reach any label
    assert not np.any(np.asarray(out_padded[1]["feature_labels"]) == 3)
    # the backbone level: width * 32 channels, same labels
    backbone = DeepLabV3(
        num_classes=NUM_CLASSES, ignore_index=IGNORE_INDEX, feature_level="backbone", **TINY
    )
    shapes = jax.eval_shape(
        lambda b: backbone.init_with_output(INIT_KEY, b, train=False)[0][1], alone
    )
    assert shapes["features"].shape == (1, 12, TINY["width"] * 32)


# ---------------------------------------------------------------- overfitting with the trainer


def test_overfits_two_scenes_with_the_train_step(tiny_model):
    variables = tiny_model["variables"]
    model = DeepLabV3(num_classes=NUM_CLASSES, ignore_index=IGNORE_INDEX, dropout_rate=0.1, **TINY)
    spec = model.input_spec()
    batch = pad_batch([scene(37, 33, seed=5), scene(32, 39, seed=6)], (40, 40), spec, IGNORE_INDEX)
    scored = int(np.sum(batch["pixel_mask"] & (batch["labels"] != IGNORE_INDEX)))
    assert (batch["labels"][batch["pixel_mask"]] == IGNORE_INDEX).sum() > 50  # a real void band
    mesh = mesh_lib.make_data_mesh(jax.devices()[:1])
    tx = optax.adam(2e-2)
    train_step = make_train_step(
        model, tx, mesh, jax.random.key(0), LossSettings(), LABEL_SPACE, spec, donate=False
    )
    eval_step = make_eval_step(model, mesh, LABEL_SPACE, spec)
    state = state_from_variables(variables, tx, mesh_lib.replicated_sharding(mesh))
    batch = jax.device_put(batch, mesh_lib.batch_sharding(mesh))
    first = None
    for _ in range(OVERFIT_STEPS):
        state, step_metrics = train_step(state, batch)
        first = float(step_metrics["loss"]) if first is None else first
        assert int(step_metrics["num_points"]) == scored  # void and padding not in L0
    assert float(step_metrics["loss"]) < 0.3 * first
    confusion = np.asarray(eval_step(state.variables(), batch)["confusion"], np.int64)
    assert confusion.sum() == scored  # the 255 band and the padding are never counted
    scores = metrics.segmentation_metrics(confusion)
    # chance: 4 classes present, all-background scores ~0.15 on their mean IoU (measured 0.86;
    # bilinear logits from a 5 x 5 feature map limit the boundaries)
    present = scores["iou_per_class"][[0, 8, 12, 15]]
    assert scores["miou_present"] > 0.75 and present.min() > 0.6, present
