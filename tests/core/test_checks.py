"""Bad hyperparameters raise at construction, naming the argument and value;
traced values are accepted unchecked."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxopt_core as jc

NAN, INF = float("nan"), float("inf")

BAD = [
    (jc.sgd, dict(learning_rate=-0.1), ValueError, "learning_rate"),
    (jc.sgd, dict(learning_rate=NAN), ValueError, "learning_rate"),
    (jc.adam, dict(learning_rate=INF), ValueError, "learning_rate"),
    (jc.sgd, dict(learning_rate="0.1"), TypeError, "learning_rate"),
    (jc.sgd, dict(learning_rate=None), TypeError, "learning_rate"),
    (jc.sgd, dict(learning_rate=0.1, momentum=1.5), ValueError, "momentum"),
    (jc.sgd, dict(learning_rate=0.1, momentum=-0.5), ValueError, "momentum"),
    (jc.sgd, dict(learning_rate=0.1, momentum="high"), TypeError, "momentum"),
    (jc.adam, dict(learning_rate=0.1, b1=1.0), ValueError, "b1"),
    (jc.adam, dict(learning_rate=0.1, b2=1.5), ValueError, "b2"),
    (jc.adam, dict(learning_rate=0.1, b2=-0.1), ValueError, "b2"),
    (jc.adam, dict(learning_rate=0.1, eps=-1e-8), ValueError, "eps"),
    (jc.adam, dict(learning_rate=0.1, eps_root=NAN), ValueError, "eps_root"),
    (jc.adamw, dict(learning_rate=0.1, weight_decay=INF), ValueError, "weight_decay"),
    (jc.adamw, dict(learning_rate=0.1, weight_decay="x"), TypeError, "weight_decay"),
    (jc.rmsprop, dict(learning_rate=0.1, decay=1.0), ValueError, "decay"),
    (jc.rmsprop, dict(learning_rate=0.1, eps=-1.0), ValueError, "eps"),
    (jc.rmsprop, dict(learning_rate=0.1, momentum=2.0), ValueError, "momentum"),
    (
        jc.adagrad,
        dict(learning_rate=0.1, initial_accumulator_value=-0.1),
        ValueError,
        "initial_accumulator_value",
    ),
    (jc.adagrad, dict(learning_rate=0.1, eps=-1e-7), ValueError, "eps"),
    (jc.adam, dict(learning_rate=jnp.array([0.1, -0.2])), ValueError, "learning_rate"),
]


@pytest.mark.parametrize("fn,kw,exc,name", BAD, ids=[f"{b[0].__name__}-{b[3]}" for b in BAD])
def test_bad_values_raise_naming_argument_and_value(fn, kw, exc, name):
    with pytest.raises(exc) as err:
        fn(**kw)
    msg = str(err.value)
    assert name in msg
    assert repr(kw[name])[:6] in msg or str(kw[name])[:6] in msg


@pytest.mark.parametrize(
    "fn,kw",
    [
        (jc.sgd, dict(learning_rate=0.0, momentum=0.0)),
        (jc.adam, dict(learning_rate=0.0, b1=0.0, b2=0.0, eps=0.0)),
        (jc.adamw, dict(learning_rate=1e-3, weight_decay=0.0)),
        (jc.rmsprop, dict(learning_rate=1e-3, decay=0.0, eps=0.0)),
        (jc.adagrad, dict(learning_rate=1e-3, initial_accumulator_value=0.0, eps=0.0)),
        (jc.adam, dict(learning_rate=np.float32(1e-3))),
        (jc.adam, dict(learning_rate=jnp.array(1e-3))),
        (jc.sgd, dict(learning_rate=1)),
        # optax's ranges: momentum 1 (trace(decay=1.0)), a negative decay (fromage)
        (jc.sgd, dict(learning_rate=0.1, momentum=1.0)),
        (jc.adamw, dict(learning_rate=0.1, weight_decay=-0.3)),
        (jc.adam, dict(learning_rate=jnp.asarray(1e-3, jnp.bfloat16))),
        (jc.adam, dict(learning_rate=jnp.asarray(1e-3, jnp.float16), b1=jnp.bfloat16(0.9))),
    ],
)
def test_zero_and_array_values_are_valid(fn, kw):
    fn(**kw)


def test_traced_values_are_not_checked():
    # Inside jit a hyperparameter is abstract; a negative one is the user's call.
    @jax.jit
    def build(lr, b1):
        opt = jc.adam(lr, b1=b1)
        return opt.update(jnp.ones(1), opt.init(jnp.ones(1)))[0]

    assert build(-1.0, 0.5).shape == (1,)


@settings(max_examples=40, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_b1_outside_unit_interval_always_rejected(b1):
    ok = 0.0 <= b1 < 1.0
    if ok:
        jc.adam(1e-3, b1=b1)
    else:
        with pytest.raises(ValueError, match="b1"):
            jc.adam(1e-3, b1=b1)


@settings(max_examples=25, deadline=None)
@given(
    lr=st.floats(1e-4, 1.0),
    b1=st.floats(0.0, 0.99),
    b2=st.floats(0.0, 0.999),
    g=st.lists(st.floats(-100, 100), min_size=3, max_size=3),
)
def test_adam_step_matches_optax_for_any_hyperparameters(lr, b1, b2, g):
    out = _two_adam_steps(
        jnp.float32(lr), jnp.float32(b1), jnp.float32(b2), jnp.array(g, jnp.float32)
    )
    np.testing.assert_allclose(np.asarray(out[0]), np.asarray(out[1]), rtol=2e-6, atol=1e-7)


@jax.jit
def _two_adam_steps(lr, b1, b2, g):
    # One compile for all hypothesis examples: the hyperparameters are data.
    res = []
    for mod in (jc, optax):
        opt = mod.adam(lr, b1=b1, b2=b2)
        p = jnp.zeros(3)
        s = opt.init(p)
        for k in range(2):
            u, s = opt.update(g * (k + 1), s, p)
            p = mod.apply_updates(p, u)
        res.append(p)
    return res
