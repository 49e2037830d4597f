r"""Penalties on parameter trees, and losses with a penalty added.

Conventions, stated once (the tests check each):

* :func:`l1_penalty` is :math:`\sum_i |w_i|`;
* :func:`l2_penalty` is :math:`\tfrac12 \sum_i w_i^2`, so its gradient is
  :math:`w` and ``l2 * l2_penalty`` adds exactly :math:`\lambda w` to the
  gradient: the *coupled* weight decay of ``torch.optim``'s ``weight_decay``,
  not the decoupled decay of :func:`~jaxopt_core.adamw`;
* :func:`elastic_net_penalty` is :math:`\ell_1 \sum|w_i| + \ell_2 \tfrac12 \sum w_i^2`.

Sums run over every leaf picked by ``mask`` (see :mod:`jaxopt_core.core.masks`:
a tree of bools, a prefix of one, or a callable such as
:func:`~jaxopt_core.weights_only_mask`), in at least float32.

A note on the L1 term and gradients. :math:`|w|` has no derivative at 0; its
subdifferential there is the interval :math:`[-1, 1]`. ``jax.grad(jnp.abs)``
returns **1.0** at ``0.0`` (and at ``-0.0``): a valid subgradient, but not the
minimum-norm one (0). Plain (sub)gradient descent on a loss with an L1 term
therefore does not produce zeros: every step moves a weight by
:math:`\eta\ell_1` towards 0 whatever its size, so a weight whose optimum is 0
jumps across it and back, hovering in a band of width about
:math:`\eta\ell_1` and landing on exactly 0 only by accident. For exact
zeros, take the L1 term out of the gradient and apply it with a proximal step:
:func:`~jaxopt_core.proximal_gradient`, :func:`~jaxopt_core.proximal_step`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxopt_core.core.checks import check_nonneg
from jaxopt_core.core.masks import Mask, resolve_mask
from jaxopt_core.core.numerics import to_working


def _masked_sum(fn: Callable[[jax.Array], jax.Array], params: Any, mask: Mask | None) -> jax.Array:
    """``sum(fn(leaf))`` over the leaves picked by ``mask``, in at least float32."""
    full = resolve_mask(mask, params)
    terms = [
        jnp.sum(fn(to_working(jnp.asarray(p))))
        for m, p in zip(jax.tree.leaves(full), jax.tree.leaves(params), strict=True)
        if m
    ]
    if not terms:
        return jnp.zeros([], jnp.float32)
    return functools.reduce(jnp.add, terms)


def l1_penalty(params: Any, mask: Mask | None = None) -> jax.Array:
    r"""The L1 norm of a parameter tree: :math:`\sum_i |w_i|`.

    Args:
        params: a pytree of arrays.
        mask: which leaves count (``None``: all); a tree of bools, a prefix of
            one, or a callable ``params -> tree``.

    Returns:
        A scalar, in at least float32.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> p = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([3.0])}
        >>> jc.l1_penalty(p)
        Array(6., dtype=float32)
        >>> jc.l1_penalty(p, mask={"w": True, "b": False})
        Array(3., dtype=float32)
    """
    return _masked_sum(jnp.abs, params, mask)


def l2_penalty(params: Any, mask: Mask | None = None) -> jax.Array:
    r"""Half the squared L2 norm of a parameter tree: :math:`\tfrac12 \sum_i w_i^2`.

    The factor :math:`\tfrac12` makes the gradient :math:`w` itself, so
    ``lam * l2_penalty(w)`` in a loss is coupled weight decay with rate ``lam``.

    Args:
        params: a pytree of arrays.
        mask: which leaves count (``None``: all).

    Returns:
        A scalar, in at least float32.

    Example:
        >>> import jax, jax.numpy as jnp, jaxopt_core as jc
        >>> w = jnp.array([3.0, -4.0])
        >>> jc.l2_penalty(w)
        Array(12.5, dtype=float32)
        >>> jax.grad(jc.l2_penalty)(w)
        Array([ 3., -4.], dtype=float32)
    """
    return _masked_sum(lambda x: 0.5 * jnp.square(x), params, mask)


def elastic_net_penalty(
    params: Any, l1: ArrayLike, l2: ArrayLike, mask: Mask | None = None
) -> jax.Array:
    r"""The elastic-net penalty :math:`\ell_1 \sum_i |w_i| + \ell_2 \tfrac12 \sum_i w_i^2`.

    With sklearn's ``ElasticNet(alpha, l1_ratio)`` this is
    ``l1 = alpha * l1_ratio``, ``l2 = alpha * (1 - l1_ratio)``.

    Args:
        params: a pytree of arrays.
        l1: weight of the L1 norm, >= 0 (a number or a traced scalar).
        l2: weight of half the squared L2 norm, >= 0.
        mask: which leaves are penalized (``None``: all).

    Returns:
        A scalar, in at least float32.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> jc.elastic_net_penalty(jnp.array([1.0, -2.0]), l1=0.5, l2=2.0)
        Array(6.5, dtype=float32)
    """
    check_nonneg("l1", l1)
    check_nonneg("l2", l2)
    return l1 * l1_penalty(params, mask) + l2 * l2_penalty(params, mask)


def regularized(
    loss_fn: Callable[..., jax.Array],
    l1: ArrayLike = 0.0,
    l2: ArrayLike = 0.0,
    mask: Mask | None = None,
) -> Callable[..., jax.Array]:
    r"""``loss_fn`` plus an elastic-net penalty on its first argument.

    .. math::
        F(w, \dots) = \mathrm{loss\_fn}(w, \dots) + \ell_1 \sum_i |w_i|
        + \ell_2 \tfrac12 \sum_i w_i^2 .

    The result has ``loss_fn``'s signature, ``(params, *args, **kwargs)``;
    ``jax.grad`` of it is the regularized gradient, :math:`\nabla f +
    \ell_1 \operatorname{sign}(w) + \ell_2 w`. The L2 part is exact (it is
    coupled weight decay). The L1 part is a subgradient (1 at exactly 0, see
    the module notes), so gradient steps on it hover around 0 instead of
    reaching it; use :func:`~jaxopt_core.proximal_gradient` for sparse
    solutions. ``l1`` and ``l2`` may be traced, so penalties can be swept with
    ``jax.vmap``; a term whose weight is the Python number 0 is left out.

    Args:
        loss_fn: a scalar loss ``loss_fn(params, *args, **kwargs)``.
        l1: weight of :math:`\sum|w|`, >= 0.
        l2: weight of :math:`\tfrac12\sum w^2`, >= 0.
        mask: which leaves of ``params`` are penalized (``None``: all), e.g.
            :func:`~jaxopt_core.weights_only_mask` to leave biases alone.

    Returns:
        The regularized loss function.

    Raises:
        TypeError: ``l1`` or ``l2`` is not a number.
        ValueError: a concrete ``l1`` or ``l2`` is negative or not finite.

    Example:
        >>> import jax, jax.numpy as jnp, jaxopt_core as jc
        >>> def mse(w, x, y):
        ...     return 0.5 * jnp.mean((x @ w - y) ** 2)
        >>> loss = jc.regularized(mse, l2=0.1)
        >>> w, x, y = jnp.array([1.0, 2.0]), jnp.eye(2), jnp.zeros(2)
        >>> jax.grad(loss)(w, x, y)  # w / 2 from the mean, 0.1 * w from the penalty
        Array([0.6, 1.2], dtype=float32)
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable; got {loss_fn!r}")
    check_nonneg("l1", l1)
    check_nonneg("l2", l2)
    # A literal 0 adds nothing: leave the term out of the graph, so the
    # default regularized(f) is f exactly (and its gradient bit for bit).
    use_l1 = not (isinstance(l1, (int, float)) and l1 == 0)
    use_l2 = not (isinstance(l2, (int, float)) and l2 == 0)

    @functools.wraps(loss_fn)
    def loss(params, *args, **kwargs):
        value = loss_fn(params, *args, **kwargs)
        if use_l1:
            value = value + l1 * l1_penalty(params, mask)
        if use_l2:
            value = value + l2 * l2_penalty(params, mask)
        return value

    return loss
