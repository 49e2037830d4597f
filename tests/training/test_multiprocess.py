"""Sweeps under ``jax.distributed``, run for real: 2 local processes x 2 CPU devices.

One launch (see ``tests/multiprocess.py``) runs every check in the worker
script below, in two processes that reach each other over 127.0.0.1 (gloo
collectives), and in one reference process with 4 CPU devices. The 2 x 2
run has 2 members per device where the reference has 2 per device too, so
every per-device program is the same and the results must be equal bit for
bit, not just to rounding. The script also calls the result's host-side
methods on one process only: if any of them entered a collective, that
process would wait for a peer that never comes and the run would time out.
"""

import json
import textwrap

import numpy as np
import pytest
from multiprocess import launch, wait_all

WORKER = textwrap.dedent(
    """
    import io, json, os, time
    import multiprocess

    rank, size = multiprocess.start_worker()
    start = time.perf_counter()
    import jax, jax.numpy as jnp, numpy as np
    import jaxopt_core as jc
    from jaxopt_core.training.sharding import PER_MEMBER_PARAMS, to_host

    assert jax.device_count() == 4 and jax.local_device_count() == 4 // size
    out = os.environ["JC_MP_OUT"]
    tag = f"mp{rank}" if size > 1 else "ref"
    X = jax.random.normal(jax.random.key(0), (32, 3))
    Y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.3 * jax.random.normal(jax.random.key(1), (32,))

    def mse(p, batch):
        x, y = batch
        return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

    def init(key):
        return {"w": jax.random.normal(key, (3,)), "b": jnp.zeros(())}

    zeros = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    lrs = np.logspace(-3, -1, 8)
    lrs[1] = 80.0  # diverges
    runs = {
        # K = 8 divides 4 devices: the stacked params stay sharded, spread over
        # both processes; validated every 10 steps, each member's best params kept
        "full8": lambda: jc.sweep(mse, zeros, jc.sgd, (X, Y), steps=30,
                                  grid={"learning_rate": lrs, "momentum": np.linspace(0, 0.5, 8)},
                                  eval_fn=mse, eval_data=(X[:8], Y[:8]), eval_every=10,
                                  keep_best=True),
        # K = 6 does not: padded to 8 for the run, results replicated
        "mini6": lambda: jc.sweep(mse, init, jc.adam, (X, Y), steps=30, batch_size=8,
                                  grid={"learning_rate": np.geomspace(0.003, 0.3, 6),
                                        "seed": np.arange(6)}),
        # chunks of 4 members (one per device), the last padded
        "chunk7": lambda: jc.sweep(mse, zeros, jc.sgd, (X, Y), steps=30, batch_size=8,
                                   chunk_size=4, grid={"learning_rate": np.linspace(0.01, 0.2, 7),
                                                       "momentum": np.linspace(0, 0.9, 7)}),
    }
    arrays, report = {}, {"local_devices": jax.local_device_count()}
    for name, run in runs.items():
        res = run()
        full = res.gather_params()  # the one collective call, on every process
        # Every field but the stacked params: host data, the same on every process.
        small = {f: getattr(res, f) for f in res._fields if f not in PER_MEMBER_PARAMS}
        for f, leaf in jax.tree_util.tree_leaves_with_path(small):
            if isinstance(leaf, np.ndarray):
                arrays[f"{name}/{jax.tree_util.keystr(f, simple=True, separator='/')}"] = leaf
        for leaf in ("w", "b"):
            arrays[f"{name}/params/{leaf}"] = full.params[leaf]
            arrays[f"{name}/best/{leaf}"] = res.best_params()[leaf]
            if res.best_params_per_member is not None:
                arrays[f"{name}/kept/{leaf}"] = full.best_params_per_member[leaf]
        report[name] = {
            "best_index": res.best_index,
            "host_data": not any(isinstance(x, jax.Array) for x in jax.tree.leaves(small)),
            "spread": not res.params["w"].is_fully_addressable
                      and not res.params["w"].is_fully_replicated,
        }
        if rank == 0:  # process 0 alone: none of this may communicate
            entry = report[name]
            entry.update(repr=repr(res), final=res.final_losses().tolist(),
                         frame=res.to_dataframe().to_json())
            if name == "full8":  # one figure is enough (drawing is the slow part)
                fig = res.plot()
                fig.savefig(io.BytesIO(), format="png")
                entry["panels"] = len(fig.axes)
            try:
                to_host(res.params["w"])
                entry["to_host"] = "ok"
            except ValueError as err:
                entry["to_host"] = str(err)
            path = os.path.join(out, f"{tag}-{name}.npz")
            try:
                res.save(path)
                entry["save"] = "ok"
            except ValueError as err:
                entry["save"] = str(err)
            full.save(path)
            back = jc.load_result(path)
            entry["loaded"] = bool(np.array_equal(back.params["w"], full.params["w"])
                                   and np.array_equal(back.losses, res.losses, equal_nan=True))
        if rank == size - 1:  # the last process alone, too
            report[name]["last_repr"] = repr(res)

    fit = jc.fit(mse, zeros, jc.sgd(0.05, momentum=0.9), (X, Y), steps=30, batch_size=8)
    arrays["fit/losses"], arrays["fit/w"] = fit.losses, fit.params["w"]
    report["seconds"] = time.perf_counter() - start
    np.savez(os.path.join(out, f"{tag}.npz"), **{k: np.asarray(v) for k, v in arrays.items()})
    with open(os.path.join(out, f"{tag}.json"), "w") as f:
        json.dump(report, f)
    """
)

