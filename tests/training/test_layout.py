"""Tests for jaxopt_core.training.layout and the flat layout inside fit and sweep."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_core as jc
from jaxopt_core.core.base import needs_tree_layout
from jaxopt_core.training.layout import Flat, ravel, unravel_tree

TREE = {
    "dense": [{"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)} for _ in range(3)],
    "scale": jnp.asarray(2.0),
    "half": jnp.arange(4, dtype=jnp.bfloat16),
    "none": None,
}

X = jax.random.normal(jax.random.key(0), (16, 2))
Y = jax.random.normal(jax.random.key(1), (16, 3))


def mlp_loss(params, batch):
    x, y = batch
    for layer in params["dense"]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])[:, :2]
    out = jnp.concatenate([x, x[:, :1]], axis=1) * params["scale"]
    return jnp.mean((out - y) ** 2) + 1e-3 * jnp.sum(params["half"].astype(jnp.float32) ** 2)


def init_params():
    ks = jax.random.split(jax.random.key(2), 3)
    dense = [{"w": 0.5 * jax.random.normal(k, (2, 3)), "b": jnp.zeros(3)} for k in ks]
    return {"dense": dense, "scale": jnp.asarray(1.0), "half": jnp.ones(4, jnp.bfloat16)}


def test_ravel_round_trip_mixed_dtypes():
    flat = ravel(TREE)
    assert flat.layout.dtypes == ("float32", "bfloat16")
    assert [b.shape for b in flat.buffers] == [(3 * 9 + 1,), (4,)]
    back = flat.unravel()
    assert back["none"] is None
    chex.assert_trees_all_equal(back, TREE)
    chex.assert_trees_all_equal_dtypes(back, TREE)


@pytest.mark.slow
def test_leaves_are_packed_in_blocks():
    tree = [jnp.full((2,), i, jnp.float32) for i in range(70)] + [jnp.ones(3, jnp.int32)]
    flat = ravel(tree)
    assert [b.shape[0] for b in flat.buffers] == [64, 64, 12, 3]
    assert flat.layout.dtypes == ("float32",) * 3 + ("int32",)
    chex.assert_trees_all_equal(flat.unravel(), tree)
    assert len(ravel(tree, max_leaves=1000).buffers) == 2


def test_flat_is_a_pytree_with_static_layout():
    flat = ravel(TREE)
    doubled = jax.tree.map(lambda b: 2 * b, flat)
    assert isinstance(doubled, Flat) and doubled.layout == flat.layout
    expected = jax.tree.map(lambda x: 2 * x, TREE["dense"])
    chex.assert_trees_all_close(doubled.unravel()["dense"], expected)
    # jit caches on the layout: same shapes, same program.
    f = jax.jit(lambda f: f.unravel())
    f(flat)
    f(doubled)
    assert f._cache_size() == 1


@pytest.mark.slow
def test_gradient_through_unravel_is_the_flat_gradient():
    params = init_params()
    batch = (X, Y)
    flat_grad = jax.jit(jax.grad(lambda f: mlp_loss(f.unravel(), batch)))(ravel(params))
    tree_grad = jax.jit(jax.grad(mlp_loss))(params, batch)
    chex.assert_trees_all_close(flat_grad.unravel(), tree_grad, rtol=1e-6)


@pytest.mark.slow
def test_unravel_tree_gives_the_tree_state():
    params = init_params()
    opt = jc.rmsprop(0.01, centered=True, momentum=0.9)
    flat_state = opt.init(ravel(params))
    state = unravel_tree(flat_state)
    chex.assert_trees_all_equal_structs(state, opt.init(params))
    batched = jax.tree.map(lambda x: jnp.stack([x, x]), flat_state)
    stacked = unravel_tree(batched, batched=True)
    assert stacked[0].nu["dense"][0]["w"].shape == (2, 2, 3)


@pytest.mark.slow
def test_fit_flat_equals_tree():
    opt = jc.adam(0.05)
    params = init_params()
    flat = jc.fit(mlp_loss, params, opt, (X, Y), steps=40, layout="flat")
    tree = jc.fit(mlp_loss, params, opt, (X, Y), steps=40, layout="tree")
    chex.assert_trees_all_close(flat.params, tree.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(flat.opt_state, tree.opt_state, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat.losses, tree.losses, rtol=1e-5)
    chex.assert_trees_all_equal_dtypes(flat.params, params)


def test_sweep_flat_equals_tree():
    grid = {"learning_rate": np.array([0.01, 0.05])}
    params = init_params()
    opt_fn = functools.partial(jc.sgd, momentum=0.9)
    flat = jc.sweep(mlp_loss, params, opt_fn, (X, Y), grid=grid, steps=30, layout="flat")
    tree = jc.sweep(mlp_loss, params, opt_fn, (X, Y), grid=grid, steps=30, layout="tree")
    chex.assert_trees_all_close(flat.params, tree.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat.losses, tree.losses, rtol=1e-5)


@pytest.mark.slow
def test_masked_optimizers_stay_on_the_tree():
    params = init_params()
    mask = jax.tree.map(lambda x: x.ndim == 2, params)
    opt = jc.adamw(0.05, weight_decay=0.5, mask=mask)
    assert needs_tree_layout(opt)
    auto = jc.fit(mlp_loss, params, opt, (X, Y), steps=10)
    tree = jc.fit(mlp_loss, params, opt, (X, Y), steps=10, layout="tree")
    chex.assert_trees_all_equal(auto.params, tree.params)
    with pytest.raises(ValueError, match="layout='flat'"):
        jc.fit(mlp_loss, params, opt, (X, Y), steps=10, layout="flat")
    masked = functools.partial(jc.adamw, weight_decay=0.5, mask=mask)
    res = jc.sweep(mlp_loss, params, masked, (X, Y), grid={"learning_rate": np.array([0.05])},
                   steps=10)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], res.params), tree.params,
                                rtol=1e-5, atol=1e-6)
