"""The hierarchical family: causality of the logits and of the boundaries, the chunk/dechunk reductions,
the EMA against a float64 loop, static shapes, overflow, the ratio loss, and cached decoding across
chunk boundaries, for each boundary rule."""

from __future__ import annotations

import copy
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bytelm import models
from bytelm.artifacts import param_pack, run_dir
from bytelm.data import batches
from bytelm.errors import ConfigError, UsageError
from bytelm.models import decoding
from bytelm.models.hierarchical import boundaries, chunking
from bytelm.reporting import probe, report
from bytelm.sampling import console
from bytelm.sampling.decoders import make_sampler
from bytelm.sampling.settings import SampleSettings
from bytelm.training import optimizer, step
from bytelm.training.loop import train_and_evaluate
from conftest import byte_ids, load_config, normal, one_hot, rel_err

L = 24
BASE = {
    "name": "hierarchical", "seq_len": L, "d_model": 32, "chunk_ratio": 4, "encoder_layers": 1, "decoder_layers": 1,
    "main_layers": 1, "main_heads": 2, "headdim": 16, "d_state": 8, "ssd_chunk": 8, "byte_heads": 2,
}  # fmt: skip
RULES = {
    "learned": BASE | {"boundaries": "learned"},
    "space": BASE | {"boundaries": "space"},
    "fixed": BASE | {"boundaries": "fixed", "byte_layers": "gpt2"},
}
TEXT = b"To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"


@functools.cache
def _model(rule: str, **changes):
    model = models.build(RULES[rule] | changes)
    variables = models.init_variables(model, jax.random.key(1))
    if rule == "learned":  # a trained-looking router: W_q, W_k away from the identity, so p varies
        flat = param_pack.flatten(variables)
        for name in ("q_proj", "k_proj"):
            key = f"params/router/{name}/kernel"
            flat[key] = flat[key] + normal(len(name), flat[key].shape)
        variables = param_pack.unflatten(flat)
    return model, variables


def _text(n: int, rows: int = 2) -> np.ndarray:
    ids = np.frombuffer(TEXT, np.uint8).astype(np.int32)
    return np.stack([np.roll(ids, -7 * r)[:n] for r in range(rows)])


@functools.cache
def _forward(model):
    """The model's jitted forward, with what it sowed: (logits, {'intermediates': {'boundaries': ...}})."""
    return models.seen_forward(model)


def _logits_and_boundaries(model, variables, ids) -> tuple[np.ndarray, np.ndarray]:
    logits, sown = _forward(model)(variables, one_hot(ids))
    return np.asarray(logits), np.asarray(sown["intermediates"]["boundaries"][0])


def _boundaries(model, variables, ids) -> np.ndarray:
    return _logits_and_boundaries(model, variables, ids)[1]


@pytest.mark.parametrize("rule", list(RULES))
def test_logits_and_boundaries_before_i_ignore_every_byte_from_i_on(rule):
    """Causality by perturbation, at every i of a window: bytes ≥ i replaced, the logits and the
    boundaries before i unchanged; and the rows of a batch independent of each other."""
    model, variables = _model(rule)
    ids = _text(L)
    base, base_b = _logits_and_boundaries(model, variables, ids)
    assert 1 < base_b[0].sum() < L  # (there are boundaries to check)
    for i in range(L):
        other = ids.copy()
        other[0, i:] = byte_ids(i, (L - i,))  # row 0's future; row 1 untouched
        logits, b = _logits_and_boundaries(model, variables, other)
        np.testing.assert_array_equal(logits[0, :i], base[0, :i])
        np.testing.assert_array_equal(b[0, :i], base_b[0, :i])
        np.testing.assert_array_equal(logits[1], base[1])


@pytest.mark.parametrize("rule", ["learned", "space"])
def test_causality_by_gradients_of_the_logits_and_of_the_boundary_probabilities(rule):
    model, variables = _model(rule)
    x = one_hot(_text(L))

    def probabilities(x):  # p as the model computes it, for the learned rule through the encoder
        h = x @ variables["params"]["embedding"]
        if rule == "space":
            return boundaries.space(x)[0]
        enc = model.apply(variables, h, method=lambda m, h: m._bytes(m.encoder, h)[0])
        return model.apply(variables, enc, method=lambda m, e: m.router(e)[0])

    for f in (lambda x, t: model.apply(variables, x)[0, t].sum(), lambda x, t: probabilities(x)[0, t]):
        grad = jax.jit(jax.grad(f))
        for t in (0, 5, 13, L - 1):
            g = np.asarray(grad(x, t))
            assert float(np.abs(g[0, t + 1 :]).max(initial=0.0)) == 0.0 and float(np.abs(g[1]).max()) == 0.0


