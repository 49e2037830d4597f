"""(c) Learning-rate sweeps of K members: ``jc.sweep`` against the optax idiom
and against a Python loop, with compile time and peak memory (d) against K.

The members train Adam with K learning rates log-spaced over [1e-4, 1e-1],
all from the same initial params, on the same data and minibatch order.

* ``jc.sweep(loss, params, jc.adam, data, grid={"learning_rate": lrs}, ...)``
  as a user calls it (it also tracks divergence and picks the best member).
* optax, written the idiomatic way: ``optax.inject_hyperparams(optax.adam)``
  so the learning rate is state, set per member in a ``jax.vmap``-ed init;
  then one ``lax.scan`` over steps of a ``jax.vmap``-ed step over members,
  the batch shared by all members, its order drawn before the loop once per
  epoch into a ``[steps, B]`` index table (no ``cond`` in the loop: the best
  hand-written form, see ``benchmarks.sweep_speed``); jitted, and compiled ahead of time with
  ``.lower(...).compile()`` (which also gives XLA's memory accounting).
* a Python loop over members, each running a Python loop over steps of one
  jitted step that takes the learning rate as an argument (compiled once for
  all members; params and state donated). Its cost does not depend on K, so
  it is timed on a few members and multiplied by K.

All contenders draw minibatches in ``jc.fit``'s order: a fresh
permutation per epoch from ``fold_in(key, epoch)``, cut into ``n // B``
batches. Compile time is what JAX reports (``jax.monitoring``) for tracing,
lowering and compiling during ``jc.sweep``'s first call (its program compiles
on first use, helpers included) and during the optax baseline's
``lower(...).compile()``; each is the minimum over two fresh compiles
(``jax.clear_caches()`` in between), after a throwaway sweep has paid the
once-per-process costs, so K=1 is not charged for them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxopt_core as jc
from benchmarks import memory
from benchmarks.problems import Problem, learning_rates
from benchmarks.sweep_speed import epoch_orders
from benchmarks.timing import Timing, compile_seconds, interleaved, run_once


class SweepPoint(NamedTuple):
    """One problem at one K: seconds per sweep, compile seconds, memory."""

    problem: str
    k: int
    steps: int
    ours: Timing
    theirs: Timing
    loop: float  # K x seconds per member of the Python loop
    loop_measured: int  # members actually timed for the loop figure
    compile_ours: float
    compile_theirs: float
    memory: memory.MemoryPoint  # ours_xla is filled in by memory.jc_sweep_peaks
    ours_flat: Timing | None = None  # jc.sweep(layout="flat"), at the attribution K only


def _minibatcher(data, batch_size: int | None, key):
    """``(initial perm, batch_at(perm, t) -> (perm, batch))``, jc.fit's order."""
    if batch_size is None:
        return jnp.zeros([0], jnp.int32), lambda perm, t: (perm, data)
    n = jax.tree.leaves(data)[0].shape[0]
    per_epoch = n // batch_size

    def batch_at(perm, t):
        def draw():
            return jax.random.permutation(jax.random.fold_in(key, t // per_epoch), n).astype(
                jnp.int32
            )

        perm = jax.lax.cond(t % per_epoch == 0, draw, lambda: perm)
        idx = jax.lax.dynamic_slice_in_dim(perm, (t % per_epoch) * batch_size, batch_size)
        return perm, jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)

    return jnp.zeros([n], jnp.int32), batch_at


def optax_sweep_program(problem: Problem, steps: int):
    """The optax baseline as a function to jit: ``run(params, data, lrs, key)
    -> (params [K, ...], losses [K, steps])``."""
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)

    def run(params, data, lrs, key):
        def init(lr):
            state = opt.init(params)
            state.hyperparams["learning_rate"] = lr
            return params, state

        p, s = jax.vmap(init)(lrs)
        n = jax.tree.leaves(data)[0].shape[0]
        # The run's order drawn up front, once per epoch: no cond in the loop.
        orders = epoch_orders(key, n, problem.batch_size, steps)

        def member(p, s, batch):
            loss, grads = jax.value_and_grad(problem.loss)(p, batch)
            updates, s = opt.update(grads, s, p)
            return optax.apply_updates(p, updates), s, loss

        def body(carry, idx):
            p, s = carry
            batch = data if idx.shape[0] == 0 else jax.tree.map(
                lambda x: jnp.take(x, idx, axis=0), data)
            p, s, loss = jax.vmap(member, in_axes=(0, 0, None))(p, s, batch)
            return (p, s), loss

        (p, _), losses = jax.lax.scan(body, (p, s), orders)
        return p, losses.T

    return run


