"""What ``jaxopt-core sweep --sample N --search halving|pbt`` runs.

* ``--sample N``: instead of the grid (learning rates crossed with the
  ``--l1``/``--l2`` values), ``N`` members drawn at random
  (:func:`jaxopt_core.sample`): the learning rate log-uniform between the
  smallest and largest ``--lr`` value, each strength given with several
  values uniform between its smallest and largest.
* ``--search halving``: :func:`jaxopt_core.successive_halving` with
  ``--eta`` (default 3).
* ``--search pbt``: :func:`jaxopt_core.pbt` every ``--pbt-every`` steps
  (default: a tenth of the steps), the learning rate kept within the
  ``--lr`` range.
"""

from __future__ import annotations

from typing import Any

SEARCHES = ("none", "halving", "pbt")


def sample_error(learning_rates: list[float], sample: int | None) -> str | None:
    """Why ``--sample`` cannot draw from these ``--lr`` values, or None."""
    if sample is not None and min(learning_rates) == max(learning_rates):
        return ("argument --sample: needs a range of learning rates to draw from (--lr "
                f"MIN:MAX:N or a list); got the one value {learning_rates[0]:g}")
    return None


def sweep_grid(learning_rates: list[float], strengths: dict[str, list[float]],
               sample: int | None, seed: int) -> dict[str, Any]:
    """The members of the sweep: the grid, or ``sample`` random draws."""
    import jax

    import jaxopt_core as jc

    if sample is None:
        return jc.grid_product(learning_rate=learning_rates, **strengths)
    axes = {"learning_rate": jc.log_uniform(min(learning_rates), max(learning_rates))}
    fixed = {}
    for name, values in strengths.items():
        if min(values) < max(values):
            axes[name] = jc.uniform(min(values), max(values))
        else:
            fixed[name] = values[0]
    grid = jc.sample(jax.random.fold_in(jax.random.key(seed), 12), sample, **axes)
    for name, value in fixed.items():
        grid[name] = [value] * sample
    return grid


def search_of(name: str, steps: int, eta: int, pbt_every: int | None,
              learning_rates: list[float]) -> Any:
    """The ``search=`` of the sweep for ``--search name``."""
    import jaxopt_core as jc

    if name == "halving":
        return jc.successive_halving(eta=eta)
    if name == "pbt":
        lo, hi = min(learning_rates), max(learning_rates)
        bounds = {"learning_rate": (lo, hi)} if lo < hi else None
        return jc.pbt(pbt_every or pbt_default_every(steps), bounds=bounds)
    return None


def pbt_default_every(steps: int) -> int:
    """A tenth of the steps (at least 1)."""
    return max(1, steps // 10)


def eval_every(name: str, steps: int, pbt_every: int | None) -> int:
    """The validation period: ten times along the run, or PBT's rounds."""
    if name == "pbt":
        return pbt_every or pbt_default_every(steps)
    return max(1, steps // 10)


def search_error(name: str, steps: int, eta: int, pbt_every: int | None, k: int) -> str | None:
    """Why ``--search name`` cannot run on ``k`` members for ``steps`` steps, or None."""
    from jaxopt_core.training.search.halving import SuccessiveHalving, rung_schedule

    if name == "pbt":
        every = pbt_every or pbt_default_every(steps)
        if every >= steps:
            return (f"argument --pbt-every: PBT rounds come every {every} steps, which must be "
                    f"fewer than --steps {steps}")
        if k < 2:
            return "argument --search: pbt needs at least 2 members"
    if name == "halving":
        try:
            rung_schedule(k, steps, SuccessiveHalving(eta))
        except ValueError as err:
            return f"argument --search: {err}"
    return None
