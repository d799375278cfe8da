"""`launch.benchmark` end to end on shrunk settings, and the PyTorch peer against our GPT-2."""

import dataclasses
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from bytelm import models
from bytelm.config_base import load_config_file
from conftest import CONFIGS, REPO, TINY_FLAGS, load_config, run_module


def test_train_and_pack_sections_write_json_and_the_table(workspace):
    proc = run_module(
        [
            "launch.benchmark",
            "--only=train,pack",
            f"--config={CONFIGS}/gpt2_tiny.py",
            *TINY_FLAGS,
            "--train_steps=3",
            "--repeats=2",
            "--pack_params_m=2",
            "--out=b.json",
            "--markdown=B.md",
            f"--config_dir={CONFIGS}",
        ],
        workspace,
    )
    doc = json.loads((workspace / "b.json").read_text())
    run = doc["train"]["runs"][0]
    assert run["tokens_per_s"]["n"] == 2 and run["tokens_per_s"]["median"] > 0
    assert run["compile_s"] > 0 and run["memory_mb"] > 0 and run["xla_flops_per_token"] > 0
    # nanoGPT's count for 1 layer, width 32, ffn 32, seq 64: 6 × (4·32·32 + 2·32·32 + 256·32) + 12·32·64.
    assert run["model_flops_per_token"] == 6 * (4 * 32 * 32 + 2 * 32 * 32 + 256 * 32) + 12 * 32 * 64
    assert 0 < run["ceiling_fraction"] < 1 and doc["train"]["ceiling"]["gflops"]["median"] > 0
    assert doc["pack"]["params"] > 1e6 and doc["pack"]["load_mb_per_s"]["median"] > 0
    table = (workspace / "B.md").read_text()
    assert "## Training" in table and "## Parameter pack" in table and "of ceiling" in table
    missing = "families, records, ablation, recipe, speedrun, sample, scan, mamba2, profile, choices, decay, corpus"
    only = missing.replace(", ", ",")
    assert f"holds no figures for them: {missing} (`python -m launch.benchmark --only={only}`" in table
    assert "ceiling float32 matmul" in proc.stdout and "wrote b.json and B.md" in proc.stdout
    assert doc["measured"] == {"train": doc["machine"]["date"], "pack": doc["machine"]["date"]}
    # A later run of one section keeps the other, which says when it was measured.
    time.sleep(1.1)  # the dates have one-second resolution
    run_module(
        [
            "launch.benchmark",
            "--only=pack",
            "--repeats=1",
            "--pack_params_m=1",
            "--out=b.json",
            "--markdown=B.md",
            f"--config={CONFIGS}/gpt2_tiny.py",
            f"--config_dir={CONFIGS}",
        ],
        workspace,
    )
    later = json.loads((workspace / "b.json").read_text())
    assert later["train"] == doc["train"] and later["measured"]["train"] == doc["machine"]["date"]
    assert later["measured"]["pack"] == later["machine"]["date"] != doc["machine"]["date"]
    measured = f"Measured: train {doc['machine']['date']}, pack {later['machine']['date']}."
    assert measured in (workspace / "B.md").read_text()
    # No section: the page regenerated from the JSON as it stands, which is left as it was.
    before = (workspace / "b.json").read_bytes()
    proc = run_module(
        ["launch.benchmark", "--only=", "--out=b.json", "--markdown=C.md", f"--config={CONFIGS}/gpt2_tiny.py",
         f"--config_dir={CONFIGS}"],
        workspace,
    )  # fmt: skip
    page = (workspace / "C.md").read_text()
    assert "## Training" in page and "## Parameter pack" in page and measured in page
    assert (workspace / "b.json").read_bytes() == before and "wrote C.md" in proc.stdout


