"""The divergence guard's selects, against NumPy's ``where`` (issue 14: a
sweep freezes the params of a diverged member and no longer selects its
optimizer state, which nothing reads again)."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import DATA, PARAMS, mse
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxopt_core as jc
from jaxopt_core.training.divergence import (
    CONDITIONAL_FROM,
    all_finite,
    all_finite_grouped,
    and_all,
    freeze_params,
    select,
)

K = 6  # one shape for every example: the jitted functions compile once
_NEW = {"w": jnp.arange(K * 3, dtype=jnp.float32).reshape(K, 3), "count": jnp.arange(K)}
_OLD = jax.tree.map(lambda x: -x - 1, _NEW)
_FREEZE, _SELECT = jax.jit(freeze_params), jax.jit(select)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=K, max_size=K))
def test_frozen_members_keep_their_params_bit_for_bit(flags):
    ok = np.asarray(flags)
    for fn in (_FREEZE, _SELECT):
        got = fn(jnp.asarray(ok), _NEW, _OLD)
        for g, n, o in zip(jax.tree.leaves(got), jax.tree.leaves(_NEW), jax.tree.leaves(_OLD),
                           strict=True):
            want = np.where(ok.reshape((K,) + (1,) * (n.ndim - 1)), np.asarray(n), np.asarray(o))
            np.testing.assert_array_equal(g, want)


# all_finite, vmapped as a sweep runs it, against NumPy's check of each
# member's leaves (integer leaves do not count; float16 and bfloat16 overflow is inf; a
# complex leaf's -3e38 - 3e38j is finite though its abs overflows; an empty
# leaf is finite). Fixed shapes, values drawn: one compile for every example.
_TREE = {"w": np.zeros((K, 2, 3), np.float32), "w_mu": np.zeros((K, 2, 3), np.float32),
         "b": np.zeros((K, 3), np.float32), "s": np.zeros((K,), np.float16),
         "h": np.zeros((K, 4), jnp.bfloat16),
         "z": np.zeros((K, 2), np.complex64), "e": np.zeros((K, 0), np.float32),
         "count": np.zeros((K,), np.int32)}
_ALL_FINITE = jax.jit(jax.vmap(all_finite))
# fit's grouped form, unbatched as fit runs it: the same flag per member.
_GROUPED = jax.jit(lambda t: jnp.stack([
    all_finite_grouped(jax.tree.map(lambda x, i=i: x[i], t)) for i in range(K)]))
_SPECIALS = st.sampled_from([0.0, 1.0, -3e38, np.inf, -np.inf, np.nan])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["w", "w_mu", "b", "s", "h", "z"]),
                          st.integers(0, 10**6), _SPECIALS), max_size=4))
def test_all_finite_is_the_per_leaf_check_per_member(edits):
    tree = {n: x.copy() for n, x in _TREE.items()}
    for name, where, value in edits:
        flat = tree[name].reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):  # -3e38 is -inf in float16
            flat[where % flat.size] = value * (1 + 1j) if name == "z" else value
    want = np.ones(K, bool)
    for x in tree.values():
        if jnp.issubdtype(x.dtype, jnp.inexact):  # bfloat16 is no NumPy inexact
            want &= np.isfinite(x.reshape(K, -1)).all(axis=1)
    np.testing.assert_array_equal(_ALL_FINITE(tree), want)
    np.testing.assert_array_equal(_GROUPED(tree), want)


def _runaway(params, batch):
    # The loss is linear in b: b overflows to -inf while the loss of the step
    # that takes it there is still finite, so only the params check sees it.
    x, _ = batch
    return params["b"] + 0.0 * jnp.mean(x @ params["w"])


@pytest.mark.parametrize("make", [lambda: jc.sgd(1e38, momentum=0.9),
                                  lambda: optax.sgd(1e38, momentum=0.9)],
                         ids=["jc.sgd", "optax.sgd"])
def test_a_diverging_fit_freezes_alike_on_the_flat_and_tree_layouts(make):
    # The flat layout checks finiteness with the grouped form, the tree with
    # the per-leaf one: the same step must be found, the same state kept.
    flat = jc.fit(_runaway, PARAMS, make(), DATA, steps=10, layout="flat")
    tree = jc.fit(_runaway, PARAMS, make(), DATA, steps=10, layout="tree")
    assert bool(flat.diverged) and bool(tree.diverged)
    assert int(flat.diverged_at) == int(tree.diverged_at) >= 0
    for a, b in ((flat.params, tree.params), (flat.opt_state, tree.opt_state)):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            assert np.all(np.isfinite(np.asarray(x)))  # frozen at the last finite state
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(flat.losses, tree.losses)


@pytest.mark.parametrize("optimizer_fn", [jc.sgd, optax.sgd], ids=["jc.sgd", "optax.sgd"])
def test_a_sweep_member_diverging_through_its_params_freezes_as_fit_does(optimizer_fn):
    # The member at lr=1e38 must die at fit's step and keep fit's last
    # finite params; the other stays alive.
    lrs = np.array([1e38, 1e-3])
    res = jc.sweep(_runaway, PARAMS, optimizer_fn, DATA, grid={"learning_rate": lrs,
                   "momentum": np.full(2, 0.9)}, steps=10)
    ref = jc.fit(_runaway, PARAMS, jc.sgd(1e38, momentum=0.9), DATA, steps=10, layout="tree")
    assert res.diverged.tolist() == [True, False]
    assert int(res.diverged_at[0]) == int(ref.diverged_at) >= 0
    for name in PARAMS:
        got = np.asarray(res.params[name][0])
        assert np.all(np.isfinite(got))
        np.testing.assert_array_equal(got, ref.params[name])


# Shapes for which jaxlib 0.10.2's XLA:CPU max reduction dropped a NaN
# (max(|x|) < inf, vmapped over the rows, said "finite"); [64, 32] did not.
# The check is now a matrix-vector product with zeros: rows long enough for
# the kernel's blocking too, and every kind of non-finite value, at the first,
# the last and an inner position of each row.
@pytest.mark.parametrize("shape", [(256, 16), (1024, 10), (3, 64, 32), (64, 32), (9, 4099),
                                   (130, 2048)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_sweeps_check_sees_a_non_finite_value_in_every_row(shape, bad):
    x = np.full(shape, 3e38, np.float32)  # huge but finite: x * 0 is still 0
    rows = np.arange(shape[0])
    n = x.size // shape[0]
    x.reshape(shape[0], -1)[rows, np.where(rows % 3 == 0, 0, np.where(rows % 3 == 1, n - 1,
                                                                        (7 * rows) % n))] = bad
    x[0] = -3e38  # one clean row
    got = np.asarray(_ALL_FINITE({"leaf": x}))
    assert got[0] and not got[1:].any()


def _nan_state(learning_rate):
    # Finite updates, and a state that turns NaN at the first step for
    # learning rates above 1: only the state check can see it.
    def init(params):
        return jnp.zeros(16)

    def update(grads, state, params=None):
        state = state + jnp.where(learning_rate > 1.0, jnp.nan, 1.0)
        return jax.tree.map(lambda g: -1e-3 * g, grads), state

    return optax.GradientTransformation(init, update)


def test_a_sweep_member_whose_state_turns_nan_dies_at_that_step():
    lrs = np.where(np.arange(256) % 5 == 3, 2.0, 0.5)  # the state leaf is [256, 16]
    res = jc.sweep(mse, PARAMS, _nan_state, DATA, grid={"learning_rate": lrs}, steps=3)
    dead = lrs > 1
    np.testing.assert_array_equal(res.diverged, dead)
    np.testing.assert_array_equal(res.diverged_at, np.where(dead, 0, -1))
    for name in PARAMS:  # the dead keep their initial params, the others moved
        got = np.asarray(res.params[name])
        np.testing.assert_array_equal(got[dead], np.broadcast_to(PARAMS[name], got[dead].shape))
        assert not np.array_equal(got[~dead][0], np.asarray(PARAMS[name]))


_X64_SCRIPT = """
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np
from jaxopt_core.training.divergence import all_finite
x = np.full((5, 300), 1.7e308)  # near float64's max: x * 0 is still 0
x[0] = -1.7e308
x[1, 0], x[2, -1], x[3, 150], x[4, 7] = np.inf, np.nan, -np.inf, np.nan
flags = jax.jit(jax.vmap(all_finite))({"x": jnp.asarray(x)})
print(str(jnp.asarray(x).dtype), np.asarray(flags).tolist())
"""


def test_the_sweeps_check_is_exact_in_float64():
    # jax_enable_x64 is process-global: run in a fresh interpreter.
    proc = subprocess.run([sys.executable, "-c", _X64_SCRIPT], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["float64", "[True,", "False,", "False,", "False,", "False]"]


_AND_ALL = jax.jit(and_all)
_AND_ALL_PER_MEMBER = jax.jit(jax.vmap(and_all))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2 * CONDITIONAL_FROM + 3).flatmap(
    lambda n: st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=n, max_size=n)))
def test_and_all_is_the_and_of_its_flags_on_both_sides_of_the_conditional(rows):
    # rows[i] = flag i of 3 members: jitted per member (the conditional on
    # CPU from CONDITIONAL_FROM flags on) and vmapped (where it is a select).
    flags = np.asarray(rows, bool).reshape(len(rows), 3)
    want = flags.all(axis=0)
    for m in range(3):
        assert bool(_AND_ALL([jnp.asarray(f) for f in flags[:, m]])) == want[m]
    if len(rows):  # vmap needs an array
        np.testing.assert_array_equal(_AND_ALL_PER_MEMBER([jnp.asarray(f) for f in flags]), want)


def test_many_flags_are_anded_behind_a_conditional_on_cpu():
    # The conditional keeps XLA:CPU from fusing every small leaf's check into
    # one kernel whose compile time grows with the number of leaves (fit on
    # a 1000-leaf tree compiled in 254 s without it).
    tree = [jnp.ones(3)] * CONDITIONAL_FROM
    few = jax.jit(all_finite).lower(tree[:2]).compile().as_text()
    many = jax.jit(all_finite).lower(tree).compile().as_text()
    assert "conditional(" not in few
    assert ("conditional(" in many) == (jax.default_backend() == "cpu")


def _runaway_leaf(i):
    # 20 scalar leaves; the loss is linear in leaf i only, which overflows
    # to -inf while the loss of the step that takes it there is finite.
    def loss(params, batch):
        x, _ = batch
        return params[f"b{i:02d}"] + 0.0 * jnp.mean(x) * sum(params.values())

    return loss


@pytest.mark.parametrize("make", [jc.sgd, optax.sgd], ids=["jc.sgd", "optax.sgd"])
@pytest.mark.parametrize("i", [0, 9, 19])
def test_fit_on_a_tree_of_many_leaves_freezes_as_the_flat_layout_does(i, make):
    # The tree layout ANDs 20 per-leaf checks behind the conditional, the
    # flat layout checks one grouped buffer: the same step, the same state.
    params = {f"b{j:02d}": jnp.zeros(()) for j in range(20)}
    runs = [jc.fit(_runaway_leaf(i), params, make(1e38, momentum=0.9), DATA, steps=10,
                   layout=layout) for layout in ("flat", "tree")]
    flat, tree = runs
    assert bool(flat.diverged) and bool(tree.diverged)
    assert int(flat.diverged_at) == int(tree.diverged_at) >= 1
    for a, b in ((flat.params, tree.params), (flat.opt_state, tree.opt_state)):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            assert np.all(np.isfinite(np.asarray(x)))
            np.testing.assert_array_equal(x, y)
    assert float(tree.params[f"b{i:02d}"]) < -1e37  # it ran away before it was frozen
