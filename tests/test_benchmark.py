"""`launch.benchmark` end to end on shrunk settings, and the PyTorch peer against our GPT-2."""

import importlib.util
import json
import time

import numpy as np
import pytest

from conftest import CONFIGS, TINY_FLAGS, run_module


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
    assert (
        f"Measured: train {doc['machine']['date']}, pack {later['machine']['date']}."
        in (workspace / "B.md").read_text()
    )


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
    from bytelm.models.transformer import GPT2, GPT2Config

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
