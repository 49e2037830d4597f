"""Construction-time checks of hyperparameters.

Only *concrete* values are checked (Python numbers, NumPy arrays, JAX arrays
that are not being traced). A traced value, for example a learning rate that
``jax.vmap`` or ``jax.jit`` passes in, cannot be inspected without a host
sync, so it is accepted as is: that is the price of hyperparameters as data.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _concrete(value: Any):
    """``value`` as a NumPy array, or ``None`` when it is traced."""
    if isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, bool) or value is None:
        raise TypeError
    if isinstance(value, numbers.Number):
        return np.asarray(value)
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        arr = np.asarray(value)
        # issubdtype, not dtype.kind: bfloat16's kind is 'V' (an ml_dtypes type).
        if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
            raise TypeError
        # Range checks in float32 at least: comparing with a Python float
        # bound is exact there, and NumPy's ufuncs all accept float32.
        return arr.astype(np.promote_types(arr.dtype, np.float32)) if arr.dtype.kind == "V" else arr
    raise TypeError


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = 0.0,
    high: float | None = None,
    high_open: bool = True,
    low_open: bool = False,
    allow_schedule: bool = False,
) -> Any:
    """Check that ``value`` is a finite number (or array) in the interval
    ``[low, high)`` (ends as set by ``low_open``/``high_open``) and return it.

    Raises ``TypeError`` for something that is not a number (a string, None,
    a bool) and ``ValueError`` for a concrete value out of range or non-finite;
    the message names the argument and the value.
    """
    if allow_schedule and callable(value) and not isinstance(value, jax.Array):
        return value
    if type(value) is float:  # a Python float: the same float64 checks, without NumPy
        arr, finite, any_ = value, math.isfinite(value), bool  # (sweeps: K constructor calls)
    else:
        try:
            arr = _concrete(value)
        except TypeError:
            kinds = "a number, a JAX/NumPy array" + (" or a schedule" if allow_schedule else "")
            raise TypeError(
                f"{name} must be {kinds}; got {value!r} ({type(value).__name__})") from None
        if arr is None:
            return value
        finite, any_ = np.all(np.isfinite(arr)), np.any
    if not finite:
        raise ValueError(f"{name} must be finite; got {name}={value!r}")
    lo_bad = hi_bad = False
    if low is not None:
        lo_bad = any_(arr <= low) if low_open else any_(arr < low)
    if high is not None:
        hi_bad = any_(arr >= high) if high_open else any_(arr > high)
    if lo_bad or hi_bad:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{name} must be in {left}{lo}, {hi}{right}; got {name}={value!r}")
    return value


def check_unit(name: str, value: Any) -> Any:
    """A decay or momentum coefficient: a number in ``[0, 1)``."""
    return check_number(name, value, low=0.0, high=1.0)


def check_nonneg(name: str, value: Any, *, allow_schedule: bool = False) -> Any:
    """A step size, eps or weight: a finite number ``>= 0``."""
    return check_number(name, value, low=0.0, allow_schedule=allow_schedule)
