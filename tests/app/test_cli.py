"""The ``jaxopt-core`` command: end to end in subprocesses (as users run it),
and its argument checks in-process (every error is exit status 2 and one line
on stderr naming the option, never a traceback)."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxopt_core as jc
from jaxopt_core.app.cli import main

# Every test runs the command in a subprocess, as users do.
pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(*args, cwd, command=(sys.executable, "-m", "jaxopt_core")):
    env = dict(os.environ, MPLBACKEND="Agg", COLUMNS="120")
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 20_000  # three panels, not an empty canvas


def test_default_command_is_a_sweep_with_table_csv_png_and_progress(tmp_path):
    # Options only, no subcommand: `python -m jaxopt_core` runs a sweep, writes
    # into a new folder under the current directory and says where.
    proc = _run("--steps", "50", "--lr", "1e-3:1:8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "members ranked by val accuracy" in out
    assert "rank" in out and "best: learning_rate=" in out
    runs = list((tmp_path / "jaxopt_core_runs").glob("sweep-*"))
    assert len(runs) == 1 and f"{runs[0].relative_to(tmp_path)}/sweep.csv" in out
    assert "50/50" in proc.stderr  # the tqdm bar reached the end

    rows = _rows(runs[0] / "sweep.csv")
    assert len(rows) == 8
    assert {"member", "learning_rate", "final_loss", "train_loss", "val_loss",
            "val_accuracy", "diverged", "rank"} <= set(rows[0])
    lrs = sorted(float(r["learning_rate"]) for r in rows)
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1.0)
    assert sorted(int(r["rank"]) for r in rows) == list(range(1, 9))
    best = min(rows, key=lambda r: int(r["rank"]))
    finite = [float(r["val_accuracy"]) for r in rows if r["diverged"] == "False"]
    assert float(best["val_accuracy"]) == max(finite) > 0.8
    _check_png(runs[0] / "sweep.png")
    config = json.loads((runs[0] / "config.json").read_text(encoding="utf-8"))
    assert config["options"]["steps"] == 50 and config["seed"] == 0
    assert config["device_count"] >= 1
    assert {"jaxopt_core", "jax", "optax"} <= set(config["versions"])
    saved = runs[0] / "sweep.npz"
    assert jc.load_result(saved).losses.shape == (8, 50)
    assert jc.load_metadata(saved).config == config

    # `show` reports the saved run again, without training, and redraws its figure
    (runs[0] / "sweep.png").unlink()
    shown = _run("show", str(runs[0]), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    table = out[out.index("members ranked"):out.index("members, ")]
    assert table in shown.stdout and "redrew" in shown.stdout
    _check_png(runs[0] / "sweep.png")


def test_l2_list_is_crossed_with_learning_rates(tmp_path):
    out = tmp_path / "run"
    proc = _run("sweep", "--dataset", "diabetes", "--lr", "1e-3:1e-1:3", "--l2", "0,0.1",
                "--steps", "30", "--batch-size", "full", "--no-progress", "--out", str(out),
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out / "sweep.csv")
    assert len(rows) == 6  # 3 learning rates x 2 strengths
    pairs = {(round(float(r["learning_rate"]), 6), float(r["l2"])) for r in rows}
    assert pairs == {(lr, l2) for lr in (0.001, 0.01, 0.1) for l2 in (0.0, 0.1)}
    assert "val_r2" in rows[0] and "val R²" in proc.stdout
    _check_png(out / "sweep.png")


def test_fit_reports_curve(tmp_path):
    # The console script when it is installed beside this Python (pip install -e .).
    script = Path(sys.executable).with_name("jaxopt-core")
    command = (str(script),) if script.exists() else (sys.executable, "-m", "jaxopt_core")
    out = tmp_path / "fit"
    proc = _run("fit", "--dataset", "breast_cancer", "--model", "mlp", "--lr", "0.01",
                "--steps", "40", "--no-progress", "--out", str(out), cwd=tmp_path,
                command=command)
    assert proc.returncode == 0, proc.stderr
    assert "step      0" in proc.stdout and "final: train loss" in proc.stdout
    rows = _rows(out / "fit.csv")
    assert [int(r["step"]) for r in rows] == list(range(40))
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0]
    assert (out / "fit.png").read_bytes()[:8] == PNG_MAGIC
    assert json.loads((out / "config.json").read_text())["options"]["model"] == "mlp"
    assert jc.load_result(out / "fit.npz").losses.shape == (40,)


def test_error_in_subprocess_has_no_traceback(tmp_path):
    proc = _run("--model", "logistic", "--dataset", "diabetes", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "--model" in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "jaxopt_core_runs").exists()


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("")
    return f


ERRORS = [
    (["--dataset", "mnist"], "--dataset"),
    (["--optimizer", "lbfgs"], "--optimizer"),
    (["--model", "cnn"], "--model"),
    (["--lr", "1e-3:1"], "--lr"),
    (["--lr", "a:b:8"], "--lr"),
    (["--lr", "1:1e-3:8"], "--lr"),
    (["--lr", "1e-3:1:0"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--l1", "-0.1"], "--l1"),
    (["--l2", "1e-3:x:4"], "--l2"),
    (["--steps", "0"], "--steps"),
    (["--steps", "-5"], "--steps"),
    (["--steps", "ten"], "--steps"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "100000"], "--batch-size"),
    (["--model", "logistic", "--dataset", "diabetes"], "--model"),
    (["--model", "linear", "--dataset", "digits"], "--model"),
    (["--devices", "0"], "--devices"),
    (["--devices", "4096"], "--devices"),
    (["--out", "{a_file}/sub"], "--out"),
    (["fit", "--lr", "0.1,0.2"], "--lr"),
    (["fit", "--l2", "0:1:3"], "--l2"),
    (["fit", "--devices", "1"], "--devices"),  # sweep-only option
    (["frobnicate"], "sweep,fit"),
    (["--sample", "4", "--lr", "0.1"], "--sample"),
    (["--sample", "0"], "--sample"),
    (["--search", "grid"], "--search"),
    (["--eta", "1"], "--eta"),
    (["--search", "pbt", "--pbt-every", "300"], "--pbt-every"),
    (["--search", "halving", "--steps", "5", "--lr", "1e-3:1:81"], "--search"),
    (["fit", "--search", "pbt"], "--search"),  # sweep-only option
    (["--top", "-1"], "--top"),
    (["--eval-chunk-size", "0"], "--eval-chunk-size"),
    (["--eval-chunk-size", "many"], "--eval-chunk-size"),
    (["fit", "--eval-chunk-size", "4"], "--eval-chunk-size"),  # sweep-only option
    (["show"], "folder"),
    (["show", "{a_file}"], "folder"),
]


@pytest.mark.parametrize("argv, option", ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_bad_input_is_one_line_exit_2(argv, option, a_file, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{a_file}", str(a_file)) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert "error:" in captured.err and option in captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "jaxopt_core_runs").exists()  # nothing written before failing


@pytest.mark.parametrize("command", ["sweep", "fit"])
def test_help_documents_every_option_with_default(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo the wrapping
    options = ["--dataset", "--model", "--optimizer", "--lr", "--l1", "--l2", "--steps",
               "--batch-size", "--seed", "--out", "--no-progress"]
    if command == "sweep":
        options += ["--devices", "--top", "--sample", "--search", "--eta", "--pbt-every",
                    "--eval-chunk-size"]
    for option in options:
        assert option in text
    for default in ("(default: digits)", "(default: auto)", "(default: adam)",
                    "(default: 128)", "(default: 0)", "sweep" if command == "sweep" else "fit"):
        assert default in text
    assert ("(default: 1e-4:1:32)" if command == "sweep" else "(default: 0.01)") in text
    assert ("(default: 300)" if command == "sweep" else "(default: 500)") in text
    for name in ("digits", "breast_cancer", "diabetes", "synthetic", "proximal_gradient"):
        assert name in text


def test_top_level_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "sweep" in out and "fit" in out


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad",
                                       "proximal_gradient"])
def test_every_optimizer_sweeps(optimizer, tmp_path, capsys):
    out = tmp_path / optimizer
    argv = ["sweep", "--optimizer", optimizer, "--dataset", "breast_cancer", "--lr", "0.01,0.1",
            "--l1", "0,0.001", "--steps", "10", "--devices", "1", "--no-progress",
            "--out", str(out)]
    assert main(argv) == 0
    assert "members ranked" in capsys.readouterr().out
    rows = _rows(out / "sweep.csv")
    assert len(rows) == 4 and {float(r["l1"]) for r in rows} == {0.0, 0.001}
    assert all(0.5 < float(r["val_accuracy"]) <= 1 for r in rows)


def test_fit_with_proximal_l1_gives_exact_zeros(tmp_path, capsys):
    # On the sparse synthetic problem, ISTA with a strong L1 zeroes most weights;
    # the fit's CSV is the loss curve, which must fall.
    out = tmp_path / "fit"
    argv = ["fit", "--dataset", "synthetic", "--optimizer", "proximal_gradient", "--lr", "0.3",
            "--l1", "0.1", "--steps", "100", "--batch-size", "full", "--no-progress",
            "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "synthetic · linear · proximal_gradient · lr 0.3 · l1 0.1" in text
    assert "val R²" in text
    zeros, total = re.search(r"weights exactly 0: (\d+) of (\d+)", text).groups()
    assert total == "30" and 20 <= int(zeros) < 30  # 5 of the 30 true weights are non-zero
    losses = [float(r["loss"]) for r in _rows(out / "fit.csv")]
    assert len(losses) == 100 and losses[-1] < 0.5 * losses[0]


def test_every_member_diverged_says_so_and_exits_3(tmp_path, capsys):
    out = tmp_path / "diverged"
    argv = ["sweep", "--dataset", "diabetes", "--optimizer", "sgd", "--lr", "50,100",
            "--steps", "30", "--batch-size", "full", "--no-progress", "--out", str(out)]
    assert main(argv) == 3
    text = capsys.readouterr().out
    assert "every member diverged" in text and "best:" not in text
    rows = _rows(out / "sweep.csv")
    assert [r["diverged"] for r in rows] == ["True", "True"]
    assert {p.name for p in out.iterdir()} == {"config.json", "sweep.npz", "sweep.csv",
                                                "sweep.png"}
    assert main(["show", str(out), "--png", str(tmp_path / "again.png")]) == 3
    assert "every member diverged" in capsys.readouterr().out
    assert (tmp_path / "again.png").read_bytes()[:8] == PNG_MAGIC


def test_sweep_with_successive_halving(tmp_path, capsys):
    out = tmp_path / "halving"
    argv = ["sweep", "--dataset", "breast_cancer", "--lr", "1e-3:1:9", "--steps", "27",
            "--search", "halving", "--devices", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "search: halving" in text and "halving: 63 member-steps, 26% of the full" in text
    assert not (out / "checkpoints").exists()  # checkpointed at rung ends, deleted when done
    rows = _rows(out / "sweep.csv")
    assert sorted(int(r["stopped_at"]) for r in rows) == [3] * 6 + [9] * 2 + [27]
    best = min(rows, key=lambda r: int(r["rank"]))
    assert int(best["stopped_at"]) == 27 and float(best["val_accuracy"]) > 0.5


def test_sweep_samples_members_and_runs_pbt(tmp_path, capsys):
    out = tmp_path / "pbt"
    argv = ["sweep", "--dataset", "breast_cancer", "--lr", "1e-3:0.3:4", "--sample", "6",
            "--steps", "20", "--search", "pbt", "--pbt-every", "5", "--devices", "1",
            "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    assert "search: pbt" in capsys.readouterr().out
    rows = _rows(out / "sweep.csv")
    assert len(rows) == 6
    for column in ("learning_rate", "learning_rate_final"):  # drawn and kept in the --lr range
        assert all(1e-3 * (1 - 1e-6) <= float(r[column]) <= 0.3 * (1 + 1e-6) for r in rows)
    assert len({r["learning_rate"] for r in rows}) == 6  # random draws, not a 4-value grid
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["search"] == "pbt" and config["options"]["sample"] == 6


def test_eval_chunk_size_trains_the_same_and_needs_one_device(tmp_path):
    # Four devices, as on a multi-GPU host: the option is refused while the
    # members would be sharded, and with --devices 1 the run trains exactly
    # as without it (5 members in blocks of 2: the last block is shorter).
    env = dict(os.environ, MPLBACKEND="Agg", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    base = [sys.executable, "-m", "jaxopt_core", "sweep", "--dataset", "breast_cancer",
            "--lr", "1e-3:1:5", "--steps", "20", "--no-progress"]

    def run(*extra):
        return subprocess.run([*base, *extra], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)

    refused = run("--eval-chunk-size", "2", "--out", "sharded")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "--eval-chunk-size" in refused.stderr
    assert "sharded over 4" in refused.stderr and "--devices 1" in refused.stderr
    assert not (tmp_path / "sharded").exists()

    for out, extra in (("plain", ()), ("blocks", ("--eval-chunk-size", "2"))):
        proc = run("--devices", "1", "--out", out, *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "blocks" / "config.json").read_text(encoding="utf-8"))
    assert config["options"]["eval_chunk_size"] == 2
    plain, blocks = (jc.load_result(tmp_path / n / "sweep.npz") for n in ("plain", "blocks"))
    assert np.array_equal(plain.losses, blocks.losses, equal_nan=True)
    for name, values in plain.evals.items():
        np.testing.assert_allclose(blocks.evals[name], values, rtol=1e-6, err_msg=name)


def test_a_config_from_before_eval_chunk_size_still_prepares():
    # --resume rebuilds the options from config.json; one written before the
    # option existed has no eval_chunk_size.
    import argparse

    from jaxopt_core.app.cli import _searching

    args = argparse.Namespace(command="sweep", lr=[0.1, 0.2], l1=[0.0], l2=[0.0], sample=None,
                              search="none", steps=10, eta=3, pbt_every=None, devices=None)
    assert _searching(args, parser=None)["eval_chunk_size"] is None


def test_eval_chunk_size_reaches_the_sweep(tmp_path, monkeypatch):
    import jaxopt_core.training.sweep as sweep_module

    seen = {}

    class Called(Exception):
        pass

    def recorder(*args, **kwargs):
        seen.update(kwargs)
        raise Called

    monkeypatch.setattr(sweep_module, "sweep", recorder)
    for chunk in ("3", None):
        extra = ["--eval-chunk-size", chunk] if chunk else []
        with pytest.raises(Called):
            main(["sweep", "--dataset", "breast_cancer", "--lr", "0.1,0.2", "--steps", "5",
                  "--devices", "1", "--no-progress", "--checkpoint-every", "0",
                  "--out", str(tmp_path / "run"), *extra])
        assert seen["eval_chunk_size"] == (3 if chunk else None)
