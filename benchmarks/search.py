"""Adaptive search (issue 12): does it pay? Writes SEARCH_RESULTS.md and search.png.

Usage (from the repository root)::

    python benchmarks/search.py                       # full run, a few minutes on 2 cores
    python benchmarks/search.py --smoke --out benchmarks/_smoke/SEARCH_RESULTS.md   # < 60 s

Three comparisons, measured in one run (see benchmarks/README.md, "Search"):

(a) successive halving against the full sweep of the same K members (digits
    MLP, adam, learning rate and b1 sampled): wall time of the first call
    (compiles included), member-steps, and the best held-out accuracy;
(b) PBT against the best member of a constant-learning-rate sweep of the
    same K and steps (equal compute), minibatch SGD on noisy linear
    regression, where a constant rate has a noise floor that a decaying one
    escapes: the best held-out excess error;
(c) random and Sobol samples against a grid of the same K over three
    hyperparameters of adam on the digits MLP: the best held-out accuracy,
    over several sample keys.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxopt_core as jc  # noqa: E402
from benchmarks import problems  # noqa: E402
from benchmarks.report import machine  # noqa: E402
from benchmarks.timing import compile_seconds  # noqa: E402


@dataclass(frozen=True)
class Config:
    halving_k: int
    halving_steps: int
    pbt_k: int
    pbt_steps: int
    pbt_every: int
    pbt_n: int  # regression examples
    sample_k: int  # a cube: grid of round(K ** (1/3)) values per axis
    sample_steps: int
    sample_keys: int


FULL = Config(halving_k=81, halving_steps=243, pbt_k=16, pbt_steps=2000, pbt_every=50,
              pbt_n=4096, sample_k=27, sample_steps=150, sample_keys=5)
SMOKE = Config(halving_k=9, halving_steps=27, pbt_k=4, pbt_steps=40, pbt_every=10,
               pbt_n=256, sample_k=8, sample_steps=10, sample_keys=2)


def _log(msg: str) -> None:
    print(f"[search {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def digits_split(hidden: int = 32):
    """The digits MLP problem with a fixed train/validation split (80/20)."""
    problem = problems.digits_mlp(hidden=hidden, batch_size=128)
    x, y = problem.data
    order = np.random.default_rng(0).permutation(x.shape[0])
    cut = int(0.8 * len(order))
    train = (x[order[:cut]], y[order[:cut]])
    val = (x[order[cut:]], y[order[cut:]])
    return problem, train, val


def accuracy(params, batch):
    x, y = batch
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return {"accuracy": jnp.mean(jnp.argmax(h @ params["w2"] + params["b2"], -1) == y)}


def _timed(fn) -> tuple[float, float, Any]:
    """``(wall s, compile s, result)`` of one call (compile s as JAX reports it)."""
    t0 = time.perf_counter()
    compile_s, out = compile_seconds(fn)
    return time.perf_counter() - t0, compile_s, out


def bench_halving(c: Config) -> dict:
    problem, train, val = digits_split()

    def run(search, seed=1):
        grid = jc.sample(jax.random.key(seed), c.halving_k,
                         learning_rate=jc.log_uniform(1e-4, 1.0), b1=jc.uniform(0.5, 0.99))
        return jc.sweep(problem.loss, problem.params, jc.adam, train, grid=grid,
                        steps=c.halving_steps, batch_size=128, eval_fn=accuracy,
                        eval_data=val, rank_mode="max", search=search)

    out = {}
    for name, search in (("full", None), ("halving", jc.successive_halving(eta=3))):
        _log(f"(a) {name}, K={c.halving_k}, {c.halving_steps} steps: first call, then new values")
        out[name + "_s"], out[name + "_compile_s"], out[name] = _timed(lambda s=search: run(s))
        out[name + "_again_s"], _, _ = _timed(lambda s=search: run(s, seed=2))
    out["acc"] = {name: float(out[name].final_evals()["accuracy"][out[name].best_index])
                  for name in ("full", "halving")}
    out["full_rank_of_halving_best"] = int(
        out["full"].to_dataframe()["rank"][out["halving"].best_index])
    return out


def noisy_regression(n: int, d: int = 20, noise: float = 3.0, condition: float = 30.0):
    """Gaussian features with scales from 1 down to 1/condition (so a small
    constant rate is slow on some directions and a large one is noisy), a
    Gaussian true weight vector, label noise of standard deviation ``noise``."""
    kx, kw, ke = jax.random.split(jax.random.key(3), 3)
    scales = jnp.geomspace(1.0, 1.0 / condition, d)
    w = jax.random.normal(kw, (d,))
    x = jax.random.normal(kx, (n, d)) * scales
    y = x @ w + noise * jax.random.normal(ke, (n,))
    return (x, y), w, scales


def bench_pbt(c: Config) -> dict:
    data, w_true, scales = noisy_regression(c.pbt_n)

    def loss(w, batch):
        x, y = batch
        return 0.5 * jnp.mean((x @ w - y) ** 2)

    def excess(w, _):  # the population excess error, in closed form for Gaussian x
        return {"excess": 0.5 * jnp.sum((scales * (w - w_true)) ** 2)}

    lrs = np.geomspace(1e-3, 1.0, c.pbt_k).astype(np.float32)

    def run(search):
        return jc.sweep(loss, jnp.zeros(w_true.shape), jc.sgd, data,
                        grid={"learning_rate": lrs}, steps=c.pbt_steps, batch_size=16,
                        eval_fn=excess, eval_data=0.0, eval_every=c.pbt_every, search=search)

    _log(f"(b) constant learning rates, K={c.pbt_k}, {c.pbt_steps} steps")
    const_s, _, const = _timed(lambda: run(None))
    _log(f"(b) PBT every {c.pbt_every} steps")
    pbt_s, _, pbt = _timed(lambda: run(jc.pbt(c.pbt_every, bounds={"learning_rate": (1e-5, 1.0)})))
    best = {name: float(r.final_evals()["excess"][r.best_index])
            for name, r in (("constant", const), ("pbt", pbt))}
    return {"const": const, "pbt": pbt, "const_s": const_s, "pbt_s": pbt_s, "best": best,
            "const_best_lr": float(lrs[const.best_index])}


def bench_sampling(c: Config) -> dict:
    problem, train, val = digits_split(hidden=16)
    per_axis = round(c.sample_k ** (1 / 3))
    axes = {"learning_rate": jc.log_uniform(1e-4, 1.0), "b1": jc.uniform(0.0, 0.99),
            "b2": jc.uniform(0.9, 0.9999)}
    # the grid: per_axis evenly spaced quantiles of each axis (cell centres)
    centres = (np.arange(per_axis) + 0.5) / per_axis
    grid = jc.grid_product(**{n: np.asarray(a.from_unit(centres)) for n, a in axes.items()})

    def best(g):
        res = jc.sweep(problem.loss, problem.params, jc.adam, train, grid=g,
                       steps=c.sample_steps, batch_size=128, eval_fn=accuracy, eval_data=val,
                       rank_mode="max")
        return float(res.final_evals()["accuracy"][res.best_index])

    _log(f"(c) grid {per_axis}^3, random and Sobol samples of {per_axis ** 3}")
    out = {"grid": [best(grid)], "random": [], "sobol": []}
    for seed in range(c.sample_keys):
        for method in ("random", "sobol"):
            g = jc.sample(jax.random.key(100 + seed), per_axis ** 3, method=method, **axes)
            out[method].append(best(dict(g)))
    out["k"] = per_axis ** 3
    return out


def plot(a: dict, b: dict, path: Path) -> None:
    import matplotlib as mpl
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    stopped = a["halving"].stopped_at
    ends = np.unique(stopped)
    ax1.bar([str(e) for e in ends], [int(np.sum(stopped >= e)) for e in ends], color="tab:blue")
    ax1.set(title="(a) successive halving: survivors per rung", xlabel="rung ends at step",
            ylabel="members trained to that step")
    pbt = b["pbt"]
    lr = pbt.hparams_history["learning_rate"]
    rank = pbt.to_dataframe()["rank"].to_numpy()
    rounds = np.arange(lr.shape[1]) * (pbt.losses.shape[1] // lr.shape[1])
    colours = mpl.colormaps["viridis"]((rank - 1) / max(1, len(rank) - 1))
    for i in np.argsort(-rank):
        ax2.step(rounds, lr[i], where="post", color=colours[i], lw=1.5 if rank[i] == 1 else 0.8)
    ax2.set(yscale="log", title="(b) PBT learning rates (dark: better final rank)",
            xlabel="step", ylabel="learning rate")
    for name, res in (("constant", b["const"]), ("PBT", pbt)):
        ex = res.evals["excess"][res.best_index]
        ax3.plot(res.eval_steps, ex, label=f"{name} (best member)")
    ax3.set(yscale="log", title="(b) held-out excess error", xlabel="step")
    ax3.legend()
    fig.savefig(path, dpi=110)


def markdown(c: Config, mode: str, command: str, wall: float, a: dict, b: dict, s: dict,
             png: str) -> str:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    info = machine()
    full, halving = a["full"], a["halving"]
    lines = [
        "# Adaptive search (issue 12): successive halving, PBT, sampling", "",
        f"Generated {now} by `{command}` ({mode} run, {wall / 60:.1f} min) on "
        f"{info.get('CPU', '?')} ({info.get('cores', '?')} cores), "
        f"jax {info.get('jax / jaxlib', '?')}. Method: `benchmarks/README.md` (Search).", "",
        f"## (a) Successive halving against the full sweep (digits MLP, adam, K={c.halving_k})",
        "",
        "| | wall s, first call | of which compiling | wall s, new values (compiled) "
        "| member-steps | best held-out accuracy |",
        "|---|---|---|---|---|---|",
        *(f"| {label} | {a[n + '_s']:.1f} | {a[n + '_compile_s']:.1f} | {a[n + '_again_s']:.1f} "
          f"| {a[n].member_steps} | {a['acc'][n]:.4f} |"
          for n, label in (("full", "full sweep"), ("halving", "successive halving, eta=3"))),
        "",
        f"Compute: {halving.member_steps / full.member_steps:.1%} of the full sweep's "
        f"member-steps. Wall time, first call: {a['halving_s'] / a['full_s']:.2f}x the full "
        f"sweep's (halving compiles one segment and one finish program per survivor count); "
        f"once compiled: {a['halving_again_s'] / a['full_again_s']:.2f}x. The member halving "
        f"kept to the end ranks {a['full_rank_of_halving_best']} of {c.halving_k} in the full "
        "sweep.", "",
        f"## (b) PBT against constant learning rates (noisy regression, SGD batch 16, "
        f"K={c.pbt_k}, {c.pbt_steps} steps each: equal compute)", "",
        "| | best held-out excess error | wall s |", "|---|---|---|",
        f"| best constant rate (lr={b['const_best_lr']:.3g}) | {b['best']['constant']:.3g} | "
        f"{b['const_s']:.1f} |",
        f"| PBT every {c.pbt_every} steps | {b['best']['pbt']:.3g} | {b['pbt_s']:.1f} |", "",
        f"Ratio of the best constant rate's error to PBT's: "
        f"{b['best']['constant'] / b['best']['pbt']:.2f}. Features scaled from 1 to 1/30 and "
        "label noise 3: a small constant rate is slow on the small directions, a large one "
        "stays noisy; PBT's learning rates start high and fall as training goes (figure, "
        "middle).", "",
        f"## (c) Random and Sobol samples against a grid (adam on digits, K={s['k']}, "
        f"learning_rate x b1 x b2, {c.sample_steps} steps)", "",
        "| | best held-out accuracy: mean | min | max | runs |", "|---|---|---|---|---|",
    ]
    for name in ("grid", "random", "sobol"):
        v = np.asarray(s[name])
        lines.append(f"| {name} | {v.mean():.4f} | {v.min():.4f} | {v.max():.4f} | {len(v)} |")
    lines += ["", f"![search]({png})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (for CI)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "SEARCH_RESULTS.md",
                        help="report path; search.png goes next to it")
    args = parser.parse_args(argv)
    config = SMOKE if args.smoke else FULL
    command = "python benchmarks/search.py " + " ".join(argv if argv is not None
                                                         else sys.argv[1:])
    t0 = time.perf_counter()
    a, b, s = bench_halving(config), bench_pbt(config), bench_sampling(config)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    png = args.out.parent / "search.png"
    plot(a, b, png)
    text = markdown(config, "smoke" if args.smoke else "full", command.strip(),
                    time.perf_counter() - t0, a, b, s, png.name)
    args.out.write_text(text)
    _log(f"wrote {args.out} and {png}")
    return args.out


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    main()
