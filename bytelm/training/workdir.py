"""Opening a run's workdir: a fresh run, or the checkpoint to resume from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bytelm import models
from bytelm.artifacts import run_dir
from bytelm.atomic_io import json_safe
from bytelm.errors import ConfigError, RunDirError
from bytelm.training import checkpoints


def open_workdir(config, workdir: Path, overwrite: bool, lead: bool = True) -> int | None:
    """Prepares `workdir` and returns the checkpoint step to resume from (None = a fresh run).

    `--overwrite` always starts over; otherwise, with `train.resume`, the latest checkpoint wins,
    provided the config matches the saved one in everything but `run_dir.RESUMABLE_FIELDS`.
    Only the `lead` process (process 0 of a multi-process job) creates or clears anything.
    """
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
