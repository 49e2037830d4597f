"""(a) One optimizer step, jaxopt_core against optax, against a streaming ceiling.

The step is ``update`` then ``apply_updates``, jitted with the params and the
optimizer state donated (XLA writes them in place); the gradients are a fixed
tree passed to every call. The same tree, hyperparameters and step function
are used for both libraries; only the library differs.

Bytes per step are the minimum an elementwise step must move: read the
params, the gradients and every state buffer, write the params and every state
buffer, ``itemsize * (3 N + 2 S)`` for N parameters and S state entries
(scalar step counts left out). The streaming ceiling is the achieved bandwidth
of the simplest donated in-place kernel on the same tree, ``x * c``
(``2 N`` elements moved), measured in the same run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import jaxopt_core as jc
from benchmarks.timing import Timing, calibrate, compile_seconds, interleaved, run_once

LEARNING_RATE = 1e-3

# name -> (constructor in both libraries, its keyword arguments)
OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("sgd", {}),
    "momentum": ("sgd", {"momentum": 0.9}),
    "adam": ("adam", {}),
    "adamw": ("adamw", {}),
    "rmsprop": ("rmsprop", {}),
    "adagrad": ("adagrad", {}),
}
LIBRARIES = {"jaxopt_core": (jc, jc.apply_updates), "optax": (optax, optax.apply_updates)}


class TreeSpec(NamedTuple):
    """``leaves`` float32 vectors of ``size`` entries each, for ``optimizers``."""

    leaves: int
    size: int
    optimizers: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.leaves} x {_short(self.size)}"

    @property
    def params(self) -> int:
        return self.leaves * self.size


class StepResult(NamedTuple):
    """One optimizer on one tree: seconds per step and what the step moves."""

    tree: str
    optimizer: str
    ours: Timing
    theirs: Timing
    bytes_moved: int
    compile_ours: float
    compile_theirs: float


class Ceiling(NamedTuple):
    """The donated ``x * c`` on a tree: seconds per call and bytes moved."""

    tree: str
    timing: Timing
    bytes_moved: int


def make_optimizer(library: str, name: str):
    module, _ = LIBRARIES[library]
    ctor, kwargs = OPTIMIZERS[name]
    return getattr(module, ctor)(LEARNING_RATE, **kwargs)


def make_step(library: str, name: str) -> tuple[Any, Callable]:
    """``(optimizer, jitted donated step(params, state, grads) -> (params, state))``."""
    opt = make_optimizer(library, name)
    apply = LIBRARIES[library][1]

    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return apply(params, updates), state

    return opt, jax.jit(step, donate_argnums=(0, 1))


def make_tree(spec: TreeSpec, seed: int) -> list[jax.Array]:
    keys = jax.random.split(jax.random.key(seed), spec.leaves)
    return [jax.random.normal(k, (spec.size,), jnp.float32) for k in keys]


def bytes_moved(params: Any, state: Any) -> int:
    """Minimum bytes an elementwise step reads and writes (see module notes)."""
    n = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    s = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state) if jnp.ndim(x) > 0)
    return 3 * n + 2 * s


def _stepper(step: Callable, params: Any, state: Any, grads: Any) -> Callable[[], Any]:
    """A zero-argument contender that advances its own donated buffers."""
    carry = [params, state]

    def go():
        carry[0], carry[1] = step(carry[0], carry[1], grads)
        return carry[0]

    return go


def ceiling(spec: TreeSpec, reps: int, target_s: float) -> Ceiling:
    """The streaming ceiling of ``spec``'s tree: donated, jitted ``x * c``."""
    scale = jax.jit(lambda t: jax.tree.map(lambda x: x * -1.0, t), donate_argnums=0)
    carry = [make_tree(spec, 0)]

    def go():
        carry[0] = scale(carry[0])
        return carry[0]

    run_once(go)
    inner = calibrate(go, target_s)
    timing = interleaved({"scale": go}, reps=reps, inner=inner)["scale"]
    return Ceiling(spec.name, timing, 2 * 4 * spec.params)


