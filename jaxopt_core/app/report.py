"""What the ``jaxopt-core`` command shows and writes: the ranked table of a
sweep's members (rich), its CSV and its figure (matplotlib), and a single
run's loss log, CSV and curve.

The figures are built with :class:`matplotlib.figure.Figure`, without pyplot,
so they render with the Agg backend on machines without a display. rich,
pandas and matplotlib are imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

METRIC_LABELS = {"accuracy": "val accuracy", "r2": "val R²"}


def _fmt(x: Any) -> str:
    x = float(x)
    return "—" if not np.isfinite(x) else f"{x:.4g}"


def rank_members(frame: Any, metric: str) -> Any:
    """Add a ``rank`` column to a sweep's frame: 1 for the best validation
    ``metric`` (higher is better; ties broken by lower ``val_loss``);
    diverged members, whose metrics are NaN, come last.

    Example:
        >>> import numpy as np, pandas as pd
        >>> from jaxopt_core.app.report import rank_members
        >>> f = pd.DataFrame({"val_accuracy": [0.5, np.nan, 0.9], "val_loss": [1.0, 2.0, 0.1]})
        >>> rank_members(f, "accuracy")["rank"].tolist()
        [2, 3, 1]
    """
    order = frame.sort_values([f"val_{metric}", "val_loss"], ascending=[False, True],
                              na_position="last").index
    frame["rank"] = 0
    frame.loc[order, "rank"] = np.arange(1, len(frame) + 1)
    return frame


def print_sweep_table(frame: Any, hparam_names: list[str], metric: str, *, title: str,
                      top: int, console: Any = None) -> None:
    """Print the members ranked by validation metric as a rich table (the
    ``top`` best, or all when ``top`` is 0).

    ``frame`` has one row per member, indexed by member: the hyperparameter
    columns, ``train_loss``, ``val_loss``, ``val_<metric>``, ``diverged`` and
    ``rank`` (see :func:`rank_members`).

    Example:
        >>> import pandas as pd
        >>> from jaxopt_core.app.report import print_sweep_table, rank_members
        >>> f = pd.DataFrame({"learning_rate": [0.1, 1.0], "train_loss": [0.2, 0.1],
        ...                   "val_loss": [0.3, 0.4], "val_r2": [0.8, 0.7],
        ...                   "diverged": [False, False]})
        >>> print_sweep_table(rank_members(f, "r2"), ["learning_rate"], "r2",
        ...                   title="demo", top=1)  # doctest: +ELLIPSIS
        demo...
    """
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    ranked = frame.sort_values("rank")
    shown = ranked if top <= 0 else ranked.head(top)
    table = Table(title=title, title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("member", justify="right")
    for name in hparam_names:
        table.add_column(name.replace("_", " "), justify="right")
    for col in ("train loss", "val loss", METRIC_LABELS[metric]):
        table.add_column(col, justify="right")
    table.add_column("status")
    for member, row in shown.iterrows():
        table.add_row(
            str(row["rank"]), str(member), *(f"{row[n]:.3g}" for n in hparam_names),
            _fmt(row["train_loss"]), _fmt(row["val_loss"]), _fmt(row[f"val_{metric}"]),
            "[red]diverged[/red]" if row["diverged"] else "ok",
            style="bold" if row["rank"] == 1 else None,
        )
    console.print(table)
    if len(shown) < len(frame):
        console.print(f"({len(frame) - len(shown)} more members in the CSV)")


def plot_sweep(losses: np.ndarray, frame: Any, hparam_names: list[str], metric: str,
               path: Path, *, title: str) -> None:
    """Write the sweep's figure to ``path``: loss curves coloured by learning
    rate; train and validation loss against learning rate; validation metric
    against learning rate. With ``--l1``/``--l2`` lists there is one line per
    strength. ``losses`` is the sweep's ``[K, steps]`` array; ``frame`` as in
    :func:`print_sweep_table`.

    Example:
        >>> import numpy as np, pandas as pd, tempfile, pathlib
        >>> from jaxopt_core.app.report import plot_sweep, rank_members
        >>> f = rank_members(pd.DataFrame({
        ...     "learning_rate": [0.1, 1.0], "train_loss": [0.2, 0.1], "val_loss": [0.3, 0.4],
        ...     "val_r2": [0.8, 0.7], "diverged": [False, False]}), "r2")
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "sweep.png"
        >>> plot_sweep(np.ones((2, 10)), f, ["learning_rate"], "r2", path, title="demo")
        >>> path.read_bytes()[:4]
        b'\x89PNG'
    """
    from matplotlib import colors
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    lr = frame["learning_rate"].to_numpy(float)
    bad = frame["diverged"].to_numpy(bool)
    norm = colors.LogNorm(lr.min(), max(lr.max(), lr.min() * 1.01))
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    fig.suptitle(title)
    curves, ends, scores = fig.subplots(1, 3)

    steps, smooth = _running_mean(losses)
    segments = [np.column_stack([steps, row]) for row in smooth]
    curves.add_collection(LineCollection(segments, array=lr, cmap="viridis", norm=norm,
                                         lw=1, alpha=0.8))
    curves.autoscale()
    _log_if_positive(curves, smooth)
    kept = smooth[~bad][np.isfinite(smooth[~bad])]
    if kept.size:  # diverging curves leave through the top instead of squashing the rest
        lo, hi = kept.min(), kept.max()
        log = curves.get_yscale() == "log"
        pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0  # flat curves get a band too
        curves.set_ylim(lo / 1.5 if log else lo - pad, hi * 1.5 if log else hi + pad)
    curves.set(xlabel="step", ylabel="training loss", title="loss curves (running mean)")
    fig.colorbar(ScalarMappable(norm, "viridis"), ax=curves, label="learning rate")

    others = [n for n in hparam_names if n != "learning_rate"]
    groups = frame.groupby(others, sort=True) if others else [((), frame)]
    for i, (key, g) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{n}={v:.3g}" for n, v in zip(others, key, strict=True))
        color = f"C{i % 10}"
        g = g.sort_values("learning_rate")
        ends.plot(g["learning_rate"], g["train_loss"], "-", color=color,
                  label=("train " + label).strip())
        ends.plot(g["learning_rate"], g["val_loss"], "--", color=color,
                  label=("val " + label).strip())
        scores.plot(g["learning_rate"], g[f"val_{metric}"], "o-", ms=3, color=color,
                    label=label or None)
    if bad.any():
        top = np.nanmax(frame[["train_loss", "val_loss"]].to_numpy()) if (~bad).any() else 1.0
        ends.scatter(lr[bad], np.full(bad.sum(), top), marker="x", color="red",
                     label="diverged", zorder=3)
    best = frame.index[frame["rank"] == 1][0]
    if not frame.loc[best, "diverged"]:
        scores.scatter(frame.loc[best, "learning_rate"], frame.loc[best, f"val_{metric}"],
                       marker="*", s=220, color="gold", edgecolor="black", zorder=3,
                       label="best")
    for ax in (ends, scores):
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.grid(alpha=0.3)
    if (~bad).any() and np.nanmin(frame.loc[~bad, ["train_loss", "val_loss"]].to_numpy()) > 0:
        ends.set_yscale("log")
    ends.set(ylabel="loss at the end", title="final train (—) and validation (--) loss")
    scores.set(ylabel=METRIC_LABELS[metric], title=f"{METRIC_LABELS[metric]} at the end")
    ends.legend(fontsize="small")
    if others or (~bad).any():
        scores.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def _running_mean(losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minibatch losses averaged over windows of ~2% of the run, so that 30
    curves stay readable; returns the window ends and the means."""
    losses = np.atleast_2d(losses)
    w = max(1, losses.shape[1] // 50)
    c = np.cumsum(np.pad(losses, ((0, 0), (1, 0))), axis=1)
    return np.arange(w - 1, losses.shape[1]), (c[:, w:] - c[:, :-w]) / w


def _log_if_positive(ax: Any, values: np.ndarray) -> None:
    # Cross-entropy can round to exactly 0 in float32; a log axis masks those
    # points instead of giving up on log scale for the whole panel.
    pos = values[np.isfinite(values) & (values > 0)]
    if pos.size and pos.max() > 10 * pos.min():
        ax.set_yscale("log")


def plot_fit(losses: np.ndarray, path: Path, *, title: str) -> None:
    """Write a single run's loss curve to ``path``, with its running mean
    (log scale when the losses span more than a factor of 10).

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> from jaxopt_core.app.report import plot_fit
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "fit.png"
        >>> plot_fit(np.geomspace(1.0, 1e-3, 100), path, title="demo")
        >>> path.stat().st_size > 0
        True
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(np.arange(len(losses)), losses, lw=0.8, alpha=0.5, label="minibatch loss")
    steps, smooth = _running_mean(losses)
    ax.plot(steps, smooth[0], lw=1.5, label="running mean")
    _log_if_positive(ax, losses)
    ax.set(xlabel="step", ylabel="training loss", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)


def print_fit_log(losses: np.ndarray, console: Any = None, *, lines: int = 10) -> None:
    """Print the loss at about ``lines`` evenly spaced steps, and the last.

    Example:
        >>> import numpy as np
        >>> from jaxopt_core.app.report import print_fit_log
        >>> print_fit_log(np.array([1.0, 0.5, 0.25]), lines=1)
        step      0  loss 1
        step      2  loss 0.25
    """
    from rich.console import Console

    console = console or Console()
    every = max(1, len(losses) // lines)
    for t in sorted({*range(0, len(losses), every), len(losses) - 1}):
        console.print(f"step {t:>6d}  loss {_fmt(losses[t])}")
