"""Checkpointed fit and sweep (jaxopt_core.training.resumable): a resumed run
equals the uninterrupted one bit for bit; Ctrl-C stops at a segment boundary
with a partial result; another configuration is refused."""

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import ARMED_CTRL_C, DATA, PARAMS, X, Y, ctrl_c_point, mse

import jaxopt_core as jc

FIT_KW = {"steps": 23, "batch_size": 8, "eval_fn": mse, "eval_data": (X[:8], Y[:8]),
          "eval_every": 7}
_ARMED = ARMED_CTRL_C  # the number of calls to let pass before the SIGINT


def assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def ctrl_c_mse(params, batch):
    """mse that, when armed, sends this process one SIGINT from inside the run."""
    ctrl_c_point()
    return mse(params, batch)


def _keep_only(folder, step):
    """Leave the checkpoint of ``step`` as the last complete one."""
    for name in os.listdir(folder):
        if name.isdigit() and int(name) > step:
            shutil.rmtree(folder / name)


@pytest.mark.slow
@pytest.mark.parametrize(
    "opt",
    [pytest.param(optax.adam(0.05), id="optax.adam"),
     pytest.param(jc.sgd(0.1, momentum=0.9), id="jc.sgd", marks=pytest.mark.slow),
     pytest.param(jc.sgd(40.0), id="diverging", marks=pytest.mark.slow)],
)
def test_fit_resumes_bit_for_bit(tmp_path, opt):
    # Segmented runs equal the one-shot program (test_segments); this one shares their compiles.
    whole = jc.fit(mse, PARAMS, opt, DATA, segment_steps=5, **FIT_KW)
    first = jc.fit(mse, PARAMS, opt, DATA, checkpoint_dir=tmp_path, checkpoint_every=5, **FIT_KW)
    assert_same(first, whole)
    assert sorted(int(n) for n in os.listdir(tmp_path) if n.isdigit()) == [20, 23]
    # A finished run: the same call gives its result from the last checkpoint.
    assert_same(jc.fit(mse, PARAMS, opt, DATA, checkpoint_dir=tmp_path, checkpoint_every=5,
                       **FIT_KW), whole)
    _keep_only(tmp_path, 20)  # as if killed during the last segment
    resumed = jc.fit(mse, PARAMS, opt, DATA, checkpoint_dir=tmp_path, checkpoint_every=5, **FIT_KW)
    assert_same(resumed, whole)
    assert type(resumed.opt_state) is type(whole.opt_state)


@pytest.mark.slow
def test_fit_ctrl_c_stops_with_partial_and_resumes(tmp_path):
    opt = optax.adam(0.05)
    whole = jc.fit(ctrl_c_mse, PARAMS, opt, DATA, **FIT_KW)
    before = signal.getsignal(signal.SIGINT)
    _ARMED.append(1)
    with pytest.raises(jc.Interrupted) as stop:
        jc.fit(ctrl_c_mse, PARAMS, opt, DATA, checkpoint_dir=tmp_path, checkpoint_every=5, **FIT_KW)
    assert signal.getsignal(signal.SIGINT) is before
    err = stop.value
    t = int(err.steps_trained)
    assert t in (5, 10, 15) and err.checkpoint_dir == tmp_path
    part = err.partial
    assert part.steps_trained == t and part.losses.shape == (t,)
    np.testing.assert_array_equal(part.losses, whole.losses[:t])
    # Evaluations taken so far, then one after the steps trained.
    assert part.eval_steps.tolist() == [s for s in (7, 14) if s < t] + [t]
    resumed = jc.fit(ctrl_c_mse, PARAMS, opt, DATA, checkpoint_dir=tmp_path, checkpoint_every=5,
                     **FIT_KW)
    assert_same(resumed, whole)


