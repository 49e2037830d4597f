"""The optax protocol in its corners, each checked against optax itself: complex
parameters, extra keyword arguments of ``update``, low-precision hyperparameters,
saturating counts of every dtype, ``None`` leaves and optax's own state classes.
(Signatures and annotations: tests/core/test_optax_suite.py.)"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import OPTIMIZER_TABLE

import jaxopt_core as jc


def _run_both(ours, ref, params, grads_seq, rtol=2e-6, **extra):
    """Updates of ``ours`` and ``ref`` over the same gradients, step by step."""
    s1, s2 = ours.init(params), ref.init(params)
    for g in grads_seq:
        u1, s1 = ours.update(g, s1, params, **extra)
        u2, s2 = ref.update(g, s2, params, **extra)
        chex.assert_trees_all_close(u1, u2, rtol=rtol, atol=1e-7)
    return s1, s2


COMPLEX_PAIRS = [
    ("adam", lambda m: m.adam(0.1)),
    ("adamw", lambda m: m.adamw(0.1, weight_decay=0.1)),
    ("adagrad", lambda m: m.adagrad(0.1)),
    ("rmsprop", lambda m: m.rmsprop(0.1)),
    ("rmsprop-centered", lambda m: m.rmsprop(0.1, centered=True, bias_correction=True)),
    ("rmsprop-eps-out", lambda m: m.rmsprop(0.1, eps_in_sqrt=False, momentum=0.5)),
    ("scale_by_rss", lambda m: m.scale_by_rss()),
    ("scale_by_stddev", lambda m: m.scale_by_stddev(eps_in_sqrt=False)),
    ("sgd-nesterov", lambda m: m.sgd(0.1, momentum=0.9, nesterov=True)),
]


@pytest.mark.slow
@pytest.mark.parametrize("make", [p[1] for p in COMPLEX_PAIRS], ids=[p[0] for p in COMPLEX_PAIRS])
def test_complex_params_match_optax(make):
    # Second moments use |g|^2 = conj(g) g: squaring g would mix in the phase.
    params = {"w": jnp.array([1 + 2j, -0.5 + 0.1j, 3j], jnp.complex64)}
    key = jax.random.key(0)
    grads = []
    for _ in range(3):
        key, k1, k2 = jax.random.split(key, 3)
        g = jax.random.normal(k1, (3,)) + 1j * jax.random.normal(k2, (3,))
        grads.append({"w": g.astype(jnp.complex64)})
    s1, s2 = _run_both(make(jc), make(optax), params, grads)
    # The moments too (RMSProp's state class is jaxopt_core's own: compare leaves).
    chex.assert_trees_all_close(jax.tree.leaves(s1), jax.tree.leaves(s2), rtol=2e-6)


def test_extra_args_reach_the_members_that_take_them():
    # polyak_sgd needs the loss value; jc.chain passes it on as optax.chain does.
    params = jnp.array([1.0, -2.0])
    grads = [jnp.array([0.5, 0.25]), jnp.array([-1.0, 2.0])]
    ours = jc.chain(jc.scale(0.5), jc.trace(0.5), optax.polyak_sgd(max_learning_rate=2.0))
    ref = optax.chain(optax.scale(0.5), optax.trace(0.5), optax.polyak_sgd(max_learning_rate=2.0))
    _run_both(ours, ref, params, grads, value=jnp.array(3.0))


@pytest.mark.slow
def test_extra_args_are_not_given_to_members_without_support():
    seen = []

    def update(updates, state, params=None):  # no **kwargs: must get none
        seen.append(True)
        return updates, state

    plain = jc.Optimizer(lambda p: jc.EmptyState(), update)
    opt = jc.chain(jc.adam(0.1), plain, optax.scale_by_adam(), jc.identity())
    u, _ = opt.update(jnp.ones(2), opt.init(jnp.ones(2)), jnp.ones(2), value=1.0, other="x")
    ref = optax.chain(optax.adam(0.1), optax.scale_by_adam())
    uref, _ = ref.update(jnp.ones(2), ref.init(jnp.ones(2)), jnp.ones(2), value=1.0)
    chex.assert_trees_all_close(u, uref)
    assert seen
    # Every jaxopt_core transform takes (and ignores) them, as an optax
    # GradientTransformationExtraArgs would.
    for name, kw in OPTIMIZER_TABLE:
        t = getattr(jc, name)(learning_rate=0.1, **kw)
        assert jc.core.base.accepts_extra_args(t), name
        t.update(jnp.ones(2), t.init(jnp.ones(2)), jnp.ones(2), value=1.0)


@pytest.mark.slow
def test_low_precision_hyperparameters_as_in_optax():
    # inject_hyperparams stores hyperparameters in the params' dtype (bfloat16
    # here) and rebuilds the optimizer from them at every step.
    params = {"w": jnp.array([1.0, -2.0, 0.5], jnp.bfloat16)}
    grads = [{"w": jnp.array([0.3, -0.1, 2.0], jnp.bfloat16)}] * 3
    ours = optax.inject_hyperparams(jc.adam)(learning_rate=1e-2, b1=0.8, b2=0.95)
    ref = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2, b1=0.8, b2=0.95)
    assert ref.init(params).hyperparams["learning_rate"].dtype == jnp.bfloat16
    # optax's arithmetic is in bfloat16, ours in float32 (then rounded): equal
    # to bfloat16's precision.
    _run_both(ours, ref, params, grads, rtol=1e-2)
    # On purpose: the default b2=0.999 rounds to 1 in bfloat16, where optax's
    # bias correction divides 0 by 0; jaxopt_core names the value instead.
    bad = optax.inject_hyperparams(jc.adam)(learning_rate=1e-2)
    with pytest.raises(ValueError, match="b2"):
        bad.init(params)
    nan = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)
    assert jnp.isnan(nan.update(grads[0], nan.init(params), params)[0]["w"]).all()


def test_trace_with_decay_one_matches_optax():
    params = jnp.zeros(2)
    grads = [jnp.array([1.0, -1.0]), jnp.array([0.5, 2.0]), jnp.array([0.0, 1.0])]
    _run_both(jc.trace(decay=1.0), optax.trace(decay=1.0), params, grads)
    _run_both(jc.sgd(0.1, momentum=1.0), optax.sgd(0.1, momentum=1.0), params, grads)


COUNT_DTYPES = ["bfloat16", "float16", "float32", "int8", "int16", "int32", "uint8", "uint16",
                "uint32"]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", COUNT_DTYPES)
def test_safe_increment_matches_optax_for_every_dtype(dtype):
    dtype = jnp.dtype(dtype)
    info = jnp.iinfo if jnp.issubdtype(dtype, jnp.integer) else jnp.finfo
    for start in (0, 3, info(dtype).max):
        count = jnp.asarray(start, dtype)
        ours, ref = jc.safe_increment(count), optax.safe_increment(count)
        assert ours.dtype == ref.dtype == dtype
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
    top = jc.safe_increment(jnp.asarray(info(dtype).max, dtype))
    np.testing.assert_array_equal(np.asarray(top), np.asarray(info(dtype).max, top.dtype))


@pytest.mark.parametrize("dtype", ["bool", "complex64"])
def test_safe_increment_rejects_what_optax_rejects(dtype):
    count = jnp.asarray(1, jnp.dtype(dtype))
    with pytest.raises(ValueError):
        optax.safe_increment(count)
    with pytest.raises(ValueError, match="dtype"):
        jc.safe_increment(count)


def test_none_update_leaves_pass_through_as_in_optax():
    params = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
    grads = [{"a": jnp.array([0.5, -0.5]), "b": None}]
    for wd in (0.1, optax.linear_schedule(0.1, 0.0, 10)):
        s1, _ = _run_both(
            jc.add_decayed_weights(wd), optax.add_decayed_weights(wd), params, grads
        )
    ours = jc.add_decayed_weights(0.1, mask={"a": False, "b": True})
    u, _ = ours.update(grads[0], ours.init(params), params)
    assert u["b"] is None and u["a"] is grads[0]["a"]


def test_negative_weight_decay_as_in_optax():
    # optax.fromage decays with (1 / sqrt(1 + lr^2) - 1) < 0.
    params = {"w": jnp.array([1.0, -2.0])}
    _run_both(
        jc.add_decayed_weights(-0.3), optax.add_decayed_weights(-0.3), params, [params] * 2
    )


def test_state_classes_are_optax_s_where_they_are_the_same_thing():
    assert jc.EmptyState is optax.EmptyState
    assert jc.ScaleByAdamState is optax.ScaleByAdamState
    assert jc.ScaleByRssState is optax.ScaleByRssState
    assert jc.TraceState is optax.TraceState
    assert jc.ScheduleState is optax.ScaleByScheduleState
    params = {"w": jnp.ones(2)}
    pairs = [
        (jc.adam(0.1), optax.adam(0.1)),
        (jc.adagrad(0.1), optax.adagrad(0.1)),
        (jc.sgd(0.1, momentum=0.9), optax.sgd(0.1, momentum=0.9)),
        (jc.sgd(optax.constant_schedule(0.1)), optax.sgd(optax.constant_schedule(0.1))),
        (jc.identity(), optax.identity()),
    ]
    for ours, ref in pairs:
        assert jax.tree.structure(ours.init(params)) == jax.tree.structure(ref.init(params))
