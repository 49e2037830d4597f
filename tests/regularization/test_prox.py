"""Tests of jaxopt_core.regularization.prox: the operators against their closed forms and
their defining argmin, ISTA/FISTA against hand-written loops, and both against
scikit-learn's coordinate-descent Lasso and ElasticNet (in float64, in a
subprocess, because ``jax_enable_x64`` is process-global)."""

import json
import os
import subprocess
import sys

import chex
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import jaxopt_core as jc
from jaxopt_core.core.base import needs_tree_layout

# No subnormals: XLA on CPU flushes them to zero, which is not what is tested here.
floats = st.floats(-10.0, 10.0, allow_nan=False, allow_subnormal=False, width=32)
strengths = st.floats(0.0, 5.0, allow_nan=False, allow_subnormal=False, width=32)


def _bits(x):
    x = np.asarray(x)
    return x.view(np.dtype(f"u{x.dtype.itemsize}"))


def _soft(x, s):
    return np.sign(x) * np.maximum(np.abs(x) - s, 0.0)


# -- the operators ------------------------------------------------------------


def test_prox_closed_forms():
    x = jnp.array([-3.0, -1.0, -0.4, 0.0, 0.4, 1.0, 3.0])
    chex.assert_trees_all_close(jc.prox_l1(x, 1.0), jnp.array([-2.0, 0, 0, 0, 0, 0, 2.0]))
    chex.assert_trees_all_close(jc.prox_l2(x, 3.0), x / 4.0)
    chex.assert_trees_all_close(
        jc.prox_elastic_net(x, 0.5, 1.0), jnp.asarray(_soft(np.asarray(x), 0.5) / 2.0)
    )
    # Strength 0 is the identity, bit for bit.
    for prox in (jc.prox_l1, jc.prox_l2):
        assert np.array_equal(_bits(prox(x, 0.0)), _bits(x))


def test_thresholded_entries_are_positive_zero_and_nan_propagates():
    x = jnp.array([-0.3, -0.0, 0.2, jnp.nan, -5.0])
    out = np.asarray(jc.prox_l1(x, 0.5))
    assert np.array_equal(_bits(out[:3]), np.zeros(3, np.uint32))  # +0.0, never -0.0
    assert np.isnan(out[3]) and out[4] == -4.5
    out = np.asarray(jc.prox_elastic_net(x, 0.5, 1.0))
    assert np.array_equal(_bits(out[:3]), np.zeros(3, np.uint32))


@pytest.mark.slow
def test_per_leaf_strength_prefix_and_mask():
    p = {"a": {"w": jnp.full((2, 2), 2.0), "b": jnp.full(2, 2.0)}, "c": jnp.full(3, -2.0)}
    out = jc.prox_l1(p, {"a": 0.5, "c": 1.5})  # a prefix: one value per subtree
    chex.assert_trees_all_close(out["a"]["w"], jnp.full((2, 2), 1.5))
    chex.assert_trees_all_close(out["c"], jnp.full(3, -0.5))
    # per-coordinate strengths broadcast against the leaf
    chex.assert_trees_all_close(jc.prox_l1(jnp.ones(3), jnp.array([0.0, 0.5, 2.0])),
                                jnp.array([1.0, 0.5, 0.0]))
    for prox in (
        lambda t, m: jc.prox_l1(t, 1.0, mask=m),
        lambda t, m: jc.prox_l2(t, 1.0, mask=m),
        lambda t, m: jc.prox_elastic_net(t, 1.0, 1.0, mask=m),
    ):
        out = prox(p, jc.weights_only_mask)
        assert out["a"]["b"] is p["a"]["b"] and out["c"] is p["c"]  # untouched
        assert not np.array_equal(out["a"]["w"], p["a"]["w"])
        out = prox(p, {"a": False, "c": True})
        assert out["a"]["w"] is p["a"]["w"] and out["a"]["b"] is p["a"]["b"]
    with pytest.raises(ValueError, match="structure"):
        jc.prox_l1(p, {"x": 1.0})


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_prox_keeps_dtypes(dtype):
    p = {"w": jnp.array([-2.0, 0.1, 3.0], dtype)}
    for out in (jc.prox_l1(p, 0.5), jc.prox_l2(p, 0.5), jc.prox_elastic_net(p, 0.5, 0.5)):
        assert out["w"].dtype == dtype
    assert jc.prox_l1(p, 0.5)["w"][1] == 0


