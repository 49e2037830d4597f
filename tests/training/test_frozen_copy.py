"""A sweep that keeps diverged members' params in a copy (the CPU fast path,
``divergence.frozen_copy_pays``) gives the same results, bit for bit, as the
plain path that freezes them in place, with jaxopt_core's and optax's
optimizers, members diverging at different steps, and every feature that
reads the params: evaluations and the best params, thinned losses,
segments, chunks, successive halving and a stopped run's partial result."""

import chex
import jax
import numpy as np
import optax
import pytest
from conftest import ARMED_CTRL_C, DATA, PARAMS, X, Y, ctrl_c_point, mse

import jaxopt_core as jc
from jaxopt_core.training import divergence
from jaxopt_core.training import sweep as sweep_module

# Learning rates from stable to runaway: members diverge at different steps.
GRID = {"learning_rate": np.array([0.01, 0.1, 0.6, 2.0, 30.0, 1e4])}
CASES = {
    "plain": {},
    "eval_best": {"eval_fn": mse, "eval_data": (X[:8], Y[:8]), "eval_every": 4,
                  "keep_best": True},
    "log_every": {"log_every": 3},
    "segments": {"segment_steps": 6},
    "chunks": {"chunk_size": 4},
    "halving": {"search": jc.successive_halving(eta=2), "eval_fn": mse,
                "eval_data": (X[:8], Y[:8])},
}


def _run(monkeypatch, opt_fn, copy, **kw):
    seen = []

    def decide(*args, **kwargs):
        seen.append(divergence.frozen_copy_pays(*args, **kwargs) if copy else False)
        return seen[-1]

    monkeypatch.setattr(sweep_module, "frozen_copy_pays", decide)
    res = jc.sweep(kw.pop("loss", mse), PARAMS, opt_fn, DATA, grid=GRID, steps=24,
                   batch_size=8, **kw)
    assert seen == [copy]  # the path under test was the one taken
    return jax.device_get(res)


def _fields(res):
    """Every field of the result (a NamedTuple), None fields as a marker."""
    return {name: "<none>" if value is None else value
            for name, value in zip(res._fields, res, strict=True)}


# One representative in the fast tier; every combination in the full suite.
FAST = ("jc.sgd", "eval_best")


@pytest.mark.parametrize("opt_fn, case", [
    pytest.param(opt_fn, case, id=f"{name}-{case}",
                 marks=() if (name, case) == FAST else pytest.mark.slow)
    for name, opt_fn in (("jc.sgd", jc.sgd), ("optax.sgd", optax.sgd)) for case in CASES
])
def test_copy_equals_freezing_in_place(monkeypatch, opt_fn, case):
    kw = CASES[case]
    plain = _run(monkeypatch, opt_fn, False, **dict(kw))
    copied = _run(monkeypatch, opt_fn, True, **dict(kw))
    assert 0 < plain.diverged.sum() < len(GRID["learning_rate"])
    assert len(set(plain.diverged_at[plain.diverged].tolist())) > 1 or case == "halving"
    chex.assert_trees_all_equal(_fields(copied), _fields(plain))
    for w in jax.tree.leaves(copied.params):
        assert np.isfinite(w).all()  # diverged members keep their last finite params


def ctrl_c_mse(params, batch):
    ctrl_c_point()
    return mse(params, batch)


@pytest.mark.slow
def test_a_stopped_run_keeps_the_same_params_either_way(monkeypatch, tmp_path):
    # Stopped 12 steps into the second chunk of three members: its finish
    # runs on a state whose alive flags are all off (resumable.stopped_state).
    partial = {}
    for copy in (False, True):
        ARMED_CTRL_C.append(32)
        with pytest.raises(jc.Interrupted) as stop:
            _run(monkeypatch, jc.sgd, copy, loss=ctrl_c_mse, checkpoint_dir=tmp_path / str(copy),
                 checkpoint_every=6, chunk_size=3)
        assert stop.value.steps_trained.tolist() == [24, 24, 24, 12, 12, 12]
        partial[copy] = jax.device_get(stop.value.partial)
    assert partial[False].diverged.tolist() == [False, False, False, False, True, True]
    chex.assert_trees_all_equal(_fields(partial[True]), _fields(partial[False]))


def test_the_copy_is_taken_on_cpu_for_small_params_only():
    small, big = divergence.FROZEN_COPY_MAX_BYTES, divergence.FROZEN_COPY_MAX_BYTES + 1
    assert divergence.frozen_copy_pays("cpu", small, pbt=False)
    assert not divergence.frozen_copy_pays("cpu", big, pbt=False)
    assert not divergence.frozen_copy_pays("cpu", small, pbt=True)
    assert not divergence.frozen_copy_pays("gpu", small, pbt=False)
    assert not divergence.frozen_copy_pays("tpu", small, pbt=False)
