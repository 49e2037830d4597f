"""Shared test configuration and the one table of optimizers.

Every test that takes an argument named ``opt_case`` is run once per row of
``OPTIMIZER_TABLE``: ``(name, kwargs)`` such that ``jaxopt_core.<name>(**kwargs)``
and ``optax.<name>(**kwargs)`` are the same optimizer. ``learning_rate`` is not
in the kwargs: tests pass their own (often a traced one). Likewise every test
that takes ``transform_case`` runs once per row of ``TRANSFORM_TABLE``.
"""

import contextlib
import os
import signal

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

# A small noisy linear regression shared by the training and sweep tests (one
# loss object, so their compiled programs are shared too).
X = jax.random.normal(jax.random.key(0), (32, 3))
Y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.3 + 0.2 * jax.random.normal(jax.random.key(1), (32,))
DATA = (X, Y)
PARAMS = {"w": jnp.zeros(3), "b": jnp.zeros(())}


def mse(params, batch):
    """Mean squared error of the linear model ``x @ w + b``."""
    x, y = batch
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def numpy_batches(count, n=4, d=3, seed=0):
    """``count`` NumPy batches ``(x [n, d], y [n])`` for the linear model (streamed-data tests)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=n).astype(np.float32))
            for _ in range(count)]


class BatchLoader:
    """A PyTorch-style loader over ``batches``: ``__iter__`` gives a fresh pass,
    ``__len__`` its size (streamed-data tests)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)

OPTIMIZER_TABLE = [
    ("sgd", {}),
    ("sgd", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.5, "nesterov": True}),
    ("adam", {}),
    ("adam", {"b1": 0.5, "b2": 0.9, "eps_root": 1e-6}),
    ("adam", {"nesterov": True}),
    ("adamw", {"weight_decay": 0.1}),
    ("rmsprop", {}),
    ("rmsprop", {"centered": True, "initial_scale": 0.1}),
    ("rmsprop", {"momentum": 0.9, "nesterov": True}),
    ("rmsprop", {"eps_in_sqrt": False, "bias_correction": True, "decay": 0.8}),
    ("adagrad", {}),
    ("lion", {}),
    ("nadam", {}),
    ("nadamw", {"weight_decay": 0.1}),
    ("radam", {}),
    ("amsgrad", {}),
    ("adamax", {}),
    ("adabelief", {}),
    ("lamb", {"weight_decay": 0.01}),
    ("lars", {"weight_decay": 0.01}),
    ("adafactor", {"min_dim_size_to_factor": 2}),
    ("adafactor", {"min_dim_size_to_factor": 2, "momentum": 0.9, "weight_decay_rate": 0.01}),
]

# A learning rate per optimizer that makes 100+ steps on the test problems move
# far from the start without diverging.
LEARNING_RATES = {
    "sgd": 0.05,
    "adam": 0.01,
    "adamw": 0.01,
    "rmsprop": 0.005,
    "adagrad": 0.1,
    "lion": 0.003,  # sign steps: every coordinate moves by about lr
    "nadam": 0.01,
    "nadamw": 0.01,
    "radam": 0.01,
    "amsgrad": 0.01,
    "adamax": 0.01,
    "adabelief": 0.01,
    "lamb": 0.01,
    "lars": 1.0,  # the trust coefficient (1e-3) already scales the step
    "adafactor": 0.05,
}

# Transforms that take no learning rate first (clipping, combinators,
# accumulation, injected hyperparameters): ``(id, build, h)`` where
# ``build(module, h)`` builds the same transform from ``jaxopt_core`` or from
# ``optax`` (inner transforms come from the same module), ``h`` a numeric
# hyperparameter the tests trace and vmap over. The params are those of
# tests/core/test_optimizers.py (``{"dense": [w, b], "pair": (v, None)}``).
TRANSFORM_TABLE = [
    ("clip", lambda m, h: m.clip(h), 0.5),
    ("clip_by_global_norm", lambda m, h: m.clip_by_global_norm(h), 2.0),
    ("clip_by_block_rms", lambda m, h: m.clip_by_block_rms(h), 0.5),
    (
        "masked-adam",
        lambda m, h: m.chain(m.masked(m.adam(h), {"dense": True, "pair": False}), m.scale(-0.01)),
        0.01,
    ),
    (
        "masked-callable-sgd",
        lambda m, h: m.masked(
            m.sgd(h, momentum=0.9), lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)
        ),
        0.05,
    ),
    (
        "freeze",
        lambda m, h: m.chain(m.freeze({"dense": [False, True], "pair": True}), m.sgd(h)),
        0.05,
    ),
    (
        "multi_transform",
        lambda m, h: m.multi_transform(
            {"a": m.adam(h), "s": m.sgd(h), "z": m.set_to_zero()},
            {"dense": ["a", "s"], "pair": "z"},
        ),
        0.01,
    ),
    ("apply_if_finite", lambda m, h: m.apply_if_finite(m.adam(h), 2), 0.01),
    ("MultiSteps", lambda m, h: m.MultiSteps(m.adam(h), every_k_schedule=3), 0.05),
    (
        "MultiSteps-sum",
        lambda m, h: m.MultiSteps(m.sgd(h, momentum=0.5), 2, use_grad_mean=False),
        0.02,
    ),
    ("ema", lambda m, h: m.chain(m.ema(h), m.scale(-0.02)), 0.9),
    ("ema-no-debias", lambda m, h: m.chain(m.ema(h, debias=False), m.scale(-0.05)), 0.5),
    (
        "inject_hyperparams",
        lambda m, h: m.inject_hyperparams(m.adam)(
            learning_rate=m.linear_schedule(h, 0.0, 20), b1=0.8, b2=m.constant_schedule(0.99)
        ),
        0.02,
    ),
    (
        "inject_hyperparams-chain",
        lambda m, h: m.chain(
            m.clip_by_global_norm(1.0),
            # float32 hyperparameters: b2 = 0.999 would round to 1 in bfloat16.
            m.inject_hyperparams(m.scale_by_adam, hyperparam_dtype=jnp.float32)(b1=h),
            m.scale(-0.01),
        ),
        0.8,
    ),
]


