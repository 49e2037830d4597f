r"""Checkpointed successive halving: save at rung ends, resume, stop on Ctrl-C.

``sweep(..., search=jc.successive_halving(...), checkpoint_dir=...)`` runs
:func:`~jaxopt_core.training.search.halving_run.run_halving` and saves a
checkpoint (:class:`~jaxopt_core.training.resumable.Checkpointed`, one orbax
step per save, numbered by the rungs done) at the end of a rung, after the
survivors are compacted. Rungs are never cut: ``checkpoint_every`` is rounded
up to rung ends, a checkpoint being taken at the end of every rung that
reaches or passes a multiple of ``checkpoint_every`` steps since the last
one, and always after the last rung. The saved tree::

    {"state":  the SweepState of the members still running (their rows,
               padded to the chunk; absent after the last rung),
     "losses": [K, steps], NaN where not trained (yet),
     "done":   the final outputs (params, diverged, evaluations, ...) with
               K rows in grid order, filled for the members stopped,
     "extra":  {"stopped_at": [K] (0: running), "ids": the running members}}

with the meta ``{"chunk": 0, "t": steps done, "rung": rungs done}``. The
rung schedule being fixed by K, ``steps`` and the settings, the survivor
count after rung :math:`r` is known, and so are the shapes of the restore
target. The search settings join the fingerprint: a folder written with
another ``eta`` or ``min_steps`` is refused, naming them. A resumed run runs
the remaining rungs with the same programs on the same rows: its result
equals the uninterrupted run's bit for bit.

Ctrl-C: the running rung finishes, a checkpoint is saved, and
:class:`~jaxopt_core.Interrupted` carries a partial result: the members
stopped so far as they stopped, the running ones after the rung's last step
(``stopped_at`` = ``steps_trained`` = that step, their losses NaN after it).
A Ctrl-C during the last rung lets the run finish.

Example:
    >>> import shutil, tempfile, jax.numpy as jnp, numpy as np, jaxopt_core as jc
    >>> folder = tempfile.mkdtemp()
    >>> run = dict(grid={"learning_rate": np.geomspace(1e-3, 0.4, 9)}, steps=27,
    ...            search=jc.successive_halving(eta=3), checkpoint_dir=folder)
    >>> quad = lambda w, d: jnp.sum((w - d) ** 2)
    >>> first = jc.sweep(quad, jnp.zeros(2), jc.sgd, jnp.ones(2), **run)
    >>> shutil.rmtree(f"{folder}/3")   # as if killed during the last rung
    >>> again = jc.sweep(quad, jnp.zeros(2), jc.sgd, jnp.ones(2), **run)
    >>> again.stopped_at.tolist(), bool(np.array_equal(first.losses, again.losses, equal_nan=True))
    ([3, 3, 3, 3, 3, 3, 9, 9, 27], True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxopt_core.training.checkpoints import abstract_target
from jaxopt_core.training.interruption import Interrupted
from jaxopt_core.training.program import sweep_finish, sweep_start
from jaxopt_core.training.resumable import Checkpointed, RunStopped
from jaxopt_core.training.search.halving_run import (
    HalvingCarry,
    HalvingRun,
    assemble,
    halving_outputs,
    halving_rung,
    halving_schedule,
    halving_start,
    hp_rows,
)
from jaxopt_core.training.sharding import gather_to_host, put_on_mesh


def run_halving_checkpointed(ck: Checkpointed, run: HalvingRun,
                             partial_of: Callable[[tuple, np.ndarray, int], Any]
                             ) -> tuple[tuple, np.ndarray]:
    """``run_halving``'s ``(out, stopped_at)``, resumed from ``ck``'s last
    checkpoint if any, saving at rung ends. On Ctrl-C,
    :class:`~jaxopt_core.Interrupted` with ``partial_of(out, stopped_at,
    steps done)``."""
    schedule = halving_schedule(run)
    with ck:
        point = ck.resume_point()
        carry = halving_start(run) if point is None else _restore(ck, run, *point)
        saved = [schedule[carry.rung - 1][0] if carry.rung else 0]
        try:
            while carry.rung < len(schedule):
                carry = _after_rung(ck, run, *halving_rung(run, carry), saved)
        except RunStopped as stopped:
            t = int(stopped.steps_trained.max())
            partial = partial_of(stopped.out[0], stopped.out[1], t)
            raise Interrupted(partial, ck.directory, stopped.steps_trained) from None
    return halving_outputs(carry, run.spec.steps)


def _after_rung(ck: Checkpointed, run: HalvingRun, carry: HalvingCarry, out: Any,
                keep: np.ndarray, saved: list) -> HalvingCarry:
    """Save after the rung ``carry.rung - 1`` when due (or on Ctrl-C); on
    Ctrl-C before the last rung, raise :class:`RunStopped` with the partial
    outputs. Returns the carry (its stopped outputs in one piece if saved)."""
    schedule = halving_schedule(run)
    end, finished = schedule[carry.rung - 1][0], carry.rung == len(schedule)
    stopping = ck.guard.requested
    if stopping or finished or end // ck.every > saved[0] // ck.every:
        whole = _replicated(run)
        ck.extra = {"stopped_at": put_on_mesh(carry.stopped_at, whole)}
        done = assemble(carry.done, len(carry.stopped_at))
        carry = carry._replace(done=[_stopped_piece(carry.stopped_at, done)])  # same rows
        tree = {"losses": put_on_mesh(carry.losses, whole), "done": done}
        if not finished:
            ck.extra["ids"] = put_on_mesh(carry.ids.astype(np.int32), whole)
            tree["state"] = carry.state
        meta = {"chunk": 0, "t": end, "rung": carry.rung}
        with ck.guard.deferring():  # see jaxopt_core.training.interruption
            ck.store.save(carry.rung, {**tree, "extra": ck.extra}, meta)
        saved[0] = end
    if stopping and not finished:
        ck.store.wait()
        # The running members' outputs after this rung's last step, as if stopped here.
        stopped_at = carry.stopped_at.copy()
        stopped_at[carry.ids] = end
        done = [*carry.done, (carry.ids, keep, out)]
        raise RunStopped(halving_outputs(carry._replace(done=done, stopped_at=stopped_at),
                                         run.spec.steps), stopped_at)
    return carry


def _restore(ck: Checkpointed, run: HalvingRun, step: int, meta: dict) -> HalvingCarry:
    """The carry saved as ``step`` (``meta["rung"]`` rungs done), restored into
    abstract targets built from the schedule."""
    schedule = halving_schedule(run)
    rung, k = int(meta["rung"]), len(next(iter(run.hp.values())))
    finished = rung == len(schedule)
    n = schedule[min(rung, len(schedule) - 1)][1]  # the members running (or last run)
    whole = _replicated(run)
    params, data, key_data = run.shared
    rows = hp_rows(run, np.zeros(n, np.int32))
    state = abstract_target(sweep_start, params, data, key_data, rows, spec=run.spec)
    out = jax.eval_shape(sweep_finish, state, run.eval_data, spec=run.spec)
    done = jax.tree.map(lambda x: jax.ShapeDtypeStruct((k, *x.shape[1:]), x.dtype,
                                                       sharding=whole), out)
    target = {"losses": jax.ShapeDtypeStruct((k, run.spec.steps), np.float32, sharding=whole),
              "done": done}
    ck.extra_target = {"stopped_at": jax.ShapeDtypeStruct((k,), np.int32, sharding=whole)}
    if not finished:
        ck.extra_target["ids"] = jax.ShapeDtypeStruct((n,), np.int32, sharding=whole)
        target["state"] = state
    tree = ck.restore(step, target)
    host = gather_to_host((tree["losses"], ck.restored_extra))
    losses, extra = np.array(host[0]), host[1]
    ids = np.asarray(extra.get("ids", np.zeros(0, np.int32))).astype(np.int64)
    stopped_at = np.array(extra["stopped_at"])
    return HalvingCarry(rung, tree.get("state"), ids, losses, stopped_at,
                        [_stopped_piece(stopped_at, tree["done"])])


def _stopped_piece(stopped_at: np.ndarray, done: Any) -> tuple:
    """The stopped members' rows of the K-row outputs ``done``, as a piece of
    ``HalvingCarry.done``."""
    stopped = np.flatnonzero(stopped_at > 0)
    return stopped, stopped, done


def _replicated(run: HalvingRun) -> NamedSharding:
    return NamedSharding(run.members.mesh, PartitionSpec())