def test_an_unknown_section_is_a_usage_error(workspace):
    proc = run_module(
        ["launch.benchmark", "--only=speed", f"--config={CONFIGS}/gpt2_tiny.py", "--out=x.json"], workspace, check=False
    )
    assert proc.returncode == 2 and "unknown benchmark section speed" in proc.stderr
    assert not (workspace / "x.json").exists()


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the optional extra `bench` (torch) is absent")
def test_the_torch_peer_computes_the_same_function_as_our_gpt2():
    """Our GPT-2's weights copied into the peer give the same logits: the side-by-side compares like
    with like."""
    import jax
    import torch

    from bench.nanogpt_torch import GPT
    from bytelm import models
    from bytelm.artifacts import param_pack
    from bytelm.models.gpt2 import GPT2Config
    from bytelm.models.gpt2.transformer import GPT2

    cfg = GPT2Config(seq_len=16, num_layers=2, num_heads=2, head_dim=8, ffn_hidden=32)
    variables = models.init_variables(GPT2(cfg), jax.random.key(0))
    params = param_pack.flatten(variables)
    peer = GPT(cfg.seq_len, cfg.num_layers, cfg.num_heads, cfg.head_dim, cfg.ffn_hidden)
    names = {"wte.weight": "wte", "wpe.weight": "wpe", "ln_f.weight": "ln_f/scale", "ln_f.bias": "ln_f/bias"}
    pairs = [("ln_1", "ln_1", "scale"), ("ln_2", "ln_2", "scale"), ("attn/qkv", "qkv", "kernel")]
    pairs += [("attn/proj", "attn_proj", "kernel"), ("mlp/fc", "fc", "kernel"), ("mlp/proj", "mlp_proj", "kernel")]
    for i in range(cfg.num_layers):
        for ours, theirs, weight in pairs:
            names[f"h.{i}.{theirs}.weight"] = f"h_{i}/{ours}/{weight}"
            names[f"h.{i}.{theirs}.bias"] = f"h_{i}/{ours}/bias"
    state = {}
    for theirs, ours in names.items():
        w = np.asarray(params[f"params/{ours}"])
        state[theirs] = torch.from_numpy(np.array(w.T if ours.endswith("kernel") else w))
    assert set(state) == set(peer.state_dict())
    peer.load_state_dict(state)
    ids = np.random.default_rng(0).integers(0, 256, size=(3, 16))
    ours = np.asarray(GPT2(cfg).apply(variables, jax.nn.one_hot(ids, 256)))
    with torch.no_grad():
        theirs = peer(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)


def test_choices_are_measured_in_interleaved_rounds_and_tabled_against_the_chosen_value():
    """The helpers of `bench/choices.py` with stand-in measurements: every value is warmed up, then
    measured once a round in turn; the table marks the chosen value and gives ratios to it."""
    from bench import choices, tables

    calls = []
    measure = {v: (lambda v=v: calls.append(v) or {"a": 2.0, "b": 1.0}[v]) for v in ("a", "b")}
    rates = choices._interleaved(measure, repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3 and rates == {"a": [2.0] * 3, "b": [1.0] * 3}
    row = choices._choice("thing (config.field)", "units/s", "b", rates, note="how")
    assert [(v["value"], v["ratio"]) for v in row["values"]] == [("a", 2.0), ("b", 1.0)]
    doc = {"machine": {"date": "d", "platform": "p", "cpus": 2, "python": "3", "jax": "j", "backend": "cpu"}}
    page = tables.markdown({**doc, "repeats": 3, "choices": [row]})
    assert "## Choices" in page and "| thing (config.field) | **b** | 1 [1–1] units/s | 1.00 |" in page
    assert "| thing (config.field) | a | 2 [2–2] units/s | 2.00 |" in page and "| | | how | |" in page


def test_the_start_up_choice_runs_the_tiny_check_on_the_corpus_it_is_given(monkeypatch, tmp_path):
    """The start-up row's command, for a corpus path given as the corpus loader gives it (a str), with
    the two runs stood in for: the first fills the run's cache folder, the second finds it."""
    from bench import choices

    commands = []
    monkeypatch.setattr(choices, "_timed", lambda fn, work: commands.append(fn.args[0]) or 1.0)
    row = choices._start_up(str(tmp_path / "corpus.txt"), repeats=1)
    assert [v["value"] for v in row["values"]] == ["empty cache", "warm cache"] and len(commands) == 2
    assert f"--config.data.file={tmp_path / 'corpus.txt'}" in commands[0] and commands[0] == commands[1]


def test_the_torch_peer_is_started_on_the_corpus_it_is_given(monkeypatch, tmp_path):
    """`--peer=torch` (train, recipe) passes the corpus as the corpus loader gives it (a str): the peer's
    command names it resolved, with the run stood in for."""
    import subprocess

    from bench import peers

    commands = []

    def fake_run(cmd, **kwargs):
        commands.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout='{"tokens_per_s": 1.0}\n', stderr="")

    monkeypatch.setattr(peers.importlib.util, "find_spec", lambda name: object())  # torch not needed
    monkeypatch.setattr(peers.subprocess, "run", fake_run)
    assert peers.run_peer(load_config("gpt2_tiny"), str(tmp_path / "c.txt"), 3, 1) == {"tokens_per_s": 1.0}
    assert f"--corpus={tmp_path / 'c.txt'}" in commands[0] and "--steps=3" in commands[0]


FAKE_TRAIN = """import sys
print("Overriding config with", sys.argv[1])
assert "--device=cpu" in sys.argv and "--max_iters=30" in sys.argv and "--batch_size=12" in sys.argv
for i in range(31):
    if i % 10 == 0:
        print(f"step {i}: train loss {4 - i / 10:.4f}, val loss {4.1 - i / 10:.4f}")
    print(f"iter {i}: loss {4 - i / 10:.4f}, time {50 + i % 3}.00ms, mfu -100.00%")
"""


