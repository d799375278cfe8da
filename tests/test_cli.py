"""The entry points as a user runs them: real subprocesses in a temporary folder."""

import subprocess
import sys

import pytest

from conftest import CONFIGS, mirror_env

TINY = [
    "--config.model.num_layers=1",
    "--config.model.head_dim=8",
    "--config.model.ffn_hidden=32",
    "--config.data.eval_windows=4",
    "--config.data.final_eval_windows=4",
    "--config.train.eval_batch_size=4",
]


def run(args, cwd, input=None, check=True, timeout=300):
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=mirror_env(),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args[0]} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_one_line_error(proc, code, *parts):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for part in parts:
        assert part in errors[0], errors[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A fresh folder with Tiny Shakespeare fetched through the mirror, as a user would."""
    cwd = tmp_path_factory.mktemp("ws")
    proc = run(["launch.download_data", "--tiny_shakespeare"], cwd)
    assert "fetched and verified" in proc.stdout
    again = run(["launch.download_data", "--tiny_shakespeare"], cwd)
    assert "nothing to do" in again.stdout
    return cwd


@pytest.mark.slow
def test_tutorial_command_then_sample_twice_gives_the_same_text(workspace):
    train = run(
        [
            "launch.train",
            f"--config={CONFIGS}/gpt2_tiny.py",
            "--config.train.steps=300",
            "--config.data.windows=32",
            "--config.train.lr=0.001",
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
    assert "summary: 834,304 params, 300 steps" in train.stdout
    assert (workspace / "runs/gpt2_tiny/params.json").exists()
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


@pytest.fixture(scope="module")
def small_run(workspace):
    run(
        [
            "launch.train",
            f"--config={CONFIGS}/gpt2_tiny.py",
            "--workdir=runs/small",
            "--config.train.steps=2",
            "--config.sample.generate=0",
            *TINY,
        ],
        workspace,
    )
    return "runs/small"


def test_interactive_prompt_loop(workspace, small_run):
    proc = run(
        ["launch.sample", f"--checkpoint_dir={small_run}", "--interactive", "--generate=5"],
        workspace,
        input="ROMEO:\n:show\n:clear\n:show\n:q\n",
    )
    out = proc.stdout
    assert "ROMEO:" in out and "(context cleared)" in out and "(empty)" in out


@pytest.mark.parametrize(
    "args, code, parts",
    [
        (["--config.train.stepz=3"], 2, ["unknown config field", "--config.train.stepz", "steps"]),
        (["--config.train.steps=abc"], 2, ["--config.train.steps=abc"]),
        (["--config.train.steps=1e3"], 2, ["1e3"]),
        (["--config.data.file=/no/such/file.txt"], 1, ["does not exist"]),
        (["--config.data.dir=nowhere"], 1, ["python -m launch.download_data --tiny_shakespeare"]),
        (["--config.sample.temperature=-1"], 2, ["temperature"]),
    ],
)
def test_train_usage_and_input_errors_are_one_line(workspace, args, code, parts):
    proc = run(
        ["launch.train", f"--config={CONFIGS}/gpt2_tiny.py", "--workdir=runs/err", *args], workspace, check=False
    )
    assert_one_line_error(proc, code, *parts)


def test_unknown_config_file_is_a_usage_error(workspace):
    proc = run(["launch.train", "--config=configs/nope.py"], workspace, check=False)
    assert_one_line_error(proc, 2, "nope.py")


def test_workdir_that_is_a_file(workspace):
    (workspace / "afile").write_text("x")
    proc = run(["launch.train", f"--config={CONFIGS}/gpt2_tiny.py", "--workdir=afile"], workspace, check=False)
    assert_one_line_error(proc, 1, "is a file")


@pytest.mark.parametrize(
    "args, code, parts",
    [
        (["--checkpoint_dir=runs/none"], 1, ["does not exist"]),
        (["--temperature=-0.5"], 2, ["temperature"]),
        (["--top_k=300"], 2, ["top_k"]),
        (["--repeat_penalty=-1"], 2, ["repeat_penalty"]),
        (["--generate=-3"], 2, ["generate"]),
        (["--prompt=", "--generate=5"], 2, ["prompt is empty"]),
    ],
)
def test_sample_errors_are_one_line(workspace, small_run, args, code, parts):
    proc = run(["launch.sample", f"--checkpoint_dir={small_run}", *args], workspace, check=False)
    assert_one_line_error(proc, code, *parts)


def test_sample_refuses_a_corrupt_pack_and_a_missing_config(workspace, small_run, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((workspace / small_run / "config.json").read_text())
    (broken / "params.json").write_text('{"format": "bytelm.param_pack", "version": 1, "model": {}, "leav')
    assert_one_line_error(
        run(["launch.sample", f"--checkpoint_dir={broken}"], workspace, check=False), 1, "not valid JSON"
    )
    (broken / "config.json").unlink()
    assert_one_line_error(
        run(["launch.sample", f"--checkpoint_dir={broken}"], workspace, check=False), 1, "config.json is missing"
    )


def test_download_errors(workspace, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("not shakespeare")
    proc = run(
        ["launch.download_data", "--tiny_shakespeare", f"--source={bad}", f"--data_dir={tmp_path}/d"],
        workspace,
        check=False,
    )
    assert_one_line_error(proc, 1, "is not the tiny_shakespeare corpus")
    assert_one_line_error(run(["launch.download_data"], workspace, check=False), 2, "--tiny_shakespeare")


@pytest.mark.slow
def test_mamba_trains_and_samples_through_the_same_commands(workspace):
    run(
        [
            "launch.train",
            f"--config={CONFIGS}/mamba_tiny.py",
            "--workdir=runs/mamba",
            "--config.train.steps=3",
            "--config.model.d_model=32",
            "--config.model.num_layers=1",
            "--config.model.seq_len=32",
            "--config.data.eval_windows=4",
            "--config.data.final_eval_windows=4",
            "--config.sample.generate=0",
        ],
        workspace,
    )
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
