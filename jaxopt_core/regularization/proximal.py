r"""Proximal-gradient methods: ISTA, FISTA, and a prox step to end any chain.

A proximal-gradient step on :math:`f(w) + \ell_1\|w\|_1 + \ell_2\tfrac12\|w\|^2`
with :math:`f` smooth is

.. math::
    w \leftarrow \operatorname{prox}(w - \eta \nabla f(w);\ \eta\ell_1, \eta\ell_2),

which, unlike a gradient step on the whole objective, sets weights to
**exactly** zero (see :mod:`jaxopt_core.regularization.prox` for the
operators and their conventions).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxopt_core.core.base import (
    Optimizer,
    ScalarOrSchedule,
    check_same_structure,
    mark_elementwise,
    mark_tree_dependent,
)
from jaxopt_core.core.checks import check_nonneg
from jaxopt_core.core.masks import Mask, resolve_mask
from jaxopt_core.core.numerics import safe_increment, working_dtype, zero_count
from jaxopt_core.regularization.prox import elastic_net_shrink, is_float


def _check_scalars(learning_rate, l1, l2) -> None:
    check_nonneg("learning_rate", learning_rate, allow_schedule=True)
    check_nonneg("l1", l1)
    check_nonneg("l2", l2)


def _rate(learning_rate: ScalarOrSchedule, count: jax.Array) -> ArrayLike:
    return learning_rate(count) if callable(learning_rate) else learning_rate


def _needs_params(params: Any, name: str) -> None:
    if params is None:
        raise ValueError(
            f"{name} needs the params (the prox is taken at the new point): "
            "call update(grads, state, params)"
        )


def _prox_point(z: Any, params: Any, eta, l1, l2, full_mask: Any) -> Any:
    """The prox with strengths ``eta * l1``, ``eta * l2`` of the (wide-dtype)
    point ``z`` on the leaves of ``full_mask`` (a resolved mask) and ``z``
    itself elsewhere, each leaf cast to its parameter's dtype."""
    return jax.tree.map(
        lambda m, x, p: (elastic_net_shrink(x, eta * l1, eta * l2) if m else x).astype(p.dtype),
        full_mask, z, params,
    )


def _delta(new: Any, params: Any, like: Any) -> Any:
    """``new - params`` in the wide dtype, cast to the dtype of ``like``. Where
    ``new`` is 0 this is ``-p`` exactly, so ``apply_updates`` gives ``p + (-p) = +0``."""
    return jax.tree.map(
        lambda n, p, u: (to_working_as(n, p) - to_working_as(p, p)).astype(u.dtype),
        new, params, like,
    )


def to_working_as(x: jax.Array, p: jax.Array) -> jax.Array:
    """``x`` in the working dtype of the parameter ``p``."""
    return x.astype(working_dtype(p.dtype))


class ProximalStepState(NamedTuple):
    """State of :func:`proximal_step`: the step count (for schedules)."""

    count: jax.Array


