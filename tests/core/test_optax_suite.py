"""optax's own test suite, run with jaxopt_core serving every optax name it exports.

The test files ship inside the installed optax package. Pytest runs them in
two subprocesses, each every other test (one under pytest-xdist on two cores),
with the plugin
``tests/core/optax_serving.py``, which rebinds every public optax name that
``jaxopt_core.__all__`` also holds, in every optax module, to the jaxopt_core
object (see its docstring), and reports for each test its outcome and whether
jaxopt_core code ran in it. A failure is a bug, unless it is a known artifact
listed below with the reason. By default the parametrized cases of optimizers
jaxopt_core does not serve, and the test classes given over to one of them
(L-BFGS, Muon, the line searches, GaLore), are left out;
``JC_OPTAX_SUITE=full`` runs them too.
See CONTRIBUTING.md ("Running optax's own test suite").
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optax
import pytest

OPTAX_VERSION = "0.2.8"  # pinned in pyproject's test extra; the lists below refer to it
OPTAX_DIR = Path(optax.__file__).parent
HERE = Path(__file__).resolve().parent

# optax test files not run, each for the reason given: none of their tests
# reaches a jaxopt_core object (measured with every file run), so they would
# only cost time. Every other optax test file runs.
NOT_RUN = {
    "assignment/_hungarian_algorithm_test.py": "assignment solver, no optimizer",
    "losses/": "loss functions, no optimizer",
    "projections/_projections_test.py": "projections, no optimizer",
    "perturbations/_make_pert_test.py": "perturbed optimizers of losses, no transform",
    "tree_utils/_tree_math_test.py": "tree arithmetic only",
    "tree_utils/_random_test.py": "tree random numbers only",
    "tree_utils/_casting_test.py": "tree dtype casts only",
    "_src/linear_algebra_test.py": "linear algebra helpers only",
    "_src/utils_test.py": "utility functions only",
    "contrib/_privacy_test.py": "differential privacy aggregation, no shared name reached",
    "microbatching/": "microbatching helpers, no shared name reached",
    "optax_test.py": "checks that optax imports",
}

# Tests that fail with jaxopt_core for a reason that is not an incompatibility a
# user can meet: they check optax-internal identity. nodeid -> reason.
CHAIN_IS_NOT_OPTAX_CLASS = (
    "asserts isinstance(chain(...), optax.GradientTransformation[ExtraArgs]); "
    "jc.chain returns jc.Optimizer, a NamedTuple(init, update) of the same shape "
    "that optax accepts everywhere"
)
KNOWN_ARTIFACTS = {
    f"optax/{module}::ExtraArgsTest::{test}": CHAIN_IS_NOT_OPTAX_CLASS
    for module in ("_src/combine_test.py", "transforms/_combining_test.py")
    for test in ("test_extra_args", "test_extra_args_chaining")
}
# These fail with optax's own objects too under this jax version (checked by
# running them without the plugin): not jaxopt_core incompatibilities.
OPTAX_FAILS_ITSELF = "fails with optax's own objects under jax 0.10 as well"
KNOWN_ARTIFACTS.update({
    "optax/transforms/_clipping_test.py::ClippingTest::test_clip_by_block_rms":
        OPTAX_FAILS_ITSELF,
    "optax/transforms/_freezing_test.py::FreezeTest::test_bad_structure_raises":
        OPTAX_FAILS_ITSELF,
    "optax/transforms/_freezing_test.py::SelectiveTransformTest::test_selective_bad_structure":
        OPTAX_FAILS_ITSELF,
    # jc.lion checks `mode` when it is built (errors at construction, where the
    # value is concrete); optax raises at the first update.
    "optax/_src/transform_test.py::TransformTest::test_lion_invalid_mode_raises":
        "jaxopt_core rejects a bad mode at construction, optax at the first update",
})

# Skips that are not failures: optax skips these tests with its own objects
# too (substrings of the skip message). "doesn't accept a learning schedule" is
# optax's reaction to a learning_rate not annotated ScalarOrSchedule: for the
# optimizers jaxopt_core serves, test_served_signatures_are_optax_s checks the
# annotation directly, so the skips that remain are optax's own optimizers'.
OPTAX_OWN_SKIPS = (
    "does not support complex parameters",
    "needs a non-None learning rate",
    "requires learning rate scheduling to solve",
    "need to match scipy linesearch algorithm",
    "is not supported by inject_hyperparams",
    "Complex params with non-complex state are not supported",
    "Skipping sharding-in-types test",  # needs jax's explicit-sharding mode
    "Optimizer doesn't accept a learning schedule",
)

# Subprocesses sharing the tests: two, unless pytest-xdist already keeps every
# core busy (on CI's 2 cores a second shard only adds an interpreter start and
# a collection of optax's test modules, ~10 s, for no gain in wall time).
WORKERS = max(1, min(2, (os.cpu_count() or 1)
                     // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

# The default run keeps, of optax's parametrized optimizer tests, the cases of
# the optimizers jaxopt_core serves (JC_OPTAX_SELECT=served in the plugin);
# JC_OPTAX_SUITE=full runs every case (about twice as long).
FULL = os.environ.get("JC_OPTAX_SUITE") == "full"


def optax_test_files() -> list[str]:
    """The optax test files to run, relative to the optax package."""
    files = []
    for path in OPTAX_DIR.rglob("*_test.py"):
        rel = path.relative_to(OPTAX_DIR).as_posix()
        if not any(rel == k or (k.endswith("/") and rel.startswith(k)) for k in NOT_RUN):
            files.append(rel)
    return sorted(files)


def run_files(files: list[str], report: Path, **env_extra: str) -> dict:
    """Run pytest on ``files`` with the serving plugin (``env_extra``: its
    JC_OPTAX_* settings); return its report."""
    site = OPTAX_DIR.parent
    ini = report.with_suffix(".ini")
    ini.write_text("[pytest]\n")  # none of this repository's options (doctests ...)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        PYTHONDONTWRITEBYTECODE="1",  # leave the installed package as it is
        JC_OPTAX_REPORT=str(report),
        **env_extra,
    )
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "optax_serving", "-p", "no:cacheprovider",
        "-c", str(ini), "--rootdir", str(site), "--continue-on-collection-errors",
        *[str(OPTAX_DIR / f) for f in files],
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=report.parent)
    if not report.exists():
        output = proc.stdout[-3000:] + proc.stderr[-3000:]
        raise RuntimeError(f"the optax suite did not run:\n{output}")
    return json.loads(report.read_text())


def run_optax_suite(tmp_path: Path, files: list[str], workers: int = WORKERS) -> dict:
    """Run the tests of ``files`` in ``workers`` subprocesses, each taking every
    ``workers``-th test; return the merged report."""
    select = "all" if FULL else "served"

    def shard(i):
        report = tmp_path / f"report{i}.json"
        return run_files(files, report, JC_OPTAX_SHARD=f"{i}/{workers}", JC_OPTAX_SELECT=select)

    with ThreadPoolExecutor(workers) as pool:
        reports = list(pool.map(shard, range(workers)))
    tests = {}
    for r in reports:
        tests.update(r["tests"])
    return {"served": reports[0]["served"], "tests": tests}


def summarize(report: dict) -> dict:
    """Counts, and the tests that decide the outcome.

    Every failure counts, whether or not jaxopt_core code was seen running in
    the test: optax's suite passes with optax's own objects, and a call with
    an argument jaxopt_core lacks fails before any jaxopt_core frame starts.
    So does every skip whose reason is not one of ``OPTAX_OWN_SKIPS``."""
    tests = report["tests"]

    def bad(v):
        if v["outcome"] == "skipped":
            return not any(s in v.get("message", "") for s in OPTAX_OWN_SKIPS)
        return v["outcome"] == "failed"

    failed = sorted(k for k, v in tests.items() if bad(v))
    exercised = {k: v for k, v in tests.items() if v["jc"] or k in failed}
    return {
        "served": len(report["served"]),
        "run": len(tests),
        "exercised": len(exercised),
        "passed": sum(v["outcome"] == "passed" for v in exercised.values()),
        "failed": len(failed),
        "skipped": sum(v["outcome"] == "skipped" for v in tests.values()),
        "unexpected": [k for k in failed if k not in KNOWN_ARTIFACTS],
        "stale_artifacts": [k for k in KNOWN_ARTIFACTS if k not in failed],
    }


@pytest.mark.slow
def test_optax_suite_passes_with_jaxopt_core_objects(tmp_path):
    if optax.__version__ != OPTAX_VERSION:
        pytest.skip(f"the artifact list is for optax {OPTAX_VERSION}; found {optax.__version__}")
    report = run_optax_suite(tmp_path, optax_test_files())
    s = summarize(report)
    print(
        f"optax {OPTAX_VERSION}: {s['run']} tests run, {s['exercised']} exercise jaxopt_core "
        f"({s['served']} names served): {s['passed']} pass, {s['failed']} fail or skip "
        f"({len(KNOWN_ARTIFACTS)} known artifacts); {s['skipped']} skipped in all"
    )
    # optax 0.2.8, default selection: 975 run, 802 exercise jaxopt_core.
    assert s["exercised"] > 750, s  # the harness really serves jaxopt_core
    msgs = [f"{k}\n    {report['tests'][k].get('message', '')[-600:]}" for k in s["unexpected"]]
    assert not s["unexpected"], "optax tests failing with jaxopt_core:\n" + "\n".join(msgs)
    assert not s["stale_artifacts"], f"listed artifacts that now pass: {s['stale_artifacts']}"


@pytest.mark.slow
def test_the_plugin_serves_jaxopt_core_and_shards(tmp_path):
    # One small file, half of it (shard 0 of 2), through the same machinery:
    # optax's numerics tests reach jc.safe_increment via optax._src.numerics.
    import jaxopt_core as jc

    report = run_files(["_src/numerics_test.py"], tmp_path / "report.json", JC_OPTAX_SHARD="0/2")
    tests = report["tests"]
    assert {"safe_increment", "chain", "adam"} <= set(report["served"]) <= set(jc.__all__)
    assert 40 <= len(tests) <= 47  # 87 tests in optax 0.2.8, every other one
    assert any("test_safe_increment" in k and v["jc"] for k, v in tests.items())
    assert any("test_safe_norm" in k and not v["jc"] for k, v in tests.items())
    assert all(v["outcome"] == "passed" for v in tests.values())


def _same_default(ours, theirs) -> bool:
    if callable(ours) and callable(theirs):
        return True  # a default function (a decay rule) is the library's own object
    try:
        return bool(ours is theirs or ours == theirs)
    except Exception:  # arrays
        return repr(ours) == repr(theirs)


def test_served_signatures_are_optax_s():
    # Every function served under an optax name takes optax's parameters, in
    # optax's order, with optax's defaults; and where optax annotates the
    # learning rate as a schedule, the annotation is optax's own object
    # (optax's tests skip an optimizer otherwise, and would hide it).
    import inspect

    import optax_serving

    import jaxopt_core as jc

    public = optax_serving.public_optax_names()
    schedule_types = (optax.ScalarOrSchedule, optax.Schedule)
    problems = []
    for name in jc.__all__:
        theirs, ours = public.get(name), getattr(jc, name)
        if theirs is None or ours is theirs or inspect.isclass(theirs) or not callable(theirs):
            continue
        a = list(inspect.signature(ours).parameters.values())
        b = list(inspect.signature(theirs).parameters.values())
        names = [(p.name if p.kind is not p.VAR_POSITIONAL else "*", p.kind) for p in a]
        if names != [(p.name if p.kind is not p.VAR_POSITIONAL else "*", p.kind) for p in b]:
            problems.append(f"{name}{inspect.signature(ours)} != optax {inspect.signature(theirs)}")
            continue
        problems += [
            f"{name}: default {p.name}={p.default!r}, optax's is {q.default!r}"
            for p, q in zip(a, b)
            if not _same_default(p.default, q.default)
        ]
        lr = {p.name: p for p in b}.get("learning_rate")
        if lr is not None and lr.annotation in schedule_types:
            mine = {p.name: p for p in a}["learning_rate"].annotation
            if mine != lr.annotation:
                problems.append(f"{name}: learning_rate annotated {mine!r}, not optax's object")
    assert not problems, "\n".join(problems)
