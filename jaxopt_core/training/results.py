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
        member_steps: the steps trained, summed over the members: ``K *
            steps`` for a full sweep (frozen diverged members count: they
            still compute), less with ``search=jc.successive_halving(...)``.
            Compare it with :attr:`full_steps`. None in results from before it
            was recorded.
        stopped_at: with successive halving, ``[K]`` ints: the steps each
            member trained before it was stopped (``steps`` for the last
            ones); otherwise None.
        hparams_history: with PBT, ``{name: [K, n_rounds + 1]}``: each
            member's hyperparameters before the first round and after each
            round; otherwise None.
        parents: with PBT, ``[K, n_rounds]`` ints: the member each member
            copied at each round (itself when it did not); otherwise None.
        steps_trained: the steps trained: ``steps``, or fewer when ``data``
            is an iterable of batches that ended early and
            ``allow_short=True`` (``losses`` and ``eval_steps`` stop there
            too). None in results saved before it was recorded.
        loss_steps: with ``log_every``, ``[n_entries]`` ints: the first step
            of the window each column of ``losses`` averages (the x axis of
            the loss curves); None when ``losses`` has one column per step.
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
    member_steps: int | None = None
    stopped_at: np.ndarray | None = None
    hparams_history: dict[str, np.ndarray] | None = None
    parents: np.ndarray | None = None
    steps_trained: int | None = None
    loss_steps: np.ndarray | None = None

    def _steps(self) -> int:
        """Steps per member (``losses`` may hold fewer, thinned, columns)."""
        if self.loss_steps is not None and self.steps_trained is not None:
            return int(self.steps_trained)
        return int(np.shape(self.losses)[1])

    def __repr__(self) -> str:
        k, steps = self.losses.shape[0], self._steps()
        evals = f", evals={list(self.evals)}" if self.evals else ""
        ranked = "" if self.rank_by == TRAINING_LOSS else f", rank_by={self.rank_by!r}"
        budget = ("" if self.member_steps in (None, k * steps)
                  else f", member_steps={self.member_steps} of {k * steps}")
        return (
            f"SweepResult(K={k}, steps={steps}, grid={list(self.hparams)}{evals}, "
            f"diverged={int(to_host(self.diverged).sum())}, best_index={self.best_index}"
            f"{ranked}{budget})"
        )

    @property
    def full_steps(self) -> int:
        """``K * steps``: what the full sweep of the grid trains (to compare
        with :attr:`member_steps`)."""
        return int(np.shape(self.losses)[0] * self._steps())

    def final_losses(self) -> np.ndarray:
        """``[K]`` losses at the last step (NaN for diverged members), on the
        host; with ``log_every``, the mean over the last window."""
        return to_host(self.losses[:, -1])

    def final_evals(self) -> dict[str, np.ndarray]:
        """``{name: [K]}``: each metric after the last step, on the host."""
        return {n: to_host(v[:, -1]) for n, v in self.evals.items()}

    def tail_losses(self) -> np.ndarray:
        """``[K]``: each member's mean training loss over the last tenth of
        the steps, on the host (NaN when it diverged before them); with
        thinned ``losses`` the mean of the last tenth of the entries (exact
        when ``steps`` is a multiple of ``10 * log_every``)."""
        return to_host(tail_loss(self.losses))

    def rank_values(self) -> np.ndarray:
        """``[K]``: the values the members are ranked by (see ``rank_by``)."""
        if self.rank_by in self.evals:
            return to_host(self.evals[self.rank_by][:, -1])
        return self.tail_losses()

    def member_order(self) -> np.ndarray:
        """Member indices, best first: by ``rank_by`` in ``rank_mode``, ties
        broken by the lower training loss; diverged members last. With
        successive halving, members stopped later come first."""
        return self._ranking()[0]

    def _ranking(self) -> tuple[np.ndarray, np.ndarray]:
        """``(member_order(), rank_values())``, computed together (the
        training losses' tail mean, which both may need, is taken once)."""
        usable = ~to_host(self.diverged)
        tails = self.tail_losses()
        values = tails if self.rank_by not in self.evals else self.rank_values()
        order = rank_order(values, self.rank_mode, usable, tails)
        if self.stopped_at is not None:  # successive halving: later rungs first
            order = order[np.argsort(-np.asarray(self.stopped_at)[order], kind="stable")]
        return order, values

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
        ranking by the training loss), ``best_step`` with ``keep_best``,
        ``stopped_at`` with successive halving, ``<name>_final`` (each
        hyperparameter after the last round) with PBT, and ``rank`` (1 is
        :attr:`best_index`). pandas is imported here."""
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
        if self.stopped_at is not None:
            frame["stopped_at"] = np.asarray(self.stopped_at)
        for name, history in (self.hparams_history or {}).items():
            frame[f"{name}_final"] = np.asarray(history)[:, -1]
        frame["rank"] = ranks(self.member_order())
        frame.index.name = "member"
        return frame

    def plot(self, x: str | None = None, hue: str | None = None, metric: str | None = None,
             log_y: bool | None = None, ax: Any = None):
        """A matplotlib ``Figure`` of the sweep (built without pyplot, so it
        renders with any backend, Agg included; in Jupyter it displays itself).

        Panels, left to right: the training loss curves (running mean),
        coloured by ``x``; with ``metric`` an evaluation taken more than once,
        its curves along the run (validation curves); then ``metric`` after
        the last step against ``x``: one line per combination of the other
        hyperparameters, coloured by ``hue``, the best member as a star. With
        ``x`` and ``hue`` not given and a grid of exactly two hyperparameters
        holding every pair of values once (``jc.grid_product``), the last
        panel is a heatmap of the final metric instead (columns: the default
        ``x``; the best cell outlined).

        Diverged members are red ``x`` marks along the top edge (at their
        hyperparameter value, or at the step they diverged); a panel with
        nothing finite to draw says so in words ("every member diverged"),
        it is never left blank.

        Args:
            x: the hyperparameter on the x axis (default ``learning_rate``
                when swept, else the first other than ``seed``). Log scale for
                a positive ``learning_rate``, or positive values spanning a
                factor of 10.
            hue: a hyperparameter that colours the lines (a legend for up to
                10 values, else a colour bar); default: one colour per
                combination of the hyperparameters other than ``x``.
            metric: ``"loss"`` (the mean training loss of the last tenth of
                the steps) or a name in ``evals``; default :attr:`rank_by`.
            log_y: a log axis for ``metric`` (and the loss curves when
                ``metric`` is ``"loss"``): None decides from the values (log
                when they are non-negative and span more than a factor of
                10); True needs non-negative values (else a ``ValueError``).
            ax: a matplotlib ``Axes`` to draw the final-metric panel alone
                into (line plot or heatmap, as above).

        Returns:
            The ``Figure``: a new one, or ``ax.figure`` when ``ax`` is given
            (so ``res.plot(ax=ax).savefig(...)`` works either way).

        Raises:
            ValueError: ``x``/``hue`` not a hyperparameter of the sweep (or
                equal), ``metric`` not one of the sweep's, ``log_y`` True
                with negative values; the message lists the choices.

        Example:
            >>> import jax.numpy as jnp, jaxopt_core as jc
            >>> grid = jc.grid_product(learning_rate=[0.01, 0.1, 1.0], momentum=[0.0, 0.9])
            >>> res = jc.sweep(lambda w, d: jnp.sum((w - d) ** 2), jnp.zeros(2), jc.sgd,
            ...                jnp.ones(2), grid=grid, steps=20)
            >>> fig = res.plot()  # loss curves and a heatmap learning_rate x momentum
            >>> fig.axes[1].images[0].get_array().shape  # fig.axes: the panels, then colour bars
            (2, 3)
            >>> fig = res.plot(x="momentum", hue="learning_rate", log_y=False)
            >>> fig.axes[1].get_xlabel(), len(fig.axes[1].get_legend().get_texts())
            ('momentum', 4)
        """
        return sweep_figure(self, x=x, hue=hue, metric=metric, log_y=log_y, ax=ax)
