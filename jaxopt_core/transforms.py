r"""Building blocks: the gradient transforms the optimizers are composed from.

Each ``scale_by_*`` holds the maths of one method and returns an
:class:`~jaxopt_core.Optimizer`; the aliases in :mod:`jaxopt_core.optimizers`
chain them with :func:`scale_by_learning_rate`. Conventions shared by all:

* every hyperparameter may be a Python float, a JAX scalar or a traced value,
  so ``jax.vmap`` over a learning rate or a decay needs no special handling;
  concrete values are checked when the transform is built;
* moment arithmetic runs in at least float32 and is cast back to the stored
  dtype, so float16/bfloat16 parameters get finite updates (in float16,
  ``eps=1e-8`` underflows to 0 and ``0 / (0 + eps)`` would be NaN);
* ``count`` is an int32 that saturates instead of wrapping round;
* state trees keep their dtypes and shapes from step to step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxopt_core._checks import check_nonneg, check_number, check_unit
from jaxopt_core.base import EmptyState, Optimizer, check_same_structure, mark_tree_dependent
from jaxopt_core.masks import Mask, resolve_mask

Schedule = Callable[[jax.Array], ArrayLike]
ScalarOrSchedule = ArrayLike | Schedule


def _wide(dtype) -> jnp.dtype:
    """The dtype to do moment arithmetic in: at least float32."""
    return jnp.promote_types(dtype, jnp.float32)


def _up(x: jax.Array) -> jax.Array:
    return x.astype(_wide(x.dtype))


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the dtype's maximum instead of overflowing
    (a wrapped int32 count would make ``1 - b**count`` jump)."""
    top = jnp.iinfo(count.dtype).max
    return jnp.where(count < top, count + 1, count)


def _zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


