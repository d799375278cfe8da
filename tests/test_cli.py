"""The entry points as a user runs them: real subprocesses in a temporary folder."""

import json
import shutil
from pathlib import Path

import pytest

from bytelm.data import tokenizer
from conftest import CONFIGS, import_transformers, mirror_env, rel_err, run_module

run = run_module


@pytest.fixture(scope="module")
def gpt2_tiny_run(workspace):
    """WORKSPACE §5's command as written, but 100 steps instead of 300 and 128 evaluation windows:
    enough to see gpt2_tiny learn, and to give the export tests a model whose greedy text is not
    one repeated byte. Returns (the run's folder, what training printed)."""
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
        env=mirror_env(optimized=True),
    )
    return workspace / "runs/gpt2_tiny", train


@pytest.mark.slow
def test_tutorial_command_learns_then_samples_the_same_text_twice(workspace, gpt2_tiny_run):
    # What is checked of the sampling (the same text twice, and the same as training's own sample)
    # depends on neither the step count nor the evaluation windows.
    _, train = gpt2_tiny_run
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
    # Compiled as training compiled its sample, so that the same bits give the same text.
    first, second = (run(flags, workspace, env=mirror_env(optimized=True)) for _ in range(2))
    assert first.stdout == second.stdout
    assert first.stdout.startswith("ROMEO:") and len(first.stdout.encode()) >= 220
    # The sample at the end of training used the same settings and the same weights.
    assert first.stdout.rstrip("\n") in train.stdout


def test_interactive_prompt_loop(workspace, small_run):
    """The loop as a user drives it (its exact transcript on known logits is tests/test_sampling.py's): a
    line is continued, `:show` prints that context escaped, `:clear` empties it."""
    proc = run(
        ["launch.sample", f"--checkpoint_dir={small_run}", "--interactive", "--generate=5", "--ascii_only"],
        workspace,
        input="ROMEO:\n:show\n:clear\n:show\n:q\n",
    )
    header, continued, shown, cleared, empty, end = proc.stdout.split("> ")  # input()'s prompt before each line
    assert header.startswith("interactive:") and end == ""
    assert continued.startswith("ROMEO:") and len(continued.encode()) == len("ROMEO:") + 5 + 1  # and "\n"
    assert shown == tokenizer.display(tokenizer.encode(continued[:-1])) + "\n"
    assert (cleared, empty) == ("(context cleared)\n", "(empty)\n")


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


def _recurrent_run(workspace, config: str, workdir: str) -> Path:
    """`config` itself (a recurrent model's parameters are the same at any window) trained 60 steps on
    windows of 32 bytes, through the same command as GPT-2; returns the run's folder."""
    run(
        [
            "launch.train",
            f"--config={CONFIGS}/{config}.py",
            f"--workdir={workdir}",
            "--config.train.steps=60",
            "--config.train.eval_every=30",
            "--config.model.seq_len=32",
            "--config.data.eval_windows=64",
            "--config.data.final_eval_windows=128",
            "--config.sample.generate=0",
        ],
        workspace,
        env=mirror_env(optimized=True),
    )
    return workspace / workdir


@pytest.fixture(scope="module")
def mamba_tiny_run(workspace):
    return _recurrent_run(workspace, "mamba_tiny", "runs/mamba")


@pytest.fixture(scope="module")
def mamba2_tiny_run(workspace):
    """mamba2_tiny: windows of 32 bytes are two of its chunks of 16."""
    return _recurrent_run(workspace, "mamba2_tiny", "runs/mamba2")


@pytest.mark.slow
def test_mamba2_learns_through_the_same_command(workspace, mamba2_tiny_run):
    evaluations = [e["val_loss"] for e in json.loads((mamba2_tiny_run / "train_log.json").read_text())["evaluations"]]
    assert evaluations[0] > 5.0 and evaluations[-1] < 3.0, evaluations  # (2.62 measured)


@pytest.mark.slow
def test_mamba_learns_and_samples_through_the_same_commands(workspace, mamba_tiny_run):
    log = json.loads((workspace / "runs/mamba/train_log.json").read_text())
    evaluations = [e["val_loss"] for e in log["evaluations"]]
    assert evaluations[0] > 5.0
    assert evaluations[-1] < 3.0, f"60 steps should bring mamba_tiny below 3.0 nats (2.61 measured), got {evaluations}"
    flags = ["launch.sample", "--checkpoint_dir=runs/mamba", "--prompt=ROMEO:", "--generate=300", "--seed=3"]
    first = run(flags, workspace)  # (the same text each time: the GPT-2 test above checks that of the command)
    assert first.stdout.startswith("ROMEO:")
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


