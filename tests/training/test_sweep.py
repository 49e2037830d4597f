"""Tests for jaxopt_core.training.sweep: sweeps equal fits, isolation, chunking, results."""

import functools

import chex
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from conftest import DATA, LEARNING_RATES, PARAMS, X, Y, count_compiles, mse

import jaxopt_core as jc


def init(key):
    return {"w": jax.random.normal(key, (3,)), "b": jnp.zeros(())}


def member(res, i):
    return jax.tree.map(lambda x: x[i], res.params)


def test_member_equals_fit(opt_case):
    name, kwargs = opt_case
    lr = LEARNING_RATES[name]
    grid = {"learning_rate": np.array([lr, lr / 3])}
    res = jc.sweep(mse, PARAMS, functools.partial(getattr(jc, name), **kwargs), DATA,
                   grid=grid, steps=25)
    ref = jc.fit(mse, PARAMS, getattr(jc, name)(grid["learning_rate"][1], **kwargs), DATA, steps=25)
    chex.assert_trees_all_close(member(res, 1), ref.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.losses[1], ref.losses, rtol=1e-5)
    assert not np.allclose(res.losses[0], res.losses[1])


@pytest.mark.slow
def test_several_hyperparameters_minibatch_and_seeds():
    grid = jc.grid_product(learning_rate=[0.01, 0.1], b1=[0.5, 0.9], seed=[0, 4])
    key = jax.random.key(5)
    res = jc.sweep(mse, init, jc.adam, DATA, grid=grid, steps=20, batch_size=8, key=key)
    assert res.losses.shape == (8, 20) and res.params["w"].shape == (8, 3)
    for i in (0, 5):
        init_key, data_key = jc.seed_keys(key, grid["seed"][i])
        opt = jc.adam(grid["learning_rate"][i], b1=grid["b1"][i])
        ref = jc.fit(mse, init(init_key), opt, DATA, steps=20, batch_size=8, key=data_key)
        chex.assert_trees_all_close(member(res, i), ref.params, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.losses[i], ref.losses, rtol=1e-5)


@pytest.mark.slow
def test_penalties_in_the_grid_equal_regularized():
    grid = {"learning_rate": np.array([0.05, 0.05]), "l1": np.array([0.0, 0.1]),
            "l2": np.array([0.5, 0.2])}
    res = jc.sweep(mse, PARAMS, jc.sgd, DATA, grid=grid, steps=25)
    for i in (0, 1):
        loss = jc.regularized(mse, l1=grid["l1"][i], l2=grid["l2"][i])
        ref = jc.fit(loss, PARAMS, jc.sgd(0.05), DATA, steps=25)
        chex.assert_trees_all_close(member(res, i), ref.params, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.losses[i], ref.losses, rtol=1e-5)


@pytest.mark.slow
def test_divergence_is_isolated_bit_for_bit():
    lrs = np.array([0.01, 0.1, 50.0, 0.3])  # sgd at lr=50 blows up on this problem
    res = jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": lrs}, steps=200)
    assert res.diverged.tolist() == [False, False, True, False]
    dead = np.asarray(res.losses[2])
    first_nan = int(np.argmax(np.isnan(dead)))
    assert first_nan > 0 and np.all(np.isnan(dead[first_nan:]))
    assert np.all(np.isfinite(np.asarray(res.params["w"][2])))  # frozen at its last finite state
    assert res.diverged_at.tolist() == [-1, -1, first_nan - 1, -1]  # its loss is kept as computed
    # Ranked by the mean training loss of the last tenth of the steps (20 here).
    tail = np.mean(np.asarray(res.losses)[:, -20:], axis=1)
    assert res.best_index == int(np.argmin(np.where(res.diverged, np.inf, tail)))
    # Same program, member 2 replaced by a tame one: the others do not move by a bit.
    tame_lrs = np.where(lrs > 1, 0.05, lrs)
    tame = jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": tame_lrs}, steps=200)
    keep = np.array([0, 1, 3])
    np.testing.assert_array_equal(res.losses[keep], tame.losses[keep])
    chex.assert_trees_all_equal(jax.tree.map(lambda x: x[keep], res.params),
                                jax.tree.map(lambda x: x[keep], tame.params))
    # And a sweep without member 2 at all: 3 rows instead of 4 in `mse`'s
    # `x @ w`, which XLA may add up in another order (it does on an Intel Xeon
    # with AVX-512: 2.4e-7 apart after 200 steps), so equal to float32 rounding.
    without = jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": lrs[[0, 1, 3]]}, steps=200)
    assert not without.diverged.any()
    np.testing.assert_allclose(res.losses[keep], without.losses, rtol=1e-5)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[keep], res.params), without.params,
                                rtol=1e-5, atol=1e-6)


def mse_without_products(params, batch):
    """``mse`` written without a matrix product (a multiply and a sum per example)."""
    x, y = batch
    return jnp.mean((jnp.sum(x * params["w"], axis=1) + params["b"] - y) ** 2)


CHUNK_GRID = {"learning_rate": np.linspace(0.01, 0.2, 7), "momentum": np.linspace(0.0, 0.9, 7)}


@pytest.mark.slow
def test_chunking_is_bit_for_bit_without_matrix_products():
    # The program does not depend on the chunk: same minibatches, keys, steps
    # and padding, member by member (7 members, chunks of 3: the last padded).
    def run(**kw):
        return jc.sweep(mse_without_products, PARAMS, jc.sgd, DATA, grid=CHUNK_GRID, steps=100,
                        batch_size=8, **kw)

    whole, chunked = run(), run(chunk_size=3)
    np.testing.assert_array_equal(chunked.losses, whole.losses)
    chex.assert_trees_all_equal(chunked.params, whole.params)
    assert chunked.losses.shape == (7, 100)


