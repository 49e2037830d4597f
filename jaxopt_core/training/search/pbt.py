r"""Population-based training: :func:`pbt` and the plan a sweep builds from it.

``sweep(..., search=jc.pbt(every))`` revises the members' hyperparameters
while they train, inside the one compiled ``lax.scan`` of the sweep (no host
round trip, one compile; the in-scan part is
:mod:`~jaxopt_core.training.search.pbt_program`). After every ``every``-th
step :math:`t = e, 2e, \ldots < T` (not after the last one):

1. **Rank.** The K members are ranked by ``rank_by``: a metric of
   ``eval_fn`` evaluated at that step (``eval_every`` defaults to ``every``
   and must divide it), or ``"loss"``, the mean training loss over the last
   tenth of the interval, :math:`\frac1m\sum_{s=t-m}^{t-1}\ell_s` with
   :math:`m = \max(1, \lfloor e/10 \rfloor)`. Diverged members and members
   whose value is not finite rank last; ties go to the lower member index.
2. **Exploit.** With :math:`n = \max(1, \lfloor \texttt{fraction}\cdot K
   \rfloor)`, each of the bottom :math:`n` members picks one of the top
   :math:`n` uniformly at random and copies its params, optimizer state and
   divergence status (bit for bit). A diverged member is always in the
   bottom (while fewer than :math:`K - n` members diverged), so it is revived
   from a live one: it is alive again, its ``diverged_at`` reset to -1; its
   earlier losses and evaluations stay NaN in the record.
3. **Explore.** Each continuous hyperparameter of a copying member becomes
   its source's value times a factor drawn uniformly from ``perturb``, or,
   with probability ``resample_prob``, a fresh draw from the axis it was
   sampled from (the grid must then come from :func:`~jaxopt_core.sample`),
   then is clipped to ``bounds[name]`` when given.

*Continuous* hyperparameters are the floating grid entries other than
``seed`` whose axis (when the grid was sampled) is :func:`~jaxopt_core.uniform`
or :func:`~jaxopt_core.log_uniform`. ``seed``, integer entries and values
drawn by :func:`~jaxopt_core.choice` are never changed: a copying member
keeps its own (its minibatch order stays its own too).

Records are per member *slot*: a member's ``losses``, ``evals`` and (with
``keep_best``) best evaluation run across its copies, and ``parents`` says
where each copy came from.

The draws come from a key derived from the sweep's ``key`` and the round, so
a PBT sweep is a deterministic function of its key. The members not copying
compute exactly what the plain sweep computes up to the first copy.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from jaxopt_core.training.ranking import TRAINING_LOSS
from jaxopt_core.training.search.axes import Axis


@dataclasses.dataclass(frozen=True)
class PBT:
    """The settings of population-based training, built by :func:`pbt`
    (frozen and hashable: part of the sweep program's static description).

    ``bounds`` is stored as a tuple of ``(name, (low, high))`` pairs.
    """

    every: int
    fraction: float = 0.25
    perturb: tuple[float, ...] = (0.8, 1.25)
    resample_prob: float = 0.0
    bounds: tuple[tuple[str, tuple[float, float]], ...] = ()


def pbt(every: int, fraction: float = 0.25, perturb: tuple[float, ...] = (0.8, 1.25),
        resample_prob: float = 0.0, bounds: dict[str, tuple[float, float]] | None = None) -> PBT:
    r"""Population-based training for :func:`~jaxopt_core.sweep`:
    ``sweep(..., search=jc.pbt(every))``.

    Every ``every`` steps the bottom ``fraction`` of the members (by
    ``rank_by``) copy the params and optimizer state of random members of
    the top ``fraction`` and explore around their hyperparameters:
    :math:`h \leftarrow \mathrm{clip}(c\,h_{\mathrm{src}})` with :math:`c`
    drawn from ``perturb``, or a fresh draw from the axis with probability
    ``resample_prob``. All inside the sweep's compiled program; see
    :mod:`jaxopt_core.training.search.pbt` for the exact rules. The result
    gains ``hparams_history`` (``{name: [K, n_rounds + 1]}``, the values
    before the first round and after each) and ``parents`` (``[K,
    n_rounds]``, the member each one copied, itself when it did not).

    Args:
        every: the steps between rounds, an int >= 1 (less than ``steps``).
        fraction: the share of members in the bottom (and the top), in
            ``(0, 0.5]``; at least one member each.
        perturb: the factors to multiply by, positive finite numbers.
        resample_prob: the probability of drawing a value afresh from its
            axis instead, in ``[0, 1]``; above 0 the grid must come from
            :func:`~jaxopt_core.sample`.
        bounds: ``{name: (low, high)}``: clip the explored values of ``name``.

    Raises:
        ValueError: a setting out of range (the message names it).

    Example:
        >>> import jax, jax.numpy as jnp, jaxopt_core as jc
        >>> X = jax.random.normal(jax.random.key(1), (64, 3))
        >>> data = (X, X @ jnp.array([1.0, -2.0, 0.5]))
        >>> def loss(w, batch):
        ...     x, t = batch
        ...     return jnp.mean((x @ w - t) ** 2)
        >>> grid = jc.sample(jax.random.key(0), 8, learning_rate=jc.log_uniform(1e-3, 0.3))
        >>> res = jc.sweep(loss, jnp.zeros(3), jc.sgd, data, grid=grid, steps=40,
        ...                search=jc.pbt(10, bounds={"learning_rate": (1e-3, 0.3)}))
        >>> res.hparams_history["learning_rate"].shape, res.parents.shape
        ((8, 4), (8, 3))
    """
    where = f"pbt(every={every!r}, ...)"
    if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
        raise ValueError(f"{where}: every must be an int >= 1; got every={every!r}")
    if not _real(fraction) or not 0 < fraction <= 0.5:
        raise ValueError(f"{where}: fraction must be in (0, 0.5] (the bottom and the top "
                         f"must not overlap); got fraction={fraction!r}")
    factors = tuple(perturb) if isinstance(perturb, (tuple, list)) else ()
    if not factors or not all(_real(c) and c > 0 for c in factors):
        raise ValueError(f"{where}: perturb must be a non-empty sequence of positive finite "
                         f"numbers; got perturb={perturb!r}")
    if not _real(resample_prob) or not 0 <= resample_prob <= 1:
        raise ValueError(f"{where}: resample_prob must be in [0, 1]; "
                         f"got resample_prob={resample_prob!r}")
    return PBT(int(every), float(fraction), tuple(float(c) for c in factors),
               float(resample_prob), _check_bounds(where, bounds))


def _real(x: Any) -> bool:
    return (isinstance(x, numbers.Real) and not isinstance(x, bool)
            and math.isfinite(float(x)))


def _check_bounds(where: str, bounds: Any) -> tuple:
    if bounds is None:
        return ()
    if not isinstance(bounds, dict):
        raise ValueError(f"{where}: bounds must be None or a dict {{name: (low, high)}}; "
                         f"got bounds={bounds!r}")
    out = []
    for name, pair in bounds.items():
        ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and all(map(_real, pair))
        if not ok or not pair[0] < pair[1]:
            raise ValueError(f"{where}: bounds[{name!r}] must be (low, high) with finite "
                             f"low < high; got {pair!r}")
        out.append((str(name), (float(pair[0]), float(pair[1]))))
    return tuple(out)


class PBTPlan(NamedTuple):
    """Everything static about a PBT sweep (hashable: in the jit cache key).

    Attributes:
        config: the :class:`PBT` settings.
        k: the number of real members (padding members take no part).
        n: the size of the bottom and of the top.
        rounds: the number of rounds, one after each step count in ``every,
            2 every, ... < steps``.
        names: the grid names, in grid order (all of them are carried).
        explored: the continuous names (see the module notes).
        axes: ``(name, axis)`` of the explored names that have one.
        rank_by: the metric name, or ``"loss"``.
        mode: ``"min"`` or ``"max"``.
        eval_every: the evaluation period when ranking by a metric, else 0.
        tail: the number of last losses of an interval averaged for ``"loss"``.
    """

    config: PBT
    k: int
    n: int
    rounds: int
    names: tuple[str, ...]
    explored: tuple[str, ...]
    axes: tuple[tuple[str, Axis], ...]
    rank_by: str
    mode: str
    eval_every: int
    tail: int

    @property
    def every(self) -> int:
        return self.config.every


def pbt_eval_every(search: Any, eval_fn: Any, eval_every: Any) -> Any:
    """``eval_every`` for a sweep: with PBT and an ``eval_fn`` the default
    evaluates at every round (``every``); otherwise as given."""
    if isinstance(search, PBT) and eval_fn is not None and eval_every is None:
        return search.every
    return eval_every


def plan_pbt(config: PBT, hp: dict[str, np.ndarray], grid: Any, steps: int, eval_every: int,
             rank_by: str, rank_mode: str, chunk_size: Any) -> PBTPlan:
    """Check a PBT sweep's arguments and build its :class:`PBTPlan`
    (``eval_every``: the evaluation period, 0 for none); errors name the
    argument."""
    k = len(next(iter(hp.values())))
    if config.every >= steps:
        raise ValueError(f"pbt: every must be less than steps (a round happens after every "
                         f"`every` steps, before the last); got every={config.every}, "
                         f"steps={steps}")
    if k < 2:
        raise ValueError(f"pbt needs at least 2 members; the grid has K={k}")
    if chunk_size is not None and chunk_size < k:
        raise ValueError(f"pbt ranks all members together, inside one program: chunk_size "
                         f"must be None or >= K={k}; got chunk_size={chunk_size!r}")
    metric = rank_by != TRAINING_LOSS
    if metric and (not eval_every or config.every % eval_every):
        raise ValueError(f"pbt ranks by {rank_by!r} at every round, so eval_every must divide "
                         f"every={config.every}; got eval_every={eval_every}")
    axes = dict(getattr(grid, "axes", None) or {})
    explored = tuple(n for n, v in hp.items() if n != "seed" and v.dtype.kind == "f"
                     and (n not in axes or axes[n].continuous))
    _check_names(config, hp, explored, axes)
    return PBTPlan(config, k, max(1, int(config.fraction * k)), (steps - 1) // config.every,
                   tuple(hp), explored, tuple((n, axes[n]) for n in explored if n in axes),
                   rank_by, rank_mode, eval_every if metric else 0,
                   max(1, config.every // 10))


def _check_names(config: PBT, hp: dict, explored: tuple, axes: dict) -> None:
    for name, _ in config.bounds:
        if name not in explored:
            raise ValueError(f"pbt: bounds name {name!r} is not a continuous hyperparameter "
                             f"of the grid; explored: {list(explored)}")
    missing = [n for n in explored if n not in axes]
    if config.resample_prob > 0 and missing:
        raise ValueError(
            f"pbt(resample_prob={config.resample_prob}) draws values afresh from the axis "
            f"they were sampled from, but no axis is known for {missing}: build the grid "
            "with jc.sample(key, K, name=jc.log_uniform(...), ...)")
    if not explored:
        raise ValueError(f"pbt has nothing to explore: the grid {list(hp)} has no continuous "
                         "hyperparameter (seed, integers and jc.choice values are never "
                         "changed)")
