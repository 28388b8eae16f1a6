"""Fig. 4 renders: PNG pixels at known point positions, the differences panel, predictions that
survive a permuting `prepare_batch`, and phase 4's `render_validation` on saved checkpoints."""

import math

import jax
import matplotlib.pyplot as plt
import numpy as np
import pytest
from train_fixtures import InMemorySource, in_memory_dataset, tiny_config

from datasets.pascal_voc.labels import LABEL_SPACE as VOC_LABELS
from datasets.semantic_kitti.labels import LABEL_SPACE as KITTI_LABELS
from leakjax.models import MODELS
from leakjax.models.pointmlp import PointMLP
from leakjax.models.randla_net import shuffle_valid_points
from leakjax.pipeline import renders
from leakjax.pipeline.phases import Pipeline
from leakjax.train import input_pipeline, trainer
from leakjax.train import mesh as mesh_lib
from leakjax.train.state import TrainState

BOUNDS = (-50.0, 50.0, -50.0, 50.0)
SIZE = 128  # bird's-eye pixels a side, and range-image columns
RANGE_HEIGHT, FOV_UP, FOV_DOWN = 16, 3.0, -25.0
BEV, RANGE = "bird's-eye", "range view"


def _png(path) -> np.ndarray:
    return np.round(plt.imread(path)[..., :3] * 255).astype(np.int64)


def _pixel(image, layout, row_name, panel, row, col) -> tuple[int, ...]:
    top, left, _, _ = layout.boxes[(row_name, panel)]
    return tuple(image[top + row * layout.scale[row_name], left + col])


def _cell_centred_scan(seed: int, num: int = 60):
    """Points at the centres of distinct range-image cells (row, column known by construction),
    keeping only those whose top-view pixel (x up, y left over BOUNDS) is theirs alone."""
    rng = np.random.default_rng(seed)
    cols = rng.choice(SIZE, num, replace=False)
    rows = rng.integers(0, RANGE_HEIGHT, num)
    distance = rng.uniform(5.0, 45.0, num)
    fov = FOV_UP - FOV_DOWN
    pitch = np.radians(FOV_UP - (rows + 0.5) * fov / RANGE_HEIGHT)
    azimuth = -((cols + 0.5) / SIZE * 2.0 - 1.0) * math.pi  # atan2(y, x) = -yaw
    points = np.stack(
        [
            distance * np.cos(pitch) * np.cos(azimuth),
            distance * np.cos(pitch) * np.sin(azimuth),
            distance * np.sin(pitch),
            rng.random(num),
        ],
        axis=1,
    ).astype(np.float32)
    bev_rows = np.floor((BOUNDS[1] - points[:, 0]) / 100.0 * SIZE).astype(int)
    bev_cols = np.floor((BOUNDS[3] - points[:, 1]) / 100.0 * SIZE).astype(int)
    pixel = bev_rows * SIZE + bev_cols
    unique = np.flatnonzero(np.bincount(pixel, minlength=SIZE * SIZE)[pixel] == 1)
    return points[unique], rows[unique], cols[unique], bev_rows[unique], bev_cols[unique]


def _render(points, panels, path, **options):
    return renders.render_scan(
        points,
        panels,
        KITTI_LABELS,
        path,
        bev_size_px=SIZE,
        bev_bounds=BOUNDS,
        range_height=RANGE_HEIGHT,
        range_fov_deg=(FOV_UP, FOV_DOWN),
        **options,
    )


