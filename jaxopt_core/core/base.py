"""The optimizer protocol: ``Optimizer(init, update)``, ``chain`` and ``apply_updates``.

An optimizer is a pair of pure functions over pytrees::

    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = apply_updates(params, updates)

This is the same shape as :class:`optax.GradientTransformation`, so a jaxopt_core
optimizer can be used anywhere optax expects one (``optax.chain``, flax's
``nnx.Optimizer``, equinox training loops) and optax transforms can be used in
:func:`chain`.
"""

from __future__ import annotations

import inspect
import types
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Params = Any
Updates = Any
OptState = Any
# A schedule maps the step count (0 on the first update) to a value. The type
# aliases are optax's own objects, so an annotation ``learning_rate:
# ScalarOrSchedule`` is the very annotation optax's tools look for.
Schedule = optax.Schedule
ScalarOrSchedule = optax.ScalarOrSchedule


class Optimizer(NamedTuple):
    """A pure optimizer: ``init(params) -> state`` and
    ``update(grads, state, params=None) -> (updates, new_state)``.

    ``updates`` are *added* to the params (the sign of the step is already in
    them), as in optax. Both functions are pure and work on any pytree, so they
    can be jitted, vmapped and differentiated.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> opt = jc.sgd(0.1)
        >>> params = {"w": jnp.ones(2)}
        >>> state = opt.init(params)
        >>> updates, state = opt.update({"w": jnp.ones(2)}, state, params)
        >>> jc.apply_updates(params, updates)["w"]
        Array([0.9, 0.9], dtype=float32)
    """

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Updates, OptState]]


# The state of a transform that keeps none: optax's class itself, so states
# mixing jaxopt_core and optax transforms are one pytree type.
EmptyState = optax.EmptyState


# Layout marks. ``fit`` and ``sweep`` may pack the params into a few flat
# buffers (jaxopt_core.training.layout); that is only equivalent for an update
# that treats every entry alike, whatever leaf it sits in. Transforms declare
# it with ``mark_elementwise``; ``chain`` remembers its members so the
# declaration of a chain is that of all its members (optax transforms inside
# are judged by the training layer, which knows which of them are safe).
_ELEMENTWISE: weakref.WeakSet = weakref.WeakSet()
_TREE_DEPENDENT: weakref.WeakSet = weakref.WeakSet()
_CHAIN_MEMBERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def mark_elementwise(opt: Optimizer) -> Optimizer:
    """Declare that ``opt`` is elementwise and leaf-structure free: each entry
    of its update depends only on the same entry of the gradient, params and
    state (and on scalars such as the step count), so running it on the params
    packed into flat buffers gives the same numbers as on the tree. Returns
    ``opt``. Every jaxopt_core transform without a mask or a per-leaf
    statistic carries this mark."""
    _ELEMENTWISE.add(opt.update)
    return opt


def mark_tree_dependent(opt: Optimizer) -> Optimizer:
    """Declare that ``opt`` depends on the leaf structure of the params (a
    mask, a per-leaf statistic), so training loops must keep the tree layout
    for it. Returns ``opt``."""
    _TREE_DEPENDENT.add(opt.update)
    _ELEMENTWISE.discard(opt.update)
    return opt


def is_elementwise(opt: Any) -> bool:
    """Whether ``opt`` carries :func:`mark_elementwise` (for a :func:`chain`:
    whether every member does). Unmarked objects, optax's included, are
    not elementwise as far as this function knows."""
    try:
        return opt.update in _ELEMENTWISE
    except TypeError:
        return False


def chain_members(opt: Any) -> tuple | None:
    """The transforms a :func:`chain` was built from, or ``None`` for anything
    that is not a jaxopt_core chain."""
    try:
        return _CHAIN_MEMBERS.get(opt.update)
    except TypeError:
        return None


def needs_tree_layout(opt: Any) -> bool:
    """Whether ``opt`` was declared leaf-structure dependent (see
    :func:`mark_tree_dependent`); :func:`chain` propagates the mark."""
    try:
        return opt.update in _TREE_DEPENDENT
    except TypeError:
        return False


