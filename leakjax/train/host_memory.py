"""Keep XLA's per-execution CPU buffers in the process instead of mapping them fresh every step.

XLA's CPU runtime allocates the temporaries of an execution as one block per execution (346 MB for
the Cylinder3D train step of the default SemanticKITTI config, experiments/configs/semkitti.py)
and frees it at the end. With JAX's asynchronous CPU dispatch the execution runs on a PJRT worker
thread, whose glibc malloc arena cannot hold a block over 64 MB: glibc maps it with mmap and
unmaps it when freed, so every page of it faults again at the next step (~89k page faults per
step; measured in the issue 18 note: a third of the step's CPU time spent in the kernel, and the
step ~25% slower than with the pages kept).

`keep_host_buffers()` (called by experiments/pipeline_cli.py `configure_runtime` and by the
Cylinder3D benchmark's workers) makes the blocks come from glibc's main heap and stay there:
  - `jax_cpu_enable_async_dispatch = False`: single-device CPU executions run on the thread that
    calls them (the main thread), so their blocks come from the main arena. The trainer's input
    pipeline runs in its own thread (leakjax/train/input_pipeline.py `prefetch`), so host work
    still overlaps the step. Multi-device CPU executions are dispatched asynchronously regardless.
  - `mallopt(M_MMAP_MAX, 0)` and `mallopt(M_TRIM_THRESHOLD, 2 GiB)`: the main arena serves large
    blocks from its heap and keeps freed memory, so the next step reuses the same pages.
The cost is that memory freed by the main thread stays in the process (its peak is held, as with
any caching allocator). Accelerator backends allocate their own memory and are not affected: the
allocator is left as it is when JAX's default backend is not the CPU.
"""

from __future__ import annotations

import ctypes
import logging
import platform

import jax

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes a C int


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") else None


def keep_host_buffers() -> bool:
    """Synchronous single-device CPU dispatch and a main heap that keeps large blocks (module
    docstring). Must run before JAX creates its backends (the first computation or device query).

    Returns True when both took effect; False when the default backend is not the CPU (dispatch
    set, allocator left alone), and False with one log line saying why when the backends already
    existed, the C library is not glibc, or mallopt refused a setting.
    """
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        logging.warning("keep_host_buffers: JAX's backends exist already; CPU dispatch unchanged")
        return False
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    if jax.default_backend() != "cpu":
        return False
    libc = _glibc()
    if libc is None:
        logging.info("keep_host_buffers: not glibc; the host allocator is left as it is")
        return False
    kept = libc.mallopt(M_MMAP_MAX, 0) == 1
    kept = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and kept
    if not kept:
        logging.warning("keep_host_buffers: mallopt refused a setting; blocks may be mapped anew")
    return kept