def proximal_step(
    learning_rate: ScalarOrSchedule,
    l1: ArrayLike = 0.0,
    l2: ArrayLike = 0.0,
    mask: Mask | None = None,
) -> Optimizer:
    r"""A transform that ends a chain with an elastic-net proximal step.

    Given the updates :math:`u` of any optimizer (learning rate included, as
    :func:`~jaxopt_core.adam` returns them), it returns

    .. math::
        u' = \operatorname{prox}(w + u;\ \eta\ell_1, \eta\ell_2) - w,

    so that ``apply_updates(w, u')`` is the prox of the point the optimizer
    would have moved to. ``chain(sgd(lr), proximal_step(lr, l1))`` is ISTA
    (:func:`proximal_gradient`). After a preconditioned optimizer such as Adam
    it still gives exact zeros, but the threshold :math:`\eta\ell_1` is then
    compared with Adam's normalized step, not with the gradient, so its fixed
    points are not the minimizers of :math:`f + \ell_1\|w\|_1`: a practical
    sparsifier, not a Lasso solver. ``learning_rate`` must be the one the
    optimizer before it uses (same number or same schedule).

    Args:
        learning_rate: :math:`\eta`, a number, traced scalar or schedule.
        l1: L1 strength :math:`\ell_1 \ge 0` (the prox uses :math:`\eta\ell_1`).
        l2: L2 strength :math:`\ell_2 \ge 0` (the prox uses :math:`\eta\ell_2`).
        mask: which leaves are penalized; others keep their updates.

    Returns:
        An :class:`~jaxopt_core.Optimizer` with :class:`ProximalStepState`;
        its ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.chain(jc.adam(0.5), jc.proximal_step(0.5, l1=1.0))
        >>> w = jnp.array([0.25, 2.0])
        >>> u, s = opt.update(jnp.array([1.0, -1.0]), opt.init(w), w)
        >>> jc.apply_updates(w, u).round(3)  # adam moves to [-0.25, 2.5], then prox by 0.5
        Array([0., 2.], dtype=float32)
    """
    _check_scalars(learning_rate, l1, l2)

    def init(params):
        del params
        return ProximalStepState(count=zero_count())

    def update(updates, state, params=None):
        _needs_params(params, "proximal_step")
        check_same_structure(updates, params, "proximal_step")
        eta = _rate(learning_rate, state.count)
        full = resolve_mask(mask, params)
        z = jax.tree.map(lambda p, u: p.astype(working_dtype(p.dtype)) + u, params, updates)
        new = _prox_point(z, params, eta, l1, l2, full)
        # Leaves outside the mask keep their updates bit for bit.
        out = jax.tree.map(
            lambda m, d, u: d if m else u, full, _delta(new, params, updates), updates
        )
        return out, ProximalStepState(count=safe_increment(state.count))

    opt = Optimizer(init, update)
    return mark_elementwise(opt) if mask is None else mark_tree_dependent(opt)


class ProximalGradientState(NamedTuple):
    """State of :func:`proximal_gradient`.

    ``count`` is the number of steps taken; ``t`` is FISTA's :math:`t_k` (1 and
    unused without acceleration); ``iterate`` is FISTA's last prox iterate
    :math:`x_k` (``None`` without acceleration, where the params are the
    iterate). Read the solution with :func:`proximal_iterate`.
    """

    count: jax.Array
    t: jax.Array
    iterate: Any


