"""Qualitative renders of validation samples (the paper's Fig. 4), written by phase 4.

  predict_points     per-entry predictions of a few samples of a split, in the source's order
  render_scan        a point cloud: a row per view (bird's-eye top view, range view), a column per
                     panel (ground truth, each run, where two runs differ), official label colours
  render_image       an image dataset: the input image and its label maps side by side
  render_validation  phase 4's entry: loads every run, predicts, writes render_<k>.png

The panels are rasterised here in numpy (one pixel per cell, no anti-aliasing) and placed on the
figure at exact pixel offsets (`Figure.figimage`); matplotlib only writes the text. So a PNG pixel
holds exactly one point's colour, the returned `Layout` says where each panel is, and the output is
deterministic. Which point shows in a pixel: in a differences panel, points where the two runs
differ come first; then the highest point (bird's-eye) or the closest one (range view); then the
lowest index.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.transforms import IdentityTransform  # noqa: E402

from leakjax.label_space import LabelSpace  # noqa: E402
from leakjax.range_image import spherical_projection  # noqa: E402
from leakjax.train import entries, input_pipeline, trainer  # noqa: E402
from leakjax.train.mesh import (  # noqa: E402
    check_batch_size,
    global_batch,
)

BACKGROUND = (255, 255, 255)
UNLABELLED = (190, 190, 190)  # label ids that are not scored (ignored, no_label) or `ignore`
FRAME = (120, 120, 120)
# Codes of `difference_codes` and their colours in a differences panel.
SAME, SECOND_RIGHT, FIRST_RIGHT, BOTH_WRONG, UNSCORED = range(5)
DIFFERENCE_COLORS = {
    SAME: (225, 225, 225),
    SECOND_RIGHT: (0, 170, 0),
    FIRST_RIGHT: (220, 0, 0),
    BOTH_WRONG: (255, 150, 0),
    UNSCORED: (90, 90, 90),
}
_DPI = 100
_MARGIN, _TITLE, _ROW_LABEL, _GAP = 10, 24, 22, 8
_SWATCH, _LEGEND_ROW, _LEGEND_COLUMN = 12, 18, 170


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where `render_scan` / `render_image` put each panel in the PNG (pixels, origin top-left).

    boxes: {(row name, panel name): (top, left, height, width)}; scale: {row name: s}, each raster
    row is repeated s times vertically (range images are flat); size: (height, width) of the PNG.
    """

    boxes: dict[tuple[str, str], tuple[int, int, int, int]]
    scale: dict[str, int]
    size: tuple[int, int]


def label_colors(label_space: LabelSpace) -> np.ndarray:
    """uint8 [C, 3]: the label space's colours, else matplotlib's tab20 cycle."""
    if label_space.colors is not None:
        return np.asarray(label_space.colors, np.uint8)
    cycle = plt.get_cmap("tab20").colors
    return np.asarray(
        [[round(255 * c) for c in cycle[i % len(cycle)]] for i in range(label_space.num_classes)],
        np.uint8,
    )


def _shown(labels: np.ndarray, label_space: LabelSpace, ignore: int | None) -> np.ndarray:
    """bool [N]: ids drawn in their class colour (scored and not `ignore`)."""
    shown = label_space.is_scored(labels)
    return shown if ignore is None else shown & (labels != ignore)


def colorize(labels: np.ndarray, label_space: LabelSpace, ignore: int | None = None) -> np.ndarray:
    """uint8 [..., 3] colours of label ids [...]; unscored ids and `ignore` get UNLABELLED."""
    labels = np.asarray(labels)
    shown = _shown(labels, label_space, ignore)
    colours = label_colors(label_space)[np.where(shown, labels, 0)]
    colours[~shown] = UNLABELLED
    return colours


def difference_codes(
    truth: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    label_space: LabelSpace,
    ignore: int | None = None,
) -> np.ndarray:
    """int8 [N]: SAME where the predictions agree, else SECOND_RIGHT / FIRST_RIGHT / BOTH_WRONG
    against `truth`, or UNSCORED where the truth is not a scored label (or is `ignore`)."""
    truth, first, second = map(np.asarray, (truth, first, second))
    codes = np.full(truth.shape, BOTH_WRONG, np.int8)
    codes[second == truth] = SECOND_RIGHT
    codes[first == truth] = FIRST_RIGHT
    codes[~_shown(truth, label_space, ignore)] = UNSCORED
    codes[first == second] = SAME
    return codes


