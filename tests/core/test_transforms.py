"""Every transform in the shared ``TRANSFORM_TABLE`` against optax's
same-named transform, step by step.

The reference is optax, which this project did not write. Each row is built
by the same code from both libraries (inner transforms from the same
library), run for a few steps on the pytree of test_optimizers.py with its
hyperparameter traced and vmapped, and compared update by update; the state
trees must be the same pytrees (the state classes are optax's).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TRANSFORM_TABLE
from test_optimizers import loss, make_params, rel_err

import jaxopt_core as jc

STEPS = 12
ROWS = {row[0]: row for row in TRANSFORM_TABLE}


@functools.cache
def runner(case_id):
    """A jitted ``hs -> (ours, optax's)``, each ``(updates per step, final
    state)``, vmapped over the hyperparameter (cached: one compile per row)."""
    _, build, _ = ROWS[case_id]

    def run(module, h):
        opt = build(module, h)
        params = make_params()

        def step(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p), s, p)
            return (module.apply_updates(p, u), s), u

        (_, state), updates = jax.lax.scan(step, (params, opt.init(params)), None, length=STEPS)
        return updates, state

    return jax.jit(jax.vmap(lambda h: (run(jc, h), run(optax, h))))


def test_transform_matches_optax_step_by_step(transform_case):
    case_id, _, h = transform_case
    hs = jnp.array([0.5 * h, h, 1.5 * h])
    (ours, our_state), (ref, ref_state) = runner(case_id)(hs)
    assert jax.tree.structure(our_state) == jax.tree.structure(ref_state)
    for i in range(len(hs)):
        for t in range(STEPS):
            mine, theirs = jax.tree.map(lambda x, i=i, t=t: x[i, t], (ours, ref))
            assert rel_err(mine, theirs) <= 1e-6, (case_id, float(hs[i]), t)
    chex.assert_trees_all_close(our_state, ref_state, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_transform_changes_its_input(transform_case):
    # Agreement with optax proves nothing if both return the raw gradients:
    # every row must act on them (clip, scale, zero or delay) at some step.
    case_id, build, h = transform_case
    params = make_params()
    opt = build(jc, h)
    state, changed = opt.init(params), False
    for _ in range(3):
        g = jax.grad(loss)(params)
        u, state = opt.update(g, state, params)
        changed = changed or rel_err(u, g) > 1e-3
        params = jc.apply_updates(params, u)
    assert changed, case_id


def test_new_hyperparameter_does_not_recompile(transform_case, compiles):
    case_id, _, h = transform_case
    run = runner(case_id)
    a = run(jnp.array([h, 0.5 * h, 0.25 * h]))
    seen = len(compiles)
    b = run(jnp.array([0.75 * h, h, 0.6 * h]))
    assert len(compiles) == seen
    assert run._cache_size() == 1
    # The values were used, not baked in: member 1 of b is member 0 of a.
    np.testing.assert_allclose(
        np.asarray(jax.tree.leaves(b[0][0])[0][1]), np.asarray(jax.tree.leaves(a[0][0])[0][0])
    )


@pytest.mark.slow
def test_low_precision_params_keep_dtypes_and_stay_finite(transform_case):
    case_id, build, h = transform_case
    opt = build(jc, h)
    for dtype in (jnp.bfloat16, jnp.float16):
        params = make_params(dtype)
        state = opt.init(params)
        step = jax.jit(lambda p, s: opt.update(jax.grad(loss)(p), s, p))
        for _ in range(2):
            u, new_state = step(params, state)
            assert jax.tree.structure(state) == jax.tree.structure(new_state)
            for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):
                assert (x.shape, x.dtype) == (y.shape, y.dtype), case_id
            params, state = jc.apply_updates(params, u), new_state
        for leaf in jax.tree.leaves(params):
            assert leaf.dtype == dtype
            assert bool(jnp.all(jnp.isfinite(leaf))), (case_id, dtype)


NEW_NAMES = [
    "adabelief", "adafactor", "adamax", "amsgrad", "lamb", "lars", "lion", "nadam", "nadamw",
    "radam", "apply_if_finite", "clip", "clip_by_block_rms", "clip_by_global_norm", "ema",
    "freeze", "incremental_update", "inject_hyperparams", "masked", "multi_transform",
    "periodic_update", "set_to_zero", "scale_by_adamax", "scale_by_amsgrad", "scale_by_belief",
    "scale_by_factored_rms", "scale_by_lion", "scale_by_param_block_norm",
    "scale_by_param_block_rms", "scale_by_radam", "scale_by_trust_ratio",
    "cosine_onecycle_schedule", "join_schedules", "polynomial_schedule", "sgdr_schedule",
    "warmup_exponential_decay_schedule", "MultiSteps",
]


def test_signatures_match_optax():
    # Same argument names, order, kinds and (non-callable) defaults.
    import inspect

    for name in NEW_NAMES:
        ours, ref = getattr(jc, name), getattr(optax, name)
        if inspect.isclass(ours):
            ours, ref = ours.__init__, ref.__init__
        a = list(inspect.signature(ours).parameters.values())
        b = list(inspect.signature(ref).parameters.values())
        assert [(p.name, p.kind) for p in a] == [(p.name, p.kind) for p in b], name
        for p, q in zip(a, b):
            if not callable(q.default):
                assert p.default == q.default, (name, p.name, p.default, q.default)
