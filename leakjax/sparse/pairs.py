"""Compact lists of the real (input row, output row, offset) pairs of a kernel map.

The dense (N, K) gather multiplies every slot, though only 24-32% of the 27 slots of a LiDAR voxel
are real neighbours. A PairList keeps only the real pairs, grouped by offset into fixed-size tiles
(each tile belongs to one offset), so a conv is: gather input rows -> one small GEMM per tile with
that tile's weight -> gather each output row's <= K products and sum. Both directions are stored,
so the backward (and the inverse conv) are gathers too: no scatter anywhere.

Capacities are static: `num_tiles * tile_size` slots per sample; the real pairs of offset j start at
tile boundary `tile_start[j]`; slots without a pair point to a zero row (index N). If the real pairs
need more tiles than exist, `overflow` is set and the conv result is wrong: callers must act.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

DEFAULT_MAX_TILE = 128


@struct.dataclass
class PairList:
    """Real pairs of one sample (vmapped: every array gains a leading batch axis)."""

    in_rows: jax.Array  # int32 [S] input row of each slot; N_in for empty slots
    out_rows: jax.Array  # int32 [S] output row of each slot; N_out for empty slots
    tile_offset: jax.Array  # int32 [S // T] index into `offsets` of each tile
    out_slots: jax.Array  # int32 [N_out, K_sel] slot of (output row, offset); S if none
    in_slots: jax.Array  # int32 [N_in, K_sel] slot of (input row, offset); S if none
    num_pairs: jax.Array  # int32 [] real pairs
    overflow: jax.Array  # bool [] real pairs did not fit
    offsets: tuple[int, ...] = struct.field(pytree_node=False)  # offset indices of the full map
    tile_size: int = struct.field(pytree_node=False)


def default_tile_size(num_rows: int) -> int:
    """Tiles big enough for a fast GEMM, small enough that <= K part-empty tiles waste little."""
    return int(min(DEFAULT_MAX_TILE, max(8, 2 ** int(np.ceil(np.log2(max(num_rows, 1) / 32))))))


def build_pair_list(
    neighbours,
    reverse,
    offsets: np.ndarray,
    pair_capacity: int | None = None,
    tile_size: int | None = None,
) -> PairList:
    """Pair list of one sample for the selected offsets.

    neighbours int32 [N_out, K] (input row or -1), reverse int32 [N_in, K] (output row or -1),
    offsets: static indices into K. pair_capacity: static bound on real pairs (default: the worst
    case len(offsets) * min(N_out, N_in)).
    """
    n_out, n_in = neighbours.shape[0], reverse.shape[0]
    k_sel = len(offsets)
    tile = tile_size or default_tile_size(n_out)
    bound = k_sel * min(n_out, n_in) if pair_capacity is None else int(pair_capacity)
    num_tiles = -(-bound // tile) + k_sel  # each offset wastes < one tile
    num_tiles = min(num_tiles, k_sel * -(-min(n_out, n_in) // tile))
    slots = num_tiles * tile

    sel = jnp.asarray(offsets, jnp.int32)
    in_of_out = neighbours[:, sel]  # [N_out, K_sel]
    valid = in_of_out >= 0
    counts = jnp.sum(valid, axis=0, dtype=jnp.int32)
    tiles_per_offset = -(-counts // tile)
    tile_end = jnp.cumsum(tiles_per_offset)
    tile_start = tile_end - tiles_per_offset
    rank = jnp.cumsum(valid, axis=0, dtype=jnp.int32) - 1
    slot = tile_start[None, :] * tile + rank
    placed = valid & (slot < slots)
    out_slots = jnp.where(placed, slot, slots).astype(jnp.int32)

    rows = jnp.broadcast_to(jnp.arange(n_out, dtype=jnp.int32)[:, None], out_slots.shape)
    out_rows = jnp.full((slots + 1,), n_out, jnp.int32).at[out_slots].set(rows)[:slots]
    tile_offset = jnp.minimum(
        jnp.searchsorted(tile_end, jnp.arange(num_tiles), side="right"), k_sel - 1
    ).astype(jnp.int32)
    slot_offset = jnp.repeat(tile_offset, tile, total_repeat_length=slots)
    in_rows = jnp.where(
        out_rows < n_out, in_of_out[jnp.minimum(out_rows, n_out - 1), slot_offset], n_in
    ).astype(jnp.int32)

    out_of_in = reverse[:, sel]  # [N_in, K_sel]
    in_slots = jnp.where(
        out_of_in >= 0,
        out_slots[jnp.maximum(out_of_in, 0), jnp.arange(k_sel)[None, :]],
        slots,
    ).astype(jnp.int32)
    num_pairs = jnp.sum(counts)
    return PairList(
        in_rows=in_rows,
        out_rows=out_rows,
        tile_offset=tile_offset,
        out_slots=out_slots,
        in_slots=in_slots,
        num_pairs=num_pairs,
        overflow=tile_end[-1] > num_tiles,
        offsets=tuple(int(k) for k in offsets),
        tile_size=tile,
    )
