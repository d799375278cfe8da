import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bytelm import models
from bytelm.data import tokenizer
from bytelm.errors import UsageError
from bytelm.sampling import choice, console
from bytelm.sampling.choice import adjust_logits, choose_token
from bytelm.sampling.decoders import make_sampler, sample_text
from bytelm.sampling.reference import ReferenceSampler
from bytelm.sampling.settings import SampleSettings
from conftest import normal, one_hot

SMALL = {"name": "gpt2", "seq_len": 16, "num_layers": 2, "num_heads": 2, "head_dim": 8, "ffn_hidden": 32}


@pytest.fixture(scope="module")
def small_model():
    model = models.build(SMALL)
    return model, models.init_variables(model, jax.random.key(0))


def test_repeat_penalty_subtracts_per_occurrence_in_the_window():
    s = SampleSettings(temperature=0.0, repeat_penalty=1.5, repeat_window=4)
    out = np.asarray(adjust_logits(np.zeros(256, np.float32), np.array([5, 5, 7, -1]), s))
    assert float(out[5]) == -3.0 and float(out[7]) == -1.5 and float(out[0]) == 0.0


def test_greedy_takes_the_argmax_after_the_penalty():
    logits = np.zeros(256, np.float32)
    logits[65], logits[66] = 3.0, 2.0
    greedy = SampleSettings(temperature=0.0)
    assert int(choose_token(logits, np.full(4, -1, np.int32), 0, greedy)) == 65
    penalised = SampleSettings(temperature=0.0, repeat_penalty=2.0, repeat_window=4)
    assert int(choose_token(logits, np.array([-1, -1, -1, 65], np.int32), 0, penalised)) == 66
    top1 = SampleSettings(temperature=1.0, top_k=1)
    assert all(int(choose_token(logits, np.full(1, -1, np.int32), i, top1)) == 65 for i in range(5))


def test_top_k_keeps_only_the_k_largest():
    logits = np.arange(256, dtype=np.float32) / 50.0
    s = SampleSettings(temperature=2.0, top_k=3)
    drawn = {int(choose_token(logits, np.full(1, -1, np.int32), i, s)) for i in range(200)}
    assert drawn <= {253, 254, 255} and len(drawn) > 1


def test_ascii_only_never_draws_other_bytes():
    logits = np.zeros(256, np.float32)
    logits[200] = logits[7] = 50.0
    s = SampleSettings(temperature=1.0, top_k=0, ascii_only=True)
    for i in range(100):
        t = int(choose_token(logits, np.full(1, -1, np.int32), i, s))
        assert t == 10 or 32 <= t <= 126


def test_a_draw_depends_only_on_seed_and_index():
    logits = normal(0, (256,))
    s = SampleSettings(temperature=1.0, top_k=0, seed=11)
    first = [int(choose_token(logits, np.full(1, -1, np.int32), i, s)) for i in range(30)]
    assert int(choose_token(logits, np.full(1, -1, np.int32), 17, s)) == first[17]  # no hidden state
    other = SampleSettings(temperature=1.0, top_k=0, seed=12)
    assert [int(choose_token(logits, np.full(1, -1, np.int32), i, other)) for i in range(30)] != first


def test_recent_window_pads_with_minus_one():
    np.testing.assert_array_equal(choice.recent_window([1, 2, 3], 5), [-1, -1, 1, 2, 3])
    np.testing.assert_array_equal(choice.recent_window([1, 2, 3, 4, 5, 6], 2), [5, 6])
    assert choice.recent_window([1, 2], 0).size == 0


@pytest.mark.parametrize(
    "settings, prompt, message",
    [
        (SampleSettings(temperature=-0.1), "a", "temperature"),
        (SampleSettings(temperature=float("nan")), "a", "temperature"),
        (SampleSettings(top_k=257), "a", "top_k"),
        (SampleSettings(top_k=-1), "a", "top_k"),
        (SampleSettings(repeat_penalty=-1.0), "a", "repeat_penalty"),
        (SampleSettings(repeat_window=-2), "a", "repeat_window"),
        (SampleSettings(generate=-1), "a", "generate"),
        (SampleSettings(generate=5), "", "prompt is empty"),
    ],
)
def test_invalid_settings_are_one_line_usage_errors(settings, prompt, message):
    with pytest.raises(UsageError, match=message) as e:
        settings.validate(prompt)
    assert "\n" not in str(e.value) and e.value.exit_code == 2


def test_empty_prompt_is_fine_when_nothing_is_generated():
    SampleSettings(generate=0).validate("")


def test_same_settings_give_the_same_text_and_run_past_the_window(small_model):
    model, variables = small_model
    s = SampleSettings(generate=40, temperature=0.9, top_k=20, repeat_penalty=0.5, repeat_window=8, seed=3)
    a = sample_text(model, variables, "ROMEO:", s)  # 46 bytes > seq_len 16: the window crops
    assert sample_text(model, variables, "ROMEO:", s) == a
    assert sample_text(model, variables, "ROMEO:", SampleSettings(**{**s.__dict__, "seed": 4})) != a
    # Past the window, by ids: 40 new bytes after 6, and only the last seq_len ids (and the repeat
    # window, within them) decide the next byte: histories that differ only before them go on alike.
    history = list(b"ROMEO:")
    new = ReferenceSampler(model, variables).continue_ids(history, s)
    assert len(new) == 40 and len(history) == 46 > model.config.seq_len >= s.repeat_window
    tail, s10 = history[-model.config.seq_len :], dataclasses.replace(s, generate=10)
    one = ReferenceSampler(model, variables).continue_ids([1] * 20 + tail, s10, start_index=40)
    two = ReferenceSampler(model, variables).continue_ids([2] * 20 + tail, s10, start_index=40)
    assert one == two and one != ReferenceSampler(model, variables).continue_ids([1] * 20 + tail[1:] + [3], s10)
    assert tokenizer.decode(new) == a  # and the text is those bytes


