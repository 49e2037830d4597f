r"""Combinators: apply a transform to part of the tree, a transform per label,
zero or freeze leaves, and skip non-finite updates.

Names, arguments and state classes are optax's (the state classes *are*
optax's, re-exported, so states built by jaxopt_core and by optax are the same
pytrees and optax's tools that inspect states work on ours). Every wrapper
forwards extra keyword arguments of ``update`` (``value=loss`` ...) to the
transform it wraps when that transform accepts them, and drops them
otherwise, as optax's ``with_extra_args_support`` does.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxopt_core.core.base import (
    EmptyState,
    Optimizer,
    accepts_extra_args,
    check_same_structure,
    is_elementwise,
    mark_elementwise,
    mark_tree_dependent,
    needs_tree_layout,
)
from jaxopt_core.core.checks import check_number
from jaxopt_core.core.numerics import safe_increment, zero_count

MaskedState = optax.MaskedState
MaskedNode = optax.MaskedNode
MultiTransformState = optax.MultiTransformState
ApplyIfFiniteState = optax.ApplyIfFiniteState


def update_with_extra_args(transform: Any, updates, state, params=None, **extra_args):
    """``transform.update(updates, state, params, **extra_args)``, the extra
    arguments dropped when the transform does not accept them (see
    :func:`jaxopt_core.core.base.accepts_extra_args`)."""
    if extra_args and accepts_extra_args(transform):
        return transform.update(updates, state, params, **extra_args)
    return transform.update(updates, state, params)


def inherit_layout_mark(opt: Optimizer, inner: Any) -> Optimizer:
    """Give a wrapper the layout mark of the transform it wraps (elementwise,
    tree-dependent, or none) and return it."""
    if needs_tree_layout(inner):
        return mark_tree_dependent(opt)
    if is_elementwise(inner):
        return mark_elementwise(opt)
    return opt


def check_transform(name: str, value: Any) -> Any:
    """Raise a ``TypeError`` naming ``name`` unless ``value`` has callable
    ``init`` and ``update`` (a jaxopt_core or optax transform)."""
    if not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
        raise TypeError(
            f"{name} must be a transform with init and update (a jaxopt_core.Optimizer "
            f"or optax.GradientTransformation); got {name}={value!r}"
        )
    return value


def is_mask_fn(mask: Any) -> bool:
    """Whether ``mask`` is a function of the params rather than a tree of
    bools: a callable whose pytree leaves are all callables (a callable
    pytree of bools, such as an equinox module holding bools, is a tree)."""
    flags = jax.tree.leaves(jax.tree.map(callable, mask))
    return bool(flags) and all(flags)


def _hide(tree: Any, mask_tree: Any) -> Any:
    """``tree`` with the subtrees the mask marks False replaced by MaskedNode."""
    return jax.tree.map(lambda keep, sub: sub if keep else MaskedNode(), mask_tree, tree)


def set_to_zero() -> Optimizer:
    """The transform whose updates are all zero (state: ``EmptyState``).

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> jc.set_to_zero().update(jnp.ones(2), jc.EmptyState())[0]
        Array([0., 0.], dtype=float32)
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(jnp.zeros_like, updates), state

    return mark_elementwise(Optimizer(init, update))


def masked(
    inner: Any,
    mask: Any,
    *,
    mask_compatible_extra_args: bool = False,
) -> Optimizer:
    r"""Apply ``inner`` only to the leaves ``mask`` selects; the others pass
    through unchanged:

    .. math::
        u_i = \text{inner}(g)_i \ \text{ where } \text{mask}_i, \qquad
        u_i = g_i \ \text{ elsewhere}.

    ``inner`` sees (and keeps state for) only the selected leaves; the others
    are ``optax.MaskedNode()`` placeholders in its input and state.

    Args:
        inner: the transform to apply.
        mask: a pytree of bools with the structure of the params or a prefix
            of it (one bool covers a subtree), or a callable returning one; it
            is called with the params in ``init`` and with the updates in
            ``update``.
        mask_compatible_extra_args: also mask extra ``update`` arguments that
            have the structure of the updates.

    Returns:
        An :class:`~jaxopt_core.Optimizer` with state ``MaskedState(inner_state)``,
        marked tree-dependent.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.masked(jc.scale(-1.0), {"w": True, "b": False})
        >>> g = {"w": jnp.ones(2), "b": jnp.ones(1)}
        >>> u, _ = t.update(g, t.init(g))
        >>> u["w"], u["b"]
        (Array([-1., -1.], dtype=float32), Array([1.], dtype=float32))
    """
    check_transform("inner", inner)

    def mask_for(tree):
        return mask(tree) if is_mask_fn(mask) else mask

    def init(params):
        if jax.tree.leaves(params):
            return MaskedState(inner_state=inner.init(_hide(params, mask_for(params))))
        # A tree without arrays has nothing to mask; it may not even have the
        # mask's structure (optax.tree.map_params initialises with a
        # placeholder node).
        try:
            hidden = _hide(params, mask_for(params))
        except Exception:  # noqa: BLE001 - any failure of a mask on a placeholder
            hidden = params
        return MaskedState(inner_state=inner.init(hidden))

    def update(updates, state, params=None, **extra_args):
        if params is not None:
            check_same_structure(updates, params, "masked", "params")
        m = mask_for(updates)
        structure = jax.tree.structure(updates)
        extra = {
            k: _hide(v, m)
            if mask_compatible_extra_args and jax.tree.structure(v) == structure
            else v
            for k, v in extra_args.items()
        }
        hidden_params = None if params is None else _hide(params, m)
        new, inner_state = update_with_extra_args(
            inner, _hide(updates, m), state.inner_state, hidden_params, **extra
        )
        out = jax.tree.map(lambda keep, n, old: n if keep else old, m, new, updates)
        return out, MaskedState(inner_state=inner_state)

    return mark_tree_dependent(Optimizer(init, update))


