"""Every bad input in WORKSPACE.md §11, as a user meets it: a real subprocess, one `error:` line that
names the problem, exit status 2 for usage errors and 1 for runtime failures, no traceback, and
nothing the user had before is changed."""

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bytelm.artifacts import run_dir
from bytelm.errors import UsageError
from bytelm.sampling.settings import SampleSettings
from conftest import CONFIGS, FORK_THEN_EXEC, TINY_FLAGS, assert_one_line_error, mirror_env, run_module

TRAIN = ["launch.train", f"--config={CONFIGS}/gpt2_tiny.py", "--workdir=runs/err"]


def train_error(workspace, *args):
    return run_module([*TRAIN, *args], workspace, check=False)


# --- The corpus ---------------------------------------------------------------------------------


# A bad byte past the first eight 4 MiB chunks of the streamed UTF-8 check.
DEEP = 8 * (4 << 20) + 1234


@pytest.mark.parametrize(
    "content, parts",
    [
        (b"", ["is empty"]),
        (b"To be or not", ["has 12 bytes, fewer than seq_len + 1 = 65"]),
        (b"caf\xe9 " * 40, ["not valid UTF-8: first bad byte 0xe9 at offset 3", "--config.data.format=bytes"]),
        ("deep", [f"not valid UTF-8: first bad byte 0xff at offset {DEEP}"]),
        ("folder", ["holds no files"]),
    ],
    ids=["empty", "too-short", "not-utf8", "not-utf8-deep", "empty-folder"],  # the others: test_corpus.py
)
def test_bad_corpus(workspace, tmp_path, content, parts):
    path = tmp_path / "corpus.txt"
    if content == "folder":
        path.mkdir()
    elif content == "deep":
        with open(path, "wb") as f:
            f.write(b"a" * DEEP + b"\xff" + b"b" * 4096)
    else:
        path.write_bytes(content)
    assert_one_line_error(train_error(workspace, f"--config.data.file={path}"), 1, *parts)
    assert not (workspace / "runs/err").exists()  # nothing written


def test_missing_corpus_names_the_file_or_the_download_command(workspace):
    assert_one_line_error(train_error(workspace, "--config.data.file=/no/such/file.txt"), 1, "does not exist")
    proc = train_error(workspace, "--config.data.dir=nowhere")
    assert_one_line_error(proc, 1, "python -m launch.download_data --tiny_shakespeare")


# --- The config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, parts",
    [
        (
            ["--config.train.stepz=3"],
            ["unknown config field", "--config.train.stepz", "did you mean --config.train.steps?"],
        ),
        (["--config.train.steps=abc"], ["--config.train.steps=abc"]),
        (["--config.train.steps=1e3"], ["1e3"]),
        (["--config.model.name=lstm"], ["unknown model.name 'lstm'"]),
        (["--config.sample.temperature=-1"], ["temperature"]),
        (["--steps=3"], ["Unknown command line flag 'steps'"]),
        (["--config.train.lr_multiplier=2,1"], ["train.lr_multiplier='2,1'", "a gpt2 model has 1 stage"]),
    ],
    ids=[
        "unknown-field",
        "ill-typed",
        "float-for-int",
        "unknown-model",
        "bad-sample-setting",
        "unknown-flag",
        "lr-multiplier-per-stage",
    ],  # fmt: skip
)
def test_bad_config_overrides_are_usage_errors(workspace, args, parts):
    assert_one_line_error(train_error(workspace, *args), 2, *parts)


def test_unknown_config_file_is_a_usage_error(workspace):
    proc = run_module(["launch.train", "--config=configs/nope.py"], workspace, check=False)
    assert_one_line_error(proc, 2, "config file configs/nope.py does not exist")
    # An entry point's default config file, missing where it runs, is named the same way.
    proc = run_module(["launch.benchmark", "--only=pack"], workspace, check=False)
    assert_one_line_error(proc, 2, "config file configs/gpt2_tiny.py does not exist")
    # A config that loads another (record_2min loads record_10min's), copied without it.
    (workspace / "alone").mkdir(exist_ok=True)
    shutil.copy(f"{CONFIGS}/record_2min.py", workspace / "alone")
    proc = run_module(["launch.train", "--config=alone/record_2min.py"], workspace, check=False)
    assert_one_line_error(proc, 2, "cannot load config file alone/record_2min.py", "record_10min.py does not exist")


# --- The workdir --------------------------------------------------------------------------------


