"""Numerics shared by every transform: working precision, step counts, bias correction.

Optimizer arithmetic runs in a *working dtype* of at least float32 and is cast
back to the stored dtype: in float16, ``eps=1e-8`` underflows to 0 and
``0 / (0 + eps)`` would be NaN, and ``1 - b**t`` rounds to 0 in bfloat16.
Step counts are int32 scalars that saturate instead of wrapping round (a
wrapped count would make ``1 - b**count`` jump).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def working_dtype(dtype: Any) -> jnp.dtype:
    """The dtype to do optimizer arithmetic in for values stored as ``dtype``:
    at least float32 (float64 and complex types are kept)."""
    return jnp.promote_types(dtype, jnp.float32)


def common_working_dtype(leaves: Any) -> jnp.dtype:
    """The working dtype shared by all ``leaves`` (arrays or dtypes): their
    promoted dtype, at least float32."""
    return functools.reduce(jnp.promote_types, [jnp.result_type(x) for x in leaves],
                            jnp.dtype(jnp.float32))


def to_working(x: jax.Array) -> jax.Array:
    """``x`` cast to :func:`working_dtype` of its own dtype."""
    return x.astype(working_dtype(x.dtype))


def safe_increment(count: ArrayLike) -> jax.Array:
    """``count + 1`` in the dtype of ``count``, saturating at the dtype's
    maximum instead of overflowing (a wrapped int32 count would make
    ``1 - b**count`` jump). Integer and floating counts are accepted, as in
    optax; anything else (bool, complex) raises ``ValueError``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> jc.safe_increment(jnp.int32(2**31 - 1))
        Array(2147483647, dtype=int32)
        >>> jc.safe_increment(jnp.float32(3))
        Array(4., dtype=float32)
    """
    count = jnp.asarray(count)
    if jnp.issubdtype(count.dtype, jnp.integer):
        top = jnp.iinfo(count.dtype).max
    elif jnp.issubdtype(count.dtype, jnp.floating):
        top = jnp.finfo(count.dtype).max
    else:
        raise ValueError(
            f"safe_increment: count must have an integer or floating dtype; got {count.dtype}"
        )
    # The bound and the step in the count's own dtype: a Python int would be
    # weakly typed and may not fit (uint32's maximum overflows int32).
    top = jnp.asarray(top, count.dtype)
    return jnp.where(count < top, count + jnp.asarray(1, count.dtype), top)


def abs_sq(x: jax.Array) -> jax.Array:
    r"""The squared modulus :math:`|x|^2 = \bar x x`, real, for real or complex ``x``
    (for real ``x`` the same as ``x * x``). Second moments of complex
    gradients use it, as optax does, so they stay real and non-negative.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.core.numerics import abs_sq
        >>> abs_sq(jnp.array([3 + 4j, -2j]))
        Array([25.,  4.], dtype=float32)
    """
    if jnp.iscomplexobj(x):
        return (jnp.conj(x) * x).real
    return x * x


def zero_count() -> jax.Array:
    """A fresh step count: int32 zero."""
    return jnp.zeros([], jnp.int32)


@functools.partial(jax.jit, static_argnums=2, inline=True)
def ema_bias_correction(decay: ArrayLike, count: jax.Array, dtype) -> jax.Array:
    """``1 - decay**count`` in ``dtype``: the bias correction of an EMA started at 0."""
    # Formed in the default float precision and cast after, as decay**t rounds
    # to 1 in bfloat16 for t beyond a few hundred. Always compiled: XLA's pow is
    # more accurate than eager dispatch's, which matters because 1 - 0.999**t
    # cancels (3e-5 relative error at t = 3 otherwise).
    return (1 - decay**count).astype(dtype)


def unzip_leaves(out: Any, like: Any, n: int) -> tuple[Any, ...]:
    """Split a tree of n-tuples, one at each leaf of ``like``, into n trees
    (a per-leaf function returning several results gives such a tree)."""
    treedef = jax.tree.structure(like)
    leaves = treedef.flatten_up_to(out)
    return tuple(treedef.unflatten([x[i] for x in leaves]) for i in range(n))
