r"""Variants of Adam's moment estimates: AMSGrad, AdaMax, AdaBelief, RAdam, Lion.

Each ``scale_by_*`` holds the maths of one method; the aliases in
:mod:`jaxopt_core.core.adaptive_optimizers` chain them with a learning-rate
scaling. Conventions are those of :mod:`jaxopt_core.core.moments`:
hyperparameters may be traced, concrete ones are checked at construction,
arithmetic runs in at least float32 (low-precision hyperparameters are raised
to it too) and results are cast back to the stored dtypes, complex gradients
enter second moments through :math:`|g|^2`. ``t`` is the step count, 1 on the
first update. State classes are optax's where optax has them (re-exported).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxopt_core.core.base import Optimizer, check_same_structure, mark_elementwise
from jaxopt_core.core.checks import check_nonneg, check_number, check_unit
from jaxopt_core.core.moments import ScaleByAdamState
from jaxopt_core.core.numerics import (
    abs_sq,
    ema_bias_correction,
    safe_increment,
    to_working,
    unzip_leaves,
    working_dtype,
    zero_count,
)

ScaleByAmsgradState = optax.ScaleByAmsgradState
ScaleByBeliefState = optax.ScaleByBeliefState
ScaleByLionState = optax.ScaleByLionState


def at_least_float32(x: ArrayLike) -> ArrayLike:
    """A float16/bfloat16 array hyperparameter raised to float32 (``decay**t``
    rounds to 1 in bfloat16 after a few hundred steps); anything else as is."""
    dtype = getattr(x, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
        return jnp.asarray(x, jnp.float32)
    return x


def zeros_tree(params: Any, dtype: Any = None) -> Any:
    """Zeros shaped like ``params``, in ``dtype`` (default: each leaf's own)."""
    return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=dtype or jnp.result_type(p)), params)


def cast_like(tree: Any, like: Any) -> Any:
    """``tree`` with each leaf cast to the dtype of the matching leaf of ``like``."""
    return jax.tree.map(lambda x, ref: x.astype(ref.dtype), tree, like)


def nesterov_mean(m, g, b1, count, ct) -> jax.Array:
    r"""NAdam's look-ahead first moment
    :math:`\beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t)`."""
    ahead = m / ema_bias_correction(b1, safe_increment(count), ct)
    return b1 * ahead + (1 - b1) * (g / ema_bias_correction(b1, count, ct))


