"""The device mesh of `config.runtime.mesh`, and how the train state and batches are laid out on it.

`runtime.mesh` names the sizes of two axes, `data` and `fsdp` (`-1` takes the devices that remain):

    data=-1          every device on `data`: the batch is split, the state replicated (data parallel)
    data=2,fsdp=4    8 devices: the batch is split over all 8; every state leaf of at least
                     `runtime.fsdp_min_size` elements is also split, along its largest axis that
                     divides by 4, over the 4 devices of each `fsdp` group (fully sharded data parallel)

The batch is split over both axes (an `fsdp` group is data parallel too: each device computes the
gradient of its rows), so the global batch must divide by `data × fsdp`. XLA's SPMD partitioner
inserts every collective (the gradient reduction, FSDP's all-gathers and reduce-scatters) from the
shardings alone. Across several processes (`jax.distributed`) the mesh spans every process's
devices; each process builds only the rows of each batch that its own devices hold.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bytelm.errors import ConfigError

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over both


def parse(spec: str) -> dict[str, int]:
    """`"data=2,fsdp=4"` → `{"data": 2, "fsdp": 4}`; a one-line `ConfigError` names what is wrong."""
    sizes: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, eq, value = part.partition("=")
        if not eq or name not in AXES or name in sizes or not value.lstrip("-").isdigit():
            raise ConfigError(
                f"runtime.mesh {spec!r}: expected comma-separated AXIS=SIZE with each AXIS in {AXES} once, "
                "e.g. data=-1 or data=2,fsdp=4"
            )
        sizes[name] = int(value)
    if not sizes:
        raise ConfigError(f"runtime.mesh {spec!r} is empty: use data=-1 for every device on the data axis")
    if list(sizes.values()).count(-1) > 1 or any(v == 0 or v < -1 for v in sizes.values()):
        raise ConfigError(f"runtime.mesh {spec!r}: sizes are positive, and at most one may be -1")
    return sizes


def make_mesh(spec: str, devices: list | None = None) -> Mesh:
    """The mesh over `devices` (default: every device of every process) described by `spec`."""
    devices = list(jax.devices() if devices is None else devices)
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
    # Devices in process order, so that each process's devices hold consecutive rows of the batch.
    devices.sort(key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices).reshape([sizes.get(a, 1) for a in AXES]), AXES)


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (metrics, small leaves, everything without FSDP)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis split over `data × fsdp`."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def batch_split(mesh: Mesh) -> int:
    """How many ways a batch is split: the product of the batch axes' sizes."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def check_batch(mesh: Mesh, batch_size: int, what: str) -> None:
    """A batch must split evenly over the mesh: otherwise a one-line error naming both numbers."""
    n = batch_split(mesh)
    if batch_size % n:
        raise ConfigError(
            f"{what} {batch_size} does not divide by the {n} devices of the data and fsdp axes (runtime.mesh): "
            f"use a multiple of {n}, or fewer devices"
        )


def leaf_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> PartitionSpec:
    """FSDP's layout of one leaf: split along its largest axis that divides by `fsdp` (the first such
    on ties), when the leaf has at least `min_size` elements; otherwise replicated."""
    if fsdp == 1 or math.prod(shape) < max(min_size, 1):
        return PartitionSpec()
    fits = [i for i, n in enumerate(shape) if n % fsdp == 0]
    if not fits:
        return PartitionSpec()
    axis = max(fits, key=lambda i: (shape[i], -i))
    return PartitionSpec(*(("fsdp" if i == axis else None) for i in range(len(shape))))


def state_shardings(mesh: Mesh, tree, min_size: int) -> Any:
    """A `NamedSharding` per leaf of `tree` (arrays or `ShapeDtypeStruct`s): FSDP's layout when the
    mesh's `fsdp` axis is above 1, else replicated."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree_util.tree_map(lambda a: NamedSharding(mesh, leaf_spec(tuple(a.shape), fsdp, min_size)), tree)


def put(tree, shardings) -> Any:
    """Host values (the same in every process) → global arrays laid out by `shardings`.

    Each process fills only its own devices' pieces, so this works across processes, where
    `jax.device_put` to devices of another process cannot."""

    def one(x, sharding):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(one, tree, shardings)


def process_rows(mesh: Mesh, batch_size: int) -> slice:
    """The rows of a `[batch_size, ...]` batch that this process's devices hold (consecutive, since
    `make_mesh` orders devices by process)."""
    index_map = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
    starts = sorted({idx[0].indices(batch_size)[:2] for idx in index_map.values()})
    lo, hi = starts[0][0], starts[-1][1]
    if sum(b - a for a, b in starts) != hi - lo:
        raise ConfigError(f"runtime.mesh: this process's rows of the batch are not consecutive ({starts})")
    return slice(lo, hi)


def put_rows(rows: np.ndarray, mesh: Mesh, batch_size: int) -> jax.Array:
    """This process's `rows` (from `process_rows`) → the global `[batch_size, ...]` array, split."""
    return jax.make_array_from_process_local_data(batch_sharding(mesh), rows, (batch_size, *rows.shape[1:]))


def to_host(tree) -> Any:
    """Global arrays → numpy, whole, in every process: sharded leaves are gathered from every
    process's devices; replicated ones are read from a local copy."""

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(jax.device_get(x))
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree_util.tree_map(one, tree)
