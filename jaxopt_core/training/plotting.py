"""Figures of a sweep, built on :class:`matplotlib.figure.Figure` without pyplot
(so they render with any backend, Agg included); matplotlib is imported lazily.

:func:`sweep_figure` is :meth:`SweepResult.plot` (and the ``jaxopt-core``
command's ``sweep.png``). :func:`plot_choices` checks and resolves its
arguments (which hyperparameter on x, which colours the lines, which metric,
which axes are logarithmic); the panels themselves are drawn by
:mod:`jaxopt_core.training.plot_panels`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from jaxopt_core.training.plot_panels import (
    draw_heatmap,
    draw_lines_against,
    draw_loss_curves,
    draw_metric_curves,
    running_mean,
    wants_log,
)
from jaxopt_core.training.ranking import TRAINING_LOSS
from jaxopt_core.training.sharding import to_host


class PlotChoices(NamedTuple):
    """The resolved arguments of :meth:`SweepResult.plot`.

    Attributes:
        x: the hyperparameter on the x axis of the final-metric panel.
        x_values: ``[K]`` its values, as floats.
        x_log: whether that axis (and the colours of the curves) is logarithmic.
        hue: the hyperparameter that colours the lines, or None.
        metric: ``"loss"`` (the mean training loss of the last tenth of the
            steps) or a name in ``evals``.
        final: ``[K]`` the metric after the last step.
        log_y: whether the metric's axes are logarithmic.
        heatmap: ``(x, other)`` when the final metric is drawn as a heatmap.
        diverged: ``[K]`` bool.
        best_index: the best member by ``rank_by``, or None.
    """

    x: str
    x_values: np.ndarray
    x_log: bool
    hue: str | None
    metric: str
    final: np.ndarray
    log_y: bool
    heatmap: tuple[str, str] | None
    diverged: np.ndarray
    best_index: int | None


def plot_choices(result: Any, x: str | None = None, hue: str | None = None,
                 metric: str | None = None, log_y: bool | None = None) -> PlotChoices:
    """Check the arguments of :meth:`SweepResult.plot` against ``result`` and
    resolve the defaults; errors name the argument, its value and the choices.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> from jaxopt_core.training.plotting import plot_choices
        >>> res = jc.sweep(lambda w, d: jnp.sum((w - d) ** 2), jnp.zeros(2), jc.sgd, jnp.ones(2),
        ...                grid=jc.grid_product(learning_rate=[0.1, 0.2], momentum=[0.0, 0.5]),
        ...                steps=5)
        >>> c = plot_choices(res)
        >>> c.x, c.metric, c.heatmap, c.x_log
        ('learning_rate', 'loss', ('learning_rate', 'momentum'), True)
    """
    names = list(result.hparams)
    for arg, value in (("x", x), ("hue", hue)):
        if value is not None and value not in names:
            raise ValueError(f"{arg}={value!r} is not a hyperparameter of this sweep; "
                             f"choose from {names}")
    if hue is not None and hue == x:
        raise ValueError(f"hue={hue!r} is also x; colour by another hyperparameter or None")
    metrics = [*result.evals] + ([] if TRAINING_LOSS in result.evals else [TRAINING_LOSS])
    metric = result.rank_by if metric is None else metric
    if metric not in metrics:
        raise ValueError(f"metric={metric!r} is not a metric of this sweep; choose from {metrics}")
    heatmap = None
    if x is None and hue is None and len(names) == 2 and _is_product(result.hparams):
        x = _default_x(names)
        heatmap = (x, next(n for n in names if n != x))
    x = _default_x(names) if x is None else x
    values = np.asarray(result.hparams[x], dtype=float)
    final = (to_host(result.evals[metric][:, -1]) if metric in result.evals
             else result.tail_losses())
    return PlotChoices(
        x=x, x_values=values, x_log=_x_log(x, values), hue=hue, metric=metric,
        final=np.asarray(final, dtype=float),
        log_y=wants_log(final, log_y, f"metric {metric!r}"), heatmap=heatmap,
        diverged=np.asarray(to_host(result.diverged), dtype=bool),
        best_index=result.best_index,
    )


def sweep_figure(result: Any, x: str | None = None, hue: str | None = None,
                 metric: str | None = None, log_y: bool | None = None, ax: Any = None):
    """The figure of :meth:`SweepResult.plot` (see there)."""
    choices = plot_choices(result, x, hue, metric, log_y)
    if ax is not None:
        _final_panel(ax.figure, ax, result, choices)
        return ax.figure
    from matplotlib.figure import Figure

    curves = choices.metric in result.evals and len(result.eval_steps) > 1
    panels = 3 if curves else 2
    fig = Figure(figsize=(5.4 * panels, 4.4), layout="constrained")
    axes = fig.subplots(1, panels)
    own_log = log_y if choices.metric == TRAINING_LOSS else None  # as given, not resolved
    smooth = running_mean(to_host(result.losses))[1]
    draw_loss_curves(fig, axes[0], result, choices, wants_log(smooth, own_log, "the training loss"))
    if curves:
        draw_metric_curves(fig, axes[1], result, choices)
    _final_panel(fig, axes[-1], result, choices)
    return fig


def _final_panel(fig: Any, ax: Any, result: Any, choices: PlotChoices) -> None:
    if choices.heatmap is not None:
        draw_heatmap(fig, ax, result.hparams, choices)
    else:
        draw_lines_against(fig, ax, result.hparams, choices)


def _default_x(names: list[str]) -> str:
    """``learning_rate`` when swept, else the first hyperparameter other than ``seed``."""
    if "learning_rate" in names:
        return "learning_rate"
    return next((n for n in names if n != "seed"), names[0])


def _x_log(name: str, values: np.ndarray) -> bool:
    """Log x for positive learning rates, or positive values spanning 10x or more."""
    spans = values.max() >= 10 * values.min()
    return bool(np.all(values > 0) and (name == "learning_rate" or spans))


def _is_product(hparams: dict) -> bool:
    """Whether a two-hyperparameter grid holds every pair of its values exactly once."""
    a, b = (np.asarray(v, dtype=float) for v in hparams.values())
    pairs = np.unique(np.column_stack([a, b]), axis=0)
    return len(pairs) == len(a) == len(np.unique(a)) * len(np.unique(b))
