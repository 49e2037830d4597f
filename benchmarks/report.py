"""RESULTS.md and sweep_scaling.png from the measurements, and the targets of issue 6."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks import sweep_speed
from benchmarks.steps import Ceiling, HloAudit, StepResult
from benchmarks.sweeps import SweepPoint
from benchmarks.timing import Timing, ratio, ratio_quartiles, within_noise
from benchmarks.training import CONTENDERS, TrainResult

TARGET_K = 256


class Results(NamedTuple):
    """Everything one run measured (sections that did not run are empty)."""

    mode: str
    command: str
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float]
    wall_s: float
    ceilings: list[Ceiling]
    steps: list[StepResult]
    audit: list[HloAudit]
    training: list[TrainResult]
    sweeps: dict[str, list[SweepPoint]]  # problem -> points, ascending K
    notes: list[str]
    speed: dict = {}  # (e) problem -> [sweep_speed.SpeedPoint]
    peak: float = 0.0  # (e) dense matmul GFLOP/s measured in the run


class Target(NamedTuple):
    name: str
    measured: str
    ok: bool | None  # None: not measured in this run
    detail: str = ""


# ---------------------------------------------------------------------------
# machine


def machine() -> dict[str, str]:
    import jax
    import jaxlib
    import optax

    import jaxopt_core

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        pass
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "caches": _caches(),
        "memory": mem,
        "platform": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        "jax / jaxlib": f"{jax.__version__} / {jaxlib.__version__}, {jax.default_backend()}",
        "optax": optax.__version__,
        "jaxopt_core": f"{jaxopt_core.__version__} (git {_git_rev()})",
    }


def header(title: str, script: str, mode: str, load: tuple) -> list[str]:
    """The opening lines of a standalone benchmark report: title, the command
    and time it was written by, the load average at start and end, the machine."""
    flag = " --smoke" if mode == "smoke" else ""
    return [
        f"# {title}",
        "",
        f"Written by `python benchmarks/{script}{flag}` "
        f"on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"({mode} run). Load average at start {load[0][0]:.2f}, at end {load[1][0]:.2f}.",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in machine().items()],
    ]


def _caches() -> str:
    """Data/unified cache sizes per level, from sysfs (per core for L1/L2)."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    out = []
    for index in sorted(base.glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            if kind == "Instruction":
                continue
            out.append(f"L{(index / 'level').read_text().strip()} "
                       f"{(index / 'size').read_text().strip()}")
        except OSError:
            continue
    return ", ".join(out) or "unknown"


def _git_rev() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "jaxopt_core"],
                               capture_output=True, text=True, cwd=Path(__file__).parent,
                               timeout=10)
        return out.stdout.strip() + (" + local changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---------------------------------------------------------------------------
# targets


def targets(r: Results) -> list[Target]:
    out = []
    if r.steps:
        worst = max(r.steps, key=lambda s: ratio(s.ours, s.theirs))
        worst_ratio = ratio(worst.ours, worst.theirs)
        over = [s for s in r.steps if ratio(s.ours, s.theirs) > 1]
        real = [s for s in over if not within_noise(s.ours, s.theirs)]
        detail = f"worst: {worst.optimizer} on {worst.tree}; {len(over)} of {len(r.steps)} above 1"
        if over:
            detail += (" (all within noise: ratio quartiles straddle 1)" if not real else
                       f"; beyond noise: {', '.join(f'{s.optimizer} on {s.tree}' for s in real)}")
        out.append(Target("(a) every optimizer step, ours/optax <= 1.0", f"{worst_ratio:.3f}",
                          worst_ratio <= 1.0, detail))
    else:
        out.append(Target("(a) every optimizer step, ours/optax <= 1.0", "-", None))
    for t in r.training[:1]:  # the first optimizer is the target's; the others are context
        flat_ratio = ratio(t.per_step[CONTENDERS[0]], t.per_step[CONTENDERS[2]])
        floor = _gradient_floor(r)
        note = "" if floor is None else (
            f"gradient-only floor: {floor:.2f} (the ratio if the flat layout made the update free)")
        out.append(Target(f"(b) {t.leaves}-leaf training step ({t.optimizer}), fit flat / optax "
                          "tree <= 0.75 (issue 14; issue 6 aimed at 0.5)", f"{flat_ratio:.3f}",
                          flat_ratio <= 0.75, note))
    if not r.training:
        out.append(Target("(b) 1000-leaf training step, fit flat / optax tree <= 0.75", "-", None))
    for problem, points in r.sweeps.items():
        at = _at_k(points, TARGET_K)
        first = points[0]
        label = f"K={at.k}" + ("" if at.k == TARGET_K else f" (no K={TARGET_K} in this run)")
        speed = ratio(at.theirs, at.ours)
        noise = "within noise (ratio quartiles straddle 1)" if speed < 1 and within_noise(
            at.ours, at.theirs) else ""
        out.append(Target(f"(c) {problem}, {label}: sweep >= 1.0x optax inject_hyperparams+vmap",
                          f"{speed:.2f}x", speed >= 1.0, noise))
        loop = at.loop / at.ours.median
        out.append(Target(f"(c) {problem}, {label}: sweep >= 20x Python loop", f"{loop:.1f}x",
                          loop >= 20, f"loop timed on {at.loop_measured} member(s), x K"))
        growth = at.compile_ours / first.compile_ours if first.compile_ours > 0 else float("inf")
        out.append(Target(f"(c) {problem}: compile at {label} <= 1.5x K={first.k}",
                          f"{growth:.2f}x ({at.compile_ours:.1f} s / {first.compile_ours:.1f} s)",
                          growth <= 1.5))
    if not r.sweeps:
        out.append(Target("(c) sweeps", "-", None))
    out += _memory_targets(r) + _speed_targets(r)
    return out


def _memory_targets(r: Results) -> list[Target]:
    """(d), issue 14: a sweep's peak memory at the largest K <= the optax baseline's."""
    out = []
    for problem, points in r.sweeps.items():
        m = points[-1].memory
        if m.ours_xla is None or m.theirs_xla is None:
            continue
        out.append(Target(f"(d) {problem}, K={m.k}: peak memory jc.sweep <= optax",
                          f"{m.ours_xla / 1e6:.1f} MB / {m.theirs_xla / 1e6:.1f} MB",
                          m.ours_xla <= m.theirs_xla))
    return out


def _speed_targets(r: Results) -> list[Target]:
    """(e), issue 14: jc.sweep against the best hand-written optax sweep at
    every K, and the MLP's GFLOP/s against the matmul peak at K=256."""
    out = []
    for problem, points in r.speed.items():
        for p in points:
            speed = ratio(p.times["optax"], p.times["jc.sweep"])
            notes = ["within noise (ratio quartiles straddle 1)"] if speed < 1 and within_noise(
                p.times["jc.sweep"], p.times["optax"]) else []
            if sweep_speed.ISOLATED in p.times:
                notes.append(f"{ratio(p.times[sweep_speed.ISOLATED], p.times['jc.sweep']):.2f}x "
                             "the same baseline with isolation written by hand")
            if sweep_speed.BLOCKED in p.times:
                notes.append(f"{ratio(p.times['optax'], p.times[sweep_speed.BLOCKED]):.2f}x "
                             "with eval_chunk_size=64")
            out.append(Target(f"(e) {problem}, K={p.k}: jc.sweep >= 1.0x hand-written optax "
                              "sweep", f"{speed:.2f}x", speed >= 1.0, "; ".join(notes)))
        at = [p for p in points if p.k == TARGET_K and "dense" in p.times]
        if at and r.peak:
            share = at[0].gflop / at[0].times["jc.sweep"].median / r.peak
            note = f"peak {r.peak:.0f} GFLOP/s measured in this run"
            if sweep_speed.FLOOR in at[0].times:
                floor = at[0].gflop / at[0].times[sweep_speed.FLOOR].median / r.peak
                note += f"; plain SGD written by hand (the floor) {100 * floor:.0f}%"
            out.append(Target(f"(e) {problem}, K={TARGET_K}: jc.sweep >= 40% of the matmul peak",
                              f"{100 * share:.0f}%", share >= 0.4, note))
    return out


def _gradient_floor(r: Results) -> float | None:
    """With an sgd run beside the target optimizer's: the cheapest step on the
    flat layout (gradient + one scaled add) over the target's optax step."""
    sgd = [t for t in r.training if t.optimizer == "sgd"]
    if not r.training or not sgd or r.training[0].optimizer == "sgd":
        return None
    return ratio(sgd[0].per_step[CONTENDERS[0]], r.training[0].per_step[CONTENDERS[2]])


def _at_k(points: list[SweepPoint], k: int) -> SweepPoint:
    exact = [p for p in points if p.k == k]
    return exact[0] if exact else max((p for p in points if p.k <= k), key=lambda p: p.k,
                                      default=points[-1])


# ---------------------------------------------------------------------------
# markdown


def _ms(t: Timing | float) -> str:
    s = t.median if isinstance(t, Timing) else t
    return f"{s * 1e3:.3f}" if s < 0.1 else f"{s * 1e3:.1f}"


def _sec(s: float) -> str:
    return f"{s:.3f}" if s < 1 else f"{s:.2f}"


def _mb(b: int | None) -> str:
    if b is None:
        return "n/a"
    return f"{b / 1e6:.3f}" if b < 1e7 else f"{b / 1e6:.1f}"


def _quartiles(a: Timing, b: Timing) -> str:
    q1, q3 = ratio_quartiles(a, b)
    return f"{q1:.2f}-{q3:.2f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def markdown(r: Results, png_name: str) -> str:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [
        "# Benchmarks: jaxopt_core against optax and the machine's limits",
        "",
        f"Generated {now} by `{r.command}` ({r.mode} run, {r.wall_s / 60:.1f} min). "
        "Method: `benchmarks/README.md`. Times are medians of interleaved repetitions "
        "(ours, optax, then optax, ours, ...) after warm-up, with `block_until_ready`; "
        "ratios between interleaved contenders are medians of the per-repetition ratios "
        "(each pair ran back to back), steadier than ratios of medians on a noisy machine.",
        "",
        "## Machine",
        "",
    ]
    info = machine()
    info["load average (1/5/15 min)"] = (
        f"{'/'.join(f'{x:.2f}' for x in r.load_start)} at start, "
        f"{'/'.join(f'{x:.2f}' for x in r.load_end)} at end"
    )
    lines += _table(["", ""], [[k, v] for k, v in info.items()])
    if r.load_start[0] > 0.5 * (os.cpu_count() or 1):
        lines += ["**The machine was busy when this run started** (1-minute load average "
                  "above half the core count; the run itself adds about 1-2): absolute times "
                  "are inflated and ratios noisier than on a quiet machine.", ""]
    lines += ["## Targets (issues 6 and 14)", ""]
    lines += _table(["target", "measured", "status", "note"], [
        [t.name, t.measured, "n/a" if t.ok is None else ("PASS" if t.ok else "GAP"), t.detail]
        for t in targets(r)
    ])
    lines += _section_a(r) + _section_b(r) + _section_c(r, png_name) + _section_d(r)
    if r.speed:
        lines += sweep_speed.markdown(r.speed, r.peak)
    if r.notes:
        lines += ["## Notes", ""] + [f"* {n}" for n in r.notes] + [""]
    return "\n".join(lines)


