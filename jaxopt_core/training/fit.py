r"""``fit``: a whole training run as one compiled ``lax.scan``.

Full-batch gradient descent, or minibatch SGD reshuffled every epoch (see
:mod:`jaxopt_core.training.batching`), with no Python loop over steps and no
host synchronisation until the run is over. Each step is
:func:`~jaxopt_core.training.divergence.guarded_step`: a step that makes the
loss, params or optimizer state non-finite is discarded and the run stays
frozen at its last finite state (as each member of a sweep does). Validation
with ``eval_fn`` runs inside the same program
(:mod:`jaxopt_core.training.evaluation`).

Inside :func:`fit` the params and optimizer state are kept in the flat layout
of :mod:`jaxopt_core.training.layout` (a few long buffers), unless the
optimizer depends on the leaf structure; results come back in the user's
tree layout.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxopt_core.training.batching import as_key, check_steps
from jaxopt_core.training.canonical import canonical
from jaxopt_core.training.evaluation import (
    check_evaluation,
    eval_steps,
)
from jaxopt_core.training.fit_program import (
    FitSpec,
    fit_program,
    fit_start,
    run_fit_segmented,
)
from jaxopt_core.training.layout_safety import resolve_layout
from jaxopt_core.training.progress import ProgressBar, report_every
from jaxopt_core.training.resumable import (
    Checkpointed,
    checkpoint_cadence,
    run_fingerprint,
    run_fit_checkpointed,
)
from jaxopt_core.training.segments import segment_plan
from jaxopt_core.training.step import check_callable, check_optimizer
from jaxopt_core.training.streaming import (
    STREAM,
    ResumableStream,
    StreamFeed,
    check_data,
    truncate_evals,
)
from jaxopt_core.training.thinning import check_log_every, loss_steps


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
        params: the trained params, with the structure of the params passed in.
        opt_state: the final optimizer state in the tree layout, i.e. with the
            structure ``optimizer.init(params)`` has, so training can go on
            with :func:`make_train_step` (``fit`` itself always starts from
            ``optimizer.init``).
        losses: ``[steps]``, the loss of step ``t`` evaluated at the params
            *before* that step's update, on that step's batch; NaN after the
            step that diverged.
        diverged: a 0-d bool array: whether a step made the loss, the params
            or the optimizer state non-finite. ``params`` and ``opt_state``
            are then the last finite ones.
        diverged_at: a 0-d int32 array: the index of the step that diverged
            (its loss is recorded as computed), or -1.
        evals: ``{name: [n_evals]}``, the values of ``eval_fn`` (a scalar
            ``eval_fn`` is named ``"eval"``; NaN once diverged); ``{}``
            without ``eval_fn``.
        eval_steps: ``[n_evals]`` ints, the step count after which each
            evaluation was taken (empty without ``eval_fn``).
        steps_trained: the number of steps trained: ``steps``, or fewer when
            ``data`` is an iterable of batches that ended early and
            ``allow_short=True`` (``losses`` and ``eval_steps`` then stop
            there too). None in results saved before it was recorded.
        loss_steps: with ``log_every``, ``[n_entries]`` ints: the first step
            of the window each entry of ``losses`` averages; None when
            ``losses`` has one entry per step.
    """

    params: Any
    opt_state: Any
    losses: jax.Array
    diverged: jax.Array
    diverged_at: jax.Array
    evals: dict[str, jax.Array]
    eval_steps: np.ndarray
    steps_trained: int | None = None
    loss_steps: np.ndarray | None = None

    def save(self, path: str | os.PathLike, config: dict | None = None) -> Path:
        """Write this result to one file at ``path`` (``.npz``; no pickle) with an
        optional JSON ``config``; read it back with :func:`jaxopt_core.load_result`.
        See :mod:`jaxopt_core.training.serialization` for the format."""
        # Imported here: serialization imports this module (it rebuilds these results).
        from jaxopt_core.training.serialization import save_result

        return save_result(self, path, config=config)


