"""The batch contract: what a dataset's samples hold, and padding them to static shapes with a mask.

A sample is a dict of numpy arrays that share their leading *spatial* dims: N points of a cloud
(`spatial_rank` 1) or H x W pixels of an image (`spatial_rank` 2). A batch stacks B samples, each
padded to a capacity taken from a few fixed buckets, plus a bool mask [B, *capacity] of the real
entries, so the jitted steps compile once per bucket (docs/model_api.md):

    point clouds (SemanticKITTI)   points float32 [B, P, 4], labels int32 [B, P], point_mask [B, P]
    coloured clouds (S3DIS)        points float32 [B, P, 6], labels int32 [B, P], point_mask [B, P]
    images (Pascal VOC)            image float32 [B, H, W, 3], labels int32 [B, H, W], pixel_mask

A dataset declares its `BatchSpec`; a model declares the one it needs (`input_spec()`); the trainer
checks that the first satisfies the second (`check_compatible`) and pads with `pad_batch`. Nothing
is cropped to fit: a sample larger than every bucket is an error naming it.

A field may be *optional* (`FieldSpec.optional`): a sample may leave it out, and a batch holds it
when any of its samples does (zero padding; a sample with entries may then not lack it). The one
the library reads is `LABEL_COUNTS` int32 [N, C]: how many scored raw points of each label id a
model entry stands for, e.g. a grid-subsampled point of a static scene (datasets/scenes/). When a
batch has it, the evaluation counts the confusion from it instead of from the entries' labels
(leakjax/train/steps.py `make_eval_step`): every raw point is scored by the prediction of the
entry it was projected to, with static shapes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

LABEL_COUNTS = "label_counts"  # the optional per-entry raw label histogram (module docstring)


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One array of a sample: its dtype, the shape after the spatial dims (e.g. (4,) or ()), and
    whether samples may leave it out (module docstring)."""

    dtype: str
    trailing_shape: tuple[int, ...] = ()
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """The keys, dtypes and shapes of a batch (module docstring).

    Attributes:
      fields: {key: FieldSpec} of the per-sample arrays, the labels included.
      spatial_rank: 1 for point sets, 2 for images.
      mask_key: the key of the bool mask of real entries added by `pad_batch`.
      label_key: the key of the int label ids.
    """

    fields: Mapping[str, FieldSpec]
    spatial_rank: int = 1
    mask_key: str = "point_mask"
    label_key: str = "labels"

    def __post_init__(self):
        if self.label_key not in self.fields:
            raise ValueError(
                f"BatchSpec: label key {self.label_key!r} not among {list(self.fields)}"
            )
        if self.mask_key in self.fields:
            raise ValueError(f"BatchSpec: mask key {self.mask_key!r} must not be a sample field")
        if self.fields[self.label_key].optional:
            raise ValueError(f"BatchSpec: the label field {self.label_key!r} cannot be optional")
        if self.spatial_rank not in (1, 2):
            raise ValueError(f"BatchSpec: spatial_rank {self.spatial_rank} not in (1, 2)")

    def capacity(self, bucket) -> tuple[int, ...]:
        """A bucket as a tuple of spatial sizes: an int P for point sets, (H, W) for images."""
        shape = (int(bucket),) if np.ndim(bucket) == 0 else tuple(int(v) for v in bucket)
        if len(shape) != self.spatial_rank:
            raise ValueError(f"bucket {bucket!r}: expected {self.spatial_rank} spatial sizes")
        return shape

    def sample_size(self, sample: Mapping[str, np.ndarray]) -> tuple[int, ...]:
        """The spatial size of a sample (checked to agree across its fields)."""
        missing = [k for k, f in self.fields.items() if not f.optional and k not in sample]
        if missing:
            raise ValueError(f"sample lacks the fields {missing}")
        sizes = {
            key: tuple(np.shape(sample[key])[: self.spatial_rank])
            for key in self.fields
            if key in sample
        }
        if len(set(sizes.values())) != 1:
            raise ValueError(f"sample fields disagree on their spatial size: {sizes}")
        return next(iter(sizes.values()))

    def empty_sample(self) -> dict[str, np.ndarray]:
        """A sample with no entries, optional fields included (fills the last evaluation batch,
        so every process's share of it has the same fields; initialises models)."""
        zeros = (0,) * self.spatial_rank
        return {k: np.zeros(zeros + f.trailing_shape, f.dtype) for k, f in self.fields.items()}

    def check_compatible(self, required: BatchSpec, what: str) -> None:
        """ValueError naming `what` unless this (data) spec provides everything `required` needs."""
        problems = []
        if required.spatial_rank != self.spatial_rank:
            problems.append(f"spatial rank {self.spatial_rank} != {required.spatial_rank}")
        if required.mask_key != self.mask_key or required.label_key != self.label_key:
            problems.append(
                f"mask/label keys ({self.mask_key}, {self.label_key}) != "
                f"({required.mask_key}, {required.label_key})"
            )
        for key, field in required.fields.items():
            if key not in self.fields:
                problems.append(f"missing field {key!r}")
            elif self.fields[key].optional and not field.optional:
                problems.append(f"field {key!r} is optional in the data, the model needs it")
            elif self.fields[key] != field:
                problems.append(f"field {key!r} is {self.fields[key]}, needs {field}")
        if problems:
            raise ValueError(f"{what}: the data does not fit the model: " + "; ".join(problems))


