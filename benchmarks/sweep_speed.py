"""(e) Sweeps against the best hand-written baseline and against the machine (issue 14).

Three programs train the same K Adam members (learning rates log-spaced over
[1e-4, 1e-1]) from the same params, on the same minibatch order, and evaluate
the same ``eval_fn`` (the loss on the whole data set) after every tenth of
the run:

* ``jc.sweep(..., eval_fn=eval_fn, eval_every=steps // 10)`` as a user calls
  it, divergence isolation on (it always is);
* the best hand-written optax sweep we could write:
  ``optax.inject_hyperparams(optax.adam)`` with the learning rate set per
  member in a ``vmap``-ed ``init``; the minibatch order of the whole run is
  drawn before the loop, once per epoch (``permutation(fold_in(key,
  epoch))``, jc.fit's order) and cut into a ``[steps, B]`` index table, so
  the loop has no ``cond`` and one gather per step; the loop is a ``lax.scan``
  over the ten tenths of the run, each a ``lax.scan`` over its steps of a
  ``vmap``-ed step (the batch shared by all members), followed by the
  ``vmap``-ed ``eval_fn``; jitted and compiled ahead of time. No divergence
  tracking;
* the same hand-written sweep with divergence isolation written by hand
  (``optax+isolation``), jc.sweep's semantics without its code: per member,
  ``ok = alive & isfinite(loss) & all(isfinite(new params)) &
  all(isfinite(new state))``, the new params kept only where ``ok`` (the
  state runs on, unread), NaN losses and evaluations once frozen. It says
  what isolation itself costs, apart from the rest of jc.sweep;
* the same hand-written sweep with plain SGD (``sgd floor``): the
  gradient, one scaled add and the same evaluations, the least any sweep of
  this model that evaluates the same can do per step; its GFLOP/s say how
  far the model's own gradient gets towards the matmul peak under XLA;
* ``jc.sweep(..., eval_chunk_size=64)`` (``BLOCKED``): the same call with
  the evaluations run over blocks of 64 members, an option of ``jc.sweep``
  (evaluations equal to the default's up to float32 rounding, about 1 ulp;
  training the same bit for bit);
* for the MLP, a dense-batched formulation written by hand: the members'
  params stacked in a layout where the first layer of all K members is one
  ``[d, K * h]`` matrix, so the first layer of every member is one matmul
  ``[B, d] x [d, K * h]`` over the shared batch, the second a batched matmul;
  one gradient of the sum of the members' losses (the members are
  independent, so it is each member's gradient), then ``optax.scale_by_adam``
  on the stacked tree and each member's ``-learning_rate`` (Adam exactly as
  ``optax.adam``). The same order and evaluations.

Achieved GFLOP/s are counted from the model's shapes: ``2 m n k`` per
matmul, forward + backward = 3 x forward per training example, plus the
forward pass of each evaluation; the elementwise work (tanh, softmax, Adam)
is not counted. The peak is a dense float32 ``[N, N] x [N, N]`` matmul timed
in the same run (best of a few). Timings interleave the contenders
(``benchmarks.timing``) and ratios are medians of paired ratios.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxopt_core as jc
from benchmarks.problems import Problem, learning_rates
from benchmarks.timing import Timing, interleaved, run_once

ISOLATED = "optax+isolation"  # the baseline with divergence isolation written by hand
FLOOR = "sgd floor"  # the baseline with plain SGD: gradient, one scaled add, evaluations
BLOCKED = "jc.sweep eval_chunk_size=64"  # jc.sweep, evaluations over blocks of 64 members


class SpeedPoint(NamedTuple):
    """One problem at one K: seconds of each contender and the FLOPs of a sweep."""

    problem: str
    k: int
    steps: int
    times: dict[str, Timing]  # "jc.sweep", "optax", ISOLATED, FLOOR, "dense" for the MLP
    gflop: float  # per sweep, counted from the shapes
    gaps: dict[str, float]  # max |final loss - optax's| over the members (a sanity check)


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of a dense float32 ``[n, n] x [n, n]`` matmul, best of ``reps``."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    run_once(lambda: mm(a))
    return 2 * n**3 / min(run_once(lambda: mm(a)) for _ in range(reps)) / 1e9


def forward_flops(problem: Problem, examples: int) -> float:
    """Matmul FLOPs of the forward pass over ``examples`` examples (2 m n k each)."""
    p = problem.params
    weights = ("w1", "w2") if "w1" in p else ("w",)
    return 2.0 * examples * sum(p[w].size for w in weights)


def sweep_gflop(problem: Problem, k: int, steps: int, n_evals: int) -> float:
    n = problem.data[0].shape[0]
    batch = problem.batch_size or n
    return k * (3 * steps * forward_flops(problem, batch)
                + n_evals * forward_flops(problem, n)) / 1e9


def epoch_orders(key, n: int, batch_size: int | None, steps: int) -> jax.Array:
    """``[steps, B]`` example indices in jc.fit's order (full batch: ``[steps, 0]``)."""
    if batch_size is None:
        return jnp.zeros([steps, 0], jnp.int32)
    per_epoch = n // batch_size
    epochs = -(-steps // per_epoch)
    perms = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key, e), n))(
        jnp.arange(epochs))
    used = perms[:, :per_epoch * batch_size].astype(jnp.int32)
    return used.reshape(epochs * per_epoch, batch_size)[:steps]


