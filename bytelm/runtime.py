"""Process-wide JAX settings taken from `config.runtime`, applied once by an entry point."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from bytelm.errors import ConfigError


def configure(runtime_config, compilation_cache: bool = True) -> None:
    """Applies the runtime section: host CPU devices and JAX's persistent compilation cache.

    Entry points call it first, before anything starts JAX's backends: the CPU device count can
    only be set then. `compilation_cache=False` leaves the cache off (the benchmark times compiles).
    """
    cpu_devices = runtime_config.get("cpu_devices", 0)
    if cpu_devices:
        try:
            jax.config.update("jax_num_cpu_devices", int(cpu_devices))
        except RuntimeError as e:  # JAX already started: only in-process callers can get here
            raise ConfigError(f"runtime.cpu_devices={cpu_devices} must be set before JAX starts ({e})") from None
    if not compilation_cache:
        jax.config.update("jax_enable_compilation_cache", False)  # also one named by the environment
        return
    use_compilation_cache(runtime_config)


def use_compilation_cache(runtime_config) -> None:
    """Turns on JAX's persistent compilation cache in `runtime_config.compilation_cache_dir`.

    Also for sampling: it lets a second `launch.sample` skip its compiles (6.2-6.4 -> 3.7-3.9 s for gpt2_tiny)."""
    # An environment that names its own cache (a test session, a cluster's shared cache) keeps it.
    cache_dir = os.environ.get("JAX_COMPILATION_CACHE_DIR") or runtime_config.get("compilation_cache_dir", "")
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cache_dir))
        # Cache even small programs: on a CPU their compile time is what start-up is made of.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def model_kernels(config) -> tuple[dict[str, str], str | None]:
    """The `models.build` kernel options `config.runtime.fast_kernels` asks for on this backend, and a
    one-line warning when they fall back.

    Fast kernels are cuDNN's fused attention with bfloat16 matmuls (float32 parameters, optimizer
    state, residual stream and softmax). Without cuDNN attention on a GPU they fall back to XLA's
    attention, still in bfloat16; on a CPU to the default float32 kernels, because bfloat16 matmuls
    measured 1.4x slower than float32 on the 2-core CPU (no bfloat16 units)."""
    if not config.runtime.get("fast_kernels", False):
        return {}, None
    if config.model.name != "gpt2":
        return {}, f"runtime.fast_kernels applies to gpt2 only; {config.model.name} runs with its default kernels"
    backend = jax.default_backend()
    if backend != "gpu":
        return {}, f"runtime.fast_kernels: no cuDNN attention on the {backend} backend; using the float32 defaults"
    m = config.model
    reason = _cudnn_attention_problem((1, m.seq_len, m.num_heads, m.head_dim))
    if reason:
        return {"attention": "xla", "compute_dtype": "bfloat16"}, (
            f"runtime.fast_kernels: cuDNN attention unavailable ({reason}); using XLA attention in bfloat16"
        )
    return {"attention": "cudnn", "compute_dtype": "bfloat16"}, None


def _cudnn_attention_problem(shape_BxLxHxK: tuple[int, ...]) -> str | None:
    """Why cuDNN attention cannot compile for this head layout here (None when it can)."""
    q = jax.ShapeDtypeStruct(shape_BxLxHxK, jnp.bfloat16)
    attend = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
    try:
        jax.jit(attend).lower(q, q, q).compile()
    except Exception as e:  # whatever cuDNN or JAX says, the caller falls back and says why
        return " ".join(str(e).split())[:160] or type(e).__name__
    return None


# Environment variables that mean "this process is one of several tasks of a cluster job"; when one
# is set, `jax.distributed.initialize()` finds the coordinator and this process's id by itself.
_CLUSTER_ENV = {"SLURM_NTASKS": "SLURM", "OMPI_COMM_WORLD_SIZE": "Open MPI", "JAX_NUM_PROCESSES": "JAX"}


def cluster_size_from_env(env: dict[str, str]) -> int:
    """How many processes the cluster environment in `env` says this job has (1 when none)."""
    for name in _CLUSTER_ENV:
        value = env.get(name, "")
        if value.isdigit() and int(value) > 1 and (name != "SLURM_NTASKS" or "SLURM_STEP_ID" in env):
            return int(value)  # (SLURM: only inside `srun`, where each task is one process)
    return 1


def start_distributed(
    coordinator_address: str | None, num_processes: int | None, process_id: int | None, env: dict[str, str]
) -> int:
    """Joins this process to a multi-process job through `jax.distributed.initialize`; returns the
    process count (1 when there is nothing to join).

    With none of the three given, a cluster environment (SLURM's `srun`, Open MPI) is detected by JAX
    itself. On CPUs the collectives between processes go through gloo.
    """
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        raise ConfigError(
            "--coordinator_address, --num_processes and --process_id go together: give all three, or none "
            "(inside a SLURM or Open MPI job they are read from its environment)"
        )
    if not any(given) and cluster_size_from_env(env) == 1:
        return 1
    if all(given) and not 0 <= process_id < num_processes:
        raise ConfigError(f"--process_id {process_id} must be in [0, {num_processes}): one id per process")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"cannot join the distributed job: {' '.join(str(e).split())[:200]}") from None
    return jax.process_count()
