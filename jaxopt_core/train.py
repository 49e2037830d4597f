r"""Training loops: a jit-compiled step, and whole runs as one compiled ``lax.scan``.

:func:`make_train_step` is the building block for a loop you write yourself;
:func:`fit` runs the whole loop for you: full-batch gradient descent, or
minibatch SGD reshuffled every epoch, with no Python loop over steps and no
host synchronisation until the run is over.

One step, for ``loss_fn(params, batch)`` and an optimizer :math:`(\mathrm{init},
\mathrm{update})`:

.. math::
    \ell_t, g_t = \mathrm{loss}(w_t, B_t), \nabla_w \mathrm{loss}(w_t, B_t), \quad
    u_t, s_{t+1} = \mathrm{update}(g_t, s_t, w_t), \quad w_{t+1} = w_t + u_t .

Minibatches: each epoch is a fresh permutation of the ``n`` examples drawn
from ``jax.random.fold_in(key, epoch)`` and cut into ``n // batch_size``
batches; the last ``n % batch_size`` examples of each permutation are dropped
(a different few every epoch), so every batch has the same shape and an epoch
visits each kept example exactly once. Step ``t`` uses batch
``t % (n // batch_size)`` of epoch ``t // (n // batch_size)``.

Inside :func:`fit` the params and optimizer state are kept in the flat layout
of :mod:`jaxopt_core.flat` (a few long buffers), unless the optimizer
depends on the leaf structure; results come back in the user's tree layout.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_core.base import apply_updates, needs_tree_layout
from jaxopt_core.flat import ravel, unravel_tree
from jaxopt_core.progress import ProgressBar, report_every, tick

LAYOUTS = ("auto", "flat", "tree")


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
        params: the trained params, with the structure of the params passed in.
        opt_state: the final optimizer state in the tree layout, i.e. with the
            structure ``optimizer.init(params)`` has, so training can go on
            with :func:`make_train_step` (``fit`` itself always starts from
            ``optimizer.init``).
        losses: ``[steps]``, the loss of step ``t`` evaluated at the params
            *before* that step's update, on that step's batch.
    """

    params: Any
    opt_state: Any
    losses: jax.Array


def make_train_step(
    loss_fn: Callable[[Any, Any], jax.Array], optimizer: Any, *, donate: bool = True
) -> Callable[[Any, Any, Any], tuple[Any, Any, jax.Array]]:
    """A jit-compiled training step ``step(params, opt_state, batch)``.

    Computes the loss and its gradient at ``params``, asks the optimizer for
    the update and applies it. With ``donate=True`` the ``params`` and
    ``opt_state`` buffers passed in are donated to XLA, which writes the new
    ones in place: do not use the old arrays after the call (rebind them to
    the results, as in the example).

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``.
        optimizer: a :class:`~jaxopt_core.Optimizer` (or optax transformation).
        donate: donate the params and opt_state buffers (default True).

    Returns:
        ``step(params, opt_state, batch) -> (params, opt_state, loss)``, where
        ``loss`` is the loss at the params passed in.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> def loss(w, batch):
        ...     x, y = batch
        ...     return jnp.mean((x @ w - y) ** 2)
        >>> opt = jc.sgd(0.1)
        >>> step = jc.make_train_step(loss, opt)
        >>> w = jnp.zeros(2)
        >>> state = opt.init(w)
        >>> batch = (jnp.eye(2), jnp.ones(2))
        >>> for _ in range(3):
        ...     w, state, l = step(w, state, batch)
        >>> float(l) < 1.0
        True
    """
    _check_callable("loss_fn", loss_fn)
    _check_optimizer("optimizer", optimizer)

    def step(params, opt_state, batch):
        return _update(loss_fn, optimizer, params, opt_state, batch)

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


