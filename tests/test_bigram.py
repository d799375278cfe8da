"""The byte bigram, a family that needs nothing outside its own subpackage and one registry line: its
function, then everything generic (train, resume, pack, sample fast = reference, shapes, the report
page, launch.evaluate) on it as on the other families."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest

from bytelm import models
from bytelm.artifacts import param_pack, run_dir
from bytelm.reporting import report, shapes
from bytelm.sampling.decoders import make_sampler
from bytelm.sampling.settings import SampleSettings
from bytelm.training import split_eval
from bytelm.training.loop import train_and_evaluate
from conftest import byte_ids, load_config, one_hot, run_module


def test_the_logits_of_each_position_are_the_table_row_of_its_byte():
    model = models.build(load_config("bigram").model)
    variables = models.init_variables(model, jax.random.key(0))
    assert jax.tree_util.tree_map(np.shape, variables) == {"params": {"table": (256, 256)}}
    table = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    ids = byte_ids(1, (2, 9))
    logits = jax.jit(model.apply)({"params": {"table": table}}, one_hot(ids))
    np.testing.assert_array_equal(logits, table[ids])
    start = jax.jit(model.apply)(variables, one_hot(ids))  # zero init: uniform, ln 256 nats
    np.testing.assert_array_equal(start, 0.0)


def _config(corpus, steps: int):
    config = load_config("bigram")
    config.data.file = str(corpus)
    config.train.steps, config.train.warmup_steps, config.train.eval_every = steps, 2, 4
    config.train.checkpoint_every, config.train.progress = 4, "none"
    config.data.eval_windows = config.data.final_eval_windows = 16
    config.sample.generate = 0
    return config


@pytest.fixture(scope="module")
def bigram_run(tmp_path_factory, tiny_shakespeare):
    """8 steps straight (checkpoints at 4 and 8); then the same run resumed from its checkpoint at 4."""
    folder = tmp_path_factory.mktemp("bigram")
    train_and_evaluate(_config(tiny_shakespeare, 8), folder / "straight", out=lambda s: None)
    shutil.copytree(folder / "straight", folder / "run")
    shutil.rmtree(folder / "run" / run_dir.CHECKPOINT_DIR / "8")  # as if stopped after step 4's checkpoint
    summary = train_and_evaluate(_config(tiny_shakespeare, 8), folder / "run", out=lambda s: None)
    return folder, summary


def test_a_bigram_run_resumes_to_the_bits_of_a_straight_run(bigram_run):
    folder, summary = bigram_run
    assert summary["resumed_from_step"] == 4 and summary["final_val_loss"] < 5.5  # from ln 256 = 5.545
    model = models.build(load_config("bigram").model)
    packs = [
        param_pack.load_pack(folder / r / run_dir.PARAMS_FILE, models.abstract_variables(model))
        for r in ("run", "straight")
    ]
    np.testing.assert_array_equal(packs[0]["params"]["table"], packs[1]["params"]["table"])
    log = json.loads((folder / "run" / run_dir.LOG_FILE).read_text())
    assert [r["step"] for r in log["records"]] == list(range(1, 9))


def test_a_trained_bigram_samples_the_same_bytes_fast_and_by_reference(bigram_run):
    folder, _ = bigram_run
    model = models.build(load_config("bigram").model)
    variables = param_pack.load_pack(folder / "run" / run_dir.PARAMS_FILE, models.abstract_variables(model))
    settings = SampleSettings(generate=80, temperature=0.9, top_k=30, repeat_penalty=0.5, repeat_window=8, seed=2)
    reference = make_sampler(model, variables, "reference").continue_ids(list(b"ROMEO:"), settings)
    assert make_sampler(model, variables, "fast", 16).continue_ids(list(b"ROMEO:"), settings) == reference


def test_a_bigram_run_has_its_shapes_report_and_whole_split_evaluation(bigram_run):
    folder, summary = bigram_run
    table = shapes.format_tables(load_config("bigram").model, 2)
    assert "params/table" in table and "65,536" in table and "Bigram" in table
    text = report.write_report(folder / "run")
    assert "report.html" in text and "params/table" in (folder / "run" / run_dir.REPORT_FILE).read_text()
    result = split_eval.evaluate_run(folder / "run", "val", out=lambda s: None)
    assert result["tokens_scored"] == result["bytes"] - 1 and 2.0 < result["loss"] < summary["final_val_loss"] + 0.2


def test_launch_export_refuses_the_bigram_in_one_line(bigram_run):
    folder, _ = bigram_run
    proc = run_module(
        ["launch.export", f"--checkpoint_dir={folder / 'run'}", f"--out={folder / 'hf'}"], folder, check=False
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: model.name='bigram' has no transformers counterpart")
    assert not (folder / "hf").exists()
