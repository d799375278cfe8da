"""The entry points as a user runs them: real subprocesses in a temporary folder."""

import json
import shutil

import pytest

from conftest import CONFIGS, mirror_env, run_module

run = run_module


@pytest.mark.slow
def test_tutorial_command_learns_then_samples_the_same_text_twice(workspace):
    # WORKSPACE §5's command as written, but 100 steps instead of 300 and 128 evaluation windows: enough
    # to see gpt2_tiny learn (first and last evaluation), and what is checked of the sampling (the same
    # text twice, and the same as training's own sample) depends on neither.
    train = run(
        [
            "launch.train",
            f"--config={CONFIGS}/gpt2_tiny.py",
            "--config.train.steps=100",
            "--config.train.eval_every=50",
            "--config.data.eval_windows=128",
            "--config.data.final_eval_windows=128",
            "--config.sample.prompt=ROMEO:",
            "--config.sample.generate=220",
            "--config.sample.temperature=0.85",
            "--config.sample.top_k=24",
            "--config.sample.repeat_penalty=1.25",
            "--config.sample.repeat_window=24",
            "--config.sample.seed=11",
        ],
        workspace,
    )
    assert "probe before training" in train.stdout and "probe after training" in train.stdout
    assert "summary: 834,304 params, 100 steps" in train.stdout
    assert (workspace / "runs/gpt2_tiny/params.json").exists()
    log = json.loads((workspace / "runs/gpt2_tiny/train_log.json").read_text())
    first, last = log["evaluations"][0]["val_loss"], log["evaluations"][-1]["val_loss"]
    assert first > 5.0  # about ln(256) = 5.55 for an untrained byte model
    assert last < 2.8, f"100 steps should reach val loss < 2.8 (2.70 measured; 2.49 after 200), got {last:.3f}"
    assert log["summary"]["final_val_loss"] == last
    flags = [
        "launch.sample",
        "--checkpoint_dir=runs/gpt2_tiny",
        "--prompt=ROMEO:",
        "--generate=220",
        "--temperature=0.85",
        "--top_k=24",
        "--repeat_penalty=1.25",
        "--repeat_window=24",
        "--seed=11",
    ]
    first, second = run(flags, workspace), run(flags, workspace)
    assert first.stdout == second.stdout
    assert first.stdout.startswith("ROMEO:") and len(first.stdout.encode()) >= 220
    # The sample at the end of training used the same settings and the same weights.
    assert first.stdout.rstrip("\n") in train.stdout


@pytest.mark.slow
def test_tiny_runtime_check_runs_as_written(workspace):
    proc = run(
        [
            "launch.train",
            f"--config={CONFIGS}/gpt2_tiny.py",
            "--config.train.steps=1",
            "--config.data.windows=1",
            "--config.sample.generate=0",
            "--workdir=runs/check",
        ],
        workspace,
    )
    assert "summary: 834,304 params, 1 steps" in proc.stdout


def test_interactive_prompt_loop(workspace, small_run):
    proc = run(
        ["launch.sample", f"--checkpoint_dir={small_run}", "--interactive", "--generate=5"],
        workspace,
        input="ROMEO:\n:show\n:clear\n:show\n:q\n",
    )
    out = proc.stdout
    assert "ROMEO:" in out and "(context cleared)" in out and "(empty)" in out


def test_sampling_compiles_into_the_runs_compilation_cache(workspace, small_run, tmp_path):
    run_copy, cache = tmp_path / "run", tmp_path / "cache"
    shutil.copytree(workspace / small_run, run_copy)
    config = json.loads((run_copy / "config.json").read_text())
    config["runtime"]["compilation_cache_dir"] = str(cache)
    (run_copy / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in mirror_env().items() if not k.startswith("JAX_")}  # no session cache
    flags = ["launch.sample", f"--checkpoint_dir={run_copy}", "--prompt=ROMEO:", "--generate=20", "--seed=2"]
    first = run(flags, workspace, env=env)
    assert any(cache.iterdir()), "launch.sample wrote nothing to runtime.compilation_cache_dir"
    assert run(flags, workspace, env=env).stdout == first.stdout  # compiled or cached, the same bytes


@pytest.mark.slow
def test_mamba_learns_and_samples_through_the_same_commands(workspace):
    run(
        [
            "launch.train",
            f"--config={CONFIGS}/mamba_tiny.py",
            "--workdir=runs/mamba",
            "--config.train.steps=100",
            "--config.train.eval_every=50",
            "--config.model.d_model=64",
            "--config.model.num_layers=2",
            "--config.model.seq_len=64",
            "--config.data.eval_windows=64",
            "--config.data.final_eval_windows=128",
            "--config.sample.generate=0",
        ],
        workspace,
    )
    log = json.loads((workspace / "runs/mamba/train_log.json").read_text())
    evaluations = [e["val_loss"] for e in log["evaluations"]]
    assert evaluations[0] > 5.0
    assert evaluations[-1] < 3.0, f"100 steps should bring a small Mamba below 3.0 nats (2.57 here), got {evaluations}"
    flags = ["launch.sample", "--checkpoint_dir=runs/mamba", "--prompt=ROMEO:", "--generate=300", "--seed=3"]
    first, second = run(flags, workspace), run(flags, workspace)
    assert first.stdout == second.stdout and first.stdout.startswith("ROMEO:")
    assert len(first.stdout.encode("utf-8", "surrogateescape")) > 300  # longer than seq_len: no window


def test_fast_and_reference_decoding_print_the_same_text(workspace, small_run):
    flags = [
        "launch.sample",
        f"--checkpoint_dir={small_run}",
        "--generate=90",
        "--temperature=0.9",
        "--top_k=12",
        "--repeat_penalty=1.0",
        "--repeat_window=8",
        "--seed=4",
        "--num_samples=2",
    ]
    fast, reference = run([*flags, "--decode=fast"], workspace), run([*flags, "--decode=reference"], workspace)
    assert fast.stdout == reference.stdout and "--- sample 2 of 2 (seed 5) ---" in fast.stdout
