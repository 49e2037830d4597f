r"""The compiled program of a sweep: ``lax.scan`` over steps of ``jax.vmap`` over members.

Everything static about a sweep is a :class:`SweepSpec` (the jit cache key);
the grid values, params, data and key are arrays, so new values of the same
shapes reuse the compiled program. Each member carries its params, optimizer
state and an ``alive`` flag; a step that makes the loss, the params or the
optimizer state non-finite is discarded for that member (see
:mod:`jaxopt_core.training.divergence`) and the member stays frozen at its
last finite state, its later losses NaN. With an ``eval_fn`` the carry also
holds every member's evaluations (see :mod:`jaxopt_core.training.evaluation`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from jaxopt_core.regularization.penalties import regularized
from jaxopt_core.training.batching import Batcher
from jaxopt_core.training.culprits import naming_errors, naming_optimizer_errors
from jaxopt_core.training.divergence import (
    first_bad_step,
    freeze_params,
    keep_frozen,
    select,
    tentative_step,
)
from jaxopt_core.training.evaluation import (
    EvalPlan,
    between_blocks,
    eval_block,
    init_state,
    maybe_record,
    measure,
    measure_members,
    record_final,
)
from jaxopt_core.training.grid import FrozenMask, seed_keys
from jaxopt_core.training.layout import Flat, layout_loss, ravel
from jaxopt_core.training.progress import tick
from jaxopt_core.training.search.pbt import PBTPlan
from jaxopt_core.training.search.pbt_program import (
    PBTState,
    after_step,
    init_pbt,
    pbt_key,
    pbt_outputs,
)
from jaxopt_core.training.thinning import thinned_scan


class SweepSpec(NamedTuple):
    """Everything static about a sweep program (hashable: the jit cache key)."""

    loss_fn: Callable
    optimizer_fn: Callable
    opt_names: tuple[str, ...]
    penalty: tuple[str, ...]
    penalty_mask: Any
    seeded: bool
    key_impl: str
    init_fn: Callable | None
    steps: int
    batch_size: int | None
    flat: bool
    every: int
    sharding: NamedSharding
    plan: EvalPlan | None = None
    search: PBTPlan | None = None
    log_every: int | None = None  # losses as means over windows of this many steps
    # Diverged members' params kept in a copy, not frozen in place (divergence.frozen_copy_pays).
    frozen_copy: bool = False
    # Evaluate at most this many members at a time (evaluation.measure_members).
    eval_chunk: int | None = None


def build_member(spec: SweepSpec, hp_m: dict[str, jax.Array]) -> tuple[Any, Callable]:
    """The member's optimizer and loss (the loss in the run's layout)."""
    # Errors raised while tracing name their culprit (jaxopt_core.training.culprits).
    swept = f" (swept: {', '.join(spec.opt_names)})" if spec.opt_names else ""
    build = naming_errors("optimizer_fn", spec.optimizer_fn, swept)
    opt = naming_optimizer_errors("optimizer_fn", build(**{n: hp_m[n] for n in spec.opt_names}),
                                  swept)
    loss = naming_errors("loss_fn", spec.loss_fn)
    if spec.penalty:
        mask = spec.penalty_mask
        mask = mask.thaw() if isinstance(mask, FrozenMask) else mask
        loss = regularized(loss, l1=hp_m.get("l1", 0.0), l2=hp_m.get("l2", 0.0), mask=mask)
    return opt, layout_loss(loss, spec.flat)


def _member_keys(spec: SweepSpec, key: jax.Array, hp: dict) -> tuple[jax.Array, jax.Array]:
    """Init and data keys: one per member when the grid has ``seed``, else shared."""
    if spec.seeded:
        return jax.vmap(lambda s: seed_keys(key, s))(hp["seed"])
    return seed_keys(key, 0)[0], key


def _initial_members(spec: SweepSpec, params: Any, hp: dict, init_keys: jax.Array) -> tuple:
    """Stacked ``(params, opt_state)`` of every member, in the run's layout."""

    def init(hp_m, init_key):
        p = spec.init_fn(init_key) if spec.init_fn is not None else params
        p = ravel(p) if spec.flat else p
        return p, build_member(spec, hp_m)[0].init(p)

    return jax.vmap(init, in_axes=(0, 0 if spec.seeded else None))(hp, init_keys)


def _member_step(spec: SweepSpec, p, s, alive, hp_m, batch):
    """One member's tentative step: ``(new params, new state, ok, loss)``; the
    scan body keeps the new params only where ``ok`` (``freeze_params``)."""
    opt, loss_of = build_member(spec, hp_m)
    return tentative_step(loss_of, opt, p, s, alive, batch)


