"""The protocol: Optimizer, chain (with optax members), apply_updates, pytrees."""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_core as jc


class Layer(NamedTuple):
    w: jax.Array
    b: jax.Array


@pytest.mark.slow
def test_chain_accepts_optax_transforms_and_matches_optax():
    ours = jc.chain(optax.clip(0.5), jc.scale_by_adam(), jc.scale_by_learning_rate(0.1))
    ref = optax.chain(optax.clip(0.5), optax.scale_by_adam(), optax.scale_by_learning_rate(0.1))
    params = {"layer": Layer(jnp.ones((2, 2)), jnp.zeros(2)), "skip": None}
    grads = {"layer": Layer(jnp.full((2, 2), 3.0), jnp.full(2, -0.2)), "skip": None}
    s1, s2 = ours.init(params), ref.init(params)
    for _ in range(3):
        u1, s1 = ours.update(grads, s1, params)
        u2, s2 = ref.update(grads, s2, params)
        chex.assert_trees_all_close(u1, u2, rtol=1e-6)
    assert isinstance(u1["layer"], Layer) and u1["skip"] is None


def test_chain_rejects_non_transforms():
    with pytest.raises(TypeError, match="argument 1"):
        jc.chain(jc.identity(), "adam")


def test_apply_updates_keeps_dtypes_and_none():
    params = {"a": jnp.ones(3, jnp.bfloat16), "b": None, "c": [jnp.ones(2, jnp.float16)]}
    updates = {"a": jnp.full(3, 0.25, jnp.float32), "b": None, "c": [jnp.full(2, 0.5)]}
    out = jc.apply_updates(params, updates)
    assert out["a"].dtype == jnp.bfloat16 and out["c"][0].dtype == jnp.float16
    assert out["b"] is None
    np.testing.assert_array_equal(np.asarray(out["a"], np.float32), 1.25)


@pytest.mark.slow
def test_optimizers_work_on_namedtuples_lists_and_scalars():
    params = [Layer(jnp.ones(3), jnp.array(2.0)), (jnp.zeros(()),)]
    opt = jc.adamw(0.1, mask=lambda p: [Layer(True, False), (False,)])
    state = opt.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    u, state = jax.jit(opt.update)(grads, state, params)
    ref = optax.adamw(0.1, mask=lambda p: [Layer(True, False), (False,)])
    ur, _ = ref.update(grads, ref.init(params), params)
    chex.assert_trees_all_close(u, ur, rtol=1e-6)


def test_identity_and_empty_state():
    t = jc.identity()
    assert t.init({"a": 1.0}) == jc.EmptyState()
    u, s = t.update({"a": jnp.ones(1)}, jc.EmptyState())
    np.testing.assert_array_equal(np.asarray(u["a"]), 1.0)


@pytest.mark.slow
def test_building_blocks_match_optax():
    g = {"x": jnp.array([1.0, -2.0, 0.5])}
    pairs = [
        (jc.scale_by_adam(b1=0.8), optax.scale_by_adam(b1=0.8)),
        (jc.scale_by_rms(decay=0.5), optax.scale_by_rms(decay=0.5)),
        (jc.scale_by_stddev(decay=0.5), optax.scale_by_stddev(decay=0.5)),
        (jc.scale_by_rss(), optax.scale_by_rss()),
        (jc.trace(0.9, nesterov=True), optax.trace(0.9, nesterov=True)),
        (jc.add_decayed_weights(0.3), optax.add_decayed_weights(0.3)),
        (jc.scale_by_learning_rate(0.1), optax.scale_by_learning_rate(0.1)),
        (jc.scale_by_schedule(lambda n: 0.5**n), optax.scale_by_schedule(lambda n: 0.5**n)),
    ]
    for ours, ref in pairs:
        s1, s2 = ours.init(g), ref.init(g)
        for _ in range(3):
            u1, s1 = ours.update(g, s1, g)
            u2, s2 = ref.update(g, s2, g)
            chex.assert_trees_all_close(u1, u2, rtol=1e-6)


def test_count_saturates_instead_of_wrapping():
    top = jnp.iinfo(jnp.int32).max
    assert int(jc.safe_increment(jnp.array(top, jnp.int32))) == top
    assert int(jc.safe_increment(jnp.array(5, jnp.int32))) == 6


def test_weights_only_mask_and_prefix_masks():
    params = {"dense": {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}, "scale": jnp.ones(())}
    assert jc.weights_only_mask(params) == {"dense": {"b": False, "w": True}, "scale": False}
    full = jc.resolve_mask({"dense": True, "scale": False}, params)
    assert full == {"dense": {"b": True, "w": True}, "scale": False}
    with pytest.raises(ValueError, match="prefix"):
        jc.resolve_mask({"other": True}, params)
    with pytest.raises(TypeError, match="bools"):
        jc.resolve_mask({"dense": 1, "scale": 0}, params)
