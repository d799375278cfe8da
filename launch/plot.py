"""Draws train and validation loss against step for one or several runs.

    python -m launch.plot runs/gpt2_tiny/train_log.json runs/mamba_tiny/train_log.json --out=loss.png

Each run is labelled by the folder its log is in (the run's name). The right axis gives bits per byte.
"""

import sys
from pathlib import Path

from absl import flags

from bytelm import plots, train_log
from bytelm.errors import UsageError
from launch import cli

_OUT = flags.DEFINE_string("out", "loss.png", "the PNG to write")


def run_names(paths: list[str]) -> list[str]:
    """The folder of each log, or its whole path where two folders share a name."""
    names = [Path(p).resolve().parent.name or p for p in paths]
    return [n if names.count(n) == 1 else p for n, p in zip(names, paths, strict=True)]


def main(argv: list[str]) -> None:
    paths = argv[1:]
    if not paths:
        raise UsageError("name at least one training log: python -m launch.plot DIR/train_log.json --out=loss.png")
    runs = [(name, train_log.read(p)) for name, p in zip(run_names(paths), paths, strict=True)]
    for warning in plots.write(_OUT.value, runs):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {_OUT.value} ({len(runs)} run{'s' if len(runs) > 1 else ''})")


if __name__ == "__main__":
    cli.run(main, positional=True)