# --- The export to Hugging Face transformers, checked against the runs trained above ---------------


def _bytelm_side(run_folder, corpus_path, windows: int, new_bytes: int):
    """bytelm's logits on the first `windows` of the evenly spread validation windows (and their ids),
    and its greedy continuation of "ROMEO:" with no repeat penalty, by the function launch.sample calls."""
    import jax
    import numpy as np

    from bytelm import models
    from bytelm.artifacts import param_pack, run_dir
    from bytelm.data import batches, corpus
    from bytelm.sampling.decoders import sample_text
    from bytelm.sampling.settings import SampleSettings

    config = run_dir.read_config(run_folder)
    config.data.file = str(corpus_path)
    data = corpus.load(config.data, 64)
    ids, _ = batches.windows(data.val, batches.eval_starts(data.val.size, 64, 64)[:windows], 64)
    model = models.build(config.model)
    variables = param_pack.load_pack(run_folder / run_dir.PARAMS_FILE)
    logits = np.asarray(jax.jit(model.apply)(variables, np.eye(256, dtype=np.float32)[ids[:, :-1]]))
    greedy = sample_text(model, variables, "ROMEO:", SampleSettings(generate=new_bytes, temperature=0.0))
    return logits, ids[:, :-1], greedy


@pytest.mark.slow
@pytest.mark.parametrize(
    "trained, architecture, new_bytes",
    [
        ("gpt2_tiny_run", "GPT2LMHeadModel", 58),
        ("mamba_tiny_run", "MambaForCausalLM", 100),  # past the 32-byte training window: no window
        ("mamba2_tiny_run", "Mamba2ForCausalLM", 200),
    ],
    ids=["gpt2_tiny", "mamba_tiny", "mamba2_tiny"],
)
def test_transformers_loads_the_export_and_agrees_with_bytelm(
    request, workspace, tmp_path, trained, architecture, new_bytes
):
    """A trained run's export, loaded by transformers alone: the right class, the same logits on three
    validation windows, a tokenizer whose ids are the UTF-8 bytes, and the same greedy bytes as bytelm's
    sampling at temperature 0 (GPT-2 up to its 64-byte window); bytelm samples the folder too.
    (`launch.export` itself, and its refusals, are tests/test_export.py's.)"""
    torch, transformers = import_transformers()
    from bytelm.data import tokenizer
    from bytelm.interop import export

    run_folder = request.getfixturevalue(trained)
    run_folder = run_folder[0] if isinstance(run_folder, tuple) else run_folder
    out = tmp_path / "export"
    export.export_run(run_folder, out)
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == architecture
    ours, ids, greedy = _bytelm_side(run_folder, workspace / "data/real/text/tiny_shakespeare.txt", 3, new_bytes)
    with torch.no_grad():
        theirs = model(torch.from_numpy(ids.astype("int64"))).logits.numpy()
    assert rel_err(theirs, ours) < 1e-4
    text = "ROMEO: héllo, wörld ✓ 日本\n\t"
    assert tok(text)["input_ids"] == list(text.encode("utf-8")) and tok.decode(list(text.encode("utf-8"))) == text
    prompt = tok("ROMEO:", return_tensors="pt").input_ids
    generated = model.generate(prompt, max_new_tokens=new_bytes, do_sample=False)[0].tolist()
    assert len(generated) == 6 + new_bytes and tokenizer.decode(generated[6:]) == greedy
    if architecture == "MambaForCausalLM":  # and the command reads the folder (GPT-2's: the same code path)
        flags = ["launch.sample", "--prompt=ROMEO:", f"--generate={new_bytes}", "--temperature=0"]
        assert run([*flags, f"--checkpoint_dir={out}"], workspace).stdout == "ROMEO:" + greedy + "\n"


def test_evaluate_scores_a_whole_split(workspace, small_run):
    # Its library call is test_corpora's business (the same loss as training's, splits, strides, errors).
    proc = run(["launch.evaluate", f"--checkpoint_dir={small_run}", "--split=val"], workspace)
    written = json.loads((workspace / small_run / "eval_val.json").read_text())
    assert written["split"] == "val" and written["bytes"] == 111_539 and written["windows"] == 1743
    assert f"loss {written['loss']:.4f} ± {written['loss_stderr']:.4f} nats" in proc.stdout
