"""What the ``jaxopt-core`` command shows and writes: the ranked table of a
sweep's members (rich) and a single run's loss log and curve.

A sweep's ranking, CSV columns and figure come from the library itself
(:meth:`SweepResult.to_dataframe`, :meth:`SweepResult.plot`). The figures are
built with :class:`matplotlib.figure.Figure`, without pyplot, so they render
with the Agg backend on machines without a display. rich and matplotlib are
imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxopt_core.training.plot_panels import log_scale_if_positive, running_mean

METRIC_LABELS = {"accuracy": "val accuracy", "r2": "val R²"}


def _fmt(x: Any) -> str:
    x = float(x)
    return "—" if not np.isfinite(x) else f"{x:.4g}"


def rank_members(frame: Any, metric: str) -> Any:
    """Set the ``rank`` column of a sweep's frame: 1 for the best validation
    ``metric`` (higher is better), ties broken by the lower ``val_loss``;
    diverged members, whose metrics are NaN, come last. (The sweep itself
    ranks by one metric, ties broken by training loss; accuracy on a small
    validation split ties often, and validation loss is the better judge.)

    Example:
        >>> import numpy as np, pandas as pd
        >>> from jaxopt_core.app.report import rank_members
        >>> f = pd.DataFrame({"val_accuracy": [0.9, np.nan, 0.9], "val_loss": [1.0, 2.0, 0.1]})
        >>> rank_members(f, "accuracy")["rank"].tolist()
        [2, 3, 1]
    """
    order = frame.sort_values([f"val_{metric}", "val_loss"], ascending=[False, True],
                              na_position="last", kind="stable").index
    frame["rank"] = 0
    frame.loc[order, "rank"] = np.arange(1, len(frame) + 1)
    return frame


def print_sweep_table(frame: Any, hparam_names: list[str], metric: str, *, title: str,
                      top: int, console: Any = None) -> None:
    """Print the members ranked by validation metric as a rich table (the
    ``top`` best, or all when ``top`` is 0).

    ``frame`` has one row per member, indexed by member: the hyperparameter
    columns, ``train_loss``, ``val_loss``, ``val_<metric>``, ``diverged`` and
    ``rank`` (as :meth:`SweepResult.to_dataframe` gives them when the sweep's
    ``eval_fn`` returns those metrics; see :func:`rank_members`).

    Example:
        >>> import pandas as pd
        >>> from jaxopt_core.app.report import print_sweep_table
        >>> f = pd.DataFrame({"learning_rate": [0.1, 1.0], "train_loss": [0.2, 0.1],
        ...                   "val_loss": [0.3, 0.4], "val_r2": [0.8, 0.7],
        ...                   "diverged": [False, False], "rank": [1, 2]})
        >>> print_sweep_table(f, ["learning_rate"], "r2", title="demo", top=1)
        ... # doctest: +ELLIPSIS
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
    steps, smooth = running_mean(losses)
    ax.plot(steps, smooth[0], lw=1.5, label="running mean")
    log_scale_if_positive(ax, losses)
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
