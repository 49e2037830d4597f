"""Behaviour of the wrappers beyond the shared table, each against optax:
non-finite updates in ``apply_if_finite`` and ``MultiSteps``, changing and
sweeping injected hyperparameters, factories from either library,
``incremental_update``/``periodic_update``, float16 safety, ``mu_dtype`` and
the construction-time checks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_core as jc

PARAMS = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.3])}


def grad_sequence(n, bad=()):
    """n gradient trees; those at the steps in ``bad`` hold a NaN or an inf."""
    out = []
    for t in range(n):
        g = jax.tree.map(lambda p, t=t: jnp.cos(p * (t + 1)) + 0.1 * t, PARAMS)
        if t in bad:
            g["w"] = g["w"].at[0, 1].set(jnp.nan if t % 2 else jnp.inf)
        out.append(g)
    return out


def run_both(ours, ref, grads, params=PARAMS, **extra):
    """Step ``ours`` and ``ref`` through ``grads`` (jitted), checking each
    update and state against the reference; return the final states."""
    s1, s2 = ours.init(params), ref.init(params)
    step1, step2 = jax.jit(ours.update), jax.jit(ref.update)
    for t, g in enumerate(grads):
        u1, s1 = step1(g, s1, params, **extra)
        u2, s2 = step2(g, s2, params, **extra)
        chex.assert_trees_all_close(u1, u2, rtol=1e-6, atol=1e-7, custom_message=f"step {t}")
        assert jax.tree.structure(s1) == jax.tree.structure(s2)
        chex.assert_trees_all_close(s1, s2, rtol=1e-6, atol=1e-7, custom_message=f"step {t}")
    return s1, s2


@pytest.mark.slow
def test_apply_if_finite_skips_like_optax():
    # Steps 1-3 are non-finite: two are skipped, the third goes through
    # (more than max_consecutive_errors in a row), then normal steps resume.
    grads = grad_sequence(7, bad=(1, 2, 3))
    s1, _ = run_both(
        jc.apply_if_finite(jc.adam(0.1), 2),
        optax.apply_if_finite(optax.adam(0.1), 2),
        grads,
    )
    assert int(s1.total_notfinite) == 3 and bool(s1.last_finite)


@pytest.mark.slow
def test_multisteps_with_skip_function_and_schedule_like_optax():
    every_k = lambda step: jnp.where(step < 1, 2, 3)
    grads = grad_sequence(9, bad=(3,))
    ours = jc.MultiSteps(
        jc.adam(0.1), every_k, should_skip_update_fn=optax.skip_not_finite
    )
    ref = optax.MultiSteps(optax.adam(0.1), every_k, should_skip_update_fn=optax.skip_not_finite)
    s1, s2 = ours.init(PARAMS), ref.init(PARAMS)
    step1, step2 = jax.jit(ours.update), jax.jit(ref.update)
    for t, g in enumerate(grads):
        u1, s1 = step1(g, s1, PARAMS)
        u2, s2 = step2(g, s2, PARAMS)
        chex.assert_trees_all_close(u1, u2, rtol=1e-6, custom_message=f"step {t}")
        chex.assert_trees_all_close(s1, s2, rtol=1e-6, custom_message=f"step {t}")
        assert bool(ours.has_updated(s1)) == bool(ref.has_updated(s2))
    assert int(s1.gradient_step) == 3  # emitted after 2, then twice after 3 good mini-steps
    assert jc.MultiSteps(jc.sgd(0.1), 2).gradient_transformation().init(PARAMS).mini_step == 0


@pytest.mark.slow
def test_inject_hyperparams_serves_both_libraries_factories():
    grads = grad_sequence(5)
    sched = optax.linear_schedule(0.1, 0.01, 4)
    reference = optax.inject_hyperparams(optax.adamw)(learning_rate=sched, weight_decay=0.1)
    for ours in (
        jc.inject_hyperparams(optax.adamw)(learning_rate=sched, weight_decay=0.1),
        optax.inject_hyperparams(jc.adamw)(learning_rate=sched, weight_decay=0.1),
        jc.inject_hyperparams(jc.adamw)(learning_rate=sched, weight_decay=0.1),
    ):
        run_both(ours, reference, grads)


@pytest.mark.slow
def test_changed_hyperparameters_apply_without_recompile(compiles):
    # A population-based search overwrites hyperparameters between steps.
    opt = jc.inject_hyperparams(jc.lion)(learning_rate=0.01, b1=0.9, weight_decay=0.0)
    ref = optax.inject_hyperparams(optax.lion)(learning_rate=0.01, b1=0.9, weight_decay=0.0)
    step = jax.jit(opt.update)
    s1, s2 = opt.init(PARAMS), ref.init(PARAMS)
    grads = grad_sequence(4)
    for t, g in enumerate(grads):
        if t == 2:
            n = len(compiles)
            for s in (s1, s2):
                s.hyperparams["learning_rate"] = jnp.float32(0.5)
                s.hyperparams["b1"] = jnp.float32(0.2)
        u1, s1 = step(g, s1, PARAMS)
        u2, s2 = ref.update(g, s2, PARAMS)
        chex.assert_trees_all_close(u1, u2, rtol=1e-6)
    assert len(compiles) == n and step._cache_size() == 1
    assert float(jnp.max(jnp.abs(u1["w"]))) == pytest.approx(0.5)  # lion: |u| = lr


@pytest.mark.slow
def test_population_of_injected_hyperparameters_vmaps():
    opt = jc.inject_hyperparams(jc.nadamw)(learning_rate=0.1, weight_decay=0.01)
    lrs = jnp.array([0.1, 0.02, 0.3])

    def member(lr):
        s = opt.init(PARAMS)
        s.hyperparams["learning_rate"] = lr
        u, s = opt.update(grad_sequence(1)[0], s, PARAMS)
        return u

    batched = jax.jit(jax.vmap(member))(lrs)
    for i, lr in enumerate(lrs):
        alone = optax.nadamw(float(lr), weight_decay=0.01)
        u, _ = alone.update(grad_sequence(1)[0], alone.init(PARAMS), PARAMS)
        chex.assert_trees_all_close(jax.tree.map(lambda x, i=i: x[i], batched), u, rtol=2e-5)


def test_injected_hyperparameter_dtype_follows_params_as_optax():
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), PARAMS)
    grads = jax.tree.map(jnp.ones_like, params)
    ours = jc.inject_hyperparams(jc.sgd)(learning_rate=0.1, momentum=0.9).init(params)
    ref = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9).init(params)
    assert ours.hyperparams["learning_rate"].dtype == ref.hyperparams["learning_rate"].dtype
    assert ours.hyperparams["learning_rate"].dtype == jnp.bfloat16
    # b2 = 0.999 is 1.0 in bfloat16: float32 hyperparameters keep Adam finite.
    opt = jc.inject_hyperparams(jc.adam, hyperparam_dtype=jnp.float32)(1e-3)
    state = opt.init(params)
    u, state = jax.jit(opt.update)(grads, state, params)
    assert state.hyperparams["b2"].dtype == jnp.float32
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u))
    assert jax.tree.leaves(u)[0].dtype == jnp.bfloat16


@pytest.mark.slow
def test_incremental_and_periodic_updates_match_optax():
    new = jax.tree.map(lambda p: 2 * p + 1, PARAMS)
    for tau in (0.0, 0.25, 1.0):
        chex.assert_trees_all_close(
            jc.incremental_update(new, PARAMS, tau), optax.incremental_update(new, PARAMS, tau)
        )
    traced = jax.jit(jc.incremental_update)(new, PARAMS, jnp.float32(0.3))
    chex.assert_trees_all_close(traced, optax.incremental_update(new, PARAMS, 0.3))
    periodic = jax.jit(jc.periodic_update)
    for step in range(7):
        chex.assert_trees_all_equal(
            periodic(new, PARAMS, step, 3), optax.periodic_update(new, PARAMS, step, 3)
        )
    assert jc.incremental_update({"a": None}, {"a": None}, 0.5) == {"a": None}


@pytest.mark.slow
def test_float16_global_norm_clipping_is_safe():
    # Squares of 300 overflow float16 (max 65504): optax's norm is inf and it
    # returns zeros; the norm taken in float32 clips correctly.
    g = {"a": jnp.full(4, 300.0, jnp.float16)}
    u, _ = jc.clip_by_global_norm(1.0).update(g, jc.EmptyState())
    np.testing.assert_allclose(np.asarray(u["a"], np.float32), 0.5)
    assert u["a"].dtype == jnp.float16
    ref, _ = optax.clip_by_global_norm(1.0).update(g, optax.EmptyState())
    np.testing.assert_array_equal(np.asarray(ref["a"], np.float32), 0.0)


@pytest.mark.slow
def test_float16_adafactor_zero_gradients_stay_finite():
    # epsilon = 1e-30 underflows in float16, where optax computes 0 * 0**-0.5.
    params = {"w": jnp.ones((3, 4), jnp.float16), "v": jnp.ones(5, jnp.float16)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    for module, finite in ((jc, True), (optax, False)):
        opt = module.adafactor(0.01, min_dim_size_to_factor=2)
        state = opt.init(params)
        for _ in range(2):
            u, state = opt.update(zeros, state, params)
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u)) == finite


@pytest.mark.parametrize("name", ["lion", "amsgrad", "nadam"])
def test_mu_dtype_sets_and_keeps_the_first_moment_dtype(name):
    opt = getattr(jc, name)(0.01, mu_dtype=jnp.bfloat16)
    ref = getattr(optax, name)(0.01, mu_dtype=jnp.bfloat16)
    state = opt.init(PARAMS)
    new_state = jax.jit(opt.update)(grad_sequence(1)[0], state, PARAMS)[1]
    chex.assert_trees_all_equal_shapes_and_dtypes(state, new_state)
    ref_state = ref.init(PARAMS)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, ref_state)
    assert {x.dtype for x in jax.tree.leaves(state[0].mu)} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("mode", ["smooth", "refined"])
def test_lion_modes_match_optax(mode):
    run_both(
        jc.scale_by_lion(mode=mode, smooth_beta=2.0),
        optax.scale_by_lion(mode=mode, smooth_beta=2.0),
        grad_sequence(3),
    )


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: jc.clip(-1.0), "max_delta"),
        (lambda: jc.clip_by_global_norm(float("nan")), "max_norm"),
        (lambda: jc.clip_by_block_rms(0.0), "threshold"),
        (lambda: jc.ema(1.5), "decay"),
        (lambda: jc.lion(0.1, b1=2.0), "b1"),
        (lambda: jc.scale_by_lion(mode="soft"), "mode"),
        (lambda: jc.radam(0.1, b2=1.0), "b2"),
        (lambda: jc.amsgrad(0.1, eps=-1.0), "eps"),
        (lambda: jc.adabelief(-0.1), "learning_rate"),
        (lambda: jc.lamb(0.1, b1=1.5), "b1"),
        (lambda: jc.lars(0.1, trust_coefficient=-1.0), "trust_coefficient"),
        (lambda: jc.adafactor(0.1, decay_rate="x"), "decay_rate"),
        (lambda: jc.MultiSteps(jc.sgd(0.1), every_k_schedule=0), "every_k_schedule"),
        (lambda: jc.apply_if_finite(jc.sgd(0.1), -1), "max_consecutive_errors"),
        (lambda: jc.masked(3, {"w": True}), "inner"),
        (lambda: jc.multi_transform({"a": jc.sgd(0.1)}, {"w": "a", "b": "z"}), "'z'"),
        (lambda: jc.inject_hyperparams(jc.adam, static_args="nope"), "nope"),
        (lambda: jc.inject_hyperparams(jc.adam)(0.1, b1=1.5), "b1"),
        (lambda: jc.incremental_update(PARAMS, PARAMS, 2.0), "step_size"),
        (lambda: jc.join_schedules([jc.constant_schedule(1.0)], [3]), "boundaries"),
        (lambda: jc.cosine_onecycle_schedule(0, 1.0), "transition_steps"),
        (lambda: jc.polynomial_schedule(1.0, 0.0, power="2", transition_steps=3), "power"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()
