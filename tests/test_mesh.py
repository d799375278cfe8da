"""Meshes (`runtime.mesh`): data-parallel and FSDP steps against the plain single-device step on 1, 2,
4 and 8 simulated CPU devices, checkpoints across topologies, two processes against one, and errors."""

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from bytelm.artifacts import param_pack
from bytelm.errors import ConfigError
from bytelm.parallel import mesh, processes, runtime
from conftest import CONFIGS, REPO, TINY_FLAGS, assert_one_line_error, mirror_env, run_module
from launch import process


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "is empty"),
        ("model=2", "expected comma-separated AXIS=SIZE"),
        ("data=2,data=2", "expected comma-separated AXIS=SIZE"),
        ("data=0", "sizes are positive"),
        ("data=-1,fsdp=-1", "at most one may be -1"),
        ("data=x", "expected comma-separated AXIS=SIZE"),
        ("data=3", "needs 3 devices, but 1 are here"),
    ],
)
def test_bad_mesh_specs_are_one_line_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message) as e:
        mesh.make_mesh(spec)
    assert "\n" not in str(e.value)


def test_a_batch_that_does_not_split_names_both_numbers():
    m = mesh.make_mesh("data=-1")
    mesh.check_batch(m, 12, "train.batch_size")  # one device: anything splits
    fake = type("M", (), {"shape": {"data": 2, "fsdp": 3}})()
    with pytest.raises(ConfigError, match=r"train.batch_size 9 does not divide by the 6 devices"):
        mesh.check_batch(fake, 9, "train.batch_size")


def test_fsdp_splits_the_largest_divisible_axis_of_large_leaves():
    P = mesh.PartitionSpec
    assert mesh.leaf_spec((256, 128), 4, 1024) == P("fsdp", None)
    assert mesh.leaf_spec((128, 512), 4, 1024) == P(None, "fsdp")
    assert mesh.leaf_spec((6, 128), 4, 0) == P(None, "fsdp")  # 6 does not divide by 4
    assert mesh.leaf_spec((128,), 4, 1024) == P()  # under the size floor
    assert mesh.leaf_spec((7, 9), 4, 0) == P()  # nothing divides
    assert mesh.leaf_spec((), 4, 0) == P()
    assert mesh.leaf_spec((256, 128), 1, 0) == P()  # no fsdp axis


def test_cluster_environments_and_partial_flags():
    assert processes.cluster_size_from_env({}) == 1
    assert processes.cluster_size_from_env({"SLURM_NTASKS": "4"}) == 1  # sbatch itself, not a task of srun
    assert processes.cluster_size_from_env({"SLURM_NTASKS": "4", "SLURM_STEP_ID": "0"}) == 4
    assert processes.cluster_size_from_env({"OMPI_COMM_WORLD_SIZE": "2"}) == 2
    assert not processes.should_join(None, None, None, {})  # nothing to join: a no-op
    assert processes.should_join(None, None, None, {"OMPI_COMM_WORLD_SIZE": "2"})
    assert process.join_job(None, None, None) == 1  # (the test session is no cluster job)
    with pytest.raises(ConfigError, match="go together"):
        processes.should_join("127.0.0.1:1", 2, None, {})
    with pytest.raises(ConfigError, match=r"--process_id 2 must be in \[0, 2\)"):
        processes.should_join("127.0.0.1:1", 2, 2, {})


