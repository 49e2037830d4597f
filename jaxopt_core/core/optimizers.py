r"""The optimizers: short compositions of the building blocks in
:mod:`jaxopt_core.core.moments` and :mod:`jaxopt_core.core.scaling`.

Each alias takes the same argument names, order and defaults as optax's alias
of the same name, so ``jc.adam(**kw)`` and ``optax.adam(**kw)`` are the same
optimizer (cross-checked step by step in the tests). Every numeric argument may
be a Python float, a JAX scalar, or a traced value, so

>>> import jax, jax.numpy as jnp, jaxopt_core as jc
>>> def final_loss(lr):
...     opt, w = jc.adam(lr), jnp.ones(3)
...     s = opt.init(w)
...     u, s = opt.update(2 * w, s, w)
...     return jnp.sum(jc.apply_updates(w, u) ** 2)
>>> jax.jit(jax.vmap(final_loss))(jnp.array([0.1, 0.5])).shape
(2,)

compiles once for all learning rates. Concrete values are checked at
construction (``ValueError``/``TypeError`` naming the argument); traced values
cannot be, and are taken as given.
"""

from typing import Any

from jax.typing import ArrayLike

from jaxopt_core.core.base import Optimizer, ScalarOrSchedule, chain, identity
from jaxopt_core.core.checks import check_nonneg, check_number
from jaxopt_core.core.masks import Mask
from jaxopt_core.core.moments import (
    scale_by_adam,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
    trace,
)
from jaxopt_core.core.scaling import add_decayed_weights, scale_by_learning_rate


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: ArrayLike | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> Optimizer:
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum.

    .. math::
        b_t = g_t + \mu b_{t-1}, \qquad
        w_{t+1} = w_t - \eta\, b_t \ \ (\text{Nesterov: } w_t - \eta (g_t + \mu b_t)),

    and plain :math:`w_{t+1} = w_t - \eta g_t` when ``momentum`` is None.

    Args:
        learning_rate: :math:`\eta >= 0`, a number, array or schedule.
        momentum: :math:`\mu \in [0, 1]`, or None for no momentum buffer.
        nesterov: Nesterov's look-ahead form (static).
        accumulator_dtype: dtype of the momentum buffer (default: params').

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.sgd(0.1, momentum=0.9)
        >>> w = jnp.array([1.0])
        >>> u, s = opt.update(w, opt.init(w), w)  # gradient of w**2/2 is w
        >>> jc.apply_updates(w, u)
        Array([0.9], dtype=float32)
    """
    check_nonneg("learning_rate", learning_rate, allow_schedule=True)
    if momentum is None:
        return chain(identity(), scale_by_learning_rate(learning_rate))
    check_number("momentum", momentum, low=0.0, high=1.0, high_open=False)
    return chain(
        trace(momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype),
        scale_by_learning_rate(learning_rate),
    )


def adam(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> Optimizer:
    r"""Adam (Kingma & Ba, 2014): :math:`w_{t+1} = w_t - \eta\, \hat m_t /
    (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)` with bias-corrected moments
    :math:`\hat m_t = m_t/(1-\beta_1^t)`, :math:`\hat v_t = v_t/(1-\beta_2^t)`,
    :math:`t` the step count; see :func:`~jaxopt_core.scale_by_adam`.
    ``nesterov=True`` gives NAdam.

    Example:
        >>> import jax, jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.adam(1e-3)
        >>> w = {"w": jnp.ones(3)}
        >>> g = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(w)
        >>> u, s = opt.update(g, opt.init(w), w)
        >>> jc.apply_updates(w, u)["w"]
        Array([0.999, 0.999, 0.999], dtype=float32)
    """
    check_nonneg("learning_rate", learning_rate, allow_schedule=True)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask | None = None,
    *,
    nesterov: bool = False,
) -> Optimizer:
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019):

    .. math::
        w_{t+1} = w_t - \eta \left(\hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)
        + \lambda w_t\right).

    The decay is not rescaled by Adam's denominator, unlike an L2 penalty in
    the loss. ``mask`` picks the leaves that decay (see
    :func:`~jaxopt_core.weights_only_mask`).

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.adamw(0.1, weight_decay=0.5)
        >>> w = jnp.ones(1)
        >>> u, s = opt.update(jnp.zeros(1), opt.init(w), w)  # decay only
        >>> jc.apply_updates(w, u)
        Array([0.95], dtype=float32)
    """
    check_nonneg("learning_rate", learning_rate, allow_schedule=True)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: ArrayLike = 0.9,
    eps: ArrayLike = 1e-8,
    initial_scale: ArrayLike = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: ArrayLike | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> Optimizer:
    r"""RMSProp (Tieleman & Hinton, 2012), optionally centered (Graves, 2013)
    and with momentum on the scaled step:

    .. math::
        v_t = \rho v_{t-1} + (1-\rho) g_t^2, \quad
        s_t = -\eta\, g_t / \sqrt{v_t \,[- m_t^2] + \epsilon}, \quad
        b_t = s_t + \mu b_{t-1}, \quad w_{t+1} = w_t + b_t,

    with :math:`m_t` the running mean of :math:`g` when ``centered``. See
    :func:`~jaxopt_core.scale_by_rms` and :func:`~jaxopt_core.scale_by_stddev`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.rmsprop(0.01, centered=True, momentum=0.9)
        >>> w = jnp.ones(2)
        >>> u, s = opt.update(w, opt.init(w), w)
        >>> jc.apply_updates(w, u).shape
        (2,)
    """
    check_nonneg("learning_rate", learning_rate, allow_schedule=True)
    if momentum is not None:
        check_number("momentum", momentum, low=0.0, high=1.0, high_open=False)
    scaler = scale_by_stddev if centered else scale_by_rms
    return chain(
        scaler(decay, eps, initial_scale, eps_in_sqrt, bias_correction),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov=nesterov) if momentum is not None else identity(),
    )


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: ArrayLike = 0.1,
    eps: ArrayLike = 1e-7,
) -> Optimizer:
    r"""Adagrad (Duchi et al., 2011): per-coordinate steps that shrink with the
    sum of all squared gradients so far,

    .. math::
        G_t = G_{t-1} + g_t^2, \qquad w_{t+1} = w_t - \eta\, g_t / \sqrt{G_t + \epsilon},

    with :math:`G_0` = ``initial_accumulator_value``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.adagrad(1.0, initial_accumulator_value=0.0, eps=0.0)
        >>> w = jnp.array([3.0])
        >>> u, s = opt.update(jnp.array([2.0]), opt.init(w), w)
        >>> jc.apply_updates(w, u)
        Array([2.], dtype=float32)
    """
    check_nonneg("learning_rate", learning_rate, allow_schedule=True)
    return chain(
        scale_by_rss(initial_accumulator_value, eps),
        scale_by_learning_rate(learning_rate),
    )
