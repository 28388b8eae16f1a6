"""Host-side input pipeline: scans -> (augmented) padded numpy batches with static shapes.

Everything here is numpy on the host. A batch is a dict of
    "points"     float32 [B, P, 4]  x, y, z (metres), remission
    "point_mask" bool    [B, P]     real points
    "labels"     int32   [B, P]     training ids (0 = ignored, also on padding)
where the point capacity P is the smallest of a few fixed `buckets` that holds every sample of the
global batch, so the jitted steps compile once per bucket. A scan larger than the largest bucket is
an error, never truncated. The only way points are left out is the explicit `max_points` option
of `train_batches` (random subsampling for CPU-sized training runs; evaluation sees every point).

Determinism: the sample at position k of the training stream (k = step * batch + j) is fixed by
(seed, k): epoch e = k // n uses the permutation drawn from (seed, e), and the sample's augmentation
and subsampling use one `np.random.Generator` seeded by (seed, epoch, index). Resuming at step s
therefore replays exactly the batches the uninterrupted run would have seen. With several
processes, each builds only its own contiguous slice of every global batch.
"""

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Protocol

import jax
import numpy as np

from leakjax.augment import AugmentConfig, augment_points

_RELEASED_AUGMENT = AugmentConfig()  # Cylinder3D's augmentation as released


class ScanSource(Protocol):
    """Random access to labelled scans (see experiments/semkitti_data.py for SemanticKITTI)."""

    def __len__(self) -> int: ...

    def num_points(self, index: int) -> int:
        """Points of scan `index` without loading it (from the file size)."""
        ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(points float32 [N, 4], labels int32 [N] training ids)."""
        ...


def choose_capacity(num_points: int, buckets: Sequence[int], what: str) -> int:
    """The smallest bucket holding `num_points`; ValueError naming `what` if none does."""
    for capacity in sorted(buckets):
        if num_points <= capacity:
            return int(capacity)
    raise ValueError(
        f"{what}: {num_points} points exceed the largest point-capacity bucket {max(buckets)}; "
        "add a larger bucket to config.data.point_buckets (points are never dropped silently)"
    )


def pad_batch(samples: Sequence[tuple[np.ndarray, np.ndarray]], capacity: int) -> dict:
    """Pads [(points [N_i, 4], labels [N_i])] to one batch of capacity P (see module doc)."""
    batch_size = len(samples)
    points = np.zeros((batch_size, capacity, 4), np.float32)
    point_mask = np.zeros((batch_size, capacity), bool)
    labels = np.zeros((batch_size, capacity), np.int32)
    for row, (sample_points, sample_labels) in enumerate(samples):
        count = len(sample_points)
        if count > capacity:
            raise ValueError(f"pad_batch: sample {row} has {count} points > capacity {capacity}")
        points[row, :count] = sample_points
        point_mask[row, :count] = True
        labels[row, :count] = sample_labels
    return {"points": points, "point_mask": point_mask, "labels": labels}


def sample_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one sample in one epoch."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, index])))


def _epoch_permutation(seed: int, epoch: int, size: int) -> np.ndarray:
    # The stream id 2**31 keeps epoch orders apart from the per-sample generators.
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, 2**31])))
    return rng.permutation(size)


def _process_slice(global_batch_size: int) -> range:
    local = global_batch_size // jax.process_count()
    start = jax.process_index() * local
    return range(start, start + local)


def train_batches(
    source: ScanSource,
    global_batch_size: int,
    seed: int,
    start_step: int,
    buckets: Sequence[int],
    augment: AugmentConfig | None = _RELEASED_AUGMENT,
    max_points: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches from step `start_step` on (this process's share of each).

    Args:
      source: the training scans.
      global_batch_size: samples per optimiser step over all processes.
      seed: data seed.
      start_step: the first step to produce (resume).
      buckets: allowed point capacities.
      augment: augmentation config (None: no augmentation).
      max_points: if set, a scan with more points keeps a random subset of this many (training
        only; an explicit speed option for CPU runs).
    """
    size = len(source)
    if size == 0:
        raise ValueError("train_batches: the training split has no scans")
    permutations: dict[int, np.ndarray] = {}
    step = start_step
    while True:
        positions = [step * global_batch_size + j for j in range(global_batch_size)]
        epochs_and_indices = []
        for position in positions:
            epoch = position // size
            if epoch not in permutations:
                permutations = {epoch: _epoch_permutation(seed, epoch, size)}
            epochs_and_indices.append((epoch, int(permutations[epoch][position % size])))
        counts = [source.num_points(index) for _, index in epochs_and_indices]
        if max_points is not None:
            counts = [min(count, max_points) for count in counts]
        capacity = choose_capacity(max(counts), buckets, f"training step {step}")
        samples = []
        for j in _process_slice(global_batch_size):
            epoch, index = epochs_and_indices[j]
            points, labels = source[index]
            rng = sample_generator(seed, epoch, index)
            if augment is not None:
                points = augment_points(points, rng, augment)
            if max_points is not None and len(points) > max_points:
                keep = np.sort(rng.choice(len(points), size=max_points, replace=False))
                points, labels = points[keep], labels[keep]
            samples.append((points, labels))
        yield pad_batch(samples, capacity)
        step += 1


def eval_batches(
    source: ScanSource, global_batch_size: int, buckets: Sequence[int]
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over every scan and every point, in order (this process's share of each batch).

    The last batch is filled with empty samples (all-False masks) so shapes stay static.
    """
    size = len(source)
    for start in range(0, size, global_batch_size):
        indices = list(range(start, min(start + global_batch_size, size)))
        capacity = choose_capacity(
            max(source.num_points(i) for i in indices), buckets, f"evaluation scan {start}"
        )
        samples = []
        for j in _process_slice(global_batch_size):
            if start + j < size:
                samples.append(source[start + j])
            else:
                samples.append((np.zeros((0, 4), np.float32), np.zeros((0,), np.int32)))
        yield pad_batch(samples, capacity)


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Runs `iterator` in a background thread, `size` items ahead (host work overlaps the step)."""
    if size <= 0:
        yield from iterator
        return
    items: queue.Queue = queue.Queue(maxsize=size)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterator:
                if not put(item):
                    return
        except BaseException as error:  # noqa: BLE001 - re-raised in the consumer
            put(error)
            return
        put(done)

    def put(item) -> bool:
        # Polls so that a consumer that stops early also stops the producer.
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