# Runs in a child with 8 host devices (the count is fixed when JAX starts). For each model family:
# 8 steps on one device (the reference, as `train_and_evaluate` runs it there), then the same 8
# steps on meshes over the first 2 and 8 devices, data-parallel and data x FSDP; then a checkpoint
# saved at step 4 from the run on 8 devices is restored onto 1 and onto 2 devices and trained on to
# step 8. Each mesh is a compilation (seconds), so GPT-2 gets the fewest that cover both kinds and a
# change of topology, and Mamba (whose parameters the same rules shard) one mesh with both kinds; the
# speedrun's Muon, whose orthogonalisation is split over the data axis, one mesh of 2 devices.
_MESHES_VS_PLAIN = r"""
import json, sys, tempfile
import jax, jax.numpy as jnp, numpy as np
from bytelm import models
from bytelm.config_base import load_config_file
from bytelm.parallel import mesh
from bytelm.training import checkpoints, optimizer, step
assert jax.device_count() == 8, jax.devices()
B, L, STEPS, SAVE_AT = 8, 32, 8, 4
SPECS = {
    "gpt2": [("data=2", 2), ("data=2,fsdp=4", 8)],
    "mamba": [("data=2,fsdp=4", 8)],  # the same sharding rules: one mesh with both kinds covers them
    "mamba2": [("data=2,fsdp=4", 8)],
    "gpt2_speedrun": [("data=2", 2)],  # Muon: each of the 2 devices orthogonalises one of each 2 matrices
}
ids = np.random.default_rng(1).integers(0, 256, size=(STEPS * B * (L + 1),)).astype(np.uint8)
starts = lambda i: (np.arange(B) + i * B) * (L + 1)
out = {}
NAMES = ("gpt2_tiny", "mamba_tiny", "mamba2_tiny", "gpt2_speedrun")
for cfg in (load_config_file(f"{sys.argv[1]}/{name}.py") for name in NAMES):
    cfg.model.seq_len, cfg.model.num_layers = L, 1 if cfg.name != "gpt2_speedrun" else 2
    if "d_model" in cfg.model:  # the Mambas, narrow (mamba2: two heads of 16 channels)
        cfg.model.d_model = 16
    if "headdim" in cfg.model:
        cfg.model.headdim = 16
    family = cfg.name if cfg.name == "gpt2_speedrun" else cfg.model.name
    model, opt = models.build(cfg.model), optimizer.make_optimizer(cfg.train, models.family_of(cfg.model))
    params = jax.device_get(models.init_variables(model, jax.random.key(0)))
    host_state = step.TrainState(np.zeros((), np.int32), params, jax.device_get(opt.init(params)))

    compiled = {}

    def run(m, state, first, last, shardings=None):
        key = None if m is None else (tuple(m.devices.flat), tuple(m.shape.items()))
        if key not in compiled:  # (the optimizer's own layout on this mesh: the same state either way)
            mesh_opt = optimizer.make_optimizer(cfg.train, models.family_of(cfg.model), m)
            compiled[key] = step.make_steps(model, mesh_opt, B, L, device_mesh=m, state_shardings=shardings)[0]
        train_step = compiled[key]
        make = step.batch_maker(ids, L, B, m)
        losses = []
        for i in range(first, last):
            state, metrics = train_step(state, make(starts(i)))
            losses.append(float(mesh.to_host(metrics)["loss"]))
        return state, losses

    one = mesh.make_mesh("data=1", jax.devices()[:1])
    one_sh = mesh.state_shardings(one, host_state, 0)
    _, reference = run(one, mesh.put(host_state, one_sh), 0, STEPS, one_sh)
    rel = lambda a, b: max(abs(x - y) / abs(x) for x, y in zip(a, b))
    result = {}
    for spec, n in SPECS[family]:
        m = mesh.make_mesh(spec, jax.devices()[:n])
        shardings = mesh.state_shardings(m, host_state, 0)
        state, losses = run(m, mesh.put(host_state, shardings), 0, STEPS, shardings)
        emb = jax.tree_util.tree_leaves(state.params)[0].sharding.spec
        result[spec] = {"rel": rel(reference, losses), "first_leaf_spec": str(emb)}
        if cfg.model.name == "gpt2" and spec == "data=2,fsdp=4":  # save at SAVE_AT, restore on 1 and 2 devices
            folder = tempfile.mkdtemp()
            state, _ = run(m, mesh.put(host_state, shardings), 0, SAVE_AT, shardings)
            with checkpoints.open_manager(folder, 1) as mngr:
                checkpoints.save(mngr, SAVE_AT, state, {"note": "saved on 8 devices, data=2,fsdp=4"})
            for spec2, n2 in (("data=1", 1), ("data=2", 2)):  # meshes compiled above
                m2 = mesh.make_mesh(spec2, jax.devices()[:n2])
                sh2 = mesh.state_shardings(m2, host_state, 0)
                with checkpoints.open_manager(folder, 1) as mngr:
                    restored, meta = checkpoints.restore(mngr, SAVE_AT, host_state, sh2)
                restored = jax.tree_util.tree_unflatten(
                    jax.tree_util.tree_structure(host_state), jax.tree_util.tree_leaves(restored))
                devices = {d.id for leaf in jax.tree_util.tree_leaves(restored) for d in leaf.sharding.device_set}
                _, losses = run(m2, restored, SAVE_AT, STEPS, sh2)
                result[f"restore {spec} -> {spec2}"] = {
                    "rel": rel(reference[SAVE_AT:], losses), "devices": sorted(devices), "meta": meta["note"]}
    out[family] = result
print(json.dumps(out))
"""


