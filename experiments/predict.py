"""Predictions of a trained run on your own scans: `python -m experiments.predict`.

    python -m experiments.predict --run workdirs/semkitti/leak --input scans/ --output preds/ \
        [--format label,ply,png] [--workdir_config workdirs/semkitti/config.json]
    python -m experiments.predict --run workdirs/kitti/leak --kitti_test_root /data/semantic_kitti \
        --output submission/

The run (a baseline or LEAK run directory of the pipeline, holding `checkpoints/`) is rebuilt
from its latest checkpoint: the resolved config in the checkpoint's metadata (or
`--workdir_config`), the model through the trainer (`build_run` / `load_state`) with the label
space of `config.data.name` (datasets/registry.py); LEAK runs' prototype bank is restored with the
hierarchy of their metadata. No training data is read: the input files are the `Dataset`'s source.

Inputs: one file or a directory (searched recursively) of `.bin` (KITTI), `.npy`, `.ply`, `.pcd`,
`.las` / `.laz` scans (datasets/pointcloud_files.py; a file without remission gets
`--fill_remission`, default 0, and a warning). Every point is predicted on the whole scan, padded
to the config's buckets (`config.data.buckets`); a scan larger than the largest bucket gets an added
bucket (its size rounded up to a multiple of 16384 points: one more compilation), and a model
whose internal capacities (config.model.kwargs) it then overflows stops with an error naming the
files. Batches go through the model's `prepare_batch` hook (entries.prepare_batches).

Points with a NaN or infinite value are not given to the model: they are labelled `no_label`
(SemanticKITTI: 0, written as raw id 0 "unlabeled"), kept in place in every output, logged as a
warning with their indices, and listed in `predictions.json`; the other points are predicted.

Outputs per scan, under `--output` with the input's relative path (`--format`, default all that
apply):
  label  `<name>.label`: the SemanticKITTI submission format (raw ids through learning_map_inv;
         datasets.semantic_kitti.write_predictions), for SemanticKITTI-trained runs only;
  ply    `<name>.ply`: binary PLY, x y z remission (float), red green blue (the label space's
         colours), label (int, the model's label id), one vertex per input point in file order;
  png    `<name>.png`: a bird's-eye view (x right, y up), each pixel coloured by the label of its
         highest point, `--image_size` pixels on a side over the 1st-99th percentile of x and y.
`predictions.json` summarises every scan. With `--kitti_test_root`, the test split (sequences 11-21)
is written as the benchmark server expects: `sequences/NN/predictions/NNNNNN.label`, zipped with
its directory entries into `submission.zip` (labels only).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import pathlib
import zipfile
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from datasets import semantic_kitti
from datasets.pointcloud_files import (
    PointCloud,
    list_point_cloud_files,
    read_point_cloud,
    write_labelled_ply,
)
from datasets.registry import DATASETS
from experiments.configs.base import restore_config
from leakjax.data import Dataset
from leakjax.label_space import LabelSpace
from leakjax.leak import Hierarchy
from leakjax.pipeline import phases, renders
from leakjax.train import entries, input_pipeline, trainer
from leakjax.train.batch import choose_capacity, pad_batch
from leakjax.train.checkpoint import Checkpointer
from leakjax.train.mesh import (
    batch_sharding,
    check_batch_size,
    global_batch,
    make_data_mesh,
    replicated_sharding,
)

logger = logging.getLogger("leakjax")
FORMATS = ("label", "ply", "png")
EXTRA_BUCKET_STEP = 16384  # added buckets are multiples of this many points


class ScanFiles:
    """The input files as a `Source` (leakjax/train/input_pipeline.py) of unlabelled samples.

    A sample holds the scan's finite points only ({"points": float32 [M, 4], "labels": no_label
    [M]}); `cloud(index)` gives the whole file (the last files read are cached, so `size` and
    `__getitem__` read each file once).
    """

    def __init__(self, paths: Sequence[pathlib.Path], no_label: int, fill_remission: float = 0.0):
        self.paths = list(paths)
        self.no_label = no_label
        self.fill_remission = fill_remission
        self._cache: collections.OrderedDict[int, PointCloud] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self.paths)

    def cloud(self, index: int) -> PointCloud:
        if index not in self._cache:
            self._cache[index] = read_point_cloud(self.paths[index], self.fill_remission)
            while len(self._cache) > 64:
                self._cache.popitem(last=False)
        return self._cache[index]

    def size(self, index: int) -> tuple[int]:
        return (int(self.cloud(index).finite.sum()),)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        cloud = self.cloud(index)
        points = cloud.points[cloud.finite]
        return {"points": points, "labels": np.full(len(points), self.no_label, np.int32)}


@dataclasses.dataclass
class LoadedRun:
    """A run's resolved config, what its checkpoint needs to be restored, and its label space."""

    run_dir: pathlib.Path
    config: ml_collections.ConfigDict
    metadata: dict
    step: int

    @property
    def label_space(self) -> LabelSpace:
        return DATASETS[self.config.data.name].label_space

    @property
    def is_semantic_kitti(self) -> bool:
        return self.config.data.name == "semantic_kitti"

    def settings(self):
        """The LeakSettings the checkpoint was trained with (its state holds their prototypes)."""
        if "hierarchy" in self.metadata:
            hierarchy = Hierarchy.from_json(json.dumps(self.metadata["hierarchy"]))
            return phases.leak_settings(self.config, hierarchy)
        return phases.baseline_settings(self.config, self.label_space.num_micro)


