import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bytelm import models
from bytelm.artifacts import param_pack
from bytelm.artifacts.param_pack import ParamPackError
from bytelm.errors import ConfigError
from bytelm.models import decoding
from bytelm.models.mamba import MambaConfig
from bytelm.models.mamba.network import Mamba
from bytelm.models.mamba.scans import selective_scan
from conftest import byte_ids, load_config, normal, one_hot, rel_err

SMALL = MambaConfig(seq_len=32, d_model=16, num_layers=2, d_state=4, d_conv=4, expand=2, dt_rank=2)


def random_scan_inputs(seed, b, l, d, n):
    """x, dt (positive), A (negative), B, C, D of the given sizes, float32."""
    x, B, C = normal(seed, (b, l, d)), normal(seed + 3, (b, l, n)), normal(seed + 4, (b, l, n))
    dt = np.log1p(np.exp(normal(seed + 1, (b, l, d)) - 1.0)).astype(np.float32)  # softplus
    A = -np.exp(normal(seed + 2, (d, n)))
    return x, dt, A, B, C, normal(seed + 5, (d,))


def loop_reference(x, dt, A, B, C, D):
    """The recurrence written out with NumPy loops in float64: the slowest, plainest reference."""
    x, dt, A, B, C, D = (np.asarray(a, np.float64) for a in (x, dt, A, B, C, D))
    b, l, d = x.shape
    h = np.zeros((b, d, A.shape[1]))
    y = np.zeros((b, l, d))
    for t in range(l):
        h = np.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        y[:, t] = np.einsum("bdn,bn->bd", h, C[:, t]) + D * x[:, t]
    return y


FAST_FORMS = [("parallel", 0), ("parallel", 4), ("parallel", 16), ("parallel", 7), ("fused", 0)]


@functools.cache
def sequential_reference(b, l, d, n):
    """Inputs for one shape, the plain scan's output and the float64 loop's, computed once per shape
    and shared by every fast form (compiling the reference again for each form cost the suite ~20 s)."""
    inputs = random_scan_inputs(l * 31 + d, b, l, d, n)
    seq = jax.jit(functools.partial(selective_scan, mode="sequential"))(*inputs)
    np.testing.assert_allclose(seq, loop_reference(*inputs), rtol=1e-4, atol=1e-4)
    return inputs, seq


@pytest.mark.parametrize("b, l, d, n", [(1, 1, 3, 2), (2, 17, 8, 4), (3, 64, 16, 16), (2, 100, 5, 3)])
@pytest.mark.parametrize("mode, chunk", FAST_FORMS)
def test_fast_scans_match_the_sequential_scan(b, l, d, n, mode, chunk):
    inputs, seq = sequential_reference(b, l, d, n)
    fast = jax.jit(functools.partial(selective_scan, mode=mode, chunk=chunk))(*inputs)
    assert rel_err(fast, seq) < 1e-5


@pytest.mark.parametrize("mode, chunk", FAST_FORMS)
def test_scan_final_state_is_the_same_for_every_form(mode, chunk):
    inputs = random_scan_inputs(0, 2, 30, 6, 4)
    scan = lambda **kw: jax.jit(functools.partial(selective_scan, return_state=True, **kw))(*inputs)[1]
    h_seq, h_fast = scan(mode="sequential"), scan(mode=mode, chunk=chunk)
    assert h_fast.shape == (2, 6, 4)
    np.testing.assert_allclose(h_fast, h_seq, rtol=1e-5, atol=1e-6)


def _scan_grads(shape, **kw):
    """Every input's gradient of a loss through both outputs (y and the final state)."""
    b, l, d, n = shape
    inputs = random_scan_inputs(l + d, b, l, d, n)
    w_y, w_h = normal(7, (b, l, d)), normal(8, (b, d, n))

    def loss(x, dt, A, B, C, D):
        y, h = selective_scan(x, dt, A, B, C, D, return_state=True, **kw)
        return jnp.sum(jnp.sin(y) * w_y) + jnp.sum(h * w_h)

    return jax.jit(jax.grad(loss, argnums=tuple(range(6))))(*inputs)


_sequential_grads = functools.cache(functools.partial(_scan_grads, mode="sequential"))


@pytest.mark.parametrize("mode, chunk", [("parallel", 5), ("fused", 0)])
@pytest.mark.parametrize("shape", [(2, 24, 6, 4), (3, 41, 16, 8)])
def test_scan_gradients_match_autodiff_of_the_sequential_scan(mode, chunk, shape):
    """Against autodiff of the plain `lax.scan`: this is what checks the fused form's hand-written
    backward."""
    for name, g_seq, g_fast in zip(
        "x dt A B C D".split(), _sequential_grads(shape), _scan_grads(shape, mode=mode, chunk=chunk), strict=True
    ):
        assert np.all(np.isfinite(g_fast)), name
        assert rel_err(g_fast, g_seq) < 1e-5, name


def test_recurrent_step_reproduces_the_parallel_forward_at_every_position():
    model = Mamba(SMALL)
    variables = models.init_variables(model, jax.random.key(0))
    ids = byte_ids(1, (2, 40))  # past seq_len: no window limit
    full = jax.jit(model.apply)(variables, one_hot(ids))
    step = jax.jit(functools.partial(decoding.step, model))
    cache, outs = model.empty_cache(2), []
    for t in range(ids.shape[1]):
        logits, cache = step(variables, ids[:, t], cache)
        outs.append(np.asarray(logits))
    assert rel_err(np.stack(outs, axis=1), full) < 1e-5


