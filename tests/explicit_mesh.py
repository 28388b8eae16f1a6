"""The Explicit-axis mesh (jax.make_mesh's default in jax 0.10) that the sharding tests compare
with one device: the 4 simulated CPU devices of tests/conftest.py on one `data` axis."""

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec


def explicit_mesh() -> jax.sharding.Mesh:
    return jax.make_mesh((4,), ("data",), axis_types=(AxisType.Explicit,))


def run_batch_sharded(fn, *batched):
    """fn(*batched) with every argument's leading (batch) axis sharded on `explicit_mesh()`,
    inside `jax.set_mesh` as JAX requires for Explicit axes."""
    mesh = explicit_mesh()
    with jax.set_mesh(mesh):
        return fn(*jax.device_put(batched, NamedSharding(mesh, PartitionSpec("data"))))
