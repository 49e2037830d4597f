r"""Hyperparameter axes: the distributions :func:`~jaxopt_core.sample` draws from.

:class:`Uniform`, :class:`LogUniform` (continuous), :class:`Integers` and
:class:`Choice` (discrete), built by :func:`uniform`, :func:`log_uniform`,
:func:`integers` and :func:`choice`; all subclass :class:`Axis`. They are
frozen dataclasses, so hashable and usable as static arguments. Every axis is
the image of a uniform variable :math:`u \in [0, 1)` under its inverse
distribution function, and offers it as a pure JAX function, so a strategy
running inside a compiled program can redraw a value from the axis it came
from:

* ``axis.from_unit(u)``: values from uniform draws ``u`` (any shape);
  traceable, jittable and vmappable.
* ``axis.draw(key, shape)``: independent draws, also pure JAX.
* ``axis.bounds``: the smallest and largest value the axis produces, both
  inclusive, in the axis's dtype.
* ``axis.continuous``: ``True`` for :class:`Uniform` and :class:`LogUniform`;
  discrete axes are the ones a multiplicative perturbation must leave alone.
* ``axis.dtype``: the default float dtype for continuous axes (float32, or
  float64 under ``jax_enable_x64``), the default int dtype for
  :class:`Integers` (int32, or int64), the values' dtype for :class:`Choice`.
"""

from __future__ import annotations

import abc
import dataclasses
import numbers
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def float_dtype() -> np.dtype:
    """JAX's default float dtype: float32, or float64 under ``jax_enable_x64``."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def int_dtype() -> np.dtype:
    """JAX's default int dtype: int32, or int64 under ``jax_enable_x64``."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.int64))


class Axis(abc.ABC):
    """A distribution of one hyperparameter, to :func:`~jaxopt_core.sample` from.

    Subclasses give ``from_unit`` (the inverse distribution function, pure
    JAX), ``bounds``, ``dtype`` and the class flag ``continuous``; ``draw``
    defaults to ``from_unit`` of uniform draws.
    """

    continuous: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def bounds(self) -> tuple[Any, Any]:
        """``(smallest, largest)`` value the axis produces, both inclusive."""

    @abc.abstractmethod
    def from_unit(self, u: ArrayLike) -> jax.Array:
        """The values for uniform draws ``u`` in ``[0, 1)``, of ``u``'s shape."""

    def draw(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """Independent draws of ``shape`` from the axis (pure JAX, traceable)."""
        return self.from_unit(jax.random.uniform(key, shape, float_dtype()))


def _describe(factory: str, **args: Any) -> str:
    return factory + "(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"


def _real(where: str, name: str, value: Any) -> float:
    """``value`` as a finite Python float, or a ValueError naming it."""
    scalar = isinstance(value, numbers.Real) or (
        isinstance(value, (np.ndarray, jax.Array)) and value.ndim == 0
        and np.dtype(value.dtype).kind in "iuf"
    )
    try:
        number = float(value) if scalar and not isinstance(value, (bool, np.bool_)) else np.nan
    except OverflowError:  # a Python int beyond any float
        number = np.nan
    if not np.isfinite(number):
        raise ValueError(f"{where}: {name} must be a finite real number; got {name}={value!r}")
    return number


def _float_bounds(where: str, low: Any, high: Any, positive: bool) -> tuple[float, float]:
    """Checked ``(low, high)``: finite, ``low < high`` also once rounded to the
    float dtype, and both > 0 when ``positive``."""
    lo, hi = _real(where, "low", low), _real(where, "high", high)
    if positive and (lo <= 0 or hi <= 0):
        raise ValueError(f"{where}: the bounds of a log scale must be > 0; got low={low!r}, "
                         f"high={high!r}")
    if lo >= hi:
        raise ValueError(f"{where}: the range is empty or inverted; need low < high, got "
                         f"low={low!r}, high={high!r}")
    dt = float_dtype()
    with np.errstate(over="ignore"):
        lo_d, hi_d = dt.type(lo), dt.type(hi)
        span = hi_d - lo_d
    if not (np.isfinite(span) and lo_d < hi_d and (lo_d > 0 or not positive)):
        raise ValueError(f"{where}: low and high must stay distinct, finite (and > 0 for a log "
                         f"scale) in {dt}; got low={lo_d!r}, high={hi_d!r} there")
    return lo, hi


def _unit_to_index(u: ArrayLike, n: int) -> jax.Array:
    r""":math:`\min(\lfloor u n \rfloor, n - 1)`: one of ``n`` equally likely
    indices (the min catches ``u`` rounded up to 1), in the unsigned
    counterpart of the default int dtype so that ``n - 1`` may exceed its max."""
    fdt, udt = float_dtype(), _unsigned(int_dtype())
    # the largest float that converts to udt without overflow
    cap = np.nextafter(fdt.type(2 ** (8 * udt.itemsize)), fdt.type(0))
    scale = fdt.type(n)
    if int(scale) < n:  # rounded up, so that u near 1 still reaches index n - 1
        scale = np.nextafter(scale, fdt.type(np.inf))
    index = jnp.clip(jnp.floor(jnp.asarray(u, fdt) * scale), 0, cap).astype(udt)
    return jnp.minimum(index, udt.type(n - 1))  # exact in udt, even where n - 1 is not in fdt


def _unsigned(dtype: np.dtype) -> np.dtype:
    return np.dtype(f"uint{dtype.itemsize * 8}")


@dataclasses.dataclass(frozen=True)
class Uniform(Axis):
    r"""Uniform on ``[low, high]``: :math:`x = \mathrm{low} + u\,(\mathrm{high} - \mathrm{low})`.

    Built by :func:`uniform`. ``high`` is reached only by float rounding.
    """

    low: float
    high: float
    continuous: ClassVar[bool] = True

    def __post_init__(self):
        where = _describe("uniform", low=self.low, high=self.high)
        lo, hi = _float_bounds(where, self.low, self.high, positive=False)
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)

    @property
    def dtype(self) -> np.dtype:
        return float_dtype()

    @property
    def bounds(self) -> tuple[np.floating, np.floating]:
        return self.dtype.type(self.low), self.dtype.type(self.high)

    def from_unit(self, u: ArrayLike) -> jax.Array:
        lo, hi = self.bounds
        return jnp.clip(lo + jnp.asarray(u, self.dtype) * (hi - lo), lo, hi)