def test_each_point_shows_its_official_label_colour_in_both_views(tmp_path):
    points, rows, cols, bev_rows, bev_cols = _cell_centred_scan(0)
    assert len(points) > 40
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 20, len(points)).astype(np.int32)
    truth[:2] = (1, 9)  # car and road, whose official colours are spelled out below
    predicted = rng.integers(1, 20, len(points)).astype(np.int32)
    panels = {"ground truth": truth, "baseline": predicted}
    layout = _render(points, panels, tmp_path / "scan.png")
    image = _png(tmp_path / "scan.png")
    assert image.shape[:2] == layout.size
    colours = np.asarray(KITTI_LABELS.colors)
    # semantic-kitti.yaml, BGR: car [245, 150, 100], road [255, 0, 255]
    assert tuple(colours[1]) == (100, 150, 245) and tuple(colours[9]) == (255, 0, 255)
    for name, labels in panels.items():
        for i, label in enumerate(labels):
            expected = renders.UNLABELLED if label == 0 else tuple(colours[label])
            assert _pixel(image, layout, BEV, name, bev_rows[i], bev_cols[i]) == expected
            assert _pixel(image, layout, RANGE, name, rows[i], cols[i]) == expected
        # every other pixel of the panels is background: nothing drawn but the points
        for row_name in (BEV, RANGE):
            top, left, height, width = layout.boxes[(row_name, name)]
            panel = image[top : top + height, left : left + width]
            drawn = np.any(panel != renders.BACKGROUND, axis=-1).sum()
            assert drawn == len(points) * layout.scale[row_name]


def test_top_view_shows_the_highest_point_and_range_view_the_closest(tmp_path):
    # two points in one top-view pixel (heights 0 and 2 m), two on one ray (10 m and 20 m)
    points = np.asarray(
        [[20.1, 0.1, 2.0], [20.1, 0.1, 0.0], [-5.0, -5.0, -1.0], [-10.0, -10.0, -2.0]], np.float32
    )
    for order in ([0, 1, 2, 3], [1, 0, 3, 2]):
        labels = np.asarray([1, 9, 15, 11], np.int32)[order]
        layout = _render(points[order], {"labels": labels}, tmp_path / "scan.png")
        image = _png(tmp_path / "scan.png")
        row, col = int((50 - 20.1) / 100 * SIZE), int((50 - 0.1) / 100 * SIZE)
        assert _pixel(image, layout, BEV, "labels", row, col) == tuple(KITTI_LABELS.colors[1])
        # azimuth -135 deg, pitch asin(-1 / sqrt(51)) for both: the 10 m point (vegetation) shows
        yaw = math.radians(135.0)
        col = int((yaw / math.pi + 1) / 2 * SIZE)
        pitch = math.asin(-1.0 / math.sqrt(51.0))
        row = int((1 - (pitch + math.radians(25.0)) / math.radians(28.0)) * RANGE_HEIGHT)
        assert _pixel(image, layout, RANGE, "labels", row, col) == tuple(KITTI_LABELS.colors[15])


def test_differences_panel_marks_exactly_the_points_where_the_runs_differ(tmp_path):
    points, rows, cols, bev_rows, bev_cols = _cell_centred_scan(2)
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, len(points)).astype(np.int32)  # 0 = unlabelled
    first = rng.integers(1, 4, len(points)).astype(np.int32)
    second = np.where(rng.random(len(points)) < 0.5, first, rng.integers(1, 4, len(points)))
    panels = {"ground truth": truth, "baseline": first, "LEAK": second.astype(np.int32)}
    layout = _render(
        points, panels, tmp_path / "scan.png", differences=("ground truth", "baseline", "LEAK")
    )
    image = _png(tmp_path / "scan.png")
    differ = first != second
    expected = np.select(
        [~differ, truth == 0, second == truth, first == truth],
        [renders.SAME, renders.UNSCORED, renders.SECOND_RIGHT, renders.FIRST_RIGHT],
        renders.BOTH_WRONG,
    )
    assert {renders.SAME, renders.SECOND_RIGHT, renders.FIRST_RIGHT} <= set(expected.tolist())
    for i, code in enumerate(expected):
        colour = renders.DIFFERENCE_COLORS[code]
        assert _pixel(image, layout, BEV, "baseline vs LEAK", bev_rows[i], bev_cols[i]) == colour
        assert _pixel(image, layout, RANGE, "baseline vs LEAK", rows[i], cols[i]) == colour
    top, left, height, width = layout.boxes[(BEV, "baseline vs LEAK")]
    panel = image[top : top + height, left : left + width].reshape(-1, 3)
    marked = [
        np.all(panel == renders.DIFFERENCE_COLORS[c], axis=-1).sum()
        for c in renders.DIFFERENCE_COLORS
        if c != renders.SAME
    ]
    assert sum(marked) == differ.sum()


