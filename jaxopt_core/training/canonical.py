r"""One compiled program for equal optimizers: value keys for library-built objects.

``fit`` and ``sweep`` cache their compiled programs on the optimizer (or
``optimizer_fn``) and the loss function, which are Python objects compared
by identity. ``jc.adam(1e-3)`` written again, in a re-run notebook cell or a
loop, is a new object with new closures, so every call compiled the whole
run again (0.6 s for a small model, 36 s for a 1000-leaf tree). Two such
objects compute the same thing when they were built by the same library
code from equal values; :func:`canonical` finds that out and hands back the
object first seen with that value, so the cache hits.

The key (:func:`value_key`) walks what a callable closes over:

* a function defined in ``jaxopt_core`` or ``optax`` is its code object (by
  identity), its defaults and the keys of its closure cells, recursively;
* any other function (the user's ``loss_fn``, a mask, a schedule written by
  hand) is itself, by identity: its code can change under the same name;
* Python numbers by type and exact value (``float.hex``, so ``-0.0`` and
  ``0.0``, ``1`` and ``1.0`` and ``True`` differ); concrete arrays by dtype,
  shape, weak type and bytes; tuples, named tuples, lists, dicts and sets
  by type and contents (and attributes, for a subclass that has some);
  ``functools.partial`` by function and arguments;
* an instance of a class defined in those libraries (optax's ``MultiSteps``,
  a dataclass) by its class and attributes; an instance of a class of
  yours by identity (its methods may read more than its fields);
* anything else hashable by identity. A tracer, an array over 1 MiB, a cycle
  or an unhashable object of another kind gives no key: the object is used
  as it is, and compiles as before.

Equal keys mean equal library code run on equal values with the same user
functions, so the substituted object traces to the same program: results
are the same bit for bit (tested). A new *value* (another learning rate)
still compiles; :func:`~jaxopt_core.sweep` is the way to try many without
compiling again.

Example:
    >>> import jaxopt_core as jc, optax
    >>> from jaxopt_core.training.canonical import canonical, value_key
    >>> a, b = jc.adam(1e-3), jc.adam(1e-3)
    >>> a is b, value_key(a) == value_key(b), canonical(b) is canonical(a)
    (False, True, True)
    >>> value_key(jc.adam(1e-3)) == value_key(jc.adam(2e-3))
    False
    >>> value_key(optax.adam(0.1)) == value_key(optax.adam(0.1))
    True
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import types
from typing import Any

import jax
import numpy as np

from jaxopt_core.training.memo import Memo

#: Modules whose functions are compared by code and captured values.
LIBRARIES = ("jaxopt_core", "optax")
_MAX_BYTES = 1 << 20
_DEPTH = 64


class NoKey(Exception):
    """The object holds something a value key cannot describe."""


class _Same:
    """An identity component of a key: equal only to itself."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def value_key(obj: Any) -> Any:
    """A hashable key, equal for objects that compute the same thing (see
    the module notes), or None when ``obj`` holds something it cannot
    describe."""
    try:
        return _key(obj, _DEPTH, ())
    except (NoKey, RecursionError):
        return None
    except Exception:  # an object whose attributes or bytes cannot be read
        return None


_SEEN = Memo(size=64)


# id -> (the object, its canonical object): the same object passed again
# skips the walk (~0.1 ms for an Adam). The entry holds the object, so its id
# cannot be reused while the entry lives.
_BY_ID = Memo(size=64)


def canonical(obj: Any) -> Any:
    """The object first seen with ``obj``'s :func:`value_key` (``obj`` itself
    the first time, or when it has no key)."""
    if obj is None:
        return obj
    known = _BY_ID.get(id(obj))
    if known is not None and known[0] is obj:
        return known[1]
    key = value_key(obj)
    first = None if key is None else _SEEN.get(key)
    # Checked again: a list or dict it closes over may have changed since.
    if first is None or value_key(first) != key:
        first = obj
        _SEEN.put(key, obj)
    _BY_ID.put(id(obj), (obj, first))
    return first


