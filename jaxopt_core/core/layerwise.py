r"""Per-leaf (layer-wise) scalings: trust ratios (LARS, LAMB) and the
parameter-scale factor of Adafactor.

Each multiplies a leaf's update by a statistic of the whole leaf (a norm or
an RMS), so all of them depend on the leaf structure and are marked
tree-dependent: on a flat buffer they would compute one statistic for many
layers. Statistics are taken in at least float32; names, arguments and
results are optax's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxopt_core.core.base import EmptyState, Optimizer, mark_tree_dependent
from jaxopt_core.core.checks import check_nonneg
from jaxopt_core.core.norms import safe_norm, safe_rms
from jaxopt_core.core.numerics import working_dtype


def _empty_init(params):
    del params
    return EmptyState()


def _needs_params(name: str, params) -> None:
    if params is None:
        raise ValueError(f"{name} needs the params: call update(grads, state, params)")


def scale_by_trust_ratio(
    min_norm: ArrayLike = 0.0,
    trust_coefficient: ArrayLike = 1.0,
    eps: ArrayLike = 0.0,
) -> Optimizer:
    r"""Scale each leaf's update by its trust ratio (You et al., 2017 and 2020):

    .. math::
        u \leftarrow u \cdot \frac{c\, \max(\lVert w \rVert, n_0)}{\max(\lVert u \rVert, n_0)
        + \epsilon},

    with ratio 1 where either norm is 0 (a leaf at zero, or with no update,
    is left as it is). Needs ``params``; stateless (``EmptyState``).

    Args:
        min_norm: :math:`n_0 \ge 0`, floor of both norms.
        trust_coefficient: :math:`c \ge 0`.
        eps: :math:`\epsilon \ge 0`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_trust_ratio()
        >>> w, g = jnp.array([3.0, 4.0]), jnp.array([0.0, 0.5])
        >>> t.update(g, t.init(w), w)[0]  # rescaled to the norm of w
        Array([0., 5.], dtype=float32)
    """
    check_nonneg("min_norm", min_norm)
    check_nonneg("trust_coefficient", trust_coefficient)
    check_nonneg("eps", eps)

    def update(updates, state, params=None):
        _needs_params("scale_by_trust_ratio", params)

        def leaf(u, p):
            ct = working_dtype(u.dtype)
            w = u.astype(ct)
            p_norm = safe_norm(p.astype(working_dtype(p.dtype)), min_norm)
            u_norm = safe_norm(w, min_norm)
            ratio = trust_coefficient * p_norm / (u_norm + eps)
            ratio = jnp.where((p_norm == 0.0) | (u_norm == 0.0), 1.0, ratio)
            return (w * ratio.astype(ct)).astype(u.dtype)

        return jax.tree.map(leaf, updates, params), state

    return mark_tree_dependent(Optimizer(_empty_init, update))


def scale_by_param_block_rms(min_scale: ArrayLike = 1e-3) -> Optimizer:
    r"""Scale each leaf's update by the RMS of that leaf of the params,
    :math:`u \leftarrow u \cdot \max(\mathrm{rms}(w), s_0)` (Adafactor's
    relative step size). Needs ``params``; stateless.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_param_block_rms()
        >>> w = jnp.array([3.0, 4.0, 0.0, 0.0])
        >>> t.update(jnp.ones(4), t.init(w), w)[0]
        Array([2.5, 2.5, 2.5, 2.5], dtype=float32)
    """
    check_nonneg("min_scale", min_scale)

    def update(updates, state, params=None):
        _needs_params("scale_by_param_block_rms", params)

        def leaf(u, p):
            scale = safe_rms(p.astype(working_dtype(p.dtype)), min_scale)
            w = u.astype(working_dtype(u.dtype))
            return (w * scale.astype(w.dtype)).astype(u.dtype)

        return jax.tree.map(leaf, updates, params), state

    return mark_tree_dependent(Optimizer(_empty_init, update))


def scale_by_param_block_norm(min_scale: ArrayLike = 1e-3) -> Optimizer:
    r"""Scale each leaf's update by the Euclidean norm of that leaf of the
    params, :math:`u \leftarrow u \cdot \max(\lVert w \rVert, s_0)`. Needs
    ``params``; stateless.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_param_block_norm()
        >>> w = jnp.array([3.0, 4.0])
        >>> t.update(jnp.ones(2), t.init(w), w)[0]
        Array([5., 5.], dtype=float32)
    """
    check_nonneg("min_scale", min_scale)

    def update(updates, state, params=None):
        _needs_params("scale_by_param_block_norm", params)

        def leaf(u, p):
            scale = safe_norm(p.astype(working_dtype(p.dtype)), min_scale)
            w = u.astype(working_dtype(u.dtype))
            return (w * scale.astype(w.dtype)).astype(u.dtype)

        return jax.tree.map(leaf, updates, params), state

    return mark_tree_dependent(Optimizer(_empty_init, update))
