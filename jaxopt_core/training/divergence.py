r"""Divergence inside a compiled run: detect it, freeze the run, say when.

A step *diverges* when its loss, its new params or its new optimizer state
hold a value that is not finite (``inf`` or ``nan``). Carrying on from there
only spreads the damage, so the run keeps an ``alive`` flag: once a step
diverges its results are discarded (``jnp.where`` on the flag selects the old
params and state; a sweep selects the params only, see
:func:`freeze_params`) and the run stays frozen at its last finite state, its later
losses recorded as NaN. ``diverged_at`` records the index of the step that
diverged, or -1.

Under ``jax.vmap`` (a sweep) each member carries its own flag, so one member's
divergence never reaches another. A frozen run still computes (a vmapped lane
cannot be skipped); its results are thrown away.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_core.training.step import apply_step


def all_finite(tree: Any) -> jax.Array:
    """A scalar bool: every floating entry of ``tree`` is finite (integer
    leaves such as step counts, and PRNG keys, count as finite).

    One check per leaf, :func:`leaf_finite`, ANDed. Not a float max
    (``max(|x|) < inf``, the same flag in IEEE arithmetic and several times
    faster on XLA:CPU than a boolean reduction): jaxlib 0.10.2's CPU max
    reduction drops NaN for many shapes (``jnp.max(x, axis=1)`` of a
    ``[1024, 10]`` or ``[256, 16]`` array with one NaN per row came out
    finite in every case tried, while ``[64, 32]`` and 1-D arrays propagated
    it; openxla/xla#21461, open, reports the same kind of bug), so that check
    passed members holding NaN. Sweeps used it from commit 0e094ec until the
    fix; the tests now check the flag on those shapes.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.training.divergence import all_finite
        >>> bool(all_finite({"w": jnp.ones(2), "count": jnp.int32(3)}))
        True
        >>> bool(all_finite([jnp.array([1.0, jnp.inf])]))
        False
    """
    checks = [leaf_finite(x) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return and_all(checks)


#: From this many flags on, :func:`and_all` ANDs them behind a conditional on CPU.
CONDITIONAL_FROM = 16


def and_all(flags: list) -> jax.Array:
    r"""The AND of scalar bool ``flags`` (True for none).

    From :data:`CONDITIONAL_FROM` flags on, and on CPU, it is computed as
    :math:`f_0 \wedge \bigwedge_{i>0} f_i` with ``lax.cond(f_0, all, False)``:
    the same flag. Why: XLA:CPU fuses the reductions of small leaves into
    the scalar chain of ``and`` that consumes them, one kernel that grows
    with the number of leaves, and its fusion pass slows down with the
    kernel's size. A conditional is a fusion boundary. ``fit`` with Adam on
    the residual MLP of benchmark (b), layout ``"tree"``, first call
    (compile and 100 steps), chain -> conditional: 1000 leaves 254 s (the
    benchmark's compile figure) -> 35 s (optax's scan: 13 s); 400 leaves
    17.5 s -> 8.3 s. Outputs equal bit for bit; time per step, interleaved,
    conditional / chain: 0.99 at 400 leaves, 0.95 at 40. Under ``vmap`` the
    conditional becomes a select, the chain again (a sweep's few leaves).
    Other platforms keep the chain: a GPU conditional reads its predicate
    on the host.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.training.divergence import and_all
        >>> flags = [jnp.array(True)] * 20
        >>> bool(and_all(flags)), bool(and_all(flags + [jnp.array(False)])), bool(and_all([]))
        (True, False, True)
    """
    if len(flags) < CONDITIONAL_FROM:
        return functools.reduce(jnp.logical_and, flags, jnp.array(True))

    def chain(head, rest):
        return head & jnp.all(rest)

    def behind_conditional(head, rest):
        return jax.lax.cond(head, jnp.all, lambda r: jnp.array(False), rest)

    return jax.lax.platform_dependent(flags[0], jnp.stack(flags[1:]), cpu=behind_conditional,
                                      default=chain)


def leaf_finite(x: jax.Array) -> jax.Array:
    r"""A scalar bool: every entry of the floating array ``x`` is finite.

    For a real ``x`` this is the dot product with zeros,

    .. math:: \operatorname{finite}(x) \iff \textstyle\sum_i x_i \cdot 0 = 0,

    exact in IEEE arithmetic: ``x_i * 0`` is ``0`` for finite ``x_i`` and NaN
    for ``inf`` or NaN, and a sum that meets a NaN is NaN (it can neither
    overflow nor cancel: every term is a zero). The zeros pass through an
    ``optimization_barrier`` so the compiler cannot fold the product away.
    Why a dot and not ``all(isfinite(x))``: vmapped over a sweep's members
    it is one matrix-vector product, which XLA:CPU runs at memory speed,
    where the boolean reduction is rewritten into a tree of
    ``reduce-window`` passes over a materialised ``pred`` array (benchmark
    (e), Adam sweeps, optax time / jc.sweep time, one interleaved run each:
    digits MLP K=1024 0.892 -> 0.919, K=64 0.917 -> 0.966; linear regression
    K=256 0.815 -> 0.865; peak memory the same to 10 kB). Complex leaves keep
    ``all(isfinite(x))``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxopt_core.training.divergence import leaf_finite
        >>> big, bad = jnp.array([3e38, -3e38]), jnp.array([1.0, jnp.nan])
        >>> bool(leaf_finite(big)), bool(leaf_finite(bad))
        (True, False)
        >>> jax.vmap(leaf_finite)(jnp.array([[1.0, 2.0], [jnp.inf, 0.0]])).tolist()
        [True, False]
    """
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        return jnp.all(jnp.isfinite(x))
    zeros = jax.lax.optimization_barrier(jnp.zeros(jnp.size(x), dtype))
    # HIGHEST: a reduced-precision pass (bf16 on TPU, TF32 on GPU) would round
    # a float32 near its max up to inf and call a finite value non-finite.
    return jnp.dot(jnp.ravel(x), zeros, precision=jax.lax.Precision.HIGHEST) == 0


def all_finite_grouped(tree: Any) -> jax.Array:
    """:func:`all_finite` (the same flag), with one reduction per group of
    floating leaves of one shape and dtype: their ``isfinite`` flags are
    ANDed elementwise first.

    On ``fit``'s flat layout the params and the Adam moments are one leaf
    each of one shape, so this is one reduction where :func:`all_finite` has
    three. There it is a little faster (benchmark (b), 1000-leaf Adam, four
    interleaved runs: 0.762-0.782 of optax's step against 0.769-0.790,
    faster in three; the unguarded step is 0.705-0.725). Elsewhere it is not
    used: on the 1000-leaf tree, groups of hundreds of leaves made the step
    1.36x optax's against 0.93x; vmapped over a sweep's members it stayed
    within the runs' noise of the per-leaf check (slower at K = 64 in one
    set of runs, 0.01 faster at K = 64 to 1024 in another). Those figures
    are against the boolean per-leaf check that :func:`all_finite` used
    until :func:`leaf_finite`'s dot product; on ``fit``'s flat layout the
    grouped check still wins over the dots (1000-leaf Adam step, 2026-12-02,
    two runs: 3.72-3.81 ms against 3.81-3.90 ms).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.training.divergence import all_finite_grouped
        >>> tree = {"p": jnp.ones(2), "mu": jnp.array([0.0, jnp.nan]), "n": jnp.int32(1)}
        >>> bool(all_finite_grouped(tree)), bool(all_finite_grouped({"p": jnp.ones(2)}))
        (False, True)
    """
    groups: dict[tuple, list] = {}
    for x in jax.tree.leaves(tree):
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            groups.setdefault((jnp.shape(x), jnp.result_type(x)), []).append(jnp.isfinite(x))
    checks = [jnp.all(functools.reduce(jnp.logical_and, flags)) for flags in groups.values()]
    return functools.reduce(jnp.logical_and, checks, jnp.array(True))


CHECKS = ("per_leaf", "grouped")


def select(ok: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``ok`` else ``old``, leaf by leaf; ``ok`` may carry
    leading batch axes (one flag per member) that the leaves share."""

    def one(n, o):
        flag = jnp.reshape(ok, jnp.shape(ok) + (1,) * (jnp.ndim(n) - jnp.ndim(ok)))
        return jnp.where(flag, n, o)

    return jax.tree.map(one, new, old)


def tentative_step(
    loss_of: Callable, optimizer: Any, p: Any, s: Any, alive: jax.Array, batch: Any,
    *, check: str = "per_leaf",
) -> tuple[Any, Any, jax.Array, jax.Array]:
    """One step, and whether to keep it: ``(new_params, new_state, ok, loss)``.

    ``ok`` is the new ``alive`` flag (alive before, and the loss, params and
    state all finite); the caller keeps ``new_*`` only where ``ok``, with
    :func:`select` (fit) or :func:`freeze_params` (sweep). ``loss`` is the
    step's loss, NaN when already frozen. ``check`` picks how the params
    and state are checked, always the same flag in another program:
    ``"per_leaf"`` (:func:`all_finite`: sweeps, and ``fit`` on a tree) or
    ``"grouped"`` (:func:`all_finite_grouped`: ``fit`` on the flat layout).
    """
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}; got check={check!r}")
    new_p, new_s, loss = apply_step(loss_of, optimizer, p, s, batch)
    if check == "grouped":
        finite = all_finite_grouped((new_p, new_s))
    else:
        finite = all_finite(new_p) & all_finite(new_s)
    ok = alive & jnp.isfinite(loss) & finite
    return new_p, new_s, ok, jnp.where(alive, loss, jnp.nan)


