r"""Schedules built from others: one after another (:func:`join_schedules`),
warm restarts (:func:`sgdr_schedule`), warm-up then exponential decay, and
the one-cycle policy.

Names, arguments and values are optax's (tested at every step). Numeric
arguments may be traced, except those that fix where a piece starts in a
way optax computes in Python (``cosine_onecycle_schedule``'s
``transition_steps`` and ``pct_start``, the ``decay_steps`` of each SGDR
cycle); ``count`` is 0 on the first update.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxopt_core.core.base import Schedule
from jaxopt_core.core.checks import check_number
from jaxopt_core.core.schedules import (
    exponential_decay,
    linear_schedule,
    warmup_cosine_decay_schedule,
)


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[ArrayLike]) -> Schedule:
    r"""Run ``schedules[0]`` until step ``boundaries[0]``, then
    ``schedules[1]`` restarted at 0, and so on: for
    :math:`b_{i-1} \le t < b_i`, :math:`v(t) = s_i(t - b_{i-1})`
    (:math:`b_{-1} = 0`).

    Args:
        schedules: the pieces, in order.
        boundaries: the steps where each piece after the first starts (one
            fewer than ``schedules``; may be traced).

    Example:
        >>> import jaxopt_core as jc
        >>> s = jc.join_schedules([jc.constant_schedule(1.0),
        ...                        jc.linear_schedule(1.0, 0.0, 10)], [5])
        >>> [float(s(t)) for t in (4, 5, 10)]
        [1.0, 1.0, 0.5]
    """
    schedules, boundaries = list(schedules), list(boundaries)
    if not schedules:
        raise ValueError("join_schedules needs at least one schedule; got schedules=[]")
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"boundaries must have one entry fewer than schedules ({len(schedules) - 1}); "
            f"got boundaries={boundaries!r}"
        )
    for i, s in enumerate(schedules):
        if not callable(s):
            raise TypeError(f"schedules[{i}] must be callable; got {s!r}")
    for i, b in enumerate(boundaries):
        check_number(f"boundaries[{i}]", b)

    def schedule(count):
        value = schedules[0](count)
        for boundary, piece in zip(boundaries, schedules[1:]):
            value = jnp.where(count < boundary, value, piece(count - boundary))
        return value

    return schedule


def sgdr_schedule(cosine_kwargs: Iterable[dict[str, ArrayLike]]) -> Schedule:
    r"""Stochastic gradient descent with warm restarts (Loshchilov & Hutter,
    2017): :func:`~jaxopt_core.warmup_cosine_decay_schedule` cycles, one per
    dict of its arguments in ``cosine_kwargs``, each starting where the last
    ended (after its ``decay_steps``).

    Example:
        >>> import jaxopt_core as jc
        >>> cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10)
        >>> s = jc.sgdr_schedule([cycle, cycle])
        >>> [round(float(s(t)), 3) for t in (2, 9, 10, 12)]
        [1.0, 0.038, 0.0, 1.0]
    """
    pieces, boundaries, start = [], [], 0
    for i, kwargs in enumerate(cosine_kwargs):
        if "decay_steps" not in kwargs:
            raise ValueError(f"cosine_kwargs[{i}] must give decay_steps; got {kwargs!r}")
        pieces.append(warmup_cosine_decay_schedule(**kwargs))
        start = start + kwargs["decay_steps"]
        boundaries.append(start)
    return join_schedules(pieces, boundaries[:-1])


def warmup_exponential_decay_schedule(
    init_value: ArrayLike,
    peak_value: ArrayLike,
    warmup_steps: ArrayLike,
    transition_steps: ArrayLike,
    decay_rate: ArrayLike,
    transition_begin: ArrayLike = 0,
    staircase: bool = False,
    end_value: ArrayLike | None = None,
) -> Schedule:
    r"""Linear warm-up from ``init_value`` to ``peak_value`` over
    ``warmup_steps``, then :func:`~jaxopt_core.exponential_decay` from
    ``peak_value`` (its step count restarted at 0 after the warm-up).

    Example:
        >>> import jaxopt_core as jc
        >>> s = jc.warmup_exponential_decay_schedule(0.0, 1.0, warmup_steps=4,
        ...                                          transition_steps=2, decay_rate=0.5)
        >>> [float(s(t)) for t in (2, 4, 8)]
        [0.5, 1.0, 0.25]
    """
    check_number("warmup_steps", warmup_steps)
    return join_schedules(
        [
            linear_schedule(init_value, peak_value, warmup_steps),
            exponential_decay(
                peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value
            ),
        ],
        [warmup_steps],
    )


def _cosine_between(start, end, frac):
    return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * frac) + 1)


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: ArrayLike,
    pct_start: float = 0.3,
    div_factor: ArrayLike = 25.0,
    final_div_factor: ArrayLike = 1e4,
) -> Schedule:
    r"""The one-cycle policy (Smith & Topin, 2018) with cosine pieces: from
    :math:`v_0 = p/d` up to the peak :math:`p` over the first
    ``pct_start`` of ``transition_steps``, then down to
    :math:`p/(d\, d_f)` at ``transition_steps``, constant after;
    each piece is :math:`v_b + (v_a - v_b)(1 + \cos(\pi f))/2`, :math:`f` the
    fraction of the piece done.

    Example:
        >>> import jaxopt_core as jc
        >>> s = jc.cosine_onecycle_schedule(100, peak_value=1.0)
        >>> [round(float(s(t)), 4) for t in (0, 30, 100)]
        [0.04, 1.0, 0.0]
    """
    check_number("transition_steps", transition_steps, low=0.0, low_open=True)
    check_number("peak_value", peak_value, low=None)
    check_number("pct_start", pct_start, low=0.0, high=1.0, high_open=False)
    check_number("div_factor", div_factor, low=0.0, low_open=True)
    check_number("final_div_factor", final_div_factor, low=0.0, low_open=True)
    up_end, down_end = int(pct_start * transition_steps), int(transition_steps)

    def schedule(count):
        # Each value the previous one times a factor, in the reference's order.
        factors = [peak_value / div_factor, div_factor, 1.0 / (div_factor * final_div_factor)]
        start, top, bottom = jnp.cumprod(jnp.stack([jnp.asarray(f) for f in factors]))
        up = _cosine_between(start, top, count / max(up_end, 1))
        down = _cosine_between(top, bottom, (count - up_end) / max(down_end - up_end, 1))
        return jnp.where(count < up_end, up, jnp.where(count < down_end, down, bottom))

    return schedule
