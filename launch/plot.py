"""Draws train and validation loss against step for one or several runs.

    python -m launch.plot runs/gpt2_tiny/train_log.json runs/mamba_tiny/train_log.json --out=loss.png

Each run is labelled by the folder its log is in (the run's name). The right axis gives bits per byte.
"""

import sys

from absl import flags

from bytelm.errors import UsageError
from bytelm.reporting import plots
from launch import cli

_OUT = flags.DEFINE_string("out", "loss.png", "the PNG to write")


def main(argv: list[str]) -> None:
    paths = argv[1:]
    if not paths:
        raise UsageError("name at least one training log: python -m launch.plot DIR/train_log.json --out=loss.png")
    for warning in plots.plot_logs(paths, _OUT.value):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {_OUT.value} ({len(paths)} run{'s' if len(paths) > 1 else ''})")


if __name__ == "__main__":
    cli.run(main, positional=True)
