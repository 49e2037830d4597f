"""Figures of a sweep, built on :class:`matplotlib.figure.Figure` without pyplot
(so they render with any backend, Agg included); matplotlib is imported lazily.

:func:`sweep_figure` is :meth:`SweepResult.plot` (and the ``jaxopt-core``
command's ``sweep.png``): the loss curves, the training loss at the end
against the swept hyperparameter and, when the sweep was evaluated, the
ranking metric against it, with the best member and the diverged ones marked.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxopt_core.training.sharding import to_host


def running_mean(losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Losses averaged over windows of ~2% of the run (so that minibatch
    noise does not hide the trend of 30 curves); returns the window ends and
    the means, one row per curve.

    Example:
        >>> import numpy as np
        >>> from jaxopt_core.training.plotting import running_mean
        >>> steps, means = running_mean(np.arange(100.0))
        >>> steps[:2].tolist(), means[0, :2].tolist()
        ([1, 2], [0.5, 1.5])
    """
    losses = np.atleast_2d(losses)
    w = max(1, losses.shape[1] // 50)
    c = np.cumsum(np.pad(losses, ((0, 0), (1, 0))), axis=1)
    return np.arange(w - 1, losses.shape[1]), (c[:, w:] - c[:, :-w]) / w


def log_scale_if_positive(ax: Any, values: np.ndarray) -> None:
    """Give ``ax`` a log y axis when the finite positive ``values`` span more
    than a factor of 10."""
    # Cross-entropy can round to exactly 0 in float32; a log axis masks those
    # points instead of giving up on log scale for the whole panel.
    values = np.asarray(values, dtype=float)
    pos = values[np.isfinite(values) & (values > 0)]
    if pos.size and pos.max() > 10 * pos.min():
        ax.set_yscale("log")


def sweep_figure(result: Any, title: str | None = None):
    """Figure of a sweep: see :meth:`SweepResult.plot`."""
    from matplotlib.figure import Figure

    name, x, log, norm = _x_axis(result.hparams)
    bad = to_host(result.diverged)
    panels = 3 if result.evals else 2
    fig = Figure(figsize=(5.5 * panels, 4.4), layout="constrained")
    if title:
        fig.suptitle(title)
    axes = fig.subplots(1, panels)
    _curves(fig, axes[0], to_host(result.losses), x, norm, name, bad)
    groups = _groups(result.hparams, name)
    by_loss = result.rank_by not in result.evals
    shown = [("training loss, mean of the last tenth", "training loss at the end",
              result.tail_losses(), by_loss)]
    if result.evals:
        metric = result.rank_by if not by_loss else next(iter(result.evals))
        shown.append((metric, f"{metric} after the last step", result.final_evals()[metric],
                      not by_loss))
    for ax, (ylabel, heading, y, ranked) in zip(axes[1:], shown, strict=True):
        _against(ax, x, y, bad, groups)
        if ranked and result.best_index is not None:
            i = result.best_index
            ax.scatter(x[i], y[i], marker="*", s=220, color="gold", edgecolor="black",
                       zorder=3, label="best")
        if log:
            ax.set_xscale("log")
        ax.set(xlabel=name, ylabel=ylabel, title=heading)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    return fig


def _x_axis(hparams: dict) -> tuple:
    """The hyperparameter on the x axes (``learning_rate`` when swept, else
    the first other than ``seed``), its values, log scale, colour norm."""
    from matplotlib import colors

    names = [n for n in hparams if n != "seed"] or list(hparams)
    name = "learning_rate" if "learning_rate" in hparams else names[0]
    x = np.asarray(hparams[name], dtype=float)
    log = bool(np.all(x > 0) and (name == "learning_rate" or x.max() >= 10 * x.min()))
    lo, hi = x.min(), x.max() if x.max() > x.min() else x.min() + 1
    norm = colors.LogNorm(lo, max(hi, lo * 1.01)) if log else colors.Normalize(lo, hi)
    return name, x, log, norm


def _curves(fig: Any, ax: Any, losses: np.ndarray, x: np.ndarray, norm: Any, name: str,
            bad: np.ndarray) -> None:
    """Running-mean loss curves coloured by ``x``; diverging curves leave
    through the top instead of squashing the others."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection

    steps, smooth = running_mean(losses)
    segments = [np.column_stack([steps, row]) for row in smooth]
    ax.add_collection(LineCollection(segments, array=x, cmap="viridis", norm=norm, lw=1,
                                     alpha=0.8))
    ax.autoscale()
    log_scale_if_positive(ax, smooth)
    kept = smooth[~bad][np.isfinite(smooth[~bad])]
    if kept.size:
        lo, hi = kept.min(), kept.max()
        if ax.get_yscale() == "log":
            ax.set_ylim(lo / 1.5, hi * 1.5)
        else:
            pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0  # flat curves get a band too
            ax.set_ylim(lo - pad, hi + pad)
    window = max(1, losses.shape[1] // 50)
    what = f" (running mean of {window})" if window > 1 else ""
    ax.set(xlabel="step", ylabel="training loss", title=f"loss curves{what}")
    fig.colorbar(ScalarMappable(norm, "viridis"), ax=ax, label=name)


def _groups(hparams: dict, name: str) -> list[tuple[str, np.ndarray]]:
    """One ``(label, member indices)`` per combination of the hyperparameters
    other than ``name`` (a single unlabelled group when there are none)."""
    others = [n for n in hparams if n != name]
    if not others:
        return [("", np.arange(len(hparams[name])))]
    table = np.column_stack([np.asarray(hparams[n], dtype=float) for n in others])
    combos, which = np.unique(table, axis=0, return_inverse=True)
    return [(", ".join(f"{n}={v:.3g}" for n, v in zip(others, combo, strict=True)),
             np.flatnonzero(which.ravel() == g)) for g, combo in enumerate(combos)]


def _against(ax: Any, x: np.ndarray, y: np.ndarray, bad: np.ndarray, groups: list) -> None:
    """``y`` against ``x``, one line per group; diverged members as red
    crosses along the top."""
    y = np.asarray(y, dtype=float)
    labelled = 1 < len(groups) <= 10
    for g, (label, idx) in enumerate(groups):
        idx = idx[~bad[idx]]
        idx = idx[np.argsort(x[idx], kind="stable")]
        ax.plot(x[idx], y[idx], "o-", ms=3, lw=1, color=f"C{g % 10}",
                label=label if labelled else None)
    finite = y[~bad & np.isfinite(y)]
    if bad.any():
        top = finite.max() if finite.size else 1.0
        ax.scatter(x[bad], np.full(bad.sum(), top), marker="x", color="red", label="diverged",
                   zorder=3)
    log_scale_if_positive(ax, finite)
