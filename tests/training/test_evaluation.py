"""Validation inside the compiled run (eval_fn / eval_data / eval_every), ranking
(rank_by, rank_mode, keep_best) and divergence reporting of fit and sweep.

References are computed outside the compiled program: a Python loop of
``make_train_step`` (following the documented minibatch order) with ``eval_fn``
called eagerly at the same step counts."""

import functools
import io

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA, PARAMS, X, Y, count_compiles, mse

import jaxopt_core as jc

X_VAL = jax.random.normal(jax.random.key(7), (12, 3))
Y_VAL = X_VAL @ jnp.array([1.0, -2.0, 0.5]) + 0.3
VAL = (X_VAL, Y_VAL)


def metrics(params, data):
    """Two held-out metrics; the params must arrive as the user's tree."""
    assert set(params) == {"w", "b"}, "eval_fn must see the params tree"
    x, y = data
    err = x @ params["w"] + params["b"] - y
    return {"mse": jnp.mean(err**2), "mae": jnp.mean(jnp.abs(err))}


def python_run(opt, loss, params, steps, *, data=DATA, batch_size=None, key=None, at=()):
    """Train in a Python loop; returns the final params and {step count: params}."""
    step = jc.make_train_step(loss, opt, donate=False)
    state, seen = opt.init(params), {}
    for t in range(steps):
        batch = data
        if batch_size is not None:
            n = data[0].shape[0]
            epoch, b = divmod(t, n // batch_size)
            perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
            idx = perm[b * batch_size:(b + 1) * batch_size]
            batch = tuple(a[idx] for a in data)
        params, state, _ = step(params, state, batch)
        if t + 1 in at:
            seen[t + 1] = params
    return params, seen


@pytest.mark.slow
def test_fit_evals_equal_eager_evaluation_of_a_python_loop():
    opt = jc.adam(0.05)
    res = jc.fit(mse, PARAMS, opt, DATA, steps=10, batch_size=8, key=jax.random.key(2),
                 eval_fn=metrics, eval_data=VAL, eval_every=4)
    assert res.eval_steps.tolist() == [4, 8, 10]
    assert list(res.evals) == ["mse", "mae"] and res.evals["mse"].shape == (3,)
    _, seen = python_run(opt, mse, PARAMS, 10, batch_size=8, key=jax.random.key(2), at=(4, 8, 10))
    for j, s in enumerate(res.eval_steps):
        ref = metrics(seen[int(s)], VAL)  # eager: outside any compiled program
        for name in ("mse", "mae"):
            np.testing.assert_allclose(res.evals[name][j], ref[name], rtol=1e-5)
    assert not bool(res.diverged) and int(res.diverged_at) == -1

    # New eval_data of the same shapes reuses the program.
    new_val = (X_VAL * 2, Y_VAL)
    with count_compiles() as compiles:
        again = jc.fit(mse, PARAMS, opt, DATA, steps=10, batch_size=8, key=jax.random.key(2),
                       eval_fn=metrics, eval_data=new_val, eval_every=4)
        jax.block_until_ready(again.evals)
    assert compiles == []
    np.testing.assert_allclose(again.evals["mse"][-1], metrics(res.params, new_val)["mse"],
                               rtol=1e-5)


@pytest.mark.slow
def test_sweep_evals_equal_separate_runs_evaluated_eagerly():
    lrs = np.array([0.02, 0.1, 0.3])
    key = jax.random.key(4)
    kwargs = dict(grid={"learning_rate": lrs, "momentum": np.array([0.0, 0.5, 0.9])}, steps=12,
                  batch_size=8, key=key, eval_fn=metrics, eval_every=5)
    res = jc.sweep(mse, PARAMS, jc.sgd, DATA, eval_data=VAL, **kwargs)
    assert res.eval_steps.tolist() == [5, 10, 12]
    assert res.evals["mse"].shape == (3, 3) and res.rank_by == "mse"
    opt = jc.sgd(lrs[2], momentum=0.9)
    _, seen = python_run(opt, mse, PARAMS, 12, batch_size=8, key=key, at=(5, 10, 12))
    for j, s in enumerate(res.eval_steps):
        ref = metrics(seen[int(s)], VAL)
        np.testing.assert_allclose(res.evals["mae"][2, j], ref["mae"], rtol=1e-5)
    final = np.asarray(res.evals["mse"][:, -1])
    assert res.best_index == int(np.argmin(final))

    new_val = (X_VAL, Y_VAL + 1.0)
    with count_compiles() as compiles:
        again = jc.sweep(mse, PARAMS, jc.sgd, DATA, eval_data=new_val, **kwargs)
        jax.block_until_ready(again.evals)
    assert compiles == []
    assert not np.allclose(again.evals["mse"], res.evals["mse"])


@pytest.mark.slow
def test_scalar_eval_after_the_last_step_only():
    def val_mse(params, data):
        return mse(params, data)

    res = jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": np.array([0.01, 0.1])},
                   steps=15, eval_fn=val_mse, eval_data=VAL)
    assert list(res.evals) == ["eval"] and res.evals["eval"].shape == (2, 1)
    assert res.eval_steps.tolist() == [15]
    for i in range(2):
        member = jax.tree.map(lambda x, i=i: x[i], res.params)
        np.testing.assert_allclose(res.evals["eval"][i, 0], mse(member, VAL), rtol=1e-6)
    fig = res.plot()
    assert len(fig.axes) == 3  # curves, the ranking metric after the last step, colour bar
    assert fig.axes[1].get_ylabel() == "eval" and fig.axes[1].get_xscale() == "log"
    assert "best" in fig.axes[1].get_legend_handles_labels()[1]
    fig.savefig(io.BytesIO(), format="png")


