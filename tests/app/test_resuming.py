"""The command keeps its work (jaxopt_core.app.resuming): Ctrl-C writes the
partial result and exits 130 without a traceback, --resume continues from the
last checkpoint."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import jaxopt_core as jc
from jaxopt_core.app.cli import main
from jaxopt_core.app.resuming import checkpoint_every

SWEEP = ["sweep", "--dataset", "breast_cancer", "--lr", "1e-3:1:4", "--steps", "3000",
         "--checkpoint-every", "50", "--batch-size", "32", "--no-progress"]


def _start(argv, cwd):
    return subprocess.Popen([sys.executable, "-m", "jaxopt_core", *argv], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(proc, folder: Path):
    deadline = time.monotonic() + 240
    while not (folder.is_dir() and any(n.isdigit() for n in os.listdir(folder))):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_writes_partial_results_exits_130_and_resume_finishes(tmp_path):
    proc = _start([*SWEEP, "--out", "run"], tmp_path)
    _wait_for_checkpoint(proc, tmp_path / "run" / "checkpoints")
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    print(f"Ctrl-C to exit: {time.monotonic() - sent:.2f} s")
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "resume with: jaxopt-core sweep --resume run" in stdout
    with open(tmp_path / "run" / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    trained = {int(r["steps_trained"]) for r in rows}
    assert len(rows) == 4 and len(trained) == 1 and 0 < trained.pop() < 3000
    partial = jc.load_result(tmp_path / "run" / "sweep.npz")
    t = partial.losses.shape[1]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["options"]["steps"] == 3000

    done = subprocess.run([sys.executable, "-m", "jaxopt_core", "sweep", "--resume", "run",
                           "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming run" in done.stdout
    whole = jc.load_result(tmp_path / "run" / "sweep.npz")
    assert whole.losses.shape == (4, 3000)
    assert not (tmp_path / "run" / "checkpoints").exists()  # finished: nothing to resume
    # The resumed run continued the interrupted one: the same first t losses, bit for bit.
    np.testing.assert_array_equal(whole.losses[:, :t], partial.losses)


@pytest.mark.slow
def test_second_ctrl_c_exits_at_once_without_traceback(tmp_path):
    proc = _start([*SWEEP, "--out", "run"], tmp_path)
    _wait_for_checkpoint(proc, tmp_path / "run" / "checkpoints")
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr


def test_resume_needs_a_run_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["sweep", "--resume", str(tmp_path)])
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert "--resume" in message and "config.json" in message and message.count("\n") == 1
    config = {"options": {"command": "fit", "steps": 5}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit):
        main(["sweep", "--resume", str(tmp_path)])
    assert "resume it with jaxopt-core fit --resume" in capsys.readouterr().err


def test_default_checkpoint_cadence():
    assert checkpoint_every(None, 300) == 75
    assert checkpoint_every(None, 3) == 1
    assert checkpoint_every(0, 300) is None
    assert checkpoint_every(40, 300) == 40
    assert checkpoint_every(None, 300, "halving") is None
