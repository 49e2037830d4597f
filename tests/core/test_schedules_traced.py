"""Every numeric argument of a schedule may be traced, integer step counts
included (as a sweep passes them: int32 scalars under vmap), and gives optax's
values for the concrete argument, edge cases included (non-positive
transition_steps, negative transition_begin, zero warm-up)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_core as jc

COUNTS = jnp.arange(0, 60, dtype=jnp.int32)
STEP_ARGS = {"transition_steps", "transition_begin", "decay_steps", "warmup_steps"}

# name -> members: each member is one set of arguments; every numeric argument
# is traced (vmapped over the members), step counts as int32.
MEMBERS = {
    "linear_schedule": [
        dict(init_value=1.0, end_value=0.1, transition_steps=20, transition_begin=5),
        dict(init_value=0.5, end_value=2.0, transition_steps=0, transition_begin=-3),
        dict(init_value=0.2, end_value=0.0, transition_steps=7, transition_begin=-2),
    ],
    "exponential_decay": [
        dict(init_value=1.0, transition_steps=7, decay_rate=0.8, transition_begin=4),
        dict(init_value=0.5, transition_steps=-2, decay_rate=0.5, transition_begin=0),
        dict(init_value=0.3, transition_steps=5, decay_rate=0.0, transition_begin=-6),
        dict(init_value=0.1, transition_steps=10, decay_rate=1.5, transition_begin=-1),
    ],
    "cosine_decay_schedule": [
        dict(init_value=0.2, decay_steps=30, alpha=0.1, exponent=2.0),
        dict(init_value=1.0, decay_steps=7, alpha=0.0, exponent=1.0),
    ],
    "warmup_cosine_decay_schedule": [
        dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=40, end_value=0.1,
             exponent=1.0),
        dict(init_value=0.1, peak_value=0.5, warmup_steps=0, decay_steps=25, end_value=0.0,
             exponent=2.0),
        dict(init_value=0.0, peak_value=0.0, warmup_steps=3, decay_steps=9, end_value=0.0,
             exponent=1.0),
    ],
    "polynomial_schedule": [
        dict(init_value=1.0, end_value=0.1, power=2.0, transition_steps=20, transition_begin=5),
        dict(init_value=0.5, end_value=2.0, power=0.5, transition_steps=0, transition_begin=-3),
        dict(init_value=0.2, end_value=0.0, power=3.0, transition_steps=7, transition_begin=-2),
    ],
    "constant_schedule": [dict(value=0.3), dict(value=-1.0)],
}


def _stack(members):
    return {k: jnp.asarray([m[k] for m in members],
                           jnp.int32 if k in STEP_ARGS else jnp.float32)
            for k in members[0]}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_traced_arguments_give_optax_values(name):
    members = MEMBERS[name]

    @jax.jit
    def values(args):
        def one(a):
            return jnp.broadcast_to(jax.vmap(getattr(jc, name)(**a))(COUNTS), COUNTS.shape)

        return jax.vmap(one)(args)

    traced = values(_stack(members))
    for i, kw in enumerate(members):
        ref = jnp.broadcast_to(jax.vmap(getattr(optax, name)(**kw))(COUNTS), COUNTS.shape)
        np.testing.assert_allclose(traced[i], ref, rtol=2e-6, atol=1e-7, err_msg=str(kw))


def test_piecewise_constant_scales_and_value_may_be_traced():
    @jax.jit
    def values(init, scale):
        s = jc.piecewise_constant_schedule(init, {10: scale, 30: 0.5})
        return jax.vmap(s)(COUNTS)

    got = jax.vmap(values)(jnp.array([1.0, 2.0]), jnp.array([0.1, 3.0]))
    for i, (init, scale) in enumerate([(1.0, 0.1), (2.0, 3.0)]):
        ref = jax.vmap(optax.piecewise_constant_schedule(init, {10: scale, 30: 0.5}))(COUNTS)
        np.testing.assert_allclose(got[i], ref, rtol=1e-6)
