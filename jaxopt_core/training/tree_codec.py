"""Pytrees as JSON nodes plus a list of host arrays, and back, with no pickle.

:class:`TreeEncoder` turns a pytree into a JSON-able *node* and collects its
arrays; :func:`decode_tree` rebuilds the pytree from the node and a function
that returns each array. :mod:`jaxopt_core.training.serialization` stores the
two in one file.

Node kinds (the ``"t"`` key): ``none``; ``bool``/``int``/``str``/``float``
(Python scalars; a non-finite float is stored as the string ``"nan"``,
``"inf"`` or ``"-inf"``); ``array`` (``kind`` ``jax``, ``numpy`` or
``scalar`` for a NumPy scalar, ``dtype``, ``shape``, ``entry``); ``key`` (a
typed PRNG key array: its ``impl`` name and its ``key_data`` array);
``dict`` (``items``: ``[key, node]`` pairs, keys ``str`` or ``int``, in
insertion order); ``list``; ``tuple``; ``namedtuple`` (``module``, ``name``,
``fields``, ``items``).

Dtypes are NumPy's ``dtype.str`` (``"<f4"``, ``"|b1"``) for the standard
kinds, or the name of an ``ml_dtypes`` type (``"bfloat16"``,
``"float8_e4m3fn"``, ``"int4"``, ...): NumPy cannot describe those in a
``.npy`` header, so their bytes are stored viewed as unsigned integers of the
same width, and viewed back on load; bit for bit either way.

What comes back: the same containers; jax arrays as jax arrays on the default
device (not sharded, not weakly typed); NumPy arrays and scalars as such.
NamedTuples defined in ``jaxopt_core`` or ``optax`` come back as their own
class when the file's field names match it; any other NamedTuple comes back as
a :func:`collections.namedtuple` of the same name and fields created on load
(same values, attributes and tuple behaviour, but not an instance of the
original class). No class is imported by name from a file: only modules of
those two packages that are already imported are looked in.

Other pytree nodes (flax's ``FrozenDict``, equinox Modules, registered
dataclasses, dict or list subclasses) are refused with a ``TypeError`` that
names the type and where it is: convert them to dicts, lists or tuples first.

Example:
    >>> import numpy as np
    >>> from jaxopt_core.training.tree_codec import TreeEncoder, decode_tree
    >>> enc = TreeEncoder()
    >>> node = enc.encode({"w": np.arange(3.0), "n": None}, "params")
    >>> node["items"][0]
    ['w', {'t': 'array', 'kind': 'numpy', 'dtype': '<f8', 'shape': [3], 'entry': 'params/w.npy'}]
    >>> stored = {n["entry"]: a for n, a in enc.arrays}
    >>> decode_tree(node, "params", lambda n, where: stored[n["entry"]])
    {'w': array([0., 1., 2.]), 'n': None}
"""

from __future__ import annotations

import collections
import functools
import math
import re
import sys
from collections.abc import Callable
from typing import Any

import jax
import ml_dtypes
import numpy as np

from jaxopt_core.training.sharding import to_host

# Dtypes NumPy's .npy header cannot name; stored as unsigned ints of their width.
ML_DTYPES = {
    name: np.dtype(getattr(ml_dtypes, name))
    for name in (
        "bfloat16", "float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn", "float8_e3m4",
        "float8_e4m3", "float8_e4m3b11fnuz", "float8_e4m3fn", "float8_e4m3fnuz",
        "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "int2", "int4", "uint2", "uint4",
    )
    if hasattr(ml_dtypes, name)
}
# bool, signed/unsigned ints, floats, complex, str, bytes: never objects or records.
STANDARD_KINDS = "biufcUS"
KEY_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
TRUSTED_PACKAGES = ("jaxopt_core", "optax")


class CodecError(ValueError):
    """A node that does not describe a pytree (a damaged or edited file)."""


def dtype_name(dtype: np.dtype, where: str) -> str:
    """The stored name of ``dtype``; ``TypeError`` for object or record dtypes."""
    for name, ml in ML_DTYPES.items():
        if dtype == ml:
            return name
    if is_standard(dtype):
        return dtype.str
    raise TypeError(f"cannot save {where}: arrays of dtype {dtype} cannot be stored without pickle")


