r"""Hyperparameter sweeps: K training runs in one compiled program.

:func:`sweep` trains one *member* per entry of a grid of hyperparameters. The
members are ``jax.vmap``-ed over and the steps ``lax.scan``-ed over, so K runs
cost one compile and one dispatch; the hyperparameters enter the program as
arrays, so sweeping new values of the same shapes compiles nothing new.

Members are independent: nothing in the program reduces across the member
axis, so a member's params and losses do not depend on the hyperparameters
or the fate of the members beside it. In particular a member that diverges is isolated: once its
loss or its params stop being finite it is frozen at its last finite params
and optimizer state (a per-member ``alive`` flag carried in the scan selects
the old values with ``jnp.where``) and flagged in
:attr:`SweepResult.diverged`. Its losses: the loss of the step that diverged
is recorded as computed (``inf``/``nan``, or finite when it was the update
that overflowed), every later one as NaN. Frozen members still compute (vmap
cannot skip a lane), their results are discarded.

Across devices the member axis is sharded over a one-axis
:class:`jax.sharding.Mesh` (``"members"``) with a ``NamedSharding``; K is
padded up to a multiple of the device count (padding members repeat the last
member) and the padding is dropped from the results. When the device count
divides K the results stay sharded, member-wise, on the devices; otherwise
JAX cannot split K rows evenly and they come back replicated on those
devices. The data is replicated: one copy per device, shared by that
device's members, never one per member. ``chunk_size`` runs the members a
chunk at a time through the same compiled program.

Equality across layouts of the work. A member's numbers never depend on the
*values* of other members (the program is lane-wise independent: tested bit
for bit). They may depend, in the last bits, on how many members one device
runs at once: XLA:CPU vectorises a kernel over the member axis differently
for 8 members than for 2, so a sweep on 4 devices, or in chunks, agrees with
the one-device sweep to float32 rounding (about 1e-7 relative, growing
slowly with steps), and often bit for bit.

Multi-host: the same call works under ``jax.distributed``. Call
``jax.distributed.initialize()`` in every process, then make the identical
``sweep(...)`` call in every process (same grid, data and key: each process
holds the whole data set). The mesh spans ``jax.devices()``, the devices of
all hosts; each process places its share of the grid with
``jax.make_array_from_callback``, trains the members on its own devices, and
gets global arrays back. ``best_index``, :meth:`SweepResult.to_dataframe`
and :meth:`SweepResult.plot` gather what they need with
``jax.experimental.multihost_utils.process_allgather``; gather ``params``
the same way before reading them on one host. (Written to the documented
multi-process API; this repository's tests cover several devices in one
process only.)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxopt_core.base import needs_tree_layout
from jaxopt_core.flat import Flat, ravel
from jaxopt_core.progress import ProgressBar, report_every, tick
from jaxopt_core.regularization import regularized
from jaxopt_core.train import (
    Batcher,
    _check_callable,
    _update,
    as_key,
    check_batch_size,
    check_steps,
    layout_loss,
    use_flat,
)

RESERVED = ("l1", "l2", "seed")


class SweepResult(NamedTuple):
    """What :func:`sweep` returns; member ``i`` is row ``i`` of every field.

    Attributes:
        hparams: ``{name: [K] array}``, the grid as passed in.
        losses: ``[K, steps]``; ``losses[i, t]`` is member ``i``'s loss at the
            params before step ``t``; NaN after the member diverged.
        params: the final params, a pytree with the structure of the params
            and a leading member axis K on every leaf.
        diverged: ``[K]`` bool, whether the member's loss or params became
            non-finite (it was then frozen at its last finite state).
        best_index: index of the lowest final loss among members that did not
            diverge; ``None`` when every member diverged.
    """

    hparams: dict[str, np.ndarray]
    losses: jax.Array
    params: Any
    diverged: jax.Array
    best_index: int | None

    def __repr__(self) -> str:
        k, steps = self.losses.shape
        return (
            f"SweepResult(K={k}, steps={steps}, grid={list(self.hparams)}, "
            f"diverged={int(_host(self.diverged).sum())}, best_index={self.best_index})"
        )

    def final_losses(self) -> np.ndarray:
        """``[K]`` losses at the last step (NaN for diverged members), on the host."""
        return _host(self.losses[:, -1])

    def best_params(self) -> Any:
        """The params of member :attr:`best_index`."""
        if self.best_index is None:
            raise ValueError("every member of the sweep diverged: there are no best params")
        return jax.tree.map(lambda x: x[self.best_index], self.params)

    def to_dataframe(self):
        """A pandas DataFrame, one row per member: the hyperparameters,
        ``final_loss`` and ``diverged`` (pandas is imported here)."""
        import pandas as pd

        frame = pd.DataFrame({k: np.asarray(v) for k, v in self.hparams.items()})
        frame["final_loss"] = self.final_losses()
        frame["diverged"] = _host(self.diverged)
        frame.index.name = "member"
        return frame

    def plot(self):
        """A matplotlib Figure: loss curves coloured by learning rate (log
        colour scale) and final loss against learning rate (log x axis).

        Without ``learning_rate`` in the grid the first other hyperparameter
        takes its place (log scale when positive and spanning a factor of 10
        or more). Diverged members are drawn as crosses at the top of the
        right panel. Builds a ``Figure`` without pyplot, so it works with any
        backend (Agg included); in Jupyter it displays itself.
        """
        return _plot(self)


def grid_product(**axes: Sequence[Any]) -> dict[str, np.ndarray]:
    """The cartesian product of hyperparameter axes, as a grid for :func:`sweep`.

    The first axis varies slowest, as in ``itertools.product``.

    Args:
        **axes: ``name=values``, each a non-empty 1-D sequence.

    Returns:
        ``{name: [K] array}`` with ``K`` the product of the axis lengths.

    Example:
        >>> import jaxopt_core as jc
        >>> g = jc.grid_product(learning_rate=[0.1, 0.01], momentum=[0.0, 0.9, 0.99])
        >>> g["learning_rate"].tolist(), g["momentum"].tolist()
        ([0.1, 0.1, 0.1, 0.01, 0.01, 0.01], [0.0, 0.9, 0.99, 0.0, 0.9, 0.99])
    """
    if not axes:
        raise ValueError("grid_product needs at least one axis, e.g. learning_rate=[...]")
    arrays = {}
    for name, values in axes.items():
        arr = np.asarray(values)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(
                f"grid_product: {name} must be a non-empty 1-D sequence; got shape {arr.shape}"
            )
        arrays[name] = arr
    mesh = np.meshgrid(*arrays.values(), indexing="ij")
    return {name: m.reshape(-1) for name, m in zip(arrays, mesh, strict=True)}


def sweep(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    optimizer_fn: Callable[..., Any],
    data: Any,
    *,
    grid: dict[str, Any],
    steps: int,
    batch_size: int | None = None,
    key: jax.Array | None = None,
    chunk_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = False,
    layout: str = "auto",
    penalty_mask: Any = None,
) -> SweepResult:
    r"""Train one member per grid entry, all K in one compiled program.

    Member :math:`i` computes what :func:`~jaxopt_core.fit` computes with
    ``optimizer_fn(**hp_i)`` (and the penalty, seed and keys below), up to
    float rounding, except that a diverging member is frozen (see the module
    notes). The loop is ``lax.scan`` over steps of ``jax.vmap`` over members,
    with the data shared by all members (``in_axes=None``).

    Grid names:

    * any keyword argument of ``optimizer_fn`` that the optimizer treats as
      data (``learning_rate``, ``b1``, ``momentum``, ``weight_decay``, ...);
    * ``l1`` / ``l2``: the loss becomes ``regularized(loss_fn, l1, l2,
      mask=penalty_mask)``, i.e. :math:`f(w) + \ell_1\sum|w| + \ell_2\tfrac12\sum w^2`;
    * ``seed`` (ints): member keys ``init_key, data_key =
      jax.random.split(jax.random.fold_in(key, seed))``; ``params`` may then
      be a function ``init_key -> params`` and ``data_key`` orders the
      minibatches. Without ``seed`` every member uses ``key`` itself for the
      minibatch order (as :func:`fit` does) and a params function gets the
      keys of ``seed=0``.

    Compiles are cached on ``(loss_fn, optimizer_fn, params function)`` (the
    objects), the grid's names, dtypes and padded chunk length, ``steps``,
    ``batch_size``, the layout, devices and shapes; new grid values, params
    or data of the same shapes reuse the program.

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``.
        params: initial params shared by all members, or a function
            ``key -> params``.
        optimizer_fn: builds the optimizer from keyword hyperparameters,
            e.g. ``jc.adam`` or ``functools.partial(jc.sgd, momentum=0.9)``.
        data: as in :func:`fit`.
        grid: ``{name: [K] array}``, all of one length K (see
            :func:`grid_product`).
        steps: steps per member, an int >= 1.
        batch_size: ``None`` (full batch) or an int in ``[1, n]``, as in :func:`fit`.
        key: PRNG key, default ``jax.random.key(0)``.
        chunk_size: run at most this many members at a time (rounded up to a
            multiple of the device count; the last chunk is padded) through
            one compiled program, to bound memory. Results are the same.
        devices: the devices to shard members over (default ``jax.devices()``).
        progress: show a tqdm bar over all chunks' steps.
        layout: ``"auto"``, ``"flat"`` or ``"tree"``, as in :func:`fit`.
        penalty_mask: the ``mask`` of the ``l1``/``l2`` penalty (default all leaves).

    Returns:
        A :class:`SweepResult`.

    Raises:
        ValueError: unknown grid names (the message lists the valid ones),
            arrays of different lengths, bad ``steps``/``batch_size``/``chunk_size``.
        TypeError: a grid name the optimizer uses as a Python value (in an
            ``if``), which cannot be traced; bind it with ``functools.partial``.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np, jaxopt_core as jc
        >>> X = jax.random.normal(jax.random.key(1), (64, 3))
        >>> y = X @ jnp.array([1.0, -2.0, 0.5])
        >>> def mse(w, batch):
        ...     x, t = batch
        ...     return jnp.mean((x @ w - t) ** 2)
        >>> res = jc.sweep(mse, jnp.zeros(3), jc.sgd, (X, y), steps=50,
        ...                grid={"learning_rate": np.logspace(-3, 1, 8)})
        >>> res.losses.shape, res.diverged.tolist()[-1]
        ((8, 50), True)
    """
    _check_callable("loss_fn", loss_fn)
    _check_callable("optimizer_fn", optimizer_fn)
    steps = check_steps(steps)
    check_batch_size(batch_size, data)
    key = as_key(key)
    hp, k = _check_grid(grid, optimizer_fn)
    init_fn = params if _is_init_fn(params) else None
    opt_names = tuple(n for n in hp if n not in RESERVED)
    probe = _probe(optimizer_fn, {n: hp[n] for n in opt_names})
    flat = use_flat(layout, needs_tree_layout(probe))

    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device")
    mesh = Mesh(np.asarray(devices, dtype=object), ("members",))
    members = NamedSharding(mesh, PartitionSpec("members"))
    replicated = NamedSharding(mesh, PartitionSpec())
    chunk = k if chunk_size is None else _check_chunk(chunk_size)
    chunk = -(-min(chunk, k) // len(devices)) * len(devices)
    n_chunks = -(-k // chunk)
    pad = n_chunks * chunk - k
    padded = {n: np.concatenate([v, np.repeat(v[-1:], pad)]) for n, v in hp.items()}

    spec = _Spec(
        loss_fn=loss_fn, optimizer_fn=optimizer_fn, opt_names=opt_names,
        penalty=tuple(n for n in ("l1", "l2") if n in hp), penalty_mask=_freeze(penalty_mask),
        seeded="seed" in hp, key_impl=str(jax.random.key_impl(key)), init_fn=init_fn,
        steps=steps, batch_size=batch_size, flat=flat,
        every=report_every(steps) if progress else 0, sharding=members,
    )
    shared = _put((None if init_fn else params, data, jax.random.key_data(key)), replicated)
    outs = []
    with ProgressBar(progress, total=steps * n_chunks, desc="sweep") as bar:
        for c in range(n_chunks):
            hp_c = _put({n: v[c * chunk:(c + 1) * chunk] for n, v in padded.items()}, members)
            base = np.int32(c * steps)
            try:
                outs.append(_sweep_program(*shared, hp_c, bar.token_array(), base, spec=spec))
            except jax.errors.ConcretizationTypeError as err:
                raise TypeError(
                    f"optimizer_fn uses a swept hyperparameter ({', '.join(opt_names)}) as a "
                    "Python value (in an `if`, or a shape); only hyperparameters the optimizer "
                    "treats as numbers can be swept. Fix other values with functools.partial."
                ) from err
        if progress:
            jax.block_until_ready(outs)
    out = outs[0] if n_chunks == 1 else jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)
    if n_chunks * chunk != k:
        out = jax.tree.map(lambda x: x[:k], out)
    new_params, losses, diverged = out
    final, bad = _host(losses[:, -1]), _host(diverged)
    ok = np.flatnonzero(~bad)
    best = int(ok[np.argmin(final[ok])]) if ok.size else None
    return SweepResult(dict(hp), losses, new_params, diverged, best)


class _Spec(NamedTuple):
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


@functools.partial(jax.jit, static_argnames=("spec",))
def _sweep_program(params, data, key_data, hp, token, base, *, spec: _Spec):
    key = jax.random.wrap_key_data(key_data, impl=spec.key_impl)
    batcher = Batcher(data, spec.batch_size)

    def build(hp_m):
        """The member's optimizer and loss (in the run's layout)."""
        opt = spec.optimizer_fn(**{n: hp_m[n] for n in spec.opt_names})
        loss = spec.loss_fn
        if spec.penalty:
            mask = spec.penalty_mask
            mask = mask.thaw() if isinstance(mask, _Frozen) else mask
            loss = regularized(loss, l1=hp_m.get("l1", 0.0), l2=hp_m.get("l2", 0.0), mask=mask)
        return opt, layout_loss(loss, spec.flat)

    if spec.seeded:
        init_keys, data_keys = jax.vmap(lambda s: seed_keys(key, s))(hp["seed"])
    else:
        init_keys, data_keys = seed_keys(key, 0)[0], key

    def init(hp_m, init_key):
        p = spec.init_fn(init_key) if spec.init_fn is not None else params
        p = ravel(p) if spec.flat else p
        return p, build(hp_m)[0].init(p)

    p0, s0 = jax.vmap(init, in_axes=(0, 0 if spec.seeded else None))(hp, init_keys)
    k = jax.tree.leaves(hp)[0].shape[0]
    alive = jnp.ones([k], bool)
    carry = jax.lax.with_sharding_constraint((p0, s0, alive), spec.sharding)
    per_member_order = spec.seeded and spec.batch_size is not None
    perm = batcher.initial_perm()
    if per_member_order:
        perm = jnp.broadcast_to(perm, (k, *perm.shape))

    def member_step(p, s, alive, hp_m, batch):
        opt, loss_of = build(hp_m)
        new_p, new_s, loss = _update(loss_of, opt, p, s, batch)
        finite = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(new_p)]
        ok = alive & jnp.isfinite(loss) & functools.reduce(jnp.logical_and, finite)

        def keep(new, old):
            return jnp.where(ok, new, old)

        return (
            jax.tree.map(keep, new_p, p), jax.tree.map(keep, new_s, s), ok,
            jnp.where(alive, loss, jnp.nan),
        )

    def body(carry, t):
        p, s, alive, perm = carry
        if per_member_order:
            perm = jax.vmap(batcher.refresh, in_axes=(0, 0, None))(perm, data_keys, t)
            batch = jax.vmap(batcher.batch, in_axes=(None, 0, None))(data, perm, t)
        else:
            perm = batcher.refresh(perm, data_keys, t)
            batch = batcher.batch(data, perm, t)
        batch_axis = 0 if per_member_order else None
        step = jax.vmap(member_step, in_axes=(0, 0, 0, 0, batch_axis))
        p, s, alive, loss = step(p, s, alive, hp, batch)
        if spec.every:
            tick(token, base + t + 1, spec.every)
        return (p, s, alive, perm), loss

    steps = jnp.arange(spec.steps, dtype=jnp.int32)
    (p, _, alive, _), losses = jax.lax.scan(body, (*carry, perm), steps)
    if spec.flat:
        p = jax.vmap(Flat.unravel)(p)
    out = (p, losses.T, ~alive)
    return jax.lax.with_sharding_constraint(out, spec.sharding)


def seed_keys(key: jax.Array, seed: Any) -> tuple[jax.Array, jax.Array]:
    """``(init_key, data_key)`` of the member with ``seed`` (see :func:`sweep`):
    pass them to a params function and to :func:`~jaxopt_core.fit` to rerun
    one member alone."""
    return tuple(jax.random.split(jax.random.fold_in(key, seed)))


def _check_grid(grid: Any, optimizer_fn: Callable) -> tuple[dict[str, np.ndarray], int]:
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"grid must be a non-empty dict {{name: 1-D array}}; got {grid!r}")
    valid = _valid_names(optimizer_fn)
    hp, lengths = {}, {}
    for name, values in grid.items():
        if valid is not None and name not in valid and name not in RESERVED:
            raise ValueError(
                f"grid name {name!r} is not a keyword argument of optimizer_fn nor one of "
                f"{RESERVED}; valid names: {', '.join(sorted(valid | set(RESERVED)))}"
            )
        arr = np.asarray(values)
        if arr.ndim != 1 or arr.dtype.kind not in "biuf":
            raise ValueError(f"grid[{name!r}] must be a 1-D array of numbers; got {values!r}")
        if name == "seed" and arr.dtype.kind not in "iu":
            raise ValueError(f"grid['seed'] must hold integers; got dtype {arr.dtype}")
        hp[name] = arr.astype(jax.dtypes.canonicalize_dtype(arr.dtype))
        lengths[name] = arr.shape[0]
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise ValueError(f"grid arrays must be non-empty and of one length; got lengths {lengths}")
    return hp, next(iter(lengths.values()))


def _valid_names(optimizer_fn: Callable) -> set[str] | None:
    """Keyword names ``optimizer_fn`` accepts; ``None`` when it takes ``**kwargs``
    or has no signature to inspect."""
    try:
        sig = inspect.signature(optimizer_fn)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n, p in sig.parameters.items() if p.kind in kinds}


def _probe(optimizer_fn: Callable, hp: dict[str, np.ndarray]) -> Any:
    """Build the optimizer once with concrete values: validates every member's
    hyperparameters (the constructors' checks accept arrays) and tells whether
    it needs the tree layout. Falls back to member 0 for constructors that
    only take scalars."""
    try:
        return optimizer_fn(**hp)
    except TypeError:
        pass
    try:
        return optimizer_fn(**{n: v[0].item() for n, v in hp.items()})
    except TypeError as err:
        raise TypeError(
            f"optimizer_fn(**hyperparameters) failed with the grid's names {sorted(hp)}: {err}. "
            "Bind the arguments that are not swept with functools.partial."
        ) from err


def _is_init_fn(params: Any) -> bool:
    leaves = jax.tree.leaves(params)
    return callable(params) and len(leaves) == 1 and leaves[0] is params


def _check_chunk(chunk_size: Any) -> int:
    is_int = isinstance(chunk_size, (int, np.integer)) and not isinstance(chunk_size, bool)
    if not is_int or chunk_size < 1:
        raise ValueError(f"chunk_size must be None or an int >= 1; got chunk_size={chunk_size!r}")
    return int(chunk_size)


class _Frozen(NamedTuple):
    """A tree of bools (a penalty mask) made hashable for the jit cache."""

    treedef: Any
    leaves: tuple

    def thaw(self) -> Any:
        return jax.tree.unflatten(self.treedef, self.leaves)


def _freeze(mask: Any) -> Any:
    if mask is None or callable(mask):
        return mask
    leaves, treedef = jax.tree.flatten(mask)
    return _Frozen(treedef, tuple(bool(x) for x in leaves))


def _put(tree: Any, sharding: NamedSharding) -> Any:
    """Place a host tree on the mesh; on several hosts every process passes
    the same values and keeps the shards its devices hold."""
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(one, tree)


def _host(x: jax.Array) -> np.ndarray:
    """``x`` as a NumPy array, gathering from other hosts when needed."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _plot(result: SweepResult):
    """Figure of a sweep: see :meth:`SweepResult.plot`."""
    from matplotlib import colors
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    names = [n for n in result.hparams if n != "seed"] or list(result.hparams)
    name = "learning_rate" if "learning_rate" in result.hparams else names[0]
    x = np.asarray(result.hparams[name], dtype=float)
    log = bool(np.all(x > 0) and (name == "learning_rate" or x.max() >= 10 * x.min()))
    lo, hi = x.min(), x.max() if x.max() > x.min() else x.min() + 1
    norm = colors.LogNorm(lo, max(hi, lo * 1.01)) if log else colors.Normalize(lo, hi)
    losses, final, bad = _host(result.losses), result.final_losses(), _host(result.diverged)

    fig = Figure(figsize=(11, 4), layout="constrained")
    curves, ends = fig.subplots(1, 2)
    steps = np.arange(losses.shape[1])
    segments = [np.column_stack([steps, row]) for row in losses]
    curves.add_collection(LineCollection(segments, array=x, cmap="viridis", norm=norm, lw=1))
    curves.autoscale()
    finite = losses[np.isfinite(losses)]
    if finite.size and finite.min() > 0:
        curves.set_yscale("log")
    curves.set(xlabel="step", ylabel="loss", title="loss curves")
    fig.colorbar(ScalarMappable(norm, "viridis"), ax=curves, label=name)

    ends.scatter(x[~bad], final[~bad], c=x[~bad], cmap="viridis", norm=norm, label="final loss")
    if bad.any():
        top = finite.max() if finite.size else 1.0
        ends.scatter(x[bad], np.full(bad.sum(), top), marker="x", c="red", label="diverged")
    if result.best_index is not None:
        ends.scatter(x[result.best_index], final[result.best_index], s=120,
                     facecolors="none", edgecolors="black", label="best")
    if log:
        ends.set_xscale("log")
    if final[~bad].size and np.nanmin(final[~bad]) > 0:
        ends.set_yscale("log")
    ends.set(xlabel=name, ylabel="final loss", title=f"final loss against {name}")
    ends.legend(loc="best")
    return fig
