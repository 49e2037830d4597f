"""Saved results: exact round trips, readable with NumPy alone, no pickle,
and a clear error for every damaged or edited file.

"Exact" is checked against the original objects: same tree structure (node
classes included), same leaf types, dtypes, shapes and bytes.
"""

import collections
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from conftest import DATA, PARAMS, mse
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jaxopt_core as jc
from jaxopt_core.training.archive import manifest_digest


class Pair(NamedTuple):  # a user's NamedTuple: comes back as a stand-in namedtuple
    first: object
    second: object


def assert_same(a, b):
    """Same structure (node classes too), leaf types, dtypes, shapes and bits."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array))
        if isinstance(x, (np.ndarray, np.generic, jax.Array)):
            if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
                assert jax.random.key_impl(x) == jax.random.key_impl(y)
                x, y = jax.random.key_data(x), jax.random.key_data(y)
            x, y = np.asarray(x), np.asarray(y)
            assert (x.dtype, x.shape) == (y.dtype, y.shape)
            assert x.tobytes() == y.tobytes()
        else:
            assert repr(x) == repr(y)


@pytest.fixture(scope="module")
def fit_result():
    return jc.fit(mse, PARAMS, jc.adam(0.01), DATA, steps=6)


@pytest.fixture(scope="module")
def sweep_result():
    grid = {"learning_rate": np.array([0.01, 0.1, 1e4], np.float32)}  # the last diverges
    return jc.sweep(mse, PARAMS, jc.sgd, DATA, grid=grid, steps=6)


def test_fit_round_trip(fit_result, tmp_path):
    config = {"optimizer": "adam", "lr": 0.01, "sizes": [1, 2], "nested": {"x": None}}
    path = fit_result.save(tmp_path / "fit.npz", config=config)
    back = jc.load_result(path)
    assert type(back) is jc.FitResult
    assert_same(back, fit_result)
    assert type(back.opt_state[0]) is jc.ScaleByAdamState  # the real class, not a stand-in
    meta = jc.load_metadata(path)
    assert meta.config == config and json.dumps(meta.config) == json.dumps(config)
    assert (meta.kind, meta.steps, meta.members, meta.hparams) == ("FitResult", 6, None, ())
    assert meta.versions["jax"] == jax.__version__
    assert meta.versions["optax"] == optax.__version__
    assert meta.versions["jaxopt_core"] == jc.__version__


def test_sweep_round_trip_and_numpy_alone(sweep_result, tmp_path):
    assert bool(sweep_result.diverged[-1])  # NaN losses must round-trip too
    path = sweep_result.save(tmp_path / "sweep.npz")
    back = jc.load_result(path)
    assert type(back) is jc.SweepResult
    assert_same(back, sweep_result)
    assert back.best_index == sweep_result.best_index
    np.testing.assert_array_equal(back.final_losses(), sweep_result.final_losses())
    meta = jc.load_metadata(path)
    assert (meta.steps, meta.members, meta.hparams, meta.config) == (6, 3, ("learning_rate",), None)
    # Readable without jaxopt_core: np.load refuses pickle by default.
    with np.load(path) as z:
        np.testing.assert_array_equal(z["losses"], np.asarray(sweep_result.losses))
        np.testing.assert_array_equal(z["params/w"], np.asarray(sweep_result.params["w"]))
        assert json.loads(z["manifest.json"])["content"]["kind"] == "SweepResult"


def test_same_result_same_bytes(sweep_result, tmp_path):
    a = sweep_result.save(tmp_path / "a.npz")
    b = jc.load_result(a).save(tmp_path / "b.npz")
    assert a.read_bytes() == b.read_bytes()


def tricky_params():
    Named = collections.namedtuple("Named", ["u", "v"])
    return {
        "bf16": jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3) / 3,
        "layers": [(jnp.ones(2), None), (jnp.zeros((0, 3)), np.float32(1.5))],
        7: Pair(np.arange(3, dtype=np.int64), {"s": "text", "f": float("nan"), "i": 2**70}),
        "named": Named(jnp.array(1, jnp.int8), [True, -0.0]),
        "state": optax.adam(0.1).init({"w": jnp.ones(2, jnp.bfloat16)}),
        "key": jax.random.split(jax.random.key(3), 2),
        "f8": np.array([0.5, -448.0], ml_dtypes.float8_e4m3fn),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    }


def test_tricky_params_round_trip(fit_result, tmp_path):
    res = fit_result._replace(params=tricky_params())
    back = jc.load_result(res.save(tmp_path / "t.npz"))
    p, q = res.params, back.params
    assert type(q["state"][0]) is optax.ScaleByAdamState and type(q["state"][1]) is optax.EmptyState
    # A NamedTuple from outside jaxopt_core/optax: a stand-in with its name and fields.
    for k in (7, "named"):
        cls = type(p[k])
        assert type(q[k]) is not cls and type(q[k]).__name__ == cls.__name__
        assert q[k]._fields == cls._fields
        assert_same(q[k], type(q[k])(*p[k]))
    rest = [k for k in p if k not in (7, "named")]
    assert_same({k: q[k] for k in rest}, {k: p[k] for k in rest})
    assert q["bf16"].dtype == jnp.bfloat16 and isinstance(q["bf16"], jax.Array)
    assert list(q) == list(p)  # dict order kept


DTYPES = [np.float32, np.float16, np.int8, np.uint32, np.bool_, np.complex64,
          ml_dtypes.bfloat16, ml_dtypes.float8_e5m2, ml_dtypes.int4]


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
       st.binary(min_size=64, max_size=64), st.booleans())
def test_any_bits_round_trip(dtype, shape, raw, as_jax):
    """Random bytes (NaN payloads, subnormals, ...) in any stored dtype come back bit for bit."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    bits = np.frombuffer((raw * (n // 64 + 1))[:n], np.uint8)
    x = bits.view(f"u{dtype.itemsize}").view(dtype).reshape(shape) if n else np.zeros(shape, dtype)
    if dtype == np.bool_:
        x = bits.reshape(shape) % 2 == 1 if n else x
    x = jnp.asarray(x) if as_jax and dtype.itemsize <= 4 else x
    res = jc.FitResult(*([None] * len(jc.FitResult._fields)))._replace(params={"x": x})
    with tempfile.TemporaryDirectory() as tmp:
        back = jc.load_result(res.save(os.path.join(tmp, "bits.npz")))
    assert_same(back.params, {"x": x})


