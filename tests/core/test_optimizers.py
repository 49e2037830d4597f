"""Every optimizer in the shared table against optax's alias of the same name.

The reference is optax, which this project did not write. Trajectories run
for 120 steps on a pytree with a dict, a list, a tuple and a ``None`` leaf,
on a loss whose gradients depend on the params, and are compared leaf by leaf
with a norm-wise relative error.
"""

import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import LEARNING_RATES, OPTIMIZER_TABLE

import jaxopt_core as jc

STEPS = 100


def make_params(dtype=jnp.float32):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    return {
        "dense": [jax.random.normal(k1, (4, 3), dtype), jax.random.normal(k2, (3,), dtype)],
        "pair": (jax.random.normal(k3, (2,), dtype), None),
    }


def loss(params):
    # Nonlinear and coupled, with its minimum far from the start (every
    # coordinate wants to travel ~5 while Adam moves at most ~lr per step):
    # near a minimum, sign-normalized steps amplify rounding chaotically and
    # no two float32 implementations would agree there.
    w, b = params["dense"]
    v = params["pair"][0]
    x = jnp.linspace(-1.0, 1.0, 4, dtype=w.dtype)
    h = jnp.tanh(x @ w + b)
    far = lambda z: jnp.sum(jnp.cosh(0.5 * (z - 5.0)))
    return far(w) + far(b) + far(v) + jnp.sum((h - 2.0) ** 2)


def trajectories(name, kw, dtype=jnp.float32):
    """A jitted function ``lrs -> (ours, optax's)``: the params after STEPS
    steps of ``jc.<name>`` and ``optax.<name>``, vmapped over the learning
    rate. Both runs live in one program so each case compiles once."""

    def run(module, lr):
        opt = getattr(module, name)(lr, **kw)
        params = make_params(dtype)

        def step(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p), s, p)
            return (module.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=STEPS)
        return p

    return jax.jit(jax.vmap(lambda lr: (run(jc, lr), run(optax, lr))))


def rel_err(a, b):
    """Largest per-leaf ||a - b|| / ||b|| over two trees."""
    errs = [
        float(jnp.linalg.norm((x - y).ravel()) / jnp.maximum(jnp.linalg.norm(y.ravel()), 1e-30))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    ]
    return max(errs)


def test_trajectory_matches_optax_under_jit_and_vmap(opt_case):
    name, kw = opt_case
    base = LEARNING_RATES[name]
    lrs = jnp.array([0.5 * base, base, 2 * base])
    ours, ref = trajectories(name, kw)(lrs)
    start = make_params()
    for i in range(len(lrs)):
        mine, theirs = jax.tree.map(lambda x, i=i: x[i], (ours, ref))
        # The run must actually have moved, or agreement would prove nothing.
        assert rel_err(theirs, start) > 1e-2
        assert rel_err(mine, theirs) <= 1e-6, (name, kw, float(lrs[i]))
    assert jax.tree.structure(ours) == jax.tree.structure(ref)


@pytest.mark.slow
def test_eager_step_matches_optax(opt_case):
    name, kw = opt_case
    params = make_params()
    ours, ref = getattr(jc, name)(0.01, **kw), getattr(optax, name)(0.01, **kw)
    s1, s2 = ours.init(params), ref.init(params)
    p1 = p2 = params
    for _ in range(3):  # the state carried across steps, op by op (no jit)
        u1, s1 = ours.update(jax.grad(loss)(p1), s1, p1)
        u2, s2 = ref.update(jax.grad(loss)(p2), s2, p2)
        p1, p2 = jc.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    assert rel_err(p1, p2) <= 1e-6