def _take(data, idx):
    return data if idx.shape[0] == 0 else jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)


def _tenths(step, evaluate, carry, orders, data):
    """Ten ``lax.scan``s of ``step`` over the run's orders, ``evaluate`` after
    each: ``(carry, losses [steps, ...], evals [10, ...])``."""
    per = orders.shape[0] // 10

    def block(c, idx_block):
        c, losses = jax.lax.scan(lambda c, idx: step(c, _take(data, idx)), c, idx_block)
        return c, (losses, evaluate(c))

    carry, (losses, evals) = jax.lax.scan(block, carry, orders.reshape(10, per, -1))
    return carry, losses.reshape(10 * per, *losses.shape[2:]), evals


def optax_program(problem: Problem, steps: int, isolate: bool = False,
                  optimizer=optax.adam):
    """The hand-written baseline: ``run(params, data, lrs, key) -> (params,
    losses [K, steps], evals [K, 10])``.

    ``isolate=True`` adds divergence isolation written by hand, the same
    semantics as ``jc.sweep``'s: a member whose loss, new params or new
    optimizer state holds a non-finite value keeps its last finite params
    (its state runs on, unread), records NaN losses from then on and counts
    as diverged; evaluations of a frozen member are NaN. ``optimizer``: an
    optax alias taking ``learning_rate`` (``optax.sgd`` gives the floor)."""
    opt = optax.inject_hyperparams(optimizer)(learning_rate=1e-3)
    n = problem.data[0].shape[0]

    def finite(tree):
        return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
                                  if jnp.issubdtype(x.dtype, jnp.inexact)]))

    def run(params, data, lrs, key):
        def init(lr):
            state = opt.init(params)
            state.hyperparams["learning_rate"] = lr
            return params, state, jnp.array(True)

        def member(ps, batch):
            p, s, alive = ps
            loss, grads = jax.value_and_grad(problem.loss)(p, batch)
            updates, s = opt.update(grads, s, p)
            new_p = optax.apply_updates(p, updates)
            if not isolate:
                return (new_p, s, alive), loss
            ok = alive & jnp.isfinite(loss) & finite(new_p) & finite(s)
            new_p = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_p, p)
            return (new_p, s, ok), jnp.where(alive, loss, jnp.nan)

        step = jax.vmap(member, in_axes=(0, None))
        if isolate:
            evaluate = jax.vmap(lambda ps: jnp.where(ps[2], problem.loss(ps[0], data), jnp.nan))
        else:
            evaluate = jax.vmap(lambda ps: problem.loss(ps[0], data))
        orders = epoch_orders(key, n, problem.batch_size, steps)
        (p, _, _), losses, evals = _tenths(step, evaluate, jax.vmap(init)(lrs), orders, data)
        return p, losses.T, evals.T

    return run


def _dense_losses(P, batch):
    """``[K]`` cross-entropies of the stacked MLP, first layer one matmul."""
    x, y = batch
    d, k, h = P["w1"].shape
    z = (x @ P["w1"].reshape(d, k * h)).reshape(x.shape[0], k, h) + P["b1"]
    logits = jnp.einsum("bkh,khc->kbc", jnp.tanh(z), P["w2"]) + P["b2"][:, None, :]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, jnp.broadcast_to(y[None, :, None],
                                                                (k, y.shape[0], 1)), 2), (1, 2))


def dense_program(problem: Problem, steps: int):
    """The dense-batched MLP: ``run(params, data, lrs, key) -> (params
    (dense layout), losses [K, steps], evals [K, 10])``."""
    adam = optax.scale_by_adam()
    n = problem.data[0].shape[0]

    def run(params, data, lrs, key):
        k = lrs.shape[0]
        P = {"w1": jnp.broadcast_to(params["w1"][:, None], (params["w1"].shape[0], k,
                                                              params["w1"].shape[1])),
             **{n_: jnp.broadcast_to(params[n_], (k, *params[n_].shape))
                for n_ in ("b1", "w2", "b2")}}
        scale = {"w1": -lrs[None, :, None], "b1": -lrs[:, None], "w2": -lrs[:, None, None],
                 "b2": -lrs[:, None]}

        def step(c, batch):
            P, s = c
            (_, losses), g = jax.value_and_grad(
                lambda P: (jnp.sum(l := _dense_losses(P, batch)), l), has_aux=True)(P)
            u, s = adam.update(g, s, P)
            return (jax.tree.map(lambda p, u, c: p + c * u, P, u, scale), s), losses

        evaluate = lambda c: _dense_losses(c[0], data)  # noqa: E731
        orders = epoch_orders(key, n, problem.batch_size, steps)
        (P, _), losses, evals = _tenths(step, evaluate, (P, adam.init(P)), orders, data)
        return P, losses.T, evals.T

    return run


