"""Tests for jaxopt_core.training.fit: make_train_step and fit."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import DATA, LEARNING_RATES, PARAMS, X, Y, count_compiles, mse

import jaxopt_core as jc


@jax.jit
def _optax_run(params, data, lr, momentum):
    """A hand-written optax loop: 30 steps of sgd with momentum (traced hyperparameters)."""
    opt = optax.sgd(lr, momentum=momentum)

    def body(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(mse)(p, data)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), loss

    (p, _), losses = jax.lax.scan(body, (params, opt.init(params)), None, length=30)
    return p, losses


def test_fit_matches_optax_loop(opt_case):
    name, kwargs = opt_case
    lr = LEARNING_RATES[name]
    opt_jc = getattr(jc, name)(lr, **kwargs)
    opt_ox = getattr(optax, name)(lr, **kwargs)

    @jax.jit
    def step(params, state):
        loss, g = jax.value_and_grad(mse)(params, DATA)
        updates, state = opt_ox.update(g, state, params)
        return optax.apply_updates(params, updates), state, loss

    params, state, losses = PARAMS, opt_ox.init(PARAMS), []
    for _ in range(30):
        params, state, loss = step(params, state)
        losses.append(loss)
    res = jc.fit(mse, PARAMS, opt_jc, DATA, steps=30)
    chex.assert_trees_all_close(res.params, params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.losses, np.stack(losses), rtol=1e-5)
    assert res.losses.shape == (30,)


def test_fit_with_optax_optimizer_and_scan_loop():
    res = jc.fit(mse, PARAMS, optax.sgd(0.05, momentum=0.9), DATA, steps=30)
    p, losses = _optax_run(PARAMS, DATA, 0.05, 0.9)
    chex.assert_trees_all_close(res.params, p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.losses, losses, rtol=1e-5)


@pytest.mark.slow
def test_train_step_loop_equals_fit_and_donates():
    opt = jc.adam(0.05)
    step = jc.make_train_step(mse, opt)
    params = jax.tree.map(jnp.copy, PARAMS)
    state = opt.init(params)
    first = params["w"]
    losses = []
    for _ in range(20):
        params, state, loss = step(params, state, DATA)
        losses.append(loss)
    assert first.is_deleted()  # donated: XLA reused the buffer
    res = jc.fit(mse, PARAMS, opt, DATA, steps=20)
    chex.assert_trees_all_close(res.params, params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.losses, np.stack(losses), rtol=1e-5)
    # fit's opt_state is in the tree layout: training goes on from it.
    chex.assert_trees_all_equal_structs(res.opt_state, state)
    chex.assert_trees_all_close(res.opt_state, state, rtol=1e-5, atol=1e-6)
    step(res.params, res.opt_state, DATA)

    keep = jc.make_train_step(mse, opt, donate=False)
    p0 = jax.tree.map(jnp.copy, PARAMS)
    keep(p0, opt.init(p0), DATA)
    assert not p0["w"].is_deleted()


@pytest.mark.slow
def test_minibatch_fit_follows_documented_order():
    """Epoch e is permutation(fold_in(key, e), n), cut into n // batch_size batches."""
    opt, key, n, bs = jc.sgd(0.05), jax.random.key(3), 32, 10
    res = jc.fit(mse, PARAMS, opt, DATA, steps=7, batch_size=bs, key=key)
    step = jc.make_train_step(mse, opt, donate=False)
    params, state, losses = PARAMS, opt.init(PARAMS), []
    for t in range(7):
        epoch, b = divmod(t, n // bs)
        idx = jax.random.permutation(jax.random.fold_in(key, epoch), n)[b * bs:(b + 1) * bs]
        params, state, loss = step(params, state, (X[idx], Y[idx]))
        losses.append(loss)
    chex.assert_trees_all_close(res.params, params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.losses, np.stack(losses), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("n, batch_size", [(12, 4), (10, 4)])
def test_epochs_visit_every_example_once(n, batch_size):
    """Example i contributes 2**i to its batch's loss, so each loss is a bitmask."""
    data = 2.0 ** jnp.arange(n)

    def loss(w, batch):
        return jnp.sum(batch) + 0.0 * w

    per_epoch, epochs = n // batch_size, 3
    res = jc.fit(loss, jnp.zeros(()), jc.sgd(0.1), data, steps=per_epoch * epochs,
                 batch_size=batch_size, key=jax.random.key(7))
    masks = np.asarray(res.losses).astype(np.int64).reshape(epochs, per_epoch)
    seen_per_epoch = []
    for epoch in masks:
        seen = 0
        for m in epoch:
            assert bin(int(m)).count("1") == batch_size
            assert seen & int(m) == 0  # no example twice in an epoch
            seen |= int(m)
        assert bin(seen).count("1") == per_epoch * batch_size
        seen_per_epoch.append(seen)
    if n % batch_size:
        assert len(set(seen_per_epoch)) > 1  # a different remainder is dropped each epoch
    assert len({tuple(e) for e in masks.tolist()}) == epochs  # reshuffled every epoch


@pytest.mark.slow
def test_fit_compiles_once_for_new_values():
    opt = jc.adam(0.01)
    jc.fit(mse, PARAMS, opt, DATA, steps=5, batch_size=8)
    new_params = {"w": jnp.ones(3), "b": jnp.ones(())}
    new_data = (X + 1.0, Y * 2.0)
    with count_compiles() as compiles:
        res = jc.fit(mse, new_params, opt, new_data, steps=5, batch_size=8, key=jax.random.key(9))
        jax.block_until_ready(res)
    assert compiles == []


@pytest.mark.slow
def test_fit_progress_bar(capsys):
    res = jc.fit(mse, PARAMS, jc.sgd(0.05), DATA, steps=250, progress=True)
    err = capsys.readouterr().err
    assert "fit" in err and "250/250" in err
    np.testing.assert_allclose(
        res.losses, jc.fit(mse, PARAMS, jc.sgd(0.05), DATA, steps=250).losses, rtol=1e-6
    )


def test_fit_validation_errors():
    opt = jc.sgd(0.1)
    with pytest.raises(ValueError, match="steps.*steps=0"):
        jc.fit(mse, PARAMS, opt, DATA, steps=0)
    with pytest.raises(TypeError, match="steps.*2.5"):
        jc.fit(mse, PARAMS, opt, DATA, steps=2.5)
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, n=32\]; got batch_size=33"):
        jc.fit(mse, PARAMS, opt, DATA, steps=1, batch_size=33)
    with pytest.raises(ValueError, match="batch_size.*batch_size=0"):
        jc.fit(mse, PARAMS, opt, DATA, steps=1, batch_size=0)
    with pytest.raises(ValueError, match=r"leading.*data\[0\]: 32, data\[1\]: 31"):
        jc.fit(mse, PARAMS, opt, (X, Y[:31]), steps=1, batch_size=4)
    with pytest.raises(ValueError, match="layout"):
        jc.fit(mse, PARAMS, opt, DATA, steps=1, layout="flattened")
    with pytest.raises(TypeError, match="key"):
        jc.fit(mse, PARAMS, opt, DATA, steps=1, batch_size=4, key=3)
    with pytest.raises(TypeError, match="optimizer"):
        jc.fit(mse, PARAMS, optax.sgd, DATA, steps=1)
    with pytest.raises(TypeError, match="loss_fn"):
        jc.make_train_step(None, opt)