FLOAT64_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, optax
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[2])
    import jaxopt_core as jc
    from conftest import LEARNING_RATES, OPTIMIZER_TABLE
    import test_optimizers as t
    out = []
    for name, kw in OPTIMIZER_TABLE:
        lrs = jnp.array([LEARNING_RATES[name]], jnp.float64)
        p0 = t.make_params(jnp.float64)
        a, b = t.trajectories(name, kw, jnp.float64)(lrs)
        dt = str(jax.tree.leaves(a)[0].dtype)
        moved = t.rel_err(b, jax.tree.map(lambda x: x[None], p0))
        out.append([name, kw, t.rel_err(a, b), dt, moved])
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_float64_trajectories_match_optax_to_1e12():
    # jax_enable_x64 is process-global: run in a fresh interpreter.
    here = os.path.dirname(__file__)
    res = subprocess.run(
        [sys.executable, "-c", FLOAT64_SCRIPT, here, os.path.dirname(here)],
        capture_output=True,
        text=True,
        cwd=here,
        timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(rows) == len(OPTIMIZER_TABLE)
    for name, kw, err, dtype, moved in rows:
        assert dtype == "float64"
        assert moved > 1e-2, (name, kw)
        assert err <= 1e-12, (name, kw, err)


@pytest.mark.slow
def test_schedule_learning_rate_matches_optax(opt_case):
    name, kw = opt_case
    lr = LEARNING_RATES[name]
    ours = getattr(jc, name)(jc.warmup_cosine_decay_schedule(0.0, lr, 5, 40), **kw)
    ref = getattr(optax, name)(optax.warmup_cosine_decay_schedule(0.0, lr, 5, 40), **kw)

    @jax.jit
    def run(p):
        def step(carry, _):
            (a, sa), (b, sb) = carry
            ua, sa = ours.update(jax.grad(loss)(a), sa, a)
            ub, sb = ref.update(jax.grad(loss)(b), sb, b)
            return ((jc.apply_updates(a, ua), sa), (optax.apply_updates(b, ub), sb)), None

        carry = ((p, ours.init(p)), (p, ref.init(p)))
        ((a, _), (b, _)), _ = jax.lax.scan(step, carry, None, length=50)
        return a, b

    a, b = run(make_params())
    assert rel_err(a, b) <= 1e-6


@pytest.mark.slow
def test_new_learning_rate_does_not_recompile(opt_case, compiles):
    name, kw = opt_case

    @jax.jit
    def step(params, state, lr):
        opt = getattr(jc, name)(lr, **kw)
        u, state = opt.update(jax.grad(loss)(params), state, params)
        return jc.apply_updates(params, u), state

    params = make_params()
    state = getattr(jc, name)(0.1, **kw).init(params)
    p1, s1 = step(params, state, 0.1)
    after_first = len(compiles)
    p2, s2 = step(params, state, 0.02)
    p3, _ = step(p2, s2, 0.3)
    assert len(compiles) == after_first >= 1
    assert step._cache_size() == 1
    assert rel_err(p1, p2) > 0  # the new value was used, not a baked-in constant


@pytest.mark.slow
def test_state_dtypes_and_shapes_are_stable(opt_case):
    name, kw = opt_case
    opt, ref = getattr(jc, name)(0.01, **kw), getattr(optax, name)(0.01, **kw)
    params = make_params()
    state = opt.init(params)

    # Both branches of a lax.cond must return the same state type (the cond
    # does not trace otherwise), and the taken branch is the plain update.
    @jax.jit
    def maybe_update(pred, p, s):
        return jax.lax.cond(
            pred,
            lambda: opt.update(jax.grad(loss)(p), s, p),
            lambda: (jax.tree.map(jnp.zeros_like, p), s),
        )

    u, new_state = maybe_update(True, params, state)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, new_state)
    u_ref, _ = ref.update(jax.grad(loss)(params), ref.init(params), params)
    chex.assert_trees_all_close(u, u_ref, rtol=1e-6, atol=1e-7)
    u0, s0 = maybe_update(False, params, state)
    chex.assert_trees_all_equal(s0, state)
    assert all(not bool(jnp.any(x)) for x in jax.tree.leaves(u0))


@pytest.mark.slow
def test_low_precision_params_keep_their_dtype(opt_case):
    name, kw = opt_case
    opt = getattr(jc, name)(0.01, **kw)
    dtypes = (jnp.bfloat16, jnp.float16)
    params = tuple(make_params(d) for d in dtypes)
    states = tuple(opt.init(p) for p in params)

    @jax.jit
    def step(ps, ss):
        out = [opt.update(jax.grad(loss)(p), s, p) for p, s in zip(ps, ss)]
        return tuple(jc.apply_updates(p, u) for p, (u, _) in zip(ps, out)), tuple(s for _, s in out)

    for _ in range(3):
        params, new_states = step(params, states)
        chex.assert_trees_all_equal_shapes_and_dtypes(states, new_states)
        states = new_states
    for dtype, tree in zip(dtypes, params):
        for leaf in jax.tree.leaves(tree):
            assert leaf.dtype == dtype
            assert bool(jnp.all(jnp.isfinite(leaf)))


@pytest.mark.slow
def test_adam_float16_zero_gradients_give_finite_updates():
    params = {"w": jnp.ones(4, jnp.float16)}
    zeros = {"w": jnp.zeros(4, jnp.float16)}
    opt = jc.adam(1e-3)
    u, _ = opt.update(zeros, opt.init(params), params)
    assert u["w"].dtype == jnp.float16
    np.testing.assert_array_equal(np.asarray(u["w"]), 0.0)
    # optax does the moment arithmetic in float16, where eps=1e-8 underflows
    # and 0 / (0 + 0) is NaN; this is the case the upcast exists for.
    ref = optax.adam(1e-3)
    ur, _ = ref.update(zeros, ref.init(params), params)
    assert not bool(jnp.all(jnp.isfinite(ur["w"])))


def test_mismatched_gradient_tree_names_both_structures(opt_case):
    name, kw = opt_case
    opt = getattr(jc, name)(0.01, **kw)
    params = make_params()
    state = opt.init(params)
    wrong = {"dense": [jnp.ones((4, 3)), jnp.ones(3)]}
    with pytest.raises(ValueError, match="does not match") as err:
        opt.update(wrong, state, params)
    assert "grads:" in str(err.value) and "PyTreeDef" in str(err.value)


@pytest.mark.slow
def test_optimizer_is_a_namedtuple_usable_by_optax():
    opt = jc.adam(1e-3)
    assert isinstance(opt, tuple) and opt._fields == ("init", "update")
    # Inside optax.chain, with an optax transform before it.
    combo = optax.chain(optax.clip_by_global_norm(1.0), jc.sgd(0.1, momentum=0.9))
    ref = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9))
    p = make_params()
    g = jax.tree.map(lambda x: 10 * x, jax.grad(loss)(p))
    u1, _ = combo.update(g, combo.init(p), p)
    u2, _ = ref.update(g, ref.init(p), p)
    chex.assert_trees_all_close(u1, u2, rtol=1e-6)
