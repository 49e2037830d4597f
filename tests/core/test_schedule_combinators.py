"""The polynomial, joined, SGDR, warm-up exponential and one-cycle schedules
against optax's same-named schedules at every step, and with traced
arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_core as jc

CYCLE = dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=30)
CASES = [
    ("polynomial_schedule", dict(init_value=1.0, end_value=0.1, power=2, transition_steps=50)),
    (
        "polynomial_schedule",
        dict(init_value=0.5, end_value=0.0, power=0.5, transition_steps=40, transition_begin=10),
    ),
    ("polynomial_schedule", dict(init_value=0.3, end_value=0.0, power=1, transition_steps=0)),
    (
        "warmup_exponential_decay_schedule",
        dict(init_value=0.0, peak_value=1.0, warmup_steps=10, transition_steps=7, decay_rate=0.8),
    ),
    (
        "warmup_exponential_decay_schedule",
        dict(
            init_value=0.1,
            peak_value=0.5,
            warmup_steps=5,
            transition_steps=10,
            decay_rate=0.5,
            transition_begin=20,
            staircase=True,
            end_value=0.05,
        ),
    ),
    ("cosine_onecycle_schedule", dict(transition_steps=100, peak_value=0.7)),
    (
        "cosine_onecycle_schedule",
        dict(transition_steps=60, peak_value=2.0, pct_start=0.5, div_factor=10.0,
             final_div_factor=100.0),
    ),
    ("sgdr_schedule", dict(cosine_kwargs=[CYCLE, dict(CYCLE, peak_value=0.5, decay_steps=50)])),
]
COUNTS = jnp.arange(0, 120, dtype=jnp.int32)


@pytest.mark.slow
@pytest.mark.parametrize("name,kw", CASES, ids=[c[0] for c in CASES])
def test_schedule_equals_optax_at_every_step(name, kw):
    ours = jax.vmap(getattr(jc, name)(**kw))(COUNTS)
    ref = jax.vmap(getattr(optax, name)(**kw))(COUNTS)
    ours = jnp.broadcast_to(ours, ref.shape)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-6, atol=1e-7)
    assert float(jnp.max(ref) - jnp.min(ref)) > 0 or kw.get("transition_steps") == 0


@pytest.mark.slow
def test_join_schedules_equals_optax():
    def pieces(m):
        return [
            m.linear_schedule(0.0, 1.0, 10),
            m.cosine_decay_schedule(1.0, 30, alpha=0.1),
            m.constant_schedule(0.05),
        ]

    ours = jax.vmap(jc.join_schedules(pieces(jc), [10, 40]))(COUNTS)
    ref = jax.vmap(optax.join_schedules(pieces(optax), [10, 40]))(COUNTS)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case,numeric",
    [
        (0, ("init_value", "end_value", "power", "transition_steps")),
        (4, ("init_value", "peak_value", "decay_rate", "end_value")),
        (6, ("peak_value", "div_factor", "final_div_factor")),
    ],
)
def test_traced_arguments_give_the_same_values(case, numeric):
    name, kw = CASES[case]

    @jax.jit
    def values(args):
        return jax.vmap(getattr(jc, name)(**{**kw, **args}))(COUNTS)

    traced = values({k: jnp.asarray(kw[k], jnp.float32) for k in numeric})
    concrete = jax.vmap(getattr(jc, name)(**kw))(COUNTS)
    np.testing.assert_allclose(np.asarray(traced), np.asarray(concrete), rtol=2e-6, atol=1e-7)


def test_traced_join_boundary():
    pieces = [jc.constant_schedule(1.0), jc.constant_schedule(2.0)]
    at = jax.jit(lambda b: jax.vmap(jc.join_schedules(pieces, [b]))(COUNTS))
    np.testing.assert_array_equal(np.asarray(at(7)), np.where(np.arange(120) < 7, 1.0, 2.0))
