"""The hierarchical byte model, top to bottom: byte layers, boundaries, chunks, the main network, back.

    embedding                   one-hot bytes × [V, D]; the head is tied to it
    encoder_i                   Mamba-2 blocks (`models/mamba2`) or GPT blocks with rotary positions
                                (`models/gpt2`), at byte resolution
    router                      the learned rule's W_q, W_k (`boundaries.py`; none for fixed and space)
    residual_proj               [D, D], zero-initialised: the encoder's output carried past the chunks
    main_pad                    [M − D], zero-initialised, where the main network is wider (M = main_width):
                                appended to each chunk's D channels on the way in; the way out keeps the
                                first D (H-Net's pad_dimension and truncation)
    main_i                      GPT blocks (`models/gpt2/transformer.py`, with their options) over the
                                chunk slots, causal over chunks, positions = the slot index, width M
    decoder_i, norm_f           byte layers again, then the final RMSNorm

A byte t takes the smoothed output of the chunk that started at or before it, times the straight-through
confidence (1 in the forward pass, the gradient of max(p_t, 1 − p_t) in the backward, as H-Net's STE),
plus residual_proj of its encoder output. Causal: a chunk's main-network input is the encoder output at
its first byte, so the chunk a byte reads saw nothing after that byte.

Departures from goombalab/hnet: the main network's width is D unless `main_width` widens it (H-Net's
configs always widen it); no final norm of the main network's own (the decoder's pre-norms and the final norm
normalise what it adds, and without one a stride of 1 with no byte layers is GPT-2 exactly, which the
tests check); a fixed number of slots per window (static shapes, the overflow counted: chunking.py);
residual_proj's bias starts at zero (PyTorch's default draws it); the EMA as an associative scan, with
p unclamped (chunking.py says why); no final norm of the encoder's own, where H-Net's encoder stack
ends in one (with one, hierarchical_learned reached 1.6098 / 1.6109 at 1200 steps, seeds 0 / 1, against
1.6106 / 1.6130 without, and 26% / 31% of its chunks started a word against 25% / 43%: no gain worth a
parameter every earlier pack lacks). H-Net's per-stage learning rates are `train.lr_multiplier`.

Training sows into two flax collections that the trainer reads when it asks for them: `losses` (the
learned rule's ratio loss, weighted) and `metrics` (the fraction of bytes that start a chunk, the
windows and boundaries past the slots).

Decoding (`bytelm.models.decoding`), a window model like GPT-2 (`max_context` = seq_len): while the
context fits, `step` runs the byte layers one position from their caches, decides the boundary, and
advances the main network's cache (a row each: rows start chunks at different bytes) and the EMA only
when the byte starts an admitted chunk; past seq_len it re-runs the window, as the reference does.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bytelm.data.tokenizer import one_hot
from bytelm.models.gpt2 import GPT2Config
from bytelm.models.gpt2 import transformer as gpt2
from bytelm.models.hierarchical import HierarchicalConfig, boundaries, chunking
from bytelm.models.mamba.network import RMSNorm
from bytelm.models.mamba2 import Mamba2Config
from bytelm.models.mamba2 import network as mamba2

NORM_EPS = 1e-5


class HCache(NamedTuple):
    """The decoding state: `pos` int32 [] (bytes consumed), `window` int32 `[B, seq_len]` (those bytes),
    the byte layers' caches, what the rules need of the last byte (`previous_h` `[B, D]`, `previous_space`
    `[B]`), the main network's keys and values `[B, S, H, K]` per layer, the chunks admitted `[B]` and
    the smoothed output of the current one `[B, D]`."""

    pos: jax.Array
    window: jax.Array
    encoder: tuple
    previous_h: jax.Array
    previous_space: jax.Array
    main: tuple
    chunks: jax.Array
    smoothed: jax.Array
    decoder: tuple


def byte_layer_configs(c: HierarchicalConfig) -> tuple[Mamba2Config, GPT2Config]:
    """The byte layers' own configs (whichever kind is in use); their residual init counts all of them."""
    layers = max(c.encoder_layers + c.decoder_layers, 1)
    m2 = Mamba2Config(c.seq_len, c.d_model, layers, d_state=c.d_state, headdim=c.headdim, chunk=c.ssd_chunk)
    g2 = GPT2Config(
        c.seq_len, layers, c.byte_heads, c.d_model // c.byte_heads, 4 * c.d_model, positions="rope", norm="rmsnorm"
    )
    return m2, g2


