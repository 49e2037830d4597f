r"""Accumulation and averaging: exponential moving averages of updates,
gradient accumulation over several mini-steps, and averaged (target) copies
of the parameters.

Names, arguments and state classes are optax's (the state classes are
optax's, re-exported). Accumulators live in their own dtype and arithmetic
runs in at least float32, as in :mod:`jaxopt_core.core.moments`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxopt_core.core.base import Optimizer, mark_elementwise
from jaxopt_core.core.checks import check_number
from jaxopt_core.core.combining import (
    check_transform,
    inherit_layout_mark,
    update_with_extra_args,
)
from jaxopt_core.core.numerics import (
    ema_bias_correction,
    safe_increment,
    to_working,
    unzip_leaves,
    working_dtype,
    zero_count,
)

EmaState = optax.EmaState
MultiStepsState = optax.MultiStepsState


def ema(decay: ArrayLike, debias: bool = True, accumulator_dtype: Any = None) -> Optimizer:
    r"""Replace updates by their exponential moving average:

    .. math::
        a_t = \beta a_{t-1} + (1-\beta) g_t, \qquad u_t = a_t / (1 - \beta^t)
        \ \ (\text{or } a_t \text{ without } \texttt{debias}).

    Args:
        decay: :math:`\beta \in [0, 1]`.
        debias: divide by :math:`1-\beta^t` (the average started at 0).
        accumulator_dtype: dtype of :math:`a` (default: the params').

    Returns:
        An elementwise :class:`~jaxopt_core.Optimizer` with state
        ``EmaState(count, ema)``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.ema(0.5)
        >>> u, s = t.update(jnp.array([2.0]), t.init(jnp.zeros(1)))
        >>> round(float(t.update(jnp.array([4.0]), s)[0][0]), 4)  # (0.5*1 + 2) / (1 - 0.25)
        3.3333
    """
    check_number("decay", decay, low=0.0, high=1.0, high_open=False)
    accumulator_dtype = None if accumulator_dtype is None else jnp.dtype(accumulator_dtype)

    def init(params):
        acc = jax.tree.map(
            lambda p: jnp.zeros_like(p, dtype=accumulator_dtype or jnp.result_type(p)), params
        )
        return EmaState(count=zero_count(), ema=acc)

    def update(updates, state, params=None):
        del params
        count = safe_increment(state.count)

        def leaf(g, a):
            # Each term in its own working precision (a float32 accumulator
            # with float64 updates is scaled in float32, as in the reference).
            a = (1 - decay) * to_working(g) + decay * to_working(a)
            u = a / ema_bias_correction(decay, count, a.dtype) if debias else a
            return u.astype(g.dtype), a

        out = jax.tree.map(leaf, updates, state.ema)
        new, acc = unzip_leaves(out, updates, 2)
        acc = jax.tree.map(lambda a, old: a.astype(old.dtype), acc, state.ema)
        return new, EmaState(count=count, ema=acc)

    return mark_elementwise(Optimizer(init, update))


def incremental_update(new_tensors: Any, old_tensors: Any, step_size: ArrayLike) -> Any:
    r"""Polyak averaging of two trees: :math:`\tau\, x_{new} + (1-\tau)\, x_{old}`
    leaf by leaf (``None`` leaves stay ``None``); e.g. a target network's soft
    update.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> jc.incremental_update(jnp.ones(2), jnp.zeros(2), 0.25)
        Array([0.25, 0.25], dtype=float32)
    """
    check_number("step_size", step_size, low=0.0, high=1.0, high_open=False)
    return jax.tree.map(
        lambda new, old: None if new is None else step_size * new + (1.0 - step_size) * old,
        new_tensors,
        old_tensors,
        is_leaf=lambda x: x is None,
    )


def periodic_update(
    new_tensors: Any, old_tensors: Any, steps: ArrayLike, update_period: ArrayLike
) -> Any:
    """``new_tensors`` when ``steps`` is a multiple of ``update_period``, else
    ``old_tensors`` (a target network's hard update); ``steps`` may be traced.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> jc.periodic_update(jnp.ones(1), jnp.zeros(1), steps=6, update_period=3)
        Array([1.], dtype=float32)
    """
    check_number("update_period", update_period, low=0.0, low_open=True)
    return jax.lax.cond(
        jnp.mod(steps, update_period) == 0, lambda: new_tensors, lambda: old_tensors
    )


class MultiSteps:
    r"""Gradient accumulation: call ``opt`` once every ``k`` mini-steps with the
    mean (or sum) of the ``k`` gradients, and return zero updates in between.

    With :math:`n` the mini-step (0 to :math:`k-1`) and :math:`a` the
    accumulator, the mean is kept by Welford's update
    :math:`a \leftarrow a + (g - a)/(n+1)` (or :math:`a \leftarrow a + g`
    with ``use_grad_mean=False``); at :math:`n = k-1` the inner optimizer runs
    on :math:`a` and :math:`a` is reset. ``k = every_k_schedule(gradient_step)``
    may change with the number of inner steps taken. An optional
    ``should_skip_update_fn(updates, gradient_step, params) -> (skip, info)``
    drops a mini-step altogether (zero update, state unchanged but ``info``).

    ``init``/``update`` have optax's signatures; the state is
    ``MultiStepsState(mini_step, gradient_step, inner_opt_state, acc_grads,
    skip_state)``. The inner optimizer runs only on the emitting mini-step
    (under ``lax.cond``), and the wrapper carries the layout mark of ``opt``
    when no skip function is given.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> ms = jc.MultiSteps(jc.sgd(1.0), every_k_schedule=2)
        >>> s = ms.init(jnp.zeros(1))
        >>> u1, s = ms.update(jnp.array([1.0]), s)
        >>> u2, s = ms.update(jnp.array([3.0]), s)
        >>> u1, u2, bool(ms.has_updated(s))
        (Array([0.], dtype=float32), Array([-2.], dtype=float32), True)
    """

    def __init__(
        self,
        opt: Any,
        every_k_schedule: int | Callable[[ArrayLike], ArrayLike],
        use_grad_mean: bool = True,
        should_skip_update_fn: Callable | None = None,
        accumulator_dtype: Any = jnp.float32,
    ):
        self._opt = check_transform("opt", opt)
        if callable(every_k_schedule):
            self._every_k = every_k_schedule
        else:
            check_number("every_k_schedule", every_k_schedule, low=1.0)
            self._every_k = lambda step: every_k_schedule
        self._use_grad_mean = use_grad_mean
        self._skip_fn = should_skip_update_fn or _never_skip
        self._acc_dtype = jnp.dtype(accumulator_dtype)
        # Instance attributes, not methods: a bound method is a new object at
        # each attribute access, and layout marks are keyed on ``update``.
        self.init = self._init
        self.update = self._update
        if should_skip_update_fn is None:
            inherit_layout_mark(self, opt)

    @property
    def inner_opt(self) -> Any:
        """The wrapped optimizer."""
        return self._opt

    def _init(self, params: Any) -> MultiStepsState:
        zeros = jax.tree.map(jnp.zeros_like, params)
        gradient_step = zero_count()
        _, skip_state = self._skip_fn(zeros, gradient_step, params)
        return MultiStepsState(
            mini_step=zero_count(),
            gradient_step=gradient_step,
            inner_opt_state=self._opt.init(params),
            acc_grads=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=self._acc_dtype), params),
            skip_state=skip_state,
        )

    def _accumulate(self, updates: Any, acc: Any, n: jax.Array) -> Any:
        def leaf(g, a):
            ct = jnp.promote_types(working_dtype(g.dtype), a.dtype)
            g, a = g.astype(ct), a.astype(ct)
            return a + (g - a) / (n + 1) if self._use_grad_mean else g + a

        return jax.tree.map(leaf, updates, acc)

    def _update(self, updates: Any, state: MultiStepsState, params: Any = None, **extra_args):
        k = self._every_k(state.gradient_step)
        skip, skip_state = self._skip_fn(updates, state.gradient_step, params)
        skip = jnp.asarray(skip)
        if (skip.dtype, skip.shape) != (jnp.bool_, ()):
            raise ValueError(
                "should_skip_update_fn must return a boolean scalar first; got dtype "
                f"{skip.dtype} and shape {skip.shape}"
            )
        acc = self._accumulate(updates, state.acc_grads, state.mini_step)
        emit = (state.mini_step == k - 1) & ~skip

        def step():
            inner_grads = jax.tree.map(lambda a, g: a.astype(g.dtype), acc, updates)
            u, s = update_with_extra_args(
                self._opt, inner_grads, state.inner_opt_state, params, **extra_args
            )
            return u, jax.tree.map(lambda n, o: n.astype(o.dtype), s, state.inner_opt_state)

        shapes = jax.eval_shape(step)
        hold = lambda: (jax.tree.map(jnp.zeros_like, shapes[0]), state.inner_opt_state)
        new_updates, inner_state = jax.lax.cond(emit, step, hold)
        kept = lambda new, old: jax.tree.map(lambda n, o: jnp.where(skip, o, n), new, old)
        mini = (safe_increment(state.mini_step) % k).astype(state.mini_step.dtype)
        fresh = jax.tree.map(lambda a: jnp.where(emit, 0, a).astype(self._acc_dtype), acc)
        return new_updates, MultiStepsState(
            mini_step=kept(mini, state.mini_step),
            gradient_step=jnp.where(emit, safe_increment(state.gradient_step), state.gradient_step),
            inner_opt_state=inner_state,
            acc_grads=kept(fresh, state.acc_grads),
            skip_state=skip_state,
        )

    def has_updated(self, state: Any) -> jax.Array:
        """Whether the last ``update`` ran the inner optimizer."""
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def gradient_transformation(self) -> Optimizer:
        """The wrapper as an :class:`~jaxopt_core.Optimizer` (same functions, same mark)."""
        return Optimizer(self.init, self.update)


def _never_skip(updates, gradient_step, params):
    del updates, gradient_step, params
    return jnp.array(False, dtype=jnp.bool_), ()

