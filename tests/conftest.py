"""Shared test configuration and the one table of optimizers.

Every test that takes an argument named ``opt_case`` is run once per row of
``OPTIMIZER_TABLE``: ``(name, kwargs)`` such that ``jaxopt_core.<name>(**kwargs)``
and ``optax.<name>(**kwargs)`` are the same optimizer. ``learning_rate`` is not
in the kwargs: tests pass their own (often a traced one).
"""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

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


class CompileCounter:
    """Counts XLA backend compilations while registered."""

    def __init__(self):
        self.count = 0

    def __call__(self, event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            self.count += 1


@pytest.fixture
def compiles():
    """A :class:`CompileCounter` listening for the duration of one test."""
    import jax

    counter = CompileCounter()
    jax.monitoring.register_event_duration_secs_listener(counter)
    yield counter
    jax.monitoring.unregister_event_duration_listener(counter)


def _case_id(case):
    name, kw = case
    return name + "".join(f"-{k}={v}" for k, v in kw.items())


def pytest_generate_tests(metafunc):
    if "opt_case" in metafunc.fixturenames:
        metafunc.parametrize(
            "opt_case", OPTIMIZER_TABLE, ids=[_case_id(c) for c in OPTIMIZER_TABLE]
        )