def _section_a(r: Results) -> list[str]:
    lines = ["## (a) Optimizer step: update + apply_updates, jitted, params and state donated",
             ""]
    if not r.steps:
        return lines + ["Not run.", ""]
    lines += ["Bytes moved = the minimum an elementwise step reads and writes (params, grads, "
              "every state buffer). 'ratio quartiles' = first and third quartiles of the "
              "per-repetition ours/optax ratios: when they straddle 1 the two are "
              "indistinguishable in this run. Ceiling = donated in-place `x * c` on the same tree, "
              "same run. On trees of many small leaves the ceiling is not bandwidth but the "
              "fixed cost of one kernel per leaf (the 'us per leaf'), so GB/s there measures "
              "kernels per second, and a step can beat the `x * c` 'ceiling'. "
              "Compile = seconds JAX reports (`jax.monitoring`) for tracing, lowering and "
              "compiling during the first call (the smaller of the two builds: each "
              "optimizer is timed in two halves that build the libraries' steps in opposite "
              "orders).", ""]
    ceilings = {c.tree: c for c in r.ceilings}
    for tree in dict.fromkeys(s.tree for s in r.steps):
        c = ceilings.get(tree)
        ceiling_bw = c.bytes_moved / c.timing.median / 1e9 if c else None
        head = f"### {tree} float32"
        if c:
            per_leaf = c.timing.median / int(tree.split(" x ")[0]) * 1e6
            head += (f" (ceiling: {_ms(c.timing)} ms per `x * c`, {ceiling_bw:.1f} GB/s, "
                     f"{per_leaf:.1f} us per leaf)")
        rows = []
        for s in (s for s in r.steps if s.tree == tree):
            ours_bw = s.bytes_moved / s.ours.median / 1e9
            theirs_bw = s.bytes_moved / s.theirs.median / 1e9
            rows.append([
                s.optimizer, _ms(s.ours), _ms(s.theirs), f"{ratio(s.ours, s.theirs):.3f}",
                _quartiles(s.ours, s.theirs),
                f"{_ms(s.ours.low)}-{_ms(s.ours.high)} / {_ms(s.theirs.low)}-{_ms(s.theirs.high)}",
                _mb(s.bytes_moved), f"{ours_bw:.1f}", f"{theirs_bw:.1f}",
                f"{100 * ours_bw / ceiling_bw:.0f}%" if ceiling_bw else "-",
                f"{_sec(s.compile_ours)} / {_sec(s.compile_theirs)}",
            ])
        lines += [head, ""]
        lines += _table(["optimizer", "ours ms", "optax ms", "ours/optax", "ratio quartiles",
                         "range ms (ours / optax)", "MB moved/step", "ours GB/s", "optax GB/s",
                         "ours % of ceiling", "compile s (ours / optax)"], rows)
    if r.audit:
        lines += ["### HLO audit (compiled step on a float32 tree of [4096] and [64, 64])", "",
                  "Counts in the optimized HLO of each library's step (ours / optax). "
                  "'lowered converts' are array converts in the StableHLO JAX emits before "
                  "XLA optimizes: 0 means our upcast-to-float32 and cast-back are not even "
                  "emitted for float32 params.", ""]
        lines += _table(
            ["optimizer", "kernels (fusions)", "array ops", "array converts",
             "lowered converts", "copies"],
            [[a.optimizer] + [f"{x} / {y}" for x, y in zip(a.ours, a.theirs, strict=True)]
             for a in r.audit])
    return lines


