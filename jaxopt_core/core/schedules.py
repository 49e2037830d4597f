r"""Learning-rate schedules: functions ``count -> value`` of the step count.

Names and arguments are optax's, and so are the values at every step (tested).
Unlike optax, every numeric argument, step counts included, may be a traced
JAX value, so a whole schedule can be swept with ``jax.vmap``; such values are
not checked at construction. ``count`` is 0 on the first update.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxopt_core.core.base import Schedule
from jaxopt_core.core.checks import check_nonneg, check_number


def _at_least_zero(steps: ArrayLike) -> ArrayLike:
    """``max(steps, 0)``, traced or not: optax treats a negative
    ``transition_begin`` as 0."""
    if isinstance(steps, jax.core.Tracer):
        return jnp.maximum(steps, 0)
    return max(steps, 0)


def constant_schedule(value: ArrayLike) -> Schedule:
    """``schedule(count) = value``.

    Example:
        >>> import jaxopt_core as jc
        >>> jc.constant_schedule(0.1)(7)
        0.1
    """
    check_number("value", value, low=None)
    return lambda count: value


def exponential_decay(
    init_value: ArrayLike,
    transition_steps: ArrayLike,
    decay_rate: ArrayLike,
    transition_begin: ArrayLike = 0,
    staircase: bool = False,
    end_value: ArrayLike | None = None,
) -> Schedule:
    r"""Exponential decay after ``transition_begin`` steps:

    .. math::
        v(t) = v_0 \, r^{(t - t_0)/T} \quad (t > t_0), \qquad v(t) = v_0 \quad (t \le t_0),

    with the exponent floored when ``staircase``; clipped at ``end_value`` (from
    below when :math:`r < 1`, from above otherwise). As in optax, a
    non-positive ``transition_steps`` or a zero ``decay_rate`` gives a constant
    schedule, and a negative ``transition_begin`` counts as 0.

    Example:
        >>> import jaxopt_core as jc
        >>> float(jc.exponential_decay(1.0, transition_steps=10, decay_rate=0.5)(20))
        0.25
    """
    check_number("init_value", init_value, low=None)
    check_number("transition_steps", transition_steps, low=None)
    check_number("decay_rate", decay_rate, low=None)
    check_number("transition_begin", transition_begin, low=None)
    concrete = not any(isinstance(x, jax.core.Tracer) for x in (transition_steps, decay_rate))
    if concrete and (transition_steps <= 0 or decay_rate == 0):
        return lambda count: init_value
    transition_begin = _at_least_zero(transition_begin)

    def schedule(count):
        since = count - transition_begin
        p = since / transition_steps
        if staircase:
            p = jnp.floor(p)
        v = jnp.where(since <= 0, init_value, init_value * jnp.power(decay_rate, p))
        if end_value is not None:
            v = jnp.where(decay_rate < 1.0, jnp.maximum(v, end_value), jnp.minimum(v, end_value))
        if not concrete:
            v = jnp.where((transition_steps <= 0) | (decay_rate == 0), init_value, v)
        return v

    return schedule


def cosine_decay_schedule(
    init_value: ArrayLike,
    decay_steps: ArrayLike,
    alpha: ArrayLike = 0.0,
    exponent: ArrayLike = 1.0,
) -> Schedule:
    r"""Cosine decay (Loshchilov & Hutter, 2016) from ``init_value`` to
    ``alpha * init_value`` over ``decay_steps`` steps, then constant:

    .. math::
        v(t) = v_0 \left((1-\alpha) \left(\tfrac{1}{2}\left(1 + \cos\tfrac{\pi \min(t, T)}{T}
        \right)\right)^p + \alpha\right).

    Example:
        >>> import jaxopt_core as jc
        >>> round(float(jc.cosine_decay_schedule(1.0, decay_steps=100)(50)), 6)
        0.5
    """
    check_number("init_value", init_value, low=None)
    check_number("decay_steps", decay_steps, low=0.0, low_open=True)
    check_number("alpha", alpha, low=None)
    check_number("exponent", exponent, low=None)

    def schedule(count):
        # Steps as floats: int32 counts times pi overflow nothing, but an int
        # decay_steps above 2**31 would.
        t = jnp.asarray(count, dtype=float)
        total = jnp.asarray(decay_steps, dtype=float)
        t = jnp.minimum(t, total)
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * t / total))
        return init_value * ((1 - alpha) * cosine**exponent + alpha)

    return schedule


def linear_schedule(
    init_value: ArrayLike,
    end_value: ArrayLike,
    transition_steps: ArrayLike,
    transition_begin: ArrayLike = 0,
) -> Schedule:
    r"""Linear interpolation from ``init_value`` to ``end_value`` over
    ``transition_steps`` steps starting at ``transition_begin``:
    :math:`v(t) = (v_0 - v_1)(1 - c/T) + v_1`, :math:`c = \mathrm{clip}(t - t_0, 0, T)`.

    Example:
        >>> import jaxopt_core as jc
        >>> float(jc.linear_schedule(0.0, 1.0, transition_steps=4)(1))
        0.25
    """
    # The polynomial schedule of power 1 (a Python int: x ** 1 is exact), as in optax.
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def warmup_cosine_decay_schedule(
    init_value: ArrayLike,
    peak_value: ArrayLike,
    warmup_steps: ArrayLike,
    decay_steps: ArrayLike,
    end_value: ArrayLike = 0.0,
    exponent: ArrayLike = 1.0,
) -> Schedule:
    r"""Linear warm-up from ``init_value`` to ``peak_value`` over
    ``warmup_steps``, then cosine decay to ``end_value`` at step
    ``decay_steps`` (which counts the warm-up, as in optax).

    Example:
        >>> import jaxopt_core as jc
        >>> s = jc.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=10, decay_steps=110)
        >>> float(s(5)), float(s(10)), float(s(110))
        (0.5, 1.0, 0.0)
    """
    check_number("init_value", init_value, low=None)
    check_number("peak_value", peak_value, low=None)
    check_number("warmup_steps", warmup_steps)
    check_number("decay_steps", decay_steps)
    check_number("end_value", end_value, low=None)
    if any(isinstance(x, jax.core.Tracer) for x in (peak_value, end_value)):
        zero_peak = jnp.asarray(peak_value) == 0.0
        alpha = jnp.where(zero_peak, 0.0, end_value / jnp.where(zero_peak, 1.0, peak_value))
    else:
        alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    warmup = linear_schedule(init_value, peak_value, warmup_steps)
    cosine_steps = decay_steps - warmup_steps
    if not any(isinstance(x, jax.core.Tracer) for x in (decay_steps, warmup_steps)):
        check_number("decay_steps - warmup_steps", cosine_steps, low=0.0, low_open=True)
    decay = cosine_decay_schedule(peak_value, cosine_steps, alpha, exponent)

    def schedule(count):
        return jnp.where(count < warmup_steps, warmup(count), decay(count - warmup_steps))

    return schedule


def piecewise_constant_schedule(
    init_value: ArrayLike, boundaries_and_scales: dict[int, ArrayLike] | None = None
) -> Schedule:
    r"""Start at ``init_value`` and multiply by ``scale`` once the step count
    reaches each ``boundary`` of ``boundaries_and_scales`` (``{boundary: scale}``).
    Boundaries are Python ints (dict keys); scales may be traced.

    Example:
        >>> import jaxopt_core as jc
        >>> s = jc.piecewise_constant_schedule(1.0, {10: 0.1, 20: 0.5})
        >>> [round(float(s(n)), 6) for n in (5, 15, 25)]
        [1.0, 0.1, 0.05]
    """
    check_number("init_value", init_value, low=None)
    items = sorted((boundaries_and_scales or {}).items())
    for boundary, scale in items:
        check_nonneg(f"boundaries_and_scales[{boundary}]", scale)

    def schedule(count):
        v = init_value
        for boundary, scale in items:
            v = jnp.where(count < boundary, v, v * scale)
        return v

    return schedule


def polynomial_schedule(
    init_value: ArrayLike,
    end_value: ArrayLike,
    power: ArrayLike,
    transition_steps: ArrayLike,
    transition_begin: ArrayLike = 0,
) -> Schedule:
    r"""Polynomial decay from ``init_value`` to ``end_value`` over
    ``transition_steps`` steps starting at ``transition_begin``:

    .. math::
        v(t) = (v_0 - v_1)\,(1 - c/T)^p + v_1, \qquad c = \mathrm{clip}(t - t_0, 0, T).

    As in optax, a non-positive ``transition_steps`` gives a constant
    schedule and a negative ``transition_begin`` counts as 0.

    Example:
        >>> import jaxopt_core as jc
        >>> float(jc.polynomial_schedule(1.0, 0.0, power=2, transition_steps=4)(2))
        0.25
    """
    check_number("init_value", init_value, low=None)
    check_number("end_value", end_value, low=None)
    check_number("power", power, low=None)
    check_number("transition_steps", transition_steps, low=None)
    check_number("transition_begin", transition_begin, low=None)
    traced = isinstance(transition_steps, jax.core.Tracer)
    if not traced and transition_steps <= 0:
        return lambda count: init_value
    transition_begin = _at_least_zero(transition_begin)

    def schedule(count):
        c = jnp.clip(count - transition_begin, 0, transition_steps)
        v = (init_value - end_value) * ((1 - c / transition_steps) ** power) + end_value
        # A traced non-positive transition_steps: constant, as a concrete one.
        return jnp.where(transition_steps <= 0, init_value, v) if traced else v

    return schedule