def main_config(c: HierarchicalConfig) -> GPT2Config:
    """The main network's GPT-2 config, over the chunk slots, at its width M."""
    return GPT2Config(
        c.num_slots, c.main_layers, c.main_heads, c.d_main // c.main_heads, c.main_ffn or 4 * c.d_main,
        positions=c.main_positions, norm=c.main_norm, qk_norm=c.main_qk_norm,
    )  # fmt: skip


class Hierarchical(nn.Module):
    """`apply(variables, x)`: one-hot bytes `[B, L, V]` (L <= seq_len) → logits `[B, L, V]`."""

    config: HierarchicalConfig

    @property
    def max_context(self) -> int:
        return self.config.seq_len

    def setup(self):
        c = self.config
        m2, g2 = byte_layer_configs(c)
        byte_block = (lambda: mamba2.ResidualBlock(m2)) if c.byte_layers == "mamba2" else (lambda: gpt2.Block(g2))
        self.embedding = self.param("embedding", nn.initializers.normal(0.02), (c.vocab_size, c.d_model))
        self.encoder = [byte_block() for _ in range(c.encoder_layers)]  # named encoder_0, …
        if c.boundaries == "learned":
            self.router = boundaries.Router()
        self.residual_proj = nn.Dense(c.d_model, kernel_init=nn.initializers.zeros)
        if c.d_main > c.d_model:
            self.main_pad = self.param("main_pad", nn.initializers.zeros, (c.d_main - c.d_model,))
        main = main_config(c)
        self.main = [gpt2.Block(main) for _ in range(c.main_layers)]
        if c.main_positions == "learned":
            self.main_wpe = self.param("main_wpe", nn.initializers.normal(gpt2.INIT_STD), (c.num_slots, c.d_main))
        self.decoder = [byte_block() for _ in range(c.decoder_layers)]
        self.norm_f = RMSNorm(NORM_EPS)

    # --- the byte layers and the main network, in every mode ---------------------------------------

    def _bytes(self, blocks, h, length=None, caches=None, pos=None):
        """The byte layers over `h` `[B, L, D]`: plain (no `length`), a prefill (`length`: their caches
        too), or one step (`caches` and `pos`, h `[B, D]`)."""
        new = []
        for i, block in enumerate(blocks):
            if self.config.byte_layers == "mamba2":
                if caches is not None:
                    h, cache = block.step(h, caches[i])
                else:
                    h, cache = (block(h), None) if length is None else block(h, length)
            elif caches is not None:
                out, cache = block(h[:, None], caches[i], pos)
                h = out[:, 0]
            else:
                empty = None if length is None else self._empty_kv(h.shape[0], self.config.seq_len, byte=True)
                h, cache = block(h, empty, 0)
            new.append(cache)
        return h, tuple(new)

    def _main(self, z_BxSxD, caches=None, pos=None):
        """The main network over the slots (`caches`: a prefill from empty caches, or with `pos` `[B]` one
        slot per row): `[B, S, D]` in and out, `[B, S, M]` inside."""
        c = self.config
        z_BxSxM = z_BxSxD
        if c.d_main > c.d_model:
            pad = jnp.broadcast_to(self.main_pad, (*z_BxSxD.shape[:-1], c.d_main - c.d_model))
            z_BxSxM = jnp.concatenate([z_BxSxD, pad], axis=-1)
        if c.main_positions == "learned":
            z_BxSxM = z_BxSxM + (self.main_wpe[None] if pos is None else self.main_wpe[pos][:, None])
        new = []
        for i, block in enumerate(self.main):
            z_BxSxM, cache = block(z_BxSxM, None if caches is None else caches[i], 0 if pos is None else pos)
            new.append(cache)
        return z_BxSxM[..., : c.d_model], tuple(new)

    def _empty_kv(self, batch: int, length: int, byte: bool):
        c = self.config
        heads, width = (c.byte_heads, c.d_model) if byte else (c.main_heads, c.d_main)
        shape = (batch, length, heads, width // heads)
        return gpt2.KVCache(jnp.zeros(shape), jnp.zeros(shape))

    def _boundaries(self, x_BxLxV, h_BxLxD):
        c = self.config
        if c.boundaries == "fixed":
            return boundaries.fixed(x_BxLxV.shape[0], x_BxLxV.shape[1], c.chunk_ratio)
        if c.boundaries == "space":
            return boundaries.space(x_BxLxV)
        return self.router(h_BxLxD)

    # --- the forward pass ---------------------------------------------------------------------------

    def __call__(self, x_BxLxV: jax.Array) -> jax.Array:
        chex.assert_shape(x_BxLxV, (None, None, self.config.vocab_size))
        if x_BxLxV.shape[1] > self.config.seq_len:
            raise ValueError(f"input length {x_BxLxV.shape[1]} exceeds model.seq_len {self.config.seq_len}")
        return self._forward(x_BxLxV)[0]

    def _forward(self, x_BxLxV, length=None):
        """Logits `[B, L, V]`, and with `length` (a prefill) what the cache needs after it."""
        c = self.config
        h, encoder = self._bytes(self.encoder, x_BxLxV.astype(jnp.float32) @ self.embedding, length)
        p, b = self._boundaries(x_BxLxV, h)
        positions, _, count = chunking.slot_positions(b, c.num_slots)
        z, main = self._main(
            chunking.chunk(h, positions),
            None if length is None else tuple(self._empty_kv(h.shape[0], c.num_slots, False) for _ in self.main),
        )
        smoothed = chunking.smooth(z, p, positions)
        confidence = jnp.where(b, p, 1.0 - p)
        straight_through = 1.0 + (confidence - jax.lax.stop_gradient(confidence))  # exactly 1, with its gradient
        out = chunking.dechunk(smoothed, b) * straight_through[..., None] + self.residual_proj(h)
        out, decoder = self._bytes(self.decoder, out, length)
        logits = self.norm_f(out) @ self.embedding.T
        if not self.is_initializing():
            self._sow_training_signals(x_BxLxV, p, b, count)
            self.sow("intermediates", "boundaries", b)  # for whoever asks to see them (the probe, launch.sample)
        if length is None:
            return logits, None
        return logits, (h, encoder, main, smoothed, b, decoder)

    def _sow_training_signals(self, x_BxLxV, p, b, count):
        c = self.config
        over = jnp.maximum(count - c.num_slots, 0)
        self.sow("metrics", "boundary_fraction", jnp.mean(b.astype(jnp.float32)))
        # Of the chunks that start after a window's first byte, those whose previous byte is space-like
        # (a chunk that starts a word: the probe's `after_space`, over the whole batch), and those whose
        # own byte is (a chunk that starts at the space before a word, as SpaceByte's rule always does).
        space = x_BxLxV.astype(jnp.float32) @ boundaries.SPACE_LIKE  # [B, L]
        later = b[:, 1:].astype(jnp.float32)
        n_later = jnp.maximum(jnp.sum(later), 1.0)  # (0, not NaN, for a batch without such chunks)
        self.sow("metrics", "boundaries_after_space", jnp.sum(space[:, :-1] * later) / n_later)
        self.sow("metrics", "boundaries_at_space", jnp.sum(space[:, 1:] * later) / n_later)
        self.sow("metrics", "overflow_windows", jnp.mean((over > 0).astype(jnp.float32)))
        self.sow("metrics", "overflow_boundaries", jnp.sum(over).astype(jnp.float32))
        if c.boundaries == "learned" and c.ratio_loss:
            self.sow("losses", "ratio", c.ratio_loss * boundaries.ratio_loss(p, b, c.chunk_ratio))

    # --- decoding -----------------------------------------------------------------------------------

    def empty_cache(self, batch: int) -> HCache:
        """Nothing consumed: zeroed caches everywhere."""
        c = self.config
        m2, _ = byte_layer_configs(c)

        def byte_caches(n):
            if c.byte_layers == "mamba2":
                conv, ssm = (batch, m2.d_conv - 1, m2.conv_dim), (batch, m2.nheads, m2.headdim, m2.d_state)
                return tuple(mamba2.LayerCache(jnp.zeros(conv), jnp.zeros(ssm)) for _ in range(n))
            return tuple(self._empty_kv(batch, c.seq_len, True) for _ in range(n))

        return HCache(
            jnp.zeros((), jnp.int32), jnp.zeros((batch, c.seq_len), jnp.int32), byte_caches(c.encoder_layers),
            jnp.zeros((batch, c.d_model)), jnp.zeros((batch,)),
            tuple(self._empty_kv(batch, c.num_slots, False) for _ in range(c.main_layers)),
            jnp.zeros((batch,), jnp.int32), jnp.zeros((batch, c.d_model)), byte_caches(c.decoder_layers),
        )  # fmt: skip

    def prefill(self, ids_BxT: jax.Array, length: jax.Array) -> tuple[jax.Array, HCache]:
        """The forward pass over the prompt's last min(length, seq_len) bytes (cropped as the reference
        crops), keeping every cache: the logits `[B, V]` after the prompt and the cache."""
        c = self.config
        T = min(ids_BxT.shape[1], c.seq_len)
        window = jax.lax.dynamic_slice_in_dim(ids_BxT, jnp.maximum(length - c.seq_len, 0), T, axis=1)
        n = jnp.minimum(length, c.seq_len)  # the prompt's bytes in the window
        x = one_hot(window, jnp)
        logits, (h, encoder, main, smoothed, b, decoder) = self._forward(x, n)
        last = lambda a: jax.lax.dynamic_index_in_dim(a, n - 1, axis=1, keepdims=False)
        chunks = jnp.minimum(jnp.sum(b & (jnp.arange(T) < n), axis=1), c.num_slots).astype(jnp.int32)
        cache = HCache(
            n.astype(jnp.int32), jnp.zeros((window.shape[0], c.seq_len), jnp.int32).at[:, :T].set(window),
            encoder, last(h), last(x @ boundaries.SPACE_LIKE), main, chunks,
            jnp.take_along_axis(smoothed, jnp.maximum(chunks - 1, 0)[:, None, None], axis=1)[:, 0], decoder,
        )  # fmt: skip
        return last(logits), cache

    def step(self, ids_B: jax.Array, cache: HCache) -> tuple[jax.Array, HCache]:
        """The logits `[B, V]` after one more byte per row (at position `cache.pos`)."""
        return nn.cond(
            cache.pos < self.config.seq_len, Hierarchical._cached_step, Hierarchical._window_step, self, ids_B, cache
        )

    def _window_step(self, ids_B, cache: HCache):
        # Past seq_len the chunks' positions shift with every byte: re-run the window.
        window = jnp.concatenate([cache.window[:, 1:], ids_B[:, None]], axis=1)
        return self._forward(one_hot(window, jnp))[0][:, -1], cache._replace(pos=cache.pos + 1, window=window)

    def _cached_step(self, ids_B, cache: HCache):
        c = self.config
        x = one_hot(ids_B, jnp)
        h, encoder = self._bytes(self.encoder, x @ self.embedding, caches=cache.encoder, pos=cache.pos)
        p, b = self._step_boundary(x, h, cache)
        admit = b & (cache.chunks < c.num_slots)
        z, main = self._main(h[:, None], cache.main, cache.chunks)
        keep = lambda new, old: jnp.where(admit.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
        smoothed = keep(p[:, None] * z[:, 0] + (1.0 - p[:, None]) * cache.smoothed, cache.smoothed)
        out, decoder = self._bytes(self.decoder, smoothed + self.residual_proj(h), caches=cache.decoder, pos=cache.pos)
        window = jax.lax.dynamic_update_slice_in_dim(cache.window, ids_B[:, None], cache.pos, axis=1)
        main = jax.tree_util.tree_map(keep, main, cache.main)
        chunks = cache.chunks + admit.astype(jnp.int32)
        space = x @ boundaries.SPACE_LIKE
        return self.norm_f(out) @ self.embedding.T, HCache(
            cache.pos + 1, window, encoder, h, space, main, chunks, smoothed, decoder
        )

    def _step_boundary(self, x_BxV, h_BxD, cache: HCache):
        """p, b `[B]` of the byte at `cache.pos`, from what the cache keeps of the byte before."""
        c, first = self.config, cache.pos == 0
        if c.boundaries == "fixed":
            p, b = boundaries.fixed(x_BxV.shape[0], 1, c.chunk_ratio, start=cache.pos)
        elif c.boundaries == "space":
            p, b = boundaries.space(x_BxV[:, None], cache.previous_space)
        else:
            p, b = self.router(h_BxD[:, None], cache.previous_h)
        return jnp.where(first, 1.0, p[:, 0]), b[:, 0] | first  # the first byte starts a chunk
