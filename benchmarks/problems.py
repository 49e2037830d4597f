"""The problems the benchmarks train: pure ``loss(params, batch)`` functions,
initial params and data, built once and shared by every contender.

* ``linear_regression``: ``n x d`` Gaussian features, a dense true weight
  vector plus noise; params ``{"w": [d], "b": []}``; half mean squared error.
* ``digits_mlp``: scikit-learn's ``load_digits`` (1797 8x8 images, pixels
  scaled to [0, 1]), a 64-32-10 ``tanh`` MLP, mean softmax cross-entropy.
* ``tanh_regression_model``: the params and loss of a linear model or a
  ``d_in-h-h-1`` tanh MLP regressing ``(x, y)`` batches (the checkpoint and
  streaming benchmarks bring their own data).
* ``residual_mlp``: a deep residual MLP whose params are many small leaves,
  ``n_blocks`` blocks of ``{"scale", "w", "b", "gain"}`` (``4 n_blocks``
  leaves), ``h <- h + gain * tanh((h * scale) w + b)`` (a pre-scaled residual
  block with a per-channel output gain), on random regression data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Problem(NamedTuple):
    name: str
    loss: Callable[[Any, Any], jax.Array]
    params: Any
    data: tuple[jax.Array, jax.Array]
    batch_size: int | None

    @property
    def n_params(self) -> int:
        return sum(x.size for x in jax.tree.leaves(self.params))

    @property
    def n_leaves(self) -> int:
        return len(jax.tree.leaves(self.params))

    @property
    def data_bytes(self) -> int:
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self.data))


def _half_mse(params, batch):
    x, y = batch
    return 0.5 * jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def linear_regression(n: int = 512, d: int = 16, seed: int = 0) -> Problem:
    kx, kw, ke = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, (n, d), jnp.float32)
    y = x @ jax.random.normal(kw, (d,)) + 0.1 * jax.random.normal(ke, (n,))
    params = {"w": jnp.zeros(d, jnp.float32), "b": jnp.zeros((), jnp.float32)}
    return Problem("linear regression", _half_mse, params, (x, y), None)


def _mlp_loss(params, batch):
    x, y = batch
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def digits_mlp(hidden: int = 32, batch_size: int | None = 128, seed: int = 0) -> Problem:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = jnp.asarray(digits.data / 16.0, jnp.float32)
    y = jnp.asarray(digits.target, jnp.int32)
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {
        "w1": jax.random.normal(k1, (64, hidden), jnp.float32) / np.sqrt(64),
        "b1": jnp.zeros(hidden, jnp.float32),
        "w2": jax.random.normal(k2, (hidden, 10), jnp.float32) / np.sqrt(hidden),
        "b2": jnp.zeros(10, jnp.float32),
    }
    return Problem(f"digits MLP 64-{hidden}-10", _mlp_loss, params, (x, y), batch_size)


def _residual_loss(params, batch):
    x, y = batch
    h = x
    for block in params:
        h = h + block["gain"] * jnp.tanh((h * block["scale"]) @ block["w"] + block["b"])
    return 0.5 * jnp.mean((h - y) ** 2)


def residual_mlp(n_blocks: int = 250, width: int = 32, batch: int = 64, seed: int = 0) -> Problem:
    keys = jax.random.split(jax.random.key(seed), n_blocks + 2)
    params = [
        {
            "scale": jnp.ones(width, jnp.float32),
            "w": jax.random.normal(keys[i], (width, width), jnp.float32) / np.sqrt(width),
            "b": jnp.zeros(width, jnp.float32),
            "gain": jnp.full(width, 0.1, jnp.float32),
        }
        for i in range(n_blocks)
    ]
    x = jax.random.normal(keys[-2], (batch, width), jnp.float32)
    y = jax.random.normal(keys[-1], (batch, width), jnp.float32)
    name = f"residual MLP, {n_blocks} blocks of width {width}"
    return Problem(name, _residual_loss, params, (x, y), None)


# The problems a subprocess can rebuild by name (see benchmarks.memory).
PROBLEMS = {"linreg": linear_regression, "digits": digits_mlp}


LR_RANGE = (1e-4, 1e-1)


def _linear_mse(p, batch):
    x, y = batch
    return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)


def _tanh_mlp_mse(p, batch):
    x, y = batch
    z = jnp.tanh(jnp.tanh(x @ p["w1"]) @ p["w2"]) @ p["w3"]
    return jnp.mean((z - y) ** 2)


def tanh_regression_model(d_in: int, hidden: int) -> tuple[Any, Callable]:
    """``(params, loss)``: a linear model when ``hidden`` is 0, else a
    ``d_in-hidden-hidden-1`` tanh MLP (scaled normal init), mean squared error."""
    if not hidden:
        return {"w": jnp.zeros(d_in), "b": jnp.zeros(())}, _linear_mse
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {"w1": jax.random.normal(k1, (d_in, hidden)) / np.sqrt(d_in),
              "w2": jax.random.normal(k2, (hidden, hidden)) / np.sqrt(hidden),
              "w3": jax.random.normal(k3, (hidden,)) / np.sqrt(hidden)}
    return params, _tanh_mlp_mse


def learning_rates(k: int) -> np.ndarray:
    """K learning rates spread geometrically over ``LR_RANGE`` (one: 1e-2)."""
    return np.geomspace(*LR_RANGE, k).astype(np.float32) if k > 1 else np.array([1e-2], np.float32)
