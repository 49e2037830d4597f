r"""The flat parameter layout: one 1-D buffer per dtype instead of a tree.

A model with thousands of small leaves (biases, norms, per-layer scales) makes
an optimizer step run thousands of tiny elementwise kernels; the same step on
one long vector is a handful of large ones. :func:`ravel` packs a pytree into
a :class:`Flat`: the leaves, raveled and concatenated, one buffer per dtype
(so bfloat16 and float32 leaves are never promoted into one), plus a static
:class:`Layout` recording where each leaf lives. :meth:`Flat.unravel` gives
the user's tree back by splitting and reshaping.

:class:`Flat` is a pytree whose children are the buffers and whose static aux
data is the layout, so every optimizer that maps over its params (all of
jaxopt_core's, and optax's elementwise transforms) works on it unchanged and
builds its state out of :class:`Flat` nodes too. That is what makes
:func:`unravel_tree` possible: it turns any tree holding :class:`Flat` nodes (an
optimizer state in the flat layout) back into the user's layout.

Differentiating through :meth:`Flat.unravel` gives a flat gradient for free:
the transpose of a split is a concatenate, so ``jax.grad(lambda f:
loss(f.unravel()))`` returns one buffer per dtype without a per-leaf gather.

Only elementwise optimizers may run on the flat layout. An update that depends
on which entries form a leaf (a mask, a per-leaf norm) must see the tree: see
:func:`jaxopt_core.base.needs_tree_layout` and ``layout="tree"`` in
:func:`~jaxopt_core.fit` and :func:`~jaxopt_core.sweep`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Layout(NamedTuple):
    """Static description of a flattened tree (hashable, so it can be jit aux data).

    Attributes:
        treedef: the tree structure of the original params.
        dtypes: the dtype (as a string) of each buffer, in buffer order.
        leaves: per leaf, in tree order, ``(buffer index, shape)``; a leaf's
            offset in its buffer is the total size of the earlier leaves of
            that buffer.
    """

    treedef: Any
    dtypes: tuple[str, ...]
    leaves: tuple[tuple[int, tuple[int, ...]], ...]

    def sizes(self, buffer: int) -> list[int]:
        """Sizes of the leaves stored in ``buffer``, in order."""
        return [int(np.prod(shape)) for b, shape in self.leaves if b == buffer]


@jax.tree_util.register_pytree_node_class
class Flat:
    """Params (or one part of an optimizer state) in the flat layout.

    ``buffers`` holds one 1-D array per dtype (with leading batch axes under
    ``jax.vmap`` from the outside); ``layout`` is static. Children are not
    validated, since JAX rebuilds pytrees with placeholders during tracing.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.flat import ravel
        >>> f = ravel({"w": jnp.ones((2, 2)), "b": jnp.zeros(2)})
        >>> f.buffers[0].shape  # b then w, in the tree's leaf order
        (6,)
        >>> f.unravel()["w"].shape
        (2, 2)
    """

    __slots__ = ("buffers", "layout")

    def __init__(self, buffers: tuple, layout: Layout):
        self.buffers = tuple(buffers)
        self.layout = layout

    def tree_flatten(self):
        return self.buffers, self.layout

    @classmethod
    def tree_unflatten(cls, layout, buffers):
        return cls(buffers, layout)

    def __repr__(self) -> str:
        pairs = zip(self.layout.dtypes, self.buffers, strict=False)
        shapes = ", ".join(f"{d}{getattr(b, 'shape', '')}" for d, b in pairs)
        return f"Flat({shapes}, leaves={len(self.layout.leaves)})"

    def unravel(self) -> Any:
        """The user's tree: each buffer split at the leaf boundaries and reshaped.

        Works on unbatched buffers only; under ``jax.vmap`` call it inside.
        """
        pieces = []
        for i in range(len(self.buffers)):
            sizes = self.layout.sizes(i)
            pieces.append(iter(jax.lax.split(self.buffers[i], sizes)))
        leaves = [next(pieces[b]).reshape(shape) for b, shape in self.layout.leaves]
        return jax.tree.unflatten(self.layout.treedef, leaves)


def ravel(tree: Any) -> Flat:
    """Pack the leaves of ``tree`` into one 1-D buffer per dtype.

    Buffers are ordered by the first appearance of their dtype among the
    leaves; within a buffer, leaves keep the tree's order. ``None`` leaves
    are kept in the tree structure and take no space.

    Args:
        tree: a pytree of arrays (or numbers).

    Returns:
        A :class:`Flat`; ``ravel(tree).unravel()`` equals ``tree`` (numbers
        come back as arrays).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.flat import ravel
        >>> f = ravel([jnp.ones(2), jnp.zeros(3, jnp.bfloat16), jnp.ones(1)])
        >>> [b.shape for b in f.buffers], f.layout.dtypes
        ([(3,), (3,)], ('float32', 'bfloat16'))
    """
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [jnp.asarray(x) for x in leaves]
    dtypes: list[str] = []
    where = []
    for x in leaves:
        d = str(x.dtype)
        if d not in dtypes:
            dtypes.append(d)
        where.append((dtypes.index(d), tuple(x.shape)))
    buffers = []
    for i in range(len(dtypes)):
        parts = [jnp.ravel(x) for x, (b, _) in zip(leaves, where, strict=True) if b == i]
        buffers.append(jnp.concatenate(parts) if len(parts) > 1 else parts[0])
    return Flat(tuple(buffers), Layout(treedef, tuple(dtypes), tuple(where)))


def _is_flat(x: Any) -> bool:
    return isinstance(x, Flat)


def unravel_tree(tree: Any, *, batched: bool = False) -> Any:
    """Replace every :class:`Flat` node inside ``tree`` with the user's tree.

    Use it on an optimizer state built on the flat layout: ``mu``/``nu``/trace
    buffers come back with the structure of the params, scalars (step counts)
    and other leaves are untouched, so the result has the structure that
    ``optimizer.init(params)`` has on the tree.

    Args:
        tree: any pytree, possibly holding :class:`Flat` nodes.
        batched: the buffers carry one leading batch axis (a sweep's stacked
            members); each member is unraveled and the results stacked.

    Returns:
        ``tree`` with its :class:`Flat` nodes unraveled.

    Example:
        >>> import jax.numpy as jnp, jaxopt_core as jc
        >>> from jaxopt_core.flat import ravel, unravel_tree
        >>> params = {"w": jnp.ones(2), "b": jnp.zeros(1)}
        >>> state = jc.adam(0.1).init(ravel(params))
        >>> unravel_tree(state)[0].mu["w"].shape
        (2,)
    """

    def one(x):
        if not _is_flat(x):
            return x
        return jax.vmap(Flat.unravel)(x) if batched else x.unravel()

    return jax.tree.map(one, tree, is_leaf=_is_flat)

