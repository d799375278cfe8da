"""Cross-field checks of a training config that no single module owns."""

from __future__ import annotations

import ml_collections

from bytelm import models
from bytelm.errors import ConfigError, check_at_least
from bytelm.parallel import mesh
from bytelm.sampling.settings import DECODERS
from bytelm.training import optimizer
from bytelm.training.progress import PROGRESS_MODES


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises a one-line `ConfigError` naming the first bad field of `train`, `data` or `sample`,
    or a batch that does not split over the mesh."""
    tc = config.train
    check_at_least("train", {f: tc[f] for f in ("steps", "batch_size", "eval_every", "eval_batch_size", "log_every")})
    if tc.lr <= 0 or tc.min_lr < 0 or tc.min_lr > tc.lr:
        raise ConfigError(f"need 0 <= train.min_lr <= train.lr and lr > 0, got lr={tc.lr}, min_lr={tc.min_lr}")
    optimizer.check(tc)
    optimizer.stage_multipliers(tc, models.family_of(config.model))  # one factor per stage, if any
    if tc.progress not in PROGRESS_MODES:
        raise ConfigError(f"train.progress must be auto, bar, lines or none, got {tc.progress!r}")
    if config.sample.decode not in DECODERS:
        raise ConfigError(f"sample.decode must be one of {', '.join(DECODERS)}, got {config.sample.decode!r}")
    check_at_least("sample", {"stream_chunk": config.sample.stream_chunk})
    for name in ("windows", "eval_windows", "final_eval_windows"):
        if config.data[name] < 0:
            raise ConfigError(f"data.{name} must be >= 0, got {config.data[name]}")
    if tc.checkpoint_every < 0 or tc.keep_checkpoints < 1:
        raise ConfigError(
            f"need train.checkpoint_every >= 0 (0 = only at the end) and train.keep_checkpoints >= 1, got "
            f"{tc.checkpoint_every} and {tc.keep_checkpoints}"
        )
    device_mesh = mesh.make_mesh(config.runtime.mesh)
    mesh.check_batch(device_mesh, tc.batch_size, "train.batch_size")
    mesh.check_batch(device_mesh, tc.eval_batch_size, "train.eval_batch_size")
    if not tc.max_grad_norm_skip >= 0:
        raise ConfigError(f"train.max_grad_norm_skip must be >= 0 (0 = off), got {tc.max_grad_norm_skip}")
