"""What a sweep returns: :class:`SweepResult`, one row per member in every field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxopt_core.training.plotting import sweep_figure
from jaxopt_core.training.ranking import TRAINING_LOSS, rank_order, ranks, tail_loss
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
        diverged: ``[K]`` bool, whether the member's loss, params or optimizer
            state became non-finite (it was then frozen at its last finite state).
        best_index: the best member by ``rank_by`` among those that did not
            diverge (see :meth:`member_order`); ``None`` when every member
            diverged or has no finite value.
        diverged_at: ``[K]`` int, the step at which each member diverged, or -1.
        evals: ``{name: [K, n_evals]}``, the values of ``eval_fn`` (a scalar
            ``eval_fn`` is named ``"eval"``); NaN once a member diverged.
            ``{}`` without ``eval_fn``.
        eval_steps: ``[n_evals]`` ints, the step count after which each
            evaluation was taken (empty without ``eval_fn``).
        rank_by: the metric the members are ranked by: a name in ``evals``
            (its value after the last step), or ``"loss"`` (the mean training
            loss over the last tenth of the steps).
        rank_mode: ``"min"`` or ``"max"``, which way ``rank_by`` is better.
        best_params_per_member: with ``keep_best=True``, each member's params
            at its best evaluation of ``rank_by`` (stacked like ``params``);
            otherwise None.
        best_step: with ``keep_best=True``, ``[K]`` ints: the step count of
            that evaluation (-1 when no evaluation was finite: the params are
            then the initial ones); otherwise None.
        best_member_params: the params of member ``best_index`` as NumPy
            arrays (what :meth:`best_params` returns); None when there is no
            best member.
    """

    hparams: dict[str, np.ndarray]
    losses: jax.Array
    params: Any
    diverged: jax.Array
    best_index: int | None
    diverged_at: jax.Array
    evals: dict[str, jax.Array]
    eval_steps: np.ndarray
    rank_by: str
    rank_mode: str
    best_params_per_member: Any
    best_step: jax.Array | None
    best_member_params: Any = None

    def __repr__(self) -> str:
        k, steps = self.losses.shape
        evals = f", evals={list(self.evals)}" if self.evals else ""
        ranked = "" if self.rank_by == TRAINING_LOSS else f", rank_by={self.rank_by!r}"
        return (
            f"SweepResult(K={k}, steps={steps}, grid={list(self.hparams)}{evals}, "
            f"diverged={int(to_host(self.diverged).sum())}, best_index={self.best_index}"
            f"{ranked})"
        )

    def final_losses(self) -> np.ndarray:
        """``[K]`` losses at the last step (NaN for diverged members), on the host."""
        return to_host(self.losses[:, -1])

    def final_evals(self) -> dict[str, np.ndarray]:
        """``{name: [K]}``: each metric after the last step, on the host."""
        return {n: to_host(v[:, -1]) for n, v in self.evals.items()}

    def tail_losses(self) -> np.ndarray:
        """``[K]``: each member's mean training loss over the last tenth of
        the steps, on the host (NaN when it diverged before them)."""
        return to_host(tail_loss(self.losses))

    def rank_values(self) -> np.ndarray:
        """``[K]``: the values the members are ranked by (see ``rank_by``)."""
        if self.rank_by in self.evals:
            return to_host(self.evals[self.rank_by][:, -1])
        return self.tail_losses()

    def member_order(self) -> np.ndarray:
        """Member indices, best first: by ``rank_by`` in ``rank_mode``, ties
        broken by the lower training loss; diverged members last."""
        usable = ~to_host(self.diverged)
        return rank_order(self.rank_values(), self.rank_mode, usable, self.tail_losses())

    def save(self, path: str | os.PathLike, config: dict | None = None) -> Path:
        """Write this result to one file at ``path`` (``.npz``; no pickle) with an
        optional JSON ``config``; read it back with :func:`jaxopt_core.load_result`.
        See :mod:`jaxopt_core.training.serialization` for the format."""
        # Imported here: serialization imports this module (it rebuilds these results).
        from jaxopt_core.training.serialization import save_result

        return save_result(self, path, config=config)

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
        ``final_loss``, ``diverged``, ``diverged_at``, every metric of
        ``eval_fn`` after the last step, the ranking column (``loss`` when
        ranking by the training loss), ``best_step`` with ``keep_best``, and
        ``rank`` (1 is :attr:`best_index`). pandas is imported here."""
        import pandas as pd

        frame = pd.DataFrame({k: np.asarray(v) for k, v in self.hparams.items()})
        frame["final_loss"] = self.final_losses()
        frame["diverged"] = to_host(self.diverged)
        frame["diverged_at"] = to_host(self.diverged_at)
        for name, values in self.final_evals().items():
            frame[name] = values
        if self.rank_by not in self.evals:
            frame[self.rank_by] = self.rank_values()
        if self.best_step is not None:
            frame["best_step"] = to_host(self.best_step)
        frame["rank"] = ranks(self.member_order())
        frame.index.name = "member"
        return frame

    def plot(self, title: str | None = None):
        """A matplotlib Figure: loss curves coloured by learning rate (log
        colour scale); the training loss at the end against learning rate
        (log x axis); with ``evals``, a third panel with the ``rank_by``
        metric (or the first metric) against learning rate.

        Without ``learning_rate`` in the grid the first other hyperparameter
        takes its place (log scale when positive and spanning a factor of 10
        or more); the other hyperparameters give one line each. Diverged
        members are drawn as red crosses, the best member as a star. Builds a
        ``Figure`` without pyplot, so it works with any backend (Agg
        included); in Jupyter it displays itself.
        """
        return sweep_figure(self, title=title)
