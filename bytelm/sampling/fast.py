"""Fast generation: the decoding protocol inside one compiled loop, the same bytes as the reference.

The reference decoder (`reference.py`) runs the model's plain forward pass over the context, from
Python, once per byte. Here the prompt runs once (`prefill`) and each new byte is one `step` of the
model's decoding protocol (`bytelm.models.decoding`), inside a jitted `jax.lax.fori_loop` together
with the choice of the byte: the repeat penalty, temperature, top-k and the draw are the reference's
own `choice.choose_token`, so for the same weights, settings and seed the text is the reference's,
byte for byte (the cached logits differ from the full forward only by float rounding; the tests bound
it). What a step costs is the family's business: for GPT-2 attention over its cached keys and values
while the context fits its window (a forward pass over the window past it), for Mamba one recurrent
step whatever the context.

The loop's state, for N samples at once:

    history  int32 `[N, capacity]`  each row's prompt and the bytes generated so far
    logits   float32 `[N, V]`       the logits for the next byte
    cache    the model's decoding state after `history`

Compiled programs: the prompt is padded to a power of two for `prefill` and `history` to one for the
loop, and the loop's bounds, the prompt's length, the seeds and the token indices are traced, so
nearby lengths and every seed share one compilation.
Streaming: the loop runs `chunk` bytes per call and the host passes on each call's bytes; the first
call makes a single byte, so it shows after the prefill and one step. (A host callback per byte was
the alternative; chunks keep host round trips out of the loop.)
Batches: sample i of `num_samples` uses seed `seed + i`, so it is exactly the text the reference gives
with `--seed=seed+i`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bytelm.models import decoding
from bytelm.sampling.choice import choose_token
from bytelm.sampling.sampler import Sampler, padded
from bytelm.sampling.settings import SampleSettings


def recent_ids(history_NxC: jax.Array, position: jax.Array, window: int) -> jax.Array:
    """The `window` ids before `position` in every row, `[N, window]`, −1 where the history is shorter."""
    index_W = position - window + jnp.arange(window)
    taken = jnp.take(history_NxC, jnp.maximum(index_W, 0), axis=1)
    return jnp.where(index_W >= 0, taken, -1)


class FastSampler(Sampler):
    """Compiled generation for one model (`Sampler.generate`: `[num_samples, generate]` int32 ids)."""

    def __init__(self, model, variables, *, chunk: int = 16):
        self.model, self.variables, self.chunk = model, variables, chunk
        self._prefill = jax.jit(functools.partial(decoding.prefill, model))
        self._generate_bytes = jax.jit(self._generate_bytes_impl, static_argnames="settings")

    def _generate_bytes_impl(self, variables, state, first, stop, prompt_length, start_index, seeds_N, settings):
        """Generates bytes first..stop−1 of every row (byte k at position `prompt_length + k`), in one
        loop; returns the new state."""
        # One choice per row, each with its own seed; the token index is shared.
        choose = jax.vmap(
            lambda logits, recent, seed, index: choose_token(logits, recent, index, settings, seed),
            in_axes=(0, 0, 0, None),
        )

        def generate_one(k, state):
            history, logits, cache = state
            position = prompt_length + k
            recent = recent_ids(history, position, settings.repeat_window)
            token_N = choose(logits, recent, seeds_N, start_index + k)
            history = jax.lax.dynamic_update_slice_in_dim(history, token_N[:, None], position, axis=1)
            logits, cache = decoding.step(self.model, variables, token_N, cache)
            return history, logits, cache

        return jax.lax.fori_loop(first, stop, generate_one, state)

    def generate(
        self,
        prompt_ids: Sequence[int],
        settings: SampleSettings,
        *,
        num_samples: int = 1,
        start_index: int = 0,
        on_ids: Callable[[np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """Generates `settings.generate` ids after `prompt_ids` for each of `num_samples` samples.

        `on_ids` receives new ids `[num_samples, n]` as soon as they are computed (for streaming):
        the first byte alone, so it shows after the prefill and one step, then `chunk` at a time.
        The byte generated k-th uses token index `start_index + k`.
        """
        count, prompt_length = settings.generate, len(prompt_ids)
        if count == 0:
            return np.zeros((num_samples, 0), np.int32)
        history = np.zeros((num_samples, padded(padded(prompt_length) + count)), np.int32)
        history[:, :prompt_length] = np.asarray(prompt_ids, np.int32)
        logits, cache = self._prefill(self.variables, history[:, : padded(prompt_length)], np.int32(prompt_length))
        state = (jnp.asarray(history), logits, cache)
        seeds = np.arange(num_samples, dtype=np.int32) + settings.seed
        bounds = [0, *range(1, count, self.chunk), count]
        out = []
        for first, stop in zip(bounds[:-1], bounds[1:], strict=True):
            traced = (np.int32(first), np.int32(stop), np.int32(prompt_length), np.int32(start_index), seeds)
            state = self._generate_bytes(self.variables, state, *traced, settings.static_part())
            new = np.asarray(state[0][:, prompt_length + first : prompt_length + stop])
            out.append(new)
            if on_ids is not None:
                on_ids(new)
        return np.concatenate(out, axis=1)
