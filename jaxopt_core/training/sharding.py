"""Placing a sweep's members on devices, and bringing results back to the host.

The member axis is sharded over a one-axis :class:`jax.sharding.Mesh` named
``"members"``; data and shared params are replicated. On several hosts (under
``jax.distributed``) every process passes the same host values and keeps the
shards its devices hold; the arrays that come back are *global*: each process
holds only its devices' rows.

Reading a global array on the host needs the other processes' rows, i.e. a
collective that every process must enter, or the callers deadlock. So the
reading is split in two:

* :func:`to_host` never communicates: it reads arrays this process holds whole
  and raises a ``ValueError`` naming the remedy for any other;
* :func:`gather_to_host`, :func:`gather_small_fields`,
  :func:`gather_param_fields` and :func:`member_to_host` are collective: every
  process calls them, with the same arguments, at the same point.
  :func:`~jaxopt_core.sweep` calls :func:`gather_small_fields` and
  :func:`member_to_host` before it returns (a call every process makes), so
  everything in a :class:`~jaxopt_core.SweepResult` but the stacked params is
  plain NumPy data on every process; ``SweepResult.gather_params()`` is the
  one collective left to the user.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# The result fields that hold a params tree per member (K copies of the
# model): they stay global arrays; every other field is small and is gathered.
PER_MEMBER_PARAMS = ("params", "best_params_per_member")


def member_shardings(devices: Sequence[jax.Device] | None) -> tuple[NamedSharding, NamedSharding]:
    """``(members, replicated)`` shardings over a one-axis mesh of ``devices``
    (default ``jax.devices()``, every host's)."""
    devices = tuple(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device")
    return _shardings_on(devices)


@functools.lru_cache(maxsize=32)
def _shardings_on(devices: tuple) -> tuple[NamedSharding, NamedSharding]:
    # One mesh per device tuple: building it costs ~0.1 ms of a small sweep's
    # host time, and equal meshes make equal shardings anyway.
    mesh = Mesh(np.asarray(devices, dtype=object), ("members",))
    return NamedSharding(mesh, PartitionSpec("members")), NamedSharding(mesh, PartitionSpec())


def put_on_mesh(tree: Any, sharding: NamedSharding) -> Any:
    """Place a host tree on the mesh; on several hosts every process passes
    the same values and keeps the shards its devices hold.

    A jax array that already lies on the mesh as ``sharding`` asks (an array
    on the one device of a one-device mesh, say) is placed once while it
    lives: see :func:`_rewrapped`.
    """
    if sharding.is_fully_addressable:
        leaves, treedef = jax.tree.flatten(tree)
        out = [_remembered(x, sharding) for x in leaves]
        todo = [i for i, x in enumerate(out) if x is None]
        if todo:
            placed = jax.device_put([leaves[i] for i in todo], sharding)
            for i, x in zip(todo, placed, strict=True):
                out[i] = x
                _remember(leaves[i], sharding, x)
        return treedef.unflatten(out)

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(one, tree)


# device_put of an array that is already where it should be copies nothing
# but still costs 20-90 us of host time per leaf, a tenth of a small sweep's
# host time; a repeated call (a notebook's loop, a benchmark) with the same
# arrays looks them up instead. Only such re-wraps are remembered (they share
# the source's buffers, so the memo holds no device memory of its own), keyed
# by the source's identity and dropped when the source is collected.
_PLACED: dict[tuple[int, NamedSharding], tuple[weakref.ref, jax.Array]] = {}
_PLACED_MAX = 256


# A small NumPy leaf (a sweep's hyperparameter chunk, a label vector) is
# rebuilt by every call, so it has no identity to key on; its bytes are the
# key instead. Its device copy is an immutable array, so handing the same one
# to two calls is safe; a copy that was since donated (and deleted) is placed
# again. The memo holds at most _BY_VALUE_MAX * _BY_VALUE_BYTES of device memory.
_BY_VALUE: dict[tuple, jax.Array] = {}
_BY_VALUE_MAX = 256
_BY_VALUE_BYTES = 16 * 1024


def _value_key(x: Any, sharding: NamedSharding) -> tuple | None:
    if (isinstance(x, np.ndarray) and x.nbytes <= _BY_VALUE_BYTES
            and x.dtype.kind in "biufc"):
        # The x64 flag decides the dtype a float64 leaf is placed as.
        return x.dtype.str, x.shape, x.tobytes(), sharding, jax.config.jax_enable_x64
    return None


def _remembered(x: Any, sharding: NamedSharding) -> jax.Array | None:
    """A placement of ``x`` as ``sharding`` made by an earlier call, or None."""
    hit = _rewrapped(x, sharding)
    return _by_value(x, sharding) if hit is None else hit


def _by_value(x: Any, sharding: NamedSharding) -> jax.Array | None:
    """The remembered placement of a small NumPy array with ``x``'s bytes, or None."""
    hit = _BY_VALUE.get(_value_key(x, sharding))
    return None if hit is None or hit.is_deleted() else hit


def _rewrapped(x: Any, sharding: NamedSharding) -> jax.Array | None:
    """The remembered placement of ``x`` as ``sharding``, or None."""
    if not isinstance(x, jax.Array):
        return None
    hit = _PLACED.get((id(x), sharding))
    if hit is None or hit[0]() is not x or hit[1].is_deleted():
        return None  # a deleted source (donated, say) goes to device_put, which says so
    return hit[1]


def _remember(x: Any, sharding: NamedSharding, placed: Any) -> None:
    key = _value_key(x, sharding)
    if key is not None:
        _BY_VALUE.pop(key, None)
        while len(_BY_VALUE) >= _BY_VALUE_MAX:
            _BY_VALUE.pop(next(iter(_BY_VALUE)))
        _BY_VALUE[key] = placed
        return
    # ``placed is x`` (a jax version that hands the source back) would make
    # the memo hold its own key's source alive, pinning it forever.
    if not (isinstance(x, jax.Array) and x.is_fully_addressable and placed is not x
            and x.sharding.is_equivalent_to(sharding, x.ndim)):
        return
    if len(_PLACED) >= _PLACED_MAX:
        _PLACED.pop(next(iter(_PLACED)))
    key = (id(x), sharding)
    # The dict is bound now: at interpreter exit the module's globals are
    # cleared before the last arrays die.
    _PLACED[key] = (weakref.ref(x, lambda _, k=key, memo=_PLACED: memo.pop(k, None)),
                    placed)


def is_spread(x: Any) -> bool:
    """Whether ``x`` is a jax array with rows on other processes' devices
    (reading it whole needs a collective)."""
    return (isinstance(x, jax.Array) and not x.is_fully_addressable
            and not x.is_fully_replicated)


def to_host(x: Any) -> np.ndarray:
    """``x`` as a NumPy array, without communicating with other processes.

    Raises:
        ValueError: ``x`` is spread over the devices of several processes
            (see :func:`gather_to_host`, which every process must call).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.training.sharding import to_host
        >>> to_host(jnp.arange(3)).tolist()
        [0, 1, 2]
    """
    if is_spread(x):
        raise ValueError(
            f"this array (shape {x.shape}) is spread over the devices of several processes, "
            "so reading it is a collective that every process must call: use "
            "SweepResult.gather_params() for a sweep's params, or "
            "jaxopt_core.training.sharding.gather_to_host, on every process"
        )
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))  # replicated: the local copy is all of it
    return np.asarray(x)


