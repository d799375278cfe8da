"""Process-wide JAX settings taken from `config.runtime`, applied once by an entry point."""

from __future__ import annotations

import os

import jax


def configure(runtime_config) -> None:
    """Applies the runtime section: today, JAX's persistent compilation cache."""
    cache_dir = runtime_config.get("compilation_cache_dir", "")
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cache_dir))
        # Cache even small programs: on a CPU their compile time is what start-up is made of.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
