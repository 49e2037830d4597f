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
    """The README's test command is the one CI runs, character for character."""

    def test_command(text):
        lines = [ln.strip() for ln in text.splitlines()
                 if ln.startswith("python3 -m venv") and '-e ".[test]"' in ln]
        assert len(lines) == 1, lines
        return lines[0]

    readme = test_command((ROOT / "README.md").read_text().split("## Quickstart")[1])
    ci = test_command((ROOT / ".ci" / "run").read_text())
    assert readme == ci
    assert readme.startswith("python3 -m venv .venv && ") and " -m pytest -q" in readme


# A layer may import only from itself and the layers before it in this list.
LAYERS = ["core", "regularization", "training", "app"]


def _imported_modules(path: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("jaxopt_core")}


def test_layers_import_only_from_below():
    package = ROOT / "jaxopt_core"
    for layer_index, layer in enumerate(LAYERS):
        allowed = set(LAYERS[: layer_index + 1])
        for path in (package / layer).rglob("*.py"):
            for module in _imported_modules(path):
                parts = module.split(".")
                if module == "jaxopt_core":
                    # the public API re-exports every layer: only the app may use it
                    assert layer == "app", f"{path.relative_to(ROOT)} imports jaxopt_core"
                    continue
                assert parts[1] in allowed, (
                    f"{path.relative_to(ROOT)} ({layer}) imports {module}, a layer above it"
                )


def test_no_private_name_crosses_a_module_boundary():
    import ast

    for path in (ROOT / "jaxopt_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxopt_core"):
                private = [a.name for a in node.names
                           if a.name.startswith("_") and not a.name.endswith("__")]
                assert not private, f"{path.relative_to(ROOT)} imports {private} from {node.module}"
