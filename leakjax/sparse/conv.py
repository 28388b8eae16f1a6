"""Sparse convolution dataflows and the public functional `submanifold_conv`.

Two exact dataflows over a KernelMap:
- "gather": the reference. Every output row gathers its K neighbour slots ([N, K, C_in], absent
  neighbours read a zero row) and one GEMM with the stacked weight does the rest. Simple, but on a
  LiDAR scan 3-4x of the multiplies are with zeros.
- "pairs": only real pairs (see pairs.py): gather input rows per slot -> per-tile GEMM with the
  tile's offset weight -> every output row sums its <= K products by gather. A custom VJP makes the
  backward the same three steps with the transposed map (no scatter-add), and the weight gradient a
  per-tile feats^T @ grad_out summed per offset.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from leakjax.sparse.kernel_map import KernelMap, kernel_offsets, sub_kernel_indices
from leakjax.sparse.pairs import PairList
from leakjax.sparse.search import build_index, lookup

METHODS = ("auto", "pairs", "gather")


def _with_zero_row(x):
    return jnp.concatenate([x, jnp.zeros((1,) + x.shape[1:], x.dtype)], axis=0)


def gather_conv(feats, table, weight):
    """Reference (N, K) dataflow for one sample.

    feats [N_in, C_in]; table int32 [N_out, K] input row per (output, offset), -1 if none;
    weight [K, C_in, C_out] -> [N_out, C_out].
    """
    rows = jnp.where(table >= 0, table, feats.shape[0])
    gathered = _with_zero_row(feats)[rows]  # [N_out, K, C_in]
    return jnp.einsum("nkc,kcd->nd", gathered, weight)


def _sum_slots(products, slots):
    """out[n] = sum_k products[slots[n, k]] (slot S = zero row). [S, C], [N, K] -> [N, C]."""
    table = _with_zero_row(products)
    out = table[slots[:, 0]]
    for k in range(1, slots.shape[1]):
        out = out + table[slots[:, k]]
    return out


def _tile_matmul(rows, tile_weights):
    """[S, C_in] x per-tile [num_tiles, C_in, C_out] -> [S, C_out]."""
    num_tiles = tile_weights.shape[0]
    tiles = rows.reshape(num_tiles, -1, rows.shape[-1])
    return jnp.einsum("tpc,tcd->tpd", tiles, tile_weights).reshape(rows.shape[0], -1)


@jax.custom_vjp
def _pair_conv(feats, weight, in_rows, out_rows, tile_offset, out_slots, in_slots):
    out, _ = _pair_conv_fwd(feats, weight, in_rows, out_rows, tile_offset, out_slots, in_slots)
    return out


def _pair_conv_fwd(feats, weight, in_rows, out_rows, tile_offset, out_slots, in_slots):
    gathered = _with_zero_row(feats)[in_rows]  # [S, C_in]
    products = _tile_matmul(gathered, weight[tile_offset])  # [S, C_out]
    out = _sum_slots(products, out_slots)
    return out, (gathered, weight, out_rows, tile_offset, in_slots)


def _pair_conv_bwd(residuals, grad_out):
    gathered, weight, out_rows, tile_offset, in_slots = residuals
    grad_slots = _with_zero_row(grad_out)[out_rows]  # [S, C_out]
    grad_gathered = _tile_matmul(grad_slots, jnp.swapaxes(weight[tile_offset], 1, 2))
    grad_feats = _sum_slots(grad_gathered, in_slots)
    num_tiles = tile_offset.shape[0]
    tile_grads = jnp.einsum(
        "tpc,tpd->tcd",
        gathered.reshape(num_tiles, -1, gathered.shape[-1]),
        grad_slots.reshape(num_tiles, -1, grad_slots.shape[-1]),
    )
    grad_weight = jax.ops.segment_sum(
        tile_grads, tile_offset, weight.shape[0], indices_are_sorted=True
    )
    return grad_feats, grad_weight, None, None, None, None, None


_pair_conv.defvjp(_pair_conv_fwd, _pair_conv_bwd)


def pair_conv(feats, pairs: PairList, weight, transpose: bool = False):
    """Pair-list dataflow for one sample: feats [N_in, C_in], weight [len(pairs.offsets), C_in,
    C_out] (in the pair list's offset order) -> [N_out, C_out]. `transpose` runs the map backwards
    (output = the map's input set), as the inverse conv does."""
    if transpose:
        return _pair_conv(
            feats,
            weight,
            pairs.out_rows,
            pairs.in_rows,
            pairs.tile_offset,
            pairs.in_slots,
            pairs.out_slots,
        )
    return _pair_conv(
        feats,
        weight,
        pairs.in_rows,
        pairs.out_rows,
        pairs.tile_offset,
        pairs.out_slots,
        pairs.in_slots,
    )


def sparse_conv(
    feats,
    kernel_map: KernelMap,
    weight,
    *,
    in_mask=None,
    out_mask=None,
    transpose: bool = False,
    method: str = "auto",
):
    """Convolve per-sample padded features through a kernel map.

    feats [B, N_in, C_in] on the map's input set (its output set if `transpose`);
    weight [kx, ky, kz, C_in, C_out], a centred sub-kernel of the map's kernel;
    in_mask / out_mask bool [B, N] zero padding rows (never read / written as zero).
    transpose: the inverse conv through a down-sampling map (fine set restored).
    method: "pairs" (real pairs only; needs the sub-kernel's pair list in the map), "gather"
      (reference), or "auto" = pairs when available. Returns [B, N_out, C_out].
    """
    if method not in METHODS:
        raise ValueError(f"sparse_conv: method must be one of {METHODS}, got {method!r}")
    kernel_size = tuple(weight.shape[:3])
    c_in, c_out = weight.shape[3], weight.shape[4]
    if feats.shape[-1] != c_in:
        raise ValueError(f"sparse_conv: feats have {feats.shape[-1]} channels, weight wants {c_in}")
    if transpose and kernel_map.submanifold:
        raise ValueError("sparse_conv: transpose needs a down-sampling map, got a submanifold map")
    sel = sub_kernel_indices(kernel_map.kernel_size, kernel_size)
    flat_weight = weight.reshape(-1, c_in, c_out)
    if in_mask is not None:
        feats = jnp.where(in_mask[..., None], feats, 0)

    pairs = kernel_map.pairs.get(kernel_size)
    use_pairs = method == "pairs" or (method == "auto" and pairs is not None)
    if use_pairs and pairs is None:
        raise ValueError(
            f"sparse_conv: the kernel map has no pair list for kernel {kernel_size}; "
            f"build it with pair_kernels including it (has {list(kernel_map.pairs)})"
        )
    if use_pairs:
        pair_weight = flat_weight[np.searchsorted(sel, np.asarray(pairs.offsets))]
        out = jax.vmap(lambda f, p: pair_conv(f, p, pair_weight, transpose))(feats, pairs)
        if kernel_map.submanifold:
            centre = int(np.searchsorted(sel, math.prod(kernel_map.kernel_size) // 2))
            out = out + feats @ flat_weight[centre]
    else:
        table = (kernel_map.reverse if transpose else kernel_map.neighbours)[:, :, sel]
        out = jax.vmap(lambda f, t: gather_conv(f, t, flat_weight))(feats, table)
    if out_mask is not None:
        out = jnp.where(out_mask[..., None], out, 0)
    return out


def submanifold_conv(coords, feats, weight, mask=None) -> jax.Array:
    """Submanifold sparse convolution of one sample (public functional API).

    coords int32 [N, 3] (any int32 values, unique among active rows), feats [N, C_in],
    weight [kx, ky, kz, C_in, C_out] (odd kernel), mask bool [N] | None (None = all active).
    out[p] = sum over offsets o of feats[p + o] @ weight[o + r] (r = kernel radius per axis),
    summing only over active p + o; masked rows are zero in the output and never read.
    Works under jit and grad. Returns [N, C_out].
    """
    if coords.ndim != 2 or coords.shape[-1] != 3 or feats.shape[0] != coords.shape[0]:
        raise ValueError(
            f"submanifold_conv: coords [N, 3] and feats [N, C] needed, got "
            f"{coords.shape}, {feats.shape}"
        )
    if weight.ndim != 5 or weight.shape[3] != feats.shape[1]:
        raise ValueError(
            f"submanifold_conv: weight [kx, ky, kz, C_in, C_out] with C_in = "
            f"{feats.shape[1]} needed, got {weight.shape}"
        )
    if mask is None:
        mask = jnp.ones(coords.shape[0], bool)
    offsets = jnp.asarray(kernel_offsets(weight.shape[:3]))
    index = build_index(coords, mask, None)
    queries = coords[:, None, :].astype(jnp.int32) + offsets[None]
    table = lookup(index, queries, jnp.broadcast_to(mask[:, None], queries.shape[:2]))
    safe_feats = jnp.where(mask[:, None], feats, 0)
    flat_weight = weight.reshape(-1, weight.shape[3], weight.shape[4])
    out = gather_conv(safe_feats, table, flat_weight)
    return jnp.where(mask[:, None], out, 0)