def proximal_gradient(
    learning_rate: ScalarOrSchedule,
    l1: ArrayLike = 0.0,
    l2: ArrayLike = 0.0,
    acceleration: bool = False,
    mask: Mask | None = None,
) -> Optimizer:
    r"""Proximal gradient descent (ISTA), or with ``acceleration=True`` FISTA,
    for :math:`\min_w f(w) + \ell_1\|w\|_1 + \ell_2\tfrac12\|w\|^2`.

    Pass the gradient of the smooth part :math:`f` only (not of the penalty).
    Without acceleration (ISTA):

    .. math::
        w_{k+1} = \operatorname{prox}(w_k - \eta_k\nabla f(w_k);\ \eta_k\ell_1, \eta_k\ell_2).

    With acceleration (FISTA, Beck & Teboulle 2009), :math:`t_1 = 1`,
    :math:`x_0 = y_1` the initial params:

    .. math::
        x_k = \operatorname{prox}(y_k - \eta_k\nabla f(y_k);\ \eta_k\ell_1, \eta_k\ell_2),
        \quad t_{k+1} = \tfrac12\bigl(1 + \sqrt{1 + 4t_k^2}\bigr), \\
        y_{k+1} = x_k + \tfrac{t_k - 1}{t_{k+1}}(x_k - x_{k-1}).

    Because the gradient handed to ``update`` is taken at the params the user
    holds, with acceleration **the params are the extrapolated points**
    :math:`y_k` and the state keeps the prox iterate :math:`x_k`, which is the
    solution estimate (the one with exact zeros and the :math:`O(1/k^2)`
    guarantee): read it with :func:`proximal_iterate`. Both converge for
    :math:`\eta \le 1/L`, :math:`L` the Lipschitz constant of :math:`\nabla f`.

    Updates are ``new - params``; a coordinate the prox sets to 0 becomes
    exactly ``+0.0`` after :func:`~jaxopt_core.apply_updates`
    (:math:`p + (0 - p) = 0` in IEEE arithmetic), in FISTA's :math:`y_k` too
    once :math:`x_k = x_{k-1} = 0` there.

    Args:
        learning_rate: :math:`\eta`, a number, traced scalar or schedule of the count.
        l1: L1 strength :math:`\ell_1 \ge 0` (may be traced, e.g. vmapped).
        l2: L2 strength :math:`\ell_2 \ge 0` (may be traced).
        acceleration: FISTA instead of ISTA (static).
        mask: which leaves are penalized (e.g. :func:`~jaxopt_core.weights_only_mask`);
            the others take plain gradient steps.

    Returns:
        An :class:`~jaxopt_core.Optimizer` with :class:`ProximalGradientState`;
        its ``update`` needs ``params``.

    Example:
        >>> import jax, jax.numpy as jnp, jaxopt_core as jc
        >>> f = lambda w: 0.5 * jnp.sum((w - jnp.array([3.0, 0.5])) ** 2)
        >>> opt, w = jc.proximal_gradient(0.5, l1=1.0, acceleration=True), jnp.zeros(2)
        >>> state = opt.init(w)
        >>> for _ in range(30):
        ...     u, state = opt.update(jax.grad(f)(w), state, w)
        ...     w = jc.apply_updates(w, u)
        >>> jc.proximal_iterate(state, w).round(4)  # soft_threshold([3, 0.5], 1)
        Array([2., 0.], dtype=float32)
    """
    _check_scalars(learning_rate, l1, l2)

    def init(params):
        floats = [jnp.result_type(p) for p in jax.tree.leaves(params) if is_float(p)]
        t_dtype = functools.reduce(jnp.promote_types, floats, jnp.dtype(jnp.float32))
        # A copy, not the params' own buffers: a state aliasing the params
        # cannot be donated together with them (make_train_step).
        iterate = jax.tree.map(lambda p: jnp.array(p, copy=True), params) if acceleration else None
        return ProximalGradientState(
            count=zero_count(), t=jnp.ones([], t_dtype), iterate=iterate
        )

    def update(grads, state, params=None):
        _needs_params(params, "proximal_gradient")
        check_same_structure(grads, params, "proximal_gradient")
        eta = _rate(learning_rate, state.count)
        z = jax.tree.map(
            lambda p, g: to_working_as(p, p) - eta * to_working_as(g, p), params, grads
        )
        x = _prox_point(z, params, eta, l1, l2, resolve_mask(mask, params))
        count = safe_increment(state.count)
        if not acceleration:
            return _delta(x, params, grads), state._replace(count=count)
        t = state.t
        t_next = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
        beta = (t - 1) / t_next

        def extrapolate(xk, xprev):
            ct = working_dtype(xk.dtype)
            xk_w = xk.astype(ct)
            # Where x_k = x_{k-1} = 0 this is exactly +0.0.
            return (xk_w + beta.astype(ct) * (xk_w - xprev.astype(ct))).astype(xk.dtype)

        y = jax.tree.map(extrapolate, x, state.iterate)
        new_state = ProximalGradientState(count=count, t=t_next.astype(t.dtype), iterate=x)
        return _delta(y, params, grads), new_state

    opt = Optimizer(init, update)
    return mark_elementwise(opt) if mask is None else mark_tree_dependent(opt)


def proximal_iterate(state: ProximalGradientState, params: Any) -> Any:
    r"""The solution estimate of :func:`proximal_gradient`: FISTA's prox
    iterate :math:`x_k` from the state, or the params themselves without
    acceleration (where they are the iterate).

    Args:
        state: a :class:`ProximalGradientState`.
        params: the params the training loop holds.

    Returns:
        A tree like ``params``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.proximal_gradient(0.1, l1=1.0, acceleration=True)
        >>> w = jnp.array([2.0, 0.05])
        >>> u, s = opt.update(jnp.zeros(2), opt.init(w), w)
        >>> jc.proximal_iterate(s, jc.apply_updates(w, u))
        Array([1.9, 0. ], dtype=float32)
    """
    if not isinstance(state, ProximalGradientState):
        raise TypeError(
            f"proximal_iterate needs the state of proximal_gradient; got {type(state).__name__}"
        )
    return params if state.iterate is None else state.iterate
