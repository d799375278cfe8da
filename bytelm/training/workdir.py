"""Opening a run's workdir: a fresh run, or the checkpoint to resume from, held by one process at a time."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import socket
from pathlib import Path

from bytelm import models
from bytelm.artifacts import run_dir
from bytelm.atomic_io import json_safe
from bytelm.errors import ConfigError, RunDirError
from bytelm.training import checkpoints


class WorkdirLock(contextlib.AbstractContextManager):
    """An advisory lock (`flock`) on the workdir folder itself, so that two trainings never write one run.

    `acquire()` takes it once the folder exists (a no-op before, and once held); a second process is
    refused at once with one line naming the holder, which `run_dir.LOCK_FILE` records. The kernel
    drops a lock when its process ends, however it ends (kill -9 included), so a stale holder never
    blocks the next run; the holder's record is removed on every way out of the `with` block. The
    folder's own lock, not a lock file's, so a refused run creates nothing; where the filesystem cannot
    lock a folder (NFS), a lock file `run_dir.LOCK_FILE_FALLBACK` in it instead (created once, kept);
    where it can lock nothing at all, the run goes on unlocked, as it would without this class."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled, self.fd = Path(path), enabled, None

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def acquire(self) -> None:
        if not self.enabled or self.fd is not None or not self.path.is_dir():
            return
        fd = self._locked(self.path, os.O_RDONLY)
        if fd is None:  # a filesystem that cannot lock a folder (NFS): a lock file of its own, kept
            fd = self._locked(self.path / run_dir.LOCK_FILE_FALLBACK, os.O_RDWR | os.O_CREAT)
        self.fd = fd
        if fd is None:  # no lock to be had here: no record of one either
            return
        holder = f"pid {os.getpid()} on {socket.gethostname()}, since {datetime.datetime.now():%Y-%m-%d %H:%M:%S}"
        with contextlib.suppress(OSError):  # the record is for the message only; the lock is the flock
            (self.path / run_dir.LOCK_FILE).write_text(holder + "\n", encoding="utf-8")

    def _locked(self, target: Path, flags: int) -> int | None:
        """A descriptor of `target` holding an exclusive flock; None where the filesystem refuses the lock
        itself; a one-line `RunDirError` when another process holds it or `target` cannot be opened."""
        try:
            fd = os.open(target, flags, 0o666)
        except OSError as e:
            raise RunDirError(f"cannot open workdir {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            os.close(fd)
            raise RunDirError(
                f"workdir {self.path} is in use by another training process ({self._holder()}): wait for it to "
                "finish or stop it, or choose another --workdir"
            ) from None
        except OSError:
            os.close(fd)
            return None

    def _holder(self) -> str:
        """Who holds the lock, from its record; "pid unknown" where there is none. A record naming a
        process of this host that is gone (a holder killed before it wrote its own, or a child that
        inherited the lock) is said to be that: the lock is held, the record is the last known."""
        try:
            record = (self.path / run_dir.LOCK_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            return "pid unknown"
        words = record.split()
        here = len(words) > 3 and words[0] == "pid" and words[3].rstrip(",") == socket.gethostname()
        if here and Path("/proc/self").exists():  # (where /proc lists the live processes)
            with contextlib.suppress(ValueError):
                if not Path(f"/proc/{int(words[1])}").exists():
                    return f"last recorded as {record}, now gone"
        return record or "pid unknown"

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            (self.path / run_dir.LOCK_FILE).unlink()
        os.close(self.fd)  # (closing the last descriptor drops the flock)
        self.fd = None


def open_workdir(
    config, workdir: Path, overwrite: bool, lead: bool = True, lock: WorkdirLock | None = None
) -> int | None:
    """Prepares `workdir` and returns the checkpoint step to resume from (None = a fresh run).

    `--overwrite` always starts over; otherwise, with `train.resume`, the latest checkpoint wins,
    provided the config matches the saved one in everything but `run_dir.RESUMABLE_FIELDS`.
    Only the `lead` process (process 0 of a multi-process job) creates or clears anything, and only
    once it holds `lock` (taken here as soon as the folder exists). The caller enters `lock` (`with`)
    around the whole run, so that it is released on every path.
    """
    lock = lock or WorkdirLock(workdir, enabled=False)
    lock.acquire()
    if not overwrite and config.train.resume and workdir.is_dir():
        step = checkpoints.latest_step(workdir)
        if step is not None:
            current = json.loads(json.dumps(json_safe(config.to_dict())))  # as it would read back from disk
            options = {f"model.{k}": v for k, v in models.family_of(config.model).defaults().items()}
            diffs = run_dir.config_differences(run_dir.read_config(workdir).to_dict(), current, options)
            if diffs:
                raise ConfigError(
                    f"cannot resume {workdir}: its config differs in {'; '.join(diffs)} (use the saved values, "
                    "or start over with --config.train.resume=False --overwrite, or choose another --workdir)"
                )
            return step
    if not lead:
        return None
    workdir = run_dir.prepare(workdir, overwrite)
    lock.acquire()
    if overwrite and (workdir / run_dir.CHECKPOINT_DIR).exists():
        shutil.rmtree(workdir / run_dir.CHECKPOINT_DIR)  # a new run must not resume the old one's steps
    return None


def check_not_complete(workdir: Path, resume_step: int | None, steps: int) -> None:
    """A run whose checkpoint is already at `train.steps` says so instead of training again."""
    if resume_step is not None and resume_step >= steps:
        raise RunDirError(
            f"the run in {workdir} is already complete (checkpoint at step {resume_step} of {steps}): raise "
            "--config.train.steps to train on, or start over with --overwrite"
        )
