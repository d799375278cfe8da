"""Several processes as one job: how a cluster environment says so, and the two collectives the
trainer needs between processes (a barrier and an any-of vote).

Joining the job (`jax.distributed.initialize`) changes the whole process, so the entry point does it
(`launch/process.py`); this module only checks what it was given and reads the environment it is given.
"""

from __future__ import annotations

import numpy as np
from jax.experimental import multihost_utils

from bytelm.errors import ConfigError

# Environment variables that mean "this process is one of several tasks of a cluster job"; when one
# is set, `jax.distributed.initialize()` finds the coordinator and this process's id by itself.
CLUSTER_ENV = {"SLURM_NTASKS": "SLURM", "OMPI_COMM_WORLD_SIZE": "Open MPI", "JAX_NUM_PROCESSES": "JAX"}


def cluster_size_from_env(env: dict[str, str]) -> int:
    """How many processes the cluster environment in `env` says this job has (1 when none)."""
    for name in CLUSTER_ENV:
        value = env.get(name, "")
        if value.isdigit() and int(value) > 1 and (name != "SLURM_NTASKS" or "SLURM_STEP_ID" in env):
            return int(value)  # (SLURM: only inside `srun`, where each task is one process)
    return 1


def should_join(coordinator_address: str | None, num_processes: int | None, process_id: int | None, env) -> bool:
    """Whether this process is one of several: all three flags given, or a cluster environment.

    Raises a one-line `ConfigError` for a partial set of flags or an id outside the job."""
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        raise ConfigError(
            "--coordinator_address, --num_processes and --process_id go together: give all three, or none "
            "(inside a SLURM or Open MPI job they are read from its environment)"
        )
    if all(given) and not 0 <= process_id < num_processes:
        raise ConfigError(f"--process_id {process_id} must be in [0, {num_processes}): one id per process")
    return all(given) or cluster_size_from_env(env) > 1


def sync(name: str) -> None:
    """Waits until every process of a multi-process job reaches the barrier `name`."""
    multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """True in every process when `flag` is true in any of them (a tiny all-gather)."""
    return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).any())
