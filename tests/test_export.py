"""`launch.export` without transformers: the folder it writes, export → import → pack bit for bit, the
weights read back for training, and every way an export can be refused. The parity with transformers
itself (logits, greedy bytes, the tokenizer) is in test_cli.py, on trained runs."""

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest
from safetensors import safe_open

from bytelm import models
from bytelm.artifacts import param_pack, run_dir
from bytelm.errors import BytelmError
from bytelm.interop import byte_tokenizer, export, huggingface
from bytelm.training.loop import initial_params, train_and_evaluate
from conftest import CONFIGS, assert_one_line_error, load_config, run_module, tiny_config


def _run_folder(tmp_path, name: str, **model):
    """A run folder (config.json + params.json) of the config `name` at its initialisation, sized by
    `model` overrides: what export reads, without training."""
    config = load_config(name)
    for k, v in model.items():
        config.model[k] = v
    folder = tmp_path / name
    folder.mkdir()
    run_dir.write_config(folder, config)
    variables = jax.device_get(models.init_variables(models.build(config.model), jax.random.key(3)))
    param_pack.save_pack(folder / run_dir.PARAMS_FILE, variables, config.model.to_dict())
    return folder, config


FAMILIES = {
    "gpt2": ("gpt2_tiny", {"num_layers": 2}),
    "mamba": ("mamba_tiny", {"num_layers": 2, "d_model": 32}),
    "mamba2": ("mamba2_tiny", {"num_layers": 2, "d_model": 32, "headdim": 16, "ngroups": 2}),
}


