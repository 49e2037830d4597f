r"""Moment estimators: the adaptive scalings the optimizers are built on.

Each ``scale_by_*`` here holds the maths of one method (Adam's two moments,
RMSProp's running mean square, AdaGrad's sum of squares, heavy-ball momentum)
and returns an :class:`~jaxopt_core.Optimizer`; the aliases in
:mod:`jaxopt_core.core.optimizers` chain them with a learning-rate scaling.
Conventions shared by all:

* every hyperparameter may be a Python float, a JAX scalar or a traced value,
  so ``jax.vmap`` over a learning rate or a decay needs no special handling;
  concrete values are checked when the transform is built;
* moment arithmetic runs in the working precision of
  :mod:`jaxopt_core.core.numerics` (at least float32) and is cast back to the
  stored dtype, so float16/bfloat16 parameters get finite updates;
* ``count`` is an int32 that saturates instead of wrapping round;
* state trees keep their dtypes and shapes from step to step.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxopt_core.core.base import Optimizer, check_same_structure, mark_elementwise
from jaxopt_core.core.checks import check_nonneg, check_number, check_unit
from jaxopt_core.core.numerics import (
    abs_sq,
    ema_bias_correction,
    safe_increment,
    unzip_leaves,
    working_dtype,
    zero_count,
)

# State of scale_by_adam: the step count and the two moments (optax's class:
# same fields, and states mixing both libraries stay one pytree type).
ScaleByAdamState = optax.ScaleByAdamState


def scale_by_adam(
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> Optimizer:
    r"""Rescale gradients by Adam's moment estimates (Kingma & Ba, 2014).

    With :math:`t` the step count (1 on the first update):

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
        \hat m_t = m_t / (1-\beta_1^t), \quad \hat v_t = v_t / (1-\beta_2^t), \quad
        u_t = \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon).

    With ``nesterov=True`` (NAdam, Dozat 2016)
    :math:`\hat m_t = \beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t)`.

    Args:
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to the denominator outside the square root, >= 0.
        eps_root: added inside the square root, >= 0.
        mu_dtype: dtype of the first moment (default: the params' dtype).
        nesterov: use Nesterov momentum (static).

    Returns:
        An :class:`~jaxopt_core.Optimizer` with :class:`ScaleByAdamState`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_adam()
        >>> u, s = t.update(jnp.array([2.0]), t.init(jnp.zeros(1)))
        >>> jnp.round(u, 4)  # the first Adam step is about sign(g)
        Array([1.], dtype=float32)
    """
    check_unit("b1", b1)
    check_unit("b2", b2)
    check_nonneg("eps", eps)
    check_nonneg("eps_root", eps_root)
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

    def init(params):
        mu = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype or jnp.result_type(p)), params)
        nu = jax.tree.map(jnp.zeros_like, params)
        return ScaleByAdamState(count=zero_count(), mu=mu, nu=nu)

    def update(grads, state, params=None, **extra_args):
        del params, extra_args
        check_same_structure(grads, state.nu, "scale_by_adam")
        count = safe_increment(state.count)

        def leaf(g, m, v):
            ct = working_dtype(g.dtype)
            g = g.astype(ct)
            m = (1 - b1) * g + b1 * m.astype(ct)
            v = (1 - b2) * abs_sq(g) + b2 * v.astype(ct)
            m_hat = m / ema_bias_correction(b1, count, ct)
            if nesterov:
                m_hat = b1 * (m / ema_bias_correction(b1, safe_increment(count), ct)) + (1 - b1) * (
                    g / ema_bias_correction(b1, count, ct)
                )
            v_hat = v / ema_bias_correction(b2, count, ct)
            return m_hat / (jnp.sqrt(v_hat + eps_root) + eps), m, v

        out = jax.tree.map(leaf, grads, state.mu, state.nu)
        updates, mu, nu = unzip_leaves(out, grads, 3)
        updates = jax.tree.map(lambda u, g: u.astype(g.dtype), updates, grads)
        mu = jax.tree.map(lambda m, old: m.astype(old.dtype), mu, state.mu)
        nu = jax.tree.map(lambda v, old: v.astype(old.dtype), nu, state.nu)
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return mark_elementwise(Optimizer(init, update))


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms` and :func:`scale_by_stddev`.

    ``mu`` is the running mean of gradients (``None`` unless centered);
    ``count`` the step count (``None`` unless ``bias_correction``). optax
    spreads these over four classes (``ScaleByRmsState(nu)``,
    ``ScaleByRmsWithCountState``, ``ScaleByRStdDevState``,
    ``ScaleByRStdDevWithCountState``), so this one stays jaxopt_core's: same
    numbers, another pytree type."""

    count: jax.Array
    mu: Any
    nu: Any


def _rms(decay, eps, initial_scale, eps_in_sqrt, bias_correction, centered, name) -> Optimizer:
    check_unit("decay", decay)
    check_nonneg("eps", eps)
    check_nonneg("initial_scale", initial_scale)

    def init(params):
        nu = jax.tree.map(lambda p: jnp.full_like(p, initial_scale), params)
        mu = jax.tree.map(jnp.zeros_like, params) if centered else None
        count = zero_count() if bias_correction else None
        return ScaleByRmsState(count=count, mu=mu, nu=nu)

    def update(grads, state, params=None, **extra_args):
        del params, extra_args
        check_same_structure(grads, state.nu, name)
        count = safe_increment(state.count) if bias_correction else None

        def leaf(g, m, v):
            ct = working_dtype(g.dtype)
            g = g.astype(ct)
            v = (1 - decay) * abs_sq(g) + decay * v.astype(ct)
            v_hat = v / ema_bias_correction(decay, count, ct) if bias_correction else v
            if centered:
                m = (1 - decay) * g + decay * m.astype(ct)
                m_hat = m / ema_bias_correction(decay, count, ct) if bias_correction else m
                v_hat = v_hat - abs_sq(m_hat)
            if eps_in_sqrt:
                scale = jax.lax.rsqrt(v_hat + eps)
            else:
                scale = 1 / (jnp.sqrt(v_hat) + eps)
            return scale * g, m, v

        if centered:
            out = jax.tree.map(leaf, grads, state.mu, state.nu)
        else:
            out = jax.tree.map(lambda g, v: leaf(g, None, v), grads, state.nu)
        updates, mu, nu = unzip_leaves(out, grads, 3)
        updates = jax.tree.map(lambda u, g: u.astype(g.dtype), updates, grads)
        nu = jax.tree.map(lambda v, old: v.astype(old.dtype), nu, state.nu)
        mu = jax.tree.map(lambda m, old: m.astype(old.dtype), mu, state.mu) if centered else None
        return updates, ScaleByRmsState(count=count, mu=mu, nu=nu)

    return mark_elementwise(Optimizer(init, update))


def scale_by_rms(
    decay: ArrayLike = 0.9,
    eps: ArrayLike = 1e-8,
    initial_scale: ArrayLike = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> Optimizer:
    r"""Rescale gradients by the root of a running mean of their squares
    (RMSProp, Tieleman & Hinton 2012).

    .. math::
        v_t = \rho v_{t-1} + (1-\rho) g_t^2, \quad
        u_t = g_t / \sqrt{v_t + \epsilon} \ \ (\text{or } g_t / (\sqrt{v_t} + \epsilon)
        \text{ when } \texttt{eps\_in\_sqrt=False}),

    with :math:`v_0` = ``initial_scale`` and, if ``bias_correction``,
    :math:`v_t` divided by :math:`1-\rho^t` before use.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_rms(decay=0.0, eps=0.0)
        >>> t.update(jnp.array([-3.0]), t.init(jnp.zeros(1)))[0]
        Array([-1.], dtype=float32)
    """
    return _rms(decay, eps, initial_scale, eps_in_sqrt, bias_correction, False, "scale_by_rms")


def scale_by_stddev(
    decay: ArrayLike = 0.9,
    eps: ArrayLike = 1e-8,
    initial_scale: ArrayLike = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> Optimizer:
    r"""Rescale gradients by a running estimate of their standard deviation
    (centered RMSProp, Graves 2013).

    .. math::
        m_t = \rho m_{t-1} + (1-\rho) g_t, \quad v_t = \rho v_{t-1} + (1-\rho) g_t^2, \quad
        u_t = g_t / \sqrt{v_t - m_t^2 + \epsilon}.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_stddev()
        >>> s = t.init(jnp.zeros(2))
        >>> t.update(jnp.ones(2), s)[1].mu
        Array([0.1, 0.1], dtype=float32)
    """
    return _rms(decay, eps, initial_scale, eps_in_sqrt, bias_correction, True, "scale_by_stddev")


# State of scale_by_rss: the running sum of squared gradients (optax's class).
ScaleByRssState = optax.ScaleByRssState


def scale_by_rss(initial_accumulator_value: ArrayLike = 0.1, eps: ArrayLike = 1e-7) -> Optimizer:
    r"""Rescale gradients by the root of the sum of all squared gradients so far
    (Adagrad, Duchi et al. 2011).

    .. math::
        G_t = G_{t-1} + g_t^2, \quad u_t = g_t / \sqrt{G_t + \epsilon}
        \ \ (0 \text{ where } G_t = 0),

    with :math:`G_0` = ``initial_accumulator_value``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_rss(0.0, 0.0)
        >>> t.update(jnp.array([2.0]), t.init(jnp.zeros(1)))[0]
        Array([1.], dtype=float32)
    """
    check_nonneg("initial_accumulator_value", initial_accumulator_value)
    check_nonneg("eps", eps)

    def init(params):
        sos = jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator_value), params)
        return ScaleByRssState(sum_of_squares=sos)

    def update(grads, state, params=None, **extra_args):
        del params, extra_args
        check_same_structure(grads, state.sum_of_squares, "scale_by_rss")

        def leaf(g, s):
            ct = working_dtype(g.dtype)
            g = g.astype(ct)
            s = abs_sq(g) + s.astype(ct)
            return jnp.where(s > 0, jax.lax.rsqrt(s + eps), 0.0) * g, s

        updates, sos = unzip_leaves(jax.tree.map(leaf, grads, state.sum_of_squares), grads, 2)
        updates = jax.tree.map(lambda u, g: u.astype(g.dtype), updates, grads)
        sos = jax.tree.map(lambda s, old: s.astype(old.dtype), sos, state.sum_of_squares)
        return updates, ScaleByRssState(sum_of_squares=sos)

    return mark_elementwise(Optimizer(init, update))


# State of trace: the momentum buffer (optax's class).
TraceState = optax.TraceState


def trace(decay: ArrayLike, nesterov: bool = False, accumulator_dtype: Any = None) -> Optimizer:
    r"""Heavy-ball momentum: :math:`b_t = g_t + \mu b_{t-1}`, :math:`u_t = b_t`,
    or :math:`u_t = g_t + \mu b_t` with ``nesterov=True``; :math:`\mu` = ``decay``
    in [0, 1] (1 included, as in optax: an undamped sum).

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.trace(0.5)
        >>> u, s = t.update(jnp.ones(1), t.init(jnp.zeros(1)))
        >>> t.update(jnp.ones(1), s)[0]
        Array([1.5], dtype=float32)
    """
    check_number("decay", decay, low=0.0, high=1.0, high_open=False)
    accumulator_dtype = None if accumulator_dtype is None else jnp.dtype(accumulator_dtype)

    def init(params):
        return TraceState(
            trace=jax.tree.map(
                lambda p: jnp.zeros_like(p, dtype=accumulator_dtype or jnp.result_type(p)), params
            )
        )

    def update(grads, state, params=None, **extra_args):
        del params, extra_args
        check_same_structure(grads, state.trace, "trace")

        def leaf(g, t):
            ct = working_dtype(g.dtype)
            b = g.astype(ct) + decay * t.astype(ct)
            u = g.astype(ct) + decay * b if nesterov else b
            return u.astype(g.dtype), b.astype(t.dtype)

        updates, new = unzip_leaves(jax.tree.map(leaf, grads, state.trace), grads, 2)
        return updates, TraceState(trace=new)

    return mark_elementwise(Optimizer(init, update))