# An over-parameterised regression (40 features, 16 noisy examples): the
# unpenalised member fits the noise. Its training loss is the lowest, its
# held-out error the highest.
_K = jax.random.split(jax.random.key(42), 4)
W_TRUE = 0.3 * jax.random.normal(_K[0], (40,))
X_TR, X_HO = jax.random.normal(_K[1], (16, 40)), jax.random.normal(_K[2], (64, 40))
TRAIN = (X_TR, X_TR @ W_TRUE + 3.0 * jax.random.normal(_K[3], (16,)))
HELD_OUT = (X_HO, X_HO @ W_TRUE)
L2 = np.array([0.0, 1.0, 3.0, 10.0])


def linear_mse(w, batch):
    x, y = batch
    return jnp.mean((x @ w - y) ** 2)


def held_out(w, data):
    return {"mse": linear_mse(w, data), "fit_score": -linear_mse(w, data)}


@pytest.fixture(scope="module")
def overfit():
    kwargs = dict(grid={"learning_rate": np.full(4, 0.05), "l2": L2}, steps=200, batch_size=4,
                  eval_fn=held_out, eval_data=HELD_OUT, eval_every=20)
    return kwargs, jc.sweep(linear_mse, jnp.zeros(40), jc.adam, TRAIN, **kwargs)


@pytest.mark.slow
def test_held_out_ranking_picks_the_regularised_member(overfit):
    kwargs, res = overfit
    ho = np.asarray(res.evals["mse"][:, -1])
    assert res.rank_by == "mse" and res.best_index == 3  # l2 = 10
    assert ho[3] < 0.5 * ho[0]
    # The last minibatch, and the mean training loss of the last tenth of the
    # steps, both prefer the member that fits the noise.
    assert int(np.argmin(res.losses[:, -1])) == 0
    by_loss = jc.sweep(linear_mse, jnp.zeros(40), jc.adam, TRAIN, rank_by="loss", **kwargs)
    assert by_loss.best_index == 0
    np.testing.assert_allclose(by_loss.to_dataframe()["loss"],
                               np.mean(np.asarray(res.losses)[:, -20:], axis=1), rtol=1e-6)
    by_max = jc.sweep(linear_mse, jnp.zeros(40), jc.adam, TRAIN, rank_by="fit_score",
                      rank_mode="max", **kwargs)
    assert by_max.best_index == 3

    frame = res.to_dataframe()
    assert list(frame.columns) == ["learning_rate", "l2", "final_loss", "diverged", "diverged_at",
                                   "mse", "fit_score", "rank"]
    np.testing.assert_allclose(frame["mse"], ho)
    assert frame["rank"].tolist() == (np.argsort(np.argsort(ho)) + 1).tolist()


@pytest.mark.slow
def test_keep_best_keeps_the_params_of_the_best_evaluation(overfit):
    kwargs, _ = overfit
    res = jc.sweep(linear_mse, jnp.zeros(40), jc.adam, TRAIN, keep_best=True, **kwargs)
    values = np.asarray(res.evals["mse"])
    best_step = np.asarray(res.best_step)
    np.testing.assert_array_equal(best_step, res.eval_steps[np.argmin(values, axis=1)])
    early = int(np.argmin(best_step))
    assert best_step[early] < 200  # some member was best before the end
    assert res.to_dataframe()["best_step"].tolist() == best_step.tolist()
    loss = jc.regularized(linear_mse, l2=L2[early])
    _, seen = python_run(jc.adam(0.05), loss, jnp.zeros(40), int(best_step[early]), data=TRAIN,
                         batch_size=4, key=jax.random.key(0), at=(int(best_step[early]),))
    chex.assert_trees_all_close(res.best_params_per_member[early], seen[int(best_step[early])],
                                rtol=1e-5, atol=1e-6)
    # The final params are still there, and differ.
    assert not np.allclose(res.params[early], res.best_params_per_member[early])


