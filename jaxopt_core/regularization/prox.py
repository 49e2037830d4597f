r"""Proximal operators of the L1, L2 and elastic-net penalties, over pytrees.

The proximal operator of a penalty :math:`g` with strength :math:`s` is

.. math::
    \operatorname{prox}_{s g}(x) = \arg\min_z \ \tfrac12 \|z - x\|^2 + s\, g(z),

with the penalties of :mod:`jaxopt_core.regularization`, conventions and all:
:math:`g = \|\cdot\|_1` (soft thresholding) and :math:`g = \tfrac12\|\cdot\|^2`
(shrinkage by :math:`1/(1+s)`). Soft thresholding maps the whole interval
:math:`[-s, s]` to 0, which is what gives proximal methods
(:mod:`jaxopt_core.regularization.proximal`) their exact zeros.

Numerics: every operator works leaf by leaf in at least float32 and returns
each leaf in its own dtype; a weight thresholded to zero is ``+0.0`` exactly;
NaNs propagate; non-float leaves and leaves outside ``mask`` are returned as
they are (the same objects).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxopt_core.core.checks import check_nonneg
from jaxopt_core.core.masks import Mask, resolve_mask
from jaxopt_core.core.numerics import working_dtype

# -- the operators, one leaf at a time (x already in a float dtype >= float32) --


def _soft_threshold(x: jax.Array, s: ArrayLike) -> jax.Array:
    # The `<=` test (not `>`) lets NaN through, and `where` writes +0.0, never
    # sign(x) * 0 = -0.0. For |x| > s, x - sign(x) s cannot round to 0 or flip.
    return jnp.where(jnp.abs(x) <= s, jnp.zeros_like(x), x - jnp.sign(x) * s)


def elastic_net_shrink(x: jax.Array, l1: ArrayLike, l2: ArrayLike) -> jax.Array:
    """The elastic-net prox of one leaf ``x`` (already in its working dtype):
    soft thresholding by ``l1``, then shrinkage by ``1 / (1 + l2)``."""
    return _soft_threshold(x, l1) / (1 + l2)


def is_float(x: Any) -> bool:
    """Whether ``x`` has a floating (or complex) dtype: the leaves a prox acts on."""
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
        if not (m and is_float(x)):
            return x
        x = jnp.asarray(x)
        return leaf_fn(x.astype(working_dtype(x.dtype)), *s).astype(x.dtype)

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
    return _apply(elastic_net_shrink, params, mask, l1=l1, l2=l2)
