r"""Running a sweep's members, and collecting what they did into a :class:`SweepResult`.

:func:`~jaxopt_core.sweep` checks its arguments and builds the static
:class:`~jaxopt_core.training.program.SweepSpec`; the code here runs the
members: in chunks through the one compiled program, as chains of compiled
segments (:mod:`jaxopt_core.training.segments`), fed from an iterable of
batches (:mod:`jaxopt_core.training.streaming`), checkpointed
(:mod:`jaxopt_core.training.resumable`) or by successive halving
(:mod:`jaxopt_core.training.search.halving_run`). Every path ends in
:func:`collect`, which drops the padding members, gathers the small fields
onto every process and ranks the members.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from jaxopt_core.training.evaluation import EvalPlan, eval_steps
from jaxopt_core.training.grid import check_chunk_size
from jaxopt_core.training.program import (
    SweepSpec,
    SweepState,
    sweep_finish,
    sweep_program,
    sweep_segment,
    sweep_start,
)
from jaxopt_core.training.progress import ProgressBar
from jaxopt_core.training.results import SweepResult
from jaxopt_core.training.resumable import (
    Checkpointed,
    run_sweep_checkpointed,
    sweep_fingerprint,
)
from jaxopt_core.training.search.halving_resume import run_halving_checkpointed
from jaxopt_core.training.search.halving_run import HalvingRun, run_halving
from jaxopt_core.training.search.pbt_program import pbt_outputs
from jaxopt_core.training.search.strategy import member_steps
from jaxopt_core.training.segments import run_segments, segment_plan
from jaxopt_core.training.sharding import gather_small_fields, member_to_host, put_on_mesh
from jaxopt_core.training.streaming import ResumableStream, cut_result, run_stream_chunks
from jaxopt_core.training.thinning import loss_steps


class SweepCall(NamedTuple):
    """One checked :func:`~jaxopt_core.sweep` call, ready to run: the spec,
    the grid (host arrays) and its chunks on the mesh, the shared arrays
    ``(params or None, data or None, key data)`` and ``eval_data`` on every
    device, and the options that choose how the members run."""

    spec: SweepSpec
    hp: dict[str, np.ndarray]
    key: jax.Array
    data: Any
    streamed: bool
    shared: tuple
    eval_data: Any
    shapes: dict[str, Any]
    chunks: list[dict]
    chunk_size: int | None
    members: NamedSharding
    replicated: NamedSharding
    ranking: tuple[str, str]
    progress: bool
    segment_steps: int | None
    allow_short: bool
    checkpoint_dir: str | os.PathLike | None
    checkpoint_every: int | None
    search: Any

    @property
    def k(self) -> int:
        return len(next(iter(self.hp.values())))

    def collect(self, out: Any, hp: dict | None = None, stopped_at: Any = None) -> SweepResult:
        """:func:`collect` with this call's plan and ranking (``hp``: a prefix of the grid)."""
        hp = self.hp if hp is None else hp
        k = len(next(iter(hp.values())))
        return collect(out, hp, k, self.spec.plan, *self.ranking, stopped_at)

    def checkpointed(self, search: Any = None) -> Checkpointed:
        """The :class:`Checkpointed` run of this call (``search``: a driver's
        settings outside the spec, in the fingerprint)."""
        fingerprint = sweep_fingerprint(self.spec, self.hp, self.key, self.chunks, self.shapes,
                                        self.segment_steps, self.checkpoint_every, search)
        return Checkpointed(self.checkpoint_dir, fingerprint, self.spec.steps,
                            self.checkpoint_every)


def run_halving_sweep(call: SweepCall) -> SweepResult:
    """Successive halving (rungs of compiled segments, survivors compacted),
    checkpointed at rung ends with ``checkpoint_dir``."""
    with ProgressBar(call.progress, total=call.spec.steps, desc="sweep") as bar:
        run = HalvingRun(call.search, call.spec, call.shared, call.eval_data, call.hp,
                         call.chunk_size, call.members, call.ranking, bar.token_array())
        if call.checkpoint_dir is None:
            out, stopped_at = run_halving(*run)
        else:  # checkpoints at rung ends: jaxopt_core.training.search.halving_resume
            out, stopped_at = run_halving_checkpointed(
                call.checkpointed(call.search), run,
                lambda o, at, t: call.collect((*o, None), stopped_at=at)._replace(
                    steps_trained=t))
    return call.collect((*out, None), stopped_at=stopped_at)


def run_sweep(call: SweepCall) -> SweepResult:
    """Every other sweep: one program per chunk, or segments (streamed,
    checkpointed, or asked for with ``segment_steps``)."""
    spec, steps = call.spec, call.spec.steps
    put = functools.partial(put_on_mesh, sharding=call.replicated)
    trained = steps
    if call.streamed and call.checkpoint_dir is None:
        run = functools.partial(run_chunk_segmented, spec, call.shared, call.eval_data)
        outs, trained = run_stream_chunks(
            run, call.chunks, call.data, steps=steps, segment_steps=call.segment_steps,
            allow_short=call.allow_short, put=put, progress=call.progress)
        out = concat_outputs(outs)
    elif call.checkpoint_dir is not None:
        if call.streamed and len(call.chunks) > 1:
            raise ValueError(f"checkpoint_dir with an iterable of batches needs the members in "
                             f"one chunk; chunk_size={call.chunk_size!r} makes "
                             f"{len(call.chunks)}")
        # A stream is opened where the plan starts: 0, or the resumed step.
        run = (ResumableStream(run_chunk_segmented, call.data, steps=steps,
                               length=call.segment_steps, allow_short=call.allow_short, put=put)
               if call.streamed else run_chunk_segmented)
        k = call.k
        out = run_sweep_checkpointed(
            call.checkpointed(), (sweep_start, run), spec, call.shared, call.eval_data,
            call.chunks, call.progress, call.segment_steps,
            lambda out, n: call.collect(out, {h: v[:min(n, k)] for h, v in call.hp.items()}))
        trained = run.steps_trained if call.streamed else steps
    else:
        out = run_chunks(spec, call.shared, call.eval_data, call.chunks, call.progress,
                         call.segment_steps)
    result = cut_result(call.collect(out), trained, steps)
    if spec.log_every is None:
        return result
    return result._replace(loss_steps=loss_steps(steps, spec.log_every),
                           member_steps=call.k * steps)


