r"""The flat parameter layout: a few long 1-D buffers instead of a tree.

A model with thousands of small leaves (biases, norms, per-layer scales) makes
an optimizer step run thousands of tiny elementwise kernels; the same step on
a few long vectors is a handful of large ones. :func:`ravel` packs a pytree
into a :class:`Flat`: the leaves, raveled and concatenated per dtype (so
bfloat16 and float32 leaves are never promoted into one), plus a static
:class:`Layout` recording where each leaf lives. :meth:`Flat.unravel` gives
the user's tree back by splitting and reshaping.

Blocks. A dtype's leaves go into one buffer per block of at most
``max_leaves`` (default :data:`MAX_LEAVES`, 32) consecutive leaves, not into a
single buffer: with XLA:CPU the compile time of a program grows with the
square of the number of slices taken from one buffer, so bounded blocks
compile far faster than one buffer and still turn thousands of leaves into a
few hundred buffers (measurements in benchmarks/RESULTS.md).

:class:`Flat` is a pytree whose children are the buffers and whose static aux
data is the layout, so every optimizer that maps over its params (all of
jaxopt_core's, and optax's elementwise transforms) works on it unchanged and
builds its state out of :class:`Flat` nodes too. That is what makes
:func:`unravel_tree` possible: it turns any tree holding :class:`Flat` nodes (an
optimizer state in the flat layout) back into the user's layout.

Differentiating through :meth:`Flat.unravel` gives a flat gradient for free:
the transpose of a split is a concatenate, so ``jax.grad(lambda f:
loss(f.unravel()))`` returns flat buffers without a per-leaf gather.

Only elementwise optimizers may run on the flat layout. An update that depends
on which entries form a leaf (a mask, a per-leaf norm) must see the tree: see
:mod:`jaxopt_core.training.layout_safety`, which decides the layout of a run.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Leaves per buffer: see "Blocks" in the module notes.
MAX_LEAVES = 32


class Layout(NamedTuple):
    """Static description of a flattened tree (hashable, so it can be jit aux data).

    Attributes:
        treedef: the tree structure of the original params.
        dtypes: the dtype (as a string) of each buffer, in buffer order (a
            dtype repeats when its leaves fill several blocks).
        leaves: per leaf, in tree order, ``(buffer index, shape)``; a leaf's
            offset in its buffer is the total size of the earlier leaves of
            that buffer.
    """

    treedef: Any
    dtypes: tuple[str, ...]
    leaves: tuple[tuple[int, tuple[int, ...]], ...]


@jax.tree_util.register_pytree_node_class
class Flat:
    """Params (or one part of an optimizer state) in the flat layout.

    ``buffers`` holds one 1-D array per dtype and block of leaves (with leading
    batch axes under ``jax.vmap`` from the outside); ``layout`` is static. Children are not
    validated, since JAX rebuilds pytrees with placeholders during tracing.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.training.layout import ravel
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
        sizes: list[list[int]] = [[] for _ in self.buffers]
        for b, shape in self.layout.leaves:
            sizes[b].append(int(np.prod(shape)))
        pieces = [iter(jax.lax.split(x, s)) for x, s in zip(self.buffers, sizes, strict=True)]
        leaves = [next(pieces[b]).reshape(shape) for b, shape in self.layout.leaves]
        return jax.tree.unflatten(self.layout.treedef, leaves)


def ravel(tree: Any, max_leaves: int | None = None) -> Flat:
    """Pack the leaves of ``tree`` into 1-D buffers: per dtype, one buffer per
    block of ``max_leaves`` consecutive leaves of that dtype.

    Buffers are ordered by the first appearance of their dtype among the
    leaves, then by block; within a buffer, leaves keep the tree's order.
    ``None`` leaves are kept in the tree structure and take no space.

    Args:
        tree: a pytree of arrays (or numbers).
        max_leaves: leaves per buffer at most (default :data:`MAX_LEAVES`;
            see the module notes for why it is bounded).

    Returns:
        A :class:`Flat`; ``ravel(tree).unravel()`` equals ``tree`` (numbers
        come back as arrays).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_core.training.layout import ravel
        >>> f = ravel([jnp.ones(2), jnp.zeros(3, jnp.bfloat16), jnp.ones(1)])
        >>> [b.shape for b in f.buffers], f.layout.dtypes
        ([(3,), (3,)], ('float32', 'bfloat16'))
    """
    max_leaves = MAX_LEAVES if max_leaves is None else max_leaves
    if max_leaves < 1:
        raise ValueError(f"max_leaves must be >= 1; got max_leaves={max_leaves}")
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [jnp.asarray(x) for x in leaves]
    by_dtype: dict[str, list[int]] = {}
    for i, x in enumerate(leaves):
        by_dtype.setdefault(str(x.dtype), []).append(i)
    dtypes, where, buffers = [], [None] * len(leaves), []
    for d, members in by_dtype.items():
        for start in range(0, len(members), max_leaves):
            block = members[start:start + max_leaves]
            for i in block:
                where[i] = (len(dtypes), tuple(leaves[i].shape))
            parts = [jnp.ravel(leaves[i]) for i in block]
            buffers.append(jnp.concatenate(parts) if len(parts) > 1 else parts[0])
            dtypes.append(d)
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
        >>> from jaxopt_core.training.layout import ravel, unravel_tree
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


def layout_loss(loss_fn: Any, flat: bool) -> Any:
    """``loss_fn`` taking params in the chosen layout (it always sees the tree)."""
    if not flat:
        return loss_fn
    return lambda p, batch: loss_fn(p.unravel(), batch)
