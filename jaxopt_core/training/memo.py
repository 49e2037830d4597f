"""Bounded caches for the host-side checks of ``fit`` and ``sweep``.

Before compiling, a sweep checks every member's hyperparameters with
concrete values and traces the optimizer and ``eval_fn`` abstractly. Those
checks depend only on the function object and on the values (or their
shapes and dtypes), so a repeated call with the same function — a notebook
cell run again, a benchmark loop — can skip them, as ``jax.jit`` skips a
compile. Only successes are stored: a failing check runs (and raises) again.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


class Memo:
    """A dict that keeps the ``size`` most recently stored entries.

    Example:
        >>> from jaxopt_core.training.memo import Memo
        >>> m = Memo(size=2)
        >>> m.put("a", 1); m.put("b", 2); m.put("c", 3)
        >>> "a" in m, m.get("c")
        (False, 3)
    """

    def __init__(self, size: int = 64):
        self.size = size
        self._entries: dict = {}

    def __contains__(self, key: Any) -> bool:
        return key is not None and key in self._entries

    def get(self, key: Any) -> Any:
        return self._entries.get(key) if key is not None else None

    def put(self, key: Any, value: Any) -> None:
        if key is None:
            return
        self._entries.pop(key, None)
        while len(self._entries) >= self.size:  # drop the oldest
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = value


def abstract_signature(tree: Any) -> tuple:
    """The structure, shapes and dtypes of ``tree`` (what an abstract trace
    sees), Python scalars told apart from arrays (they trace weakly typed)."""
    leaves, treedef = jax.tree.flatten(tree)
    # dtype objects, not their names: str(dtype) took 15 of the 106 us a
    # small sweep spends in Python before its program starts.
    return treedef, tuple(
        (np.shape(x), x.dtype if hasattr(x, "dtype") else np.result_type(x),
         isinstance(x, (bool, int, float, complex))) for x in leaves)


def hashable_or_none(key: Any) -> Any:
    """``key`` when it can be hashed (a function object may not be), else None
    (None keys are never stored)."""
    try:
        hash(key)
    except TypeError:
        return None
    return key
