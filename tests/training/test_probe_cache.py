"""The abstract probe of a sweep's optimizer is traced once per function and
abstract signature (issue 14: tens of ms of host time per sweep call)."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_core as jc
from jaxopt_core.training.grid import probe_optimizer
from tests.conftest import PARAMS


def test_a_repeated_probe_skips_the_trace_but_not_the_member_checks():
    calls = []

    def opt_fn(learning_rate):
        calls.append(isinstance(learning_rate, float))  # concrete member check, or traced
        return jc.sgd(learning_rate)

    grid = {"learning_rate": np.array([0.1, 0.2], np.float32)}
    probe_optimizer(opt_fn, grid, PARAMS)
    traced = calls.count(False)
    assert traced >= 1
    probe_optimizer(opt_fn, {"learning_rate": np.array([0.3, 0.4], np.float32)}, PARAMS)
    assert calls.count(False) == traced and calls.count(True) == 4
    probe_optimizer(opt_fn, grid, {"w": jnp.zeros(4), "b": jnp.zeros(())})  # new shapes
    assert calls.count(False) == 2 * traced


def test_a_failed_probe_is_not_cached():
    def opt_fn(learning_rate):
        return jc.sgd(0.1 if learning_rate > 0.5 else learning_rate)  # Python branch on it

    grid = {"learning_rate": np.array([0.1, 0.2], np.float32)}
    for _ in range(2):
        with pytest.raises(TypeError, match="optimizer_fn"):
            probe_optimizer(opt_fn, grid, PARAMS)
