"""``jaxopt-core --help`` and the argument checks work on the base install
(jax, optax, chex): run in a subprocess in which the ``cli`` extra's modules
cannot be imported."""

import subprocess
import sys

import pytest

EXTRAS = ("pandas", "matplotlib", "rich", "tqdm", "sklearn")

# A None entry in sys.modules makes `import name` raise ImportError, as if the
# package were not installed.
SCRIPT = f"""
import sys
for name in {EXTRAS!r}:
    sys.modules[name] = None
from jaxopt_core.app.cli import main
for argv in (["--help"], ["sweep", "--help"], ["show", "--help"], ["--lr", "0"],
             ["--model", "linear"], ["fit", "--lr", "0.1,0.2"], ["sweep", "--steps", "3"]):
    try:
        main(argv)
    except SystemExit as exit:
        print("EXIT", exit.code, flush=True)
"""


@pytest.mark.slow
def test_help_and_argument_errors_need_only_the_base_install(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    codes = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("EXIT ")]
    assert codes == ["0", "0", "0", "2", "2", "2", "2"]
    assert "{sweep,fit,show}" in proc.stdout and "--batch-size" in proc.stdout
    errors = proc.stderr.splitlines()
    assert [e.split(":")[0] for e in errors] == ["jaxopt-core sweep"] * 2 + ["jaxopt-core fit",
                                                                            "jaxopt-core"]
    assert "--lr" in errors[0] and "--model" in errors[1]
    # only a run needs the extra, and it says so in one line
    assert errors[-1] == ("jaxopt-core: error: the command needs sklearn, pandas, matplotlib, "
                          "rich, tqdm: pip install 'jaxopt-core[cli]'")
    assert not (tmp_path / "jaxopt_core_runs").exists()