@contextlib.contextmanager
def count_compiles():
    """Collect the XLA backend compiles that happen inside the block:
    ``with count_compiles() as seen: ...; assert len(seen) == 0``."""
    import jax

    seen = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            seen.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture
def compiles():
    """The list of backend compiles seen during one test (see count_compiles)."""
    with count_compiles() as seen:
        yield seen


# A simulated Ctrl-C from inside a run: append n to ARMED_CTRL_C and the n-th
# execution of ctrl_c_point() sends this process one SIGINT.
ARMED_CTRL_C = []


def _interrupt(_):
    if ARMED_CTRL_C:
        ARMED_CTRL_C[0] -= 1
        if ARMED_CTRL_C[0] <= 0:
            ARMED_CTRL_C.clear()
            os.kill(os.getpid(), signal.SIGINT)


def ctrl_c_point():
    """Call inside a traced function (e.g. a loss): see ``ARMED_CTRL_C``."""
    jax.debug.callback(_interrupt, 0)


def _case_id(case):
    name, kw = case
    return name + "".join(f"-{k}={v}" for k, v in kw.items())


# The rows that also run in the fast tier (``pytest -m "not slow"``): Adam and
# a factored optimizer, a mask and an accumulating wrapper. Every row runs in
# the full suite (CI).
FAST_OPTIMIZERS = {"adam", "adafactor-min_dim_size_to_factor=2"}
FAST_TRANSFORMS = {"masked-adam", "MultiSteps"}


# Doctests of these packages train models (compiles of whole runs): they run in
# the full suite only; the core's doctests stay in the fast tier.
SLOW_DOCTEST_PACKAGES = (
    "jaxopt_core.training",
    "jaxopt_core.app",
    "jaxopt_core.regularization.path",
)


# The longest files run first: under pytest-xdist (``--dist loadfile``) a
# file is one unit of work, and a long file handed out last leaves the other
# workers idle at the end. Measured on 2 workers (seconds per file, full run):
# optax's suite 257, test_optimizers 245, test_layout_safety 153, notebooks
# 145, test_cli 129, benchmarks 128, test_resumable 90, test_transforms 82.
LONGEST_FIRST = ("test_optax_suite.py", "test_optimizers.py", "test_layout_safety.py",
                 "test_notebooks.py", "test_cli.py", "test_benchmarks.py",
                 "test_resumable.py", "test_transforms.py")


def pytest_configure(config):
    # xdist hands files out by number of tests, most first, unless told to
    # keep the collection order; the one-test optax suite file (the longest)
    # then ran last while the other worker sat idle for its last ~3 min (its
    # two subprocesses kept both cores busy, so the whole run gained ~30 s,
    # 1061 -> 1030 s). Keep the order LONGEST_FIRST sets.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name.startswith(SLOW_DOCTEST_PACKAGES):
            item.add_marker(pytest.mark.slow)

    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within each group is kept


def _rows(table, ids, fast):
    unknown = fast - set(ids)
    assert not unknown, f"fast-tier rows not in the table: {sorted(unknown)}"
    return [
        pytest.param(row, id=i, marks=() if i in fast else pytest.mark.slow)
        for row, i in zip(table, ids, strict=True)
    ]


def pytest_generate_tests(metafunc):
    if "opt_case" in metafunc.fixturenames:
        ids = [_case_id(c) for c in OPTIMIZER_TABLE]
        metafunc.parametrize("opt_case", _rows(OPTIMIZER_TABLE, ids, FAST_OPTIMIZERS))
    if "transform_case" in metafunc.fixturenames:
        ids = [c[0] for c in TRANSFORM_TABLE]
        metafunc.parametrize("transform_case", _rows(TRANSFORM_TABLE, ids, FAST_TRANSFORMS))
