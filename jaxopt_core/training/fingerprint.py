"""What a checkpoint was written for: a JSON fingerprint of a run's configuration.

A checkpoint can only be resumed by the run that wrote it: the same grid, the
same shapes, steps, optimizer, batch size, key and segment length. Before a
checkpointed :func:`~jaxopt_core.fit` or :func:`~jaxopt_core.sweep` resumes,
it compares the fingerprint stored beside the checkpoints with its own; any
difference raises :class:`CheckpointMismatchError` naming every entry that
differs, with both values.

A fingerprint is a flat ``{name: str}`` dict. Arrays are described by dtype,
shape and content (small ones by value, larger ones by a SHA-256 of their
bytes), data by its tree structure, dtypes and shapes only (not its values:
hashing a data set at every call would cost more than it protects).
Functions and optimizers have no value to compare, so :func:`describe`
writes a *description*: the module and qualified name of a function, and,
recursively, what it closes over (the numbers a ``jc.adam(0.1)`` or
``optax.adam(0.1)`` captured), its defaults, a ``functools.partial``'s
arguments, a NamedTuple's or a dataclass's fields (``jc.pbt(...)``).

Limits (what a description cannot see): the code of a function (edit the
body of ``loss_fn`` and keep its name, and the checkpoint is accepted);
module globals a function reads; objects other than functions, containers,
numbers, strings, arrays and dataclasses, which are described by their type
alone (a flax nnx Module's attributes, for instance, are not compared; a
linen Module, a dataclass, is described by its fields); anything more than a
few closures deep. These limits make a false *refusal* unlikely (nothing in
a description depends on memory addresses or object identity), at the price
of accepting some changed configurations; the library versions are stored
too, for reading, but not compared.

Example:
    >>> import jaxopt_core as jc
    >>> from jaxopt_core.training.fingerprint import describe, differences
    >>> describe(jc.adam(0.1)) == describe(jc.adam(0.1)), describe(jc.adam(0.1)) == describe(
    ...     jc.adam(0.2))
    (True, False)
    >>> differences({"steps": "100", "batch_size": "8"}, {"steps": "200", "batch_size": "8"})
    ["steps: checkpoint '100', this call '200'"]
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import types
from typing import Any

import jax
import numpy as np

from jaxopt_core.training.tree_codec import is_key_array, is_namedtuple

# How far into closures, containers and partials a description goes.
_DEPTH = 8
# Arrays up to this size are described by their values, larger ones by a hash.
_SMALL = 16
# Arrays above this many bytes are described by dtype and shape alone.
_HASHED_BYTES = 64 << 20
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class CheckpointMismatchError(ValueError):
    """A checkpoint folder written by a run with a different configuration.

    Raised by a checkpointed :func:`~jaxopt_core.fit` or
    :func:`~jaxopt_core.sweep` whose ``checkpoint_dir`` holds checkpoints of
    another call; the message names every entry that differs, with both values.

    Example:
        >>> import tempfile, jax.numpy as jnp, jaxopt_core as jc
        >>> from jaxopt_core.training.checkpoints import CheckpointStore
        >>> folder = tempfile.mkdtemp()
        >>> with CheckpointStore(folder, {"steps": "100", "batch_size": "8"}) as store:
        ...     store.save(10, {"x": jnp.ones(2)}, {"t": 10})
        >>> try:
        ...     CheckpointStore(folder, {"steps": "200", "batch_size": "8"})
        ... except jc.CheckpointMismatchError as err:
        ...     print(str(err).splitlines()[1].strip())
        steps: checkpoint '100', this call '200'
    """


def describe(obj: Any, depth: int = _DEPTH) -> str:
    """A deterministic text description of ``obj`` (see the module notes).

    Equal for objects built the same way in another process (no memory
    addresses); different when a captured number, array, argument or
    function name differs.
    """
    return _describe(obj, depth, frozenset())


def _describe(obj: Any, depth: int, seen: frozenset) -> str:
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return repr(obj)
    if depth <= 0 or id(obj) in seen:
        return "..."
    seen = seen | {id(obj)}
    go = functools.partial(_describe, depth=depth - 1, seen=seen)
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        return describe_array(obj)
    if isinstance(obj, functools.partial):
        args = [go(a) for a in obj.args] + [f"{k}={go(v)}" for k, v in obj.keywords.items()]
        return f"partial({go(obj.func)}, {', '.join(args)})"
    if isinstance(obj, types.FunctionType):
        return _describe_function(obj, go)
    if isinstance(obj, types.MethodType):
        return f"{go(obj.__self__)}.{obj.__func__.__name__}"
    if isinstance(obj, (types.BuiltinFunctionType, type, types.ModuleType)):
        return _name_of(obj)
    if is_namedtuple(obj):
        items = ", ".join(f"{n}={go(v)}" for n, v in zip(obj._fields, obj))
        return f"{_name_of(type(obj))}({items})"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):  # jc.pbt(...), axes
        items = ", ".join(f"{f.name}={go(getattr(obj, f.name, None))}"
                          for f in dataclasses.fields(obj))
        return f"{_name_of(type(obj))}({items})"
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__}[{', '.join(go(v) for v in obj)}]"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{go(k)}: {go(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (set, frozenset)):
        return "{" + ", ".join(sorted(go(v) for v in obj)) + "}"
    # Any other object: its type alone (its repr may hold an address or a
    # value that differs from process to process).
    return f"<{_name_of(type(obj))}>"


def _describe_function(fn: types.FunctionType, go: Any) -> str:
    text = _name_of(fn)
    if fn.__closure__:
        cells = []
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__):
            try:
                cells.append(f"{name}={go(cell.cell_contents)}")
            except ValueError:  # an empty cell
                cells.append(f"{name}=<empty>")
        text += "[" + ", ".join(cells) + "]"
    if fn.__defaults__:
        text += "(defaults " + ", ".join(go(d) for d in fn.__defaults__) + ")"
    if fn.__kwdefaults__:
        text += "(" + ", ".join(f"{k}={go(v)}" for k, v in fn.__kwdefaults__.items()) + ")"
    return text


def _name_of(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if name is None:
        return f"<{type(obj).__name__}>"
    return _ADDRESS.sub("", f"{module}.{name}" if module else name)


def describe_array(x: Any) -> str:
    """``dtype[shape]`` and the values (small arrays) or a SHA-256 of the bytes."""
    if is_key_array(x):
        return f"key<{jax.random.key_impl(x)}>:{describe_array(jax.random.key_data(x))}"
    if isinstance(x, jax.core.Tracer):
        return f"traced {x.dtype}{list(x.shape)}"
    head = f"{np.dtype(x.dtype)}{list(np.shape(x))}"
    # Large arrays, and global arrays this process cannot read whole: by shape.
    if (np.size(x) * np.dtype(x.dtype).itemsize > _HASHED_BYTES
            or not getattr(x, "is_fully_addressable", True)):
        return head
    host = np.asarray(x)
    if host.size <= _SMALL:
        return f"{head}:{host.tolist()!r}"
    return f"{head}:sha256={hashlib.sha256(np.ascontiguousarray(host).tobytes()).hexdigest()}"


def describe_shapes(tree: Any) -> str:
    """The tree structure, dtypes and shapes of ``tree`` (not its values)."""
    leaves, treedef = jax.tree.flatten(tree)
    kinds = [f"{np.dtype(getattr(x, 'dtype', np.asarray(x).dtype))}{list(np.shape(x))}"
             if not is_key_array(x) else f"key<{jax.random.key_impl(x)}>{list(x.shape)}"
             for x in leaves]
    return _ADDRESS.sub("", f"{treedef} {kinds}")


def differences(saved: dict[str, str], now: dict[str, str]) -> list[str]:
    """One line per entry that differs between two fingerprints (long values
    are cut to the part around their first difference)."""
    lines = []
    for name in list(saved) + [n for n in now if n not in saved]:
        a, b = saved.get(name, "<absent>"), now.get(name, "<absent>")
        if a != b:
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            a, b = _around(a, first), _around(b, first)
            lines.append(f"{name}: checkpoint {a!r}, this call {b!r}")
    return lines


def _around(text: str, at: int, width: int = 70) -> str:
    start, end = max(0, at - width), at + width
    return ("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")