def read_run(run_dir: str | pathlib.Path, workdir_config: str | None = None) -> LoadedRun:
    """The run's latest checkpoint metadata and config (`workdir_config`, a resolved config JSON
    such as `<workdir>/config.json`, replaces the metadata's)."""
    run_dir = pathlib.Path(run_dir).absolute()
    if run_dir.name == "checkpoints":
        run_dir = run_dir.parent
    if not (run_dir / "checkpoints").is_dir():
        runs = sorted(p.name for p in run_dir.glob("*") if (p / "checkpoints").is_dir())
        hint = f"; its runs: {runs}" if runs else ""
        raise ValueError(f"--run {run_dir}: not a run directory (no checkpoints/ in it){hint}")
    checkpointer = Checkpointer(run_dir / "checkpoints", async_save=False)
    try:
        step = checkpointer.latest_step()
        if step is None:
            raise ValueError(f"--run {run_dir}: no checkpoint in {run_dir / 'checkpoints'}")
        metadata = checkpointer.restore_metadata(step)
    finally:
        checkpointer.close()
    if workdir_config:
        config_dict = json.loads(pathlib.Path(workdir_config).read_text())
    elif "config" in metadata:
        config_dict = metadata["config"]
    else:
        raise ValueError(
            f"--run {run_dir}: its checkpoint metadata has no config; pass --workdir_config "
            f"(e.g. {run_dir.parent / 'config.json'})"
        )
    config = restore_config(config_dict)  # today's schema; JSON lists back to tuples
    if config.data.name not in DATASETS:
        raise ValueError(f"config.data.name={config.data.name!r}: not in {sorted(DATASETS)}")
    spec = DATASETS[config.data.name].spec
    if spec.spatial_rank != 1 or spec.fields["points"].trailing_shape != (4,):
        raise ValueError(
            f"--run {run_dir}: trained on {config.data.name!r}, whose samples are not LiDAR "
            "point clouds (x, y, z, remission); predict reads point clouds only"
        )
    return LoadedRun(run_dir, config, metadata, int(step))