def gather_to_host(tree: Any) -> Any:
    """Every jax array leaf of ``tree`` as a NumPy array holding all of it;
    other leaves (NumPy arrays, strings, ints) unchanged.

    Collective on several hosts: every process calls it with a tree of the
    same structure and shardings, and gets the same values. The spread
    arrays are replicated in one compiled program (one exchange for the
    whole tree, whatever its size); on one process it only copies to the host.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.training.sharding import gather_to_host
        >>> gather_to_host({"a": jnp.ones(2), "name": "x"})
        {'a': array([1., 1.], dtype=float32), 'name': 'x'}
    """
    leaves, treedef = jax.tree.flatten(tree)
    spread = [i for i, x in enumerate(leaves) if is_spread(x)]
    if spread:
        targets = tuple(_replicated(leaves[i]) for i in spread)
        copies = jax.jit(_identity, out_shardings=targets)(*(leaves[i] for i in spread))
        for i, x in zip(spread, copies):
            leaves[i] = x
    return treedef.unflatten([to_host(x) if isinstance(x, jax.Array) else x for x in leaves])


def _identity(*xs):
    return xs


def _replicated(x: jax.Array) -> NamedSharding:
    """A sharding that puts all of ``x`` on every device ``x`` spans."""
    devices = sorted(x.sharding.device_set, key=lambda d: (d.process_index, d.id))
    return NamedSharding(Mesh(np.asarray(devices, dtype=object), ("all",)), PartitionSpec())


def gather_small_fields(result: Any) -> Any:
    """The NamedTuple ``result`` with every field but the per-member params
    (:data:`PER_MEMBER_PARAMS`) as host NumPy data (collective: see
    :func:`gather_to_host`)."""
    small = {n: getattr(result, n) for n in result._fields if n not in PER_MEMBER_PARAMS}
    return result._replace(**gather_to_host(small))


def gather_param_fields(result: Any) -> Any:
    """The NamedTuple ``result`` with its per-member params fields
    (:data:`PER_MEMBER_PARAMS`) as host NumPy data (collective: see
    :func:`gather_to_host`)."""
    stacked = {n: getattr(result, n) for n in PER_MEMBER_PARAMS if n in result._fields}
    return result._replace(**gather_to_host(stacked))


def member_to_host(tree: Any, index: int | None) -> Any:
    """Row ``index`` of every leaf of a member-stacked ``tree``, as NumPy
    arrays on every process (collective: see :func:`gather_to_host`); None
    when ``index`` is None."""
    if index is None or tree is None:
        return None
    leaves, treedef = jax.tree.flatten(tree)
    if all(_host_visible(x) for x in leaves):
        # The host reads these buffers in place: the row is a copy of a view,
        # with no program to dispatch (0.27 ms -> 0.06 ms of a small sweep's host time).
        return treedef.unflatten([np.array(np.asarray(x)[index]) for x in leaves])
    return gather_to_host(_take_row(tree, np.int32(index)))


def _host_visible(x: Any) -> bool:
    """Whether ``np.asarray(x)`` reads ``x`` without a copy: a NumPy array,
    or a jax array held whole by one CPU device of this process."""
    if not isinstance(x, jax.Array):
        return isinstance(x, np.ndarray)
    devices = x.sharding.device_set
    return (x.is_fully_addressable and len(devices) == 1
            and next(iter(devices)).platform == "cpu")


@jax.jit
def _take_row(tree: Any, index: jax.Array) -> Any:
    # A traced index: one compiled program whichever member is taken.
    return jax.tree.map(lambda x: x[index], tree)
