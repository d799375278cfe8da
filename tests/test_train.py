import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bytelm import models
from bytelm.artifacts import param_pack, run_dir
from bytelm.data import batches
from bytelm.errors import ConfigError, RunDirError
from bytelm.training import evaluation, optimizer, split_eval, step
from bytelm.training.loop import train_and_evaluate
from conftest import load_config, normal, tiny_config


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    tc = load_config("gpt2_tiny").train
    s = optimizer.lr_schedule(tc)
    assert float(s(0)) == pytest.approx(1e-5)  # the first update: lr × 1/100
    assert float(s(99)) == pytest.approx(1e-3)
    assert float(s(100)) == pytest.approx(1e-3)
    assert float(s(1050)) == pytest.approx((1e-3 + 1e-4) / 2, rel=1e-4)  # half-way down the cosine
    assert float(s(2000)) == pytest.approx(1e-4)
    assert all(float(s(i)) >= float(s(i + 1)) for i in range(100, 2000, 50))


def test_weight_decay_touches_matrices_only():
    tc = load_config("gpt2_tiny").train
    opt = optimizer.make_optimizer(tc, models.family("gpt2"))
    params = {"w": jnp.ones((3, 3)), "b": jnp.ones(3)}
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = opt.update(zero, opt.init(params), params)
    assert float(jnp.abs(updates["b"]).max()) == 0.0
    assert float(updates["w"][0, 0]) == pytest.approx(-1e-5 * 0.1)  # -lr × wd × w


def test_wsd_warms_up_holds_then_decays_linearly_to_min_lr():
    tc = load_config("gpt2_tiny").train
    tc.schedule, tc.decay_fraction = "wsd", 0.25  # steps 2000: stable from 100 to 1500, decay 1500 → 2000
    s = optimizer.lr_schedule(tc)
    assert float(s(0)) == pytest.approx(1e-5) and float(s(99)) == pytest.approx(1e-3)
    assert [float(s(i)) for i in (100, 700, 1499, 1500)] == pytest.approx([1e-3] * 4)
    assert float(s(1750)) == pytest.approx((1e-3 + 1e-4) / 2, rel=1e-5)  # half-way down the line
    assert float(s(1600)) == pytest.approx(1e-3 - 0.2 * 9e-4, rel=1e-5)
    assert float(s(2000)) == pytest.approx(1e-4) and float(s(2500)) == pytest.approx(1e-4)
    muon = optimizer.lr_schedule(tc, peak=0.02)  # Muon's leaves: the same shape, from their own peak
    assert float(muon(700)) == pytest.approx(0.02) and float(muon(2000)) == pytest.approx(0.002)


def test_an_unknown_optimizer_schedule_or_newton_schulz_form_is_a_config_error():
    for field, value in [("optimizer", "sgd"), ("schedule", "linear"), ("muon_ns_coeffs", "chebyshev")]:
        tc = load_config("gpt2_tiny").train
        tc[field] = value
        with pytest.raises(ConfigError, match=f"train.{field}"):
            optimizer.make_optimizer(tc, models.family("gpt2"))
    tc = load_config("gpt2_speedrun").train
    tc.muon_ns_coeffs, tc.muon_ns_steps = "polar_express", 6  # it has rows for 1 to 5 steps
    with pytest.raises(ConfigError, match="train.muon_ns_steps=6: Polar Express has coefficients for 1 to 5"):
        optimizer.make_optimizer(tc, models.family("gpt2"))


@pytest.mark.parametrize(
    "spec, part",
    [("2,1", "gives 2 factors, but a gpt2 model has 1 stage"), ("2;1", "not a list of numbers"), ("0", "not positive")],
)
def test_a_bad_lr_multiplier_is_a_config_error(spec, part):
    tc = load_config("gpt2_tiny").train
    tc.lr_multiplier = spec
    with pytest.raises(ConfigError, match=f"train.lr_multiplier={spec!r} .*{part}"):
        optimizer.make_optimizer(tc, models.family("gpt2"))