def _fake_nanogpt(root):
    """A folder with nanoGPT's layout whose train.py prints lines in nanoGPT's own formats."""
    from bench import nanogpt_real

    for name in nanogpt_real.NEEDED:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("print('length of dataset in characters: 10')\n")
    (root / "train.py").write_text(FAKE_TRAIN)
    return root


def test_the_nanogpt_peer_runs_a_checkout_from_outside_it_and_reads_its_own_log(tmp_path):
    from bench import nanogpt_real

    root = _fake_nanogpt(tmp_path / "nanoGPT")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    corpus_file = tmp_path / "input.txt"
    corpus_file.write_text("hello")
    out = nanogpt_real.run(str(root), corpus_file, iters=30)
    assert [(p["step"], p["val_loss"]) for p in out["curve"]] == [(0, 4.1), (10, 3.1), (20, 2.1), (30, 1.1)]
    assert out["final_val_loss"] == pytest.approx(1.1) and out["iters"] == 30
    assert out["iter_ms"]["median"] == 51.0 and out["tokens_per_s"] == pytest.approx(12 * 64 / 0.051)
    assert all(a["t_s"] <= b["t_s"] <= out["wall_s"] for a, b in zip(out["curve"], out["curve"][1:], strict=False))
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # the checkout is left as it was


