"""Writing a run as a transformers folder, and reading such a folder back as bytelm's weights and config."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import ml_collections
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from bytelm import models
from bytelm.artifacts import param_pack, run_dir
from bytelm.atomic_io import current_umask, json_safe
from bytelm.interop import byte_tokenizer, huggingface, model_card
from bytelm.interop.huggingface import ExportError


def export_run(checkpoint_dir: str | Path, out: str | Path, overwrite: bool = False) -> list[str]:
    """Writes the run in `checkpoint_dir` as a transformers folder at `out`; returns the files written.

    Everything is checked before anything is written (the model's options, the pack against the
    model, `out`); the folder is written beside `out` and renamed into place whole, so a failure leaves
    no half folder and an existing `out` (replaced only with `overwrite`) as it was."""
    config = run_dir.read_config(checkpoint_dir).to_dict()
    huggingface.check_exportable(config["model"])
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists: pass --overwrite to replace it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder: choose another --out")
    model = models.build(ml_collections.ConfigDict(config["model"]))
    pack = param_pack.load_pack(Path(checkpoint_dir) / run_dir.PARAMS_FILE, models.abstract_variables(model))
    files = _export_files(config, param_pack.flatten(pack), _summary(checkpoint_dir), model.max_context)
    _write_folder(out, files)
    return sorted(files)


def _summary(checkpoint_dir) -> dict:
    try:
        return json.loads((Path(checkpoint_dir) / run_dir.LOG_FILE).read_text(encoding="utf-8")).get("summary") or {}
    except (OSError, ValueError):
        return {}


def _export_files(config: dict, flat: dict, summary: dict, window: int | None) -> dict[str, object]:
    """Every file of the folder: name → JSON-ready dict, text, or (for the weights) the tensors.
    `window` is the model's longest context (None: no limit, a recurrent model)."""
    m = config["model"]
    hf = huggingface.hf_config(m) | {huggingface.BYTELM_KEY: json_safe(config)}
    generation = huggingface.generation_config(config["sample"])
    architecture = hf["architectures"][0]
    return {
        huggingface.CONFIG_FILE: hf,
        huggingface.WEIGHTS_FILE: huggingface.to_hf_tensors(flat, m),
        huggingface.GENERATION_FILE: generation,
        byte_tokenizer.TOKENIZER_FILE: byte_tokenizer.tokenizer_json(),
        byte_tokenizer.TOKENIZER_CONFIG_FILE: byte_tokenizer.tokenizer_config(window),
        "README.md": model_card.model_card(config, summary, architecture, generation["max_new_tokens"]),
    }


def _write_folder(out: Path, files: dict[str, object]) -> None:
    """Writes `files` into a temporary folder beside `out`, then renames it to `out` (an old `out`
    moves aside first and is removed once the new one is in place)."""
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    except OSError as e:
        raise ExportError(f"cannot write into {parent}: {e.strerror or e}") from None
    old = None
    umask = current_umask()  # mkdtemp made the folder private; the export is for sharing
    try:
        for name, content in files.items():
            _write_file(tmp / name, content)
            os.chmod(tmp / name, 0o666 & ~umask)
        os.chmod(tmp, 0o777 & ~umask)
        if out.exists():
            old = parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as e:
        if old is not None and not out.exists():
            os.replace(old, out)  # put the earlier export back
            old = None
        raise ExportError(f"could not write {out}: {e.strerror or e} (anything there before is unchanged)") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _write_file(path: Path, content) -> None:
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif path.name == huggingface.WEIGHTS_FILE:
        save_file(content, str(path), metadata={"format": "pt"})  # what transformers reads as PyTorch weights
    else:
        path.write_text(json.dumps(content, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")


def load_export(folder: str | Path, expected=None) -> dict:
    """The variables `{'params': ...}` of an export, as NumPy arrays; with `expected` (the model's
    abstract variables) every path, shape and dtype is checked first, as for a pack."""
    config = huggingface.bytelm_config(folder)
    weights = Path(folder) / huggingface.WEIGHTS_FILE
    try:
        tensors = load_file(str(weights))
    except (OSError, ValueError, SafetensorError) as e:
        reason = " ".join(str(getattr(e, "strerror", None) or e).split())
        raise ExportError(
            f"cannot read {weights}: {reason} (is it truncated or damaged? export the run again with launch.export)"
        ) from None
    flat = huggingface.from_hf_tensors(tensors, config.model.to_dict())
    if expected is not None:
        found = {p: (tuple(a.shape), param_pack.dtype_name(a.dtype)) for p, a in flat.items()}
        param_pack.check_against(found, expected)
    return param_pack.unflatten({p: np.asarray(a) for p, a in flat.items()})


def load_weights(path: str | Path, expected=None) -> dict:
    """A parameter pack, or an export folder: the variables either holds (checked against `expected`)."""
    if Path(path).is_dir():
        problem = huggingface.export_problem(path)
        if problem:
            raise ExportError(
                f"{problem}: pass a parameter pack (a run's params.json) or a folder that launch.export wrote"
            )
        return load_export(path, expected)
    return param_pack.load_pack(path, expected)
