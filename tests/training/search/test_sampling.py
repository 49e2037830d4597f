"""Tests for jaxopt_core.training.search: the axes and ``sample`` (ranges,
distributions against scipy's, determinism, Sobol balance, errors, a sweep)."""

import copy
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import DATA, PARAMS, mse
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.stats import qmc

import jaxopt_core as jc

KEY = jax.random.key(0)
N = 2048  # the one sample size of the distribution tests
K = 16  # one array shape for the hypothesis tests: the eager ops compile once
METHODS = st.sampled_from(["random", "sobol"])
SEEDS = st.integers(0, 2**31 - 1)
F32_BELOW_ONE = np.nextafter(np.float32(1), np.float32(0))


def draw(axis, method="random", seed=0, k=K):
    return np.asarray(jc.sample(jax.random.key(seed), k, method=method, x=axis)["x"])


# ranges -----------------------------------------------------------------------------------


# XLA:CPU flushes subnormal floats to zero, so a subnormal `low` is not kept.
NORMAL_FLOATS = st.floats(-1e6, 1e6).filter(
    lambda v: v == 0 or abs(v) >= np.finfo(np.float32).tiny)


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(low=NORMAL_FLOATS, width=st.floats(1e-3, 1e6), method=METHODS, seed=SEEDS)
def test_uniform_stays_in_range(low, width, method, seed):
    lo, hi = np.float32(low), np.float32(low + width)
    assume(lo < hi)
    axis = jc.uniform(low, low + width)
    x = draw(axis, method, seed)
    assert x.dtype == np.float32 and x.shape == (K,)
    assert np.all((x >= lo) & (x <= hi)), (x, lo, hi)
    assert axis.bounds == (lo, hi)
    ends = np.asarray(axis.from_unit(jnp.array([0.0, F32_BELOW_ONE, 1.0])))
    assert ends[0] == lo and np.all(ends <= hi)


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(log_low=st.floats(-8, 3), decades=st.floats(0.01, 8), method=METHODS, seed=SEEDS)
def test_log_uniform_stays_in_range(log_low, decades, method, seed):
    low, high = 10.0**log_low, 10.0 ** (log_low + decades)
    x = draw(jc.log_uniform(low, high), method, seed)
    assert x.dtype == np.float32
    assert np.all((x >= np.float32(low)) & (x <= np.float32(high))), (x, low, high)


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(low=st.integers(-(2**31), 2**31 - 2), n=st.integers(1, 2**32 - 1), method=METHODS,
       seed=SEEDS)
def test_integers_stay_in_range(low, n, method, seed):
    high = min(low + n, 2**31 - 1)
    axis = jc.integers(low, high)
    x = draw(axis, method, seed)
    assert x.dtype == np.int32
    assert np.all((x >= low) & (x < high)), (x, low, high)
    # the ends of the unit interval map exactly to the ends of the range; from_unit
    # has float32 resolution, so past 2**24 values the top end is on a lattice
    # (documented in Integers.from_unit)
    ends = np.asarray(axis.from_unit(jnp.array([0.0, 1.0])))
    assert ends[0] == low
    if high - low <= 2**24:
        assert ends[1] == high - 1
    else:
        assert high - 1 - 2 ** (np.log2(high - low) - 23) <= ends[1] <= high - 1
    assert axis.bounds == (low, high - 1)


# distributions, against scipy's --------------------------------------------------------------


def test_uniform_and_log_uniform_follow_their_distributions():
    n = N
    g = jc.sample(KEY, n, a=jc.uniform(-1.0, 3.0), lr=jc.log_uniform(1e-4, 1e-1))
    a, lr = np.asarray(g["a"], np.float64), np.asarray(g["lr"], np.float64)
    assert scipy.stats.kstest(a, scipy.stats.uniform(-1.0, 4.0).cdf).pvalue > 1e-3
    assert scipy.stats.kstest(lr, scipy.stats.loguniform(1e-4, 1e-1).cdf).pvalue > 1e-3
    # the median of a log-uniform is the geometric mean of its bounds, 10**-2.5
    assert abs(np.log10(np.median(lr)) + 2.5) < 0.05


@pytest.mark.slow
def test_choice_gives_only_its_values_about_equally_often():
    values = [0.0, 0.5, 0.9]
    x = draw(jc.choice(values), k=N)
    assert set(x.tolist()) <= {float(np.float32(v)) for v in values}
    counts = [(x == np.float32(v)).sum() for v in values]
    assert scipy.stats.chisquare(counts).pvalue > 1e-3, counts


def test_integers_are_about_equally_likely():
    x = draw(jc.integers(-2, 3), k=N)
    assert set(x.tolist()) == {-2, -1, 0, 1, 2}  # high is exclusive
    counts = np.bincount(x + 2)
    assert scipy.stats.chisquare(counts).pvalue > 1e-3, counts


@pytest.mark.slow
@pytest.mark.parametrize("values, dtype", [
    ([16, 32, 64], np.int32), ([0.0, 0.9], np.float32), (np.array([1, 2], np.float16), np.float16),
    ([True, False], np.bool_), (np.array([3, 5], np.uint8), np.uint8)])
