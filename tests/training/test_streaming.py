"""Tests for jaxopt_core.training.streaming and fit/sweep fed from iterables
of batches: same results as the array path and a Python loop over
make_train_step, compiles, errors at the edges, bounded host memory."""

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import PARAMS, BatchLoader, count_compiles, mse, numpy_batches

import jaxopt_core as jc
from jaxopt_core.training.batching import Batcher
from jaxopt_core.training.fit_program import FitSpec, fit_segment, run_fit_segmented
from jaxopt_core.training.layout_safety import resolve_layout
from jaxopt_core.training.prefetch import BatchIteratorError
from jaxopt_core.training.segments import segment_plan
from jaxopt_core.training.streaming import (
    ResumableStream,
    check_data,
    is_batch_iterable,
    segment_length,
)


def test_is_batch_iterable():
    x = np.ones((4, 2))
    assert not any(is_batch_iterable(d) for d in [
        x, jnp.ones(3), (x, x), [x, x], {"a": x}, 3.0, "abc", None, np.float32(1),
    ])
    assert all(is_batch_iterable(d) for d in [
        iter([x]), (b for b in [x]), BatchLoader([x]), range(3),
    ])


def test_check_data_errors_name_the_argument():
    x = np.ones((4, 2))
    assert check_data(iter([x]), None, True) and not check_data((x, x), 2, False)
    with pytest.raises(ValueError, match="batch_size must be None.*batch_size=8"):
        check_data(iter([x]), 8, False)
    with pytest.raises(ValueError, match="allow_short=True applies.*tuple"):
        check_data((x, x), None, True)
    with pytest.raises(TypeError, match="allow_short"):
        check_data(iter([x]), None, "yes")
    with pytest.raises(ValueError, match="batch_size must be in"):
        check_data((x, x), 9, False)


def test_segment_length_default_and_memory_cap():
    assert segment_length(30, None, 100) == 30
    assert segment_length(1000, None, 100) == 100
    assert segment_length(1000, 7, 100) == 7
    assert segment_length(5, 7, 100) == 5
    assert segment_length(1000, None, 2**30) == 1  # one batch is over the budget
    assert segment_length(1000, None, 2**20) == 64


OPT = jc.adam(0.05)


def _loop(batches, opt=OPT, params=PARAMS):
    """The reference: make_train_step in a Python loop over the same batches."""
    step = jc.make_train_step(mse, opt, donate=False)
    state, losses = opt.init(params), []
    for b in batches:
        params, state, loss = step(params, state, b)
        losses.append(loss)
    return params, np.asarray(losses)


@pytest.mark.slow
def test_fit_on_a_generator_equals_a_train_step_loop():
    batches = numpy_batches(23)
    res = jc.fit(mse, PARAMS, OPT, (b for b in batches), steps=23, segment_steps=8)
    params, losses = _loop(batches)
    np.testing.assert_allclose(res.losses, losses, rtol=1e-6)
    for k in params:
        np.testing.assert_allclose(res.params[k], params[k], rtol=1e-6, atol=1e-7)
    assert res.steps_trained == 23 and not bool(res.diverged)


@pytest.mark.slow
def test_fit_on_a_loader_equals_the_array_path_full_batch():
    data = numpy_batches(1, n=16)[0]
    kw = dict(steps=12, eval_fn=mse, eval_data=data, eval_every=5)
    ref = jc.fit(mse, PARAMS, OPT, data, **kw)
    res = jc.fit(mse, PARAMS, OPT, BatchLoader([data] * 12), segment_steps=5, **kw)
    np.testing.assert_allclose(res.losses, ref.losses, rtol=1e-6)
    np.testing.assert_allclose(res.evals["eval"], ref.evals["eval"], rtol=1e-6)
    assert res.eval_steps.tolist() == ref.eval_steps.tolist() == [5, 10, 12]