@pytest.fixture(params=sorted(FAMILIES), scope="module")
def exported(request, tmp_path_factory):
    name, sizes = FAMILIES[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    folder, config = _run_folder(tmp, name, **sizes)
    out = tmp / "export"
    written = export.export_run(folder, out)
    return folder, config, out, written


def test_export_then_import_gives_every_leaf_and_the_pack_bit_for_bit(exported, tmp_path):
    folder, config, out, _ = exported
    expected = models.abstract_variables(models.build(config.model))
    original = param_pack.flatten(param_pack.load_pack(folder / run_dir.PARAMS_FILE))
    back = param_pack.flatten(export.load_export(out, expected))
    assert back.keys() == original.keys()
    assert all(back[k].dtype == original[k].dtype and back[k].tobytes() == original[k].tobytes() for k in back)
    param_pack.save_pack(tmp_path / "again.json", param_pack.unflatten(back), config.model.to_dict())
    leaves = lambda path: [(r["path"], r["sha256"]) for r in _pack_leaves(path)]
    assert leaves(tmp_path / "again.json") == leaves(folder / run_dir.PARAMS_FILE)


def _pack_leaves(path) -> list[dict]:
    return [{k: v for k, v in leaf.items() if k != "data"} for leaf in json.loads(path.read_text())["leaves"]]


def test_the_folder_holds_what_transformers_reads(exported):
    _, config, out, written = exported
    assert written == sorted(
        [
            "README.md",
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
    )
    hf = json.loads((out / "config.json").read_text())
    assert hf["vocab_size"] == 256 and hf["tie_word_embeddings"] and hf["bytelm_config"] == config.to_dict()
    with safe_open(out / "model.safetensors", "np") as f:
        assert f.metadata() == {"format": "pt"}
        names = set(f.keys())
    assert not any("lm_head" in n for n in names)  # the tied head is the embedding, written once
    if config.model.name == "gpt2":
        assert hf["architectures"] == ["GPT2LMHeadModel"] and hf["n_inner"] == 512 and hf["n_positions"] == 64
        assert hf["activation_function"] == "gelu_new" and "transformer.h.1.attn.c_attn.weight" in names
    elif config.model.name == "mamba":
        assert hf["architectures"] == ["MambaForCausalLM"] and hf["time_step_rank"] == 2 and not hf["use_bias"]
        with safe_open(out / "model.safetensors", "np") as f:
            assert f.get_tensor("backbone.layers.0.mixer.conv1d.weight").shape == (64, 1, 4)  # [E, 1, K]
            assert f.get_tensor("backbone.layers.0.mixer.x_proj.weight").shape == (2 + 2 * 16, 64)  # rows: Δ, B, C
    else:  # transformers' defaults are Mamba-Codestral's: every size is written out
        assert hf["architectures"] == ["Mamba2ForCausalLM"] and hf["tie_word_embeddings"] is True
        sizes = {k: hf[k] for k in ("num_heads", "head_dim", "n_groups", "state_size", "expand", "hidden_size")}
        assert sizes == {
            "num_heads": 4,
            "head_dim": 16,
            "n_groups": 2,
            "state_size": 16,
            "expand": 2,
            "hidden_size": 32,
        }
        with safe_open(out / "model.safetensors", "np") as f:  # in_proj's rows: z, x, B, C, Δ; the conv over x, B, C
            assert f.get_tensor("backbone.layers.0.mixer.in_proj.weight").shape == (2 * 64 + 2 * 2 * 16 + 4, 32)
            assert f.get_tensor("backbone.layers.0.mixer.conv1d.weight").shape == (64 + 2 * 2 * 16, 1, 4)
    vocab = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(256)) and vocab["A"] == 65 and vocab["Ġ"] == 32  # id = byte
    assert len(byte_tokenizer.byte_to_char()) == len(set(byte_tokenizer.byte_to_char().values())) == 256
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation == {"max_new_tokens": 220, "do_sample": True, "temperature": 0.85, "top_k": 24}
    card = (out / "README.md").read_text()
    assert "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed" in card and "from_pretrained" in card
    assert oct(os.stat(out).st_mode & 0o777) != oct(0o700)  # a folder to share, not a private temp dir


def test_greedy_settings_map_to_greedy_search():
    assert huggingface.generation_config({"generate": 58, "temperature": 0.0, "top_k": 24}) == {
        "max_new_tokens": 58,
        "do_sample": False,
    }
    assert huggingface.generation_config({"generate": 0, "temperature": 1.0, "top_k": 1})["do_sample"] is False


def test_training_starts_from_an_export(exported):
    """`--config.train.init_params` takes an export folder as it takes a pack: the same weights."""
    folder, config, out, _ = exported
    config = ml_collections.ConfigDict(config.to_dict())  # (the fixture's is shared)
    config.train.init_params = str(out)
    model = models.build(config.model)
    from_export = param_pack.flatten(jax.device_get(initial_params(config, model, jax.random.key(0))))
    original = param_pack.flatten(param_pack.load_pack(folder / run_dir.PARAMS_FILE))
    assert all(np.asarray(from_export[k]).tobytes() == original[k].tobytes() for k in original)
    # An export of another model is refused with the pack's own list of what does not fit.
    other = load_config("gpt2_tiny" if config.model.name == "mamba" else "mamba_tiny")
    other.train.init_params = str(out)
    with pytest.raises(param_pack.ParamPackError, match="does not fit the model"):
        initial_params(other, models.build(other.model), jax.random.key(0))


def test_bad_exports_are_one_line_errors_and_leave_everything_as_it_was(workspace, tmp_path, monkeypatch):
    folder, _ = _run_folder(tmp_path, "gpt2_tiny", num_layers=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    cmd = ["launch.export", f"--checkpoint_dir={folder}", f"--out={out}"]
    assert_one_line_error(run_module(cmd, workspace, check=False), 2, f"{out} already exists: pass --overwrite")
    config = json.loads((folder / "config.json").read_text())
    config["model"]["positions"] = "rope"  # an option transformers' GPT2LMHeadModel has no counterpart for
    (folder / "config.json").write_text(json.dumps(config))
    proc = run_module([*cmd, "--overwrite"], workspace, check=False)
    assert_one_line_error(proc, 2, "model.positions='rope' is not GPT-2's ('learned'): transformers' GPT2LMHeadModel")
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert_one_line_error(run_module(["launch.export", f"--checkpoint_dir={tmp_path}/none", f"--out={out}"],
                                     workspace, check=False), 1, "does not exist")  # fmt: skip
    # A write that fails half-way (the weights, here) leaves neither a half folder nor a changed --out.
    del config["model"]["positions"]  # (a run saved before the option existed: GPT-2's learned positions)
    (folder / "config.json").write_text(json.dumps(config))
    real = export._write_file

    def fail_on_weights(path, content):
        if path.name == huggingface.WEIGHTS_FILE:
            raise OSError(28, "No space left on device")
        real(path, content)

    monkeypatch.setattr(export, "_write_file", fail_on_weights)
    with pytest.raises(huggingface.ExportError, match="could not write .*No space left on device"):
        export.export_run(folder, out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and sorted(p.name for p in tmp_path.iterdir()) == [
        "gpt2_tiny",
        "out",
    ]
    monkeypatch.setattr(export, "_write_file", real)
    export.export_run(folder, out, overwrite=True)  # and with room, --overwrite replaces it whole
    assert not (out / "mine.txt").exists() and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt2_tiny", "out"]


def test_export_cli_writes_the_folder(workspace, tmp_path):
    folder, _ = _run_folder(tmp_path, "mamba_tiny", num_layers=1, d_model=16)
    proc = run_module(["launch.export", f"--checkpoint_dir={folder}", f"--out={tmp_path}/hf"], workspace)
    assert f"wrote {tmp_path}/hf: README.md, config.json" in proc.stdout
    assert huggingface.is_export(tmp_path / "hf") and not huggingface.is_export(folder)


def _damaged(folder, out, tmp_path, damage: str):
    """Where `--config.train.init_params` points in each case of a refusal, made from a good export."""
    bad = tmp_path / damage
    if damage == "mamba_pack":  # a Mamba pack into a GPT-2 config
        return _run_folder(tmp_path, "mamba_tiny", num_layers=1, d_model=16)[0] / run_dir.PARAMS_FILE
    shutil.copytree(out, bad)
    if damage == "truncated_weights":
        weights = bad / huggingface.WEIGHTS_FILE
        weights.write_bytes(weights.read_bytes()[:5])
    elif damage == "more_layers":  # an export of a deeper model than the config's
        return out
    elif damage == "no_weights":
        (bad / huggingface.WEIGHTS_FILE).unlink()
    elif damage == "broken_config":
        (bad / huggingface.CONFIG_FILE).write_text("{not json")
    return bad


@pytest.mark.parametrize("damage", ["truncated_weights", "more_layers", "no_weights", "broken_config", "mamba_pack"])
def test_a_refused_init_params_is_one_line_and_creates_no_workdir(tmp_path, tiny_shakespeare, damage):
    folder, _ = _run_folder(tmp_path, "gpt2_tiny", num_layers=2)
    out = tmp_path / "export"
    export.export_run(folder, out)
    config = tiny_config(tiny_shakespeare, model__num_layers=1)  # (gpt2_tiny's shapes but one layer)
    config.model.update({k: load_config("gpt2_tiny").model[k] for k in ("num_heads", "head_dim", "ffn_hidden")})
    config.model.seq_len = 64
    config.train.init_params = str(_damaged(folder, out, tmp_path, damage))
    workdir = tmp_path / "new_run"
    with pytest.raises(BytelmError) as e:
        train_and_evaluate(config, workdir, out=lambda s: None)
    assert (
        "\n" not in str(e.value)
        and str(config.train.init_params).split("/")[-1] in str(e.value)
        or (damage in ("more_layers", "mamba_pack") and "does not fit the model" in str(e.value))
    ), str(e.value)
    assert not workdir.exists()


def test_a_truncated_export_is_one_line_from_the_command_line(workspace, tmp_path):
    folder, _ = _run_folder(tmp_path, "gpt2_tiny", num_layers=1)
    out = tmp_path / "export"
    export.export_run(folder, out)
    weights = out / huggingface.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    cmd = ["launch.train", f"--config={CONFIGS}/gpt2_tiny.py", f"--config.train.init_params={out}",
           "--config.model.num_layers=1", f"--workdir={tmp_path}/run"]  # fmt: skip
    proc = run_module(cmd, workspace, check=False)
    assert_one_line_error(proc, 2, f"cannot read {weights}", "export the run again with launch.export")
    assert not (tmp_path / "run").exists()
