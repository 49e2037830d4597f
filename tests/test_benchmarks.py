"""The benchmark runner works end to end: the smoke run writes a report with
every section and the figure. Benchmarks are not tests: nothing here checks a
timing."""

import subprocess
import sys
from pathlib import Path

import pytest

# Runs the benchmark suite's smoke mode in a subprocess.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

SECTIONS = (
    "## Machine",
    "## Targets (issues 6 and 14)",
    "## (a) Optimizer step",
    "### HLO audit",
    "## (b) Full training step",
    "## (c) Learning-rate sweeps",
    "## (d) Peak memory against K",
    "## (e) Sweeps against the best hand-written baseline and the machine",
)


def _stamp(path: Path):
    return path.stat().st_mtime_ns if path.exists() else None


def test_smoke_run_writes_report_and_figure(tmp_path):
    out = tmp_path / "RESULTS.md"
    real = REPO / "benchmarks" / "RESULTS.md"
    before = _stamp(real)
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--smoke", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in SECTIONS:
        assert heading in text, f"missing section {heading!r}"
    assert "Not run." not in text
    for name in ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"):
        assert f"| {name} |" in text
    assert "PASS" in text or "GAP" in text
    png = tmp_path / "sweep_scaling.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _stamp(real) == before, "the smoke run must not overwrite benchmarks/RESULTS.md"


def test_search_smoke_run_writes_report_and_figure(tmp_path):
    out = tmp_path / "SEARCH_RESULTS.md"
    real = REPO / "benchmarks" / "SEARCH_RESULTS.md"
    before = _stamp(real)
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "search.py"), "--smoke", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in ("## (a) Successive halving", "## (b) PBT", "## (c) Random and Sobol"):
        assert heading in text, f"missing section {heading!r}"
    assert "| successive halving, eta=3 |" in text and "| sobol |" in text
    png = tmp_path / "search.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _stamp(real) == before, "the smoke run must not overwrite SEARCH_RESULTS.md"


def test_streaming_smoke_run_writes_report(tmp_path):
    out = tmp_path / "STREAMING_RESULTS.md"
    real = REPO / "benchmarks" / "STREAMING_RESULTS.md"
    before = _stamp(real)
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "streaming.py"), "--smoke", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "## Machine" in text and "## Results" in text
    for call in ("| fit |", "| sweep |"):
        assert text.count(call) == 2
    assert _stamp(real) == before, "the smoke run must not overwrite STREAMING_RESULTS.md"


def test_checkpoints_smoke_run_writes_report(tmp_path):
    out = tmp_path / "CHECKPOINT_RESULTS.md"
    real = REPO / "benchmarks" / "CHECKPOINT_RESULTS.md"
    before = _stamp(real)
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "checkpoints.py"), "--smoke", "--out",
         str(out)], cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "## Machine" in text and "## Results" in text and "| MLP 8-16-16-1, K=4 |" in text
    assert _stamp(real) == before, "the smoke run must not overwrite CHECKPOINT_RESULTS.md"


@pytest.mark.parametrize("backend", ["cpu", "gpu", "tpu"])
def test_an_accelerator_adds_the_large_sizes(backend):
    from benchmarks.run import ACCELERATOR_TREE, FULL, SMOKE, for_backend

    full, smoke = for_backend(FULL, backend, "full"), for_backend(SMOKE, backend, "smoke")
    assert smoke == SMOKE
    if backend == "cpu":
        assert full == FULL
    else:
        assert ACCELERATOR_TREE in full.trees and ACCELERATOR_TREE.params == 100_000_000
        assert {1024, 4096} <= set(full.speed_ks) and set(FULL.speed_ks) <= set(full.speed_ks)


def test_step_timing_builds_the_libraries_in_both_orders(monkeypatch):
    """Section (a) builds each optimizer's two steps once in each order and
    pools the halves' paired samples (the step built first can run faster or
    slower by where its buffers land, whichever library it is)."""
    from benchmarks import steps

    built, make_step = [], steps.make_step

    def recording(library, name):
        built.append(library)
        return make_step(library, name)

    monkeypatch.setattr(steps, "make_step", recording)
    (result,) = steps.bench_tree(steps.TreeSpec(2, 8, ("sgd",)), reps=3, target_s=1e-4)
    assert built == ["jaxopt_core", "optax", "optax", "jaxopt_core"]
    assert len(result.ours.samples) == len(result.theirs.samples) == 4  # 2 pairs per half


@pytest.mark.parametrize("which", ["linear", "mlp"])
def test_hand_written_isolation_agrees_with_the_sweep(which):
    """Section (e)'s baseline with isolation written by hand (no jaxopt_core
    code) and ``jc.sweep`` freeze the same members at the same steps, and
    agree on losses, evaluations and final params up to rounding; so the
    comparison of the two times the same work."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import sweep_speed
    from benchmarks.problems import digits_mlp, linear_regression

    if which == "linear":  # 1e37: the loss overflows at step 1
        problem = linear_regression(n=64, d=4)
        lrs = np.array([1e-3, 1e37, 1e-1, 1e17], np.float32)
    else:  # 1e36: dies at step 2, minibatches drawn in jc.fit's order
        problem = digits_mlp(hidden=8, batch_size=64)
        lrs = np.array([1e-2, 1e36, 1e-3, 5e37], np.float32)
    steps, key = 20, jax.random.key(0)
    ours = sweep_speed._jc(problem, lrs, steps, key)()
    run = jax.jit(sweep_speed.optax_program(problem, steps, isolate=True))
    theirs = run(problem.params, problem.data, jnp.asarray(lrs), key)

    (p1, l1, e1), (p2, l2, e2) = ours, (theirs[0], *map(np.asarray, theirs[1:]))
    e1 = np.asarray(e1["eval"])
    dead = ~np.isfinite(l1)
    assert dead[:, -1].tolist() == [False, True, False, which == "mlp"]
    assert np.array_equal(dead, ~np.isfinite(l2))
    assert np.array_equal(np.isnan(e1), np.isnan(e2))
    np.testing.assert_allclose(l2[~dead], np.asarray(l1)[~dead], rtol=1e-4)
    np.testing.assert_allclose(e2[~np.isnan(e2)], e1[~np.isnan(e1)], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(p1)):  # frozen members too
        assert np.all(np.isfinite(np.asarray(b)))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_the_sgd_floor_trains_as_jc_sweep_with_sgd():
    """Section (e)'s floor (the hand-written sweep with ``optax.sgd``) and
    ``jc.sweep`` with ``jc.sgd`` train the same members on the same batches:
    losses, evaluations and final params agree up to rounding."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxopt_core as jc
    from benchmarks import sweep_speed
    from benchmarks.problems import digits_mlp

    problem, steps, key = digits_mlp(hidden=8, batch_size=64), 20, jax.random.key(0)
    lrs = np.array([1e-3, 1e-1, 1.0], np.float32)
    res = jc.sweep(problem.loss, problem.params, jc.sgd, problem.data,
                   grid={"learning_rate": lrs}, steps=steps, batch_size=problem.batch_size,
                   key=key, eval_fn=problem.loss, eval_data=problem.data, eval_every=steps // 10)
    run = jax.jit(sweep_speed.optax_program(problem, steps, optimizer=optax.sgd))
    params, losses, evals = run(problem.params, problem.data, jnp.asarray(lrs), key)
    np.testing.assert_allclose(np.asarray(losses), np.asarray(res.losses), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(evals), np.asarray(res.evals["eval"]), rtol=1e-4)
    assert float(np.ptp(np.asarray(res.losses)[:, -1])) > 0.1  # the rates train differently
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(res.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
