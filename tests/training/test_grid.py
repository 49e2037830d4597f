"""The grid of a sweep: where each name goes, how the optimizer is probed
(abstractly, and per member with concrete values), errors that name their
culprit, and sweeps over schedule arguments."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import DATA, PARAMS, mse

import jaxopt_core as jc
from jaxopt_core.training.grid import probe_optimizer, route_grid


def test_l1_l2_go_to_the_optimizer_when_it_takes_them():
    grid = {"l1": [0.1], "l2": [0.2], "seed": [0], "learning_rate": [0.1]}
    assert route_grid(grid, jc.sgd) == (("learning_rate",), ("l1", "l2"))
    prox = functools.partial(jc.proximal_gradient, 0.1)
    assert route_grid(grid, prox) == (("l1", "l2", "learning_rate"), ())
    # Bound by partial, still a keyword: the grid value wins.
    assert route_grid(grid, functools.partial(jc.proximal_gradient, l1=0.5)) == (
        ("l1", "l2", "learning_rate"), ())

    def anything(**kw):
        return jc.sgd(**kw)

    # **kwargs says nothing about l1: it stays a loss penalty.
    assert route_grid(grid, anything) == (("learning_rate",), ("l1", "l2"))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_loss_penalty_values_are_checked_per_member(bad):
    # As jc.regularized(loss, l2=-1.0) raises, so does a sweep over that value
    # (it was trained with a negative or NaN penalty, or flagged as diverged).
    grid = {"learning_rate": [0.1, 0.1, 0.01], "l2": [0.0, bad, 0.1]}
    with pytest.raises(ValueError, match=r"grid\['l2'\] member 1.*got l2=" + repr(bad)):
        jc.sweep(mse, PARAMS, jc.adam, DATA, grid=grid, steps=2)


def test_probe_builds_from_scalars_never_from_the_grid_array():
    seen = []

    def opt_fn(learning_rate, warmup_steps):
        seen.append((learning_rate, warmup_steps))
        schedule = jc.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, 100)
        return jc.adam(schedule)

    hp = {"learning_rate": np.array([0.1, 0.1, 0.2], np.float32),
          "warmup_steps": np.array([5, 5, 10], np.int32)}
    probe_optimizer(opt_fn, hp, PARAMS)
    concrete = [s for s in seen if not isinstance(s[0], jax.core.Tracer)]
    traced = [s for s in seen if isinstance(s[0], jax.core.Tracer)]
    # One concrete call per distinct member (Python numbers), one traced build.
    assert concrete == [(pytest.approx(0.1), 5), (pytest.approx(0.2), 10)]
    assert all(type(v) in (float, int) for s in concrete for v in s)
    assert len(traced) == 1 and traced[0][0].shape == () and traced[0][1].dtype == jnp.int32


def test_a_member_the_optimizer_rejects_is_named():
    with pytest.raises(ValueError, match=r"grid member 1 .*learning_rate"):
        jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": [0.1, -1.0]}, steps=2)
    sched = functools.partial(jc.warmup_cosine_decay_schedule, 0.0, 0.1)

    def opt_fn(warmup_steps):
        return jc.adam(sched(warmup_steps, 20))

    with pytest.raises(ValueError, match=r"grid member 1 \{'warmup_steps': 20\}"):
        jc.sweep(mse, PARAMS, opt_fn, DATA, grid={"warmup_steps": [5, 20]}, steps=2)


def test_optax_schedule_branching_names_the_jc_schedule():
    def opt_fn(peak):
        return optax.adam(optax.warmup_cosine_decay_schedule(0.0, peak, 10, 100))

    with pytest.raises(TypeError) as err:
        jc.sweep(mse, PARAMS, opt_fn, DATA, grid={"peak": [1e-3, 1e-2]}, steps=2)
    msg = str(err.value)
    assert msg.startswith("optimizer_fn uses the swept value of grid entry 'peak'")
    assert "optax.warmup_cosine_decay_schedule branches in Python" in msg
    assert "jaxopt_core.warmup_cosine_decay_schedule" in msg
    assert "JAX's message" in msg  # JAX's own explanation is kept


def test_optimizer_branch_names_optimizer_fn_and_the_grid_entry():
    def opt_fn(learning_rate, momentum):
        if momentum > 0:  # a Python branch on a swept value
            return jc.sgd(learning_rate, momentum=momentum)
        return jc.sgd(learning_rate)

    grid = {"learning_rate": [0.1, 0.2], "momentum": [0.0, 0.9]}
    with pytest.raises(TypeError, match=r"optimizer_fn .* grid entry 'momentum' as a Python"):
        jc.sweep(mse, PARAMS, opt_fn, DATA, grid=grid, steps=2)


def _branchy_loss(params, batch):
    loss = mse(params, batch)
    if loss > 1.0:  # a Python branch on a traced value
        return loss
    return 2 * loss


def test_loss_branch_names_loss_fn_not_optimizer_fn():
    with pytest.raises(TypeError) as err:
        jc.sweep(_branchy_loss, PARAMS, jc.sgd, DATA, grid={"learning_rate": [0.1]}, steps=2)
    assert str(err.value).startswith("loss_fn uses a traced value as a Python value")
    assert "optimizer_fn" not in str(err.value)
    assert isinstance(err.value.__cause__, jax.errors.TracerBoolConversionError)
    with pytest.raises(TypeError, match="^loss_fn uses a traced value"):
        jc.fit(_branchy_loss, PARAMS, jc.sgd(0.1), DATA, steps=2)


def test_other_errors_keep_their_type_and_name_the_culprit():
    def bad_loss(params, batch):
        return jnp.mean(params["w"] @ jnp.ones(4))  # shapes (3,) and (4,)

    with pytest.raises(TypeError, match="dot_general") as err:
        jc.fit(bad_loss, PARAMS, jc.sgd(0.1), DATA, steps=2)
    assert "(raised while tracing loss_fn)" in "\n".join(getattr(err.value, "__notes__", []))

    def bad_update(updates, state, params=None):
        if jnp.sum(updates["w"]) > 0:
            return updates, state
        return updates, state

    opt = optax.chain(optax.GradientTransformation(lambda p: optax.EmptyState(), bad_update),
                      optax.sgd(0.1))
    with pytest.raises(TypeError, match="^optimizer uses a traced value"):
        jc.fit(mse, PARAMS, opt, DATA, steps=2)


@pytest.mark.slow
def test_proximal_gradient_sweep_gives_fits_exact_zeros():
    x = jax.random.normal(jax.random.key(5), (40, 12))
    y = x[:, :3] @ jnp.array([2.0, -1.0, 1.5]) + 0.1 * jax.random.normal(jax.random.key(6), (40,))

    def loss(w, batch):
        return 0.5 * jnp.mean((batch[0] @ w - batch[1]) ** 2)

    l1s = np.array([0.02, 0.3], np.float32)
    res = jc.sweep(loss, jnp.zeros(12), functools.partial(jc.proximal_gradient, 0.1), (x, y),
                   grid={"l1": l1s}, steps=150)
    fit = jc.fit(loss, jnp.zeros(12), jc.proximal_gradient(0.1, l1=float(l1s[1])), (x, y),
                 steps=150)
    zeros = np.asarray(fit.params == 0)
    assert 3 <= zeros.sum() < 12  # a sparse solution, not all zeros
    np.testing.assert_array_equal(np.asarray(res.params[1] == 0), zeros)
    np.testing.assert_allclose(res.params[1], fit.params, rtol=1e-5, atol=1e-7)
    assert (res.params[0] == 0).sum() < zeros.sum()


def _schedule_sweep_equals_fit(opt_fn, grid, steps=30):
    res = jc.sweep(mse, PARAMS, opt_fn, DATA, grid=grid, steps=steps)
    name = next(iter(grid))
    for i, value in enumerate(grid[name]):
        fit = jc.fit(mse, PARAMS, opt_fn(**{name: value.item()}), DATA, steps=steps)
        np.testing.assert_allclose(res.losses[i], fit.losses, rtol=1e-5)
        np.testing.assert_allclose(res.params["w"][i], fit.params["w"], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_sweep_over_schedule_values_equals_fit():
    def opt_fn(peak):
        return jc.adam(jc.warmup_cosine_decay_schedule(0.0, peak, 10, 100))

    _schedule_sweep_equals_fit(opt_fn, {"peak": np.array([1e-3, 3e-2], np.float32)})


@pytest.mark.slow
def test_sweep_over_integer_step_counts_equals_fit():
    def opt_fn(warmup_steps):
        return jc.sgd(jc.warmup_cosine_decay_schedule(0.0, 0.1, warmup_steps, 40))

    _schedule_sweep_equals_fit(opt_fn, {"warmup_steps": np.array([0, 5, 25], np.int32)})

    def decay(transition_steps):
        return jc.sgd(jc.exponential_decay(0.1, transition_steps, 0.5, transition_begin=3))

    _schedule_sweep_equals_fit(decay, {"transition_steps": np.array([-1, 4, 9], np.int32)})
