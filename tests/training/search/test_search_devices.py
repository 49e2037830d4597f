"""PBT and successive halving on 4 forced CPU devices equal the 1-device run,
bit for bit (an elementwise loss: no matrix product whose kernel depends on
the members per device; see "Equality across layouts" in
jaxopt_core.training.sweep). K is not a multiple of 4, so the member axis is
padded: the padding must change no number (PBT draws for the real K only).

XLA reads ``--xla_force_host_platform_device_count`` when JAX starts, so the
4-device run happens in a fresh Python process.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    import jaxopt_core as jc

    def quad(w, d):
        return 0.5 * jnp.sum((w - d) ** 2)

    d = jnp.array([1.0, -2.0])
    lrs = np.geomspace(1e-3, 0.2, 10).astype(np.float32)
    pbt = jc.sweep(quad, jnp.zeros(2), jc.sgd, d, grid={"learning_rate": lrs[:6]}, steps=20,
                   search=jc.pbt(4, fraction=0.34))
    halving = jc.sweep(quad, jnp.zeros(2), jc.sgd, d, grid={"learning_rate": lrs}, steps=27,
                       search=jc.successive_halving(3), chunk_size=int(sys.argv[1]))
    out = {"devices": jax.device_count()}
    for name, res in (("pbt", pbt), ("halving", halving)):
        out[name] = {"losses": np.asarray(res.losses).tolist(),
                     "params": np.asarray(res.params).tolist(),
                     "parents": None if res.parents is None else res.parents.tolist(),
                     "stopped_at": None if res.stopped_at is None else res.stopped_at.tolist()}
    print(json.dumps(out))
    """
)


def run(devices, chunk):
    flags = os.environ.get("XLA_FLAGS", "")
    if devices > 1:
        flags += f" --xla_force_host_platform_device_count={devices}"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(chunk)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_search_on_four_devices_equals_one():
    one, four = run(1, 10), run(4, 6)  # 4 devices, and chunks of 6 -> 8 members
    assert one["devices"] == 1 and four["devices"] == 4
    for name in ("pbt", "halving"):
        for field, value in one[name].items():
            np.testing.assert_array_equal(np.asarray(four[name][field], float),
                                          np.asarray(value, float), err_msg=f"{name}.{field}")
    assert sorted(one["halving"]["stopped_at"]) == [3] * 6 + [9] * 2 + [27] * 2  # 10 -> 4 -> 2