def test_fixed_with_a_stride_of_one_and_no_byte_layers_is_the_plain_gpt():
    """Every byte a chunk, so the main network sees the bytes themselves; the residual starts at zero."""
    hier = models.build(BASE | {"boundaries": "fixed", "chunk_ratio": 1, "encoder_layers": 0, "decoder_layers": 0})
    gpt = models.build({"name": "gpt2", "seq_len": L, "num_layers": 1, "num_heads": 2, "head_dim": 16,
                        "ffn_hidden": 128, "positions": "rope", "norm": "rmsnorm"})  # fmt: skip
    g = param_pack.flatten(models.init_variables(gpt, jax.random.key(3)))
    h = param_pack.flatten(models.init_variables(hier, jax.random.key(4)))
    for path in h:  # the GPT's weights in the hierarchical model's places
        theirs = path.replace("main_0", "h_0").replace("embedding", "wte").replace("norm_f", "ln_f")
        if theirs in g:
            h[path] = g[theirs]
    x = one_hot(_text(L))
    ours = jax.jit(hier.apply)(param_pack.unflatten(h), x)
    assert rel_err(ours, jax.jit(gpt.apply)(param_pack.unflatten(g), x)) < 1e-6


def test_dechunk_of_chunk_with_a_boundary_at_every_byte_is_the_identity():
    h = normal(0, (2, 9, 5))
    b = np.ones((2, 9), bool)
    positions, valid, count = chunking.slot_positions(b, 9)
    smoothed = chunking.smooth(chunking.chunk(h, positions), b.astype(np.float32), positions)
    np.testing.assert_array_equal(chunking.dechunk(smoothed, b), h)
    assert valid.all() and count.tolist() == [9, 9]


def test_the_ema_equals_a_float64_loop():
    z, p = normal(1, (3, 11, 4)), np.random.default_rng(2).uniform(0, 1, (3, 11)).astype(np.float32)
    expected, prev = np.zeros((3, 11, 4)), np.zeros((3, 4))
    for s in range(11):
        prev = p[:, s, None] * np.float64(z[:, s]) + (1 - p[:, s, None]) * prev
        expected[:, s] = prev
    assert rel_err(jax.jit(chunking.ema)(z, p), expected) < 1e-6


def test_overflow_keeps_the_first_slots_and_the_later_bytes_read_the_last_chunk():
    b = np.array([[1, 0, 1, 1, 1, 0, 1, 1]], bool)  # 6 boundaries, 3 slots
    positions, valid, count = chunking.slot_positions(b, 3)
    assert positions.tolist() == [[0, 2, 3]] and valid.all() and count.tolist() == [6]
    smoothed = np.arange(3, dtype=np.float32)[None, :, None] * np.ones((1, 3, 2), np.float32)
    assert chunking.dechunk(smoothed, b)[0, :, 0].tolist() == [0, 0, 1, 2, 2, 2, 2, 2]


def test_a_window_past_its_slots_is_counted_and_every_target_scored():
    model, variables = _model("fixed", slots=3)  # 6 chunks of 4 bytes a window: 3 overflow
    opt = optimizer.make_optimizer(load_config("gpt2_tiny").train, models.family("hierarchical"))
    state = step.TrainState(np.zeros((), np.int32), variables, opt.init(variables))
    train_step = step.make_steps(model, opt, 2, L)[0]
    _, metrics = train_step(state, batches.make_batch(np.frombuffer(TEXT, np.uint8), np.array([0, 30]), L))
    assert float(metrics["model/overflow_windows"]) == 1.0 and float(metrics["model/overflow_boundaries"]) == 6.0
    assert float(metrics["model/boundary_fraction"]) == 0.25 and np.isfinite(float(metrics["loss"]))


