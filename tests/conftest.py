"""Shared fixtures: the repository paths, the mirrored corpus and tiny configs that train in seconds."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_MIRROR = REPO.parent / "shared" / "data"
CONFIGS = REPO / "configs"


# One persistent compilation cache per test session, shared with the subprocesses the tests start
# (they inherit the environment): the same tiny programs are compiled by many runs, and compiling is
# most of what a tiny run costs on this CPU. Set before any test imports JAX, which reads it then.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="bytelm-test-jax-cache-")
    # Removed by the process that made it (pytest itself, or xdist's controller) when the session ends.
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
    # Cache every program, not only those that take over a second to compile: the tiny test programs
    # are each compiled by several runs.
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


# Tests compile far more than they run, so they ask XLA's CPU backend to compile fast: optimisation
# level 0 (about two thirds of the compile time when it came in, 59e1b54) and XLA's older fusion code
# generation (about half of what was left, when it came in: its commit has the measurement). The
# programs then run about 3x slower, which only the few long training runs feel: those ask for
# `mirror_env(optimized=True)`. Set either flag in XLA_FLAGS yourself to choose it.
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def _jax_accepts(flag: str) -> bool:
    """Whether this jaxlib's XLA knows `flag` (XLA aborts on an unknown flag: a later JAX may drop one)."""
    probe = "import jax; jax.devices()"
    env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode == 0


if "BYTELM_TEST_XLA_FLAGS" not in os.environ:  # chosen once, by the process that starts the session
    _set = os.environ.get("XLA_FLAGS", "")
    _added = [f for f in FAST_COMPILE_FLAGS if f.split("=")[0] not in _set and _jax_accepts(f)]
    os.environ["BYTELM_TEST_XLA_FLAGS"] = " ".join(_added)  # what `mirror_env(optimized=True)` takes out
    os.environ["XLA_FLAGS"] = " ".join([_set, *_added]).strip()


def load_config(name: str):
    """`configs/NAME.py`'s config, loaded by path as `--config=` loads it."""
    from bytelm.config_base import load_config_file

    return load_config_file(CONFIGS / f"{name}.py")


# Test inputs and comparisons in NumPy: run eagerly in JAX, each op would be a compiled program of its
# own, and compiling is most of what these tests cost. Only the programs under test are JAX's.
def normal(seed: int, shape) -> np.ndarray:
    """Standard-normal float32 values `shape`, from a NumPy generator seeded with `seed`."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def byte_ids(seed: int, shape) -> np.ndarray:
    """Random byte ids (int32) `shape`, from a NumPy generator seeded with `seed`."""
    return np.random.default_rng(seed).integers(0, 256, size=shape).astype(np.int32)


def one_hot(ids) -> np.ndarray:
    """Float32 one-hot `[..., 256]` of `ids`, on the host."""
    return np.eye(256, dtype=np.float32)[np.asarray(ids)]


def rel_err(a, b) -> float:
    """max |a − b| / max |b|, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def import_transformers():
    """torch and transformers, for the export's parity tests. CI installs the optional extra `hf` and
    sets BYTELM_REQUIRE_HF=1, so there a missing one fails; elsewhere those tests skip, saying why."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never ask the Hub
    try:
        import torch
        import transformers
    except ImportError as e:
        if os.environ.get("BYTELM_REQUIRE_HF") == "1":
            pytest.fail(f"BYTELM_REQUIRE_HF=1 but {e.name} is missing (pip install -e '.[hf]')")
        pytest.skip(f"{e.name} is not installed: the optional extra `hf` (pip install -e '.[hf]') runs these tests")
    return torch, transformers


def mirror_env(optimized: bool = False) -> dict[str, str]:
    """The environment for subprocesses: the local mirror when it exists (CI and offline machines);
    `optimized` drops the tests' fast-compile flags (for runs long enough to feel them)."""
    env = dict(os.environ)
    if optimized:
        flags = env.get("XLA_FLAGS", "").split()
        env["XLA_FLAGS"] = " ".join(f for f in flags if f not in env["BYTELM_TEST_XLA_FLAGS"].split())
    if SHARED_MIRROR.is_dir() and not env.get("BYTELM_DATA_MIRROR"):
        env["BYTELM_DATA_MIRROR"] = str(SHARED_MIRROR)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def tiny_shakespeare(tmp_path_factory) -> Path:
    """Tiny Shakespeare fetched (from the mirror when there is one) into a session folder."""
    from bytelm.data import download

    data_dir = tmp_path_factory.mktemp("data")
    path, _ = download.fetch("tiny_shakespeare", data_dir, env=mirror_env())
    return path


