r"""Validation inside the compiled run: ``eval_fn`` every ``eval_every`` steps.

:func:`~jaxopt_core.fit` and :func:`~jaxopt_core.sweep` take
``eval_fn(params, eval_data)``, which returns a scalar or a dict of named
scalars (a scalar is named ``"eval"``). It is called inside the compiled
program, on the user's params tree (the flat layout is unraveled for it),
after every ``eval_every``-th step and always after the last one, so the
evaluations are taken at the step counts

.. math::
    e, 2e, \ldots, \lfloor (T-1)/e \rfloor e, \; T
    \qquad (e = \texttt{eval\_every},\ T = \texttt{steps}),

or at :math:`T` only when ``eval_every`` is None. The evaluations before the
last step run behind a ``lax.cond`` on the step count (the predicate is
shared by all members, so under ``jax.vmap`` it stays a real branch); the
last one runs after the scan. A whole run from step 0 scans over blocks of
:math:`\gcd(e, T)` steps and asks once per block (:func:`eval_block`); a
segment of a run, whose first step is data, asks after every step. Their
values are written into a ``[n_evals]`` buffer carried in the scan: no host
round trip, one compile, and new ``eval_data`` values of the same shapes
reuse the program.

A run that has diverged (see :mod:`jaxopt_core.training.divergence`) records
NaN for its later evaluations. When one metric is *tracked* (``keep_best`` in
:func:`~jaxopt_core.sweep`), the carry also keeps the params of the best
evaluation so far and the step count it was taken at.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_core.training.divergence import select
from jaxopt_core.training.memo import Memo, abstract_signature, hashable_or_none
from jaxopt_core.training.step import check_callable

SCALAR_NAME = "eval"


class EvalPlan(NamedTuple):
    """Everything static about the evaluations of a run (hashable: part of
    the jit cache key).

    Attributes:
        eval_fn: ``eval_fn(params, eval_data) -> scalar | {name: scalar}``.
        every: ``eval_every``, or 0 for "after the last step only".
        steps: the run's number of steps.
        names: the metric names, in the order ``eval_fn`` returns them.
        dtypes: the dtype each metric is stored in (at least float32, so
            that a frozen run can record NaN).
        scalar: ``eval_fn`` returns a bare scalar (stored as ``"eval"``).
        track: the metric whose best evaluation keeps its params, or None.
        mode: ``"min"`` or ``"max"``: which way ``track`` is better.
    """

    eval_fn: Callable
    every: int
    steps: int
    names: tuple[str, ...]
    dtypes: tuple[str, ...]
    scalar: bool
    track: str | None = None
    mode: str = "min"

    @property
    def n_evals(self) -> int:
        return len(eval_steps(self.steps, self.every))


def eval_steps(steps: int, every: int | None) -> np.ndarray:
    """The step counts after which the evaluations are taken: every
    ``every``-th step and the last (``every`` None or 0: the last only).

    Example:
        >>> from jaxopt_core.training.evaluation import eval_steps
        >>> eval_steps(10, 3).tolist(), eval_steps(10, 5).tolist(), eval_steps(10, None).tolist()
        ([3, 6, 9, 10], [5, 10], [10])
        >>> eval_steps(10, 20).tolist()
        [10]
    """
    inside = list(range(every, steps, every)) if every else []
    return np.asarray([*inside, steps], dtype=np.int32)


def check_evaluation(
    eval_fn: Any, eval_data: Any, eval_every: Any, steps: int, params_like: Any
) -> EvalPlan | None:
    """The :class:`EvalPlan` of ``fit``/``sweep``'s evaluation arguments, or
    None without ``eval_fn``; errors name the argument.

    ``eval_fn`` is traced once, abstractly (``jax.eval_shape`` on
    ``params_like``, a tree of arrays or shape structs), to learn its metric
    names and to check that each is a scalar.
    """
    if eval_fn is None:
        for name, value in (("eval_data", eval_data), ("eval_every", eval_every)):
            if value is not None:
                raise ValueError(f"{name} was given but eval_fn is None; pass eval_fn too")
        return None
    check_callable("eval_fn", eval_fn)
    every = 0 if eval_every is None else _check_every(eval_every)
    key = hashable_or_none((eval_fn, abstract_signature(params_like),
                            abstract_signature(eval_data)))
    probed = _PROBED.get(key)
    if probed is None:
        probed = _probe(eval_fn, params_like, eval_data)
        _PROBED.put(key, probed)
    names, dtypes, scalar = probed
    return EvalPlan(eval_fn, every, steps, names, dtypes, scalar)


def _check_every(eval_every: Any) -> int:
    if isinstance(eval_every, bool) or not isinstance(eval_every, numbers.Integral):
        raise TypeError(f"eval_every must be None or an int >= 1; got eval_every={eval_every!r}")
    if eval_every < 1:
        raise ValueError(f"eval_every must be None or an int >= 1; got eval_every={eval_every!r}")
    return int(eval_every)


# eval_fn's abstract trace depends only on the function and the abstract
# values: a repeated fit or sweep skips it (a few ms of host time per call).
_PROBED = Memo()


def _probe(eval_fn: Callable, params_like: Any, eval_data: Any) -> tuple:
    """Metric names (in ``eval_fn``'s order), storage dtypes, and whether it
    returns a bare scalar."""
    order: list = []

    def call(p, d):
        out = eval_fn(p, d)
        if isinstance(out, Mapping):
            order.extend(out)
        return out

    try:
        out = jax.eval_shape(call, params_like, eval_data)
    except Exception as err:
        raise TypeError(
            "eval_fn(params, eval_data) failed while being traced (it runs inside the "
            f"compiled program, on the params tree): {type(err).__name__}: {err}"
        ) from err
    scalar = not isinstance(out, Mapping)
    metrics = {SCALAR_NAME: out} if scalar else {n: out[n] for n in order}
    if not metrics:
        raise ValueError("eval_fn returned an empty dict; return a scalar or {name: scalar}")
    for name, value in metrics.items():
        shape = getattr(value, "shape", None)
        if not isinstance(name, str) or shape != () or not _numeric(value.dtype):
            raise TypeError(
                "eval_fn must return a scalar or a dict {str: scalar}; got "
                f"{name!r}: {getattr(value, 'dtype', type(value))}{list(shape or [])}"
            )
    dtypes = tuple(str(jnp.promote_types(v.dtype, jnp.float32)) for v in metrics.values())
    return tuple(metrics), dtypes, scalar


def _numeric(dtype: Any) -> bool:
    return jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)


def measure(plan: EvalPlan, params: Any, eval_data: Any) -> dict[str, jax.Array]:
    """``eval_fn(params, eval_data)`` as ``{name: scalar}`` in the plan's dtypes."""
    out = plan.eval_fn(params, eval_data)
    out = {SCALAR_NAME: out} if plan.scalar else out
    return {n: jnp.asarray(out[n]).astype(d) for n, d in zip(plan.names, plan.dtypes, strict=True)}


class EvalState(NamedTuple):
    """The evaluation part of a scan's carry.

    ``values``: ``{name: [n_evals, *members]}``, NaN until taken; with a
    tracked metric, ``best_value``/``best_step`` ``[*members]`` (inf/-inf and
    -1 until a finite evaluation) and ``best_params`` in the run's layout
    (the initial params until then); otherwise those three are None.
    """

    values: dict[str, jax.Array]
    best_value: jax.Array | None
    best_step: jax.Array | None
    best_params: Any


def init_state(plan: EvalPlan | None, params: Any, members: tuple[int, ...] = ()) -> Any:
    """The carry before the first step (None without evaluations)."""
    if plan is None:
        return None
    values = {n: jnp.full((plan.n_evals, *members), jnp.nan, d)
              for n, d in zip(plan.names, plan.dtypes, strict=True)}
    if plan.track is None:
        return EvalState(values, None, None, None)
    worst = jnp.inf if plan.mode == "min" else -jnp.inf
    dtype = plan.dtypes[plan.names.index(plan.track)]
    return EvalState(values, jnp.full(members, worst, dtype), jnp.full(members, -1, jnp.int32),
                     params)


def record(plan: EvalPlan, state: EvalState, idx: Any, done: Any,
           metrics_of: Callable, alive: jax.Array, params: Any) -> EvalState:
    """Take evaluation ``idx`` (after ``done`` steps) of the params in the
    run's layout; ``metrics_of(params) -> {name: [*members]}``."""
    metrics = metrics_of(params)
    values = {n: state.values[n].at[idx].set(jnp.where(alive, metrics[n], jnp.nan))
              for n in plan.names}
    if plan.track is None:
        return state._replace(values=values)
    value = metrics[plan.track]
    beats = value < state.best_value if plan.mode == "min" else value > state.best_value
    better = alive & jnp.isfinite(value) & beats
    return EvalState(
        values,
        jnp.where(better, value, state.best_value),
        jnp.where(better, jnp.asarray(done, jnp.int32), state.best_step),
        select(better, params, state.best_params),
    )


def maybe_record(plan: EvalPlan | None, state: Any, t: jax.Array, metrics_of: Callable,
                 alive: jax.Array, params: Any) -> Any:
    """Inside the scan, after step ``t``: evaluate when ``t + 1`` is a
    multiple of ``every`` before the last step (the last is taken by
    :func:`record_final` after the scan)."""
    if plan is None or not plan.every or plan.every >= plan.steps:
        return state
    done = t + 1
    take = (done % plan.every == 0) & (done < plan.steps)

    def now(st):
        return record(plan, st, done // plan.every - 1, done, metrics_of, alive, params)

    return jax.lax.cond(take, now, lambda st: st, state)


def check_eval_chunk_size(eval_chunk_size: Any, plan: EvalPlan | None,
                          n_devices: int) -> int | None:
    """``eval_chunk_size`` of :func:`~jaxopt_core.sweep` as an int >= 1 (None
    stays None), or an error naming it: it needs an ``eval_fn`` and the
    members on one device (a loop over blocks of a sharded member axis would
    gather the members onto one device at every block).

    Example:
        >>> from jaxopt_core.training.evaluation import EvalPlan, check_eval_chunk_size
        >>> plan = EvalPlan(None, 10, 100, ("eval",), ("float32",), True)
        >>> check_eval_chunk_size(64, plan, 1), check_eval_chunk_size(None, None, 4)
        (64, None)
    """
    if eval_chunk_size is None:
        return None
    is_int = (isinstance(eval_chunk_size, (int, np.integer))
              and not isinstance(eval_chunk_size, bool))
    if not is_int or eval_chunk_size < 1:
        raise ValueError("eval_chunk_size must be None or an int >= 1; got "
                         f"eval_chunk_size={eval_chunk_size!r}")
    if plan is None:
        raise ValueError(f"eval_chunk_size={eval_chunk_size} needs an eval_fn; got eval_fn=None")
    if n_devices > 1:
        raise ValueError(f"eval_chunk_size={eval_chunk_size} needs the members on one device; "
                         f"they are sharded over {n_devices} (pass devices=[one device], or "
                         "drop eval_chunk_size)")
    return int(eval_chunk_size)


def measure_members(one: Callable, params: Any, chunk: int | None) -> Any:
    r"""``one`` (a member's params -> ``{name: scalar}``) on every member of the
    stacked ``params``: ``jax.vmap`` over all K members, or, with ``chunk``
    (``eval_chunk_size``) below K, a ``lax.map`` over blocks of ``chunk``
    members, each block vmapped (the last, shorter one too).

    Why blocks: vmapped over K members sharing ``eval_data``, a model's first
    layer is one matrix product whose output holds K members' activations
    on the whole evaluation set (digits MLP at K=1024: 1797 x 32768 floats,
    235 MB), written to memory and read back; blocks of 64 keep them in
    cache. Not the default: blocked evaluations differ from vmapped ones in
    the last bits (about 1 ulp: 3,251 of 10,240 values at K=1024, at most
    3.1e-7 relative), as ``chunk_size`` does for training, because XLA
    compiles the block's shape, not K's, and two things in that program
    may add up in another order: a matrix product (XLA:CPU's kernel
    depends on the number of members in it) and a sum over examples (XLA
    picks the layout of the ``[members, examples]`` values per program, and
    a row-wise and a column-wise float32 sum of one ``[256, 1797]`` array
    differed in 77% of rows, while row-wise sums over 64 or 256 rows
    agreed). Measured with
    jax 0.10.2 on CPU: on the digits MLP (K = 256 and 1024, blocks of 64)
    the per-example losses came out equal bit for bit and only their mean
    differed (in 25-27% of members); on a 3-feature linear model (K = 7,
    blocks of 3) the products themselves differed.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.training.evaluation import measure_members
        >>> one = lambda w: {"eval": jnp.sum(w ** 2)}
        >>> measure_members(one, jnp.arange(10.0).reshape(5, 2), 2)["eval"].tolist()
        [1.0, 13.0, 41.0, 85.0, 145.0]
    """
    k = jax.tree.leaves(params)[0].shape[0]
    if chunk is None or chunk >= k:
        return jax.vmap(one)(params)
    return jax.lax.map(one, params, batch_size=chunk)


def eval_block(plan: EvalPlan | None, steps: int) -> int | None:
    r"""The block length :math:`g = \gcd(e, T)` of a run of ``steps`` steps
    from step 0 that takes its evaluations between blocks of steps instead of
    behind a conditional at every step (see :func:`record_after_block`), or
    None when that does not pay (no evaluation before the last step, or
    :math:`g = 1`).

    Every evaluation step count :math:`e, 2e, \ldots < T` is a multiple of
    :math:`g` and so ends a block; the scan over :math:`T / g` blocks of
    :math:`g` steps asks "evaluate now?" :math:`T / g` times instead of
    :math:`T`. The steps themselves are the same computation, so the results
    are the same bit for bit (tests/training/test_eval_blocks.py).

    Example:
        >>> from jaxopt_core.training.evaluation import EvalPlan, eval_block
        >>> plan = EvalPlan(None, 20, 200, ("eval",), ("float32",), True)
        >>> eval_block(plan, 200), eval_block(plan._replace(every=7), 200)
        (20, None)
    """
    if plan is None or not plan.every or plan.every >= plan.steps or steps != plan.steps:
        return None
    g = math.gcd(plan.every, steps)
    return g if g > 1 else None


def record_after_block(plan: EvalPlan, state: Any, j: jax.Array, block: int,
                       metrics_of: Callable, alive: jax.Array, params: Any) -> Any:
    """After block ``j`` of ``block`` steps (``done = (j + 1) * block``): what
    :func:`maybe_record` does after step ``done - 1``, behind one conditional
    per block."""
    done = (j + 1) * block
    take = (done % plan.every == 0) & (done < plan.steps)

    def now(st):
        return record(plan, st, done // plan.every - 1, done, metrics_of, alive, params)

    return jax.lax.cond(take, now, lambda st: st, state)


def between_blocks(plan: EvalPlan, block: int | None, metrics_of: Callable) -> Callable:
    """``between(state, j)`` for :func:`~jaxopt_core.training.thinning.blocked_scan`:
    :func:`record_after_block` on a run state's ``ev`` with its ``alive`` and
    ``params`` (a fit's or a sweep's state)."""

    def between(state: Any, j: jax.Array) -> Any:
        return state._replace(ev=record_after_block(plan, state.ev, j, block, metrics_of,
                                                    state.alive, state.params))

    return between


def record_final(plan: EvalPlan | None, state: Any, metrics_of: Callable,
                 alive: jax.Array, params: Any) -> Any:
    """After the scan: the evaluation after the last step."""
    if plan is None:
        return state
    return record(plan, state, plan.n_evals - 1, plan.steps, metrics_of, alive, params)
