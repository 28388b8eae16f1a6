"""The random-sampling index pyramid of the released RandLA-Net input pipeline.

The released pipeline (RandLA-Net `main_*.py`, `tf_map`) takes a shuffled crop and, for each
encoder layer l = 0..L-1 with sub-sampling ratio r_l:

* `neighbours[l]`: the k nearest points of every level-l point among the level-l points (itself
  included);
* the level-(l+1) points are the first N_{l+1} = N_l // r_l level-l points: the crop is shuffled,
  so this is the random sampling;
* `pools[l]` = `neighbours[l][:, :N_{l+1}]`: the neighbourhoods of the kept points, max-pooled by
  the encoder;
* `upsamples[l]`: for every level-l point, its nearest level-(l+1) point, gathered by the decoder.

Batches of clouds with fewer valid points than the capacity N_0 are padded at the end
(`num_valid` [B]: the valid points of a sample are its first num_valid slots). A sample keeps
n_{l+1} = min(N_{l+1}, ceil(n_l / r_l)) valid points at level l+1: a full sample keeps exactly the
released N_{l+1}, and a non-empty one never runs out of points. Index slots without a valid
neighbour hold the sentinel "number of slots of the level indexed" with found = False (see
leakjax.points.knn): padded points' rows, and slots n_l..k-1 when a level has n_l < k valid
points.

`sampling_hierarchy_host` (numpy + cKDTree, samples over threads) and the jittable
`sampling_hierarchy_device` (the device kNN) return the same `SamplingHierarchy`, up to the order
of equidistant neighbours. Measured by hand on this machine's CPU (2 shared cores) for the released
KITTI case, 45,056 points, ratios (4, 4, 4, 4), k = 16: host 0.17 s per crop with one thread,
0.09 s per crop for 4 crops on 2 threads; device (jitted, chunk_size 512) 5.9 s per crop.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import jax.numpy as jnp
import numpy as np
from flax import struct
from scipy.spatial import cKDTree

from leakjax.points.knn import DEFAULT_CHUNK_SIZE, knn_device_batch


@struct.dataclass
class SamplingHierarchy:
    """Per encoder layer l = 0..L-1 (tuples of L arrays; a pytree, so it passes through jit).

    Row l of every tuple belongs to the level-l points; indices are into the level's own points
    (neighbours, pools) or into the next level's points (upsamples).
    """

    points: tuple  # float32 [B, N_l, 3] the level-l points (first N_l of level l-1)
    point_mask: tuple  # bool [B, N_l] True for the first n_l (valid) slots
    neighbours: tuple  # int32 [B, N_l, k] kNN among level-l points, nearest first; sentinel N_l
    neighbour_found: tuple  # bool [B, N_l, k] False for sentinel slots
    pools: tuple  # int32 [B, N_{l+1}, k] = neighbours[l][:, :N_{l+1}] (found: same slice)
    upsamples: tuple  # int32 [B, N_l, 1] nearest level-(l+1) point; sentinel N_{l+1} if padded

    @property
    def pool_found(self) -> tuple:
        """bool [B, N_{l+1}, k] per layer: neighbour_found[l] of the kept points."""
        return tuple(f[:, : p.shape[1]] for f, p in zip(self.neighbour_found, self.pools))


def hierarchy_sizes(num_points: int, ratios) -> tuple[int, ...]:
    """Point capacities N_0..N_L of the levels, N_{l+1} = N_l // r_l (KITTI: 45056 -> 11264 ->
    2816 -> 704 -> 176)."""
    ratios = tuple(ratios)
    if not ratios or any(not isinstance(r, (int, np.integer)) or r < 1 for r in ratios):
        raise ValueError(f"ratios must be a non-empty sequence of ints >= 1, got {ratios!r}")
    sizes = [int(num_points)]
    for ratio in ratios:
        sizes.append(sizes[-1] // ratio)
    if sizes[-1] < 1:
        raise ValueError(f"{num_points} points with ratios {ratios} leave an empty level: {sizes}")
    return tuple(sizes)


def _valid_counts(num_valid: np.ndarray, sizes, ratios) -> list[np.ndarray]:
    """n_l per level (int64 [B] each), n_{l+1} = min(N_{l+1}, ceil(n_l / r_l))."""
    counts = [num_valid]
    for size, ratio in zip(sizes[1:], ratios):
        counts.append(np.minimum(size, -(-counts[-1] // ratio)))
    return counts


def _check_inputs(points_shape, ratios, k: int, name: str) -> tuple[int, ...]:
    if len(points_shape) != 3 or points_shape[-1] != 3:
        raise ValueError(f"{name}: points must be [B, N, 3], got {points_shape}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{name}: k must be an int >= 1, got {k!r}")
    sizes = hierarchy_sizes(points_shape[1], ratios)
    if sizes[len(sizes) - 2] < k:
        raise ValueError(
            f"{name}: level capacities {sizes} give the last encoder level {sizes[-2]} points, "
            f"fewer than k = {k}"
        )
    return sizes


def _host_sample(points: np.ndarray, num_valid: int, sizes, ratios, k: int):
    """One sample as lists over layers (numpy, shapes of SamplingHierarchy without B)."""
    counts = [int(c) for c in _valid_counts(np.int64(num_valid), sizes, ratios)]
    coords = np.asarray(points[:num_valid], np.float64)
    if not np.all(np.isfinite(coords)):
        raise ValueError("sampling_hierarchy_host: valid points contain NaN or infinite values")
    out = {name: [] for name in ("neighbours", "neighbour_found", "upsamples")}
    tree = cKDTree(coords) if counts[0] else None
    for layer in range(len(ratios)):
        size, count, next_count = sizes[layer], counts[layer], counts[layer + 1]
        neighbours = np.full((size, k), size, np.int32)
        found = np.zeros((size, k), bool)
        upsamples = np.full((size, 1), sizes[layer + 1], np.int32)
        next_tree = cKDTree(coords[:next_count]) if next_count else None
        if count:
            num_found = min(k, count)
            _, index = tree.query(coords[:count], k=num_found)
            neighbours[:count, :num_found] = np.reshape(index, (count, num_found))
            found[:count, :num_found] = True
            # The next level's tree serves both this level's up-sampling and the next kNN.
            _, nearest = next_tree.query(coords[:count], k=1)
            upsamples[:count, 0] = nearest
        out["neighbours"].append(neighbours)
        out["neighbour_found"].append(found)
        out["upsamples"].append(upsamples)
        tree = next_tree
    return out


def sampling_hierarchy_host(
    points, ratios, k: int, num_valid=None, *, num_threads: int = 1
) -> SamplingHierarchy:
    """The released index pyramid on the host (numpy arrays), one crop per thread.

    Args:
      points: float [B, N, 3] shuffled crops (metres); valid points first.
      ratios: sub-sampling ratio per encoder layer, e.g. (4, 4, 4, 4) (SemanticKITTI).
      k: neighbours per point (16 as released).
      num_valid: int [B] valid points per crop (None: all N).
      num_threads: crops processed in parallel (cKDTree releases the GIL).

    Returns:
      A `SamplingHierarchy` of numpy arrays.
    """
    points = np.asarray(points)
    sizes = _check_inputs(points.shape, ratios, k, "sampling_hierarchy_host")
    ratios = tuple(ratios)
    batch = points.shape[0]
    num_valid = np.full(batch, sizes[0]) if num_valid is None else np.asarray(num_valid)
    if num_valid.shape != (batch,) or np.any(num_valid < 0) or np.any(num_valid > sizes[0]):
        raise ValueError(
            f"sampling_hierarchy_host: num_valid must be [B] = [{batch}] ints in [0, {sizes[0]}], "
            f"got {num_valid!r}"
        )
    jobs = [(points[b], int(num_valid[b]), sizes, ratios, k) for b in range(batch)]
    if num_threads > 1 and batch > 1:
        with ThreadPoolExecutor(min(num_threads, batch)) as pool:
            samples = list(pool.map(lambda job: _host_sample(*job), jobs))
    else:
        samples = [_host_sample(*job) for job in jobs]
    stacked = {
        name: tuple(np.stack([s[name][layer] for s in samples]) for layer in range(len(ratios)))
        for name in samples[0]
    }
    counts = _valid_counts(num_valid.astype(np.int64), sizes, ratios)
    return SamplingHierarchy(
        points=tuple(np.asarray(points[:, :size], np.float32) for size in sizes[:-1]),
        point_mask=tuple(
            np.arange(size)[None, :] < count[:, None] for size, count in zip(sizes[:-1], counts)
        ),
        neighbours=stacked["neighbours"],
        neighbour_found=stacked["neighbour_found"],
        pools=tuple(n[:, :size] for n, size in zip(stacked["neighbours"], sizes[1:])),
        upsamples=stacked["upsamples"],
    )


def sampling_hierarchy_device(
    points, ratios, k: int, num_valid=None, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> SamplingHierarchy:
    """The released index pyramid on device with `knn_device_batch`; jittable with ratios, k and
    chunk_size static. Same arguments and result as `sampling_hierarchy_host` (jax arrays;
    num_valid int [B] may be traced, so it cannot be checked: it is clipped to [0, N])."""
    points = jnp.asarray(points, jnp.float32)
    sizes = _check_inputs(points.shape, ratios, k, "sampling_hierarchy_device")
    ratios = tuple(ratios)
    batch = points.shape[0]
    count = jnp.full((batch,), sizes[0], jnp.int32) if num_valid is None else num_valid
    count = jnp.clip(jnp.asarray(count, jnp.int32), 0, sizes[0])
    fields = {field.name: [] for field in dataclasses.fields(SamplingHierarchy)}
    for layer, ratio in enumerate(ratios):
        size, next_size = sizes[layer], sizes[layer + 1]
        next_count = jnp.minimum(next_size, -(-count // ratio))
        level = points[:, :size]
        mask = jnp.arange(size)[None, :] < count[:, None]
        next_mask = jnp.arange(next_size)[None, :] < next_count[:, None]
        neighbours, found = knn_device_batch(level, level, k, mask, mask, chunk_size=chunk_size)
        upsamples, _ = knn_device_batch(
            level, level[:, :next_size], 1, mask, next_mask, chunk_size=chunk_size
        )
        fields["points"].append(level)
        fields["point_mask"].append(mask)
        fields["neighbours"].append(neighbours)
        fields["neighbour_found"].append(found)
        fields["pools"].append(neighbours[:, :next_size])
        fields["upsamples"].append(upsamples)
        count = next_count
    return SamplingHierarchy(**{name: tuple(arrays) for name, arrays in fields.items()})


__all__ = [
    "SamplingHierarchy",
    "hierarchy_sizes",
    "sampling_hierarchy_device",
    "sampling_hierarchy_host",
]
