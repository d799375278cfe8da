"""The run directory: the files a training run leaves and how to read them back.

DIR/config.json     the resolved config (every field, after overrides)
DIR/corpus.json     the corpus's files, their sizes and the split sizes, as the run found them
DIR/params.json     the parameter pack (bytelm.artifacts.param_pack)
DIR/train_log.json  the training log (bytelm.artifacts.train_log)
DIR/loss.png        the loss curves (bytelm.reporting.plots)
DIR/checkpoints/    train-state checkpoints (bytelm.training.checkpoints)
DIR/report.html     the run's report page, and report.png its screenshot (`launch.inspect`)
DIR/eval_<split>.json  a whole-split evaluation (`launch.evaluate`; eval_<split>_stride<S>.json with --stride)
DIR/.training       who is training this run right now (pid, host, since when), while it trains
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections

from bytelm.atomic_io import atomic_write_json
from bytelm.errors import RunDirError

CONFIG_FILE = "config.json"
CORPUS_FILE = "corpus.json"
PARAMS_FILE = "params.json"
LOG_FILE = "train_log.json"
PLOT_FILE = "loss.png"
CHECKPOINT_DIR = "checkpoints"
REPORT_FILE = "report.html"
SCREENSHOT_FILE = "report.png"
LOCK_FILE = ".training"  # the lock's holder, for the message a second training process gets
LOCK_FILE_FALLBACK = ".training.lock"  # locked where a folder cannot be (NFS); kept, never removed
RUN_FILES = (CONFIG_FILE, CORPUS_FILE, PARAMS_FILE, LOG_FILE, PLOT_FILE, CHECKPOINT_DIR)
# Fields a resumed run may change: how long to train and how to report it, not what is trained.
RESUMABLE_FIELDS = (
    "train.steps",
    "train.log_every",
    "train.progress",
    "train.eval_every",
    "train.eval_batch_size",
    "train.probe_positions",
    "train.plot_every_eval",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.resume",
    "data.eval_windows",
    "data.final_eval_windows",
    "data.check_cache_dir",
    "runtime.*",
    "sample.*",
)


# Fields added after runs were made, each with the value that does what those runs did: a saved
# config without one reads as having it, so that an older run still resumes. (A model family's own
# added fields are its options' defaults: the caller passes them to `config_differences`.)
ADDED_FIELDS = {"data.format": "", "data.test_fraction": 0.0, "data.train_bytes": 0, "data.val_bytes": 0,
                "data.test_bytes": 0, "train.optimizer": "adamw", "train.schedule": "cosine",
                "train.muon_lr": 0.02, "train.muon_beta": 0.95, "train.muon_ns_steps": 5,
                "train.muon_ns_coeffs": "standard", "train.decay_fraction": 0.2, "train.lr_multiplier": ""}  # fmt: skip


def prepare(workdir: str | Path, overwrite: bool) -> Path:
    """Creates `workdir` for a new run; refuses to replace an earlier run unless `overwrite`."""
    path = Path(workdir)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"workdir {path} is a file, not a folder: choose another --workdir")
    existing = [f for f in RUN_FILES if (path / f).exists()]
    if existing and not overwrite:
        raise RunDirError(
            f"workdir {path} already holds a run ({', '.join(existing)}): pass --overwrite to "
            "replace it, or choose another --workdir"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create workdir {path}: {e.strerror or e}") from None
    return path


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _resumable(field: str) -> bool:
    return any(field == f or (f.endswith(".*") and field.startswith(f[:-1])) for f in RESUMABLE_FIELDS)


def config_differences(saved: dict, current: dict, added: dict | None = None) -> list[str]:
    """`field: saved → current` for every field outside `RESUMABLE_FIELDS` that differs (or is in only
    one of the two), sorted by field. Fields missing from `saved` that `ADDED_FIELDS` or `added`
    (the model family's option defaults, as `model.<field>`) name read as their old behaviour."""
    b = _flat(current)
    old = {**ADDED_FIELDS, **(added or {})}
    a = {**{k: v for k, v in old.items() if k in b}, **_flat(saved)}
    show = lambda flat, k: repr(flat[k]) if k in flat else "(absent)"
    return [
        f"{k}: {show(a, k)} → {show(b, k)}"
        for k in sorted(set(a) | set(b))
        if not _resumable(k) and (k not in a or k not in b or a[k] != b[k])
    ]


def write_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
    atomic_write_json(workdir / CONFIG_FILE, config.to_dict())


def write_corpus(workdir: Path, manifest: dict) -> None:
    atomic_write_json(workdir / CORPUS_FILE, manifest)


def read_corpus(workdir: Path) -> dict | None:
    """The corpus manifest the run recorded when it started (None for runs from before there was one)."""
    try:
        return json.loads((Path(workdir) / CORPUS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RunDirError(
            f"cannot read {Path(workdir) / CORPUS_FILE} ({e}): restore it, or start over with --overwrite"
        ) from None


def eval_file(split: str, stride: int = 0) -> str:
    """Where `launch.evaluate` writes its result: one file per split and window set."""
    return f"eval_{split}" + (f"_stride{stride}" if stride else "") + ".json"


def read_config(run_dir: str | Path) -> ml_collections.ConfigDict:
    """The config a run was trained with, from `run_dir/config.json`."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"checkpoint dir {path} does not exist or is not a folder: pass a training --workdir")
    cfg_path = path / CONFIG_FILE
    try:
        doc = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{cfg_path} is missing: is {path} a training run's workdir?") from None
    except OSError as e:
        raise RunDirError(f"cannot read {cfg_path}: {e.strerror or e}") from None
    except ValueError:
        raise RunDirError(f"{cfg_path} is not valid JSON: the run's config is corrupt") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), dict) for k in ("model", "sample")):
        raise RunDirError(f"{cfg_path} is not a bytelm config (no 'model' and 'sample' sections)")
    return ml_collections.ConfigDict(doc)