# Jitted once for arrays of 8 (hypothesis draws exactly 8 values), so each
# example costs microseconds rather than a dispatch per shape.
_prox_en = jax.jit(jc.prox_elastic_net)
_prox_1 = jax.jit(jc.prox_l1)
_prox_2 = jax.jit(jc.prox_l2)


@settings(max_examples=60, deadline=None)
@given(st.lists(floats, min_size=8, max_size=8), strengths, strengths)
def test_prox_is_the_argmin(xs, l1, l2):
    """prox(x) minimizes h(z) = (z-x)^2/2 + l1|z| + l2 z^2/2: compare with a
    fine grid around it, and check the optimality condition 0 in dh(z)."""
    x = np.asarray(xs, np.float32)
    z = np.asarray(_prox_en(x, np.float32(l1), np.float32(l2)), np.float64)
    x64 = x.astype(np.float64)

    def h(v):
        return 0.5 * (v - x64[:, None]) ** 2 + l1 * np.abs(v) + 0.5 * l2 * v**2

    grid = z[:, None] + np.linspace(-1.0, 1.0, 401)[None, :]
    assert np.all(h(z[:, None])[:, 0] <= h(grid).min(axis=1) + 1e-5)
    nonzero = z != 0
    resid = (z - x64) + l1 * np.sign(z) + l2 * z
    assert np.all(np.abs(resid[nonzero]) <= 1e-5 * (1 + np.abs(x64[nonzero])))
    # 0 is optimal when |x| <= l1, or when the exact prox is subnormal: XLA:CPU
    # flushes subnormal results to zero (e.g. x = 1.18e-38, l1 = 0, l2 = 1).
    tiny = np.finfo(np.float32).tiny * (1 + l2)
    assert np.all(np.abs(x64[~nonzero]) <= l1 * (1 + 1e-6) + tiny)  # 0 in [-l1, l1] - x


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(floats, floats), min_size=8, max_size=8), strengths)
def test_prox_is_nonexpansive(pairs, s):
    x, y = (np.array(v, np.float32) for v in zip(*pairs, strict=True))
    for prox in (_prox_1, _prox_2):
        d = np.abs(np.asarray(prox(x, np.float32(s))) - np.asarray(prox(y, np.float32(s))))
        assert np.all(d <= np.abs(np.asarray(x - y)) * (1 + 1e-6) + 1e-6)


# -- proximal_gradient and proximal_step --------------------------------------

# One smooth test problem, f(w) = 0.5 |A w - b|^2, shared by the loops below.
_A = jnp.asarray(np.random.default_rng(0).normal(size=(12, 5)), jnp.float32)
_B = jnp.asarray(np.random.default_rng(1).normal(size=12), jnp.float32)
_LR = float(1.0 / np.linalg.eigvalsh(np.asarray(_A.T @ _A)).max())


def _f(w):
    return 0.5 * jnp.sum((_A @ w - _B) ** 2)


def _np_grad(w):
    a, b = np.asarray(_A, np.float64), np.asarray(_B, np.float64)
    return a.T @ (a @ w - b)


_grad_f = jax.jit(jax.grad(_f))


def _steps(opt, w, n, grad=_grad_f):
    state, held = opt.init(w), [w]
    for _ in range(n):
        u, state = opt.update(grad(w), state, w)
        w = jc.apply_updates(w, u)
        held.append(w)
    return held, state


def test_ista_step_is_the_prox_of_a_gradient_step_exactly():
    l1 = 2.0
    held, _ = _steps(jc.proximal_gradient(_LR, l1=l1), jnp.ones(5), 3)
    for w, w_next in zip(held[:-1], held[1:], strict=True):
        expect = jc.prox_l1(w - _LR * _grad_f(w), _LR * l1)
        # p + (new - p) == new here; where new is 0 it is 0 exactly in IEEE.
        chex.assert_trees_all_close(w_next, expect, rtol=1e-6, atol=1e-7)
        assert np.array_equal(np.asarray(w_next) == 0, np.asarray(expect) == 0)
    assert np.any(np.asarray(held[-1]) == 0)


