"""The data-parallel step (`runtime.mesh`) against the plain single-device step, and its errors."""

import json
import subprocess
import sys

import pytest

from bytelm import mesh
from bytelm.errors import ConfigError
from conftest import CONFIGS, REPO, TINY_FLAGS, assert_one_line_error, mirror_env, run_module


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "is empty"),
        ("model=2", "expected comma-separated AXIS=SIZE"),
        ("data=0", "sizes are positive"),
        ("data=x", "expected comma-separated AXIS=SIZE"),
        ("data=3", "needs 3 devices, but 1 are here"),
    ],
)
def test_bad_mesh_specs_are_one_line_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message) as e:
        mesh.build(spec)
    assert "\n" not in str(e.value)


def test_a_batch_that_does_not_split_names_both_numbers():
    import jax

    m = mesh.build("data=-1", jax.local_devices() * 1)
    mesh.check_batch(m, 12, "train.batch_size")  # one device: anything splits
    fake = type("M", (), {"shape": {"data": 2}})()
    with pytest.raises(ConfigError, match=r"train.batch_size 5 does not divide by the 2 devices"):
        mesh.check_batch(fake, 5, "train.batch_size")


# Runs in a child with 2 host devices (the count is fixed when JAX starts): 4 steps of each model
# family on the same random batches, sharded over both devices and on one device without a mesh.
_SHARDED_VS_PLAIN = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import jax, jax.numpy as jnp, numpy as np
import gpt2_tiny, mamba_tiny
from bytelm import batches, mesh, models, train
assert jax.device_count() == 2, jax.devices()
out = {}
for cfg in (gpt2_tiny.get_config(), mamba_tiny.get_config()):
    cfg.model.seq_len = 32
    if cfg.model.name == "mamba":
        cfg.model.d_model, cfg.model.num_layers = 32, 2
    else:
        cfg.model.num_layers = 2
    model, opt = models.build(cfg.model), train.make_optimizer(cfg.train)
    params = models.init_variables(model, jax.random.key(0))
    ids = np.random.default_rng(1).integers(0, 256, size=(4 * 6 * 33,)).astype(np.uint8)
    results = []
    for m in (None, mesh.build("data=-1")):
        fresh = jax.tree_util.tree_map(jnp.copy, params)  # the donated step deletes its input buffers
        state = train.TrainState(jnp.zeros((), jnp.int32), fresh, opt.init(fresh))
        if m is not None:
            state = jax.device_put(state, mesh.replicated(m))
        step, eval_step = train.make_steps(model, opt, 6, 32, mesh=m)
        losses = []
        for i in range(4):
            state, metrics = step(state, batches.make_batch(ids, np.arange(6) * 33 + i, 32))
            losses.append(float(metrics["loss"]))
        sums, _ = eval_step(state.params, batches.make_batch(ids, np.arange(6) * 33, 32))
        results.append((losses, jax.tree_util.tree_leaves(state.params), np.asarray(sums)))
    (l1, p1, e1), (l2, p2, e2) = results
    out[cfg.model.name] = {
        "loss": max(abs(a - b) / abs(a) for a, b in zip(l1, l2)),
        # Whole-tree relative distance: Adam turns a last-bit difference in a near-zero gradient into
        # a difference of order lr in that one entry, so a per-entry bound would measure Adam, not sharding.
        "params": float(
            np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(p1, p2)) / sum(np.sum(a**2) for a in p1))
        ),
        "eval": float(np.max(np.abs(e1 - e2) / np.abs(e1))),
        "sharded": str(p2[0].sharding),
    }
print(json.dumps(out))
"""


def test_the_data_parallel_step_matches_the_single_device_step():
    env = {**mirror_env(), "JAX_NUM_CPU_DEVICES": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED_VS_PLAIN, str(CONFIGS)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for family in ("gpt2", "mamba"):
        r = result[family]
        assert r["loss"] < 1e-5 and r["eval"] < 1e-5 and r["params"] < 1e-5, (family, r)
        assert "NamedSharding" in r["sharded"]


def test_training_on_two_cpu_devices_and_a_batch_that_does_not_split(workspace):
    base = ["launch.train", f"--config={CONFIGS}/gpt2_tiny.py", "--config.sample.generate=0", *TINY_FLAGS]
    proc = run_module(
        [*base, "--workdir=runs/two", "--config.train.steps=2", "--config.runtime.cpu_devices=2"], workspace
    )
    assert "summary:" in proc.stdout and "2 devices" in proc.stdout
    bad = run_module(
        [*base, "--workdir=runs/odd", "--config.runtime.cpu_devices=2", "--config.train.batch_size=5"],
        workspace,
        check=False,
    )
    assert_one_line_error(bad, 2, "train.batch_size 5 does not divide by the 2 devices")
