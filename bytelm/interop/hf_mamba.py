"""Mamba as transformers' `MambaForCausalLM`: linear weights are `[out, in]` (our kernels transposed),
the depthwise conv is `[E, 1, K]` (ours `[K, E]`), and `x_proj`'s rows are (Δ low-rank, B, C) in both.
`scan_mode` and `scan_chunk` choose how bytelm computes, not what, and the dropout rates act only while
training, so they export as nothing."""

from __future__ import annotations

import numpy as np

from bytelm.interop.huggingface import Rule, named_rules, transposed
from bytelm.models import mamba

ARCHITECTURE = "MambaForCausalLM"
KNOWN_FIELDS = {"d_model", "num_layers", "d_state", "d_conv", "expand", "dt_rank", "seq_len", "scan_mode", "scan_chunk"}
KNOWN_FIELDS |= set(mamba.FAMILY.dropout_fields)  # training only, the model the same
RMS_NORM_EPS = 1e-5  # the official block's (models/mamba/network.py)


def conv_to_hf(kernel_KxE: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(kernel_KxE.T[:, None, :])  # [E, 1, K]: PyTorch's depthwise Conv1d


def conv_from_hf(weight_Ex1xK: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(weight_Ex1xK[:, 0, :].T)


_MIXER = "backbone.layers.{i}.mixer"
GLOBAL = named_rules([("backbone.embeddings.weight", "embedding"), ("backbone.norm_f.weight", "norm_f/scale")])
LAYER = (
    named_rules([("backbone.layers.{i}.norm.weight", "layers_{i}/norm/scale")])
    + named_rules(
        [(f"{_MIXER}.{name}.weight", f"layers_{{i}}/mixer/{name}/kernel") for name in ("in_proj", "x_proj", "out_proj")]
        + [(f"{_MIXER}.dt_proj.weight", "layers_{i}/mixer/dt_proj/kernel")],
        (transposed, transposed),
    )
    + [Rule(f"{_MIXER}.conv1d.weight", "layers_{i}/mixer/conv1d_kernel", conv_to_hf, conv_from_hf)]
    + named_rules(
        [
            (f"{_MIXER}.conv1d.bias", "layers_{i}/mixer/conv1d_bias"),
            (f"{_MIXER}.dt_proj.bias", "layers_{i}/mixer/dt_proj/bias"),
            (f"{_MIXER}.A_log", "layers_{i}/mixer/A_log"),
            (f"{_MIXER}.D", "layers_{i}/mixer/D"),
        ]
    )
)


def check(model_config: dict) -> None:
    """Every Mamba config exports: its options are MambaConfig's own."""


def hf_config(m: dict) -> dict:
    """MambaConfig's fields for the run's sizes."""
    config = mamba.FAMILY.config(m)
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "mamba",
        "hidden_size": config.d_model,
        "intermediate_size": config.d_inner,
        "state_size": config.d_state,
        "num_hidden_layers": config.num_layers,
        "expand": config.expand,
        "conv_kernel": config.d_conv,
        "time_step_rank": config.rank,
        "use_bias": False,
        "use_conv_bias": True,
        "hidden_act": "silu",
        "residual_in_fp32": True,
        "layer_norm_epsilon": RMS_NORM_EPS,
    }
