r"""Small models as pure functions over dicts of arrays: linear regression,
softmax (multinomial logistic) regression and a one-hidden-layer MLP.

A :class:`Model` bundles ``init(key) -> params`` with ``loss``, ``predict``
and ``metric``, all pure, so they can be jitted, vmapped over a stack of
parameters (one per sweep member) and differentiated. A batch is an
``(x, y)`` tuple. Conventions, stated once:

* regression loss is *half* the mean squared error,
  :math:`\tfrac{1}{2n}\sum_i (f(x_i) - y_i)^2`, so an L1 penalty
  :math:`\alpha\|w\|_1` added to it is scikit-learn's Lasso objective;
* classification loss is the mean softmax cross-entropy;
* the metric is accuracy for classification and :math:`R^2` for regression,
  higher is better for both;
* weight matrices are 2-D (``[n_in, n_out]``) and biases 1-D, so
  :func:`~jaxopt_core.weights_only_mask` picks the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_core.app.datasets import CLASSIFICATION, REGRESSION

# model -> the tasks it can solve; the order is the order shown in --help.
MODELS = {
    "linear": (REGRESSION,),
    "logistic": (CLASSIFICATION,),
    "mlp": (CLASSIFICATION, REGRESSION),
}


class Model(NamedTuple):
    """A model as pure functions over a params dict.

    Attributes:
        name: ``linear``, ``logistic`` or ``mlp``.
        task: ``"classification"`` or ``"regression"``.
        init: ``key -> params``.
        loss: ``(params, (x, y)) -> scalar`` training loss.
        predict: ``(params, x) -> [n]`` class indices or real predictions.
        metric: ``(params, (x, y)) -> scalar``: accuracy or R² (higher is better).
        metric_name: ``"accuracy"`` or ``"r2"``.
    """

    name: str
    task: str
    init: Callable[[jax.Array], Any]
    loss: Callable[[Any, tuple], jax.Array]
    predict: Callable[[Any, jax.Array], jax.Array]
    metric: Callable[[Any, tuple], jax.Array]
    metric_name: str


def make_model(
    name: str, task: str, n_features: int, n_outputs: int = 1, *, hidden: int = 32
) -> Model:
    """Build one of the built-in models for a task.

    Args:
        name: ``linear`` (regression), ``logistic`` (classification) or
            ``mlp`` (either; one hidden ``tanh`` layer).
        task: ``"classification"`` or ``"regression"``.
        n_features: input width.
        n_outputs: number of classes for classification (1 for regression).
        hidden: width of the MLP's hidden layer.

    Raises:
        ValueError: unknown name, or a model that cannot solve ``task``
            (``logistic`` on regression, ``linear`` on classification).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxopt_core.app.models import make_model
        >>> model = make_model("logistic", "classification", n_features=4, n_outputs=3)
        >>> params = model.init(jax.random.key(0))
        >>> x, y = jnp.ones((5, 4)), jnp.zeros(5, jnp.int32)
        >>> float(model.loss(params, (x, y)))  # log(3) at zero weights
        1.0986123085021973
        >>> model.predict(params, x).shape, model.metric_name
        ((5,), 'accuracy')
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    if task not in MODELS[name]:
        other = [m for m, tasks in MODELS.items() if task in tasks]
        raise ValueError(f"model {name!r} cannot do {task}; use {' or '.join(other)}")
    if task == CLASSIFICATION and n_outputs < 2:
        raise ValueError(f"classification needs n_outputs >= 2 classes; got {n_outputs}")
    out = n_outputs if task == CLASSIFICATION else 1

    if name == "mlp":
        init = _mlp_init(n_features, hidden, out)
        forward = _mlp_forward
    else:
        init = _linear_init(n_features, out)
        forward = _linear_forward

    if task == CLASSIFICATION:

        def loss(params, batch):
            x, y = batch
            logp = jax.nn.log_softmax(forward(params, x))
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

        def predict(params, x):
            return jnp.argmax(forward(params, x), axis=-1)

        def metric(params, batch):
            x, y = batch
            return jnp.mean(predict(params, x) == y)

        metric_name = "accuracy"
    else:

        def predict(params, x):
            return forward(params, x)[:, 0]

        def loss(params, batch):
            x, y = batch
            return 0.5 * jnp.mean((predict(params, x) - y) ** 2)

        def metric(params, batch):
            x, y = batch
            residual = jnp.sum((predict(params, x) - y) ** 2)
            return 1.0 - residual / jnp.sum((y - jnp.mean(y)) ** 2)

        metric_name = "r2"

    return Model(name, task, init, loss, predict, metric, metric_name)


def _linear_init(n_in: int, n_out: int) -> Callable[[jax.Array], Any]:
    # Zeros: the problem is convex, and every sweep member starts at the same point.
    def init(key):
        del key
        return {"w": jnp.zeros((n_in, n_out)), "b": jnp.zeros(n_out)}

    return init


def _linear_forward(params, x):
    return x @ params["w"] + params["b"]


def _mlp_init(n_in: int, hidden: int, n_out: int) -> Callable[[jax.Array], Any]:
    # LeCun-normal weights (variance 1/fan_in) keep tanh units out of saturation.
    def init(key):
        k1, k2 = jax.random.split(key)
        return {
            "hidden": {
                "w": jax.random.normal(k1, (n_in, hidden)) / jnp.sqrt(n_in),
                "b": jnp.zeros(hidden),
            },
            "out": {
                "w": jax.random.normal(k2, (hidden, n_out)) / jnp.sqrt(hidden),
                "b": jnp.zeros(n_out),
            },
        }

    return init


def _mlp_forward(params, x):
    h = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return h @ params["out"]["w"] + params["out"]["b"]
