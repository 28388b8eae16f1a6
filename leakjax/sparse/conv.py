"""Sparse convolution dataflows and the public functional `submanifold_conv`.

Two exact dataflows over a KernelMap:
- "gather": the reference. Every output row gathers its K neighbour slots ([N, K, C_in], absent
  neighbours read a zero row) and one GEMM with the stacked weight does the rest. Simple, but on a
  LiDAR scan 3-4x of the multiplies are with zeros.
- "pairs": only real pairs (see pairs.py): a loop over the used tiles of a PairList, each step
  gathers T input rows, does one [T, C_in] @ [C_in, C_out] GEMM with the tile's offset weight and
  adds the products into the T output rows (intermediates stay in cache; unused capacity costs no
  arithmetic). A custom VJP walks the same tiles backwards: grad_in[in] += grad_out[out] @ W^T and
  grad_W[k] += feats[in]^T @ grad_out[out], without storing per-pair intermediates.
The adds run in tile order, so results are bitwise reproducible on CPU.

On the CPU backend `pair_conv` runs the same dataflow (forward and custom VJP) natively through
the XLA FFI when leakjax.sparse.native can build its C++ kernel (LEAKJAX_NATIVE=0 disables it);
the pure-JAX walk below stays the reference and the GPU/TPU path.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from leakjax.layers.rows import row_gram, take_rows
from leakjax.sharding import map_samples, per_device_samples, vary_like, zeros_like_varying
from leakjax.sparse import native as _native
from leakjax.sparse.kernel_map import KernelMap, kernel_offsets, sub_kernel_indices
from leakjax.sparse.pairs import PairList, build_pair_list
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


def _step(acc, src, src_rows, dst_rows, weight):
    """acc[dst_rows] += src[src_rows] @ weight; sentinel rows (== len(acc)) write nowhere."""
    return acc.at[dst_rows].add(take_rows(src, src_rows) @ weight, mode="drop")


def _tile_slice(rows, i, tile):
    return jax.lax.dynamic_slice_in_dim(rows, i * tile, tile, axis=1)


def _num_steps(num_tiles):
    # One trip count for the whole batch: the loop runs outside vmap (a batched trip count would
    # copy every carry each step); samples with fewer tiles run empty (sentinel) tiles.
    return jnp.max(num_tiles)


def _masked(x, mask):
    """x with the rows where mask [B, N] is False set to zero (mask None: x unchanged)."""
    return x if mask is None else jnp.where(mask[..., None], x, 0)


def _walk(static, src, weight, mirror_weight, src_rows, dst_rows, tile_offset, num_tiles, acc):
    """acc[b, dst] += src[b, src] @ weight[k] over the used tiles (mirrored lists: also
    acc[b, src] += src[b, dst] @ mirror_weight[k]). src [B, N_src, C_in], acc [B, n_dst, C_out]."""
    tile, batch = static[1], src.shape[0]

    def body(i, out):
        s, d = _tile_slice(src_rows, i, tile), _tile_slice(dst_rows, i, tile)
        k = tile_offset[:, i]
        out = map_samples(_step, batch)(out, src, s, d, weight[k])
        if mirror_weight is not None:
            out = map_samples(_step, batch)(out, src, d, s, mirror_weight[k])
        return out

    return jax.lax.fori_loop(0, _num_steps(num_tiles), body, acc)


def _start(static, src, weight, centre_weight, mask):
    """The walk's accumulator [B, n_dst, C_out]: the centre tap of a submanifold conv on the rows
    of `mask` (other rows zero, and no tile writes them), else zeros. Starting from the centre
    product saves a zero fill and a full-size add; selecting after the GEMM fuses into it and
    never lets a masked row's value (even NaN) through."""
    if centre_weight is None:
        return zeros_like_varying(src, (src.shape[0], static[0], weight.shape[-1]), src.dtype)
    return _masked(src @ centre_weight, mask)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _tile_conv(static, src, weight, mirror_weight, centre_weight, mask, *walk_args):
    """walk_args = (src_rows, dst_rows, tile_offset, num_tiles) of `_walk`."""
    acc = _start(static, src, weight, centre_weight, mask)
    return _walk(static, src, weight, mirror_weight, *walk_args, acc)


def _tile_conv_fwd(static, src, weight, mirror_weight, centre_weight, mask, *walk_args):
    residuals = (src, weight, mirror_weight, centre_weight, mask) + walk_args
    return _tile_conv(static, *residuals), residuals