def fit(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    optimizer: Any,
    data: Any,
    *,
    steps: int,
    batch_size: int | None = None,
    key: jax.Array | None = None,
    progress: bool = False,
    layout: str = "auto",
    eval_fn: Callable[[Any, Any], Any] | None = None,
    eval_data: Any = None,
    eval_every: int | None = None,
    segment_steps: int | None = None,
    allow_short: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    log_every: int | None = None,
) -> FitResult:
    """Train ``params`` for ``steps`` steps in one compiled ``lax.scan``.

    ``batch_size=None`` is full-batch gradient descent: every step sees all
    of ``data``. An int gives minibatch SGD, reshuffled every epoch (see the
    module notes: each epoch is a permutation, cut into ``n // batch_size``
    batches, the remainder dropped).

    ``data`` may also be an iterable of batches (a generator, an iterator, a
    data loader): step ``t`` then trains on the ``t``-th batch it yields, and
    the batches are stacked and put on the device a segment at a time, ahead
    of the compiled segments that consume them (see
    :mod:`jaxopt_core.training.streaming`).

    A step that makes the loss, the params or the optimizer state non-finite
    stops the run: it is frozen at its last finite state and flagged
    (``diverged``, ``diverged_at``).

    With ``eval_fn``, ``eval_fn(params, eval_data)`` is evaluated inside the
    compiled program after every ``eval_every`` steps and after the last step
    (see :mod:`jaxopt_core.training.evaluation`), on the params tree.

    The compiled program is cached on ``(loss_fn, optimizer, steps,
    batch_size, layout, progress, eval_fn, eval_every)`` and the shapes and
    dtypes of ``params``, ``data``, ``key`` and ``eval_data``: calling ``fit``
    again with the same function and optimizer and new values compiles
    nothing. "The same" is the same object, or one built again by
    jaxopt_core's or optax's code from equal values (``jc.adam(0.1)`` in a
    re-run cell, ``jc.regularized(loss, l1=0.1)``; see
    :mod:`jaxopt_core.training.canonical`). A lambda of your own written
    anew, or another hyperparameter value, is a new compile.

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``; it receives the user's
            params tree whatever the layout.
        params: initial params, any pytree of float arrays.
        optimizer: a :class:`~jaxopt_core.Optimizer` or optax transformation.
        data: with ``batch_size=None``, any pytree, passed whole as ``batch``;
            otherwise a pytree of arrays sharing a leading example axis of
            length ``n``, e.g. ``(X, y)``; batches are pytrees of the same
            structure with leading axis ``batch_size``. Or an iterable of
            batches (anything iterable that is not a pytree node or an array:
            a generator, ``iter(list_of_batches)``, a loader object), each a
            pytree of arrays (NumPy or JAX) with the first batch's structure,
            shapes and dtypes.
        steps: number of optimizer steps, an int >= 1 (with an iterable: the
            number of batches consumed).
        batch_size: ``None`` or an int in ``[1, n]``; None with an iterable.
        key: PRNG key for the minibatch order (``jax.random.key`` or a legacy
            ``PRNGKey``); default ``jax.random.key(0)``. Unused when
            ``batch_size`` is None.
        progress: show a tqdm bar that advances while the program runs.
        layout: ``"auto"`` (flat when every transform of the optimizer is known
            to be elementwise and leaf-structure free, else the tree), ``"flat"``
            (an error when that is not known) or ``"tree"``; see
            :mod:`jaxopt_core.training.layout_safety`. Results are in the tree
            layout either way.
        eval_fn: ``eval_fn(params, eval_data) -> scalar | {name: scalar}``,
            e.g. the loss or accuracy on held-out data; None: no evaluation.
        eval_data: passed whole to ``eval_fn`` (any pytree of arrays).
        eval_every: evaluate after every ``eval_every`` steps as well as
            after the last; None: after the last step only.
        segment_steps: None: the run is one compiled program. An int: a chain
            of compiled segments of this many steps (see
            :mod:`jaxopt_core.training.segments`), with the same results.
            With an iterable of batches, the batches stacked per segment
            (default ``min(steps, 100)``, fewer when 100 batches would take
            over 64 MiB).
        allow_short: with an iterable that ends before ``steps`` batches,
            stop there (``steps_trained`` says where) instead of raising.
        checkpoint_dir: a folder: save a checkpoint (orbax) every
            ``checkpoint_every`` steps and resume from the last complete one
            when called again with the same arguments (bit for bit the
            result of an uninterrupted run); Ctrl-C stops at the next
            checkpoint and raises :class:`~jaxopt_core.Interrupted`. See
            :mod:`jaxopt_core.training.resumable`. With an iterable of
            batches the resumed call reads on from the checkpointed step: it
            calls ``data.skip(t)`` if ``data`` has it, else reads and drops
            ``t`` batches, so ``data`` must yield the same batches again (see
            :mod:`jaxopt_core.training.streaming`).
        checkpoint_every: steps between checkpoints (a multiple of
            ``segment_steps`` if given); default ``segment_steps``, else
            ``ceil(steps / 10)``.
        log_every: None: ``losses`` holds every step's loss. An int ``L``:
            ``losses[j]`` is the mean loss of steps ``j*L .. (j+1)*L - 1``
            (the last window may be shorter), accumulated inside the compiled
            program; ``loss_steps`` gives each window's first step (see
            :mod:`jaxopt_core.training.thinning`). ``segment_steps`` must be
            a multiple of it; not with ``checkpoint_dir`` or an iterable of
            batches.

    Returns:
        A :class:`FitResult` ``(params, opt_state, losses, diverged,
        diverged_at, evals, eval_steps, steps_trained)``.

    Raises:
        TypeError / ValueError: an argument has the wrong type or value (the
            message names it); a batch of another structure, shape or dtype
            than the first (the message names the step); an iterable that
            ended early without ``allow_short`` (the message says how many
            batches it gave).
        BatchIteratorError: the iterable raised (the message names the
            step; the original is the ``__cause__``).

    Example:
        >>> import jax, jax.numpy as jnp, jaxopt_core as jc
        >>> X = jax.random.normal(jax.random.key(1), (64, 3))
        >>> y = X @ jnp.array([1.0, -2.0, 0.5])
        >>> def mse(w, batch):
        ...     x, t = batch
        ...     return jnp.mean((x @ w - t) ** 2)
        >>> res = jc.fit(mse, jnp.zeros(3), jc.adam(0.1), (X, y), steps=200, batch_size=16)
        >>> res.losses.shape, bool(res.losses[-1] < 1e-2 * res.losses[0]), bool(res.diverged)
        ((200,), True, False)
        >>> held_out = mse(res.params, (X[:8], y[:8]))
        >>> res = jc.fit(mse, jnp.zeros(3), jc.adam(0.1), (X, y), steps=200, batch_size=16,
        ...              eval_fn=mse, eval_data=(X[:8], y[:8]), eval_every=50)
        >>> res.eval_steps.tolist(), bool(res.evals["eval"][-1] == held_out)
        ([50, 100, 150, 200], True)
        >>> def batches():  # any iterable of batches; here drawn on the fly
        ...     for i in range(200):
        ...         x = jax.random.normal(jax.random.key(i), (16, 3))
        ...         yield x, x @ jnp.array([1.0, -2.0, 0.5])
        >>> res = jc.fit(mse, jnp.zeros(3), jc.adam(0.1), batches(), steps=200)
        >>> res.losses.shape, bool(res.losses[-1] < 1e-2 * res.losses[0])
        ((200,), True)
    """
    check_callable("loss_fn", loss_fn)
    check_optimizer("optimizer", optimizer)
    # An equal optimizer or loss built again (a re-run cell) reuses the program.
    loss_fn, optimizer, eval_fn = canonical(loss_fn), canonical(optimizer), canonical(eval_fn)
    steps = check_steps(steps)
    streamed = check_data(data, batch_size, allow_short)
    key = as_key(key)
    flat = resolve_layout(layout, optimizer)
    plan = check_evaluation(eval_fn, eval_data, eval_every, steps, params)
    every = report_every(steps) if progress else 0
    log_every = check_log_every(log_every, steps=steps, segment_steps=segment_steps,
                                checkpoint_dir=checkpoint_dir, streamed=streamed)
    spec = FitSpec(loss_fn, optimizer, steps, batch_size, flat, every, plan, log_every)
    segment_steps, ck_every = checkpoint_cadence(checkpoint_dir, checkpoint_every,
                                                 segment_steps, steps)
    trained = steps
    with ProgressBar(progress, total=steps, desc="fit") as bar:
        if checkpoint_dir is not None:
            fingerprint = run_fingerprint(
                "fit", spec, {"key": jax.random.key_data(key), "segment_steps": segment_steps,
                              "checkpoint_every": ck_every},
                {"params": params, "data": STREAM if streamed else data, "eval_data": eval_data})
            # A stream is opened where the plan starts: 0, or the resumed step.
            run = (ResumableStream(run_fit_segmented, data, steps=steps, length=segment_steps,
                                   allow_short=allow_short, put=jax.device_put)
                   if streamed else run_fit_segmented)
            out = run_fit_checkpointed(
                Checkpointed(checkpoint_dir, fingerprint, steps, ck_every),
                (fit_start, run), spec, params, None if streamed else data, key,
                bar.token_array(), eval_data, segment_steps, functools.partial(_result, spec))
            trained = run.steps_trained if streamed else steps
        elif streamed:
            out, trained = _fit_stream(spec, params, data, key, bar.token_array(), eval_data,
                                       segment_steps, allow_short)
        elif segment_steps is None:
            out = fit_program(params, data, key, bar.token_array(), eval_data, spec=spec)
        else:
            out = run_fit_segmented(spec, params, data, key, bar.token_array(), eval_data,
                                    segment_plan(steps, segment_steps))
        if progress:
            jax.block_until_ready(out)
    return _result(spec, out, trained)


