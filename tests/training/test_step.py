"""make_train_step with donated buffers: every optimizer's state can be donated
together with the params, and a donated loop equals an undonated one."""

import functools

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from conftest import DATA, PARAMS, mse

import jaxopt_core as jc
from jaxopt_core.training import step as step_module
from jaxopt_core.training.step import DonatingStep, unalias

# Optimizers outside the shared table whose state could hold the params.
EXTRA = {
    "fista": functools.partial(jc.proximal_gradient, l1=0.01, acceleration=True),
    "ista": functools.partial(jc.proximal_gradient, l1=0.01),
    "prox_chain": lambda lr: jc.chain(jc.adam(lr), jc.proximal_step(lr, l1=0.01)),
}


def _buffers(tree):
    return [x.unsafe_buffer_pointer() for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]


def _assert_no_aliasing(opt):
    params = jax.tree.map(jnp.copy, PARAMS)
    state = opt.init(params)
    pointers = _buffers(params) + _buffers(state)
    assert len(pointers) == len(set(pointers)), jax.tree.structure(state)


def test_table_init_returns_no_aliased_buffers(opt_case):
    name, kw = opt_case
    _assert_no_aliasing(getattr(jc, name)(0.05, **kw))


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_init_returns_no_aliased_buffers(name):
    _assert_no_aliasing(EXTRA[name](0.05))
    # Under jit too: XLA returns an input that an output merely forwards.
    opt = EXTRA[name](0.05)
    params = jax.tree.map(jnp.copy, PARAMS)
    assert not set(_buffers(params)) & set(_buffers(jax.jit(opt.init)(params)))


def _donated_equals_undonated(opt, steps=4):
    donated, plain = jc.make_train_step(mse, opt), jc.make_train_step(mse, opt, donate=False)
    p1 = jax.tree.map(jnp.copy, PARAMS)
    s1 = opt.init(p1)
    first = jax.tree.leaves(p1)[0]
    p2, s2 = PARAMS, opt.init(PARAMS)
    for _ in range(steps):
        p1, s1, l1 = donated(p1, s1, DATA)
        p2, s2, l2 = plain(p2, s2, DATA)
        chex.assert_trees_all_equal((p1, s1, l1), (p2, s2, l2))
    assert first.is_deleted()  # the buffers really were donated
    return p1, s1


def test_fista_train_step_donates_and_equals_an_undonated_loop():
    opt = EXTRA["fista"](0.1)
    p, s = _donated_equals_undonated(opt)
    assert int(s.count) == 4


@pytest.mark.slow
def test_table_train_step_donates_and_equals_an_undonated_loop(opt_case):
    name, kw = opt_case
    _donated_equals_undonated(getattr(jc, name)(0.05, **kw))


def _anchored(strength):
    """An optax-style transform whose state holds the params themselves (as a
    user's transform or a third-party one may): updates pull towards them."""

    def init(params):
        return {"anchor": params}

    def update(updates, state, params):
        pulled = jax.tree.map(lambda u, p, a: u + strength * (p - a), updates, params,
                              state["anchor"])
        return pulled, state

    return optax.chain(optax.GradientTransformation(init, update), optax.sgd(0.05))


def test_train_step_copies_aliased_leaves_and_only_then(monkeypatch):
    opt = _anchored(0.5)
    params = jax.tree.map(jnp.copy, PARAMS)
    state = opt.init(params)
    assert state[0]["anchor"]["w"] is params["w"]  # aliased: donating both would fail
    calls = []

    def counting(tree):
        out = unalias(tree)
        calls.append(out is not tree)
        return out

    monkeypatch.setattr(step_module, "unalias", counting)
    step = jc.make_train_step(mse, opt)
    assert isinstance(step, DonatingStep)
    p, s = params, state
    for _ in range(3):
        p, s, _ = step(p, s, DATA)
    # Checked (and copied) on the first call only: later calls get back the
    # outputs of the previous one.
    assert calls == [True]
    ref = jc.make_train_step(mse, opt, donate=False)
    q, r = PARAMS, opt.init(PARAMS)
    for _ in range(3):
        q, r, _ = ref(q, r, DATA)
    chex.assert_trees_all_equal((p, s), (q, r))
    # New arrays from elsewhere are checked again; nothing aliases, nothing is copied.
    fresh = jax.tree.map(jnp.copy, (p, s))
    step(*fresh, DATA)
    assert calls == [True, False]
    assert step.lower(q, r, DATA) is not None  # the jitted function's attributes


def test_unalias_copies_repeats_only():
    w = jnp.arange(3.0)
    tree = {"a": w, "b": [w, jnp.ones(2)], "c": 1.0}
    assert unalias({"a": w, "b": jnp.ones(2)}) is not None
    same = {"a": w, "b": jnp.ones(2)}
    assert unalias(same) is same
    out = unalias(tree)
    assert out["a"] is w and out["b"][0] is not w and out["b"][1] is tree["b"][1]
    chex.assert_trees_all_equal(out, tree)
    assert len(set(_buffers(out))) == 3
