"""The fast sampler against the reference, for every family: the same logits (to float rounding) and the
same bytes. The reference is the model's plain forward pass over the context; the fast sampler runs the
decoding protocol (prefill, then a step per byte)."""

import dataclasses
import functools

import jax
import numpy as np
import pytest

from bytelm import models
from bytelm.models import decoding
from bytelm.sampling.decoders import make_sampler
from bytelm.sampling.fast import FastSampler
from bytelm.sampling.settings import SampleSettings
from conftest import byte_ids, rel_err

GPT2 = {"name": "gpt2", "seq_len": 16, "num_layers": 2, "num_heads": 2, "head_dim": 8, "ffn_hidden": 32}
# Every architecture option GPT-2 lacks at once (rotary positions would let a cache slide past seq_len).
GPT2_OPTIONS = GPT2 | dict(
    positions="rope", norm="rmsnorm", activation="relu2", qk_norm=True, biases=False, tied_head=False
)
MAMBA = {"name": "mamba", "seq_len": 16, "d_model": 16, "num_layers": 2, "d_state": 4, "dt_rank": "2"}
# Chunks of 16: prompts of 15, 16 and 17 bytes end just before, at and after a chunk boundary, and the
# steps to 48 cross two more. Two groups of two heads.
MAMBA2 = {"name": "mamba2", "seq_len": 16, "d_model": 16, "num_layers": 2, "d_state": 4, "headdim": 8, "ngroups": 2}
FAMILIES = {"gpt2": GPT2, "mamba": MAMBA, "mamba2": MAMBA2 | {"chunk": 16}}


# The bigram, whose decoding has tests of its own (test_bigram.py), for the cache check (the hierarchical
# family's is in test_hierarchical.py, on the prefill compiled there).
EVERY = {**FAMILIES, "gpt2_options": GPT2_OPTIONS, "bigram": {"name": "bigram", "seq_len": 16}}


# Built and compiled once per model for the whole module: the tests differ in what they ask, and
# compilation, not decoding, is what these small models cost.
@functools.cache
def _model(name: str):
    model = models.build(EVERY[name])
    return model, models.init_variables(model, jax.random.key(0))


@functools.cache
def _sampler(name: str, decode: str, chunk: int = 8):
    return FastSampler(*_model(name), chunk=chunk) if decode == "fast" else make_sampler(*_model(name), decode)


@functools.cache
def _protocol(name: str):
    """The decoding protocol's prefill and step, jitted."""
    model = _model(name)[0]
    return jax.jit(functools.partial(decoding.prefill, model)), jax.jit(functools.partial(decoding.step, model))


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module", params=[*FAMILIES, "gpt2_options"])
def any_model(request) -> str:
    """The models above and a GPT-2 with every architecture option, for the tests that cover those."""
    return request.param


@pytest.mark.parametrize("prompt_length", [1, 15, 16, 17, 40])
def test_prefill_and_steps_give_the_full_forward_logits_at_every_position(any_model, prompt_length):
    """Prompts shorter than, as long as and longer than seq_len (16), then a step per byte to position 48:
    past seq_len a window model sees its last 16 bytes, a recurrent one everything."""
    _, variables = _model(any_model)
    reference, (prefill, step) = _sampler(any_model, "reference"), _protocol(any_model)
    history = byte_ids(3, (48,)).tolist()
    buffer = np.asarray([history + [0] * 16], np.int32)[:, :64]
    logits, cache = prefill(variables, buffer, prompt_length)
    assert rel_err(logits[0], reference.logits(history[:prompt_length])) < 1e-5
    for p in range(prompt_length, 48):
        logits, cache = step(variables, np.asarray([history[p]], np.int32), cache)
        assert rel_err(logits[0], reference.logits(history[: p + 1])) < 1e-5, p


@pytest.mark.parametrize("name", list(EVERY))
def test_the_empty_cache_is_what_prefill_returns(name):
    """The protocol's three calls agree on the cache's structure, shapes and dtypes, for every family."""
    model, variables = _model(name)
    _, cache = jax.jit(functools.partial(decoding.prefill, model))(variables, byte_ids(4, (3, 16)), 5)
    empty = model.empty_cache(3)
    assert jax.tree_util.tree_structure(cache) == jax.tree_util.tree_structure(empty)
    assert [(a.shape, a.dtype) for a in jax.tree_util.tree_leaves(cache)] == [
        (a.shape, a.dtype) for a in jax.tree_util.tree_leaves(empty)
    ]


SETTINGS = [
    SampleSettings(generate=40, temperature=0.85, top_k=24, repeat_penalty=1.25, repeat_window=24, seed=11),
    SampleSettings(generate=35, temperature=0.0, seed=0),
    SampleSettings(generate=33, temperature=1.0, top_k=5, ascii_only=True, seed=5),
]
HOT = SampleSettings(generate=30, temperature=1.3, top_k=0, seed=7)  # no top-k: every byte possible


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"T{s.temperature}-k{s.top_k}-p{s.repeat_penalty}")
@pytest.mark.parametrize("prompt", [b"ROMEO:", b"a much longer prompt than seq_len"], ids=["short", "long"])
def test_fast_and_reference_give_the_same_bytes(family, settings, prompt):
    reference = _sampler(family, "reference").continue_ids(list(prompt), settings)
    assert _sampler(family, "fast").continue_ids(list(prompt), settings) == reference


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"T{s.temperature}-k{s.top_k}-p{s.repeat_penalty}")
def test_every_architecture_option_samples_the_references_bytes_past_the_window(settings):
    """A prompt longer than seq_len (cropped) and generation past it, with rotary positions and the rest."""
    prompt = b"a much longer prompt than seq_len"
    reference = _sampler("gpt2_options", "reference").continue_ids(list(prompt), settings)
    assert _sampler("gpt2_options", "fast").continue_ids(list(prompt), settings) == reference


def test_a_batch_is_n_independent_samples_with_seeds_seed_plus_i(family):
    s = SETTINGS[0]
    batch = _sampler(family, "fast", 16).generate(list(b"ROMEO:"), s, num_samples=3)
    ref = _sampler(family, "reference")
    for i in range(3):
        assert batch[i].tolist() == ref.continue_ids(list(b"ROMEO:"), dataclasses.replace(s, seed=s.seed + i))
    assert batch[0].tolist() != batch[1].tolist()


def test_streaming_chunks_add_up_to_the_result(family):
    chunks = []
    out = _sampler(family, "fast", 7).generate(list(b"Hi"), HOT, on_ids=chunks.append)
    assert [c.shape[1] for c in chunks] == [1, 7, 7, 7, 7, 1]  # the first byte alone, then chunks
    np.testing.assert_array_equal(np.concatenate(chunks, axis=1), out)


def test_start_index_continues_the_key_sequence(family):
    """Two calls of n bytes (the second at start_index n) give the bytes of one call of 2n."""
    s = dataclasses.replace(HOT, generate=20)
    fast = _sampler(family, "fast")
    history = list(b"ROMEO:")
    fast.continue_ids(history, s)
    fast.continue_ids(history, s, start_index=20)
    one = fast.continue_ids(list(b"ROMEO:"), dataclasses.replace(s, generate=40))
    assert history[6:] == one
