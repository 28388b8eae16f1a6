"""Batch sharding helpers for code that must also run with the batch sharded on Explicit axes.

leakjax's trainer shards the batch over a one-axis `data` mesh of Auto axes (leakjax.train.mesh):
XLA then partitions every op by itself. A mesh of Explicit axes (sharding in types,
`jax.make_mesh`'s default in jax 0.10, used inside `jax.set_mesh`) needs the code's help in two
places, and these helpers give it (each is the identity without such a mesh):
- per-sample code that gathers from an unbatched table with batch-sharded indices, or sums the
  batch into per-class totals, runs on each device's samples under `jax.shard_map`
  (`per_device_samples`; `vary_like` / `zeros_like_varying` for its loop carries and weights);
- a global sort over the batch first gathers the batch onto every device (`unsharded`);
- a lookup in a small table with batch-sharded indices names its output sharding (`take_table`),
  and so does an array created to match a sharded one (`explicit_sharding`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P


def _explicit_mesh(x):
    """The mesh of x's sharding when it has Explicit axes, else None."""
    mesh = getattr(getattr(jax.typeof(x), "sharding", None), "mesh", None)
    if mesh is None or mesh.empty or AxisType.Explicit not in tuple(mesh.axis_types):
        return None
    return mesh


def _explicit_batch_spec(x):
    """The mesh axes the leading (batch) axis of x is sharded over, when they are Explicit axes;
    else None."""
    if _explicit_mesh(x) is None:
        return None
    spec = tuple(jax.typeof(x).sharding.spec)
    return spec[0] if spec and spec[0] is not None else None


def explicit_sharding(x):
    """x's NamedSharding when it is on Explicit axes (for `out_sharding=` of arrays created to
    match x, e.g. a random mask), else None."""
    return None if _explicit_mesh(x) is None else jax.typeof(x).sharding


def unsharded(x):
    """x gathered onto every device when it is sharded on Explicit axes (which refuse, e.g., a
    sort along a sharded axis); otherwise x as it is (Auto axes gather implicitly)."""
    return x if _explicit_mesh(x) is None else jax.sharding.reshard(x, P())


def take_table(table, index):
    """table[index] for an unbatched lookup table [K, ...] and int indices [...] that may be
    batch-sharded; on Explicit axes the gather's output sharding is the indices' (JAX cannot
    infer it)."""
    if _explicit_mesh(index) is None:
        return table[index]
    spec = tuple(jax.typeof(index).sharding.spec) + (None,) * (table.ndim - 1)
    return table.at[index].get(out_sharding=P(*spec))


def _varying_axes(x) -> frozenset:
    """The manual mesh axes x varies over inside `shard_map` (empty outside)."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)  # jax 0.10; older jax: aval.vma
    return frozenset(getattr(manual, "varying", None) or getattr(aval, "vma", None) or ())


def vary_like(x, like):
    """x marked as varying over the manual mesh axes that `like` varies over (inside
    `shard_map`, see `per_device_samples`; a no-op elsewhere). A loop carry that starts from
    constants and accumulates device-local data must be varying from the start, and a weight
    used with device-local data inside a custom VJP must be too: autodiff then sums its
    gradient over the devices (the transpose of this cast)."""
    axes = tuple(sorted(_varying_axes(like) - _varying_axes(x)))
    return jax.lax.pcast(x, axes, to="varying") if axes else x


def zeros_like_varying(like, shape, dtype):
    """jnp.zeros(shape, dtype) varying like `like` (see `vary_like`)."""
    return vary_like(jnp.zeros(shape, dtype), like)


def per_device_samples(fn, batched, replicated=(), summed: bool = False):
    """fn(batched, replicated) for per-sample code; `batched` is a pytree of [B, ...] arrays,
    `replicated` one of arrays without a batch axis (weights). fn's outputs are all [B, ...].

    When the batch axis is sharded on Explicit mesh axes, JAX cannot infer the sharding of a
    gather from an unbatched table with batch-sharded indices (the per-level tables of the maps,
    a conv's per-tile weights), so fn runs under `jax.shard_map` on each device's block of
    samples, where every array is local and the code traces unchanged. Nothing mixes samples, so
    the results are those of the unsharded call. Otherwise (one device, Auto axes as built by
    leakjax.train.mesh) fn is called directly. summed: fn returns sums over its samples (no
    batch axis); the devices' sums are added (psum).
    """
    leaves = jax.tree.leaves(batched)
    spec = _explicit_batch_spec(leaves[0]) if leaves else None
    if spec is None:
        return fn(batched, replicated)
    mesh = jax.typeof(leaves[0]).sharding.mesh
    if summed:
        local, out_spec = (lambda b, r: jax.lax.psum(fn(b, r), spec)), P()
    else:
        local, out_spec = fn, P(spec)
    return jax.shard_map(local, mesh=mesh, in_specs=(P(spec), P()), out_specs=out_spec)(
        batched, replicated
    )


def map_samples(fn, batch: int):
    """fn applied to every sample of a batch: `jax.vmap(fn)`, or for a batch of one the plain
    per-sample call (leading axis dropped and restored).

    A batch of one has no batch axis to shard, and XLA's CPU gathers and scatters without
    batching dimensions skip an index concatenation and a copy per op (about 10% of a conv's tile
    walk, measured in experiments/bench_sparse_conv.py); results are identical.
    """
    if batch > 1:
        return jax.vmap(fn)

    def one(*args):
        return jax.tree.map(lambda y: y[None], fn(*jax.tree.map(lambda x: x[0], args)))

    return one
