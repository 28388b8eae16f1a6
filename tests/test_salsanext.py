"""SalsaNext (leakjax/models/salsanext.py) against references written here: the parameter count of
the released layer list, pixel shuffle and the ResContextBlock / ResBlock / UpBlock against
PyTorch's definitions in numpy, channel dropout, per-point logits against a numpy gather at pixels
known by construction, padding invariance, and overfitting one tiny scan with the trainer's step.
Shared references (numpy conv, scans with known pixels, the trainer loop) are in test_rangenet.py.
"""

import jax
import numpy as np
import pytest
from test_rangenet import (
    CAPACITY,
    HEIGHT,
    WIDTH,
    leaky,
    numpy_bn,
    numpy_conv,
    overfit,
    param_count,
    pixel_miou,
    random_variables,
    scan_batch,
    torch_weight,
    winners,
)

from leakjax.models import MODELS
from leakjax.models.range_common import ChannelDropout
from leakjax.models.salsanext import ResBlock, ResContextBlock, SalsaNext, UpBlock, pixel_shuffle
from leakjax.train.batch import point_cloud_spec

NUM_CLASSES = 20
SLOPE = 0.01  # PyTorch's default LeakyReLU slope, as released


def released_salsanext_count(num_classes=20, input_depth=5):
    """Parameters of the released SalsaNext from its layer list (every conv with a bias,
    BatchNorm weight + bias)."""
    conv = lambda cin, cout, area: cin * cout * area + cout  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731

    def context(cin, cout):
        return conv(cin, cout, 1) + 2 * (conv(cout, cout, 9) + bn(cout))

    def triple(cin, cout):  # 3x3, 3x3 dilation 2, 2x2 dilation 2, then the 1x1 merge
        first = conv(cin, cout, 9) + conv(cout, cout, 9) + conv(cout, cout, 4)
        return first + conv(3 * cout, cout, 1) + 4 * bn(cout)

    def res_block(cin, cout):
        return conv(cin, cout, 1) + triple(cin, cout)

    def up_block(cin, cout):  # its first conv reads the shuffled input and the skip
        return triple(cin // 4 + 2 * cout, cout)

    total = context(input_depth, 32) + context(32, 32) + context(32, 32)
    for cin, cout in [(32, 64), (64, 128), (128, 256), (256, 256), (256, 256)]:
        total += res_block(cin, cout)
    for cin, cout in [(256, 128), (128, 128), (128, 64), (64, 32)]:
        total += up_block(cin, cout)
    return total + conv(32, num_classes, 1)


def test_parameter_count_matches_released_layer_list():
    model = SalsaNext(num_classes=20, height=16, width=64)
    assert param_count(model) == released_salsanext_count()


def test_registered_and_contract():
    assert MODELS["salsanext"] is SalsaNext
    assert SalsaNext().input_spec() == point_cloud_spec(4)
    with pytest.raises(ValueError, match="multiple of"):
        param_count(SalsaNext(height=24, width=64))
    with pytest.raises(ValueError, match="even"):
        param_count(SalsaNext(height=16, width=64, base_width=5))


# ----------------------------------------------------------------------------- blocks


def numpy_pixel_shuffle(x, factor=2):
    """PyTorch's PixelShuffle on NCHW by its definition."""
    n, channels, height, width = x.shape
    out = np.zeros((n, channels // factor**2, height * factor, width * factor), x.dtype)
    for c in range(out.shape[1]):
        for i in range(factor):
            for j in range(factor):
                out[:, c, i::factor, j::factor] = x[:, c * factor**2 + i * factor + j]
    return out


def numpy_avg_pool(x):
    """AvgPool2d(3, stride 2, padding 1), padded zeros counted (PyTorch's default)."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out_h, out_w = (x.shape[2] - 1) // 2 + 1, (x.shape[3] - 1) // 2 + 1
    out = np.zeros(x.shape[:2] + (out_h, out_w))
    for i in range(3):
        for j in range(3):
            out += padded[:, :, i : i + 2 * out_h - 1 : 2, j : j + 2 * out_w - 1 : 2]
    return out / 9.0


def numpy_triple(x, params, stats):
    """The released 3x3 / 3x3 dilation 2 / 2x2 dilation 2 chain (each conv, LeakyReLU, BN),
    concatenated."""
    outs, y = [], x
    for conv, bn, padding, dilation in [("conv_a", "bn1", 1, 1), ("conv_b", "bn2", 2, 2),
                                        ("conv_c", "bn3", 1, 2)]:  # fmt: skip
        p = params[conv]
        y = numpy_conv(y, torch_weight(p["kernel"]), p["bias"], padding=(padding,) * 2,
                       dilation=(dilation,) * 2)  # fmt: skip
        y = numpy_bn(leaky(y, SLOPE), stats[bn], params[bn])
        outs.append(y)
    return np.concatenate(outs, axis=1)


def conv1x1(x, params):
    return numpy_conv(x, torch_weight(params["kernel"]), params["bias"])


def test_pixel_shuffle_and_blocks_match_numpy_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 8, 6, 10)).astype(np.float32)  # NCHW: 8 channels, 6 x 10
    skip = rng.normal(size=(2, 6, 12, 20)).astype(np.float32)
    nhwc = lambda a: a.transpose(0, 2, 3, 1)  # noqa: E731
    nchw = lambda a: np.asarray(a).transpose(0, 3, 1, 2)  # noqa: E731

    context, res, up = ResContextBlock(5), ResBlock(7), UpBlock(3)
    key = jax.random.key(0)
    variables = [
        random_variables(jax.eval_shape(init), seed)
        for seed, init in enumerate([
            lambda: context.init(key, nhwc(x), False),
            lambda: res.init(key, nhwc(x), False),
            lambda: up.init(key, nhwc(x), nhwc(skip), False),
        ])
    ]  # fmt: skip
    shuffled, context_out, (pooled, res_skip), up_out = jax.jit(
        lambda v: (pixel_shuffle(nhwc(x)), context.apply(v[0], nhwc(x), False),
                   res.apply(v[1], nhwc(x), False), up.apply(v[2], nhwc(x), nhwc(skip), False))
    )(variables)  # fmt: skip

    np.testing.assert_array_equal(nchw(shuffled), numpy_pixel_shuffle(x))

    params, stats = variables[0]["params"], variables[0]["batch_stats"]
    shortcut = leaky(conv1x1(x, params["conv1"]), SLOPE)
    y = numpy_conv(shortcut, torch_weight(params["conv2"]["kernel"]), params["conv2"]["bias"],
                   padding=(1, 1))  # fmt: skip
    y = numpy_bn(leaky(y, SLOPE), stats["bn1"], params["bn1"])
    y = numpy_conv(y, torch_weight(params["conv3"]["kernel"]), params["conv3"]["bias"],
                   padding=(2, 2), dilation=(2, 2))  # fmt: skip
    y = numpy_bn(leaky(y, SLOPE), stats["bn2"], params["bn2"])
    np.testing.assert_allclose(nchw(context_out), shortcut + y, rtol=1e-4, atol=1e-4)

    params, stats = variables[1]["params"], variables[1]["batch_stats"]
    shortcut = leaky(conv1x1(x, params["conv_shortcut"]), SLOPE)
    merged = leaky(conv1x1(numpy_triple(x, params, stats), params["conv_merge"]), SLOPE)
    expected_skip = shortcut + numpy_bn(merged, stats["bn4"], params["bn4"])
    np.testing.assert_allclose(nchw(res_skip), expected_skip, rtol=1e-4, atol=1e-4)
    assert pooled.shape == (2, 3, 5, 7)
    np.testing.assert_allclose(nchw(pooled), numpy_avg_pool(expected_skip), rtol=1e-4, atol=1e-4)

    params, stats = variables[2]["params"], variables[2]["batch_stats"]
    joined = np.concatenate([numpy_pixel_shuffle(x), skip], axis=1)
    merged = leaky(conv1x1(numpy_triple(joined, params, stats), params["conv_merge"]), SLOPE)
    expected = numpy_bn(merged, stats["bn4"], params["bn4"])
    np.testing.assert_allclose(nchw(up_out), expected, rtol=1e-4, atol=1e-4)


def test_channel_dropout_drops_whole_channels():
    ones = np.ones((4, 5, 6, 64), np.float32)
    dropout = ChannelDropout(0.5)
    out = np.asarray(
        dropout.apply({}, ones, deterministic=False, rngs={"dropout": jax.random.key(3)})
    )
    per_channel = out.reshape(4, 30, 64)
    assert (per_channel == per_channel[:, :1]).all()  # constant over the image
    assert set(np.unique(out)) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - 0.5)
    assert 0.3 < (per_channel[:, 0] == 0).mean() < 0.7
    np.testing.assert_array_equal(dropout.apply({}, ones, deterministic=True), ones)


# ----------------------------------------------------------------------------- the whole model


@pytest.fixture(scope="module")
def setup():
    model = SalsaNext(num_classes=NUM_CLASSES, base_width=4, height=HEIGHT, width=WIDTH)
    batch, rows, cols = scan_batch(seed=5)
    variables = random_variables(
        jax.eval_shape(lambda b: model.init(jax.random.key(0), b), batch), seed=6
    )
    evaluate = jax.jit(lambda variables, batch: model.apply(variables, batch, train=False))
    return model, batch, rows, cols, variables, evaluate


def test_point_logits_are_pixel_logits_and_aux(setup):
    _, batch, rows, cols, variables, evaluate = setup
    logits, aux = jax.device_get(evaluate(variables, batch))
    for sample in range(2):
        real = batch["point_mask"][sample]
        expected = aux["loss_logits"][sample, rows[sample, real], cols[sample, real]]
        np.testing.assert_array_equal(logits[sample, real], expected)
        assert not logits[sample, ~real].any()
        label_image = np.zeros((HEIGHT, WIDTH), np.int32)
        mask = np.zeros((HEIGHT, WIDTH), bool)
        for (row, col), index in winners(batch, rows, cols, sample).items():
            mask[row, col] = index != 0  # the released mask quirk: point 0's pixel is out
            label_image[row, col] = batch["labels"][sample, index] if index != 0 else 0
        np.testing.assert_array_equal(aux["loss_mask"][sample], mask)
        np.testing.assert_array_equal(aux["loss_labels"][sample], label_image)
        # Bottleneck: 1/16 of the image on both axes, 8 w channels; labels of pixel (16 i, 16 j).
        assert aux["features"].shape == (2, (HEIGHT // 16) * (WIDTH // 16), 32)
        np.testing.assert_array_equal(
            aux["feature_labels"][sample], label_image[::16, ::16].reshape(-1)
        )
        np.testing.assert_array_equal(aux["feature_mask"][sample], mask[::16, ::16].reshape(-1))
    assert not aux["overflow"].any()


def test_padding_does_not_change_a_scans_logits(setup):
    _, batch, _, _, variables, evaluate = setup
    logits = np.asarray(evaluate(variables, batch)[0])
    garbage, _, _ = scan_batch(seed=5, garbage_padding=True)
    swapped = {key: value[::-1].copy() for key, value in garbage.items()}
    other = np.asarray(evaluate(variables, swapped)[0])[::-1]
    real = batch["point_mask"]
    assert garbage["points"][~real].any() and batch["points"].shape[1] == CAPACITY
    np.testing.assert_array_equal(other[real], logits[real])
    assert not other[~real].any()


def test_overfits_one_scan_with_the_trainer_step(setup):
    model, batch, _, _, _, evaluate = setup
    shapes = jax.eval_shape(lambda b: model.init(jax.random.key(0), b), batch)
    variables = random_variables(shapes, seed=7, stats=False)
    history, variables = overfit(model, variables, batch, learning_rate=0.1, num_steps=150)
    assert np.isfinite(history).all() and history[-1] < 0.05 * history[0], history
    _, aux = evaluate(variables, batch)
    miou, num_present = pixel_miou(aux["loss_logits"], aux["loss_labels"], aux["loss_mask"])
    # 5 classes present: chance is about 0.2.
    assert num_present == 5 and miou > 0.9, (miou, history)
