r"""Proximal operators and proximal-gradient methods (ISTA, FISTA).

The proximal operator of a penalty :math:`g` with strength :math:`s` is

.. math::
    \operatorname{prox}_{s g}(x) = \arg\min_z \ \tfrac12 \|z - x\|^2 + s\, g(z),

with the penalties of :mod:`jaxopt_core.regularization`, conventions and all:
:math:`g = \|\cdot\|_1` (soft thresholding) and :math:`g = \tfrac12\|\cdot\|^2`
(shrinkage by :math:`1/(1+s)`). A proximal-gradient step on
:math:`f(w) + \ell_1\|w\|_1 + \ell_2\tfrac12\|w\|^2` with :math:`f` smooth is

.. math::
    w \leftarrow \operatorname{prox}(w - \eta \nabla f(w);\ \eta\ell_1, \eta\ell_2),

which, unlike a gradient step on the whole objective, sets weights to
**exactly** zero: soft thresholding maps the whole interval
:math:`[-\eta\ell_1, \eta\ell_1]` to 0.

Numerics: every operator works leaf by leaf in at least float32 and returns
each leaf in its own dtype; a weight thresholded to zero is ``+0.0`` exactly;
NaNs propagate; non-float leaves and leaves outside ``mask`` are returned as
they are (the same objects).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxopt_core._checks import check_nonneg
from jaxopt_core.base import Optimizer, check_same_structure, mark_tree_dependent
from jaxopt_core.masks import Mask, resolve_mask
from jaxopt_core.transforms import ScalarOrSchedule, _wide, _zero_count, safe_increment

# -- the operators, one leaf at a time (x already in a float dtype >= float32) --


def _soft_threshold(x: jax.Array, s: ArrayLike) -> jax.Array:
    # The `<=` test (not `>`) lets NaN through, and `where` writes +0.0, never
    # sign(x) * 0 = -0.0. For |x| > s, x - sign(x) s cannot round to 0 or flip.
    return jnp.where(jnp.abs(x) <= s, jnp.zeros_like(x), x - jnp.sign(x) * s)


def _elastic_net(x: jax.Array, l1: ArrayLike, l2: ArrayLike) -> jax.Array:
    return _soft_threshold(x, l1) / (1 + l2)


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _per_leaf(value: Any, params: Any, name: str) -> list:
    """``value`` (a scalar, or a tree with the params' structure or a prefix
    of it) as one entry per leaf of ``params``; concrete entries are checked."""
    for v in jax.tree.leaves(value):
        check_nonneg(name, v)
    try:
        full = jax.tree.map(lambda v, sub: jax.tree.map(lambda _: v, sub), value, params)
    except ValueError as err:
        raise ValueError(
            f"{name} must be a scalar or a tree with the structure of the params "
            f"(or a prefix of it).\n  {name}: {jax.tree.structure(value)}\n"
            f"  params: {jax.tree.structure(params)}"
        ) from err
    return jax.tree.structure(params).flatten_up_to(full)


def _apply(leaf_fn, params: Any, mask: Mask | None, **strengths: Any) -> Any:
    """``leaf_fn(x, *strengths)`` on each float leaf picked by ``mask``,
    computed in at least float32 and cast back; other leaves pass through."""
    leaves, treedef = jax.tree.flatten(params)
    on = treedef.flatten_up_to(resolve_mask(mask, params))
    per = [_per_leaf(v, params, k) for k, v in strengths.items()]

    def one(x, m, *s):
        if not (m and _is_float(x)):
            return x
        x = jnp.asarray(x)
        return leaf_fn(x.astype(_wide(x.dtype)), *s).astype(x.dtype)

    return treedef.unflatten([one(*row) for row in zip(leaves, on, *per, strict=True)])


def prox_l1(params: Any, strength: Any, mask: Mask | None = None) -> Any:
    r"""Soft thresholding, the prox of :math:`s\|\cdot\|_1`:
    :math:`\operatorname{sign}(x)\max(|x| - s, 0)`.

    It solves :math:`\min_z \tfrac12\|z - x\|^2 + s\sum|z_i|` exactly; every
    entry with :math:`|x_i| \le s` becomes exactly ``0.0``.

    Args:
        params: a pytree of arrays.
        strength: :math:`s \ge 0`: a scalar (possibly traced), or a tree of
            per-leaf values (scalars or broadcastable arrays) with the params'
            structure or a prefix of it.
        mask: which leaves to threshold (``None``: all); the others are
            returned untouched.

    Returns:
        A tree like ``params``, each leaf in its own dtype.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> jc.prox_l1(jnp.array([-2.0, -0.5, 0.0, 0.3, 1.5]), 0.5)
        Array([-1.5,  0. ,  0. ,  0. ,  1. ], dtype=float32)
    """
    return _apply(_soft_threshold, params, mask, strength=strength)


def prox_l2(params: Any, strength: Any, mask: Mask | None = None) -> Any:
    r"""Shrinkage, the prox of :math:`s\tfrac12\|\cdot\|^2`: :math:`x / (1 + s)`.

    Note the :math:`\tfrac12` (the convention of
    :func:`~jaxopt_core.l2_penalty`): without it the result would be
    :math:`x/(1+2s)`.

    Args:
        params: a pytree of arrays.
        strength: :math:`s \ge 0`, a scalar or a tree of per-leaf values.
        mask: which leaves to shrink (``None``: all).

    Returns:
        A tree like ``params``, each leaf in its own dtype.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> jc.prox_l2({"w": jnp.array([3.0, -6.0])}, 2.0)
        {'w': Array([ 1., -2.], dtype=float32)}
    """
    return _apply(lambda x, s: x / (1 + s), params, mask, strength=strength)


def prox_elastic_net(params: Any, l1: Any, l2: Any, mask: Mask | None = None) -> Any:
    r"""The prox of :math:`\ell_1\|\cdot\|_1 + \ell_2\tfrac12\|\cdot\|^2`:
    soft threshold by :math:`\ell_1`, then divide by :math:`1 + \ell_2`.

    .. math::
        \operatorname{prox}(x) = \operatorname{sign}(x)\max(|x| - \ell_1, 0) / (1 + \ell_2).

    Args:
        params: a pytree of arrays.
        l1: L1 strength >= 0, a scalar or a tree of per-leaf values.
        l2: L2 strength >= 0, a scalar or a tree of per-leaf values.
        mask: which leaves to apply it to (``None``: all).

    Returns:
        A tree like ``params``, each leaf in its own dtype.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> jc.prox_elastic_net(jnp.array([-3.0, 0.5, 5.0]), l1=1.0, l2=1.0)
        Array([-1.,  0.,  2.], dtype=float32)
    """
    return _apply(_elastic_net, params, mask, l1=l1, l2=l2)


# -- the optimizers --


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
        lambda m, x, p: (_elastic_net(x, eta * l1, eta * l2) if m else x).astype(p.dtype),
        full_mask, z, params,
    )


def _delta(new: Any, params: Any, like: Any) -> Any:
    """``new - params`` in the wide dtype, cast to the dtype of ``like``. Where
    ``new`` is 0 this is ``-p`` exactly, so ``apply_updates`` gives ``p + (-p) = +0``."""
    return jax.tree.map(
        lambda n, p, u: (n.astype(_wide(p.dtype)) - p.astype(_wide(p.dtype))).astype(u.dtype),
        new, params, like,
    )


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
        return ProximalStepState(count=_zero_count())

    def update(updates, state, params=None):
        _needs_params(params, "proximal_step")
        check_same_structure(updates, params, "proximal_step")
        eta = _rate(learning_rate, state.count)
        full = resolve_mask(mask, params)
        z = jax.tree.map(lambda p, u: p.astype(_wide(p.dtype)) + u, params, updates)
        new = _prox_point(z, params, eta, l1, l2, full)
        # Leaves outside the mask keep their updates bit for bit.
        out = jax.tree.map(
            lambda m, d, u: d if m else u, full, _delta(new, params, updates), updates
        )
        return out, ProximalStepState(count=safe_increment(state.count))

    opt = Optimizer(init, update)
    return opt if mask is None else mark_tree_dependent(opt)


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
        floats = [jnp.result_type(p) for p in jax.tree.leaves(params) if _is_float(p)]
        t_dtype = functools.reduce(jnp.promote_types, floats, jnp.dtype(jnp.float32))
        iterate = jax.tree.map(jnp.asarray, params) if acceleration else None
        return ProximalGradientState(
            count=_zero_count(), t=jnp.ones([], t_dtype), iterate=iterate
        )

    def update(grads, state, params=None):
        _needs_params(params, "proximal_gradient")
        check_same_structure(grads, params, "proximal_gradient")
        eta = _rate(learning_rate, state.count)
        z = jax.tree.map(
            lambda p, g: p.astype(_wide(p.dtype)) - eta * g.astype(_wide(p.dtype)), params, grads
        )
        x = _prox_point(z, params, eta, l1, l2, resolve_mask(mask, params))
        count = safe_increment(state.count)
        if not acceleration:
            return _delta(x, params, grads), state._replace(count=count)
        t = state.t
        t_next = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
        beta = (t - 1) / t_next

        def extrapolate(xk, xprev):
            ct = _wide(xk.dtype)
            xk_w = xk.astype(ct)
            # Where x_k = x_{k-1} = 0 this is exactly +0.0.
            return (xk_w + beta.astype(ct) * (xk_w - xprev.astype(ct))).astype(xk.dtype)

        y = jax.tree.map(extrapolate, x, state.iterate)
        new_state = ProximalGradientState(count=count, t=t_next.astype(t.dtype), iterate=x)
        return _delta(y, params, grads), new_state

    opt = Optimizer(init, update)
    return opt if mask is None else mark_tree_dependent(opt)


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