def test_choice_keeps_the_values_dtype(values, dtype):
    for method in ("random", "sobol"):
        assert draw(jc.choice(values), method).dtype == dtype


# determinism ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["random", "sobol"])
def test_deterministic_in_key_and_keys_differ(method):
    axes = dict(lr=jc.log_uniform(1e-4, 1e-1), b1=jc.uniform(0.8, 0.99), n=jc.integers(0, 100))
    one = jc.sample(jax.random.key(3), K, method=method, **axes)
    again = jc.sample(jax.random.key(3), K, method=method, **axes)
    legacy = jc.sample(jax.random.PRNGKey(3), K, method=method, **axes)
    other = jc.sample(jax.random.key(4), K, method=method, **axes)
    chex.assert_trees_all_equal(dict(one), dict(again), dict(legacy))
    for name in axes:
        assert not np.array_equal(one[name], other[name]), name


def test_random_axes_do_not_depend_on_the_other_axes():
    lr = jc.log_uniform(1e-4, 1e-1)
    alone = jc.sample(KEY, K, lr=lr)["lr"]
    with_more = jc.sample(KEY, K, b1=jc.uniform(0.8, 0.99), lr=lr, n=jc.integers(0, 9))["lr"]
    np.testing.assert_array_equal(alone, with_more)


# Sobol balance ----------------------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
def test_sobol_is_stratified_per_dimension_and_a_net_in_two(seed):
    k, m = 64, 6
    unit = jc.uniform(0.0, 1.0)
    g = jc.sample(jax.random.key(seed), k, method="sobol", u0=unit, u1=unit, u2=unit)
    u = np.stack([np.asarray(g[n]) for n in ("u0", "u1", "u2")], axis=1)
    for j in range(3):  # every [i/64, (i+1)/64) holds one point, so every eighth holds 8
        assert sorted(np.floor(u[:, j] * k).astype(int).tolist()) == list(range(k))
        np.testing.assert_array_equal(np.bincount(np.floor(u[:, j] * 8).astype(int)), [8] * 8)
    for p in range(m + 1):  # (0, 6, 2)-net: each 2**-p x 2**-(6-p) box holds one point
        cells = np.floor(u[:, 0] * 2**p) * 2 ** (m - p) + np.floor(u[:, 1] * 2 ** (m - p))
        assert len(np.unique(cells)) == k, p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sobol_stratifies_the_log_of_log_uniform_and_discrete_axes(seed):
    low, high = 1e-4, 1e-1
    g = jc.sample(jax.random.key(seed), 64, method="sobol", lr=jc.log_uniform(low, high),
                  n=jc.integers(0, 8), c=jc.choice([1, 2, 3, 4]))
    t = np.log(np.asarray(g["lr"], np.float64) / low) / np.log(high / low)
    np.testing.assert_array_equal(np.bincount(np.floor(t * 8).astype(int), minlength=8), [8] * 8)
    np.testing.assert_array_equal(np.bincount(np.asarray(g["n"])), [8] * 8)
    np.testing.assert_array_equal(np.bincount(np.asarray(g["c"]))[1:], [16] * 4)


def test_sobol_is_more_even_than_random():
    unit = jc.uniform(0.0, 1.0)

    def points(method):
        g = jc.sample(KEY, 64, method=method, a=unit, b=unit)
        return np.stack([np.asarray(g["a"]), np.asarray(g["b"])], axis=1).astype(np.float64)

    assert qmc.discrepancy(points("sobol")) < 0.5 * qmc.discrepancy(points("random"))