def test_muon_updates_the_hidden_matrices_and_adamw_the_rest():
    cfg = load_config("gpt2_tiny")
    cfg.train.optimizer, cfg.model.num_layers = "muon", 2
    params = models.abstract_variables(models.build(cfg.model))
    groups = optimizer.leaf_groups(params, models.family_of(cfg.model))
    hidden = {f"params/h_{i}/{m}/kernel" for i in range(2) for m in ("attn/qkv", "attn/proj", "mlp/fc", "mlp/proj")}
    assert set(groups["muon"]) == hidden
    assert {"params/wte", "params/wpe", "params/ln_f/scale", "params/h_0/attn/qkv/bias"} <= set(groups["adamw"])
    assert len(groups["muon"]) + len(groups["adamw"]) == len(jax.tree_util.tree_leaves(params))
    # Muon's update of a matrix is orthogonalised: its singular values are all about equal, unlike the
    # gradient's; AdamW's leaves move by about lr per element on the first step.
    opt = optimizer.make_optimizer(cfg.train, models.family_of(cfg.model))
    params = models.init_variables(models.build(cfg.model), jax.random.key(0))
    grads = jax.tree_util.tree_map(
        lambda p: jnp.asarray(normal(p.size, p.shape)) * jnp.linspace(0.1, 3, p.shape[-1]), params
    )
    updates, _ = jax.jit(opt.update)(grads, jax.jit(opt.init)(params), params)
    sv = np.linalg.svd(np.asarray(updates["params"]["h_0"]["mlp"]["fc"]["kernel"]), compute_uv=False)
    grad_sv = np.linalg.svd(np.asarray(grads["params"]["h_0"]["mlp"]["fc"]["kernel"]), compute_uv=False)
    assert sv.max() / sv.min() < 3 < grad_sv.max() / grad_sv.min()
    assert 1e-5 <= float(jnp.abs(updates["params"]["wte"]).max()) <= 2e-5  # (Nesterov) AdamW: ~lr on step 1


@pytest.mark.parametrize("coeffs, ns_steps", [("standard", 5), ("polar_express", 3)])
def test_muon_on_stacks_equals_optax_muon_leaf_by_leaf(coeffs, ns_steps):
    """The fast path (hidden matrices stacked by shape, one orthogonalisation per stack) against optax's
    Muon applied to each matrix on its own, over two steps from the speedrun's init."""
    from optax import contrib

    cfg = load_config("gpt2_speedrun")
    cfg.train.muon_ns_coeffs, cfg.train.muon_ns_steps = coeffs, ns_steps
    cfg.model.num_layers, tc = 2, cfg.train  # (two of each shape: stacks of 2)
    params = models.init_variables(models.build(cfg.model), jax.random.key(0))
    family = models.family_of(cfg.model)
    hidden = lambda path, x: family.hidden_matrix(optimizer.leaf_keys(path), x.shape)
    dims = lambda p: jax.tree_util.tree_map_with_path(
        lambda k, x: contrib.MuonDimensionNumbers() if hidden(k, x) else None, p
    )
    ref = optax.chain(optax.clip_by_global_norm(tc.grad_clip), contrib.muon(
        optimizer.lr_schedule(tc, tc.muon_lr), ns_coeffs=optimizer.ns_coefficients(tc), beta=tc.muon_beta,
        ns_steps=tc.muon_ns_steps,
        weight_decay=tc.weight_decay, adam_learning_rate=optimizer.lr_schedule(tc), adam_b1=tc.beta1,
        adam_b2=tc.beta2, adam_weight_decay=0.0, muon_weight_dimension_numbers=dims,
    ))  # fmt: skip
    fast = optimizer.make_optimizer(tc, family)
    state_fast, state_ref, p_fast, p_ref = jax.jit(fast.init)(params), jax.jit(ref.init)(params), params, params
    for i in range(2):
        grads = jax.tree_util.tree_map(lambda x, i=i: jnp.sin(x * (i + 3)) + 0.01, p_fast)
        u_fast, state_fast = jax.jit(fast.update)(grads, state_fast, p_fast)
        u_ref, state_ref = jax.jit(ref.update)(grads, state_ref, p_ref)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), u_fast, u_ref)
        p_fast, p_ref = optax.apply_updates(p_fast, u_fast), optax.apply_updates(p_ref, u_ref)


