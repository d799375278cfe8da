"""Train-state checkpoints in `DIR/checkpoints/`, with orbax-checkpoint's `CheckpointManager`.

    DIR/checkpoints/<step>/state   the train state (step, params, optimizer state), exact bits
    DIR/checkpoints/<step>/meta    JSON: the log so far (records, evaluations, probes) and timings

The data position needs no saving of its own: the windows of step s depend only on (data seed, s),
and the parameter init is the only random draw, so (state, step) is everything a resume needs.
Orbax writes each checkpoint into a temporary folder and renames it when complete, so a crash or a
failed write leaves the earlier checkpoints as they were; saves are synchronous so that a
checkpoint is on disk when `save` returns (a stop signal may come next).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from bytelm.artifacts.run_dir import CHECKPOINT_DIR
from bytelm.errors import BytelmError

TMP_MARK = ".orbax-checkpoint-tmp"  # orbax's suffix for a checkpoint still being written
# After a failed save, orbax's other writers go on failing for a moment; the save waits until no report
# has come for QUIET_S (at most DRAIN_S) before it restores the hooks it quieted and raises.
QUIET_S, DRAIN_S = 0.25, 3.0


class CheckpointError(BytelmError):
    """A checkpoint could not be written or read back."""


class CheckpointWriteError(CheckpointError):
    """A save failed part-way; orbax's writer threads may still be failing, so entry points exit at once."""

    exit_now = True


@contextlib.contextmanager
def open_manager(workdir: Path, keep: int) -> Iterator[ocp.CheckpointManager]:
    """A manager over `workdir/checkpoints` that keeps the last `keep` checkpoints, closed on every
    way out of the `with` block."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.preservation_policy.LatestN(keep),
        enable_async_checkpointing=False,
        create=True,
    )
    folder = (Path(workdir) / CHECKPOINT_DIR).absolute()
    # A save cut short (SIGKILL, full disk) leaves a temporary folder: never a checkpoint, so remove it.
    # (Orbax's own cleanup_tmp_directories does this in a background thread that can outlive us.)
    for tmp in folder.glob(f"*{TMP_MARK}*"):
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        mngr = ocp.CheckpointManager(folder, options=options)
    except OSError as e:
        raise CheckpointError(f"cannot use {Path(workdir) / CHECKPOINT_DIR}: {e.strerror or e}") from None
    try:
        yield mngr
    finally:
        # After a failed save the manager still holds its writers' failed futures; closing frees them
        # and the cycle collector then reports each as "exception was never retrieved". Collect now,
        # quieted: the save has already said what failed, in one line.
        with _quiet_writers():
            mngr.close()
            gc.collect()


def latest_step(workdir: Path) -> int | None:
    """The step of the newest complete checkpoint in `workdir`, or None if there is none.

    Orbax renames a checkpoint's folder to its step number only once it is complete, so the
    all-digit folder names are exactly the complete checkpoints."""
    folder = Path(workdir) / CHECKPOINT_DIR
    steps = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()] if folder.is_dir() else []
    return max(steps, default=None)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
    """Writes the train state and the JSON-ready `meta` as checkpoint `step`, then prunes old ones."""
    if jax.process_count() == 1:
        # Host copies first, in one transfer: given device arrays, orbax slices every leaf's replica on
        # the device (one dispatch each) before copying (BENCHMARKS.md, Choices: checkpoint save). Same
        # bits on disk. (With several processes each holds only its shards, which orbax must write.)
        state = jax.device_get(state)
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    with _quiet_writers() as reports:
        try:
            mngr.save(step, args=args, force=True)
            mngr.wait_until_finished()
        except (OSError, ValueError, RuntimeError) as e:
            reports.drain()
            for tmp in Path(mngr.directory).glob(f"{step}{TMP_MARK}*"):
                shutil.rmtree(tmp, ignore_errors=True)  # best effort: the next `open_manager` finishes the job
            raise CheckpointWriteError(
                f"could not write checkpoint {step} in {mngr.directory}: {_os_reason(e)} "
                "(check free space and permissions; earlier checkpoints are unchanged)"
            ) from None


class _Reports:
    """Notes when `_quiet_writers` last dropped a writer's report, so that a failed save can wait them out."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def seen(self) -> None:
        self.last = time.monotonic()

    def filter(self, record: logging.LogRecord) -> bool:
        """A logging filter: notes the record and drops it."""
        self.seen()
        return False

    def drain(self) -> None:
        """Waits until no report has come for `QUIET_S` seconds (at most `DRAIN_S`).

        The failed writers' tasks sit in reference cycles (exception -> traceback -> frame -> task),
        so asyncio's "exception was never retrieved" comes whenever the cycle collector next runs:
        collecting here makes it come now, while the reports are still quieted."""
        deadline = time.monotonic() + DRAIN_S
        while True:
            gc.collect()
            if time.monotonic() >= deadline or time.monotonic() - self.last >= QUIET_S:
                return
            time.sleep(QUIET_S / 5)


@contextlib.contextmanager
def _quiet_writers() -> Iterator[_Reports]:
    """While a save runs, and while a failed one drains: absl's and asyncio's records dropped (each
    of orbax's failing writers logs its own traceback) and so are the "Event loop is closed" reports,
    each one noted; all restored on the way out. The one line that `save` raises says it all."""
    reports = _Reports()
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    previous_hook = sys.unraisablehook
    for logger in loggers:
        logger.addFilter(reports)
    sys.unraisablehook = _drop_closed_loop_reports(previous_hook, reports.seen)
    try:
        yield reports
    finally:
        sys.unraisablehook = previous_hook
        for logger in loggers:
            logger.removeFilter(reports)


def _drop_closed_loop_reports(previous: Callable[[Any], None], seen: Callable[[], None]) -> Callable[[Any], None]:
    """An unraisable-exception hook that drops "Event loop is closed" (noting it) and passes on the rest.

    When one tensorstore write fails, orbax closes its event loop while the other writes are in
    flight; each one's completion callback then fails to reach the loop, and Python reports that
    (from C++, as an unraisable exception) as a traceback on stderr."""

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
            seen()
        else:
            previous(unraisable)

    return hook


def _os_reason(e: Exception) -> str:
    """The OS's reason ("No space left on device") when there is one, also inside tensorstore's
    messages (which carry it as os_error_code='N'); otherwise the start of the message."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    code = re.search(r"os_error_code='?(\d+)", str(e))
    return os.strerror(int(code.group(1))) if code else " ".join(str(e).split())[:200]


def restore(mngr: ocp.CheckpointManager, step: int, like_state: Any, shardings: Any = None) -> tuple[Any, dict]:
    """Checkpoint `step` as (state shaped like `like_state`, meta).

    With `shardings` (a tree like `like_state`), each leaf is read straight into that layout, so a
    checkpoint saved on any number of devices or processes restores on any other; each process
    reads only its own pieces."""
    if shardings is None:
        shardings = jax.tree_util.tree_map(lambda a: None, like_state)
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), like_state, shardings
    )
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
    try:
        restored = mngr.restore(step, args=args)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(
            f"cannot restore checkpoint {step} from {mngr.directory}: {' '.join(str(e).split())[:200]} "
            "(start over with --config.train.resume=False --overwrite)"
        ) from None
    return restored.state, restored.meta