@dataclasses.dataclass(frozen=True)
class LogUniform(Axis):
    r"""Log-uniform on ``[low, high]``, ``0 < low``: :math:`\log x` is uniform on
    :math:`[\log \mathrm{low}, \log \mathrm{high}]`, i.e.
    :math:`x = \mathrm{low}\,(\mathrm{high}/\mathrm{low})^u`, with density
    :math:`1 / (x \log(\mathrm{high}/\mathrm{low}))` and median
    :math:`\sqrt{\mathrm{low}\cdot\mathrm{high}}`.

    Built by :func:`log_uniform`. ``high`` is reached only by float rounding.
    """

    low: float
    high: float
    continuous: ClassVar[bool] = True

    def __post_init__(self):
        where = _describe("log_uniform", low=self.low, high=self.high)
        lo, hi = _float_bounds(where, self.low, self.high, positive=True)
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)

    @property
    def dtype(self) -> np.dtype:
        return float_dtype()

    @property
    def bounds(self) -> tuple[np.floating, np.floating]:
        return self.dtype.type(self.low), self.dtype.type(self.high)

    def from_unit(self, u: ArrayLike) -> jax.Array:
        lo, hi = self.bounds
        log_lo, log_hi = np.log(lo), np.log(hi)
        x = jnp.exp(log_lo + jnp.asarray(u, self.dtype) * (log_hi - log_lo))
        return jnp.clip(x, lo, hi)  # exp/log rounding must not leave the range


def _integer(where: str, name: str, value: Any) -> int:
    """``value`` as a Python int (integral floats accepted), or a ValueError."""
    number = _real(where, name, value)
    if not number.is_integer():
        raise ValueError(f"{where}: {name} must be an integer; got {name}={value!r}")
    return int(value) if isinstance(value, numbers.Integral) else int(number)


