"""The tutorial notebooks: in sync with their generator, and each one runs top
to bottom in a fresh kernel of this Python, with no error outputs and with
its figures rendered."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_five_notebooks():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_learning_rate_sweep.ipynb",
        "03_regularization.ipynb",
        "04_models.ipynb",
        "05_search.ipynb",
    ]


def test_notebooks_match_their_generator():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "notebooks" / "build_notebooks.py"), "--check"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_notebooks_are_stored_with_their_outputs():
    # build_notebooks.py executes them before writing, so the repository page
    # shows the figures; every code cell ran, none failed.
    nbformat = pytest.importorskip("nbformat")
    for path in NOTEBOOKS:
        cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in cells), path.name
        outputs = [o for c in cells for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], path.name
        assert len([o for o in outputs if "image/png" in o.get("data", {})]) >= 2, path.name


def test_notebooks_install_without_local_paths():
    nbformat = pytest.importorskip("nbformat")
    for path in NOTEBOOKS:
        first_code = next(c for c in nbformat.read(path, as_version=4).cells
                          if c.cell_type == "code")
        assert "import jaxopt_core" in first_code.source
        assert '%pip install -q "jaxopt-core[notebooks]"' in first_code.source
        assert "/work" not in path.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_client.manager import KernelManager

    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # notebook 02 sets its own
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name="python3")
    # The kernelspec says "python"; jupyter_client must resolve it to this
    # interpreter, or the notebook would run against another environment.
    assert km.format_kernel_cmd()[0] == sys.executable
    client = nbclient.NotebookClient(
        nb, km=km, timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    )
    start = time.perf_counter()
    try:
        client.execute()  # raises CellExecutionError on the first failing cell
    finally:  # a kernel left running holds its memory until pytest exits
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    seconds = time.perf_counter() - start

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the notebook's figures did not render"
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "Traceback" not in stderr
    print(f"{path.name}: {seconds:.1f} s")
    keep = os.environ.get("JAXOPT_CORE_EXECUTED_NOTEBOOKS")  # a folder, to look at outputs
    if keep:
        nbformat.write(nb, Path(keep) / path.name)