def _minibatches(data, batch_size, key, steps):
    """The batches fit's array path draws (jaxopt_core.training.batching.Batcher)."""
    batcher = Batcher(data, batch_size)

    @jax.jit
    def draw(perm, t):
        perm = batcher.refresh(perm, key, t)
        return perm, batcher.batch(data, perm, t)

    perm = batcher.initial_perm()
    for t in range(steps):
        perm, batch = draw(perm, jnp.int32(t))
        yield jax.tree.map(np.asarray, batch)


@pytest.mark.slow
def test_fit_on_an_iterator_equals_the_array_path_minibatches():
    data, key = numpy_batches(1, n=20)[0], jax.random.key(3)
    ref = jc.fit(mse, PARAMS, OPT, data, steps=30, batch_size=6, key=key)
    res = jc.fit(mse, PARAMS, OPT, _minibatches(data, 6, key, 30), steps=30)
    np.testing.assert_allclose(res.losses, ref.losses, rtol=1e-6)
    for k in PARAMS:
        np.testing.assert_allclose(res.params[k], ref.params[k], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_second_fit_with_a_fresh_iterator_compiles_nothing():
    batches = numpy_batches(23)
    jc.fit(mse, PARAMS, OPT, iter(batches), steps=23, segment_steps=8)  # 8, 8, 4 + 2 + 1
    fresh = jax.device_put(numpy_batches(23, seed=1))  # new values, as JAX arrays this time
    with count_compiles() as seen:
        res = jc.fit(mse, PARAMS, OPT, iter(fresh), steps=23, segment_steps=8)
        res.losses.block_until_ready()
    assert seen == []
    # Streams that end early (allow_short): their last segments run as powers
    # of two already compiled (only the concatenation of the losses is new).
    compiled = fit_segment._cache_size()
    assert compiled >= 4  # lengths 8, 4, 2, 1
    for given in (21, 14, 3):
        res = jc.fit(mse, PARAMS, OPT, iter(fresh[:given]), steps=23, segment_steps=8,
                     allow_short=True)
        assert res.losses.shape == (given,) and res.steps_trained == given
    assert fit_segment._cache_size() == compiled


@pytest.mark.slow
def test_divergence_in_a_stream_is_flagged_at_its_step():
    batches = numpy_batches(10)
    x, y = batches[6]
    batches[6] = (x, np.full_like(y, np.inf))
    res = jc.fit(mse, PARAMS, OPT, iter(batches), steps=10, segment_steps=4)
    assert bool(res.diverged) and int(res.diverged_at) == 6
    assert np.isfinite(res.losses[:6]).all() and np.isnan(res.losses[7:]).all()


def test_batch_of_another_shape_or_dtype_names_the_step():
    batches = numpy_batches(9)
    batches[5] = (batches[5][0][:3], batches[5][1][:3])
    with pytest.raises(ValueError, match=r"step 5.*batch\[0\].*\(3, 3\).*\(4, 3\)"):
        jc.fit(mse, PARAMS, OPT, iter(batches), steps=9, segment_steps=4)
    batches = numpy_batches(9)
    batches[7] = (batches[7][0].astype(np.int32), batches[7][1])
    with pytest.raises(ValueError, match=r"step 7.*int32"):
        jc.fit(mse, PARAMS, OPT, iter(batches), steps=9, segment_steps=4)


def test_iterator_exception_propagates_with_its_step():
    def gen():
        yield from numpy_batches(6)
        raise OSError("disk gone")

    with pytest.raises(BatchIteratorError, match="OSError.*step 6") as info:
        jc.fit(mse, PARAMS, OPT, gen(), steps=10, segment_steps=4)
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.slow
def test_short_stream_raises_or_stops_with_allow_short():
    with pytest.raises(ValueError, match="ended after 13 batches.*steps=20"):
        jc.fit(mse, PARAMS, OPT, iter(numpy_batches(13)), steps=20, segment_steps=8)
    with pytest.raises(ValueError, match="data has 13 batches.*steps=20"):
        jc.fit(mse, PARAMS, OPT, BatchLoader(numpy_batches(13)), steps=20)
    batches = numpy_batches(13)
    res = jc.fit(mse, PARAMS, OPT, iter(batches), steps=20, segment_steps=8,
                 allow_short=True, eval_fn=mse, eval_data=batches[0], eval_every=4)
    params, losses = _loop(batches)
    assert res.steps_trained == 13 and res.losses.shape == (13,)
    np.testing.assert_allclose(res.losses, losses, rtol=1e-6)
    assert res.eval_steps.tolist() == [4, 8, 12, 13]
    np.testing.assert_allclose(res.evals["eval"][-1], mse(params, batches[0]),
                               rtol=1e-6)


def test_stream_arguments_are_checked_in_fit():
    with pytest.raises(ValueError, match="batch_size must be None"):
        jc.fit(mse, PARAMS, OPT, iter(numpy_batches(3)), steps=3, batch_size=2)
    with pytest.raises(ValueError, match="allow_short=True applies"):
        jc.fit(mse, PARAMS, OPT, numpy_batches(1)[0], steps=3, allow_short=True)



LRS = np.array([0.01, 0.3, 40.0], np.float32)


@pytest.mark.slow
def test_sweep_member_equals_fit_on_the_same_iterator():
    batches = numpy_batches(16)
    kw = dict(steps=16, segment_steps=8, eval_fn=mse, eval_data=batches[0],
              eval_every=6)
    res = jc.sweep(mse, PARAMS, jc.sgd, iter(batches), grid={"learning_rate": LRS},
                   **kw)
    assert res.steps_trained == 16 and res.eval_steps.tolist() == [6, 12, 16]
    assert res.diverged.tolist() == [False, False, True]
    for i, lr in enumerate(LRS):
        one = jc.fit(mse, PARAMS, jc.sgd(lr), iter(batches), **kw)
        assert bool(one.diverged) == res.diverged[i]
        assert int(one.diverged_at) == res.diverged_at[i]
        if not res.diverged[i]:
            # Shared-data matrix products round by member count (see sweep's notes).
            np.testing.assert_allclose(res.losses[i], one.losses, rtol=1e-5)
            np.testing.assert_allclose(res.evals["eval"][i], one.evals["eval"], rtol=1e-5)
            np.testing.assert_allclose(res.params["w"][i], one.params["w"], rtol=1e-5,
                                       atol=1e-6)


@pytest.mark.slow
def test_sweep_on_an_iterator_equals_the_array_path():
    data = numpy_batches(1, n=16)[0]
    ref = jc.sweep(mse, PARAMS, jc.sgd, data, grid={"learning_rate": LRS[:2]},
                   steps=12)
    res = jc.sweep(mse, PARAMS, jc.sgd, BatchLoader([data] * 12),
                   grid={"learning_rate": LRS[:2]}, steps=12, chunk_size=1)
    np.testing.assert_allclose(res.losses, ref.losses, rtol=1e-6)
    assert res.best_index == ref.best_index


@pytest.mark.slow
def test_sweep_stream_edges():
    grid = {"learning_rate": LRS[:2]}
    with pytest.raises(ValueError, match="one-shot iterator.*chunk_size"):
        jc.sweep(mse, PARAMS, jc.sgd, iter(numpy_batches(4)), grid=grid, steps=4,
                 chunk_size=1)
    with pytest.raises(ValueError, match="batch_size must be None"):
        jc.sweep(mse, PARAMS, jc.sgd, iter(numpy_batches(4)), grid=grid, steps=4,
                 batch_size=2)
    batches = numpy_batches(7)
    res = jc.sweep(mse, PARAMS, jc.sgd, iter(batches), grid=grid, steps=10, allow_short=True,
                   eval_fn=mse, eval_data=batches[0], eval_every=4, keep_best=True)
    assert res.steps_trained == 7 and res.losses.shape == (2, 7)
    assert res.eval_steps.tolist() == [4, 7] and res.evals["eval"].shape == (2, 2)
    assert set(res.best_step.tolist()) <= {4, 7}  # the last evaluation was after 7 steps



class _Stop(Exception):
    pass


class SkippingLoader(BatchLoader):
    """A loader with ``skip(n)``: resumed runs ask it, instead of dropping batches."""

    skipped = None

    def skip(self, n):
        self.skipped = n
        return BatchLoader(self.batches[n:])


@pytest.mark.slow
@pytest.mark.parametrize("source", [BatchLoader, SkippingLoader])
def test_a_resumed_stream_run_reads_on_from_the_checkpointed_step(source):
    """What a checkpointed run does (issue 13's hook): stop after a segment,
    keep the state and losses, resume with the plan from t_done; the result
    is the uninterrupted one, bit for bit."""
    batches = numpy_batches(20)
    ref = jc.fit(mse, PARAMS, OPT, iter(batches), steps=20, segment_steps=4)
    spec = FitSpec(mse, OPT, 20, None, resolve_layout("auto", OPT), 0, None)
    saved = {}

    def after(state, t_done, losses):
        if t_done == 8:
            saved.update(state=jax.tree.map(jnp.copy, state), losses=jnp.copy(losses))
            raise _Stop

    data = source(batches)
    run = ResumableStream(run_fit_segmented, data, steps=20, length=4, allow_short=False,
                          put=jax.device_put)
    args = (spec, PARAMS, None, jax.random.key(0), np.int32(0), None)
    with pytest.raises(_Stop):
        run(*args, segment_plan(20, 4), after=after)
    out = run(*args, segment_plan(20, 4, start=8), state=saved["state"],
              losses=saved["losses"])
    np.testing.assert_array_equal(out[2], ref.losses)
    np.testing.assert_array_equal(out[0]["w"], ref.params["w"])
    assert run.steps_trained == 20
    if source is SkippingLoader:
        assert data.skipped == 8




def _same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _keep_only(folder, step):
    """Leave the checkpoint of ``step`` as the last complete one (as if killed after it)."""
    for name in os.listdir(folder):
        if name.isdigit() and int(name) > step:
            shutil.rmtree(folder / name)


@pytest.mark.slow
def test_checkpointed_fit_on_a_stream_resumes_reading_on(tmp_path):
    batches = numpy_batches(23)
    kw = dict(steps=23, eval_fn=mse, eval_data=batches[0], eval_every=7)
    whole = jc.fit(mse, PARAMS, OPT, iter(batches), segment_steps=5, **kw)
    first = jc.fit(mse, PARAMS, OPT, iter(batches), checkpoint_dir=tmp_path,
                   checkpoint_every=5, **kw)
    _same(first, whole)
    _keep_only(tmp_path, 10)
    # A new generator, fast-forwarded past the 10 batches already trained on ...
    resumed = jc.fit(mse, PARAMS, OPT, (b for b in batches), checkpoint_dir=tmp_path,
                     checkpoint_every=5, **kw)
    _same(resumed, whole)
    _keep_only(tmp_path, 20)  # the resumed run kept its last two: 20 and 23
    # ... or a loader asked to skip the 20 trained on.
    loader = SkippingLoader(batches)
    resumed = jc.fit(mse, PARAMS, OPT, loader, checkpoint_dir=tmp_path,
                     checkpoint_every=5, **kw)
    _same(resumed, whole)
    assert loader.skipped == 20 and resumed.steps_trained == 23


@pytest.mark.slow
def test_checkpointed_sweep_on_a_stream_resumes_reading_on(tmp_path):
    batches, grid = numpy_batches(12), {"learning_rate": LRS}
    whole = jc.sweep(mse, PARAMS, jc.sgd, iter(batches), grid=grid, steps=12,
                     segment_steps=4)
    first = jc.sweep(mse, PARAMS, jc.sgd, iter(batches), grid=grid, steps=12,
                     checkpoint_dir=tmp_path, checkpoint_every=4)
    _same(first.losses, whole.losses)
    _keep_only(tmp_path, 4)
    resumed = jc.sweep(mse, PARAMS, jc.sgd, BatchLoader(batches), grid=grid, steps=12,
                       checkpoint_dir=tmp_path, checkpoint_every=4)
    _same((resumed.losses, resumed.params, resumed.diverged_at),
          (whole.losses, whole.params, whole.diverged_at))
    with pytest.raises(ValueError, match="one chunk; chunk_size=1"):
        jc.sweep(mse, PARAMS, jc.sgd, BatchLoader(batches), grid=grid, steps=12,
                 checkpoint_dir=tmp_path / "other", chunk_size=1)


DEVICES_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    import jaxopt_core as jc

    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(8, 3)).astype(np.float32),
                rng.normal(size=8).astype(np.float32)) for _ in range(20)]

    class Loader:
        def __iter__(self):
            return iter(batches)

    def mse(w, b):
        return jnp.mean((b[0] @ w - b[1]) ** 2)

    grid = {"learning_rate": np.geomspace(1e-3, 1e-1, 6)}  # 6 members on 4 devices: padded
    def run(**kw):
        return jc.sweep(mse, jnp.zeros(3), jc.sgd, Loader(), grid=grid, steps=20,
                        segment_steps=8, eval_fn=mse, eval_data=batches[0], **kw)
    one = run(devices=jax.devices()[:1])
    for r in (run(), run(chunk_size=3), run(devices=jax.devices()[1:3])):
        np.testing.assert_allclose(r.losses, one.losses, rtol=1e-5)
        np.testing.assert_allclose(r.evals["eval"], one.evals["eval"], rtol=1e-5)
        assert r.losses.shape == (6, 20) and r.steps_trained == 20
    print("OK")
    """
)


@pytest.mark.slow
def test_sweep_on_a_stream_across_four_devices_equals_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", DEVICES_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
def test_a_stream_larger_than_the_memory_budget_trains_in_bounded_host_memory():
    """6000 batches of 64 KiB (375 MiB in all), made on the fly: the NumPy
    buffers alive at once (tracemalloc: the three segments of 100 batches the
    pipeline holds, 19 MiB) stay under 32 MiB and the resident set grows by
    less than 96 MiB (device copies, allocator slack), a quarter of the stream."""
    steps, shape, buffers, budget = 6000, (256, 64), 32 * 2**20, 96 * 2**20
    w_true = np.linspace(-1, 1, shape[1]).astype(np.float32)

    def stream(count):
        rng = np.random.default_rng(0)
        for _ in range(count):
            x = rng.standard_normal(shape, dtype=np.float32)
            yield x, x @ w_true

    def loss(w, batch):
        x, y = batch
        return jnp.mean((x @ w - y) ** 2)

    opt, w0 = jc.sgd(0.05), jnp.zeros(shape[1])
    assert steps * 4 * (shape[0] * shape[1] + shape[0]) > 3.5 * budget
    jc.fit(loss, w0, opt, stream(steps), steps=steps).losses.block_until_ready()  # compile

    peak, stop, base = [0], threading.Event(), _rss()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss() - base)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    tracemalloc.start()
    sampler.start()
    try:
        res = jc.fit(loss, w0, opt, stream(steps), steps=steps)
        res.losses.block_until_ready()
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        stop.set()
        sampler.join()
        tracemalloc.stop()
    assert res.losses.shape == (steps,) and float(res.losses[-1]) < 1e-3 * float(res.losses[0])
    print(f"tracemalloc peak {traced_peak / 2**20:.1f} MiB, RSS growth {peak[0] / 2**20:.1f} MiB")
    assert traced_peak < buffers, traced_peak
    assert peak[0] < budget, peak[0]
