"""Tests of jaxopt_core.regularization.path.regularization_path: one vmapped program equals a
separate fit per strength, does not recompile for new strengths, respects
masks, and reproduces scikit-learn's ``lasso_path`` (in float64, in a
subprocess: ``jax_enable_x64`` is process-global)."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_core as jc
from jaxopt_core.regularization import path as path_module

_A = jnp.asarray(np.random.default_rng(0).normal(size=(30, 6)), jnp.float32)
_B = jnp.asarray(np.random.default_rng(1).normal(size=30), jnp.float32)


def _half_mse(w, a, b):
    return 0.5 * jnp.mean((a @ w - b) ** 2)


@pytest.mark.slow
def test_path_equals_separate_fits_and_compiles_once():
    lr, steps = 0.2, 300
    l1s = jnp.array([0.0, 0.02, 0.1, 0.3, 2.0])
    res = jc.regularization_path(_half_mse, jnp.zeros(6), l1s, args=(_A, _B),
                                 learning_rate=lr, steps=steps)
    assert res.params.shape == (5, 6) and res.losses.shape == res.nonzeros.shape == (5,)

    @jax.jit
    def separate(l1):  # one strength at a time, through the public optimizer
        opt = jc.proximal_gradient(lr, l1, acceleration=True)

        def step(carry, _):
            w, s = carry
            u, s = opt.update(jax.grad(_half_mse)(w, _A, _B), s, w)
            return (jc.apply_updates(w, u), s), None

        (w, s), _ = jax.lax.scan(step, (jnp.zeros(6), opt.init(jnp.zeros(6))), None, steps)
        return jc.proximal_iterate(s, w)

    for i, l1 in enumerate(np.asarray(l1s)):
        one = separate(l1)
        chex.assert_trees_all_close(res.params[i], one, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(res.params[i]) == 0, np.asarray(one) == 0)
        objective = _half_mse(one, _A, _B) + l1 * jc.l1_penalty(one)
        np.testing.assert_allclose(res.losses[i], objective, rtol=1e-5)
    nonzeros = np.asarray(res.nonzeros)
    np.testing.assert_array_equal(nonzeros, np.count_nonzero(np.asarray(res.params), axis=1))
    assert nonzeros[0] == 6 and nonzeros[-1] == 0 and np.all(np.diff(nonzeros) <= 0)
    assert float(res.residuals.max()) < 1e-3  # converged: the check is meaningful

    # New strengths, data and step size of the same shapes reuse the program.
    compiled = path_module._solve._cache_size()
    again = jc.regularization_path(_half_mse, jnp.zeros(6), np.array([0.5, 0.1, 0.0, 1, 3]),
                                   args=(2 * _A, _B), learning_rate=np.float32(0.05),
                                   steps=steps)
    assert path_module._solve._cache_size() == compiled
    assert not np.allclose(again.params, res.params)


@pytest.mark.slow
def test_path_with_a_mask_leaves_the_intercept_unpenalized():
    y = _B + 3.0

    def loss(p, a, b):
        return _half_mse(p["w"], a, b - p["b"])

    params = {"w": jnp.zeros(6), "b": jnp.zeros([])}
    res = jc.regularization_path(loss, params, jnp.array([0.0, 100.0]), args=(_A, y),
                                 learning_rate=0.2, steps=300,
                                 mask={"w": True, "b": False})
    assert res.params["w"].shape == (2, 6) and res.params["b"].shape == (2,)
    assert np.all(np.asarray(res.params["w"][1]) == 0) and int(res.nonzeros[1]) == 0
    # with w = 0 the best intercept is the mean of y, and the penalty is 0
    np.testing.assert_allclose(res.params["b"][1], jnp.mean(y), rtol=1e-4)
    np.testing.assert_allclose(res.losses[1], loss(
        {"w": jnp.zeros(6), "b": jnp.mean(y)}, _A, y), rtol=1e-4)
    assert int(res.nonzeros[0]) == 6  # the count is of penalized entries only


def test_path_errors():
    w = jnp.zeros(6)
    with pytest.raises(ValueError, match="l1s"):
        jc.regularization_path(_half_mse, w, jnp.array([-1.0, 1.0]), args=(_A, _B))
    with pytest.raises(ValueError, match="1-D"):
        jc.regularization_path(_half_mse, w, jnp.ones((2, 2)), args=(_A, _B))
    with pytest.raises(ValueError, match="learning_rate"):
        jc.regularization_path(_half_mse, w, jnp.ones(2), args=(_A, _B), learning_rate=0.0)
    with pytest.raises(ValueError, match="steps"):
        jc.regularization_path(_half_mse, w, jnp.ones(2), args=(_A, _B), steps=0)
    with pytest.raises(TypeError, match="args"):
        jc.regularization_path(_half_mse, w, jnp.ones(2), args=[_A, _B])
    with pytest.raises(TypeError, match="l2"):
        jc.regularization_path(_half_mse, w, jnp.ones(2), args=(_A, _B), l2="0")


# Runs in a fresh interpreter with JAX_ENABLE_X64=1: the data (argv[1]) and
# alphas (argv[2]) in, the whole PathResult out as JSON. The step size is
# left to the power-iteration estimate.
_X64_PATH = r"""
import json, sys
import jax.numpy as jnp, numpy as np
import jaxopt_core as jc

