r"""Step scalings: a constant or scheduled step size, and decoupled weight decay.

These transforms turn a direction into a step: :func:`scale` and
:func:`scale_by_schedule` multiply it, :func:`scale_by_learning_rate` applies
the descent sign, and :func:`add_decayed_weights` adds :math:`\lambda w`.
"""

from typing import NamedTuple

import jax
import optax
from jax.typing import ArrayLike

from jaxopt_core.core.base import (
    EmptyState,
    Optimizer,
    ScalarOrSchedule,
    Schedule,
    check_same_structure,
    mark_elementwise,
    mark_tree_dependent,
)
from jaxopt_core.core.checks import check_nonneg, check_number
from jaxopt_core.core.masks import Mask, resolve_mask
from jaxopt_core.core.numerics import safe_increment, to_working, working_dtype, zero_count

# State of a transform driven by a schedule: the step count (optax's
# ScaleByScheduleState, same field).
ScheduleState = optax.ScaleByScheduleState


def scale(step_size: ArrayLike) -> Optimizer:
    """Multiply updates by a constant (possibly traced) ``step_size``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> jc.scale(-2.0).update(jnp.ones(1), jc.EmptyState())[0]
        Array([-2.], dtype=float32)
    """
    check_number("step_size", step_size, low=None)

    def init(params):
        del params
        return EmptyState()

    def update(grads, state, params=None, **extra_args):
        del extra_args
        if params is not None:  # stateless, so the params are the only reference
            check_same_structure(grads, params, "scale", "params")
        return jax.tree.map(lambda g: (step_size * to_working(g)).astype(g.dtype), grads), state

    return mark_elementwise(Optimizer(init, update))


def scale_by_schedule(step_size_fn: Schedule) -> Optimizer:
    """Multiply updates by ``step_size_fn(count)``, count = 0 on the first update.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_schedule(lambda n: 1.0 / (n + 1))
        >>> u, s = t.update(jnp.ones(1), t.init(None))
        >>> t.update(jnp.ones(1), s)[0]
        Array([0.5], dtype=float32)
    """
    if not callable(step_size_fn):
        raise TypeError(f"step_size_fn must be callable; got {step_size_fn!r}")

    def init(params):
        del params
        return ScheduleState(count=zero_count())

    def update(grads, state, params=None, **extra_args):
        del extra_args
        if params is not None:
            check_same_structure(grads, params, "scale_by_schedule", "params")
        s = step_size_fn(state.count)
        grads = jax.tree.map(lambda g: (s * to_working(g)).astype(g.dtype), grads)
        return grads, ScheduleState(count=safe_increment(state.count))

    return mark_elementwise(Optimizer(init, update))


def scale_by_learning_rate(learning_rate: ScalarOrSchedule, *, flip_sign: bool = True) -> Optimizer:
    r"""Multiply updates by :math:`-\eta` (or :math:`+\eta` with ``flip_sign=False``).

    ``learning_rate`` is a number, a (traced) array, or a schedule
    ``count -> rate`` such as :func:`~jaxopt_core.cosine_decay_schedule` or
    any optax schedule.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_learning_rate(0.1)
        >>> t.update(jnp.ones(1), t.init(None))[0]
        Array([-0.1], dtype=float32)
    """
    check_nonneg("learning_rate", learning_rate, allow_schedule=True)
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)


class AddDecayedWeightsState(NamedTuple):
    """State of :func:`add_decayed_weights` with a scheduled decay: the step
    count (a constant decay keeps :class:`~jaxopt_core.EmptyState`). optax's
    ``AddDecayedWeightsState`` is an alias of its ``EmptyState`` and its
    scheduled state a private class, so this one stays jaxopt_core's."""

    count: jax.Array


def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0, mask: Mask | None = None
) -> Optimizer:
    r"""Add decoupled weight decay: :math:`u = g + \lambda w` (Loshchilov & Hutter, 2019).

    Placed before the learning-rate scaling (as in :func:`~jaxopt_core.adamw`)
    the step becomes :math:`w \leftarrow w - \eta(\mathrm{adam}(g) + \lambda w)`.
    ``mask`` (a tree of bools, a prefix of one, or a callable of the params)
    picks the leaves that decay; the others pass through, and so do ``None``
    leaves of the updates. Needs ``params``. ``weight_decay`` may be any finite
    number, as in optax (a negative one grows the weights: optax's ``fromage``
    uses it); a constant 0 returns the updates untouched.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.add_decayed_weights(0.1)
        >>> p = jnp.full(1, 2.0)
        >>> t.update(jnp.zeros(1), t.init(p), p)[0]
        Array([0.2], dtype=float32)
    """
    check_number("weight_decay", weight_decay, low=None, allow_schedule=True)

    scheduled = callable(weight_decay)

    def init(params):
        del params
        # A constant decay needs no step count: no scalar to carry and donate.
        return AddDecayedWeightsState(count=zero_count()) if scheduled else EmptyState()

    def update(grads, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(
                "add_decayed_weights needs the params: call update(grads, state, params)"
            )
        if not scheduled and isinstance(weight_decay, (int, float)) and weight_decay == 0:
            return grads, state  # g + 0 * w would turn an inf weight into a nan
        wd = weight_decay(state.count) if scheduled else weight_decay
        full = resolve_mask(mask, params)

        def leaf(g, m, p):
            if g is None or not m:
                return g
            return (to_working(g) + wd * p.astype(working_dtype(g.dtype))).astype(g.dtype)

        grads = jax.tree.map(leaf, grads, full, params, is_leaf=lambda x: x is None)
        if not scheduled:
            return grads, state
        return grads, AddDecayedWeightsState(count=safe_increment(state.count))

    opt = Optimizer(init, update)
    return mark_elementwise(opt) if mask is None else mark_tree_dependent(opt)
