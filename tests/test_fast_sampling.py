"""The fast sampler against the reference: the same logits (to float rounding) and the same bytes."""

import dataclasses

import jax
import numpy as np
import pytest

from bytelm import models
from bytelm.models.mamba import Mamba, MambaConfig
from bytelm.models.transformer import GPT2, GPT2Config, empty_cache
from bytelm.sampling.decoders import make_sampler
from bytelm.sampling.fast import FastSampler
from bytelm.sampling.settings import SampleSettings
from conftest import byte_ids, one_hot, rel_err

GPT = GPT2(GPT2Config(seq_len=16, num_layers=2, num_heads=2, head_dim=8, ffn_hidden=32))
# Every architecture option GPT-2 lacks at once; rotary positions make the cache slide past seq_len.
GPT_OPTIONS = GPT2(
    dataclasses.replace(
        GPT.config, positions="rope", norm="rmsnorm", activation="relu2", qk_norm=True, biases=False, tied_head=False
    )
)
MAMBA = Mamba(MambaConfig(seq_len=16, d_model=16, num_layers=2, d_state=4, dt_rank=2))


@pytest.fixture(scope="module", params=[GPT, MAMBA], ids=["gpt2", "mamba"])
def model_and_variables(request):
    return request.param, models.init_variables(request.param, jax.random.key(0))


def test_kv_cache_logits_equal_the_full_forward_at_every_position():
    variables = models.init_variables(GPT, jax.random.key(1))
    ids = byte_ids(2, (2, 16))
    full = jax.jit(GPT.apply)(variables, one_hot(ids))
    step = jax.jit(lambda v, x, c, p: GPT.apply(v, x, c, p, method=GPT.decode))
    logits, cache = step(variables, one_hot(ids[:, :3]), empty_cache(GPT.config, 2), 0)  # prefill 3
    got = [np.asarray(logits)]
    for t in range(3, 16):
        logits, cache = step(variables, one_hot(ids[:, t : t + 1]), cache, t)
        got.append(np.asarray(logits))
    assert rel_err(np.concatenate(got, axis=1), full) < 1e-5


@pytest.fixture(scope="module", params=[GPT, GPT_OPTIONS, MAMBA], ids=["gpt2", "gpt2_options", "mamba"])
def any_model_and_variables(request):
    """The models above and a GPT-2 with every architecture option, for the tests that cover those."""
    return request.param, models.init_variables(request.param, jax.random.key(0))


def test_fast_logits_equal_the_reference_at_every_position_past_seq_len(any_model_and_variables):
    """Drives the fast sampler's own prefill and per-byte step over 3 × seq_len positions."""
    model, variables = any_model_and_variables
    fast, ref = FastSampler(model, variables), make_sampler(model, variables, "reference")
    history = byte_ids(3, (48,)).tolist()
    buf = np.asarray([history + [0] * 16], np.int32)
    logits, cache = jax.jit(fast._prefill_impl, static_argnames="length")(variables, buf, 5, length=16)
    assert rel_err(logits[0], ref.logits(history[:5])) < 1e-5
    step = jax.jit(fast._next_logits)
    for p in range(5, 48):  # the byte at position p is history[p]; past 16 GPT-2 re-runs its window
        logits, cache = step(variables, buf, np.asarray([history[p]], np.int32), p, cache)
        assert rel_err(logits[0], ref.logits(history[: p + 1])) < 1e-5, p


SETTINGS = [
    SampleSettings(generate=40, temperature=0.85, top_k=24, repeat_penalty=1.25, repeat_window=24, seed=11),
    SampleSettings(generate=35, temperature=0.0, seed=0),
    SampleSettings(generate=33, temperature=1.0, top_k=5, ascii_only=True, seed=5),
]
HOT = SampleSettings(generate=30, temperature=1.3, top_k=0, seed=7)  # no top-k: every byte possible


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"T{s.temperature}-k{s.top_k}-p{s.repeat_penalty}")
@pytest.mark.parametrize("prompt", [b"ROMEO:", b"a much longer prompt than seq_len"], ids=["short", "long"])
def test_fast_and_reference_give_the_same_bytes(model_and_variables, settings, prompt):
    model, variables = model_and_variables
    reference = make_sampler(model, variables, "reference").continue_ids(list(prompt), settings)
    fast = FastSampler(model, variables, chunk=8).continue_ids(list(prompt), settings)
    assert fast == reference


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"T{s.temperature}-k{s.top_k}-p{s.repeat_penalty}")
def test_every_architecture_option_samples_the_references_bytes_past_the_window(settings):
    """A prompt longer than seq_len (cropped) and generation past it, with rotary positions and the rest."""
    variables = models.init_variables(GPT_OPTIONS, jax.random.key(0))
    prompt = b"a much longer prompt than seq_len"
    reference = make_sampler(GPT_OPTIONS, variables, "reference").continue_ids(list(prompt), settings)
    assert FastSampler(GPT_OPTIONS, variables, chunk=8).continue_ids(list(prompt), settings) == reference


def test_a_batch_is_n_independent_samples_with_seeds_seed_plus_i(model_and_variables):
    model, variables = model_and_variables
    s = SETTINGS[0]
    batch = FastSampler(model, variables, chunk=16).generate(list(b"ROMEO:"), s, num_samples=3)
    ref = make_sampler(model, variables, "reference")
    for i in range(3):
        assert batch[i].tolist() == ref.continue_ids(list(b"ROMEO:"), dataclasses.replace(s, seed=s.seed + i))
    assert batch[0].tolist() != batch[1].tolist()


def test_streaming_chunks_add_up_to_the_result(model_and_variables):
    model, variables = model_and_variables
    chunks = []
    out = FastSampler(model, variables, chunk=7).generate(list(b"Hi"), HOT, on_ids=chunks.append)
    assert [c.shape[1] for c in chunks] == [1, 7, 7, 7, 7, 1]  # the first byte alone, then chunks
    np.testing.assert_array_equal(np.concatenate(chunks, axis=1), out)


def test_start_index_continues_the_key_sequence(model_and_variables):
    """Two calls of n bytes (the second at start_index n) give the bytes of one call of 2n."""
    model, variables = model_and_variables
    s = dataclasses.replace(HOT, generate=20)
    fast = FastSampler(model, variables, chunk=8)
    history = list(b"ROMEO:")
    fast.continue_ids(history, s)
    fast.continue_ids(history, s, start_index=20)
    one = fast.continue_ids(list(b"ROMEO:"), dataclasses.replace(s, generate=40))
    assert history[6:] == one