def fit(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    optimizer: Any,
    data: Any,
    *,
    steps: int,
    batch_size: int | None = None,
    key: jax.Array | None = None,
    progress: bool = False,
    layout: str = "auto",
) -> FitResult:
    """Train ``params`` for ``steps`` steps in one compiled ``lax.scan``.

    ``batch_size=None`` is full-batch gradient descent: every step sees all
    of ``data``. An int gives minibatch SGD, reshuffled every epoch (see the
    module notes: each epoch is a permutation, cut into ``n // batch_size``
    batches, the remainder dropped).

    The compiled program is cached on ``(loss_fn, optimizer, steps,
    batch_size, layout, progress)`` and the shapes and dtypes of ``params``,
    ``data`` and ``key``: calling ``fit`` again with the same function and
    optimizer *objects* and new values compiles nothing. (A lambda or an
    optimizer built anew in each call is a new object, hence a new compile.)

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``; it receives the user's
            params tree whatever the layout.
        params: initial params, any pytree of float arrays.
        optimizer: a :class:`~jaxopt_core.Optimizer` or optax transformation.
        data: with ``batch_size=None``, any pytree, passed whole as ``batch``;
            otherwise a pytree of arrays sharing a leading example axis of
            length ``n``, e.g. ``(X, y)``; batches are pytrees of the same
            structure with leading axis ``batch_size``.
        steps: number of optimizer steps, an int >= 1.
        batch_size: ``None`` or an int in ``[1, n]``.
        key: PRNG key for the minibatch order (``jax.random.key`` or a legacy
            ``PRNGKey``); default ``jax.random.key(0)``. Unused when
            ``batch_size`` is None.
        progress: show a tqdm bar that advances while the program runs.
        layout: ``"auto"`` (flat unless ``needs_tree_layout(optimizer)``),
            ``"flat"`` or ``"tree"``; see :mod:`jaxopt_core.flat`. Results
            are in the tree layout either way.

    Returns:
        A :class:`FitResult` ``(params, opt_state, losses)``.

    Raises:
        TypeError / ValueError: an argument has the wrong type or value (the
            message names it).

    Example:
        >>> import jax, jax.numpy as jnp, jaxopt_core as jc
        >>> X = jax.random.normal(jax.random.key(1), (64, 3))
        >>> y = X @ jnp.array([1.0, -2.0, 0.5])
        >>> def mse(w, batch):
        ...     x, t = batch
        ...     return jnp.mean((x @ w - t) ** 2)
        >>> res = jc.fit(mse, jnp.zeros(3), jc.adam(0.1), (X, y), steps=200, batch_size=16)
        >>> res.losses.shape, bool(res.losses[-1] < 1e-2 * res.losses[0])
        ((200,), True)
    """
    _check_callable("loss_fn", loss_fn)
    _check_optimizer("optimizer", optimizer)
    steps = check_steps(steps)
    check_batch_size(batch_size, data)
    key = as_key(key)
    flat = use_flat(layout, needs_tree_layout(optimizer))
    every = report_every(steps) if progress else 0
    with ProgressBar(progress, total=steps, desc="fit") as bar:
        out = _fit_program(
            params, data, key, bar.token_array(),
            loss_fn=loss_fn, optimizer=optimizer, steps=steps,
            batch_size=batch_size, flat=flat, every=every,
        )
        if progress:
            jax.block_until_ready(out)
    return FitResult(*out)


@functools.partial(
    jax.jit, static_argnames=("loss_fn", "optimizer", "steps", "batch_size", "flat", "every")
)
def _fit_program(params, data, key, token, *, loss_fn, optimizer, steps, batch_size, flat, every):
    p0 = ravel(params) if flat else params
    s0 = optimizer.init(p0)
    loss_of = layout_loss(loss_fn, flat)
    batcher = Batcher(data, batch_size)

    def body(carry, t):
        p, s, perm = carry
        perm = batcher.refresh(perm, key, t)
        p, s, loss = _update(loss_of, optimizer, p, s, batcher.batch(data, perm, t))
        if every:
            tick(token, t + 1, every)
        return (p, s, perm), loss

    carry = (p0, s0, batcher.initial_perm())
    (p, s, _), losses = jax.lax.scan(body, carry, jnp.arange(steps, dtype=jnp.int32))
    if flat:
        p, s = p.unravel(), unravel_tree(s)
    return p, s, losses


# ---------------------------------------------------------------------------
# Pieces shared with jaxopt_core.sweep (not public API).


