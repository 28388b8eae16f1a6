"""Test session setup: 4 simulated CPU devices and the persistent compilation cache.

Must run before JAX is imported anywhere, which pytest guarantees for the root conftest.
Four host devices let data-parallel tests shard a batch in-process; every other test runs on
device 0 exactly as it would on a one-device machine.
"""

import os
import pathlib

_REPO = pathlib.Path(__file__).resolve().parent.parent

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_REPO / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
