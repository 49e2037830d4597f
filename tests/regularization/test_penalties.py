"""Tests of jaxopt_core.regularization: penalty conventions and gradients,
``regularized`` as coupled weight decay, why (sub)gradient steps on an L1 loss
do not give zeros, and gradient descent on a ridge loss against scikit-learn's
``Ridge`` (in float64, in a subprocess: ``jax_enable_x64`` is process-global)."""

import inspect
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

PARAMS = {
    "dense": {"w": jnp.array([[1.0, -2.0], [0.0, 3.0]]), "b": jnp.array([0.5, -0.5])},
    "scale": jnp.array(-4.0),
}


def test_penalty_values_and_conventions():
    assert float(jc.l1_penalty(PARAMS)) == 1 + 2 + 3 + 0.5 + 0.5 + 4
    assert float(jc.l2_penalty(PARAMS)) == 0.5 * (1 + 4 + 9 + 0.25 + 0.25 + 16)  # the 1/2
    assert float(jc.elastic_net_penalty(PARAMS, 0.5, 2.0)) == pytest.approx(
        0.5 * 11 + 2.0 * 15.25)
    # masks: the helper, a prefix tree, and a mask that picks nothing
    assert float(jc.l1_penalty(PARAMS, jc.weights_only_mask)) == 6.0
    assert float(jc.l2_penalty(PARAMS, {"dense": False, "scale": True})) == 8.0
    assert float(jc.l1_penalty(PARAMS, {"dense": False, "scale": False})) == 0.0
    # accumulated in float32 for low-precision params
    assert jc.l2_penalty(jnp.ones(3, jnp.bfloat16)).dtype == jnp.float32


@pytest.mark.slow
def test_penalty_gradients():
    # d/dw 1/2 w^2 = w, bit for bit: the 1/2 convention makes it coupled decay.
    chex.assert_trees_all_equal(jax.grad(jc.l2_penalty)(PARAMS), PARAMS)
    g = jax.grad(jc.l1_penalty)(PARAMS)
    w = np.asarray(PARAMS["dense"]["w"])
    np.testing.assert_array_equal(np.asarray(g["dense"]["w"])[w != 0], np.sign(w[w != 0]))
    # At exactly 0, jax.grad of |w| is 1.0 (the documented subgradient choice).
    assert float(jax.grad(jnp.abs)(0.0)) == 1.0 and float(g["dense"]["w"][1, 0]) == 1.0
    g = jax.grad(lambda p: jc.l2_penalty(p, jc.weights_only_mask))(PARAMS)
    assert not np.any(np.asarray(g["dense"]["b"])) and float(g["scale"]) == 0.0


def _loss(w, x, y, *, scale=1.0):
    return scale * 0.5 * jnp.mean((x @ w - y) ** 2)


_X = jnp.asarray(np.random.default_rng(0).normal(size=(16, 4)), jnp.float32)
_Y = jnp.asarray(np.random.default_rng(1).normal(size=16), jnp.float32)


@pytest.mark.slow
def test_regularized_signature_value_and_vmap():
    loss = jc.regularized(_loss, l1=0.3, l2=0.7)
    assert inspect.signature(loss) == inspect.signature(_loss)
    w = jnp.array([1.0, -2.0, 0.0, 0.5])
    expect = _loss(w, _X, _Y, scale=2.0) + 0.3 * jc.l1_penalty(w) + 0.7 * jc.l2_penalty(w)
    np.testing.assert_allclose(loss(w, _X, _Y, scale=2.0), expect, rtol=1e-6)
    # with both weights 0 it is the loss itself, gradient included, bit for bit
    plain = jc.regularized(_loss)
    chex.assert_trees_all_equal(jax.grad(plain)(w, _X, _Y), jax.grad(_loss)(w, _X, _Y))
    # l1 and l2 may be traced: a sweep over penalties is one vmap
    def grad_at(l1, l2):
        return jax.grad(jc.regularized(_loss, l1, l2))(w, _X, _Y)

    swept = jax.jit(jax.vmap(grad_at))(jnp.array([0.0, 0.1, 1.0]), jnp.array([0.0, 0.1, 1.0]))
    for i, lam in enumerate([0.0, 0.1, 1.0]):
        expect = jax.grad(_loss)(w, _X, _Y) + lam * jnp.sign(w) + lam * w  # sign(0) = 0 ...
        expect = expect.at[2].add(lam)  # ... but jax.grad of |w| at w = 0 is 1
        chex.assert_trees_all_close(swept[i], expect, rtol=1e-6)


def test_regularized_errors():
    with pytest.raises(ValueError, match=r"l1 must be in \[0, inf\); got l1=-0.1"):
        jc.regularized(_loss, l1=-0.1)
    with pytest.raises(ValueError, match="l2 must be finite"):
        jc.regularized(_loss, l2=float("inf"))
    with pytest.raises(TypeError, match="l1 must be a number"):
        jc.regularized(_loss, l1="0.1")
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        jc.regularized(0.5)
    with pytest.raises(ValueError, match="l2"):
        jc.elastic_net_penalty(PARAMS, 0.1, -1.0)


