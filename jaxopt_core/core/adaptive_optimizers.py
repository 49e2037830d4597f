r"""Adam-family optimizers beyond Adam/AdamW: NAdam(W), RAdam, AMSGrad,
AdaMax, AdaBelief and Lion, each a short chain of a ``scale_by_*`` block of
:mod:`jaxopt_core.core.adam_variants` (or :mod:`jaxopt_core.core.moments`)
with a learning-rate scaling.

Argument names, order and defaults are optax's (``jc.lion(**kw)`` is
``optax.lion(**kw)``, cross-checked step by step in the tests); every
numeric argument may be traced, so a ``jax.vmap`` over the learning rate
compiles once.
"""


from typing import Any

from jax.typing import ArrayLike

from jaxopt_core.core.adam_variants import (
    scale_by_adamax,
    scale_by_amsgrad,
    scale_by_belief,
    scale_by_lion,
    scale_by_radam,
)
from jaxopt_core.core.base import Optimizer, ScalarOrSchedule, chain
from jaxopt_core.core.checks import check_nonneg
from jaxopt_core.core.masks import Mask
from jaxopt_core.core.optimizers import adam, adamw
from jaxopt_core.core.scaling import add_decayed_weights, scale_by_learning_rate


def _descend(block: Optimizer, learning_rate: ScalarOrSchedule) -> Optimizer:
    check_nonneg("learning_rate", learning_rate, allow_schedule=True)
    return chain(block, scale_by_learning_rate(learning_rate))


def nadam(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
) -> Optimizer:
    r"""NAdam (Dozat, 2016): Adam with Nesterov momentum, i.e. ``adam(...,
    nesterov=True)``: the first moment is replaced by the look-ahead
    :math:`\beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t)`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.nadam(0.1)
        >>> w = jnp.ones(2)
        >>> u, _ = opt.update(w, opt.init(w), w)
        >>> round(float(u[0]), 4)  # -lr (b1 m/(1-b1^2) + (1-b1) g/(1-b1)) / |g|
        -0.1474
    """
    return adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask | None = None,
    *,
    nesterov: bool = True,
) -> Optimizer:
    r"""NAdam with decoupled weight decay: ``adamw(..., nesterov=True)``,
    :math:`w \leftarrow w - \eta(\text{nadam step} + \lambda w)`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.nadamw(0.1, weight_decay=0.5)
        >>> w = jnp.ones(1)
        >>> opt.update(jnp.zeros(1), opt.init(w), w)[0]  # decay only
        Array([-0.05], dtype=float32)
    """
    return adamw(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov=nesterov
    )


def radam(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    threshold: ArrayLike = 5.0,
    *,
    nesterov: bool = False,
) -> Optimizer:
    r"""RAdam (Liu et al., 2020): plain momentum steps
    :math:`-\eta \hat m_t` while the variance of Adam's adaptive rate is
    intractable (:math:`\rho_t` < ``threshold``), then rectified Adam steps
    :math:`-\eta r_t \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)`;
    see :func:`~jaxopt_core.scale_by_radam`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.radam(0.1)
        >>> w = jnp.full(1, 2.0)
        >>> round(float(opt.update(w, opt.init(w), w)[0][0]), 4)  # first step: -lr * g
        -0.2
    """
    return _descend(
        scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov), learning_rate
    )


def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
) -> Optimizer:
    r"""AMSGrad (Reddi et al., 2018): :math:`w \leftarrow w - \eta \hat m_t /
    (\sqrt{\max_{s \le t} \hat v_s + \epsilon_{root}} + \epsilon)`; see
    :func:`~jaxopt_core.scale_by_amsgrad`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.amsgrad(0.1)
        >>> w = jnp.ones(1)
        >>> round(float(opt.update(w, opt.init(w), w)[0][0]), 4)
        -0.1
    """
    block = scale_by_amsgrad(
        b1, b2, eps, eps_root, mu_dtype, bias_correction_mu, bias_correction_nu
    )
    return _descend(block, learning_rate)


def adamax(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
) -> Optimizer:
    r"""AdaMax (Kingma & Ba, 2014): :math:`w \leftarrow w - \eta\, \hat m_t / v_t`,
    :math:`v_t = \max(|g_t| + \epsilon, \beta_2 v_{t-1})`; see
    :func:`~jaxopt_core.scale_by_adamax`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.adamax(0.1, eps=0.0)
        >>> w = jnp.full(1, 3.0)
        >>> round(float(opt.update(w, opt.init(w), w)[0][0]), 4)
        -0.1
    """
    return _descend(scale_by_adamax(b1, b2, eps), learning_rate)


def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-16,
    eps_root: ArrayLike = 1e-16,
    *,
    nesterov: bool = False,
) -> Optimizer:
    r"""AdaBelief (Zhuang et al., 2020): :math:`w \leftarrow w - \eta\, \hat m_t
    / (\sqrt{\hat s_t} + \epsilon)` with :math:`s` the running mean of
    :math:`|g_t - m_t|^2` (plus :math:`\epsilon_{root}`); see
    :func:`~jaxopt_core.scale_by_belief`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.adabelief(0.1)
        >>> w = jnp.ones(1)
        >>> opt.update(w, opt.init(w), w)[0].round(4)
        Array([-0.1111], dtype=float32)
    """
    return _descend(scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov), learning_rate)


def lion(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.99,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: Mask | None = None,
) -> Optimizer:
    r"""Lion (Chen et al., 2023): sign steps with decoupled weight decay,

    .. math::
        w \leftarrow w - \eta\left(\mathrm{sign}((1-\beta_1) g_t + \beta_1 m_{t-1})
        + \lambda w\right), \qquad m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t.

    Every coordinate moves by about :math:`\eta` per step, so learning rates
    are typically 3-10x smaller than Adam's.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.lion(0.1, weight_decay=0.0)
        >>> w = jnp.array([2.0, -3.0])
        >>> opt.update(w, opt.init(w), w)[0]
        Array([-0.1,  0.1], dtype=float32)
    """
    check_nonneg("learning_rate", learning_rate, allow_schedule=True)
    return chain(
        scale_by_lion(b1, b2, mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
