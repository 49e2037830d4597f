r"""Checkpointed ``fit`` and ``sweep``: save after segments, resume, stop on Ctrl-C.

With ``checkpoint_dir``, :func:`~jaxopt_core.fit` and
:func:`~jaxopt_core.sweep` run as a chain of compiled segments of
``checkpoint_every`` steps (:mod:`jaxopt_core.training.segments`; with
``segment_steps`` too, segments of that length and a checkpoint every
``checkpoint_every`` steps, a multiple of it). After a checkpointed segment,
:class:`Checkpointed` saves (:mod:`jaxopt_core.training.checkpoints`, one
orbax step per save) the tree::

    {"state":  the carry (FitState / SweepState: params, optimizer state,
                alive flags, diverged_at, data order, evaluations so far),
     "losses": the losses of the steps done ([t] or [K_chunk, t]),
     "done":   (sweep) the outputs of the chunks already finished,
     "extra":  {name: array}: the place for a search strategy's own state}

(successive halving saves a tree of its own at rung ends through the same
:class:`Checkpointed`: :mod:`jaxopt_core.training.search.halving_resume`)

with the JSON meta ``{"chunk", "t"}`` (the orbax step number is
``chunk * steps + t``, so later is larger). The same call with the same
folder reads the last complete step, restores the tree into the abstract
target of a fresh start (same NamedTuples, same shardings) and runs the
remaining segments, cut where the first run cut them; the segments and their
compiled programs being the same, the results are those of an uninterrupted
run, bit for bit. A folder from another configuration is refused (see
:mod:`jaxopt_core.training.fingerprint`). A run that had finished returns
its result from the last checkpoint without training.

Ctrl-C (:mod:`jaxopt_core.training.interruption`): the segment that runs
finishes, a checkpoint is saved whatever the cadence, and
:class:`RunStopped` carries the partial outputs to ``fit``/``sweep``, which
raise :class:`~jaxopt_core.Interrupted`. Partial outputs are what the
finished run returns, computed from the state after the steps done ``t``:
losses ``[..., t]``, and the evaluations taken before ``t`` followed by one
after ``t`` (``eval_steps`` ends with ``t``), as for a stream that ended. In
a chunked sweep stopped after its first chunk, the members of the chunks
started are returned: the current chunk's losses NaN after ``t`` and its
evaluations not yet taken NaN; ``Interrupted.steps_trained`` says how far
each member went.

Example:
    >>> import shutil, tempfile, jax, jax.numpy as jnp, numpy as np, jaxopt_core as jc
    >>> X = jax.random.normal(jax.random.key(1), (64, 3))
    >>> data = (X, X @ jnp.array([1.0, -2.0, 0.5]))
    >>> def mse(w, batch):
    ...     x, t = batch
    ...     return jnp.mean((x @ w - t) ** 2)
    >>> folder = tempfile.mkdtemp()
    >>> run = dict(steps=40, batch_size=16, checkpoint_dir=folder, checkpoint_every=10)
    >>> first = jc.fit(mse, jnp.zeros(3), jc.adam(0.1), data, **run)
    >>> shutil.rmtree(f"{folder}/40")   # as if killed during the last 10 steps
    >>> again = jc.fit(mse, jnp.zeros(3), jc.adam(0.1), data, **run)   # resumes at 30
    >>> bool(np.array_equal(first.losses, again.losses)), again.losses.shape
    (True, (40,))
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_core.training.checkpoints import CheckpointStore, abstract_target
from jaxopt_core.training.fingerprint import describe, describe_array, describe_shapes
from jaxopt_core.training.interruption import Interrupted, InterruptGuard
from jaxopt_core.training.progress import ProgressBar
from jaxopt_core.training.segments import check_segment_steps, segment_plan
from jaxopt_core.training.streaming import truncate_evals


class RunStopped(Exception):  # noqa: N818 - a signal between modules, not an error
    """A checkpointed run stopped at a segment boundary (Ctrl-C), its checkpoint saved.

    Attributes:
        out: the partial outputs, shaped as the finished run's (members of
            chunks not started are absent).
        steps_trained: int array, steps done per member (or a 0-d one for a fit).
    """

    def __init__(self, out: Any, steps_trained: np.ndarray):
        super().__init__("stopped at a segment boundary")
        self.out = out
        self.steps_trained = steps_trained


def checkpoint_cadence(checkpoint_dir: Any, checkpoint_every: Any, segment_steps: Any,
                       steps: int) -> tuple[int | None, int | None]:
    """``(segment length, checkpoint_every)`` as used, or ``(segment_steps, None)``
    without ``checkpoint_dir``; errors name the argument.

    ``checkpoint_every`` None: ``segment_steps`` if given, else ``ceil(steps / 10)``
    (about ten checkpoints per run).
    """
    if segment_steps is not None:
        segment_steps = check_segment_steps("segment_steps", segment_steps)
    if checkpoint_dir is None:
        if checkpoint_every is not None:
            raise ValueError(f"checkpoint_every={checkpoint_every!r} was given without "
                             "checkpoint_dir; pass checkpoint_dir too")
        return segment_steps, None
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir must be a path (str or os.PathLike); got "
                        f"{type(checkpoint_dir).__name__}")
    if checkpoint_every is None:
        every = segment_steps or max(1, math.ceil(steps / 10))
    else:
        every = check_segment_steps("checkpoint_every", checkpoint_every)
    length = segment_steps or every
    if every % length:
        raise ValueError(f"checkpoint_every={every} must be a multiple of "
                         f"segment_steps={length} (checkpoints are taken between segments)")
    return length, every


#: Spec fields left out of a fingerprint while None, so that checkpoints
#: written before the field existed still resume.
UNSET_OMITTED = ("eval_chunk",)


def run_fingerprint(kind: str, spec: Any, values: dict[str, Any],
                    shapes: dict[str, Any]) -> dict[str, str]:
    """The fingerprint of a run: every field of its static ``spec`` (a
    ``FitSpec``/``SweepSpec``: functions, optimizer, steps, batch size, layout,
    evaluation and search plans) but the progress cadence and the sharding
    object, and ``values`` described whole (see
    :func:`~jaxopt_core.training.fingerprint.describe`; arrays by value or hash),
    ``shapes`` by structure, dtype and shape only (params, data)."""
    out = {"kind": kind, "devices": f"{jax.device_count()} {jax.default_backend()}"}
    fields = {n: v for n, v in zip(spec._fields, spec) if n not in ("every", "sharding")
              and not (n in UNSET_OMITTED and v is None)}
    for name, value in {**fields, **values}.items():
        is_array = isinstance(value, (np.ndarray, jax.Array))
        out[name] = describe_array(value) if is_array else describe(value)
    out.update({name: describe_shapes(tree) for name, tree in shapes.items()})
    return out


def sweep_fingerprint(spec: Any, hp: dict, key: Any, chunks: list[dict], shapes: dict,
                      length: int, every: int, search: Any = None) -> dict[str, str]:
    """What a checkpoint of a sweep is resumable by: its spec, grid (names
    and values), key, chunk length and cadence, the shapes of ``shapes``;
    ``search``: a driver's settings outside the spec (successive halving's,
    by their repr)."""
    values = {"grid": list(hp), **{f"grid[{n!r}]": np.asarray(v) for n, v in hp.items()},
              "key": jax.random.key_data(key), "chunk": len(next(iter(chunks[0].values()))),
              "segment_steps": length, "checkpoint_every": every}
    if search is not None:
        values["search"] = repr(search)
    return run_fingerprint("sweep", spec, values, shapes)


def _versions() -> dict[str, str]:
    import jaxlib

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}


class Checkpointed:
    """One checkpointed run: its :class:`CheckpointStore`, cadence and Ctrl-C guard.

    Use as a context manager around the run (it installs the SIGINT handler
    and opens the store; leaving it waits for the last save and puts the
    handler back). ``extra`` is a dict of arrays saved with every checkpoint
    (the state of a search strategy); ``extra_target`` its abstract target
    for restoring, and ``restored_extra`` what a resumed run restored.
    """

    def __init__(self, directory: Any, fingerprint: dict[str, str], steps: int, every: int):
        self.directory = directory
        self.steps = steps
        self.every = every
        self.fingerprint = fingerprint
        self.extra: dict[str, Any] = {}
        self.extra_target: dict[str, Any] = {}
        self.restored_extra: dict[str, Any] = {}
        self.guard = InterruptGuard()
        self.store: CheckpointStore | None = None

    def __enter__(self) -> Checkpointed:
        self.store = CheckpointStore(self.directory, self.fingerprint,
                                     info={"versions": _versions()})
        self.guard.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.guard.__exit__(*exc)
        finally:
            self.store.close()

    def resume_point(self) -> tuple[int, dict] | None:
        """``(orbax step, meta)`` of the last complete checkpoint, or None; meta:
        ``{"chunk", "t", "losses_dtype", "losses_shape"}``."""
        step = self.store.latest_step()
        return None if step is None else (step, self.store.read_meta(step))

    def restore(self, step: int, target: dict) -> dict:
        """The saved tree of ``step``, restored into ``target`` (+ ``extra``)."""
        tree, _ = self.store.restore(step, {**target, "extra": self.extra_target})
        self.restored_extra = tree.pop("extra")
        return tree

    def after(self, chunk: int, tree_of: Callable[[Any, Any], dict],
              stop: Callable[[Any, int, Any], Any]) -> Callable:
        """The ``after`` hook of chunk ``chunk``'s segments: save every
        ``every`` steps, at the end, and on Ctrl-C; then, on Ctrl-C, raise
        :class:`RunStopped` with ``stop(state, t_done, losses)``."""

        def hook(state: Any, t_done: int, losses: Any) -> None:
            stopping = self.guard.requested
            if stopping or t_done % self.every == 0 or t_done == self.steps:
                tree = {**tree_of(state, losses), "extra": self.extra}
                meta = {"chunk": chunk, "t": t_done, "losses_dtype": str(losses.dtype),
                        "losses_shape": list(losses.shape)}
                with self.guard.deferring():  # see jaxopt_core.training.interruption
                    self.store.save(chunk * self.steps + t_done, tree, meta)
            if stopping and t_done < self.steps:  # a finished chunk is not cut: next one
                self.store.wait()
                out, trained = stop(state, t_done, losses)
                raise RunStopped(out, trained)

        return hook


def stopped_state(state: Any) -> Any:
    """``state`` with every ``alive`` flag off: its finish program then takes
    no evaluation "after the last step" and leaves the best params alone
    (the partial result's ``diverged`` is taken from the real flags)."""
    return state._replace(alive=jnp.logical_and(state.alive, False))


def run_fit_checkpointed(ck: Checkpointed, programs: tuple, spec: Any, params: Any, data: Any,
                         key: Any, token: Any, eval_data: Any, length: int,
                         partial_of: Callable[[Any, int], Any]) -> tuple:
    """:func:`~jaxopt_core.fit`'s outputs, resumed from ``ck``'s last checkpoint
    if any. ``programs``: ``(fit_start, run_fit_segmented)``; on Ctrl-C,
    :class:`~jaxopt_core.Interrupted` with ``partial_of(outputs, steps_done)``."""
    start, run_segmented = programs

    def run(plan: list, st: Any, ls: Any, after: Any = None) -> tuple:
        return run_segmented(spec, params, data, key, token, eval_data, plan, state=st,
                             losses=ls, after=after)

    def stop(st: Any, t_done: int, ls: Any) -> tuple:
        # The finish of the state so far: the evaluation "after the last
        # step" is taken after ``t_done`` steps (as for a stream that ended).
        return run([], st, ls), np.asarray(t_done)

    with ck:
        state = losses = None
        t = 0
        point = ck.resume_point()
        if point is not None:
            step, meta = point
            t = int(meta["t"])
            st = abstract_target(start, params, data, spec=spec)
            lt = jax.ShapeDtypeStruct(tuple(meta["losses_shape"]), jnp.dtype(meta["losses_dtype"]),
                                      sharding=st.alive.sharding)
            tree = ck.restore(step, {"state": st, "losses": lt})
            state, losses = tree["state"], tree["losses"]
        after = ck.after(0, lambda st, ls: {"state": st, "losses": ls}, stop)
        try:
            return run(segment_plan(spec.steps, length, start=t), state, losses, after)
        except RunStopped as stopped:
            partial = partial_of(stopped.out, int(stopped.steps_trained))
            raise Interrupted(partial, ck.directory, stopped.steps_trained) from None


def run_sweep_checkpointed(ck: Checkpointed, programs: tuple, spec: Any, shared: tuple,
                           eval_data: Any, chunks: list[dict], progress: bool, length: int,
                           partial_of: Callable[[Any, int], Any]) -> Any:
    """The chunks' outputs, concatenated (as ``sweep``'s one-shot path gives
    them), resumed from ``ck``'s last checkpoint if any. ``programs``:
    ``(sweep_start, run_chunk_segmented)`` (whose outputs have the losses
    second and ``diverged`` third). On Ctrl-C, :class:`~jaxopt_core.Interrupted`
    with ``partial_of(outputs, k_started)``, the result of the members of the
    chunks started (see :func:`partial_sweep`)."""
    start, run_chunk = programs
    with ck:
        c0, t0, restored = 0, 0, None
        point = ck.resume_point()
        if point is not None:
            step, meta = point
            c0, t0 = int(meta["chunk"]), int(meta["t"])
            restored = ck.restore(step, _sweep_target(programs, spec, shared, eval_data,
                                                      chunks[c0], meta))
        done = list(restored["done"]) if restored else []
        try:
            with ProgressBar(progress, total=spec.steps * len(chunks), desc="sweep") as bar:
                for c in range(c0, len(chunks)):
                    first = restored is not None and c == c0
                    run = functools.partial(run_chunk, spec, shared, eval_data, chunks[c],
                                            bar.token_array(), np.int32(c * spec.steps))
                    after = ck.after(c, _sweep_tree(tuple(done)),
                                     _sweep_stop(run, spec, tuple(done)))
                    done.append(run(segment_plan(spec.steps, length, start=t0 if first else 0),
                                    state=restored["state"] if first else None,
                                    losses=restored["losses"] if first else None, after=after))
                if progress:
                    jax.block_until_ready(done)
        except RunStopped as stopped:
            partial, trained = partial_sweep(stopped, partial_of, spec.steps,
                                             getattr(spec.search, "every", None))
            raise Interrupted(partial, ck.directory, trained) from None
    return _concatenate(done)


def partial_sweep(stopped: RunStopped, partial_of: Callable, steps: int,
                  pbt_every: int | None = None) -> tuple:
    """``(SweepResult, steps trained per member)`` of a stopped sweep. In the
    first chunk (or without chunks) the evaluation after the last step was
    taken after the steps done and the evaluations are cut there, as for a
    stream that ended; with earlier chunks finished, the current chunk's
    evaluations not yet taken are NaN and its losses NaN-padded. With PBT
    (``pbt_every``) ``hparams_history`` and ``parents`` keep the rounds done."""
    result = partial_of(stopped.out, len(stopped.steps_trained))
    trained = np.asarray(stopped.steps_trained[: result.losses.shape[0]])
    t = int(trained.min())
    if pbt_every and result.parents is not None:  # PBT: one chunk, all at step t
        r = min(t // pbt_every, result.parents.shape[1])
        result = result._replace(
            hparams_history={n: v[:, :r + 1] for n, v in result.hparams_history.items()},
            parents=result.parents[:, :r])
    if t < steps and int(trained.max()) == t:
        evals, taken = truncate_evals(result.evals, result.eval_steps, t, steps)
        best_step = result.best_step
        if best_step is not None:  # the last evaluation was taken after t steps, not steps
            best_step = np.where(np.asarray(best_step) == steps, t, best_step)
        result = result._replace(evals=evals, eval_steps=taken, best_step=best_step)
    return result._replace(steps_trained=t), trained


def _concatenate(outs: list) -> Any:
    return outs[0] if len(outs) == 1 else jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)


def _sweep_tree(done: tuple) -> Callable:
    return lambda st, ls: {"state": st, "losses": ls, "done": list(done)}


def _sweep_stop(run: Callable, spec: Any, done: tuple) -> Callable:
    """The partial outputs of the chunks so far when chunk ``len(done)`` stops.
    The first chunk: its finish from the state so far. Later chunks: the
    finish of :func:`stopped_state` (no evaluation after the last step: NaN),
    ``diverged`` from the real flags, losses NaN-padded to ``steps``."""

    def stop(st: Any, t_done: int, ls: Any) -> tuple:
        k_c = ls.shape[0]
        trained = np.asarray([spec.steps] * (k_c * len(done)) + [t_done] * k_c)
        if not done:
            return run([], state=st, losses=ls), trained
        out = list(run([], state=stopped_state(st), losses=ls))
        out[2] = ~st.alive
        pad = jnp.full((k_c, done[0][1].shape[1] - ls.shape[1]), jnp.nan, ls.dtype)
        out[1] = jnp.concatenate([ls, pad], axis=1)
        return _concatenate([*done, tuple(out)]), trained

    return stop


def _sweep_target(programs: tuple, spec: Any, shared: tuple, eval_data: Any, hp_c: dict,
                  meta: dict) -> dict:
    """The abstract tree of a sweep checkpoint (chunk ``meta["chunk"]`` after
    ``meta["t"]`` steps): a fresh start's structure, dtypes and shardings;
    finished chunks' outputs shaped by tracing a chunk (nothing compiled),
    member-sharded where their leading axis is the chunk's members."""
    start, run_chunk = programs
    state = abstract_target(start, *shared, hp_c, spec=spec)
    k_c, dtype = state.alive.shape[0], jnp.dtype(meta["losses_dtype"])
    losses = jax.ShapeDtypeStruct(tuple(meta["losses_shape"]), dtype, sharding=spec.sharding)
    token = np.zeros((), np.int32)
    out = jax.eval_shape(lambda: run_chunk(spec, shared, eval_data, hp_c, token, np.int32(0),
                                           [(0, spec.steps)]))
    whole = jax.sharding.NamedSharding(spec.sharding.mesh, jax.sharding.PartitionSpec())
    out = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=spec.sharding if x.shape[:1] == (k_c,) else whole), out)
    return {"state": state, "losses": losses, "done": [out] * int(meta["chunk"])}
