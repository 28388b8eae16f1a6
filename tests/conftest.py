"""Test session setup: 4 simulated CPU devices and the persistent compilation cache.

Must run before JAX is imported anywhere, which pytest guarantees for the root conftest.
Four host devices let data-parallel tests shard a batch in-process; every other test runs on
device 0 exactly as it would on a one-device machine.
"""

import os
import pathlib

_REPO = pathlib.Path(__file__).resolve().parent.parent

# The concurrency-optimized scheduler of XLA:CPU gives executables that, once reloaded from the
# persistent compilation cache, can order their cross-device all-reduces differently per device
# and deadlock (seen with RandLA-Net's LEAK train step on 4 simulated devices: a second test run
# hung at "rendezvous ... may be stuck", then aborted); freshly compiled ones are fine.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=4"
    " --xla_cpu_enable_concurrency_optimized_scheduler=false"
    # The suite compiles far more than it computes: LLVM's expensive passes off (measured on
    # the Cylinder3D smoke train step: compile 42 -> 32 s, a step 50 -> 64 ms).
    " --xla_llvm_disable_expensive_passes=true",
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_REPO / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
