"""Checkpoints of running programs (jaxopt_core.training.checkpoints): orbax
round trips with NamedTuple states and key arrays, half-written steps ignored,
configurations compared."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_core as jc
from jaxopt_core.training.checkpoints import FINGERPRINT, CheckpointStore, abstract_of


def _state():
    p = {"w": jnp.arange(3.0), "b": jnp.array(0.5)}
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1))
    return {"p": p, "s": opt.init(p), "jc": jc.adam(0.1).init(p), "alive": jnp.array([True, False]),
            "key_data": jax.random.key_data(jax.random.key(3)), "ev": None, "empty": {},
            "no_rows": jnp.zeros((0, 3), jnp.int32)}


def _equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(x.dtype == y.dtype and x.shape == y.shape
               and bool((np.asarray(x) == np.asarray(y)).all()) for x, y in zip(la, lb))


def test_round_trip_keeps_namedtuples_keys_and_bits(tmp_path):
    state = _state()
    with CheckpointStore(tmp_path, {"a": "1"}) as store:
        assert store.latest_step() is None
        store.save(4, state, {"t": 4, "shape": [2, 3]})
    with CheckpointStore(tmp_path, {"a": "1"}) as store:
        assert store.latest_step() == 4
        assert store.read_meta(4) == {"t": 4, "shape": [2, 3]}
        back, meta = store.restore(4, abstract_of(state))
    assert meta["t"] == 4 and _equal(back, state)
    # NamedTuple states come back as their classes (orbax restores into the target).
    assert type(back["s"][1][0]) is type(state["s"][1][0])
    assert type(back["jc"]) is type(state["jc"])


def test_typed_keys_are_refused_with_their_place(tmp_path):
    with CheckpointStore(tmp_path, {}) as store, pytest.raises(TypeError, match=r"\['k'\]"):
        store.save(1, {"k": jax.random.key(0)}, {})


def test_half_written_step_is_never_used(tmp_path):
    state = {"x": jnp.arange(4.0)}
    with CheckpointStore(tmp_path, {"a": "1"}) as store:
        store.save(2, state, {"t": 2})
    # What a process killed while writing step 3 leaves: orbax's temporary folder.
    tmp = tmp_path / "3.orbax-checkpoint-tmp-1234567"
    tmp.mkdir()
    (tmp / "partial").write_text("x")
    with CheckpointStore(tmp_path, {"a": "1"}) as store:
        assert store.latest_step() == 2 and store.all_steps() == [2]
        back, _ = store.restore(2, abstract_of(state))
    assert (back["x"] == state["x"]).all()


def test_old_steps_are_pruned(tmp_path):
    with CheckpointStore(tmp_path, {"a": "1"}) as store:
        for t in (1, 2, 3, 4):
            store.save(t, {"x": jnp.full(2, t)}, {"t": t})
        store.wait()
        assert store.all_steps() == [3, 4]


def test_another_configuration_is_refused_naming_the_differences(tmp_path):
    with CheckpointStore(tmp_path, {"steps": "10", "grid": "lr", "key": "k"}) as store:
        store.save(5, {"x": jnp.ones(2)}, {"t": 5})
    with pytest.raises(jc.CheckpointMismatchError) as err:
        CheckpointStore(tmp_path, {"steps": "20", "grid": "lr", "key": "j"})
    msg = str(err.value)
    assert "steps: checkpoint '10', this call '20'" in msg and "key:" in msg
    assert "grid" not in msg and str(tmp_path) in msg
    # A folder without complete checkpoints takes the new configuration.
    other = tmp_path / "fresh"
    CheckpointStore(other, {"steps": "10"}).close()
    CheckpointStore(other, {"steps": "20"}).close()
    assert json.loads((other / FINGERPRINT).read_text())["fingerprint"] == {"steps": "20"}


def test_foreign_folders_are_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="checkpoint_dir"):
        CheckpointStore(tmp_path / "file", {})
    with CheckpointStore(tmp_path / "run", {"a": "1"}) as store:
        store.save(1, {"x": jnp.ones(1)}, {})
    (tmp_path / "run" / FINGERPRINT).unlink()
    with pytest.raises(jc.CheckpointMismatchError, match="not written by jaxopt_core"):
        CheckpointStore(tmp_path / "run", {"a": "1"})
