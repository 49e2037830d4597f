"""The panels of a sweep's figure (:meth:`SweepResult.plot`), each drawn into a
given matplotlib ``Axes``: loss curves, evaluation curves, the final metric
against a hyperparameter, and the final metric as a heatmap over two.

Every panel shows something: members that diverged are red ``x`` marks along
the top edge (at their hyperparameter value, or at the step they diverged),
and a panel with no finite value to draw says why in words. The choices
(which hyperparameter, which metric, log axes) come resolved from
:func:`jaxopt_core.training.plotting.plot_choices`; matplotlib is imported
inside the functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxopt_core.training.ranking import TRAINING_LOSS
from jaxopt_core.training.sharding import to_host

DIVERGED = dict(marker="x", color="red", linestyle="none", clip_on=False, zorder=4)


def running_mean(losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Losses averaged over windows of ~2% of the run (so that minibatch
    noise does not hide the trend of 30 curves); returns the window ends and
    the means, one row per curve.

    Example:
        >>> import numpy as np
        >>> from jaxopt_core.training.plot_panels import running_mean
        >>> steps, means = running_mean(np.arange(100.0))
        >>> steps[:2].tolist(), means[0, :2].tolist()
        ([1, 2], [0.5, 1.5])
    """
    losses = np.atleast_2d(losses)
    w = max(1, losses.shape[1] // 50)
    c = np.cumsum(np.pad(losses, ((0, 0), (1, 0))), axis=1)
    return np.arange(w - 1, losses.shape[1]), (c[:, w:] - c[:, :-w]) / w


def log_allowed(values: np.ndarray) -> bool:
    """Whether a log axis can show ``values``: the finite ones are ``>= 0``
    and some are positive (exact zeros, e.g. a cross-entropy rounded to 0 in
    float32, are left out by the axis; negative values forbid it)."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    return bool(finite.size and finite.min() >= 0 and finite.max() > 0)


def wants_log(values: np.ndarray, log_y: bool | None = None, what: str = "the values") -> bool:
    """Resolve ``log_y`` for ``values``: None (auto) is log when it is
    allowed (see :func:`log_allowed`) and the positive values span more than a
    factor of 10; True needs :func:`log_allowed` (else a ``ValueError``
    naming ``what``); False is linear. Without finite values: linear.

    Example:
        >>> from jaxopt_core.training.plot_panels import wants_log
        >>> wants_log([1.0, 0.5, 0.01]), wants_log([0.9, 0.95]), wants_log([-1.0, 5.0])
        (True, False, False)
    """
    if log_y not in (None, True, False):
        raise ValueError(f"log_y must be None (auto), True or False; got log_y={log_y!r}")
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return False
    if log_y is True and not log_allowed(finite):
        raise ValueError(f"log_y=True needs positive values, but {what} has values down to "
                         f"{finite.min():.4g}; use log_y=None (auto) or False")
    if log_y is not None:
        return log_y
    pos = finite[finite > 0]
    return log_allowed(finite) and bool(pos.max() > 10 * pos.min())


def log_scale_if_positive(ax: Any, values: np.ndarray) -> None:
    """Give ``ax`` a log y axis when :func:`wants_log` says so (auto)."""
    if wants_log(values):
        ax.set_yscale("log")


def metric_label(metric: str) -> str:
    """The axis label of a metric (``"loss"`` is the training loss of the tail)."""
    return "training loss (mean of the last tenth)" if metric == TRAINING_LOSS else metric


def draw_loss_curves(fig: Any, ax: Any, result: Any, choices: Any, log: bool) -> None:
    """Running-mean training loss curves coloured by ``choices.x`` (colour
    bar); diverging curves leave through the top instead of squashing the
    others, and end at a red ``x``."""
    losses = to_host(result.losses)
    steps, smooth = running_mean(losses)
    window = max(1, losses.shape[1] // 50)
    what = f" (running mean of {window})" if window > 1 else ""
    thinned = getattr(result, "loss_steps", None)
    if thinned is not None:  # log_every: entry j averages the window from step thinned[j]
        steps = np.asarray(thinned)[steps]
        what = f" (means of {int(thinned[1] - thinned[0]) if len(thinned) > 1 else 1} steps" \
               f"{f', running mean of {window}' if window > 1 else ''})"
    ax.set(xlabel="step", ylabel="training loss", title=f"loss curves{what}")
    _curves(fig, ax, steps, smooth, result, choices, log, "training loss")


def draw_metric_curves(fig: Any, ax: Any, result: Any, choices: Any) -> None:
    """The evaluations of ``choices.metric`` along the run, one curve per
    member coloured by ``choices.x`` (log y when ``choices.log_y`` and the
    values allow it)."""
    values = to_host(result.evals[choices.metric])
    log = choices.log_y and log_allowed(values)
    ax.set(xlabel="step", ylabel=choices.metric, title=f"{choices.metric} during training")
    _curves(fig, ax, np.asarray(result.eval_steps), values, result, choices, log,
            choices.metric)


def _curves(fig: Any, ax: Any, steps: np.ndarray, values: np.ndarray, result: Any,
            choices: Any, log: bool, what: str) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection

    norm = _norm(choices.x_values, choices.x_log)
    segments = [np.column_stack([steps, row]) for row in values]
    ax.add_collection(LineCollection(segments, array=choices.x_values, cmap="viridis",
                                     norm=norm, lw=1, alpha=0.8))
    fig.colorbar(ScalarMappable(norm, "viridis"), ax=ax, label=choices.x)
    ax.grid(alpha=0.3)
    if not np.isfinite(values).any():
        ax.set_xlim(steps.min(initial=0), max(steps.max(initial=1), 1))
        _say(ax, f"no finite {what}")
        return
    ax.autoscale()
    if log:
        ax.set_yscale("log")
    _limit_y(ax, values, choices.diverged, log)
    bad = choices.diverged
    if bad.any():
        at = np.clip(to_host(result.diverged_at)[bad], steps.min(), steps.max())
        ax.plot(at, np.full(at.size, 0.97), transform=ax.get_xaxis_transform(),
                label=f"diverged ({int(bad.sum())})", **DIVERGED)
        ax.legend(fontsize="small", loc="upper right")


def draw_lines_against(fig: Any, ax: Any, hparams: dict, choices: Any) -> None:
    """The final metric against ``choices.x``: one line per combination of
    the other hyperparameters, coloured by ``choices.hue`` when given; the
    best member as a star, diverged members as red ``x`` on the top edge."""
    x, y, bad = choices.x_values, choices.final, choices.diverged
    shown = ~bad & np.isfinite(y)
    for idx, colour, label in _styled_groups(fig, ax, hparams, choices):
        idx = idx[shown[idx]]
        idx = idx[np.argsort(x[idx], kind="stable")]
        ax.plot(x[idx], y[idx], "o-", ms=3, lw=1, color=colour, label=label)
    best = choices.best_index
    if best is not None and shown[best]:
        ax.plot([x[best]], [y[best]], marker="*", ms=15, color="gold", mec="black",
                linestyle="none", zorder=3, label="best")
    if bad.any():
        ax.plot(x[bad], np.full(int(bad.sum()), 0.97), transform=ax.get_xaxis_transform(),
                label=f"diverged ({int(bad.sum())})", **DIVERGED)
    if choices.x_log:
        ax.set_xscale("log")
    if not shown.any():
        _say(ax, "every member diverged" if bad.all() else f"no finite {choices.metric}")
    elif choices.log_y:
        ax.set_yscale("log")
    ax.set(xlabel=choices.x, ylabel=metric_label(choices.metric),
           title=f"{choices.metric} after the last step")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def draw_heatmap(fig: Any, ax: Any, hparams: dict, choices: Any) -> None:
    """The final metric over a two-hyperparameter product grid: columns are
    the values of ``choices.heatmap[0]``, rows those of ``[1]`` (ascending);
    diverged cells are empty with a red ``x``, the best cell is outlined."""
    from matplotlib import colors
    from matplotlib.patches import Rectangle

    (xname, yname), final, bad = choices.heatmap, choices.final, choices.diverged
    xs, col = np.unique(np.asarray(hparams[xname], dtype=float), return_inverse=True)
    ys, row = np.unique(np.asarray(hparams[yname], dtype=float), return_inverse=True)
    row, col = row.ravel(), col.ravel()
    data = np.full((ys.size, xs.size), np.nan)
    data[row, col] = np.where(bad, np.nan, final)
    ax.set_xticks(range(xs.size), [f"{v:.3g}" for v in xs], rotation=45 if xs.size > 4 else 0)
    ax.set_yticks(range(ys.size), [f"{v:.3g}" for v in ys])
    ax.set(xlabel=xname, ylabel=yname, xlim=(-0.5, xs.size - 0.5), ylim=(-0.5, ys.size - 0.5),
           title=f"{metric_label(choices.metric)} after the last step")
    if bad.any():  # (an empty line would stretch the layout's bounding box)
        ax.plot(col[bad], row[bad], ms=9, label=f"diverged ({int(bad.sum())})", **DIVERGED)
    finite = data[np.isfinite(data)]
    if not finite.size:
        _say(ax, "every member diverged" if bad.all() else f"no finite {choices.metric}")
        return
    lo, hi = finite.min(), finite.max()
    norm = (colors.LogNorm(finite[finite > 0].min(), hi) if choices.log_y
            else colors.Normalize(lo, hi if hi > lo else lo + 1))
    image = ax.imshow(np.ma.masked_invalid(data), origin="lower", aspect="auto",
                      cmap="viridis", norm=norm)
    fig.colorbar(image, ax=ax, label=metric_label(choices.metric))
    if data.size <= 64:
        for (i, j), v in np.ndenumerate(data):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7,
                        color="white" if norm(v) < 0.5 else "black")
    if choices.best_index is not None:
        b = choices.best_index
        ax.add_patch(Rectangle((col[b] - 0.5, row[b] - 0.5), 1, 1, fill=False, lw=2.5,
                               edgecolor="black", label="best"))


def _styled_groups(fig: Any, ax: Any, hparams: dict, choices: Any) -> list:
    """``(member indices, colour, legend label)`` per combination of the
    hyperparameters other than ``x``; colours by ``hue`` (a colour bar when it
    takes more than 10 values) or, without ``hue``, one colour per combination."""
    from matplotlib.cm import ScalarMappable

    others = [n for n in hparams if n != choices.x]
    if not others:
        return [(np.arange(choices.x_values.size), "C0", None)]
    table = np.column_stack([np.asarray(hparams[n], dtype=float) for n in others])
    combos, which = np.unique(table, axis=0, return_inverse=True)
    groups = [np.flatnonzero(which.ravel() == g) for g in range(len(combos))]
    if choices.hue is None:
        labelled = len(groups) <= 10
        return [(idx, f"C{g % 10}", ", ".join(f"{n}={v:.3g}" for n, v in zip(
            others, combo, strict=True)) if labelled else None)
            for g, (idx, combo) in enumerate(zip(groups, combos, strict=True))]
    hue = np.asarray(hparams[choices.hue], dtype=float)
    levels = np.unique(hue)
    if levels.size > 10:
        norm = _norm(hue, bool(np.all(hue > 0) and hue.max() >= 10 * hue.min()))
        fig.colorbar(ScalarMappable(norm, "plasma"), ax=ax, label=choices.hue)
        cmap = ScalarMappable(norm, "plasma")
        return [(idx, cmap.to_rgba(hue[idx[0]]), None) for idx in groups]
    styled, seen = [], set()
    for idx in groups:
        level = int(np.searchsorted(levels, hue[idx[0]]))
        label = None if level in seen else f"{choices.hue}={levels[level]:.3g}"
        seen.add(level)
        styled.append((idx, f"C{level}", label))
    return styled


def _norm(values: np.ndarray, log: bool) -> Any:
    from matplotlib import colors

    lo, hi = float(values.min()), float(values.max())
    if log:
        return colors.LogNorm(lo, max(hi, lo * 1.01))
    return colors.Normalize(lo, hi if hi > lo else lo + 1)


def _limit_y(ax: Any, values: np.ndarray, bad: np.ndarray, log: bool) -> None:
    """y limits from the members that did not diverge (all, if every one did)."""
    kept = values[~bad] if (~bad).any() else values
    kept = kept[np.isfinite(kept) & ((kept > 0) if log else True)]
    if not kept.size:
        return
    lo, hi = kept.min(), kept.max()
    if log:
        ax.set_ylim(lo / 1.5, hi * 1.5)
    else:
        pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0  # flat curves get a band too
        ax.set_ylim(lo - pad, hi + pad)


def _say(ax: Any, text: str) -> None:
    """Write ``text`` across a panel that has no value to draw."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center",
            fontsize=12, color="firebrick")
    ax.set_yticks([])  # no values: no value axis
