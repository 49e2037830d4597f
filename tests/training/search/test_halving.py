"""Successive halving (jc.successive_halving) against a host-side reference.

The reference is the plain sweep of the same grid: it trains every member
for all the steps, and a host loop ranks its numbers rung by rung as the
schedule says. The loss is elementwise (no matrix product over members), so
compacting the survivors into fewer rows changes no bit: a survivor's
trajectory must equal its trajectory in the plain sweep exactly.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import count_compiles

import jaxopt_core as jc
from jaxopt_core.training.search.halving import SuccessiveHalving, rung_schedule

D = jnp.array([1.0, -2.0])
W0 = jnp.zeros(2)
K, STEPS = 27, 81
LRS = np.geomspace(1e-3, 0.1, K).astype(np.float32)[np.random.default_rng(0).permutation(K)]


def quad(w, d):
    return 0.5 * jnp.sum((w - d) ** 2)


def halving(lrs=LRS, steps=STEPS, **kw):
    search = jc.successive_halving(eta=kw.pop("eta", 3), min_steps=kw.pop("min_steps", None))
    return jc.sweep(quad, W0, jc.sgd, D, grid={"learning_rate": lrs}, steps=steps,
                    search=search, **kw)


def reference_stops(values_after, k, ends, eta):
    """``stopped_at`` by a host loop: at each rung end keep the best
    ceil(n/eta) by ``values_after(end, running)`` (lower first, ties to the
    lower index)."""
    running, stopped = np.arange(k), np.full(k, ends[-1])
    prev = 0
    for end in ends[:-1]:
        values = values_after(prev, end, running)
        keep = running[np.lexsort((running, values))][: -(-len(running) // eta)]
        stopped[np.setdiff1d(running, keep)] = end
        running, prev = np.sort(keep), end
    return stopped


@pytest.fixture(scope="module")
def plain():
    return jc.sweep(quad, W0, jc.sgd, D, grid={"learning_rate": LRS}, steps=STEPS)


@pytest.fixture(scope="module")
def result():
    return halving()


def test_schedule_27_members_eta_3():
    assert rung_schedule(K, STEPS, SuccessiveHalving(3)) == [(3, 27), (9, 9), (27, 3), (81, 1)]
    assert rung_schedule(10, 100, SuccessiveHalving(2, 25)) == [(25, 10), (50, 5), (100, 3)]
    with pytest.raises(ValueError, match="first ending at step"):
        rung_schedule(81, 20, SuccessiveHalving(3))


@pytest.mark.slow
def test_halving_keeps_the_members_a_host_reference_keeps(result, plain):
    counts = {s: int(np.sum(result.stopped_at >= s)) for s in (3, 9, 27, 81)}
    assert counts == {3: 27, 9: 9, 27: 3, 81: 1}
    full = np.asarray(plain.losses)

    def tail(prev, end, running):  # the rung's last tenth (at least one step)
        m = max(1, (end - prev) // 10)
        return full[running, end - m:end].mean(axis=1)

    expected = reference_stops(tail, K, [3, 9, 27, 81], 3)
    np.testing.assert_array_equal(result.stopped_at, expected)
    assert result.member_steps == 27 * 3 + 9 * 6 + 3 * 18 + 54 == 243
    assert result.full_steps == K * STEPS
    assert result.best_index == int(np.argmax(result.stopped_at))
    assert result.member_order()[0] == result.best_index


@pytest.mark.slow
def test_survivors_train_as_in_the_plain_sweep_bit_for_bit(result, plain):
    losses = np.asarray(result.losses)
    for i in range(K):
        s = result.stopped_at[i]
        np.testing.assert_array_equal(losses[i, :s], np.asarray(plain.losses)[i, :s])
        assert np.isnan(losses[i, s:]).all()
    best = result.best_index
    np.testing.assert_array_equal(result.params[best], plain.params[best])
    # a member stopped at step 9 keeps its params of step 9
    i = int(np.nonzero(result.stopped_at == 9)[0][0])
    at9 = jc.sweep(quad, W0, jc.sgd, D, grid={"learning_rate": LRS[i:i + 1]}, steps=9)
    np.testing.assert_array_equal(result.params[i], at9.params[0])


@pytest.mark.slow
def test_halving_chunked_equals_whole_and_compiles_once(result):
    chunked = halving(chunk_size=4)
    np.testing.assert_array_equal(chunked.stopped_at, result.stopped_at)
    np.testing.assert_array_equal(chunked.losses, result.losses)
    np.testing.assert_array_equal(chunked.params, result.params)
    with count_compiles() as seen:
        again = halving(lrs=LRS[::-1].copy())
    assert seen == []
    assert again.member_steps == 243


@pytest.mark.slow
def test_halving_ranks_by_an_evaluation_at_each_rung_end():
    target = jnp.array([0.5, 0.0])

    def score(w, _):
        return {"score": -jnp.sum((w - target) ** 2)}

    lrs, steps = LRS[:9], 27
    every = jc.sweep(quad, W0, jc.sgd, D, grid={"learning_rate": lrs}, steps=steps,
                     eval_fn=score, eval_data=0.0, eval_every=1)
    scores = np.asarray(every.evals["score"])  # column t: after t + 1 steps
    res = halving(lrs, steps, eval_fn=score, eval_data=0.0, rank_by="score", rank_mode="max",
                  eval_every=3)
    expected = reference_stops(lambda prev, end, run: -scores[run, end - 1], 9, [3, 9, 27], 3)
    np.testing.assert_array_equal(res.stopped_at, expected)
    ev = np.asarray(res.evals["score"])  # taken at 3, 6, ..., 27: NaN after a member stops
    for i in range(9):
        taken = res.eval_steps <= res.stopped_at[i]
        np.testing.assert_array_equal(ev[i, taken], scores[i, res.eval_steps[taken] - 1])
        assert np.isnan(ev[i, ~taken]).all()


def test_halving_settings_are_checked():
    with pytest.raises(ValueError, match="eta must be an int >= 2"):
        jc.successive_halving(eta=1)
    with pytest.raises(ValueError, match="min_steps must be None or an int >= 1"):
        jc.successive_halving(min_steps=0)
    with pytest.raises(ValueError, match="segment_steps must be None"):
        halving(segment_steps=5)


@pytest.mark.slow
def test_halving_result_round_trips_through_a_file(result, tmp_path):
    back = jc.load_result(result.save(tmp_path / "halving.npz"))
    np.testing.assert_array_equal(back.stopped_at, result.stopped_at)
    assert back.member_steps == 243 and back.parents is None


def test_halving_dataframe_has_stopped_at_and_ranks_later_rungs_first(result):
    frame = result.to_dataframe()
    np.testing.assert_array_equal(frame["stopped_at"], result.stopped_at)
    assert frame["rank"][result.best_index] == 1
    ranked = frame.sort_values("rank")["stopped_at"].to_numpy()
    assert np.all(np.diff(ranked) <= 0)


@pytest.mark.slow
def test_halving_keep_best_steps_stay_within_each_members_run():
    def score(w, _):
        return {"score": -jnp.sum((w - D) ** 2)}

    res = halving(LRS[:9], 27, eval_fn=score, eval_data=0.0, eval_every=3, keep_best=True,
                  rank_mode="max")
    assert np.all((res.best_step >= 3) & (res.best_step <= res.stopped_at))
    assert res.best_params_per_member.shape == (9, 2)


@pytest.mark.slow
def test_halving_with_seeds_and_minibatches_follows_the_plain_sweep():
    # each member draws its own minibatch order (the seed axis): the gathered
    # carry must keep every survivor's own order
    data = jnp.linspace(-1.0, 1.0, 24).reshape(12, 2)

    def batch_loss(w, batch):
        return 0.5 * jnp.mean(jnp.sum((w - batch) ** 2, axis=1))

    grid = {"learning_rate": LRS[:9], "seed": np.arange(9)}
    kw = dict(grid=grid, steps=27, batch_size=4)
    plain = jc.sweep(batch_loss, W0, jc.sgd, data, **kw)
    res = jc.sweep(batch_loss, W0, jc.sgd, data, search=jc.successive_halving(3), **kw)
    for i in range(9):
        s = res.stopped_at[i]
        np.testing.assert_array_equal(res.losses[i, :s], plain.losses[i, :s])
    np.testing.assert_array_equal(res.params[res.best_index], plain.params[res.best_index])


def test_halving_repr_shows_the_budget(result):
    assert repr(result).endswith(", member_steps=243 of 2187)")