def test_fista_matches_a_hand_written_loop_and_holds_the_extrapolated_point():
    l1, l2 = 1.5, 0.3
    held, state = _steps(jc.proximal_gradient(_LR, l1, l2, acceleration=True), jnp.ones(5), 25)
    x_prev = y = np.ones(5)
    t = 1.0
    for k in range(25):
        x = _soft(y - _LR * _np_grad(y), _LR * l1) / (1 + _LR * l2)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = x + (t - 1) / t_next * (x - x_prev)
        x_prev, t = x, t_next
        np.testing.assert_allclose(held[k + 1], y, rtol=2e-5, atol=2e-6)
    x_k = jc.proximal_iterate(state, held[-1])
    np.testing.assert_allclose(x_k, x, rtol=2e-5, atol=2e-6)
    assert np.array_equal(np.asarray(x_k) == 0, x == 0) and np.any(x == 0)
    assert int(state.count) == 25 and abs(float(state.t) - t) < 1e-3
    # Where x_k = x_{k-1} = 0, the held extrapolated point is exactly +0.0 too.
    both = (np.asarray(state.iterate) == 0) & (np.asarray(held[-2]) == 0)
    assert np.all(_bits(np.asarray(held[-1])[both]) == 0)


@pytest.mark.slow
def test_proximal_gradient_schedule_vmap_and_mask():
    sched = jc.exponential_decay(_LR, transition_steps=1, decay_rate=0.9)
    held, _ = _steps(jc.proximal_gradient(sched, l1=1.0), jnp.ones(5), 2)
    w1 = jc.prox_l1(held[1] - 0.9 * _LR * _grad_f(held[1]), 0.9 * _LR * 1.0)
    chex.assert_trees_all_close(held[2], w1, rtol=1e-6)

    def final(l1):  # l1 traced by vmap
        held, state = _steps(jc.proximal_gradient(_LR, l1, acceleration=True), jnp.ones(5), 5)
        return jc.proximal_iterate(state, held[-1])

    l1s = jnp.array([0.0, 1.0, 4.0])
    batched, single = jax.jit(jax.vmap(final))(l1s), jax.jit(final)
    for i, l1 in enumerate([0.0, 1.0, 4.0]):
        chex.assert_trees_all_close(batched[i], single(l1), rtol=1e-5, atol=1e-6)

    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    opt = jc.proximal_gradient(0.1, l1=100.0, mask=jc.weights_only_mask)
    assert needs_tree_layout(opt) and not needs_tree_layout(jc.proximal_gradient(0.1))
    grads = jax.tree.map(jnp.ones_like, params)
    new = jc.apply_updates(params, opt.update(grads, opt.init(params), params)[0])
    chex.assert_trees_all_equal(new["w"], jnp.zeros((2, 3)))
    chex.assert_trees_all_close(new["b"], jnp.full(3, 0.9))  # a plain gradient step


def test_proximal_gradient_bfloat16_params():
    w = jnp.array([1.0, 0.01, -2.0], jnp.bfloat16)
    for acc in (False, True):
        opt = jc.proximal_gradient(0.5, l1=0.1, acceleration=acc)
        state = opt.init(w)
        u, state = opt.update(jnp.zeros(3, jnp.bfloat16), state, w)
        new = jc.apply_updates(w, u)
        assert u.dtype == new.dtype == jnp.bfloat16 and new[1] == 0
        assert jax.tree.map(lambda a: a.dtype, state) == jax.tree.map(
            lambda a: a.dtype, opt.update(u, state, new)[1])


def test_errors():
    with pytest.raises(ValueError, match=r"l1.*-1"):
        jc.proximal_gradient(0.1, l1=-1.0)
    with pytest.raises(ValueError, match=r"l2 must be finite"):
        jc.proximal_gradient(0.1, l2=float("nan"))
    with pytest.raises(ValueError, match="learning_rate"):
        jc.proximal_gradient(-0.1)
    with pytest.raises(TypeError, match="l1"):
        jc.proximal_gradient(0.1, l1="0.1")
    with pytest.raises(ValueError, match="l1"):
        jc.proximal_step(0.1, l1=-1.0)
    with pytest.raises(ValueError, match="strength"):
        jc.prox_l1(jnp.ones(2), -0.5)
    with pytest.raises(TypeError, match="strength"):
        jc.prox_l2(jnp.ones(2), "big")
    w = jnp.ones(2)
    for opt in (jc.proximal_gradient(0.1, 1.0), jc.proximal_step(0.1, 1.0)):
        with pytest.raises(ValueError, match="needs the params"):
            opt.update(w, opt.init(w))
    with pytest.raises(TypeError, match="proximal_gradient"):
        jc.proximal_iterate(jc.EmptyState(), w)


