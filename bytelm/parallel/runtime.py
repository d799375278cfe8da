"""What `config.runtime` asks of JAX, resolved against the environment, and the model kernels a
backend can run. Nothing here changes the process: the entry points apply the settings
(`launch/process.py`), the trainer and the benchmark pass the kernels to `models.build`.

Explicit settings win: an environment variable that JAX itself reads (`XLA_FLAGS`' host device count,
`JAX_NUM_CPU_DEVICES`, `JAX_COMPILATION_CACHE_DIR`) wins over a config default, and a command-line
override that disagrees with it is a one-line error naming both.
"""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp

from bytelm.errors import ConfigError

_HOST_DEVICES_FLAG = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def env_cpu_devices(env: dict[str, str]) -> tuple[int, str] | None:
    """The host CPU device count the environment sets for JAX, and where (None when it sets none)."""
    if env.get("JAX_NUM_CPU_DEVICES", "").strip():
        value = env["JAX_NUM_CPU_DEVICES"].strip()
        if not value.isdigit():
            raise ConfigError(f"JAX_NUM_CPU_DEVICES={value!r} is not a device count: unset it or give a number")
        return int(value), f"JAX_NUM_CPU_DEVICES={value}"
    match = _HOST_DEVICES_FLAG.search(env.get("XLA_FLAGS", ""))
    if match:
        return int(match.group(1)), f"XLA_FLAGS={match.group(0)}"
    return None


def cpu_devices(configured: int, explicit: bool, env: dict[str, str]) -> int | None:
    """How many host CPU devices to ask JAX for (None: leave JAX to its default or the environment's).

    `configured` is `runtime.cpu_devices` (0 = JAX's default); `explicit` says whether it came from the
    command line rather than the config file. A count in the environment wins over the config; a
    command-line value that disagrees with it is a `ConfigError` naming both."""
    from_env = env_cpu_devices(env)
    if from_env is None:
        return configured or None
    count, where = from_env
    if explicit and configured and configured != count:
        raise ConfigError(
            f"--config.runtime.cpu_devices={configured} conflicts with {where} in the environment: drop one of the two"
        )
    return None


def compilation_cache_dir(configured: str, explicit: bool, env: dict[str, str]) -> str:
    """The persistent compilation cache folder ('' = none): `JAX_COMPILATION_CACHE_DIR` when the
    environment names one (a test session, a cluster's shared cache), else `configured`; a
    command-line value that disagrees with the environment's is a `ConfigError` naming both."""
    from_env = env.get("JAX_COMPILATION_CACHE_DIR", "")
    if not from_env:
        return os.path.expanduser(configured) if configured else ""
    if explicit and configured and os.path.expanduser(configured) != os.path.expanduser(from_env):
        raise ConfigError(
            f"--config.runtime.compilation_cache_dir={configured} conflicts with JAX_COMPILATION_CACHE_DIR="
            f"{from_env} in the environment: drop one of the two"
        )
    return os.path.expanduser(from_env)


def model_kernels(config, family) -> tuple[dict[str, str], str | None]:
    """The `models.build` kernel options `config.runtime.fast_kernels` asks for on this backend, and a
    one-line warning when they fall back. `family` is the model's (`bytelm.models.family_of`).

    Fast kernels are cuDNN's fused attention with bfloat16 matmuls (float32 parameters, optimizer
    state, residual stream and softmax), for families that declare attention kernels. Without cuDNN
    attention on a GPU they fall back to XLA's attention, still in bfloat16; on a CPU to the default
    float32 kernels, because this repository's CPUs have no bfloat16 units (BENCHMARKS.md, Choices:
    matmul dtype)."""
    if not config.runtime.get("fast_kernels", False):
        return {}, None
    layout = family.attention_layout(family.config(config.model))
    if layout is None:
        return {}, f"runtime.fast_kernels applies to fused attention, which {family.name} has not; using its defaults"
    backend = jax.default_backend()
    if backend != "gpu":
        return {}, f"runtime.fast_kernels: no cuDNN attention on the {backend} backend; using the float32 defaults"
    seq_len, heads, head_dim = layout
    reason = _cudnn_attention_problem((1, seq_len, heads, head_dim))
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