def test_unsupported_nodes_named_at_save(fit_result, tmp_path):
    @jax.tree_util.register_pytree_node_class
    class Box:
        def __init__(self, x):
            self.x = x

        def tree_flatten(self):
            return (self.x,), None

        @classmethod
        def tree_unflatten(cls, aux, children):
            return cls(*children)

    cases = [({"w": Box(jnp.ones(2))}, "Box"), ({"w": object()}, "object"),
             ({(1, 2): jnp.ones(2)}, "dict key"), ({"w": np.array([{}], object)}, "dtype object"),
             ({"w": collections.OrderedDict(a=1)}, "OrderedDict")]
    for params, match in cases:
        with pytest.raises(TypeError, match=match):
            fit_result._replace(params=params).save(tmp_path / "bad.npz")
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left behind


def test_config_must_be_exact_json(fit_result, tmp_path):
    for config, err, match in [((1, 2), TypeError, "dict or None"),
                               ({"a": (1, 2)}, TypeError, r"config\['a'\] is a tuple"),
                               ({1: 2}, TypeError, "keys must be str"),
                               ({"a": [np.float32(1)]}, TypeError, r"config\['a'\]\[0\]"),
                               ({"a": float("inf")}, ValueError, "non-finite")]:
        with pytest.raises(err, match=match):
            fit_result.save(tmp_path / "c.npz", config=config)


def flip_each(result, path, positions):
    """Flip the byte at each position in turn: loading must raise
    jc.ResultFileError, or (a byte zip does not check, e.g. a local header's
    timestamp) give the same result. Returns how many were caught."""
    good = path.read_bytes()
    bad = path.with_name("bad.npz")
    caught = 0
    for i in positions:
        data = bytearray(good)
        data[i] ^= 0x5A
        bad.write_bytes(bytes(data))
        try:
            back = jc.load_result(bad)
        except jc.ResultFileError:
            caught += 1
            continue
        assert_same(back, result)
    return caught


def test_flipped_bytes_are_caught_or_harmless(fit_result, tmp_path):
    path = fit_result.save(tmp_path / "f.npz")
    positions = np.linspace(0, path.stat().st_size - 1, 100).astype(int)
    assert flip_each(fit_result, path, positions) > 0.8 * len(positions)


@pytest.mark.slow
def test_every_flipped_byte_is_caught_or_harmless(sweep_result, tmp_path):
    path = sweep_result.save(tmp_path / "s.npz")
    n = path.stat().st_size
    assert flip_each(sweep_result, path, range(n)) > 0.8 * n


