r"""``fit``: a whole training run as one compiled ``lax.scan``.

Full-batch gradient descent, or minibatch SGD reshuffled every epoch (see
:mod:`jaxopt_core.training.batching`), with no Python loop over steps and no
host synchronisation until the run is over. Each step is
:func:`~jaxopt_core.training.step.apply_step`.

Inside :func:`fit` the params and optimizer state are kept in the flat layout
of :mod:`jaxopt_core.training.layout` (a few long buffers), unless the
optimizer depends on the leaf structure; results come back in the user's
tree layout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_core.core.base import needs_tree_layout
from jaxopt_core.training.batching import Batcher, as_key, check_batch_size, check_steps
from jaxopt_core.training.layout import layout_loss, ravel, unravel_tree, use_flat
from jaxopt_core.training.progress import ProgressBar, report_every, tick
from jaxopt_core.training.step import apply_step, check_callable, check_optimizer


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
        params: the trained params, with the structure of the params passed in.
        opt_state: the final optimizer state in the tree layout, i.e. with the
            structure ``optimizer.init(params)`` has, so training can go on
            with :func:`make_train_step` (``fit`` itself always starts from
            ``optimizer.init``).
        losses: ``[steps]``, the loss of step ``t`` evaluated at the params
            *before* that step's update, on that step's batch.
    """

    params: Any
    opt_state: Any
    losses: jax.Array


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
) -> FitResult:
    """Train ``params`` for ``steps`` steps in one compiled ``lax.scan``.

    ``batch_size=None`` is full-batch gradient descent: every step sees all
    of ``data``. An int gives minibatch SGD, reshuffled every epoch (see the
    module notes: each epoch is a permutation, cut into ``n // batch_size``
    batches, the remainder dropped).

    The compiled program is cached on ``(loss_fn, optimizer, steps,
    batch_size, layout, progress)`` and the shapes and dtypes of ``params``,
    ``data`` and ``key``: calling ``fit`` again with the same function and
    optimizer *objects* and new values compiles nothing. (A lambda or an
    optimizer built anew in each call is a new object, hence a new compile.)

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
        layout: ``"auto"`` (flat unless ``needs_tree_layout(optimizer)``),
            ``"flat"`` or ``"tree"``; see :mod:`jaxopt_core.training.layout`. Results
            are in the tree layout either way.

    Returns:
        A :class:`FitResult` ``(params, opt_state, losses)``.

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
        >>> res.losses.shape, bool(res.losses[-1] < 1e-2 * res.losses[0])
        ((200,), True)
    """
    check_callable("loss_fn", loss_fn)
    check_optimizer("optimizer", optimizer)
    steps = check_steps(steps)
    check_batch_size(batch_size, data)
    key = as_key(key)
    flat = use_flat(layout, needs_tree_layout(optimizer))
    every = report_every(steps) if progress else 0
    with ProgressBar(progress, total=steps, desc="fit") as bar:
        out = _fit_program(
            params, data, key, bar.token_array(),
            loss_fn=loss_fn, optimizer=optimizer, steps=steps,
            batch_size=batch_size, flat=flat, every=every,
        )
        if progress:
            jax.block_until_ready(out)
    return FitResult(*out)


@functools.partial(
    jax.jit, static_argnames=("loss_fn", "optimizer", "steps", "batch_size", "flat", "every")
)
def _fit_program(params, data, key, token, *, loss_fn, optimizer, steps, batch_size, flat, every):
    p0 = ravel(params) if flat else params
    s0 = optimizer.init(p0)
    loss_of = layout_loss(loss_fn, flat)
    batcher = Batcher(data, batch_size)

    def body(carry, t):
        p, s, perm = carry
        perm = batcher.refresh(perm, key, t)
        p, s, loss = apply_step(loss_of, optimizer, p, s, batcher.batch(data, perm, t))
        if every:
            tick(token, t + 1, every)
        return (p, s, perm), loss

    carry = (p0, s0, batcher.initial_perm())
    (p, s, _), losses = jax.lax.scan(body, carry, jnp.arange(steps, dtype=jnp.int32))
    if flat:
        p, s = p.unravel(), unravel_tree(s)
    return p, s, losses
