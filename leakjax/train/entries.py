"""Per-entry bookkeeping around a model's host-side `prepare_batch` (docs/model_api.md).

`prepare_batches` runs it; `with_positions` adds each entry's position before it (INDEX_KEY), and
`in_source_order` puts one sample's outputs back where its entries were, since a model may permute
entries (RandLA-Net's shuffle). Used by the renders, predictions, features and voted evaluation
(leakjax/train/trainer.py, leakjax/train/votes.py, experiments/predict.py).
"""

from collections.abc import Iterator

import flax.linen as nn
import numpy as np


def prepare_batches(model: nn.Module, batches: Iterator[dict]) -> Iterator[dict]:
    """The model's host-side batch preparation, if it has one (docs/model_api.md): e.g. neighbour
    indices computed on the host in the input pipeline's thread. Deterministic numpy."""
    prepare = getattr(model, "prepare_batch", None)
    return batches if prepare is None else map(prepare, batches)


INDEX_KEY = "_entry_index"  # batch field: every entry's position in the padded sample


def with_positions(batch: dict[str, np.ndarray], mask_key: str) -> dict[str, np.ndarray]:
    """The batch plus INDEX_KEY int32 [B, *S]: each entry's flat position before the model's
    `prepare_batch`, which may permute entries (RandLA-Net's shuffle): outputs can be put back."""
    mask = batch[mask_key]
    capacity = mask.shape[1:]
    positions = np.arange(int(np.prod(capacity)), dtype=np.int32).reshape(capacity)
    return {**batch, INDEX_KEY: np.broadcast_to(positions, mask.shape).copy()}


def in_source_order(
    values: np.ndarray,
    positions: np.ndarray,
    mask: np.ndarray,
    size: tuple[int, ...],
    fill: int,
    what: str,
) -> np.ndarray:
    """One sample's per-entry outputs put back where its entries were before `prepare_batch`.

    Args:
      values: [*S, ...] outputs of one batch row, in the prepared (possibly permuted) order
        (trailing dims, e.g. class probabilities [*S, C], travel with their entry).
      positions: int [*S] INDEX_KEY of that row (`with_positions`, permuted alike).
      mask: bool [*S] its real entries, in the prepared order.
      size: the sample's own spatial size (its entries fill the first `size` of the capacity).
      fill: the value of positions no entry came back to (none, checked).
      what: names the sample in the error when the prepared row lost, added or repeated entries.
    Returns: [*size, ...] values in the sample's order.
    """
    capacity = mask.shape
    flat = positions[mask]
    where = np.unravel_index(flat, capacity)
    inside = all(np.all(w < s) for w, s in zip(where, size))
    count = int(np.prod(size))
    if not inside or len(flat) != count or len(np.unique(flat)) != count:
        raise ValueError(f"{what}: the prepared batch does not hold every entry of the sample once")
    out = np.full(tuple(size) + values.shape[mask.ndim :], fill, values.dtype)
    out[where] = values[mask]
    return out