# modded-nanogpt's Polar Express rows, for inputs scaled by 1 / (1.02 ‖X‖_F) (written out again here, so
# that the test does not read them from the code it checks).
POLAR_EXPRESS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def orthogonalised(x: jax.Array, tc) -> np.ndarray:
    """`x` ([m, n]) through optax's public Muon transform with `tc`'s Newton-Schulz coefficients and no
    momentum: the orthogonalisation alone."""
    from optax import contrib

    muon = contrib.scale_by_muon(
        ns_coeffs=optimizer.ns_coefficients(tc), ns_steps=tc.muon_ns_steps, beta=0.0, nesterov=False
    )
    update, _ = muon.update(x, muon.init(x))
    return np.asarray(update, np.float64)


@pytest.mark.parametrize("ns_steps", [1, 3, 5])
def test_polar_express_orthogonalisation_equals_a_float64_loop_with_its_safety_factor(ns_steps):
    """optax's Newton-Schulz with `ns_coefficients` (the 1.02 folded into the first row) against the
    polynomials applied by hand in float64 to X / (1.02 ‖X‖_F), on a wide and a tall matrix whose
    singular values span three decades."""
    tc = load_config("gpt2_speedrun").train
    tc.muon_ns_coeffs, tc.muon_ns_steps = "polar_express", ns_steps
    rng = np.random.default_rng(ns_steps)
    for shape in [(48, 96), (96, 48)]:
        x = rng.standard_normal(shape) * np.logspace(-3, 0, shape[0])[:, None]
        fast = orthogonalised(jnp.asarray(x, jnp.float32), tc)
        ref = (x if shape[0] <= shape[1] else x.T) / (1.02 * np.linalg.norm(x))
        for a, b, c in POLAR_EXPRESS[:ns_steps]:
            gram = ref @ ref.T
            ref = a * ref + (b * gram + c * gram @ gram) @ ref
        ref = ref if shape[0] <= shape[1] else ref.T
        np.testing.assert_allclose(fast, ref, rtol=2e-4, atol=2e-5)


