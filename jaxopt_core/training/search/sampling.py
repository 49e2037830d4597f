r"""Sampling a sweep's grid: :func:`sample` and the :class:`SampledGrid` it returns.

:func:`sample` draws ``K`` members from one axis (see
:mod:`~jaxopt_core.training.search.axes`) per hyperparameter, at random or as
scrambled Sobol points, and returns ``{name: [K] array}`` for the ``grid=``
of :func:`~jaxopt_core.sweep`. With d hyperparameters a sample of K covers K
distinct values of every continuous one, where a grid of the same K covers
only about :math:`K^{1/d}` values of each.
"""

from __future__ import annotations

import numbers
import warnings
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_core.training.batching import as_key
from jaxopt_core.training.search.axes import Axis, float_dtype

METHODS = ("random", "sobol")


class SampledGrid(dict):
    """``{name: [K] array}`` from :func:`sample`, a ``dict`` usable as a
    sweep's ``grid``, that also remembers in ``axes`` the axis each name was
    drawn from. A pytree like a dict (the axes ride along as static data)."""

    def __init__(self, values: Any = (), axes: dict[str, Axis] | None = None):
        super().__init__(values)
        self.axes = dict(axes or {})


def _flatten_with_keys(grid: SampledGrid):
    keys = tuple(grid)
    children = [(jax.tree_util.DictKey(k), grid[k]) for k in keys]
    return children, (keys, tuple(grid.axes.items()))


def _unflatten(aux: tuple, leaves: Any) -> SampledGrid:
    keys, axes = aux
    return SampledGrid(zip(keys, leaves, strict=True), dict(axes))


jax.tree_util.register_pytree_with_keys(
    SampledGrid, _flatten_with_keys, _unflatten,
    flatten_func=lambda g: ([g[k] for k in g], (tuple(g), tuple(g.axes.items()))),
)


def sample(key: jax.Array, K: int, *, method: str = "random", **axes: Axis) -> SampledGrid:
    r"""``K`` members drawn from hyperparameter axes: ``{name: [K] array}`` for
    the ``grid=`` of :func:`~jaxopt_core.sweep`.

    With ``method="random"`` (default) the values are independent draws; each
    axis uses its own key, ``fold_in(key, crc32(name))``, so adding or removing
    an axis leaves the other axes' values unchanged.

    With ``method="sobol"`` the members are the first K points
    :math:`u_i \in [0, 1)^d` of a scrambled Sobol sequence (``scipy.stats.qmc.Sobol``,
    linear matrix scrambling and a digital shift, seeded from ``key``), one
    coordinate per axis in keyword order, mapped by ``axis.from_unit``. For
    :math:`K = 2^m` each coordinate is exactly stratified (every interval
    :math:`[j/K, (j+1)/K)` holds one point) and the first two coordinates form
    a :math:`(0, m, 2)`-net (every box :math:`[a 2^{-p}, (a+1) 2^{-p}) \times
    [b 2^{-q}, (b+1) 2^{-q})` with :math:`p + q = m` holds one point). Other K
    are accepted without a warning (a budget rarely is a power of 2): the
    points are then a prefix of the next power of 2's set, still more even
    than random draws but only approximately balanced. The points are rounded
    down to the float dtype so that rounding never moves one into the next cell.

    Args:
        key: a PRNG key; the sample is a deterministic function of it.
        K: the number of members, an int >= 1.
        method: ``"random"`` or ``"sobol"``.
        **axes: ``name=axis``, each built by :func:`log_uniform`,
            :func:`uniform`, :func:`integers` or :func:`choice`.

    Returns:
        A :class:`SampledGrid`: a dict ``{name: [K] array}`` (arrays in each
        axis's dtype) whose ``axes`` attribute maps each name to its axis.

    Raises:
        ValueError: ``K`` not an int >= 1, an unknown ``method``, no axes, or
            a keyword whose value is not an axis (the message names it).

    Example:
        >>> import jax, jaxopt_core as jc
        >>> grid = jc.sample(jax.random.key(0), 8, learning_rate=jc.log_uniform(1e-4, 1e-1),
        ...                  momentum=jc.choice([0.0, 0.9]))
        >>> {name: (v.shape, str(v.dtype)) for name, v in grid.items()}
        {'learning_rate': ((8,), 'float32'), 'momentum': ((8,), 'float32')}
        >>> b1 = jc.sample(jax.random.key(0), 8, method="sobol", b1=jc.uniform(0.0, 1.0))["b1"]
        >>> sorted((b1 * 8).astype(int).tolist())   # one point in each eighth
        [0, 1, 2, 3, 4, 5, 6, 7]
    """
    key = as_key(key)
    if isinstance(K, bool) or not isinstance(K, numbers.Integral) or K < 1:
        raise ValueError(f"sample: K must be an int >= 1; got K={K!r}")
    if method not in METHODS:
        raise ValueError(f"sample: method must be one of {METHODS}; got method={method!r}")
    if not axes:
        raise ValueError("sample needs at least one axis, e.g. "
                         "learning_rate=jc.log_uniform(1e-4, 1e-1)")
    for name, axis in axes.items():
        if not isinstance(axis, Axis):
            raise ValueError(f"sample: {name} must be an axis (jc.log_uniform, jc.uniform, "
                             f"jc.integers or jc.choice); got {name}={axis!r}")
    k = int(K)
    if method == "random":
        values = {name: axis.draw(_axis_key(key, name), (k,)) for name, axis in axes.items()}
    else:
        units = sobol_points(key, k, len(axes))
        values = {name: axis.from_unit(units[:, j]) for j, (name, axis) in enumerate(axes.items())}
    return SampledGrid(values, axes)


def _axis_key(key: jax.Array, name: str) -> jax.Array:
    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def sobol_points(key: jax.Array, n: int, d: int) -> jax.Array:
    """``[n, d]`` scrambled Sobol points in ``[0, 1)``, seeded from ``key``,
    rounded *down* to the default float dtype (a point keeps its cell)."""
    from scipy.stats import qmc  # scipy.stats is slow to import; only Sobol needs it

    seed = np.asarray(jax.random.bits(key, (4,), jnp.uint32))
    rng = np.random.default_rng(seed)
    try:
        engine = qmc.Sobol(d, scramble=True, rng=rng)
    except TypeError:  # scipy < 1.15 names the generator `seed`
        engine = qmc.Sobol(d, scramble=True, seed=rng)
    with warnings.catch_warnings():
        # the docstring of `sample` says what a K that is not a power of 2 costs
        warnings.filterwarnings("ignore", "The balance properties", UserWarning)
        points = engine.random(n)
    dt = float_dtype()
    rounded = points.astype(dt)
    rounded = np.where(rounded > points, np.nextafter(rounded, dt.type(0)), rounded)
    return jnp.asarray(rounded)