@pytest.mark.slow
def test_another_configuration_is_refused(tmp_path):
    jc.fit(mse, PARAMS, jc.adam(0.1), DATA, checkpoint_dir=tmp_path, steps=6,
           checkpoint_every=3)
    with pytest.raises(jc.CheckpointMismatchError, match="optimizer: checkpoint") as err:
        jc.fit(mse, PARAMS, jc.adam(0.2), DATA, checkpoint_dir=tmp_path, steps=6,
               checkpoint_every=3)
    assert "steps" not in str(err.value)
    with pytest.raises(jc.CheckpointMismatchError, match="steps: checkpoint '6', this call '8'"):
        jc.fit(mse, PARAMS, jc.adam(0.1), DATA, checkpoint_dir=tmp_path, steps=8,
               checkpoint_every=3)
    with pytest.raises(jc.CheckpointMismatchError, match="params"):
        jc.fit(mse, {"w": jnp.zeros(4), "b": jnp.zeros(())}, jc.adam(0.1), DATA,
               checkpoint_dir=tmp_path, steps=6, checkpoint_every=3)


def test_checkpoint_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every=5 was given without checkpoint_dir"):
        jc.fit(mse, PARAMS, jc.adam(0.1), DATA, steps=6, checkpoint_every=5)
    with pytest.raises(ValueError, match="checkpoint_every must be an int >= 1"):
        jc.fit(mse, PARAMS, jc.adam(0.1), DATA, steps=6, checkpoint_dir=tmp_path,
               checkpoint_every=0)
    with pytest.raises(ValueError, match="multiple of segment_steps=2"):
        jc.fit(mse, PARAMS, jc.adam(0.1), DATA, steps=6, checkpoint_dir=tmp_path,
               checkpoint_every=3, segment_steps=2)
    with pytest.raises(TypeError, match="checkpoint_dir must be a path"):
        jc.fit(mse, PARAMS, jc.adam(0.1), DATA, steps=6, checkpoint_dir=3)


def test_interrupt_guard_second_ctrl_c_raises_and_handler_comes_back():
    from jaxopt_core.training.interruption import InterruptGuard

    before = signal.getsignal(signal.SIGINT)
    with InterruptGuard() as guard:
        assert signal.getsignal(signal.SIGINT) == guard.handle
        guard.handle(signal.SIGINT, None)
        assert guard.requested
        with pytest.raises(KeyboardInterrupt):
            guard.handle(signal.SIGINT, None)
        # While a save is being started, the second Ctrl-C waits for its end:
        # an exception inside orbax's save would leave its thread hanging.
        with pytest.raises(KeyboardInterrupt), guard.deferring():
            guard.handle(signal.SIGINT, None)
            started = True
        assert started
    assert signal.getsignal(signal.SIGINT) is before


GRID = {"learning_rate": np.array([0.01, 0.1, 1e30], np.float32), "seed": np.array([0, 1, 2])}
SWEEP_KW = {"grid": GRID, "steps": 23, "batch_size": 8, "eval_fn": mse,
            "eval_data": (X[:8], Y[:8]), "eval_every": 7, "keep_best": True}
MOMENTUM = functools.partial(optax.sgd, momentum=0.9)


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer_fn, kw",
    [pytest.param(MOMENTUM, {}, id="optax"),
     pytest.param(MOMENTUM, {"chunk_size": 2}, id="chunks", marks=pytest.mark.slow),
     pytest.param(jc.adam, {"segment_steps": 5, "checkpoint_every": 10}, id="jc.adam",
                  marks=pytest.mark.slow)],
)
def test_sweep_resumes_bit_for_bit(tmp_path, optimizer_fn, kw):
    kw = {"checkpoint_every": 5, **kw}
    cut = {n: v for n, v in kw.items() if n != "checkpoint_every"}
    whole = jc.sweep(mse, PARAMS, optimizer_fn, DATA, **SWEEP_KW,
                     **{"segment_steps": 5, **cut})
    first = jc.sweep(mse, PARAMS, optimizer_fn, DATA, checkpoint_dir=tmp_path, **SWEEP_KW, **kw)
    assert whole.diverged.tolist() == [False, False, True]
    assert_same(first, whole)
    steps = sorted(int(n) for n in os.listdir(tmp_path) if n.isdigit())
    _keep_only(tmp_path, steps[0])  # as if killed before the last two checkpoints
    resumed = jc.sweep(mse, PARAMS, optimizer_fn, DATA, checkpoint_dir=tmp_path, **SWEEP_KW,
                       **kw)
    assert_same(resumed, whole)