@pytest.mark.slow
def test_chunking_moves_matrix_products_by_rounding_only():
    # With a shared input, `x @ w` over the members is one matrix product whose
    # rows are the members; XLA:CPU's kernel for it (and so the order in which
    # each row's sum is added up) depends on the number of rows, so a chunk of
    # 3 and the whole sweep of 7 round differently in the last bit. That
    # difference then travels through the run: this grid goes up to momentum
    # 0.9 at lr 0.2 on minibatches of 8, which amplifies it the most of the
    # grids measured (see "Equality across layouts" in jaxopt_core.training.sweep).
    whole = jc.sweep(mse, PARAMS, jc.sgd, DATA, grid=CHUNK_GRID, steps=100, batch_size=8)
    chunked = jc.sweep(mse, PARAMS, jc.sgd, DATA, grid=CHUNK_GRID, steps=100, batch_size=8,
                       chunk_size=3)
    np.testing.assert_allclose(chunked.losses, whole.losses, rtol=1e-5)
    chex.assert_trees_all_close(chunked.params, whole.params, rtol=1e-5, atol=1e-6)


def test_new_values_compile_nothing():
    grid = {"learning_rate": np.array([0.01, 0.02, 0.03]), "l2": np.zeros(3)}
    jc.sweep(mse, PARAMS, jc.sgd, DATA, grid=grid, steps=10, batch_size=8)
    new_grid = {"learning_rate": np.array([0.1, 0.2, 0.3]), "l2": np.full(3, 0.1)}
    new_params, new_data = {"w": jnp.ones(3), "b": jnp.ones(())}, (X * 2, Y)
    new_key = jax.random.key(1)
    with count_compiles() as compiles:
        res = jc.sweep(mse, new_params, jc.sgd, new_data, grid=new_grid, steps=10, batch_size=8,
                       key=new_key)
        jax.block_until_ready(res.losses)
    assert compiles == []


def test_grid_product():
    g = jc.grid_product(learning_rate=[1e-3, 1e-2], seed=np.arange(3))
    assert g["learning_rate"].tolist() == [1e-3] * 3 + [1e-2] * 3
    assert g["seed"].tolist() == [0, 1, 2, 0, 1, 2]
    assert g["seed"].dtype.kind == "i"
    with pytest.raises(ValueError, match="momentum"):
        jc.grid_product(momentum=[[0.9]])


def test_grid_errors():
    lr = np.array([0.1, 0.2])
    with pytest.raises(ValueError, match=r"'lr'.*valid names: .*learning_rate.*momentum.*seed"):
        jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"lr": lr}, steps=2)
    with pytest.raises(ValueError, match="one length"):
        jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": lr, "momentum": [0.9]}, steps=2)
    with pytest.raises(ValueError, match="learning_rate must be"):
        jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": -lr}, steps=2)
    with pytest.raises(ValueError, match="seed"):
        jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": lr, "seed": lr}, steps=2)
    with pytest.raises(ValueError, match="chunk_size"):
        jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": lr}, steps=2, chunk_size=0)
    with pytest.raises(TypeError, match="Python value"):
        jc.sweep(mse, PARAMS, jc.adam, DATA, steps=2,
                 grid={"learning_rate": lr, "nesterov": np.array([True, False])})


@pytest.mark.slow
def test_result_helpers():
    matplotlib.use("Agg")
    lrs = np.array([0.003, 0.03, 0.3, 80.0])
    res = jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": lrs}, steps=100)
    assert res.best_index == 2
    assert repr(res) == (
        "SweepResult(K=4, steps=100, grid=['learning_rate'], diverged=1, best_index=2)"
    )
    chex.assert_trees_all_equal(res.best_params(), member(res, 2))
    frame = res.to_dataframe()
    assert list(frame.columns) == ["learning_rate", "final_loss", "diverged", "diverged_at",
                                   "loss", "rank"]
    assert frame["diverged"].tolist() == [False, False, False, True]
    assert np.isnan(frame["final_loss"][3])
    assert frame["diverged_at"][3] >= 0 and frame["diverged_at"][:3].tolist() == [-1, -1, -1]
    np.testing.assert_allclose(frame["loss"][:3], np.mean(np.asarray(res.losses)[:3, -10:], 1),
                               rtol=1e-6)
    assert frame["rank"].tolist() == [3, 2, 1, 4]  # the diverged member last
    fig = res.plot()
    assert len(fig.axes) == 3  # curves, final losses, colour bar
    assert fig.axes[1].get_xscale() == "log"
    fig.savefig(__import__("io").BytesIO(), format="png")


def test_plot_without_learning_rate_and_all_diverged(capsys):
    sgd_momentum = functools.partial(jc.sgd, 100.0)
    res = jc.sweep(mse, PARAMS, sgd_momentum, DATA, grid={"momentum": np.array([0.0, 0.5])},
                   steps=120, progress=True)
    assert "120/120" in capsys.readouterr().err
    assert res.diverged.tolist() == [True, True] and res.best_index is None
    with pytest.raises(ValueError, match="every member"):
        res.best_params()
    fig = res.plot()
    assert fig.axes[1].get_xlabel() == "momentum"