def _result(spec: FitSpec, out: tuple, trained: int) -> FitResult:
    """The :class:`FitResult` of the program's outputs after ``trained`` steps."""
    params, opt_state, losses, diverged, diverged_at, evals = out
    plan = spec.plan
    # jit returns dicts with sorted keys: restore eval_fn's order.
    evals = {n: evals[n] for n in plan.names} if plan else {}
    taken = eval_steps(spec.steps, plan.every) if plan else np.zeros(0, np.int32)
    evals, taken = truncate_evals(evals, taken, trained, spec.steps)
    thinned = None if spec.log_every is None else loss_steps(spec.steps, spec.log_every)
    return FitResult(params, opt_state, losses, diverged, diverged_at, evals, taken, trained,
                     thinned)


def _fit_stream(spec: FitSpec, params, data, key, token, eval_data, segment_steps,
                allow_short) -> tuple:
    """A fit fed from an iterable of batches (see
    :mod:`jaxopt_core.training.streaming`): the outputs of the one-shot
    program and the number of steps trained."""
    with StreamFeed(data, steps=spec.steps, segment_steps=segment_steps,
                    allow_short=allow_short, put=jax.device_put) as feed:
        out = run_fit_segmented(spec, params, None, key, token, eval_data, feed.plan(),
                                batches=feed.batches)
    return out, feed.steps_trained