@pytest.mark.slow
def test_sweep_ctrl_c_stops_with_partial_and_resumes(tmp_path):
    whole = jc.sweep(ctrl_c_mse, PARAMS, MOMENTUM, DATA, segment_steps=5, **SWEEP_KW)
    _ARMED.append(1)
    with pytest.raises(jc.Interrupted) as stop:
        jc.sweep(ctrl_c_mse, PARAMS, MOMENTUM, DATA, checkpoint_dir=tmp_path,
                 checkpoint_every=5, **SWEEP_KW)
    err = stop.value
    t = int(err.steps_trained[0])
    assert t in (5, 10, 15) and err.steps_trained.tolist() == [t] * 3
    part = err.partial
    assert part.steps_trained == t and part.losses.shape == (3, t)
    np.testing.assert_array_equal(part.losses, whole.losses[:, :t])
    assert part.diverged.tolist() == [False, False, True]
    assert part.eval_steps.tolist() == [s for s in (7, 14) if s < t] + [t]
    resumed = jc.sweep(ctrl_c_mse, PARAMS, MOMENTUM, DATA, checkpoint_dir=tmp_path,
                       checkpoint_every=5, **SWEEP_KW)
    assert_same(resumed, whole)


@pytest.mark.slow
def test_sweep_with_another_grid_is_refused(tmp_path):
    grid = {"learning_rate": np.array([0.1, 0.2])}
    jc.sweep(mse, PARAMS, jc.sgd, DATA, grid=grid, steps=4, checkpoint_dir=tmp_path,
             checkpoint_every=2)
    with pytest.raises(jc.CheckpointMismatchError, match=r"grid\['learning_rate'\]: checkpoint"):
        jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": np.array([0.1, 0.3])},
                 steps=4, checkpoint_dir=tmp_path, checkpoint_every=2)
    with pytest.raises(jc.CheckpointMismatchError, match="checkpoint_every: checkpoint '2'"):
        jc.sweep(mse, PARAMS, jc.sgd, DATA, grid=grid, steps=4, checkpoint_dir=tmp_path,
                 checkpoint_every=4)
    # Checkpointed runs on an iterable of batches resume too: tests/training/test_streaming.py.


