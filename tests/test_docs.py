"""The docs cannot drift from the code unnoticed: every `python -m launch.*` command that README.md and
WORKSPACE.md show names only flags its entry point defines and config fields its config file has."""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
import sys

import pytest

from bytelm.config_base import load_config_file
from conftest import REPO

DOCS = ("README.md", "WORKSPACE.md")
BACKTICK = "\x00"  # an escaped backtick inside a code span, set aside while spans are found
# Config files an entry point loads when the command names none.
DEFAULT_CONFIG = {"benchmark": "configs/gpt2_tiny.py"}


def _commands(text: str) -> list[str]:
    """Every `python -m launch.…` command: a line of a fenced block (with its `\\` continuations; one
    followed by a `# error:` line is a documented mistake and left out), or an inline code span."""
    found = []
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    for block in blocks:
        lines = block.replace("\\\n", " ").splitlines()
        for i, line in enumerate(lines):
            follows = lines[i + 1].lstrip() if i + 1 < len(lines) else ""
            if "python -m launch." in line and not follows.startswith("# error:"):
                found.append(line.split(" # ")[0].split("   #")[0])
    prose = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S).replace("\\`", BACKTICK)
    for span in re.findall(r"`([^`]+)`", prose):
        if "python -m launch." in span:
            found.append(span.replace("\n", " ").split(BACKTICK)[-2 if span.endswith(BACKTICK) else -1])
    return [c[c.index("python -m launch.") :] for c in found]


@functools.cache
def _flags(module: str) -> dict[str, bool]:
    """The flags `launch.<module>` defines (absl's own included): name → whether it is a boolean."""
    code = (
        f"import json, launch.{module}; from absl import flags; "
        "print(json.dumps({n: bool(flags.FLAGS[n].boolean) for n in flags.FLAGS}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _problems(command: str) -> list[str]:
    words = shlex.split(command)
    module = words[2].removeprefix("launch.")
    if not (REPO / "launch" / f"{module}.py").is_file():
        return [f"no entry point launch.{module}"]
    known, problems = _flags(module), []
    args = [w for w in words[3:] if w.startswith("--")]
    config_file = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), DEFAULT_CONFIG.get(module))
    for arg in args:
        name = arg[2:].split("=", 1)[0]
        if name.startswith("config."):
            problems += _config_field_problem(config_file, name)
        elif name not in known and not (name.startswith("no") and known.get(name[2:])):
            problems.append(f"launch.{module} has no flag --{name}")
    return problems


def _config_field_problem(config_file: str | None, name: str) -> list[str]:
    if config_file is None:
        return [f"--{name} without a --config= to look it up in"]
    node = load_config_file(REPO / config_file)
    for part in name.split(".")[1:]:
        if not hasattr(node, "keys") or part not in node.keys():
            return [f"{config_file} has no field {name.removeprefix('config.')}"]
        node = node[part]
    return []


@pytest.mark.parametrize("doc", DOCS)
def test_every_command_in_the_docs_names_flags_and_fields_that_exist(doc):
    commands = _commands((REPO / doc).read_text(encoding="utf-8"))
    assert len(commands) > 10, commands  # (the parser found them)
    problems = {c: p for c in commands if (p := _problems(c))}
    assert not problems, problems


def test_the_check_finds_a_flag_or_a_field_that_does_not_exist():
    text = (
        "```bash\npython -m launch.train --config=configs/gpt2_tiny.py --config.train.stepz=3 \\\n  --worrkdir=x\n```\n"
        "and `python -m launch.sample --checkpoint_dir=runs/x\n--tempreature=0` and "
        "`python -m launch.sample --nointeractive`"
    )
    commands = _commands(text)
    assert [_problems(c) for c in commands] == [
        ["configs/gpt2_tiny.py has no field train.stepz", "launch.train has no flag --worrkdir"],
        ["launch.sample has no flag --tempreature"],
        [],
    ]