def freeze_params(ok: jax.Array, new_params: Any, params: Any) -> Any:
    """A sweep's params after a step: ``new_params`` where ``ok``, else the
    last finite ``params`` (``select``, on the params only).

    A sweep's frozen member keeps its params; its optimizer state is left to
    run on (it may go non-finite) because nothing reads it again: results
    hold params, losses and evaluations, never the optimizer state, and
    population-based training copies params and state from alive members
    only. Selecting the state too would cost a pass over two or three times
    the params' bytes (Adam) at every step, for every member.
    """
    return select(ok, new_params, params)


#: The largest copy of the members' params for which a sweep on CPU keeps
#: the last finite params aside (:func:`frozen_copy_pays`), in bytes.
FROZEN_COPY_MAX_BYTES = 32 << 10


def frozen_copy_pays(platform: str, copy_bytes: int, pbt: bool) -> bool:
    r"""Whether a sweep keeps its frozen members' params in a copy of their own
    instead of freezing them in place.

    In place (:func:`freeze_params`), every step ends with
    :math:`p \leftarrow \mathrm{where}(ok, p', p)`, and the next step's
    forward pass waits for ``ok``: for the finiteness checks of the new
    params and state. With a copy, the step keeps :math:`p'` for everyone
    (a frozen member's later steps are thrown away anyway) and writes a
    member's params into the copy only at the step it diverges, behind a
    conditional that is false on every other step; the results take the
    copy's rows for diverged members at the end. The same numbers bit for
    bit (tested), at the price of one more copy of the params. Taken on CPU,
    where the wait kept the two cores apart (Adam sweeps, select / copy,
    interleaved: linear regression K=256 1.08-1.12, digits MLP K=256 1.03,
    K=1024 1.09, K=64 1.00), and only while the copy costs at most
    :data:`FROZEN_COPY_MAX_BYTES` (32 KiB): XLA's peak memory grows by
    about the copy, and more for larger ones (MLP: K=64 6.0 -> 6.8 MB,
    K=256 22.4 -> 25.6 MB, K=1024 88.3 -> 100.9 MB), where the gain was
    small or the memory target binds. On the linear problem the gain is
    gone beyond 32 KiB: select / copy 1.10 at K=256 (17 kB), 1.02 at
    K=512 (35 kB), 0.98 at K=1024 (70 kB). Not with population-based
    training, whose exploit copies members' params between rows.

    Example:
        >>> from jaxopt_core.training.divergence import frozen_copy_pays
        >>> frozen_copy_pays("cpu", 1 << 14, pbt=False), frozen_copy_pays("gpu", 1 << 14, pbt=False)
        (True, False)
    """
    return platform == "cpu" and copy_bytes <= FROZEN_COPY_MAX_BYTES and not pbt


