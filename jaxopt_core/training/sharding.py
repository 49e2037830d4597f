"""Placing a sweep's members on devices, and reading results back on the host.

The member axis is sharded over a one-axis :class:`jax.sharding.Mesh` named
``"members"``; data and shared params are replicated. On several hosts every
process passes the same host values and keeps the shards its devices hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def member_shardings(devices: Sequence[jax.Device] | None) -> tuple[NamedSharding, NamedSharding]:
    """``(members, replicated)`` shardings over a one-axis mesh of ``devices``
    (default ``jax.devices()``, every host's)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device")
    mesh = Mesh(np.asarray(devices, dtype=object), ("members",))
    return NamedSharding(mesh, PartitionSpec("members")), NamedSharding(mesh, PartitionSpec())


def put_on_mesh(tree: Any, sharding: NamedSharding) -> Any:
    """Place a host tree on the mesh; on several hosts every process passes
    the same values and keeps the shards its devices hold."""
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(one, tree)


def to_host(x: jax.Array) -> np.ndarray:
    """``x`` as a NumPy array, gathering from other hosts when needed."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