NAMES = ("full8", "mini6", "chunk7")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("multiprocess")
    env = {"JC_MP_OUT": str(out), "MPLBACKEND": "Agg"}
    procs = launch(WORKER, num_processes=2, devices=2, timeout=150, env=env)
    procs += launch(WORKER, num_processes=1, devices=4, timeout=150, env=env)
    for code, stdout, stderr in wait_all(procs):
        assert code == 0, f"exit {code} (124/137: timed out)\n{stdout[-2000:]}\n{stderr[-4000:]}"
    return {tag: (dict(np.load(out / f"{tag}.npz")), json.loads((out / f"{tag}.json").read_text()))
            for tag in ("mp0", "mp1", "ref")}


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("tag", ["mp0", "mp1"])
def test_every_process_gets_the_one_process_results_bit_for_bit(runs, tag):
    arrays, report = runs[tag]
    ref_arrays, ref_report = runs["ref"]
    assert report["local_devices"] == 2 and ref_report["local_devices"] == 4
    assert arrays.keys() == ref_arrays.keys()
    assert {"full8/losses", "full8/diverged", "full8/params/w", "full8/best/w", "full8/kept/w",
            "full8/evals/eval", "full8/best_step"} <= arrays.keys()
    for key, ref in ref_arrays.items():
        np.testing.assert_array_equal(arrays[key], ref, err_msg=key)
    for name in NAMES:
        assert report[name]["best_index"] == ref_report[name]["best_index"]
        assert report[name]["host_data"]
    assert ref_arrays["full8/diverged"].tolist()[1]  # the lr=80 member diverged, in both runs


def test_stacked_params_stay_global(runs):
    assert runs["mp0"][1]["full8"]["spread"]  # 8 members on 4 devices over 2 processes
    assert not runs["mp0"][1]["mini6"]["spread"]  # 6 rows come back replicated
    assert not runs["ref"][1]["full8"]["spread"]


def test_host_methods_work_on_one_process_alone(runs):
    mp, ref = runs["mp0"][1], runs["ref"][1]
    for name in NAMES:
        assert mp[name]["repr"] == ref[name]["repr"] == runs["mp1"][1][name]["last_repr"]
        assert mp[name]["frame"] == ref[name]["frame"]
        np.testing.assert_array_equal(mp[name]["final"], ref[name]["final"])
        assert mp[name]["loaded"] and ref[name]["loaded"]
        assert ref[name]["to_host"] == ref[name]["save"] == "ok"
    assert mp["full8"]["panels"] == ref["full8"]["panels"] >= 2
    # Spread params cannot be read by one process: a clear error, not a hang.
    for key in ("to_host", "save"):
        assert "gather_params" in mp["full8"][key]
    assert mp["mini6"]["to_host"] == mp["mini6"]["save"] == "ok"  # replicated rows


def test_wall_time_is_reported(runs):
    # Not a benchmark: a guard that the launch stays a small part of the slow tier.
    assert all(runs[tag][1]["seconds"] < 120 for tag in runs)