def test_truncated_file(fit_result, tmp_path):
    good = fit_result.save(tmp_path / "f.npz").read_bytes()
    bad = tmp_path / "bad.npz"
    for n in [0, 10, len(good) // 3, len(good) // 2, len(good) - 30, len(good) - 1]:
        bad.write_bytes(good[:n])
        with pytest.raises(jc.ResultFileError, match="cannot load"):
            jc.load_result(bad)
        with pytest.raises(jc.ResultFileError):
            jc.load_metadata(bad)


def rewrite(src, dst, edit_manifest=None, extra=None, rehash=False):
    """Copy a saved file, editing the manifest (optionally with a fresh checksum)
    and replacing/adding entries ``extra`` (name -> bytes)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "manifest.json" and edit_manifest:
                doc = json.loads(data)
                edit_manifest(doc["content"])
                if rehash:
                    doc["content_sha256"] = manifest_digest(doc["content"])
                data = json.dumps(doc).encode()
            zout.writestr(name, (extra or {}).pop(name, data))
        for name, data in (extra or {}).items():
            zout.writestr(name, data)


def test_edited_manifest(fit_result, tmp_path):
    good = fit_result.save(tmp_path / "f.npz", config={"lr": 0.01})
    bad = tmp_path / "bad.npz"

    def set_lr(content):
        content["config"]["lr"] = 0.02

    rewrite(good, bad, set_lr)
    for load in (jc.load_result, jc.load_metadata):
        with pytest.raises(jc.ResultFileError, match="manifest.json does not match its checksum"):
            load(bad)

    # Edits with a recomputed checksum are still checked against the arrays and types.
    def dtype_object(content):
        content["fields"]["losses"]["dtype"] = "|O"

    def extra_field(content):
        content["fields"]["hack"] = {"t": "none"}

    def wrong_shape(content):
        content["fields"]["losses"]["shape"] = [3]

    for edit, match in [(dtype_object, "not a dtype"), (extra_field, r"unknown: \['hack'\]"),
                        (wrong_shape, "manifest says")]:
        rewrite(good, bad, edit, rehash=True)
        with pytest.raises(jc.ResultFileError, match=match):
            jc.load_result(bad)
    rewrite(good, bad, extra={"surprise.npy": b"x"})
    with pytest.raises(jc.ResultFileError, match="not described by the manifest"):
        jc.load_result(bad)


def test_no_pickle_no_imports(fit_result, tmp_path):
    """A pickled object array with a valid checksum is refused without being
    unpickled; a NamedTuple naming any module imports nothing."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = io.BytesIO()
    np.save(payload, np.array([Evil()], object), allow_pickle=True)
    assert b"pwned" in payload.getvalue()
    good = fit_result.save(tmp_path / "f.npz")
    bad = tmp_path / "bad.npz"

    def point_at_payload(content):
        node = content["fields"]["losses"]
        node.update(dtype="|O", shape=[1], sha256=hashlib.sha256(payload.getvalue()).hexdigest())

    rewrite(good, bad, point_at_payload, extra={"losses.npy": payload.getvalue()}, rehash=True)
    with pytest.raises(jc.ResultFileError):
        jc.load_result(bad)

    def keep_dtype(content):  # header says object, manifest says float32: header checked first
        content["fields"]["losses"]["sha256"] = hashlib.sha256(payload.getvalue()).hexdigest()

    rewrite(good, bad, keep_dtype, extra={"losses.npy": payload.getvalue()}, rehash=True)
    with pytest.raises(jc.ResultFileError, match="manifest says"):
        jc.load_result(bad)
    assert not marker.exists()

    assert "this" not in sys.modules

    def foreign_namedtuple(content):
        node = {"t": "namedtuple", "module": "this", "name": "Popen", "fields": ["a"],
                "items": [{"t": "int", "v": 1}]}
        content["fields"]["params"]["items"].append(["evil", node])

    rewrite(good, bad, foreign_namedtuple, rehash=True)
    evil = jc.load_result(bad).params["evil"]
    assert type(evil).__name__ == "Popen" and evil.a == 1 and isinstance(evil, tuple)
    assert "this" not in sys.modules


SHARDED = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    import jaxopt_core as jc
    sys.path.insert(0, "tests")
    from conftest import DATA, PARAMS, mse

    assert jax.device_count() == 4, jax.devices()
    grid = {"learning_rate": np.logspace(-3, -1, 8).astype(np.float32)}
    res = jc.sweep(mse, PARAMS, jc.adam, DATA, grid=grid, steps=5, batch_size=8)
    devices = len(res.params["w"].sharding.device_set)
    res.save(sys.argv[1], config={"devices": jax.device_count()})
    back = jc.load_result(sys.argv[1])
    pairs = list(zip(jax.tree.leaves(res), jax.tree.leaves(back), strict=True))
    same = jax.tree.structure(res) == jax.tree.structure(back) and all(
        type(a) is type(b) and np.asarray(a).dtype == np.asarray(b).dtype
        and np.asarray(a).tobytes() == np.asarray(b).tobytes() for a, b in pairs)
    np.save(sys.argv[2], np.asarray(res.params["w"]))
    print("REPORT" + json.dumps({"devices": devices, "same": same}))
    """
)


@pytest.mark.slow
def test_sharded_sweep_round_trip(tmp_path):
    """A sweep sharded over 4 (forced CPU) devices saves (gathered to the host)
    and loads back bit for bit, also in another process with one device."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path, ref = tmp_path / "sharded.npz", tmp_path / "w.npy"
    proc = subprocess.run([sys.executable, "-c", SHARDED, str(path), str(ref)], env=env,
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.split("REPORT")[1])
    assert report == {"devices": 4, "same": True}
    back = jc.load_result(path)
    assert np.asarray(back.params["w"]).tobytes() == np.load(ref).tobytes()
    assert jc.load_metadata(path).config == {"devices": 4}
