"""The ``search=`` argument of :func:`~jaxopt_core.sweep`: checked, and turned
into what the sweep program needs.

``search`` is None (the full sweep), :func:`~jaxopt_core.pbt` (runs inside
the sweep's compiled program: a :class:`~jaxopt_core.training.search.pbt.PBTPlan`
joins the program's static description) or
:func:`~jaxopt_core.successive_halving` (a driver over the segment programs:
:mod:`~jaxopt_core.training.search.halving_run`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxopt_core.training.search.halving import SuccessiveHalving
from jaxopt_core.training.search.pbt import PBT, PBTPlan, pbt_eval_every, plan_pbt


def check_search(search: Any, segment_steps: Any) -> None:
    """Raise unless ``search`` is None or a strategy; errors name the argument."""
    if search is not None and not isinstance(search, (PBT, SuccessiveHalving)):
        raise ValueError("search must be None, jc.pbt(...) or jc.successive_halving(...); "
                         f"got search={search!r}")
    if isinstance(search, SuccessiveHalving) and segment_steps is not None:
        raise ValueError("successive_halving runs each rung as a segment of its own: "
                         f"segment_steps must be None; got segment_steps={segment_steps!r}")


def search_eval_every(search: Any, eval_fn: Any, eval_every: Any) -> Any:
    """``eval_every`` as the search needs it (PBT: at every round by default)."""
    return pbt_eval_every(search, eval_fn, eval_every)


def search_plan(search: Any, hp: dict[str, np.ndarray], grid: Any, steps: int,
                eval_every: int, ranking: tuple[str, str], chunk_size: Any) -> PBTPlan | None:
    """The static part of the program a search adds (PBT's plan), or None."""
    if not isinstance(search, PBT):
        return None
    return plan_pbt(search, hp, grid, steps, eval_every, *ranking, chunk_size)


def member_steps(k: int, steps: int, stopped_at: np.ndarray | None) -> int:
    """The steps trained, summed over the members (see ``SweepResult.member_steps``)."""
    return int(k * steps) if stopped_at is None else int(np.sum(stopped_at))