def test_streamed_text_equals_returned_text(small_model):
    model, variables = small_model
    pieces = []
    text = sample_text(
        model, variables, "Hi", SampleSettings(generate=30, top_k=0, temperature=1.5), on_text=pieces.append
    )
    assert "".join(pieces) == text


def test_reference_sampler_logits_equal_the_full_forward_at_the_last_position(small_model):
    model, variables = small_model
    sampler = ReferenceSampler(model, variables)
    history = list(range(60, 80))  # 20 ids: the window holds the last 16
    forward = jax.jit(model.apply)
    full = forward(variables, one_hot([history[-16:]]))[0, -1]
    np.testing.assert_allclose(sampler.logits(history), full, rtol=1e-5, atol=1e-5)
    short = forward(variables, one_hot([history[:5]]))[0, -1]
    np.testing.assert_allclose(sampler.logits(history[:5]), short, rtol=1e-5, atol=1e-5)


# --- A model whose logits are known exactly, so that the expected text is exact --------------------


class NextByte(nn.Module):
    """Logits that favour the byte after the last one (+4), then the one after that (+2): greedy decoding
    counts up from the prompt's last byte. No parameters. It follows the decoding protocol like any
    family's network, with a cache that counts the bytes it has seen (to check that it is carried)."""

    max_context = 1

    def __call__(self, x_BxLxV):
        return 4.0 * jnp.roll(x_BxLxV, 1, axis=-1) + 2.0 * jnp.roll(x_BxLxV, 2, axis=-1)

    def empty_cache(self, batch: int):
        return jnp.zeros((batch,), jnp.int32)

    def prefill(self, ids_BxT, length):
        last = jax.lax.dynamic_index_in_dim(ids_BxT, length - 1, axis=1, keepdims=False)
        return self.step(last, self.empty_cache(ids_BxT.shape[0]) + length - 1)

    def step(self, ids_B, cache):
        return self(jax.nn.one_hot(ids_B, 256)[:, None])[:, 0], cache + 1


@pytest.mark.parametrize("decode", ["fast", "reference"])
def test_both_decoders_give_the_exact_text_of_known_logits(decode):
    sampler = make_sampler(NextByte(), {}, decode, 4)
    greedy = SampleSettings(generate=6, temperature=0.0)
    assert bytes(sampler.continue_ids(list(b"ab"), greedy)) == b"cdefgh"
    # A repeat penalty of 3 over a window of 2: after "a", "b" wins (4 > 2); the penalty then never
    # touches the leader, since counting up never repeats a byte within two.
    penalised = SampleSettings(generate=3, temperature=0.0, repeat_penalty=3.0, repeat_window=2)
    assert bytes(sampler.continue_ids(list(b"a"), penalised)) == b"bcd"
    # With "c" and "a" both in the window, "b" (4 − 0) still beats "c" (2 − 3).
    assert bytes(sampler.continue_ids(list(b"ca"), dataclasses.replace(penalised, generate=1))) == b"b"
    # ascii_only: after "~" (126) the favoured 127 and 128 are not allowed, and of the allowed bytes, all at
    # 0, greedy takes the first, the newline; after it the favoured 11 and 12 are not allowed either.
    ascii_only = SampleSettings(generate=2, temperature=0.0, ascii_only=True)
    assert bytes(sampler.continue_ids(list(b"~"), ascii_only)) == b"\n\n"
    # top_k=1 at any temperature is greedy; top_k=2 draws only the two favoured bytes.
    assert bytes(sampler.continue_ids(list(b"x"), SampleSettings(generate=3, temperature=5.0, top_k=1))) == b"yz{"
    two = bytes(sampler.continue_ids(list(b"0"), SampleSettings(generate=40, temperature=1.0, top_k=2, seed=3)))
    assert all(b - a in (1, 2) for a, b in zip(b"0" + two, two, strict=False)) and len(set(np.diff(list(two)))) == 2


def test_the_interactive_loop_continues_each_line_as_typed():
    """The exact transcript of `launch.sample --interactive`'s loop on known logits."""
    sampler = make_sampler(NextByte(), {}, "fast", 4)
    lines, written = iter(["ab", ":show", "xy", ":clear", ":show", ":q"]), []
    console.interactive(sampler, [], SampleSettings(generate=3, temperature=0.0), written.append, lambda _: next(lines))
    assert "".join(written) == (
        "interactive: type text to continue; :show, :clear, :q (or an empty line) to quit\n"
        "abcde\n"  # the line as typed, then its continuation
        "abcde\n"  # :show
        "xyz{|\n"  # appended to the context as typed: the history is now "abcdexy"
        "(context cleared)\n"
        "(empty)\n"
    )
