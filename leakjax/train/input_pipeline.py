"""Host-side input pipeline: samples -> (transformed) padded numpy batches with static shapes.

Everything here is numpy on the host. A source gives samples (dicts of arrays sharing their leading
spatial dims, leakjax/train/batch.py); a batch stacks them padded to the smallest of a few fixed
capacity `buckets` that holds every sample of the global batch, plus the mask of real entries, so
the jitted steps compile once per bucket. A sample larger than the largest bucket is an error,
never cropped. The only way entries are left out is the explicit `max_points` option of
`train_batches` (random subsampling of point sets for CPU-sized training runs; evaluation sees
every point).

Determinism: the sample at position k of the training stream (k = step * batch + j) is fixed by
(seed, k): epoch e = k // n uses the permutation drawn from (seed, e), and the sample's transforms
and subsampling use one `np.random.Generator` seeded by (seed, epoch, index). Resuming at step s
therefore replays exactly the batches the uninterrupted run would have seen. With several
processes, each builds only its own contiguous slice of every global batch.

Sources whose samples depend on the epoch (e.g. the possibility-guided crops of static scenes,
datasets/scenes/, whose crop plan is drawn per epoch) define `sample(seed, epoch, index)`; the
training stream then reads `source.sample(seed, epoch, index)` instead of `source[index]`, with
the same (seed, epoch, index) as above, so such a source is deterministic and resumable in the
same way. Its `size(index)` may be an upper bound over the epochs (it only picks the bucket).
"""

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Protocol

import jax
import numpy as np

from leakjax.train.batch import BatchSpec, choose_capacity, pad_batch
from leakjax.transforms import Transform, apply_transforms, output_size


class Source(Protocol):
    """Random access to labelled samples (e.g. datasets/semantic_kitti/source.py)."""

    def __len__(self) -> int: ...

    def size(self, index: int) -> tuple[int, ...]:
        """Spatial size of sample `index` without loading it ((N,) points or (H, W) pixels)."""
        ...

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """The sample: a dict of arrays with the fields of the dataset's BatchSpec."""
        ...


def _reader(source: Source):
    """(seed, epoch, index) -> sample: the source's `sample(seed, epoch, index)` if it has one
    (module docstring), else `source[index]`."""
    sample = getattr(source, "sample", None)
    return sample if callable(sample) else lambda seed, epoch, index: source[index]


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
    source: Source,
    spec: BatchSpec,
    global_batch_size: int,
    seed: int,
    start_step: int,
    buckets: Sequence,
    transforms: Sequence[Transform] = (),
    max_points: int | None = None,
    label_fill: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches from step `start_step` on (this process's share of each).

    Args:
      source: the training samples.
      spec: their batch contract.
      global_batch_size: samples per optimiser step over all processes.
      seed: data seed.
      start_step: the first step to produce (resume).
      buckets: allowed capacities (ints for point sets, (H, W) for images).
      transforms: per-sample transforms (leakjax/transforms.py); a transform that changes the
        size declares it, or an upper bound of it (`output_size`).
      max_points: point sets only: a sample with more points keeps a random subset of this many
        (training only; an explicit speed option for CPU runs).
      label_fill: the label of padded entries (the label space's `no_label`).
    """
    size = len(source)
    if size == 0:
        raise ValueError("train_batches: the training split has no samples")
    if max_points is not None and spec.spatial_rank != 1:
        raise ValueError("train_batches: max_points applies to point sets only")
    permutations: dict[int, np.ndarray] = {}
    read = _reader(source)
    step = start_step
    while True:
        positions = [step * global_batch_size + j for j in range(global_batch_size)]
        epochs_and_indices = []
        for position in positions:
            epoch = position // size
            if epoch not in permutations:
                permutations = {epoch: _epoch_permutation(seed, epoch, size)}
            epochs_and_indices.append((epoch, int(permutations[epoch][position % size])))
        sizes = [output_size(transforms, source.size(index)) for _, index in epochs_and_indices]
        if max_points is not None:
            sizes = [(min(s[0], max_points),) for s in sizes]
        largest = tuple(np.max(np.asarray(sizes), axis=0))
        capacity = choose_capacity(largest, buckets, spec, f"training step {step}")
        samples = []
        for j in _process_slice(global_batch_size):
            epoch, index = epochs_and_indices[j]
            sample = read(seed, epoch, index)
            rng = sample_generator(seed, epoch, index)
            expected = output_size(transforms, spec.sample_size(sample))
            sample = apply_transforms(sample, transforms, rng)
            if np.any(np.asarray(spec.sample_size(sample)) > np.asarray(expected)):
                raise ValueError(
                    f"training sample {index}: the transforms made it {spec.sample_size(sample)}, "
                    f"larger than the {expected} they declare"
                )
            count = spec.sample_size(sample)[0]
            if max_points is not None and count > max_points:
                keep = np.sort(rng.choice(count, size=max_points, replace=False))
                sample = {key: value[keep] for key, value in sample.items()}
            samples.append(sample)
        yield pad_batch(samples, capacity, spec, label_fill)
        step += 1


def eval_batches(
    source: Source,
    spec: BatchSpec,
    global_batch_size: int,
    buckets: Sequence,
    label_fill: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over every sample and every entry, in order (this process's share of each batch).

    The last batch is filled with empty samples (all-False masks) so shapes stay static; they carry
    the optional fields of the spec, or only those the source lists in its `optional_fields`
    (e.g. overlapping crops carry no per-entry raw label counts), so every process's share of a
    batch has the same fields.
    """
    filler = spec.empty_sample()
    optional = getattr(source, "optional_fields", None)
    if optional is not None:
        dropped = [k for k, f in spec.fields.items() if f.optional and k not in optional]
        filler = {k: v for k, v in filler.items() if k not in dropped}
    size = len(source)
    for start in range(0, size, global_batch_size):
        indices = list(range(start, min(start + global_batch_size, size)))
        largest = tuple(np.max(np.asarray([source.size(i) for i in indices]), axis=0))
        capacity = choose_capacity(largest, buckets, spec, f"evaluation sample {start}")
        samples = []
        for j in _process_slice(global_batch_size):
            if start + j < size:
                samples.append(source[start + j])
            else:
                samples.append(filler)
        yield pad_batch(samples, capacity, spec, label_fill)


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
