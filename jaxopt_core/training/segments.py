r"""A compiled run cut into segments: the shared mechanism of checkpoints,
streamed data and adaptive search.

A run of ``steps`` steps is the chain ``start -> segment(t0=0, n) ->
segment(t0=n, n) -> ... -> finish``, each segment one call of a compiled
``lax.scan`` over ``n`` steps that takes the carry in and gives it back. The
step index ``t0`` is data, so every segment of the same length reuses one
compiled program; a run whose length is not a multiple of ``n`` compiles
one more program, for the remainder. Between segments the host holds the
carry: that is where a checkpoint is written, a batch stream is refilled, or
a search strategy decides which members go on.

The segments compute, step for step, what the one-shot program computes (the
same scan body with the same global step indices; tested bit for bit).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp


def check_segment_steps(name: str, value: Any) -> int:
    """``value`` as an int >= 1, or an error naming the argument ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {name}={value!r}")
    return int(value)


def segment_plan(steps: int, length: int, start: int = 0) -> list[tuple[int, int]]:
    """``[(t0, n), ...]``: the segments of steps ``start .. steps - 1`` cut at
    the multiples of ``length`` (so a resumed run cuts where the first did).

    Example:
        >>> segment_plan(10, 4)
        [(0, 4), (4, 4), (8, 2)]
        >>> segment_plan(10, 4, start=4)
        [(4, 4), (8, 2)]
    """
    return [(t0, min(length, steps - t0)) for t0 in range(start, steps, length)]


def run_segments(
    state: Any,
    plan: list[tuple[int, int]],
    run_one: Callable[[Any, int, int], tuple[Any, Any]],
    after: Callable[[Any, int, Any], None] | None = None,
    losses: Any = None,
) -> tuple[Any, Any]:
    """Run ``run_one(state, t0, n) -> (state, losses)`` for each ``(t0, n)`` of
    ``plan``; returns the last state and the losses concatenated along their
    last (step) axis, after ``losses`` (those of earlier segments, if any).

    ``after(state, t_done, losses_so_far)`` is called after each segment: the
    place for checkpoints, interruption and search decisions. ``run_one`` may
    donate ``state``: ``after`` must finish with it before returning.
    """
    parts = [] if losses is None else [losses]
    for t0, n in plan:
        state, seg = run_one(state, t0, n)
        parts.append(seg)
        if after is not None:
            so_far = jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
            parts = [so_far]
            after(state, t0 + n, so_far)
    if not parts:
        raise ValueError("run_segments needs at least one segment or the earlier losses")
    return state, parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)
