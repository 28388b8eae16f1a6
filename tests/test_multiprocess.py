"""Multi-process training with real processes: 2 CPU processes on localhost (JAX's own distributed
runtime, gloo CPU collectives, coordinator on 127.0.0.1) run the whole LEAK pipeline and must give
what one process gives; a process killed mid-run and both restarted end where the uninterrupted
run ends.

Each process has one CPU device (XLA_FLAGS set per child, not tests/conftest.py's 4: with several
devices per process the CPU collectives deadlock unless every step is synced). The children are
killed with SIGKILL (a hung JAX process ignores SIGTERM) and every wait has a timeout, so a hang
fails the test instead of blocking CI.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "multiprocess_worker.py"
RUNS = ("baseline", "leak")
TIMEOUT_S = 240  # a 2-process pipeline run takes ~45 s on 2 loaded cores; a hang must fail


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(num_processes: int, workdir, cache_dir, out, phases="1,2,3,4", die_after_step=None):
    """Starts the worker processes (one CPU device each); returns the Popen objects."""
    port = free_port()
    processes = []
    for index in range(num_processes):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        }
        for name in (
            "JAX_COORDINATOR_ADDRESS",
            "JAX_NUM_PROCESSES",
            "JAX_PROCESS_ID",
            "LEAKJAX_DISTRIBUTED",
        ):
            env.pop(name, None)
        if num_processes > 1:
            env.update(
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES=str(num_processes),
                JAX_PROCESS_ID=str(index),
            )
        command = [sys.executable, str(WORKER), "--workdir", str(workdir)]
        command += ["--cache_dir", str(cache_dir), "--out", str(out), "--phases", phases]
        if die_after_step is not None:
            command += ["--die_after_step", str(die_after_step)]
        log = open(pathlib.Path(out).parent / f"{pathlib.Path(out).name}-p{index}.log", "w")  # noqa: SIM115
        processes.append(
            subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        )
        processes[-1].log_path = log.name
    return processes


def kill_all(processes) -> None:
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()


def wait_all(processes, timeout_s=TIMEOUT_S) -> list[int]:
    """Return codes; SIGKILLs everything left after `timeout_s` (and fails)."""
    deadline = time.monotonic() + timeout_s
    try:
        while any(p.poll() is None for p in processes):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"worker processes still running after {timeout_s} s: {logs(processes)}"
                )
            time.sleep(0.2)
    finally:
        kill_all(processes)
    return [p.returncode for p in processes]


def logs(processes) -> str:
    return "\n".join(
        f"--- process {i}:\n" + pathlib.Path(p.log_path).read_text()[-3000:]
        for i, p in enumerate(processes)
    )


def run(num_processes, workdir, cache_dir, out, **kwargs):
    processes = launch(num_processes, workdir, cache_dir, out, **kwargs)
    codes = wait_all(processes)
    assert codes == [0] * num_processes, logs(processes)
    return processes


def results(workdir: pathlib.Path, out: pathlib.Path, num_processes: int, runs=RUNS) -> dict:
    """What a run produced: per-step losses, confusions, hierarchy, and each process's view."""
    result = {}
    if "leak" in runs:
        result["hierarchy"] = json.loads((workdir / "hierarchy.json").read_text())
    for run_name in runs:
        records = [json.loads(line) for line in (workdir / run_name / "metrics.jsonl").open()]
        result[f"{run_name}/losses"] = {r["step"]: r["loss"] for r in records if "loss" in r}
        result[f"{run_name}/confusion"] = np.load(workdir / run_name / "val_confusion_step4.npy")
    result["views"] = [
        json.loads((out / f"process{i}.json").read_text()) for i in range(num_processes)
    ]
    result["arrays"] = [dict(np.load(out / f"process{i}.npz")) for i in range(num_processes)]
    return result


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """The smoke synthetic world, generated once here and only read by the processes."""
    from multiprocess_worker import config  # noqa: PLC0415

    from datasets.registry import load_dataset  # noqa: PLC0415

    cache = tmp_path_factory.mktemp("mp_cache")
    load_dataset(config().data, None, cache)
    return cache


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory, cache_dir):
    """The pipeline run by one process and by two (launched together: the two-process run waits
    on its collectives most of the time on a shared 2-core machine)."""
    root = tmp_path_factory.mktemp("runs")
    one, two = (root / "one", root / "one_out"), (root / "two", root / "two_out")
    processes = launch(1, one[0], cache_dir, one[1]) + launch(2, two[0], cache_dir, two[1])
    codes = wait_all(processes)
    assert codes == [0, 0, 0], logs(processes)
    return results(*one, 1), results(*two, 2)


