"""What a sweep returns: :class:`SweepResult`, one row per member in every field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxopt_core.training.plotting import sweep_figure
from jaxopt_core.training.sharding import gather_param_fields, to_host


class SweepResult(NamedTuple):
    """What :func:`sweep` returns; member ``i`` is row ``i`` of every field.

    Every field but the stacked params (``params``, ``best_params_per_member``)
    is host NumPy data, the same on every process: :func:`sweep` gathers it
    before returning, so the methods here run no collective and work on any
    subset of processes. On several hosts the stacked params are global
    arrays (each process holds its devices' members): read them with
    :meth:`gather_params`, called on every process.

    Attributes:
        hparams: ``{name: [K] array}``, the grid as passed in.
        losses: ``[K, steps]``; ``losses[i, t]`` is member ``i``'s loss at the
            params before step ``t``; NaN after the member diverged.
        params: the final params, a pytree with the structure of the params
            and a leading member axis K on every leaf.
        diverged: ``[K]`` bool, whether the member's loss or params became
            non-finite (it was then frozen at its last finite state).
        best_index: index of the lowest final loss among members that did not
            diverge; ``None`` when every member diverged.
        best_member_params: the params of member ``best_index`` as NumPy
            arrays (what :meth:`best_params` returns); None when there is no
            best member.
    """

    hparams: dict[str, np.ndarray]
    losses: jax.Array
    params: Any
    diverged: jax.Array
    best_index: int | None
    best_member_params: Any = None

    def __repr__(self) -> str:
        k, steps = self.losses.shape
        return (
            f"SweepResult(K={k}, steps={steps}, grid={list(self.hparams)}, "
            f"diverged={int(to_host(self.diverged).sum())}, best_index={self.best_index})"
        )

    def save(self, path: str | os.PathLike, config: dict | None = None) -> Path:
        """Write this result to one file at ``path`` (``.npz``; no pickle) with an
        optional JSON ``config``; read it back with :func:`jaxopt_core.load_result`.
        See :mod:`jaxopt_core.training.serialization` for the format."""
        # Imported here: serialization imports this module (it rebuilds these results).
        from jaxopt_core.training.serialization import save_result

        return save_result(self, path, config=config)

    def final_losses(self) -> np.ndarray:
        """``[K]`` losses at the last step (NaN for diverged members), on the host."""
        return to_host(self.losses[:, -1])

    def best_params(self) -> Any:
        """The params of member :attr:`best_index`, as NumPy arrays (on every
        process: no collective)."""
        if self.best_index is None:
            raise ValueError("every member of the sweep diverged: there are no best params")
        if self.best_member_params is not None:
            return self.best_member_params
        return jax.tree.map(lambda x: to_host(x)[self.best_index], self.params)

    def gather_params(self) -> SweepResult:
        """This result with the stacked ``params`` (and ``best_params_per_member``)
        as NumPy arrays. On several hosts these are global arrays, each process
        holding its devices' members, so this is a collective: call it on
        every process (it is the one method of a result that communicates)."""
        return gather_param_fields(self)

    def to_dataframe(self):
        """A pandas DataFrame, one row per member: the hyperparameters,
        ``final_loss`` and ``diverged`` (pandas is imported here)."""
        import pandas as pd

        frame = pd.DataFrame({k: np.asarray(v) for k, v in self.hparams.items()})
        frame["final_loss"] = self.final_losses()
        frame["diverged"] = to_host(self.diverged)
        frame.index.name = "member"
        return frame

    def plot(self):
        """A matplotlib Figure: loss curves coloured by learning rate (log
        colour scale) and final loss against learning rate (log x axis).

        Without ``learning_rate`` in the grid the first other hyperparameter
        takes its place (log scale when positive and spanning a factor of 10
        or more). Diverged members are drawn as crosses at the top of the
        right panel. Builds a ``Figure`` without pyplot, so it works with any
        backend (Agg included); in Jupyter it displays itself.
        """
        return sweep_figure(self)
