"""RangeNet++ (leakjax/models/rangenet.py) against references written here: the parameter counts of
the released DarkNet21 / DarkNet53 layer lists, its blocks against a numpy PyTorch-convention conv,
per-point logits against a numpy gather at pixels known by construction, the kNN output against
the brute-force released rule, padding invariance, and overfitting one tiny scan with the trainer's
own train step.

Also the helpers test_salsanext.py shares: `numpy_conv` (PyTorch's Conv2d on NCHW in float64),
`scan_batch` (scans whose pixels are known) and `pixel_miou`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_range_knn_postprocess import released_knn

from datasets.semantic_kitti.labels import LABEL_SPACE
from leakjax.models import MODELS
from leakjax.models.range_common import torch_conv
from leakjax.models.rangenet import (
    MODEL_BLOCKS,
    DarkNetBlock,
    DarkNetSegmenter,
    RangeNet,
    WidthUpConv,
)
from leakjax.train import mesh as mesh_lib
from leakjax.train.batch import point_cloud_spec
from leakjax.train.state import state_from_variables
from leakjax.train.steps import LossSettings, make_train_step

HEIGHT, WIDTH = 16, 64
FOV_UP_DEG, FOV_DOWN_DEG = 3.0, -25.0
CAPACITY = 640
NUM_CLASSES = 20


# ----------------------------------------------------------------------------- shared references


def numpy_conv(x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """PyTorch's Conv2d: x [N, C, H, W], weight [O, C, kh, kw], zero padding on both sides."""
    x, weight = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    _, _, height, width = x.shape
    _, _, kh, kw = weight.shape
    x = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((x.shape[0], weight.shape[0], out_h, out_w))
    for i in range(kh):
        for j in range(kw):
            row, col = i * dilation[0], j * dilation[1]
            patch = x[:, :, row : row + stride[0] * (out_h - 1) + 1 : stride[0],
                      col : col + stride[1] * (out_w - 1) + 1 : stride[1]]  # fmt: skip
            out += np.einsum("nchw,oc->nohw", patch, weight[:, :, i, j])
    return out if bias is None else out + np.asarray(bias)[None, :, None, None]


def torch_weight(kernel):
    """A flax conv kernel [kh, kw, C_in, C_out] as PyTorch's [C_out, C_in, kh, kw]."""
    return np.asarray(kernel).transpose(3, 2, 0, 1)


def numpy_bn(x, stats, params):
    """Inference BatchNorm on NCHW from flax's running statistics and scale / bias."""
    shape = (1, -1, 1, 1)
    mean, var = np.asarray(stats["mean"]).reshape(shape), np.asarray(stats["var"]).reshape(shape)
    scale, bias = np.asarray(params["scale"]).reshape(shape), np.asarray(params["bias"])
    return (x - mean) / np.sqrt(var + 1e-5) * scale + bias.reshape(shape)


def leaky(x, slope):
    return np.where(x > 0, x, slope * x)


def random_variables(shapes, seed, stats=True):
    """Numpy values for abstract variables: PyTorch-like uniform kernels, random BN parameters
    and (with `stats`) running statistics, else mean 0 / var 1."""
    rng = np.random.default_rng(seed)

    def value(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            bound = 1.0 / np.sqrt(np.prod(leaf.shape[:-1]))
            return rng.uniform(-bound, bound, leaf.shape)
        if "'var'" in name:
            return rng.uniform(0.5, 2.0, leaf.shape) if stats else np.ones(leaf.shape)
        if "'scale'" in name:
            return rng.uniform(0.5, 1.5, leaf.shape) if stats else np.ones(leaf.shape)
        return rng.normal(0.0, 0.1, leaf.shape) if stats else np.zeros(leaf.shape)

    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: value(path, leaf).astype(np.float32), shapes
    )


def scan_points(rng, rows, cols, ranges):
    """float32 [n, 4] points inside pixel (row, col) of the released projection (HEIGHT x WIDTH,
    +3 / -25 degrees), away from the pixel borders; remission uniform."""
    fov_up, fov_down = np.radians(FOV_UP_DEG), np.radians(FOV_DOWN_DEG)
    u = cols + rng.uniform(0.25, 0.75, len(cols))
    v = rows + rng.uniform(0.25, 0.75, len(rows))
    yaw = (2.0 * u / WIDTH - 1.0) * np.pi
    pitch = (1.0 - v / HEIGHT) * (fov_up - fov_down) + fov_down
    direction = np.stack(
        [np.cos(pitch) * np.cos(-yaw), np.cos(pitch) * np.sin(-yaw), np.sin(pitch)], -1
    )
    remission = rng.uniform(0.0, 1.0, (len(rows), 1))
    return np.concatenate([ranges[:, None] * direction, remission], -1).astype(np.float32)


