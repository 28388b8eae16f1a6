"""The pre-processing cache of static scenes: each cloud sub-sampled once, keyed by its settings.

A `CloudFiles` names one cloud, the source files it is read from and `read()`, which yields its
raw points in chunks (datasets/scenes/preprocess.py `Chunk`): a single chunk for a cloud that fits
in memory (an S3DIS room: `grid_subsample` on it), several for a streamed one (a Semantic3D scan
read with `iter_chunks`: the streamed two-pass sub-sampling).

`preprocess(clouds, grid_size_m, num_classes, cache_root, dataset)` makes sure each cloud has its
directory `<cache_root>/scenes/<dataset>-<cloud>-<hash>/`, the hash over the settings: the format
version, the grid, the number of label ids, the reader and every source file's path, size and
modification time (a changed file or setting is a new entry, never a stale one). Each directory is
written by datasets/cache.py's `ensure_generated` (its finished marker last, so a killed run
redoes only the cloud it was on) and holds

  cloud.npz     points float32 [S, 3], features float32 [S, F], labels int32 [S] and
                label_hist int32 [S, C] (the last two absent for an unlabelled cloud)
  proj.npy      int32 [N] each raw point's nearest sub-sampled point (read memory-mapped)
  summary.json  S, N, the cloud's name

The per-cloud kNN structure (a cKDTree over the S points) is rebuilt when a source needs it: it
takes less time than reading a pickled tree back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from collections.abc import Callable, Iterable, Sequence

import ml_collections
import numpy as np

from datasets.cache import ensure_generated
from datasets.scenes.preprocess import Chunk, subsample_chunks, subsample_cloud

logger = logging.getLogger("leakjax")
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class CloudFiles:
    """One raw cloud: its name (unique in its dataset), source files and chunk reader.

    `reader` names how `read` turns the files into points (part of the key, e.g. "s3dis official:
    xyz - min, rgb / 255"); `read()` must give the same chunks each time it is called.
    """

    name: str
    files: tuple[pathlib.Path, ...]
    read: Callable[[], Iterable[Chunk]]
    reader: str


@dataclasses.dataclass(frozen=True)
class CachedCloud:
    """A pre-processed cloud in the cache (module docstring)."""

    name: str
    directory: pathlib.Path
    num_points: int  # S sub-sampled points
    num_raw: int  # N raw points

    def arrays(self) -> dict[str, np.ndarray]:
        """{"points", "features"[, "labels", "label_hist"]} of cloud.npz."""
        with np.load(self.directory / "cloud.npz") as stored:
            return {key: stored[key] for key in stored.files}

    def proj(self) -> np.ndarray:
        """int32 [N], memory-mapped."""
        return np.load(self.directory / "proj.npy", mmap_mode="r")


def _settings(
    cloud: CloudFiles, grid_size_m: float, num_classes: int, dataset: str
) -> ml_collections.ConfigDict:
    files = []
    for path in cloud.files:
        stat = pathlib.Path(path).stat()
        files.append([str(pathlib.Path(path).absolute()), stat.st_size, stat.st_mtime_ns])
    return ml_collections.ConfigDict(
        {
            "format_version": FORMAT_VERSION,
            "dataset": dataset,
            "cloud": cloud.name,
            "reader": cloud.reader,
            "grid_size_m": float(grid_size_m),
            "num_classes": int(num_classes),
            "files": files,
        }
    )


def _write(cloud: CloudFiles, grid_size_m: float, num_classes: int, directory: pathlib.Path):
    directory.mkdir(parents=True, exist_ok=True)
    chunks = iter(cloud.read())
    first = next(chunks, None)
    second = next(chunks, None)
    if first is None:
        raise ValueError(f"{cloud.name}: no points")
    if second is None:  # fits in one chunk: grid_subsample on it
        result = subsample_cloud(*first, grid_size_m, num_classes)
        np.save(directory / "proj.npy", result.proj)
    else:
        result = subsample_chunks(cloud.read, grid_size_m, num_classes, directory / "proj.npy")
    arrays = {"points": result.points, "features": result.features}
    if result.labels is not None:
        arrays.update(labels=result.labels, label_hist=result.label_hist)
    np.savez(directory / "cloud.npz", **arrays)
    summary = {"name": cloud.name, "num_points": len(result.points), "num_raw": len(result.proj)}
    (directory / "summary.json").write_text(json.dumps(summary))


def preprocess(
    clouds: Sequence[CloudFiles],
    grid_size_m: float,
    num_classes: int,
    cache_root: pathlib.Path,
    dataset: str,
) -> list[CachedCloud]:
    """Every cloud pre-processed once into the cache (module docstring), in the given order."""
    root = pathlib.Path(cache_root) / "scenes"
    cached = []
    for cloud in clouds:
        settings = _settings(cloud, grid_size_m, num_classes, dataset)
        directory = ensure_generated(
            settings,
            root,
            lambda out, cloud=cloud: _write(cloud, grid_size_m, num_classes, out),
            f"{dataset} {cloud.name} sub-sampled at {grid_size_m} m",
            prefix=f"{dataset}-{cloud.name}",
        )
        summary = json.loads((directory / "summary.json").read_text())
        cached.append(CachedCloud(cloud.name, directory, summary["num_points"], summary["num_raw"]))
    return cached


__all__ = ["FORMAT_VERSION", "CachedCloud", "CloudFiles", "preprocess"]
