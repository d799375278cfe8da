"""The model registry: builds a model from `config.model.name`. Models know nothing of training or sampling.

    transformer  GPT-2, top to bottom (attention, MLP, block, model; cached decoding)
    mamba        Mamba: config, initialisers, conv, mixer, block, model; one-token decoding steps
    scans        the selective scan: the sequential reference, fused, parallel and chunked forms

Every model maps one-hot tokens `[B, L, 256]` to logits `[B, L, 256]` through
`model.apply(variables, x)`, where `variables = {'params': ...}` is the tree a parameter pack holds.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bytelm.data.tokenizer import VOCAB_SIZE
from bytelm.errors import ConfigError
from bytelm.models import mamba, transformer
from bytelm.models.transformer import GPT2, GPT2Config

MODEL_NAMES = ("gpt2", "mamba")


def build(model_config, **kernels: str) -> nn.Module:
    """The flax module named by `model_config.name`, with sizes from the same config.

    `kernels` (GPT-2 only: `attention`, `compute_dtype`) choose how it computes, not what: the
    parameters are the same tree either way (`bytelm.parallel.runtime.model_kernels` picks them)."""
    name = model_config.name
    if name == "gpt2":
        return GPT2(GPT2Config.from_config(model_config, **kernels))
    if kernels:
        raise ConfigError(f"kernel options {', '.join(kernels)} apply to gpt2 only, not {name}")
    if name == "mamba":
        return mamba.Mamba(mamba.MambaConfig.from_config(model_config))
    raise ConfigError(f"unknown model.name {name!r}: choose one of {', '.join(MODEL_NAMES)}")


def is_recurrent(model: nn.Module) -> bool:
    """True for models that decode one token at a time from a fixed-size state (`Mamba.step`),
    False for window models that must see their whole (cropped) context (`GPT2.decode`)."""
    return isinstance(model, mamba.Mamba)


def empty_cache(model: nn.Module, batch: int) -> tuple:
    """The decoding state before the first token: Mamba's per-layer conv window and SSM state, or
    GPT-2's per-layer key/value cache."""
    if isinstance(model, mamba.Mamba):
        return mamba.empty_cache(model.config, batch)
    return transformer.empty_cache(model.config, batch)


def init_variables(model: nn.Module, key: jax.Array) -> dict:
    """Fresh variables `{'params': ...}` for `model`, from an explicit PRNG key."""
    x = jnp.zeros((1, model.config.seq_len, VOCAB_SIZE), jnp.float32)
    return jax.jit(model.init)(key, x)  # compiled: op-by-op init of a scan model takes seconds


def abstract_variables(model: nn.Module) -> dict:
    """The shapes and dtypes of `init_variables` (`jax.ShapeDtypeStruct` leaves), allocating nothing."""
    return jax.eval_shape(lambda k: init_variables(model, k), jax.random.key(0))


def count_params(tree) -> int:
    """Total number of scalars in a tree of arrays or ShapeDtypeStructs."""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))
