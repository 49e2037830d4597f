r"""Population-based training inside the sweep's ``lax.scan`` (the rules are in
:mod:`~jaxopt_core.training.search.pbt`).

With PBT the grid values become part of the scan's carry (a
:class:`PBTState`): the optimizer is built at every step from the member's
current values, so revising them is writing new numbers, never a recompile.
After each step :func:`after_step` adds the step's losses to the running
tail sum and, behind a ``lax.cond`` on the step count (a scalar shared by all
members: a real branch), runs :func:`pbt_round`: rank, exploit (a gather
along the member axis of the params, optimizer state and divergence status),
explore, and record.

The draws of round :math:`r` come from ``fold_in(pbt_key, r)`` and have the
shape of the *real* members (K, not the padded count), so padding the member
axis to the device count changes no number.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_core.training.search.pbt import PBTPlan


class PBTState(NamedTuple):
    """The PBT part of the scan's carry; ``Kp`` is the padded member count.

    Attributes:
        hp: ``{name: [Kp]}``, the members' current hyperparameters.
        tail: ``[Kp]``, the sum of the losses of the current interval's last
            ``plan.tail`` steps.
        history: ``{name: [rounds + 1, Kp]}``: the values before the first
            round and after each.
        parents: ``[rounds, Kp]`` int32: whom each member copied (itself when
            it did not).
    """

    hp: dict[str, jax.Array]
    tail: jax.Array
    history: dict[str, jax.Array]
    parents: jax.Array


def pbt_key(key: jax.Array) -> jax.Array:
    """The key of a PBT sweep's draws, from the sweep's key (a stream apart
    from the members' init and data keys, which come from ``fold_in``)."""
    return jax.random.split(key, 3)[2]


def init_pbt(plan: PBTPlan, hp: dict[str, jax.Array]) -> PBTState:
    """The carry before the first step: the grid, history row 0 filled."""
    kp = jax.tree.leaves(hp)[0].shape[0]
    history = {n: jnp.zeros((plan.rounds + 1, kp), v.dtype).at[0].set(v) for n, v in hp.items()}
    members = jnp.arange(kp, dtype=jnp.int32)
    return PBTState(dict(hp), jnp.zeros([kp], jnp.float32), history,
                    jnp.broadcast_to(members, (plan.rounds, kp)))


def after_step(plan: PBTPlan, state: PBTState, members: tuple, evals: Any, loss: jax.Array,
               t: jax.Array, key: jax.Array) -> tuple[tuple, PBTState]:
    """After step ``t`` (0-based): add its loss to the tail sum and, when
    ``t + 1`` is a round's step count, run :func:`pbt_round`.

    ``members`` is ``(params, opt_state, alive, diverged_at)``, stacked;
    ``evals`` the evaluation carry (its values are read when ranking by a
    metric). Returns the new ``(members, state)``.
    """
    done = t + 1
    in_tail = (t % plan.every) >= plan.every - plan.tail
    state = state._replace(tail=state.tail + jnp.where(in_tail, loss, 0.0).astype(jnp.float32))
    is_round = (done % plan.every == 0) & (done // plan.every <= plan.rounds)

    def now(args):
        m, st = args
        return pbt_round(plan, st, m, round_values(plan, st, evals, done), done // plan.every - 1,
                         key)

    return jax.lax.cond(is_round, now, lambda args: args, (members, state))


def round_values(plan: PBTPlan, state: PBTState, evals: Any, done: jax.Array) -> jax.Array:
    """``[Kp]``: the values a round ranks by (the metric just evaluated, or
    the mean tail loss)."""
    if plan.eval_every:
        return evals.values[plan.rank_by][done // plan.eval_every - 1].astype(jnp.float32)
    return state.tail / plan.tail


def rank_positions(plan: PBTPlan, values: jax.Array, alive: jax.Array) -> tuple:
    """``(order, position)``: member indices best first (the ``plan.k`` real
    members by value, unusable ones last, ties to the lower index, padding
    after them all) and each member's place in that order."""
    kp = values.shape[0]
    index = jnp.arange(kp, dtype=jnp.int32)
    usable = alive & jnp.isfinite(values)
    key = jnp.where(usable, -values if plan.mode == "max" else values, jnp.inf)
    order = jnp.lexsort((index, key, ~usable, index >= plan.k)).astype(jnp.int32)
    position = jnp.zeros([kp], jnp.int32).at[order].set(index)
    return order, position


def pbt_round(plan: PBTPlan, state: PBTState, members: tuple, values: jax.Array,
              r: jax.Array, key: jax.Array) -> tuple[tuple, PBTState]:
    """Round ``r``: rank by ``values``, exploit, explore, record."""
    p, s, alive, at = members
    kp = values.shape[0]
    order, position = rank_positions(plan, values, alive)
    bottom = (position >= plan.k - plan.n) & (position < plan.k)
    keys = jax.random.split(jax.random.fold_in(key, r), 4)
    pick = _pad(jax.random.randint(keys[0], (plan.k,), 0, plan.n), kp, 0)
    index = jnp.arange(kp, dtype=jnp.int32)
    source = jnp.where(bottom, order[pick], index)

    def take(x):
        return x[source]

    p, s, alive, at = jax.tree.map(take, (p, s, alive, at))
    hp = explore(plan, state.hp, source, bottom, keys[1:])
    history = {n: state.history[n].at[r + 1].set(hp[n]) for n in hp}
    parents = state.parents.at[r].set(source)
    return (p, s, alive, at), PBTState(hp, jnp.zeros_like(state.tail), history, parents)


def explore(plan: PBTPlan, hp: dict, source: jax.Array, bottom: jax.Array,
            keys: jax.Array) -> dict:
    """The new hyperparameters: the copying members' explored values from
    their source, perturbed or redrawn, then clipped; everything else kept."""
    kp, k = source.shape[0], plan.k
    names = plan.explored
    d = len(names)
    factors = jnp.asarray(plan.config.perturb, jnp.float32)
    which = jax.random.randint(keys[0], (k, d), 0, len(plan.config.perturb))
    redraw = jax.random.uniform(keys[1], (k, d)) < plan.config.resample_prob
    axes, bounds = dict(plan.axes), dict(plan.config.bounds)
    out = dict(hp)
    for j, name in enumerate(names):
        value = hp[name][source[:k]]
        new = value * factors[which[:, j]].astype(value.dtype)
        if name in axes and plan.config.resample_prob > 0:
            fresh = axes[name].draw(jax.random.fold_in(keys[2], j), (k,)).astype(value.dtype)
            new = jnp.where(redraw[:, j], fresh, new)
        new = _pad(new, kp, 0)
        if name in bounds:
            lo, hi = bounds[name]
            new = jnp.clip(new, jnp.asarray(lo, new.dtype), jnp.asarray(hi, new.dtype))
        out[name] = jnp.where(bottom, new, hp[name])
    return out


def _pad(x: jax.Array, kp: int, value: Any) -> jax.Array:
    """``x`` (``[K, ...]``) padded with ``value`` rows to ``[Kp, ...]``."""
    if kp == x.shape[0]:
        return x
    return jnp.concatenate([x, jnp.full((kp - x.shape[0], *x.shape[1:]), value, x.dtype)])


def pbt_outputs(state: PBTState | None) -> Any:
    """``(hparams_history {name: [Kp, rounds + 1]}, parents [Kp, rounds])``
    from the final carry, member-major; None without PBT."""
    if state is None:
        return None
    return {n: v.T for n, v in state.history.items()}, state.parents.T
