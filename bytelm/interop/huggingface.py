"""A run's model as a Hugging Face `transformers` model, and back.

    DIR/config.json             GPT2Config or MambaConfig (+ `bytelm_config`: the run's whole config)
    DIR/model.safetensors       the weights under transformers' names, tied head written once
    DIR/generation_config.json  the run's sampling settings where transformers has the same one
    DIR/tokenizer.json, tokenizer_config.json   the byte tokenizer (`byte_tokenizer.py`)
    DIR/README.md               the model card (`model_card.py`)

GPT-2 is GPT-2's architecture exactly, so the mapping is names only: transformers' `Conv1D` keeps
weights as `[in, out]`, like our Dense kernels. Mamba maps onto `MambaForCausalLM`: linear weights
are `[out, in]` (our kernels transposed), the depthwise conv is `[E, 1, K]` (ours `[K, E]`), and
`x_proj`'s rows are (Δ low-rank, B, C) in both. Every mapping is a transpose or a reshape, so export
then import gives every leaf back bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bytelm.errors import UsageError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
GENERATION_FILE = "generation_config.json"
BYTELM_KEY = "bytelm_config"  # the run's own config, inside transformers' config.json
LAYER_NORM_EPS = 1e-5  # both families' (models/transformer.py, models/mamba.py)


class ExportError(UsageError):
    """A run cannot be exported as asked (an option with no transformers counterpart, an existing --out)."""


class Rule(NamedTuple):
    """One weight: transformers' name, ours (`{i}` = the layer), and the layout change each way."""

    hf: str
    ours: str
    to_hf: Callable[[np.ndarray], np.ndarray]
    from_hf: Callable[[np.ndarray], np.ndarray]


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _transposed(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.T)