assert jnp.zeros(1).dtype == jnp.float64
data = np.load(sys.argv[1])

def f(w, X, y):  # sklearn's data term: (1 / 2n) |y - X w|^2
    return 0.5 * jnp.mean((y - X @ w) ** 2)

res = jc.regularization_path(f, jnp.zeros(data["X"].shape[1]), json.loads(sys.argv[2]),
                             args=(jnp.asarray(data["X"]), jnp.asarray(data["y"])),
                             steps=5000)
print(json.dumps({k: np.asarray(v).tolist() for k, v in res._asdict().items()}))
"""


@pytest.mark.slow
def test_path_reproduces_sklearn_lasso_path(tmp_path):
    """sklearn's lasso_path minimizes (1/2n)|y - Xw|^2 + alpha |w|_1 for each
    alpha, as Lasso does: l1 = alpha. The grid starts above alpha_max =
    max|X^T y|/n, where the solution is exactly 0 (not at alpha_max itself,
    where it is 0 only up to rounding)."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import lasso_path

    X, y = load_diabetes(return_X_y=True)
    X, y = (X - X.mean(0)) / X.std(0), y - y.mean()
    n = len(y)
    alpha_max = np.abs(X.T @ y).max() / n
    alphas = alpha_max * np.geomspace(1.2, 0.01, 8)
    np.savez(tmp_path / "diabetes.npz", X=X, y=y)
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    run = subprocess.run(
        [sys.executable, "-c", _X64_PATH, str(tmp_path / "diabetes.npz"),
         json.dumps(alphas.tolist())],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    res = {k: np.asarray(v) for k, v in json.loads(run.stdout.splitlines()[-1]).items()}

    _, ref, _ = lasso_path(X, y, alphas=alphas, tol=1e-12, max_iter=100_000)
    ref = ref.T  # sklearn: (n_features, n_alphas)
    np.testing.assert_allclose(res["params"], ref, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(res["params"] == 0, ref == 0)
    np.testing.assert_array_equal(res["nonzeros"], np.count_nonzero(ref, axis=1))
    assert res["nonzeros"][0] == 0 and res["nonzeros"][-1] == 8  # from empty to 8 of 10
    objective = 0.5 * np.mean((y[None] - ref @ X.T) ** 2, axis=1) + alphas * np.abs(ref).sum(1)
    np.testing.assert_allclose(res["losses"], objective, rtol=1e-10)
    # the automatic step: 1 / (1.05 L), L the top eigenvalue of X^T X / n
    top = np.linalg.eigvalsh(X.T @ X / n).max()
    np.testing.assert_allclose(res["learning_rate"], 1 / (1.05 * top), rtol=1e-6)
    assert res["residuals"].max() < 1e-6
