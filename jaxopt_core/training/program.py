r"""The compiled program of a sweep: ``lax.scan`` over steps of ``jax.vmap`` over members.

Everything static about a sweep is a :class:`SweepSpec` (the jit cache key);
the grid values, params, data and key are arrays, so new values of the same
shapes reuse the compiled program. Each member carries its params, optimizer
state and an ``alive`` flag; a step that makes the loss or the params
non-finite is discarded for that member (``jnp.where`` on the flag) and the
member stays frozen at its last finite state, its later losses NaN.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from jaxopt_core.regularization.penalties import regularized
from jaxopt_core.training.batching import Batcher
from jaxopt_core.training.grid import FrozenMask, seed_keys
from jaxopt_core.training.layout import Flat, layout_loss, ravel
from jaxopt_core.training.progress import tick
from jaxopt_core.training.step import apply_step


class SweepSpec(NamedTuple):
    """Everything static about a sweep program (hashable: the jit cache key)."""

    loss_fn: Callable
    optimizer_fn: Callable
    opt_names: tuple[str, ...]
    penalty: tuple[str, ...]
    penalty_mask: Any
    seeded: bool
    key_impl: str
    init_fn: Callable | None
    steps: int
    batch_size: int | None
    flat: bool
    every: int
    sharding: NamedSharding


def build_member(spec: SweepSpec, hp_m: dict[str, jax.Array]) -> tuple[Any, Callable]:
    """The member's optimizer and loss (the loss in the run's layout)."""
    opt = spec.optimizer_fn(**{n: hp_m[n] for n in spec.opt_names})
    loss = spec.loss_fn
    if spec.penalty:
        mask = spec.penalty_mask
        mask = mask.thaw() if isinstance(mask, FrozenMask) else mask
        loss = regularized(loss, l1=hp_m.get("l1", 0.0), l2=hp_m.get("l2", 0.0), mask=mask)
    return opt, layout_loss(loss, spec.flat)


def _member_keys(spec: SweepSpec, key: jax.Array, hp: dict) -> tuple[jax.Array, jax.Array]:
    """Init and data keys: one per member when the grid has ``seed``, else shared."""
    if spec.seeded:
        return jax.vmap(lambda s: seed_keys(key, s))(hp["seed"])
    return seed_keys(key, 0)[0], key


def _initial_members(spec: SweepSpec, params: Any, hp: dict, init_keys: jax.Array) -> tuple:
    """Stacked ``(params, opt_state)`` of every member, in the run's layout."""

    def init(hp_m, init_key):
        p = spec.init_fn(init_key) if spec.init_fn is not None else params
        p = ravel(p) if spec.flat else p
        return p, build_member(spec, hp_m)[0].init(p)

    return jax.vmap(init, in_axes=(0, 0 if spec.seeded else None))(hp, init_keys)


def _member_step(spec: SweepSpec, p, s, alive, hp_m, batch):
    """One member's step, frozen (old values kept) once it stops being finite."""
    opt, loss_of = build_member(spec, hp_m)
    new_p, new_s, loss = apply_step(loss_of, opt, p, s, batch)
    finite = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(new_p)]
    ok = alive & jnp.isfinite(loss) & functools.reduce(jnp.logical_and, finite)

    def keep(new, old):
        return jnp.where(ok, new, old)

    return (
        jax.tree.map(keep, new_p, p), jax.tree.map(keep, new_s, s), ok,
        jnp.where(alive, loss, jnp.nan),
    )


@functools.partial(jax.jit, static_argnames=("spec",))
def sweep_program(params, data, key_data, hp, token, base, *, spec: SweepSpec):
    """Train every member of ``hp`` for ``spec.steps`` steps; returns
    ``(params, losses [K, steps], diverged [K])`` sharded over members."""
    key = jax.random.wrap_key_data(key_data, impl=spec.key_impl)
    batcher = Batcher(data, spec.batch_size)
    init_keys, data_keys = _member_keys(spec, key, hp)
    p0, s0 = _initial_members(spec, params, hp, init_keys)
    k = jax.tree.leaves(hp)[0].shape[0]
    carry = jax.lax.with_sharding_constraint((p0, s0, jnp.ones([k], bool)), spec.sharding)
    # With a seed axis and minibatches every member draws its own order.
    per_member_order = spec.seeded and spec.batch_size is not None
    perm = batcher.initial_perm()
    if per_member_order:
        perm = jnp.broadcast_to(perm, (k, *perm.shape))
    step = jax.vmap(functools.partial(_member_step, spec),
                    in_axes=(0, 0, 0, 0, 0 if per_member_order else None))

    def body(carry, t):
        p, s, alive, perm = carry
        if per_member_order:
            perm = jax.vmap(batcher.refresh, in_axes=(0, 0, None))(perm, data_keys, t)
            batch = jax.vmap(batcher.batch, in_axes=(None, 0, None))(data, perm, t)
        else:
            perm = batcher.refresh(perm, data_keys, t)
            batch = batcher.batch(data, perm, t)
        p, s, alive, loss = step(p, s, alive, hp, batch)
        if spec.every:
            tick(token, base + t + 1, spec.every)
        return (p, s, alive, perm), loss

    steps = jnp.arange(spec.steps, dtype=jnp.int32)
    (p, _, alive, _), losses = jax.lax.scan(body, (*carry, perm), steps)
    if spec.flat:
        p = jax.vmap(Flat.unravel)(p)
    return jax.lax.with_sharding_constraint((p, losses.T, ~alive), spec.sharding)
