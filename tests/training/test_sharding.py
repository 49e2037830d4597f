"""Sweeps sharded over several (forced) CPU devices equal the one-device sweep.

"Equal" is to float32 rounding (rtol 1e-5, as sweep against fit): with 2
members per device instead of 8 on one, XLA:CPU compiles different kernels
(vectorised over a different number of members), whose last bits can differ
after some steps. Many cases are bit-for-bit equal; ``losses_bitwise`` in the
report records which.

XLA reads ``--xla_force_host_platform_device_count`` when JAX starts, so the
multi-device run happens in a fresh Python process.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

# Runs a 4-device sweep in a subprocess (XLA_FLAGS must be set before jax starts).
pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
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
        def run(**kw):
            return jc.sweep(mse, params, jc.sgd, (X, Y), grid=grid, steps=40, batch_size=8, **kw)
        one = run(devices=jax.devices()[:1])
        runs = {"four": run(), "two": run(devices=jax.devices()[2:]), "chunked": run(chunk_size=3)}
        entry = {"diverged": one.diverged.tolist()}
        for name, r in runs.items():
            a, b = np.asarray(one.losses), np.asarray(r.losses)
            entry[name] = {
                "shape": list(b.shape),
                "devices": len(r.losses.sharding.device_set),
                "params_devices": len(r.params["w"].sharding.device_set),
                "spec": str(getattr(r.params["w"].sharding, "spec", None)),
                "losses_equal": bool(np.allclose(a, b, rtol=1e-5, atol=0, equal_nan=True)),
                "losses_bitwise": bool(np.array_equal(a, b, equal_nan=True)),
                "max_rel": float(np.nanmax(np.abs(a - b) / np.abs(a))),
                "params_equal": bool(np.allclose(one.params["w"], r.params["w"], rtol=1e-5)),
                "diverged": r.diverged.tolist(),
                "best": r.best_index == one.best_index,
            }
        report[k] = entry
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
    assert r["best"]


def test_members_stay_sharded_when_k_divides(report):
    assert report["8"]["four"]["devices"] == 4
    assert report["8"]["four"]["spec"] in ("P('members',)", "PartitionSpec('members',)")
    assert report["8"]["two"]["devices"] == 2
    # K = 6 on 4 devices is padded to 8 for the run; the 6 results cannot be
    # split evenly, so they come back replicated over the same devices.
    assert report["6"]["four"]["params_devices"] == 4