def test_the_speedrun_section_needs_a_nanogpt_checkout_and_says_how_to_get_one(tmp_path, workspace):
    from bench import run
    from bytelm.errors import UsageError

    config = load_config_file(f"{CONFIGS}/gpt2_speedrun.py")
    with pytest.raises(UsageError, match="needs --nanogpt_dir=PATH: git clone https://github.com/karpathy/nanoGPT"):
        run.Options(config, only=("speedrun",), peer="nanogpt").check()
    with pytest.raises(UsageError, match="is not a nanoGPT checkout \\(no train.py\\)"):
        run.Options(config, only=("speedrun",), peer="nanogpt", nanogpt_dir=str(tmp_path)).check()
    with pytest.raises(UsageError, match="add --only=speedrun"):
        run.Options(config, only=("train",), peer="nanogpt").check()
    flags = ["--only=speedrun", "--peer=nanogpt", "--nanogpt_dir=/nowhere", f"--config={CONFIGS}/gpt2_speedrun.py"]
    proc = run_module(["launch.benchmark", *flags], workspace, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --nanogpt_dir=/nowhere")


def test_the_speedrun_ablation_puts_back_gpt2_tinys_depth_and_batch_at_the_same_tokens():
    from bench import speedrun

    fast, tiny = load_config("gpt2_speedrun"), load_config("gpt2_tiny")
    fast.model.num_layers, fast.train.batch_size = 2, 24
    fast.train.steps, fast.train.warmup_steps, fast.train.eval_every = 240, 20, 60
    assert speedrun.size_levers(fast, tiny) == {
        "with gpt2_tiny's 4 layers": {"model.num_layers": 4},
        "with gpt2_tiny's batches of 12, same tokens": {
            "train.batch_size": 12, "train.steps": 480, "train.warmup_steps": 40, "train.eval_every": 120,
        },
    }  # fmt: skip
    assert speedrun.size_levers(tiny, tiny) == {}  # nothing set apart from gpt2_tiny: nothing to put back


def test_speedrun_ratios_pair_each_round_with_its_own_nanogpt_run():
    from bench import speedrun, tables

    def ours(wall, val, tok=1000.0):
        curve = [{"t_s": wall / 2, "step": 50, "val_loss": val + 0.3}, {"t_s": wall, "step": 100, "val_loss": val}]
        return {"wall_s": wall, "final_val_loss": val, "reached": val <= 1.88, "tokens_per_s": tok, "curve": curve,
                "overrides": {}}  # fmt: skip

    def nanogpt(wall, tok):
        curve = [{"t_s": wall * 0.9, "step": 1750, "val_loss": 1.89}, {"t_s": wall, "step": 2000, "val_loss": 1.87}]
        return {"wall_s": wall, "tokens_per_s": tok, "final_val_loss": 1.885, "curve": curve}

    rounds = [
        {"seed": 0, "nanogpt": nanogpt(150.0, 10_000), "speedrun": ours(45.0, 1.86), "gpt2_tiny": ours(0, 0, 15_000),
         "torch": {"tokens_per_s": 9_000}},
        {"seed": 1, "nanogpt": nanogpt(200.0, 8_000), "speedrun": ours(50.0, 1.87), "gpt2_tiny": ours(0, 0, 14_000),
         "torch": {"tokens_per_s": 8_000}},
    ]  # fmt: skip
    s = speedrun.summarize(rounds)
    assert s["wall_ratio"] == {"median": pytest.approx(0.275), "min": 0.25, "max": 0.3}  # 45/150 and 50/200
    assert s["tiny_speed_ratio"]["min"] == 1.5 and s["tiny_speed_ratio"]["max"] == 1.75
    assert s["nanogpt_time_to_target_s"] == [150.0, 200.0] and s["all_reached"]
    ablation = [{"lever": "without muon", **ours(50.0, 2.1), "overrides": {"train.optimizer": "adamw"}}]
    machine = {"date": "d", "platform": "p", "cpus": 2, "python": "3", "jax": "j", "backend": "cpu"}
    section = {"target": 1.88, "rounds": rounds, "ablation": ablation, "summary": s}
    page = tables.markdown({"machine": machine, "repeats": 1, "speedrun": section})
    assert "| seed 0 | 150.0 s | 1.8850 | 45.0 s | 1.8600 | 0.30 |" in page  # (round, walls, losses, ratio)
    assert "| without muon | train.optimizer=adamw | 2.1000 (n=1) | +0.2350 | 50.0 s | 0 of 1 |" in page
    assert 'aria-label="validation loss against wall time (s)"' in tables.speedrun_chart(section)
    # Rounds without the ablation (`--ablation_seeds=0`): said, not a table of the speedrun alone.
    alone = tables.markdown({"machine": machine, "repeats": 1, "speedrun": section | {"ablation": []}})
    assert "The ablation was not run this time" in alone and "| without muon |" not in alone
    assert "### Ablation" not in alone and "| seed 0 | 150.0 s |" in alone


def test_the_gpu_check_dry_run_finds_what_it_needs_without_a_gpu(tmp_path):
    """On a CPU the check cannot run its GPU work; its dry run checks the packages, that the GPU tests
    collect and that the benchmark's config loads, and says what it would run."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "would run pytest tests/test_gpu.py" in proc.stdout and "--config=configs/gpt2_small.py" in proc.stdout
    real = subprocess.run(
        ["bash", "bench/gpu_check.sh", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert real.returncode == 2 and "no GPU here (JAX's backend is cpu)" in real.stderr


def test_the_decay_section_trains_both_arms_from_one_init_and_tables_their_curves(tiny_shakespeare):
    from bench import tables, weight_decay

    config = load_config("mamba_tiny")
    config.data.file = str(tiny_shakespeare)
    config.model.update({"num_layers": 1, "d_model": 16, "seq_len": 16})
    config.train.update({"batch_size": 4, "eval_batch_size": 4, "warmup_steps": 1, "weight_decay": 100.0})
    family = models.family_of(config.model)
    decay_all = weight_decay.DecayEveryMatrix(family)
    a_log = ("params", "layers_0", "mixer", "A_log")
    assert decay_all.decays(a_log, (32, 16)) and not family.decays(a_log, (32, 16))
    assert decay_all.hidden_matrix is not None and decay_all.name == "mamba"
    d = weight_decay.bench_no_decay(config, seeds=1, steps=4, eval_windows=4, log=lambda s: None)
    curves = list(d["arms"].values())
    assert [[p["step"] for p in c[0]] for c in curves] == [[1, 2, 3, 4]] * 2
    # Only the decay mask differs, and it pulls the decayed arm's A_log towards 0.
    assert curves[1][0][-1]["a_log_mean"] < curves[0][0][-1]["a_log_mean"]
    page = tables._decay(d)
    assert page[0].startswith("### Mamba's no-decay leaves") and len(page) == 6 + 2 + 2


def test_the_families_section_finds_targets_budgets_and_the_pareto_front_on_stand_in_runs():
    """bench/families.py and its tables on made-up curves: the time to each target is the first evaluation
    at or below it, the budgets take the best that had ended by then, the front keeps what nothing beats."""
    from bench import families, tables
    from bench.processes import time_to

    curve = lambda *points: [{"t_s": t, "step": i, "val_loss": v} for i, (t, v) in enumerate(points)]
    fast, slow = curve((10, 3.0), (100, 1.8), (200, 1.6)), curve((50, 2.0), (400, 1.5), (700, 1.45))
    assert time_to(slow, 1.55) == 400 and time_to(fast, 1.55) is None
    front = families.pareto_front(fast + slow)
    assert [(p["t_s"], p["val_loss"]) for p in front] == [
        (10, 3.0),
        (50, 2.0),
        (100, 1.8),
        (200, 1.6),
        (400, 1.5),
        (700, 1.45),
    ]
    run = lambda c: {"curve": c, "final_val_loss": c[-1]["val_loss"], "wall_s": c[-1]["t_s"] + 1, "steps": 9,
                     "flops": 2e15, "time_to": {f"{t:.2f}": time_to(c, t) for t in families.TARGETS}}  # fmt: skip
    facts = {"family": "gpt2", "params": 1000, "flops_per_token": 1.0, "tokens_per_step": 1}
    d = {"runs": {"fast": [run(fast)], "slow": [run(slow)]}, "facts": {"fast": facts, "slow": facts},
         "targets": list(families.TARGETS), "pareto": front}  # fmt: skip
    d["runs"]["slow"][0]["model_metrics"] = {"model/boundary_fraction": 0.25, "model/boundaries_after_space": 0.9}
    page = "\n".join(tables._families(d))
    assert "| slow | gpt2 | 1,000 | 9 | 2.000 | 1.4500 | 2.092 | 701 | 400 s | 400 s |" in page
    assert "| slow | 0.250 | 0.900 | — |" in page and "| fast | 0." not in page  # a chunking config alone
    # By 10 minutes the slow run has reached 1.5 (its 1.45 comes at 700 s); one seed each.
    assert "| fast | 1.8000 | 1.6000 | 1.6000 |" in page and "| slow | 2.0000 | 2.0000 | 1.5000 |" in page
    assert "Tiny Shakespeare (111,539 bytes)" in page and "Seed 0." in page and "Seeds" not in page
    # A later run of other seeds or configs joins the table: same seed replaced, other seeds kept.
    run1 = lambda c, seed: run(c) | {"seed": seed}
    earlier = d | {"runs": {"fast": [run1(fast, 0)], "slow": [run1(slow, 0)]}, "overrides": {}}
    later = families.merged(earlier, earlier | {"runs": {"slow": [run1(fast, 1), run1(slow, 0)]}, "facts": {}})
    assert [[r["seed"] for r in rs] for rs in later["runs"].values()] == [[0], [0, 1]]
    assert later["runs"]["slow"][1]["curve"] == fast and later["facts"] == d["facts"]
    assert "Seeds 0 / 1; a config with fewer figures ran the first of them only." in "\n".join(tables._families(later))
    elsewhere = earlier | {"runs": {"slow": [run1(slow, 1)]}, "overrides": {"data.file": "x"}}
    assert families.merged(earlier, elsewhere) == elsewhere  # another corpus: its own table
    other = "\n".join(tables._families(d | {"overrides": {"data.file": "/data/enwik8"}}))
    assert "split of `enwik8` (10% of it held out as test)" in other
    assert 'aria-label="whole-split validation loss against wall time (s), seed 0"' in tables.families_chart(d)


def test_the_mamba2_section_sizes_its_cases_and_tables_them():
    from bench import ssd_speed, tables
    from bytelm.config_base import load_config_file

    configs = {n: load_config_file(f"{CONFIGS}/{n}.py") for n in ("gpt2_tiny", "mamba_tiny", "mamba2_tiny")}
    cases = ssd_speed.cases(configs, 1024, [32, 128])
    assert [c.train.batch_size for c in cases.values()] == [4] * 4 and all(
        c.model.seq_len == 1024 for c in cases.values()
    )
    gpt = cases["gpt2 (gpt2_tiny at width 96, rotary)"]
    params = models.count_params(models.abstract_variables(models.build(gpt.model)))
    mamba = models.count_params(models.abstract_variables(models.build(configs["mamba_tiny"].model)))
    assert (
        abs(params / mamba - 1) < 0.1
        and ssd_speed.cases(configs, 4096, [64])["mamba (mamba_tiny, fused scan)"].train.batch_size == 2
    )
    row = {"case": "x", "length": 256, "params": 10, "memory_mb": 1.0, "compile_s": 2.0,
           "tokens_per_s": {"median": 5.0, "min": 4.0, "max": 6.0, "n": 3}, "ratio_to_mamba": 2.0}  # fmt: skip
    assert "| 256 | x | 10 | 5 [4–6] | 2.00 | 1 | 2.0 |" in tables._mamba2([row])


def test_the_profile_section_sums_each_ops_time_under_the_jax_operation_that_made_it(tiny_shakespeare):
    from bench import op_profile, tables

    assert op_profile.short_name("transpose(jvp(GPT2))/h_3/attn/jit(softmax)/exp") == "attn/softmax/exp (backward)"
    hlo = '%fusion.7 = f32[2]{0} fusion(%p), kind=kLoop, metadata={op_name="jit(train_step)/jvp(GPT2)/h_0/mlp/fc/dot_general" source_file="x.py"}'  # noqa: E501
    assert op_profile.op_names(hlo) == {"fusion.7": "jvp(GPT2)/h_0/mlp/fc/dot_general"}
    config = load_config("gpt2_tiny")
    config.model.update(seq_len=16, num_layers=1)
    config.train.batch_size = 2
    ids = np.frombuffer(tiny_shakespeare.read_bytes(), np.uint8)
    r = op_profile.profile_config("gpt2_tiny", config, ids, steps=2, top=5)
    assert r["step_ms"] > 0 and 0 < r["ops_ms"] <= 2 * r["step_ms"] and len(r["rows"]) == 5  # 2 cores at most
    assert sum(row["share"] for row in r["rows"]) <= 1 + 1e-9 and r["rows"][0]["ms"] >= r["rows"][-1]["ms"]
    assert any("attn" in row["op"] or "mlp" in row["op"] for row in r["rows"])  # ops of the model, named
    page = "\n".join(tables._profile([r]))
    assert "**gpt2_tiny** (batch 2 × 16 bytes)" in page and f"| `{r['rows'][0]['op']}` |" in page


def test_the_records_table_gives_each_warm_seed_and_the_cold_start():
    from bench import tables

    run = lambda seed, loss, wall: {"seed": seed, "final_val_loss": loss, "wall_s": wall, "first_step_s": 3.0,
                                    "tokens_per_s": 12000.0, "steps": 480}  # fmt: skip
    d = {"record_2min": {"cold": run(0, 1.5, 130.0), "warm": [run(0, 1.5, 118.4), run(1, 1.52, 121.0)]}}
    page = "\n".join(tables._records(d))
    assert "| record_2min | 480 | 1.5000 / 1.5200 | 2.164 / 2.193 | 118 / 121 | 130 | 12,000 / 12,000 |" in page


def test_an_events_own_time_leaves_out_the_events_inside_it(tmp_path):
    """A loop of 10 µs around two ops of 3 and 4 µs on one thread, and an op on another thread."""
    import gzip

    from bench import op_profile

    events = [
        {"ph": "X", "name": "while.1", "ts": 100, "dur": 10, "pid": 1, "tid": 1},
        {"ph": "X", "name": "fusion.2", "ts": 101, "dur": 3, "pid": 1, "tid": 1},
        {"ph": "X", "name": "fusion.3", "ts": 105, "dur": 4, "pid": 1, "tid": 1},
        {"ph": "X", "name": "fusion.2", "ts": 102, "dur": 5, "pid": 1, "tid": 2},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1},
    ]
    with gzip.open(tmp_path / "run.trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    assert op_profile.trace_self_times(tmp_path) == {"while.1": 3, "fusion.2": 8, "fusion.3": 4}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"decay_steps": 3}, "--decay_steps must be at least 4"),
        ({"ssd_lengths": ()}, "--ssd_lengths must be at least 1"),
        ({"ssd_chunks": (16, 0)}, "--ssd_chunks must be at least 1"),
        ({"families_seeds": 0}, "--families_seeds must be at least 1"),
        ({"profile_top": 0}, "--profile_top must be at least 1"),
        ({"families_configs": ("gpt2_tiny", "gpt3")}, "--families_configs names gpt3, which the families section"),
        ({"families_first_seed": -1}, "--families_first_seed must be at least 0"),
        ({"only": ("records",), "record_configs": ("record_3min",)}, "--record_configs names record_3min, which"),
        ({"only": ("profile",), "profile_configs": ("gpt3",)}, "--profile_configs names gpt3, which"),
        ({"only": ("ablation",), "ablation_configs": ("record_3min",)}, "--ablation_configs names record_3min, which"),
        ({"only": ("ablation",), "ablation_seeds": 0}, "--ablation_seeds must be at least 1 for --only=ablation"),
        (
            {"only": ("ablation",), "ablation_levers": ("with dropout 0.2",)},
            "--ablation_levers names 'with dropout 0.2', which record_2min does not have: choose from 'none', ",
        ),
        ({"only": ("records",), "ablation_levers": ("none",)}, "--ablation_levers chooses the ablation section's"),
    ],
    ids=[
        "decay-steps",
        "no-lengths",
        "zero-chunk",
        "no-seeds",
        "no-rows",
        "family-name",
        "first-seed",
        "record-name",
        "profile-name",
        "ablation-name",
        "ablation-seeds",
        "ablation-lever",
        "ablation-levers-alone",
    ],
)
def test_bad_benchmark_options_are_refused_before_anything_runs(change, message):
    from bench import run
    from bytelm.errors import UsageError

    options = run.Options(load_config_file(f"{CONFIGS}/gpt2_tiny.py"), config_dir=CONFIGS)
    with pytest.raises(UsageError, match=message):
        dataclasses.replace(options, **change).check()


def test_the_records_section_fills_a_cache_cold_then_runs_each_seed_warm_from_it(monkeypatch):
    from bench import families

    calls = []

    def run_ours(path, seed, overrides=None, cache_dir=""):
        calls.append((Path(path).name, seed, cache_dir))
        return {"seed": seed, "final_val_loss": 1.5, "wall_s": 100.0 + len(calls), "first_step_s": 1.0,
                "tokens_per_s": 1.0, "steps": 480, "curve": []}  # fmt: skip

    monkeypatch.setattr(families, "run_ours", run_ours)
    out = families.bench_records(CONFIGS, ("record_2min",), 2, lambda s: None)
    assert [(c[0], c[1]) for c in calls] == [("record_2min.py", 0), ("record_2min.py", 0), ("record_2min.py", 1)]
    assert calls[0][2] and len({c[2] for c in calls}) == 1  # one fresh cache, filled by the cold run
    assert out["record_2min"]["cold"]["wall_s"] == 101 and [w["seed"] for w in out["record_2min"]["warm"]] == [0, 1]


def test_a_records_levers_are_those_it_pulls_and_its_larger_steps_go_back_at_the_same_tokens():
    from bench import ablation, speedrun

    record = load_config("gpt2_speedrun")  # a GPT record's form: GELU, batches of 48, one evaluation
    record.model.activation, record.train.batch_size, record.train.eval_every = "gelu", 48, record.train.steps
    levers = ablation.levers(record)
    pulled = [n for n in speedrun.LEVERS if n.startswith("without") and n != "without relu2"]  # it runs GELU
    assert list(levers) == [*pulled, "without batches of 48", "with dropout 0.1"]
    assert levers["with dropout 0.1"] == {f"model.{k}_dropout": 0.1 for k in ("embed", "resid", "attn")}
    batch = levers["without batches of 48"]
    assert batch["train.batch_size"] == 12 and batch["train.steps"] == 4 * record.train.steps
    assert batch["train.eval_every"] == batch["train.steps"]  # the final evaluation only, as the record
    longer = load_config("record_10min")  # a Mamba-2: of the speedrun's levers only the optimizer's apply
    assert list(ablation.levers(longer)) == [
        "without muon",
        "without wsd",
        "without 256-byte windows",
        "with dropout 0.1",
    ]
    assert ablation.levers(longer)["with dropout 0.1"] == {"model.embed_dropout": 0.1, "model.resid_dropout": 0.1}
    windows = ablation.levers(longer)["without 256-byte windows"]
    assert windows["model.seq_len"] == 64 and windows["train.steps"] == 4 * longer.train.steps
    sized = [n for n in ablation.levers(load_config("gpt2_speedrun")) if "windows" in n or "batches" in n]
    assert sized == ["without batches of 24"]  # the speedrun's 24 windows of 64 bytes
    assert list(ablation.levers(load_config("gpt2_tiny"))) == ["with dropout 0.1"]  # no speedrun lever to remove
    dropping = load_config("gpt2_tiny")
    dropping.model.resid_dropout = 0.2
    assert ablation.levers(dropping) == {
        "without dropout": {f"model.{k}_dropout": 0.0 for k in ("embed", "resid", "attn")}
    }
    assert ablation.levers(load_config("bigram")) == {}  # a family without dropout: no such lever


def test_an_ablation_of_some_levers_runs_those_alone_and_adds_their_rows_to_the_earlier_one(monkeypatch, tmp_path):
    from bench import ablation, run, tables

    calls = []

    def run_ours(path, seed, overrides=None, cache_dir=""):
        calls.append((seed, dict(overrides or {})))
        return {"seed": seed, "final_val_loss": 1.5, "wall_s": 100.0, "first_step_s": 5.0, "tokens_per_s": 9000.0,
                "steps": 320, "overrides": overrides or {}, "curve": []}  # fmt: skip

    monkeypatch.setattr(ablation, "run_ours", run_ours)
    now = {"none": {}, **ablation.levers(load_config("record_2min"))}
    drop = now["with dropout 0.1"]
    assert drop == {"model.embed_dropout": 0.1, "model.resid_dropout": 0.1}
    # An ablation written before (no config recorded): its record, Muon's row, a lever the record no
    # longer has (its schedule's, since the record changed it) and an earlier dropout row.
    old = lambda lever, seed: {
        "lever": lever,
        "seed": seed,
        "final_val_loss": 1.6,
        "wall_s": 90.0,
        "tokens_per_s": 1.0,
        "steps": 320,
    }
    stale = {"without wsd": {"train.schedule": "cosine"}}
    rows = [old("none", 0), old("none", 1), old("without muon", 0), old("without wsd", 0), old("with dropout 0.1", 0)]
    doc = {
        "ablation": {
            "record_2min": {"levers": now | stale, "rows": rows},
            "record_10min": {"levers": {"none": {}}, "rows": []},
        }
    }
    options = run.Options(load_config("gpt2_tiny"), only=("ablation",), out=str(tmp_path / "bench.json"),
                          config_dir=CONFIGS, ablation_levers=("with dropout 0.1",))  # fmt: skip
    options.check()
    section = run._ablation_section(options, lambda s: None, doc)
    assert calls == [(0, drop), (1, drop)]
    kept = [(r["lever"], r["seed"], r["final_val_loss"]) for r in section["record_2min"]["rows"]]
    assert kept == [
        ("none", 0, 1.6),
        ("none", 1, 1.6),
        ("without muon", 0, 1.6),
        *[("with dropout 0.1", s, 1.5) for s in (0, 1)],
    ]
    assert (
        list(section["record_2min"]["levers"]) == list(now)
        and section["record_10min"] == doc["ablation"]["record_10min"]
    )
    assert json.loads((tmp_path / "bench.json").read_text())["ablation"] == section  # kept after every run
    page = "\n".join(tables._record_ablations(section))
    row = "| with dropout 0.1 | model.embed_dropout=0.1, model.resid_dropout=0.1 | 1.5000 [1.5000–1.5000] (n=2) |"
    assert f"{row} -0.1000 | 100.0 s | 9,000 |" in page
    # A record whose config changed since its earlier ablation keeps none of its rows: the merge is the new run.
    changed = {"record_2min": {**doc["ablation"]["record_2min"], "config": {"name": "another"}}}
    fresh = ablation.bench_ablation(CONFIGS, ["record_2min"], 1, lambda s: None, only=("with dropout 0.1",))
    assert [r["lever"] for r in ablation.merged(changed, fresh)["record_2min"]["rows"]] == ["with dropout 0.1"]
    assert ablation.merged(changed, fresh)["record_2min"] == fresh["record_2min"]


def test_the_ablation_runs_each_lever_per_seed_from_cold_and_keeps_every_run(monkeypatch):
    from bench import ablation, tables

    calls, kept = [], []

    def run_ours(path, seed, overrides=None, cache_dir=""):
        calls.append((Path(path).name, seed, dict(overrides or {}), cache_dir))
        loss = 1.60 + 0.1 * ("train.optimizer" in (overrides or {})) + 0.01 * seed
        curve = [{"t_s": 150.0, "step": 340, "val_loss": loss}]
        return {"seed": seed, "final_val_loss": loss, "wall_s": 150.0, "first_step_s": 5.0, "tokens_per_s": 7000.0,
                "steps": 340, "overrides": overrides or {}, "curve": curve}  # fmt: skip

    monkeypatch.setattr(ablation, "run_ours", run_ours)
    out = ablation.bench_ablation(CONFIGS, ["record_2min"], 2, lambda s: None, kept.append)
    n = 1 + len(ablation.levers(load_config("record_2min")))
    assert len(calls) == 2 * n and len(kept) == 2 * n and [c[1] for c in calls] == [0] * n + [1] * n  # seed by seed
    assert all(c[3] == "" for c in calls) and calls[0][2] == {} and calls[1][2] == {"train.optimizer": "adamw"}
    rows = out["record_2min"]["rows"]
    assert [r["lever"] for r in rows[:2]] == ["none", "without muon"] and all("curve" not in r for r in rows)
    page = "\n".join(tables._record_ablations(out))
    assert "| record_2min | — | 1.6050 [1.6000–1.6100] (n=2) | +0.0000 | 150.0 s | 7,000 |" in page
    assert "record_2min as configured (340 steps)" in page
    assert "| without muon | train.optimizer=adamw | 1.7050 [1.7000–1.7100] (n=2) | +0.1000 | 150.0 s | 7,000 |" in page
    earlier = {"record_10min": {"levers": {"none": {}}, "rows": []}, "record_2min": {"levers": {}, "rows": []}}
    assert ablation.merged(earlier, out) == {"record_10min": earlier["record_10min"], "record_2min": out["record_2min"]}
    # An interrupted ablation (what `keep` wrote after its first runs): the levers not yet run are said to
    # be so, and a config whose own row is missing has no table (no Δ without a base).
    partial = earlier | {"record_2min": {"levers": out["record_2min"]["levers"], "rows": rows[:2]}}
    page = "\n".join(tables._record_ablations(partial))
    assert "| without muon | train.optimizer=adamw | 1.7000 (n=1) | +0.1000 | 150.0 s | 7,000 |" in page
    windows = [line for line in page.splitlines() if line.startswith("| without 256-byte windows | model.seq_len=64")]
    assert len(windows) == 1 and windows[0].endswith("| not run yet | | | |")
    assert "of record_10min" not in page and page.count("### Ablation") == 1
