"""GPT-2 as transformers' `GPT2LMHeadModel`: the architecture is GPT-2's exactly, so the mapping is
names only (transformers' `Conv1D` keeps weights as `[in, out]`, like our Dense kernels). A GPT-2 with
an architecture option other than GPT-2's own cannot be computed by that class and is refused."""

from __future__ import annotations

from bytelm.interop.huggingface import ExportError, named_rules
from bytelm.models import gpt2

ARCHITECTURE = "GPT2LMHeadModel"
# (dropout changes training only, and GPT2Config carries each rate: embd_pdrop, resid_pdrop, attn_pdrop)
KNOWN_FIELDS = {"num_layers", "num_heads", "head_dim", "ffn_hidden", "seq_len", *gpt2.ARCHITECTURE_OPTIONS}
KNOWN_FIELDS |= set(gpt2.FAMILY.dropout_fields)
LAYER_NORM_EPS = 1e-5  # GPT-2's (models/gpt2/transformer.py)

GLOBAL = named_rules(
    [
        ("transformer.wte.weight", "wte"),
        ("transformer.wpe.weight", "wpe"),
        ("transformer.ln_f.weight", "ln_f/scale"),
        ("transformer.ln_f.bias", "ln_f/bias"),
    ]
)
LAYER = named_rules(
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


def check(model_config: dict) -> None:
    """The architecture options transformers' GPT-2 has only at GPT-2's own values."""
    for field, gpt2_value in gpt2.FAMILY.defaults().items():
        if field in gpt2.ARCHITECTURE_OPTIONS and model_config.get(field, gpt2_value) != gpt2_value:
            raise ExportError(
                f"model.{field}={model_config[field]!r} is not GPT-2's ({gpt2_value!r}): transformers' "
                f"{ARCHITECTURE} cannot compute it, so it cannot be exported (keep the pack instead)"
            )


def hf_config(m: dict) -> dict:
    """GPT2Config's fields for the run's sizes."""
    width = int(m["num_heads"]) * int(m["head_dim"])
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "gpt2",
        "n_positions": int(m["seq_len"]),
        "n_embd": width,
        "n_layer": int(m["num_layers"]),
        "n_head": int(m["num_heads"]),
        "n_inner": int(m["ffn_hidden"]),
        "activation_function": "gelu_new",  # GPT-2's tanh approximation, as models/gpt2/transformer.py
        "resid_pdrop": float(m.get("resid_dropout", 0.0)),
        "embd_pdrop": float(m.get("embed_dropout", 0.0)),
        "attn_pdrop": float(m.get("attn_dropout", 0.0)),
        "scale_attn_weights": True,
        "layer_norm_epsilon": LAYER_NORM_EPS,
    }
