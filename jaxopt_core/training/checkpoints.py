r"""Checkpoints of a running ``fit`` or ``sweep``, written with orbax-checkpoint.

A checkpointed run (``checkpoint_dir=...``) is cut into segments of
``checkpoint_every`` steps (:mod:`jaxopt_core.training.segments`); after each
segment :class:`CheckpointStore` saves everything needed to go on, as one
orbax step named by the number of steps done:

* ``state``: a pytree (the run's carry, e.g. the ``SweepState`` of params,
  optimizer state, alive flags, data order and evaluations so far; the
  losses so far; the outputs of finished chunks; and ``extra``, a dict of
  arrays where a search strategy keeps its own state), saved with orbax's
  ``StandardSave``;
* ``meta``: a small JSON dict (steps done, the chunk, the shapes needed to
  build the restore target), saved with ``JsonSave``.

Restoring takes an *abstract target*: a pytree of ``jax.ShapeDtypeStruct``
with the structure, dtypes and shardings the run expects (see
:func:`abstract_target`). orbax then returns the target's own containers,
so optimizer states come back as their NamedTuple classes, not as the dicts
or lists a generic loader would make, and arrays land on the target's
devices (the same mesh, the same member sharding). Typed PRNG key arrays are
stored as their ``key_data`` and wrapped again on restore.

Complete or absent: orbax writes each step into a temporary folder and
renames it only once every file is written (``CheckpointManager``'s atomic
finalization), so a step killed half-way is never listed and the last
complete one is resumed. Saves are asynchronous: the arrays are copied to the
host before :meth:`CheckpointStore.save` returns and written to disk in the
background while the next segment runs. Only the last two complete steps
are kept.

Beside the steps, ``fingerprint.json`` records what configuration wrote them
(:mod:`jaxopt_core.training.fingerprint`); a folder whose complete
checkpoints came from another configuration is refused with
:class:`~jaxopt_core.training.fingerprint.CheckpointMismatchError`.

orbax-checkpoint is an optional dependency (``pip install
"jaxopt-core[checkpoint]"``), imported only when a ``checkpoint_dir`` is
given.

Example:
    >>> import tempfile, jax, jax.numpy as jnp, optax
    >>> from jaxopt_core.training.checkpoints import CheckpointStore, abstract_of
    >>> state = {"p": jnp.ones(3), "s": optax.adam(0.1).init(jnp.ones(3))}
    >>> folder = tempfile.mkdtemp()
    >>> with CheckpointStore(folder, {"run": "demo"}) as store:
    ...     store.save(10, state, {"t": 10})
    >>> with CheckpointStore(folder, {"run": "demo"}) as store:
    ...     back, meta = store.restore(store.latest_step(), abstract_of(state))
    >>> type(back["s"][0]).__name__, meta, bool((back["p"] == 1).all())
    ('ScaleByAdamState', {'t': 10}, True)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_core.training.fingerprint import CheckpointMismatchError, differences
from jaxopt_core.training.tree_codec import is_key_array

FINGERPRINT = "fingerprint.json"
_KEEP = 2


def import_orbax() -> Any:
    """``orbax.checkpoint``, or an ImportError saying how to install it."""
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:  # pragma: no cover - the test extra installs it
        raise ImportError(
            "checkpoint_dir needs orbax-checkpoint, which is not installed: "
            'pip install "jaxopt-core[checkpoint]" (or pip install orbax-checkpoint)'
        ) from e
    return ocp


def abstract_of(tree: Any, shardings: Any = None) -> Any:
    """The restore target of ``tree`` (arrays or ``ShapeDtypeStruct``): its
    structure, shapes, dtypes and shardings (``shardings``: a matching tree
    of shardings, default each leaf's own, if any)."""
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def abstract_target(jitted: Any, *args: Any, **kwargs: Any) -> Any:
    """The abstract output of ``jitted(*args, **kwargs)`` with the shardings its
    compiled program gives (``jax.eval_shape`` alone knows no shardings); the
    compile is the one a fresh run makes anyway."""
    shapes = jax.eval_shape(jitted, *args, **kwargs)
    shardings = jitted.lower(*args, **kwargs).compile().output_shardings
    return abstract_of(shapes, shardings)


class CheckpointStore:
    """The checkpoints of one run in ``directory``: orbax steps + ``fingerprint.json``.

    Opening checks the fingerprint: when the folder holds complete checkpoints
    written with another fingerprint it raises
    :class:`~jaxopt_core.training.fingerprint.CheckpointMismatchError` naming
    every difference; a folder without complete checkpoints takes the new
    fingerprint. Use as a context manager (closing waits for the last save).

    Args:
        directory: the checkpoint folder (created if missing).
        fingerprint: ``{name: str}``, the configuration (see
            :mod:`jaxopt_core.training.fingerprint`).
        info: JSON data stored in ``fingerprint.json`` for reading, not compared
            (e.g. library versions).
        what: how the folder is named in messages (the argument's name).
    """

    def __init__(self, directory: str | os.PathLike, fingerprint: dict[str, str],
                 info: dict | None = None, what: str = "checkpoint_dir"):
        ocp = import_orbax()
        self.directory = Path(directory).absolute()
        self.fingerprint = dict(fingerprint)
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(f"{what}={str(directory)!r} is a file, not a folder")
        self.directory.mkdir(parents=True, exist_ok=True)
        options = ocp.CheckpointManagerOptions(max_to_keep=_KEEP, create=True,
                                               enable_async_checkpointing=True)
        self._ocp = ocp
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        try:
            self._check_fingerprint(info or {}, what)
        except BaseException:
            self._manager.close()
            raise

    def _check_fingerprint(self, info: dict, what: str) -> None:
        path = self.directory / FINGERPRINT
        steps = self._manager.all_steps()
        if steps:
            if not path.exists():
                raise CheckpointMismatchError(
                    f"{what}={str(self.directory)!r} holds checkpoints (steps {steps}) "
                    f"but no {FINGERPRINT}: it was not written by jaxopt_core; use another folder")
            saved = json.loads(path.read_text()).get("fingerprint", {})
            diff = differences(saved, self.fingerprint)
            if diff:
                raise CheckpointMismatchError(
                    f"{what}={str(self.directory)!r} holds checkpoints of a different "
                    f"configuration; resuming needs the same call. Differences:\n  "
                    + "\n  ".join(diff)
                    + "\nUse another folder, or delete this one to start over.")
            return
        if jax.process_index() == 0:
            text = json.dumps({"fingerprint": self.fingerprint, "info": info}, indent=1)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)

    def latest_step(self) -> int | None:
        """The last complete step (steps done), or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Save ``state`` (a pytree of arrays) and ``meta`` (JSON) as ``step``;
        returns once the arrays are on the host, writes in the background."""
        args = self._ocp.args
        self._manager.save(step, args=args.Composite(
            state=args.StandardSave(_without_empty(_no_keys(state))), meta=args.JsonSave(meta)),
            force=True)

    def read_meta(self, step: int) -> dict:
        """The ``meta`` dict saved with ``step``."""
        args = self._ocp.args
        return self._manager.restore(step, args=args.Composite(meta=args.JsonRestore())).meta

    def restore(self, step: int, target: Any) -> tuple[Any, dict]:
        """``(state, meta)`` of ``step``, ``state`` with ``target``'s structure,
        containers, dtypes and shardings (see :func:`abstract_target`)."""
        args = self._ocp.args
        out = self._manager.restore(step, args=args.Composite(
            state=args.StandardRestore(_without_empty(target)), meta=args.JsonRestore()))
        return _with_empty(out.state, target), out.meta

    def wait(self) -> None:
        """Block until the last save is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def remove(self) -> None:
        """Delete the folder's checkpoints and fingerprint (not other files)."""
        self.close()
        for step in self.all_steps():
            shutil.rmtree(self.directory / str(step), ignore_errors=True)
        (self.directory / FINGERPRINT).unlink(missing_ok=True)


def _without_empty(tree: Any) -> Any:
    """Zero-size arrays (which orbax refuses to write) as None."""
    return jax.tree.map(lambda x: None if x.size == 0 else x, tree)


def _with_empty(tree: Any, target: Any) -> Any:
    """The zero-size arrays of ``target`` put back where ``tree`` has None."""

    def one(t, x):
        if t is None or x is not None:
            return x
        return jax.device_put(jnp.zeros(t.shape, t.dtype), t.sharding)

    return jax.tree.map(one, target, tree, is_leaf=lambda x: x is None)


def _no_keys(tree: Any) -> Any:
    """``tree``, or a TypeError if it holds a typed PRNG key array."""
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        if is_key_array(x):
            raise TypeError(f"checkpointed state holds a typed PRNG key at "
                            f"{jax.tree_util.keystr(path)}: store jax.random.key_data(key)")
    return tree