def rasterize(
    rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], colours: np.ndarray, keys
) -> np.ndarray:
    """uint8 [H, W, 3]: each pixel (rows, cols int [N]) takes the colour [N, 3] of its point with
    the smallest `keys` (sequence of [N] arrays, most significant first), then the lowest index;
    points outside the image and empty pixels stay BACKGROUND."""
    image = np.empty((*shape, 3), np.uint8)
    image[...] = BACKGROUND
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    index = np.flatnonzero(inside)
    pixel = rows[index] * shape[1] + cols[index]
    # np.lexsort: the last key is the primary one.
    order = np.lexsort([index, *[np.asarray(k)[index] for k in reversed(keys)], pixel])
    first = np.ones(len(order), bool)
    first[1:] = pixel[order][1:] != pixel[order][:-1]
    winners = index[order[first]]
    image.reshape(-1, 3)[pixel[order[first]]] = colours[winners]
    return image


def bev_pixels(
    xyz: np.ndarray, size_px: int, bounds: tuple[float, float, float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """Top-view pixel (rows, cols int [N]) of points xyz [N, >=2] (metres) in a size_px square
    over bounds (x_min, x_max, y_min, y_max); points outside get a pixel outside the image (not
    drawn). Default bounds: the square around the 1st-99th percentile box of x and y (a few far
    returns do not shrink the scene). x points up, y left (the sensor frame seen from above);
    returns the bounds used too."""
    xy = np.asarray(xyz, np.float64)[:, :2]
    if bounds is None:
        finite = xy[np.isfinite(xy).all(axis=1)]
        low, high = np.zeros(2), np.ones(2)
        if len(finite):
            low, high = np.percentile(finite, 1, axis=0), np.percentile(finite, 99, axis=0)
        centre, half = (low + high) / 2, max(float((high - low).max()) / 2, 1e-3)
        bounds = (centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half)
    x_min, x_max, y_min, y_max = bounds
    with np.errstate(invalid="ignore"):
        rows = np.floor((x_max - xy[:, 0]) / (x_max - x_min) * size_px)
        cols = np.floor((y_max - xy[:, 1]) / (y_max - y_min) * size_px)
    # x == x_min (y == y_min) lands in the last row (column), not outside
    rows = np.where(xy[:, 0] == x_min, size_px - 1, rows)
    cols = np.where(xy[:, 1] == y_min, size_px - 1, cols)
    bad = ~np.isfinite(rows) | ~np.isfinite(cols)
    return (
        np.where(bad, -1, rows).astype(np.int64),
        np.where(bad, -1, cols).astype(np.int64),
        bounds,
    )


def range_pixels(
    points: np.ndarray, height: int, width: int, fov_up_deg: float, fov_down_deg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Range-image pixel (rows, cols int [N]; -1 for non-finite points) and range [N] of points
    [N, >=3] by the released spherical projection (`leakjax.range_image`)."""
    points = np.asarray(points, np.float32)
    xyzr = np.zeros((len(points), 4), np.float32)
    xyzr[:, :3] = points[:, :3]
    finite = np.isfinite(xyzr).all(axis=1)
    xyzr[~finite] = 0.0
    projection = spherical_projection(
        jnp.asarray(xyzr), height, width, fov_up_deg, fov_down_deg, point_mask=jnp.asarray(finite)
    )
    rows, cols, ranges = jax.device_get((projection.py, projection.px, projection.point_range))
    return np.asarray(rows, np.int64), np.asarray(cols, np.int64), np.asarray(ranges)


def render_scan(
    points: np.ndarray,
    panels: Mapping[str, np.ndarray],
    label_space: LabelSpace,
    path: str | pathlib.Path,
    ignore: int | None = None,
    differences: tuple[str, str, str] | None = None,
    title: str = "",
    bev_size_px: int = 512,
    bev_bounds: tuple[float, float, float, float] | None = None,
    range_height: int = 64,
    range_fov_deg: tuple[float, float] = (3.0, -25.0),
    range_scale: int = 3,
) -> Layout:
    """One PNG of a point cloud: rows "bird's-eye" and "range view", a column per panel.

    Args:
      points: float [N, >=3] x, y, z in metres (sensor frame); non-finite points are not drawn.
      panels: {name: label ids int [N]}, e.g. ground truth and each run's predictions, coloured by
        the label space's colours; unscored ids (and `ignore`) in UNLABELLED grey.
      label_space: names and colours (tab20 when it has none).
      path: the PNG to write.
      ignore: an extra label id drawn as unlabelled.
      differences: (truth, first, second) panel names: adds a last column "<first> vs <second>"
        coloured by `difference_codes` (DIFFERENCE_COLORS), the differing points on top.
      title: text above the panels.
      bev_size_px, bev_bounds: the top view's size and extent (`bev_pixels`).
      range_height, range_fov_deg: the range image's rows and vertical field of view (up, down);
        its width is bev_size_px (a 360 degree panorama), each row drawn range_scale times.

    Returns:
      the Layout of the PNG.
    """
    points = np.asarray(points)
    num_points = len(points)
    for name, labels in panels.items():
        if np.shape(labels) != (num_points,):
            raise ValueError(
                f"panel {name!r}: labels of shape {np.shape(labels)}, need [{num_points}]"
            )
    colours = {name: colorize(labels, label_space, ignore) for name, labels in panels.items()}
    first_keys = {name: np.zeros(num_points, np.int8) for name in panels}
    legend = _class_legend(panels.values(), label_space, ignore)
    if differences is not None:
        truth, first, second = differences
        codes = difference_codes(panels[truth], panels[first], panels[second], label_space, ignore)
        name = f"{first} vs {second}"
        table = np.asarray([DIFFERENCE_COLORS[c] for c in sorted(DIFFERENCE_COLORS)], np.uint8)
        colours[name] = table[codes]
        first_keys[name] = (codes == SAME).astype(np.int8)  # differing points drawn on top
        legend += _difference_legend(codes, first, second)

    finite = np.isfinite(points[:, :3]).all(axis=1)
    rows, cols, _ = bev_pixels(points, bev_size_px, bev_bounds)
    height = -np.where(finite, points[:, 2], 0.0)  # the highest point shows from above
    bev = {
        name: rasterize(rows, cols, (bev_size_px, bev_size_px), colour, [first_keys[name], height])
        for name, colour in colours.items()
    }
    up, down = range_fov_deg
    rows, cols, ranges = range_pixels(points, range_height, bev_size_px, up, down)
    view = {
        name: rasterize(rows, cols, (range_height, bev_size_px), colour, [first_keys[name], ranges])
        for name, colour in colours.items()
    }
    grid = {"bird's-eye": bev, "range view": view}
    return _compose(grid, {"bird's-eye": 1, "range view": range_scale}, legend, title, path)


def render_image(
    image: np.ndarray,
    panels: Mapping[str, np.ndarray],
    label_space: LabelSpace,
    path: str | pathlib.Path,
    ignore: int | None = None,
    differences: tuple[str, str, str] | None = None,
    title: str = "",
) -> Layout:
    """One PNG of an image sample: the input (min-max scaled per channel) and each label map
    [H, W] coloured side by side (row "image"); `differences` as in `render_scan`."""
    image = np.asarray(image, np.float64)
    shape = image.shape[:2]
    for name, labels in panels.items():
        if np.shape(labels) != shape:
            raise ValueError(f"panel {name!r}: labels of shape {np.shape(labels)}, need {shape}")
    low = np.nanmin(image.reshape(-1, image.shape[-1]), axis=0)
    high = np.nanmax(image.reshape(-1, image.shape[-1]), axis=0)
    scaled = np.nan_to_num((image - low) / np.where(high > low, high - low, 1.0))
    rgb = np.round(255 * scaled[..., :3]).astype(np.uint8)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    row = {"input": rgb}
    row.update({name: colorize(labels, label_space, ignore) for name, labels in panels.items()})
    legend = _class_legend(panels.values(), label_space, ignore)
    if differences is not None:
        truth, first, second = differences
        codes = difference_codes(panels[truth], panels[first], panels[second], label_space, ignore)
        table = np.asarray([DIFFERENCE_COLORS[c] for c in sorted(DIFFERENCE_COLORS)], np.uint8)
        row[f"{first} vs {second}"] = table[codes]
        legend += _difference_legend(codes.reshape(-1), first, second)
    return _compose({"image": row}, {"image": 1}, legend, title, path)


def _class_legend(panels, label_space: LabelSpace, ignore: int | None) -> list:
    """(colour, text) of every class shown in a panel, by id; "unlabelled" if any is grey."""
    labels = np.concatenate([np.asarray(p).reshape(-1) for p in panels])
    shown = _shown(labels, label_space, ignore)
    colours = label_colors(label_space)
    legend = [
        (tuple(colours[i]), label_space.class_names[i]) for i in np.unique(labels[shown]).tolist()
    ]
    if not shown.all():
        legend.append((UNLABELLED, "unlabelled / ignored"))
    return legend


def _difference_legend(codes: np.ndarray, first: str, second: str) -> list:
    texts = {
        SAME: "same prediction",
        SECOND_RIGHT: f"differ: {second} right",
        FIRST_RIGHT: f"differ: {first} right",
        BOTH_WRONG: "differ: both wrong",
        UNSCORED: "differ: no label",
    }
    return [(DIFFERENCE_COLORS[c], texts[c]) for c in sorted(texts) if np.any(codes == c)]


def _compose(
    grid: dict[str, dict[str, np.ndarray]],
    scale: dict[str, int],
    legend: list,
    title: str,
    path: str | pathlib.Path,
) -> Layout:
    """Places the rasters (a row per view, a column per panel) and the legend swatches on one
    canvas, writes it with the titles, row names and legend texts; returns the Layout."""
    columns = list(next(iter(grid.values())))
    widths = [max(row[c].shape[1] for row in grid.values()) for c in columns]
    heights = [max(r.shape[0] for r in row.values()) * scale[name] for name, row in grid.items()]
    width = _MARGIN + _ROW_LABEL + sum(widths) + _GAP * (len(columns) - 1) + _MARGIN
    per_line = max(1, (width - 2 * _MARGIN) // _LEGEND_COLUMN)
    legend_height = -(-len(legend) // per_line) * _LEGEND_ROW
    top = _MARGIN + (_TITLE if title else 0) + _TITLE
    height = top + sum(heights) + _GAP * len(heights) + legend_height + _MARGIN
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[...] = BACKGROUND
    texts, boxes = [], {}  # texts: (x, y from the top, text, options)
    if title:
        texts.append((_MARGIN, _MARGIN, title, {"fontsize": 11, "weight": "bold"}))
    lefts = np.cumsum([_MARGIN + _ROW_LABEL] + [w + _GAP for w in widths[:-1]]).tolist()
    for left, name in zip(lefts, columns):
        texts.append((left, top - _TITLE + 3, name, {"fontsize": 10}))
    row_top = top
    for (row_name, row), row_height in zip(grid.items(), heights):
        texts.append((_MARGIN, row_top + row_height // 2, row_name, {"rotation": 90}))
        for left, name in zip(lefts, columns):
            raster = np.repeat(row[name], scale[row_name], axis=0)
            h, w = raster.shape[:2]
            canvas[row_top - 1 : row_top + h + 1, left - 1 : left + w + 1] = FRAME
            canvas[row_top : row_top + h, left : left + w] = raster
            boxes[(row_name, name)] = (row_top, left, h, w)
        row_top += row_height + _GAP
    for item, (colour, text) in enumerate(legend):
        x = _MARGIN + (item % per_line) * _LEGEND_COLUMN
        y = row_top + (item // per_line) * _LEGEND_ROW
        canvas[y : y + _SWATCH, x : x + _SWATCH] = colour
        texts.append((x + _SWATCH + 4, y, text, {"fontsize": 8}))

    fig = plt.figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    fig.figimage(canvas, 0, 0, origin="upper")
    for x, y, text, options in texts:
        vertical = "center" if options.get("rotation") else "top"
        fig.text(x, height - y, text, transform=IdentityTransform(), va=vertical, **options)
    fig.savefig(path, dpi=_DPI, metadata={"Software": None})
    plt.close(fig)
    return Layout(boxes, dict(scale), (height, width))


class _Subset:
    """The entries `indices` of a source, as a source."""

    def __init__(self, source, indices: Sequence[int]):
        self.source, self.indices = source, [int(i) for i in indices]
        self.optional_fields = getattr(source, "optional_fields", None)

    def __len__(self) -> int:
        return len(self.indices)

    def size(self, index: int) -> tuple[int, ...]:
        return self.source.size(self.indices[index])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.source[self.indices[index]]


def predict_points(
    model,
    state,
    data,
    mesh,
    config,
    indices: Sequence[int],
    split: str = "validation",
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(points, labels, predictions) of the samples `indices` of a split, as the evaluation
    predicts them (the model's `prepare_batch`, config.eval.predict_ignored, batches of
    config.eval.batch_size in config.data.buckets).

    Everything is in the source's order: the batch carries every entry's position through the
    model's `prepare_batch` (which may permute entries, e.g. RandLA-Net's shuffle) and the
    predictions are put back where their entries came from, so panels of different runs align.

    Returns, per index: the sample's input (points [N, C] or image [H, W, C]), its label ids
    int32 [N] / [H, W] and the predicted label ids int32 of the same shape.
    """
    spec, label_space = data.spec, data.label_space
    source = _Subset(getattr(data, split), indices)
    batch_size = config.eval.batch_size
    check_batch_size(batch_size, mesh, "config.eval.batch_size")
    predict = trainer.inspect_step(
        model, mesh, label_space, spec.mask_key, config.eval.predict_ignored
    )
    prepare = getattr(model, "prepare_batch", None)
    input_key = next(k for k in spec.fields if k != spec.label_key)
    batches = input_pipeline.eval_batches(
        source, spec, batch_size, config.data.buckets, label_fill=label_space.no_label
    )
    variables = state.variables()
    results = []
    for start, batch in zip(range(0, len(source), batch_size), batches):
        batch = entries.with_positions(batch, spec.mask_key)
        if prepare is not None:
            batch = prepare(batch)
            if entries.INDEX_KEY not in batch:
                raise ValueError(
                    f"{type(model).__name__}.prepare_batch drops unknown batch fields: its "
                    "predictions cannot be put back in the source's order"
                )
        outputs = jax.device_get(predict(variables, global_batch(batch, mesh)))
        prediction, position = outputs["prediction"], outputs["position"]
        valid, overflow = outputs["mask"], outputs["overflow"]
        if bool(overflow):
            raise trainer.CapacityOverflowError(f"render batch {start}: model capacity overflow")
        for row in range(min(batch_size, len(source) - start)):
            sample = source[start + row]
            out = entries.in_source_order(
                prediction[row].astype(np.int32),
                position[row],
                valid[row],
                spec.sample_size(sample),
                label_space.no_label,
                f"{split} sample {source.indices[start + row]}",
            )
            results.append((sample[input_key], sample[spec.label_key], out))
    return results


def render_validation(
    pipe,
    runs: Mapping[str, tuple],
    out_dir: str | pathlib.Path,
    num_samples: int = 2,
    compare: tuple[str, str] | None = None,
    split: str = "validation",
) -> list[pathlib.Path]:
    """Fig. 4: render_<k>.png for the first `num_samples` samples of a split (k = its index).

    Args:
      pipe: the `leakjax.pipeline.Pipeline` (data, mesh).
      runs: {run name: (run dir, its config, its LeakSettings or None)}, in column order.
      out_dir: where the PNGs go.
      num_samples: samples 0..num_samples-1 (fewer if the split is smaller).
      compare: the two runs of the differences column; default: "baseline" and the first other
        run when there is a "baseline", else the first two runs; none with a single run.
      split: "validation" (or "test" / "train" for a dataset with labels there).

    Returns:
      the written paths (none on processes other than 0; every process must call it).
    """
    data = pipe.data
    names = list(runs)
    if not names or "ground truth" in names:
        raise ValueError(f"renders: need at least one run, none named 'ground truth': {names}")
    if compare is None and len(names) >= 2:
        others = [n for n in names if n != "baseline"]
        compare = ("baseline", others[0]) if "baseline" in names else (names[0], names[1])
    if compare is not None and not set(compare) <= set(names):
        raise ValueError(f"renders: compare={compare} names runs not in {names}")
    indices = list(range(min(num_samples, len(getattr(data, split)))))
    predicted = {}
    for name, (run_dir, config, settings) in runs.items():
        model, state, _ = trainer.load_state(config, run_dir, pipe.mesh, data, settings)
        predicted[name] = predict_points(model, state, data, pipe.mesh, config, indices, split)
    if jax.process_index() != 0:
        return []
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    render = render_scan if data.spec.spatial_rank == 1 else render_image
    paths = []
    for k, index in enumerate(indices):
        inputs, labels, _ = predicted[names[0]][k]
        panels = {"ground truth": labels, **{n: predicted[n][k][2] for n in names}}
        differences = None if compare is None else ("ground truth", *compare)
        path = out_dir / f"render_{k}.png"
        title = f"{data.name} {split} sample {index}"
        render(inputs, panels, data.label_space, path, differences=differences, title=title)
        paths.append(path)
    return paths