def _update(loss_of, optimizer, p, s, batch):
    """One optimizer step: ``(new params, new state, loss at p)``."""
    loss, grads = jax.value_and_grad(loss_of)(p, batch)
    updates, s = optimizer.update(grads, s, p)
    return apply_updates(p, updates), s, loss


def layout_loss(loss_fn, flat: bool):
    """``loss_fn`` taking params in the chosen layout (it always sees the tree)."""
    if not flat:
        return loss_fn
    return lambda p, batch: loss_fn(p.unravel(), batch)


class Batcher:
    """Minibatch bookkeeping inside a scan (static: ``n`` and ``batch_size``).

    The current epoch's permutation is carried in the scan and redrawn, behind
    a ``lax.cond``, at the first step of each epoch; under ``jax.vmap`` with
    one key per member the predicate (a function of the shared step count)
    stays unbatched, so the cond stays a cond.
    """

    def __init__(self, data, batch_size: int | None):
        self.batch_size = batch_size
        self.n = 0 if batch_size is None else jax.tree.leaves(data)[0].shape[0]
        self.per_epoch = 1 if batch_size is None else self.n // batch_size

    def initial_perm(self) -> jax.Array:
        return jnp.zeros([self.n], jnp.int32)

    def refresh(self, perm, key, t):
        if self.batch_size is None:
            return perm

        def draw():
            epoch_key = jax.random.fold_in(key, t // self.per_epoch)
            return jax.random.permutation(epoch_key, self.n).astype(jnp.int32)

        return jax.lax.cond(t % self.per_epoch == 0, draw, lambda: perm)

    def batch(self, data, perm, t):
        if self.batch_size is None:
            return data
        start = (t % self.per_epoch) * self.batch_size
        idx = jax.lax.dynamic_slice_in_dim(perm, start, self.batch_size)
        return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)


def use_flat(layout: str, tree_dependent: bool) -> bool:
    """Resolve ``layout`` to "run on the flat layout?"."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got layout={layout!r}")
    if layout == "flat" and tree_dependent:
        raise ValueError(
            "layout='flat' was asked for, but this optimizer depends on the leaf "
            "structure of the params (a mask or per-leaf statistic); use layout='auto' "
            "or layout='tree'"
        )
    return layout == "flat" or (layout == "auto" and not tree_dependent)


def check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be an int >= 1; got steps={steps!r}")
    if steps < 1:
        raise ValueError(f"steps must be an int >= 1; got steps={steps!r}")
    return int(steps)


def check_batch_size(batch_size: Any, data: Any) -> None:
    """``batch_size`` is None, or an int in [1, n] and ``data`` has leading axis n."""
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"batch_size must be None or an int; got batch_size={batch_size!r}")
    leaves = jax.tree.leaves_with_path(data)
    if not leaves:
        raise ValueError("data has no arrays to draw minibatches from (batch_size is set)")
    sizes = {}
    for path, x in leaves:
        shape = jnp.shape(x)
        name = "data" + jax.tree_util.keystr(path)
        if not shape:
            raise ValueError(
                f"with batch_size set, every array in data needs a leading example axis; "
                f"{name} is a scalar"
            )
        sizes[name] = shape[0]
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise ValueError(
            f"the arrays in data must share their leading (example) axis; got {listing}"
        )
    n = next(iter(sizes.values()))
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, n={n}]; got batch_size={batch_size}")


def as_key(key: Any) -> jax.Array:
    """A typed PRNG key: ``key`` itself, a legacy uint32 key wrapped, or key(0)."""
    if key is None:
        return jax.random.key(0)
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape:
            raise ValueError(f"key must be a single PRNG key; got shape {key.shape}")
        return key
    arr = jnp.asarray(key)
    if arr.dtype == jnp.uint32 and arr.shape == (2,):
        return jax.random.wrap_key_data(arr)
    raise TypeError(
        f"key must be a PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)); got {key!r}"
    )


def _check_callable(name: str, fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable; got {fn!r}")


def _check_optimizer(name: str, opt: Any) -> None:
    if not (callable(getattr(opt, "init", None)) and callable(getattr(opt, "update", None))):
        raise TypeError(
            f"{name} must have init and update functions (a jaxopt_core.Optimizer or "
            f"optax.GradientTransformation); got {opt!r}"
        )
