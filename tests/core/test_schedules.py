"""Schedules against optax's same-named schedules at every step, and with
traced arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_core as jc

CASES = [
    ("constant_schedule", dict(value=0.3)),
    ("exponential_decay", dict(init_value=1.0, transition_steps=7, decay_rate=0.8)),
    (
        "exponential_decay",
        dict(
            init_value=0.5,
            transition_steps=5,
            decay_rate=0.5,
            transition_begin=10,
            staircase=True,
            end_value=0.05,
        ),
    ),
    ("exponential_decay", dict(init_value=0.1, transition_steps=10, decay_rate=1.5, end_value=0.3)),
    ("cosine_decay_schedule", dict(init_value=0.2, decay_steps=60)),
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=40, alpha=0.1, exponent=2.0)),
    (
        "warmup_cosine_decay_schedule",
        dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=80),
    ),
    (
        "warmup_cosine_decay_schedule",
        dict(
            init_value=0.1,
            peak_value=0.5,
            warmup_steps=5,
            decay_steps=50,
            end_value=0.01,
            exponent=1.5,
        ),
    ),
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={10: 0.5, 30: 0.1})),
    (
        "linear_schedule",
        dict(init_value=1.0, end_value=0.0, transition_steps=50, transition_begin=5),
    ),
]
COUNTS = jnp.arange(0, 120, dtype=jnp.int32)


@pytest.mark.parametrize("name,kw", CASES, ids=[c[0] for c in CASES])
def test_schedule_equals_optax_at_every_step(name, kw):
    ours = jax.vmap(getattr(jc, name)(**kw))(COUNTS)
    ref = jax.vmap(getattr(optax, name)(**kw))(COUNTS)
    ours = jnp.broadcast_to(ours, ref.shape)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,kw", CASES[1:-2], ids=[c[0] for c in CASES[1:-2]])
def test_traced_arguments_give_the_same_values(name, kw):
    # Numeric arguments passed through jit as arrays (traced) must give the
    # values the concrete ones give: a schedule can be swept with vmap.
    numeric = {k: v for k, v in kw.items() if not isinstance(v, bool)}
    static = {k: v for k, v in kw.items() if isinstance(v, bool)}

    @jax.jit
    def values(args):
        return jax.vmap(getattr(jc, name)(**args, **static))(COUNTS)

    traced = values({k: jnp.asarray(v, jnp.float32) for k, v in numeric.items()})
    concrete = jax.vmap(getattr(jc, name)(**kw))(COUNTS)
    np.testing.assert_allclose(np.asarray(traced), np.asarray(concrete), rtol=2e-6, atol=1e-7)


def test_schedule_sweep_with_vmap_compiles_once(compiles):
    @jax.jit
    def at(peak):
        return jax.vmap(jc.warmup_cosine_decay_schedule(0.0, peak, 10, 100))(COUNTS)

    a = at(jnp.float32(1.0))
    n = len(compiles)
    b = at(jnp.float32(2.0))
    assert len(compiles) == n
    np.testing.assert_allclose(np.asarray(b), 2 * np.asarray(a), rtol=1e-6)
    sweep = jax.vmap(at)(jnp.array([0.5, 1.0]))
    assert sweep.shape == (2, COUNTS.shape[0])


@pytest.mark.parametrize(
    "fn,kw,match",
    [
        (jc.cosine_decay_schedule, dict(init_value=1.0, decay_steps=0), "decay_steps"),
        (jc.cosine_decay_schedule, dict(init_value="a", decay_steps=10), "init_value"),
        (
            jc.piecewise_constant_schedule,
            dict(init_value=1.0, boundaries_and_scales={5: -1.0}),
            "boundaries_and_scales",
        ),
        (
            jc.warmup_cosine_decay_schedule,
            dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=10),
            "decay_steps - warmup_steps",
        ),
        (
            jc.exponential_decay,
            dict(init_value=float("nan"), transition_steps=1, decay_rate=0.5),
            "init_value",
        ),
    ],
)
def test_bad_schedule_arguments_raise(fn, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fn(**kw)
