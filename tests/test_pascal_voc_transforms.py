"""VOC host-side transforms against numpy restatements and hand-computed values.

Alignment of image and mask is checked on patterns whose pixels say where they came from (the
image encodes its own row and column) or which class they belong to (one colour per class).
"""

import numpy as np
import pytest

from datasets.pascal_voc import transforms as T

_MEAN = np.array([0.485, 0.456, 0.406]) * 255
_STD = np.array([0.229, 0.224, 0.225]) * 255


def _rng(seed):
    return np.random.default_rng(seed)


def test_normalize_uses_imagenet_constants():
    pixel = np.array([[[0, 128, 255]]], np.uint8)
    expected = (np.array([0, 128, 255]) - _MEAN) / _STD
    np.testing.assert_allclose(T.normalize(pixel)[0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(T.normalize(_MEAN[None, None]), 0.0, atol=1e-6)
    np.testing.assert_allclose(T.denormalize(T.normalize(pixel)), pixel, atol=1e-4)


def test_nearest_resize_repeats_or_subsamples_pixels():
    mask = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(T.resize_nearest(mask, 6, 8), mask.repeat(2, 0).repeat(2, 1))
    np.testing.assert_array_equal(T.resize_nearest(mask, 9, 4), mask.repeat(3, 0))
    big = np.arange(48, dtype=np.uint8).reshape(6, 8)
    np.testing.assert_array_equal(T.resize_nearest(big, 3, 4), big[1::2, 1::2])  # centres
    # any size: each output pixel is the input pixel under its centre
    odd = T.resize_nearest(big, 5, 11)
    for i in range(5):
        for j in range(11):
            assert odd[i, j] == big[int((i + 0.5) * 6 / 5), int((j + 0.5) * 8 / 11)]


def test_bilinear_resize_hand_computed_and_exact_on_ramps():
    image = np.array([[0.0, 4.0], [8.0, 12.0]])[..., None]
    # sample points -0.25, 0.25, 0.75, 1.25, clamped to [0, 1]: weights 0, .25, .75, 1
    along_x, along_y = np.array([0, 1, 3, 4]), np.array([0, 2, 6, 8])
    np.testing.assert_allclose(T.resize_bilinear(image, 4, 4)[..., 0], along_y[:, None] + along_x)
    rows, cols = np.mgrid[0:20, 0:30].astype(np.float64)
    ramp = np.stack([2 * rows + 3 * cols, rows - cols + 50], axis=-1)
    np.testing.assert_allclose(T.resize_bilinear(ramp, 20, 30), ramp, atol=1e-4)  # identity
    out = T.resize_bilinear(ramp, 13, 47)
    src_y = (np.arange(13) + 0.5) * 20 / 13 - 0.5
    src_x = (np.arange(47) + 0.5) * 30 / 47 - 0.5
    expected = np.stack(
        [2 * src_y[:, None] + 3 * src_x, src_y[:, None] - src_x + 50 + 0 * src_y[:, None]], -1
    )  # a linear function is reproduced exactly where no clamping happens
    inside = (src_y >= 0)[:, None] & (src_y <= 19)[:, None] & (src_x >= 0) & (src_x <= 29)
    np.testing.assert_allclose(out[inside], expected[inside], atol=1e-3)


def test_crop_or_pad_against_a_loop():
    array = np.arange(5 * 6, dtype=np.int32).reshape(5, 6)
    for offset_y, offset_x, height, width in [(1, 2, 3, 3), (-2, -1, 8, 9), (3, -2, 4, 4)]:
        out = T.crop_or_pad(array, offset_y, offset_x, height, width, fill=-7)
        for i in range(height):
            for j in range(width):
                y, x = i + offset_y, j + offset_x
                inside = 0 <= y < 5 and 0 <= x < 6
                assert out[i, j] == (array[y, x] if inside else -7)


def test_random_offsets_cover_exactly_the_allowed_range():
    rng = _rng(0)
    assert {T.random_offset(10, 7, rng) for _ in range(300)} == {0, 1, 2, 3}
    assert {T.random_offset(5, 8, rng) for _ in range(300)} == {-3, -2, -1, 0}
    assert {T.random_offset(6, 6, rng) for _ in range(20)} == {0}


def _coordinate_image(height, width):
    """Red = row, green = column, blue = 200: every pixel says where it came from."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows, cols, np.full_like(rows, 200)], -1).astype(np.uint8)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_unscaled_augmentation_is_a_shift_of_both_image_and_mask(flip):
    height, width, crop = 40, 25, 32  # crops rows, pads columns
    image = _coordinate_image(height, width)
    mask = _rng(1).choice(np.array([0, 3, 9, 255], np.uint8), size=(height, width))
    config = T.AugmentConfig(crop_size=crop, scale_range=(1.0, 1.0), flip_probability=flip)
    offsets = set()
    for seed in range(12):
        out_image, out_mask = T.augment(image, mask, _rng(seed), config)
        assert out_image.shape == (crop, crop, 3) and out_mask.shape == (crop, crop)
        pixels = np.rint(T.denormalize(out_image)).astype(int)
        real = pixels[..., 2] == 200
        np.testing.assert_allclose(out_image[~real], 0.0)  # padding: mean colour, 0 normalised
        assert (out_mask[~real] == 255).all()
        rows, cols = pixels[..., 0], pixels[..., 1]
        np.testing.assert_array_equal(out_mask[real], mask[rows[real], cols[real]])
        i, j = np.nonzero(real)
        shift_y = np.unique(rows[real] - i)  # one vertical shift for every pixel
        step_x = np.unique(np.diff(cols, axis=1)[real[:, 1:] & real[:, :-1]])
        assert len(shift_y) == 1 and step_x.tolist() == [-1 if flip else 1]
        assert real.sum() == crop * width  # rows cropped, every column kept
        offsets.add((int(shift_y[0]), int(j.min())))
    assert len(offsets) > 3  # the crop and the placement vary with the generator


def test_scaled_augmentation_keeps_classes_aligned_and_never_mixes_ignore():
    class_colours = {0: (20, 20, 20), 4: (230, 40, 40), 12: (40, 230, 40), 255: (40, 40, 230)}
    mask = np.zeros((60, 45), np.uint8)
    mask[10:40, 5:25], mask[30:55, 20:40], mask[5:12, 30:44] = 4, 12, 255
    image = np.zeros((60, 45, 3), np.uint8)
    for value, colour in class_colours.items():
        image[mask == value] = colour
    config = T.AugmentConfig(crop_size=70)
    scales = []
    for seed in range(20):
        out_image, out_mask = T.augment(image, mask, _rng(seed), config)
        assert set(np.unique(out_mask)) <= set(class_colours)  # no new or blended label values
        colours = T.denormalize(out_image)
        # pixels whose 3 x 3 mask neighbourhood is one label show exactly that label's colour
        padded = np.pad(out_mask, 1, constant_values=254)  # crop edge: not known uniform
        uniform = np.ones(out_mask.shape, bool)
        for dy in range(3):
            for dx in range(3):
                uniform &= padded[dy : dy + 70, dx : dx + 70] == out_mask
        for value, colour in class_colours.items():
            region = uniform & (out_mask == value) & (np.abs(out_image).sum(-1) > 0)
            np.testing.assert_allclose(
                colours[region], np.broadcast_to(colour, colours[region].shape), atol=0.05
            )
        real = np.abs(out_image).sum(-1) > 0  # padding is exactly 0; no input colour is the mean
        rows, cols = np.nonzero(real)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert real.sum() == height * width  # the scaled image is one rectangle
        if height < 70 and width < 70:  # whole scaled image visible: its size gives the scale
            assert abs(height / 60 - width / 45) < 0.05
            scales.append(height / 60)
    assert min(scales) < 0.8 and max(scales) > 1.0 and all(0.49 <= s <= 1.17 for s in scales)


def test_augmentation_is_deterministic_for_a_generator():
    image = _rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    mask = _rng(1).integers(0, 21, (30, 40), dtype=np.uint8)
    config = T.AugmentConfig(crop_size=48)
    a, b, c = (T.augment(image, mask, _rng(seed), config) for seed in (5, 5, 6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    sample = T.train_sample(image, mask, _rng(5), config)
    assert sample["labels"].dtype == np.int32 and sample["image"].dtype == np.float32
    np.testing.assert_array_equal(sample["labels"], a[1])


def test_eval_batch_pads_whole_images_with_a_pixel_mask():
    rng = _rng(2)
    sizes = [(3, 5), (4, 2)]
    images = [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in sizes]
    masks = [rng.choice(np.array([0, 7, 255], np.uint8), size=s) for s in sizes]
    samples = [T.eval_sample(i, m) for i, m in zip(images, masks)]
    batch = T.pad_eval_batch(samples, (6, 6), batch_size=3)
    assert batch["image"].shape == (3, 6, 6, 3) and batch["image"].dtype == np.float32
    assert batch["labels"].shape == (3, 6, 6) and batch["labels"].dtype == np.int32
    for b in range(3):
        for i in range(6):
            for j in range(6):
                inside = b < 2 and i < sizes[b][0] and j < sizes[b][1]
                assert batch["pixel_mask"][b, i, j] == inside
                if inside:
                    assert batch["labels"][b, i, j] == masks[b][i, j]  # never resized
                    expected = (images[b][i, j] - _MEAN) / _STD
                    np.testing.assert_allclose(batch["image"][b, i, j], expected, rtol=1e-5)
                else:
                    assert batch["labels"][b, i, j] == 255
                    assert (batch["image"][b, i, j] == 0).all()
    with pytest.raises(ValueError, match=r"2008_000123 of 4 x 2 pixels exceeds the capacity 3 x 8"):
        T.pad_eval_batch(samples, (3, 8), names=["2008_000001", "2008_000123"])
    with pytest.raises(ValueError, match="2 samples for a batch of 1"):
        T.pad_eval_batch(samples, (6, 6), batch_size=1)
