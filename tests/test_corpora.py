"""Corpora of any size: many shards train, stop, resume to the same bits and score their test split;
the map keeps resident memory flat; each process reads only its own rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from bytelm import models
from bytelm.artifacts import param_pack, run_dir
from bytelm.data import corpus
from bytelm.errors import ConfigError, Stopped
from bytelm.training import split_eval, step
from bytelm.training.loop import train_and_evaluate
from conftest import REPO, mirror_env, tiny_config

SHARDS = 50


@pytest.fixture(scope="module")
def shards(tiny_shakespeare, tmp_path_factory):
    """The first 200 kB of Tiny Shakespeare as 50 files of 4 kB."""
    folder = tmp_path_factory.mktemp("shards")
    data = tiny_shakespeare.read_bytes()[: SHARDS * 4000]
    for i in range(SHARDS):
        (folder / f"part-{i:02d}.txt").write_bytes(data[i * 4000 : (i + 1) * 4000])
    return folder


def shard_config(folder, **overrides):
    """tiny_config on the shards: a 5% test part in every file, the whole validation split at the end."""
    base = dict(
        data__test_fraction=0.05, data__final_eval_windows=0, train__steps=4, train__checkpoint_every=2,
        train__eval_every=4, train__progress="lines", train__log_every=1,
    )  # fmt: skip
    return tiny_config(folder, **{**base, **overrides})


def _stop_at(step_line: str):
    """An `out` that sends this process SIGTERM when training prints `step_line`."""

    def out(line: str) -> None:
        if line.startswith(step_line):
            os.kill(os.getpid(), signal.SIGTERM)

    return out


def _leaves(workdir) -> dict:
    return {
        k: np.asarray(v).tobytes() for k, v in param_pack.flatten(param_pack.load_pack(workdir / "params.json")).items()
    }


def test_fifty_shards_train_stop_resume_to_the_same_bits_and_score_their_test_split(shards, tmp_path):
    whole = tmp_path / "whole"
    summary = train_and_evaluate(shard_config(shards), whole, out=lambda s: None)
    manifest = json.loads((whole / run_dir.CORPUS_FILE).read_text())
    assert len(manifest["files"]) == SHARDS and manifest["splits"]["test"] == SHARDS * 200

    stopped = tmp_path / "stopped"
    with pytest.raises(Stopped, match=r"stopped by SIGTERM after step [23]"):  # (3: already queued)
        train_and_evaluate(shard_config(shards), stopped, out=_stop_at("step      2/4"))
    train_and_evaluate(shard_config(shards), stopped, out=lambda s: None)
    assert _leaves(stopped) == _leaves(whole)  # every leaf, bit for bit

    # The whole-split validation of the log, again from launch.evaluate's library call; and the test split.
    val = split_eval.evaluate_run(whole, "val", out=lambda s: None)
    assert val["loss"] == summary["final_val_loss"] and val["windows"] == SHARDS * 25  # 400 bytes: 25 tiles each
    test = split_eval.evaluate_run(whole, "test", out=lambda s: None)
    assert test["bytes"] == SHARDS * 200 and np.isfinite(test["loss"]) and test["loss_stderr"] > 0
    assert json.loads((whole / "eval_test.json").read_text()) == test
    # Sliding windows score every byte once too, each with more context.
    slid = split_eval.evaluate_run(whole, "test", stride=4, out=lambda s: None)
    assert slid["tokens_scored"] == test["tokens_scored"] == SHARDS * 199
    assert json.loads((whole / "eval_test_stride4.json").read_text()) == slid
    with pytest.raises(ConfigError, match=r"--stride must lie in \(0, seq_len = 16\]"):
        split_eval.evaluate_run(whole, "test", stride=17, out=lambda s: None)
    # Any file, every byte of it (`launch.evaluate --file`), against a window-by-window forward pass.
    other = tmp_path / "other.txt"
    other.write_bytes(b"To be, or not to be: that is the question.\n" * 3)
    scored = split_eval.evaluate_run(whole, file=str(other), out=lambda s: None)
    assert (scored["split"], scored["bytes"], scored["tokens_scored"]) == ("file", 129, 128)
    assert scored["loss"] == pytest.approx(_tile_by_tile_loss(whole, other.read_bytes(), 16), rel=1e-5)
    assert json.loads((whole / "eval_file.json").read_text()) == scored


def _tile_by_tile_loss(workdir, data: bytes, seq_len: int) -> float:
    """Mean nats per byte of `data` over non-overlapping tiles of `seq_len` targets, one forward each."""
    config = run_dir.read_config(workdir)
    model = models.build(config.model)
    params = param_pack.load_pack(workdir / run_dir.PARAMS_FILE, models.abstract_variables(model))
    forward = jax.jit(model.apply)
    ids, total = np.frombuffer(data, np.uint8).astype(np.int64), 0.0
    for start in range(0, ids.size - 1, seq_len):
        x, y = ids[start : start + seq_len], ids[start + 1 : start + seq_len + 1]
        padded = np.zeros(seq_len, np.int64)
        padded[: x.size] = x
        logits = np.asarray(forward(params, np.eye(256, dtype=np.float32)[padded][None]), np.float64)[0, : y.size]
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        total -= logp[np.arange(y.size), y].sum()
    return total / (ids.size - 1)


def test_a_run_without_a_test_split_says_how_to_give_it_one(tiny_shakespeare, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny_config(tiny_shakespeare).to_dict()))
    with pytest.raises(ConfigError, match="the run's corpus has no test split: give it one .*data.test_fraction"):
        split_eval.evaluate_run(tmp_path, "test", out=lambda s: None)


def test_a_resumed_run_notices_a_shard_that_changed_and_writes_nothing(shards, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Stopped):
        train_and_evaluate(shard_config(shards), run, out=_stop_at("step      2/4"))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    shard = shards / "part-07.txt"
    original = shard.read_bytes()
    try:
        shard.write_bytes(original + b"more")
        with pytest.raises(
            corpus.CorpusError, match=f"corpus file {shard} has 4,004 bytes, 4,000 when this run started"
        ):
            train_and_evaluate(shard_config(shards), run, out=lambda s: None)
    finally:
        shard.write_bytes(original)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


class _Recording:
    """A split that records which windows are read from it."""

    def __init__(self, ids: np.ndarray):
        self.ids, self.read = ids, []

    @property
    def size(self) -> int:
        return self.ids.size

    def __getitem__(self, index: slice) -> np.ndarray:
        self.read.append(index.start)
        return self.ids[index]


def test_each_process_reads_only_the_windows_of_its_own_rows(monkeypatch):
    from bytelm.parallel import mesh

    ids = _Recording(np.arange(1000, dtype=np.uint8))
    starts = np.array([10, 200, 300, 400, 500, 600])
    # As process 1 of 3 sees it: rows 2 and 3 of a batch of 6 are on its devices.
    monkeypatch.setattr(mesh, "process_rows", lambda m, b: slice(2, 4))
    monkeypatch.setattr(mesh, "put_rows", lambda rows, m, b: rows)
    batch = step.batch_maker(ids, 16, 6, device_mesh=object())(starts)
    assert ids.read == [300, 400] and batch.x.shape == (2, 16, 256)


# The memory claim, in a child: a corpus of a few hundred MB, mapped, checked and drawn from, costs
# about what Tiny Shakespeare costs; resident memory does not grow with the steps.
_PEAK_RSS = r"""
import resource, sys
import numpy as np
from bytelm.config_base import data_config
from bytelm.data import batches, corpus
c = data_config()
c.file, c.check_cache_dir = sys.argv[1], ""
data = corpus.load(c, 64)
for step in range(300):
    batches.make_batch(data.train, batches.train_starts(data.train.size, 64, 32, step, 0, None), 64)
rss = lambda: int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rss())
"""


def test_a_large_corpus_costs_no_more_memory_than_a_small_one(tiny_shakespeare, tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:  # 400 MB of text, in the page cache as a just-written corpus is
        chunk = tiny_shakespeare.read_bytes()
        while f.tell() < 400e6:
            f.write(chunk)
    peaks = {}
    for name, path in (("small", tiny_shakespeare), ("big", big)):
        proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(path)], cwd=REPO, env=mirror_env(),
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        peaks[name] = [int(v) for v in proc.stdout.split()]  # kB: peak, and resident at the end
    print("peak and final RSS, kB:", peaks)
    assert peaks["big"][0] - peaks["small"][0] < 60_000, peaks  # 400 MB read whole would add 400,000
    assert peaks["big"][1] - peaks["small"][1] < 30_000, peaks
