"""Shared test configuration and the one table of optimizers.

Every test that takes an argument named ``opt_case`` is run once per row of
``OPTIMIZER_TABLE``: ``(name, kwargs)`` such that ``jaxopt_core.<name>(**kwargs)``
and ``optax.<name>(**kwargs)`` are the same optimizer. ``learning_rate`` is not
in the kwargs: tests pass their own (often a traced one).
"""

import contextlib
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

# A small noisy linear regression shared by the training and sweep tests (one
# loss object, so their compiled programs are shared too).
X = jax.random.normal(jax.random.key(0), (32, 3))
Y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.3 + 0.2 * jax.random.normal(jax.random.key(1), (32,))
DATA = (X, Y)
PARAMS = {"w": jnp.zeros(3), "b": jnp.zeros(())}


def mse(params, batch):
    """Mean squared error of the linear model ``x @ w + b``."""
    x, y = batch
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

OPTIMIZER_TABLE = [
    ("sgd", {}),
    ("sgd", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.5, "nesterov": True}),
    ("adam", {}),
    ("adam", {"b1": 0.5, "b2": 0.9, "eps_root": 1e-6}),
    ("adam", {"nesterov": True}),
    ("adamw", {"weight_decay": 0.1}),
    ("rmsprop", {}),
    ("rmsprop", {"centered": True, "initial_scale": 0.1}),
    ("rmsprop", {"momentum": 0.9, "nesterov": True}),
    ("rmsprop", {"eps_in_sqrt": False, "bias_correction": True, "decay": 0.8}),
    ("adagrad", {}),
]

# A learning rate per optimizer that makes 100+ steps on the test problems move
# far from the start without diverging.
LEARNING_RATES = {"sgd": 0.05, "adam": 0.01, "adamw": 0.01, "rmsprop": 0.005, "adagrad": 0.1}


@contextlib.contextmanager
def count_compiles():
    """Collect the XLA backend compiles that happen inside the block:
    ``with count_compiles() as seen: ...; assert len(seen) == 0``."""
    import jax

    seen = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            seen.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture
def compiles():
    """The list of backend compiles seen during one test (see count_compiles)."""
    with count_compiles() as seen:
        yield seen


def _case_id(case):
    name, kw = case
    return name + "".join(f"-{k}={v}" for k, v in kw.items())


def pytest_generate_tests(metafunc):
    if "opt_case" in metafunc.fixturenames:
        metafunc.parametrize(
            "opt_case", OPTIMIZER_TABLE, ids=[_case_id(c) for c in OPTIMIZER_TABLE]
        )