def test_workdir_that_is_a_file(workspace):
    (workspace / "afile").write_text("x")
    proc = run_module([*TRAIN[:2], "--workdir=afile"], workspace, check=False)
    assert_one_line_error(proc, 1, "is a file")
    assert (workspace / "afile").read_text() == "x"


def _without_root_override() -> None:
    """Drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so that a child run
    by root (as tests often are) meets file permissions like any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # linux/capability.h
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@FORK_THEN_EXEC
def test_read_only_workdir(workspace, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("mine")
    workdir.chmod(0o555)
    try:
        proc = run_module(
            [*TRAIN[:2], f"--workdir={workdir}"],
            workspace,
            check=False,
            preexec_fn=_without_root_override if os.geteuid() == 0 else None,
        )
    finally:
        workdir.chmod(0o755)
    assert_one_line_error(proc, 1, f"could not write {workdir}/config.json: Permission denied")
    assert sorted(p.name for p in workdir.iterdir()) == ["notes.txt"]  # nothing half-written


# --- The checkpoint dir and its pack --------------------------------------------------------------


@pytest.fixture
def broken(workspace, small_run, tmp_path):
    """A copy of a good run directory, for a test to break."""
    return Path(shutil.copytree(workspace / small_run, tmp_path / "broken"))


def sample_error(workspace, checkpoint_dir, *args):
    return run_module(["launch.sample", f"--checkpoint_dir={checkpoint_dir}", *args], workspace, check=False)


def test_missing_checkpoint_dir(workspace):
    assert_one_line_error(sample_error(workspace, "runs/none"), 1, "checkpoint dir runs/none does not exist")


def test_mark_chunks_on_a_model_that_does_not_chunk_is_refused_before_sampling(workspace, small_run, monkeypatch):
    """A GPT-2 run: the refusal comes before any byte is drawn (the sampler here fails if it is asked)."""
    from bytelm.sampling import console

    class NoSampling:
        def generate(self, *args, **kwargs):
            raise AssertionError("sampled before --mark_chunks was checked")

    monkeypatch.setattr(console, "make_sampler", lambda *args, **kwargs: NoSampling())
    run = workspace / small_run
    with pytest.raises(UsageError, match="--mark_chunks needs a model that chunks its bytes"):
        settings = SampleSettings(generate=100000)
        console.sample_run(run, run_dir.read_config(run), settings, b"RO", decode="fast", chunk=8, mark_chunks=True)


def test_missing_and_corrupt_params_json(workspace, broken):
    text = (broken / "params.json").read_text()
    (broken / "params.json").write_text(text[: len(text) // 2])
    assert_one_line_error(sample_error(workspace, broken), 1, "is not valid JSON", "corrupt parameter pack")
    (broken / "params.json").unlink()
    assert_one_line_error(sample_error(workspace, broken), 1, f"no parameter pack at {broken}/params.json")


def test_missing_and_corrupt_config_json(workspace, broken):
    (broken / "config.json").write_text('{"model": {"name": "gpt2", ')
    assert_one_line_error(sample_error(workspace, broken), 1, "config.json is not valid JSON")
    (broken / "config.json").unlink()
    assert_one_line_error(sample_error(workspace, broken), 1, "config.json is missing")


def test_shape_mismatched_pack(workspace, broken):
    """The run's config says two layers, its pack holds one: every missing leaf is listed."""
    config = json.loads((broken / "config.json").read_text())
    config["model"]["num_layers"] = 2
    (broken / "config.json").write_text(json.dumps(config))
    proc = sample_error(workspace, broken)
    assert_one_line_error(proc, 1, "the pack does not fit the model", "missing params/h_1/attn/qkv/kernel")


def test_resuming_with_a_different_config_lists_the_fields(workspace, broken):
    """`broken` is a finished 2-step run with its checkpoint: the same command with another lr."""
    args = [*TRAIN[:2], f"--workdir={broken}", "--config.train.steps=3", "--config.sample.generate=0", *TINY_FLAGS]
    proc = run_module([*args, "--config.train.lr=0.01"], workspace, check=False)
    assert_one_line_error(proc, 2, f"cannot resume {broken}: its config differs in train.lr: 0.001 → 0.01")
    proc = run_module([*args[:3], "--config.train.steps=2", *args[4:]], workspace, check=False)
    assert_one_line_error(proc, 1, "is already complete (checkpoint at step 2 of 2)")


# --- Sampling settings and the prompt -----------------------------------------------------------


