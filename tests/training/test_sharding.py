"""Sweeps sharded over several (forced) CPU devices equal the one-device sweep;
results come back as host data (see jaxopt_core.training.sharding).

"Equal" is to float32 rounding (rtol 1e-5, as sweep against fit): with 2
members per device instead of 8 on one, the matrix product ``x @ w`` over a
device's members has fewer rows, and XLA:CPU's matrix kernel (and so the
order of each row's sum) depends on the row count; see "Equality across
layouts" in jaxopt_core.training.sweep. Many cases are bit-for-bit equal;
``losses_bitwise`` in the report records which. Runs with the same members
per device, across processes, are compared bit for bit in test_multiprocess.

XLA reads ``--xla_force_host_platform_device_count`` when JAX starts, so the
multi-device run happens in a fresh Python process.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA, PARAMS, mse

import jaxopt_core as jc
from jaxopt_core.training.sharding import (
    PER_MEMBER_PARAMS,
    gather_to_host,
    member_to_host,
    to_host,
)

# Runs a 4-device sweep in a subprocess (XLA_FLAGS must be set before jax starts).
pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    import jaxopt_core as jc

    assert jax.device_count() == 4, jax.devices()
    X = jax.random.normal(jax.random.key(0), (32, 3))
    Y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.3 * jax.random.normal(jax.random.key(1), (32,))

    def mse(p, batch):
        x, y = batch
        return jnp.mean((x @ p["w"] - y) ** 2)

    params = {"w": jnp.zeros(3)}
    report = {}
    for k in (8, 6):
        lrs = np.logspace(-3, -1.5, k)
        lrs[1] = 80.0  # one member diverges
        grid = {"learning_rate": lrs, "momentum": np.linspace(0.0, 0.5, k)}
        def run(optimizer_fn=jc.sgd, **kw):
            # Validation every 10 steps, and the params of each member's best one.
            return jc.sweep(mse, params, optimizer_fn, (X, Y), grid=grid, steps=40,
                            batch_size=8, eval_fn=mse, eval_data=(X[:8], Y[:8]),
                            eval_every=10, keep_best=True, **kw)
        one = run(devices=jax.devices()[:1])
        runs = {"four": run(), "two": run(devices=jax.devices()[2:]), "chunked": run(chunk_size=3)}
        entry = {"diverged": one.diverged.tolist()}
        for name, r in runs.items():
            a, b = np.asarray(one.losses), np.asarray(r.losses)
            entry[name] = {
                "shape": list(b.shape),
                "devices": len(r.params["w"].sharding.device_set),
                "host_data": all(isinstance(x, np.ndarray) for x in (r.losses, r.diverged)),
                "params_devices": len(r.params["w"].sharding.device_set),
                "spec": str(getattr(r.params["w"].sharding, "spec", None)),
                "losses_equal": bool(np.allclose(a, b, rtol=1e-5, atol=0, equal_nan=True)),
                "losses_bitwise": bool(np.array_equal(a, b, equal_nan=True)),
                "max_rel": float(np.nanmax(np.abs(a - b) / np.abs(a))),
                "params_equal": bool(np.allclose(one.params["w"], r.params["w"], rtol=1e-5)),
                "diverged": r.diverged.tolist(),
                "best": r.best_index == one.best_index,
                "evals_equal": bool(np.allclose(one.evals["eval"], r.evals["eval"], rtol=1e-5,
                                                equal_nan=True)),
                "evals_shape": list(np.shape(r.evals["eval"])),
                "kept_equal": bool(np.allclose(one.best_params_per_member["w"],
                                               r.best_params_per_member["w"], rtol=1e-5))
                and np.asarray(one.best_step).tolist() == np.asarray(r.best_step).tolist()
                and np.asarray(one.diverged_at).tolist() == np.asarray(r.diverged_at).tolist(),
            }
        # The copy of diverged members' params (the CPU fast path for small
        # params, taken above) against freezing them in place, on four
        # devices, with jc's and optax's SGD: the same numbers bit for bit.
        from jaxopt_core.training import sweep as sweep_module
        decide = sweep_module.frozen_copy_pays
        for name, opt_fn in (("jc", jc.sgd), ("optax", optax.sgd)):
            taken = []

            def recording(*a, **kw):
                taken.append(decide(*a, **kw))
                return taken[-1]

            sweep_module.frozen_copy_pays = recording
            try:
                copied = run(optimizer_fn=opt_fn)
                sweep_module.frozen_copy_pays = lambda *a, **kw: False
                plain = run(optimizer_fn=opt_fn)
            finally:
                sweep_module.frozen_copy_pays = decide
            entry["copy_vs_plain_" + name] = {
                "copy_taken": taken == [True],
                "diverged": copied.diverged.tolist(),
                "equal": all(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
                             for a, b in zip(jax.tree.leaves((copied.params, copied.losses,
                                                              copied.diverged_at, copied.evals,
                                                              copied.best_params_per_member)),
                                             jax.tree.leaves((plain.params, plain.losses,
                                                              plain.diverged_at, plain.evals,
                                                              plain.best_params_per_member)))),
            }
        report[k] = entry
    # Placements remembered across calls are re-wraps on one device, never
    # the copies made for a mesh of four or two.
    from jaxopt_core.training import sharding
    report["remembered_devices"] = sorted(
        {len(placed.sharding.device_set) for _, placed in sharding._PLACED.values()})
    print("REPORT" + json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def report():
    flags = "--xla_force_host_platform_device_count=4"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("REPORT"))
    return json.loads(line[len("REPORT"):])


@pytest.mark.parametrize("k", ["8", "6"])
@pytest.mark.parametrize("run", ["four", "two", "chunked"])
def test_sharded_sweep_equals_one_device(report, k, run):
    entry = report[k]
    r = entry[run]
    assert r["shape"] == [int(k), 40]
    assert r["losses_equal"] and r["params_equal"]
    assert r["diverged"] == entry["diverged"] and entry["diverged"][1]
    assert r["best"] and r["host_data"]
    assert r["evals_equal"] and r["evals_shape"] == [int(k), 4] and r["kept_equal"]


@pytest.mark.parametrize("k", ["8", "6"])
@pytest.mark.parametrize("library", ["jc", "optax"])
def test_sharded_frozen_copy_equals_freezing_in_place(report, k, library):
    r = report[k]["copy_vs_plain_" + library]
    assert r["copy_taken"] and r["diverged"][1]
    assert r["equal"]


def test_only_copy_free_placements_are_remembered(report):
    assert report["remembered_devices"] == [1]


def test_members_stay_sharded_when_k_divides(report):
    assert report["8"]["four"]["devices"] == 4
    assert report["8"]["four"]["spec"] in ("P('members',)", "PartitionSpec('members',)")
    assert report["8"]["two"]["devices"] == 2
    # K = 6 on 4 devices is padded to 8 for the run; the 6 results cannot be
    # split evenly, so they come back replicated over the same devices.
    assert report["6"]["four"]["params_devices"] == 4


def test_sweep_results_are_host_data_but_the_stacked_params():
    # The grid and steps of test_sweep.test_result_helpers: the same compiled program.
    lrs = np.array([0.003, 0.03, 0.3, 80.0])
    res = jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": lrs}, steps=100)
    for name in res._fields:
        if name not in PER_MEMBER_PARAMS:
            leaves = jax.tree.leaves(getattr(res, name))
            assert not any(isinstance(x, jax.Array) for x in leaves), name
    assert isinstance(res.params["w"], jax.Array)
    row = {k: np.asarray(v[res.best_index]) for k, v in res.params.items()}
    best = res.best_params()
    assert all(isinstance(v, np.ndarray) for v in best.values())
    np.testing.assert_array_equal(best["w"], row["w"])
    np.testing.assert_array_equal(best["b"], row["b"])
    gathered = res.gather_params()
    assert isinstance(gathered.params["w"], np.ndarray)
    np.testing.assert_array_equal(gathered.params["w"], np.asarray(res.params["w"]))
    assert gathered.losses is res.losses


def test_gather_helpers_on_one_process():
    tree = {"a": jnp.arange(6.0).reshape(3, 2), "name": "x", "none": None, "host": np.ones(2)}
    out = gather_to_host(tree)
    assert isinstance(out["a"], np.ndarray) and out["name"] == "x" and out["none"] is None
    assert out["host"] is tree["host"]
    np.testing.assert_array_equal(member_to_host({"a": tree["a"]}, 1)["a"], [2.0, 3.0])
    assert member_to_host({"a": tree["a"]}, None) is None
    np.testing.assert_array_equal(to_host(tree["a"]), out["a"])
