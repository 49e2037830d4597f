r"""Successive halving: :func:`successive_halving` and its rung schedule.

``sweep(..., search=jc.successive_halving(eta=3))`` trains every member for
a short first rung, keeps the best third, trains those longer, and so on:
with :math:`R = \lfloor \log_\eta K \rfloor` (or, given ``min_steps``,
:math:`R = \mathrm{round}(\log_\eta(T / \texttt{min\_steps}))`), rung
:math:`j = R, R-1, \ldots, 0` ends at step :math:`\mathrm{round}(T/\eta^j)`.
At the end of every rung but the last the :math:`n` members still running
are ranked by ``rank_by`` (a metric of ``eval_fn`` evaluated at that step,
or the mean training loss over the last tenth of the rung's steps, at least
one) and the best :math:`\lceil n/\eta \rceil` go on; diverged members and
non-finite values rank last, ties go to the lower training loss, then the
lower member index (:func:`~jaxopt_core.training.ranking.rank_order`).

K = 27, :math:`\eta` = 3, T = 81 trains 27 members to step 3, 9 to step 9,
3 to step 27 and 1 to step 81: 27*3 + 9*6 + 3*18 + 1*54 = 243 member-steps
instead of the full sweep's 27*81 = 2187.

The run is a chain of compiled segments (:mod:`~jaxopt_core.training.segments`),
one per rung; between rungs the survivors' rows of the carry are gathered
into a smaller member axis (padded to a multiple of the device count), so a
rung's compute is proportional to its survivors. Each (survivor count, rung
length) compiles once and is cached. The driver is
:mod:`~jaxopt_core.training.search.halving_run`.

What it costs: a full sweep compiles one program, successive halving one
segment (and one ``sweep_finish``) program per rung. Where compiling is slow
against training (small models on a CPU, see benchmarks/SEARCH_RESULTS.md)
the first call can take longer than the full sweep even though it trains a
few percent of the member-steps; later calls with new values of the same
shapes reuse every program and cost in proportion to the member-steps.
"""

from __future__ import annotations

import dataclasses
import math
import numbers


@dataclasses.dataclass(frozen=True)
class SuccessiveHalving:
    """The settings of successive halving, built by :func:`successive_halving`."""

    eta: int = 3
    min_steps: int | None = None


def successive_halving(eta: int = 3, min_steps: int | None = None) -> SuccessiveHalving:
    r"""Successive halving for :func:`~jaxopt_core.sweep`:
    ``sweep(..., search=jc.successive_halving(eta=3))``.

    Trains all K members to the first rung's end, keeps the best
    :math:`\lceil n/\eta \rceil` of the :math:`n` running, and repeats until
    the last rung ends at ``steps`` (see
    :mod:`jaxopt_core.training.search.halving` for the schedule). The result
    gains ``stopped_at`` (``[K]``, the steps each member trained); its losses
    and evaluations are NaN after a member stops, and ``params`` holds each
    member's state when it stopped. ``member_steps`` is the compute spent.
    With ``checkpoint_dir`` the run saves at rung ends and resumes bit for
    bit (:mod:`~jaxopt_core.training.search.halving_resume`).

    Args:
        eta: the reduction factor, an int >= 2.
        min_steps: the steps of the first rung; None: the number of rungs
            follows from K (:math:`R = \lfloor\log_\eta K\rfloor`).

    Raises:
        ValueError: ``eta`` or ``min_steps`` out of range.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np, jaxopt_core as jc
        >>> res = jc.sweep(lambda w, d: jnp.sum((w - d) ** 2), jnp.zeros(2), jc.sgd,
        ...                jnp.ones(2), grid={"learning_rate": np.geomspace(1e-3, 0.4, 9)},
        ...                steps=27, search=jc.successive_halving(eta=3))
        >>> res.stopped_at.tolist(), res.member_steps, res.full_steps
        ([3, 3, 3, 3, 3, 3, 9, 9, 27], 63, 243)
    """
    if isinstance(eta, bool) or not isinstance(eta, numbers.Integral) or eta < 2:
        raise ValueError(f"successive_halving: eta must be an int >= 2; got eta={eta!r}")
    if min_steps is not None and (isinstance(min_steps, bool) or not isinstance(
            min_steps, numbers.Integral) or min_steps < 1):
        raise ValueError("successive_halving: min_steps must be None or an int >= 1; "
                         f"got min_steps={min_steps!r}")
    return SuccessiveHalving(int(eta), None if min_steps is None else int(min_steps))


def n_rungs(k: int, steps: int, config: SuccessiveHalving) -> int:
    r""":math:`R`: :math:`\lfloor \log_\eta K \rfloor` (exact, in integers),
    or :math:`\mathrm{round}(\log_\eta(T/\texttt{min\_steps}))` (at least 0)."""
    eta = config.eta
    if config.min_steps is None:
        r = 0
        while eta ** (r + 1) <= k:
            r += 1
        return r
    return max(0, round(math.log(steps / config.min_steps, eta)))


def rung_schedule(k: int, steps: int, config: SuccessiveHalving) -> list[tuple[int, int]]:
    """``[(end step, members running), ...]``, one per rung, the last ending
    at ``steps``; errors when a rung would end before step 1.

    Example:
        >>> from jaxopt_core.training.search.halving import SuccessiveHalving, rung_schedule
        >>> rung_schedule(27, 81, SuccessiveHalving(3))
        [(3, 27), (9, 9), (27, 3), (81, 1)]
        >>> rung_schedule(10, 100, SuccessiveHalving(2, min_steps=25))
        [(25, 10), (50, 5), (100, 3)]
    """
    r = n_rungs(k, steps, config)
    ends = [round(steps / config.eta ** j) for j in range(r, -1, -1)]
    if ends[0] < 1:
        raise ValueError(
            f"successive_halving(eta={config.eta}) with K={k} makes {r + 1} rungs, the first "
            f"ending at step round({steps}/{config.eta}**{r}) = 0: give more steps, or "
            "min_steps to set the first rung's length")
    schedule, n = [], k
    for end in ends:
        schedule.append((end, n))
        n = -(-n // config.eta)
    return schedule