@functools.partial(jax.jit, static_argnums=2, inline=True)
def _bias_correction(decay: ArrayLike, count: jax.Array, dtype) -> jax.Array:
    # 1 - decay**t is formed in the default float precision and cast after, as
    # decay**t rounds to 1 in bfloat16 for t beyond a few hundred. It is always
    # compiled: XLA's pow is more accurate than eager dispatch's, which matters
    # here because 1 - 0.999**t cancels (3e-5 relative error at t = 3).
    return (1 - decay**count).astype(dtype)


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`: step count and the two moments."""

    count: jax.Array
    mu: Any
    nu: Any


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
        return ScaleByAdamState(count=_zero_count(), mu=mu, nu=nu)

    def update(grads, state, params=None):
        del params
        check_same_structure(grads, state.nu, "scale_by_adam")
        count = safe_increment(state.count)

        def leaf(g, m, v):
            ct = _wide(g.dtype)
            g = g.astype(ct)
            m = (1 - b1) * g + b1 * m.astype(ct)
            v = (1 - b2) * g**2 + b2 * v.astype(ct)
            m_hat = m / _bias_correction(b1, count, ct)
            if nesterov:
                m_hat = b1 * (m / _bias_correction(b1, safe_increment(count), ct)) + (1 - b1) * (
                    g / _bias_correction(b1, count, ct)
                )
            v_hat = v / _bias_correction(b2, count, ct)
            return m_hat / (jnp.sqrt(v_hat + eps_root) + eps), m, v

        out = jax.tree.map(leaf, grads, state.mu, state.nu)
        updates, mu, nu = _unzip(out, grads, 3)
        updates = jax.tree.map(lambda u, g: u.astype(g.dtype), updates, grads)
        mu = jax.tree.map(lambda m, old: m.astype(old.dtype), mu, state.mu)
        nu = jax.tree.map(lambda v, old: v.astype(old.dtype), nu, state.nu)
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return Optimizer(init, update)


def _unzip(out: Any, like: Any, n: int) -> tuple[Any, ...]:
    """Split a tree of n-tuples, one at each leaf of ``like``, into n trees."""
    treedef = jax.tree.structure(like)
    leaves = treedef.flatten_up_to(out)
    return tuple(treedef.unflatten([x[i] for x in leaves]) for i in range(n))


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms` and :func:`scale_by_stddev`.

    ``mu`` is the running mean of gradients (``None`` unless centered);
    ``count`` the step count (``None`` unless ``bias_correction``)."""

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
        count = _zero_count() if bias_correction else None
        return ScaleByRmsState(count=count, mu=mu, nu=nu)

    def update(grads, state, params=None):
        del params
        check_same_structure(grads, state.nu, name)
        count = safe_increment(state.count) if bias_correction else None

        def leaf(g, m, v):
            ct = _wide(g.dtype)
            g = g.astype(ct)
            v = (1 - decay) * g**2 + decay * v.astype(ct)
            v_hat = v / _bias_correction(decay, count, ct) if bias_correction else v
            if centered:
                m = (1 - decay) * g + decay * m.astype(ct)
                m_hat = m / _bias_correction(decay, count, ct) if bias_correction else m
                v_hat = v_hat - m_hat**2
            if eps_in_sqrt:
                scale = jax.lax.rsqrt(v_hat + eps)
            else:
                scale = 1 / (jnp.sqrt(v_hat) + eps)
            return scale * g, m, v

        if centered:
            out = jax.tree.map(leaf, grads, state.mu, state.nu)
        else:
            out = jax.tree.map(lambda g, v: leaf(g, None, v), grads, state.nu)
        updates, mu, nu = _unzip(out, grads, 3)
        updates = jax.tree.map(lambda u, g: u.astype(g.dtype), updates, grads)
        nu = jax.tree.map(lambda v, old: v.astype(old.dtype), nu, state.nu)
        mu = jax.tree.map(lambda m, old: m.astype(old.dtype), mu, state.mu) if centered else None
        return updates, ScaleByRmsState(count=count, mu=mu, nu=nu)

    return Optimizer(init, update)


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


class ScaleByRssState(NamedTuple):
    """State of :func:`scale_by_rss`: the running sum of squared gradients."""

    sum_of_squares: Any


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

    def update(grads, state, params=None):
        del params
        check_same_structure(grads, state.sum_of_squares, "scale_by_rss")

        def leaf(g, s):
            ct = _wide(g.dtype)
            g = g.astype(ct)
            s = g**2 + s.astype(ct)
            return jnp.where(s > 0, jax.lax.rsqrt(s + eps), 0.0) * g, s

        updates, sos = _unzip(jax.tree.map(leaf, grads, state.sum_of_squares), grads, 2)
        updates = jax.tree.map(lambda u, g: u.astype(g.dtype), updates, grads)
        sos = jax.tree.map(lambda s, old: s.astype(old.dtype), sos, state.sum_of_squares)
        return updates, ScaleByRssState(sum_of_squares=sos)

    return Optimizer(init, update)


class TraceState(NamedTuple):
    """State of :func:`trace`: the momentum buffer."""

    trace: Any


def trace(decay: ArrayLike, nesterov: bool = False, accumulator_dtype: Any = None) -> Optimizer:
    r"""Heavy-ball momentum: :math:`b_t = g_t + \mu b_{t-1}`, :math:`u_t = b_t`,
    or :math:`u_t = g_t + \mu b_t` with ``nesterov=True``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.trace(0.5)
        >>> u, s = t.update(jnp.ones(1), t.init(jnp.zeros(1)))
        >>> t.update(jnp.ones(1), s)[0]
        Array([1.5], dtype=float32)
    """
    check_unit("decay", decay)
    accumulator_dtype = None if accumulator_dtype is None else jnp.dtype(accumulator_dtype)

    def init(params):
        return TraceState(
            trace=jax.tree.map(
                lambda p: jnp.zeros_like(p, dtype=accumulator_dtype or jnp.result_type(p)), params
            )
        )

    def update(grads, state, params=None):
        del params
        check_same_structure(grads, state.trace, "trace")

        def leaf(g, t):
            ct = _wide(g.dtype)
            b = g.astype(ct) + decay * t.astype(ct)
            u = g.astype(ct) + decay * b if nesterov else b
            return u.astype(g.dtype), b.astype(t.dtype)

        updates, new = _unzip(jax.tree.map(leaf, grads, state.trace), grads, 2)
        return updates, TraceState(trace=new)

    return Optimizer(init, update)


class ScheduleState(NamedTuple):
    """State of a transform driven by a schedule: the step count."""

    count: jax.Array


def scale(step_size: ArrayLike) -> Optimizer:
    """Multiply updates by a constant (possibly traced) ``step_size``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> jc.scale(-2.0).update(jnp.ones(1), jc.EmptyState())[0]
        Array([-2.], dtype=float32)
    """
    check_number("step_size", step_size, low=None)

    def init(params):
        del params
        return EmptyState()

    def update(grads, state, params=None):
        if params is not None:  # stateless, so the params are the only reference
            check_same_structure(grads, params, "scale", "params")
        return jax.tree.map(lambda g: (step_size * _up(g)).astype(g.dtype), grads), state

    return Optimizer(init, update)


def scale_by_schedule(step_size_fn: Schedule) -> Optimizer:
    """Multiply updates by ``step_size_fn(count)``, count = 0 on the first update.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_schedule(lambda n: 1.0 / (n + 1))
        >>> u, s = t.update(jnp.ones(1), t.init(None))
        >>> t.update(jnp.ones(1), s)[0]
        Array([0.5], dtype=float32)
    """
    if not callable(step_size_fn):
        raise TypeError(f"step_size_fn must be callable; got {step_size_fn!r}")

    def init(params):
        del params
        return ScheduleState(count=_zero_count())

    def update(grads, state, params=None):
        if params is not None:
            check_same_structure(grads, params, "scale_by_schedule", "params")
        s = step_size_fn(state.count)
        grads = jax.tree.map(lambda g: (s * _up(g)).astype(g.dtype), grads)
        return grads, ScheduleState(count=safe_increment(state.count))

    return Optimizer(init, update)


def scale_by_learning_rate(learning_rate: ScalarOrSchedule, *, flip_sign: bool = True) -> Optimizer:
    r"""Multiply updates by :math:`-\eta` (or :math:`+\eta` with ``flip_sign=False``).

    ``learning_rate`` is a number, a (traced) array, or a schedule
    ``count -> rate`` such as :func:`~jaxopt_core.cosine_decay_schedule` or
    any optax schedule.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.scale_by_learning_rate(0.1)
        >>> t.update(jnp.ones(1), t.init(None))[0]
        Array([-0.1], dtype=float32)
    """
    check_nonneg("learning_rate", learning_rate, allow_schedule=True)
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)


class AddDecayedWeightsState(NamedTuple):
    """State of :func:`add_decayed_weights`: the step count (for schedules)."""

    count: jax.Array


def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0, mask: Mask | None = None
) -> Optimizer:
    r"""Add decoupled weight decay: :math:`u = g + \lambda w` (Loshchilov & Hutter, 2019).

    Placed before the learning-rate scaling (as in :func:`~jaxopt_core.adamw`)
    the step becomes :math:`w \leftarrow w - \eta(\mathrm{adam}(g) + \lambda w)`.
    ``mask`` (a tree of bools, a prefix of one, or a callable of the params)
    picks the leaves that decay; the others pass through. Needs ``params``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.add_decayed_weights(0.1)
        >>> p = jnp.full(1, 2.0)
        >>> t.update(jnp.zeros(1), t.init(p), p)[0]
        Array([0.2], dtype=float32)
    """
    check_nonneg("weight_decay", weight_decay, allow_schedule=True)

    scheduled = callable(weight_decay)

    def init(params):
        del params
        # A constant decay needs no step count: no scalar to carry and donate.
        return AddDecayedWeightsState(count=_zero_count()) if scheduled else EmptyState()

    def update(grads, state, params=None):
        if params is None:
            raise ValueError(
                "add_decayed_weights needs the params: call update(grads, state, params)"
            )
        wd = weight_decay(state.count) if scheduled else weight_decay
        full = resolve_mask(mask, params)

        def leaf(m, g, p):
            if not m:
                return g
            return (_up(g) + wd * p.astype(_wide(g.dtype))).astype(g.dtype)

        grads = jax.tree.map(leaf, full, grads, params)
        if not scheduled:
            return grads, state
        return grads, AddDecayedWeightsState(count=safe_increment(state.count))

    opt = Optimizer(init, update)
    return opt if mask is None else mark_tree_dependent(opt)