def is_standard(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is a plain bool/int/float/complex/str/bytes dtype
    (``.npy`` headers describe it; no objects, records or subarrays)."""
    return dtype.kind in STANDARD_KINDS and dtype.fields is None and dtype.subdtype is None


def parse_dtype(name: Any, where: str) -> tuple[np.dtype, np.dtype]:
    """``(dtype, storage dtype)`` for a stored dtype name, from the allowlist only."""
    if isinstance(name, str) and name in ML_DTYPES:
        dtype = ML_DTYPES[name]
        return dtype, np.dtype(f"u{dtype.itemsize}")
    try:
        dtype = np.dtype(name) if isinstance(name, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.str != name or not is_standard(dtype):
        raise CodecError(f"{where}: {name!r} is not a dtype this format stores")
    return dtype, dtype


def storage_view(x: np.ndarray) -> np.ndarray:
    """``x`` as stored: ml_dtypes arrays viewed as unsigned ints of their width."""
    if x.dtype in ML_DTYPES.values():
        # Not np.ascontiguousarray: it turns a 0-d array into a 1-d one.
        x = x if x.flags.c_contiguous else x.copy(order="C")
        return x.view(f"u{x.dtype.itemsize}")
    return x


def is_namedtuple(x: Any) -> bool:
    """Whether ``x`` is an instance of a NamedTuple (or collections.namedtuple) class."""
    return isinstance(x, tuple) and isinstance(getattr(type(x), "_fields", None), tuple)


def is_key_array(x: Any) -> bool:
    """Whether ``x`` is a typed PRNG key array (``jax.random.key``)."""
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


class TreeEncoder:
    """Encodes pytrees; ``arrays`` collects ``(node, host array as stored)``.

    Each array gets a unique zip entry name built from its path, e.g.
    ``params/w.npy`` or ``opt_state/0/mu/w.npy``; the node records it.
    """

    def __init__(self):
        self.arrays: list[tuple[dict, np.ndarray]] = []
        self._entries: set[str] = set()

    def encode(self, x: Any, where: str, parts: tuple[str, ...] = ()) -> dict:
        """The node of ``x``; ``where`` names it in errors, ``parts`` in entry names."""
        parts = parts or (where,)
        if x is None:
            return {"t": "none"}
        if type(x) in (bool, int, str):
            return {"t": type(x).__name__, "v": x}
        if type(x) is float:
            return {"t": "float", "v": x if math.isfinite(x) else repr(x)}
        if isinstance(x, (np.ndarray, np.generic, jax.Array)):
            return self._array(x, where, parts)
        if type(x) is dict:
            return {"t": "dict", "items": self._items(x, where, parts)}
        if type(x) in (list, tuple) or is_namedtuple(x):
            items = [self.encode(v, f"{where}[{i}]", (*parts, str(i))) for i, v in enumerate(x)]
            if not is_namedtuple(x):
                return {"t": type(x).__name__, "items": items}
            cls = type(x)
            return {"t": "namedtuple", "module": cls.__module__, "name": cls.__name__,
                    "fields": list(cls._fields), "items": items}
        raise TypeError(unsupported_message(x, where))

    def _items(self, x: dict, where: str, parts: tuple[str, ...]) -> list:
        out = []
        for k, v in x.items():
            if type(k) not in (str, int):
                raise TypeError(
                    f"cannot save {where}: dict key {k!r} is a {type(k).__name__}; "
                    "only str and int keys can be stored"
                )
            out.append([k, self.encode(v, f"{where}[{k!r}]", (*parts, str(k)))])
        return out

    def _array(self, x: Any, where: str, parts: tuple[str, ...]) -> dict:
        if is_key_array(x):
            impl = str(jax.random.key_impl(x))
            if impl not in KEY_IMPLS:
                raise TypeError(f"cannot save {where}: PRNG keys of implementation {impl!r}")
            return {"t": "key", "impl": impl,
                    "data": self._array(jax.random.key_data(x), where, parts)}
        if isinstance(x, jax.Array):
            kind = "jax"
        else:
            kind = "scalar" if isinstance(x, np.generic) else "numpy"
        host = to_host(x) if kind == "jax" else np.asarray(x)
        node = {"t": "array", "kind": kind, "dtype": dtype_name(host.dtype, where),
                "shape": list(host.shape), "entry": self._entry(parts)}
        self.arrays.append((node, storage_view(host)))
        return node

    def _entry(self, parts: tuple[str, ...]) -> str:
        """A unique, portable zip entry name for the array at ``parts``."""
        base = "/".join(re.sub(r"[^A-Za-z0-9_.-]", "_", p).strip(".") or "_" for p in parts)
        name, n = base, 1
        while name in self._entries:
            n += 1
            name = f"{base}~{n}"
        self._entries.add(name)
        return name + ".npy"


def unsupported_message(x: Any, where: str) -> str:
    """Why ``x`` cannot be saved: a pytree node type, or a leaf type."""
    cls = type(x)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if not jax.tree_util.treedef_is_leaf(jax.tree.structure(x)):
        return (
            f"cannot save {where}: it is a pytree node of type {name}; results can hold "
            "dicts (str or int keys), lists, tuples, NamedTuples, None, arrays and Python "
            "scalars. Convert it first (e.g. to a dict of its arrays)."
        )
    return f"cannot save {where}: a leaf of type {name} is not an array or a Python scalar"


def decode_tree(node: Any, where: str, read: Callable[[dict, str], np.ndarray]) -> Any:
    """The pytree a node describes; ``read(node, where)`` returns an array node's
    stored array, already checked and viewed in its dtype."""
    t = get(node, "t", str, where)
    if t == "none":
        return None
    if t in ("bool", "int", "str"):
        return get(node, "v", {"bool": bool, "int": int, "str": str}[t], where)
    if t == "float":
        v = node.get("v")
        if type(v) is float or v in ("nan", "inf", "-inf"):
            return float(v)
        raise CodecError(f"{where}: bad float {v!r}")
    if t == "array":
        return _decode_array(node, where, read)
    if t == "key":
        impl = get(node, "impl", str, where)
        if impl not in KEY_IMPLS:
            raise CodecError(f"{where}: unknown PRNG implementation {impl!r}")
        return jax.random.wrap_key_data(_decode_array(get(node, "data", dict, where), where, read),
                                        impl=impl)
    if t == "dict":
        return {_key(k, where): decode_tree(v, f"{where}[{k!r}]", read)
                for k, v in _pairs(get(node, "items", list, where), where)}
    if t not in ("list", "tuple", "namedtuple"):
        raise CodecError(f"{where}: unknown node kind {t!r}")
    items = [decode_tree(v, f"{where}[{i}]", read)
             for i, v in enumerate(get(node, "items", list, where))]
    if t == "list":
        return items
    return tuple(items) if t == "tuple" else _namedtuple(node, where)(*items)


def _decode_array(node: dict, where: str, read: Callable[[dict, str], np.ndarray]) -> Any:
    kind = get(node, "kind", str, where)
    arr = read(node, where)
    if kind == "numpy":
        return arr
    if kind == "scalar" and arr.ndim == 0:
        return arr[()]
    if kind == "jax":
        out = jax.device_put(arr)
        if out.dtype != arr.dtype:
            raise ValueError(f"{where} is a {arr.dtype} jax array, which JAX cannot hold "
                             "in this configuration (for 64-bit types set jax_enable_x64)")
        return out
    raise CodecError(f"{where}: bad array kind {kind!r}")


def get(node: Any, key: str, typ: type, where: str) -> Any:
    """``node[key]``, checked to be exactly of type ``typ``."""
    if not isinstance(node, dict) or type(node.get(key)) is not typ:
        raise CodecError(f"{where}: expected {key!r} of type {typ.__name__} in {str(node)[:80]}")
    return node[key]


def _pairs(items: list, where: str) -> list:
    if not all(type(p) is list and len(p) == 2 for p in items):
        raise CodecError(f"{where}: dict items must be [key, node] pairs")
    return items


def _key(k: Any, where: str) -> Any:
    if type(k) not in (str, int):
        raise CodecError(f"{where}: dict key {k!r} is not a str or int")
    return k


def _namedtuple(node: dict, where: str) -> type:
    module, name = get(node, "module", str, where), get(node, "name", str, where)
    fields = tuple(get(node, "fields", list, where))
    if len(fields) != len(node["items"]) or not all(type(f) is str for f in fields):
        raise CodecError(f"{where}: NamedTuple fields do not match its items")
    cls = trusted_class(module, name)
    if cls is not None and cls._fields == fields:
        return cls
    try:
        return substitute_namedtuple(name, fields)
    except ValueError as err:
        raise CodecError(f"{where}: bad NamedTuple {name!r} {fields}: {err}") from None


def trusted_class(module: str, name: str) -> type | None:
    """The NamedTuple class ``module.name`` when ``module`` belongs to
    ``jaxopt_core`` or ``optax`` and is already imported; else None. Nothing
    is imported because a file names it."""
    if module.split(".")[0] not in TRUSTED_PACKAGES or not name.isidentifier():
        return None
    import optax  # noqa: F401  (a fixed dependency: makes its state classes findable)

    mod = sys.modules.get(module)
    obj = vars(mod).get(name) if mod is not None else None
    return obj if isinstance(obj, type) and issubclass(obj, tuple) and hasattr(
        obj, "_fields") else None


@functools.cache
def substitute_namedtuple(name: str, fields: tuple[str, ...]) -> type:
    """A ``collections.namedtuple`` standing in for a NamedTuple class that is
    not restored by name; one class per ``(name, fields)``."""
    return collections.namedtuple(name, fields, module=__name__)