@pytest.mark.slow
def test_fista_beats_ista_on_an_ill_conditioned_problem():
    """f = 0.5 sum d_i (w_i - c_i)^2 with d from 1 down to 1e-3: the Lasso
    solution is soft_threshold(c, l1 / d) in closed form."""
    d = jnp.asarray(np.logspace(0, -3, 20), jnp.float32)
    c = jnp.asarray(np.random.default_rng(2).normal(size=20) * 5, jnp.float32)
    l1 = 0.01

    def big_f(w):
        return 0.5 * jnp.sum(d * (w - c) ** 2)

    def objective(w):  # in float64, so the gaps are not float32 rounding
        w, d64, c64 = (np.asarray(v, np.float64) for v in (w, d, c))
        return 0.5 * np.sum(d64 * (w - c64) ** 2) + l1 * np.abs(w).sum()

    best = objective(_soft(np.asarray(c, np.float64), l1 / np.asarray(d, np.float64)))
    gaps = {}
    for acc in (False, True):
        opt = jc.proximal_gradient(1.0, l1=l1, acceleration=acc)
        held, state = _steps(opt, jnp.zeros(20), 100, grad=jax.jit(jax.grad(big_f)))
        gaps[acc] = objective(jc.proximal_iterate(state, held[-1])) - best
    assert 0 <= gaps[True] < 0.01 * gaps[False], gaps  # measured: 2.0e-5 vs 8.3e-3


def test_proximal_step_after_adam_matches_a_hand_loop_and_gives_zeros():
    lr, l1 = 0.05, 0.5
    opt = jc.chain(jc.adam(lr), jc.proximal_step(lr, l1=l1))
    adam = jc.adam(lr)
    w = v = jnp.linspace(-1.0, 1.0, 5)
    s, sa = opt.init(w), adam.init(v)
    for _ in range(30):
        u, s = opt.update(_grad_f(w), s, w)
        w = jc.apply_updates(w, u)
        ua, sa = adam.update(_grad_f(v), sa, v)
        v = jc.prox_l1(jc.apply_updates(v, ua), lr * l1)
        chex.assert_trees_all_close(w, v, rtol=1e-5, atol=1e-6)
        assert np.array_equal(np.asarray(w) == 0, np.asarray(v) == 0)
    assert np.any(np.asarray(w) == 0)
    # After plain SGD it is ISTA.
    ista, _ = _steps(jc.proximal_gradient(_LR, l1=2.0), jnp.ones(5), 5)
    via_chain, _ = _steps(jc.chain(jc.sgd(_LR), jc.proximal_step(_LR, l1=2.0)), jnp.ones(5), 5)
    chex.assert_trees_all_close(via_chain[-1], ista[-1], rtol=1e-6)
    # Masked-out leaves keep the optimizer's updates bit for bit.
    step = jc.proximal_step(0.1, l1=20.0, mask={"w": True, "b": False})
    p = {"w": jnp.ones(2), "b": jnp.ones(2)}
    u = {"w": jnp.full(2, 0.25), "b": jnp.full(2, 0.25)}
    out, _ = step.update(u, step.init(p), p)
    assert out["b"] is u["b"] and np.all(np.asarray(jc.apply_updates(p, out)["w"]) == 0)
    assert needs_tree_layout(jc.chain(jc.adam(0.1), step))


# -- against scikit-learn, in float64 -----------------------------------------

_SKLEARN_ALPHAS = [0.1, 0.5, 2.0, 8.0, 30.0]
_ENET = [(0.05, 0.7), (0.5, 0.5), (3.0, 0.9), (10.0, 0.3)]

# Runs in a fresh interpreter with JAX_ENABLE_X64=1: reads the data (argv[1],
# an .npz) and the cases (argv[2], JSON), prints the coefficients jaxopt_core
# finds with 5000 FISTA or ISTA steps at 1/L, as JSON (floats round-trip).
_X64_FITS = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
import jaxopt_core as jc

