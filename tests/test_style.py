"""The code base stays ruff clean, and the public API is what __all__ says."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import jaxopt_core as jc

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (it is in the test extra)")
    res = subprocess.run([ruff, "check", "--quiet", str(ROOT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_all_names_exist_and_are_documented():
    assert len(set(jc.__all__)) == len(jc.__all__)
    for name in jc.__all__:
        obj = getattr(jc, name)
        assert obj.__doc__ and obj.__doc__.strip(), name


def test_readme_quickstart_matches_ci():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = (
        'python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]"'
        " && .venv/bin/python -m pytest -q"
    )
    assert test_cmd in readme and test_cmd in ci
