"""Training logs: a JSON-lines file always, TensorBoard events when possible, progress and ETA.

`clu.metric_writers` is not usable here: its package imports TensorFlow at import time (clu 0.0.12),
and this project never installs TensorFlow. TensorBoard event files are therefore written with
`tensorboardX` when it is installed (it needs only protobuf); without it the JSON-lines file
`metrics.jsonl` carries the same scalars, one object per line: {"step": ..., "<name>": value}.
Only process 0 writes.
"""

import json
import logging
import math
import pathlib
import time
from typing import Any

import jax
import numpy as np

logger = logging.getLogger("leakjax")


def readable_logs(level: int = logging.INFO) -> None:
    """Our progress lines at `level`, dependencies' INFO floods hidden (Orbax logs every save at
    INFO through absl's logger). Under `absl.app.run` the root logger already has absl's handler;
    only the named loggers' levels are set."""
    logging.basicConfig(level=level, format="%(asctime)s %(message)s")
    logging.getLogger("leakjax").setLevel(level)
    for chatty in ("absl", "orbax", "jax", "etils", "tensorflow_datasets"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stops instead of training on garbage."""


def check_finite(step: int, metrics: dict[str, Any], where: str) -> None:
    """Raises NonFiniteLossError naming the step and every non-finite metric."""
    bad = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0 and not np.isfinite(v)}
    if bad:
        raise NonFiniteLossError(
            f"{where}: non-finite training metrics at step {step}: {bad}. The state was not "
            "checkpointed past the last finite step; lower the learning rate or check the data."
        )


def _tensorboard_writer(directory: pathlib.Path):
    try:
        import tensorboardX  # noqa: PLC0415 - optional dependency
    except ImportError:
        logger.info("tensorboardX not installed: metrics go to metrics.jsonl only")
        return None
    return tensorboardX.SummaryWriter(str(directory))


class MetricWriter:
    """Writes scalars to `<directory>/metrics.jsonl` and TensorBoard (process 0 only).

    Args:
      directory: the run directory.
      tensorboard: also write TensorBoard events (needs tensorboardX).
    """

    def __init__(self, directory: str | pathlib.Path, tensorboard: bool = True):
        self.directory = pathlib.Path(directory)
        self._is_writer = jax.process_index() == 0
        self._jsonl = None
        self._tensorboard = None
        if self._is_writer:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.directory / "metrics.jsonl", "a")  # noqa: SIM115
            if tensorboard:
                self._tensorboard = _tensorboard_writer(self.directory / "tensorboard")

    def write_scalars(self, step: int, scalars: dict[str, Any]) -> None:
        if not self._is_writer:
            return
        values = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        self._jsonl.flush()
        if self._tensorboard is not None:
            for name, value in values.items():
                self._tensorboard.add_scalar(name, value, int(step))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def read_jsonl(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file, in order."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Progress:
    """Steps per second and time left, measured between calls (compile time excluded after 1st)."""

    def __init__(self, total_steps: int, start_step: int):
        self.total_steps = total_steps
        self._last_step = start_step
        self._last_time = time.perf_counter()

    def update(self, step: int) -> dict[str, float]:
        """Returns {"steps_per_sec", "eta_sec"} since the previous call and resets the clock."""
        now = time.perf_counter()
        elapsed = max(now - self._last_time, 1e-9)
        rate = (step - self._last_step) / elapsed
        self._last_step, self._last_time = step, now
        eta = (self.total_steps - step) / rate if rate > 0 else math.inf
        return {"steps_per_sec": rate, "eta_sec": eta}

    def pause(self) -> None:
        """Restarts the clock: time since the last update (e.g. a validation) is not counted."""
        self._last_time = time.perf_counter()


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"
