"""The device mesh of `config.runtime.mesh`, and the shardings the train and eval steps use.

`runtime.mesh = "data=-1"` puts every local device on one `data` axis (`-1` takes the devices that
remain): the batch is split along it and the parameters and optimizer state are replicated, so each
device computes the gradient of its slice and XLA's SPMD partitioner inserts the all-reduce. On
this 2-core CPU the devices are `runtime.cpu_devices` host devices, one per core.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bytelm.errors import ConfigError

AXES = ("data",)


def parse(spec: str) -> dict[str, int]:
    """`"data=-1"` → `{"data": -1}`; a one-line `ConfigError` names what is wrong."""
    sizes: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, eq, value = part.partition("=")
        if not eq or name not in AXES or not value.lstrip("-").isdigit():
            raise ConfigError(
                f"runtime.mesh {spec!r}: expected comma-separated AXIS=SIZE with AXIS in {AXES}, e.g. data=-1"
            )
        sizes[name] = int(value)
    if not sizes:
        raise ConfigError(f"runtime.mesh {spec!r} is empty: use data=-1 for every device on the data axis")
    if list(sizes.values()).count(-1) > 1 or any(v == 0 or v < -1 for v in sizes.values()):
        raise ConfigError(f"runtime.mesh {spec!r}: sizes are positive, and at most one may be -1")
    return sizes


def build(spec: str, devices: list | None = None) -> Mesh:
    """The mesh over `devices` (default: every local device) described by `spec`."""
    devices = list(jax.local_devices() if devices is None else devices)
    sizes = parse(spec)
    known = math.prod(v for v in sizes.values() if v != -1)
    if -1 in sizes.values():
        if len(devices) % known:
            raise ConfigError(f"runtime.mesh {spec!r}: {len(devices)} devices do not divide by {known}")
        sizes = {k: (len(devices) // known if v == -1 else v) for k, v in sizes.items()}
    if math.prod(sizes.values()) != len(devices):
        raise ConfigError(
            f"runtime.mesh {spec!r} needs {math.prod(sizes.values())} devices, but {len(devices)} are here "
            "(use data=-1 to take them all)"
        )
    shape = [sizes.get(a, 1) for a in AXES]
    return Mesh(np.asarray(devices).reshape(shape), AXES)


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis split along `data`."""
    return NamedSharding(mesh, PartitionSpec("data"))


def check_batch(mesh: Mesh, batch_size: int, what: str) -> None:
    """A batch must split evenly over the data axis: otherwise a one-line error naming both numbers."""
    n = mesh.shape["data"]
    if batch_size % n:
        raise ConfigError(
            f"{what} {batch_size} does not divide by the {n} devices of the data axis (runtime.mesh): "
            f"use a multiple of {n}, or fewer devices"
        )