def identity() -> Optimizer:
    """The transform that leaves updates unchanged (state: :class:`EmptyState`).

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> jc.identity().update(jnp.ones(2), jc.EmptyState())[0]
        Array([1., 1.], dtype=float32)
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        return updates, state

    return mark_elementwise(Optimizer(init, update))


def accepts_extra_args(transform: Any) -> bool:
    """Whether :func:`chain` passes extra keyword arguments (``value=loss``
    ...) to ``transform.update``.

    For optax objects this is optax's own rule: a
    ``GradientTransformationExtraArgs`` gets them, a plain
    ``GradientTransformation`` does not. Anything else (every jaxopt_core
    transform, a user's ``Optimizer(init, update)``) gets them when its
    ``update`` takes ``**kwargs``.

    Example:
        >>> import optax, jaxopt_core as jc
        >>> from jaxopt_core.core.base import accepts_extra_args
        >>> accepts_extra_args(jc.adam(0.1)), accepts_extra_args(optax.polyak_sgd())
        (True, True)
        >>> accepts_extra_args(optax.scale_by_adam())
        False
    """
    if isinstance(transform, optax.GradientTransformationExtraArgs):
        return True
    if isinstance(transform, optax.GradientTransformation):
        return False
    update = transform.update
    if type(update) is types.FunctionType and not any(
            hasattr(update, a) for a in ("__wrapped__", "__signature__", "_partialmethod",
                                         "__partialmethod__")):
        # What inspect.signature reads for a plain function, without building it
        # (a sweep builds the optimizer once per member).
        return bool(update.__code__.co_flags & inspect.CO_VARKEYWORDS)
    try:
        parameters = inspect.signature(transform.update).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def chain(*transforms: Any) -> Optimizer:
    r"""Compose transforms left to right: :math:`u = T_n(\dots T_2(T_1(g)))`.

    Each element may be a jaxopt_core :class:`Optimizer` or any object with
    optax's ``init``/``update`` shape (an ``optax.GradientTransformation``).
    The state is the tuple of the members' states. Extra keyword arguments of
    ``update`` (``update(g, s, p, value=loss)``) reach the members that take
    them (see :func:`accepts_extra_args`) and are dropped for the others, as
    in ``optax.chain``.

    Example:
        >>> import jax.numpy as jnp, optax, jaxopt_core as jc
        >>> opt = jc.chain(optax.clip_by_global_norm(1.0), jc.scale_by_adam(),
        ...                jc.scale_by_learning_rate(1e-3))
        >>> state = opt.init({"w": jnp.zeros(3)})
    """
    for i, t in enumerate(transforms):
        if not (callable(getattr(t, "init", None)) and callable(getattr(t, "update", None))):
            raise TypeError(
                f"chain: argument {i} must have init and update functions "
                f"(a jaxopt_core.Optimizer or optax.GradientTransformation), got {t!r}"
            )

    def init(params):
        return tuple(t.init(params) for t in transforms)

    takes_extra = tuple(accepts_extra_args(t) for t in transforms)

    def update(updates, state, params=None, **extra_args):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise ValueError(
                f"chain of {len(transforms)} transforms got a state that is not a tuple "
                f"of {len(transforms)} states: {jax.tree.structure(state)}"
            )
        new_state = []
        for t, s, takes in zip(transforms, state, takes_extra):
            if takes:
                updates, s = t.update(updates, s, params, **extra_args)
            else:
                updates, s = t.update(updates, s, params)
            new_state.append(s)
        return updates, tuple(new_state)

    opt = Optimizer(init, update)
    _CHAIN_MEMBERS[update] = tuple(transforms)
    if any(needs_tree_layout(t) for t in transforms):
        mark_tree_dependent(opt)
    elif all(is_elementwise(t) for t in transforms):
        mark_elementwise(opt)
    return opt


def apply_updates(params: Params, updates: Updates) -> Params:
    """Return ``params + updates``, leaf by leaf, in each parameter's own dtype.

    The sum is taken in the promoted dtype (an update computed in float32 for a
    bfloat16 parameter is added before rounding) and cast back, so a parameter
    never changes dtype. ``None`` leaves of ``params`` stay ``None``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> p = {"w": jnp.ones(2, jnp.bfloat16), "b": None}
        >>> jc.apply_updates(p, {"w": jnp.full(2, 0.5), "b": None})["w"].dtype
        dtype(bfloat16)
    """

    def add(p, u):
        if p is None:
            return None
        p = jnp.asarray(p)
        return jnp.asarray(p + u).astype(p.dtype)

    return jax.tree.map(add, params, updates, is_leaf=lambda x: x is None)


def check_same_structure(
    grads: Updates, reference: Any, where: str, what: str = "optimizer state"
) -> None:
    """Raise a ``ValueError`` naming both structures when ``grads`` does not
    have the structure of ``reference`` (the tree the state was built for, or
    the params). Runs at trace time only: free inside ``jit``."""
    g = jax.tree.structure(grads)
    r = jax.tree.structure(reference)
    if g != r:
        raise ValueError(
            f"{where}: the gradient tree does not match the {what} "
            f"(was the state initialised with other params?).\n  grads: {g}\n  {what}: {r}"
        )
