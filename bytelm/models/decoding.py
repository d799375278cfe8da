"""The decoding protocol every model implements, so that a sampler is one loop for every family.

In the spirit of Flax lm1b's `tokens_to_logits(tokens, cache) -> (logits, cache)`, with the prompt as a
call of its own:

    cache = model.empty_cache(batch)                      the state before any byte (no weights needed)
    logits_BxV, cache = prefill(model, variables, ids_BxT, length)
                                                          the logits for the byte after each row's
                                                          prompt `ids[:, :length]`, from an empty
                                                          cache: T is static (the caller's padded
                                                          buffer), 1 <= length <= T is traced, so
                                                          prompt lengths share a program
    logits_BxV, cache = step(model, variables, ids_B, cache)
                                                          the logits after one more byte per row
    model.max_context                                     how many bytes the model sees: `seq_len` for
                                                          a window model, None when unbounded

The cache is a pytree of fixed-shape arrays, so a compiled loop carries it. A window model (GPT-2)
keeps its last `seq_len` ids in the cache beside its keys and values, and once the context outgrows
them re-runs its cropped window inside `step`; a recurrent model (Mamba) carries a fixed-size state;
the bigram needs nothing but the last byte. Whatever the cache holds, `step` after `prefill` gives the
logits of the plain forward pass over the model's context (the last `max_context` bytes, or all of
them) to float rounding: `context_logits` computes that, the reference decoder is built on it, and the
tests hold every family to it.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp

from bytelm.data.tokenizer import one_hot


class Decodable(Protocol):
    """What a network offers a sampler (beside `__call__`, one-hot `[B, L, V]` → logits `[B, L, V]`)."""

    max_context: int | None

    def empty_cache(self, batch: int) -> Any: ...

    def prefill(self, ids_BxT: jax.Array, length: jax.Array) -> tuple[jax.Array, Any]: ...

    def step(self, ids_B: jax.Array, cache: Any) -> tuple[jax.Array, Any]: ...


def prefill(model: Decodable, variables, ids_BxT: jax.Array, length: jax.Array) -> tuple[jax.Array, Any]:
    """Float32 logits `[B, V]` after each row's first `length` ids, and the cache after them."""
    return model.apply(variables, ids_BxT, length, method=model.prefill)


def step(model: Decodable, variables, ids_B: jax.Array, cache) -> tuple[jax.Array, Any]:
    """Float32 logits `[B, V]` after one more id per row, and the cache after it."""
    return model.apply(variables, ids_B, cache, method=model.step)


def context_logits(model: Decodable, variables, ids_BxT: jax.Array, length: jax.Array) -> jax.Array:
    """The reference: the plain forward pass over ids `[B, T]` (T <= `max_context` when the model has
    one), float32 logits `[B, V]` at position `length − 1`. Causal, so what follows `length` (padding)
    cannot change them."""
    logits_BxTxV = model.apply(variables, one_hot(ids_BxT, jnp))
    return jax.lax.dynamic_index_in_dim(logits_BxTxV, length - 1, axis=1, keepdims=False).astype(jnp.float32)
