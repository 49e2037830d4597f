r"""Hyperparameters in the optimizer state: :func:`inject_hyperparams`.

``inject_hyperparams(factory)(**kwargs)`` builds the transform
``factory(**kwargs)`` anew at every step from values kept in its state, so a
schedule can drive *any* numeric hyperparameter (momentum, weight decay, b2 ...)
and a training loop, or a population-based search, can overwrite them
between steps (``state.hyperparams["learning_rate"] = ...``) without a
recompile: inside ``jit`` they are traced data. Semantics and state classes
are optax's (``optax.InjectStatefulHyperparamsState``, re-exported), and the
factory may be a jaxopt_core or an optax one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_core.core.base import Optimizer
from jaxopt_core.core.combining import inherit_layout_mark, update_with_extra_args
from jaxopt_core.core.numerics import safe_increment, zero_count

InjectHyperparamsState = optax.InjectHyperparamsState
InjectStatefulHyperparamsState = optax.InjectStatefulHyperparamsState


def to_hyperparam_dtype(value: Any, dtype: Any) -> Any:
    """``value`` as a ``dtype`` array when it is a float that is not already a
    strongly typed JAX array (Python floats, NumPy floats, weak JAX floats);
    anything else unchanged."""
    if isinstance(value, jax.Array) and not getattr(value, "weak_type", False):
        return value
    kind = value.dtype if hasattr(value, "dtype") else type(value)
    if jax.dtypes.issubdtype(kind, jnp.floating):
        return jnp.asarray(value, dtype=dtype)
    return value


def split_hyperparams(
    arguments: dict[str, Any], static_args: set[str]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Sort bound factory arguments into ``(schedules, numbers, others)``:
    a schedule is any callable not named in ``static_args`` (a plain one is
    wrapped as an ``optax.schedules.WrappedSchedule``); numbers are ints, floats and
    arrays; bools, ``None``, dtypes and static arguments are others."""
    schedules, numbers, others = {}, {}, {}
    for name, value in arguments.items():
        if name in static_args or isinstance(value, bool):
            others[name] = value
        elif isinstance(value, optax.schedules.StatefulSchedule):
            schedules[name] = value
        elif callable(value):
            schedules[name] = optax.schedules.WrappedSchedule(value)
        elif isinstance(value, (int, float, jax.Array, np.ndarray)):
            numbers[name] = value
        else:
            others[name] = value
    return schedules, numbers, others


def inject_hyperparams(
    inner_factory: Callable[..., Any],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., Optimizer]:
    r"""Wrap a transform factory so that its numeric hyperparameters live in
    the state and may be schedules.

    ``inject_hyperparams(f)(*args, **kwargs)`` takes ``f``'s arguments, where
    any numeric one may instead be a schedule ``count -> value`` (or an
    ``optax.schedules.StatefulSchedule``). At step :math:`t` (0 on the first update) it
    applies ``f(**hyperparams_t)`` with :math:`h_t` = the schedule's value at
    :math:`t`, or the number kept in ``state.hyperparams`` for the others.

    Args:
        inner_factory: a function returning a transform (``jc.adam``,
            ``optax.sgd``, ``jc.scale_by_adam`` ...).
        static_args: names of callable arguments that are not schedules.
        hyperparam_dtype: dtype of the float hyperparameters in the state;
            default: the highest float dtype of the params (as optax). Pass
            ``jnp.float32`` for bfloat16/float16 params: ``b2=0.999`` rounds
            to 1 in bfloat16, which jaxopt_core's checks refuse (optax would
            divide by :math:`1 - 1^t = 0`).

    Returns:
        A function with ``inner_factory``'s signature returning an
        :class:`~jaxopt_core.Optimizer` with state
        ``InjectStatefulHyperparamsState(count, hyperparams,
        hyperparams_states, inner_state)`` and the layout mark of the inner
        transform. Concrete values are checked when it is called (the inner
        transform is built once then).

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.inject_hyperparams(jc.sgd)(learning_rate=0.1, momentum=0.9)
        >>> s = opt.init(jnp.zeros(1))
        >>> s.hyperparams["learning_rate"] = jnp.float32(0.5)  # e.g. from a PBT exploit
        >>> opt.update(jnp.ones(1), s, jnp.zeros(1))[0]
        Array([-0.5], dtype=float32)
    """
    static = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    unknown = static - set(signature.parameters)
    if unknown:
        raise ValueError(
            f"static_args must name parameters of inner_factory; got {sorted(unknown)}, "
            f"inner_factory takes {list(signature.parameters)}"
        )

    @functools.wraps(inner_factory)
    def factory(*args: Any, **kwargs: Any) -> Optimizer:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        schedules, numbers, others = split_hyperparams(bound.arguments, static)
        # Build the inner transform once now: concrete values are checked at
        # construction, and the wrapper takes its layout mark.
        first = {k: f(f.init()) for k, f in schedules.items()}
        probe = inner_factory(**others, **numbers, **first)
        opt = _injected(inner_factory, schedules, numbers, others, hyperparam_dtype)
        return inherit_layout_mark(opt, probe)

    return factory


def _dtype_for(params: Any, hyperparam_dtype: Any) -> Any:
    if hyperparam_dtype is not None:
        return hyperparam_dtype
    return optax.tree.dtype(params, "highest")


def _injected(inner_factory, schedules, numbers, others, hyperparam_dtype) -> Optimizer:
    """The transform of :func:`inject_hyperparams` for sorted arguments."""

    def init(params):
        dtype = _dtype_for(params, hyperparam_dtype)
        hyper = {k: jnp.asarray(to_hyperparam_dtype(v, dtype)) for k, v in numbers.items()}
        sched_states = {k: f.init() for k, f in schedules.items()}
        hyper.update(
            {k: to_hyperparam_dtype(f(sched_states[k]), dtype) for k, f in schedules.items()}
        )
        return InjectStatefulHyperparamsState(
            count=zero_count(),
            hyperparams=hyper,
            hyperparams_states=sched_states,
            inner_state=inner_factory(**others, **hyper).init(params),
        )

    def update(updates, state, params=None, **extra_args):
        dtype = _dtype_for(params, hyperparam_dtype)
        hyper = {k: to_hyperparam_dtype(v, dtype) for k, v in state.hyperparams.items()}
        hyper.update(
            {
                k: to_hyperparam_dtype(f(state.hyperparams_states[k], **extra_args), dtype)
                for k, f in schedules.items()
            }
        )
        sched_states = {
            k: f.update(state.hyperparams_states[k], **extra_args) for k, f in schedules.items()
        }
        inner = inner_factory(**others, **hyper)
        updates, inner_state = update_with_extra_args(
            inner, updates, state.inner_state, params, **extra_args
        )
        return updates, InjectStatefulHyperparamsState(
            count=safe_increment(state.count),
            hyperparams=hyper,
            hyperparams_states=sched_states,
            inner_state=inner_state,
        )

    return Optimizer(init, update)