def test_causality_changing_position_t_leaves_earlier_logits_unchanged():
    model = Mamba(SMALL)
    variables = models.init_variables(model, jax.random.key(2))
    ids = byte_ids(3, (1, 24))
    apply = jax.jit(model.apply)
    base = apply(variables, one_hot(ids))
    for t in (0, 11, 23):
        other = ids.copy()
        other[:, t] = (ids[:, t] + 7) % 256
        changed = apply(variables, one_hot(other))
        np.testing.assert_array_equal(changed[:, :t], base[:, :t])
        assert not np.allclose(changed[:, t], base[:, t])


def test_model_gradients_through_the_fused_scan_equal_autodiff_of_the_sequential_scan():
    """The whole model's gradients (embedding, norms, conv, projections, A, D) through the fused
    form's hand-written backward, against autodiff of the plain `lax.scan`, and all finite. The
    parallel forms' gradients are checked against the same reference at the scan itself, above."""
    one_layer = dataclasses.replace(SMALL, num_layers=1)  # the layers repeat: one shows the path
    x = one_hot(byte_ids(5, (2, 32)))
    variables = models.init_variables(Mamba(one_layer), jax.random.key(4))

    def grads(mode: str):
        model = Mamba(dataclasses.replace(one_layer, scan_mode=mode))
        loss = lambda v: jnp.mean(jax.nn.log_softmax(model.apply(v, x)) * x)
        return jax.tree_util.tree_leaves(jax.jit(jax.grad(loss))(variables))

    reference = grads("sequential")
    assert all(np.all(np.isfinite(g)) for g in reference) and len(reference) == 12
    for g, r in zip(grads("fused"), reference, strict=True):
        assert rel_err(g, r) < 1e-5, g.shape


def test_initialisation_invariants():
    model = models.build(load_config("mamba_tiny").model)
    flat = param_pack.flatten(models.init_variables(model, jax.random.key(0)))
    A_log = flat["params/layers_0/mixer/A_log"]
    assert A_log.shape == (256, 16)
    np.testing.assert_allclose(A_log, np.log(np.broadcast_to(np.arange(1, 17), (256, 16))), rtol=1e-6)
    np.testing.assert_array_equal(flat["params/layers_0/mixer/D"], 1.0)
    dt = np.log1p(np.exp(np.asarray(flat["params/layers_3/mixer/dt_proj/bias"], np.float64)))  # softplus
    assert float(dt.min()) >= 1e-3 * 0.999 and float(dt.max()) <= 1e-1 * 1.001
    # log-uniform: the mean of log(dt) sits near the middle of [log 1e-3, log 1e-1].
    assert abs(float(np.mean(np.log(dt))) - math.log(1e-2)) < 0.3
    assert flat["params/embedding"].shape == (256, 128) and not any("head" in p for p in flat)


def test_mamba_tiny_sizes_and_dt_rank():
    cfg = load_config("mamba_tiny").model
    mc = models.family_of(cfg).config(cfg)
    assert (mc.d_inner, mc.rank, mc.seq_len) == (256, 8, 256)
    shapes = {p: tuple(x.shape) for p, x in param_pack.flatten(models.abstract_variables(Mamba(mc))).items()}
    assert shapes["params/layers_0/mixer/in_proj/kernel"] == (128, 512)
    assert shapes["params/layers_0/mixer/x_proj/kernel"] == (256, 8 + 32)
    assert shapes["params/layers_0/mixer/dt_proj/kernel"] == (8, 256)
    cfg.dt_rank = "x"
    with pytest.raises(ConfigError, match="dt_rank"):
        models.build(cfg)


def test_a_gpt2_pack_does_not_load_into_mamba(tmp_path):
    gpt = models.build(load_config("gpt2_tiny").model)
    param_pack.save_pack(tmp_path / "p.json", models.init_variables(gpt, jax.random.key(0)), {})
    with pytest.raises(ParamPackError, match="does not fit the model") as e:
        param_pack.load_pack(
            tmp_path / "p.json", models.abstract_variables(models.build(load_config("mamba_tiny").model))
        )
    assert "missing params/embedding" in str(e.value) and "unexpected params/wte" in str(e.value)


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_a_log_and_d_take_no_weight_decay_as_in_the_official_block(name):
    """state-spaces/mamba marks A_log and D `_no_weight_decay`: with zero gradients, only weight decay
    moves a leaf, and it moves the projections but neither of them, under either optimizer."""
    from bytelm.training import optimizer

    cfg = load_config("mamba_tiny")
    cfg.model.num_layers, cfg.model.d_model, cfg.train.optimizer = 1, 16, name
    params = models.init_variables(models.build(cfg.model), jax.random.key(0))
    opt = optimizer.make_optimizer(cfg.train, models.family_of(cfg.model))
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates = param_pack.flatten(jax.jit(opt.update)(zero, jax.jit(opt.init)(params), params)[0])
    mixer = "params/layers_0/mixer"
    assert not np.any(updates[f"{mixer}/A_log"]) and not np.any(updates[f"{mixer}/D"])
    assert np.all(np.asarray(updates[f"{mixer}/in_proj/kernel"]) != 0)  # decayed: −lr × wd × w