@pytest.mark.slow
@pytest.mark.parametrize("make", [lambda: jc.sgd(0.05, momentum=0.9), lambda: jc.adam(0.01)])
def test_coupled_l2_is_adding_lambda_w_to_the_gradient(make):
    """torch's coupled ``weight_decay``: g <- g + lam w before the optimizer.
    Three spellings, step by step: jax.grad of the regularized loss, the
    hand-written torch rule, and add_decayed_weights placed first in a chain."""
    lam = 0.3
    reg_grad = jax.jit(jax.grad(jc.regularized(_loss, l2=lam)))
    grad = jax.jit(jax.grad(_loss))
    opt, chained = make(), jc.chain(jc.add_decayed_weights(lam), make())
    w = {k: jnp.full(4, 1.0) for k in "abc"}
    s = {"a": opt.init(w["a"]), "b": opt.init(w["b"]), "c": chained.init(w["c"])}
    for _ in range(10):
        u, s["a"] = opt.update(reg_grad(w["a"], _X, _Y), s["a"], w["a"])
        w["a"] = jc.apply_updates(w["a"], u)
        u, s["b"] = opt.update(grad(w["b"], _X, _Y) + lam * w["b"], s["b"], w["b"])
        w["b"] = jc.apply_updates(w["b"], u)
        u, s["c"] = chained.update(grad(w["c"], _X, _Y), s["c"], w["c"])
        w["c"] = jc.apply_updates(w["c"], u)
        chex.assert_trees_all_close(w["a"], w["b"], w["c"], rtol=1e-6, atol=1e-7)
    assert not np.allclose(w["a"], 1.0)


@pytest.mark.slow
def test_gradient_steps_on_an_l1_loss_hover_while_the_prox_gives_zeros():
    """f = 1/2 |w - c|^2 with |c_i| < l1 has its minimum of f + l1|w|_1 at 0.
    Gradient descent on the regularized loss jumps across 0 by about lr * l1
    every step and never lands on it; the proximal step lands on it exactly."""
    c, l1, lr = jnp.array([0.3, -0.2, 0.05]), 1.0, 0.1

    def f(w):
        return 0.5 * jnp.sum((w - c) ** 2)

    grad = jax.jit(jax.grad(jc.regularized(f, l1=l1)))
    w, history = jnp.ones(3), []
    for _ in range(100):
        w = w - lr * grad(w)
        history.append(np.asarray(w))
    tail = np.array(history[-20:])
    assert np.all(tail != 0)  # never exactly 0 ...
    assert np.all(np.abs(tail) <= lr * (l1 + 0.5))  # ... but within a band of ~lr*l1
    assert np.all(np.any(tail > 0, axis=0) & np.any(tail < 0, axis=0))  # crossing 0
    opt, p = jc.proximal_gradient(lr, l1=l1), jnp.ones(3)
    s = opt.init(p)
    for _ in range(100):
        u, s = opt.update(jax.grad(f)(p), s, p)
        p = jc.apply_updates(p, u)
    assert np.all(np.asarray(p) == 0)


# Runs in a fresh interpreter with JAX_ENABLE_X64=1: reads the data (argv[1])
# and the ridge alphas (argv[2]) and prints, as JSON, the coefficients that
# 20000 steps of jc.sgd on jax.grad(regularized(f, l2=alpha/n)) reach.
_X64_RIDGE = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
import jaxopt_core as jc

assert jnp.zeros(1).dtype == jnp.float64
data = np.load(sys.argv[1])
X, y = jnp.asarray(data["X"]), jnp.asarray(data["y"])
n = len(y)
top = float(np.linalg.eigvalsh(np.asarray(X.T @ X) / n).max())

def f(w):
    return 0.5 * jnp.mean((y - X @ w) ** 2)

def fit(alpha):
    l2 = alpha / n
    grad = jax.grad(jc.regularized(f, l2=l2))
    opt = jc.sgd(1.0 / (top + l2))
    def step(carry, _):
        w, s = carry
        u, s = opt.update(grad(w), s, w)
        return (jc.apply_updates(w, u), s), None
    w0 = jnp.zeros(X.shape[1])
    return jax.lax.scan(step, (w0, opt.init(w0)), None, length=20000)[0][0]

alphas = jnp.asarray(json.loads(sys.argv[2]))
print(json.dumps(np.asarray(jax.jit(jax.vmap(fit))(alphas)).tolist()))
"""

_RIDGE_ALPHAS = [0.1, 10.0, 1000.0]


@pytest.mark.slow
def test_gradient_descent_on_regularized_mse_reaches_sklearn_ridge(tmp_path):
    """sklearn's Ridge minimizes |y - Xw|^2 + alpha |w|^2. Divided by 2n this
    is (1/2n)|y - Xw|^2 + (alpha/n) * 1/2 |w|^2: our half-MSE plus
    l2_penalty with l2 = alpha / n."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True)
    X, y = (X - X.mean(0)) / X.std(0), y - y.mean()
    np.savez(tmp_path / "diabetes.npz", X=X, y=y)
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    run = subprocess.run(
        [sys.executable, "-c", _X64_RIDGE, str(tmp_path / "diabetes.npz"),
         json.dumps(_RIDGE_ALPHAS)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    coefs = np.asarray(json.loads(run.stdout.splitlines()[-1]))
    for alpha, coef in zip(_RIDGE_ALPHAS, coefs, strict=True):
        ref = Ridge(alpha=alpha, fit_intercept=False, solver="cholesky").fit(X, y).coef_
        np.testing.assert_allclose(coef, ref, rtol=0, atol=1e-5)
    assert np.abs(coefs[0] - coefs[-1]).max() > 1.0  # the alphas make a difference
