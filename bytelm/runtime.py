"""Process-wide JAX settings taken from `config.runtime`, applied once by an entry point."""

from __future__ import annotations

import os

import jax

from bytelm.errors import ConfigError


def configure(runtime_config) -> None:
    """Applies the runtime section: host CPU devices and JAX's persistent compilation cache.

    Entry points call it first, before anything starts JAX's backends: the CPU device count can
    only be set then.
    """
    cpu_devices = runtime_config.get("cpu_devices", 0)
    if cpu_devices:
        try:
            jax.config.update("jax_num_cpu_devices", int(cpu_devices))
        except RuntimeError as e:  # JAX already started: only in-process callers can get here
            raise ConfigError(f"runtime.cpu_devices={cpu_devices} must be set before JAX starts ({e})") from None
    cache_dir = runtime_config.get("compilation_cache_dir", "")
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cache_dir))
        # Cache even small programs: on a CPU their compile time is what start-up is made of.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
