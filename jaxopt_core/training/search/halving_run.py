"""Running successive halving: the rungs as compiled segments, survivors compacted.

:func:`run_halving` chains the segment programs of
:mod:`jaxopt_core.training.program` (``sweep_start``, ``sweep_segment``,
``sweep_finish``): one segment per rung over the members still running (in
chunks when ``chunk_size`` asks), then ``sweep_finish`` on the rung's state,
which gives every running member's outputs at that step (its params in the
tree layout, its evaluation), a pure function of the state that leaves it
untouched. The host ranks the members (collective on several hosts: every
process makes the same calls), keeps the rows of the stopped members'
outputs, and gathers the survivors' rows of the carry (params, optimizer
state, flags, their minibatch order when each member has its own, their
evaluation buffers) into a smaller member axis, padded to a multiple of the
chunk (itself a multiple of the device count) by repeating the last survivor.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from jaxopt_core.training.program import SweepSpec, sweep_finish, sweep_segment, sweep_start
from jaxopt_core.training.ranking import rank_order
from jaxopt_core.training.search.halving import SuccessiveHalving, rung_schedule
from jaxopt_core.training.sharding import gather_to_host, put_on_mesh


class HalvingRun(NamedTuple):
    """What every rung of one successive halving run shares."""

    config: SuccessiveHalving
    spec: SweepSpec
    shared: tuple
    eval_data: Any
    hp: dict  # host arrays, K rows
    chunk_size: int | None
    members: NamedSharding
    ranking: tuple[str, str]
    token: Any


class HalvingCarry(NamedTuple):
    """A halving run after ``rung`` rungs: ``state`` the carry of the members
    still running (``ids``, grid order; rows padded to the chunk),
    ``losses`` ``[K, steps]`` on the host (NaN where not trained),
    ``stopped_at`` ``[K]`` (0: running), ``done`` the outputs of the members
    stopped: a list of ``(grid ids, rows, outputs of sweep_finish)``, put
    together in grid order by :func:`assemble` (one gather for the run)."""

    rung: int
    state: Any
    ids: np.ndarray
    losses: np.ndarray
    stopped_at: np.ndarray
    done: list


def run_halving(config: SuccessiveHalving, spec: SweepSpec, shared: tuple, eval_data: Any,
                hp: dict[str, np.ndarray], chunk_size: int | None, members: NamedSharding,
                ranking: tuple[str, str], token: Any, carry: HalvingCarry | None = None,
                after: Any = None) -> tuple[tuple, np.ndarray]:
    """Successive halving of the K members of ``hp`` (host arrays).

    Returns ``(out, stopped_at)``: ``out`` the outputs of ``sweep_program``
    for the K members in grid order (losses and evaluations NaN after a
    member stopped, params and the rest at its stop), ``stopped_at`` ``[K]``.
    ``carry``: go on from there (a resumed run); ``after(carry, out, keep)``
    runs after each rung (``out``: the rung's outputs before compaction,
    ``keep``: the survivors' rows of it).
    """
    run = HalvingRun(config, spec, shared, eval_data, hp, chunk_size, members, ranking, token)
    if carry is None:
        carry = halving_start(run)
    for _ in range(carry.rung, len(halving_schedule(run))):
        carry, out, keep = halving_rung(run, carry)
        if after is not None:
            after(carry, out, keep)
    return halving_outputs(carry, spec.steps)


def halving_schedule(run: HalvingRun) -> list[tuple[int, int]]:
    """The run's ``rung_schedule``."""
    return rung_schedule(len(next(iter(run.hp.values()))), run.spec.steps, run.config)


def halving_start(run: HalvingRun) -> HalvingCarry:
    """The carry before the first rung: every member running from step 0."""
    k = len(next(iter(run.hp.values())))
    params, data, key_data = run.shared
    ids = np.arange(k)  # the running members, in grid order
    state = sweep_start(params, data, key_data, hp_rows(run, ids), spec=run.spec)
    return HalvingCarry(0, state, ids, np.full((k, run.spec.steps), np.nan, np.float32),
                        np.zeros(k, np.int32), [])


def halving_rung(run: HalvingRun, carry: HalvingCarry) -> tuple[HalvingCarry, Any, np.ndarray]:
    """Rung ``carry.rung``: train the running members to its end, rank them,
    keep the stopped ones' outputs in ``done`` and compact the survivors' state.
    Returns ``(carry after it, the rung's outputs, local rows kept)``."""
    schedule = halving_schedule(run)
    r, ids, losses = carry.rung, carry.ids, carry.losses
    (end, n), prev = schedule[r], schedule[r - 1][0] if r else 0
    state = _segment(run.spec, run.shared, run.eval_data, carry.state, hp_rows(run, ids),
                     (prev, end), run.token, _chunk(n, run.chunk_size, run.members), losses, ids)
    out = sweep_finish(state, run.eval_data, spec=run.spec)
    last = r == len(schedule) - 1
    keep = (np.arange(0) if last else
            _survivors(out, losses[ids], n, prev, end, run.ranking, run.config.eta))
    stop = np.setdiff1d(np.arange(n), keep)  # all of them after the last rung
    done = [*carry.done, (ids[stop], stop, out)]
    stopped_at = carry.stopped_at.copy()
    stopped_at[ids[stop]] = end
    if not last:  # compact: the survivors' rows, padded to the chunk
        chunk = _chunk(len(keep), run.chunk_size, run.members)
        state, ids = _take_state(run.spec, state, _pad_rows(keep, chunk)), ids[keep]
    return HalvingCarry(r + 1, state, ids, losses, stopped_at, done), out, keep


def halving_outputs(carry: HalvingCarry, steps: int) -> tuple[tuple, np.ndarray]:
    """``(out, stopped_at)`` of a run whose carry is ``carry`` (see
    :func:`run_halving`); members running have ``stopped_at`` 0."""
    out = assemble(carry.done, len(carry.stopped_at))
    return _mark_stopped(out, carry.losses, carry.stopped_at, steps), carry.stopped_at


def assemble(pieces: list, k: int) -> Any:
    """The K-row outputs of the members in ``pieces`` (``(grid ids, rows,
    outputs)``), in grid order, in one compiled gather (a copy: every bit
    kept); members in no piece get zeros."""
    ids = np.concatenate([ids for ids, _, _ in pieces])
    offsets = np.cumsum([0] + [jax.tree.leaves(out)[0].shape[0] for _, _, out in pieces])
    rows = np.full(k, offsets[-1], np.int32)  # the zero row appended after the pieces
    rows[ids] = np.concatenate([offset + local for (_, local, _), offset in zip(pieces, offsets)])
    return _gather([out for _, _, out in pieces], jnp.asarray(rows))


@jax.jit
def _gather(outs: list, rows: jax.Array) -> Any:
    merged = jax.tree.map(lambda *xs: jnp.concatenate([*xs, jnp.zeros_like(xs[0][:1])]), *outs)
    return jax.tree.map(lambda x: jnp.take(x, rows, axis=0), merged)


def hp_rows(run: HalvingRun, ids: np.ndarray) -> dict:
    """The grid values of the running members ``ids``, padded to the chunk."""
    rows = _pad_rows(np.arange(len(ids)), _chunk(len(ids), run.chunk_size, run.members))
    return _on_mesh(run.hp, ids[rows], run.members)


def _chunk(n: int, chunk_size: int | None, members: NamedSharding) -> int:
    """Members per program: ``chunk_size`` (or all ``n``) rounded up to the
    device count, as in a plain sweep."""
    n_dev = members.mesh.size
    chunk = n if chunk_size is None else min(chunk_size, n)
    return -(-chunk // n_dev) * n_dev


def _pad_rows(rows: np.ndarray, chunk: int) -> np.ndarray:
    """``rows`` padded to a multiple of ``chunk`` by repeating the last."""
    pad = -len(rows) % chunk
    return np.concatenate([rows, np.repeat(rows[-1:], pad)]).astype(np.int32)


def _on_mesh(hp: dict, rows: np.ndarray, members: NamedSharding) -> dict:
    return put_on_mesh({n: v[rows] for n, v in hp.items()}, members)


def _segment(spec, shared, eval_data, state, hp_now, span, token, chunk, losses, ids):
    """Steps ``span = (prev, end)`` of the running members, a chunk at a time;
    their losses are written into the host array ``losses`` (rows ``ids``)."""
    prev, end = span
    if end == prev:
        return state
    params, data, key_data = shared
    n_pad = jax.tree.leaves(hp_now)[0].shape[0]
    states, segs = [], []
    for c in range(0, n_pad, chunk):
        part = state if chunk == n_pad else _take_state(spec, state, np.arange(c, c + chunk))
        hp_c = hp_now if chunk == n_pad else {n: v[c:c + chunk] for n, v in hp_now.items()}
        part, seg = sweep_segment(part, data, key_data, hp_c, np.int32(prev), token,
                                  np.int32(0), eval_data, None, spec=spec, length=end - prev)
        states.append(part)
        segs.append(gather_to_host(seg))
    losses[ids, prev:end] = np.concatenate(segs)[: len(ids)]
    return states[0] if len(states) == 1 else _concat(states, _state_axes(spec, states[0]))


def _survivors(out, losses, n, prev, end, ranking, eta):
    """Local indices (sorted) of the best ``ceil(n / eta)`` running members;
    ``losses``: their rows of the run's losses so far."""
    rank_by, mode = ranking
    host = gather_to_host((out[1], out[3]))
    diverged, evals = host[0][:n], host[1]
    tail = np.mean(losses[:, end - max(1, (end - prev) // 10):end], axis=1)
    values = evals[rank_by][:n, -1] if rank_by in evals else tail
    order = rank_order(values, mode, ~diverged, tail)
    return np.sort(order[: -(-n // eta)])


def _state_axes(spec: SweepSpec, state: Any) -> list:
    """The member axis of every leaf of a ``SweepState`` (None: shared)."""
    per_member_perm = spec.seeded and spec.batch_size is not None
    axes = []
    for name, value in zip(state._fields, state, strict=True):
        if name == "perm":
            axis = 0 if per_member_perm else None
            axes += [axis] * len(jax.tree.leaves(value))
        elif name == "ev" and value is not None:
            values = [1] * len(jax.tree.leaves(value.values))
            rest = [0] * (len(jax.tree.leaves(value)) - len(values))
            axes += values + rest  # values come first in EvalState's leaves
        else:
            axes += [0] * len(jax.tree.leaves(value))
    return axes


def _take_state(spec: SweepSpec, state: Any, rows: np.ndarray) -> Any:
    leaves, treedef = jax.tree.flatten(state)
    taken = _take_leaves(leaves, jnp.asarray(rows, jnp.int32), tuple(_state_axes(spec, state)))
    return treedef.unflatten(taken)


@functools.partial(jax.jit, static_argnums=(2,))
def _take_leaves(leaves, rows, axes):
    return [x if a is None else jnp.take(x, rows, axis=a) for x, a in zip(leaves, axes)]


def _concat(states: list, axes: list) -> Any:
    flat = [jax.tree.flatten(s) for s in states]
    treedef = flat[0][1]
    leaves = [x if a is None else jnp.concatenate([f[0][i] for f in flat], axis=a)
              for i, (x, a) in enumerate(zip(flat[0][0], axes))]
    return treedef.unflatten(leaves)


def _mark_stopped(out, losses, stopped_at, steps):
    """The outputs of ``sweep_program``: the final evaluation (taken at each
    member's stop) NaN for members stopped early, ``best_step`` at the stop."""
    p, diverged, at, evals, best_params, best_step = out
    early = stopped_at < steps
    evals = {n: np.where(early[:, None] & (np.arange(v.shape[1]) == v.shape[1] - 1), np.nan,
                         gather_to_host(v)) for n, v in evals.items()}
    if best_step is not None:
        best_step = gather_to_host(best_step)
        best_step = np.where(early & (best_step == steps), stopped_at, best_step)
    return p, losses, diverged, at, evals, best_params, best_step
