"""A whole run that takes its evaluations between blocks of steps
(``evaluation.eval_block``: a scan over blocks of gcd(eval_every, steps)
steps) gives the same results, bit for bit, as the plain path that asks
"evaluate now?" after every step, for ``sweep`` and ``fit``, with
jaxopt_core's and optax's optimizers, diverging members, the best params,
thinned losses and member chunks."""

import chex
import jax
import numpy as np
import optax
import pytest
from conftest import DATA, PARAMS, X, Y, mse

import jaxopt_core as jc
from jaxopt_core.training import evaluation, fit_program, program
from jaxopt_core.training.thinning import blocked_scan

# From stable to runaway (Adam's steps are about the learning rate in size,
# so its runaway rates are huge); with SGD members diverge at different steps.
GRIDS = {"sgd": {"learning_rate": np.array([0.01, 0.1, 0.6, 2.0, 30.0, 1e4])},
         "adam": {"learning_rate": np.array([0.01, 0.1, 0.5, 1e18, 1e25, 1e37])}}
EVAL = {"eval_fn": mse, "eval_data": (X[:8], Y[:8])}
CASES = {  # (steps, options): block = gcd(eval_every, steps)
    "every 4 of 24 (block 4), best": (24, {"eval_every": 4, "keep_best": True}),
    "every 10 of 24 (block 2)": (24, {"eval_every": 10}),
    "every 6 of 24, log_every 5": (24, {"eval_every": 6, "log_every": 5}),
    "every 4 of 24, chunks": (24, {"eval_every": 4, "chunk_size": 4, "keep_best": True}),
}


def _fields(res):
    return {name: "<none>" if value is None else value
            for name, value in zip(res._fields, res, strict=True)}


def _spy(monkeypatch, blocked):
    """Take the blocked path or not; returns the blocks the programs used."""
    used = []

    def decide(plan, steps):
        used.append(evaluation.eval_block(plan, steps) if blocked else None)
        return used[-1]

    for module in (program, fit_program):
        monkeypatch.setattr(module, "eval_block", decide)
    jax.clear_caches()  # trace again: the choice is made while tracing
    return used


def _sweep(monkeypatch, opt_fn, blocked, steps, kw):
    used = _spy(monkeypatch, blocked)
    grid = GRIDS["sgd" if opt_fn is optax.sgd else "adam"]
    res = jc.sweep(mse, PARAMS, opt_fn, DATA, grid=grid, steps=steps, batch_size=8,
                   **EVAL, **kw)
    return jax.device_get(res), used


OPTIMIZERS = {"jc.adam": jc.adam, "optax.adam": optax.adam, "optax.sgd": optax.sgd}
FIRST = next(iter(CASES))
# The first case with every optimizer, the others with optax's Adam; one
# representative in the fast tier.
COMBINATIONS = [(name, FIRST) for name in OPTIMIZERS] + [("optax.adam", c) for c in CASES
                                                         if c != FIRST]


@pytest.mark.parametrize("name, case", [
    pytest.param(name, case, id=f"{name}-{case}",
                 marks=() if (name, case) == ("optax.adam", FIRST) else pytest.mark.slow)
    for name, case in COMBINATIONS
])
def test_sweep_blocks_equal_the_per_step_check(monkeypatch, name, case):
    opt_fn = OPTIMIZERS[name]
    steps, kw = CASES[case]
    plain, not_used = _sweep(monkeypatch, opt_fn, False, steps, kw)
    blocked, used = _sweep(monkeypatch, opt_fn, True, steps, kw)
    block = np.gcd(kw["eval_every"], steps)
    assert set(not_used) == {None} and block in used  # each path was the one taken
    assert 0 < plain.diverged.sum() < len(plain.diverged)
    if opt_fn is optax.sgd:  # Adam's runaway members all die at once
        assert len(set(plain.diverged_at[plain.diverged].tolist())) > 1
    assert np.isfinite(plain.evals["eval"]).any() and np.isnan(plain.evals["eval"]).any()
    chex.assert_trees_all_equal(_fields(blocked), _fields(plain))


def test_fit_blocks_equal_the_per_step_check(monkeypatch):
    def run(blocked):
        used = _spy(monkeypatch, blocked)
        res = jc.fit(mse, PARAMS, optax.adam(0.05), DATA, steps=30, batch_size=8,
                     eval_every=6, log_every=4, **EVAL)
        return jax.device_get(res), used

    (plain, not_used), (blocked, used) = run(False), run(True)
    assert set(not_used) == {None} and 6 in used
    assert len(plain.evals["eval"]) == 5
    chex.assert_trees_all_equal(_fields(blocked), _fields(plain))


@pytest.mark.slow
def test_a_segment_keeps_the_per_step_check(monkeypatch):
    # A segment's first step is data: its evaluation steps are not known when
    # tracing, so it never asks; chained, the segments equal the blocked run.
    steps, kw = CASES[FIRST]
    whole, _ = _sweep(monkeypatch, jc.adam, True, steps, kw)
    segmented, used = _sweep(monkeypatch, jc.adam, True, steps, {**kw, "segment_steps": 12})
    assert used == []
    chex.assert_trees_all_equal(_fields(segmented), _fields(whole))


@pytest.mark.parametrize("every, steps, block", [
    (4, 24, 4), (10, 24, 2), (6, 20, 2), (7, 100, None), (24, 24, None), (30, 24, None),
    (0, 24, None),
])
def test_eval_block_is_the_gcd_when_it_pays(every, steps, block):
    plan = evaluation.EvalPlan(mse, every, steps, ("eval",), ("float32",), True)
    assert evaluation.eval_block(plan, steps) == block
    assert evaluation.eval_block(None, steps) is None
    assert evaluation.eval_block(plan, steps - 1) is None  # not the whole run


def test_blocked_scan_is_the_scan_with_breaks():
    def body(c, x):
        return c * 2 + x, (c, x)

    xs = np.arange(12.0)
    for block in (1, 3, 4, 12):
        c, ys = blocked_scan(body, 1.0, xs, block, lambda c, j: c - j)
        # The same by hand: subtract j after every block j.
        ref, ref_ys = 1.0, []
        for t, x in enumerate(xs):
            ref_ys.append((ref, x))
            ref = ref * 2 + x
            if (t + 1) % block == 0:
                ref -= (t + 1) // block - 1
        assert float(c) == ref
        np.testing.assert_array_equal(np.asarray(ys[0]), [r for r, _ in ref_ys])
    with pytest.raises(ValueError, match="block=5 must divide"):
        blocked_scan(body, 1.0, xs, 5, lambda c, j: c)