def _section_b(r: Results) -> list[str]:
    lines = ["## (b) Full training step (grad + update) on a many-leaf model", ""]
    if not r.training:
        return lines + ["Not run.", ""]
    t0 = r.training[0]
    lines += [f"{t0.problem}: {t0.leaves} leaves, {t0.params:,} params, full batch. Time per "
              f"step = one compiled `lax.scan` of {t0.steps} steps, timed end to end, / "
              f"{t0.steps}. `jc fit (tree)` is the same loop as `jc fit (flat)` on the user's "
              "tree: flat vs tree is the layout's effect, tree vs optax the library's.", ""]
    if (floor := _gradient_floor(r)) is not None:
        lines += [f"sgd (the gradient plus one scaled add) bounds what any layout can do: "
                  f"its flat step is {floor:.2f}x optax's {t0.optimizer} step on the tree.", ""]
    for t in r.training:
        lines += [f"### {t.optimizer}", ""]
        base = t.per_step[CONTENDERS[2]]
        lines += _table(["contender", "ms per step", "range ms", "vs optax (tree)", "compile s"], [
            [name, _ms(x), f"{_ms(x.low)}-{_ms(x.high)}", f"{ratio(x, base):.3f}",
             _sec(t.compile_s[name])]
            for name, x in t.per_step.items()
        ])
    return lines


