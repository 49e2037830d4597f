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

from jaxopt_core.core.accumulation import (
    EmaState,
    MultiSteps,
    MultiStepsState,
    ema,
    incremental_update,
    periodic_update,
)
from jaxopt_core.core.adam_variants import (
    ScaleByAmsgradState,
    ScaleByBeliefState,
    ScaleByLionState,
    scale_by_adamax,
    scale_by_amsgrad,
    scale_by_belief,
    scale_by_lion,
    scale_by_radam,
)
from jaxopt_core.core.adaptive_optimizers import (
    adabelief,
    adamax,
    amsgrad,
    lion,
    nadam,
    nadamw,
    radam,
)
from jaxopt_core.core.base import EmptyState, Optimizer, apply_updates, chain, identity
from jaxopt_core.core.clipping import clip, clip_by_block_rms, clip_by_global_norm
from jaxopt_core.core.combining import (
    ApplyIfFiniteState,
    MaskedNode,
    MaskedState,
    MultiTransformState,
    apply_if_finite,
    freeze,
    masked,
    multi_transform,
    set_to_zero,
)
from jaxopt_core.core.factored import FactoredState, scale_by_factored_rms
from jaxopt_core.core.injection import (
    InjectHyperparamsState,
    InjectStatefulHyperparamsState,
    inject_hyperparams,
)
from jaxopt_core.core.layerwise import (
    scale_by_param_block_norm,
    scale_by_param_block_rms,
    scale_by_trust_ratio,
)
from jaxopt_core.core.layerwise_optimizers import adafactor, lamb, lars
from jaxopt_core.core.masks import resolve_mask, weights_only_mask
from jaxopt_core.core.moments import (
    ScaleByAdamState,
    ScaleByRmsState,
    ScaleByRssState,
    TraceState,
    scale_by_adam,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
    trace,
)
from jaxopt_core.core.numerics import safe_increment
from jaxopt_core.core.optimizers import adagrad, adam, adamw, rmsprop, sgd
from jaxopt_core.core.scaling import (
    AddDecayedWeightsState,
    ScheduleState,
    add_decayed_weights,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from jaxopt_core.core.schedule_combinators import (
    cosine_onecycle_schedule,
    join_schedules,
    sgdr_schedule,
    warmup_exponential_decay_schedule,
)
from jaxopt_core.core.schedules import (
    constant_schedule,
    cosine_decay_schedule,
    exponential_decay,
    linear_schedule,
    piecewise_constant_schedule,
    polynomial_schedule,
    warmup_cosine_decay_schedule,
)
from jaxopt_core.regularization.path import PathResult, regularization_path
from jaxopt_core.regularization.penalties import (
    elastic_net_penalty,
    l1_penalty,
    l2_penalty,
    regularized,
)
from jaxopt_core.regularization.prox import prox_elastic_net, prox_l1, prox_l2
from jaxopt_core.regularization.proximal import (
    ProximalGradientState,
    ProximalStepState,
    proximal_gradient,
    proximal_iterate,
    proximal_step,
)
from jaxopt_core.training.archive import ResultFileError
from jaxopt_core.training.fingerprint import CheckpointMismatchError
from jaxopt_core.training.fit import FitResult, fit
from jaxopt_core.training.grid import grid_product, seed_keys
from jaxopt_core.training.interruption import Interrupted
from jaxopt_core.training.prefetch import BatchIteratorError
from jaxopt_core.training.results import SweepResult
from jaxopt_core.training.search.axes import Axis, choice, integers, log_uniform, uniform
from jaxopt_core.training.search.halving import SuccessiveHalving, successive_halving
from jaxopt_core.training.search.pbt import PBT, pbt
from jaxopt_core.training.search.sampling import SampledGrid, sample
from jaxopt_core.training.serialization import ResultMetadata, load_metadata, load_result
from jaxopt_core.training.step import make_train_step
from jaxopt_core.training.sweep import sweep

__version__ = "0.1.0"

__all__ = [
    # protocol
    "Optimizer",
    "EmptyState",
    "apply_updates",
    "chain",
    "identity",
    # optimizers
    "adabelief",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "amsgrad",
    "lamb",
    "lars",
    "lion",
    "nadam",
    "nadamw",
    "radam",
    "rmsprop",
    "sgd",
    # clipping, combining, accumulation, injected hyperparameters
    "ApplyIfFiniteState",
    "EmaState",
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "MaskedNode",
    "MaskedState",
    "MultiSteps",
    "MultiStepsState",
    "MultiTransformState",
    "apply_if_finite",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "ema",
    "freeze",
    "incremental_update",
    "inject_hyperparams",
    "masked",
    "multi_transform",
    "periodic_update",
    "set_to_zero",
    # building blocks
    "AddDecayedWeightsState",
    "FactoredState",
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByBeliefState",
    "ScaleByLionState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScheduleState",
    "TraceState",
    "add_decayed_weights",
    "safe_increment",
    "scale",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_amsgrad",
    "scale_by_belief",
    "scale_by_factored_rms",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_param_block_norm",
    "scale_by_param_block_rms",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "scale_by_trust_ratio",
    "trace",
    # schedules
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "exponential_decay",
    "join_schedules",
    "linear_schedule",
    "piecewise_constant_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    # masks
    "resolve_mask",
    "weights_only_mask",
    # regularization
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
    # training
    "FitResult",
    "SweepResult",
    "fit",
    "grid_product",
    "make_train_step",
    "seed_keys",
    "sweep",
    # data from iterators
    "BatchIteratorError",
    # saved results
    "ResultFileError",
    "ResultMetadata",
    "load_metadata",
    "load_result",
    # checkpoints
    "CheckpointMismatchError",
    "Interrupted",
    # search
    "Axis",
    "SampledGrid",
    "choice",
    "integers",
    "log_uniform",
    "sample",
    "PBT",
    "pbt",
    "SuccessiveHalving",
    "successive_halving",
    "uniform",
]