@functools.cache
def _library_folders() -> tuple[str, ...]:
    folders = []
    for name in LIBRARIES:
        module = importlib.import_module(name)
        folders.append(os.path.dirname(os.path.realpath(module.__file__)) + os.sep)
    return tuple(folders)


@functools.lru_cache(maxsize=1024)
def _library_file(filename: str) -> bool:
    return os.path.realpath(filename).startswith(_library_folders())


def _from_library(fn: types.FunctionType) -> bool:
    # The code's file, not ``__module__``: functools.wraps copies the wrapped
    # (user's) module onto a library wrapper such as jc.regularized's.
    return _library_file(fn.__code__.co_filename)


def _key(obj: Any, depth: int, path: tuple) -> Any:
    if obj is None or isinstance(obj, (bool, int, str, bytes)):
        return (type(obj), obj)
    if isinstance(obj, float):
        return (type(obj), obj.hex())
    if isinstance(obj, complex):
        return (type(obj), obj.real.hex(), obj.imag.hex())
    if isinstance(obj, jax.core.Tracer):
        raise NoKey
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        return _array_key(obj)
    if isinstance(obj, np.dtype):
        return ("dtype", str(obj))
    if isinstance(obj, types.MethodType) and id(obj.__self__) in path:
        # A method of an object being described (MultiSteps keeps its bound
        # methods as attributes): which enclosing object, counted outwards.
        return ("own method", path[::-1].index(id(obj.__self__)), _key(obj.__func__, depth, path))
    if depth <= 0 or id(obj) in path:
        raise NoKey
    path = (*path, id(obj))
    go = functools.partial(_key, depth=depth - 1, path=path)
    if isinstance(obj, types.MethodType):
        return ("method", go(obj.__self__), go(obj.__func__))
    if isinstance(obj, functools.partial):
        return ("partial", type(obj), go(obj.func), go(obj.args), go(obj.keywords))
    if isinstance(obj, types.FunctionType):
        if not _from_library(obj):
            return _Same(obj)
        cells = []
        for cell in obj.__closure__ or ():
            try:
                cells.append(go(cell.cell_contents))
            except ValueError:  # an empty cell
                cells.append("<empty cell>")
        return ("function", _Same(obj.__code__), go(obj.__defaults__),
                go(obj.__kwdefaults__), tuple(cells), go(dict(obj.__dict__)))
    if isinstance(obj, (tuple, list, dict, set, frozenset)):
        # A subclass instance may carry attributes besides its contents.
        attributes = go(dict(vars(obj))) if hasattr(obj, "__dict__") else None
    if isinstance(obj, (tuple, list)):
        return (type(obj), tuple(go(v) for v in obj), attributes)
    if isinstance(obj, dict):
        return (type(obj), tuple((go(k), go(v)) for k, v in obj.items()), attributes)
    if isinstance(obj, (set, frozenset)):
        return (type(obj), frozenset(go(v) for v in obj), attributes)
    if type(obj).__module__.split(".")[0] in LIBRARIES:
        # An instance of a library class (optax's MultiSteps, a wrapped
        # schedule, a dataclass): its class's code and its attributes. Not a
        # class of the user's: its methods may read more than its fields.
        if hasattr(obj, "__dict__"):
            return (type(obj), go(dict(vars(obj))))
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return (type(obj), tuple((f.name, go(getattr(obj, f.name)))
                                     for f in dataclasses.fields(obj)))
    try:
        hash(obj)
    except TypeError:
        raise NoKey from None
    return _Same(obj)


def _array_key(x: Any) -> tuple:
    if x.nbytes > _MAX_BYTES:
        raise NoKey
    weak = bool(getattr(x, "weak_type", False))
    value = np.asarray(x)
    return ("array", type(x).__name__, str(value.dtype), value.shape, weak, value.tobytes())