def height_band_labels(points, rng):
    """Labels 1..5 by height bands (learnable from the z channel), about 5 % ignored (0)."""
    labels = 1 + np.digitize(points[:, 2], [-4.0, -2.0, -1.0, 0.0])
    return np.where(rng.uniform(size=len(points)) < 0.05, 0, labels).astype(np.int32)


def scan_batch(seed=0, num_points=(520, 460), garbage_padding=False):
    """A padded batch of scans plus, per scan, the pixel of every point by construction.

    Points fall on random pixels, several on the same pixel (occluded ones). Padded entries are
    zeros, or with `garbage_padding` close points on occupied pixels (they would win those pixels
    if the mask were ignored). Returns (batch, rows [B, P], cols [B, P]).
    """
    rng = np.random.default_rng(seed)
    batch = {
        "points": np.zeros((len(num_points), CAPACITY, 4), np.float32),
        "labels": np.zeros((len(num_points), CAPACITY), np.int32),
        "point_mask": np.zeros((len(num_points), CAPACITY), bool),
    }
    rows = np.full((len(num_points), CAPACITY), -1)
    cols = np.full((len(num_points), CAPACITY), -1)
    for sample, count in enumerate(num_points):
        row, col = rng.integers(0, HEIGHT, count), rng.integers(0, WIDTH, count)
        points = scan_points(rng, row, col, rng.uniform(2.0, 30.0, count))
        batch["points"][sample, :count] = points
        batch["labels"][sample, :count] = height_band_labels(points, rng)
        batch["point_mask"][sample, :count] = True
        rows[sample, :count], cols[sample, :count] = row, col
    if garbage_padding:  # its own generator: the real points stay the same
        garbage_rng = np.random.default_rng(seed + 1000)
        for sample, count in enumerate(num_points):
            pad = CAPACITY - count
            pick = garbage_rng.integers(0, count, pad)
            batch["points"][sample, count:] = scan_points(
                garbage_rng, rows[sample, pick], cols[sample, pick], np.full(pad, 0.5)
            )
            batch["labels"][sample, count:] = garbage_rng.integers(1, NUM_CLASSES, pad)
    return batch, rows, cols


def winners(batch, rows, cols, sample):
    """{(row, col): index of the closest point} of one scan (brute force)."""
    best = {}
    ranges = np.linalg.norm(batch["points"][sample, :, :3], axis=-1)
    for index in np.flatnonzero(batch["point_mask"][sample]):
        key = (rows[sample, index], cols[sample, index])
        if key not in best or ranges[index] < ranges[best[key]]:
            best[key] = index
    return best


def pixel_miou(pixel_logits, label_image, pixel_mask):
    """mIoU of the argmax over the scored ids (not 0) on the labelled pixels, classes present."""
    prediction = np.argmax(np.asarray(pixel_logits)[..., 1:], -1) + 1
    labels = np.asarray(label_image)
    counted = np.asarray(pixel_mask) & (labels != 0)
    ious = []
    for c in np.unique(labels[counted]):
        truth, pred = (labels == c) & counted, (prediction == c) & counted
        ious.append((truth & pred).sum() / (truth | pred).sum())
    return float(np.mean(ious)), len(ious)


def overfit(model, variables, batch, learning_rate, num_steps):
    """`num_steps` of the trainer's own train step (leakjax/train/steps.py: L0 = cross-entropy on
    aux["loss_*"]) with SGD + momentum 0.9 on one batch, on a one-device `data` mesh.

    Returns (losses, final variables as numpy).
    """
    mesh = mesh_lib.make_data_mesh(jax.devices()[:1])
    optimizer = optax.sgd(learning_rate, momentum=0.9)
    train_step = make_train_step(
        model,
        optimizer,
        mesh,
        # An rbg key: threefry dropout masks compile slowly on CPU.
        jax.random.key(0, impl="unsafe_rbg"),
        LossSettings(),
        LABEL_SPACE,
        point_cloud_spec(4),
        donate=False,
    )
    state = state_from_variables(variables, optimizer, mesh_lib.replicated_sharding(mesh))
    device_batch = mesh_lib.global_batch(batch, mesh)
    history = []
    for _ in range(num_steps):
        state, metrics = train_step(state, device_batch)
        history.append(float(metrics["loss"]))
    return history, jax.device_get(state.variables())


