"""Mamba-2 as transformers' `Mamba2ForCausalLM`: the names are state-spaces/mamba's (`embedding` becomes
`embeddings`), linear weights `[out, in]` (our kernels transposed), the depthwise conv `[E + 2GN, 1, K]`
(ours `[K, E + 2GN]`), in_proj's rows z, x, B, C, Δ in both. transformers' defaults are another model's
(Mamba-Codestral: 8 groups, 128 heads, an untied head), so config.json writes every size explicitly;
its default `time_step_limit` (0, inf) is ours, and is left out (JSON has no infinity). `chunk` and
`scan_mode` choose how bytelm computes, not what; the dropout rates act only while training, so they
are not exported either."""

from __future__ import annotations

from bytelm.interop.hf_mamba import conv_from_hf, conv_to_hf
from bytelm.interop.huggingface import Rule, named_rules, transposed
from bytelm.models import mamba2

ARCHITECTURE = "Mamba2ForCausalLM"
KNOWN_FIELDS = {"d_model", "num_layers", "d_state", "d_conv", "expand", "headdim", "ngroups", "chunk", "seq_len"}
KNOWN_FIELDS |= {"scan_mode", *mamba2.FAMILY.dropout_fields}  # dropout: training only, the model the same
NORM_EPS = 1e-5  # models/mamba2/network.py's

_MIXER = "backbone.layers.{i}.mixer"
GLOBAL = named_rules([("backbone.embeddings.weight", "embedding"), ("backbone.norm_f.weight", "norm_f/scale")])
LAYER = (
    named_rules([("backbone.layers.{i}.norm.weight", "layers_{i}/norm/scale")])
    + named_rules(
        [(f"{_MIXER}.{name}.weight", f"layers_{{i}}/mixer/{name}/kernel") for name in ("in_proj", "out_proj")],
        (transposed, transposed),
    )
    + [Rule(f"{_MIXER}.conv1d.weight", "layers_{i}/mixer/conv1d_kernel", conv_to_hf, conv_from_hf)]
    + named_rules(
        [
            (f"{_MIXER}.conv1d.bias", "layers_{i}/mixer/conv1d_bias"),
            (f"{_MIXER}.dt_bias", "layers_{i}/mixer/dt_bias"),
            (f"{_MIXER}.A_log", "layers_{i}/mixer/A_log"),
            (f"{_MIXER}.D", "layers_{i}/mixer/D"),
            (f"{_MIXER}.norm.weight", "layers_{i}/mixer/norm/scale"),
        ]
    )
)


def check(model_config: dict) -> None:
    """Every Mamba-2 config exports: its options are Mamba2Config's own."""


def hf_config(m: dict) -> dict:
    """Mamba2Config's fields for the run's sizes, each written out (transformers' defaults are not ours)."""
    c = mamba2.FAMILY.config(m)
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "mamba2",
        "hidden_size": c.d_model,
        "num_hidden_layers": c.num_layers,
        "num_heads": c.nheads,
        "head_dim": c.headdim,
        "n_groups": c.ngroups,
        "state_size": c.d_state,
        "expand": c.expand,
        "conv_kernel": c.d_conv,
        "chunk_size": c.chunk,
        "use_bias": False,
        "use_conv_bias": True,
        "hidden_act": "silu",
        "residual_in_fp32": True,
        "rescale_prenorm_residual": False,
        "layer_norm_epsilon": NORM_EPS,
    }