def _conv_to_hf(kernel_KxE: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(kernel_KxE.T[:, None, :])  # [E, 1, K]: PyTorch's depthwise Conv1d


def _conv_from_hf(weight_Ex1xK: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(weight_Ex1xK[:, 0, :].T)


def _rules(pairs: list[tuple[str, str]], change=(_same, _same)) -> list[Rule]:
    return [Rule(hf, ours, *change) for hf, ours in pairs]


GPT2_GLOBAL = _rules([("transformer.wte.weight", "wte"), ("transformer.wpe.weight", "wpe")])
GPT2_GLOBAL += _rules([("transformer.ln_f.weight", "ln_f/scale"), ("transformer.ln_f.bias", "ln_f/bias")])
GPT2_LAYER = _rules(
    [
        ("transformer.h.{i}.ln_1.weight", "h_{i}/ln_1/scale"),
        ("transformer.h.{i}.ln_1.bias", "h_{i}/ln_1/bias"),
        ("transformer.h.{i}.attn.c_attn.weight", "h_{i}/attn/qkv/kernel"),
        ("transformer.h.{i}.attn.c_attn.bias", "h_{i}/attn/qkv/bias"),
        ("transformer.h.{i}.attn.c_proj.weight", "h_{i}/attn/proj/kernel"),
        ("transformer.h.{i}.attn.c_proj.bias", "h_{i}/attn/proj/bias"),
        ("transformer.h.{i}.ln_2.weight", "h_{i}/ln_2/scale"),
        ("transformer.h.{i}.ln_2.bias", "h_{i}/ln_2/bias"),
        ("transformer.h.{i}.mlp.c_fc.weight", "h_{i}/mlp/fc/kernel"),
        ("transformer.h.{i}.mlp.c_fc.bias", "h_{i}/mlp/fc/bias"),
        ("transformer.h.{i}.mlp.c_proj.weight", "h_{i}/mlp/proj/kernel"),
        ("transformer.h.{i}.mlp.c_proj.bias", "h_{i}/mlp/proj/bias"),
    ]
)
MAMBA_GLOBAL = _rules([("backbone.embeddings.weight", "embedding"), ("backbone.norm_f.weight", "norm_f/scale")])
_MIXER = "backbone.layers.{i}.mixer"
MAMBA_LAYER = (
    _rules([("backbone.layers.{i}.norm.weight", "layers_{i}/norm/scale")])
    + _rules(
        [(f"{_MIXER}.{name}.weight", f"layers_{{i}}/mixer/{name}/kernel") for name in ("in_proj", "x_proj", "out_proj")]
        + [(f"{_MIXER}.dt_proj.weight", "layers_{i}/mixer/dt_proj/kernel")],
        (_transposed, _transposed),
    )
    + [Rule(f"{_MIXER}.conv1d.weight", "layers_{i}/mixer/conv1d_kernel", _conv_to_hf, _conv_from_hf)]
    + _rules(
        [
            (f"{_MIXER}.conv1d.bias", "layers_{i}/mixer/conv1d_bias"),
            (f"{_MIXER}.dt_proj.bias", "layers_{i}/mixer/dt_proj/bias"),
            (f"{_MIXER}.A_log", "layers_{i}/mixer/A_log"),
            (f"{_MIXER}.D", "layers_{i}/mixer/D"),
        ]
    )
)

# The fields of `config.model` each family's export reads; any other is an option transformers' class
# may not have, so exporting it would silently drop it. (scan_mode/scan_chunk choose how Mamba
# computes, not what, and have no effect on the weights or the function.)
KNOWN_FIELDS = {
    "gpt2": {"name", "num_layers", "num_heads", "head_dim", "ffn_hidden", "seq_len"},  # + the options at GPT-2's values
    "mamba": {"name", "d_model", "num_layers", "d_state", "d_conv", "expand", "dt_rank", "seq_len"}
    | {"scan_mode", "scan_chunk"},
}


def check_exportable(model_config: dict) -> None:
    """Raises a one-line `ExportError` naming the first model option with no transformers counterpart."""
    name = model_config.get("name")
    if name not in KNOWN_FIELDS:
        raise ExportError(f"model.name={name!r} has no transformers counterpart: export knows gpt2 and mamba")
    known = KNOWN_FIELDS[name]
    if name == "gpt2":  # the architecture options transformers' GPT-2 has only at GPT-2's own values
        from bytelm.models import transformer  # (here: a sampler reads its flags before JAX is imported)

        known = known | set(transformer.ARCHITECTURE_DEFAULTS)
        for field, gpt2_value in transformer.ARCHITECTURE_DEFAULTS.items():
            if model_config.get(field, gpt2_value) != gpt2_value:
                raise ExportError(
                    f"model.{field}={model_config[field]!r} is not GPT-2's ({gpt2_value!r}): transformers' "
                    "GPT2LMHeadModel cannot compute it, so it cannot be exported (keep the pack instead)"
                )
    for field in sorted(set(model_config) - known):
        raise ExportError(
            f"model.{field}={model_config[field]!r} has no counterpart in transformers' "
            f"{'GPT2LMHeadModel' if name == 'gpt2' else 'MambaForCausalLM'}: it cannot be exported"
        )


def rules(model_config: dict) -> list[Rule]:
    """Every weight's rule for this model, its layers expanded."""
    globals_, layer = (GPT2_GLOBAL, GPT2_LAYER) if model_config["name"] == "gpt2" else (MAMBA_GLOBAL, MAMBA_LAYER)
    n = int(model_config["num_layers"])
    expanded = [Rule(r.hf.format(i=i), r.ours.format(i=i), r.to_hf, r.from_hf) for i in range(n) for r in layer]
    return list(globals_) + expanded


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
    """transformers' config.json for the model (without the embedded bytelm config)."""
    m = model_config
    common = {"vocab_size": 256, "tie_word_embeddings": True, "bos_token_id": None, "eos_token_id": None}
    common |= {"pad_token_id": None, "layer_norm_epsilon": LAYER_NORM_EPS, "dtype": "float32", "use_cache": True}
    if m["name"] == "gpt2":
        width = int(m["num_heads"]) * int(m["head_dim"])
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "n_positions": int(m["seq_len"]),
            "n_embd": width,
            "n_layer": int(m["num_layers"]),
            "n_head": int(m["num_heads"]),
            "n_inner": int(m["ffn_hidden"]),
            "activation_function": "gelu_new",  # GPT-2's tanh approximation, as models/transformer.py
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "scale_attn_weights": True,
            **common,
        }
    d_model, expand = int(m["d_model"]), int(m["expand"])
    rank = int(np.ceil(d_model / 16)) if str(m["dt_rank"]) == "auto" else int(m["dt_rank"])
    return {
        "architectures": ["MambaForCausalLM"],
        "model_type": "mamba",
        "hidden_size": d_model,
        "intermediate_size": expand * d_model,
        "state_size": int(m["d_state"]),
        "num_hidden_layers": int(m["num_layers"]),
        "expand": expand,
        "conv_kernel": int(m["d_conv"]),
        "time_step_rank": rank,
        "use_bias": False,
        "use_conv_bias": True,
        "hidden_act": "silu",
        "residual_in_fp32": True,
        **common,
    }


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
    config = Path(path) / CONFIG_FILE
    if not (Path(path) / WEIGHTS_FILE).is_file() or not config.is_file():
        return False
    try:
        return BYTELM_KEY in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


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
