r"""Optimizers with per-leaf (layer-wise) step sizes: LAMB, LARS and Adafactor.

Each rescales a leaf's step by a statistic of the whole leaf (a trust ratio,
the RMS of the parameter, a factored second moment), so all three are marked
tree-dependent and training loops keep the params as a tree for them.
Argument names, order and defaults are optax's, and so are the chains they
build (cross-checked step by step in the tests).
"""


from typing import Any

import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxopt_core.core.accumulation import ema
from jaxopt_core.core.base import Optimizer, ScalarOrSchedule, chain
from jaxopt_core.core.checks import check_nonneg
from jaxopt_core.core.clipping import clip_by_block_rms
from jaxopt_core.core.combining import masked
from jaxopt_core.core.factored import scale_by_factored_rms
from jaxopt_core.core.layerwise import scale_by_param_block_rms, scale_by_trust_ratio
from jaxopt_core.core.masks import Mask
from jaxopt_core.core.moments import scale_by_adam, trace
from jaxopt_core.core.scaling import add_decayed_weights, scale, scale_by_learning_rate


def lamb(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-6,
    eps_root: ArrayLike = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
) -> Optimizer:
    r"""LAMB (You et al., 2020): the AdamW direction rescaled per leaf by its
    trust ratio,

    .. math::
        d = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon} + \lambda w, \qquad
        w \leftarrow w - \eta \frac{\lVert w \rVert}{\lVert d \rVert}\, d

    (ratio 1 where a norm is 0), so every layer moves by a fixed fraction of
    its own norm.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.lamb(0.1)
        >>> w = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.0])}
        >>> u, _ = opt.update(w, opt.init(w), w)
        >>> round(float(jnp.linalg.norm(u["a"])), 4)  # 0.1 * ||w_a||
        0.5
    """
    check_nonneg("learning_rate", learning_rate, allow_schedule=True)
    return chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Mask = True,
    trust_coefficient: ArrayLike = 0.001,
    eps: ArrayLike = 0.0,
    trust_ratio_mask: Mask = True,
    momentum: ArrayLike = 0.9,
    nesterov: bool = False,
) -> Optimizer:
    r"""LARS (You et al., 2017): SGD with momentum on the weight-decayed
    gradient rescaled per leaf by its trust ratio,

    .. math::
        d = g + \lambda w, \quad
        s = -\eta\, \frac{c \lVert w \rVert}{\lVert d \rVert + \epsilon}\, d, \quad
        b_t = s + \mu b_{t-1}, \quad w \leftarrow w + b_t,

    with the decay only on the leaves ``weight_decay_mask`` selects and the
    trust ratio only on those ``trust_ratio_mask`` selects (both masks are
    ``masked`` wrappers, as in optax, so states match optax's).

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.lars(1.0, trust_coefficient=0.1)
        >>> w = jnp.array([3.0, 4.0])
        >>> u, _ = opt.update(jnp.array([0.0, 1.0]), opt.init(w), w)
        >>> u  # 0.1 * ||w|| / ||g|| * g
        Array([ 0. , -0.5], dtype=float32)
    """
    check_nonneg("learning_rate", learning_rate, allow_schedule=True)
    trust_ratio = scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps)
    return chain(
        masked(add_decayed_weights(weight_decay), weight_decay_mask),
        masked(trust_ratio, trust_ratio_mask),
        scale_by_learning_rate(learning_rate),
        trace(decay=momentum, nesterov=nesterov),
    )


def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: ArrayLike = 0.8,
    decay_offset: ArrayLike = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: ArrayLike | None = 1.0,
    momentum: ArrayLike | None = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: ScalarOrSchedule | None = None,
    eps: ArrayLike = 1e-30,
    factored: bool = True,
    weight_decay_mask: Mask | None = None,
) -> Optimizer:
    r"""Adafactor (Shazeer & Stern, 2018): RMS scaling with a factored second
    moment (:func:`~jaxopt_core.scale_by_factored_rms`), then, each optional,
    per-leaf RMS clipping at ``clipping_threshold``, the learning rate, the
    parameter scale :math:`\max(\mathrm{rms}(w), 10^{-3})`, an undebiased EMA
    with decay ``momentum`` (kept in ``dtype_momentum``) and decoupled weight
    decay ``weight_decay_rate``:

    .. math::
        w \leftarrow w - \big(\mathrm{ema}_\mu(\eta\, \mathrm{rms}(w)\,
        \mathrm{clip}(g / \sqrt{\hat V_t})) + \lambda w\big).

    Without ``learning_rate`` the step is the relative one alone (as in the
    paper's default).

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.adafactor(0.1, min_dim_size_to_factor=2)
        >>> w = jnp.full((2, 3), 2.0)
        >>> opt.update(jnp.ones((2, 3)), opt.init(w), w)[0][0]  # -0.1 * rms(w) * 1
        Array([-0.2, -0.2, -0.2], dtype=float32)
    """
    steps = [scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)]
    if clipping_threshold is not None:
        steps.append(clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        check_nonneg("learning_rate", learning_rate, allow_schedule=True)
        steps.append(scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        steps.append(scale_by_param_block_rms())
    if momentum is not None:
        steps.append(ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        steps.append(add_decayed_weights(weight_decay_rate, mask=weight_decay_mask))
    steps.append(scale(-1))
    return chain(*steps)
