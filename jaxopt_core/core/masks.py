"""Masks: which leaves of a parameter tree a penalty, decay or prox applies to.

A mask is a pytree of Python bools with the structure of the params, or a
prefix of it (one bool then covers a whole subtree), or a callable
``params -> such a tree``. ``True`` means "apply here".
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

Mask = Any  # pytree of bools, a prefix of one, or a callable params -> such a tree


def resolve_mask(mask: Mask | None, params: Any) -> Any:
    """The mask as a tree of bools with exactly the structure of ``params``.

    ``None`` means every leaf. A bool at an inner node of the mask covers the
    whole subtree below it in ``params``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> p = {"dense": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}, "out": jnp.ones(2)}
        >>> jc.resolve_mask({"dense": True, "out": False}, p)
        {'dense': {'b': True, 'w': True}, 'out': False}
    """
    if mask is None:
        return jax.tree.map(lambda _: True, params)
    if callable(mask):
        mask = mask(params)
    try:
        return jax.tree.map(lambda m, sub: jax.tree.map(lambda _: _as_bool(m), sub), mask, params)
    except ValueError as err:
        raise ValueError(
            "mask must have the structure of the params, or a prefix of it.\n"
            f"  mask:   {jax.tree.structure(mask)}\n"
            f"  params: {jax.tree.structure(params)}"
        ) from err


def _as_bool(m: Any) -> bool:
    if isinstance(m, (bool, np.bool_)):
        return bool(m)
    raise TypeError(
        f"mask leaves must be Python bools (the mask is structural, not data); got {m!r}"
    )


def weights_only_mask(params: Any) -> Any:
    """The common mask "weights only": ``True`` for leaves with two or more
    dimensions (kernels, embeddings), ``False`` for biases, scales and other
    0-D or 1-D leaves.

    Pass it (the function itself) as ``mask=`` to penalties, proximal steps or
    ``add_decayed_weights`` so biases are not regularized.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> jc.weights_only_mask({"w": jnp.ones((3, 2)), "b": jnp.ones(2)})
        {'b': False, 'w': True}
    """
    return jax.tree.map(lambda x: np.ndim(x) >= 2, params)
