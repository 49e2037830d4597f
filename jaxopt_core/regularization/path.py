r"""Regularization paths: one compiled, vmapped fit per L1 strength.

:func:`regularization_path` solves

.. math::
    \min_w \ f(w) + \ell_1 \|w\|_1 + \ell_2 \tfrac12 \|w\|^2

for a whole vector of :math:`\ell_1` values at once: ``jax.vmap`` over the
strengths of a ``lax.scan`` of :func:`~jaxopt_core.proximal_gradient` steps,
compiled once per (``loss_fn``, ``steps``, ``acceleration``, mask, shapes)
and reused for new strengths, data or step sizes of the same shapes. It is the
L1 counterpart of a learning-rate sweep: one program, no Python loop over
steps or strengths.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike

from jaxopt_core.core.base import apply_updates
from jaxopt_core.core.checks import check_nonneg, check_number
from jaxopt_core.core.masks import Mask, resolve_mask
from jaxopt_core.core.numerics import common_working_dtype
from jaxopt_core.regularization.penalties import elastic_net_penalty
from jaxopt_core.regularization.prox import prox_elastic_net
from jaxopt_core.regularization.proximal import proximal_gradient, proximal_iterate

# Power iterations for the automatic step size, and the margin put on the
# estimate (see regularization_path).
_POWER_ITERATIONS = 50
_LIPSCHITZ_MARGIN = 1.05


class PathResult(NamedTuple):
    r"""What :func:`regularization_path` returns, one row per L1 strength.

    Attributes:
        l1s: the strengths, shape ``(k,)``.
        params: the solutions :math:`x_k` (with exact zeros), each leaf stacked
            along a new leading axis of size ``k``.
        losses: the final objective :math:`f(w) + \ell_1\|w\|_1 +
            \ell_2\tfrac12\|w\|^2` (penalty on the masked leaves), shape ``(k,)``.
        nonzeros: the number of nonzero penalized entries, shape ``(k,)``.
        residuals: the norm of the gradient mapping
            :math:`\|w - \operatorname{prox}(w - \eta\nabla f(w))\| / \eta`,
            0 exactly at a minimizer: a convergence check, shape ``(k,)``.
        learning_rate: the step size :math:`\eta` used (scalar).
    """

    l1s: jax.Array
    params: Any
    losses: jax.Array
    nonzeros: jax.Array
    residuals: jax.Array
    learning_rate: jax.Array


def _estimate_step(loss_fn: Callable, params: Any, args: tuple) -> jax.Array:
    r""":math:`1/\hat L`, :math:`\hat L` = margin x the Rayleigh quotient of the
    Hessian at ``params`` after a fixed number of power iterations."""
    flat, unravel = ravel_pytree(params)

    def hvp(v):
        grad = jax.grad(lambda x: loss_fn(unravel(x), *args))
        return jax.jvp(grad, (flat,), (v,))[1]

    # A fixed, irregular start: deterministic, cheap to compile (unlike a PRNG
    # draw), and unlike a vector of ones not orthogonal to the top eigenvector
    # of structured problems (centered designs, symmetric features).
    v = jnp.cos(1.0 + 2.399963 * jnp.arange(flat.size, dtype=flat.dtype))

    def power(_, v):
        w = hvp(v)
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(flat.dtype).tiny)

    v = jax.lax.fori_loop(0, _POWER_ITERATIONS, power, v / jnp.linalg.norm(v))
    lipschitz = _LIPSCHITZ_MARGIN * jnp.vdot(v, hvp(v))
    return 1 / lipschitz


@functools.partial(
    jax.jit, static_argnames=("loss_fn", "steps", "acceleration", "mask_leaves", "estimate")
)
def _solve(params, l1s, l2, learning_rate, args, *, loss_fn, steps, acceleration, mask_leaves,
           estimate):
    treedef = jax.tree.structure(params)
    mask = None if mask_leaves is None else treedef.unflatten(mask_leaves)
    eta = _estimate_step(loss_fn, params, args) if estimate else learning_rate
    grad_fn = jax.grad(loss_fn)

    def fit(l1):
        opt = proximal_gradient(eta, l1, l2, acceleration=acceleration, mask=mask)

        def step(carry, _):
            p, s = carry
            u, s = opt.update(grad_fn(p, *args), s, p)
            return (apply_updates(p, u), s), None

        (p, s), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
        x = proximal_iterate(s, p)
        objective = loss_fn(x, *args) + elastic_net_penalty(x, l1, l2, mask)
        on = treedef.flatten_up_to(resolve_mask(mask, x))
        nonzeros = sum(
            (jnp.count_nonzero(leaf) for m, leaf in zip(on, jax.tree.leaves(x), strict=True) if m),
            start=jnp.zeros([], jnp.int32),
        )
        z = jax.tree.map(lambda w, g: w - eta * g, x, grad_fn(x, *args))
        moved = prox_elastic_net(z, eta * l1, eta * l2, mask)
        residual = jnp.linalg.norm(ravel_pytree(jax.tree.map(jnp.subtract, x, moved))[0]) / eta
        return x, objective, nonzeros, residual

    xs, losses, nonzeros, residuals = jax.vmap(fit)(l1s)
    return PathResult(l1s, xs, losses, nonzeros, residuals, jnp.asarray(eta))


def regularization_path(
    loss_fn: Callable[..., jax.Array],
    params: Any,
    l1s: ArrayLike,
    *,
    args: tuple = (),
    l2: ArrayLike = 0.0,
    learning_rate: ArrayLike | None = None,
    steps: int = 1000,
    acceleration: bool = True,
    mask: Mask | None = None,
) -> PathResult:
    r"""Fit :math:`\min_w f(w) + \ell_1\|w\|_1 + \ell_2\tfrac12\|w\|^2` for every
    :math:`\ell_1` in ``l1s`` in one compiled, vmapped call.

    Each fit starts from ``params`` and takes ``steps`` steps of
    :func:`~jaxopt_core.proximal_gradient` (FISTA by default); the fits are
    independent (no warm start from a neighbouring strength), so their order
    does not matter. The compiled program is cached on ``loss_fn`` (by
    identity: define it once, pass data through ``args``), ``steps``,
    ``acceleration``, the mask and the shapes, so new strengths, data, ``l2``
    or step sizes of the same shapes do not recompile.

    Step size. Proximal gradient converges for :math:`\eta \le 1/L`, with
    :math:`L` the Lipschitz constant of :math:`\nabla f`. With
    ``learning_rate=None`` the step is :math:`\eta = 1/(1.05\,\hat L)`, where
    :math:`\hat L` is the Rayleigh quotient of the Hessian at ``params``
    after 50 power iterations on Hessian-vector products (``jax.jvp`` of
    ``jax.grad``) from a fixed random vector. For a quadratic :math:`f`
    (least squares) the Hessian is constant and :math:`\hat L \to L` from
    below; the 5% margin covers the shortfall for all but nearly tied top
    eigenvalues (and FISTA stays stable on quadratics up to
    :math:`\eta L < 4/3`). For other losses it is only a local estimate: pass
    ``learning_rate``. Check ``residuals`` to see whether ``steps`` sufficed.

    Args:
        loss_fn: the smooth part :math:`f`, ``loss_fn(params, *args) -> scalar``
            (without the penalty); hashable, ideally defined once.
        params: the starting point, a pytree of float arrays.
        l1s: the L1 strengths, a 1-D array (or list) of values >= 0.
        args: extra arguments of ``loss_fn`` (data), traced, not baked in.
        l2: the L2 strength, shared by all fits, >= 0.
        learning_rate: the step size :math:`\eta > 0`, or ``None`` to estimate it.
        steps: the number of proximal-gradient steps per fit (static).
        acceleration: FISTA (default) or ISTA (static).
        mask: which leaves are penalized (a tree of bools or a prefix of one,
            or a callable); the others are fitted unpenalized.

    Returns:
        A :class:`PathResult`: solutions stacked along a leading axis, final
        objectives, nonzero counts, residuals and the step size used.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> def f(w, c):
        ...     return 0.5 * jnp.sum((w - c) ** 2)
        >>> res = jc.regularization_path(f, jnp.zeros(3), jnp.array([0.0, 1.0, 3.0]),
        ...                              args=(jnp.array([2.0, -0.5, 4.0]),), steps=50)
        >>> res.params.round(4)  # soft_threshold(c, l1) for each l1
        Array([[ 2. , -0.5,  4. ],
               [ 1. ,  0. ,  3. ],
               [ 0. ,  0. ,  1. ]], dtype=float32)
        >>> res.nonzeros
        Array([3, 2, 1], dtype=int32)
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable; got {loss_fn!r}")
    if isinstance(l1s, (list, tuple)):
        l1s = np.asarray(l1s)
    check_nonneg("l1s", l1s)
    check_nonneg("l2", l2)
    estimate = learning_rate is None
    if not estimate:
        check_number("learning_rate", learning_rate, low=0.0, low_open=True)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int; got steps={steps!r}")
    params = jax.tree.map(jnp.asarray, params)
    # Hyperparameters as arrays of one float dtype, so a Python float now and
    # a NumPy or JAX scalar later hit the same compiled program.
    floats = [x.dtype for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
    dtype = common_working_dtype(floats)
    l1s = jnp.asarray(l1s, dtype)
    l2 = jnp.asarray(l2, dtype)
    learning_rate = jnp.asarray(0.0 if learning_rate is None else learning_rate, dtype)
    if l1s.ndim != 1:
        raise ValueError(f"l1s must be a 1-D array of strengths; got shape {l1s.shape}")
    if not isinstance(args, tuple):
        raise TypeError(f"args must be a tuple of extra arguments of loss_fn; got {args!r}")
    mask_leaves = None if mask is None else tuple(jax.tree.leaves(resolve_mask(mask, params)))
    return _solve(
        params, l1s, l2, learning_rate, args,
        loss_fn=loss_fn, steps=steps, acceleration=bool(acceleration),
        mask_leaves=mask_leaves, estimate=estimate,
    )
