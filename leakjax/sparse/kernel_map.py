"""Kernel maps: which input row feeds which output row through which kernel offset.

A map is built once per resolution and shared by every conv at that level (spconv's indice_key):
one 3x3x3 submanifold map serves the (1,3,3), (3,1,3), (3,1,1), ... sub-kernels by selecting
offsets, and one down-sampling map serves the strided conv and, transposed, the inverse conv.

Offsets are in lexicographic (dx, dy, dz) order, dx, dy, dz in [-r, r] (r = kernel radius per
axis), so offset index k matches `weight.reshape(K, C_in, C_out)` for weight [kx, ky, kz, ...].
Conventions (p fine/input voxel, q output voxel, o offset, s stride, d dilation):
  submanifold: q in the input set,  p = q + o * d
  down:        p = q * s + o * d    (spconv SparseConv3d / a dense conv with padding r * d)
  inverse:     the down map read backwards (output = the fine set).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from leakjax.sharding import per_device_samples
from leakjax.sparse.pairs import PairList, build_class_pair_list, build_pair_list
from leakjax.sparse.search import build_index, column_lookup, sorted_search
from leakjax.sparse.tensor import (
    SENTINEL_KEY,
    SparseTensor,
    check_key_range,
    decode_keys,
    encode_keys,
)

DOWNSAMPLE_MODES = ("spconv", "floor")


def kernel_offsets(kernel_size, dilation=(1, 1, 1)) -> np.ndarray:
    """int32 [K, 3] offsets (dilated) in lexicographic order for an odd kernel."""
    if any(k % 2 == 0 or k < 1 for k in kernel_size) or len(kernel_size) != 3:
        raise ValueError(f"kernel_size must be 3 odd positive ints, got {kernel_size}")
    axes = [np.arange(k) - k // 2 for k in kernel_size]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    return (grid * np.asarray(dilation)).astype(np.int32)


def sub_kernel_indices(kernel_size, sub_kernel) -> np.ndarray:
    """Positions, among the offsets of `kernel_size`, of the offsets of a centred `sub_kernel`."""
    if any(s > k for s, k in zip(sub_kernel, kernel_size)):
        raise ValueError(f"kernel {sub_kernel} does not fit in the map's kernel {kernel_size}")
    full = kernel_offsets(kernel_size)
    inside = np.all(np.abs(full) <= np.asarray(sub_kernel) // 2, axis=-1)
    return np.nonzero(inside)[0].astype(np.int32)


@struct.dataclass
class KernelMap:
    """Neighbour relation between an input and an output set of one level (per sample).

    neighbours: int32 [B, N_out, K] input row feeding output row q through offset k; -1 if none.
    reverse:    int32 [B, N_in, K] output row fed by input row p through offset k; -1 if none.
    pairs:      {sub-kernel shape: PairList} compact real-pair lists for the fast dataflow.
    submanifold: output set == input set (the centre offset is the identity and not in `pairs`).
    """

    neighbours: jax.Array
    reverse: jax.Array
    pairs: dict
    kernel_size: tuple[int, int, int] = struct.field(pytree_node=False)
    dilation: tuple[int, int, int] = struct.field(pytree_node=False)
    stride: tuple[int, int, int] = struct.field(pytree_node=False)
    submanifold: bool = struct.field(pytree_node=False)

    @property
    def overflow(self) -> jax.Array:
        """bool [B]: some pair list ran out of capacity (its convs would be wrong)."""
        flags = [p.overflow for p in self.pairs.values()]
        return (
            jnp.any(jnp.stack(flags), axis=0)
            if flags
            else jnp.zeros(self.neighbours.shape[0], bool)
        )

    def num_real_pairs(self) -> jax.Array:
        """int32 [B] real (input, output, offset) triples, centre offset included."""
        return jnp.sum(self.neighbours >= 0, axis=(1, 2)).astype(jnp.int32)


def _check_tensor(x: SparseTensor, what: str):
    if x.coords.ndim != 3 or x.coords.shape[-1] != 3 or x.mask.shape != x.coords.shape[:2]:
        raise ValueError(
            f"{what}: coords must be [B, N, 3] and mask [B, N], got "
            f"{x.coords.shape}, {x.mask.shape}"
        )
    check_key_range(x.spatial_shape, f"{what}: spatial_shape")


def _pair_lists(kernel_size, pair_kernels, submanifold, pair_capacity, build):
    """{sub-kernel: PairList [B, ...]}; submanifold lists hold the o > 0 half, mirrored.

    build(sel, mirror, capacity) -> the batched PairList of the offsets `sel` (mirror: the -o of
    each for a submanifold map, else None; capacity: the static pair bound for this list).
    """
    num_offsets = math.prod(kernel_size)
    lists = {}
    for sub in (tuple(kernel_size),) if pair_kernels is None else pair_kernels:
        sel = sub_kernel_indices(kernel_size, sub)
        mirror = None
        capacity = pair_capacity
        if submanifold:
            sel = sel[sel > num_offsets // 2]  # centre = identity; -o comes from mirroring o
            mirror = num_offsets - 1 - sel
            capacity = None if pair_capacity is None else -(-int(pair_capacity) // 2)
        if sel.size == 0:
            continue
        lists[tuple(sub)] = build(sel, mirror, capacity)
    return lists


def _table_lists(columns, num_inputs, tile_size):
    """`_pair_lists` builder from a table: columns(sel) -> int32 [B, N_out, len(sel)], the map's
    input rows for the offsets `sel` (-1 = none)."""

    def build(sel, mirror, capacity):
        return jax.vmap(lambda c: build_pair_list(c, sel, num_inputs, capacity, tile_size, mirror))(
            columns(sel)
        )

    return build


def _axis_offsets(kernel_size, dilation):
    """Lexicographic (dx, dy) columns [C, 2] and ascending dz values of a (dilated) kernel."""
    ax = [(np.arange(k) - k // 2) * d for k, d in zip(kernel_size, dilation)]
    columns = np.stack(np.meshgrid(ax[0], ax[1], indexing="ij"), -1).reshape(-1, 2)
    return columns, ax[2]


def _mirror_columns(upper, valid):
    """Submanifold table [N, K] from its o > 0 half [N, H]: row i has p at -o iff p has i at o."""
    n, half = upper.shape
    rows = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None], upper.shape)
    target = jnp.where(upper >= 0, upper, n)
    lower = jnp.full((n + 1, half), -1, jnp.int32).at[target, jnp.arange(half)].set(rows)[:n]
    centre = jnp.where(valid, jnp.arange(n, dtype=jnp.int32), -1)[:, None]
    return jnp.concatenate([lower[:, ::-1], centre, upper], axis=1)


def submanifold_map(
    x: SparseTensor,
    kernel_size=(3, 3, 3),
    dilation=(1, 1, 1),
    *,
    pair_kernels=None,
    pair_capacity: int | None = None,
    tile_size: int | None = None,
) -> KernelMap:
    """Submanifold map of a level (output set = input set).

    x: SparseTensor (coords [B, N, 3], mask [B, N]); kernel_size odd per axis; dilation per axis.
    pair_kernels: sub-kernel shapes whose pair lists to build (default: kernel_size only); convs
      with other sub-kernels fall back to the (N, K) gather path.
    pair_capacity: static bound on real non-centre pairs per sample and sub-kernel (default: the
      worst case K * N, which never overflows); `KernelMap.overflow` flags a too small bound.
    """
    _check_tensor(x, "submanifold_map")
    kernel_offsets(kernel_size, dilation)  # validates the kernel
    return per_device_samples(
        lambda x, _: _submanifold_map(
            x, kernel_size, dilation, pair_kernels, pair_capacity, tile_size
        ),
        x,
    )


def _submanifold_map(x, kernel_size, dilation, pair_kernels, pair_capacity, tile_size):
    columns, z_offsets = _axis_offsets(kernel_size, dilation)
    middle = len(columns) // 2
    positive_z = z_offsets[len(z_offsets) // 2 + 1 :]

    def upper_half(coords, mask):
        # Offsets after the centre in lexicographic order: (0, 0, dz > 0), then whole columns.
        index = build_index(coords, mask, x.spatial_shape)
        parts = []
        if positive_z.size:
            parts.append(
                column_lookup(index, coords, mask, columns[middle : middle + 1], positive_z)
            )
        if middle + 1 < len(columns):
            parts.append(column_lookup(index, coords, mask, columns[middle + 1 :], z_offsets))
        if not parts:  # a 1x1x1 kernel has no offset besides the centre
            return jnp.zeros((coords.shape[0], 0), jnp.int32)
        return jnp.concatenate([p.reshape(coords.shape[0], -1) for p in parts], axis=1)

    upper = jax.vmap(upper_half)(x.coords, x.mask)  # [B, N, K // 2]
    centre = math.prod(kernel_size) // 2
    # Convs on the pair path need only `upper`; the full tables are dropped by XLA when unused.
    neighbours = jax.vmap(_mirror_columns)(upper, x.mask)
    reverse = neighbours[:, :, ::-1]  # offset -o is index K-1-k for a centred odd kernel
    columns = lambda sel: upper[:, :, sel - centre - 1]  # noqa: E731
    pairs = _pair_lists(
        kernel_size, pair_kernels, True, pair_capacity, _table_lists(columns, x.capacity, tile_size)
    )
    return KernelMap(
        neighbours, reverse, pairs, tuple(kernel_size), tuple(dilation), (1, 1, 1), True
    )


def _unique_sorted(keys, capacity):
    """Fixed-size unique of int32 keys [P] -> (sorted unique keys [capacity], uncapped count).

    A key-only sort: XLA sorts a single int32 array several times faster than one with a payload.
    """
    keys = jnp.sort(keys)
    is_new = (keys != jnp.roll(keys, 1)).at[0].set(True) & (keys != SENTINEL_KEY)
    rank = jnp.cumsum(is_new, dtype=jnp.int32) - 1
    count = jnp.sum(is_new).astype(jnp.int32)
    slot = jnp.where(is_new & (rank < capacity), rank, capacity)
    unique = jnp.full((capacity,), SENTINEL_KEY, jnp.int32).at[slot].min(keys, mode="drop")
    return unique, count


def downsample_map(
    x: SparseTensor,
    kernel_size=(3, 3, 3),
    stride=(2, 2, 2),
    out_capacity: int | None = None,
    mode: str = "spconv",
    *,
    dilation=(1, 1, 1),
    pair_kernels=None,
    pair_capacity: int | None = None,
    tile_size: int | None = None,
):
    """Coarse output set and fine->coarse map of a strided conv.

    mode "spconv": every coarse cell q reached by an active input, p = q * s + o * d (SparseConv3d
      with padding r * d, r = kernel radius, d = dilation); mode "floor": the cells floor(p / s)
      only, with the same pair rule.
    Returns (coarse SparseTensor with feats of width 0 [B, out_capacity, 0], KernelMap whose
    `neighbours` is coarse-major [B, N_out, K] and `reverse` fine-major [B, N_in, K],
    overflow bool [B] = more coarse cells than out_capacity (default: the input capacity)).
    """
    _check_tensor(x, "downsample_map")
    if mode not in DOWNSAMPLE_MODES:
        raise ValueError(f"downsample_map: mode must be one of {DOWNSAMPLE_MODES}, got {mode!r}")
    if len(stride) != 3 or min(stride) < 1:
        raise ValueError(f"downsample_map: stride must be 3 positive ints, got {stride}")
    if len(dilation) != 3 or min(dilation) < 1:
        raise ValueError(f"downsample_map: dilation must be 3 positive ints, got {dilation}")
    out_capacity = out_capacity or x.capacity
    kernel_offsets(kernel_size, dilation)  # validates the kernel
    return per_device_samples(
        lambda x, _: _downsample_map(
            x,
            kernel_size,
            stride,
            out_capacity,
            mode,
            dilation,
            pair_kernels,
            pair_capacity,
            tile_size,
        ),
        x,
    )


def _downsample_map(
    x, kernel_size, stride, out_capacity, mode, dilation, pair_kernels, pair_capacity, tile_size
):
    radius = np.asarray(kernel_size) // 2
    s = jnp.asarray(stride, jnp.int32)
    out_shape = tuple(-(-n // st) for n, st in zip(x.spatial_shape, stride))
    columns, z_offsets = _axis_offsets(kernel_size, dilation)
    # Per axis, tap t (0 <= t < k) joins p to q = (a - t d) / s with a = p + r d, which needs
    # t d = a (mod s): with g = gcd(d, s) that is g | a and t = t0 (mod s / g), where
    # t0 = (a / g) (d / g)^-1 mod (s / g). So at most ceil(k / (s / g)) coarse cells reach a
    # fine cell per axis: enumerate only those (for d = 1: t0 = (p + r) mod s).
    gcd = np.gcd(np.asarray(dilation), np.asarray(stride))
    period = np.asarray(stride) // gcd
    inverse = np.asarray(
        [pow(int(d // g), -1, int(m)) if m > 1 else 0 for d, g, m in zip(dilation, gcd, period)]
    )
    per_axis = [-(-k // m) for k, m in zip(kernel_size, period)]
    choice = np.stack(np.meshgrid(*[np.arange(m) for m in per_axis], indexing="ij"), -1)
    choice = jnp.asarray(choice.reshape(-1, 3) * period, jnp.int32)  # [M, 3]
    # Tap t of the kernel = residue class (t mod period per axis) x choice (t // period per axis).
    taps = kernel_offsets(kernel_size) + radius  # [K, 3], lexicographic
    tap_class = np.ravel_multi_index(tuple((taps % period).T), tuple(period))
    tap_choice = np.ravel_multi_index(tuple((taps // period).T), tuple(per_axis))
    num_classes = int(np.prod(period))
    dil, gcd, period, inverse = (
        jnp.asarray(v, jnp.int32) for v in (dilation, gcd, period, inverse)
    )

    num_offsets = math.prod(kernel_size)

    def one(coords, mask):
        if mode == "floor":
            candidates = (coords // s)[:, None, :]
        else:  # q = (a - t d) / s for the taps t in [0, k) with a - t d divisible by s
            shifted = coords + jnp.asarray(radius, jnp.int32) * dil  # a
            first = (shifted // gcd) * inverse % period  # t0
            tap = first[:, None, :] + choice[None]  # [N, M, 3]
            ok = (tap < jnp.asarray(kernel_size)) & (shifted[:, None] % gcd == 0)
            candidates = jnp.where(ok, (shifted[:, None] - tap * dil) // s, -1)
        cand_ok = mask[:, None] & jnp.all(
            (candidates >= 0) & (candidates < jnp.asarray(out_shape)), -1
        )
        keys = encode_keys(candidates, cand_ok, out_shape)
        unique, count = _unique_sorted(keys.reshape(-1), out_capacity)
        out_mask = unique != SENTINEL_KEY
        out_coords = jnp.where(out_mask[:, None], decode_keys(unique, out_shape), 0)
        if mode == "floor":  # pairs also join cells other than floor(p / s): search them
            fine_index = build_index(coords, mask, x.spatial_shape)
            neighbours = column_lookup(fine_index, out_coords * s, out_mask, columns, z_offsets)
            neighbours = neighbours.reshape(out_capacity, -1)
        else:  # every candidate is a real pair (fine row, coarse row, tap): look up its row only
            out_row = sorted_search(unique, keys)
            found = (keys != SENTINEL_KEY) & (
                unique[jnp.minimum(out_row, out_capacity - 1)] == keys
            )
            candidate_out = jnp.where(found, out_row, -1)  # [N, M]
            row_class = jnp.where(
                mask & jnp.all(shifted % gcd == 0, -1),
                (first[:, 0] * period[1] + first[:, 1]) * period[2] + first[:, 2],
                num_classes,
            )
            out_row = jnp.where(found, out_row, out_capacity)
            offset_index = (tap[..., 0] * kernel_size[1] + tap[..., 1]) * kernel_size[2] + tap[
                ..., 2
            ]
            in_row = jnp.broadcast_to(
                jnp.arange(coords.shape[0], dtype=jnp.int32)[:, None], out_row.shape
            )
            neighbours = (
                jnp.full((out_capacity + 1, num_offsets), -1, jnp.int32)
                .at[out_row, jnp.where(found, offset_index, 0)]
                .set(in_row)[:out_capacity]
            )
        # Fine-major table (gather path of the inverse conv); dropped by XLA when unused.
        target = jnp.where(neighbours >= 0, neighbours, x.capacity)
        rows = jnp.broadcast_to(jnp.arange(out_capacity, dtype=jnp.int32)[:, None], target.shape)
        reverse = (
            jnp.full((x.capacity + 1, num_offsets), -1, jnp.int32)
            .at[target, jnp.arange(num_offsets)]
            .set(rows)[: x.capacity]
        )
        if mode == "floor":
            candidate_out = row_class = None
        return (
            out_coords,
            out_mask,
            neighbours,
            reverse,
            count > out_capacity,
            (
                row_class,
                candidate_out,
            ),
        )

    out_coords, out_mask, neighbours, reverse, overflow, (row_class, candidate_out) = jax.vmap(one)(
        x.coords, x.mask
    )
    if mode == "floor":  # from the searched table
        build = _table_lists(lambda sel: neighbours[:, :, sel], x.capacity, tile_size)
    else:  # from the fine rows' candidates, without the dense [N_out, K] table

        def build(sel, mirror, capacity):
            return jax.vmap(
                lambda c, o: build_class_pair_list(
                    c,
                    o,
                    num_classes,
                    tap_class[sel],
                    tap_choice[sel],
                    sel,
                    out_capacity,
                    capacity,
                    tile_size,
                )
            )(row_class, candidate_out)

    pairs = _pair_lists(kernel_size, pair_kernels, False, pair_capacity, build)
    coarse = SparseTensor(
        coords=out_coords,
        feats=jnp.zeros(out_coords.shape[:2] + (0,), jnp.float32),
        mask=out_mask,
        spatial_shape=out_shape,
        stride=tuple(a * b for a, b in zip(x.stride, stride)),
    )
    kernel_map = KernelMap(
        neighbours, reverse, pairs, tuple(kernel_size), tuple(dilation), tuple(stride), False
    )
    return coarse, kernel_map, overflow


__all__ = [
    "KernelMap",
    "PairList",
    "kernel_offsets",
    "sub_kernel_indices",
    "submanifold_map",
    "downsample_map",
]