def test_a_differing_point_is_drawn_over_an_agreeing_one(tmp_path):
    points = np.asarray([[10.1, 0.1, 3.0], [10.1, 0.1, 0.0]], np.float32)  # one top-view pixel
    truth, first, second = [1, 1], [1, 1], [1, 9]  # the lower point differs (baseline right)
    panels = {"gt": np.asarray(truth), "a": np.asarray(first), "b": np.asarray(second)}
    layout = _render(points, panels, tmp_path / "scan.png", differences=("gt", "a", "b"))
    row, col = int((50 - 10.1) / 100 * SIZE), int((50 - 0.1) / 100 * SIZE)
    shown = _pixel(_png(tmp_path / "scan.png"), layout, BEV, "a vs b", row, col)
    assert shown == renders.DIFFERENCE_COLORS[renders.FIRST_RIGHT]


def test_output_is_deterministic(tmp_path):
    points, *_ = _cell_centred_scan(4)
    labels = np.arange(len(points), dtype=np.int32) % 20
    panels = {"gt": labels, "a": labels[::-1].copy(), "b": labels}
    for name in ("one.png", "two.png"):
        _render(points, panels, tmp_path / name, differences=("gt", "a", "b"), title="sample 0")
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "two.png").read_bytes()


def test_image_masks_side_by_side(tmp_path):
    rng = np.random.default_rng(5)
    image = rng.normal(size=(9, 13, 3)).astype(np.float32)
    truth = rng.integers(0, 21, (9, 13)).astype(np.int32)
    truth[0, :4] = 255  # VOC's ignored border
    predicted = rng.integers(0, 21, (9, 13)).astype(np.int32)
    panels = {"ground truth": truth, "run": predicted}
    layout = renders.render_image(image, panels, VOC_LABELS, tmp_path / "image.png")
    png = _png(tmp_path / "image.png")
    for name, labels in panels.items():
        top, left, height, width = layout.boxes[("image", name)]
        assert (height, width) == (9, 13)
        for (row, col), label in np.ndenumerate(labels):
            expected = renders.UNLABELLED if label == 255 else VOC_LABELS.colors[label]
            assert tuple(png[top + row, left + col]) == tuple(expected)
    top, left, _, _ = layout.boxes[("image", "input")]
    scaled = (image - image.min((0, 1))) / (image.max((0, 1)) - image.min((0, 1)))
    np.testing.assert_array_equal(png[top : top + 9, left : left + 13], np.round(255 * scaled))


class ShuffledPointMLP(PointMLP):
    """PointMLP behind RandLA-Net's input shuffle: the evaluation sees permuted points."""

    def prepare_batch(self, batch):
        return shuffle_valid_points(batch)


def _per_scan_predictions(model, variables, data, index, bucket):
    """The model applied to one scan alone, in the source's order (no prepare_batch)."""
    sample = data.validation[index]
    batch = input_pipeline.pad_batch([sample], bucket, data.spec, data.label_space.no_label)
    logits = np.asarray(model.apply(variables, batch, train=False)[0])[0, : len(sample["labels"])]
    return logits[:, 1:].argmax(axis=-1) + 1  # scored ids 1..19


@pytest.fixture(scope="module")
def data():
    return in_memory_dataset(InMemorySource(6, seed=3), InMemorySource(5, seed=4))


