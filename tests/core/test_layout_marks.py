"""Layout marks of the clipping, combining, accumulation and injection
transforms and of the optimizers built on them.

A transform marked elementwise may run on the params packed into one flat
buffer; one marked tree-dependent must see the tree. The marks are checked as
declared, and checked against behaviour: an elementwise-marked transform
gives the same updates on the tree and on its flat packing, and a
tree-dependent one does not.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import jaxopt_core as jc
from jaxopt_core.core.base import is_elementwise, needs_tree_layout

ELEMENTWISE = {
    "clip": lambda: jc.clip(0.3),
    "clip_by_global_norm": lambda: jc.clip_by_global_norm(1.0),
    "set_to_zero": jc.set_to_zero,
    "ema": lambda: jc.ema(0.9),
    "scale_by_lion": jc.scale_by_lion,
    "scale_by_amsgrad": jc.scale_by_amsgrad,
    "scale_by_adamax": jc.scale_by_adamax,
    "scale_by_belief": jc.scale_by_belief,
    "scale_by_radam": jc.scale_by_radam,
    "lion": lambda: jc.lion(0.1),
    "nadam": lambda: jc.nadam(0.1),
    "nadamw": lambda: jc.nadamw(0.1),
    "radam": lambda: jc.radam(0.1),
    "amsgrad": lambda: jc.amsgrad(0.1),
    "adamax": lambda: jc.adamax(0.1),
    "adabelief": lambda: jc.adabelief(0.1),
    "apply_if_finite(adam)": lambda: jc.apply_if_finite(jc.adam(0.1), 3),
    "MultiSteps(adam)": lambda: jc.MultiSteps(jc.adam(0.1), 2),
    "inject_hyperparams(adam)": lambda: jc.inject_hyperparams(jc.adam)(0.1),
    "chain(clip_by_global_norm, lion)": lambda: jc.chain(
        jc.clip_by_global_norm(1.0), jc.lion(0.1)
    ),
}

# Those that can run on a flat vector at all (a tree-shaped mask cannot).
TREE_DEPENDENT_FLAT_OK = {
    "clip_by_block_rms": lambda: jc.clip_by_block_rms(0.1),
    "scale_by_trust_ratio": jc.scale_by_trust_ratio,
    "scale_by_param_block_rms": jc.scale_by_param_block_rms,
    "scale_by_param_block_norm": jc.scale_by_param_block_norm,
    "scale_by_factored_rms": lambda: jc.scale_by_factored_rms(min_dim_size_to_factor=2),
    "lamb": lambda: jc.lamb(0.1),
    "lars": lambda: jc.lars(1.0),
    "adafactor": lambda: jc.adafactor(0.1, min_dim_size_to_factor=2),
    "apply_if_finite(lamb)": lambda: jc.apply_if_finite(jc.lamb(0.1), 3),
    "MultiSteps(adafactor)": lambda: jc.MultiSteps(jc.adafactor(0.1), 1),
    "inject_hyperparams(lars)": lambda: jc.inject_hyperparams(jc.lars)(1.0),
    "chain(clip_by_block_rms, adam)": lambda: jc.chain(jc.clip_by_block_rms(0.1), jc.adam(0.1)),
}
TREE_DEPENDENT = {
    **TREE_DEPENDENT_FLAT_OK,
    "masked": lambda: jc.masked(jc.adam(0.1), {"w": True, "b": False, "v": True}),
    "freeze": lambda: jc.freeze({"w": False, "b": True, "v": False}),
    "multi_transform": lambda: jc.multi_transform(
        {"a": jc.adam(0.1), "s": jc.sgd(0.1)}, {"w": "a", "b": "s", "v": "s"}
    ),
}

# Wrappers of something whose layout nobody declared stay unmarked.
UNMARKED = {
    "apply_if_finite(optax.adam)": lambda: jc.apply_if_finite(optax.adam(0.1), 3),
    "inject_hyperparams(optax.adam)": lambda: jc.inject_hyperparams(optax.adam)(0.1),
    "MultiSteps(adam, skip fn)": lambda: jc.MultiSteps(
        jc.adam(0.1), 2, should_skip_update_fn=optax.skip_not_finite
    ),
}


def tree_params():
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    return {
        "w": jax.random.normal(k1, (4, 3)),
        "b": 0.1 * jax.random.normal(k2, (3,)),
        "v": 5.0 * jax.random.normal(k3, (2,)),
    }


def grads_at(params, step):
    # Leaves of very different scales, so per-leaf statistics differ from
    # the statistics of the whole vector.
    return jax.tree.map(lambda p: jnp.sin(p * (step + 1.0)) * jnp.abs(p) + 0.01 * p, params)


def run(opt, params, unravel=None):
    """Updates of three steps; on the flat vector when ``unravel`` is given."""
    state, out = opt.init(params), []
    for step in range(3):
        tree = unravel(params) if unravel else params
        g = grads_at(tree, step)
        g = ravel_pytree(g)[0] if unravel else g
        u, state = opt.update(g, state, params)
        out.append(unravel(u) if unravel else u)
        params = jc.apply_updates(params, u)
    return out


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_declared_elementwise(name):
    opt = ELEMENTWISE[name]()
    assert is_elementwise(opt) and not needs_tree_layout(opt), name


@pytest.mark.parametrize("name", sorted(TREE_DEPENDENT))
def test_declared_tree_dependent(name):
    opt = TREE_DEPENDENT[name]()
    assert needs_tree_layout(opt) and not is_elementwise(opt), name


@pytest.mark.parametrize("name", sorted(UNMARKED))
def test_wrappers_of_undeclared_transforms_stay_unmarked(name):
    opt = UNMARKED[name]()
    assert not is_elementwise(opt) and not needs_tree_layout(opt), name


@pytest.mark.slow
def test_elementwise_marks_hold_on_a_flat_packing():
    params = tree_params()
    flat, unravel = ravel_pytree(params)
    for name, build in sorted(ELEMENTWISE.items()):
        on_tree = run(build(), params)
        on_flat = run(build(), flat, unravel)
        for a, b in zip(on_tree, on_flat):
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
                np.testing.assert_allclose(x, y, rtol=2e-6, atol=1e-7, err_msg=name)


@pytest.mark.slow
def test_tree_dependent_marks_are_needed():
    # Run flat, each of these computes one statistic for all leaves: the
    # updates change, which is what the mark protects against.
    params = tree_params()
    flat, unravel = ravel_pytree(params)
    for name, build in sorted(TREE_DEPENDENT_FLAT_OK.items()):
        on_tree = run(build(), params)[-1]
        on_flat = run(build(), flat, unravel)[-1]
        diffs = [float(jnp.max(jnp.abs(x - y))) for x, y in
                 zip(jax.tree.leaves(on_tree), jax.tree.leaves(on_flat))]
        assert max(diffs) > 1e-4, name
    # Factored statistics exist only for a matrix: flat, the (4, 3) leaf
    # gets a full second moment.
    tree_state = jc.scale_by_factored_rms(min_dim_size_to_factor=2).init(params)
    flat_state = jc.scale_by_factored_rms(min_dim_size_to_factor=2).init(flat)
    assert tree_state.v_col["w"].shape == (4,) and tree_state.v_row["w"].shape == (3,)
    assert flat_state.v.shape == flat.shape