def _section_c(r: Results, png_name: str) -> list[str]:
    lines = ["## (c) Learning-rate sweeps (Adam, K learning rates)", ""]
    if not r.sweeps:
        return lines + ["Not run.", ""]
    lines += [f"![sweep time and compile time against K]({png_name})", "",
              "Python loop = K x the median time of one member (a Python loop over steps of "
              "one jitted step), timed on the number of members shown and extrapolated to K. "
              "Compile = seconds JAX reports (`jax.monitoring`) for tracing, lowering and "
              "compiling during jc.sweep's first call (helpers included) and during the optax "
              "program's `lower().compile()`; the minimum of two fresh compiles.", ""]
    for problem, points in r.sweeps.items():
        lines += [f"### {problem}, {points[0].steps} steps", ""]
        for p in (p for p in points if p.ours_flat is not None):
            lines += [f"Attribution at K={p.k}: `jc.sweep` {_sec(p.ours.median)} s with its "
                      f"default layout (the tree, for a model of this few leaves), "
                      f"{_sec(p.ours_flat.median)} s with `layout=\"flat\"`, optax "
                      f"{_sec(p.theirs.median)} s. Flat minus tree is what the flat layout "
                      "would cost (negative: save); tree minus optax is the rest of "
                      "`jc.sweep` (divergence tracking, host-side work).", ""]
        lines += _table(
            ["K", "jc.sweep s", "optax vmap s", "Python loop s", "optax / jc (quartiles)",
             "loop / jc",
             "compile jc s", "compile optax s"],
            [[p.k, _sec(p.ours.median), _sec(p.theirs.median),
              f"{_sec(p.loop)} ({p.loop_measured} timed)",
              f"{ratio(p.theirs, p.ours):.2f}x ({_quartiles(p.theirs, p.ours)})",
              f"{p.loop / p.ours.median:.1f}x",
              _sec(p.compile_ours), _sec(p.compile_theirs)] for p in points])
    return lines