@pytest.mark.slow
def test_sobol_with_k_not_a_power_of_two_is_a_prefix_and_does_not_warn():
    axes = dict(a=jc.uniform(0.0, 1.0), n=jc.integers(0, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        long = jc.sample(KEY, 24, method="sobol", **axes)
    short = jc.sample(KEY, K, method="sobol", **axes)
    chex.assert_trees_all_equal({n: v[:K] for n, v in long.items()}, dict(short))
    assert jc.sample(KEY, 1, method="sobol", **axes)["a"].shape == (1,)


# the axes as pure JAX functions ---------------------------------------------------------


AXES = [jc.uniform(-1.0, 2.0), jc.log_uniform(1e-3, 1.0), jc.integers(-3, 7),
        jc.choice([0.1, 0.5, 0.7])]


@pytest.mark.slow
def test_axes_are_pure_jax_functions():
    u = jax.random.uniform(KEY, (K,))
    keys = jax.random.split(KEY, K)

    @jax.jit  # one compile for every axis: mapping traced draws and vmapped draws
    def run(u, keys):
        return [(axis.from_unit(u), jax.vmap(axis.draw)(keys)) for axis in AXES]

    for axis, (mapped, drawn) in zip(AXES, run(u, keys)):
        # equal up to XLA fusing a multiply-add under jit
        chex.assert_trees_all_close(mapped, axis.from_unit(u), rtol=1e-6)
        lo, hi = axis.bounds
        assert mapped.dtype == drawn.dtype == axis.dtype, axis
        assert bool(jnp.all((drawn >= lo) & (drawn <= hi))), axis
        assert len(np.unique(drawn)) > 1, axis
        assert isinstance(axis, jc.Axis) and axis.continuous == (type(axis).__name__ in (
            "Uniform", "LogUniform"))
        # hashable and compared by value: fit to be a static argument of a jit
        assert hash(axis) == hash(copy.deepcopy(axis)) and axis == copy.deepcopy(axis)


def test_sampled_grid_remembers_its_axes_and_is_a_pytree():
    axes = dict(lr=jc.log_uniform(1e-4, 1e-1), n=jc.integers(0, 3))
    grid = jc.sample(KEY, K, **axes)
    assert isinstance(grid, dict) and grid.axes == axes and list(grid) == ["lr", "n"]
    doubled = jax.jit(lambda g: jax.tree.map(lambda x: 2 * x, g))(grid)
    assert isinstance(doubled, jc.SampledGrid) and doubled.axes == axes
    np.testing.assert_array_equal(doubled["n"], 2 * grid["n"])
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(grid)[0]]
    assert paths == ["['lr']", "['n']"]


# errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("build, match", [
    (lambda: jc.uniform(1.0, 1.0), r"uniform\(low=1.0, high=1.0\).*empty or inverted"),
    (lambda: jc.uniform(2.0, 1.0), r"empty or inverted.*low=2.0, high=1.0"),
    (lambda: jc.uniform(0.0, float("nan")), r"high must be a finite real number; got high=nan"),
    (lambda: jc.uniform("0", 1.0), r"low must be a finite real number; got low='0'"),
    (lambda: jc.uniform(1.0, 1.0 + 1e-12), r"distinct.*float32"),
    (lambda: jc.log_uniform(0.0, 1.0), r"log_uniform.*must be > 0; got low=0.0"),
    (lambda: jc.log_uniform(-1e-3, 1e-1), r"must be > 0; got low=-0.001"),
    (lambda: jc.log_uniform(1e-1, 1e-3), r"empty or inverted.*low=0.1, high=0.001"),
    (lambda: jc.integers(0, 0), r"integers\(low=0, high=0\).*empty.*high is exclusive"),
    (lambda: jc.integers(5, 1), r"empty or inverted"),
    (lambda: jc.integers(0.5, 3), r"low must be an integer; got low=0.5"),
    (lambda: jc.integers(0, True), r"high must be a finite real number; got high=True"),
    (lambda: jc.integers(0, 2**40), r"must fit in int32"),
    (lambda: jc.integers(0, 10**400), r"high must be a finite real number"),
    (lambda: jc.choice([]), r"choice\(values=\[\]\).*non-empty 1-D"),
    (lambda: jc.choice([[1, 2], [3, 4]]), r"non-empty 1-D"),
    (lambda: jc.choice(["adam", "sgd"]), r"sequence of numbers; got \['adam', 'sgd'\]"),
    (lambda: jc.choice([1, 2**40]), r"must fit in int32"),
    (lambda: jc.sample(KEY, 0, a=jc.uniform(0, 1)), r"K must be an int >= 1; got K=0"),
    (lambda: jc.sample(KEY, 2.0, a=jc.uniform(0, 1)), r"got K=2.0"),
    (lambda: jc.sample(KEY, True, a=jc.uniform(0, 1)), r"got K=True"),
    (lambda: jc.sample(KEY, 4, method="grid", a=jc.uniform(0, 1)), r"method=.grid."),
    (lambda: jc.sample(KEY, 4), r"at least one axis"),
    (lambda: jc.sample(KEY, 4, learning_rate=0.1), r"learning_rate must be an axis.*got "
                                                  r"learning_rate=0.1"),
    (lambda: jc.sample(KEY, 4, b1=[0.9, 0.99]), r"b1 must be an axis.*b1=\[0.9, 0.99\]"),
])
def test_bad_input_is_a_clear_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_integral_floats_are_integers():
    assert jc.integers(1.0, np.int64(4)) == jc.integers(1, 4)


# end to end -------------------------------------------------------------------------------


@pytest.mark.slow
def test_sampled_grid_drives_a_sweep():
    grid = jc.sample(KEY, 4, method="sobol", learning_rate=jc.log_uniform(1e-3, 1e-1),
                     momentum=jc.uniform(0.0, 0.9))
    res = jc.sweep(mse, PARAMS, jc.sgd, DATA, grid=grid, steps=5)
    assert res.losses.shape == (4, 5) and not np.any(np.asarray(res.diverged))
    for name in grid:
        np.testing.assert_array_equal(np.asarray(res.hparams[name]), np.asarray(grid[name]))
    losses = np.asarray(res.losses)
    assert np.all(losses[:, -1] < losses[:, 0])
    assert len(np.unique(losses[:, -1])) == 4  # every member trained with its own values
