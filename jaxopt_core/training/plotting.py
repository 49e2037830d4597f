"""Figures of a sweep, built on :class:`matplotlib.figure.Figure` without pyplot
(so they render with any backend, Agg included); matplotlib is imported lazily."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxopt_core.training.sharding import to_host


def sweep_figure(result: Any):
    """Figure of a sweep: see :meth:`SweepResult.plot`."""
    from matplotlib import colors
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    names = [n for n in result.hparams if n != "seed"] or list(result.hparams)
    name = "learning_rate" if "learning_rate" in result.hparams else names[0]
    x = np.asarray(result.hparams[name], dtype=float)
    log = bool(np.all(x > 0) and (name == "learning_rate" or x.max() >= 10 * x.min()))
    lo, hi = x.min(), x.max() if x.max() > x.min() else x.min() + 1
    norm = colors.LogNorm(lo, max(hi, lo * 1.01)) if log else colors.Normalize(lo, hi)
    losses, final, bad = to_host(result.losses), result.final_losses(), to_host(result.diverged)

    fig = Figure(figsize=(11, 4), layout="constrained")
    curves, ends = fig.subplots(1, 2)
    steps = np.arange(losses.shape[1])
    segments = [np.column_stack([steps, row]) for row in losses]
    curves.add_collection(LineCollection(segments, array=x, cmap="viridis", norm=norm, lw=1))
    curves.autoscale()
    finite = losses[np.isfinite(losses)]
    if finite.size and finite.min() > 0:
        curves.set_yscale("log")
    curves.set(xlabel="step", ylabel="loss", title="loss curves")
    fig.colorbar(ScalarMappable(norm, "viridis"), ax=curves, label=name)

    ends.scatter(x[~bad], final[~bad], c=x[~bad], cmap="viridis", norm=norm, label="final loss")
    if bad.any():
        top = finite.max() if finite.size else 1.0
        ends.scatter(x[bad], np.full(bad.sum(), top), marker="x", c="red", label="diverged")
    if result.best_index is not None:
        ends.scatter(x[result.best_index], final[result.best_index], s=120,
                     facecolors="none", edgecolors="black", label="best")
    if log:
        ends.set_xscale("log")
    if final[~bad].size and np.nanmin(final[~bad]) > 0:
        ends.set_yscale("log")
    ends.set(xlabel=name, ylabel="final loss", title=f"final loss against {name}")
    ends.legend(loc="best")
    return fig