def test_two_processes_equal_one_process(one_and_two):
    single, double = one_and_two
    assert [v["process_count"] for v in double["views"]] == [2, 2]
    assert [v["device_count"] for v in double["views"]] == [2, 2]
    assert [v["local_device_count"] for v in double["views"]] == [1, 1]
    assert single["views"][0]["device_count"] == 1
    # The hierarchy is computed once and every process trained and reported with that one.
    assert double["hierarchy"] == single["hierarchy"]
    for view in double["views"]:
        assert view["report"]["hierarchy"] == single["views"][0]["report"]["hierarchy"]
    assert double["views"][0]["report"]["runs"] == double["views"][1]["report"]["runs"]
    for run_name in RUNS:
        # The confusion is reduced over both processes' halves of every validation batch.
        np.testing.assert_array_equal(
            double[f"{run_name}/confusion"], single[f"{run_name}/confusion"]
        )
        steps, reference = double[f"{run_name}/losses"], single[f"{run_name}/losses"]
        assert list(steps) == list(reference) == [2, 4]
        np.testing.assert_allclose(list(steps.values()), list(reference.values()), rtol=1e-6)
    # Parameters, BatchNorm statistics and prototypes: the same sums in another order
    # (measured: params within 3e-8, BatchNorm and prototypes within 7e-7 of values up to ~10).
    reference = single["arrays"][0]
    assert any(k.startswith("leak/prototypes") for k in reference)
    for view in double["arrays"]:
        assert sorted(view) == sorted(reference)
        for key, value in reference.items():
            scale = float(np.abs(value).max()) if value.size else 0.0
            np.testing.assert_allclose(
                view[key], value, rtol=1e-5, atol=1e-6 * scale + 1e-7, err_msg=key
            )
    for key, value in double["arrays"][0].items():  # replicated: bit-identical on both processes
        np.testing.assert_array_equal(double["arrays"][1][key], value, err_msg=key)


def test_a_killed_process_resumes_and_ends_identical(one_and_two, cache_dir, tmp_path):
    """Phase 1 with 2 processes: process 1 is SIGKILLed right after the step-2 checkpoint,
    process 0 is then killed too (as a job scheduler does); both restarted, the run resumes from
    step 2 and ends bit-identical to the uninterrupted 2-process run."""
    workdir, out = tmp_path / "work", tmp_path / "out"
    processes = launch(2, workdir, cache_dir, out, phases="1", die_after_step=2)
    deadline = time.monotonic() + TIMEOUT_S
    while processes[1].poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    kill_all(processes)
    assert processes[1].returncode == -signal.SIGKILL, logs(processes)
    assert "process 1: killed at step 2" in logs(processes)
    assert not (workdir / "baseline" / "checkpoints" / "4").exists()

    restarted = run(2, workdir, cache_dir, out, phases="1")
    resumed_from = f"baseline: resumed from {workdir / 'baseline' / 'checkpoints'} step 2"
    assert logs(restarted).count(resumed_from) == 2
    resumed, straight = results(workdir, out, 2, runs=("baseline",)), one_and_two[1]
    np.testing.assert_array_equal(resumed["baseline/confusion"], straight["baseline/confusion"])
    assert resumed["baseline/losses"] == straight["baseline/losses"]
    for process in (0, 1):
        baseline = {k: v for k, v in straight["arrays"][process].items() if "baseline" in k}
        assert sorted(resumed["arrays"][process]) == sorted(baseline)
        for key, value in baseline.items():
            np.testing.assert_array_equal(resumed["arrays"][process][key], value, err_msg=key)
