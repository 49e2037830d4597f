"""Layout safety: ``layout="auto"`` flattens only optimizers known to give the
tree's numbers on the flat layout (jaxopt_core.training.layout_safety).

Fast tests check the decision (no compile); slow ones check the numbers: every
allowlisted optax transform flat against tree, and every optimizer of the
shared table plus the optax ones that used to go wrong, through ``fit`` and
``sweep``, default layout against ``layout="tree"`` and against a plain optax
loop.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_core as jc
from jaxopt_core.training.layout import ravel
from jaxopt_core.training.layout_safety import (
    SAFE_OPTAX,
    SWEEP_FLAT_MIN_LEAVES,
    flat_is_safe,
    resolve_layout,
    unsafe_parts,
)

# A small 2-layer MLP: matrix and bias leaves of several shapes.
_KX, _K1, _K2 = jax.random.split(jax.random.key(0), 3)
X = jax.random.normal(_KX, (16, 3))
Y = jnp.stack([jnp.sin(X.sum(1)), X[:, 0] * X[:, 1]], axis=1)
PARAMS = {
    "hidden": {"w": 0.5 * jax.random.normal(_K1, (3, 5)), "b": jnp.full(5, 0.1)},
    "out": {"w": 0.5 * jax.random.normal(_K2, (5, 2)), "b": jnp.zeros(2)},
}
MATRICES = {"hidden": {"w": True, "b": False}, "out": {"w": True, "b": False}}
LABELS = {"hidden": "adam", "out": "sgd"}


def mlp_loss(params, batch):
    x, y = batch
    h = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return jnp.mean((h @ params["out"]["w"] + params["out"]["b"] - y) ** 2)


def matrices_only(params):
    return jax.tree.map(lambda p: p.ndim == 2, params)


# The optax optimizers that depend on the leaf structure, each with the
# transform that must be named when layout="flat" is asked for.
TREE_OPTAX = {
    "lamb": (lambda lr: optax.lamb(lr), "optax.scale_by_trust_ratio"),
    "lars": (lambda lr: optax.lars(lr), "optax.masked"),
    "adafactor": (lambda lr: optax.adafactor(lr), "optax.scale_by_factored_rms"),
    "adamw_tree_mask": (
        lambda lr: optax.adamw(lr, weight_decay=0.5, mask=MATRICES), "optax.masked"),
    "adamw_callable_mask": (
        lambda lr: optax.adamw(lr, weight_decay=0.5, mask=matrices_only), "optax.masked"),
    "multi_transform": (
        lambda lr: optax.multi_transform({"adam": optax.adam(lr), "sgd": optax.sgd(lr)}, LABELS),
        "optax.partition"),
    "masked": (lambda lr: optax.masked(optax.adam(lr), MATRICES), "optax.masked"),
}
# The same for jaxopt_core's own tree-dependent transforms (marked).
TREE_JC = {
    "jc_lamb": (lambda lr: jc.lamb(lr), "jaxopt_core.scale_by_trust_ratio"),
    "jc_lars": (lambda lr: jc.lars(lr), "jaxopt_core.masked"),
    "jc_adafactor": (lambda lr: jc.adafactor(lr), "jaxopt_core.scale_by_factored_rms"),
    "jc_adamw_callable_mask": (
        lambda lr: jc.adamw(lr, weight_decay=0.5, mask=matrices_only),
        "jaxopt_core.add_decayed_weights"),
    "jc_multi_transform": (
        lambda lr: jc.multi_transform({"adam": jc.adam(lr), "sgd": jc.sgd(lr)}, LABELS),
        "jaxopt_core.multi_transform"),
    "jc_masked": (lambda lr: jc.masked(jc.adam(lr), MATRICES), "jaxopt_core.masked"),
    "jc_inject_lamb": (lambda lr: jc.inject_hyperparams(jc.lamb)(learning_rate=lr),
                       "jaxopt_core._injected"),
}
TREE_DEPENDENT = {**TREE_OPTAX, **TREE_JC}
# optax optimizers and compositions that are safe on the flat layout.
FLAT_OPTAX = {
    "chain_clip_adam": lambda lr: optax.chain(optax.clip_by_global_norm(0.1), optax.adam(lr)),
    "adamw": lambda lr: optax.adamw(lr, weight_decay=0.5),
    "sgd_nesterov": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "rmsprop_centered": lambda lr: optax.rmsprop(lr, centered=True, momentum=0.5),
    "adagrad": lambda lr: optax.adagrad(lr),
    "adam_schedule": lambda lr: optax.adam(optax.linear_schedule(lr, 0.1 * lr, 4)),
    "jc_chain_of_optax": lambda lr: jc.chain(optax.clip_by_global_norm(0.1), jc.adam(lr)),
    "optax_chain_of_jc": lambda lr: optax.chain(jc.sgd(lr, momentum=0.9)),
}


@pytest.mark.parametrize("name", sorted(TREE_DEPENDENT))
def test_tree_dependent_optimizers_run_on_the_tree(name):
    make, culprit = TREE_DEPENDENT[name]
    opt = make(0.01)
    assert culprit in unsafe_parts(opt)
    assert not flat_is_safe(opt)
    assert resolve_layout("auto", opt) is False
    with pytest.raises(ValueError, match=culprit.replace(".", r"\.")):
        resolve_layout("flat", opt)


@pytest.mark.parametrize("name", sorted(FLAT_OPTAX))
def test_verified_optax_compositions_may_be_flattened(name):
    opt = FLAT_OPTAX[name](0.01)
    assert unsafe_parts(opt) == ()
    assert resolve_layout("auto", opt) is True and resolve_layout("flat", opt) is True


def test_unknown_and_marked_transforms_are_named():
    def user_update(updates, state, params=None):
        return updates, state

    custom = optax.GradientTransformation(lambda p: optax.EmptyState(), user_update)
    assert unsafe_parts(custom) == (f"{__name__}.{user_update.__qualname__}",)
    assert unsafe_parts(optax.chain(optax.adam(0.1), custom)) == unsafe_parts(custom)
    # A jaxopt_core chain is named by its culprit members.
    masked = jc.adamw(0.1, weight_decay=0.1, mask=MATRICES)
    assert unsafe_parts(masked) == ("jaxopt_core.add_decayed_weights",)
    assert unsafe_parts(jc.chain(jc.adam(0.1), jc.proximal_step(0.1, 0.1, mask=MATRICES))) == (
        "jaxopt_core.proximal_step",)
    # optax wrappers that are not on the allowlist keep the tree.
    assert unsafe_parts(optax.inject_hyperparams(optax.adam)(learning_rate=0.1)) == (
        "optax.inject_hyperparams",)
    assert unsafe_parts(optax.noisy_sgd(0.1, key=jax.random.key(0))) == ("optax.add_noise",)
    with pytest.raises(ValueError, match="layout must be one of"):
        resolve_layout("flattened", jc.sgd(0.1))


def test_a_sweep_flattens_only_params_of_many_leaves():
    opt = jc.adam(0.1)
    few, many = SWEEP_FLAT_MIN_LEAVES - 1, SWEEP_FLAT_MIN_LEAVES
    assert resolve_layout("auto", opt, sweep_leaves=few) is False
    assert resolve_layout("auto", opt, sweep_leaves=many) is True
    assert resolve_layout("flat", opt, sweep_leaves=1) is True  # asked for: honoured
    assert resolve_layout("auto", optax.lamb(0.1), sweep_leaves=many) is False
    assert resolve_layout("auto", opt) is True  # fit: flat at any size


def test_fit_and_sweep_refuse_flat_for_a_tree_dependent_optimizer():
    with pytest.raises(ValueError, match=r"optax\.scale_by_trust_ratio"):
        jc.fit(mlp_loss, PARAMS, optax.lamb(0.01), (X, Y), steps=2, layout="flat")
    with pytest.raises(ValueError, match=r"optax\.masked"):
        jc.sweep(mlp_loss, PARAMS, TREE_OPTAX["adamw_callable_mask"][0], (X, Y),
                 grid={"lr": [0.01]}, steps=2, layout="flat")


# One instance of every allowlisted optax transform, with non-default
# arguments where they change the code path.
ALLOWLISTED = {
    ("optax._src.transform", "scale"): optax.scale(-0.3),
    ("optax._src.transform", "scale_by_schedule"): optax.scale_by_schedule(
        optax.linear_schedule(1.0, 0.1, 3)),
    ("optax._src.transform", "scale_by_adam"): optax.scale_by_adam(b1=0.8, nesterov=True),
    ("optax._src.transform", "scale_by_amsgrad"): optax.scale_by_amsgrad(),
    ("optax._src.transform", "scale_by_adamax"): optax.scale_by_adamax(),
    ("optax._src.transform", "scale_by_belief"): optax.scale_by_belief(nesterov=True),
    ("optax._src.transform", "scale_by_lion"): optax.scale_by_lion(),
    ("optax._src.transform", "scale_by_radam"): optax.scale_by_radam(threshold=1.5),
    ("optax._src.transform", "scale_by_rms"): optax.scale_by_rms(
        0.8, initial_scale=0.1, bias_correction=True),
    ("optax._src.transform", "scale_by_rss"): optax.scale_by_rss(),
    ("optax._src.transform", "scale_by_sign"): optax.scale_by_sign(),
    ("optax._src.transform", "scale_by_stddev"): optax.scale_by_stddev(0.8, eps_in_sqrt=False),
    ("optax._src.transform", "scale_by_yogi"): optax.scale_by_yogi(),
    ("optax._src.base", "identity"): optax.identity(),
    ("optax.transforms._accumulation", "trace"): optax.trace(0.9, nesterov=True),
    ("optax.transforms._adding", "add_decayed_weights"): optax.add_decayed_weights(0.3),
    ("optax.transforms._clipping", "clip"): optax.clip(0.3),
    ("optax.transforms._clipping", "clip_by_global_norm"): optax.clip_by_global_norm(0.5),
}


def test_every_allowlisted_transform_has_a_verification_case():
    assert set(ALLOWLISTED) == SAFE_OPTAX
    for (module, factory), t in ALLOWLISTED.items():
        assert (t.update.__module__, t.update.__qualname__) == (
            module, f"{factory}.<locals>.update_fn")
        assert flat_is_safe(t)


def _three_updates(t, params, grads):
    state = t.init(params)
    for g in grads:
        updates, state = t.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


@pytest.mark.slow
def test_allowlisted_optax_transforms_give_the_tree_numbers_on_the_flat_layout():
    keys = jax.random.split(jax.random.key(1), 3)
    # Gradients of very different sizes per leaf, so a per-leaf statistic would show.
    grads = [jax.tree.map(lambda p, k=k: jax.random.normal(k, p.shape) * (1 + 3 * jnp.abs(p)),
                          PARAMS) for k in keys]

    @jax.jit
    def both(params, grads):
        out = {}
        for key, t in ALLOWLISTED.items():
            tree = _three_updates(t, params, grads)
            flat = _three_updates(t, ravel(params), [ravel(g) for g in grads]).unravel()
            out[key[1]] = (tree, flat)
        return out

    # Without a learning rate the updates are O(1), so 1e-6 absolute is
    # float32 rounding at their scale.
    for name, (tree, flat) in both(PARAMS, grads).items():
        chex.assert_trees_all_close(flat, tree, rtol=1e-6, atol=1e-6, custom_message=name)


def _table_factory(case):
    name, kw = case
    return functools.partial(getattr(jc, name), **kw)


def _optax_loop(opt, steps):
    """The reference: a plain optax loop on the tree, written without jaxopt_core."""
    params, state = PARAMS, opt.init(PARAMS)
    grad = jax.jit(jax.grad(mlp_loss))
    for _ in range(steps):
        updates, state = opt.update(grad(params, (X, Y)), state, params)
        params = optax.apply_updates(params, updates)
    return params


def _default_equals_tree(make, steps=6, lrs=(0.01, 0.03)):
    """fit and sweep, default layout against layout="tree" (float32, 1e-6).

    The sweep runs on the layout ``"auto"`` takes for a model of many leaves
    (PARAMS has 4, where a sweep's ``"auto"`` keeps the tree for speed):
    flat exactly when the optimizer is judged safe."""
    opt = make(lrs[0])
    fit_auto = jc.fit(mlp_loss, PARAMS, opt, (X, Y), steps=steps)
    fit_tree = jc.fit(mlp_loss, PARAMS, opt, (X, Y), steps=steps, layout="tree")
    chex.assert_trees_all_close(fit_auto.params, fit_tree.params, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fit_auto.losses, fit_tree.losses, rtol=1e-6)

    def by_lr(lr):
        return make(lr)

    grid = {"lr": np.array(lrs, np.float32)}
    many_leaves = "flat" if flat_is_safe(opt) else "auto"
    sw_auto = jc.sweep(mlp_loss, PARAMS, by_lr, (X, Y), grid=grid, steps=steps,
                       layout=many_leaves)
    sw_tree = jc.sweep(mlp_loss, PARAMS, by_lr, (X, Y), grid=grid, steps=steps, layout="tree")
    chex.assert_trees_all_close(sw_auto.params, sw_tree.params, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sw_auto.losses, sw_tree.losses, rtol=1e-6)
    return fit_auto


@pytest.mark.slow
def test_table_default_layout_equals_tree(opt_case):
    _default_equals_tree(lambda lr: _table_factory(opt_case)(lr))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["jc_adamw_callable_mask", "jc_multi_transform", "jc_masked"])
def test_jc_tree_dependent_default_layout_equals_tree(name):
    _default_equals_tree(TREE_JC[name][0])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TREE_OPTAX) + ["chain_clip_adam"])
def test_optax_default_layout_equals_tree_and_optax(name):
    make = TREE_OPTAX[name][0] if name in TREE_OPTAX else FLAT_OPTAX[name]
    res = _default_equals_tree(make)
    # And the numbers are optax's own (the masks saw the tree: weight decay
    # applied to the matrices only, lamb's trust ratio per leaf).
    chex.assert_trees_all_close(res.params, _optax_loop(make(0.01), 6), rtol=1e-5, atol=1e-6)
