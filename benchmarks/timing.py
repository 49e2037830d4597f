"""Timing: contenders run in one process, interleaved, after warm-up.

Every timed unit ends with ``jax.block_until_ready`` on its result, so the
clock covers the computation and not only its dispatch. Contenders are timed
in turn (A B, B A, A B, ...) rather than all of A then all of B, so a change
in the machine's load during the run (other processes, frequency scaling) hits
both alike, and neither always runs second; the summary is the median over
repetitions, which ignores the odd repetition a background process disturbed.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax


class Timing(NamedTuple):
    """Seconds per unit of work: the median and the spread over repetitions."""

    median: float
    low: float  # the smallest repetition
    high: float  # the largest repetition
    samples: tuple[float, ...]  # in the order they were taken

    @classmethod
    def of(cls, samples: list[float]) -> Timing:
        return cls(statistics.median(samples), min(samples), max(samples), tuple(samples))

    def scaled(self, factor: float) -> Timing:
        return Timing.of([x * factor for x in self.samples])


def ratio(a: Timing, b: Timing) -> float:
    """``a / b`` as the median of the per-repetition ratios when the two were
    timed interleaved (repetition i of each ran back to back, so they shared
    the machine's state), else the ratio of the medians. On a noisy machine
    the paired ratio is steadier than the ratio of medians."""
    if len(a.samples) == len(b.samples) and a.samples:
        return statistics.median(x / y for x, y in zip(a.samples, b.samples, strict=True))
    return a.median / b.median


# What JAX reports through jax.monitoring for each function it compiles.
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class _CompileClock:
    """Running total of the seconds JAX spent tracing, lowering and compiling."""

    def __init__(self):
        self.total = 0.0
        self.listening = False

    def __call__(self, event: str, duration: float, **kwargs) -> None:
        if event in COMPILE_EVENTS:
            self.total += duration


_CLOCK = _CompileClock()


def compile_seconds(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds of tracing + lowering + XLA compiling during fn(), its result)``.

    Read from JAX's own ``jax.monitoring`` duration events, so it counts every
    function compiled during the call (helpers included) and nothing of the
    run itself: unlike "first call minus a later call", it does not drown in
    the run's noise when the run takes longer than the compile.
    """
    if not _CLOCK.listening:
        jax.monitoring.register_event_duration_secs_listener(_CLOCK)
        _CLOCK.listening = True
    before = _CLOCK.total
    out = jax.block_until_ready(fn())
    return _CLOCK.total - before, out


def run_once(fn: Callable[[], Any]) -> float:
    """Seconds for one call of ``fn`` including the wait for its result."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def calibrate(fn: Callable[[], Any], target_s: float, max_inner: int = 1000) -> int:
    """How many back-to-back calls of ``fn`` make one timed unit of about
    ``target_s`` seconds (at least 1), from one already-warm call."""
    once = run_once(fn)
    return max(1, min(max_inner, int(target_s / max(once, 1e-7))))


def interleaved(
    contenders: dict[str, Callable[[], Any]],
    *,
    reps: int,
    inner: int = 1,
    warmup: int = 1,
) -> dict[str, Timing]:
    """Time each contender ``reps`` times, interleaved, after ``warmup`` calls each.

    One repetition of a contender is ``inner`` back-to-back calls (dispatched
    asynchronously, as a training loop would) followed by one
    ``block_until_ready``; the sample is the elapsed time divided by ``inner``.
    Contenders that carry state (donated buffers) keep it in their closure.
    """
    for fn in contenders.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for rep in range(reps):
        # A B, B A, A B, ...: no contender always runs right after the other.
        for name in names if rep % 2 == 0 else names[::-1]:
            fn = contenders[name]
            t0 = time.perf_counter()
            out = None
            for _ in range(inner):
                out = fn()
            jax.block_until_ready(out)
            samples[name].append((time.perf_counter() - t0) / inner)
    return {name: Timing.of(s) for name, s in samples.items()}


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (zeros where unavailable)."""
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def ratio_quartiles(a: Timing, b: Timing) -> tuple[float, float]:
    """First and third quartiles of the per-repetition ratios ``a_i / b_i``."""
    pairs = sorted(x / y for x, y in zip(a.samples, b.samples, strict=True))
    q = statistics.quantiles(pairs, n=4, method="inclusive") if len(pairs) > 1 else pairs * 3
    return q[0], q[2]


def within_noise(a: Timing, b: Timing) -> bool:
    """Whether ``a`` and ``b`` are indistinguishable in this run: the middle
    half of the per-repetition ratios straddles 1 (a difference that shows in
    most back-to-back pairs is not noise, however wide the ranges are)."""
    lo, hi = ratio_quartiles(a, b)
    return lo <= 1.0 <= hi
