r"""Adafactor's factored second-moment estimate: :func:`scale_by_factored_rms`.

For a matrix-shaped leaf the running mean of :math:`g^2` is kept as one row
vector and one column vector (their outer product, normalised, stands for
the full matrix), so the state of an :math:`n \times m` weight is
:math:`n + m` numbers instead of :math:`nm` (Shazeer & Stern, 2018). The
state class is optax's ``FactoredState`` (re-exported); state leaves keep the
params' dtypes and the arithmetic runs in at least float32.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from jaxopt_core.core.base import Optimizer, check_same_structure, mark_tree_dependent
from jaxopt_core.core.checks import check_nonneg, check_number
from jaxopt_core.core.numerics import (
    abs_sq,
    safe_increment,
    unzip_leaves,
    working_dtype,
    zero_count,
)

FactoredState = optax.FactoredState


def decay_rate_pow(step: ArrayLike, exponent: ArrayLike = 0.8) -> jax.Array:
    r"""Adafactor's default second-moment decay at step ``step`` (0-based):
    :math:`\hat\beta_2 = 1 - (step + 1)^{-c}`, so the first step keeps only
    the new gradient and the average lengthens with time."""
    t = jnp.asarray(step + 1, jnp.float32)
    return 1.0 - t ** (-exponent)


def factored_dims(shape: tuple, factored: bool, min_dim_size_to_factor: int) -> tuple | None:
    """``(d1, d0)``: the second-largest and the largest axis of ``shape``, the
    two axes the statistics are factored over; ``None`` when the leaf is kept
    whole (fewer than 2 axes, ``factored`` off, or the second-largest axis
    shorter than ``min_dim_size_to_factor``)."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _init_leaf(p, factored, min_size):
    dims = factored_dims(p.shape, factored, min_size)
    small = jnp.zeros((1,), p.dtype)
    if dims is None:
        # Two placeholders, not one array twice: a state whose leaves share a
        # buffer cannot be donated (make_train_step).
        return small, jnp.zeros((1,), p.dtype), jnp.zeros_like(p)
    d1, d0 = dims
    row = jnp.zeros(np.delete(p.shape, d0), p.dtype)
    col = jnp.zeros(np.delete(p.shape, d1), p.dtype)
    return row, col, small


def _factored_step(g2, v_row, v_col, decay, d1, d0):
    """New row/column statistics and the inverse-RMS factor they give."""
    row = decay * v_row + (1.0 - decay) * jnp.mean(g2, axis=d0)
    col = decay * v_col + (1.0 - decay) * jnp.mean(g2, axis=d1)
    reduced_d1 = d1 - 1 if d1 > d0 else d1
    row_factor = (row / jnp.mean(row, axis=reduced_d1, keepdims=True)) ** -0.5
    col_factor = col**-0.5
    factor = jnp.expand_dims(row_factor, axis=d0) * jnp.expand_dims(col_factor, axis=d1)
    return row, col, factor


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: ArrayLike = 0.8,
    step_offset: ArrayLike = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: ArrayLike = 1e-30,
    decay_rate_fn: Callable[[ArrayLike, ArrayLike], ArrayLike] = decay_rate_pow,
) -> Optimizer:
    r"""Scale updates by a factored estimate of the root mean square of past
    gradients (Adafactor, Shazeer & Stern 2018).

    With :math:`\hat\beta_t` = ``decay_rate_fn(t - step_offset, decay_rate)``
    (:math:`t` = 0 on the first update) and :math:`G = g^2 + \epsilon`: a
    leaf whose two largest axes are at least ``min_dim_size_to_factor`` keeps
    row and column means

    .. math::
        R_t = \hat\beta_t R_{t-1} + (1-\hat\beta_t)\,\mathrm{mean}_{cols} G, \quad
        C_t = \hat\beta_t C_{t-1} + (1-\hat\beta_t)\,\mathrm{mean}_{rows} G, \quad
        u = g \,\Big/\, \sqrt{\frac{R_t C_t^\top}{\mathrm{mean}(R_t)}},

    and any other leaf keeps :math:`V_t = \hat\beta_t V_{t-1} + (1-\hat\beta_t) G`,
    :math:`u = g / \sqrt{V_t}`. Per-leaf by construction: tree-dependent.
    Needs ``params`` (as optax's).

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_factored_rms(min_dim_size_to_factor=2)
        >>> w = jnp.zeros((2, 3))
        >>> s = t.init(w)
        >>> s.v_row.shape, s.v_col.shape, s.v.shape
        ((2,), (3,), (1,))
        >>> t.update(jnp.full((2, 3), -2.0), s, w)[0][0]  # first step: g / |g|
        Array([-1., -1., -1.], dtype=float32)
    """
    check_number("decay_rate", decay_rate, low=None)
    check_number("step_offset", step_offset, low=None)
    check_nonneg("epsilon", epsilon)
    check_number("min_dim_size_to_factor", min_dim_size_to_factor, low=None)
    if not callable(decay_rate_fn):
        raise TypeError(f"decay_rate_fn must be callable; got decay_rate_fn={decay_rate_fn!r}")

    def init(params):
        out = jax.tree.map(lambda p: _init_leaf(p, factored, min_dim_size_to_factor), params)
        row, col, v = unzip_leaves(out, params, 3)
        return FactoredState(count=zero_count(), v_row=row, v_col=col, v=v)

    def update(grads, state, params=None):
        if params is None:
            raise ValueError(
                "scale_by_factored_rms needs the params: call update(grads, state, params)"
            )
        check_same_structure(grads, state.v, "scale_by_factored_rms")
        decay = decay_rate_fn(state.count - step_offset, decay_rate)

        def leaf(g, v_row, v_col, v, p):
            ct = working_dtype(g.dtype)
            g2 = abs_sq(g.astype(ct)) + epsilon
            dims = factored_dims(p.shape, factored, min_dim_size_to_factor)
            small = jnp.zeros((1,), p.dtype)
            if dims is None:
                # The update uses v before it is rounded to the stored dtype:
                # in float16, epsilon = 1e-30 rounds to 0 and 0 * 0**-0.5 is NaN.
                v_new = decay * v.astype(ct) + (1.0 - decay) * g2
                u = (g.astype(ct) * v_new**-0.5).astype(g.dtype)
                return u, small, jnp.zeros((1,), p.dtype), v_new.astype(v.dtype)
            row, col, factor = _factored_step(g2, v_row.astype(ct), v_col.astype(ct), decay, *dims)
            u = (g.astype(ct) * factor).astype(g.dtype)
            return u, row.astype(v_row.dtype), col.astype(v_col.dtype), small

        out = jax.tree.map(leaf, grads, state.v_row, state.v_col, state.v, params)
        updates, row, col, v = unzip_leaves(out, grads, 4)
        return updates, FactoredState(count=safe_increment(state.count), v_row=row, v_col=col, v=v)

    return mark_tree_dependent(Optimizer(init, update))