def _section_d(r: Results) -> list[str]:
    lines = ["## (d) Peak memory against K", ""]
    if not r.sweeps:
        return lines + ["Not run.", ""]
    lines += ["Theory = K x (params + grads + Adam's two moments) + data, float32. Measured = "
              "XLA's buffer assignment for the whole compiled sweep (arguments + outputs + "
              "temporaries - aliased): `compiled.memory_analysis()` for the optax baseline, "
              "the `memory-usage-report` XLA dumps when compiling `jc.sweep`'s program (in a "
              "subprocess). Both include activations, which the theory leaves out.", ""]
    for problem, points in r.sweeps.items():
        rows = []
        for p in points:
            m = p.memory
            rows.append([p.k, _mb(m.theory), _mb(m.ours_xla), _mb(m.theirs_xla),
                         "n/a" if m.ours_xla is None else f"{m.ours_xla / m.theory:.2f}",
                         "n/a" if m.theirs_xla is None else f"{m.theirs_xla / m.theory:.2f}"])
        lines += [f"### {problem}", ""]
        lines += _table(["K", "theory MB", "jc.sweep MB", "optax MB", "jc / theory",
                         "optax / theory"], rows)
    return lines


# ---------------------------------------------------------------------------
# figure


def plot(r: Results, path: Path) -> None:
    from matplotlib.figure import Figure

    problems = list(r.sweeps)
    fig = Figure(figsize=(11, 3.6 * max(1, len(problems))), layout="constrained")
    axes = fig.subplots(max(1, len(problems)), 2, squeeze=False)
    for row, problem in zip(axes, problems, strict=False):
        pts = r.sweeps[problem]
        k = [p.k for p in pts]
        run, comp = row
        run.plot(k, [p.ours.median for p in pts], "o-", label="jc.sweep")
        run.plot(k, [p.theirs.median for p in pts], "s-", label="optax inject_hyperparams + vmap")
        run.plot(k, [p.loop for p in pts], "^--", label="Python loop (K x per member)")
        run.set(xscale="log", yscale="log", xlabel="K (members)", ylabel="seconds per sweep",
                title=f"{problem}: sweep time, {pts[0].steps} steps")
        ours_c = [max(p.compile_ours, 1e-3) for p in pts]
        theirs_c = [max(p.compile_theirs, 1e-3) for p in pts]
        comp.plot(k, ours_c, "o-", label="jc.sweep")
        comp.plot(k, theirs_c, "s-", label="optax")
        comp.axhline(1.5 * ours_c[0], color="gray", ls=":", label="target: 1.5x jc.sweep at K=1")
        # At least a decade of y range, so that run-to-run noise does not look like a trend.
        lo, hi = min(ours_c + theirs_c), max(ours_c + theirs_c + [1.5 * ours_c[0]])
        mid = (lo * hi) ** 0.5
        comp.set(xscale="log", yscale="log", xlabel="K (members)", ylabel="compile seconds",
                 title=f"{problem}: compile time",
                 ylim=(min(lo / 1.5, mid / 3.2), max(hi * 1.5, mid * 3.2)))
        for ax in row:
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
