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

from jaxopt_core.core.base import apply_updates


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
    check_callable("loss_fn", loss_fn)
    check_optimizer("optimizer", optimizer)

    def step(params, opt_state, batch):
        return apply_step(loss_fn, optimizer, params, opt_state, batch)

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


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
