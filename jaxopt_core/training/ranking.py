r"""Ranking a sweep's members: by an evaluation metric or by the training loss.

``rank_by`` names a metric of ``eval_fn`` (its value after the last step is
compared) or ``"loss"``: the mean training loss over the last tenth of the
steps, :math:`\frac{1}{m}\sum_{t=T-m}^{T-1} \ell_t` with
:math:`m = \max(1, \lfloor T/10 \rfloor)`, which averages over many
minibatches instead of trusting the last one. A metric of ``eval_fn`` named
``"loss"`` takes precedence over the training loss.

Diverged members, and members whose value is not finite, rank last and are
never the best. Ties are broken by the lower training loss (as above), then
by the lower member index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

RANK_MODES = ("min", "max")
TRAINING_LOSS = "loss"


def resolve_rank_by(rank_by: Any, rank_mode: Any, names: Sequence[str], keep_best: bool) -> str:
    """The metric to rank by (default: the first of ``names``, else
    ``"loss"``); errors name the argument and list the valid values."""
    if rank_mode not in RANK_MODES:
        raise ValueError(f"rank_mode must be 'min' or 'max'; got rank_mode={rank_mode!r}")
    if rank_by is None:
        rank_by = names[0] if names else TRAINING_LOSS
    valid = list(names) + ([] if TRAINING_LOSS in names else [TRAINING_LOSS])
    if rank_by not in valid:
        raise ValueError(
            f"rank_by must name a metric of eval_fn or be 'loss' (the mean training loss "
            f"over the last tenth of the steps); valid: {valid}; got rank_by={rank_by!r}"
        )
    if keep_best and rank_by not in names:
        raise ValueError(
            "keep_best=True keeps each member's params at its best evaluation of rank_by, "
            f"so rank_by must name a metric of eval_fn (pass eval_fn); got rank_by={rank_by!r}"
        )
    return rank_by


def tail_loss(losses: jax.Array) -> jax.Array:
    """``[K]``: each member's mean training loss over the last tenth of the
    steps (at least one); NaN for a member that diverged before the end.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.training.ranking import tail_loss
        >>> tail_loss(jnp.arange(40.0).reshape(2, 20)).tolist()  # mean of the last 2
        [18.5, 38.5]
    """
    m = max(1, losses.shape[1] // 10)
    # Host losses (a sweep's result) stay on the host: a device round trip
    # costs more host time than the mean itself.
    xp = np if isinstance(losses, np.ndarray) else jnp
    return xp.mean(losses[:, -m:], axis=1)


def rank_order(values: np.ndarray, mode: str, usable: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Member indices, best first: by ``values`` (``mode`` says which way is
    better), then lower ``tie``, then lower index; members not ``usable``
    (diverged) or with a non-finite value come last.

    Example:
        >>> import numpy as np
        >>> from jaxopt_core.training.ranking import rank_order
        >>> v = np.array([0.5, 0.9, np.nan, 0.9])
        >>> rank_order(v, "max", np.array([True, True, True, True]),
        ...            tie=np.array([1.0, 2.0, 0.0, 1.0])).tolist()
        [3, 1, 0, 2]
    """
    values = np.asarray(values, dtype=np.float64)
    ok = usable & np.isfinite(values)
    key = np.where(ok, -values if mode == "max" else values, np.inf)
    tie = np.asarray(tie, dtype=np.float64)
    tie = np.where(np.isfinite(tie), tie, np.inf)
    return np.lexsort((np.arange(len(values)), tie, key, ~ok))


def ranks(order: np.ndarray) -> np.ndarray:
    """``rank[i]``: 1 for the best member, from :func:`rank_order`'s output."""
    out = np.empty(len(order), dtype=np.int64)
    out[order] = np.arange(1, len(order) + 1)
    return out