def _weight_step(acc, k, a, a_rows, b, b_rows):
    """acc[k] += a[a_rows]^T @ b[b_rows] (one tile's weight gradient)."""
    return acc.at[k].add(take_rows(a, a_rows).T @ take_rows(b, b_rows))


def _tile_conv_bwd(static, residuals, grad_out):
    src, weight, mirror_weight, centre_weight, mask, src_rows, dst_rows, tile_offset, steps = (
        residuals
    )
    tile = static[1]
    mirrored = mirror_weight is not None
    weight_t = jnp.swapaxes(weight, 1, 2)
    mirror_t = jnp.swapaxes(mirror_weight, 1, 2) if mirrored else None
    batch = src.shape[0]
    grad_centre = None
    if centre_weight is None:
        grad_src = zeros_like_varying(grad_out, src.shape, src.dtype)
    else:  # rows outside `mask` get no centre term: their cotangent is dropped (tiles never
        # read them either, so the walk below may use grad_out as it is)
        grad_src = _masked(grad_out @ centre_weight.T, mask)
        grad_centre = row_gram(src, grad_out, mask)

    def body(i, carry):
        grad_src, grad_w, grad_mw = carry
        s, d = _tile_slice(src_rows, i, tile), _tile_slice(dst_rows, i, tile)
        k = tile_offset[:, i]
        grad_src = map_samples(_step, batch)(grad_src, grad_out, d, s, weight_t[k])
        grad_w = map_samples(_weight_step, batch)(grad_w, k, src, s, grad_out, d)
        if mirrored:
            grad_src = map_samples(_step, batch)(grad_src, grad_out, s, d, mirror_t[k])
            grad_mw = map_samples(_weight_step, batch)(grad_mw, k, src, d, grad_out, s)
        return grad_src, grad_w, grad_mw

    zeros_w = zeros_like_varying(grad_out, (batch,) + weight.shape, weight.dtype)
    init = (grad_src, zeros_w, zeros_w if mirrored else None)
    grad_src, grad_w, grad_mw = jax.lax.fori_loop(0, _num_steps(steps), body, init)
    grad_mw = grad_mw.sum(0) if mirrored else None
    return grad_src, grad_w.sum(0), grad_mw, grad_centre, None, None, None, None, None


_tile_conv.defvjp(_tile_conv_fwd, _tile_conv_bwd)


