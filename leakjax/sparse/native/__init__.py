"""Optional native CPU kernel of `leakjax.sparse.conv.pair_conv` through the XLA FFI.

The C++ source (pair_conv.cc, next to this file) is compiled on first use with the machine's C++
compiler ($CXX, else g++ / c++) and cached under $LEAKJAX_NATIVE_CACHE, else
$XDG_CACHE_HOME/leakjax/native (default ~/.cache/leakjax/native), in a file named by a hash of
the source, the compiler (path and --version), the flags and the jaxlib version: any change
builds a new library. A build writes a temporary file in the cache folder and renames it into
place (atomic), so concurrent first builds by several processes are safe.

Where it cannot be built or loaded (no compiler, a platform without the FFI headers, a failed
build) or when LEAKJAX_NATIVE=0, `pair_conv` runs its pure-JAX dataflow (the reference, and the
GPU/TPU path) and one log line says why. The native kernel is used only on the CPU backend, for
float32 features and weights.

Kernel (see pair_conv.cc): forward, input gradient and weight gradient of the pair walk, threaded
over LEAKJAX_NATIVE_THREADS workers (default: XLA's intra_op_parallelism_threads from XLA_FLAGS,
else the cores this process may run on): the calling thread and tasks on XLA's intra-op thread
pool (no thread is created per call). Output rows and weight-gradient blocks are each owned by
one thread and summed in a fixed order, so results are bitwise identical across runs and thread
counts. Under `vmap` the FFI call batches natively ("broadcast_all": every leading axis is a
batch axis, the weight's leading axes a prefix of them).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from leakjax.sharding import vary_like

ENV_SWITCH = "LEAKJAX_NATIVE"  # "0" disables the native kernel
ENV_THREADS = "LEAKJAX_NATIVE_THREADS"
ENV_CACHE = "LEAKJAX_NATIVE_CACHE"
SOURCE = Path(__file__).with_name("pair_conv.cc")
TARGETS = {
    "leakjax_pair_conv_fwd": "LeakjaxPairConvFwd",
    "leakjax_pair_conv_bwd": "LeakjaxPairConvBwd",
}

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict = {}  # "library": path of the loaded library, or "error": why there is none
_logged: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        logger.warning(message)


def compiler() -> str | None:
    """The C++ compiler to use: $CXX, else g++ or c++ on the PATH, else None."""
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _march() -> str | None:
    """-march level for x86-64 (v3 when the CPU has AVX2 and FMA, else v2); None elsewhere."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        flags = set(
            re.findall(r"^flags\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)[0].split()
        )
    except (OSError, IndexError):
        return "x86-64-v2"
    v3 = {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"}
    v4 = v3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    return "x86-64-v4" if v4 <= flags else "x86-64-v3" if v3 <= flags else "x86-64-v2"


def _flags() -> list[str]:
    march = _march()
    return [
        "-O3",
        "-std=c++17",
        "-shared",
        "-fPIC",
        "-pthread",
        "-w",
        *([f"-march={march}"] if march else []),
        "-I",
        jax.ffi.include_dir(),
    ]


def cache_dir() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "leakjax" / "native"


def library_path(cxx: str) -> Path:
    """Where the library built by `cxx` from the current source is cached (hash-keyed)."""
    import jaxlib

    version = subprocess.run(
        [cxx, "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        (shutil.which(cxx) or cxx).encode(),
        version.encode(),
        " ".join(_flags()).encode(),
        jaxlib.__version__.encode(),
        platform.machine().encode(),
    ):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"pair_conv-{key.hexdigest()[:20]}.so"


def build() -> Path:
    """The cached library, compiled first if missing (temporary file + atomic rename)."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler ($CXX, g++ or c++) found")
    path = library_path(cxx)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        result = subprocess.run(
            [cxx, *_flags(), str(SOURCE), "-o", tmp], capture_output=True, text=True, timeout=600
        )
        if result.returncode:
            raise RuntimeError(f"{cxx} failed: {result.stderr.strip()[-2000:]}")
        os.chmod(tmp, 0o755)  # mkstemp's 0600 would hide it from other users of the cache
        os.replace(tmp, path)  # atomic: another process's identical build may win, fine
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load() -> bool:
    """Build (if needed), load and register the kernel once per process; False if impossible."""
    with _lock:
        if not _state:
            try:
                path = build()
                library = ctypes.cdll.LoadLibrary(str(path))
                for target, symbol in TARGETS.items():
                    capsule = jax.ffi.pycapsule(getattr(library, symbol))
                    jax.ffi.register_ffi_target(target, capsule, platform="cpu")
                _state["library"] = path
            except Exception as error:  # any failure: the pure-JAX path runs
                _state["error"] = f"{type(error).__name__}: {error}"
        if "error" in _state:
            _log_once(
                f"leakjax.sparse: native CPU pair_conv unavailable ({_state['error']}); "
                "using the pure-JAX pair_conv"
            )
        return "library" in _state


def disabled_by_env() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off")


def use_native(*arrays) -> bool:
    """Whether pair_conv should run natively now (at trace time): CPU backend, float32 arrays
    (None entries ignored), not disabled by LEAKJAX_NATIVE=0, and the library loads."""
    if jax.default_backend() != "cpu":
        return False
    if any(a is not None and jnp.result_type(a) != jnp.float32 for a in arrays):
        return False
    if disabled_by_env():
        _log_once(f"leakjax.sparse: native CPU pair_conv disabled ({ENV_SWITCH}=0); using pure JAX")
        return False
    return load()


def num_threads() -> int:
    """LEAKJAX_NATIVE_THREADS, else XLA's intra_op_parallelism_threads, else usable cores."""
    if os.environ.get(ENV_THREADS):
        return max(1, int(os.environ[ENV_THREADS]))
    match = re.search(r"intra_op_parallelism_threads=(\d+)", os.environ.get("XLA_FLAGS", ""))
    if match:
        return max(1, int(match.group(1)))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _attrs(static):
    _, tile, num_offsets, mirrored, centre, threads = static
    return {
        "tile": np.int64(tile),
        "num_offsets": np.int64(num_offsets),
        "mirrored": np.int64(mirrored),
        "centre": np.int64(centre),
        "threads": np.int64(threads),
    }


def _forward_call(static, feats, weight, *pairs):
    shape = feats.shape[:-2] + (static[0], weight.shape[-1])
    call = jax.ffi.ffi_call(
        "leakjax_pair_conv_fwd",
        jax.ShapeDtypeStruct(shape, feats.dtype),
        vmap_method="broadcast_all",
    )
    # ffi_call's outputs carry no varying manual axes (inside shard_map): mark them like feats
    return vary_like(call(feats, weight, *pairs, **_attrs(static)), feats)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _conv(static, feats, weight, src_rows, dst_rows, tile_offset, num_tiles, mask):
    return _forward_call(static, feats, weight, src_rows, dst_rows, tile_offset, num_tiles, mask)


def _conv_fwd(static, *args):
    return _conv(static, *args), args


def _conv_bwd(static, residuals, grad_out):
    feats, weight = residuals[:2]
    call = jax.ffi.ffi_call(
        "leakjax_pair_conv_bwd",
        (
            jax.ShapeDtypeStruct(feats.shape, feats.dtype),
            jax.ShapeDtypeStruct(weight.shape, weight.dtype),
        ),
        vmap_method="broadcast_all",
    )
    grad_feats, grad_weight = call(*residuals, grad_out.astype(feats.dtype), **_attrs(static))
    grad_feats, grad_weight = vary_like(grad_feats, feats), vary_like(grad_weight, weight)
    return (grad_feats, grad_weight) + (None,) * 5


_conv.defvjp(_conv_fwd, _conv_bwd)


def pair_conv(
    feats,
    src_rows,
    dst_rows,
    tile_offset,
    num_tiles,
    tile_size: int,
    weight,
    mirror_weight=None,
    num_out=None,
    centre_weight=None,
    mask=None,
    threads: int | None = None,
):
    """`leakjax.sparse.conv.pair_conv` natively (same arguments, rows already oriented: src_rows
    [B, S] are read, dst_rows [B, S] written). Call `load()` first. Returns [B, num_out, C_out]."""
    parts = [weight]
    if centre_weight is not None:
        parts.insert(0, centre_weight[None])
    if mirror_weight is not None:
        parts.append(mirror_weight)
    stacked = jnp.concatenate(parts, 0) if len(parts) > 1 else weight
    if mask is None:
        mask = jnp.ones(feats.shape[:2], bool)
    static = (
        int(num_out or feats.shape[1]),
        int(tile_size),
        int(weight.shape[0]),
        mirror_weight is not None,
        centre_weight is not None,
        int(threads or num_threads()),
    )
    int32 = [jnp.asarray(a, jnp.int32) for a in (src_rows, dst_rows, tile_offset, num_tiles)]
    args = [stacked, *int32, jnp.asarray(mask, bool)]
    args = [vary_like(jnp.asarray(a), feats) for a in args]
    return _conv(static, feats, *args)
