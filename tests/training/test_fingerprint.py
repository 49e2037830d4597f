"""Configuration fingerprints: equal when built the same way, different when a
captured number, argument or name differs (jaxopt_core.training.fingerprint)."""

import functools
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_core as jc
from jaxopt_core.training.fingerprint import describe, describe_shapes, differences


def test_optimizers_are_described_by_what_they_captured():
    for make in (jc.adam, optax.adam, jc.sgd, optax.sgd):
        assert describe(make(0.1)) == describe(make(0.1))
        assert describe(make(0.1)) != describe(make(0.2))
    assert describe(jc.adam(0.1)) != describe(optax.adam(0.1))
    assert describe(optax.adam(0.1, b1=0.8)) != describe(optax.adam(0.1))
    sched = optax.cosine_decay_schedule(0.1, 100)
    assert describe(optax.adam(sched)) != describe(optax.adam(optax.cosine_decay_schedule(0.1, 90)))


def test_partials_functions_and_arrays():
    assert describe(functools.partial(jc.sgd, momentum=0.9)) != describe(
        functools.partial(jc.sgd, momentum=0.8))
    assert describe(jc.sgd).startswith("jaxopt_core.") and "optimizers.sgd" in describe(jc.sgd)
    small, big = np.arange(3.0), np.arange(100.0)
    assert "[0.0, 1.0, 2.0]" in describe(small)
    assert describe(big) == describe(big.copy()) and describe(big) != describe(big + 1)
    assert describe(jnp.ones(3)) == describe(np.ones(3, np.float32))
    assert "0x" not in describe(lambda x: x) + describe(object())


@pytest.mark.slow
def test_description_is_the_same_in_another_process():
    code = ("import jaxopt_core as jc, optax, functools;"
            "from jaxopt_core.training.fingerprint import describe;"
            "print(describe(optax.chain(optax.clip(1.0), optax.adamw(0.1))));"
            "print(describe(functools.partial(jc.sgd, momentum=0.9)))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1] and runs[0].count("\n") == 2


def test_shapes_and_differences():
    assert describe_shapes({"w": jnp.zeros(3)}) != describe_shapes({"w": jnp.zeros(4)})
    assert describe_shapes({"w": jnp.zeros(3)}) != describe_shapes({"v": jnp.zeros(3)})
    long_a, long_b = "x" * 300 + "a" + "y" * 300, "x" * 300 + "b" + "y" * 300
    (line,) = differences({"optimizer": long_a, "steps": "5"}, {"optimizer": long_b, "steps": "5"})
    assert line.startswith("optimizer:") and "xa" in line and "xb" in line and len(line) < 400
    assert differences({"a": "1"}, {"b": "1"}) == [
        "a: checkpoint '1', this call '<absent>'", "b: checkpoint '<absent>', this call '1'"]


def test_search_settings_are_described_by_their_fields():
    # A checkpointed PBT sweep resumed with other perturb factors, bounds or
    # resample_prob was accepted: the frozen dataclasses were described by type.
    assert describe(jc.pbt(5)) == describe(jc.pbt(5))
    for other in (jc.pbt(5, perturb=(0.5, 2.0)), jc.pbt(5, resample_prob=0.5),
                  jc.pbt(5, bounds={"learning_rate": (1e-3, 1e-2)})):
        assert describe(other) != describe(jc.pbt(5))
    assert describe(jc.successive_halving(3)) != describe(jc.successive_halving(2))
    assert describe(jc.log_uniform(1e-3, 1.0)) != describe(jc.log_uniform(1e-4, 1.0))
    assert "perturb=tuple[0.5, 2.0]" in describe(jc.pbt(5, perturb=(0.5, 2.0)))