def abstract_batch(points=10):
    return {
        "points": jax.ShapeDtypeStruct((1, points, 4), jnp.float32),
        "labels": jax.ShapeDtypeStruct((1, points), jnp.int32),
        "point_mask": jax.ShapeDtypeStruct((1, points), bool),
    }


def param_count(model):
    """The model's parameter count from shapes only (nothing allocated)."""
    shapes = jax.eval_shape(lambda b: model.init(jax.random.key(0), b), abstract_batch())
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes["params"]))


# ----------------------------------------------------------------------------- parameter counts


def released_rangenet_count(layers, num_classes=20, input_depth=5):
    """Parameters of lidar-bonnetal's Backbone + Decoder + head from their layer lists (conv
    weights + biases where present, BatchNorm weight + bias)."""
    conv = lambda cin, cout, area, bias: cin * cout * area + (cout if bias else 0)  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731

    def basic_block(inplanes, planes):  # 1x1 inplanes -> planes[0], 3x3 -> planes[1], no bias
        return conv(inplanes, planes[0], 1, False) + bn(planes[0]) + conv(
            planes[0], planes[1], 9, False
        ) + bn(planes[1])  # fmt: skip

    blocks = {21: [1, 1, 2, 2, 1], 53: [1, 2, 8, 8, 4]}[layers]
    total = conv(input_depth, 32, 9, False) + bn(32)
    for planes, count in zip([[32, 64], [64, 128], [128, 256], [256, 512], [512, 1024]], blocks):
        total += conv(planes[0], planes[1], 9, False) + bn(planes[1])  # strided conv
        total += count * basic_block(planes[1], planes)
    for planes in [[1024, 512], [512, 256], [256, 128], [128, 64], [64, 32]]:
        total += conv(planes[0], planes[1], 1 * 4, True) + bn(planes[1])  # ConvTranspose2d
        total += basic_block(planes[1], planes)
    return total + conv(32, num_classes, 9, True)  # head


@pytest.mark.parametrize("depth", [21, 53])
def test_parameter_count_matches_released_layer_list(depth):
    # The image size does not change the parameters; any width divisible by 32 will do.
    model = RangeNet(num_classes=20, depth=depth, height=8, width=64)
    assert param_count(model) == released_rangenet_count(depth)


# ----------------------------------------------------------------------------- blocks


