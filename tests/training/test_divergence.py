"""The divergence guard's select runs behind a ``lax.cond`` (issue 14): the
result is ``select``'s, bit for bit, whatever the flags."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxopt_core.training.divergence import keep_where, select

K = 6  # one shape for every example: the jitted functions compile once
_NEW = {"w": jnp.arange(K * 3, dtype=jnp.float32).reshape(K, 3), "count": jnp.arange(K)}
_OLD = jax.tree.map(lambda x: -x - 1, _NEW)
_KEEP, _SELECT = jax.jit(keep_where), jax.jit(select)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=K, max_size=K))
def test_keep_where_is_select_bit_for_bit(flags):
    ok = jnp.asarray(flags)
    got, want = _KEEP(ok, _NEW, _OLD), _SELECT(ok, _NEW, _OLD)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(g, w)


def test_all_alive_skips_the_select():
    # The select sits in a branch of a cond on all(ok), not in the step itself.
    jaxpr = jax.make_jaxpr(keep_where)(jnp.ones(K, bool), _NEW, _OLD).jaxpr
    top = [e.primitive.name for e in jaxpr.eqns]
    assert "cond" in top and "select_n" not in top
    branches = next(e for e in jaxpr.eqns if e.primitive.name == "cond").params["branches"]
    assert sorted("select_n" in str(b.jaxpr) for b in branches) == [False, True]
