"""``log_every=``: thinned loss records of fit and sweep (issue 14).

The thinned record is checked against the per-step record of the same run
(window means computed here with NumPy), not against itself; the memory
claim against XLA's own accounting of the compiled scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_core as jc
from jaxopt_core.training.thinning import thinned_scan
from tests.conftest import DATA, PARAMS, mse, numpy_batches

GRID = {"learning_rate": np.array([0.01, 0.1, 0.3, 5.0])}  # the last member diverges


def window_means(losses, every):
    losses = np.asarray(losses, dtype=np.float64)
    return np.stack([losses[..., s:s + every].mean(-1)
                     for s in range(0, losses.shape[-1], every)], -1)


def sweep(**kw):
    return jc.sweep(mse, PARAMS, jc.sgd, DATA, grid=GRID, steps=30, batch_size=8, **kw)


@pytest.mark.slow
def test_sweep_entries_are_window_means_of_the_per_step_losses():
    full, thin = sweep(), sweep(log_every=7)
    assert thin.losses.shape == (4, 5)  # ceil(30 / 7): the last window holds 2 steps
    assert thin.loss_steps.tolist() == [0, 7, 14, 21, 28]
    want = window_means(full.losses, 7)
    np.testing.assert_allclose(thin.losses, want, rtol=1e-6)  # NaN where the full has one
    np.testing.assert_array_equal(thin.diverged, full.diverged)
    np.testing.assert_array_equal(thin.params["w"], full.params["w"])  # training unchanged
    assert thin.best_index == full.best_index and thin.full_steps == 4 * 30
    assert thin.member_steps == 4 * 30 and "steps=30" in repr(thin)
    # rank_by="loss": the mean of the last tenth, exact when 10 * log_every divides steps
    exact = sweep(log_every=3)
    np.testing.assert_allclose(exact.tail_losses()[:3], full.tail_losses()[:3], rtol=1e-6)


@pytest.mark.slow
def test_segments_and_chunks_give_the_one_program_record_bit_for_bit():
    # Each against the run with the same members per program: `mse`'s `x @ w`
    # over a chunk of 2 may round differently from the product over all 4
    # (XLA picks the kernel by the number of rows; see jaxopt_core.training.sweep).
    one, seg = sweep(log_every=5), sweep(log_every=5, segment_steps=10)
    chunks = sweep(log_every=5, chunk_size=2)
    seg_chunks = sweep(log_every=5, segment_steps=10, chunk_size=2)
    for got, want in ((seg, one), (seg_chunks, chunks)):
        np.testing.assert_array_equal(got.losses, want.losses)
        np.testing.assert_array_equal(got.loss_steps, want.loss_steps)
        assert got.losses.shape == (4, 6)


@pytest.mark.slow
def test_fit_entries_are_window_means():
    full = jc.fit(mse, PARAMS, jc.adam(0.05), DATA, steps=23, batch_size=8)
    thin = jc.fit(mse, PARAMS, jc.adam(0.05), DATA, steps=23, batch_size=8, log_every=5,
                  segment_steps=10)
    assert thin.losses.shape == (5,) and thin.loss_steps.tolist() == [0, 5, 10, 15, 20]
    np.testing.assert_allclose(thin.losses, window_means(full.losses, 5), rtol=1e-6)
    np.testing.assert_array_equal(thin.params["w"], full.params["w"])


@pytest.mark.slow
def test_pbt_is_unaffected_by_thinning():
    search = jc.pbt(10)
    full, thin = sweep(search=search), sweep(search=search, log_every=10)
    np.testing.assert_array_equal(thin.parents, full.parents)
    np.testing.assert_allclose(thin.losses, window_means(full.losses, 10), rtol=1e-6)


def test_memory_drops_in_the_compiled_program():
    """XLA's accounting of a scan recording [K] losses per step: thinned by
    100, the output and the whole footprint shrink by far more than 10x."""
    k, steps = 256, 2000

    def body(p, t):
        return p * 0.999, jnp.sum(p ** 2, axis=1) + t

    def footprint(every):
        run = jax.jit(lambda p: thinned_scan(body, p, jnp.arange(steps, dtype=jnp.float32),
                                             every))
        mem = run.lower(jnp.ones((k, 4))).compile().memory_analysis()
        return mem.output_size_in_bytes, mem.output_size_in_bytes + mem.temp_size_in_bytes

    (out_full, all_full), (out_thin, all_thin) = footprint(None), footprint(100)
    assert out_full >= k * steps * 4 and out_thin <= k * 20 * 4 + k * 4 * 4 + 64
    assert all_thin * 10 < all_full


@pytest.mark.slow
def test_save_load_and_plot_keep_the_steps_axis(tmp_path):
    thin = sweep(log_every=5)
    back = jc.load_result(thin.save(tmp_path / "r.npz"))
    np.testing.assert_array_equal(back.loss_steps, thin.loss_steps)
    assert back.full_steps == thin.full_steps
    fig = thin.plot()
    xs = np.concatenate([seg[:, 0] for seg in fig.axes[0].collections[0].get_segments()])
    assert xs.max() == 25  # the last window's first step, not the entry index 5
    assert "loss" in thin.to_dataframe()


@pytest.mark.parametrize("kw, names", [
    ({"log_every": 0}, ["log_every=0"]),
    ({"log_every": 4, "segment_steps": 10}, ["segment_steps=10", "log_every=4"]),
    ({"log_every": 5, "checkpoint_dir": "x"}, ["log_every=5", "checkpoint_dir"]),
    ({"log_every": 5, "search": jc.successive_halving(min_steps=5)},
     ["log_every=5", "successive_halving"]),
])
def test_refused_combinations_name_both_arguments(kw, names):
    with pytest.raises(ValueError) as err:
        sweep(**kw)
    for name in names:
        assert name in str(err.value)


def test_fit_refuses_a_stream():
    with pytest.raises(ValueError, match="log_every=2.*iterable"):
        jc.fit(mse, PARAMS, jc.sgd(0.1), iter(numpy_batches(4)), steps=4, log_every=2)
