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

# 1200 steps in segments of 50, each followed by a checkpoint: far more than
# the run can do between its first checkpoint and the signal.
STEPS = 1200
SWEEP = ["sweep", "--dataset", "breast_cancer", "--lr", "1e-3:1:4", "--steps", str(STEPS),
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
    assert len(rows) == 4 and len(trained) == 1 and 0 < trained.pop() < STEPS
    partial = jc.load_result(tmp_path / "run" / "sweep.npz")
    t = partial.losses.shape[1]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["options"]["steps"] == STEPS

    done = subprocess.run([sys.executable, "-m", "jaxopt_core", "sweep", "--resume", "run",
                           "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming run" in done.stdout
    whole = jc.load_result(tmp_path / "run" / "sweep.npz")
    assert whole.losses.shape == (4, STEPS)
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
    assert checkpoint_every(None, 300, "halving") == 75  # rounded to rung ends by jc.sweep


def _resume_error(folder, capsys):
    with pytest.raises(SystemExit) as err:
        main(["sweep", "--resume", str(folder)])
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1
    return message


def test_resume_without_checkpoints_says_why(tmp_path, capsys):
    # A finished run deletes its checkpoints: --resume says it finished, not
    # that it was made without checkpoints.
    options = {"command": "sweep", "steps": 5, "checkpoint_every": None, "search": "none"}
    (tmp_path / "config.json").write_text(json.dumps({"options": options}))
    assert "before its first checkpoint" in _resume_error(tmp_path, capsys)
    (tmp_path / "sweep.npz").write_bytes(b"")
    message = _resume_error(tmp_path, capsys)
    assert "finished" in message and f"jaxopt-core show {tmp_path}" in message
    options["checkpoint_every"] = 0
    (tmp_path / "config.json").write_text(json.dumps({"options": options}))
    assert "--checkpoint-every 0" in _resume_error(tmp_path, capsys)


@pytest.mark.slow
def test_show_says_a_run_is_partial_and_how_to_resume(tmp_path, capsys):
    from jaxopt_core.app.report import write_run
    from jaxopt_core.app.resuming import CHECKPOINTS

    def evaluate(params, data):
        return {"val_r2": -jc.l2_penalty(params), "val_loss": jc.l2_penalty(params),
                "train_loss": jc.l2_penalty(params)}

    res = jc.sweep(lambda w, b: jc.l2_penalty(w - b), np.zeros(2), jc.sgd, np.ones(2),
                   grid={"learning_rate": np.array([0.1, 0.2])}, steps=4, eval_fn=evaluate,
                   eval_data=None)
    config = {"command": "sweep", "title": "demo", "metric": "r2",
              "options": {"top": 10, "steps": 10, "lr": [0.1, 0.2], "l1": [0.0]}}
    write_run(tmp_path, res._replace(steps_trained=4), config)
    (tmp_path / CHECKPOINTS).mkdir()
    assert main(["show", str(tmp_path), "--png", str(tmp_path / "again.png")]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "partial: trained 4 of 10 steps" in text
    assert f"resume with: jaxopt-core sweep --resume {tmp_path}" in text
