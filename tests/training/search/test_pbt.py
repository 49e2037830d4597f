"""Population-based training (jc.pbt) against a NumPy reference on a quadratic.

The problem: ``loss(w, d) = 0.5 * sum((w - d)**2)`` with full-batch SGD, so
``w <- w - lr (w - d)`` is a closed form a host loop replays. The reference
ranks the members from the run's own losses (or evaluations), checks who
copied whom (``parents``), how the hyperparameters moved
(``hparams_history``), and replays the run with those copies and values.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import count_compiles

import jaxopt_core as jc

D = jnp.array([1.0, -2.0])
W0 = jnp.zeros(2)
LRS = np.array([0.01, 0.02, 0.05, 0.1, 0.2, 1e20, 0.003, 0.3], np.float32)  # one diverges
PERTURB = (0.8, 1.25)


def quad(w, d):
    return 0.5 * jnp.sum((w - d) ** 2)


def run(grid=None, every=5, steps=23, key=0, **kw):
    grid = {"learning_rate": LRS} if grid is None else grid
    search = kw.pop("search", None) or jc.pbt(every, fraction=0.25, perturb=PERTURB,
                                              bounds=kw.pop("bounds", None))
    return jc.sweep(quad, W0, kw.pop("optimizer_fn", jc.sgd), D, grid=grid, steps=steps,
                    key=jax.random.key(key), search=search, **kw)


def reference_order(values):
    """Best first (lower is better), non-finite last, ties to the lower index."""
    key = np.where(np.isfinite(values), values, np.inf)
    return np.lexsort((np.arange(len(values)), key, ~np.isfinite(values)))


def check_rounds(res, every, values_at, n=2, bounds=None):
    """Bookkeeping of every round: who copied, from whom, with what values."""
    lr = res.hparams_history["learning_rate"]
    parents = res.parents
    k, rounds = parents.shape
    for r in range(rounds):
        order = reference_order(values_at(r))
        bottom, top = set(order[k - n:]), set(order[:n])
        for j in range(k):
            if j in bottom:
                src = parents[j, r]
                assert src in top, (r, j, src)
                ratio = lr[j, r + 1] / lr[src, r]
                clipped = bounds is not None and lr[j, r + 1] in np.float32(bounds)
                assert clipped or np.isclose(ratio, PERTURB, rtol=1e-6).any(), (r, j, ratio)
            else:
                assert parents[j, r] == j
                assert lr[j, r + 1] == lr[j, r]


def replay(res, every, steps):
    """The run replayed on the host with the copies and values it recorded."""
    lr = res.hparams_history["learning_rate"].astype(np.float32)
    w = np.zeros((len(lr), 2), np.float32)
    d = np.asarray(D)
    alive = np.ones(len(lr), bool)
    losses = np.full((len(lr), steps), np.nan, np.float32)
    for t in range(steps):
        r = t // every
        with np.errstate(over="ignore", invalid="ignore"):
            loss = 0.5 * np.sum((w - d) ** 2, axis=1)
            losses[alive, t] = loss[alive]
            new = w - lr[:, r][:, None] * (w - d)
            ok = alive & np.isfinite(new).all(1) & np.isfinite(loss)
        w = np.where(ok[:, None], new, w)
        alive = ok
        if (t + 1) % every == 0 and r < res.parents.shape[1]:
            src = res.parents[:, r]
            w, alive = w[src], alive[src]
    return losses


@pytest.mark.slow
def test_pbt_exploits_explores_and_replays_by_hand():
    every, steps = 5, 23
    res = run(every=every, steps=steps)
    assert res.parents.shape == (8, 4) and res.hparams_history["learning_rate"].shape == (8, 5)
    np.testing.assert_array_equal(res.hparams_history["learning_rate"][:, 0], LRS)
    # rank_by="loss": mean of the last tenth of an interval, here its last loss (m = 1)
    check_rounds(res, every, lambda r: np.asarray(res.losses)[:, (r + 1) * every - 1])
    # the diverged member was copied over (revived) at the first round
    assert res.parents[5, 0] != 5 and not res.diverged[5] and res.diverged_at[5] == -1
    assert np.isnan(res.losses[5, 2]) and np.isfinite(res.losses[5, every:]).all()
    # exploit is exact: right after a copy the member's loss is its source's, bit for bit
    for r in range(res.parents.shape[1]):
        t = (r + 1) * every
        src = res.parents[:, r]
        np.testing.assert_array_equal(res.losses[:, t], res.losses[src, t])
    np.testing.assert_allclose(res.losses, replay(res, every, steps), rtol=1e-5)
    assert res.member_steps == 8 * steps == res.full_steps


@pytest.mark.slow
def test_pbt_never_touches_seed_or_integers_and_clips_to_bounds():
    def opt(learning_rate, delay):  # an integer hyperparameter, unused by the optimizer
        return jc.sgd(learning_rate)

    grid = {"learning_rate": LRS, "delay": np.arange(8), "seed": np.arange(8) + 10}
    bounds = (0.004, 0.25)
    res = run(grid, optimizer_fn=opt, bounds={"learning_rate": bounds})
    hist = res.hparams_history
    assert list(hist) == ["learning_rate", "delay", "seed"]
    for name in ("delay", "seed"):
        np.testing.assert_array_equal(hist[name], np.repeat(grid[name][:, None], 5, axis=1))
    copied = res.parents != np.arange(8)[:, None]
    explored = hist["learning_rate"][:, 1:][copied]
    assert copied.any() and np.all((explored >= np.float32(0.004)) & (explored <= np.float32(0.25)))
    check_rounds(res, 5, lambda r: np.asarray(res.losses)[:, (r + 1) * 5 - 1], bounds=bounds)


@pytest.mark.slow
def test_pbt_is_deterministic_in_key_and_compiles_once():
    a, b, c = run(key=3), run(key=3), run(key=4)
    np.testing.assert_array_equal(a.parents, b.parents)
    np.testing.assert_array_equal(a.losses, b.losses)
    lr = "learning_rate"
    assert not np.array_equal(a.hparams_history[lr], c.hparams_history[lr])
    with count_compiles() as seen:
        new = run(grid={"learning_rate": LRS[::-1].copy()}, key=3)
    assert seen == []
    assert new.hparams_history["learning_rate"][0, 0] == LRS[-1]


@pytest.mark.slow
def test_pbt_ranks_by_an_evaluation_metric():
    target = jnp.array([3.0, 0.0])

    def score(w, _):
        return {"score": -0.5 * jnp.sum((w - target) ** 2)}

    res = run(eval_fn=score, eval_data=0.0, rank_by="score", rank_mode="max")
    assert res.evals["score"].shape == (8, 5) and res.eval_steps.tolist() == [5, 10, 15, 20, 23]
    check_rounds(res, 5, lambda r: -np.asarray(res.evals["score"])[:, r])
    with pytest.raises(ValueError, match="eval_every must divide every=5"):
        run(eval_fn=score, eval_data=0.0, eval_every=2)


@pytest.mark.slow
def test_pbt_resamples_from_the_axis_it_was_sampled_from():
    axis = jc.log_uniform(1e-3, 0.5)
    grid = jc.sample(jax.random.key(1), 8, learning_rate=axis)
    res = run(grid, search=jc.pbt(5, resample_prob=1.0))
    lr, parents = res.hparams_history["learning_rate"], res.parents
    copied = parents != np.arange(8)[:, None]
    fresh = lr[:, 1:][copied]
    lo, hi = axis.bounds
    assert np.all((fresh >= lo) & (fresh <= hi))
    ratios = fresh / lr[:, :-1][parents[copied], np.nonzero(copied)[1]]
    assert not np.isclose(ratios[:, None], PERTURB, rtol=1e-6).any(1).all()
    with pytest.raises(ValueError, match=r"no axis is known for \['learning_rate'\].*jc.sample"):
        run(search=jc.pbt(5, resample_prob=0.5))


@pytest.mark.slow
def test_pbt_with_optax_adam_and_in_segments():
    res = run(optimizer_fn=optax.adam)
    for r in range(res.parents.shape[1]):
        t = (r + 1) * 5
        np.testing.assert_array_equal(res.losses[:, t], res.losses[res.parents[:, r], t])
    assert (res.parents != np.arange(8)[:, None]).any()
    seg = run(optimizer_fn=optax.adam, segment_steps=7)
    np.testing.assert_array_equal(seg.losses, res.losses)
    np.testing.assert_array_equal(seg.parents, res.parents)


@pytest.mark.parametrize("kwargs, match", [
    ({"every": 0}, "every must be an int >= 1"),
    ({"every": 5, "fraction": 0.6}, r"fraction must be in \(0, 0.5\]"),
    ({"every": 5, "perturb": (0.8, -1.0)}, "perturb must be"),
    ({"every": 5, "resample_prob": 1.5}, r"resample_prob must be in \[0, 1\]"),
    ({"every": 5, "bounds": {"learning_rate": (0.5, 0.1)}}, r"bounds\['learning_rate'\]"),
])
def test_pbt_settings_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jc.pbt(**kwargs)


def test_pbt_sweep_arguments_are_checked():
    with pytest.raises(ValueError, match="every must be less than steps"):
        run(every=23)
    with pytest.raises(ValueError, match="chunk_size must be None or >= K=8"):
        run(chunk_size=4)
    with pytest.raises(ValueError, match="at least 2 members"):
        run(grid={"learning_rate": LRS[:1]})
    with pytest.raises(ValueError, match="bounds name 'b1'"):
        run(bounds={"b1": (0.0, 1.0)})
    with pytest.raises(ValueError, match="search must be None"):
        run(search="pbt")


def test_no_search_reports_member_steps():
    res = jc.sweep(quad, W0, jc.sgd, D, grid={"learning_rate": LRS[:3]}, steps=4)
    assert res.member_steps == res.full_steps == 12
    assert res.parents is None and res.hparams_history is None and res.stopped_at is None


@pytest.mark.slow
def test_pbt_result_round_trips_through_a_file(tmp_path):
    res = run()
    back = jc.load_result(res.save(tmp_path / "pbt.npz"))
    np.testing.assert_array_equal(back.parents, res.parents)
    assert list(back.hparams_history) == ["learning_rate"]
    np.testing.assert_array_equal(back.hparams_history["learning_rate"],
                                  res.hparams_history["learning_rate"])
    assert back.member_steps == res.member_steps and back.stopped_at is None


def test_pbt_dataframe_shows_the_final_hyperparameters():
    res = run()
    frame = res.to_dataframe()
    np.testing.assert_array_equal(frame["learning_rate"], LRS)
    np.testing.assert_array_equal(frame["learning_rate_final"],
                                  res.hparams_history["learning_rate"][:, -1])


@pytest.mark.slow
def test_exploit_copies_params_and_optimizer_state_exactly():
    # perturb=(1.0,): a copy keeps its source's learning rate, so after the last
    # round it repeats its source's steps and ends with the same bits
    res = run(optimizer_fn=jc.adam, search=jc.pbt(5, perturb=(1.0,)))
    last = res.parents[:, -1]
    copied = np.nonzero(last != np.arange(8))[0]
    assert len(copied) == 2
    for j in copied:
        np.testing.assert_array_equal(res.params[j], res.params[last[j]])
        np.testing.assert_array_equal(res.losses[j, 20:], res.losses[last[j], 20:])


@pytest.mark.slow
def test_pbt_with_seeds_minibatches_and_an_init_function():
    data = jnp.linspace(-1.0, 1.0, 24).reshape(12, 2)

    def batch_loss(w, batch):
        return 0.5 * jnp.mean(jnp.sum((w - batch) ** 2, axis=1))

    def init(key):
        return jax.random.normal(key, (2,))

    grid = {"learning_rate": LRS, "seed": np.arange(8)}
    res = jc.sweep(batch_loss, init, jc.sgd, data, grid=grid, steps=23, batch_size=4,
                   search=jc.pbt(5))
    plain = jc.sweep(batch_loss, init, jc.sgd, data, grid=grid, steps=23, batch_size=4)
    # up to the first round PBT changes nothing
    np.testing.assert_array_equal(res.losses[:, :5], plain.losses[:, :5])
    assert (res.parents != np.arange(8)[:, None]).any()
    np.testing.assert_array_equal(res.hparams_history["seed"][:, -1], np.arange(8))
