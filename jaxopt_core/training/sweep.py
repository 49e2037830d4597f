r"""Hyperparameter sweeps: K training runs in one compiled program.

:func:`sweep` trains one *member* per entry of a grid of hyperparameters. The
members are ``jax.vmap``-ed over and the steps ``lax.scan``-ed over, so K runs
cost one compile and one dispatch; the hyperparameters enter the program as
arrays, so sweeping new values of the same shapes compiles nothing new.

Members are independent: nothing in the program reduces across the member
axis, so a member's params and losses do not depend on the hyperparameters
or the fate of the members beside it. In particular a member that diverges
is isolated: once its loss, its params or its optimizer state stop being
finite it is frozen at its last finite params and optimizer state (a
per-member ``alive`` flag carried in the scan selects the old values with
``jnp.where``; see :mod:`jaxopt_core.training.divergence`) and flagged in
:attr:`SweepResult.diverged`, with the step in :attr:`SweepResult.diverged_at`.
Its losses: the loss of the step that diverged is recorded as computed
(``inf``/``nan``, or finite when it was the update that overflowed), every
later one as NaN; so are its later evaluations. Frozen members still compute
(vmap cannot skip a lane), their results are discarded.

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
for bit), nor on the chunk or device a member runs in, with one exception:
matrix products whose rows are members. With data shared by the members,
``x @ w`` over K members is one ``[K, d] x [d, n]`` product (vmap turns the
member axis into a free dimension of the product), and the matrix library
(YNNPACK or Eigen on XLA:CPU, cuBLAS on GPU) picks its kernel, blocking and
therefore the order in which each row's sum is added up from the shape,
including the number of rows one device runs: 3, 7 and 64 members can each
round differently in the last bit. No padding of the member count removes
this (the choice also depends on the other dimensions and on the machine),
and giving each member its own copy of the data would cost K copies of it.
So:

* a loss without such products (elementwise terms and sums over examples)
  gives the same bits whatever the chunks and devices with ``sgd`` (tested);
  but the machine code XLA generates for elementwise work may itself depend
  on the member count: on an Intel Xeon with AVX-512 (jax 0.10.2) an Adam
  sweep of such a loss gave its third member, run with 3 members and with 8,
  losses one float32 ulp apart from step 17 on (over 200 steps and member
  counts 1 to 8: up to 1.5e-6 relative), from optimized programs that differ
  in K alone;
* a sweep with them agrees to float32 rounding carried through the run:
  each product differs by at most its rounding error (about 1e-7 relative),
  which the run then damps or amplifies as it does any rounding: a stable
  run stays near 1e-7, heavy momentum near the edge of stability reaches a
  few 1e-6 after 100 steps (the tests bound it by 1e-5), a chaotic run
  amplifies it without bound, as it does the difference between two
  machines;
* runs with the same number of members per device are bit for bit equal,
  e.g. one process with 4 devices and two processes with 2 devices each.

Multi-host: the same call works under ``jax.distributed`` (tested with two
local processes). Call ``jax.distributed.initialize()`` in every process,
then make the identical ``sweep(...)`` call in every process (same grid,
data and key: each process holds the whole data set). The mesh spans
``jax.devices()``, the devices of all hosts; each process places its share
of the grid with ``jax.make_array_from_callback`` and trains the members on
its own devices. Before returning, ``sweep`` gathers everything but the
stacked params onto every process (a collective inside the call every
process makes), so the result's methods (``repr``,
:meth:`SweepResult.to_dataframe`, :meth:`SweepResult.plot`,
:meth:`SweepResult.best_params`, :meth:`SweepResult.save`) communicate with
no one and can run on process 0 alone. ``params`` stay global arrays;
:meth:`SweepResult.gather_params` (called on every process) brings them to
the host.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_core.training.batching import as_key, check_steps, key_bits
from jaxopt_core.training.canonical import canonical
from jaxopt_core.training.divergence import frozen_copy_pays
from jaxopt_core.training.evaluation import check_eval_chunk_size, check_evaluation
from jaxopt_core.training.grid import (
    check_grid,
    freeze_mask,
    is_init_fn,
    probe_optimizer,
    route_grid,
)
from jaxopt_core.training.layout_safety import resolve_layout
from jaxopt_core.training.program import (
    SweepSpec,
)
from jaxopt_core.training.progress import report_every
from jaxopt_core.training.ranking import resolve_rank_by
from jaxopt_core.training.results import SweepResult
from jaxopt_core.training.resumable import (
    checkpoint_cadence,
)
from jaxopt_core.training.search.halving import SuccessiveHalving
from jaxopt_core.training.search.strategy import (
    check_search,
    search_eval_every,
    search_plan,
)
from jaxopt_core.training.sharding import (
    member_shardings,
    put_on_mesh,
)
from jaxopt_core.training.step import check_callable
from jaxopt_core.training.streaming import (
    STREAM,
    check_data,
)
from jaxopt_core.training.sweep_run import (
    SweepCall,
    chunk_length,
    member_chunks,
    run_halving_sweep,
    run_sweep,
)
from jaxopt_core.training.thinning import check_log_every


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
    eval_fn: Callable[[Any, Any], Any] | None = None,
    eval_data: Any = None,
    eval_every: int | None = None,
    rank_by: str | None = None,
    rank_mode: str = "min",
    keep_best: bool = False,
    segment_steps: int | None = None,
    search: Any = None,
    allow_short: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    log_every: int | None = None,
    eval_chunk_size: int | None = None,
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
    * ``l1`` / ``l2``: when ``optimizer_fn`` takes a keyword of that name
      (``functools.partial(jc.proximal_gradient, 0.1)``), the value goes to
      the optimizer, as any other keyword (a prox: exact zeros, as ``fit``
      with that optimizer gives). Otherwise the loss becomes
      ``regularized(loss_fn, l1, l2, mask=penalty_mask)``, i.e.
      :math:`f(w) + \ell_1\sum|w| + \ell_2\tfrac12\sum w^2` (an
      ``optimizer_fn`` taking ``**kwargs`` gets them as loss penalties too);
    * ``seed`` (ints): member keys ``init_key, data_key =
      jax.random.split(jax.random.fold_in(key, seed))``; ``params`` may then
      be a function ``init_key -> params`` and ``data_key`` orders the
      minibatches. Without ``seed`` every member uses ``key`` itself for the
      minibatch order (as :func:`fit` does) and a params function gets the
      keys of ``seed=0``.

    Validation and ranking: ``eval_fn(params, eval_data)`` (a scalar or
    ``{name: scalar}``) runs inside the compiled program for every member
    after every ``eval_every`` steps and after the last step, on the member's
    params tree (see :mod:`jaxopt_core.training.evaluation`). ``best_index``
    is the best member by ``rank_by``: a metric of ``eval_fn`` (default: its
    first) compared after the last step, or ``"loss"`` (the default without
    ``eval_fn``), the mean training loss over the last tenth of the steps;
    ``rank_mode="max"`` for metrics where higher is better (accuracy).
    Diverged members are never the best.

    Compiles are cached on ``(loss_fn, optimizer_fn, params function,
    eval_fn)`` (the objects; one built again by jaxopt_core's or optax's code
    from equal values counts as the same, see
    :mod:`jaxopt_core.training.canonical`), the grid's names, dtypes and padded chunk
    length, ``steps``, ``batch_size``, ``eval_every``, the layout, devices
    and shapes; new grid values, params, data or ``eval_data`` of the same
    shapes reuse the program (``rank_by`` and ``rank_mode`` only matter to the
    program with ``keep_best``).

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``.
        params: initial params shared by all members, or a function
            ``key -> params``.
        optimizer_fn: builds the optimizer from keyword hyperparameters,
            e.g. ``jc.adam`` or ``functools.partial(jc.sgd, momentum=0.9)``.
        data: as in :func:`fit`: arrays, or an iterable of batches (every
            member trains on the same batch at a step; see
            :mod:`jaxopt_core.training.streaming`). With ``chunk_size`` each
            chunk of members reads the iterable from the start, so it must be
            re-iterable (a loader object, not a generator).
        grid: ``{name: [K] array}``, all of one length K (see
            :func:`grid_product`).
        steps: steps per member, an int >= 1.
        batch_size: ``None`` (full batch) or an int in ``[1, n]``, as in :func:`fit`.
        key: PRNG key, default ``jax.random.key(0)``.
        chunk_size: run at most this many members at a time (rounded up to a
            multiple of the device count; the last chunk is padded) through
            one compiled program, to bound memory. Results are the same up
            to the rounding of matrix products (see the module notes).
        devices: the devices to shard members over (default ``jax.devices()``).
        progress: show a tqdm bar over all chunks' steps.
        layout: ``"auto"``, ``"flat"`` or ``"tree"``, as in :func:`fit`, except
            that ``"auto"`` keeps the tree for params of fewer than 16 leaves
            (``SWEEP_FLAT_MIN_LEAVES``), where it is the faster layout in a sweep.
        penalty_mask: the ``mask`` of the ``l1``/``l2`` penalty (default all leaves).
        eval_fn: ``eval_fn(params, eval_data) -> scalar | {name: scalar}``;
            None: no evaluation.
        eval_data: passed whole to ``eval_fn``, shared by all members.
        eval_every: evaluate after every ``eval_every`` steps as well as after
            the last; None: after the last step only.
        rank_by: a metric name of ``eval_fn`` or ``"loss"``; None: the first
            metric of ``eval_fn``, else ``"loss"``.
        rank_mode: ``"min"`` or ``"max"``: which way ``rank_by`` is better.
        keep_best: also keep each member's params at its best evaluation of
            ``rank_by`` (which must be a metric of ``eval_fn``):
            ``best_params_per_member`` and ``best_step``.
        segment_steps: None: the whole run is one compiled program. An int:
            the run is a chain of compiled segments of this many steps (see
            :mod:`jaxopt_core.training.segments`), with the same results;
            the host holds the state between segments.
        search: None (every member trains all ``steps``), ``jc.pbt(...)``
            (population-based training inside the compiled program: see
            :func:`~jaxopt_core.pbt`) or ``jc.successive_halving(...)`` (the
            best members go on at every rung: see
            :func:`~jaxopt_core.successive_halving`). Every result reports
            ``member_steps``, the steps trained summed over the members.
            Not with an iterable of batches.
        allow_short: with an iterable that ends before ``steps`` batches,
            stop there (``steps_trained`` says where) instead of raising.
        checkpoint_dir: a folder: save a checkpoint (orbax: every member's
            params, optimizer state, flags, data order, losses, evaluations,
            PBT state) every ``checkpoint_every`` steps, and resume from the
            last complete one when called again with the same arguments,
            giving the result of an uninterrupted run bit for bit; Ctrl-C
            stops at the next segment boundary, saves, and raises
            :class:`~jaxopt_core.Interrupted` with the partial result. A
            folder written by another configuration is refused
            (:class:`~jaxopt_core.CheckpointMismatchError`). See
            :mod:`jaxopt_core.training.resumable`. With successive halving,
            checkpoints are taken at rung ends (rungs are not cut; see
            :mod:`jaxopt_core.training.search.halving_resume`). With an
            iterable of batches (and one chunk of members) the resumed call
            reads on from the checkpointed step, as in :func:`fit`.
        checkpoint_every: steps between checkpoints (a multiple of
            ``segment_steps`` if given); default ``segment_steps``, else
            ``ceil(steps / 10)``. With successive halving, rounded up to rung
            ends: a checkpoint after each rung that reaches or passes a
            multiple of it since the last one, and after the last rung.
        log_every: None: ``losses`` holds every step's loss. An int ``L``:
            ``losses[:, j]`` is the mean loss of steps ``j*L .. (j+1)*L - 1``
            (the last window may be shorter), ``ceil(steps / L)`` entries,
            accumulated inside the compiled program so K x steps losses are
            never held; ``loss_steps`` gives each window's first step (see
            :mod:`jaxopt_core.training.thinning`). ``segment_steps`` must be a
            multiple of it; not with ``checkpoint_dir``, an iterable of
            batches or successive halving.
        eval_chunk_size: None: ``eval_fn`` runs on all members at once
            (vmapped). An int ``B``: on at most ``B`` members at a time, a
            loop over blocks inside the compiled program, which bounds the
            evaluation's memory to ``B`` members' intermediates and, on CPU,
            keeps them in cache (digits MLP 64-32-10, 1797 evaluation
            examples, K=1024, ``B=64``: the whole sweep 1.14x faster). The
            evaluations then differ from the vmapped ones in the last bit
            (about 1 ulp: matrix products and sums over examples may add up
            in another order; see
            :func:`~jaxopt_core.training.evaluation.measure_members`), as
            with ``chunk_size``; training is unchanged unless it reads them
            (``search``). Needs ``eval_fn`` and the members on one device.

    Returns:
        A :class:`SweepResult`.

    Raises:
        ValueError: unknown grid names (the message lists the valid ones),
            arrays of different lengths, bad ``steps``/``batch_size``/``chunk_size``,
            a member's value the optimizer rejects (the message names the member).
        TypeError: a grid name the optimizer uses as a Python value (in an
            ``if``), which cannot be traced (the message names ``optimizer_fn``
            and the grid entry; bind it with ``functools.partial``), or a
            ``loss_fn`` that uses a traced value as a Python value (the message
            names ``loss_fn``). Every grid value is traced: the optimizer is
            built from abstract scalars, once per program, and checked with
            each member's concrete values beforehand.

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
        >>> X_val = jax.random.normal(jax.random.key(2), (16, 3))
        >>> res = jc.sweep(mse, jnp.zeros(3), jc.sgd, (X, y), steps=50,
        ...                grid={"learning_rate": np.logspace(-3, 1, 8)},
        ...                eval_fn=mse, eval_data=(X_val, X_val @ jnp.array([1.0, -2.0, 0.5])),
        ...                eval_every=25)
        >>> res.evals["eval"].shape, res.eval_steps.tolist(), res.rank_by
        ((8, 2), [25, 50], 'eval')
    """
    check_callable("loss_fn", loss_fn)
    check_callable("optimizer_fn", optimizer_fn)
    # An equal optimizer_fn or loss built again (a re-run cell) reuses the program.
    loss_fn, optimizer_fn, eval_fn = (canonical(loss_fn), canonical(optimizer_fn),
                                      canonical(eval_fn))
    steps = check_steps(steps)
    streamed = check_data(data, batch_size, allow_short)
    if streamed and search is not None:
        raise ValueError("search= needs data arrays; data is an iterable of batches here")
    key = as_key(key)
    hp, k = check_grid(grid, optimizer_fn)
    init_fn = params if is_init_fn(params) else None
    params_like = jax.eval_shape(init_fn, key) if init_fn else params
    check_search(search, segment_steps)
    log_every = check_log_every(log_every, steps=steps, segment_steps=segment_steps,
                                checkpoint_dir=checkpoint_dir, streamed=streamed,
                                halving=isinstance(search, SuccessiveHalving))
    segment_steps, ck_every = checkpoint_cadence(checkpoint_dir, checkpoint_every,
                                                 segment_steps, steps)
    eval_every = search_eval_every(search, eval_fn, eval_every)
    plan = check_evaluation(eval_fn, eval_data, eval_every, steps, params_like)
    rank_by = resolve_rank_by(rank_by, rank_mode, plan.names if plan else (), keep_best)
    if keep_best:
        plan = plan._replace(track=rank_by, mode=rank_mode)
    opt_names, penalty = route_grid(hp, optimizer_fn)
    probe = probe_optimizer(optimizer_fn, {n: hp[n] for n in opt_names}, params_like)
    members, replicated = member_shardings(devices)
    copy_bytes = chunk_length(k, chunk_size, members) * sum(
        x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(params_like))
    spec = SweepSpec(
        loss_fn=loss_fn, optimizer_fn=optimizer_fn, opt_names=opt_names,
        penalty=penalty, penalty_mask=freeze_mask(penalty_mask),
        seeded="seed" in hp, key_impl=str(jax.random.key_impl(key)), init_fn=init_fn,
        steps=steps, batch_size=batch_size, flat=resolve_layout(
            layout, probe, sweep_leaves=len(jax.tree.leaves(params_like))),
        every=report_every(steps) if progress else 0, sharding=members, plan=plan,
        search=search_plan(search, hp, grid, steps, plan.every if plan else 0,
                           (rank_by, rank_mode), chunk_size),
        log_every=log_every,
        frozen_copy=frozen_copy_pays(members.mesh.devices.flat[0].platform, copy_bytes,
                                     pbt=search is not None and not isinstance(
                                         search, SuccessiveHalving)),
        eval_chunk=check_eval_chunk_size(eval_chunk_size, plan, members.mesh.size),
    )
    call = SweepCall(
        spec=spec, hp=hp, key=key, data=data, streamed=streamed,
        shared=put_on_mesh((None if init_fn else params, None if streamed else data,
                            key_bits(key)), replicated),
        eval_data=put_on_mesh(eval_data, replicated),
        shapes={"params": None if init_fn else params, "data": STREAM if streamed else data,
                "eval_data": eval_data},
        chunks=member_chunks(hp, k, chunk_size, members), chunk_size=chunk_size,
        members=members, replicated=replicated, ranking=(rank_by, rank_mode),
        progress=progress, segment_steps=segment_steps, allow_short=allow_short,
        checkpoint_dir=checkpoint_dir, checkpoint_every=ck_every, search=search,
    )
    if isinstance(search, SuccessiveHalving):
        return run_halving_sweep(call)
    return run_sweep(call)