def bench_tree(spec: TreeSpec, reps: int, target_s: float) -> list[StepResult]:
    """Every optimizer of ``spec``, both libraries interleaved on the same tree.

    Each optimizer is timed in two halves that build (allocate, compile and
    warm up) the two libraries' steps in opposite orders, and the halves'
    paired samples are pooled: on a 10,000-leaf tree the step built first ran
    4-7% slower whichever library it was (sgd, four runs of 31 pairs, Intel
    Xeon), which a fixed order would have charged to one library. (It is a
    placement effect, not an order one alone: one library's step built twice
    ran 8-9% faster in its first copy; see benchmarks/README.md.)
    """
    grads = [0.01 * g for g in make_tree(spec, 1)]
    results = []
    half = (reps + 1) // 2
    for name in spec.optimizers:
        samples: dict[str, list[float]] = {lib: [] for lib in LIBRARIES}
        first: dict[str, list[float]] = {lib: [] for lib in LIBRARIES}
        inner, moved = None, 0
        for order in (list(LIBRARIES), list(LIBRARIES)[::-1]):
            contenders = {}
            for library in order:
                opt, step = make_step(library, name)
                params = make_tree(spec, 0)
                state = opt.init(params)
                moved = bytes_moved(params, state)
                contenders[library] = _stepper(step, params, state, grads)
                first[library].append(compile_seconds(contenders[library])[0])
            if inner is None:
                inner = calibrate(contenders["jaxopt_core"], target_s)
            for library, timing in interleaved(contenders, reps=half, inner=inner).items():
                samples[library].extend(timing.samples)
            del contenders
        results.append(StepResult(spec.name, name, Timing.of(samples["jaxopt_core"]),
                                  Timing.of(samples["optax"]), moved,
                                  min(first["jaxopt_core"]), min(first["optax"])))
    return results


# ---------------------------------------------------------------------------
# HLO audit: what XLA compiles each library's step to.


class HloCounts(NamedTuple):
    """Counts in one compiled step (optimized HLO) and its lowering."""

    fusions: int  # kernels XLA launches for the step
    array_ops: int  # array-valued arithmetic instructions, fused or not
    array_converts: int  # converts of whole arrays (not of scalars), optimized HLO
    lowered_converts: int  # array converts in the StableHLO JAX emitted, before XLA
    copies: int


class HloAudit(NamedTuple):
    optimizer: str
    ours: HloCounts
    theirs: HloCounts


_AUDIT_TREE = ((4096,), (64, 64))  # float32 leaves
_ARRAY_RESULT = r"= [a-z]+[0-9]*\[[0-9][^\]]*\]"
_NOT_ARITHMETIC = ("parameter", "broadcast", "constant", "fusion", "tuple", "bitcast",
                   "get-tuple-element", "copy", "reshape")


def hlo_counts(library: str, name: str) -> HloCounts:
    opt, step = make_step(library, name)
    params = [jnp.zeros(shape, jnp.float32) for shape in _AUDIT_TREE]
    lowered = step.lower(params, opt.init(params), params)
    text = lowered.compile().as_text()
    ops = re.findall(_ARRAY_RESULT + r"\{?[^ ]* ([a-z\-]+)\(", text)
    stablehlo = lowered.as_text()
    return HloCounts(
        fusions=len(re.findall(r"^\s*\S+ = .*?\bfusion\(", text, re.M)),
        array_ops=sum(op not in _NOT_ARITHMETIC for op in ops),
        array_converts=sum(op == "convert" for op in ops),
        lowered_converts=len(re.findall(r"stablehlo\.convert.*tensor<\d", stablehlo)),
        copies=sum(op == "copy" for op in ops),
    )


def hlo_audit(optimizers: tuple[str, ...]) -> list[HloAudit]:
    """Compare the compiled steps of both libraries on a small float32 tree."""
    return [HloAudit(n, hlo_counts("jaxopt_core", n), hlo_counts("optax", n)) for n in optimizers]


def _short(n: int) -> str:
    for div, suffix in ((1_000_000, "M"), (1_000, "K")):
        if n >= div and n % div == 0:
            return f"{n // div}{suffix}"
    return str(n)