@pytest.mark.parametrize("rule", ["learned", "space"])
def test_the_logged_word_start_fractions_are_the_probes_over_the_batch(rule):
    """`model/boundaries_after_space` is the probe's `after_space` (of the chunks after a row's first
    byte, those whose previous byte is space-like) over a whole batch, each row weighted by its chunks;
    `model/boundaries_at_space` counts those whose own byte is. SpaceByte's rule starts its chunks at
    the space itself: 0 and 1."""
    model, variables = _model(rule)
    ids = _text(L, rows=3)
    sown = jax.jit(lambda v, x: model.apply(v, x, mutable=["metrics"])[1])(variables, one_hot(ids))
    logged = step.model_metrics(sown)
    b = _boundaries(model, variables, ids)
    counts = b[:, 1:].sum(axis=1)
    rows = [probe.after_space_fraction(list(row), list(marks)) for row, marks in zip(ids, b, strict=True)]
    expected = np.dot(np.nan_to_num(rows), counts) / counts.sum()
    assert counts.sum() > 0 and float(logged["model/boundaries_after_space"]) == pytest.approx(expected, abs=1e-6)
    if rule == "space":
        assert expected == 0 and float(logged["model/boundaries_at_space"]) == 1
    else:
        assert 0 < expected < 1 and 0 <= float(logged["model/boundaries_at_space"]) < 1


def test_no_recompilation_for_batches_with_other_boundary_counts():
    model, variables = _model("space")
    apply = jax.jit(model.apply)
    for seed in range(3):
        apply(variables, one_hot(byte_ids(seed, (2, L))))
    apply(variables, one_hot(_text(L)))
    assert apply._cache_size() == 1


def test_the_ratio_loss_is_one_at_the_target_and_its_gradient_reaches_the_router():
    N = 4.0
    b = np.zeros((2, 8), bool)
    b[:, ::4] = True  # F = 1/4
    assert float(boundaries.ratio_loss(np.full((2, 8), 0.25, np.float32), b, N)) == pytest.approx(1.0)
    assert float(boundaries.ratio_loss(np.full((2, 8), 0.9, np.float32), np.ones((2, 8), bool), N)) > 1.5
    model, variables = _model("learned")
    loss = lambda v: jax.tree_util.tree_leaves(model.apply(v, one_hot(_text(L)), mutable=["losses"])[1])[0]
    grads = jax.jit(jax.grad(loss))(variables)["params"]["router"]
    assert all(float(jnp.abs(grads[n]["kernel"]).max()) > 0 for n in ("q_proj", "k_proj"))


def test_lr_multiplier_gives_each_stage_the_updates_of_an_optimizer_at_its_rates():
    """H-Net's per-stage learning rates, '3,1': the byte stage's updates equal those of the same optimizer
    built without multipliers and with every rate × 3 (the slow reference), the main network's those at
    × 1; AdamW and Muon, two steps (Adam's and Muon's states carry the first into the second)."""
    _, variables = _model("learned", main_positions="learned")
    family = models.family("hierarchical")
    outer, inner = optimizer.stage_groups(variables, family)
    assert set(inner) == {
        k for k in param_pack.flatten(variables) if k.startswith(("params/main_0/", "params/main_wpe"))
    }
    assert {"params/embedding", "params/router/q_proj/kernel", "params/residual_proj/kernel"} <= set(outer)
    for name in ("adamw", "muon"):
        tc = load_config("hierarchical_learned").train
        tc.optimizer = name
        opts = [_at_rates(tc, family, 1.0, "3,1"), _at_rates(tc, family, 3.0), _at_rates(tc, family, 1.0)]
        updates = [_two_steps(opt, variables) for opt in opts]
        fast, ref_outer, ref_inner = (param_pack.flatten(u) for u in updates)
        for key, value in fast.items():
            ref = ref_inner[key] if key in inner else ref_outer[key]
            np.testing.assert_allclose(value, ref, rtol=1e-5, atol=1e-8, err_msg=f"{name} {key}")
        assert not np.allclose(fast["params/embedding"], ref_inner["params/embedding"])  # the factor did act


def _at_rates(tc, family, factor: float, multiplier: str = ""):
    """The optimizer of `tc` with its rates (AdamW's, its floor, Muon's) × `factor`, and `multiplier`."""
    t = copy.deepcopy(tc)
    t.lr, t.min_lr, t.muon_lr, t.lr_multiplier = tc.lr * factor, tc.min_lr * factor, tc.muon_lr * factor, multiplier
    return optimizer.make_optimizer(t, family)


