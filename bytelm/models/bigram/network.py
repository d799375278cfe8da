"""The byte bigram: logits `[B, L, V]` = one-hot `[B, L, V]` × table `[V, V]`, row i the logits of the
byte after byte i.

    params/table   [256, 256]   starts at zero: the uniform distribution, a loss of ln 256 = 5.545 nats

Decoding (`bytelm.models.decoding`): the model sees one byte (`max_context` 1), so its cache is empty
and a step is one row of the table.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bytelm.data.tokenizer import one_hot
from bytelm.models.bigram import BigramConfig


class Bigram(nn.Module):
    """`apply(variables, x)`: one-hot tokens `[B, L, V]` (any L) → float32 logits `[B, L, V]`."""

    config: BigramConfig
    max_context = 1

    def setup(self):
        V = self.config.vocab_size
        self.table = self.param("table", nn.initializers.zeros, (V, V))

    def __call__(self, x_BxLxV: jax.Array) -> jax.Array:
        chex.assert_shape(x_BxLxV, (None, None, self.config.vocab_size))
        return x_BxLxV.astype(jnp.float32) @ self.table

    def empty_cache(self, batch: int) -> tuple:
        """Nothing to carry: the next byte depends on the last one alone, which each call brings."""
        return ()

    def prefill(self, ids_BxT: jax.Array, length: jax.Array) -> tuple[jax.Array, tuple]:
        last_B = jax.lax.dynamic_index_in_dim(ids_BxT, length - 1, axis=1, keepdims=False)
        return self.step(last_B, ())

    def step(self, ids_B: jax.Array, cache: tuple) -> tuple[jax.Array, tuple]:
        return one_hot(ids_B, jnp) @ self.table, cache