def tiny_config(corpus_file: Path | str, **overrides):
    """gpt2_tiny shrunk to train in seconds: 2 layers, width 32, seq 16, batch 4."""
    config = load_config("gpt2_tiny")
    config.data.file = str(corpus_file)
    config.model.num_layers = 2
    config.model.num_heads = 2
    config.model.head_dim = 16
    config.model.ffn_hidden = 64
    config.model.seq_len = 16
    config.train.batch_size = 4
    config.train.steps = 5
    config.train.warmup_steps = 2
    config.train.eval_every = 5
    config.train.eval_batch_size = 8
    config.data.eval_windows = 8
    config.data.final_eval_windows = 8
    config.train.progress = "none"
    config.sample.generate = 0
    for key, value in overrides.items():
        section, field = key.split("__")
        config[section][field] = value
    return config


# --- Entry points as a user runs them: real subprocesses in a temporary folder. ---------------------

# Flags that shrink gpt2_tiny's CLI runs to seconds while keeping its data and sample settings.
TINY_FLAGS = [
    "--config.model.num_layers=1",
    "--config.model.head_dim=8",
    "--config.model.ffn_hidden=32",
    "--config.data.eval_windows=4",
    "--config.data.final_eval_windows=4",
    "--config.train.eval_batch_size=4",
]


# `preexec_fn` makes subprocess fork. The children these tests fork only set a signal, a limit or a
# capability and then exec, so the fork-with-threads hazard that JAX warns about cannot bite.
FORK_THEN_EXEC = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")


def run_module(args, cwd, input=None, check=True, timeout=300, **popen):
    """`python -m args...` in `cwd` with the mirror environment; raises with its output if it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=popen.pop("env", None) or mirror_env(),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args[0]} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_one_line_error(proc, code: int, *parts: str) -> None:
    """Exit status `code`, exactly one `error:` line on stderr holding every part, no traceback."""
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
    proc = run_module(["launch.download_data", "--tiny_shakespeare"], cwd)
    assert "fetched and verified" in proc.stdout
    again = run_module(["launch.download_data", "--tiny_shakespeare"], cwd)
    assert "nothing to do" in again.stdout
    return cwd


@pytest.fixture(scope="module")
def small_run(workspace) -> str:
    """A 2-step run of a one-layer gpt2_tiny in the workspace: something to sample from."""
    run_module(
        [
            "launch.train",
            f"--config={CONFIGS}/gpt2_tiny.py",
            "--workdir=runs/small",
            "--config.train.steps=2",
            "--config.sample.generate=0",
            *TINY_FLAGS,
        ],
        workspace,
    )
    return "runs/small"


@pytest.fixture(autouse=True)
def _signal_state_is_left_as_found(request):
    """Warns when a test (or a library it calls) leaves SIGINT blocked or re-routed in the worker:
    every later child process would inherit it, and Ctrl-C tests would hang."""
    import signal
    import warnings

    before = (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))
    yield
    after = (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))
    if after != before:
        warnings.warn(
            f"{request.node.nodeid} changed the SIGINT handler or signal mask: {before} -> {after}", stacklevel=1
        )


# The slowest files first (worker seconds under `make test`, measured with --durations=0): with
# `--dist loadfile --no-loadscope-reorder` a worker takes whole files in this order, so a slow file
# left for last cannot keep one worker busy while the other has nothing to do. (Without the flag,
# xdist orders files by their number of tests, and test_cli.py, whose few tests are nearly all long,
# came last.)
_SLOW_FILES_FIRST = (
    "test_cli.py",  # 139 s
    "test_hierarchical.py",  # 76
    "test_checkpoints.py",  # 69
    "test_bad_input.py",  # 48
    "test_fast_sampling.py",  # 46
    "test_mesh.py",  # 42
    "test_benchmark.py",  # 33
    "test_transformer.py",  # 30
    "test_train.py",  # 29
    "test_report.py",  # 22
    "test_mamba2.py",  # 18
    "test_export.py",  # 18
    "test_corpora.py",  # 18
    "test_mamba.py",  # 17
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(_SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise
