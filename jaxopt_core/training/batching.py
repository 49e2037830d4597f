"""Minibatches inside a compiled run, and the checks of the arguments that shape it.

Each epoch is a fresh permutation of the ``n`` examples drawn from
``jax.random.fold_in(key, epoch)`` and cut into ``n // batch_size`` batches;
the last ``n % batch_size`` examples of each permutation are dropped (a
different few every epoch), so every batch has the same shape and an epoch
visits each kept example exactly once. Step ``t`` uses batch
``t % (n // batch_size)`` of epoch ``t // (n // batch_size)``.
"""

from __future__ import annotations

import numbers
import weakref
from typing import Any

import jax
import jax.numpy as jnp


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


def check_steps(steps: Any) -> int:
    """``steps`` as an int >= 1, or an error naming it."""
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


# A key is immutable, so its raw bits are too: a repeated call with the same
# key object (a notebook loop, a benchmark) reuses them, which saves the
# unwrap (a device op) and lets put_on_mesh find the placed copy by identity.
_KEY_BITS: dict[int, tuple[weakref.ref, jax.Array]] = {}
_KEY_BITS_MAX = 64


def key_bits(key: jax.Array) -> jax.Array:
    """``jax.random.key_data(key)`` of a typed key, the same array object for
    the same key object while it lives.

    Example:
        >>> import jax
        >>> from jaxopt_core.training.batching import key_bits
        >>> k = jax.random.key(3)
        >>> key_bits(k) is key_bits(k), key_bits(k).tolist() == jax.random.key_data(k).tolist()
        (True, True)
    """
    hit = _KEY_BITS.get(id(key))
    if hit is not None and hit[0]() is key:
        return hit[1]
    bits = jax.random.key_data(key)
    if len(_KEY_BITS) >= _KEY_BITS_MAX:
        _KEY_BITS.pop(next(iter(_KEY_BITS)))
    i = id(key)
    _KEY_BITS[i] = (weakref.ref(key, lambda _, i=i, memo=_KEY_BITS: memo.pop(i, None)), bits)
    return bits


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
