"""Data parallelism: a one-axis `data` mesh over every device, batch sharded, state replicated.

This is how current JAX does what `pmap` used to: one `jax.jit` program whose inputs carry
`NamedSharding`s. Because every reduction over the batch (BatchNorm statistics, prototype sums and
counts, the loss mean) is written as an ordinary global reduction, XLA inserts the cross-device sums
and the result does not depend on the device count. Multi-host: each process feeds its own slice of
the global batch (`global_batch`), assembled with `jax.make_array_from_process_local_data`.
"""

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

# Environment variables that mean "this process is one of several": JAX's own coordinator variable,
# and the launchers whose clusters `jax.distributed.initialize()` detects by itself.
_MULTI_PROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def maybe_initialize_distributed(initialization_timeout_s: int = 300) -> bool:
    """Calls `jax.distributed.initialize()` when launched as one of several processes.

    Must run before any other JAX call. Returns whether it initialised. A single-process launch
    (no variable set, or SLURM/OpenMPI with one task) does nothing. A plain launch (no cluster
    manager) sets JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID in every
    process (JAX reads only the first; the other two are passed on here). A process that cannot
    reach the others within `initialization_timeout_s` seconds raises instead of hanging.
    LEAKJAX_DISTRIBUTED=1 initialises with JAX's own detection alone (e.g. a TPU pod slice).
    """
    if os.environ.get("LEAKJAX_DISTRIBUTED") == "1":
        jax.distributed.initialize(initialization_timeout=initialization_timeout_s)
        return True
    for name in _MULTI_PROCESS_ENV:
        value = os.environ.get(name)
        if value is None:
            continue
        if name != "JAX_COORDINATOR_ADDRESS" and int(value) <= 1:
            continue
        explicit = {}
        if name == "JAX_COORDINATOR_ADDRESS" and "JAX_NUM_PROCESSES" in os.environ:
            explicit = {
                "num_processes": int(os.environ["JAX_NUM_PROCESSES"]),
                "process_id": int(os.environ["JAX_PROCESS_ID"]),
            }
        jax.distributed.initialize(initialization_timeout=initialization_timeout_s, **explicit)
        return True
    return False


def make_data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named `data` over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`, other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device (the train state, the confusion matrix)."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch_size: int, mesh: Mesh, name: str = "batch_size") -> int:
    """Validates the global batch size for the mesh; returns this process's share of it."""
    num_devices = mesh.devices.size
    if global_batch_size % num_devices:
        raise ValueError(
            f"{name}={global_batch_size} is not a multiple of the {num_devices} devices of the "
            "data mesh; every device needs the same number of samples"
        )
    return global_batch_size // jax.process_count()


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's numpy samples [B_local, ...] -> global arrays [B, ...] sharded on `data`."""
    sharding = batch_sharding(mesh)
    return {
        key: jax.make_array_from_process_local_data(sharding, value)
        for key, value in local_batch.items()
    }