@pytest.mark.slow
def test_divergence_is_reported_by_fit_and_frozen():
    res = jc.fit(mse, PARAMS, jc.sgd(50.0), DATA, steps=60, eval_fn=metrics, eval_data=VAL,
                 eval_every=2)
    at = int(res.diverged_at)
    assert bool(res.diverged) and 0 < at < 59
    losses = np.asarray(res.losses)
    assert np.all(np.isfinite(losses[:at])) and np.all(np.isnan(losses[at + 1:]))
    ref, _ = python_run(jc.sgd(50.0), mse, PARAMS, at)
    chex.assert_trees_all_close(res.params, ref, rtol=1e-5)  # frozen at the last finite state
    # Evaluations after the step that diverged are NaN, the earlier ones are not.
    after = res.eval_steps > at
    assert after.any() and np.all(np.isnan(res.evals["mse"][after]))
    assert not np.any(np.isnan(res.evals["mse"][~after]))
    # The same optimizer in a sweep diverges at the same step.
    swept = jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": np.array([0.05, 50.0])},
                     steps=60, eval_fn=metrics, eval_data=VAL)
    assert swept.diverged_at.tolist() == [-1, at] and swept.best_index == 0


@pytest.mark.slow
def test_non_finite_optimizer_state_is_divergence():
    # The gradient 1e30 squares to inf in Adam's second moment; the update
    # mu / sqrt(nu) is then 0, so loss and params stay finite.
    def steep(p, batch):
        return 1e30 * jnp.sum(p["w"]) + 0.0 * mse(p, batch)

    res = jc.fit(steep, PARAMS, jc.adam(0.1), DATA, steps=3)
    assert bool(res.diverged) and int(res.diverged_at) == 0
    assert np.all(np.isfinite(res.opt_state[0].nu["w"]))  # frozen before the inf
    swept = jc.sweep(steep, PARAMS, jc.adam, DATA, grid={"learning_rate": np.array([0.1, 0.2])},
                     steps=3)
    assert swept.diverged.tolist() == [True, True] and swept.diverged_at.tolist() == [0, 0]
    assert swept.best_index is None


def test_bad_evaluation_arguments_name_themselves():
    lr = {"learning_rate": np.array([0.1, 0.2])}
    sweep = functools.partial(jc.sweep, mse, PARAMS, jc.sgd, DATA, grid=lr, steps=4)
    with pytest.raises(ValueError, match="eval_every was given but eval_fn is None"):
        jc.fit(mse, PARAMS, jc.sgd(0.1), DATA, steps=4, eval_every=2)
    with pytest.raises(ValueError, match="eval_data was given but eval_fn is None"):
        sweep(eval_data=VAL)
    with pytest.raises(ValueError, match="eval_every must be None or an int >= 1; got eval_ev"):
        sweep(eval_fn=metrics, eval_data=VAL, eval_every=0)
    with pytest.raises(TypeError, match="eval_every=2.5"):
        sweep(eval_fn=metrics, eval_data=VAL, eval_every=2.5)
    with pytest.raises(TypeError, match="eval_fn must be callable"):
        sweep(eval_fn="mse", eval_data=VAL)
    with pytest.raises(TypeError, match=r"eval_fn must return a scalar.*'eval': float32\[12\]"):
        sweep(eval_fn=lambda p, d: d[0] @ p["w"], eval_data=VAL)
    with pytest.raises(TypeError, match="eval_fn.*failed while being traced.*KeyError"):
        sweep(eval_fn=lambda p, d: p["missing"], eval_data=VAL)
    with pytest.raises(ValueError, match=r"rank_by.*valid: \['mse', 'mae', 'loss'\].*'acc'"):
        sweep(eval_fn=metrics, eval_data=VAL, rank_by="acc")
    with pytest.raises(ValueError, match=r"rank_by.*valid: \['loss'\]; got rank_by='mse'"):
        sweep(rank_by="mse")
    with pytest.raises(ValueError, match="rank_mode must be 'min' or 'max'; got rank_mode='best'"):
        sweep(rank_mode="best")
    with pytest.raises(ValueError, match="keep_best=True.*rank_by='loss'"):
        sweep(eval_fn=metrics, eval_data=VAL, rank_by="loss", keep_best=True)
    with pytest.raises(ValueError, match="keep_best=True"):
        sweep(keep_best=True)
    assert X.shape[0] == Y.shape[0]  # the shared data is untouched by the checks