def _jc(problem: Problem, lrs, steps: int, key, **options):
    def go():
        res = jc.sweep(problem.loss, problem.params, jc.adam, problem.data,
                       grid={"learning_rate": lrs}, steps=steps, batch_size=problem.batch_size,
                       key=key, eval_fn=problem.loss, eval_data=problem.data,
                       eval_every=steps // 10, **options)
        return res.params, res.losses, res.evals

    return go


def bench_speed(problem: Problem, ks: tuple[int, ...], steps: int, reps: int) -> list[SpeedPoint]:
    """Every K of ``ks``: jc.sweep, the optax baseline (and the dense MLP), interleaved."""
    if steps % 10:
        raise ValueError(f"steps must be a multiple of 10 (evaluations every tenth); got {steps}")
    key, points = jax.random.key(0), []
    programs = {"optax": jax.jit(optax_program(problem, steps)),
                ISOLATED: jax.jit(optax_program(problem, steps, isolate=True)),
                FLOOR: jax.jit(optax_program(problem, steps, optimizer=optax.sgd))}
    if "w1" in problem.params:
        programs["dense"] = jax.jit(dense_program(problem, steps))
    for k in ks:
        lrs = learning_rates(k)
        args = (problem.params, problem.data, jnp.asarray(lrs), key)
        compiled = {name: prog.lower(*args).compile() for name, prog in programs.items()}
        contenders = {"jc.sweep": _jc(problem, lrs, steps, key),
                      BLOCKED: _jc(problem, lrs, steps, key, eval_chunk_size=64),
                      **{name: (lambda c=c, a=args: c(*a)) for name, c in compiled.items()}}
        times = interleaved(contenders, reps=reps, warmup=1)
        final = {name: np.asarray(run()[1])[:, -1] for name, run in contenders.items()}
        gaps = {name: float(np.nanmax(np.abs(f - final["optax"])))
                for name, f in final.items() if name not in ("optax", FLOOR)}
        points.append(SpeedPoint(problem.name, k, steps, times,
                                 sweep_gflop(problem, k, steps, 10), gaps))
    return points


def markdown(points: dict[str, list[SpeedPoint]], peak: float) -> list[str]:
    """The section of the report: seconds, ratios and GFLOP/s against the peak."""
    from benchmarks.timing import ratio, ratio_quartiles

    lines = ["## (e) Sweeps against the best hand-written baseline and the machine", "",
             f"Dense float32 matmul peak measured in this run: **{peak:.0f} GFLOP/s**. "
             "Every contender evaluates the loss on the whole data set after every tenth of "
             "the run; `jc.sweep` and `optax+isolation` (the baseline with divergence "
             "isolation written by hand) track divergence; `sgd floor` is the hand-written "
             "sweep with plain SGD (the gradient, one scaled add, the same evaluations), the "
             "least such a sweep can do. `jc.sweep eval_chunk_size=64` is `jc.sweep` "
             "evaluating 64 members at a time (an option; evaluations equal up to "
             "float32 rounding, about 1 ulp). GFLOP/s count the matmuls only (see "
             "`benchmarks/sweep_speed.py`). The last column is the largest difference of the "
             "members' last training loss from the optax baseline's (same order, same "
             "maths: rounding only; not for the floor, which trains otherwise).", ""]
    for problem, pts in points.items():
        names = list(pts[0].times)
        header = ["K", *(f"{n} s" for n in names), "optax / jc (quartiles)",
                  f"{ISOLATED} / jc (quartiles)", "optax / jc with eval_chunk_size=64",
                  *(f"{n} GFLOP/s (% peak)" for n in names), "final loss gap"]
        rows = []
        for p in pts:
            rate = {n: p.gflop / t.median for n, t in p.times.items()}
            against = []
            for base in ("optax", ISOLATED):
                q1, q3 = ratio_quartiles(p.times[base], p.times["jc.sweep"])
                against.append(f"{ratio(p.times[base], p.times['jc.sweep']):.2f}x "
                               f"({q1:.2f}-{q3:.2f})")
            q1, q3 = ratio_quartiles(p.times["optax"], p.times[BLOCKED])
            against.append(f"{ratio(p.times['optax'], p.times[BLOCKED]):.2f}x "
                           f"({q1:.2f}-{q3:.2f})")
            rows.append([p.k, *(f"{p.times[n].median:.3f}" for n in names), *against,
                         *(f"{rate[n]:.1f} ({100 * rate[n] / peak:.0f}%)" for n in names),
                         ", ".join(f"{n} {g:.1e}" for n, g in p.gaps.items())])
        lines += [f"### {problem}, {pts[0].steps} steps", "",
                  "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
                  *("| " + " | ".join(str(c) for c in r) + " |" for r in rows), ""]
    return lines