def point_cloud_spec(channels: int, label_counts: int | None = None) -> BatchSpec:
    """Point sets: points float32 [P, channels], labels int32 [P], mask point_mask; with
    `label_counts` = C, the optional LABEL_COUNTS int32 [P, C] too."""
    fields = {"points": FieldSpec("float32", (channels,)), "labels": FieldSpec("int32")}
    if label_counts is not None:
        fields[LABEL_COUNTS] = FieldSpec("int32", (int(label_counts),), optional=True)
    return BatchSpec(fields, spatial_rank=1, mask_key="point_mask")


def image_spec(channels: int = 3) -> BatchSpec:
    """Images: image float32 [H, W, channels], labels int32 [H, W], mask pixel_mask."""
    return BatchSpec(
        {"image": FieldSpec("float32", (channels,)), "labels": FieldSpec("int32")},
        spatial_rank=2,
        mask_key="pixel_mask",
    )


def choose_capacity(size: Sequence[int], buckets: Sequence, spec: BatchSpec, what: str):
    """The smallest bucket (by area) holding `size` in every spatial dim; ValueError naming `what`.

    Returns the bucket as a tuple of spatial sizes.
    """
    shapes = sorted((spec.capacity(b) for b in buckets), key=lambda s: (int(np.prod(s)), s))
    for shape in shapes:
        if all(n <= c for n, c in zip(size, shape)):
            return shape
    noun = "points" if spec.spatial_rank == 1 else "pixels (H, W)"
    shown = size[0] if spec.spatial_rank == 1 else tuple(size)
    largest = shapes[-1][0] if spec.spatial_rank == 1 else shapes[-1]
    raise ValueError(
        f"{what}: {shown} {noun} exceed the largest capacity bucket {largest}; add a larger "
        "bucket to config.data.buckets (samples are never cropped or dropped silently)"
    )


def pad_batch(
    samples: Sequence[Mapping[str, np.ndarray]],
    capacity,
    spec: BatchSpec,
    label_fill: int = 0,
) -> dict[str, np.ndarray]:
    """Stacks samples padded to `capacity` (int or tuple); adds the mask [B, *capacity].

    Padding is zero, labels `label_fill` (the label space's `no_label`); the mask is what counts.
    An optional field is in the batch when any sample has it; a sample with entries that lacks
    it is then an error (only entry-less samples, e.g. the evaluation's fillers, may).
    """
    capacity = spec.capacity(capacity)
    fields = {
        key: field
        for key, field in spec.fields.items()
        if not field.optional or any(key in sample for sample in samples)
    }
    batch = {
        key: np.zeros((len(samples), *capacity, *field.trailing_shape), field.dtype)
        for key, field in fields.items()
    }
    batch[spec.label_key][...] = label_fill
    mask = np.zeros((len(samples), *capacity), bool)
    for row, sample in enumerate(samples):
        size = spec.sample_size(sample)
        if any(n > c for n, c in zip(size, capacity)):
            raise ValueError(f"pad_batch: sample {row} of size {size} > capacity {capacity}")
        region = (row, *(slice(0, n) for n in size))
        for key, field in fields.items():
            if key not in sample:
                if int(np.prod(size)):  # its entries would silently count as zeros
                    raise ValueError(
                        f"pad_batch: sample {row} lacks the optional field {key!r} that another "
                        "sample of the batch has"
                    )
                continue
            value = np.asarray(sample[key])
            if value.shape[spec.spatial_rank :] != field.trailing_shape:
                raise ValueError(
                    f"pad_batch: sample {row} field {key!r} has shape {value.shape}, expected "
                    f"{(*size, *field.trailing_shape)}"
                )
            batch[key][region] = value
        mask[region] = True
    batch[spec.mask_key] = mask
    return batch
