"""jaxopt_core: pure, jit-compiled, vmappable optimizers for JAX.

Optimizers are ``(init, update)`` pairs over pytrees with optax's shape; their
hyperparameters are data, so learning-rate sweeps are one ``jax.vmap``.

Example:
    >>> import jax, jax.numpy as jnp, jaxopt_core as jc
    >>> opt = jc.adam(1e-2)
    >>> params = {"w": jnp.ones(3)}
    >>> state = opt.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
    >>> updates, state = opt.update(grads, state, params)
    >>> params = jc.apply_updates(params, updates)
"""

from jaxopt_core.base import EmptyState, Optimizer, apply_updates, chain, identity
from jaxopt_core.masks import resolve_mask, weights_only_mask
from jaxopt_core.optimizers import adagrad, adam, adamw, rmsprop, sgd
from jaxopt_core.schedules import (
    constant_schedule,
    cosine_decay_schedule,
    exponential_decay,
    linear_schedule,
    piecewise_constant_schedule,
    warmup_cosine_decay_schedule,
)
from jaxopt_core.transforms import (
    AddDecayedWeightsState,
    ScaleByAdamState,
    ScaleByRmsState,
    ScaleByRssState,
    ScheduleState,
    TraceState,
    add_decayed_weights,
    safe_increment,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_rss,
    scale_by_schedule,
    scale_by_stddev,
    trace,
)

# -- regularization and proximal methods (issue 3) --
# isort: split
from jaxopt_core.path import PathResult, regularization_path
from jaxopt_core.prox import (
    ProximalGradientState,
    ProximalStepState,
    prox_elastic_net,
    prox_l1,
    prox_l2,
    proximal_gradient,
    proximal_iterate,
    proximal_step,
)
from jaxopt_core.regularization import (
    elastic_net_penalty,
    l1_penalty,
    l2_penalty,
    regularized,
)

# -- training and sweeps (issue 4) --
from jaxopt_core.sweep import SweepResult, grid_product, seed_keys, sweep
from jaxopt_core.train import FitResult, fit, make_train_step

__version__ = "0.1.0"

__all__ = [
    # protocol
    "Optimizer",
    "EmptyState",
    "apply_updates",
    "chain",
    "identity",
    # optimizers
    "adagrad",
    "adam",
    "adamw",
    "rmsprop",
    "sgd",
    # building blocks
    "AddDecayedWeightsState",
    "ScaleByAdamState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScheduleState",
    "TraceState",
    "add_decayed_weights",
    "safe_increment",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "trace",
    # schedules
    "constant_schedule",
    "cosine_decay_schedule",
    "exponential_decay",
    "linear_schedule",
    "piecewise_constant_schedule",
    "warmup_cosine_decay_schedule",
    # masks
    "resolve_mask",
    "weights_only_mask",
    # -- issue 3 names --
    "PathResult",
    "ProximalGradientState",
    "ProximalStepState",
    "elastic_net_penalty",
    "l1_penalty",
    "l2_penalty",
    "prox_elastic_net",
    "prox_l1",
    "prox_l2",
    "proximal_gradient",
    "proximal_iterate",
    "proximal_step",
    "regularization_path",
    "regularized",
    # -- issue 4 names --
    "FitResult",
    "SweepResult",
    "fit",
    "grid_product",
    "make_train_step",
    "seed_keys",
    "sweep",
]
