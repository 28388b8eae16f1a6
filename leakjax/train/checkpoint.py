"""Checkpointing with Orbax: the TrainState as one item, its metadata (config, hierarchy) beside it.

Each checkpoint step directory holds two items: `state` (the whole TrainState pytree, restored onto
the replicated sharding of the run) and `metadata` (JSON: the resolved config, the class hierarchy
when LEAK is on, anything the caller adds), so a checkpoint is self-describing. Only the latest
`max_to_keep` steps are kept.

Where a run starts from (`restore_or_initialize`), first match wins:
  1. the latest checkpoint in the run's own directory (an interrupted run resumes);
  2. an explicit `resume_from` checkpoint directory (a run continued elsewhere: whole state);
  3. `init_from`: parameters and BatchNorm statistics only (fine-tuning: fresh optimiser, step 0);
  4. scratch.

A damaged checkpoint (truncated or corrupted files, e.g. a disk filled or a host lost mid-write)
does not end a run: resuming tries the steps newest first, warns naming each one that does not
restore and its path, moves it aside to `<directory>_damaged/<step>` (so the run writes that step
again) and continues from the newest one that restores. When none restores it raises
`NoRestorableCheckpointError` saying what to delete; it never silently starts from scratch.
"""

import logging
import pathlib
import shutil
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from leakjax.train.state import TrainState

logger = logging.getLogger("leakjax")
_ITEMS = ("state", "metadata")


class NoRestorableCheckpointError(RuntimeError):
    """A run directory has checkpoints and none of them restores."""


class Checkpointer:
    """An Orbax CheckpointManager over one run directory.

    Args:
      directory: where the step directories live (created if missing).
      max_to_keep: keep only the latest N checkpoints.
      async_save: write in a background thread (call `wait` before reading the files).
    """

    def __init__(self, directory: str | pathlib.Path, max_to_keep: int = 2, async_save=True):
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, state: TrainState, metadata: dict[str, Any], force: bool = False) -> None:
        """Saves `state` under its own step number (no-op if that step is already saved)."""
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(metadata)
            ),
            force=force,
        )

    def restore(
        self, abstract_state: TrainState, step: int | None = None
    ) -> tuple[TrainState, dict[str, Any]]:
        """(state, metadata) at `step` (default: latest), placed on `abstract_state`'s shardings."""
        step = self._resolve_step(step)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), metadata=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], restored["metadata"]

    def restore_metadata(self, step: int | None = None) -> dict[str, Any]:
        """Only the JSON metadata of a checkpoint (config, hierarchy)."""
        step = self._resolve_step(step)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())
        )
        return restored["metadata"]

    def restore_raw(self, step: int | None = None) -> dict[str, Any]:
        """The saved state as nested dicts of host arrays, without needing its structure."""
        step = self._resolve_step(step)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore())
        )
        return restored["state"]

    def restore_newest_intact(
        self, abstract_state: TrainState
    ) -> tuple[TrainState, dict[str, Any], int]:
        """(state, metadata, step) of the newest checkpoint that restores (module docstring).

        Every process tries the same step and they agree on the outcome (a step counts as
        restored only if it restored everywhere), so all of them resume from the same step.

        Raises:
          NoRestorableCheckpointError: naming every step, its path and its error.
        """
        failures = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                restored, error = self.restore(abstract_state, step), None
            except Exception as exception:  # noqa: BLE001 - any Orbax / TensorStore / IO failure
                restored, error = None, exception
            if _on_every_process(error is None):
                self._set_aside(failures, step)
                return (*restored, step)
            error = error or RuntimeError("it did not restore on another process")
            path = self.directory / str(step)
            logger.warning(
                "checkpoint step %d at %s does not restore (%s: %s); trying an older one",
                step,
                path,
                type(error).__name__,
                _first_line(error),
            )
            failures.append((step, path, error))
        listing = "; ".join(
            f"step {step} at {path}: {type(e).__name__}: {_first_line(e)}"
            for step, path, e in failures
        )
        raise NoRestorableCheckpointError(
            f"no checkpoint in {self.directory} restores ({listing}). If the model, data or "
            f"optimiser config changed, use another work directory; otherwise delete the damaged "
            f"step directories ({', '.join(str(path) for _, path, _ in failures)}) or the whole "
            f"{self.directory} to train this run from scratch."
        )

    def _set_aside(self, failures: list, restored_step: int) -> None:
        """Moves damaged steps newer than the one restored to `<directory>_damaged/` (process 0;
        the others wait), so the resumed run saves those steps again."""
        if not failures:
            return
        aside = self.directory.parent / f"{self.directory.name}_damaged"
        if jax.process_index() == 0:
            for step, path, _ in failures:
                target = aside / str(step)
                suffix = 1
                while target.exists():
                    target, suffix = aside / f"{step}-{suffix}", suffix + 1
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), str(target))
                logger.warning(
                    "moved the damaged checkpoint step %d to %s; resuming from step %d",
                    step,
                    target,
                    restored_step,
                )
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("leakjax: damaged checkpoints set aside")
        self._manager.reload()

    def _resolve_step(self, step: int | None) -> int:
        """`step`, or the latest saved step; a clear error when there is none."""
        step = self._manager.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"no checkpoint in {self.directory}")
        return step

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _on_every_process(flag: bool) -> bool:
    """Whether `flag` holds on every process (one process: `flag`)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.all(multihost_utils.process_allgather(np.int32(flag))))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else ""


def _same_structure(name: str, source: Any, target: Any, where: str) -> None:
    source_shapes = jax.tree.map(np.shape, source)
    target_shapes = jax.tree.map(np.shape, target)
    if jax.tree.structure(source_shapes) != jax.tree.structure(target_shapes) or jax.tree.leaves(
        source_shapes
    ) != jax.tree.leaves(target_shapes):
        raise ValueError(
            f"init_from={where}: its {name} do not match this model's (different model config?)"
        )


def restore_or_initialize(
    checkpointer: Checkpointer,
    abstract_state: TrainState,
    init_fn: Callable[[], TrainState],
    resume_from: str | None = None,
    init_from: str | None = None,
) -> tuple[TrainState, str]:
    """The starting state of a run, in the order of the module docstring.

    Args:
      checkpointer: the run's own checkpointer.
      abstract_state: `jax.eval_shape` of the state with shardings (the restore target).
      init_fn: builds a fresh state (jitted, replicated).
      resume_from: a checkpoint directory of another run to continue (whole state).
      init_from: a checkpoint directory whose params and batch_stats start this run.

    Returns:
      (state, a sentence saying where it came from).
    """
    if checkpointer.latest_step() is not None:
        state, _, step = checkpointer.restore_newest_intact(abstract_state)
        return state, f"resumed from {checkpointer.directory} step {step}"
    if resume_from:
        other = Checkpointer(resume_from, async_save=False)
        state, _ = other.restore(abstract_state)
        return state, f"resumed from {resume_from} step {other.latest_step()}"
    state = init_fn()
    if init_from:
        other = Checkpointer(init_from, async_save=False)
        raw = other.restore_raw()
        for name in ("params", "batch_stats"):
            _same_structure(name, raw[name], getattr(state, name), init_from)
        sharding = jax.tree.leaves(abstract_state.params)[0].sharding
        put = lambda tree: jax.device_put(tree, sharding)
        state = state.replace(params=put(raw["params"]), batch_stats=put(raw["batch_stats"]))
        logging.info("initialised params and batch_stats from %s", init_from)
        return state, f"params and batch_stats from {init_from} step {other.latest_step()}"
    return state, "from scratch"