def _metrics_of(spec: SweepSpec, eval_data: Any) -> Callable:
    """Stacked params (run layout) -> ``{name: [K]}``: ``eval_fn`` on every
    member's params tree, vmapped, with ``eval_data`` shared."""

    def one(p):
        return measure(spec.plan, p.unravel() if spec.flat else p, eval_data)

    return lambda params: measure_members(one, params, spec.eval_chunk)


def _unravel(spec: SweepSpec, p: Any) -> Any:
    return jax.vmap(Flat.unravel)(p) if spec.flat and p is not None else p


class SweepState(NamedTuple):
    """The carry of a sweep between steps and between segments.

    ``params`` and ``opt_state`` are stacked over the K members in the run's
    layout; ``alive`` and ``diverged_at`` are ``[K]``; ``perm`` is the current
    epoch's minibatch order (``[n]``, or ``[K, n]`` with a seed axis and
    minibatches); ``ev`` the evaluation state (None without ``eval_fn``);
    ``search`` the population-based training state, whose ``hp`` replaces the
    grid's (None without ``search=jc.pbt(...)``); ``kept`` the diverged
    members' last finite params with ``spec.frozen_copy`` (then ``params``
    runs on for every member; see
    :func:`~jaxopt_core.training.divergence.frozen_copy_pays`), else None.
    """

    params: Any
    opt_state: Any
    alive: jax.Array
    diverged_at: jax.Array
    perm: jax.Array
    ev: Any
    search: PBTState | None = None
    kept: Any = None


def _per_member_order(spec: SweepSpec) -> bool:
    # With a seed axis and minibatches every member draws its own order.
    return spec.seeded and spec.batch_size is not None


def _start(spec: SweepSpec, params, data, key, hp) -> SweepState:
    init_keys, _ = _member_keys(spec, key, hp)
    p0, s0 = _initial_members(spec, params, hp, init_keys)
    k = jax.tree.leaves(hp)[0].shape[0]
    members = (p0, s0, jnp.ones([k], bool), jnp.full([k], -1, jnp.int32))
    members = jax.lax.with_sharding_constraint(members, spec.sharding)
    perm = Batcher(data, spec.batch_size).initial_perm()
    if _per_member_order(spec):
        perm = jnp.broadcast_to(perm, (k, *perm.shape))
    search = None if spec.search is None else init_pbt(spec.search, hp)
    kept = jax.tree.map(jnp.zeros_like, members[0]) if spec.frozen_copy else None
    return SweepState(*members, perm, init_state(spec.plan, p0, (k,)), search, kept)


def _run(spec: SweepSpec, state: SweepState, data, key, hp, ts, batches, token, base,
         eval_data, whole: bool = False) -> tuple[SweepState, jax.Array]:
    """Steps ``ts`` (global step indices) of every member; losses ``[len(ts), K]``
    (``[ceil(len(ts) / log_every), K]`` window means with ``spec.log_every``).
    ``batches``: None to draw from ``data``, else stacked batches ``[len(ts), ...]``
    shared by all members. ``whole``: ``ts`` is the whole run from step 0, so
    the evaluations can sit between blocks of steps (:func:`eval_block`; not
    with PBT, whose exploit reads the evaluation taken in the same step)."""
    block = eval_block(spec.plan, len(ts)) if whole and spec.search is None else None
    batcher = Batcher(data, spec.batch_size)
    _, data_keys = _member_keys(spec, key, hp)
    metrics_of = _metrics_of(spec, eval_data)
    per_member = _per_member_order(spec) and batches is None
    step = jax.vmap(functools.partial(_member_step, spec),
                    in_axes=(0, 0, 0, 0, 0 if per_member else None))

    def body(st: SweepState, xs):
        t, batch = (xs, None) if batches is None else xs
        perm = st.perm
        if batch is None and per_member:
            perm = jax.vmap(batcher.refresh, in_axes=(0, 0, None))(perm, data_keys, t)
            batch = jax.vmap(batcher.batch, in_axes=(None, 0, None))(data, perm, t)
        elif batch is None:
            perm = batcher.refresh(perm, data_keys, t)
            batch = batcher.batch(data, perm, t)
        hp_t = hp if st.search is None else st.search.hp  # PBT revises them
        p, s, ok, loss = step(st.params, st.opt_state, st.alive, hp_t, batch)
        kept = st.kept
        if spec.frozen_copy:
            kept = keep_frozen(st.alive, ok, st.params, kept)
        else:
            p = freeze_params(ok, p, st.params)
        at = first_bad_step(st.alive, ok, t, st.diverged_at)
        ev = st.ev if block else maybe_record(spec.plan, st.ev, t, metrics_of, ok, p)
        members, search = (p, s, ok, at), st.search
        if search is not None:
            members, search = after_step(spec.search, search, members, ev, loss, t, pbt_key(key))
        if spec.every:
            tick(token, base + t + 1, spec.every)
        return SweepState(*members, perm, ev, search, kept), loss

    return thinned_scan(body, state, ts if batches is None else (ts, batches), spec.log_every,
                        block, between_blocks(spec.plan, block, metrics_of))


