"""The house rules that a wrong-way import or a long function would break, checked as CI checks them."""

import ast
import subprocess
import sys
from pathlib import Path

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
