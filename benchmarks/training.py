"""(b) A full training step (gradient + update) on a model with many leaves.

Method: a training run of ``steps`` full-batch steps compiled as one
``lax.scan`` and timed end to end, divided by ``steps``. Three contenders per
optimizer, all interleaved together, each compiled once before timing:

* ``jc.fit`` with its default layout: the params and the optimizer state live
  in one flat buffer per dtype inside the scan (the loss still sees the tree);
* ``jc.fit(layout="tree")``: the same loop on the user's tree, which isolates
  the effect of the layout from the effect of the library;
* optax on the tree: the same scan written the usual way (``optimizer.init``
  then ``value_and_grad``, ``update``, ``apply_updates`` in the body), jitted.

All three start from ``optimizer.init`` inside the compiled program and return
params, optimizer state and per-step losses, so they do the same work; the
once-per-run costs (packing the params into the flat buffer and back, the
initial state) are spread over ``steps`` steps.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import optax

import jaxopt_core as jc
from benchmarks.problems import Problem
from benchmarks.timing import Timing, compile_seconds, interleaved

CONTENDERS = ("jc fit (flat)", "jc fit (tree)", "optax (tree)")


class TrainResult(NamedTuple):
    problem: str
    leaves: int
    params: int
    optimizer: str
    steps: int
    per_step: dict[str, Timing]  # contender -> seconds per step
    compile_s: dict[str, float]  # contender -> seconds tracing + lowering + compiling


def optax_scan(loss_fn, optimizer, steps: int):
    """The optax baseline: ``steps`` full-batch steps in one jitted scan."""

    @jax.jit
    def run(params, data):
        def body(carry, _):
            p, s = carry
            loss, grads = jax.value_and_grad(loss_fn)(p, data)
            updates, s = optimizer.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (p, s), losses = jax.lax.scan(body, (params, optimizer.init(params)), None, length=steps)
        return p, s, losses

    return run


def bench_training(problem: Problem, optimizers: tuple[str, ...], steps: int,
                   reps: int) -> list[TrainResult]:
    """The three contenders for each optimizer, all timed in one interleaved
    group, so the optimizers' per-step times can be compared with each other."""
    p, data = problem.params, problem.data
    contenders = {}
    for name in optimizers:
        ours, theirs = getattr(jc, name)(1e-3), getattr(optax, name)(1e-3)
        baseline = optax_scan(problem.loss, theirs, steps)

        def fit(layout, ours=ours):
            return lambda: jc.fit(problem.loss, p, ours, data, steps=steps, layout=layout)

        runs = (fit("auto"), fit("tree"), lambda b=baseline: b(p, data))
        contenders.update({(name, c): fn for c, fn in zip(CONTENDERS, runs, strict=True)})
    first = {key: compile_seconds(fn)[0] for key, fn in contenders.items()}
    timings = interleaved(contenders, reps=reps, inner=1, warmup=0)
    return [
        TrainResult(problem.name, problem.n_leaves, problem.n_params, name, steps,
                    {c: timings[name, c].scaled(1 / steps) for c in CONTENDERS},
                    {c: first[name, c] for c in CONTENDERS})
        for name in optimizers
    ]
