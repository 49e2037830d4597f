"""The run folder of the ``jaxopt-core`` command, in-process: write_run writes
config.json, the saved result, CSV and PNG; read_run reads them back exactly;
show_run prints the report and returns 3 when every member diverged."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA, PARAMS, mse
from rich.console import Console

import jaxopt_core as jc
from jaxopt_core.app.report import read_run, show_run, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def evaluate(params, data):
    """The metrics the command's eval_fn returns (R² as the metric)."""
    x, y = data
    pred = x @ params["w"] + params["b"]
    return {"val_r2": 1 - jnp.sum((pred - y) ** 2) / jnp.sum((y - y.mean()) ** 2),
            "val_loss": mse(params, data), "train_loss": mse(params, data)}


def config(command="sweep"):
    return {"command": command, "title": "demo · linear", "metric": "r2",
            "options": {"top": 10, "lr": [0.01, 0.1, 5.0], "l1": [0.0]},
            "versions": {"jaxopt_core": jc.__version__}}


@pytest.fixture(scope="module")
def swept():
    return jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": np.array([0.01, 0.1, 5.0])},
                    steps=30, eval_fn=evaluate, eval_data=DATA, rank_by="val_r2",
                    rank_mode="max")


def printed(result, conf, **kwargs):
    console = Console(record=True, width=120)
    status = show_run(result, conf, console, **kwargs)
    return status, console.export_text()


@pytest.mark.slow
def test_write_run_writes_the_record_and_read_run_reads_it_back(swept, tmp_path):
    assert swept.diverged.tolist() == [False, False, True]
    paths = write_run(tmp_path, swept, config(), columns={"steps_trained": [30, 30, 12]})
    assert [p.name for p in paths] == ["sweep.csv", "sweep.png", "sweep.npz", "config.json"]
    assert json.loads((tmp_path / "config.json").read_text(encoding="utf-8")) == config()
    assert (tmp_path / "sweep.png").read_bytes()[:8] == PNG_MAGIC
    header, *rows = (tmp_path / "sweep.csv").read_text().splitlines()
    assert header.split(",")[:2] == ["member", "learning_rate"]
    assert header.endswith("steps_trained") and len(rows) == 3
    result, conf = read_run(tmp_path)
    assert conf == config()
    np.testing.assert_array_equal(result.losses, swept.losses)
    np.testing.assert_array_equal(result.evals["val_r2"], swept.evals["val_r2"])


@pytest.mark.slow
def test_show_run_prints_the_ranked_table(swept):
    status, text = printed(swept, config(), seconds=1.25)
    assert status == 0
    assert "members ranked by val R²" in text and "diverged" in text
    assert "best: learning_rate=0.1 -> val R²" in text
    assert "3 members, 1 diverged, 1.2 s" in text
    status, text = printed(swept, config(), top=1)
    assert "(2 more members in the CSV)" in text


@pytest.mark.slow
def test_every_member_diverged_is_status_3(tmp_path):
    res = jc.sweep(mse, PARAMS, jc.sgd, DATA, grid={"learning_rate": np.array([20.0, 40.0])},
                   steps=30, eval_fn=evaluate, eval_data=DATA, rank_by="val_r2",
                   rank_mode="max")
    assert res.diverged.all()
    write_run(tmp_path, res, config())  # the record is still written, the figure says why
    status, text = printed(*read_run(tmp_path))
    assert status == 3 and "every member diverged" in text and "best:" not in text


@pytest.mark.slow
def test_a_fit_run_folder(tmp_path):
    res = jc.fit(mse, PARAMS, jc.sgd(0.1), DATA, steps=20, eval_fn=evaluate, eval_data=DATA)
    paths = write_run(tmp_path, res, config("fit"))
    assert [p.name for p in paths] == ["fit.csv", "fit.png", "fit.npz", "config.json"]
    assert (tmp_path / "fit.csv").read_text().splitlines()[0] == "step,loss"
    status, text = printed(*read_run(tmp_path))
    assert status == 0 and "step      0" in text and "final: train loss" in text


def test_read_run_names_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        read_run(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"no saved result \(sweep.npz or fit.npz\)"):
        read_run(tmp_path)
    res = jc.fit(mse, PARAMS, jc.sgd(0.1), DATA, steps=3)
    res.save(tmp_path / "fit.npz")  # saved by a library user: no command configuration
    with pytest.raises(ValueError, match="not written by the jaxopt-core command"):
        read_run(tmp_path)
    (tmp_path / "fit.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(jc.ResultFileError):
        read_run(tmp_path)


@pytest.mark.slow
def test_search_runs_show_final_hyperparameters_and_stops():
    # PBT changes a member's learning rate: the table and the best line give
    # the value it ended with too. Halving: members stopped early say so.
    grid = {"learning_rate": np.array([0.01, 0.02, 0.05, 0.1])}
    kw = {"eval_fn": evaluate, "eval_data": DATA, "rank_by": "val_r2", "rank_mode": "max"}
    pbt = jc.sweep(mse, PARAMS, jc.sgd, DATA, grid=grid, steps=10, search=jc.pbt(5), **kw)
    status, text = printed(pbt, config())
    final = pbt.hparams_history["learning_rate"][:, -1]
    assert status == 0 and "learning rate final" in text
    best = int(text.split("(member ")[1].split(")")[0])
    assert f"learning_rate_final={final[best]:.4g}" in text
    halving = jc.sweep(mse, PARAMS, jc.sgd, DATA, grid=grid, steps=8,
                       search=jc.successive_halving(2), **kw)
    _, text = printed(halving, config())
    stops = sorted(halving.stopped_at.tolist())
    assert stops == [2, 2, 4, 8] and text.count("stopped at 2") == 2
    assert text.count("stopped at 4") == 1
