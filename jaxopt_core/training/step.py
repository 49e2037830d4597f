r"""One training step: loss, gradient, optimizer update, applied.

.. math::
    \ell_t, g_t = \mathrm{loss}(w_t, B_t), \nabla_w \mathrm{loss}(w_t, B_t), \quad
    u_t, s_{t+1} = \mathrm{update}(g_t, s_t, w_t), \quad w_{t+1} = w_t + u_t .

:func:`make_train_step` gives it jitted, with donated buffers, for a loop you
write yourself; :func:`apply_step` is the same step unjitted, the body that
:func:`~jaxopt_core.fit` and :func:`~jaxopt_core.sweep` scan over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_core.core.base import apply_updates
from jaxopt_core.training.canonical import canonical
from jaxopt_core.training.memo import Memo, hashable_or_none

# (loss_fn, optimizer, donate) -> the jitted step, so that a step made again
# from equal objects (a re-run cell) reuses the compiled program.
_JITTED = Memo(size=64)


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

    A step made again from the same ``loss_fn`` and ``optimizer`` (or ones
    built again from equal values by jaxopt_core's or optax's code, see
    :mod:`jaxopt_core.training.canonical`) shares the compiled program.

    Returns:
        ``step(params, opt_state, batch) -> (params, opt_state, loss)``, where
        ``loss`` is the loss at the params passed in. With ``donate=True`` it
        is a :class:`DonatingStep`: params and state that share buffers (a
        state fresh from an ``init`` that keeps the params) are unaliased by
        a copy before they are donated.

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
    check_callable("loss_fn", loss_fn)
    check_optimizer("optimizer", optimizer)
    loss_fn, optimizer = canonical(loss_fn), canonical(optimizer)
    key = hashable_or_none((loss_fn, optimizer, bool(donate)))
    jitted = _JITTED.get(key)
    if jitted is None:
        def step(params, opt_state, batch):
            return apply_step(loss_fn, optimizer, params, opt_state, batch)

        jitted = jax.jit(step, donate_argnums=(0, 1) if donate else ())
        _JITTED.put(key, jitted)
    # Each step keeps its own record of the last outputs (DonatingStep).
    return DonatingStep(jitted) if donate else jitted


class DonatingStep:
    """A jitted step ``(params, opt_state, batch)`` that donates its first two
    arguments, made safe against aliased buffers.

    XLA cannot donate one buffer twice, and an ``opt_state`` fresh from
    ``init`` may hold the params' own arrays (an optax transform that keeps
    ``params`` in its state does). So when the params and state passed in
    are not the ones the previous call returned, the leaves that repeat an
    earlier leaf (the same array object, or the same device buffer) are
    copied first; in a loop that feeds each call's outputs to the next call
    nothing is checked or copied. Other attributes (``lower``, ...) are the
    jitted function's.
    """

    def __init__(self, jitted: Callable):
        self.jitted = jitted
        self._last: tuple[Any, Any] | None = None

    def __call__(self, params: Any, opt_state: Any, batch: Any) -> tuple[Any, Any, jax.Array]:
        last = self._last
        if last is None or last[0] is not params or last[1] is not opt_state:
            params, opt_state = unalias((params, opt_state))
        out = self.jitted(params, opt_state, batch)
        self._last = (out[0], out[1])
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.jitted, name)


def unalias(tree: Any) -> Any:
    """``tree`` with every array leaf that repeats an earlier leaf (the same
    object or the same device buffer) replaced by a copy, so the leaves can
    all be donated; ``tree`` itself (the same object) when none repeats.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.training.step import unalias
        >>> w = jnp.ones(2)
        >>> a, b = unalias((w, w))
        >>> a is w, b is w, bool((b == w).all())
        (True, False, True)
    """
    leaves, treedef = jax.tree.flatten(tree)
    seen: set = set()
    copies = {}
    for i, x in enumerate(leaves):
        if not isinstance(x, jax.Array):
            continue
        keys = {("id", id(x)), *(("buffer", b) for b in _buffers(x))}
        if keys & seen:
            copies[i] = jnp.copy(x)
        seen |= keys
    if not copies:
        return tree
    return jax.tree.unflatten(treedef, [copies.get(i, x) for i, x in enumerate(leaves)])


def _buffers(x: jax.Array) -> list:
    """The device buffer addresses of ``x`` (empty when they cannot be read)."""
    try:
        return [(str(s.device), s.data.unsafe_buffer_pointer()) for s in x.addressable_shards]
    except Exception:  # deleted, or a backend without raw pointers
        return []


def apply_step(loss_of: Callable, optimizer: Any, p: Any, s: Any, batch: Any) -> tuple:
    """One optimizer step, unjitted: ``(new params, new state, loss at p)``."""
    loss, grads = jax.value_and_grad(loss_of)(p, batch)
    updates, s = optimizer.update(grads, s, p)
    return apply_updates(p, updates), s, loss


def check_callable(name: str, fn: Any) -> None:
    """Raise a ``TypeError`` naming ``name`` unless ``fn`` is callable."""
    if not callable(fn):
        raise TypeError(f"{name} must be callable; got {fn!r}")


def check_optimizer(name: str, opt: Any) -> None:
    """Raise a ``TypeError`` naming ``name`` unless ``opt`` has optax's shape."""
    if not (callable(getattr(opt, "init", None)) and callable(getattr(opt, "update", None))):
        raise TypeError(
            f"{name} must have init and update functions (a jaxopt_core.Optimizer or "
            f"optax.GradientTransformation); got {opt!r}"
        )