def test_predict_points_undoes_a_permuting_prepare_batch(data):
    config = tiny_config()
    model = ShuffledPointMLP(num_classes=20, ignore_index=0, hidden_sizes=(16, 16))
    mesh = mesh_lib.make_data_mesh()
    example = trainer.example_batch(config, data, model)
    variables = model.init(jax.random.key(0), example, train=False)
    state = TrainState(np.int32(0), variables["params"], variables["batch_stats"], {}, ())
    indices = [4, 0, 2, 1, 3]  # two batches of 4, the second padded with empty samples
    results = renders.predict_points(model, state, data, mesh, config, indices)
    assert len(results) == 5
    for index, (points, labels, predicted) in zip(indices, results):
        sample = data.validation[index]
        np.testing.assert_array_equal(points, sample["points"])
        np.testing.assert_array_equal(labels, sample["labels"])
        expected = _per_scan_predictions(model, variables, data, index, 256)
        assert len(np.unique(expected)) > 2  # a permutation would show
        np.testing.assert_array_equal(predicted, expected)


def test_render_validation_writes_one_png_per_sample(data, tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, "shuffled_pointmlp", ShuffledPointMLP)
    mesh = mesh_lib.make_data_mesh()
    runs, variables = {}, {}
    for name, seed in (("baseline", 0), ("leak", 1)):
        config = tiny_config(seed=seed)
        config.model.name = "shuffled_pointmlp"
        config.model.kwargs = {"hidden_sizes": (16, 16)}
        run = trainer.build_run(config, tmp_path / name, mesh, data, None)
        state = run.init_fn()
        run.checkpointer.save(state, {})
        run.checkpointer.close()
        runs[name] = (tmp_path / name, config, None)
        variables[name] = jax.device_get(state.variables())
    pipe = Pipeline(tiny_config(), tmp_path, mesh, data)
    paths = renders.render_validation(pipe, runs, tmp_path / "renders", num_samples=2)
    assert paths == [tmp_path / "renders" / f"render_{k}.png" for k in range(2)]
    model = ShuffledPointMLP(num_classes=20, ignore_index=0, hidden_sizes=(16, 16))
    colours = np.asarray(KITTI_LABELS.colors)
    for k, path in enumerate(paths):
        points, labels = data.validation[k]["points"], data.validation[k]["labels"]
        panels = {"ground truth": labels}
        for name in runs:  # each run's model applied to the scan alone, unshuffled
            panels[name] = _per_scan_predictions(model, variables[name], data, k, 256)
        differ = panels["baseline"] != panels["leak"]
        assert 0 < differ.sum() < len(differ)
        # the same figure from these independent predictions, byte for byte
        expected_path = tmp_path / f"expected_{k}.png"
        layout = renders.render_scan(
            points,
            panels,
            KITTI_LABELS,
            expected_path,
            differences=("ground truth", "baseline", "leak"),
            title=f"in_memory validation sample {k}",
        )
        assert path.read_bytes() == expected_path.read_bytes()
        # and its pixels: points whose top-view pixel is theirs alone show their own colour
        image = _png(path)
        rows, cols, _ = renders.bev_pixels(points, 512)
        inside = (rows >= 0) & (rows < 512) & (cols >= 0) & (cols < 512)
        pixel = np.where(inside, rows * 512 + cols, 512 * 512)  # outside: one shared slot
        alone = np.flatnonzero(inside & (np.bincount(pixel)[pixel] == 1))
        assert len(alone) > len(points) // 2 and inside.sum() >= 0.95 * len(points)
        for name, values in panels.items():
            for i in alone:
                expected = renders.UNLABELLED if values[i] == 0 else tuple(colours[values[i]])
                assert _pixel(image, layout, BEV, name, rows[i], cols[i]) == expected
        top, left, _, _ = layout.boxes[(BEV, "baseline vs leak")]
        shown = image[top + rows[alone], left + cols[alone]]
        marked = np.any(shown != renders.DIFFERENCE_COLORS[renders.SAME], axis=-1)
        np.testing.assert_array_equal(marked, differ[alone])