def _two_steps(opt, variables):
    """The second step's updates after two steps of `opt` from `variables`, with fixed gradients."""
    state, params = opt.init(variables), variables
    for i in range(2):
        grads = jax.tree_util.tree_map(lambda x, i=i: jnp.sin(x * (i + 3)) + 0.01, params)
        updates, state = jax.jit(opt.update)(grads, state, params)
        params = optax.apply_updates(params, updates)
    return updates


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("prompt_length", [3, 4, 5])  # fixed chunks of 4: before, at and after a boundary
def test_cached_decoding_equals_the_full_forward_across_chunk_boundaries(rule, prompt_length):
    """Prefill, then a step per byte to 2 × seq_len: within the window the caches (the main network's
    advancing at boundaries only), past it the window re-run."""
    cache = _decode_against_the_reference(rule, prompt_length)
    assert int(np.asarray(cache.chunks).min()) >= 3


def test_cached_decoding_with_learned_main_positions_and_more_chunks_than_slots():
    """The per-row position table of the main network, and windows of more chunks than their 3 slots
    (the later bytes read the last slot), decoded step by step as the full forward computes them."""
    model, variables = _model("learned", main_positions="learned", slots=3)
    assert (_boundaries(model, variables, _text(L)).sum(axis=1) > 3).all()  # every window overflows
    _decode_against_the_reference("learned", 5, main_positions="learned", slots=3)


def test_a_wider_main_network_pads_its_chunks_and_decodes_as_its_forward():
    """main_width = 2D: the main blocks run at 2D on each chunk's D channels and the learned pad (H-Net's
    pad_dimension), the way out keeps D; the pad reaches the logits; cached decoding across chunk
    boundaries equals the full forward, the main network's caches at 2D."""
    model, variables = _model("space", main_width=64)
    params = variables["params"]
    assert params["main_pad"].shape == (32,) and params["main_0"]["mlp"]["fc"]["kernel"].shape == (64, 256)
    padded = param_pack.unflatten(param_pack.flatten(variables) | {"params/main_pad": jnp.ones(32)})
    logits = lambda v: _logits_and_boundaries(model, v, _text(L))[0]
    assert rel_err(logits(padded), logits(variables)) > 1e-3
    cache = _decode_against_the_reference("space", 5, main_width=64)
    assert cache.main[0].k.shape == (2, model.config.num_slots, 2, 32) and int(np.asarray(cache.chunks).min()) >= 3


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"slots": L + 1}, f"model.slots={L + 1} exceeds model.seq_len={L}"),
        ({"main_heads": 3}, "model.main_heads=3 must divide model.d_model=32"),
        ({"main_width": 16}, "model.main_width=16 is below model.d_model=32"),
        ({"main_width": 48, "main_heads": 16}, "model.main_heads=16 must divide model.main_width=48 into heads of"),
        ({"byte_layers": "gpt2", "byte_heads": 5}, "model.byte_heads=5 must divide model.d_model=32"),
        ({"headdim": 24}, "model.headdim=24 must divide 2 × d_model = 64"),
        ({"boundaries": "learned", "chunk_ratio": 1}, "model.chunk_ratio must be at least 2 for learned"),
    ],
)
def test_bad_sizes_are_one_line_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        models.build(BASE | changes)


@functools.cache
def _decoders(rule: str, **changes):
    """The reference sampler and the protocol's prefill and step, jitted once per model (the tests of a
    rule differ in their prompts, and compiling is what they cost)."""
    model, variables = _model(rule, **changes)
    prefill = jax.jit(functools.partial(decoding.prefill, model))
    return make_sampler(model, variables, "reference"), prefill, jax.jit(functools.partial(decoding.step, model))


def _decode_against_the_reference(rule: str, prompt_length: int, **changes):
    """Prefill `prompt_length` bytes, then a step per byte to 2 × seq_len, each step's logits checked
    against the reference (the full forward over the context); the last cache."""
    ids, variables = _text(2 * L), _model(rule, **changes)[1]
    reference, prefill, step_fn = _decoders(rule, **changes)
    logits, cache = prefill(variables, ids[:, :32], prompt_length)
    for p in range(prompt_length, 2 * L):
        expected = np.stack([reference.logits(list(ids[r, :p])) for r in range(2)])
        assert rel_err(logits, expected) < 1e-5, p
        logits, cache = step_fn(variables, ids[:, p], cache)
    empty = _model(rule, **changes)[0].empty_cache(2)  # the protocol's three calls agree on the cache
    assert jax.tree_util.tree_structure(cache) == jax.tree_util.tree_structure(empty)
    assert [(a.shape, a.dtype) for a in jax.tree_util.tree_leaves(cache)] == [
        (a.shape, a.dtype) for a in jax.tree_util.tree_leaves(empty)
    ]
    return cache


