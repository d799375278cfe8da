"""A run's model as a Hugging Face `transformers` model, and back: what every family's export shares.

    DIR/config.json             transformers' config (+ `bytelm_config`: the run's whole config)
    DIR/model.safetensors       the weights under transformers' names, tied head written once
    DIR/generation_config.json  the run's sampling settings where transformers has the same one
    DIR/tokenizer.json, tokenizer_config.json   the byte tokenizer (`byte_tokenizer.py`)
    DIR/README.md               the model card (`model_card.py`)

Each family with a transformers counterpart has its own mapping module (`EXPORTS`): its class, the
config fields it can carry, its config.json, and one `Rule` per weight (names and layouts). Every rule
is a transpose or a reshape, so export then import gives every leaf back bit for bit. A family without
a mapping is refused in one line.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import numpy as np

from bytelm.errors import UsageError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
GENERATION_FILE = "generation_config.json"
BYTELM_KEY = "bytelm_config"  # the run's own config, inside transformers' config.json
# model.name → the module that maps that family onto transformers (no entry: no counterpart).
EXPORTS = {
    "gpt2": "bytelm.interop.hf_gpt2",
    "mamba": "bytelm.interop.hf_mamba",
    "mamba2": "bytelm.interop.hf_mamba2",
}


class ExportError(UsageError):
    """A run cannot be exported as asked (an option with no transformers counterpart, an existing --out)."""


class Rule(NamedTuple):
    """One weight: transformers' name, ours (`{i}` = the layer), and the layout change each way."""

    hf: str
    ours: str
    to_hf: Callable[[np.ndarray], np.ndarray]
    from_hf: Callable[[np.ndarray], np.ndarray]


def same(a: np.ndarray) -> np.ndarray:
    return a


def transposed(a: np.ndarray) -> np.ndarray:
    """A Dense kernel `[in, out]` ↔ a PyTorch Linear weight `[out, in]`."""
    return np.ascontiguousarray(a.T)


def named_rules(pairs: list[tuple[str, str]], change=(same, same)) -> list[Rule]:
    """Rules for `(transformers' name, ours)` pairs that share one layout change each way."""
    return [Rule(hf, ours, *change) for hf, ours in pairs]


def mapping(model_config: dict) -> ModuleType:
    """The mapping module of the run's family; a one-line `ExportError` when it has none."""
    name = model_config.get("name")
    if name not in EXPORTS:
        raise ExportError(
            f"model.name={name!r} has no transformers counterpart: launch.export writes {', '.join(EXPORTS)} "
            "models (keep the pack, params.json, for this one)"
        )
    return importlib.import_module(EXPORTS[name])


def check_exportable(model_config: dict) -> None:
    """Raises a one-line `ExportError` naming the first model option with no transformers counterpart."""
    family = mapping(model_config)
    family.check(model_config)
    for field in sorted(set(model_config) - family.KNOWN_FIELDS - {"name"}):
        raise ExportError(
            f"model.{field}={model_config[field]!r} has no counterpart in transformers' "
            f"{family.ARCHITECTURE}: it cannot be exported"
        )


def rules(model_config: dict) -> list[Rule]:
    """Every weight's rule for this model, its layers expanded."""
    family = mapping(model_config)
    n = int(model_config["num_layers"])
    expanded = [Rule(r.hf.format(i=i), r.ours.format(i=i), r.to_hf, r.from_hf) for i in range(n) for r in family.LAYER]
    return list(family.GLOBAL) + expanded


def to_hf_tensors(flat_params: dict[str, np.ndarray], model_config: dict) -> dict[str, np.ndarray]:
    """`{"params/wte": array, ...}` (a flattened pack) → transformers' state dict, as NumPy arrays."""
    return {r.hf: r.to_hf(np.asarray(flat_params[f"params/{r.ours}"])) for r in rules(model_config)}


def from_hf_tensors(tensors: dict[str, np.ndarray], model_config: dict) -> dict[str, np.ndarray]:
    """transformers' state dict → `{"params/wte": array, ...}`; a missing weight is an `ExportError`."""
    missing = [r.hf for r in rules(model_config) if r.hf not in tensors]
    if missing:
        raise ExportError(f"the exported weights lack {', '.join(missing[:3])}: is this a bytelm export?")
    return {f"params/{r.ours}": r.from_hf(tensors[r.hf]) for r in rules(model_config)}


def hf_config(model_config: dict) -> dict:
    """transformers' config.json for the model (without the embedded bytelm config): what every byte
    model shares (vocabulary, tying, no special tokens), then the family's own fields."""
    common = {"vocab_size": 256, "tie_word_embeddings": True, "bos_token_id": None, "eos_token_id": None}
    common |= {"pad_token_id": None, "dtype": "float32", "use_cache": True}
    return common | mapping(model_config).hf_config(model_config)


def generation_config(sample_config: dict) -> dict:
    """The run's sampling settings as transformers' `generation_config.json`, where they mean the same.

    Mapped: the length, temperature, top-k (0 = all, as ours) and greedy (temperature 0 or top-k 1).
    Not mapped: bytelm's repeat penalty subtracts `penalty × count` from a logit, transformers'
    `repetition_penalty` divides it; `ascii_only` has no counterpart; the seed is not a generation setting."""
    s = sample_config
    greedy = float(s.get("temperature", 1.0)) == 0 or int(s.get("top_k", 0)) == 1
    out = {"max_new_tokens": int(s.get("generate", 0)) or 220, "do_sample": not greedy}
    if not greedy:
        out |= {"temperature": float(s["temperature"]), "top_k": int(s.get("top_k", 0))}
    return out


def is_export(path: str | Path) -> bool:
    """True for a folder that holds a bytelm export (transformers' config with the run's config in it)."""
    return export_problem(path) is None


def export_problem(path: str | Path) -> str | None:
    """Why `path` is not a folder that `launch.export` wrote (None when it is one)."""
    folder = Path(path)
    config, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not folder.is_dir():
        return f"{folder} is not a folder"
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{folder} has no {CONFIG_FILE}"
    except (OSError, ValueError) as e:
        return f"{config} cannot be read as JSON ({' '.join(str(getattr(e, 'strerror', None) or e).split())})"
    if not isinstance(doc, dict) or BYTELM_KEY not in doc:
        return f"{config} has no {BYTELM_KEY!r}: the folder was not written by launch.export"
    if not weights.is_file():
        return f"{folder} has no {WEIGHTS_FILE}"
    return None


def bytelm_config(folder: str | Path):
    """The bytelm config an export carries (`config.json`'s `bytelm_config`), as a ConfigDict."""
    import ml_collections

    path = Path(folder) / CONFIG_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(doc, dict) or BYTELM_KEY not in doc:
        raise ExportError(f"{path} has no {BYTELM_KEY!r}: it is not a bytelm export")
    return ml_collections.ConfigDict(doc[BYTELM_KEY])
