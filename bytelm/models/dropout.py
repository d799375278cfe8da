"""Dropout as every family applies it: only while training, i.e. when the caller passes a `dropout` PRNG
key (`model.apply(..., rngs={"dropout": key})`, as the train step does); evaluation, the probe and
sampling pass none, so they never drop."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def dropout(x: jax.Array, rate: float, module: nn.Module) -> jax.Array:
    """`x` with a fraction `rate` of its entries dropped (the rest scaled by 1/(1 − rate)) while training,
    i.e. when the caller passed a `dropout` PRNG key; as it is otherwise, and always at rate 0."""
    if not rate or not module.has_rng("dropout"):
        return x
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)
