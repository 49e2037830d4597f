r"""Errors that name the culprit: which user function failed while being traced.

``fit`` and ``sweep`` trace the user's ``loss_fn``, the optimizer (or
``optimizer_fn``) and more inside one compiled program, so an error raised
there surfaces from deep inside ``jax.jit`` and ``lax.scan``. The wrappers
here attach the name of the function that raised it:

* a traced value used as a Python value (:class:`jax.errors.ConcretizationTypeError`:
  an ``if`` on an array, ``float()`` of one, a shape computed from values)
  becomes a ``TypeError`` whose message starts with the culprit's name and
  ends with JAX's own message;
* any other exception is re-raised unchanged, with a note naming the culprit.

An exception is attributed once, by the innermost wrapper it passes through.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Any

import jax

from jaxopt_core.core import schedules as jc_schedules
from jaxopt_core.core.base import Optimizer

# The attribute that marks an exception as already attributed.
_CULPRIT = "jaxopt_core_culprit"

PYTHON_VALUE = (
    "as a Python value (an `if` or `while` on an array, `float()`/`int()` of one, "
    "or a shape computed from values)"
)


def naming_errors(culprit: str, fn: Callable, what: str = "") -> Callable:
    """``fn``, whose exceptions name ``culprit`` (see the module notes).

    Args:
        culprit: the argument name to blame, e.g. ``"loss_fn"``.
        fn: the function to wrap.
        what: what a traced Python value means for this culprit, used in the
            ``TypeError`` (default: a generic explanation).

    Returns:
        A function with ``fn``'s signature.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxopt_core.training.culprits import naming_errors
        >>> def loss(w):
        ...     return w if w > 0 else -w
        >>> try:
        ...     jax.jit(naming_errors("loss_fn", loss))(jnp.ones(()))
        ... except TypeError as err:
        ...     print(str(err).split(" (")[0])
        loss_fn uses a traced value as a Python value
    """

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except jax.errors.ConcretizationTypeError as err:
            if getattr(err, _CULPRIT, None) is not None:
                raise
            raise attributed(TypeError(
                f"{culprit} uses a traced value {PYTHON_VALUE}{what}: under jit, "
                "arrays that depend on the params, data or swept values are abstract; "
                f"use jnp.where / jax.lax.cond instead.\nJAX's message: {err}"
            ), culprit) from err
        except Exception as err:
            if getattr(err, _CULPRIT, None) is None:
                add_note(attributed(err, culprit), f"(raised while tracing {culprit})")
            raise

    return wrapped


def attributed(err: BaseException, culprit: str) -> BaseException:
    """Mark ``err`` as attributed to ``culprit`` (outer wrappers pass it on)."""
    setattr(err, _CULPRIT, culprit)
    return err


def add_note(err: BaseException, note: str) -> None:
    """``err.add_note(note)`` (Python >= 3.11); before, the note is appended
    to a string message."""
    if hasattr(err, "add_note"):
        err.add_note(note)
    elif err.args and isinstance(err.args[0], str):
        err.args = (f"{err.args[0]}\n{note}", *err.args[1:])


def culprit_of(err: BaseException) -> str | None:
    """The culprit ``err`` was attributed to, or ``None``."""
    return getattr(err, _CULPRIT, None)


def naming_optimizer_errors(culprit: str, optimizer: Any, what: str = "") -> Optimizer:
    """``optimizer`` with its ``init`` and ``update`` wrapped by :func:`naming_errors`."""
    return Optimizer(
        naming_errors(culprit, optimizer.init, what), naming_errors(culprit, optimizer.update, what)
    )


def optax_schedule_in(err: BaseException) -> str | None:
    """The optax schedule that raised ``err`` (the outermost optax schedule
    frame of its traceback, i.e. the one the user called), or ``None``."""
    for frame, _ in traceback.walk_tb(err.__traceback__):
        module = frame.f_globals.get("__name__", "")
        if module.startswith(("optax.schedules", "optax._src.schedule")):
            return frame.f_code.co_name
    return None


def schedule_hint(err: BaseException) -> str:
    """A sentence for an error raised by an optax schedule that branches in
    Python on a swept value, naming the jaxopt_core schedule to use instead;
    empty when ``err`` did not come from an optax schedule.

    Example:
        >>> import jax, optax
        >>> from jaxopt_core.training.culprits import schedule_hint
        >>> try:
        ...     jax.vmap(lambda p: optax.warmup_cosine_decay_schedule(0.0, p, 5, 50)(3))(
        ...         jax.numpy.ones(2))
        ... except jax.errors.ConcretizationTypeError as err:
        ...     print(schedule_hint(err).split(",")[0].strip())
        (optax.warmup_cosine_decay_schedule branches in Python on its arguments
    """
    name = optax_schedule_in(err)
    if name is None:
        return ""
    if hasattr(jc_schedules, name):
        instead = f"jaxopt_core.{name} takes the same arguments, all of which may be swept"
    else:
        instead = "the jaxopt_core schedules take arguments that may all be swept"
    return (f" (optax.{name} branches in Python on its arguments, so they cannot be "
            f"swept; {instead})")