def chunk_length(k: int, chunk_size: Any, members: NamedSharding) -> int:
    """How many members one run of the program holds: ``chunk_size`` (all
    ``k`` when None) rounded up to a multiple of the device count."""
    n_dev = members.mesh.size
    chunk = k if chunk_size is None else check_chunk_size(chunk_size)
    return -(-min(chunk, k) // n_dev) * n_dev


def member_chunks(hp: dict, k: int, chunk_size: Any, members: NamedSharding) -> list[dict]:
    """The grid cut into equal chunks, each a multiple of the device count
    (the last padded by repeating the last member), placed on the mesh."""
    chunk = chunk_length(k, chunk_size, members)
    n_chunks = -(-k // chunk)
    pad = n_chunks * chunk - k
    padded = {n: np.concatenate([v, np.repeat(v[-1:], pad)]) for n, v in hp.items()}
    return [put_on_mesh({n: v[c * chunk:(c + 1) * chunk] for n, v in padded.items()}, members)
            for c in range(n_chunks)]


def run_chunks(spec: SweepSpec, shared: tuple, eval_data: Any, chunks: list[dict],
                progress: bool, segment_steps: int | None = None) -> Any:
    """Run every chunk through the one compiled program (or its segments);
    outputs concatenated."""
    outs = []
    with ProgressBar(progress, total=spec.steps * len(chunks), desc="sweep") as bar:
        for c, hp_c in enumerate(chunks):
            base = np.int32(c * spec.steps)
            # Errors raised while tracing name their culprit (loss_fn or
            # optimizer_fn): see jaxopt_core.training.culprits.
            if segment_steps is None:
                outs.append(sweep_program(*shared, hp_c, bar.token_array(), base, eval_data,
                                          spec=spec))
            else:
                outs.append(run_chunk_segmented(spec, shared, eval_data, hp_c, bar.token_array(),
                                                base, segment_plan(spec.steps, segment_steps)))
        if progress:
            jax.block_until_ready(outs)
    return concat_outputs(outs)


def concat_outputs(outs: list) -> Any:
    """The chunks' outputs joined along the member axis."""
    if len(outs) == 1:
        return outs[0]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)


def run_chunk_segmented(spec: SweepSpec, shared: tuple, eval_data: Any, hp: dict, token: Any,
                        base: Any, plan: list[tuple[int, int]], state: SweepState | None = None,
                        losses: Any = None, after: Any = None, batches: Any = None) -> tuple:
    """One chunk as a chain of segments (see :mod:`jaxopt_core.training.segments`):
    the outputs of :func:`sweep_program`, computed segment by segment from
    ``state`` (default: the start) with ``losses`` of the steps before it.
    ``batches(t0, n)`` gives a segment's stacked batches (None: draw from the data);
    ``after(state, t_done, losses)`` runs between segments."""
    params, data, key_data = shared
    if state is None:
        state = sweep_start(params, data, key_data, hp, spec=spec)

    def run_one(st, t0, n):
        feed = None if batches is None else batches(t0, n)
        return sweep_segment(st, data, key_data, hp, np.int32(t0), token, base, eval_data, feed,
                             spec=spec, length=n)

    state, losses = run_segments(state, plan, run_one, after, losses)
    p, diverged, at, evals, best_params, best_step = sweep_finish(state, eval_data, spec=spec)
    return p, losses, diverged, at, evals, best_params, best_step, pbt_outputs(state.search)


def collect(out: Any, hp: dict, k: int, plan: EvalPlan | None, rank_by: str,
             rank_mode: str, stopped_at: np.ndarray | None = None) -> SweepResult:
    """Drop the padding members and rank the rest."""
    if jax.tree.leaves(out)[-1].shape[0] != k:
        out = jax.tree.map(lambda x: x[:k], out)
    new_params, losses, diverged, diverged_at, evals, best_params, best_step, searched = out
    history, parents = (None, None) if searched is None else searched
    evals = {n: evals[n] for n in plan.names} if plan else {}  # eval_fn's order, not sorted
    taken = eval_steps(plan.steps, plan.every) if plan else np.zeros(0, np.int32)
    result = SweepResult(dict(hp), losses, new_params, diverged, None, diverged_at, evals,
                         taken, rank_by, rank_mode, best_params, best_step,
                         member_steps=member_steps(k, losses.shape[1], stopped_at),
                         stopped_at=stopped_at, hparams_history=history, parents=parents)
    # Collective, in the call every process makes: all but the stacked params
    # become host data on every process (jaxopt_core.training.sharding).
    result = gather_small_fields(result)
    # Gathering rebuilds dicts with sorted keys: keep the grid's and eval_fn's order.
    result = result._replace(hparams={n: result.hparams[n] for n in hp},
                             evals={n: result.evals[n] for n in evals},
                             hparams_history=None if history is None else {
                                 n: result.hparams_history[n] for n in hp})
    order, values = result._ranking()
    usable = ~result.diverged[order[0]] & np.isfinite(values[order[0]])
    best = int(order[0]) if usable else None
    return result._replace(best_index=best, best_member_params=member_to_host(new_params, best))