def test_blocks_match_numpy_reference():
    """DarkNet's residual block, the width-strided encoder conv and the decoder's ConvTranspose2d
    (inference mode, random statistics) against PyTorch's definitions in numpy."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 5, 8)).astype(np.float32)  # NCHW: 6 channels, 5 x 8
    nhwc = jnp.asarray(x.transpose(0, 2, 3, 1))
    block = DarkNetBlock((3, 6))
    strided = torch_conv(7, 3, padding=1, stride=(1, 2), use_bias=False)
    upconv = WidthUpConv(4)
    key = jax.random.key(0)
    variables = [
        random_variables(jax.eval_shape(init), seed)
        for seed, init in enumerate([
            lambda: block.init(key, nhwc, False),
            lambda: strided.init(key, nhwc),
            lambda: upconv.init(key, nhwc),
        ])
    ]  # fmt: skip
    outputs = jax.jit(
        lambda v: (block.apply(v[0], nhwc, False), strided.apply(v[1], nhwc),
                   upconv.apply(v[2], nhwc))
    )(variables)  # fmt: skip
    to_nchw = lambda y: np.asarray(y).transpose(0, 3, 1, 2)  # noqa: E731

    params, stats = variables[0]["params"], variables[0]["batch_stats"]
    y = numpy_conv(x, torch_weight(params["conv1"]["kernel"]))
    y = leaky(numpy_bn(y, stats["bn1"], params["bn1"]), 0.1)
    y = numpy_conv(y, torch_weight(params["conv2"]["kernel"]), padding=(1, 1))
    y = leaky(numpy_bn(y, stats["bn2"], params["bn2"]), 0.1) + x
    np.testing.assert_allclose(to_nchw(outputs[0]), y, rtol=1e-4, atol=1e-4)

    kernel = torch_weight(variables[1]["params"]["kernel"])
    y = numpy_conv(x, kernel, stride=(1, 2), padding=(1, 1))
    assert y.shape[-2:] == (5, 4)
    np.testing.assert_allclose(to_nchw(outputs[1]), y, rtol=1e-4, atol=1e-4)

    # ConvTranspose2d(kernel (1, 4), stride (1, 2), padding (0, 1)) by its definition: input
    # column i adds x[i] * w[k] to output column 2 i - 1 + k, kept when inside [0, 2 W).
    kernel = np.asarray(variables[2]["params"]["kernel"])[0]  # [4, C_in, C_out]
    y = np.zeros((2, 4, 5, 16)) + np.asarray(variables[2]["params"]["bias"])[None, :, None, None]
    for i in range(8):
        for k in range(4):
            column = 2 * i - 1 + k
            if 0 <= column < 16:
                y[:, :, :, column] += np.einsum("nch,co->noh", x[:, :, :, i], kernel[k])
    np.testing.assert_allclose(to_nchw(outputs[2]), y, rtol=1e-4, atol=1e-4)


def test_detached_skips_leave_the_encoder_only_the_bottleneck_gradient():
    """As released, skips carry no gradient: with the first decoder layer's kernel zeroed, the
    bottleneck no longer reaches the output, so the encoder gets no gradient at all; without the
    detach it gets one through every skip (all stages but the last, which only feeds the
    bottleneck)."""
    x = np.random.default_rng(4).normal(size=(1, 2, 64, 5)).astype(np.float32)
    models = [DarkNetSegmenter(depth=21, base_width=2, detach_skips=d) for d in (True, False)]
    shapes = jax.eval_shape(lambda: models[0].init(jax.random.key(0), x, False))
    variables = random_variables(shapes, seed=5)
    variables["params"]["dec5_upconv"]["kernel"][:] = 0.0

    def grad(model):
        loss = lambda params: jnp.sum(  # noqa: E731
            model.apply({**variables, "params": params}, x, False)[0] ** 2
        )
        return jax.grad(loss)(variables["params"])

    detached, attached = jax.device_get(jax.jit(lambda: [grad(m) for m in models])())
    norm = lambda tree: sum(float(np.abs(leaf).sum()) for leaf in jax.tree.leaves(tree))  # noqa: E731
    encoder = [name for name in detached if name.startswith(("stem", "enc"))]
    assert len(encoder) == 2 + 2 * 5 + sum(MODEL_BLOCKS[21])  # stem, each stage: conv, bn, blocks
    for name in encoder:
        assert norm(detached[name]) == 0.0, name
        assert (norm(attached[name]) > 0) == (not name.startswith("enc5")), name
    assert norm(detached["head_conv"]) > 0 and norm(detached["dec1_upconv"]) > 0


# ----------------------------------------------------------------------------- the whole model


def tiny_model(**kwargs):
    # bn_momentum 0.9 (not the released 0.99) so the running statistics follow the ~100 steps of
    # the overfitting test; the eval-mode forward is then meaningful after it.
    return RangeNet(
        num_classes=NUM_CLASSES, depth=21, base_width=4, height=HEIGHT, width=WIDTH,
        bn_momentum=0.9, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def setup():
    model = tiny_model()
    knn_model = tiny_model(use_knn=True)
    batch, rows, cols = scan_batch()
    variables = random_variables(
        jax.eval_shape(lambda b: model.init(jax.random.key(0), b), batch), seed=2
    )

    @jax.jit
    def evaluate(variables, batch):
        logits, aux = model.apply(variables, batch, train=False)
        knn_logits, _ = knn_model.apply(variables, batch, train=False)
        return logits, aux, knn_logits

    return model, batch, rows, cols, variables, evaluate


def test_registered_and_contract():
    assert MODELS["rangenet"] is RangeNet
    assert RangeNet().input_spec() == point_cloud_spec(4)
    with pytest.raises(ValueError, match="multiple of"):
        param_count(RangeNet(height=8, width=48))
    with pytest.raises(ValueError, match="depth"):
        param_count(RangeNet(depth=34, height=8, width=64))


def test_point_logits_are_pixel_logits_and_aux(setup):
    _, batch, rows, cols, variables, evaluate = setup
    logits, aux, _ = jax.device_get(evaluate(variables, batch))
    assert logits.shape == (2, CAPACITY, NUM_CLASSES)
    assert aux["loss_logits"].shape == (2, HEIGHT, WIDTH, NUM_CLASSES)
    num_occluded = 0
    for sample in range(2):
        real = batch["point_mask"][sample]
        expected = aux["loss_logits"][sample, rows[sample, real], cols[sample, real]]
        np.testing.assert_array_equal(logits[sample, real], expected)
        assert not logits[sample, ~real].any()  # padded points: zero logits
        # The label image and mask: the closest point's label; the pixel won by point 0 is
        # masked out as released (`proj_idx > 0`); the rest is the no-label id 0.
        best = winners(batch, rows, cols, sample)
        num_occluded += int(real.sum()) - len(best)
        label_image = np.zeros((HEIGHT, WIDTH), np.int32)
        mask = np.zeros((HEIGHT, WIDTH), bool)
        for (row, col), index in best.items():
            mask[row, col] = index != 0
            label_image[row, col] = batch["labels"][sample, index] if index != 0 else 0
        np.testing.assert_array_equal(aux["loss_mask"][sample], mask)
        np.testing.assert_array_equal(aux["loss_labels"][sample], label_image)
        # LEAK features at the bottleneck (16 x 2, width stride 32): labels of pixel (i, 32 j).
        assert aux["features"].shape == (2, HEIGHT * 2, 4 * 32)
        np.testing.assert_array_equal(
            aux["feature_labels"][sample], label_image[:, ::32].reshape(-1)
        )
        np.testing.assert_array_equal(aux["feature_mask"][sample], mask[:, ::32].reshape(-1))
    assert num_occluded > 50  # occluded points are scored too, with their occluder's logits
    assert not aux["overflow"].any()


def test_knn_postprocess_matches_released_rule(setup):
    _, batch, rows, cols, variables, evaluate = setup
    _, aux, knn_logits = jax.device_get(evaluate(variables, batch))
    for sample in range(2):
        real = batch["point_mask"][sample]
        point_range = np.linalg.norm(batch["points"][sample, real, :3], axis=-1)
        range_image = np.full((HEIGHT, WIDTH), -1.0, np.float32)
        for (row, col), index in winners(batch, rows, cols, sample).items():
            range_image[row, col] = np.linalg.norm(batch["points"][sample, index, :3])
        # The predicted label image: argmax over the scored ids (0 is never predicted).
        predicted = np.argmax(aux["loss_logits"][sample][..., 1:], -1) + 1
        expected = released_knn(
            range_image, point_range.astype(np.float32), predicted, cols[sample, real],
            rows[sample, real], knn=5, search=5, sigma=1.0, cutoff=1.0, nclasses=NUM_CLASSES,
        )  # fmt: skip
        one_hot = knn_logits[sample, real]
        np.testing.assert_array_equal(one_hot.argmax(-1), expected)
        np.testing.assert_array_equal(one_hot.sum(-1), 1.0)
        assert not knn_logits[sample, ~real].any()


def test_padding_does_not_change_a_scans_logits(setup):
    _, batch, _, _, variables, evaluate = setup
    logits = np.asarray(evaluate(variables, batch)[0])
    # Garbage in the padded entries (close points on occupied pixels) and the scans swapped.
    garbage, _, _ = scan_batch(garbage_padding=True)
    swapped = {key: value[::-1].copy() for key, value in garbage.items()}
    other = np.asarray(evaluate(variables, swapped)[0])[::-1]
    real = batch["point_mask"]
    np.testing.assert_array_equal(other[real], logits[real])
    assert not other[~real].any()


def test_overfits_one_scan_with_the_trainer_step(setup):
    model, batch, _, _, _, evaluate = setup
    shapes = jax.eval_shape(lambda b: model.init(jax.random.key(0), b), batch)
    variables = random_variables(shapes, seed=3, stats=False)
    history, variables = overfit(model, variables, batch, learning_rate=0.1, num_steps=150)
    assert np.isfinite(history).all() and history[-1] < 0.05 * history[0], history
    _, aux, _ = evaluate(variables, batch)
    miou, num_present = pixel_miou(aux["loss_logits"], aux["loss_labels"], aux["loss_mask"])
    # 5 classes present: chance is about 0.2.
    assert num_present == 5 and miou > 0.9, (miou, history)
