"""Trains a model from a config file.

    python -m launch.train --config=configs/gpt2_tiny.py --config.train.steps=300 --workdir=runs/x

Every config field can be overridden as --config.SECTION.FIELD=VALUE; the resolved config is
written to WORKDIR/config.json. The default workdir is runs/<config.name>.

Several processes (one per host) train one model when each is started with the same command plus
--coordinator_address=HOST:PORT --num_processes=N --process_id=I (inside SLURM's srun or Open MPI,
JAX reads these from the environment instead); see WORKSPACE.md, "Many devices and many hosts".
"""

from absl import flags
from ml_collections import config_flags

from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file (configs/*.py)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "", "run directory (default: runs/<config.name>)")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace an earlier run in the workdir")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, for a multi-process job")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "how many processes the job has")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's id, 0 .. num_processes-1")
flags.mark_flag_as_required("config")


def main() -> None:
    # Imported here, after the flags parsed: JAX and friends take seconds to import, and a mistyped
    # flag should cost a fraction of a second.
    from bytelm.training.loop import train_and_evaluate
    from launch import process

    config = _CONFIG.value
    process.configure(config.runtime, cli.overridden_fields())
    process.join_job(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    train_and_evaluate(config, _WORKDIR.value or f"runs/{config.name}", overwrite=_OVERWRITE.value)


if __name__ == "__main__":
    cli.run(main)