KILL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    import jaxopt_core as jc

    assert jax.device_count() == 4, jax.devices()
    mode, folder, out = sys.argv[1:]
    X = jax.random.normal(jax.random.key(0), (64, 3))
    Y = X @ jnp.array([1.0, -2.0, 0.5])

    def mse(p, batch):
        x, y = batch
        return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

    kw = dict(grid={"learning_rate": np.r_[np.logspace(-3, -1, 7), 1e30],
                    "seed": np.arange(8)},
              steps=200, batch_size=8, eval_fn=mse, eval_data=(X[:16], Y[:16]), eval_every=50)
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    if mode == "whole":
        res = jc.sweep(mse, params, jc.adam, (X, Y), segment_steps=10, **kw)
    else:
        res = jc.sweep(mse, params, jc.adam, (X, Y), checkpoint_dir=folder,
                       checkpoint_every=10, **kw)
    res.save(out)
    print("SHARDING" + json.dumps([str(res.params["w"].sharding.spec),
                                   len(res.params["w"].sharding.device_set)]))
    """
)


@pytest.mark.slow
def test_sweep_killed_with_sigkill_resumes_in_another_process(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    folder = tmp_path / "ckpt"

    def run(mode, out):
        return subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, mode, str(folder),
                                 str(tmp_path / out)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    victim = run("resume", "never.npz")
    deadline = time.monotonic() + 240
    while not (folder.exists() and any(n.isdigit() for n in os.listdir(folder))):
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "never.npz").exists()
    left = sorted(int(n) for n in os.listdir(folder) if n.isdigit())
    assert left and left[-1] < 200, left
    procs = [run("resume", "resumed.npz"), run("whole", "whole.npz")]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr[-3000:]
        # The members stay sharded over the 4 devices, resumed or not.
        line = next(x for x in stdout.splitlines() if x.startswith("SHARDING"))
        spec, n_devices = json.loads(line[len("SHARDING"):])
        assert "members" in spec and n_devices == 4
    resumed = jc.load_result(tmp_path / "resumed.npz")
    whole = jc.load_result(tmp_path / "whole.npz")
    assert whole.diverged.tolist() == [False] * 7 + [True]
    assert_same(resumed, whole)


@pytest.mark.slow
def test_chunked_sweep_ctrl_c_in_second_chunk(tmp_path):
    kw = {**SWEEP_KW, "chunk_size": 2}
    whole = jc.sweep(ctrl_c_mse, PARAMS, MOMENTUM, DATA, segment_steps=5, **kw)
    _ARMED.append(35)  # the first chunk makes 23 calls (one per step)
    with pytest.raises(jc.Interrupted) as stop:
        jc.sweep(ctrl_c_mse, PARAMS, MOMENTUM, DATA, checkpoint_dir=tmp_path,
                 checkpoint_every=5, **kw)
    trained = stop.value.steps_trained
    t = int(trained[2])
    assert trained.tolist() == [23, 23, t] and 0 < t < 23
    part = stop.value.partial
    assert part.losses.shape == (3, 23) and part.steps_trained == t
    np.testing.assert_array_equal(part.losses[:2], whole.losses[:2])
    np.testing.assert_array_equal(part.losses[2, :t], whole.losses[2, :t])
    assert np.isnan(part.losses[2, t:]).all()
    np.testing.assert_array_equal(part.evals["eval"][:2], whole.evals["eval"][:2])
    resumed = jc.sweep(ctrl_c_mse, PARAMS, MOMENTUM, DATA, checkpoint_dir=tmp_path,
                       checkpoint_every=5, **kw)
    assert_same(resumed, whole)


@pytest.mark.slow
def test_pbt_sweep_resumes_bit_for_bit(tmp_path):
    # The population-based training state is part of the SweepState carry.
    kw = {"grid": {"learning_rate": np.logspace(-3, -1, 4)}, "steps": 20, "batch_size": 8,
          "eval_fn": mse, "eval_data": (X[:8], Y[:8]), "search": jc.pbt(5)}
    whole = jc.sweep(mse, PARAMS, jc.sgd, DATA, segment_steps=5, **kw)
    jc.sweep(mse, PARAMS, jc.sgd, DATA, checkpoint_dir=tmp_path, checkpoint_every=5, **kw)
    _keep_only(tmp_path, 15)
    resumed = jc.sweep(mse, PARAMS, jc.sgd, DATA, checkpoint_dir=tmp_path, checkpoint_every=5,
                       **kw)
    assert whole.hparams_history is not None
    assert_same(resumed, whole)


@pytest.mark.slow
def test_pbt_sweep_ctrl_c_partial_has_only_the_rounds_done(tmp_path):
    # A PBT sweep stopped after t steps has had t // every rounds: its partial
    # history and parents stop there (no zero learning rates for rounds to come).
    kw = {"grid": {"learning_rate": np.logspace(-3, -1, 4)}, "steps": 20, "search": jc.pbt(5)}
    whole = jc.sweep(ctrl_c_mse, PARAMS, jc.sgd, DATA, segment_steps=5, **kw)
    _ARMED.append(1)
    with pytest.raises(jc.Interrupted) as stop:
        jc.sweep(ctrl_c_mse, PARAMS, jc.sgd, DATA, checkpoint_dir=tmp_path, checkpoint_every=5,
                 **kw)
    part, t = stop.value.partial, int(stop.value.steps_trained[0])
    rounds = min(t // 5, 3)
    history = part.hparams_history["learning_rate"]
    np.testing.assert_array_equal(history, whole.hparams_history["learning_rate"][:, :rounds + 1])
    np.testing.assert_array_equal(part.parents, whole.parents[:, :rounds])
    np.testing.assert_array_equal(part.to_dataframe()["learning_rate_final"], history[:, -1])
