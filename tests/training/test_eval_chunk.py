"""``sweep(..., eval_chunk_size=B)``: evaluations over blocks of B members.

Against the vmapped evaluation (the default): the same values bit for bit on
a model without matrix products, the same up to float32 rounding on one with
them (the block's program may add products and sums over examples up in
another order), training untouched either way; the program's
memory smaller when the evaluation's activations dominate; bad values refused
with the argument named."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import DATA, PARAMS, X, Y, mse

import jaxopt_core as jc
from jaxopt_core.training import program, resumable
from jaxopt_core.training import sweep_run as sweep_module
from jaxopt_core.training.evaluation import EvalPlan, check_eval_chunk_size

GRID = {"learning_rate": np.array([0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 1e37])}  # 7: blocks 3+3+1


def mse_without_products(params, batch):
    x, y = batch
    return jnp.mean((jnp.sum(x * params["w"], axis=1) + params["b"] - y) ** 2)


def _sweep(loss, opt_fn, **kw):
    return jax.device_get(jc.sweep(loss, PARAMS, opt_fn, DATA, grid=GRID, steps=20, batch_size=8,
                                   eval_fn=loss, eval_data=(X, Y), eval_every=5, **kw))


def _fields(res):
    return {name: "<none>" if value is None else value
            for name, value in zip(res._fields, res, strict=True)}


@pytest.mark.parametrize("opt_fn", [
    pytest.param(jc.adam, id="jc.adam"),
    pytest.param(optax.sgd, id="optax.sgd", marks=pytest.mark.slow),  # the full suite's
])
def test_blocks_equal_vmap_bit_for_bit_without_matrix_products(opt_fn):
    plain = _sweep(mse_without_products, opt_fn, keep_best=True)
    for size in (1, 3, 7, 100):
        blocked = _sweep(mse_without_products, opt_fn, keep_best=True, eval_chunk_size=size)
        chex.assert_trees_all_equal(_fields(blocked), _fields(plain))
    assert plain.diverged.any() and np.isnan(plain.evals["eval"]).any()


def test_blocks_round_matrix_products_only_and_leave_training_alone():
    plain = _sweep(mse, jc.adam)
    blocked = _sweep(mse, jc.adam, eval_chunk_size=3)
    np.testing.assert_array_equal(blocked.losses, plain.losses)
    chex.assert_trees_all_equal(blocked.params, plain.params)
    np.testing.assert_array_equal(np.isnan(blocked.evals["eval"]), np.isnan(plain.evals["eval"]))
    np.testing.assert_allclose(blocked.evals["eval"], plain.evals["eval"], rtol=1e-6)


def _compiled_memory(monkeypatch, **kw):
    """XLA's bytes (arguments + outputs + temporaries) of the sweep's program."""
    captured = {}
    real = program.sweep_program  # not sweep_run's name: a spy after the first call

    def spy(*args, **kwargs):
        captured["call"] = (args, kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "sweep_program", spy)
    k1, k2 = jax.random.split(jax.random.key(3))
    x_val, y_val = jax.random.normal(k1, (512, 3)), jax.random.normal(k2, (512,))
    params = {"w1": jnp.full((3, 64), 0.1), "w2": jnp.full((64,), 0.1)}

    def mlp(p, batch):
        x, y = batch
        return jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] - y) ** 2)

    jc.sweep(mlp, params, jc.sgd, DATA, grid={"learning_rate": np.linspace(0.01, 0.1, 64)},
             steps=2, eval_fn=mlp, eval_data=(x_val, y_val), **kw)
    args, kwargs = captured["call"]
    m = real.lower(*args, **kwargs).compile().memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes


def test_blocks_bound_the_evaluation_memory(monkeypatch):
    # 64 members x 512 examples x 64 hidden units: 8 MB of activations at once,
    # 1 MB in blocks of 8.
    whole = _compiled_memory(monkeypatch)
    blocked = _compiled_memory(monkeypatch, eval_chunk_size=8)
    assert blocked < whole - 4e6, (whole, blocked)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "8"])
def test_bad_sizes_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="eval_chunk_size must be None or an int >= 1"):
        _sweep(mse, jc.sgd, eval_chunk_size=bad)


def test_it_needs_an_eval_fn_and_one_device():
    with pytest.raises(ValueError, match="eval_chunk_size=4 needs an eval_fn"):
        jc.sweep(mse, PARAMS, jc.sgd, DATA, grid=GRID, steps=2, eval_chunk_size=4)
    plan = EvalPlan(mse, 0, 2, ("eval",), ("float32",), True)
    with pytest.raises(ValueError, match="needs the members on one device; they are sharded "
                                         "over 4"):
        check_eval_chunk_size(4, plan, 4)


def test_an_unset_size_leaves_checkpoint_fingerprints_as_they_were():
    spec = program.SweepSpec(*[None] * 13, plan=None)
    assert "eval_chunk" not in resumable.run_fingerprint("sweep", spec, {}, {})
    assert "eval_chunk" in resumable.run_fingerprint("sweep", spec._replace(eval_chunk=8), {}, {})