class PythonLoop:
    """Members one after another, steps one after another, one jitted step."""

    def __init__(self, problem: Problem, steps: int, key):
        self.problem, self.steps = problem, steps
        perm0, batch_at = _minibatcher(problem.data, problem.batch_size, key)

        def step(p, s, lr, perm, t):
            perm, batch = batch_at(perm, t)
            loss, grads = jax.value_and_grad(problem.loss)(p, batch)
            updates, s = jc.adam(lr).update(grads, s, p)
            return jc.apply_updates(p, updates), s, perm, loss

        self.perm0 = perm0
        self.step = jax.jit(step, donate_argnums=(0, 1, 3))

    def member(self, lr: float) -> tuple[Any, jax.Array]:
        lr = jnp.float32(lr)
        p = jax.tree.map(jnp.copy, self.problem.params)
        s, perm = jc.adam(lr).init(p), jnp.copy(self.perm0)
        losses = []
        for t in range(self.steps):
            p, s, perm, loss = self.step(p, s, lr, perm, jnp.int32(t))
            losses.append(loss)
        return p, jnp.stack(losses)

    def seconds_per_member(self, members: int) -> float:
        """Median seconds per member over ``members`` timed members, after one warm-up."""
        run_once(lambda: self.member(1e-3))
        lrs = learning_rates(members)
        return float(np.median([run_once(lambda lr=lr: self.member(lr)) for lr in lrs]))


def _jc_sweep(problem: Problem, lrs: np.ndarray, steps: int, key, layout: str = "auto"):
    def go():
        res = jc.sweep(problem.loss, problem.params, jc.adam, problem.data,
                       grid={"learning_rate": lrs}, steps=steps,
                       batch_size=problem.batch_size, key=key, layout=layout)
        return res.params, res.losses

    return go


def _compile_times(ours, program, args, trials: int) -> tuple[float, float, Any]:
    """Compile seconds of ``jc.sweep``'s first call and of the optax program
    for ``args`` (each the minimum over ``trials`` fresh compiles, interleaved;
    ``jax.clear_caches`` makes ``jc.sweep`` compile again); and the last
    compiled optax program."""
    ours_s, theirs_s, compiled = [], [], None
    for _ in range(trials):
        jax.clear_caches()
        ours_s.append(compile_seconds(ours)[0])
        seconds, compiled = compile_seconds(lambda: program.lower(*args).compile())
        theirs_s.append(seconds)
    return min(ours_s), min(theirs_s), compiled


def bench_sweeps(problem: Problem, ks: tuple[int, ...], steps: int, reps: int,
                 loop_members: int, compile_trials: int = 2,
                 attribution_k: int | None = None) -> list[SweepPoint]:
    """Every K of ``ks``; at ``attribution_k`` also ``jc.sweep(layout="flat")``
    (the default keeps these few-leaf models on the tree), which shows what
    the flat layout would cost or save."""
    key = jax.random.key(0)
    per_member = PythonLoop(problem, steps, key).seconds_per_member(loop_members)
    program = jax.jit(optax_sweep_program(problem, steps))
    # Absorb once-per-process costs (first use of sharding, PRNG, ...) before
    # any compile is timed, so that K=1 is not charged for them.
    warm = learning_rates(2)
    run_once(_jc_sweep(problem, warm, steps, key))
    program.lower(problem.params, problem.data, jnp.asarray(warm), key).compile()
    state = jc.adam(1e-3).init(problem.params)
    points = []
    for k in ks:
        lrs = learning_rates(k)
        ours = _jc_sweep(problem, lrs, steps, key)
        args = (problem.params, problem.data, jnp.asarray(lrs), key)
        compile_ours, compile_theirs, compiled = _compile_times(ours, program, args,
                                                                compile_trials)
        contenders = {"ours": ours, "theirs": lambda c=compiled, a=args: c(*a)}
        if k == attribution_k:
            contenders["flat"] = _jc_sweep(problem, lrs, steps, key, layout="flat")
        t = interleaved(contenders, reps=reps, warmup=1)
        theory = memory.theoretical(k, problem.params, state, problem.data)
        mem = memory.MemoryPoint(k, theory, None, memory.xla_peak(compiled))
        points.append(SweepPoint(
            problem.name, k, steps, t["ours"], t["theirs"], k * per_member,
            min(k, loop_members), compile_ours, compile_theirs, mem,
            t.get("flat"),
        ))
        del compiled
    return points
