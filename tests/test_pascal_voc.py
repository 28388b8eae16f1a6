"""Pascal VOC reader, split lists, SBD layout and label space on handmade files; the synthetic set.

Every file is written here with PIL directly (not with the package's writers) and compared with
the arrays the test chose; every bad input must raise a ValueError naming the file.
"""

import itertools

import numpy as np
import pytest
from PIL import Image

import datasets.pascal_voc as voc
from datasets.pascal_voc.synthetic import generate

# A palette that is *not* VOC's: the reader must return palette indices, never look at colours.
_ODD_PALETTE = np.random.default_rng(7).integers(0, 256, size=768).tolist()


def _mask_array(height, width, seed):
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([0, 1, 5, 15, 20, 255], np.uint8), size=(height, width))


def _write_palette_png(path, mask, palette=_ODD_PALETTE):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    image.putpalette(palette)
    image.save(path, format="PNG")


def _write_lossless_image(path, pixels):
    """RGB pixels stored losslessly (PNG content; PIL identifies files by content, not name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


def _make_layout(base, ids_by_split, size=(5, 7)):
    """base/VOCdevkit/VOC2012 with one image + palette mask per id; returns {id: (image, mask)}."""
    root = base / "VOCdevkit" / "VOC2012"
    expected = {}
    all_ids = sorted(set(itertools.chain(*ids_by_split.values())))
    for index, image_id in enumerate(all_ids):
        height, width = size[0] + index, size[1]
        pixels = np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
        mask = _mask_array(height, width, seed=100 + index)
        _write_lossless_image(root / "JPEGImages" / f"{image_id}.jpg", pixels)
        _write_palette_png(root / "SegmentationClass" / f"{image_id}.png", mask)
        expected[image_id] = (pixels, mask)
    list_dir = root / "ImageSets" / "Segmentation"
    list_dir.mkdir(parents=True, exist_ok=True)
    for split, ids in ids_by_split.items():
        (list_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root, expected


def test_reader_returns_palette_indices_and_exact_pixels(tmp_path):
    root, expected = _make_layout(tmp_path, {"train": ["2007_000032", "2007_000039"]})
    for image_id, (pixels, mask) in expected.items():
        image, labels = voc.load_example(root, image_id)
        assert image.dtype == np.uint8 and labels.dtype == np.uint8
        np.testing.assert_array_equal(image, pixels)
        np.testing.assert_array_equal(labels, mask)
        assert 255 in labels  # the void value survives as itself
        assert voc.image_size(voc.image_path(root, image_id)) == mask.shape  # header only
    # the directory holding VOCdevkit/ is accepted as root as well
    np.testing.assert_array_equal(
        voc.load_example(tmp_path, "2007_000032")[1], expected["2007_000032"][1]
    )


def test_jpeg_and_greyscale_images(tmp_path):
    root = tmp_path / "VOC2012"
    y, x = np.mgrid[0:32, 0:48]
    smooth = np.stack([4 * y, 5 * x, 100 + 0 * x], axis=-1).astype(np.uint8)
    (root / "JPEGImages").mkdir(parents=True)
    Image.fromarray(smooth).save(root / "JPEGImages" / "a.jpg", format="JPEG", quality=95)
    _write_palette_png(root / "SegmentationClass" / "a.png", np.zeros((32, 48), np.uint8))
    image, _ = voc.load_example(root, "a")
    assert image.shape == (32, 48, 3)
    assert np.abs(image.astype(int) - smooth).max() <= 6  # JPEG is lossy, but close
    grey = (3 * x + 2 * y).astype(np.uint8)
    Image.fromarray(grey).save(root / "JPEGImages" / "a.jpg", format="PNG")
    image, _ = voc.load_example(root, "a")
    np.testing.assert_array_equal(image, np.repeat(grey[..., None], 3, axis=-1))


def test_sbd_masks_are_plain_8bit_pngs_in_their_own_directory(tmp_path):
    root, expected = _make_layout(tmp_path, {"train": ["a", "b"], "val": ["c"]})
    aug_masks = {}
    for index, image_id in enumerate(["a", "b", "d"]):
        if image_id == "d":
            _write_lossless_image(root / "JPEGImages" / "d.jpg", np.zeros((4, 4, 3), np.uint8))
            shape = (4, 4)
        else:
            shape = expected[image_id][1].shape
        aug_masks[image_id] = _mask_array(*shape, seed=200 + index)
        (root / "SegmentationClassAug").mkdir(exist_ok=True)
        Image.fromarray(aug_masks[image_id]).save(root / "SegmentationClassAug" / f"{image_id}.png")
    list_path = root / "ImageSets" / "Segmentation" / "train_aug.txt"
    # DrSleep's two-path lines and plain ids are both accepted
    list_path.write_text("/JPEGImages/b.jpg /SegmentationClassAug/b.png\na\n\nd\n")
    assert voc.split_ids(root, "train_aug") == ["b", "a", "d"]
    for image_id, mask in aug_masks.items():
        _, labels = voc.load_example(root, image_id, voc.SEGMENTATION_CLASS_AUG)
        np.testing.assert_array_equal(labels, mask)
    # the official masks stay what they were
    np.testing.assert_array_equal(voc.load_example(root, "a")[1], expected["a"][1])
    with pytest.raises(ValueError, match="d.png: mask file does not exist"):
        voc.load_example(root, "d")


def test_split_lists(tmp_path):
    ids = {"train": ["x2", "x0"], "val": ["x1"], "trainval": ["x0", "x1", "x2"]}
    root, _ = _make_layout(tmp_path, ids)
    for split, listed in ids.items():
        assert voc.split_ids(root, split) == listed  # file order kept
    assert voc.split_list_path(root, "val") == root / "ImageSets" / "Segmentation" / "val.txt"
    with pytest.raises(ValueError, match="is not one of"):
        voc.split_ids(root, "test")
    with pytest.raises(ValueError, match="train_aug.txt: split list does not exist"):
        voc.split_ids(root, "train_aug")
    with pytest.raises(ValueError, match="not a VOC2012 directory"):
        voc.split_ids(tmp_path / "nowhere", "train")


@pytest.mark.parametrize(
    "text, message",
    [
        ("x0\nx9\n", r"train.txt: 1 of 2 ids have no image file \(.*x9.jpg\)"),
        ("x0\nx1\nx0\n", r"train.txt:3: id x0 repeated \(first on line 1\)"),
        ("x0\nx1 x2\n", r"train.txt:2: expected an image id"),
        ("x0\n../x1\n", r"train.txt:2: '../x1' is not an image id"),
        ("\n\n", r"train.txt: split list has no ids"),
    ],
)
def test_bad_split_lists(tmp_path, text, message):
    root, _ = _make_layout(tmp_path, {"train": ["x0", "x1"]})
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text(text)
    with pytest.raises(ValueError, match=message):
        voc.split_ids(root, "train")


def test_split_with_a_missing_mask_or_mask_directory(tmp_path):
    root, _ = _make_layout(tmp_path, {"train": ["x0", "x1"], "train_aug": ["x0"]})
    (root / "SegmentationClass" / "x1.png").unlink()
    with pytest.raises(ValueError, match=r"train.txt: 1 of 2 ids have no mask file \(.*x1.png\)"):
        voc.split_ids(root, "train")
    with pytest.raises(ValueError, match="SegmentationClassAug: missing mask directory"):
        voc.split_ids(root, "train_aug")


def _bad_input_cases():
    """(name, how to break example "x0", message pattern); "x0" is 5 x 7 pixels."""

    def missing_mask(root):
        (root / "SegmentationClass" / "x0.png").unlink()

    def missing_image(root):
        (root / "JPEGImages" / "x0.jpg").unlink()

    def size_mismatch(root):
        _write_palette_png(root / "SegmentationClass" / "x0.png", np.zeros((5, 6), np.uint8))

    def value_out_of_range(root):
        mask = np.zeros((5, 7), np.uint8)
        mask[0, :3] = [21, 100, 254]
        _write_palette_png(root / "SegmentationClass" / "x0.png", mask)

    def colour_mask(root):
        Image.new("RGB", (7, 5)).save(root / "SegmentationClass" / "x0.png")

    def garbage_image(root):
        (root / "JPEGImages" / "x0.jpg").write_bytes(b"not an image at all")

    def truncated_image(root):
        path = root / "JPEGImages" / "x0.jpg"
        pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format="JPEG")
        path.write_bytes(path.read_bytes()[:-40])

    def garbage_mask(root):
        (root / "SegmentationClass" / "x0.png").write_bytes(b"\x89PNG broken")

    return [
        (missing_mask, r"SegmentationClass/x0.png: mask file does not exist"),
        (missing_image, r"JPEGImages/x0.jpg: image file does not exist"),
        (size_mismatch, r"x0.png: mask size \(5, 6\) .* differs from image size \(5, 7\)"),
        (value_out_of_range, r"x0.png: 3 pixels with values outside 0..20 and 255: \[21, 100, "),
        (colour_mask, r"x0.png: mask has mode 'RGB'"),
        (garbage_image, r"x0.jpg: unreadable image"),
        (truncated_image, r"x0.jpg: unreadable image"),
        (garbage_mask, r"x0.png: unreadable mask"),
    ]


@pytest.mark.parametrize(
    "breaker, message", _bad_input_cases(), ids=lambda c: getattr(c, "__name__", "")
)
def test_every_bad_input_names_the_file(tmp_path, breaker, message):
    root, _ = _make_layout(tmp_path, {"train": ["x0"]})
    voc.load_example(root, "x0")  # intact, it loads
    breaker(root)
    with pytest.raises(ValueError, match=message):
        voc.load_example(root, "x0")


def test_label_space_and_palette():
    # the devkit's VOClabelcolormap.m, restated as a loop over the bits of each id
    def devkit_colour(index):
        red = green = blue = 0
        for level in range(8):
            red |= ((index >> 0) & 1) << (7 - level)
            green |= ((index >> 1) & 1) << (7 - level)
            blue |= ((index >> 2) & 1) << (7 - level)
            index >>= 3
        return red, green, blue

    np.testing.assert_array_equal(voc.PALETTE, [devkit_colour(i) for i in range(256)])
    published = {
        0: (0, 0, 0),
        1: (128, 0, 0),
        8: (64, 0, 0),
        15: (192, 128, 128),
        20: (0, 64, 128),
        255: (224, 224, 192),
    }
    for index, colour in published.items():
        assert tuple(voc.PALETTE[index]) == colour
    space = voc.LABEL_SPACE
    assert space.num_classes == 21 and space.ignore_index == 255
    assert space.class_names[0] == "background" and space.class_names[15] == "person"
    assert space.class_names[20] == "tvmonitor" and space.class_names[11] == "diningtable"
    assert space.num_micro == 21  # background is scored; 255 lies outside 0..20
    np.testing.assert_array_equal(space.scored_ids, np.arange(21))
    assert space.colors[1] == (128, 0, 0)
    members = sorted(itertools.chain(*space.categories.values()))
    assert members == sorted(space.class_names)  # every class in exactly one category
    assert set(space.categories["vehicle"]) == {
        "aeroplane",
        "bicycle",
        "boat",
        "bus",
        "car",
        "motorbike",
        "train",
    }
    mask = np.array([[0, 255], [15, 20]], np.uint8)
    np.testing.assert_array_equal(voc.colorize(mask)[1, 0], (192, 128, 128))


def test_synthetic_set_is_deterministic_and_voc_like(tmp_path):
    root = generate(tmp_path / "a", seed=3, num_train=6, num_val=3, num_aug=2)
    again = generate(tmp_path / "b", seed=3, num_train=6, num_val=3, num_aug=2)
    other = generate(tmp_path / "c", seed=4, num_train=6, num_val=3, num_aug=2)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((root / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert any(
        (root / f).read_bytes() != (other / f).read_bytes() for f in files if f.suffix == ".jpg"
    )
    train, val = voc.split_ids(root, "train"), voc.split_ids(root, "val")
    assert len(train) == 6 and len(val) == 3 and not set(train) & set(val)
    assert voc.split_ids(root, "trainval") == train + val
    aug = voc.split_ids(root, "train_aug")
    assert len(aug) == 8 and set(train) < set(aug) and not set(val) & set(aug)
    classes = set()
    for image_id in train + val:
        image, mask = voc.load_example(root, image_id)
        assert 64 <= mask.shape[0] <= 96 and 64 <= mask.shape[1] <= 96
        assert image.shape == (*mask.shape, 3)
        assert (mask == 255).any() and (mask == 0).any()
        # the void band separates classes: no two different ids are 4-neighbours
        for a, b in ((mask[1:], mask[:-1]), (mask[:, 1:], mask[:, :-1])):
            touching = (a != b) & (a != 255) & (b != 255)
            assert not touching.any(), image_id
        classes |= set(np.unique(mask)) - {0, 255}
    assert len(classes) >= 5
    # official masks are palette PNGs coloured with the VOC palette
    with Image.open(voc.mask_path(root, train[0])) as png:
        assert png.mode == "P"
        colours = np.asarray(png.convert("RGB"))
    np.testing.assert_array_equal(colours, voc.colorize(voc.load_example(root, train[0])[1]))
    for image_id in train:  # SBD masks equal the official ones for VOC train images
        np.testing.assert_array_equal(
            voc.load_example(root, image_id, voc.SEGMENTATION_CLASS_AUG)[1],
            voc.load_example(root, image_id)[1],
        )