def freeze(mask: Any) -> Optimizer:
    """Zero the updates of the leaves ``mask`` selects (``masked(set_to_zero(), mask)``):
    those parameters stay fixed.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.freeze({"w": False, "b": True})
        >>> g = {"w": jnp.ones(2), "b": jnp.ones(1)}
        >>> t.update(g, t.init(g))[0]["b"]
        Array([0.], dtype=float32)
    """
    return masked(set_to_zero(), mask)


def multi_transform(
    transforms: Mapping[Hashable, Any],
    param_labels: Any,
    *,
    mask_compatible_extra_args: bool = False,
) -> Optimizer:
    """Apply a different transform to each group of leaves: leaf ``i`` is
    updated by ``transforms[label_i]``.

    Args:
        transforms: ``{label: transform}``.
        param_labels: a pytree of labels with the structure of the params (or
            a prefix of it), or a callable returning one (called with the
            params in ``init`` and with the updates in ``update``).
        mask_compatible_extra_args: see :func:`masked`.

    Returns:
        An :class:`~jaxopt_core.Optimizer` with state
        ``MultiTransformState(inner_states={label: MaskedState})``, marked
        tree-dependent.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.multi_transform({"a": jc.sgd(0.1), "f": jc.set_to_zero()},
        ...                        {"w": "a", "b": "f"})
        >>> g = {"w": jnp.ones(1), "b": jnp.ones(1)}
        >>> u, _ = t.update(g, t.init(g))
        >>> u["w"], u["b"]
        (Array([-0.1], dtype=float32), Array([0.], dtype=float32))
    """
    if not isinstance(transforms, Mapping):
        raise TypeError(f"transforms must be a mapping label -> transform; got {transforms!r}")
    for label, t in transforms.items():
        check_transform(f"transforms[{label!r}]", t)
    if not is_mask_fn(param_labels):
        _check_labels(param_labels, transforms)

    def parts(labels):
        _check_labels(labels, transforms)
        return {
            group: masked(
                t,
                jax.tree.map(lambda label, g=group: label == g, labels),
                mask_compatible_extra_args=mask_compatible_extra_args,
            )
            for group, t in transforms.items()
        }

    def labels_for(tree):
        return param_labels(tree) if is_mask_fn(param_labels) else param_labels

    def init(params):
        states = {g: t.init(params) for g, t in parts(labels_for(params)).items()}
        return MultiTransformState(states)

    def update(updates, state, params=None, **extra_args):
        new_states = {}
        for group, t in parts(labels_for(updates)).items():
            updates, new_states[group] = t.update(
                updates, state.inner_states[group], params, **extra_args
            )
        return updates, MultiTransformState(new_states)

    return mark_tree_dependent(Optimizer(init, update))


def _check_labels(labels: Any, transforms: Mapping) -> None:
    missing = set(jax.tree.leaves(labels)) - set(transforms)
    if missing:
        raise ValueError(
            f"param_labels has labels with no transform: {sorted(map(repr, missing))}; "
            f"transforms has {sorted(map(repr, transforms))}"
        )


def apply_if_finite(inner: Any, max_consecutive_errors: int) -> Optimizer:
    r"""Apply ``inner`` only when every entry of the updates is finite;
    otherwise return zero updates and keep ``inner``'s state, unless more
    than ``max_consecutive_errors`` non-finite updates came in a row (then
    the update is applied whatever it holds).

    The state counts the current run of non-finite updates
    (``notfinite_count``), whether the last one was finite (``last_finite``)
    and all non-finite updates so far (``total_notfinite``). The finiteness
    test covers all entries whatever their leaves, so the transform has the
    layout mark of ``inner``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> t = jc.apply_if_finite(jc.sgd(1.0), max_consecutive_errors=2)
        >>> u, s = t.update(jnp.array([jnp.nan]), t.init(jnp.zeros(1)))
        >>> u, int(s.total_notfinite)
        (Array([0.], dtype=float32), 1)
    """
    check_transform("inner", inner)
    check_number("max_consecutive_errors", max_consecutive_errors)

    def init(params):
        return ApplyIfFiniteState(
            notfinite_count=zero_count(),
            last_finite=jnp.array(True, jnp.bool_),
            total_notfinite=zero_count(),
            inner_state=inner.init(params),
        )

    def update(updates, state, params=None, **extra_args):
        finite = jnp.array(True)
        for leaf in jax.tree.leaves(updates):
            finite = finite & jnp.all(jnp.isfinite(leaf))
        run = jnp.where(finite, 0, safe_increment(state.notfinite_count))
        new, inner_state = jax.lax.cond(
            finite | (run > max_consecutive_errors),
            lambda: update_with_extra_args(
                inner, updates, state.inner_state, params, **extra_args
            ),
            lambda: (jax.tree.map(jnp.zeros_like, updates), state.inner_state),
        )
        total = jnp.where(finite, state.total_notfinite, safe_increment(state.total_notfinite))
        return new, ApplyIfFiniteState(
            notfinite_count=run.astype(state.notfinite_count.dtype),
            last_finite=finite,
            total_notfinite=total,
            inner_state=inner_state,
        )

    return inherit_layout_mark(Optimizer(init, update), inner)
