"""Checkpoints (issue 13): what ``checkpoint_every`` costs a sweep, and how soon
Ctrl-C stops one. Writes CHECKPOINT_RESULTS.md.

Usage (from the repository root)::

    python benchmarks/checkpoints.py             # full run, a few minutes on 2 cores
    python benchmarks/checkpoints.py --smoke --out benchmarks/_smoke/CHECKPOINT_RESULTS.md

Overhead: each case runs the same sweep three ways, timed interleaved after a
warm-up (benchmarks/timing.py: medians, paired per-repetition ratios):

* one program: no checkpoints (the default);
* segments: ``segment_steps = steps / 10``, no checkpoints (what cutting the
  compiled run into ten segments costs by itself);
* checkpointed: ``checkpoint_every = steps / 10`` into a fresh folder each
  call (ten orbax saves of every member's params, optimizer state, flags,
  data order, losses and evaluations; the last waited for).

Ctrl-C: a checkpointed sweep is started, a thread sends SIGINT to the process
half-way through, and the time from the signal to ``jc.Interrupted`` in the
caller is measured (the rest of the running segment, the save, the partial
result). The command adds writing the partial run folder (CSV, PNG, result
file) to that: see tests/app/test_resuming.py, which prints it.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

import jaxopt_core as jc  # noqa: E402
from benchmarks.problems import tanh_regression_model  # noqa: E402
from benchmarks.report import header  # noqa: E402
from benchmarks.timing import interleaved, load_average, ratio, ratio_quartiles  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    d_in: int
    hidden: int  # 0: linear regression
    k: int  # members
    steps: int
    batch: int


FULL = ((Case("MLP 64-128-128-1, K=16", 64, 128, 16, 1000, 64),
         Case("linear regression d=16, K=64", 16, 0, 64, 2000, 32)), 5, 3)
SMOKE = ((Case("MLP 8-16-16-1, K=4", 8, 16, 4, 40, 16),), 2, 1)


def _problem(case: Case):
    """``(params, loss, data, eval_data)`` of a regression on tanh targets."""
    rng = np.random.default_rng(0)
    n = 4 * case.batch
    x = rng.standard_normal((n, case.d_in), dtype=np.float32)
    y = np.tanh(x @ (rng.standard_normal(case.d_in, dtype=np.float32) / np.sqrt(case.d_in)))
    data = jax.device_put((x[: 3 * n // 4], y[: 3 * n // 4]))
    eval_data = jax.device_put((x[3 * n // 4:], y[3 * n // 4:]))
    params, loss = tanh_regression_model(case.d_in, case.hidden)
    return params, loss, data, eval_data


class _Runner:
    """The case's sweep, with fresh checkpoint folders under one temporary root."""

    def __init__(self, case: Case, root: Path):
        self.case, self.root, self.calls = case, root, 0
        self.params, self.loss, self.data, self.eval_data = _problem(case)
        self.kw = {"grid": {"learning_rate": np.geomspace(1e-4, 1e-1, case.k).astype(np.float32)},
                   "steps": case.steps, "batch_size": case.batch, "eval_fn": self.loss,
                   "eval_data": self.eval_data, "eval_every": case.steps // 5}
        self.tenth = max(1, case.steps // 10)

    def __call__(self, **kw):
        return jc.sweep(self.loss, self.params, jc.adam, self.data, **self.kw, **kw)

    def fresh(self) -> Path:
        self.calls += 1
        return self.root / f"run{self.calls}"


def overhead(runner: _Runner, reps: int) -> dict:
    tenth = runner.tenth
    return interleaved({
        "one program": lambda: runner().losses,
        "segments": lambda: runner(segment_steps=tenth).losses,
        "checkpointed": lambda: runner(checkpoint_dir=runner.fresh(),
                                       checkpoint_every=tenth).losses,
    }, reps=reps)


def stop_latency(runner: _Runner, runs: int, run_seconds: float) -> list[float]:
    """Seconds from SIGINT to ``jc.Interrupted``, one per run (signal sent
    half-way through a run that takes ``run_seconds``)."""
    out = []
    for _ in range(runs):
        sent: list[float] = []

        def interrupt(sent=sent):
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)

        timer = threading.Timer(run_seconds / 2, interrupt)
        timer.start()
        try:
            runner(checkpoint_dir=runner.fresh(), checkpoint_every=runner.tenth)
            timer.cancel()  # finished before the signal: no sample
        except jc.Interrupted:
            out.append(time.perf_counter() - sent[0])
        except KeyboardInterrupt:  # the signal came as the run returned: no sample
            pass
    return out


def bench_case(case: Case, reps: int, stops: int) -> dict:
    with tempfile.TemporaryDirectory() as root:
        runner = _Runner(case, Path(root))
        times = overhead(runner, reps)
        latency = stop_latency(runner, stops, times["checkpointed"].median)
    return {"times": times, "latency": latency}


def _row(case: Case, res: dict) -> str:
    t = res["times"]
    one = t["one program"]
    cells = []
    for name in ("segments", "checkpointed"):
        lo, hi = ratio_quartiles(t[name], one)
        cells.append(f"{t[name].median * 1e3:.0f} ms | **{ratio(t[name], one):.2f}** "
                     f"({lo:.2f}-{hi:.2f})")
    per_save = (t["checkpointed"].median - t["segments"].median) / 10 * 1e3
    lat = res["latency"]
    stop = f"{statistics.median(lat):.2f} s ({len(lat)})" if lat else "n/a"
    return (f"| {case.name} | {case.steps} | {one.median * 1e3:.0f} ms | " + " | ".join(cells)
            + f" | {per_save:.0f} ms | {stop} |")


def write(results: list, mode: str, load: tuple, path: Path) -> None:
    lines = [
        *header("Checkpoints: the overhead of checkpoint_every and the time Ctrl-C takes",
                "checkpoints.py", mode, load),
        "",
        "## Results",
        "",
        "Medians over interleaved repetitions of a whole `jc.sweep` call with `eval_fn` "
        "(compiled once before timing); ratio = time / one-program time, the median of "
        "the paired per-repetition ratios (first-third quartile in brackets). Segments "
        "and checkpoints every steps/10. Per save: (checkpointed - segments) / 10. "
        "Ctrl-C: median seconds from SIGINT (sent half-way) to `jc.Interrupted` "
        "(number of runs).",
        "",
        "| sweep | steps | one program | segments | ratio | checkpointed | ratio | "
        "per save | Ctrl-C to Interrupted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(case, res) for case, res in results]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (for CI)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "CHECKPOINT_RESULTS.md")
    args = parser.parse_args(argv)
    cases, reps, stops = SMOKE if args.smoke else FULL
    start = load_average()
    results = []
    for case in cases:
        print(f"[checkpoints] {case.name}", file=sys.stderr, flush=True)
        results.append((case, bench_case(case, reps, stops)))
    write(results, "smoke" if args.smoke else "full", (start, load_average()), args.out)
    print(args.out.read_text())
    return args.out


if __name__ == "__main__":
    main()