def pair_conv(
    feats,
    pairs: PairList,
    weight,
    mirror_weight=None,
    transpose=False,
    num_out=None,
    centre_weight=None,
    mask=None,
    native: bool | None = None,
):
    """Pair-list dataflow for a batch.

    feats [B, N_in, C_in]; pairs: a batched PairList; weight [len(pairs.offsets), C_in, C_out]
    in the list's offset order; mirror_weight the same for `pairs.mirror_offsets` (mirrored lists);
    transpose: run the map backwards (inverse conv); num_out: output rows (default N_in);
    centre_weight [C_in, C_out]: the identity tap of a submanifold conv (not in the list), applied
    to the rows of `mask` bool [B, N_in] (None: all rows); other output rows get no centre term
    and their gradient is not propagated through it.
    native: run the native CPU kernel (leakjax.sparse.native); None (default) = when available
    (CPU backend, float32, built, not disabled by LEAKJAX_NATIVE=0), False = pure JAX always.
    Returns [B, num_out, C_out].
    """
    static = (num_out or feats.shape[1], pairs.tile_size)
    src_rows, dst_rows = (
        (pairs.out_rows, pairs.in_rows) if transpose else (pairs.in_rows, pairs.out_rows)
    )
    if centre_weight is not None and static[0] != feats.shape[1]:
        raise ValueError("pair_conv: a centre tap needs as many output rows as input rows")
    if native or (
        native is None and _native.use_native(feats, weight, mirror_weight, centre_weight)
    ):
        if not _native.load():
            raise RuntimeError("pair_conv: native=True but the native kernel is unavailable")
        return _native.pair_conv(
            feats,
            src_rows,
            dst_rows,
            pairs.tile_offset,
            pairs.num_tiles,
            pairs.tile_size,
            weight,
            mirror_weight,
            static[0],
            centre_weight,
            mask,
        )
    return _tile_conv(
        static,
        feats,
        weight,
        mirror_weight,
        centre_weight,
        mask,
        src_rows,
        dst_rows,
        pairs.tile_offset,
        pairs.num_tiles,
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
    in_mask / out_mask bool [B, N]: padding rows. The maps never refer to masked rows, so masked
      inputs are never read (the centre tap of a submanifold conv is cleared with the mask) and
      masked outputs are zero.
    transpose: the inverse conv through a down-sampling map (fine set restored).
    method: "pairs" (real pairs only; needs the sub-kernel's pair list in the map), "gather"
      (reference), or "auto" = pairs when available. Returns [B, N_out, C_out].
    """
    if method not in METHODS:
        raise ValueError(f"sparse_conv: method must be one of {METHODS}, got {method!r}")
    kernel_size = tuple(weight.shape[:3])
    c_in = weight.shape[3]
    if feats.shape[-1] != c_in:
        raise ValueError(f"sparse_conv: feats have {feats.shape[-1]} channels, weight wants {c_in}")
    if transpose and kernel_map.submanifold:
        raise ValueError("sparse_conv: transpose needs a down-sampling map, got a submanifold map")
    pairs = kernel_map.pairs.get(kernel_size)
    use_pairs = method == "pairs" or (method == "auto" and pairs is not None)
    if use_pairs and pairs is None:
        raise ValueError(
            f"sparse_conv: the kernel map has no pair list for kernel {kernel_size}; "
            f"build it with pair_kernels including it (has {list(kernel_map.pairs)})"
        )
    if kernel_map.submanifold and out_mask is None:
        out_mask = in_mask
    # Tiles write only rows of the map's output set and a submanifold centre tap only rows of
    # in_mask, so the pair path needs the output mask only when the caller passes a different one.
    same_masks = out_mask is in_mask
    batched = (feats, kernel_map, in_mask, None if same_masks else out_mask)
    convolve = partial(_convolve, transpose=transpose, use_pairs=use_pairs, same_masks=same_masks)
    return per_device_samples(lambda b, w: convolve(*b, w), batched, jnp.asarray(weight))


def _convolve(feats, kernel_map, in_mask, out_mask, weight, transpose, use_pairs, same_masks):
    """sparse_conv on one device's samples (out_mask None with same_masks: it is in_mask)."""
    kernel_size = tuple(weight.shape[:3])
    c_in, c_out = weight.shape[3], weight.shape[4]
    sel = sub_kernel_indices(kernel_map.kernel_size, kernel_size)
    flat_weight = vary_like(weight, feats).reshape(-1, c_in, c_out)
    pairs = kernel_map.pairs.get(kernel_size)
    if use_pairs:
        position = {int(k): i for i, k in enumerate(sel)}
        pair_weight = flat_weight[np.asarray([position[k] for k in pairs.offsets])]
        mirror_weight = None
        if pairs.mirror_offsets is not None:
            mirror_weight = flat_weight[np.asarray([position[k] for k in pairs.mirror_offsets])]
        num_out = (kernel_map.reverse if transpose else kernel_map.neighbours).shape[1]
        centre_weight = None
        if kernel_map.submanifold:  # the identity tap starts the walk (see pair_conv)
            centre_weight = flat_weight[position[math.prod(kernel_map.kernel_size) // 2]]
        out = pair_conv(
            feats, pairs, pair_weight, mirror_weight, transpose, num_out, centre_weight, in_mask
        )
        if out_mask is not None:  # a mask other than in_mask
            out = jnp.where(out_mask[..., None], out, 0)
    else:
        table = (kernel_map.reverse if transpose else kernel_map.neighbours)[:, :, sel]
        out = jax.vmap(lambda f, t: gather_conv(f, t, flat_weight))(feats, table)
        mask = in_mask if same_masks else out_mask
        if mask is not None:
            out = jnp.where(mask[..., None], out, 0)
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
    flat_weight = jnp.asarray(weight).reshape(-1, weight.shape[3], weight.shape[4])
    centre = flat_weight.shape[0] // 2
    others = np.asarray([k for k in range(flat_weight.shape[0]) if k != centre], np.int32)
    if not others.size:  # a 1x1x1 kernel
        return jnp.where(mask[:, None], feats, 0) @ flat_weight[centre]
    # Real pairs only, worst-case capacity (unused capacity costs no arithmetic); the centre tap
    # on the rows of `mask` starts the walk, and tiles write only active rows.
    pairs = jax.tree.map(lambda a: a[None], build_pair_list(table[:, others], others, len(coords)))
    out = pair_conv(
        feats[None],
        pairs,
        flat_weight[others],
        centre_weight=flat_weight[centre],
        mask=mask[None],
    )
    return out[0]
