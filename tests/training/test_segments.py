"""A run cut into compiled segments computes what the one-shot program
computes, bit for bit, with jaxopt_core's and optax's optimizers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import DATA, PARAMS, X, Y, count_compiles, mse

import jaxopt_core as jc
from jaxopt_core.training.segments import run_segments, segment_plan

GRID = {"learning_rate": np.array([0.01, 0.1, 1e30], np.float32), "seed": np.array([0, 1, 2])}
EVAL = {"eval_fn": mse, "eval_data": (X[:8], Y[:8]), "eval_every": 7}


def assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
@pytest.mark.parametrize(
    "opt, kw",
    [
        pytest.param(optax.sgd(0.05, momentum=0.9), {}, id="optax"),
        pytest.param(jc.adam(0.1), {"batch_size": 8, **EVAL}, id="jc.adam-eval",
                     marks=pytest.mark.slow),
        pytest.param(jc.sgd(40.0), {"batch_size": 8, **EVAL}, id="diverging",
                     marks=pytest.mark.slow),
    ],
)
def test_fit_segments_equal_one_program(opt, kw):
    whole = jc.fit(mse, PARAMS, opt, DATA, steps=23, **kw)
    cut = jc.fit(mse, PARAMS, opt, DATA, steps=23, segment_steps=5, **kw)
    assert_same(whole, cut)


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer_fn, kw",
    [
        pytest.param(functools.partial(optax.sgd, momentum=0.9),
                     {"batch_size": 8, "keep_best": True, "chunk_size": 2, **EVAL},
                     id="optax-minibatch-eval-chunks", marks=pytest.mark.slow),
        pytest.param(jc.adam, {}, id="jc-full"),
    ],
)
def test_sweep_segments_equal_one_program(optimizer_fn, kw):
    whole = jc.sweep(mse, PARAMS, optimizer_fn, DATA, grid=GRID, steps=23, **kw)
    cut = jc.sweep(mse, PARAMS, optimizer_fn, DATA, grid=GRID, steps=23, segment_steps=5, **kw)
    assert whole.diverged.tolist() == [False, False, True]
    assert whole.best_index == cut.best_index
    assert_same(whole._replace(best_index=None), cut._replace(best_index=None))


@pytest.mark.slow
def test_segments_compile_once_per_length():
    opt = jc.adam(0.05)
    jc.fit(mse, PARAMS, opt, DATA, steps=13, segment_steps=4)  # lengths 4 and 1
    with count_compiles() as seen:
        res = jc.fit(mse, {"w": jnp.ones(3), "b": jnp.zeros(())}, opt, DATA, steps=13,
                     segment_steps=4)
    assert seen == [] and res.losses.shape == (13,)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "4"])
def test_bad_segment_steps_is_named(bad):
    with pytest.raises(ValueError, match=r"segment_steps must be an int >= 1; got segment_steps="):
        jc.fit(mse, PARAMS, jc.sgd(0.1), DATA, steps=5, segment_steps=bad)
    with pytest.raises(ValueError, match=r"segment_steps="):
        jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": [0.1]}, steps=5,
                 segment_steps=bad)


def test_run_segments_calls_after_with_losses_so_far():
    seen = []

    def run_one(state, t0, n):
        return state + n, jnp.arange(t0, t0 + n, dtype=jnp.float32)

    state, losses = run_segments(0, segment_plan(7, 3), run_one,
                                 after=lambda s, t, l: seen.append((s, t, l.shape[-1])))
    assert state == 7 and losses.tolist() == list(range(7))
    assert seen == [(3, 3, 3), (6, 6, 6), (7, 7, 7)]
    # A resumed run continues from the earlier losses, cut where the first run cut.
    state, losses = run_segments(3, segment_plan(7, 3, start=3), run_one, losses=losses[:3])
    assert state == 7 and losses.tolist() == list(range(7))
