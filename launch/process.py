"""Process-wide JAX settings, applied by the entry points before JAX starts its backends.

The library resolves what `config.runtime` asks for against the environment
(`bytelm.parallel.runtime`); only the entry points change the process: host CPU devices, the
persistent compilation cache, and joining a multi-process job.
"""

from __future__ import annotations

import os

import jax

from bytelm.errors import ConfigError
from bytelm.parallel import processes, runtime


def configure(runtime_config, explicit: set[str] = frozenset(), compilation_cache: bool = True) -> None:
    """Applies the runtime section: host CPU devices and JAX's persistent compilation cache.

    `explicit` names the config fields given on the command line (`cli.overridden_fields`): an
    environment setting wins over the config, a command-line one that contradicts it is an error.
    `compilation_cache=False` leaves the cache off (the benchmark times compiles).
    """
    env = dict(os.environ)
    count = runtime.cpu_devices(runtime_config.get("cpu_devices", 0), "runtime.cpu_devices" in explicit, env)
    if count:
        try:
            jax.config.update("jax_num_cpu_devices", int(count))
        except RuntimeError as e:  # JAX already started: only in-process callers can get here
            raise ConfigError(f"runtime.cpu_devices={count} must be set before JAX starts ({e})") from None
    if not compilation_cache:
        jax.config.update("jax_enable_compilation_cache", False)  # also one named by the environment
        return
    use_compilation_cache(runtime_config, "runtime.compilation_cache_dir" in explicit)


def use_compilation_cache(runtime_config, explicit: bool = False) -> None:
    """Turns on JAX's persistent compilation cache where `runtime.compilation_cache_dir` (or the
    environment's `JAX_COMPILATION_CACHE_DIR`) says; sampling uses it too, so a second
    `launch.sample` skips its compiles."""
    cache_dir = runtime.compilation_cache_dir(
        runtime_config.get("compilation_cache_dir", ""), explicit, dict(os.environ)
    )
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        # Cache even small programs: on a CPU their compile time is what start-up is made of.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def join_job(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> int:
    """Joins this process to a multi-process job through `jax.distributed.initialize`; returns the
    process count (1 when there is nothing to join).

    With none of the three given, a cluster environment (SLURM's `srun`, Open MPI) is detected by
    JAX itself. On CPUs the collectives between processes go through gloo.
    """
    if not processes.should_join(coordinator_address, num_processes, process_id, dict(os.environ)):
        return 1
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"cannot join the distributed job: {' '.join(str(e).split())[:200]}") from None
    return jax.process_count()
