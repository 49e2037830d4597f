"""Checkpointed successive halving (jaxopt_core.training.search.halving_resume):
checkpoints at rung ends; a resumed run equals the uninterrupted one bit for
bit; another eta is refused; Ctrl-C stops at a rung end with a partial result."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ARMED_CTRL_C, ctrl_c_point

import jaxopt_core as jc

D = jnp.array([1.0, -2.0])
W0 = jnp.zeros(2)
LRS = np.geomspace(1e-3, 0.3, 9).astype(np.float32)[np.random.default_rng(1).permutation(9)]


def quad(w, d):
    return 0.5 * jnp.sum((w - d) ** 2)


def ctrl_c_quad(w, d):
    ctrl_c_point()
    return quad(w, d)


def halving(folder=None, loss=quad, eta=3, **kw):
    """K=9, eta=3, 27 steps: rungs end at 3 (9 members), 9 (3) and 27 (1)."""
    return jc.sweep(loss, W0, jc.sgd, D, grid={"learning_rate": LRS}, steps=27,
                    search=jc.successive_halving(eta), eval_fn=quad, eval_data=D,
                    eval_every=9, keep_best=True, checkpoint_dir=folder, **kw)


def assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def saved_steps(folder):
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


@pytest.fixture(scope="module")
def whole():
    return halving()


@pytest.mark.slow
def test_resume_after_losing_the_last_checkpoint_is_bit_for_bit(tmp_path, whole):
    assert sorted(np.unique(whole.stopped_at).tolist()) == [3, 9, 27]
    first = halving(tmp_path)
    assert_same(first, whole)
    assert saved_steps(tmp_path) == [2, 3]  # rungs done; the last two kept
    shutil.rmtree(tmp_path / "3")  # as if killed during the last rung
    resumed = halving(tmp_path)
    assert_same(resumed, whole)
    np.testing.assert_array_equal(resumed.stopped_at, whole.stopped_at)
    again = halving(tmp_path)  # a finished run: its result from the last checkpoint
    assert_same(again, whole)


@pytest.mark.slow
def test_chunked_resume_is_bit_for_bit(tmp_path, whole):
    # rows padded to chunks of 2: 9 -> 10, 3 -> 4, 1 -> 2
    halving(tmp_path, chunk_size=2)
    shutil.rmtree(tmp_path / "3")
    assert_same(halving(tmp_path, chunk_size=2), whole)


@pytest.mark.slow
def test_checkpoint_every_is_rounded_up_to_rung_ends(tmp_path):
    halving(tmp_path, checkpoint_every=10)  # rung ends 3, 9: no multiple of 10 passed
    assert saved_steps(tmp_path) == [3]


@pytest.mark.slow
def test_another_eta_is_refused_naming_it(tmp_path):
    halving(tmp_path)
    with pytest.raises(jc.CheckpointMismatchError, match=r"search: checkpoint .*eta=3.*eta=2"):
        halving(tmp_path, eta=2)


@pytest.mark.slow
def test_ctrl_c_stops_at_a_rung_end_and_resumes(tmp_path, whole):
    ARMED_CTRL_C.append(4)  # one call per step: the SIGINT comes during the second rung
    with pytest.raises(jc.Interrupted) as stop:
        halving(tmp_path, loss=ctrl_c_quad)
    ARMED_CTRL_C.clear()
    err, part = stop.value, stop.value.partial
    early = whole.stopped_at == 3
    expected = np.where(early, 3, 9)
    np.testing.assert_array_equal(err.steps_trained, expected)
    np.testing.assert_array_equal(part.stopped_at, expected)
    assert part.steps_trained == 9 and part.losses.shape == (9, 27)
    for i in range(9):  # every member's losses up to where it went, NaN after
        np.testing.assert_array_equal(part.losses[i, :expected[i]],
                                      whole.losses[i, :expected[i]])
        assert np.isnan(part.losses[i, expected[i]:]).all()
    # the members stopped at step 3 are whole; the running ones are at step 9
    np.testing.assert_array_equal(part.params[early], whole.params[early])
    np.testing.assert_array_equal(part.evals["eval"][early], whole.evals["eval"][early])
    at9 = jc.sweep(quad, W0, jc.sgd, D, grid={"learning_rate": LRS[~early]}, steps=9)
    np.testing.assert_array_equal(part.params[~early], at9.params)
    resumed = halving(tmp_path, loss=ctrl_c_quad)
    assert_same(resumed, whole)
