"""The model families, by the name `config.model.name` gives them, and what every model shares.

    gpt2     GPT-2, top to bottom (`gpt2/transformer.py`), with cached decoding and architecture options
    mamba    Mamba (`mamba/network.py`) around the selective scan's four forms (`mamba/scans.py`)
    bigram   the byte bigram: one [256, 256] table, the baseline
    mamba2   Mamba-2 (`mamba2/network.py`), its recurrence as chunked matmuls (SSD, `mamba2/ssd.py`)
    hierarchical  byte layers around a main network over chunks (H-Net, SpaceByte, fixed patches)

A family is one subpackage and one line of `FAMILIES`; `family.py` says what it declares. Every model
maps one-hot tokens `[B, L, 256]` to logits `[B, L, 256]` through `model.apply(variables, x)`, where
`variables = {'params': ...}` is the tree a parameter pack holds, and decodes through the protocol
of `decoding.py`. Models know nothing of training or sampling.

This package and every family's `__init__` import no JAX (a config file loads before JAX starts); the
helpers below that need it import it when they are called.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from bytelm.errors import ConfigError
from bytelm.models.family import Family

# name → the subpackage that declares it (its `FAMILY`).
FAMILIES = {
    "gpt2": "bytelm.models.gpt2",
    "mamba": "bytelm.models.mamba",
    "bigram": "bytelm.models.bigram",
    "mamba2": "bytelm.models.mamba2",
    "hierarchical": "bytelm.models.hierarchical",
}


def family(name: str) -> Family:
    """The family called `name`; a one-line `ConfigError` naming the known ones otherwise."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown model.name {name!r}: choose one of {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[name]).FAMILY


def family_of(model_config: Mapping) -> Family:
    """The family of `config.model` (a ConfigDict or dict)."""
    return family(model_config["name"])


def model_config(name: str, **values: Any) -> dict[str, Any]:
    """`config.model` for a config file: the family's every field, its defaults filled in."""
    return family(name).model_config(**values)


def build(model_config: Mapping, **kernels: str):
    """The flax module `config.model` names, with its sizes and options.

    `kernels` (the family's `kernel_options`, e.g. GPT-2's `attention` and `compute_dtype`) choose how
    it computes, not what: the parameters are the same tree either way
    (`bytelm.parallel.runtime.model_kernels` picks them)."""
    fam = family_of(model_config)
    return fam.build(fam.config(model_config, **kernels))


def init_variables(model, key):
    """Fresh variables `{'params': ...}` for `model`, from an explicit PRNG key."""
    import jax
    import jax.numpy as jnp

    x = jnp.zeros((1, model.config.seq_len, model.config.vocab_size), jnp.float32)
    return jax.jit(model.init)(key, x)  # compiled: op-by-op init of a scan model takes seconds


def seen_forward(model):
    """`model.apply` jitted to return `(logits, sown)`: logits (B, L, V) and what the model sowed to be
    seen, `{'intermediates': ...}` (a chunking model's `boundaries`: flax keeps each sown value in a
    tuple, so `sown['intermediates']['boundaries'][0]` is the (B, L) bool array), or `{}`."""
    import jax

    return jax.jit(lambda variables, x: model.apply(variables, x, mutable=["intermediates"]))


def abstract_variables(model):
    """The shapes and dtypes of `init_variables` (`jax.ShapeDtypeStruct` leaves), allocating nothing."""
    import jax

    return jax.eval_shape(lambda k: init_variables(model, k), jax.random.key(0))


def count_params(tree) -> int:
    """Total number of scalars in a tree of arrays or ShapeDtypeStructs."""
    import jax

    return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))
