r"""Which optimizers may run on the flat layout, and the layout a run takes.

The flat layout (:mod:`jaxopt_core.training.layout`) hands the optimizer a
few long 1-D buffers instead of the params tree. The numbers are the same
only when every transform of the optimizer is

* **elementwise**: entry :math:`i` of the update depends on entry :math:`i`
  of the gradient, params and state and on scalars (step count, schedule
  values), or on a reduction over *all* entries at once (a global norm,
  which differs only in summation order); and
* **leaf-structure free**: it never looks at which entries form a leaf, at
  a leaf's shape, or at the tree's structure (masks, per-leaf norms as in
  LAMB/LARS, factored second moments as in Adafactor, label trees).

An optimizer is judged by its ``update`` function, recursively:

* jaxopt_core transforms carry their own declaration
  (:func:`~jaxopt_core.core.base.mark_elementwise`,
  :func:`~jaxopt_core.core.base.mark_tree_dependent`); a jaxopt_core
  :func:`~jaxopt_core.chain` is judged by its members;
* optax transforms are recognised by the module and qualified name of their
  ``update`` function (optax builds them as closures): ``optax.chain`` by
  the member update functions it closes over, and the leaf transforms listed
  in :data:`SAFE_OPTAX` (each verified, flat against tree, in the tests);
* anything else is unknown, and unknown means the tree.

``layout="auto"`` takes the flat layout only for an optimizer judged safe,
and in a sweep only for params of :data:`SWEEP_FLAT_MIN_LEAVES` leaves or
more (below that the tree is as fast or faster, see below);
``layout="flat"`` raises an error naming the transforms that are not known
to be safe.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from jaxopt_core.core.base import chain_members, is_elementwise, needs_tree_layout

LAYOUTS = ("auto", "flat", "tree")

# optax leaf transforms verified safe on the flat layout, as
# (module of the update function, name of the factory that builds it).
# Every entry has a flat-versus-tree test (tests/training/test_layout_safety.py).
SAFE_OPTAX: frozenset[tuple[str, str]] = frozenset(
    [("optax._src.transform", name) for name in (
        "scale", "scale_by_schedule", "scale_by_adam", "scale_by_amsgrad",
        "scale_by_adamax", "scale_by_belief", "scale_by_lion", "scale_by_radam",
        "scale_by_rms", "scale_by_rss", "scale_by_sign", "scale_by_stddev",
        "scale_by_yogi",
    )]
    + [
        ("optax._src.base", "identity"),
        ("optax.transforms._accumulation", "trace"),
        ("optax.transforms._adding", "add_decayed_weights"),
        ("optax.transforms._clipping", "clip"),
        ("optax.transforms._clipping", "clip_by_global_norm"),
    ]
)

# optax wrappers that only forward to what they close over: (module, qualified
# name of the update function) -> (closure variable, whether it holds a tuple
# of update functions rather than one transform).
_OPTAX_FORWARDERS = {
    ("optax.transforms._combining", "chain.<locals>.update_fn"): ("update_fns", True),
    ("optax._src.base", "with_extra_args_support.<locals>.update"): ("tx", False),
}


class _Probe(NamedTuple):
    """An update function dressed as a transform, to ask the marks about it."""

    update: Any


def describe(fn: Any) -> str:
    """A readable name for the transform an update function belongs to, e.g.
    ``optax.scale_by_trust_ratio`` or ``jaxopt_core.add_decayed_weights``."""
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qual = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    factory = qual.split(".<locals>")[0]
    package = module.split(".")[0]
    if package in ("optax", "jaxopt_core"):
        return f"{package}.{factory}"
    return f"{module}.{qual}"


def _closure_value(fn: Any, name: str) -> Any:
    """The value ``fn`` closes over under ``name`` (``None`` if it does not)."""
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    if code is None or name not in code.co_freevars:
        return None
    try:
        return cells[code.co_freevars.index(name)].cell_contents
    except ValueError:  # an empty cell
        return None


def _forwarded(fn: Any) -> list | None:
    """The update functions an optax forwarding wrapper calls, or ``None``."""
    key = (getattr(fn, "__module__", None), getattr(fn, "__qualname__", None))
    if key not in _OPTAX_FORWARDERS:
        return None
    name, many = _OPTAX_FORWARDERS[key]
    value = _closure_value(fn, name)
    if value is None:
        return None
    updates = list(value) if many else [getattr(value, "update", None)]
    return updates if all(callable(u) for u in updates) else None


def _is_safe_optax_leaf(fn: Any) -> bool:
    module = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", "") or ""
    factory, _, rest = qual.partition(".<locals>.")
    return rest == "update_fn" and (module, factory) in SAFE_OPTAX


def unsafe_parts(optimizer: Any) -> tuple[str, ...]:
    """The transforms of ``optimizer`` not known to be safe on the flat layout.

    Args:
        optimizer: a jaxopt_core :class:`~jaxopt_core.Optimizer`, an optax
            ``GradientTransformation``, or anything with an ``update``.

    Returns:
        Their names (see the module notes), without repeats; empty when
        the optimizer gives the same numbers on the flat layout.

    Example:
        >>> import optax, jaxopt_core as jc
        >>> from jaxopt_core.training.layout_safety import unsafe_parts
        >>> unsafe_parts(optax.chain(optax.clip_by_global_norm(1.0), jc.adam(1e-3)))
        ()
        >>> unsafe_parts(optax.lamb(1e-3))
        ('optax.scale_by_trust_ratio',)
    """
    found: list[str] = []
    _collect(getattr(optimizer, "update", optimizer), found, depth=0)
    return tuple(dict.fromkeys(found))


def _collect(fn: Any, found: list[str], depth: int) -> None:
    """Append to ``found`` the names of the unsafe transforms under ``fn``."""
    probe = _Probe(fn)
    members = chain_members(probe)
    if members is not None and depth < 64:
        # A chain is named by its culprit members rather than as a whole.
        before = len(found)
        for t in members:
            _collect(t.update, found, depth + 1)
        if needs_tree_layout(probe) and len(found) == before:
            found.append(describe(fn))
        return
    if needs_tree_layout(probe):
        found.append(describe(fn))
        return
    if is_elementwise(probe) or _is_safe_optax_leaf(fn):
        return
    inner = _forwarded(fn)
    if inner is None or depth >= 64:
        found.append(describe(fn))
        return
    for update in inner:
        _collect(update, found, depth + 1)


def flat_is_safe(optimizer: Any) -> bool:
    """Whether ``optimizer`` gives the same numbers on the flat layout as on
    the tree (see the module notes for how it is judged).

    Example:
        >>> import optax, jaxopt_core as jc
        >>> from jaxopt_core.training.layout_safety import flat_is_safe
        >>> flat_is_safe(jc.adam(1e-3)), flat_is_safe(optax.adamw(1e-3)), flat_is_safe(
        ...     optax.adamw(1e-3, mask=lambda p: p))
        (True, True, False)
    """
    return not unsafe_parts(optimizer)


# Which layout is faster is a matter of speed only (results are equal). The
# flat layout replaces one optimizer kernel per leaf by one per packed block,
# for the price of packing and unpacking the params every step. In fit that
# pays at every size measured (a 4-leaf MLP: 1.35x faster flat; 1000 leaves:
# 1.19x). In a sweep each kernel already covers all K members of a leaf, so
# the saving is small, and on models of a few leaves the packing costs more
# than it saves: with the divergence check behind its cond, linear regression
# (2 leaves) at K=64 took 42 ms flat and 32 ms tree, the digits MLP (4 leaves)
# at K=256 1.75 s flat and 1.56 s tree; residual MLPs of 16 to 256 leaves
# (K = 8 to 256) were within the run-to-run noise of each other, or faster
# flat. So a sweep takes the flat layout from this many leaves.
SWEEP_FLAT_MIN_LEAVES = 16


def resolve_layout(layout: str, optimizer: Any, *, sweep_leaves: int | None = None) -> bool:
    """Whether a run with ``layout`` (``"auto"``, ``"flat"`` or ``"tree"``)
    and ``optimizer`` takes the flat layout.

    ``"auto"`` is flat exactly when :func:`flat_is_safe`, and, for a sweep
    (``sweep_leaves``: the number of leaves of the params), when the params
    have at least :data:`SWEEP_FLAT_MIN_LEAVES` leaves; ``"flat"`` with an
    optimizer that is not known to be safe raises a ``ValueError`` naming
    the transforms at fault.

    Example:
        >>> import jaxopt_core as jc
        >>> from jaxopt_core.training.layout_safety import resolve_layout
        >>> resolve_layout("auto", jc.sgd(0.1)), resolve_layout("tree", jc.sgd(0.1))
        (True, False)
        >>> resolve_layout("auto", jc.sgd(0.1), sweep_leaves=4)  # a sweep of a small model
        False
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got layout={layout!r}")
    if layout == "tree":
        return False
    unsafe = unsafe_parts(optimizer)
    if layout == "flat" and unsafe:
        raise ValueError(
            f"layout='flat' was asked for, but {', '.join(unsafe)} "
            f"{'is' if len(unsafe) == 1 else 'are'} not known to be elementwise and "
            "leaf-structure free (a mask, a per-leaf statistic, or a transform this "
            "library has not verified), so the flat layout could change the result; "
            "use layout='auto' or layout='tree'"
        )
    if layout == "auto" and sweep_leaves is not None and sweep_leaves < SWEEP_FLAT_MIN_LEAVES:
        return False
    return not unsafe
