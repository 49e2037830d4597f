r"""The compiled program of :func:`~jaxopt_core.fit`: one ``lax.scan`` over steps.

:class:`FitSpec` is everything static about a run (the jit cache key);
params, data, key and ``eval_data`` are arrays, so new values of the same
shapes reuse the compiled program. A run is ``start -> steps -> finish``,
either in one program (:func:`fit_program`) or as a chain of segments
(:func:`fit_start`, :func:`fit_segment`, :func:`fit_finish`; see
:mod:`jaxopt_core.training.segments`) that computes the same numbers. Each
step is :func:`~jaxopt_core.training.divergence.guarded_step`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_core.training.batching import Batcher
from jaxopt_core.training.culprits import naming_errors, naming_optimizer_errors
from jaxopt_core.training.divergence import first_bad_step, guarded_step
from jaxopt_core.training.evaluation import (
    between_blocks,
    eval_block,
    init_state,
    maybe_record,
    measure,
    record_final,
)
from jaxopt_core.training.layout import layout_loss, ravel, unravel_tree
from jaxopt_core.training.progress import tick
from jaxopt_core.training.segments import run_segments
from jaxopt_core.training.thinning import thinned_scan


class FitState(NamedTuple):
    """The carry of :func:`fit` between steps and between segments: params and
    optimizer state in the run's layout, the ``alive`` flag, ``diverged_at``,
    the current epoch's minibatch order and the evaluation state."""

    params: Any
    opt_state: Any
    alive: jax.Array
    diverged_at: jax.Array
    perm: jax.Array
    ev: Any


class FitSpec(NamedTuple):
    """Everything static about a fit program (the jit cache key)."""

    loss_fn: Callable
    optimizer: Any
    steps: int
    batch_size: int | None
    flat: bool
    every: int
    plan: Any
    log_every: int | None = None


def _start(spec: FitSpec, params, data) -> FitState:
    p0 = ravel(params) if spec.flat else params
    # Errors raised while tracing name their culprit (jaxopt_core.training.culprits).
    s0 = naming_optimizer_errors("optimizer", spec.optimizer).init(p0)
    perm = Batcher(data, spec.batch_size).initial_perm()
    return FitState(p0, s0, jnp.array(True), jnp.array(-1, jnp.int32), perm,
                    init_state(spec.plan, p0))


def _metrics(spec: FitSpec, eval_data) -> Callable:
    return lambda p: measure(spec.plan, p.unravel() if spec.flat else p, eval_data)


def _run(spec: FitSpec, state: FitState, data, key, ts, batches, token, eval_data,
         whole: bool = False):
    """Steps ``ts`` (global step indices): ``(state, losses [len(ts)])``;
    ``batches`` None to draw from ``data``, else stacked ``[len(ts), ...]``;
    ``whole``: ``ts`` is the whole run from step 0, so the evaluations can sit
    between blocks of steps (:func:`eval_block`)."""
    block = eval_block(spec.plan, len(ts)) if whole else None
    optimizer = naming_optimizer_errors("optimizer", spec.optimizer)
    loss_of = layout_loss(naming_errors("loss_fn", spec.loss_fn), spec.flat)
    batcher = Batcher(data, spec.batch_size)
    metrics_of = _metrics(spec, eval_data)

    def body(st: FitState, xs):
        t, batch = (xs, None) if batches is None else xs
        perm = st.perm
        if batch is None:
            perm = batcher.refresh(perm, key, t)
            batch = batcher.batch(data, perm, t)
        # One reduction per group of same-shaped leaves (a few on the flat
        # layout) is the cheaper check there; on a tree it is not (divergence).
        p, s, ok, loss = guarded_step(loss_of, optimizer, st.params, st.opt_state, st.alive,
                                      batch, check="grouped" if spec.flat else "per_leaf")
        at = first_bad_step(st.alive, ok, t, st.diverged_at)
        ev = st.ev if block else maybe_record(spec.plan, st.ev, t, metrics_of, ok, p)
        if spec.every:
            tick(token, t + 1, spec.every)
        return FitState(p, s, ok, at, perm, ev), loss

    return thinned_scan(body, state, ts if batches is None else (ts, batches), spec.log_every,
                        block, between_blocks(spec.plan, block, metrics_of))


def _finish(spec: FitSpec, state: FitState, eval_data) -> tuple:
    """``(params, opt_state, diverged, diverged_at, evals)`` in the tree layout."""
    p, s, alive = state.params, state.opt_state, state.alive
    ev = record_final(spec.plan, state.ev, _metrics(spec, eval_data), alive, p)
    if spec.flat:
        p, s = p.unravel(), unravel_tree(s)
    return p, s, ~alive, state.diverged_at, {} if ev is None else ev.values


@functools.partial(jax.jit, static_argnames=("spec",))
def fit_program(params, data, key, token, eval_data, *, spec: FitSpec):
    state = _start(spec, params, data)
    ts = jnp.arange(spec.steps, dtype=jnp.int32)
    state, losses = _run(spec, state, data, key, ts, None, token, eval_data, whole=True)
    p, s, diverged, at, evals = _finish(spec, state, eval_data)
    return p, s, losses, diverged, at, evals


@functools.partial(jax.jit, static_argnames=("spec",))
def fit_start(params, data, *, spec: FitSpec) -> FitState:
    """The state before the first step (a segmented run's start)."""
    return _start(spec, params, data)


@functools.partial(jax.jit, static_argnames=("spec", "length"), donate_argnums=(0,))
def fit_segment(state, data, key, t0, token, eval_data, batches, *, spec: FitSpec,
                length: int) -> tuple[FitState, jax.Array]:
    """Steps ``t0 .. t0 + length - 1``: ``(state, losses [length])``; ``t0`` is
    data (one compile per ``length``), ``state`` is donated; ``batches`` None
    to draw from ``data``, else ``length`` stacked batches."""
    ts = t0 + jnp.arange(length, dtype=jnp.int32)
    return _run(spec, state, data, key, ts, batches, token, eval_data)


@functools.partial(jax.jit, static_argnames=("spec",))
def fit_finish(state, eval_data, *, spec: FitSpec) -> tuple:
    """The last evaluation: ``(params, opt_state, diverged, diverged_at, evals)``."""
    return _finish(spec, state, eval_data)


def run_fit_segmented(spec: FitSpec, params, data, key, token, eval_data,
                      plan: list[tuple[int, int]], state: FitState | None = None,
                      losses: Any = None, after: Any = None, batches: Any = None) -> tuple:
    """The outputs of the one-shot program, computed segment by segment (see
    :mod:`jaxopt_core.training.segments`) from ``state`` (default: the start)
    with ``losses`` of the steps before it; ``batches(t0, n)`` gives a
    segment's stacked batches (None: draw from ``data``); ``after(state,
    t_done, losses)`` runs between segments."""
    if state is None:
        state = fit_start(params, data, spec=spec)

    def run_one(st, t0, n):
        feed = None if batches is None else batches(t0, n)
        return fit_segment(st, data, key, np.int32(t0), token, eval_data, feed, spec=spec,
                           length=n)

    state, losses = run_segments(state, plan, run_one, after, losses)
    p, s, diverged, at, evals = fit_finish(state, eval_data, spec=spec)
    return p, s, losses, diverged, at, evals