def test_meshes_of_1_2_and_8_devices_match_the_single_device_step_and_checkpoints_change_topology():
    env = {**mirror_env(), "JAX_NUM_CPU_DEVICES": "8"}
    proc = subprocess.run(
        [sys.executable, "-c", _MESHES_VS_PLAIN, str(CONFIGS)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for family in ("gpt2", "mamba", "mamba2", "gpt2_speedrun"):
        r = result[family]
        for spec, row in r.items():
            assert row["rel"] < 1e-5, (family, spec, row)
        assert family == "gpt2_speedrun" or "fsdp" in r["data=2,fsdp=4"]["first_leaf_spec"]
    assert "fsdp" not in result["gpt2"]["data=2"]["first_leaf_spec"]
    restored = "restore data=2,fsdp=4 -> data"
    assert result["gpt2"][f"{restored}=1"]["devices"] == [0]
    assert result["gpt2"][f"{restored}=2"]["devices"] == [0, 1]
    assert result["gpt2"][f"{restored}=2"]["meta"] == "saved on 8 devices, data=2,fsdp=4"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one(workspace):
    """Two `launch.train` processes with one CPU device each (gloo collectives over 127.0.0.1) against
    one process with two devices: the same mesh, so the same losses; only process 0 prints and writes."""
    base = [
        sys.executable,
        "-m",
        "launch.train",
        f"--config={CONFIGS}/gpt2_tiny.py",
        "--config.train.steps=3",
        "--config.sample.generate=0",
        "--config.runtime.mesh=fsdp=2",
        "--config.runtime.fsdp_min_size=0",
        *TINY_FLAGS,
    ]
    port = _free_port()
    procs = [
        subprocess.Popen(
            [*base, "--workdir=runs/multi", "--config.runtime.cpu_devices=1", f"--coordinator_address=127.0.0.1:{port}"]
            + ["--num_processes=2", f"--process_id={i}"],
            cwd=workspace,
            env=mirror_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, e) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, e[-3000:]
    assert "in 2 processes" in outputs[0][0] and "summary:" in outputs[0][0]
    # Process 1 prints nothing of ours (gloo's C++ announces each connection on stdout itself).
    assert [line for line in outputs[1][0].splitlines() if not line.startswith("[Gloo]")] == []
    single = run_module(
        ["launch.train", *base[3:], "--workdir=runs/single", "--config.runtime.cpu_devices=2"], workspace
    )
    assert "each batch split over 2 devices; state sharded over fsdp=2" in single.stdout
    logs = [json.loads((workspace / f"runs/{d}/train_log.json").read_text()) for d in ("multi", "single")]
    losses = [[r["loss"] for r in log["records"]] for log in logs]
    assert len(losses[0]) == 3 and max(abs(a - b) / a for a, b in zip(*losses, strict=True)) < 1e-5, losses
    assert logs[0]["summary"]["final_val_loss"] == pytest.approx(logs[1]["summary"]["final_val_loss"], rel=1e-5)
    # Written whole, gathered from both processes' shards: every leaf, with the single process's values.
    packs = [param_pack.flatten(param_pack.load_pack(workspace / f"runs/{d}/params.json")) for d in ("multi", "single")]
    assert packs[0].keys() == packs[1].keys()
    for path, leaf in packs[0].items():
        assert leaf.shape == packs[1][path].shape and leaf.dtype == packs[1][path].dtype, path
        np.testing.assert_allclose(leaf, packs[1][path], rtol=1e-4, atol=1e-6, err_msg=path)


def test_a_batch_that_does_not_split_over_two_cpu_devices(workspace):
    base = ["launch.train", f"--config={CONFIGS}/gpt2_tiny.py", "--config.sample.generate=0", *TINY_FLAGS]
    bad = run_module(
        [*base, "--workdir=runs/odd", "--config.runtime.cpu_devices=2", "--config.train.batch_size=5"],
        workspace,
        check=False,
    )
    assert_one_line_error(bad, 2, "train.batch_size 5 does not divide by the 2 devices")


def test_an_environment_device_count_wins_over_the_config_default():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    assert runtime.env_cpu_devices(env) == (4, "XLA_FLAGS=--xla_force_host_platform_device_count=4")
    assert runtime.cpu_devices(2, explicit=False, env=env) is None  # leave JAX the environment's 4
    assert runtime.cpu_devices(4, explicit=True, env=env) is None  # they agree
    assert runtime.cpu_devices(2, explicit=False, env={}) == 2 and runtime.cpu_devices(0, False, {}) is None
    assert runtime.cpu_devices(2, explicit=False, env={"JAX_NUM_CPU_DEVICES": "3"}) is None
    with pytest.raises(ConfigError, match=r"cpu_devices=2 conflicts with XLA_FLAGS=.*count=4 in the environment"):
        runtime.cpu_devices(2, explicit=True, env=env)
    assert runtime.compilation_cache_dir("~/c", False, {"JAX_COMPILATION_CACHE_DIR": "/shared"}) == "/shared"
    with pytest.raises(ConfigError, match="compilation_cache_dir=/mine conflicts with JAX_COMPILATION_CACHE_DIR"):
        runtime.compilation_cache_dir("/mine", True, {"JAX_COMPILATION_CACHE_DIR": "/shared"})


def test_xla_flags_device_count_gives_the_run_its_devices_and_a_conflict_names_both(workspace, tmp_path):
    """JAX's own way of asking for host devices is honoured over `runtime.cpu_devices`' default, so the
    mesh `data=4` that 2 devices refuse is built; the same count contradicted on the command line is
    one line naming both. (The runs stop at a missing corpus, after the mesh is built: no training is
    needed to see how many devices a run got.)"""
    base = ["launch.train", f"--config={CONFIGS}/gpt2_tiny.py", f"--workdir={tmp_path}/run"]
    four = [*base, "--config.runtime.mesh=data=4", "--config.data.file=/no/corpus.txt"]
    default = run_module(four, workspace, check=False)
    assert_one_line_error(default, 2, "runtime.mesh 'data=4' needs 4 devices, but 2 are here")
    env = {**mirror_env(), "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    honoured = run_module(four, workspace, env=env, check=False)
    assert_one_line_error(honoured, 1, "corpus file /no/corpus.txt does not exist")  # past the mesh
    clash = run_module([*base, "--config.runtime.cpu_devices=2"], workspace, env=env, check=False)
    assert_one_line_error(clash, 2, "--config.runtime.cpu_devices=2 conflicts with XLA_FLAGS=")
    assert not (tmp_path / "run").exists()