def keep_frozen(alive: jax.Array, ok: jax.Array, params: Any, kept: Any) -> Any:
    """The copy of frozen params after a step: each member that diverges at
    this step (``alive`` and not ``ok``) gets its ``params`` from before the
    step; the conditional skips the pass on steps where none diverges."""
    died = alive & ~ok
    return jax.lax.cond(jnp.any(died), lambda: select(died, params, kept), lambda: kept)


def guarded_step(
    loss_of: Callable, optimizer: Any, p: Any, s: Any, alive: jax.Array, batch: Any,
    *, check: str = "per_leaf",
) -> tuple[Any, Any, jax.Array, jax.Array]:
    """One step that is kept only while everything stays finite.

    Returns ``(params, state, ok, loss)``: the new params and state when the
    run was alive and the step's loss, params and state are all finite,
    otherwise the old ones; ``ok`` is the new ``alive`` flag; ``loss`` is the
    step's loss as computed, or NaN when the run was already frozen.
    ``check``: as in :func:`tentative_step` (``fit`` sets ``"grouped"`` on
    the flat layout).
    """
    new_p, new_s, ok, loss = tentative_step(loss_of, optimizer, p, s, alive, batch,
                                            check=check)
    return select(ok, new_p, p), select(ok, new_s, s), ok, loss


def first_bad_step(alive: jax.Array, ok: jax.Array, t: jax.Array, at: jax.Array) -> jax.Array:
    """``diverged_at`` after step ``t``: ``t`` where the run dies at this step,
    the earlier value (-1 while alive) everywhere else."""
    return jnp.where(alive & ~ok, t, at)