def predict_scans(
    run: LoadedRun,
    source: ScanFiles,
    batch_size: int | None = None,
) -> Iterator[tuple[int, PointCloud, np.ndarray]]:
    """(index, cloud, label ids int32 [N]) for every file of `source`, in order.

    The model and state are rebuilt with `trainer.load_state` on a `Dataset` whose sources are the
    files; points with non-finite values get `no_label` (module docstring).
    """
    if jax.process_count() > 1:
        raise ValueError("predict runs in one process (it writes every file itself)")
    config, label_space = run.config, run.label_space
    spec = DATASETS[config.data.name].spec
    data = Dataset(
        config.data.name, label_space, spec, source, source, f"{len(source)} files", test=source
    )
    mesh = make_data_mesh()
    num_devices = mesh.devices.size
    batch_size = batch_size or config.eval.batch_size
    batch_size = -(-batch_size // num_devices) * num_devices
    check_batch_size(batch_size, mesh, "--batch_size")
    model, state, _ = trainer.load_state(config, run.run_dir, mesh, data, run.settings())
    predict_ignored = bool(config.eval.predict_ignored)

    def step(variables, batch):
        logits, aux = model.apply(variables, batch, train=False)
        labels = jnp.argmax(logits, -1) if predict_ignored else label_space.predict(logits)
        return labels.astype(jnp.int32), aux["overflow"]

    predict = jax.jit(step, in_shardings=(replicated_sharding(mesh), batch_sharding(mesh)))
    buckets = list(config.data.buckets)

    def host_batches():
        for start in range(0, len(source), batch_size):
            indices = list(range(start, min(start + batch_size, len(source))))
            clouds = [source.cloud(i) for i in indices]
            samples = [source[i] for i in indices]
            largest = max(len(sample["points"]) for sample in samples)
            capacity = _capacity(largest, buckets, spec, [cloud.path for cloud in clouds])
            samples += [spec.empty_sample()] * (batch_size - len(samples))
            batch = pad_batch(samples, capacity, spec, label_space.no_label)
            # the model's prepare_batch may permute entries (RandLA-Net's shuffle): carry each
            # entry's position through it, to put the predictions back in the file's order
            batch = entries.with_positions(batch, spec.mask_key)
            (batch,) = entries.prepare_batches(model, [batch])
            if entries.INDEX_KEY not in batch:
                raise ValueError(
                    f"{type(model).__name__}.prepare_batch drops unknown batch fields: its "
                    "predictions cannot be put back in the files' order"
                )
            positions = batch.pop(entries.INDEX_KEY)
            yield indices, clouds, batch, positions

    variables = state.variables()
    batches = input_pipeline.prefetch(host_batches(), config.data.prefetch)
    for indices, clouds, batch, positions in batches:
        labels, overflow = jax.device_get(predict(variables, global_batch(batch, mesh)))
        if np.any(overflow[: len(indices)]):
            raise trainer.CapacityOverflowError(
                f"model capacity overflow on {[str(c.path) for c in clouds]}; raise the model's "
                "capacities (config.model.kwargs, e.g. through --workdir_config) for these scans"
            )
        mask = batch[spec.mask_key]
        for row, (index, cloud) in enumerate(zip(indices, clouds)):
            finite = cloud.finite
            full = np.full(len(finite), label_space.no_label, np.int32)
            full[finite] = entries.in_source_order(
                labels[row], positions[row], mask[row], (int(finite.sum()),), -1, str(cloud.path)
            )
            yield index, cloud, full


def _capacity(largest: int, buckets: list, spec, paths: list[pathlib.Path]) -> tuple[int]:
    """The smallest bucket holding `largest` points; beyond the largest, an added bucket."""
    if largest <= max(int(b) for b in buckets):
        return choose_capacity((largest,), buckets, spec, str(paths))
    added = -(-largest // EXTRA_BUCKET_STEP) * EXTRA_BUCKET_STEP
    if added not in buckets:
        logger.warning(
            "%s: %d points exceed the largest bucket of config.data.buckets (%d): added a bucket "
            "of %d points (one more compilation)",
            [str(p) for p in paths],
            largest,
            max(int(b) for b in buckets),
            added,
        )
        buckets.append(added)
    return (added,)


def birds_eye_image(
    points: np.ndarray, labels: np.ndarray, label_space: LabelSpace, size: int = 512
) -> np.ndarray:
    """uint8 [size, size, 3]: the top view of leakjax/pipeline/renders.py (`bev_pixels`: x up,
    y left, the square around the 1st-99th percentile box of x and y), each pixel the colour of
    its highest point's label (on a tie the first in the file); points with a non-finite value
    (never given to the model) are not drawn."""
    finite = np.isfinite(points).all(axis=1)  # points the model did not see are not drawn
    bounds = renders.bev_pixels(points[finite], size)[2]
    rows, cols, _ = renders.bev_pixels(points, size, bounds)
    rows = np.where(finite, rows, -1)
    heights = np.where(finite, -points[:, 2], np.inf)
    colours = renders.colorize(labels, label_space)
    return renders.rasterize(rows, cols, (size, size), colours, [heights])


def _output_bases(files: list[pathlib.Path], root: pathlib.Path, output: pathlib.Path):
    """`output/<relative path without its suffix>` per file; two inputs that would write the same
    outputs (e.g. a.bin and a.ply) are an error naming both."""
    bases, seen = [], {}
    for path in files:
        relative = path.relative_to(root) if root.is_dir() else pathlib.Path(path.name)
        base = output / relative.parent / relative.stem
        if base in seen:
            raise ValueError(f"{seen[base]} and {path} would write the same outputs {base}.*")
        seen[base] = path
        bases.append(base)
    return bases


def resolve_formats(formats: Sequence[str] | None, run: LoadedRun) -> list[str]:
    """The requested formats (None / empty: label for SemanticKITTI runs, ply, png)."""
    if not formats:
        return [f for f in FORMATS if f != "label" or run.is_semantic_kitti]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"--format: unknown {unknown}; expected some of {FORMATS}")
    if "label" in formats and not run.is_semantic_kitti:
        raise ValueError(
            f"--format label is the SemanticKITTI submission format; this run was trained on "
            f"{run.config.data.name!r} (use ply)"
        )
    return list(dict.fromkeys(formats))


def predict_files(
    run: LoadedRun,
    files: list[pathlib.Path],
    bases: list[pathlib.Path],
    formats: Sequence[str],
    output: pathlib.Path,
    batch_size: int | None = None,
    fill_remission: float = 0.0,
    image_size: int = 512,
) -> dict:
    """Predicts `files`, writes `<base>.<format>` per file and `output/predictions.json`."""
    label_space = run.label_space
    source = ScanFiles(files, label_space.no_label, fill_remission)
    scans = []
    for index, cloud, labels in predict_scans(run, source, batch_size):
        base, written = bases[index], []
        bad = cloud.nonfinite_indices
        if bad.size:
            logger.warning(
                "%s: %d of %d points have NaN or infinite values (indices %s%s): labelled %d "
                "(no label), not predicted",
                cloud.path,
                bad.size,
                len(labels),
                bad[:10].tolist(),
                " ..." if bad.size > 10 else "",
                label_space.no_label,
            )
        if not cloud.has_remission:
            logger.warning("%s: no remission field; filled with %g", cloud.path, fill_remission)
        if "label" in formats:
            written.append(base.parent / f"{base.name}.label")
            semantic_kitti.write_predictions(written[-1], labels)
        if "ply" in formats:
            written.append(base.parent / f"{base.name}.ply")
            write_labelled_ply(written[-1], cloud.points, labels, label_space)
        if "png" in formats:
            import matplotlib.image  # noqa: PLC0415 - only for pictures

            written.append(base.parent / f"{base.name}.png")
            image = birds_eye_image(cloud.points, labels, label_space, image_size)
            matplotlib.image.imsave(written[-1], image)
        counts = np.bincount(labels[labels >= 0], minlength=label_space.num_classes)
        scans.append(
            {
                "input": str(cloud.path),
                "points": len(labels),
                "remission": "from the file" if cloud.has_remission else f"filled {fill_remission}",
                "nonfinite_points": int(bad.size),
                "nonfinite_indices": bad.tolist(),
                "outputs": [str(p) for p in written],
                "class_counts": {
                    name: int(c) for name, c in zip(label_space.class_names, counts) if c
                },
            }
        )
        logger.info("%s: %d points -> %s", cloud.path, len(labels), ", ".join(map(str, written)))
    summary = {
        "run": str(run.run_dir),
        "step": run.step,
        "dataset": run.config.data.name,
        "model": run.config.model.name,
        "no_label": label_space.no_label,
        "scans": scans,
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "predictions.json").write_text(json.dumps(summary, indent=1))
    return summary


def predict(
    run_dir: str | pathlib.Path,
    inputs: str | pathlib.Path,
    output: str | pathlib.Path,
    formats: Sequence[str] | None = None,
    workdir_config: str | None = None,
    batch_size: int | None = None,
    fill_remission: float = 0.0,
    image_size: int = 512,
) -> dict:
    """Predicts a file or every scan under a directory (module docstring); returns the summary."""
    run = read_run(run_dir, workdir_config)
    formats = resolve_formats(formats, run)
    inputs, output = pathlib.Path(inputs), pathlib.Path(output)
    files = list_point_cloud_files(inputs)
    bases = _output_bases(files, inputs, output)
    return predict_files(run, files, bases, formats, output, batch_size, fill_remission, image_size)


def predict_kitti_test(
    run_dir: str | pathlib.Path,
    kitti_root: str | pathlib.Path,
    output: str | pathlib.Path,
    workdir_config: str | None = None,
    batch_size: int | None = None,
    make_zip: bool = True,
) -> dict:
    """The SemanticKITTI test split (sequences 11-21 of `kitti_root`) in the benchmark's layout
    `output/sequences/NN/predictions/NNNNNN.label`, and `output/submission.zip`."""
    run = read_run(run_dir, workdir_config)
    if not run.is_semantic_kitti:
        raise ValueError(f"--kitti_test_root: the run was trained on {run.config.data.name!r}")
    output = pathlib.Path(output)
    files = [scan for scan, _ in semantic_kitti.split_pairs(kitti_root, "test")]
    bases = [
        output / "sequences" / scan.parent.parent.name / "predictions" / scan.stem for scan in files
    ]
    summary = predict_files(run, files, bases, ["label"], output, batch_size)
    if make_zip:
        write_submission_zip(output, output / "submission.zip")
    return summary


def write_submission_zip(output: pathlib.Path, zip_path: pathlib.Path) -> None:
    """Zips `output/sequences/*/predictions/*.label` with explicit directory entries (the
    benchmark's validate_submission.py looks for `sequences/NN/predictions/`)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("sequences/", b"")
        for sequence_dir in sorted((output / "sequences").iterdir()):
            archive.writestr(f"sequences/{sequence_dir.name}/", b"")
            archive.writestr(f"sequences/{sequence_dir.name}/predictions/", b"")
            for label in sorted((sequence_dir / "predictions").glob("*.label")):
                archive.write(label, f"sequences/{sequence_dir.name}/predictions/{label.name}")


def main() -> None:
    """The command line (flags defined here, not at import, so importing defines no flags)."""
    from absl import app, flags  # noqa: PLC0415

    from leakjax.train.logging import readable_logs  # noqa: PLC0415

    run_flag = flags.DEFINE_string("run", None, "Run directory (holding checkpoints/).")
    input_flag = flags.DEFINE_string("input", None, "A scan file or a directory of scans.")
    output_flag = flags.DEFINE_string("output", None, "Output directory.")
    format_flag = flags.DEFINE_list("format", [], f"Outputs, some of {FORMATS} (default: all).")
    config_flag = flags.DEFINE_string(
        "workdir_config", None, "A resolved config JSON (e.g. <workdir>/config.json) to use."
    )
    kitti_flag = flags.DEFINE_string(
        "kitti_test_root", None, "SemanticKITTI root: predict its test split (11-21)."
    )
    batch_flag = flags.DEFINE_integer("batch_size", 0, "Scans per batch (0: config.eval).")
    fill_flag = flags.DEFINE_float("fill_remission", 0.0, "Remission of files without one.")
    size_flag = flags.DEFINE_integer("image_size", 512, "Bird's-eye picture size (pixels).")
    flags.mark_flags_as_required(["run", "output"])

    def run_main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        if (input_flag.value is None) == (kitti_flag.value is None):
            raise app.UsageError("give exactly one of --input and --kitti_test_root")
        readable_logs()
        if kitti_flag.value:
            if format_flag.value and format_flag.value != ["label"]:
                raise app.UsageError("--kitti_test_root writes the submission's .label files only")
            summary = predict_kitti_test(
                run_flag.value,
                kitti_flag.value,
                output_flag.value,
                config_flag.value,
                batch_flag.value or None,
            )
        else:
            summary = predict(
                run_flag.value,
                input_flag.value,
                output_flag.value,
                format_flag.value,
                config_flag.value,
                batch_flag.value or None,
                fill_flag.value,
                size_flag.value,
            )
        print(f"{len(summary['scans'])} scans predicted -> {output_flag.value}/predictions.json")

    app.run(run_main)


if __name__ == "__main__":
    main()
