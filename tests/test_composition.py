"""jaxopt_core optimizers composed with the rest of the ecosystem: flax nnx's
``Optimizer``, equinox's filtered training loops, and optax's combinators in
both directions. Each run is compared step for step with the same run using
optax's own optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_core as jc

# Builds flax and equinox models: seconds of tracing each.
pytestmark = pytest.mark.slow

STEPS = 25
RTOL, ATOL = 1e-5, 1e-6


def _problem(n=64, d=5, out=3, seed=0):
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, d))
    y = jnp.sin(x @ jax.random.normal(kw, (d, out)))
    return x, y


def _assert_trees_close(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL)


def _moved(before, after):
    return max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    )


# -- flax nnx ---------------------------------------------------------------


def _train_nnx(tx):
    nnx = pytest.importorskip("flax.nnx")

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(5, 16, rngs=rngs)
            self.out = nnx.Linear(16, 3, rngs=rngs)
            self.calls = nnx.Variable(jnp.zeros((), jnp.int32))  # not a Param: not optimized

        def __call__(self, x):
            return self.out(jnp.tanh(self.hidden(x)))

    def params(model):  # a copy: nnx.state shares the model's live variables
        return jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, nnx.Param)))

    model = MLP(nnx.Rngs(0))
    start = params(model)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x, y = _problem()

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(model):
            return jnp.mean((model(x) - y) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(STEPS)]
    return start, params(model), losses, optimizer


def test_nnx_optimizer_with_jc_adam_matches_optax():
    start, jc_params, jc_losses, opt = _train_nnx(jc.adam(1e-2))
    _, ox_params, ox_losses, _ = _train_nnx(optax.adam(1e-2))
    assert jc_losses[-1] < 0.7 * jc_losses[0]
    assert _moved(start, jc_params) > 1e-2
    _assert_trees_close(jc_params, ox_params)
    np.testing.assert_allclose(jc_losses, ox_losses, rtol=RTOL)
    assert int(opt.step[...]) == STEPS


@pytest.mark.parametrize(
    "name, kwargs",
    [("sgd", {"momentum": 0.9}), ("rmsprop", {"centered": True}), ("adagrad", {})],
)
def test_nnx_optimizer_with_other_jc_optimizers(name, kwargs):
    _, jc_params, jc_losses, _ = _train_nnx(getattr(jc, name)(1e-2, **kwargs))
    _, ox_params, _, _ = _train_nnx(getattr(optax, name)(1e-2, **kwargs))
    assert jc_losses[-1] < jc_losses[0]
    _assert_trees_close(jc_params, ox_params)


# -- equinox ----------------------------------------------------------------


def _train_eqx(opt):
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(5, 3, width_size=16, depth=1, activation=jnp.tanh, key=jax.random.key(1))
    x, y = _problem()
    params = eqx.filter(model, eqx.is_array)
    state = opt.init(params)

    @eqx.filter_jit
    def step(model, state):
        def loss_fn(model):
            return jnp.mean((jax.vmap(model)(x) - y) ** 2)

        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        updates, state = opt.update(grads, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state, loss

    start = model
    losses = []
    for _ in range(STEPS):
        model, state, loss = step(model, state)
        losses.append(float(loss))
    return eqx.filter(start, eqx.is_array), eqx.filter(model, eqx.is_array), losses


def test_equinox_with_jc_adamw_matches_optax():
    start, jc_params, jc_losses = _train_eqx(jc.adamw(1e-2, weight_decay=0.1))
    _, ox_params, ox_losses = _train_eqx(optax.adamw(1e-2, weight_decay=0.1))
    assert jc_losses[-1] < 0.7 * jc_losses[0]
    assert _moved(start, jc_params) > 1e-2
    _assert_trees_close(jc_params, ox_params)
    np.testing.assert_allclose(jc_losses, ox_losses, rtol=RTOL)


def test_equinox_weight_decay_mask_matches_optax():
    pytest.importorskip("equinox")

    # A callable mask: a tree of bools in the shape of an eqx.Module is itself
    # callable (the Module's __call__), so masks would take it for a function.
    def mask(params):
        return jax.tree.map(lambda p: p.ndim >= 2, params)

    _, jc_params, _ = _train_eqx(jc.adamw(1e-2, weight_decay=0.5, mask=mask))
    _, ox_params, _ = _train_eqx(optax.adamw(1e-2, weight_decay=0.5, mask=mask))
    _assert_trees_close(jc_params, ox_params)


# -- optax combinators ------------------------------------------------------


def _run(opt, params, steps=STEPS):
    x, y = _problem(out=1)

    def loss_fn(p):
        return jnp.mean((jnp.tanh(x @ p["w"]) @ p["v"] + p["b"] - y) ** 2)

    @jax.jit
    def step(p, s):
        g = jax.grad(loss_fn)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    s = opt.init(params)
    for _ in range(steps):
        params, s = step(params, s)
    return params, loss_fn(params)


def _params():
    k1, k2 = jax.random.split(jax.random.key(2))
    return {
        "w": jax.random.normal(k1, (5, 8)) * 0.5,
        "v": jax.random.normal(k2, (8, 1)) * 0.5,
        "b": jnp.zeros(1),
    }


def test_jc_optimizer_inside_optax_chain():
    jc_opt = optax.chain(optax.clip_by_global_norm(0.5), jc.adam(1e-2))
    ox_opt = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(1e-2))
    p0 = _params()
    (p_jc, loss_jc), (p_ox, _) = _run(jc_opt, p0), _run(ox_opt, p0)
    assert _moved(p0, p_jc) > 1e-2
    assert loss_jc < _run(jc_opt, p0, steps=0)[1]
    _assert_trees_close(p_jc, p_ox)


def test_optax_transforms_inside_jc_chain():
    jc_opt = jc.chain(
        optax.clip_by_global_norm(0.5),
        jc.scale_by_adam(b1=0.8),
        optax.add_decayed_weights(1e-2),  # reads the params passed down by jc.chain
        jc.scale_by_learning_rate(optax.linear_schedule(1e-2, 1e-3, 20)),
    )
    ox_opt = optax.chain(
        optax.clip_by_global_norm(0.5),
        optax.scale_by_adam(b1=0.8),
        optax.add_decayed_weights(1e-2),
        optax.scale_by_learning_rate(optax.linear_schedule(1e-2, 1e-3, 20)),
    )
    p0 = _params()
    p_jc, _ = _run(jc_opt, p0)
    assert _moved(p0, p_jc) > 1e-2
    _assert_trees_close(p_jc, _run(ox_opt, p0)[0])


def test_jc_optimizers_in_optax_multi_transform():
    labels = {"w": "fast", "v": "fast", "b": "slow"}
    jc_opt = optax.multi_transform({"fast": jc.adam(1e-2), "slow": jc.sgd(1e-3)}, labels)
    ox_opt = optax.multi_transform({"fast": optax.adam(1e-2), "slow": optax.sgd(1e-3)}, labels)
    p0 = _params()
    p_jc, _ = _run(jc_opt, p0)
    _assert_trees_close(p_jc, _run(ox_opt, p0)[0])


def test_optax_wrappers_around_jc_optimizer():
    # MultiSteps accumulates k gradients before calling the inner optimizer;
    # inject_hyperparams is not needed with jc (hyperparameters are data).
    jc_opt = optax.MultiSteps(jc.adam(1e-2), every_k_schedule=3)
    ox_opt = optax.MultiSteps(optax.adam(1e-2), every_k_schedule=3)
    p0 = _params()
    p_jc, _ = _run(jc_opt, p0)
    assert _moved(p0, p_jc) > 1e-3
    _assert_trees_close(p_jc, _run(ox_opt, p0)[0])
