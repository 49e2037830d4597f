"""SweepResult.plot: which panels, what they draw (artists, scales, labels,
heatmap data), diverged members marked, never a blank panel, errors.

Results are built by hand (no compile) so each case controls its numbers; one
test plots a real sweep end to end. Figures are inspected, never rendered to
compare pixels."""

import io

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA, PARAMS, mse
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

import jaxopt_core as jc
from jaxopt_core.training.plot_panels import wants_log


def result(hparams, final, *, diverged=None, evals=None, eval_steps=(), rank_by="loss",
           steps=40, best_index=0):
    """A SweepResult whose member i has losses falling geometrically to ``final[i]``."""
    final = np.asarray(final, dtype=np.float32)
    k = final.size
    losses = final[:, None] * np.geomspace(100.0, 1.0, steps, dtype=np.float32)[None]
    diverged = np.zeros(k, bool) if diverged is None else np.asarray(diverged, bool)
    losses[diverged, steps // 2:] = np.nan
    return jc.SweepResult(
        hparams={n: np.asarray(v) for n, v in hparams.items()}, losses=losses,
        params={"w": np.zeros((k, 2), np.float32)}, diverged=diverged, best_index=best_index,
        diverged_at=np.where(diverged, steps // 2, -1), evals=evals or {},
        eval_steps=np.asarray(eval_steps, dtype=np.int32), rank_by=rank_by, rank_mode="min",
        best_params_per_member=None, best_step=None)


def panels(fig):
    """The panels of a figure, without its colour bars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def labelled(ax, label):
    return [line for line in ax.get_lines() if line.get_label().startswith(label)]


LRS = np.array([1e-3, 1e-2, 1e-1, 1.0])


@pytest.mark.slow
def test_one_hyperparameter_curves_and_final_loss_with_diverged_marked():
    res = result({"learning_rate": LRS}, [4.0, 1.0, 0.5, 0.1], diverged=[0, 0, 0, 1],
                 best_index=2)
    fig = res.plot()
    assert isinstance(fig, Figure)
    curves, final = panels(fig)
    assert len(fig.axes) == 3  # two panels and the colour bar of the learning rates
    (collection,) = [c for c in curves.collections if isinstance(c, LineCollection)]
    assert len(collection.get_segments()) == 4
    np.testing.assert_allclose(collection.get_array(), LRS)
    assert curves.get_yscale() == "log" and final.get_xscale() == "log"
    assert final.get_xlabel() == "learning_rate"
    assert final.get_ylabel() == "training loss (mean of the last tenth)"
    (line,) = [ln for ln in final.get_lines() if ln.get_marker() == "o"]
    np.testing.assert_allclose(line.get_xdata(), LRS[:3])  # the diverged member is not on it
    (star,) = labelled(final, "best")
    assert star.get_xdata()[0] == LRS[2]
    for ax, at in ((final, LRS[3]), (curves, 20)):  # at its learning rate / at its step
        (mark,) = labelled(ax, "diverged (1)")
        assert mark.get_xdata().tolist() == [at] and mark.get_ydata().tolist() == [0.97]
        assert mark.get_transform() == ax.get_xaxis_transform()  # the top edge, any scale
    fig.savefig(io.BytesIO(), format="png")


def test_two_hyperparameter_product_is_a_heatmap_of_the_final_metric():
    grid = jc.grid_product(learning_rate=LRS[:3], l2=[0.0, 0.1])
    acc = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    res = result(grid, [1.0] * 6, diverged=[0, 0, 0, 0, 0, 1], rank_by="acc", best_index=4,
                 evals={"acc": acc[:, None]}, eval_steps=[40])
    fig = res.plot()
    _, heat = panels(fig)
    (image,) = heat.images
    data = image.get_array()
    # rows: l2 ascending, columns: learning rate ascending; member (lr_i, l2_j) is 2*i + j
    expected = acc.reshape(3, 2).T.copy()
    expected[1, 2] = np.nan  # the diverged member
    np.testing.assert_allclose(np.ma.filled(data.astype(float), np.nan), expected)
    assert data.mask.tolist() == np.isnan(expected).tolist()
    assert heat.get_xlabel() == "learning_rate" and heat.get_ylabel() == "l2"
    assert [t.get_text() for t in heat.get_xticklabels()] == ["0.001", "0.01", "0.1"]
    (mark,) = labelled(heat, "diverged")
    assert (mark.get_xdata().tolist(), mark.get_ydata().tolist()) == ([2], [1])
    (best,) = heat.patches
    assert best.get_xy() == (1.5, -0.5)  # member 4: lr 0.1, l2 0
    assert heat.get_title() == "acc after the last step"


def test_a_grid_that_is_not_a_product_gets_lines():
    res = result({"learning_rate": LRS, "l2": [0.0, 0.1, 0.0, 0.2]}, [1.0, 0.5, 0.2, 0.1])
    _, final = panels(res.plot())
    assert not final.images
    assert len([ln for ln in final.get_lines() if ln.get_marker() == "o"]) == 3  # one per l2


def test_x_and_hue_choose_the_axis_and_the_colours():
    grid = jc.grid_product(learning_rate=LRS[:3], l2=[0.0, 0.1, 0.3])
    res = result(grid, np.linspace(1.0, 2.0, 9))
    fig = res.plot(x="l2", hue="learning_rate")
    curves, final = panels(fig)
    assert not final.images and final.get_xlabel() == "l2"
    assert final.get_xscale() == "linear"  # l2 includes 0
    lines = [ln for ln in final.get_lines() if ln.get_marker() == "o"]
    assert len(lines) == 3 and all(ln.get_xdata().tolist() == [0, 0.1, 0.3] for ln in lines)
    assert {ln.get_color() for ln in lines} == {"C0", "C1", "C2"}
    texts = [t.get_text() for t in final.get_legend().get_texts()]
    assert texts[:3] == ["learning_rate=0.001", "learning_rate=0.01", "learning_rate=0.1"]
    # the curves are coloured by x
    (collection,) = [c for c in curves.collections if isinstance(c, LineCollection)]
    np.testing.assert_allclose(collection.get_array(), grid["l2"])


def test_many_hue_values_get_a_colour_bar():
    grid = jc.grid_product(momentum=[0.0, 0.5], learning_rate=np.geomspace(1e-3, 1, 12))
    res = result(grid, np.ones(24))
    fig = res.plot(x="momentum", hue="learning_rate")
    _, final = panels(fig)
    assert [c.ax.get_ylabel() for c in (a._colorbar for a in fig.axes
                                       if a.get_label() == "<colorbar>")] == [
        "momentum", "learning_rate"]
    assert final.get_legend() is None or "learning_rate=" not in str(
        [t.get_text() for t in final.get_legend().get_texts()])


@pytest.mark.slow
def test_an_eval_metric_adds_validation_curves():
    evals = {"acc": np.array([[0.2, 0.5, 0.8], [0.1, 0.3, 0.6], [0.3, 0.2, 0.1]]),
             "val_loss": np.array([[2.0, 1.0, 0.5], [2.0, 1.5, 1.0], [2.0, 5.0, 50.0]])}
    res = result({"learning_rate": LRS[:3]}, [1.0, 2.0, 3.0], evals=evals,
                 eval_steps=[10, 20, 40], rank_by="acc")
    fig = res.plot()
    curves, during, final = panels(fig)
    (collection,) = [c for c in during.collections if isinstance(c, LineCollection)]
    segments = collection.get_segments()
    assert len(segments) == 3 and segments[0][:, 0].tolist() == [10, 20, 40]
    np.testing.assert_allclose(segments[2][:, 1], evals["acc"][2])
    assert during.get_ylabel() == "acc" and during.get_yscale() == "linear"
    assert final.get_ylabel() == "acc"
    (line,) = [ln for ln in final.get_lines() if ln.get_marker() == "o"]
    np.testing.assert_allclose(line.get_ydata(), [0.8, 0.6, 0.1])
    # another metric on request; its values span 100x: log axes
    _, during, final = panels(res.plot(metric="val_loss"))
    assert during.get_yscale() == final.get_yscale() == "log"
    assert panels(res.plot(metric="val_loss", log_y=False))[2].get_yscale() == "linear"
    # one evaluation (after the last step) has no curves to draw: two panels
    once = result({"learning_rate": LRS[:3]}, [1.0, 2.0, 3.0], rank_by="acc",
                  evals={"acc": evals["acc"][:, -1:]}, eval_steps=[40])
    assert len(panels(once.plot())) == 2


def test_log_axis_only_where_the_values_allow():
    assert wants_log([1.0, 0.5, 0.01]) and not wants_log([0.9, 0.95])
    assert not wants_log([-0.5, 10.0, 100.0]) and wants_log([0.0, 1.0, 100.0])
    assert not wants_log([np.nan, np.nan], log_y=True)  # nothing to draw: linear
    r2 = {"r2": np.array([[-3.0], [0.5], [0.9]])}
    res = result({"learning_rate": LRS[:3]}, [1.0, 2.0, 3.0], evals=r2, eval_steps=[40],
                 rank_by="r2")
    assert panels(res.plot())[1].get_yscale() == "linear"
    with pytest.raises(ValueError, match=r"log_y=True .*metric 'r2' has values down to -3"):
        res.plot(log_y=True)
    with pytest.raises(ValueError, match="log_y must be None"):
        res.plot(log_y="yes")
    positive = result({"learning_rate": LRS[:3]}, [1.0, 1.5, 2.0])
    assert panels(positive.plot())[1].get_yscale() == "linear"  # spans less than 10x
    assert panels(positive.plot(log_y=True))[1].get_yscale() == "log"


def test_every_member_diverged_says_so_instead_of_a_blank_panel():
    res = result({"learning_rate": LRS}, [1.0] * 4, diverged=[1, 1, 1, 1], best_index=None)
    curves, final = panels(res.plot(log_y=True))
    assert "every member diverged" in [t.get_text() for t in final.texts]
    (mark,) = labelled(final, "diverged (4)")
    assert mark.get_xdata().tolist() == LRS.tolist()
    assert curves.collections  # the curves up to the divergence are still drawn
    grid = jc.grid_product(learning_rate=LRS[:2], momentum=[0.0, 0.9])
    res = result(grid, [1.0] * 4, diverged=[1, 1, 1, 1], best_index=None)
    _, heat = panels(res.plot())
    assert not heat.images and "every member diverged" in [t.get_text() for t in heat.texts]
    assert len(labelled(heat, "diverged")[0].get_xdata()) == 4


def test_ax_draws_the_final_panel_into_a_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    res = result({"learning_rate": LRS}, [4.0, 1.0, 0.5, 0.1])
    assert res.plot(ax=ax) is fig
    assert panels(fig) == [ax] and ax.get_xlabel() == "learning_rate"


@pytest.mark.parametrize("kwargs, match", [
    ({"x": "momentum"}, r"x='momentum' is not a hyperparameter .* \['learning_rate', 'l2'\]"),
    ({"hue": "lr"}, r"hue='lr' is not a hyperparameter"),
    ({"x": "l2", "hue": "l2"}, r"hue='l2' is also x"),
    ({"metric": "accuracy"}, r"metric='accuracy' is not a metric .* \['acc', 'loss'\]"),
])
def test_bad_arguments_name_themselves_and_the_choices(kwargs, match):
    res = result({"learning_rate": LRS[:2], "l2": [0.0, 0.1]}, [1.0, 2.0],
                 evals={"acc": np.ones((2, 1))}, eval_steps=[40])
    with pytest.raises(ValueError, match=match):
        res.plot(**kwargs)


@pytest.mark.slow
def test_a_real_sweep_plots_and_renders():
    grid = jc.grid_product(learning_rate=[0.01, 0.1, 10.0], momentum=[0.0, 0.9])
    res = jc.sweep(mse, PARAMS, jc.sgd, DATA, grid=grid, steps=30)
    assert res.diverged.any()
    fig = res.plot()
    _, heat = panels(fig)
    final = np.where(res.diverged, np.nan, res.tail_losses()).reshape(3, 2).T
    np.testing.assert_allclose(np.ma.filled(heat.images[0].get_array().astype(float), np.nan),
                               final, rtol=1e-6)
    fig.savefig(io.BytesIO(), format="png")
    assert jnp.isfinite(res.losses[0]).all()
