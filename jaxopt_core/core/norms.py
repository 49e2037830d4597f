r"""Norms used by clipping and by per-leaf (layer-wise) scalings.

All accept complex arrays (:math:`|x|^2 = x \bar x`), and the ``safe_*``
forms have a zero gradient where the floor is active instead of the NaN that
differentiating :math:`\max(\lVert x \rVert, c)` at :math:`x = 0` gives.
Reductions are taken in the working precision of
:mod:`jaxopt_core.core.numerics` (at least float32).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxopt_core.core.numerics import abs_sq, working_dtype


def sq_norm(x: jax.Array) -> jax.Array:
    """The squared Euclidean norm of all entries of ``x``, in the working
    precision."""
    x = jnp.asarray(x)
    return jnp.sum(abs_sq(x.astype(working_dtype(x.dtype))))


def global_norm(tree: Any) -> jax.Array:
    r"""The Euclidean norm of all entries of a pytree,
    :math:`\sqrt{\sum_{\text{leaves}} \sum_i |x_i|^2}`, in the working precision.

    The packing of the entries into leaves does not change it (up to the
    order of a floating-point sum), so a transform that only uses it is safe
    on the flat layout.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.core.norms import global_norm
        >>> float(global_norm({"a": jnp.array([3.0]), "b": jnp.array([4.0])}))
        5.0
    """
    total = jnp.zeros([], jnp.float32)
    for leaf in jax.tree.leaves(tree):
        total = total + sq_norm(leaf)
    return jnp.sqrt(total)


def safe_norm(x: jax.Array, min_norm: ArrayLike) -> jax.Array:
    r""":math:`\max(\lVert x \rVert_2, c)` over all entries of ``x``, with
    gradient 0 (not NaN) where :math:`\lVert x \rVert_2 \le c`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.core.norms import safe_norm
        >>> float(safe_norm(jnp.zeros(3), 0.5))
        0.5
    """
    x = jnp.asarray(x)
    norm = jnp.sqrt(sq_norm(x))
    floored = norm <= min_norm
    # Differentiate a harmless stand-in where the floor wins: d||x||/dx at 0 is NaN.
    stand_in = jnp.where(floored, jnp.ones_like(x), x)
    return jnp.where(floored, min_norm, jnp.sqrt(sq_norm(stand_in))).astype(norm.dtype)


def safe_rms(x: jax.Array, min_rms: ArrayLike) -> jax.Array:
    r""":math:`\max(\sqrt{\mathrm{mean}_i |x_i|^2}, c)` with gradient 0 where the
    floor wins.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.core.norms import safe_rms
        >>> float(safe_rms(jnp.array([3.0, 4.0, 0.0, 0.0]), 1e-3))
        2.5
    """
    x = jnp.asarray(x)
    x = x.astype(working_dtype(x.dtype))
    rms = jnp.sqrt(jnp.mean(abs_sq(x)))
    floored = rms <= min_rms
    stand_in = jnp.where(floored, jnp.ones_like(x), x)
    return jnp.where(floored, min_rms, jnp.sqrt(jnp.mean(abs_sq(stand_in)))).astype(rms.dtype)
