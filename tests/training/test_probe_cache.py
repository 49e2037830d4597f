"""The abstract probe of a sweep's optimizer is traced once per function and
abstract signature (issue 14: tens of ms of host time per sweep call)."""

import jax
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


def test_a_small_numpy_leaf_is_placed_once_per_value():
    # A sweep rebuilds its grid chunk as new NumPy arrays every call: the
    # bytes, not the object, find the earlier placement.
    from jaxopt_core.training import sharding

    members, replicated = sharding.member_shardings(None)
    lrs = np.array([0.1, 0.2, 0.3], np.float32)
    first = sharding.put_on_mesh({"lr": lrs}, members)["lr"]
    assert sharding.put_on_mesh({"lr": lrs.copy()}, members)["lr"] is first
    assert sharding.put_on_mesh({"lr": lrs}, replicated)["lr"] is not first  # another sharding
    changed = lrs.copy()
    changed[0] = 0.5
    placed = sharding.put_on_mesh({"lr": changed}, members)["lr"]
    assert placed is not first
    np.testing.assert_array_equal(placed, changed)
    bits = sharding.put_on_mesh(lrs.view(np.int32), members)  # same bytes, another dtype
    assert bits.dtype == jnp.int32 and bits is not first
    np.testing.assert_array_equal(bits, lrs.view(np.int32))
    first.delete()  # as a donation would
    again = sharding.put_on_mesh({"lr": lrs}, members)["lr"]
    assert not again.is_deleted()
    np.testing.assert_array_equal(again, lrs)
    big = np.zeros(sharding._BY_VALUE_BYTES // 4 + 1, np.float32)
    assert sharding.put_on_mesh(big, members) is not sharding.put_on_mesh(big, members)


X64_PLACEMENT = """
import jax, numpy as np
from jaxopt_core.training import sharding
rep = sharding.member_shardings(None)[1]
x = np.array([0.1, 0.2])
print(sharding.put_on_mesh(x, rep).dtype)
jax.config.update("jax_enable_x64", True)
print(sharding.put_on_mesh(x, rep).dtype)
"""


def test_the_value_memo_follows_the_x64_flag():
    # jax_enable_x64 is process-global: flip it in a fresh interpreter.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", X64_PLACEMENT], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["float32", "float64"]


def test_key_bits_are_the_keys_data_once_per_key():
    import gc
    import weakref

    from jaxopt_core.training.batching import _KEY_BITS, key_bits

    key = jax.random.key(7)
    bits = key_bits(key)
    np.testing.assert_array_equal(bits, jax.random.key_data(key))
    assert key_bits(key) is bits
    other = jax.random.key(7)  # equal bits, another object: unwrapped anew
    assert key_bits(other) is not bits
    np.testing.assert_array_equal(key_bits(other), bits)
    alive = weakref.ref(key)
    slot = id(key)
    del key
    gc.collect()
    assert alive() is None and slot not in _KEY_BITS


def test_the_best_members_row_read_on_the_host_is_the_devices_row():
    from jaxopt_core.training import sharding

    tree = {"w": jnp.arange(12.0).reshape(4, 3), "n": jnp.arange(4, dtype=jnp.int32),
            "h": jnp.arange(8, dtype=jnp.bfloat16).reshape(4, 2)}
    host = sharding.member_to_host(tree, 2)
    device = jax.tree.map(np.asarray, sharding._take_row(tree, np.int32(2)))
    for name in tree:
        assert isinstance(host[name], np.ndarray) and host[name].flags.owndata
        assert host[name].dtype == device[name].dtype
        np.testing.assert_array_equal(host[name], device[name])


@pytest.mark.parametrize("shape", [(3, 1), (2, 9), (4, 200)])
def test_the_tail_loss_of_host_losses_is_computed_on_the_host(shape):
    from jaxopt_core.training.ranking import tail_loss

    losses = np.random.default_rng(0).lognormal(size=shape).astype(np.float32)
    losses[0, -1] = np.nan  # diverged at the end: NaN, as on the device
    host = tail_loss(losses)
    assert isinstance(host, np.ndarray) and host.dtype == np.float32
    m = max(1, shape[1] // 10)
    np.testing.assert_allclose(host, np.mean(losses[:, -m:].astype(np.float64), axis=1),
                               rtol=1e-6)
    np.testing.assert_allclose(host, tail_loss(jnp.asarray(losses)), rtol=1e-6)
