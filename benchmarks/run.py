"""Run the benchmarks of issue 6 and write RESULTS.md and sweep_scaling.png.

Usage (from the repository root)::

    python benchmarks/run.py                      # full run, ~15 min on a quiet machine
    python benchmarks/run.py --smoke --out benchmarks/_smoke/RESULTS.md   # < 60 s
    python benchmarks/run.py --only a,b           # some sections (a, b, c, e; d comes with c)
    python benchmarks/run.py --only e             # jc.sweep vs the best hand-written sweep,
                                                  # GFLOP/s against a measured matmul peak
    python benchmarks/run.py --all-on-10k         # all optimizers on the 10,000-leaf tree (slow)

The PNG is written next to the report. See benchmarks/README.md for the method.
On a GPU or TPU the same command runs there (JAX picks the device) and adds
Adam's step on 100M params and the sweeps at K=4096 (``for_backend``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import memory, problems, report, steps, sweep_speed, sweeps, training  # noqa: E402,E501
from benchmarks.steps import OPTIMIZERS, TreeSpec  # noqa: E402
from benchmarks.timing import load_average  # noqa: E402

ALL = tuple(OPTIMIZERS)
SECTIONS = ("a", "b", "c", "e")


@dataclass(frozen=True)
class Config:
    """Sizes and repetitions of one kind of run."""

    trees: tuple[TreeSpec, ...]
    audit: tuple[str, ...]  # optimizers whose compiled HLO is compared
    step_reps: int  # interleaved repetitions per optimizer step
    step_target_s: float  # seconds per timed unit of back-to-back steps
    train_blocks: int  # residual blocks of the (b) model: 4 leaves each
    train_steps: int
    train_reps: int
    train_optimizers: tuple[str, ...]  # the first is the target's; sgd gives the gradient floor
    ks: tuple[int, ...]
    sweep_problems: tuple[tuple[str, dict, int], ...]  # (problems.PROBLEMS key, kwargs, steps)
    sweep_reps: int
    loop_members: int  # members of the Python loop actually timed
    compile_trials: int  # fresh compiles per K; the minimum is reported
    speed_ks: tuple[int, ...] = (64, 256, 1024)  # (e): jc.sweep vs the best hand-written
    speed_problems: tuple[tuple[str, dict, int], ...] = (
        ("linreg", {}, 200), ("digits", {"batch_size": 128}, 100))
    speed_reps: int = 5


FULL = Config(
    trees=(TreeSpec(1, 4_000_000, ALL), TreeSpec(1000, 4_000, ALL),
           TreeSpec(10_000, 400, ("sgd",))),
    audit=ALL, step_reps=22, step_target_s=0.1,
    train_blocks=250, train_steps=100, train_reps=9, train_optimizers=("adam", "sgd"),
    ks=(1, 4, 16, 64, 256, 1024),
    sweep_problems=(("linreg", {}, 200), ("digits", {"batch_size": 128}, 100)),
    sweep_reps=5, loop_members=4, compile_trials=2,
)
SMOKE = Config(
    trees=(TreeSpec(1, 4096, ALL), TreeSpec(8, 256, ("sgd", "adam"))),
    audit=("adam",), step_reps=3, step_target_s=0.002,
    train_blocks=2, train_steps=5, train_reps=2, train_optimizers=("adam",),
    ks=(1, 4),
    # One problem per section keeps the smoke run short (every problem
    # builder and every code path still runs once): (c)/(d) on the linear
    # model, (e) on the MLP with minibatches.
    sweep_problems=(("linreg", {"n": 64, "d": 4}, 5),),
    sweep_reps=2, loop_members=2, compile_trials=1,
    speed_ks=(4,), speed_problems=(("digits", {"hidden": 8, "batch_size": 64}, 10),),
    speed_reps=2,
)


# On an accelerator (JAX picks it when present) the full run adds issue 14's
# sizes: Adam's step on 100M float32 params against the streaming ceiling
# (the bandwidth of an in-place ``x * c`` on the same tree), and the sweeps
# at K=4096. A CPU run keeps its own sizes.
ACCELERATOR_TREE = TreeSpec(1, 100_000_000, ("adam",))
ACCELERATOR_KS = (1024, 4096)


def for_backend(config: Config, backend: str, mode: str) -> Config:
    """``config`` with the accelerator sizes added when ``backend`` is not the CPU
    (full runs only: a smoke run stays small everywhere)."""
    if backend == "cpu" or mode != "full":
        return config
    return replace(config, trees=(*config.trees, ACCELERATOR_TREE),
                   speed_ks=tuple(sorted({*config.speed_ks, *ACCELERATOR_KS})))


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(config: Config, sections: tuple[str, ...], mode: str, command: str) -> report.Results:
    t0, load_start = time.perf_counter(), load_average()
    ceilings, step_results, audit, train_results = [], [], [], []
    sweep_points: dict[str, list[sweeps.SweepPoint]] = {}
    notes: list[str] = []
    if "a" in sections:
        _log("(a) HLO audit")
        audit = steps.hlo_audit(config.audit)
        for spec in config.trees:
            _log(f"(a) tree {spec.name}: ceiling, then {', '.join(spec.optimizers)}")
            ceilings.append(steps.ceiling(spec, config.step_reps, config.step_target_s))
            step_results += steps.bench_tree(spec, config.step_reps, config.step_target_s)
        if ACCELERATOR_TREE in config.trees:
            notes.append(f"(a) the {ACCELERATOR_TREE.name} tree (accelerators only) runs adam "
                         "only: its '% of ceiling' is Adam's step against the memory bandwidth "
                         "an in-place `x * c` reaches on the same device.")
        for s in (s for s in config.trees
                  if set(s.optimizers) != set(ALL) and s != ACCELERATOR_TREE):
            notes.append(f"(a) the {s.name} tree runs {', '.join(s.optimizers)} only"
                         + (": XLA:CPU compile time grows faster than linearly with the number "
                            "of leaves (see the compile column); Adam's step took 90 s to "
                            "compile at 4,000 leaves (optax: 98 s) and 629 s at 10,000 here."
                            if mode == "full" else " (smoke run)."))
    if "b" in sections:
        model = problems.residual_mlp(config.train_blocks)
        _log(f"(b) {model.n_leaves}-leaf training step, {', '.join(config.train_optimizers)}")
        train_results = training.bench_training(model, config.train_optimizers,
                                                config.train_steps, config.train_reps)
    if "c" in sections:
        for key, kwargs, n_steps in config.sweep_problems:
            problem = problems.PROBLEMS[key](**kwargs)
            _log(f"(c) sweeps: {problem.name}, K = {config.ks}")
            sweep_points[key] = sweeps.bench_sweeps(problem, config.ks, n_steps,
                                                    config.sweep_reps, config.loop_members,
                                                    config.compile_trials, report.TARGET_K)
        _log("(d) memory of jc.sweep's programs (subprocess with XLA's dump)")
        ours = memory.jc_sweep_peaks(list(config.sweep_problems), list(config.ks))
        sweep_points = {
            points[0].problem: [
                p._replace(memory=p.memory._replace(ours_xla=ours[key].get(p.k))) for p in points
            ]
            for key, points in sweep_points.items()
        }
    speed, peak = {}, 0.0
    if "e" in sections:
        _log("(e) dense matmul peak, then jc.sweep vs the best hand-written sweep")
        peak = sweep_speed.matmul_peak(512 if mode == "smoke" else 2048)
        for key, kwargs, n_steps in config.speed_problems:
            problem = problems.PROBLEMS[key](**kwargs)
            _log(f"(e) {problem.name}, K = {config.speed_ks}")
            speed[problem.name] = sweep_speed.bench_speed(problem, config.speed_ks, n_steps,
                                                          config.speed_reps)
    return report.Results(
        mode=mode, command=command, load_start=load_start, load_end=load_average(),
        wall_s=time.perf_counter() - t0, ceilings=ceilings, steps=step_results, audit=audit,
        training=train_results, sweeps=sweep_points, notes=notes, speed=speed, peak=peak,
    )


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, everything in under a minute (for CI)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md",
                        help="report path; sweep_scaling.png goes next to it")
    parser.add_argument("--all-on-10k", action="store_true",
                        help="run all six optimizers on the 10,000-leaf tree, not sgd only "
                             "(adds tens of minutes of XLA compiling)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help="comma-separated sections to run: a, b, c (c includes d), e")
    args = parser.parse_args(argv)
    sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    mode = "smoke" if args.smoke else "full"
    command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    config = SMOKE if args.smoke else FULL
    if args.all_on_10k:
        config = replace(config, trees=tuple(
            t._replace(optimizers=ALL) if t.leaves >= 10_000 else t for t in config.trees))
    import jax

    config = for_backend(config, jax.default_backend(), mode)
    results = run(config, sections, mode, command.strip())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    png = args.out.parent / "sweep_scaling.png"
    if results.sweeps:
        report.plot(results, png)
    args.out.write_text(report.markdown(results, png.name))
    _log(f"wrote {args.out}" + (f" and {png}" if results.sweeps else ""))
    return args.out


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    main()
