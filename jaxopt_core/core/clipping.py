r"""Gradient clipping: by value, by the norm of the whole tree, by each leaf's RMS.

Names, arguments and results are optax's. Every threshold may be a traced
value (so it can be swept with ``jax.vmap``); concrete ones are checked when
the transform is built. Norms are taken in at least float32, so float16
gradients whose squares overflow float16 are still clipped correctly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxopt_core.core.base import (
    EmptyState,
    Optimizer,
    mark_elementwise,
    mark_tree_dependent,
)
from jaxopt_core.core.checks import check_nonneg, check_number
from jaxopt_core.core.norms import global_norm
from jaxopt_core.core.numerics import abs_sq, to_working


def _empty_init(params):
    del params
    return EmptyState()


def clip(max_delta: ArrayLike) -> Optimizer:
    r"""Clip every entry of the updates to :math:`[-\delta, \delta]`.

    Args:
        max_delta: :math:`\delta \ge 0`.

    Returns:
        A stateless, elementwise :class:`~jaxopt_core.Optimizer`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> jc.clip(1.0).update(jnp.array([-3.0, 0.5, 2.0]), jc.EmptyState())[0]
        Array([-1. ,  0.5,  1. ], dtype=float32)
    """
    check_nonneg("max_delta", max_delta)

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: jnp.clip(u, -max_delta, max_delta), updates), state

    return mark_elementwise(Optimizer(_empty_init, update))


def clip_by_global_norm(max_norm: ArrayLike) -> Optimizer:
    r"""Rescale the updates so that their global norm is at most ``max_norm``
    (Pascanu et al., 2012):

    .. math::
        \lVert u \rVert = \sqrt{\textstyle\sum_{\text{leaves}} \sum_i u_i^2}, \qquad
        u \leftarrow u \ \text{ if } \lVert u \rVert < c, \ \text{ else } u\, c / \lVert u \rVert.

    The norm does not depend on how the entries are split into leaves, so the
    transform is marked layout-safe (``is_elementwise``) and may run on the
    flat layout.

    Args:
        max_norm: :math:`c \ge 0`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> g = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
        >>> jc.clip_by_global_norm(1.0).update(g, jc.EmptyState())[0]["b"]
        Array([0.8], dtype=float32)
    """
    check_nonneg("max_norm", max_norm)

    def update(updates, state, params=None):
        del params
        norm = global_norm(updates)
        keep = norm < max_norm

        def leaf(u):
            w = to_working(u)
            return jnp.where(keep, w, (w / norm.astype(w.dtype)) * max_norm).astype(u.dtype)

        return jax.tree.map(leaf, updates), state

    return mark_elementwise(Optimizer(_empty_init, update))


def clip_by_block_rms(threshold: ArrayLike) -> Optimizer:
    r"""Rescale each leaf (block) so that its root mean square is at most
    ``threshold``: :math:`u \leftarrow u / \max(1, \mathrm{rms}(u) / \tau)`.

    Depends on which entries form a leaf, so it is marked tree-dependent.

    Args:
        threshold: :math:`\tau > 0`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> g = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.1])}
        >>> u, _ = jc.clip_by_block_rms(1.0).update(g, jc.EmptyState())
        >>> [round(float(x), 4) for x in u["a"]], u["b"]
        ([0.8485, 1.1314], Array([0.1], dtype=float32))
    """
    check_number("threshold", threshold, low=0.0, low_open=True)

    def update(updates, state, params=None):
        del params

        def leaf(u):
            w = to_working(u)
            rms = jnp.sqrt(jnp.mean(abs_sq(w)))
            return (w / jnp.maximum(1.0, rms / threshold)).astype(u.dtype)

        return jax.tree.map(leaf, updates), state

    return mark_tree_dependent(Optimizer(_empty_init, update))
