"""The house rules that a wrong-way import or a long function would break, checked as CI checks them."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

MAX_FUNCTION_LINES = 60
MAX_TOP_LEVEL_MODULES = 8  # errors, atomic writes, config sections: what every stage shares


def test_import_linter_contracts_are_kept():
    """The layers, the acyclic packages and the forbidden imports of pyproject.toml."""
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and "BROKEN" not in proc.stdout


def test_no_function_outside_tests_is_longer_than_a_reader_can_hold():
    long = []
    for root in ("bytelm", "launch", "bench"):
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_the_package_shows_the_pipeline_in_its_folders():
    flat = sorted(p.name for p in (REPO / "bytelm").glob("*.py") if p.name != "__init__.py")
    assert len(flat) <= MAX_TOP_LEVEL_MODULES, flat
    stages = {p.name for p in (REPO / "bytelm").iterdir() if (p / "__init__.py").exists()}
    assert stages >= {"data", "models", "training", "sampling", "artifacts", "reporting", "parallel"}


# What the configs that load another one change, and must keep changing (the rest is their base's).
DERIVED = {
    "record_2min": (
        "record_10min",
        {
            "model.num_layers": 2,
            "train.steps": 700,
            "train.eval_every": 700,
            "train.schedule": "cosine",
            "train.muon_beta": 0.9,
        },
    ),
    "record_10min": (
        "mamba2_tiny",
        {
            "data.eval_windows": 64,
            "data.final_eval_windows": 0,
            "train.optimizer": "muon",
            "train.muon_lr": 0.03,
            "train.lr": 3e-3,
            "train.min_lr": 3e-5,
            "train.schedule": "wsd",
            "train.decay_fraction": 0.4,
            "train.warmup_steps": 20,
            "train.steps": 1700,
            "train.eval_every": 1700,
            "train.checkpoint_every": 0,
        },
    ),
    "hierarchical_space": ("hierarchical_learned", {"model.boundaries": "space", "model.slots": 96}),
    "hierarchical_fixed": ("hierarchical_learned", {"model.boundaries": "fixed", "model.slots": 64}),
}


@pytest.mark.filterwarnings("ignore:the load_module\\(\\) method is deprecated")  # ml_collections' loader
def test_every_config_file_loads_the_same_through_both_loaders_and_derived_ones_change_only_their_fields():
    """`--config=` (ml_collections' loader) and `config_base.load_config_file` (the benchmark's) give one
    config for every file of configs/, those that load another included."""
    from absl import flags
    from ml_collections import config_flags

    from bytelm.config_base import load_config_file

    loaded = {}
    for path in sorted((REPO / "configs").glob("*.py")):
        values = flags.FlagValues()
        config_flags.DEFINE_config_file("config", None, flag_values=values)
        values(["prog", f"--config={path}"])
        loaded[path.stem] = load_config_file(path).to_dict()
        assert values.config.to_dict() == loaded[path.stem], path.name
    for name, (base, changes) in DERIVED.items():
        ours, theirs = _flat(loaded[name]), _flat(loaded[base])
        assert {k: ours[k] for k in changes} == changes
        assert {k for k in ours if ours[k] != theirs[k]} <= {"name", *changes}, name


def _flat(tree: dict, prefix: str = "") -> dict:
    """{'model.seq_len': 256, ...} from nested dicts."""
    out = {}
    for k, v in tree.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def test_every_familys_dropout_fields_are_rates_that_default_to_none():
    """What the records' ablation adds or removes (bench/ablation.py) and `Family.config` checks: float
    options at 0, so no config that leaves them out drops anything."""
    from bytelm import models

    families = {name: models.family(name) for name in models.FAMILIES}
    for name, family in families.items():
        defaults = family.defaults()
        assert all(defaults.get(f) == 0.0 and isinstance(defaults[f], float) for f in family.dropout_fields), name
    assert {n for n, f in families.items() if f.dropout_fields} == {"gpt2", "mamba", "mamba2"}