def test_polar_express_lifts_small_singular_values_further_than_the_standard_quintic():
    """What it is for: in the same five steps the smallest singular values of a badly conditioned
    matrix get nearer 1 (Amsel et al. 2025), and none ends far above it."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((64, 128)) * np.logspace(-3, 0, 64)[:, None], jnp.float32)
    spectra = {}
    for coeffs in ("standard", "polar_express"):
        tc = load_config("gpt2_speedrun").train
        tc.muon_ns_coeffs, tc.muon_ns_steps = coeffs, 5
        spectra[coeffs] = np.linalg.svd(orthogonalised(x, tc), compute_uv=False)
    assert spectra["polar_express"].min() > 1.5 * spectra["standard"].min()
    assert spectra["polar_express"].max() < 1.2


def test_masked_positions_do_not_change_the_loss():
    logits = normal(0, (2, 6, 256))
    b = batches.make_batch(np.array([65, 66, 67, 68], np.uint8), np.array([0, 1]), seq_len=6)
    other_y = b.y.copy()
    other_y[:, 4:] = np.eye(256, dtype=np.float32)[99]  # change only masked targets
    a = step.masked_nll(logits, b.y, b.mask)
    c = step.masked_nll(logits, other_y, b.mask)
    np.testing.assert_array_equal(a, c)
    assert float(a[0, 3]) == 0.0 and float(a[0, 2]) > 0.0


@pytest.mark.parametrize("in_flight", [0, 1])
def test_evaluate_matches_a_window_by_window_reference(monkeypatch, in_flight):
    """The batched, pipelined evaluation (padded last batch, batches dispatched ahead) against one
    forward pass per window and a numpy log-softmax, on a random model and random ids."""
    monkeypatch.setattr(evaluation, "EVAL_IN_FLIGHT", in_flight)
    model = models.build(tiny_config("unused").model)  # seq_len 16
    params = models.init_variables(model, jax.random.key(2))
    ids = np.random.default_rng(3).integers(0, 256, size=300).astype(np.uint8)  # 19 tiles, the last short
    starts = batches.eval_starts(ids.size, 16, 0)
    _, eval_step = step.make_steps(model, None, 8, 16)
    ev = evaluation.evaluate(eval_step, params, step.batch_maker(ids, 16, 8), starts, 8)
    per_window, total, count = [], 0.0, 0.0
    forward = jax.jit(model.apply)
    for start in starts:
        b = batches.make_batch(ids, np.array([start]), 16)
        logits = np.asarray(forward(params, b.x), np.float64)[0]
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        nll = -(logp * b.y[0]).sum(-1) * b.mask[0]
        total, count = total + nll.sum(), count + b.mask[0].sum()
        per_window.append(nll.sum() / b.mask[0].sum())
    assert ev["windows"] == starts.size == 19 and ev["tokens"] == count == ids.size - 1
    assert ev["loss"] == pytest.approx(total / count, rel=1e-5)
    assert ev["loss_stderr"] == pytest.approx(np.std(per_window, ddof=1) / np.sqrt(19), rel=1e-4)


def test_a_wrong_batch_fails_at_the_first_step_naming_the_expected_shape():
    cfg = load_config("gpt2_tiny")
    model = models.build(cfg.model)
    opt = optimizer.make_optimizer(cfg.train, models.family_of(cfg.model))
    params = models.init_variables(model, jax.random.key(0))
    state = step.TrainState(jnp.zeros((), jnp.int32), params, opt.init(params))
    train_step, _ = step.make_steps(model, opt, batch_size=12, seq_len=64)
    wrong = batches.make_batch(np.arange(200, dtype=np.uint8), np.zeros(11, np.int64), seq_len=64)
    with pytest.raises(AssertionError, match=r"\(12, 64, 256\)"):
        train_step(state, wrong)


def test_bad_train_fields_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="train.steps"):
        train_and_evaluate(tiny_config(tmp_path / "x", train__steps=0), tmp_path / "run", out=lambda s: None)
    with pytest.raises(ConfigError, match="progress"):
        train_and_evaluate(tiny_config(tmp_path / "x", train__progress="fancy"), tmp_path / "r", out=lambda s: None)


@pytest.fixture(scope="module")
def tiny_run(tiny_shakespeare, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    cfg = tiny_config(
        tiny_shakespeare, sample__generate=12, train__steps=6, train__eval_every=3, train__checkpoint_every=2
    )
    umask = os.umask(RUN_UMASK)  # (the modes of the run's files follow it: test_run_files_follow_the_umask)
    try:
        summary = train_and_evaluate(cfg, workdir, out=lambda s: None, stream=lambda s: None)
        split_eval.evaluate_run(workdir, "val", out=lambda s: None)
    finally:
        os.umask(umask)
    return cfg, workdir, summary


RUN_UMASK = 0o027


def test_run_files_follow_the_umask(tiny_run):
    """Written atomically through temporary files (created 0600), yet readable as the umask says."""
    _, workdir, _ = tiny_run
    files = ["config.json", "corpus.json", "params.json", "train_log.json", "loss.png", "eval_val.json"]
    modes = {name: oct((workdir / name).stat().st_mode & 0o777) for name in files}
    assert modes == {name: oct(0o666 & ~RUN_UMASK) for name in files}


def test_run_directory_holds_config_pack_and_log(tiny_run):
    cfg, workdir, summary = tiny_run
    assert json.loads((workdir / "config.json").read_text()) == cfg.to_dict()
    model = models.build(cfg.model)
    params = param_pack.load_pack(workdir / "params.json", models.abstract_variables(model))
    assert models.count_params(params) == summary["params"]
    log = json.loads((workdir / "train_log.json").read_text())
    assert log["title"] == "gpt2_tiny" and log["steps"] == [1, 6]
    series = {s["name"]: s for s in log["series"]}
    assert len(series["loss"]["values"]) == 6 and series["val_loss"]["steps"] == [0, 3, 6]
    assert all(set(s) >= {"name", "values", "color"} for s in log["series"])
    assert [r["step"] for r in log["records"]] == [1, 2, 3, 4, 5, 6]
    assert set(log["records"][0]) == {"step", "loss", "lr", "grad_norm", "tokens_per_s", "wall_s"}
    assert set(log["probes"]) == {"before", "after"} and len(log["probes"]["after"]["prediction"]) == 16
    notes = dict(n.split("=", 1) for n in log["notes"])
    assert notes["prompt"] == "ROMEO:" and notes["generated"] == log["sample"]["generated"]
    assert log["summary"]["final_val_loss"] == log["evaluations"][-1]["val_loss"]
    # Wall time runs on through the evaluations and checkpoints (at steps 2, 3, 4 and 6), never back or
    # twice over: the last step's is within the training wall time.
    walls = [r["wall_s"] for r in log["records"]]
    assert walls == sorted(walls) and walls[-1] <= log["summary"]["train_wall_s"]


def test_same_config_and_seed_give_bit_identical_parameters(tiny_run, tmp_path):
    """Also with `runtime.fast_kernels`, which on a CPU falls back to the same float32 kernels."""
    cfg, workdir, _ = tiny_run
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.runtime.fast_kernels = True
    logs = []
    train_and_evaluate(cfg, tmp_path, out=logs.append, stream=lambda s: None)
    assert [line for line in logs if line.startswith("warning:")] == [
        "warning: runtime.fast_kernels: no cuDNN attention on the cpu backend; using the float32 defaults"
    ]
    a = param_pack.flatten(param_pack.load_pack(workdir / "params.json"))
    b = param_pack.flatten(param_pack.load_pack(tmp_path / "params.json"))
    assert a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_an_earlier_run_is_not_overwritten_without_asking(tiny_run, tmp_path):
    cfg, workdir, _ = tiny_run
    before = (workdir / "params.json").read_bytes()
    with pytest.raises(RunDirError, match="--overwrite"):
        train_and_evaluate(cfg, workdir, out=lambda s: None)
    assert (workdir / "params.json").read_bytes() == before
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        run_dir.prepare(f, overwrite=True)


def test_init_params_starts_from_a_pack(tiny_run, tmp_path):
    cfg, workdir, _ = tiny_run
    cfg2 = tiny_config(cfg.data.file, train__init_params=str(workdir / "params.json"), train__steps=1)
    cfg2.train.lr = 1e-12  # so the one step barely moves the weights
    cfg2.train.min_lr = 0.0
    logs = []
    train_and_evaluate(cfg2, tmp_path, out=logs.append)
    first_eval = json.loads((tmp_path / "train_log.json").read_text())["evaluations"][0]["val_loss"]
    trained = json.loads((workdir / "train_log.json").read_text())["evaluations"][-1]["val_loss"]
    assert first_eval == pytest.approx(trained, rel=1e-6)


def test_a_bank_of_one_window_trains_on_that_window_at_every_step(tiny_shakespeare, tmp_path):
    # The benchmark's runtime check (data.windows=1); it was a whole gpt2_tiny CLI run here, which
    # the tutorial's run covers.
    cfg = tiny_config(tiny_shakespeare, data__windows=1, train__steps=3, train__log_every=1)
    summary = train_and_evaluate(cfg, tmp_path, out=lambda s: None)
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert summary["steps"] == 3 and [r["step"] for r in log["records"]] == [1, 2, 3]
    bank = batches.window_bank(1_003_855, cfg.model.seq_len, 1, cfg.data.seed)
    starts = {int(s) for n in range(3) for s in batches.train_starts(0, cfg.model.seq_len, 4, n, cfg.data.seed, bank)}
    assert starts == {int(bank[0])}


def test_the_run_says_which_optimizer_updates_which_leaves_and_how_muon_orthogonalises():
    from bytelm.training import loop

    cfg = load_config("gpt2_speedrun")
    params = models.abstract_variables(models.build(cfg.model))
    (line,) = loop._optimizer_lines(cfg.train, models.family_of(cfg.model), params)
    assert line.startswith("optimizer muon (3 polar_express Newton-Schulz steps) on 8 hidden matrices (h_0/attn/")
    assert "adamw on the other 10 leaves" in line
