"""A pytest plugin that runs optax's own tests with jaxopt_core serving optax's names.

Every public optax name that jaxopt_core also exports (``jaxopt_core.__all__``
intersected with the public names of optax and its public subpackages,
computed when the plugin starts, so new exports are picked up) is replaced, in
*every* loaded optax module, by the jaxopt_core object: wherever a module
attribute is the very optax object (``optax.adam``, ``optax._src.alias.adam``,
``optax.schedules._schedule.linear_schedule``, ``optax._src.combine.chain``
...), it is rebound to ``jaxopt_core.<name>``. This happens in
``pytest_configure``, before any test module is imported, so a test module's
``from optax._src import alias`` or ``import optax`` sees jaxopt_core's
objects; optax's own compositions (``optax.nadamw`` built with ``chain`` and
``scale_by_adam``) are then built from jaxopt_core parts too. Names whose
jaxopt_core object *is* the optax object (re-used state classes) need nothing.

For each test the plugin records its outcome and whether any jaxopt_core code
ran during its setup or call (a profile hook that watches for a frame from the
jaxopt_core package and removes itself at the first one), and writes a JSON
report to the path in ``$JC_OPTAX_REPORT``: ``{"served": [...], "tests":
{nodeid: {"outcome": "passed" | "failed" | "skipped", "jc": bool,
"message": str}}}``.

Load it only in a subprocess (``python -m pytest -p optax_serving``, see
``test_optax_suite.py``): it rebinds optax's module attributes for good.
Importing this module has no side effect.
"""

import importlib
import json
import os
import pkgutil
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import pytest

_RECORDS: dict = {}
_SERVED: list = []
_HIT = [False]
_JC_DIR = ""


def public_optax_names() -> dict:
    """``{name: object}`` for the public names of optax and of its public
    subpackages (``optax.schedules``, ``optax.transforms`` ...); the top-level
    object wins when a name appears in several."""
    import optax

    names: dict = {}
    with warnings.catch_warnings():  # optax's deprecated aliases warn on access
        warnings.simplefilter("ignore")
        _collect_public(optax, names)
    return names


def _collect_public(optax, names: dict) -> None:
    for modname in sorted(sys.modules, key=len, reverse=True):
        parts = modname.split(".")
        if parts[0] != "optax" or any(p.startswith("_") for p in parts):
            continue
        module = sys.modules[modname]
        for attr in getattr(module, "__all__", None) or dir(module):
            if not attr.startswith("_") and hasattr(module, attr):
                names[attr] = getattr(module, attr)
    for attr in optax.__all__:
        names[attr] = getattr(optax, attr)


def import_all_optax() -> None:
    """Import every non-test optax module, so that all the places an optax
    object is bound exist before they are rebound."""
    import optax

    for info in pkgutil.walk_packages(optax.__path__, "optax."):
        if info.name.endswith("_test") or ".test_utils" in info.name:
            continue
        try:
            importlib.import_module(info.name)
        except Exception:  # optional dependencies (a module optax itself may skip)
            pass


def serve_jaxopt_core() -> list:
    """Rebind every optax module attribute that is an optax object jaxopt_core
    also exports to the jaxopt_core object; return the served names.

    An optax name that is an alias of an object with another name
    (``optax.AddDecayedWeightsState`` is ``optax.EmptyState``) is rebound only
    where it is bound under that name, so the object's other names keep it.
    """
    import jaxopt_core

    import_all_optax()
    public = public_optax_names()
    by_identity = {}  # id(optax object) -> (optax object, jaxopt_core object)
    by_name = {}  # alias name -> (optax object, jaxopt_core object)
    served = []
    for name in jaxopt_core.__all__:
        if name not in public:
            continue
        ours, theirs = getattr(jaxopt_core, name), public[name]
        served.append(name)
        if ours is theirs:
            continue
        if getattr(theirs, "__name__", name) == name:
            by_identity[id(theirs)] = (theirs, ours)
        else:
            by_name[name] = (theirs, ours)
    for modname, module in list(sys.modules.items()):
        if modname.split(".")[0] != "optax" or module is None:
            continue
        for attr, value in list(vars(module).items()):
            hit = by_identity.get(id(value)) or by_name.get(attr)
            if hit is not None and hit[0] is value:
                setattr(module, attr, hit[1])
    return sorted(served)


