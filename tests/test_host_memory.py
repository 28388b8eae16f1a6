"""leakjax/train/host_memory.py: XLA's per-execution CPU buffers stay mapped across executions."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from leakjax.train import host_memory

PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from leakjax.train.host_memory import keep_host_buffers
    kept = keep_host_buffers() if sys.argv[1] == "keep" else False
    import jax, jax.numpy as jnp
    a, b = jnp.ones((8192, 16)), jnp.ones((16, 4096))
    c = jnp.ones((8192, 1))
    step = jax.jit(lambda a, b: jnp.tanh(a @ b).T @ c)  # a 128 MiB [8192, 4096] temporary
    temp = step.lower(a, b).compile().memory_analysis().temp_size_in_bytes
    faults = []
    for _ in range(10):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        jax.block_until_ready(step(a, b))
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print("RESULT " + json.dumps({"kept": kept, "faults": faults, "temp": temp,
                                  "async": jax.config.read("jax_cpu_enable_async_dispatch")}))
    """
)


def probe(mode: str) -> dict:
    root = str(pathlib.Path(__file__).resolve().parents[1])
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=root)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, cwd=root
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.mark.skipif(host_memory._glibc() is None, reason="mallopt needs glibc")
def test_kept_buffers_do_not_fault_again():
    """Page faults per execution of a program with a 128 MiB temporary, counted by the kernel
    (getrusage): kept, the pages are faulted in once and then reused; with JAX's defaults every
    execution maps the block anew (on glibc Linux, where the test runs)."""
    kept, fresh = probe("keep"), probe("fresh")
    pages = kept["temp"] // 4096
    assert kept["temp"] >= 2**27 and kept["kept"] and not kept["async"]
    # medians: a host that pages out idle memory (this VM's DAMON) may fault a kept block anew
    assert np.median(kept["faults"][3:]) < pages // 100, kept["faults"]
    assert np.median(fresh["faults"][3:]) > pages // 2, fresh["faults"]  # what keeping avoids


def test_too_late_once_backends_exist(caplog):
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()  # this process's backends exist
    assert host_memory.keep_host_buffers() is False
    assert "exist already" in caplog.text
