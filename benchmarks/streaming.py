"""Streamed data (issue 17): what feeding fit and sweep from an iterator costs.
Writes STREAMING_RESULTS.md.

Usage (from the repository root)::

    python benchmarks/streaming.py               # full run, a few minutes on 2 cores
    python benchmarks/streaming.py --smoke --out benchmarks/_smoke/STREAMING_RESULTS.md

Each case trains on the same examples two ways, timed interleaved after a
warm-up (benchmarks/timing.py: medians, paired per-repetition ratios):

* in memory: the examples as device arrays, ``batch_size=B`` (one compiled
  program drawing the batches inside it);
* iterator: the same examples cut into ``steps`` NumPy batches of ``B``,
  yielded by a generator; the library stacks them per segment and puts them
  on the device from a background thread while the previous segment runs.
  A third contender makes each batch on the fly (NumPy random numbers) to
  show host work overlapping device work.

Two models: an MLP whose step is dominated by compute (the case the issue's
10% target is about) and a linear regression whose step is tiny, where the
per-batch host work (copying, stacking, transfer) is not hidden.
"""

from __future__ import annotations

import argparse
import sys
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
    batch: int
    steps: int
    k: int  # sweep members


FULL = ((Case("MLP 128-256-256-1, B=128", 128, 256, 128, 200, 4),
         Case("linear regression d=16, B=32", 16, 0, 32, 2000, 4)), 5)
SMOKE = ((Case("MLP 32-32-32-1, B=32", 32, 32, 32, 20, 2),
          Case("linear regression d=4, B=8", 4, 0, 8, 20, 2)), 2)


def _generate(case: Case, seed: int):
    """The batches, each made when asked for (NumPy random numbers)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(case.d_in).astype(np.float32) / np.sqrt(case.d_in)
    for _ in range(case.steps):
        x = rng.standard_normal((case.batch, case.d_in), dtype=np.float32)
        yield x, np.tanh(x @ w)


def _batches(case: Case) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(_generate(case, seed=0))


def bench_case(case: Case, reps: int) -> dict:
    params, loss = tanh_regression_model(case.d_in, case.hidden)
    batches = _batches(case)
    arrays = jax.device_put((np.concatenate([b[0] for b in batches]),
                             np.concatenate([b[1] for b in batches])))
    opt = jc.adam(1e-3)
    grid = {"learning_rate": np.geomspace(1e-4, 1e-2, case.k).astype(np.float32)}

    def fit(data, **kw):
        return lambda: jc.fit(loss, params, opt, data() if callable(data) else data,
                              steps=case.steps, **kw).losses

    def sweep(data, **kw):
        return lambda: jc.sweep(loss, params, jc.adam, data() if callable(data) else data,
                                grid=grid, steps=case.steps, **kw).losses

    out = {}
    for what, run in (("fit", fit), ("sweep", sweep)):
        times = interleaved({
            "in memory": run(arrays, batch_size=case.batch),
            "iterator": run(lambda: iter(batches)),
            "made on the fly": run(lambda: _generate(case, seed=0)),
        }, reps=reps)
        out[what] = times
    return out


def _row(case: Case, what: str, times: dict) -> str:
    mem = times["in memory"]
    cells = []
    for name in ("iterator", "made on the fly"):
        lo, hi = ratio_quartiles(times[name], mem)
        cells.append(f"{times[name].median * 1e3:.0f} ms | **{ratio(times[name], mem):.2f}** "
                     f"({lo:.2f}-{hi:.2f})")
    per_step = mem.median / case.steps * 1e6
    return (f"| {case.name} | {what} | {case.steps} | {per_step:.0f} us | "
            f"{mem.median * 1e3:.0f} ms | " + " | ".join(cells) + " |")


def write(results: list, mode: str, load: tuple, path: Path) -> None:
    lines = [
        *header("Streamed data: iterator-fed fit and sweep against the in-memory path",
                "streaming.py", mode, load),
        "",
        "## Results",
        "",
        "Medians over interleaved repetitions of a whole call (compiled once "
        "before timing); ratio = iterator time / in-memory time, the median of "
        "the paired per-repetition ratios (first-third quartile in brackets). "
        "Default `segment_steps` (100).",
        "",
        "| model | call | steps | in memory, per step | in memory | iterator | "
        "ratio | made on the fly | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(case, what, res[what]) for case, res in results for what in ("fit", "sweep")]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (for CI)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "STREAMING_RESULTS.md")
    args = parser.parse_args(argv)
    cases, reps = SMOKE if args.smoke else FULL
    start = load_average()
    results = []
    for case in cases:
        print(f"[streaming] {case.name}", file=sys.stderr, flush=True)
        results.append((case, bench_case(case, reps)))
    write(results, "smoke" if args.smoke else "full", (start, load_average()), args.out)
    print(args.out.read_text())
    return args.out


if __name__ == "__main__":
    main()