assert jnp.zeros(1).dtype == jnp.float64
data = np.load(sys.argv[1])
X, y = jnp.asarray(data["X"]), jnp.asarray(data["y"])
lr = 1.0 / float(np.linalg.eigvalsh(np.asarray(X.T @ X) / len(y)).max())

def f(w):  # sklearn's data term: (1 / 2n) |y - X w|^2
    return 0.5 * jnp.mean((y - X @ w) ** 2)

def fit(l1, l2, acceleration):
    opt = jc.proximal_gradient(lr, l1, l2, acceleration=acceleration)
    def step(carry, _):
        w, s = carry
        u, s = opt.update(jax.grad(f)(w), s, w)
        return (jc.apply_updates(w, u), s), None
    w0 = jnp.zeros(X.shape[1])
    (w, s), _ = jax.lax.scan(step, (w0, opt.init(w0)), None, length=5000)
    return jc.proximal_iterate(s, w)

cases = json.loads(sys.argv[2])
l1 = [a for a in cases["lasso"]] + [a * r for a, r in cases["enet"]]
l2 = [0.0 for a in cases["lasso"]] + [a * (1 - r) for a, r in cases["enet"]]
fista = jax.jit(jax.vmap(lambda l1, l2: fit(l1, l2, True)))(jnp.asarray(l1), jnp.asarray(l2))
ista = jax.jit(jax.vmap(lambda l1, l2: fit(l1, l2, False)))(jnp.asarray(l1), jnp.asarray(l2))
k = len(cases["lasso"])
print(json.dumps({"lasso": np.asarray(fista[:k]).tolist(),
                  "enet_fista": np.asarray(fista[k:]).tolist(),
                  "enet_ista": np.asarray(ista[k:]).tolist()}))
"""


@pytest.fixture(scope="module")
def diabetes():
    """sklearn's diabetes data: standardized X, centered y (no intercept)."""
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    return (X - X.mean(0)) / X.std(0), y - y.mean()


@pytest.fixture(scope="module")
def x64_fits(diabetes, tmp_path_factory):
    data = tmp_path_factory.mktemp("x64") / "diabetes.npz"
    np.savez(data, X=diabetes[0], y=diabetes[1])
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    cases = json.dumps({"lasso": _SKLEARN_ALPHAS, "enet": _ENET})
    run = subprocess.run([sys.executable, "-c", _X64_FITS, str(data), cases], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return {k: np.asarray(v) for k, v in json.loads(run.stdout.splitlines()[-1]).items()}


def _assert_same_solution(coef, ref):
    np.testing.assert_allclose(coef, ref, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(coef == 0, ref == 0)  # the same support, exactly


@pytest.mark.slow
def test_fista_reproduces_sklearn_lasso(diabetes, x64_fits):
    """sklearn's Lasso minimizes (1/2n)|y - Xw|^2 + alpha |w|_1: the same
    objective as f + l1 |w|_1 with f the half mean squared error, l1 = alpha."""
    from sklearn.linear_model import Lasso

    X, y = diabetes
    for alpha, coef in zip(_SKLEARN_ALPHAS, x64_fits["lasso"], strict=True):
        ref = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(X, y)
        _assert_same_solution(coef, ref.coef_)
    assert 0 < np.sum(x64_fits["lasso"] == 0) < x64_fits["lasso"].size  # sparsity is tested


@pytest.mark.slow
def test_ista_and_fista_reproduce_sklearn_elastic_net(diabetes, x64_fits):
    """sklearn's ElasticNet minimizes (1/2n)|y - Xw|^2 + alpha r |w|_1
    + (alpha (1 - r) / 2)|w|^2: l1 = alpha r and l2 = alpha (1 - r) in our
    convention, whose L2 penalty carries the 1/2."""
    from sklearn.linear_model import ElasticNet

    X, y = diabetes
    for i, (alpha, ratio) in enumerate(_ENET):
        ref = ElasticNet(alpha=alpha, l1_ratio=ratio, fit_intercept=False, tol=1e-12,
                         max_iter=100_000).fit(X, y)
        _assert_same_solution(x64_fits["enet_ista"][i], ref.coef_)
        _assert_same_solution(x64_fits["enet_fista"][i], ref.coef_)
