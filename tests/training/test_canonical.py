"""Value keys for optimizers and losses built by library code: equal objects
share one compiled program of ``fit`` and ``sweep``; anything the key cannot
vouch for (user functions, tracers, other values) never does."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxopt_core as jc
from jaxopt_core.training.canonical import canonical, value_key
from tests.conftest import DATA, OPTIMIZER_TABLE, PARAMS, TRANSFORM_TABLE, count_compiles, mse

# Rows whose build makes a function of the test's own (a mask written as a
# lambda, compared by identity): two builds differ.
BUILT_WITH_NEW_OBJECTS = {"masked-callable-sgd"}


def _build(module, name, kwargs, lr):
    return getattr(module, name)(lr, **kwargs)


@pytest.mark.parametrize("name, kwargs", OPTIMIZER_TABLE,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMIZER_TABLE)])
def test_optimizer_table_built_twice_has_one_key_and_another_rate_another(name, kwargs):
    for module in (jc, optax):
        if not hasattr(module, name):
            continue
        a, b = _build(module, name, kwargs, 0.01), _build(module, name, kwargs, 0.01)
        assert a is not b
        assert value_key(a) is not None and value_key(a) == value_key(b), (module, name)
        assert value_key(_build(module, name, kwargs, 0.02)) != value_key(a), (module, name)


def _changed(value):
    if isinstance(value, bool):
        return not value
    return value + 1 if isinstance(value, int) else value / 2


@pytest.mark.parametrize("name, kwargs", [row for row in OPTIMIZER_TABLE if row[1]],
                         ids=[f"{n}-{i}" for i, (n, kw) in enumerate(OPTIMIZER_TABLE) if kw])
def test_every_changed_argument_changes_the_key(name, kwargs):
    tried = 0
    for module in (jc, optax):
        if not hasattr(module, name):
            continue
        base = value_key(_build(module, name, kwargs, 0.01))
        for arg, value in kwargs.items():
            changed = {**kwargs, arg: _changed(value)}
            try:
                other = _build(module, name, changed, 0.01)
            except ValueError:  # out of the argument's range
                continue
            tried += 1
            assert value_key(other) != base, (module.__name__, name, arg)
    assert tried >= len(kwargs)


@pytest.mark.parametrize("case", TRANSFORM_TABLE, ids=[c[0] for c in TRANSFORM_TABLE])
def test_transform_table_keys(case):
    ident, build, h = case
    for module in (jc, optax):
        a, b = build(module, h), build(module, h)
        if ident in BUILT_WITH_NEW_OBJECTS:
            assert value_key(a) != value_key(b)
        else:
            assert value_key(a) is not None and value_key(a) == value_key(b), (module, ident)
        assert value_key(build(module, h / 2)) != value_key(a), (module, ident)


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0, 10.0), st.floats(0.0, 10.0))
def test_keys_tell_every_float_apart(x, y):
    same = value_key(jc.adam(x)) == value_key(jc.adam(y))
    assert same == (x.hex() == y.hex())
    assert (value_key(optax.sgd(x)) == value_key(optax.sgd(y))) == (x.hex() == y.hex())


def test_values_that_compare_equal_in_python_still_differ():
    assert value_key(jc.sgd(0.0)) != value_key(jc.sgd(-0.0))
    assert value_key(jc.sgd(1)) != value_key(jc.sgd(1.0))
    assert value_key(jc.sgd(0.1, momentum=0.9, nesterov=True)) != value_key(
        jc.sgd(0.1, momentum=0.9, nesterov=1))
    lr32, lr16 = jnp.float32(0.5), jnp.asarray(0.5, jnp.bfloat16)
    assert value_key(jc.sgd(lr32)) != value_key(jc.sgd(lr16))
    assert value_key(jc.sgd(jnp.asarray(0.5))) != value_key(jc.sgd(np.float32(0.5)))
    assert value_key(jc.sgd(jnp.asarray(0.5))) == value_key(jc.sgd(jnp.asarray(0.5)))


def test_user_functions_count_by_identity():
    def schedule(count):
        return 0.1 / (1 + count)

    def same_code(count):
        return 0.1 / (1 + count)

    assert value_key(jc.sgd(schedule)) == value_key(jc.sgd(schedule))
    assert value_key(jc.sgd(schedule)) != value_key(jc.sgd(same_code))
    loss = jc.regularized(mse, l1=0.1)
    assert value_key(loss) == value_key(jc.regularized(mse, l1=0.1))
    assert value_key(loss) != value_key(jc.regularized(lambda p, b: mse(p, b), l1=0.1))
    assert value_key(loss) != value_key(jc.regularized(mse, l1=0.2))


def test_objects_of_the_users_classes_count_by_identity_or_by_all_attributes():
    @dataclasses.dataclass(frozen=True)
    class Constant:
        rate: float

        def __call__(self, count):
            return self.rate

    a, b = Constant(0.1), Constant(0.1)
    assert value_key(jc.sgd(a)) == value_key(jc.sgd(a))
    assert value_key(jc.sgd(a)) != value_key(jc.sgd(b))

    class Tagged(optax.GradientTransformation):  # has a __dict__
        pass

    first, second = Tagged(*optax.sgd(0.1)), Tagged(*optax.sgd(0.1))
    first.note, second.note = 1, 2
    assert value_key(first) != value_key(second)
    second.note = 1
    assert value_key(first) == value_key(second)


def test_no_key_for_tracers_cycles_big_arrays_and_unhashable_objects():
    seen = []

    @jax.jit
    def inside(lr):
        seen.append(value_key(jc.adam(lr)))
        return lr

    inside(0.1)
    assert seen == [None]
    cycle = []
    cycle.append(cycle)
    assert value_key(jc.sgd(0.1)) is not None
    assert value_key(functools.partial(jc.sgd, cycle)) is None
    assert value_key(functools.partial(jc.sgd, jnp.zeros(1 << 19))) is None

    class Unhashable:
        __hash__ = None

    assert value_key(functools.partial(jc.sgd, Unhashable())) is None
    lone = jc.sgd(jnp.zeros(1 << 19))
    assert canonical(lone) is lone


def test_canonical_returns_the_first_object_with_the_same_key():
    first = optax.adamw(0.003, weight_decay=0.2)
    assert canonical(first) is first
    again = optax.adamw(0.003, weight_decay=0.2)
    assert canonical(again) is first
    other = optax.adamw(0.003, weight_decay=0.3)
    assert canonical(other) is other


def test_a_first_object_changed_since_is_not_handed_out():
    table = [0.1]
    first = functools.partial(jc.sgd, table)
    assert canonical(first) is first
    table[0] = 0.2  # first now closes over other values
    again = functools.partial(jc.sgd, [0.1])
    assert canonical(again) is again


@pytest.mark.parametrize("module", [jc, pytest.param(optax, marks=pytest.mark.slow)],
                         ids=["jc", "optax"])
def test_fit_with_an_equal_optimizer_built_again_compiles_nothing(module):
    run = functools.partial(jc.fit, jc.regularized(mse, l2=0.01), PARAMS, data=DATA, steps=20,
                            batch_size=8)
    first = run(optimizer=module.adam(0.05, b1=0.8))
    jax.block_until_ready(first)
    with count_compiles() as seen:
        again = run(optimizer=module.adam(0.05, b1=0.8))
        jax.block_until_ready(again)
    assert seen == []
    chex.assert_trees_all_equal((again.params, again.opt_state, again.losses),
                                (first.params, first.opt_state, first.losses))
    with count_compiles() as seen:
        other = run(optimizer=module.adam(0.05, b1=0.7))
        jax.block_until_ready(other)
    assert seen
    assert not np.array_equal(np.asarray(other.losses), np.asarray(first.losses))


def test_sweep_with_an_equal_partial_built_again_compiles_nothing():
    grid = {"learning_rate": np.array([0.01, 0.1])}

    def run(decay):
        res = jc.sweep(mse, PARAMS, functools.partial(jc.adamw, weight_decay=decay), DATA,
                       grid=grid, steps=10)
        return jax.block_until_ready(res)

    first = run(0.1)
    with count_compiles() as seen:
        again = run(0.1)
    assert seen == []
    chex.assert_trees_all_equal((again.params, again.losses), (first.params, first.losses))
    with count_compiles() as seen:
        other = run(0.5)
    assert seen
    assert not np.array_equal(np.asarray(other.params["w"]), np.asarray(first.params["w"]))


@pytest.mark.parametrize("donate", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_make_train_step_made_again_from_equal_objects_compiles_nothing(donate):
    def run(opt):
        step = jc.make_train_step(jc.regularized(mse, l1=0.01), opt, donate=donate)
        params = jax.tree.map(jnp.copy, PARAMS)
        state = opt.init(params)
        for _ in range(3):
            params, state, loss = step(params, state, DATA)
        return jax.block_until_ready((params, state, loss))

    first = run(optax.adam(0.1))
    with count_compiles() as seen:
        again = run(optax.adam(0.1))
    assert seen == []
    chex.assert_trees_all_equal(again, first)
    with count_compiles() as seen:
        other = run(optax.adam(0.2))
    assert seen
    assert not np.array_equal(np.asarray(other[0]["w"]), np.asarray(first[0]["w"]))