# The fast sampler is generic code over the protocol checked above for every rule: here the two kinds
# of byte layer (Mamba-2's states under `learned`, GPT blocks' key/value caches under `fixed`).
@pytest.mark.parametrize("rule", ["learned", "fixed"])
def test_the_fast_sampler_gives_the_references_bytes(rule):
    model, variables = _model(rule)
    settings = SampleSettings(generate=40, temperature=0.9, top_k=20, repeat_penalty=0.5, repeat_window=8, seed=4)
    reference = _decoders(rule)[0].continue_ids(list(b"ROMEO: is"), settings)
    assert make_sampler(model, variables, "fast", 8).continue_ids(list(b"ROMEO: is"), settings) == reference


@pytest.fixture(scope="module")
def hierarchical_run(tmp_path_factory, tiny_shakespeare):
    """A few steps of a small learned-boundary model through the trainer: what the run leaves."""
    config = load_config("hierarchical_learned")
    config.model.update({k: v for k, v in RULES["learned"].items() if k != "name"} | {"slots": 0})
    config.data.file, config.data.eval_windows, config.data.final_eval_windows = str(tiny_shakespeare), 8, 8
    config.train.update({"steps": 4, "warmup_steps": 1, "eval_every": 4, "batch_size": 4, "eval_batch_size": 4})
    config.train.progress, config.sample.generate = "none", 0
    workdir = tmp_path_factory.mktemp("hier") / "run"
    train_and_evaluate(config, workdir, out=lambda s: None)
    return workdir


def test_the_run_logs_the_compression_and_the_report_shows_the_boundaries(hierarchical_run):
    log = json.loads((hierarchical_run / "train_log.json").read_text())
    assert all(0 < r["model/boundary_fraction"] <= 1 and "model/ratio_loss" in r for r in log["records"])
    assert all(0 <= r["model/boundaries_after_space"] <= 1 for r in log["records"])
    probe = log["probes"]["after"]
    assert len(probe["boundaries"]) == len(probe["input"]) == L and probe["boundaries"][0] == 1
    report.write_report(hierarchical_run)
    page = (hierarchical_run / "report.html").read_text()
    assert "<th>chunks</th>" in page and "▼" in page and 'aria-label="model/boundary_fraction"' in page
    assert 'aria-label="model/boundaries_after_space"' in page  # every sown metric is charted


def test_sampling_marks_where_chunks_start(hierarchical_run):
    """What `launch.sample --mark_chunks` prints (the flag itself: tests/test_bad_input.py)."""
    out = []
    settings = SampleSettings(generate=30, temperature=0.8, top_k=20, seed=3)
    config = run_dir.read_config(hierarchical_run)
    console.sample_run(hierarchical_run, config, settings, b"ROMEO: is", decode="fast", chunk=8, mark_chunks=True,
                       write=out.append)  # fmt: skip
    text = "".join(out).rstrip("\n")
    assert text.replace("|", "").startswith("ROMEO: is") and text.count("|") >= 3
    assert console.marked_text(list(b"ab cd"), [True, False, True, True, False]) == "ab| |cd"
    assert console.marked_text(list("aé".encode()), [True, False, True]) == "a|é"  # a cut inside a character
    with pytest.raises(UsageError, match="--mark_chunks needs a model that chunks its bytes"):
        gpt = models.build(load_config("gpt2_tiny").model)
        console.chunk_starts(gpt, models.init_variables(gpt, jax.random.key(0)), list(b"ROMEO"))


def test_chunk_marks_of_a_short_last_window_do_not_depend_on_its_padding():
    """`chunk_starts` pads a short last window to seq_len: its marks are those of the bytes alone."""
    model, variables = _model("learned")
    ids = _text(L + 9, rows=1)[0].tolist()
    marks = console.chunk_starts(model, variables, ids)
    assert len(marks) == L + 9
    assert marks[L:] == [bool(b) for b in _boundaries(model, variables, np.asarray([ids[L:]]))[0]]
    assert marks[:L] == [bool(b) for b in _boundaries(model, variables, np.asarray([ids[:L]]))[0]]
    short = ids[:5]  # a prompt shorter than one window: only the padded path
    assert console.chunk_starts(model, variables, short) == [bool(b) for b in _boundaries(model, variables, [short])[0]]
