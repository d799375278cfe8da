"""Trains a model from a config file.

    python -m launch.train --config=configs/gpt2_tiny.py --config.train.steps=300 --workdir=runs/x

Every config field can be overridden as --config.SECTION.FIELD=VALUE; the resolved config is
written to WORKDIR/config.json. The default workdir is runs/<config.name>.
"""

from absl import flags
from ml_collections import config_flags

from bytelm import runtime, train
from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file (configs/*.py)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "", "run directory (default: runs/<config.name>)")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace an earlier run in the workdir")
flags.mark_flag_as_required("config")


def main() -> None:
    config = _CONFIG.value
    runtime.configure(config.runtime)
    train.train_and_evaluate(config, _WORKDIR.value or f"runs/{config.name}", overwrite=_OVERWRITE.value)


if __name__ == "__main__":
    cli.run(main)
