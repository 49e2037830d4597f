"""The divergence guard's selects, against NumPy's ``where`` (issue 14: a
sweep freezes the params of a diverged member and no longer selects its
optimizer state, which nothing reads again)."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxopt_core.training.divergence import freeze_params, select

K = 6  # one shape for every example: the jitted functions compile once
_NEW = {"w": jnp.arange(K * 3, dtype=jnp.float32).reshape(K, 3), "count": jnp.arange(K)}
_OLD = jax.tree.map(lambda x: -x - 1, _NEW)
_FREEZE, _SELECT = jax.jit(freeze_params), jax.jit(select)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=K, max_size=K))
def test_frozen_members_keep_their_params_bit_for_bit(flags):
    ok = np.asarray(flags)
    for fn in (_FREEZE, _SELECT):
        got = fn(jnp.asarray(ok), _NEW, _OLD)
        for g, n, o in zip(jax.tree.leaves(got), jax.tree.leaves(_NEW), jax.tree.leaves(_OLD),
                           strict=True):
            want = np.where(ok.reshape((K,) + (1,) * (n.ndim - 1)), np.asarray(n), np.asarray(o))
            np.testing.assert_array_equal(g, want)