@dataclasses.dataclass(frozen=True)
class Integers(Axis):
    r"""Integers ``low, ..., high - 1``, equally likely (``high`` exclusive, as in
    ``numpy.random.Generator.integers``): :math:`x = \mathrm{low} + \lfloor u n
    \rfloor` with :math:`n = \mathrm{high} - \mathrm{low}`.

    Built by :func:`integers`. ``draw`` is exact (``jax.random.randint``);
    ``from_unit`` resolves ``u`` only to its float precision, so with float32
    ``u`` a range wider than :math:`2^{24}` is reached on a lattice.
    """

    low: int
    high: int

    def __post_init__(self):
        where = _describe("integers", low=self.low, high=self.high)
        lo, hi = _integer(where, "low", self.low), _integer(where, "high", self.high)
        if lo >= hi:
            raise ValueError(f"{where}: the range is empty or inverted; need low < high "
                             f"(high is exclusive), got low={self.low!r}, high={self.high!r}")
        info = np.iinfo(int_dtype())
        if lo < info.min or hi > info.max:
            raise ValueError(f"{where}: low and high must fit in {info.dtype} "
                             f"([{info.min}, {info.max}])")
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)

    @property
    def dtype(self) -> np.dtype:
        return int_dtype()

    @property
    def bounds(self) -> tuple[np.integer, np.integer]:
        return self.dtype.type(self.low), self.dtype.type(self.high - 1)

    def from_unit(self, u: ArrayLike) -> jax.Array:
        # low + index in two's complement: the sum wraps exactly, even when
        # the span high - low exceeds the int dtype's max
        low = np.asarray(self.low, self.dtype).view(_unsigned(self.dtype))
        index = _unit_to_index(u, self.high - self.low)
        return jax.lax.bitcast_convert_type(low + index, self.dtype)

    def draw(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        return jax.random.randint(key, shape, self.low, self.high, self.dtype)


@dataclasses.dataclass(frozen=True)
class Choice(Axis):
    r"""One of ``values``, equally likely: :math:`x = v_{\lfloor u n \rfloor}`.

    Built by :func:`choice`. Repeat a value to weight it. ``dtype`` is the
    values' dtype as JAX holds it (Python ints become int32, float64 becomes
    float32 unless ``jax_enable_x64`` is on).
    """

    values: tuple
    dtype: np.dtype = dataclasses.field(init=False, repr=False)

    def __post_init__(self):
        where = _describe("choice", values=self.values)
        try:
            arr = np.asarray(self.values)
        except ValueError:  # ragged
            arr = np.asarray(None)
        if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "biuf":
            raise ValueError(f"{where}: values must be a non-empty 1-D sequence of numbers; "
                             f"got {self.values!r}")
        dt = np.dtype(jax.dtypes.canonicalize_dtype(arr.dtype))
        if arr.dtype.kind in "iu" and not np.array_equal(arr.astype(dt), arr):
            raise ValueError(f"{where}: values must fit in {dt}; got {self.values!r}")
        object.__setattr__(self, "values", tuple(arr.astype(dt).tolist()))
        object.__setattr__(self, "dtype", dt)

    @property
    def bounds(self) -> tuple[Any, Any]:
        return self.dtype.type(min(self.values)), self.dtype.type(max(self.values))

    def from_unit(self, u: ArrayLike) -> jax.Array:
        return jnp.asarray(self.values, self.dtype)[_unit_to_index(u, len(self.values))]

    def draw(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        index = jax.random.randint(key, shape, 0, len(self.values))
        return jnp.asarray(self.values, self.dtype)[index]


def uniform(low: float, high: float) -> Uniform:
    r"""A hyperparameter uniform on ``[low, high]`` (see :class:`Uniform`).

    Raises:
        ValueError: a bound that is not a finite number, or ``low >= high``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> jc.uniform(0.8, 0.99).from_unit(jnp.array([0.0, 0.5])).tolist()
        [0.800000011920929, 0.8949999809265137]
    """
    return Uniform(low, high)


def log_uniform(low: float, high: float) -> LogUniform:
    r"""A hyperparameter whose log is uniform: ``[low, high]``, ``0 < low < high``
    (see :class:`LogUniform`); the usual axis for learning rates.

    Raises:
        ValueError: a bound that is not a finite number, ``low <= 0``, or
            ``low >= high``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> x = jc.log_uniform(1e-4, 1.0).from_unit(jnp.array([0.0, 0.5]))
        >>> [round(float(v), 6) for v in x]   # u = 1/2 gives the geometric mean
        [0.0001, 0.01]
    """
    return LogUniform(low, high)


def integers(low: int, high: int) -> Integers:
    r"""A hyperparameter drawn from the integers ``low, ..., high - 1``: ``high``
    is *exclusive*, as in ``numpy.random.Generator.integers`` (see :class:`Integers`).

    Raises:
        ValueError: a bound that is not an integer, or ``low >= high``.

    Example:
        >>> import jax, jaxopt_core as jc
        >>> ax = jc.integers(1, 4)
        >>> ax.bounds, sorted(set(ax.draw(jax.random.key(0), (100,)).tolist()))
        ((np.int32(1), np.int32(3)), [1, 2, 3])
    """
    return Integers(low, high)


def choice(values: Any) -> Choice:
    r"""A hyperparameter drawn from ``values``, each equally likely (see :class:`Choice`).

    Raises:
        ValueError: ``values`` empty, not 1-D, or not numbers.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> jc.choice([0.0, 0.9, 0.99]).from_unit(jnp.array([0.1, 0.5, 0.9])).tolist()
        [0.0, 0.8999999761581421, 0.9900000095367432]
    """
    return Choice(values)
