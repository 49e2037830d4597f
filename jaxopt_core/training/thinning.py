r"""Thinned loss records: ``log_every=`` of :func:`~jaxopt_core.fit` and
:func:`~jaxopt_core.sweep`.

A run records one loss per step by default: ``[steps]`` for a fit,
``[K, steps]`` for a sweep, which on a long sweep of many members can
outweigh the params themselves. With ``log_every = L`` the record keeps one
entry per window of ``L`` steps: entry :math:`j` is the **mean** of the losses
of steps :math:`jL, \dots, \min((j+1)L, T) - 1`,

.. math:: \bar\ell_j = \frac{1}{|W_j|}\sum_{t \in W_j} \ell_t,
          \qquad W_j = \{jL, \dots, \min((j+1)L, T) - 1\},

so there are :math:`\lceil T / L \rceil` entries (the last window is shorter
when :math:`L` does not divide :math:`T`), and ``loss_steps[j] = j * L``,
the window's first step (with ``L = 1`` the record is the per-step one,
``loss_steps = arange(T)``). The mean, not a sample, so that minibatch noise
averages out and ranking by ``"loss"`` (the mean over the last tenth) keeps
its meaning: it becomes the mean of the last ``max(1, n // 10)`` entries,
which is exactly the mean training loss of the last tenth of the steps when
``T`` is a multiple of ``10 L``. A window holding the step that diverged or
later steps of a diverged run is NaN (or inf), as those steps are.

Inside the compiled ``lax.scan`` the step's loss is added into a carried
buffer of ``ceil(n / L)`` windows (one dynamic update of a row per step), so
the scan outputs nothing per step and the program's memory holds
``ceil(n / L)`` rows instead of ``n``. Segments (``segment_steps``) must be
a multiple of ``L`` so that every window lies in one segment. Not supported
(refused, the error names both arguments): ``checkpoint_dir``, an iterable
of batches as ``data`` and ``search=jc.successive_halving(...)``, whose
segment boundaries are not multiples of ``L``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def check_log_every(log_every: Any, *, steps: int, segment_steps: Any = None,
                    checkpoint_dir: Any = None, streamed: bool = False,
                    halving: bool = False) -> int | None:
    """``log_every`` as an int >= 1 (None stays None), or an error naming it
    and the argument it cannot be combined with.

    Example:
        >>> check_log_every(10, steps=100), check_log_every(None, steps=100)
        (10, None)
    """
    if log_every is None:
        return None
    if isinstance(log_every, bool) or not isinstance(log_every, numbers.Integral) \
            or log_every < 1:
        raise ValueError(f"log_every must be None or an int >= 1; got log_every={log_every!r}")
    log_every = int(log_every)
    if isinstance(segment_steps, numbers.Integral) and segment_steps % log_every:
        raise ValueError(f"segment_steps must be a multiple of log_every (each window of "
                         f"log_every steps lies in one segment); got segment_steps="
                         f"{segment_steps!r}, log_every={log_every!r}")
    refused = ((checkpoint_dir is not None, f"checkpoint_dir={str(checkpoint_dir)!r}"),
               (streamed, "data=<an iterable of batches>"),
               (halving, "search=successive_halving(...)"))
    for bad, what in refused:
        if bad:
            raise ValueError(f"log_every={log_every!r} is not supported with {what}: "
                             f"pass log_every=None there")
    return log_every


def loss_steps(steps: int, log_every: int | None) -> np.ndarray:
    """``[n_entries]`` int32: the first step of each entry's window.

    Example:
        >>> loss_steps(10, 4).tolist()
        [0, 4, 8]
    """
    return np.arange(0, steps, log_every or 1, dtype=np.int32)


def window_sizes(n: int, log_every: int) -> np.ndarray:
    """``[ceil(n / L)]``: the number of steps in each window of a span of
    ``n`` steps starting at a window boundary.

    Example:
        >>> window_sizes(10, 4).tolist()
        [4, 4, 2]
    """
    starts = np.arange(0, n, log_every)
    return np.minimum(starts + log_every, n) - starts


def blocked_scan(body: Callable, state: Any, xs: Any, block: int | None = None,
                 between: Callable | None = None) -> tuple:
    """``lax.scan(body, state, xs)``, with ``state = between(state, j)`` after
    every block ``j`` of ``block`` steps (``block`` divides the length): a
    scan over blocks of a scan over steps, the per-step outputs stacked as
    one scan stacks them. ``block=None``: the plain scan.

    Example:
        >>> import jax.numpy as jnp
        >>> body = lambda c, x: (c + x, c)
        >>> c, ys = blocked_scan(body, 0, jnp.arange(6), 3, lambda c, j: c * 10)
        >>> int(c), ys.tolist()
        (420, [0, 0, 1, 30, 33, 37])
    """
    if block is None:
        return jax.lax.scan(body, state, xs)
    n = jax.tree.leaves(xs)[0].shape[0]
    if n % block:
        raise ValueError(f"block={block} must divide the scan's length {n}")
    blocks = jax.tree.map(lambda x: x.reshape(n // block, block, *x.shape[1:]), xs)

    def outer(st, inp):
        x, j = inp
        st, ys = jax.lax.scan(body, st, x)
        return between(st, j), ys

    state, ys = jax.lax.scan(outer, state, (blocks, jnp.arange(n // block, dtype=jnp.int32)))
    return state, jax.tree.map(lambda y: y.reshape(n, *y.shape[2:]), ys)


def thinned_scan(body: Callable, state: Any, xs: Any, log_every: int | None,
                 block: int | None = None, between: Callable | None = None) -> tuple:
    """``lax.scan(body, state, xs)`` whose per-step output (the loss, any
    shape) is recorded as window means of ``log_every`` steps:
    ``(state, means [ceil(n / L), ...])``. ``log_every=None`` is the plain
    scan (the per-step record, unchanged). ``block``, ``between``: see
    :func:`blocked_scan`."""
    if log_every is None:
        return blocked_scan(body, state, xs, block, between)
    n = jax.tree.leaves(xs)[0].shape[0]
    first = jax.tree.map(lambda x: x[0], xs)
    out = jax.eval_shape(body, state, first)[1]
    sizes = window_sizes(n, log_every)
    zeros = jnp.zeros((len(sizes), *out.shape), out.dtype)

    def step(carry, x):
        st, sums, i = carry
        st, loss = body(st, x)
        j = i // log_every
        row = jax.lax.dynamic_index_in_dim(sums, j, keepdims=False) + loss
        return (st, jax.lax.dynamic_update_index_in_dim(sums, row, j, 0), i + 1), None

    def between_windows(carry, j):
        return (between(carry[0], j), *carry[1:])

    (state, sums, _), _ = blocked_scan(step, (state, zeros, jnp.int32(0)), xs, block,
                                       between_windows)
    counts = jnp.asarray(sizes, out.dtype).reshape((-1,) + (1,) * len(out.shape))
    return state, sums / counts
