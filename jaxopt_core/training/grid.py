"""The grid of a sweep: building it, checking it, and probing the optimizer with it.

A grid is ``{name: [K] array}``; member ``i`` trains with entry ``i`` of every
array. Names are keyword arguments of the optimizer function, or the reserved
``l1``/``l2`` (loss penalties, unless the optimizer function takes them: see
:func:`route_grid`) and ``seed`` (per-member keys).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_core.training.culprits import (
    PYTHON_VALUE,
    add_note,
    attributed,
    culprit_of,
    schedule_hint,
)
from jaxopt_core.training.memo import Memo, abstract_signature, hashable_or_none

RESERVED = ("l1", "l2", "seed")
PENALTIES = ("l1", "l2")


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


def valid_names(optimizer_fn: Callable) -> frozenset[str] | None:
    """Keyword names ``optimizer_fn`` accepts; ``None`` when it takes ``**kwargs``
    or has no signature to inspect."""
    # inspect.signature costs ~0.1 ms, twice per sweep call: remembered per function.
    key = hashable_or_none(optimizer_fn)
    if key in _NAMES:
        return _NAMES.get(key)
    names = _valid_names(optimizer_fn)
    _NAMES.put(key, names)
    return names


_NAMES = Memo()


def _valid_names(optimizer_fn: Callable) -> frozenset[str] | None:
    try:
        sig = inspect.signature(optimizer_fn)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return frozenset(n for n, p in sig.parameters.items() if p.kind in kinds)


def route_grid(hp: dict[str, Any], optimizer_fn: Callable) -> tuple[tuple, tuple]:
    """Where each grid name goes: ``(names passed to optimizer_fn, loss
    penalty names)``.

    ``l1``/``l2`` go to ``optimizer_fn`` when it takes a keyword of that name
    (``proximal_gradient``: exact zeros from its prox), else they are loss
    penalties; ``seed`` always picks the member keys; every other name goes
    to ``optimizer_fn``. Loss penalty values must be finite and >= 0 (as in
    :func:`~jaxopt_core.regularized`); an error names the member.

    Example:
        >>> import functools, jaxopt_core as jc
        >>> from jaxopt_core.training.grid import route_grid
        >>> route_grid({"l1": [0.1], "learning_rate": [0.1]}, jc.sgd)
        (('learning_rate',), ('l1',))
        >>> route_grid({"l1": [0.1]}, functools.partial(jc.proximal_gradient, 0.1))
        (('l1',), ())
    """
    takes = valid_names(optimizer_fn) or set()
    to_optimizer = tuple(n for n in hp if n not in RESERVED or (n in PENALTIES and n in takes))
    penalty = tuple(n for n in PENALTIES if n in hp and n not in to_optimizer)
    for name in penalty:
        values = np.asarray(hp[name], np.float64)
        bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"grid[{name!r}] member {i}: a loss penalty must be finite and "
                             f">= 0; got {name}={float(values[i])!r}")
    return to_optimizer, penalty


def probe_optimizer(optimizer_fn: Callable, hp: dict[str, np.ndarray], params: Any) -> Any:
    """Check the optimizer a sweep builds, and return one built from traced values.

    Two checks, before anything is compiled:

    1. ``optimizer_fn(**member)`` with each distinct member's concrete values
       (Python numbers), so the constructors' range checks run per member;
       an error names the member and its values.
    2. ``optimizer_fn`` built from abstract scalars (``jax.eval_shape``), with
       its ``init`` and ``update`` on ``params``: this is how the compiled
       program uses it. A swept value used as a Python value raises a
       ``TypeError`` that names ``optimizer_fn`` and the grid entries at
       fault (and the jaxopt_core schedule to use when an optax schedule
       branched on it).

    Args:
        optimizer_fn: builds the optimizer from keyword hyperparameters.
        hp: ``{name: [K] array}``, the grid entries that go to ``optimizer_fn``.
        params: the params (arrays or ``jax.ShapeDtypeStruct``), tree layout.

    Returns:
        The optimizer built from traced scalars (for its structure only,
        e.g. to choose the layout; its hyperparameters are placeholders).

    Example:
        >>> import jax.numpy as jnp, numpy as np, jaxopt_core as jc
        >>> from jaxopt_core.training.grid import probe_optimizer
        >>> def opt_fn(peak, warmup_steps):
        ...     return jc.adam(jc.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, 50))
        >>> hp = {"peak": np.array([0.1, 0.2], np.float32), "warmup_steps": np.array([5, 60])}
        >>> probe_optimizer(opt_fn, hp, jnp.zeros(3))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: optimizer_fn rejected grid member 1 {...'warmup_steps': 60}: decay_steps - ...
    """
    check_members(optimizer_fn, hp)
    key = hashable_or_none((optimizer_fn, tuple((n, str(v.dtype)) for n, v in hp.items()),
                            abstract_signature(params)))
    if key in _PROBED:
        return _PROBED.get(key)
    built: list = []
    structs = {n: jax.ShapeDtypeStruct((), v.dtype) for n, v in hp.items()}
    try:
        jax.eval_shape(functools.partial(_build_and_step, optimizer_fn, built), structs, params)
    except jax.errors.ConcretizationTypeError as err:
        culprits = [n for n in hp if _fails_alone(optimizer_fn, hp, n, params)] or list(hp)
        entries = ", ".join(repr(n) for n in culprits)
        raise TypeError(
            f"optimizer_fn uses the swept value of grid entry {entries} {PYTHON_VALUE}, "
            f"so it cannot be traced and swept{schedule_hint(err)}. Sweep a "
            "hyperparameter the optimizer treats as a number, or fix this one with "
            f"functools.partial.\nJAX's message: {err}"
        ) from err
    except Exception as err:
        if culprit_of(err) is None:
            add_note(attributed(err, "optimizer_fn"),
                     f"(raised while building optimizer_fn(**{sorted(hp)}) from traced "
                     "values, or in its init/update)")
        raise
    _PROBED.put(key, built[0])
    return built[0]


# The abstract probe's outcome depends only on the function and the abstract
# values (names, dtypes, params' structure, shapes, dtypes): a repeated sweep
# skips its trace (tens of ms, most of a short sweep's host time). The member
# checks depend on the function and the values: a sweep repeated with the same
# values skips them (about 60 us per member for jc.adam). Successes only.
_PROBED = Memo()
_CHECKED = Memo()


def check_members(optimizer_fn: Callable, hp: dict[str, np.ndarray]) -> None:
    """Call ``optimizer_fn`` once per distinct member with concrete values
    (its construction checks); errors name the member."""
    key = hashable_or_none((optimizer_fn, tuple((n, np.asarray(v).dtype.str, np.shape(v),
                                                 np.asarray(v).tobytes())
                                                for n, v in hp.items())))
    if key in _CHECKED:
        return
    _check_each(optimizer_fn, hp)
    _CHECKED.put(key, True)


def _check_each(optimizer_fn: Callable, hp: dict[str, np.ndarray]) -> None:
    k = len(next(iter(hp.values()))) if hp else 1
    seen = set()
    for i in range(k):
        member = {n: v[i].item() for n, v in hp.items()}
        if tuple(member.values()) in seen:
            continue
        seen.add(tuple(member.values()))
        try:
            optimizer_fn(**member)
        except TypeError as err:
            if i == 0:
                raise TypeError(
                    f"optimizer_fn(**hyperparameters) failed with the grid's names "
                    f"{sorted(hp)}: {err}. Bind the arguments that are not swept with "
                    "functools.partial."
                ) from err
            raise TypeError(f"optimizer_fn rejected grid member {i} {member}: {err}") from err
        except ValueError as err:
            raise ValueError(f"optimizer_fn rejected grid member {i} {member}: {err}") from err


def _build_and_step(optimizer_fn: Callable, built: list, hp_m: dict, params: Any) -> Any:
    """Build the optimizer from ``hp_m`` and run its init and one update."""
    opt = optimizer_fn(**hp_m)
    built.append(opt)
    if not (callable(getattr(opt, "init", None)) and callable(getattr(opt, "update", None))):
        raise TypeError(
            f"optimizer_fn must return an optimizer (with init and update); got {opt!r}"
        )
    state = opt.init(params)
    return opt.update(jax.tree.map(jnp.zeros_like, params), state, params)


def _fails_alone(optimizer_fn: Callable, hp: dict, name: str, params: Any) -> bool:
    """Whether tracing ``name`` alone (the others concrete, member 0) fails."""
    fixed = {n: v[0].item() for n, v in hp.items() if n != name}

    def with_one(value, p):
        return _build_and_step(lambda **kw: optimizer_fn(**kw, **fixed), [], {name: value}, p)

    try:
        jax.eval_shape(with_one, jax.ShapeDtypeStruct((), hp[name].dtype), params)
    except jax.errors.ConcretizationTypeError:
        return True
    except Exception:  # another failure: not evidence either way
        return False
    return False


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
