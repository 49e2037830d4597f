r"""Finished results in one file: ``save``, :func:`load_result`, :func:`load_metadata`.

``FitResult.save(path)`` and ``SweepResult.save(path)`` (both call
:func:`save_result`) write one ``.npz`` file: a zip archive, uncompressed,
holding one ``.npy`` file per array and ``manifest.json``. The manifest
records the result type, every field as a tree of JSON nodes (see
:mod:`jaxopt_core.training.tree_codec`) pointing at the arrays, a SHA-256 of
each ``.npy`` entry, the caller's ``config`` dict, the versions of
jaxopt_core, JAX, jaxlib, optax, NumPy and ml_dtypes, a summary (result type,
steps, members, hyperparameter names), and a SHA-256 of its own content.

Why this format. A finished result is small and is shared, attached and
inspected, so it is one file anyone can read with NumPy alone::

    z = np.load("run.npz")                     # allow_pickle=False is the default
    z["losses"], z["params/w"], z["hparams/learning_rate"]
    manifest = json.loads(z["manifest.json"])  # ml_dtypes arrays (bfloat16, ...)
                                               # are stored as uint of their width;
                                               # the manifest names the dtype

No pickle is written or read: arrays are written with
``allow_pickle=False`` and read by parsing the ``.npy`` header (a literal)
and copying raw bytes into an array of an allowlisted dtype; nothing named in
the file is imported or evaluated. orbax-checkpoint stays the choice for
*checkpoints* of a running program (sharded, asynchronous, restored onto a
mesh); for a finished result its directory of TensorStore files, and
restoring NamedTuples only through a target tree the caller must build, buy
nothing, and the file would not open without orbax.

Integrity. Writing goes to a temporary file in the same folder, then
``os.replace``: a file at ``path`` is either the old one or the complete new
one. Loading checks the manifest's SHA-256, each entry's zip CRC and
SHA-256, each array's dtype and shape against the manifest, that no entry is
missing, extra or duplicated, and that the result type has the file's
fields; any mismatch raises
:class:`~jaxopt_core.training.archive.ResultFileError` (a ``ValueError``,
exported as ``jaxopt_core.ResultFileError``) naming the file and what is
wrong; see :mod:`jaxopt_core.training.archive`. A file saved twice from
the same result is the same bytes.

Saving runs no collective: the process that calls ``save`` writes the file
(on several hosts, call it from one process, e.g. ``jax.process_index() ==
0``). A sweep's stacked params are global arrays there, which no single
process can read: save ``result.gather_params()`` (gathered on every
process) instead; ``save`` on the result itself raises a ``ValueError``
saying so. Loaded jax arrays sit on the default device, unsharded: place
them with ``jax.device_put`` to shard again.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxopt_core.training.archive import (
    FORMAT_VERSION,
    MANIFEST,
    ArrayReader,
    open_archive,
    read_manifest,
    write_archive,
)
from jaxopt_core.training.fit import FitResult
from jaxopt_core.training.results import SweepResult
from jaxopt_core.training.tree_codec import CodecError, TreeEncoder, decode_tree, get

RESULT_TYPES = {"FitResult": FitResult, "SweepResult": SweepResult}


class ResultMetadata(NamedTuple):
    """What :func:`load_metadata` returns (read from the manifest alone).

    Attributes:
        kind: ``"FitResult"`` or ``"SweepResult"``.
        steps: the number of steps (last axis of ``losses``), or None.
        members: K for a sweep, None for a fit.
        hparams: the names of the swept hyperparameters, in grid order.
        config: the ``config`` passed to ``save`` (None when none was).
        versions: ``{package: version}`` of the process that saved it.
        format_version: the version of the file format.
    """

    kind: str
    steps: int | None
    members: int | None
    hparams: tuple[str, ...]
    config: Any
    versions: dict[str, str]
    format_version: int


def save_result(result: Any, path: str | os.PathLike, config: dict | None = None) -> Path:
    """Write a :class:`FitResult` or :class:`SweepResult` to ``path`` (one file,
    written as given; ``.npz`` is the natural suffix). Returns the path.

    ``config``: None or a dict of JSON data (str keys; lists, str, int,
    finite float, bool, None) stored with the result, e.g. the options of the
    run; it loads back exactly, via :func:`load_metadata`.

    Raises:
        TypeError: a field holds something that cannot be stored without
            pickle (the message names the type and where it is), or
            ``config`` is not JSON data.
        ValueError: a non-finite float in ``config``.
    """
    kind = type(result).__name__
    if RESULT_TYPES.get(kind) is not type(result):
        raise TypeError(f"result must be a FitResult or SweepResult, got {type(result)!r}")
    check_config(config)
    enc = TreeEncoder()
    fields = {name: enc.encode(getattr(result, name), name) for name in result._fields}
    content = {"kind": kind, "summary": _summary(result), "config": config,
               "versions": versions(), "fields": fields}
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"path {str(path)!r} is a folder; give a file name, "
                                f"e.g. {str(path / 'result.npz')!r}")
    write_archive(path, enc.arrays, content)
    return path


def load_result(path: str | os.PathLike) -> Any:
    """The :class:`FitResult` or :class:`SweepResult` saved at ``path``.

    Every array comes back with its dtype, shape and bits (NaN payloads
    included); containers as saved (see :mod:`jaxopt_core.training.tree_codec`
    for NamedTuples from outside jaxopt_core/optax). Fields a newer result
    type added with a default take the default.

    Raises:
        ResultFileError: (a ``ValueError``) the file is damaged, truncated,
            edited, or not a saved result; the message says what.

    Example:
        >>> import os, tempfile, jax.numpy as jnp, jaxopt_core as jc
        >>> res = jc.fit(lambda w, d: jnp.sum((w - d) ** 2), jnp.zeros(2), jc.sgd(0.1),
        ...              jnp.ones(2), steps=3)
        >>> path = res.save(os.path.join(tempfile.mkdtemp(), "fit.npz"), config={"lr": 0.1})
        >>> back = jc.load_result(path)
        >>> bool((back.params == res.params).all()), back.losses.dtype
        (True, dtype('float32'))
        >>> jc.load_metadata(path).config
        {'lr': 0.1}
    """
    with open_archive(path) as zf:
        content = read_manifest(zf)
        cls = _result_class(content)
        nodes = _field_nodes(content, cls)
        reader = ArrayReader(zf)
        values = {name: decode_tree(node, name, reader.read) for name, node in nodes.items()}
        unread = set(zf.namelist()) - reader.entries - {MANIFEST}
        if unread:
            raise CodecError(f"entries not described by the manifest: {sorted(unread)}")
    return cls(**values)


def load_metadata(path: str | os.PathLike) -> ResultMetadata:
    """The :class:`ResultMetadata` of a saved result: type, steps, members,
    hyperparameter names, ``config`` and versions, from the (checksummed)
    manifest alone, without reading the arrays.

    Example:
        >>> import os, tempfile, jax.numpy as jnp, numpy as np, jaxopt_core as jc
        >>> res = jc.sweep(lambda w, d: jnp.sum((w - d) ** 2), jnp.zeros(2), jc.sgd,
        ...                jnp.ones(2), grid={"learning_rate": np.array([0.1, 0.2])}, steps=4)
        >>> meta = jc.load_metadata(res.save(os.path.join(tempfile.mkdtemp(), "s.npz")))
        >>> meta.kind, meta.steps, meta.members, meta.hparams
        ('SweepResult', 4, 2, ('learning_rate',))
    """
    with open_archive(path) as zf:
        content = read_manifest(zf)
        kind = _result_class(content).__name__
        summary = get(content, "summary", dict, "manifest")
        steps, members = summary.get("steps"), summary.get("members")
        names = get(summary, "hparams", list, "summary")
        if not all(v is None or type(v) is int for v in (steps, members)) or not all(
                type(n) is str for n in names):
            raise CodecError(f"malformed summary {summary}")
        return ResultMetadata(kind, steps, members, tuple(names), content.get("config"),
                              get(content, "versions", dict, "manifest"),
                              FORMAT_VERSION)


def check_config(config: Any, where: str = "config") -> None:
    """Raise unless ``config`` is None or a dict of JSON data that loads back exactly."""
    if where == "config" and config is not None and type(config) is not dict:
        raise TypeError(f"config must be a dict or None, got {type(config).__name__}")
    if config is None or type(config) in (str, bool, int):
        return
    if type(config) is float:
        if not math.isfinite(config):
            raise ValueError(f"{where} = {config}: a non-finite float is not JSON; store a string")
    elif type(config) is list:
        for i, v in enumerate(config):
            check_config(v, f"{where}[{i}]")
    elif type(config) is dict:
        for k, v in config.items():
            if type(k) is not str:
                raise TypeError(f"{where} has key {k!r}: config keys must be str")
            check_config(v, f"{where}[{k!r}]")
    else:
        hint = " (use a list)" if isinstance(config, tuple) else ""
        raise TypeError(
            f"{where} is a {type(config).__name__}{hint}: config holds JSON data only "
            "(dicts with str keys, lists, str, int, float, bool, None), so it loads back exactly"
        )


def versions() -> dict[str, str]:
    """Versions of the packages that shape a result, as recorded in files."""
    import jaxlib
    import ml_dtypes
    import optax

    try:  # the installed distribution (this layer may not import the package's API)
        own = importlib.metadata.version("jaxopt-core")
    except importlib.metadata.PackageNotFoundError:
        own = "unknown"
    return {"jaxopt_core": own, "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "optax": optax.__version__,
            "numpy": np.__version__, "ml_dtypes": ml_dtypes.__version__,
            "python": platform.python_version()}


def _summary(result: Any) -> dict:
    shape = tuple(np.shape(getattr(result, "losses", None)))
    steps = int(shape[-1]) if shape else None
    if getattr(result, "loss_steps", None) is not None and result.steps_trained is not None:
        steps = int(result.steps_trained)  # log_every: losses holds one entry per window
    return {"steps": steps,
            "members": int(shape[0]) if len(shape) == 2 else None,
            "hparams": [str(n) for n in (getattr(result, "hparams", None) or {})]}


def _result_class(content: dict) -> type:
    kind = get(content, "kind", str, "manifest")
    if kind not in RESULT_TYPES:
        raise CodecError(f"unknown result type {kind!r}; expected one of {sorted(RESULT_TYPES)}")
    return RESULT_TYPES[kind]


def _field_nodes(content: dict, cls: type) -> dict:
    """The file's field nodes, checked against the fields of ``cls`` now."""
    fields = get(content, "fields", dict, "manifest")
    versions_ = content.get("versions")
    saved_by = versions_.get("jaxopt_core", "?") if isinstance(versions_, dict) else "?"
    unknown = [n for n in fields if n not in cls._fields]
    missing = [n for n in cls._fields if n not in fields and n not in cls._field_defaults]
    if unknown or missing:
        raise CodecError(
            f"the file's {cls.__name__} (saved by jaxopt_core {saved_by}) has fields "
            f"{list(fields)}; this version's has {list(cls._fields)} "
            f"(unknown: {unknown}, missing without a default: {missing})"
        )
    return fields


