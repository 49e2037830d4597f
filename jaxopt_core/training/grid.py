"""The grid of a sweep: building it, checking it, and probing the optimizer with it.

A grid is ``{name: [K] array}``; member ``i`` trains with entry ``i`` of every
array. Names are keyword arguments of the optimizer function, or the reserved
``l1``/``l2`` (loss penalties) and ``seed`` (per-member keys).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

RESERVED = ("l1", "l2", "seed")


def grid_product(**axes: Sequence[Any]) -> dict[str, np.ndarray]:
    """The cartesian product of hyperparameter axes, as a grid for :func:`sweep`.

    The first axis varies slowest, as in ``itertools.product``.

    Args:
        **axes: ``name=values``, each a non-empty 1-D sequence.

    Returns:
        ``{name: [K] array}`` with ``K`` the product of the axis lengths.

    Example:
        >>> import jaxopt_core as jc
        >>> g = jc.grid_product(learning_rate=[0.1, 0.01], momentum=[0.0, 0.9, 0.99])
        >>> g["learning_rate"].tolist(), g["momentum"].tolist()
        ([0.1, 0.1, 0.1, 0.01, 0.01, 0.01], [0.0, 0.9, 0.99, 0.0, 0.9, 0.99])
    """
    if not axes:
        raise ValueError("grid_product needs at least one axis, e.g. learning_rate=[...]")
    arrays = {}
    for name, values in axes.items():
        arr = np.asarray(values)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(
                f"grid_product: {name} must be a non-empty 1-D sequence; got shape {arr.shape}"
            )
        arrays[name] = arr
    mesh = np.meshgrid(*arrays.values(), indexing="ij")
    return {name: m.reshape(-1) for name, m in zip(arrays, mesh, strict=True)}


def check_grid(grid: Any, optimizer_fn: Callable) -> tuple[dict[str, np.ndarray], int]:
    """The grid as ``{name: 1-D array}`` in JAX dtypes, and its length K;
    errors name the offending entry."""
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"grid must be a non-empty dict {{name: 1-D array}}; got {grid!r}")
    valid = valid_names(optimizer_fn)
    hp, lengths = {}, {}
    for name, values in grid.items():
        if valid is not None and name not in valid and name not in RESERVED:
            raise ValueError(
                f"grid name {name!r} is not a keyword argument of optimizer_fn nor one of "
                f"{RESERVED}; valid names: {', '.join(sorted(valid | set(RESERVED)))}"
            )
        arr = np.asarray(values)
        if arr.ndim != 1 or arr.dtype.kind not in "biuf":
            raise ValueError(f"grid[{name!r}] must be a 1-D array of numbers; got {values!r}")
        if name == "seed" and arr.dtype.kind not in "iu":
            raise ValueError(f"grid['seed'] must hold integers; got dtype {arr.dtype}")
        hp[name] = arr.astype(jax.dtypes.canonicalize_dtype(arr.dtype))
        lengths[name] = arr.shape[0]
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise ValueError(f"grid arrays must be non-empty and of one length; got lengths {lengths}")
    return hp, next(iter(lengths.values()))


def valid_names(optimizer_fn: Callable) -> set[str] | None:
    """Keyword names ``optimizer_fn`` accepts; ``None`` when it takes ``**kwargs``
    or has no signature to inspect."""
    try:
        sig = inspect.signature(optimizer_fn)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n, p in sig.parameters.items() if p.kind in kinds}


def probe_optimizer(optimizer_fn: Callable, hp: dict[str, np.ndarray]) -> Any:
    """Build the optimizer once with concrete values: validates every member's
    hyperparameters (the constructors' checks accept arrays) and tells whether
    it needs the tree layout. Falls back to member 0 for constructors that
    only take scalars."""
    try:
        return optimizer_fn(**hp)
    except TypeError:
        pass
    try:
        return optimizer_fn(**{n: v[0].item() for n, v in hp.items()})
    except TypeError as err:
        raise TypeError(
            f"optimizer_fn(**hyperparameters) failed with the grid's names {sorted(hp)}: {err}. "
            "Bind the arguments that are not swept with functools.partial."
        ) from err


def seed_keys(key: jax.Array, seed: Any) -> tuple[jax.Array, jax.Array]:
    """``(init_key, data_key)`` of the member with ``seed`` (see :func:`sweep`):
    pass them to a params function and to :func:`~jaxopt_core.fit` to rerun
    one member alone."""
    return tuple(jax.random.split(jax.random.fold_in(key, seed)))


def is_init_fn(params: Any) -> bool:
    """Whether ``params`` is a function ``key -> params`` rather than a tree."""
    leaves = jax.tree.leaves(params)
    return callable(params) and len(leaves) == 1 and leaves[0] is params


def check_chunk_size(chunk_size: Any) -> int:
    """``chunk_size`` as an int >= 1, or an error naming it."""
    is_int = isinstance(chunk_size, (int, np.integer)) and not isinstance(chunk_size, bool)
    if not is_int or chunk_size < 1:
        raise ValueError(f"chunk_size must be None or an int >= 1; got chunk_size={chunk_size!r}")
    return int(chunk_size)


class FrozenMask(NamedTuple):
    """A tree of bools (a penalty mask) made hashable for the jit cache."""

    treedef: Any
    leaves: tuple

    def thaw(self) -> Any:
        return jax.tree.unflatten(self.treedef, self.leaves)


def freeze_mask(mask: Any) -> Any:
    """A tree mask made hashable (a jit cache key); callables and None pass."""
    if mask is None or callable(mask):
        return mask
    leaves, treedef = jax.tree.flatten(mask)
    return FrozenMask(treedef, tuple(bool(x) for x in leaves))
