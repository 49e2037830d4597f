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


def test_a_sweep_repeated_with_the_same_values_skips_the_member_checks():
    calls = []

    def opt_fn(learning_rate):
        calls.append(isinstance(learning_rate, float))
        return jc.sgd(learning_rate)

    grid = {"learning_rate": np.array([0.1, 0.2, 0.3], np.float32)}
    probe_optimizer(opt_fn, grid, PARAMS)
    probe_optimizer(opt_fn, {n: v.copy() for n, v in grid.items()}, PARAMS)  # equal values
    assert calls.count(True) == 3
    probe_optimizer(opt_fn, {"learning_rate": np.array([0.1, 0.2, 0.4], np.float32)}, PARAMS)
    assert calls.count(True) == 6


def test_a_rejected_member_is_checked_again():
    def opt_fn(learning_rate):
        return jc.sgd(learning_rate)

    grid = {"learning_rate": np.array([0.1, -0.2], np.float32)}
    for _ in range(2):
        with pytest.raises(ValueError, match="member 1"):
            probe_optimizer(opt_fn, grid, PARAMS)


def test_eval_fn_is_traced_once_per_abstract_signature():
    from jaxopt_core.training.evaluation import check_evaluation

    traces = []

    def eval_fn(p, data):
        traces.append(1)
        return {"mse": jnp.mean((data - p["w"].sum()) ** 2)}

    data = jnp.ones(4)
    for _ in range(2):
        plan = check_evaluation(eval_fn, data, 2, 10, PARAMS)
    assert len(traces) == 1 and plan.names == ("mse",)
    check_evaluation(eval_fn, jnp.ones(5), 2, 10, PARAMS)  # new shape: traced again
    assert len(traces) == 2


def test_a_jax_array_already_in_place_is_placed_once_while_it_lives():
    import gc

    from jaxopt_core.training import sharding

    _, replicated = sharding.member_shardings(None)
    x, host = jnp.arange(4.0), np.arange(3.0)
    first = sharding.put_on_mesh({"x": x, "host": host}, replicated)
    again = sharding.put_on_mesh({"x": x, "host": host}, replicated)
    assert again["x"] is first["x"] and again["x"].sharding == replicated
    np.testing.assert_array_equal(again["x"], x)
    # A NumPy array can change between calls: it is placed anew every time.
    host[0] = 7.0
    assert float(sharding.put_on_mesh({"host": host}, replicated)["host"][0]) == 7.0
    key = (id(x), replicated)
    assert key in sharding._PLACED
    del x, first, again
    gc.collect()
    assert key not in sharding._PLACED  # forgotten with its source


def test_a_placement_is_forgotten_without_the_module_globals(monkeypatch):
    # At interpreter exit the module's globals are cleared while arrays may
    # still die later: the callback that forgets a placement must not need
    # them (else "Exception ignored in ..." floods the end of every run).
    import gc
    import sys

    from jaxopt_core.training import sharding

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    replicated = sharding.member_shardings(None)[1]
    x = jnp.ones(3)
    sharding.put_on_mesh(x, replicated)
    memo, key = sharding._PLACED, (id(x), replicated)
    assert key in memo
    monkeypatch.setattr(sharding, "_PLACED", None)  # as at interpreter exit
    del x
    gc.collect()
    assert not seen and key not in memo


def test_a_deleted_array_is_not_served_from_the_memo():
    from jaxopt_core.training import sharding

    replicated = sharding.member_shardings(None)[1]
    x = jnp.ones(3)
    sharding.put_on_mesh(x, replicated)
    x.delete()  # as a donation elsewhere would: the re-wrap shares its buffer
    with pytest.raises(RuntimeError, match="deleted"):
        sharding.put_on_mesh(x, replicated)


def test_a_placement_that_is_its_source_is_not_remembered(monkeypatch):
    # Were device_put to hand the array back, remembering it would keep the
    # source alive from the memo itself.
    import gc
    import weakref

    from jaxopt_core.training import sharding

    replicated = sharding.member_shardings(None)[1]
    monkeypatch.setattr(sharding.jax, "device_put", lambda xs, _: xs)
    x = jnp.ones(3)
    assert sharding.put_on_mesh(x, replicated) is x
    assert (id(x), replicated) not in sharding._PLACED
    alive = weakref.ref(x)
    del x
    gc.collect()
    assert alive() is None