@pytest.mark.parametrize(
    "args, parts",
    [
        (["--temperature=-0.5"], ["temperature must be a finite number >= 0"]),
        (["--temperature=nan"], ["temperature must be a finite number >= 0"]),
        (["--top_k=300"], ["top_k must lie in 0..256"]),
        (["--top_k=-1"], ["top_k must lie in 0..256"]),
        (["--repeat_penalty=-1"], ["repeat_penalty must be a finite number >= 0"]),
        (["--repeat_window=-2"], ["repeat_window must be >= 0"]),
        (["--generate=-3"], ["generate must be >= 0"]),
        (["--num_samples=0"], ["--num_samples and --stream_chunk must be at least 1"]),
        (["--stream_chunk=-4"], ["--num_samples and --stream_chunk must be at least 1"]),
        (["--decode=slow"], ["flag --decode=slow: value should be one of <fast|reference>"]),
        (["--prompt=", "--generate=5"], ["the prompt is empty"]),
        (["--top_k=many"], ["--top_k", "many"]),
    ],
)
def test_out_of_range_sampling_flags(workspace, small_run, args, parts):
    assert_one_line_error(sample_error(workspace, small_run, *args), 2, *parts)


# Reports, as the process exits, whether JAX was ever imported; the module runs as under `python -m`.
_RUN_AND_REPORT_JAX = (
    "import atexit, runpy, sys; "
    "atexit.register(lambda: sys.stderr.write(f'jax imported: {\"jax\" in sys.modules}\\n')); "
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
)


@pytest.mark.parametrize(
    "args, code, part",
    [
        (["launch.train", f"--config={CONFIGS}/gpt2_tiny.py", "--config.train.stepz=1"], 2, "unknown config field"),
        (["launch.train", "--workdirr=runs/x"], 2, "Unknown command line flag 'workdirr'"),
        (["launch.sample", "--checkpoint_dir=runs/none"], 1, "checkpoint dir runs/none does not exist"),
        (["launch.sample", "--checkpoint_dir=runs/small", "--top_k=300"], 2, "top_k must lie in 0..256"),
        (["launch.sample", "--checkpoint_dir=runs/small", "--mark_chunks", "--interactive"], 2, "drop one of them"),
    ],
    ids=["train-override", "train-flag", "sample-dir", "sample-setting", "sample-mark-interactive"],
)
def test_usage_errors_are_found_before_jax_is_imported(workspace, small_run, args, code, part):
    # A typo should cost a fraction of a second, not JAX's ~1.5 s import.
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_AND_REPORT_JAX, *args],
        cwd=workspace,
        env=mirror_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == code, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and part in errors[0], proc.stderr
    assert "jax imported: False" in proc.stderr.splitlines(), proc.stderr


def test_prompt_that_is_not_utf8(workspace, small_run):
    proc = subprocess.run(
        [sys.executable, "-m", "launch.sample", f"--checkpoint_dir={small_run}", b"--prompt=caf\xe9"],
        cwd=workspace,
        env=mirror_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_line_error(proc, 2, "the prompt is not valid UTF-8")


def _as_from_a_terminal() -> None:
    # A shell gives its foreground job SIGINT unblocked and at its default; a child of a test worker
    # inherits whatever mask and disposition the worker's libraries left (seen: the signal never came).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@FORK_THEN_EXEC
def test_ctrl_c_during_sampling_exits_quietly(workspace, small_run):
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch.sample", f"--checkpoint_dir={small_run}", "--generate=100000"],
        cwd=workspace,
        env=mirror_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_as_from_a_terminal,
    )
    try:
        first = proc.stdout.read(8)  # sampling has started once text arrives
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert first and proc.returncode == 130, (proc.returncode, err)
    assert err.decode().strip() == "interrupted"  # no traceback, no error line
    assert len(first + out) < 100000


# --- Downloads ----------------------------------------------------------------------------------


def test_download_errors(workspace, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("not shakespeare")
    proc = run_module(
        ["launch.download_data", "--tiny_shakespeare", f"--source={bad}", f"--data_dir={tmp_path}/d"],
        workspace,
        check=False,
    )
    assert_one_line_error(proc, 1, "is not the tiny_shakespeare corpus")
    assert not (tmp_path / "d" / "real" / "text" / "tiny_shakespeare.txt").exists()
    assert_one_line_error(run_module(["launch.download_data"], workspace, check=False), 2, "--tiny_shakespeare")