def _finish(spec: SweepSpec, state: SweepState, eval_data) -> tuple:
    """``(params, diverged, diverged_at, evals, best_params, best_step)``, params
    in the tree layout, evals ``{name: [K, n_evals]}``."""
    p, alive = state.params, state.alive
    if spec.frozen_copy:
        # Diverged members (a stopped run clears alive, not diverged_at).
        p = select(state.diverged_at >= 0, state.kept, p)
    ev = record_final(spec.plan, state.ev, _metrics_of(spec, eval_data), alive, p)
    evals = {} if ev is None else {n: v.T for n, v in ev.values.items()}
    best_params, best_step = (None, None) if ev is None else (ev.best_params, ev.best_step)
    out = (_unravel(spec, p), ~alive, state.diverged_at, evals, _unravel(spec, best_params),
           best_step)
    return jax.lax.with_sharding_constraint(out, spec.sharding)


def _key(spec: SweepSpec, key_data: jax.Array) -> jax.Array:
    return jax.random.wrap_key_data(key_data, impl=spec.key_impl)


@functools.partial(jax.jit, static_argnames=("spec",))
def sweep_program(params, data, key_data, hp, token, base, eval_data, *, spec: SweepSpec):
    """Train every member of ``hp`` for ``spec.steps`` steps; returns
    ``(params, losses [K, steps], diverged [K], diverged_at [K], evals
    {name: [K, n_evals]}, best_params, best_step [K], search)`` sharded over
    members (best_params and best_step None unless a metric is tracked; search
    ``(hparams_history, parents)`` with PBT, else None)."""
    key = _key(spec, key_data)
    state = _start(spec, params, data, key, hp)
    ts = jnp.arange(spec.steps, dtype=jnp.int32)
    state, losses = _run(spec, state, data, key, hp, ts, None, token, base, eval_data,
                         whole=True)
    p, diverged, at, evals, best_params, best_step = _finish(spec, state, eval_data)
    losses = jax.lax.with_sharding_constraint(losses.T, spec.sharding)
    return p, losses, diverged, at, evals, best_params, best_step, pbt_outputs(state.search)


@functools.partial(jax.jit, static_argnames=("spec",))
def sweep_start(params, data, key_data, hp, *, spec: SweepSpec) -> SweepState:
    """The state of every member before its first step (a segmented run's start)."""
    return _start(spec, params, data, _key(spec, key_data), hp)


@functools.partial(jax.jit, static_argnames=("spec", "length"), donate_argnums=(0,))
def sweep_segment(state, data, key_data, hp, t0, token, base, eval_data, batches, *,
                  spec: SweepSpec, length: int) -> tuple[SweepState, jax.Array]:
    """Steps ``t0 .. t0 + length - 1`` of every member: ``(state, losses [K, length])``.

    ``t0`` is data (one compile per ``length``); ``state`` is donated. Chained
    from :func:`sweep_start` and closed by :func:`sweep_finish` the segments
    compute what :func:`sweep_program` computes in one program.
    ``batches``: None to draw from ``data`` as :func:`sweep_program` does, or
    a pytree of ``length`` stacked batches shared by every member.
    """
    key = _key(spec, key_data)
    ts = t0 + jnp.arange(length, dtype=jnp.int32)
    state, losses = _run(spec, state, data, key, hp, ts, batches, token, base, eval_data)
    return state, jax.lax.with_sharding_constraint(losses.T, spec.sharding)


@functools.partial(jax.jit, static_argnames=("spec",))
def sweep_finish(state, eval_data, *, spec: SweepSpec) -> tuple:
    """The last evaluation and the outputs of :func:`sweep_program` but the
    losses: ``(params, diverged, diverged_at, evals, best_params, best_step)``."""
    return _finish(spec, state, eval_data)
