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
import jax.numpy as jnp
import numpy as np

from jaxopt_core.training.batching import Batcher, as_key, check_batch_size, check_steps
from jaxopt_core.training.culprits import naming_errors, naming_optimizer_errors
from jaxopt_core.training.divergence import first_bad_step, guarded_step
from jaxopt_core.training.evaluation import (
    check_evaluation,
    eval_steps,
    init_state,
    maybe_record,
    measure,
    record_final,
)
from jaxopt_core.training.layout import layout_loss, ravel, unravel_tree
from jaxopt_core.training.layout_safety import resolve_layout
from jaxopt_core.training.progress import ProgressBar, report_every, tick
from jaxopt_core.training.step import check_callable, check_optimizer


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
    """

    params: Any
    opt_state: Any
    losses: jax.Array
    diverged: jax.Array
    diverged_at: jax.Array
    evals: dict[str, jax.Array]
    eval_steps: np.ndarray

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
) -> FitResult:
    """Train ``params`` for ``steps`` steps in one compiled ``lax.scan``.

    ``batch_size=None`` is full-batch gradient descent: every step sees all
    of ``data``. An int gives minibatch SGD, reshuffled every epoch (see the
    module notes: each epoch is a permutation, cut into ``n // batch_size``
    batches, the remainder dropped).

    A step that makes the loss, the params or the optimizer state non-finite
    stops the run: it is frozen at its last finite state and flagged
    (``diverged``, ``diverged_at``).

    With ``eval_fn``, ``eval_fn(params, eval_data)`` is evaluated inside the
    compiled program after every ``eval_every`` steps and after the last step
    (see :mod:`jaxopt_core.training.evaluation`), on the params tree.

    The compiled program is cached on ``(loss_fn, optimizer, steps,
    batch_size, layout, progress, eval_fn, eval_every)`` and the shapes and
    dtypes of ``params``, ``data``, ``key`` and ``eval_data``: calling ``fit``
    again with the same function and optimizer *objects* and new values
    compiles nothing. (A lambda or an optimizer built anew in each call is a
    new object, hence a new compile.)

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``; it receives the user's
            params tree whatever the layout.
        params: initial params, any pytree of float arrays.
        optimizer: a :class:`~jaxopt_core.Optimizer` or optax transformation.
        data: with ``batch_size=None``, any pytree, passed whole as ``batch``;
            otherwise a pytree of arrays sharing a leading example axis of
            length ``n``, e.g. ``(X, y)``; batches are pytrees of the same
            structure with leading axis ``batch_size``.
        steps: number of optimizer steps, an int >= 1.
        batch_size: ``None`` or an int in ``[1, n]``.
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

    Returns:
        A :class:`FitResult` ``(params, opt_state, losses, diverged,
        diverged_at, evals, eval_steps)``.

    Raises:
        TypeError / ValueError: an argument has the wrong type or value (the
            message names it).

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
    """
    check_callable("loss_fn", loss_fn)
    check_optimizer("optimizer", optimizer)
    steps = check_steps(steps)
    check_batch_size(batch_size, data)
    key = as_key(key)
    flat = resolve_layout(layout, optimizer)
    plan = check_evaluation(eval_fn, eval_data, eval_every, steps, params)
    every = report_every(steps) if progress else 0
    with ProgressBar(progress, total=steps, desc="fit") as bar:
        out = _fit_program(
            params, data, key, bar.token_array(), eval_data,
            loss_fn=loss_fn, optimizer=optimizer, steps=steps,
            batch_size=batch_size, flat=flat, every=every, plan=plan,
        )
        if progress:
            jax.block_until_ready(out)
    params, opt_state, losses, diverged, diverged_at, evals = out
    # jit returns dicts with sorted keys: restore eval_fn's order.
    evals = {n: evals[n] for n in plan.names} if plan else {}
    taken = eval_steps(steps, plan.every) if plan else np.zeros(0, np.int32)
    return FitResult(params, opt_state, losses, diverged, diverged_at, evals, taken)


@functools.partial(
    jax.jit,
    static_argnames=("loss_fn", "optimizer", "steps", "batch_size", "flat", "every", "plan"),
)
def _fit_program(params, data, key, token, eval_data, *, loss_fn, optimizer, steps, batch_size,
                 flat, every, plan):
    p0 = ravel(params) if flat else params
    # Errors raised while tracing name their culprit (jaxopt_core.training.culprits).
    optimizer = naming_optimizer_errors("optimizer", optimizer)
    s0 = optimizer.init(p0)
    loss_of = layout_loss(naming_errors("loss_fn", loss_fn), flat)
    batcher = Batcher(data, batch_size)

    def metrics_of(p):
        return measure(plan, p.unravel() if flat else p, eval_data)

    def body(carry, t):
        p, s, alive, at, perm, ev = carry
        perm = batcher.refresh(perm, key, t)
        batch = batcher.batch(data, perm, t)
        p, s, ok, loss = guarded_step(loss_of, optimizer, p, s, alive, batch)
        at = first_bad_step(alive, ok, t, at)
        ev = maybe_record(plan, ev, t, metrics_of, ok, p)
        if every:
            tick(token, t + 1, every)
        return (p, s, ok, at, perm, ev), loss

    carry = (p0, s0, jnp.array(True), jnp.array(-1, jnp.int32), batcher.initial_perm(),
             init_state(plan, p0))
    (p, s, alive, at, _, ev), losses = jax.lax.scan(
        body, carry, jnp.arange(steps, dtype=jnp.int32))
    ev = record_final(plan, ev, metrics_of, alive, p)
    if flat:
        p, s = p.unravel(), unravel_tree(s)
    return p, s, losses, ~alive, at, {} if ev is None else ev.values