def _checked_betas(b1: ArrayLike, b2: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
    check_unit("b1", b1)
    check_unit("b2", b2)
    return at_least_float32(b1), at_least_float32(b2)


def scale_by_amsgrad(
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
) -> Optimizer:
    r"""AMSGrad (Reddi et al., 2018): Adam with the running maximum of the
    second moment in the denominator,

    .. math::
        \hat v^{max}_t = \max(\hat v^{max}_{t-1}, \hat v_t), \qquad
        u_t = \hat m_t / (\sqrt{\hat v^{max}_t + \epsilon_{root}} + \epsilon),

    with :math:`\hat m, \hat v` bias-corrected unless ``bias_correction_mu``/
    ``bias_correction_nu`` is False. State: ``ScaleByAmsgradState(count, mu, nu, nu_max)``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_amsgrad()
        >>> u, s = t.update(jnp.array([2.0]), t.init(jnp.zeros(1)))
        >>> u, s = t.update(jnp.array([0.0]), s)
        >>> bool(s.nu_max[0] > s.nu[0] / (1 - 0.999**2))  # the maximum is kept
        True
    """
    b1, b2 = _checked_betas(b1, b2)
    check_nonneg("eps", eps)
    check_nonneg("eps_root", eps_root)
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

    def init(params):
        return ScaleByAmsgradState(
            count=zero_count(),
            mu=zeros_tree(params, mu_dtype),
            nu=zeros_tree(params),
            nu_max=zeros_tree(params),
        )

    def update(grads, state, params=None):
        del params
        check_same_structure(grads, state.nu, "scale_by_amsgrad")
        count = safe_increment(state.count)

        def leaf(g, m, v, vmax):
            ct = working_dtype(g.dtype)
            g = g.astype(ct)
            m = (1 - b1) * g + b1 * to_working(m)
            v = (1 - b2) * abs_sq(g) + b2 * v.astype(working_dtype(v.dtype))
            m_hat = m / ema_bias_correction(b1, count, ct) if bias_correction_mu else m
            v_eff = v / ema_bias_correction(b2, count, v.dtype) if bias_correction_nu else v
            vmax = jnp.maximum(vmax.astype(v.dtype), v_eff)
            return m_hat / (jnp.sqrt(vmax + eps_root) + eps), m, v, vmax

        out = jax.tree.map(leaf, grads, state.mu, state.nu, state.nu_max)
        updates, mu, nu, nu_max = unzip_leaves(out, grads, 4)
        return cast_like(updates, grads), ScaleByAmsgradState(
            count=count,
            mu=cast_like(mu, state.mu),
            nu=cast_like(nu, state.nu),
            nu_max=cast_like(nu_max, state.nu_max),
        )

    return mark_elementwise(Optimizer(init, update))


def scale_by_adamax(b1: ArrayLike = 0.9, b2: ArrayLike = 0.999, eps: ArrayLike = 1e-8) -> Optimizer:
    r"""AdaMax (Kingma & Ba, 2014): Adam with the infinity norm for the second moment,

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \max(|g_t| + \epsilon, \beta_2 v_{t-1}), \quad
        u_t = \frac{m_t}{(1-\beta_1^t)\, v_t}.

    State: :class:`~jaxopt_core.ScaleByAdamState` (``nu`` holds :math:`v`).

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_adamax(eps=0.0)
        >>> round(float(t.update(jnp.array([-4.0]), t.init(jnp.zeros(1)))[0][0]), 4)
        -1.0
    """
    b1, b2 = _checked_betas(b1, b2)
    check_nonneg("eps", eps)

    def init(params):
        return ScaleByAdamState(count=zero_count(), mu=zeros_tree(params), nu=zeros_tree(params))

    def update(grads, state, params=None):
        del params
        check_same_structure(grads, state.nu, "scale_by_adamax")
        count = safe_increment(state.count)

        def leaf(g, m, v):
            ct = working_dtype(g.dtype)
            g = g.astype(ct)
            m = (1 - b1) * g + b1 * to_working(m)
            v = jnp.maximum(jnp.abs(g) + eps, b2 * v.astype(ct))
            return m / ema_bias_correction(b1, count, ct) / v, m, v

        out = jax.tree.map(leaf, grads, state.mu, state.nu)
        updates, mu, nu = unzip_leaves(out, grads, 3)
        return cast_like(updates, grads), ScaleByAdamState(
            count=count, mu=cast_like(mu, state.mu), nu=cast_like(nu, state.nu)
        )

    return mark_elementwise(Optimizer(init, update))


def scale_by_belief(
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-16,
    eps_root: ArrayLike = 1e-16,
    *,
    nesterov: bool = False,
) -> Optimizer:
    r"""AdaBelief (Zhuang et al., 2020): Adam whose second moment tracks the
    surprise :math:`g_t - m_t` instead of :math:`g_t`,

    .. math::
        s_t = \beta_2 s_{t-1} + (1-\beta_2) |g_t - m_t|^2 + \epsilon_{root}, \qquad
        u_t = \hat m_t / (\sqrt{s_t / (1-\beta_2^t)} + \epsilon),

    with :math:`\hat m_t` bias-corrected, or NAdam's look-ahead with
    ``nesterov=True``. State: ``ScaleByBeliefState(count, mu, nu)``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_belief()
        >>> u, s = t.update(jnp.array([1.0]), t.init(jnp.zeros(1)))
        >>> round(float(u[0]), 3)  # first step: g / |g - m| = 1 / b1
        1.111
    """
    b1, b2 = _checked_betas(b1, b2)
    check_nonneg("eps", eps)
    check_nonneg("eps_root", eps_root)

    def init(params):
        return ScaleByBeliefState(count=zero_count(), mu=zeros_tree(params), nu=zeros_tree(params))

    def update(grads, state, params=None):
        del params
        check_same_structure(grads, state.nu, "scale_by_belief")
        count = safe_increment(state.count)

        def leaf(g, m, s):
            ct = working_dtype(g.dtype)
            g = g.astype(ct)
            m = (1 - b1) * g + b1 * to_working(m)
            s = (1 - b2) * abs_sq(g - m) + b2 * s.astype(working_dtype(s.dtype)) + eps_root
            if nesterov:
                m_hat = nesterov_mean(m, g, b1, count, ct)
            else:
                m_hat = m / ema_bias_correction(b1, count, ct)
            s_hat = s / ema_bias_correction(b2, count, s.dtype)
            return m_hat / (jnp.sqrt(s_hat) + eps), m, s

        out = jax.tree.map(leaf, grads, state.mu, state.nu)
        updates, mu, nu = unzip_leaves(out, grads, 3)
        return cast_like(updates, grads), ScaleByBeliefState(
            count=count, mu=cast_like(mu, state.mu), nu=cast_like(nu, state.nu)
        )

    return mark_elementwise(Optimizer(init, update))


def scale_by_radam(
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    threshold: ArrayLike = 5.0,
    *,
    nesterov: bool = False,
) -> Optimizer:
    r"""Rectified Adam (Liu et al., 2020): the adaptive step only once the
    variance of the adaptive learning rate is tractable,

    .. math::
        \rho_\infty = \frac{2}{1-\beta_2} - 1, \quad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t}, \quad
        r_t = \sqrt{\tfrac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}},
        \\
        u_t = r_t\, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)
        \ \text{ if } \rho_t \ge \text{threshold}, \qquad u_t = \hat m_t \ \text{ otherwise}.

    State: :class:`~jaxopt_core.ScaleByAdamState`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_radam()
        >>> u, _ = t.update(jnp.array([3.0]), t.init(jnp.zeros(1)))
        >>> round(float(u[0]), 4)  # rho_1 < 5: the bias-corrected momentum only
        3.0
    """
    b1, b2 = _checked_betas(b1, b2)
    check_nonneg("eps", eps)
    check_nonneg("eps_root", eps_root)
    check_number("threshold", threshold, low=None)
    rho_inf = 2.0 / (1.0 - b2) - 1.0

    def rectifier(count):
        # Same expression order as the reference: near rho_t = 4 the factor
        # rho_t - 4 amplifies any rounding of b2**t.
        b2t = b2**count
        rho = rho_inf - 2 * count * b2t / (1 - b2t)
        den = (rho_inf - 4.0) * (rho_inf - 2.0) * rho
        r = jnp.sqrt((rho - 4.0) * (rho - 2.0) * rho_inf / den)
        return rho, r

    def init(params):
        return ScaleByAdamState(count=zero_count(), mu=zeros_tree(params), nu=zeros_tree(params))

    def update(grads, state, params=None):
        del params
        check_same_structure(grads, state.nu, "scale_by_radam")
        count = safe_increment(state.count)
        rho, r = rectifier(count)

        def leaf(g, m, v):
            ct = working_dtype(g.dtype)
            g = g.astype(ct)
            m = (1 - b1) * g + b1 * to_working(m)
            v = (1 - b2) * abs_sq(g) + b2 * v.astype(working_dtype(v.dtype))
            if nesterov:
                m_hat = nesterov_mean(m, g, b1, count, ct)
            else:
                m_hat = m / ema_bias_correction(b1, count, ct)
            v_hat = v / ema_bias_correction(b2, count, v.dtype)
            adaptive = r.astype(ct) * m_hat / (jnp.sqrt(v_hat + eps_root) + eps)
            return jnp.where(rho >= threshold, adaptive, m_hat), m, v

        out = jax.tree.map(leaf, grads, state.mu, state.nu)
        updates, mu, nu = unzip_leaves(out, grads, 3)
        return cast_like(updates, grads), ScaleByAdamState(
            count=count, mu=cast_like(mu, state.mu), nu=cast_like(nu, state.nu)
        )

    return mark_elementwise(Optimizer(init, update))


def scale_by_lion(
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.99,
    mu_dtype: Any = None,
    *,
    mode: str = "hard",
    smooth_beta: ArrayLike = 1.0,
) -> Optimizer:
    r"""Lion (Chen et al., 2023): the sign of an interpolation of the gradient
    and the momentum,

    .. math::
        u_t = \mathrm{sign}\big((1-\beta_1) g_t + \beta_1 m_{t-1}\big), \qquad
        m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t.

    ``mode`` (static) replaces the sign of :math:`x`: ``"smooth"`` by
    :math:`\tanh(\beta_s x)` (:math:`\beta_s` = ``smooth_beta``),
    ``"refined"`` by :math:`x` where :math:`|x| < 1` and its sign elsewhere.
    State: ``ScaleByLionState(count, mu)``; ``mu_dtype`` sets the dtype of :math:`m`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_lion()
        >>> t.update(jnp.array([0.3, -2.0, 0.0]), t.init(jnp.zeros(3)))[0]
        Array([ 1., -1.,  0.], dtype=float32)
    """
    check_number("b1", b1, high=1.0, high_open=False)
    check_number("b2", b2, high=1.0, high_open=False)
    b1, b2 = at_least_float32(b1), at_least_float32(b2)
    check_number("smooth_beta", smooth_beta, low=None)
    if mode not in ("hard", "smooth", "refined"):
        raise ValueError(f"mode must be 'hard', 'smooth' or 'refined'; got mode={mode!r}")
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

    def direction(x):
        if mode == "smooth":
            return jnp.tanh(smooth_beta * x)
        if mode == "refined":
            return jnp.where(jnp.abs(x) < 1.0, x, jnp.sign(x))
        return jnp.sign(x)

    def init(params):
        return ScaleByLionState(count=zero_count(), mu=zeros_tree(params, mu_dtype))

    def update(grads, state, params=None):
        del params
        check_same_structure(grads, state.mu, "scale_by_lion")

        def leaf(g, m):
            # Each term in its own working precision (a float32 ``mu`` with
            # float64 gradients is scaled in float32, as in the reference).
            g, m = to_working(g), to_working(m)
            return direction((1.0 - b1) * g + b1 * m), (1 - b2) * g + b2 * m

        updates, mu = unzip_leaves(jax.tree.map(leaf, grads, state.mu), grads, 2)
        return cast_like(updates, grads), ScaleByLionState(
            count=safe_increment(state.count), mu=cast_like(mu, state.mu)
        )

    return mark_elementwise(Optimizer(init, update))
