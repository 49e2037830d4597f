"""What the ``jaxopt-core`` command shows and writes: the ranked table of a
sweep's members (rich), a single run's loss log and curve, and the run folder.

A run folder holds ``config.json`` (every option, the seed, the devices, the
versions), the saved result (``sweep.npz`` or ``fit.npz``, see
:meth:`SweepResult.save`; it carries the same config), the CSV and the PNG.
:func:`write_run` writes it (for finished and for partial results),
:func:`read_run` reads it back and :func:`show_run` prints what the command
printed, so ``jaxopt-core show DIR`` repeats a run's report without running it.

A sweep's ranking, CSV columns and figure come from the library itself
(:meth:`SweepResult.to_dataframe`, :meth:`SweepResult.plot`). The figures are
built with :class:`matplotlib.figure.Figure`, without pyplot, so they render
with the Agg backend on machines without a display. rich, pandas and
matplotlib are imported inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from jaxopt_core.training.plot_panels import log_scale_if_positive, running_mean

METRIC_LABELS = {"accuracy": "val accuracy", "r2": "val R²"}
CONFIG_FILE = "config.json"
COMMANDS = ("sweep", "fit")  # a run folder's files are named after its command


def _fmt(x: Any) -> str:
    x = float(x)
    return "—" if not np.isfinite(x) else f"{x:.4g}"


def rank_members(frame: Any, metric: str) -> Any:
    """Set the ``rank`` column of a sweep's frame: 1 for the best validation
    ``metric`` (higher is better), ties broken by the lower ``val_loss``;
    diverged members, whose metrics are NaN, come last; with successive
    halving (a ``stopped_at`` column) members stopped later come first. (The
    sweep itself ranks by one metric, ties broken by training loss; accuracy
    on a small validation split ties often, and validation loss is the better
    judge.)

    Example:
        >>> import numpy as np, pandas as pd
        >>> from jaxopt_core.app.report import rank_members
        >>> f = pd.DataFrame({"val_accuracy": [0.9, np.nan, 0.9], "val_loss": [1.0, 2.0, 0.1]})
        >>> rank_members(f, "accuracy")["rank"].tolist()
        [2, 3, 1]
    """
    keys, ascending = [f"val_{metric}", "val_loss"], [False, True]
    if "stopped_at" in frame:  # successive halving: members that went further first
        keys, ascending = ["stopped_at", *keys], [False, *ascending]
    order = frame.sort_values(keys, ascending=ascending, na_position="last", kind="stable").index
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
    stopped = frame["stopped_at"] if "stopped_at" in frame else None  # successive halving
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
            "[red]diverged[/red]" if row["diverged"] else
            f"stopped at {int(row['stopped_at'])}" if stopped is not None
            and row["stopped_at"] < stopped.max() else "ok",
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


def every_member_diverged(result: Any) -> bool:
    """Whether every member of a sweep (or the one run of a fit) diverged."""
    return bool(np.all(np.asarray(result.diverged)))


def sweep_frame(result: Any, metric: str) -> Any:
    """A sweep's members as a frame (:meth:`SweepResult.to_dataframe`),
    ranked by :func:`rank_members` on ``val_<metric>``."""
    return rank_members(result.to_dataframe(), metric)


def write_run(folder: Path, result: Any, config: dict, *,
              columns: dict[str, Any] | None = None) -> list[Path]:
    """Write a run's record into ``folder``: ``config.json``, the result
    (``<command>.npz``, with ``config`` inside), ``<command>.csv`` and
    ``<command>.png``, where ``config["command"]`` is ``sweep`` or ``fit``.
    ``columns`` adds columns to a sweep's CSV (one value per member, e.g.
    ``steps_trained`` for a partial run). Returns the paths, CSV first.

    ``config`` is JSON data with at least ``command``, ``title`` (the figure's
    heading) and ``metric`` (``accuracy`` or ``r2``).
    """
    folder = Path(folder)
    command = config["command"]
    csv, png, saved = (folder / f"{command}.{ext}" for ext in ("csv", "png", "npz"))
    conf = folder / CONFIG_FILE
    conf.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    result.save(saved, config=config)
    if command == "sweep":
        frame = sweep_frame(result, config["metric"])
        for name, values in (columns or {}).items():
            frame[name] = values
        frame.to_csv(csv, float_format="%.6g")
    else:
        losses = np.asarray(result.losses, dtype=float)
        np.savetxt(csv, np.column_stack([np.arange(len(losses)), losses]), delimiter=",",
                   header="step,loss", comments="", fmt=["%d", "%.8g"])
    draw_run(result, config, png)
    return [csv, png, saved, conf]


def draw_run(result: Any, config: dict, path: Path) -> None:
    """Write a run's figure to ``path``: :meth:`SweepResult.plot` (the best
    member as :func:`rank_members` ranks it) or :func:`plot_fit`."""
    if config["command"] == "fit":
        plot_fit(np.asarray(result.losses, dtype=float), path, title=config["title"])
        return
    frame = sweep_frame(result, config["metric"])
    best = None if every_member_diverged(result) else int(frame.index[frame["rank"] == 1][0])
    fig = result._replace(best_index=best).plot()
    fig.suptitle(config["title"])
    fig.savefig(path, dpi=110)


def read_run(folder: Path) -> tuple[Any, dict]:
    """The result and config of a run folder written by :func:`write_run`
    (the config stored inside the checksummed result file).

    Raises:
        ValueError: ``folder`` is not a run folder, or its result file is
            damaged (:class:`~jaxopt_core.ResultFileError`); the message says which.
    """
    from jaxopt_core.training.serialization import load_metadata, load_result

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder")
    saved = [folder / f"{c}.npz" for c in COMMANDS if (folder / f"{c}.npz").exists()]
    if not saved:
        raise ValueError(f"{str(folder)!r} has no saved result (sweep.npz or fit.npz): "
                         "is it a folder written by jaxopt-core sweep or fit?")
    config = load_metadata(saved[0]).config
    if not isinstance(config, dict) or not {"command", "title", "metric"} <= set(config):
        raise ValueError(f"{str(saved[0])!r} was not written by the jaxopt-core command "
                         "(no command configuration inside)")
    return load_result(saved[0]), config


def show_run(result: Any, config: dict, console: Any = None, *, top: int | None = None,
             seconds: float | None = None) -> int:
    """Print a run's report (the ranked table, or the loss log) and return the
    exit status: 3 when every member diverged (saying so), else 0."""
    from rich.console import Console

    console = console or Console(soft_wrap=True)
    if config["command"] == "fit":
        return _show_fit(result, config, console, seconds)
    metric = config["metric"]
    frame = sweep_frame(result, metric)
    top = config.get("options", {}).get("top", 10) if top is None else top
    # With PBT a member's values change: show the ones it ended with too.
    names = [*result.hparams, *(f"{n}_final" for n in result.hparams_history or {})]
    print_sweep_table(frame, names, metric, top=top, console=console,
                      title=f"members ranked by {METRIC_LABELS[metric]}")
    diverged = every_member_diverged(result)
    if diverged:
        console.print("[red]every member diverged[/red]: no member to rank; "
                      "try smaller learning rates")
    else:
        row = frame.loc[frame.index[frame["rank"] == 1][0]]
        setting = ", ".join(f"{n}={row[n]:.4g}" for n in names)
        console.print(f"best: {setting} -> {METRIC_LABELS[metric]} "
                      f"{row[f'val_{metric}']:.4f} (member {row.name})")
    timing = "" if seconds is None else f", {seconds:.1f} s (compile + train + evaluate)"
    console.print(f"{len(frame)} members, {int(frame['diverged'].sum())} diverged{timing}")
    return 3 if diverged else 0


def _show_fit(result: Any, config: dict, console: Any, seconds: float | None) -> int:
    import jax

    from jaxopt_core.core.masks import weights_only_mask

    print_fit_log(np.asarray(result.losses, dtype=float), console)
    metric = config["metric"]
    if every_member_diverged(result):
        console.print(f"[red]diverged[/red] at step {int(result.diverged_at)}: "
                      "try a smaller --lr")
    final = {n: float(v[-1]) for n, v in result.evals.items()}
    timing = "" if seconds is None else f" ({seconds:.1f} s)"
    console.print(f"final: train loss {final['train_loss']:.4g}, val loss "
                  f"{final['val_loss']:.4g}, {METRIC_LABELS[metric]} "
                  f"{final[f'val_{metric}']:.4f}{timing}")
    if config.get("options", {}).get("l1", [0])[0]:  # what an L1 penalty is for
        weights = [np.asarray(w) for w, m in zip(
            jax.tree.leaves(result.params), jax.tree.leaves(weights_only_mask(result.params)),
            strict=True) if m]
        zeros = sum(int(np.sum(w == 0)) for w in weights)
        console.print(f"weights exactly 0: {zeros} of {sum(w.size for w in weights)}")
    return 3 if every_member_diverged(result) else 0