def _profile(frame, event, arg):
    if frame.f_code.co_filename.startswith(_JC_DIR):
        _HIT[0] = True
        sys.setprofile(None)


def pytest_configure(config):
    global _JC_DIR
    import jaxopt_core

    _JC_DIR = os.path.dirname(jaxopt_core.__file__) + os.sep
    _SERVED[:] = serve_jaxopt_core()


# optax test classes that test one optimizer each, by the optax name of the
# optimizer. With JC_OPTAX_SELECT=served a class runs only while jaxopt_core
# serves its optimizer (so it comes back by itself when one is added); they
# are about 40% of the suite's time (optax 0.2.8: L-BFGS 129 s, Muon 93 s,
# the line searches 81 s, GaLore 21 s, of 740 s).
OPTIMIZER_CLASSES = {
    "LBFGSTest": "lbfgs",
    "MuonTest": "muon",
    "BacktrackingLinesearchTest": "scale_by_backtracking_linesearch",
    "ZoomLinesearchTest": "scale_by_zoom_linesearch",
    "GaLoreTest": "galore",
}


def case_parameters(item) -> Any:
    """The parameters of an absl ``parameterized`` test case (held in the
    generated method's closure), or ``None`` for a plain test."""
    fn = getattr(getattr(item, "obj", None), "__func__", getattr(item, "obj", None))
    code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
    if code is None or not cells or "testcase_params" not in code.co_freevars:
        return None
    return cells[code.co_freevars.index("testcase_params")].cell_contents


def pytest_collection_modifyitems(config, items):
    """Select the tests to run.

    ``JC_OPTAX_SELECT=served``: drop the parametrized cases that name an
    optimizer (``opt_name``) jaxopt_core does not serve, and the test classes
    given over to one such optimizer (:data:`OPTIMIZER_CLASSES`). optax's
    tests of its own optimizers reach jaxopt_core only through the shared
    parts (``chain``, ``scale_by_learning_rate`` ...), which the kept cases
    exercise too. Plain tests and cases without ``opt_name`` all stay.

    ``JC_OPTAX_SHARD=i/n``: keep every n-th of those from the i-th, so n
    processes given the same files split the work evenly.
    """
    only_served = os.environ.get("JC_OPTAX_SELECT") == "served"

    def wanted(item):
        if not only_served:
            return True
        cls = getattr(getattr(item, "cls", None), "__name__", None)
        if cls in OPTIMIZER_CLASSES and OPTIMIZER_CLASSES[cls] not in _SERVED:
            return False
        params = case_parameters(item)
        name = params.get("opt_name") if isinstance(params, Mapping) else None
        return name is None or name in _SERVED

    selected = [item for item in items if wanted(item)]
    shard, n = (int(x) for x in os.environ.get("JC_OPTAX_SHARD", "0/1").split("/"))
    keep = selected[shard::n]
    kept = {id(item) for item in keep}
    drop = [item for item in items if id(item) not in kept]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Run the test body with the profile hook on; note whether it saw jaxopt_core."""
    _HIT[0] = False
    sys.setprofile(_profile)
    try:
        yield
    finally:
        sys.setprofile(None)
        _RECORDS.setdefault(item.nodeid, {})["jc"] = _HIT[0]


def pytest_runtest_logreport(report):
    rec = _RECORDS.setdefault(report.nodeid, {})
    rec.setdefault("jc", False)
    outcome = rec.get("outcome", "passed")
    if report.failed:
        outcome = "failed"
        rec["message"] = str(report.longrepr)[-2000:]
    elif report.skipped and outcome == "passed":
        outcome = "skipped"
        rec["message"] = str(report.longrepr)[-500:]
    rec["outcome"] = outcome
    rec["seconds"] = round(rec.get("seconds", 0.0) + report.duration, 3)


def pytest_collectreport(report):
    """A test module that fails to import counts as one failed test; it is
    charged to jaxopt_core when jaxopt_core code is in the traceback."""
    if report.failed:
        message = str(report.longrepr)
        _RECORDS[report.nodeid] = {
            "outcome": "failed",
            "jc": "jaxopt_core" + os.sep in message,
            "message": message[-2000:],
        }


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("JC_OPTAX_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"served": _SERVED, "tests": _RECORDS}, f, indent=1, sort_keys=True)
