"""Write the tutorial notebooks from the cell sources below, executed.

The ``.ipynb`` files are generated and stored *with their outputs*, so the
figures show on the repository page: the script runs each notebook top to
bottom in a fresh kernel of this Python (nbclient, in a temporary folder)
before writing it. The test suite executes them again, fresh. Edit the cells
here and run::

    python notebooks/build_notebooks.py              # rebuild and execute every notebook
    python notebooks/build_notebooks.py 02 03        # only the notebooks whose names hold 02 or 03
    python notebooks/build_notebooks.py --no-execute # sources only (quick, for drafts)
    python notebooks/build_notebooks.py --check      # exit 1 if stale or stored unexecuted

Every notebook starts with the same install cell, so it runs top to bottom in
a fresh Colab runtime.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from textwrap import dedent

import nbformat

HERE = Path(__file__).resolve().parent

INSTALL = '''
try:
    import jaxopt_core  # noqa: F401
except ImportError:  # a fresh Colab runtime
    %pip install -q "jaxopt-core[notebooks]"
'''



def imports(*third_party: str, first_party: tuple[str, ...] = ()) -> str:
    """The imports cell: inline figures, then the imports sorted as ruff's isort
    wants them (``import`` lines before ``from`` lines)."""
    base = ["import jax.numpy as jnp", "import matplotlib.pyplot as plt", "import numpy as np"]
    lines = sorted([*base, *third_party], key=lambda l: (l.startswith("from"), l.split()[1]))
    return "\n".join(
        ["%matplotlib inline", *lines, "", "import jaxopt_core as jc", *first_party]
    )


def md(text: str) -> tuple[str, str]:
    return ("markdown", dedent(text).strip())


def code(*parts: str) -> tuple[str, str]:
    return ("code", "\n".join(dedent(part).strip() for part in parts))


QUICKSTART = [
    md("""
    # jaxopt_core quickstart

    Optimizers as pairs of pure functions over pytrees, with optax's shape and
    argument names:

    * `state = opt.init(params)`
    * `updates, state = opt.update(grads, state, params)`
    * `params = jc.apply_updates(params, updates)`

    This notebook trains a small network with a hand-written, jit-compiled step,
    then checks jaxopt_core's optimizers against optax's, step by step.
    """),
    code(INSTALL),
    code(imports("import jax", "import optax"), "",
         'print("jax", jax.__version__, "| jaxopt_core", jc.__version__)'),
    md("""
    ## 1. Parameters are any pytree

    A one-hidden-layer network for a noisy sine, its parameters a nested dict.
    """),
    code('''
    kx, k1, k2 = jax.random.split(jax.random.key(0), 3)
    x = jnp.linspace(-2, 2, 256)[:, None]
    y = jnp.sin(3 * x) + 0.1 * jax.random.normal(kx, x.shape)

    params = {
        "hidden": {"w": jax.random.normal(k1, (1, 32)), "b": jnp.zeros(32)},
        "out": {"w": jax.random.normal(k2, (32, 1)) / jnp.sqrt(32), "b": jnp.zeros(1)},
    }


    def predict(params, x):
        h = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
        return h @ params["out"]["w"] + params["out"]["b"]


    def loss_fn(params, batch):
        x, y = batch
        return jnp.mean((predict(params, x) - y) ** 2)


    jax.tree.map(jnp.shape, params)
    '''),
    md("""
    The optimizer's state mirrors the params; each transform's state is a
    named tuple (Adam keeps a step count and two moments).
    """),
    code('''
    opt = jc.adam(learning_rate=1e-2)
    state = opt.init(params)
    jax.tree.map(jnp.shape, state)
    '''),
    md("## 2. A jit-compiled training step"),
    code('''
    @jax.jit
    def train_step(params, state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, state = opt.update(grads, state, params)
        return jc.apply_updates(params, updates), state, loss


    p, s = params, opt.init(params)
    losses = []
    for _ in range(500):
        p, s, loss = train_step(p, s, (x, y))
        losses.append(loss)
    losses = np.asarray(losses)
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.4f}")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.semilogy(losses)
    ax1.set(xlabel="step", ylabel="loss", title="training loss")
    ax2.plot(x, y, ".", ms=3, alpha=0.5, label="data")
    ax2.plot(x, predict(p, x), lw=2, label="fit")
    ax2.legend()
    ax2.set_title("the trained network")
    plt.show()
    '''),
    md("""
    `jc.fit` runs the same loop as one compiled `lax.scan` (no Python loop, no
    host round trip per step); `jc.make_train_step` builds the step above for
    you, with buffer donation.
    """),
    code('''
    result = jc.fit(loss_fn, params, opt, (x, y), steps=500)
    # The same algorithm; the two compiled programs round slightly differently.
    print(f"final loss, jc.fit: {float(result.losses[-1]):.4f}, "
          f"hand-written loop: {losses[-1]:.4f}")
    '''),
    md("""
    ## 3. Cross-check against optax

    Same argument names, same defaults, same numbers. Run both libraries'
    optimizers from the same start and compare the trajectories. The
    differences are float32 rounding (the two libraries order a few operations
    differently): about 1e-9 after one step. Over long runs a non-convex problem
    can amplify such differences, as it would between any two implementations.
    """),
    code('''
    def trajectory(opt, steps=200):
        """Losses and params at every step (a lax.scan: one compile)."""

        def step(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p, (x, y))
            u, s = opt.update(g, s, p)
            p = optax.apply_updates(p, u)
            return (p, s), (loss, p)

        _, (losses, ps) = jax.lax.scan(step, (params, opt.init(params)), length=steps)
        return losses, ps


    pairs = {
        "adam": (jc.adam(1e-2), optax.adam(1e-2)),
        "sgd, momentum 0.9": (jc.sgd(5e-2, momentum=0.9), optax.sgd(5e-2, momentum=0.9)),
        "rmsprop": (jc.rmsprop(3e-3), optax.rmsprop(3e-3)),
        "adamw": (jc.adamw(1e-2, weight_decay=0.05), optax.adamw(1e-2, weight_decay=0.05)),
    }

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (name, (ours, theirs)) in enumerate(pairs.items()):
        l_jc, p_jc = trajectory(ours)
        l_ox, p_ox = trajectory(theirs)
        # the largest |difference| over all parameters, at each step
        diff = jax.tree.map(lambda a, b: jnp.abs(a - b).reshape(len(a), -1).max(1), p_jc, p_ox)
        diff = np.max(np.stack(jax.tree.leaves(diff)), axis=0)
        ax1.semilogy(l_jc, color=f"C{i}", label=f"{name} (jaxopt_core)")
        ax1.semilogy(l_ox, "--", color=f"C{i}", lw=2.5, alpha=0.5, label=f"{name} (optax)")
        ax2.semilogy(np.maximum(diff, 1e-10), color=f"C{i}", label=name)
        print(f"{name:>18}: max |param difference| over 200 steps = {diff.max():.2e}")
    ax1.set(xlabel="step", ylabel="loss", title="jaxopt_core (solid) and optax (dashed)")
    ax1.legend(fontsize="small", ncol=2, loc="upper right")
    ax2.set(xlabel="step", ylabel="max |Δ param|", ylim=(1e-10, 1e-4),
            title="difference (float32 rounding; 0 drawn at 1e-10)")
    ax2.legend(fontsize="small")
    plt.show()
    '''),
    md("""
    ## 4. Hyperparameters are data

    The learning rate is an ordinary argument, so `jax.vmap` trains many
    learning rates at once, compiled once. `jc.sweep` (next notebook) does this
    with minibatches, divergence handling and sharding across devices.
    """),
    code('''
    def final_loss(lr):
        losses, _ = trajectory(jc.adam(lr), steps=200)
        return losses[-1]


    lrs = jnp.logspace(-3, 0, 24)
    finals = jax.jit(jax.vmap(final_loss))(lrs)

    plt.figure(figsize=(5, 3.5))
    plt.loglog(lrs, finals, "o-")
    plt.xlabel("learning rate")
    plt.ylabel("loss after 200 steps")
    plt.title("24 runs of Adam, one vmap")
    plt.show()
    '''),
    md("""
    ## 5. Batches from an iterator

    Data too large for memory arrives batch by batch: from disk, a data
    loader, a generator. `jc.fit` and `jc.sweep` take any iterable of batches
    in place of arrays: step `t` trains on the `t`-th batch (`steps` counts
    batches), the run stays compiled (the batches are stacked a segment at a
    time and put on the device while the previous segment trains), and a
    sweep's members all see the same batch. Here a generator makes fresh
    samples of the noisy sine at every step.
    """),
    code('''
    def sine_batches(steps, batch_size=64, seed=0):
        """Fresh samples at every step, made on the fly: never all in memory."""
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            xb = rng.uniform(-2, 2, (batch_size, 1)).astype(np.float32)
            yield xb, np.sin(3 * xb) + 0.1 * rng.standard_normal(xb.shape, dtype=np.float32)


    streamed = jc.fit(loss_fn, params, opt, sine_batches(500), steps=500)
    print(f"loss on the last batch: {float(streamed.losses[-1]):.4f}")
    '''),
    md("""
    A PyTorch-style loader needs no torch: a class whose `__iter__` gives one
    shuffled pass (an epoch) of NumPy batches. A sweep over learning rates
    reads 40 epochs of it through a generator.
    """),
    code('''
    class Loader:
        """Each pass over it is a new shuffled epoch of (x, y) batches."""

        def __init__(self, x, y, batch_size, seed=0):
            self.x, self.y, self.batch_size = np.asarray(x), np.asarray(y), batch_size
            self.rng = np.random.default_rng(seed)

        def __len__(self):
            return len(self.x) // self.batch_size

        def __iter__(self):
            order = self.rng.permutation(len(self.x))
            for i in range(len(self)):
                idx = order[i * self.batch_size:(i + 1) * self.batch_size]
                yield self.x[idx], self.y[idx]


    loader = Loader(x, y, batch_size=32)  # 8 batches per epoch
    epochs = (batch for _ in range(40) for batch in loader)
    res = jc.sweep(loss_fn, params, jc.adam, epochs, steps=40 * len(loader),
                   grid={"learning_rate": np.geomspace(1e-3, 1e-1, 5)})

    plt.figure(figsize=(5, 3.5))
    for lr, curve in zip(res.hparams["learning_rate"], res.losses):
        plt.semilogy(curve, label=f"lr {lr:.3g}")
    plt.xlabel("step (batch)")
    plt.ylabel("minibatch loss")
    plt.legend(fontsize="small")
    plt.title("5 learning rates, one stream")
    plt.show()
    '''),
]


SWEEP = [
    md("""
    # Learning-rate sweeps with `jc.sweep`

    `jc.sweep` trains one *member* per hyperparameter value, all in one
    compiled program: `vmap` over members, `lax.scan` over steps. It returns the
    loss curves, the final params of every member (stacked), which members
    diverged, and the best one. Here: softmax regression on scikit-learn's
    bundled digits (no download).
    """),
    code('''
    import os

    # Split the CPU into 4 XLA devices so that section 3 has devices to shard
    # over on a CPU-only runtime. It only counts if set before JAX starts, and
    # does not change GPUs or TPUs.
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    ''', INSTALL),
    code(imports("import jax", first_party=("from jaxopt_core.app.datasets import load_dataset",
                              "from jaxopt_core.app.models import make_model"))),
    code('''
    ds = load_dataset("digits")  # standardized, with a stratified validation split
    model = make_model("logistic", ds.task, ds.n_features, ds.n_outputs)
    params = model.init(jax.random.key(0))
    print("train", ds.x_train.shape, "validation", ds.x_val.shape)
    jax.tree.map(jnp.shape, params)
    '''),
    md("""
    ## 1. 64 learning rates, one program, ranked on held-out data

    Plain SGD, minibatches of 128, 200 steps, learning rates from 1e-4 to 10.
    `eval_fn(params, eval_data)` scores a member on the validation split; it
    runs *inside* the compiled program, for every member, every `eval_every`
    steps and after the last step, so validation costs no extra dispatch and
    no host round trip. `rank_by` names the metric that decides
    `best_index` (`rank_mode="max"`: higher is better).
    """),
    code('''
    def validate(params, data):
        return {"accuracy": model.metric(params, data), "val_loss": model.loss(params, data)}


    lrs = np.logspace(-4, 1, 64)
    res = jc.sweep(model.loss, params, jc.sgd, ds.train, grid={"learning_rate": lrs},
                   steps=200, batch_size=128, progress=True,
                   eval_fn=validate, eval_data=ds.val, eval_every=20,
                   rank_by="accuracy", rank_mode="max")
    print("losses", res.losses.shape, "| accuracy", res.evals["accuracy"].shape,
          "after steps", res.eval_steps.tolist())
    print("diverged:", int(res.diverged.sum()), "| best by validation accuracy: member",
          res.best_index, f"lr={lrs[res.best_index]:.3g}")
    '''),
    code("res.plot()  # loss curves, validation curves, the ranking metric at the end"),
    md("""
    `res.plot` draws any metric (`metric=`, default the one ranked by) against
    any hyperparameter (`x=`), coloured by another (`hue=`), with log axes only
    where the values allow (`log_y=None` decides). Here is the training loss
    at the end, the ranking used without `eval_fn`:
    """),
    code('res.plot(metric="loss")'),
    md("""
    The training loss keeps falling all the way to the largest learning rate,
    while the validation accuracy peaks before it: a sweep ranked by its
    training loss (`rank_by="loss"`, the default without `eval_fn`: the mean
    over the last tenth of the steps) would pick the member that fits the
    training set best, not the one that does best on held-out data. The
    evaluations along the way show how each member got there.
    """),
    code('''
    by_loss = int(np.nanargmin(res.tail_losses()))
    print(f"lowest training loss: lr={lrs[by_loss]:.3g}, validation accuracy "
          f"{float(res.evals['accuracy'][by_loss, -1]):.3f}")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i in [*res.member_order()[:3], by_loss]:
        ax.plot(res.eval_steps, res.evals["accuracy"][i], "o-", ms=3, label=f"lr={lrs[i]:.3g}")
    ax.set(xlabel="step", ylabel="validation accuracy", title="evaluated every 20 steps")
    ax.legend()
    plt.show()

    res.to_dataframe().sort_values("rank").head()
    '''),
    code('''
    best_params = res.best_params()  # the params of member res.best_index
    print("accuracy of the chosen member:", float(model.metric(best_params, ds.val)))
    '''),
    md("""
    ### Divergence stays in its member

    Softmax regression tolerates large steps; least squares does not. On
    scikit-learn's diabetes data, SGD diverges above a learning rate of about
    2/L. Those members are frozen at their last finite params, their later
    losses are NaN and they are flagged in `res.diverged` (and
    `res.diverged_at`, the step): the other members are not disturbed.
    """),
    code('''
    reg = load_dataset("diabetes")
    linear = make_model("linear", reg.task, reg.n_features)
    res_reg = jc.sweep(linear.loss, linear.init(jax.random.key(0)), jc.sgd, reg.train,
                       grid={"learning_rate": np.logspace(-3, 1, 32)}, steps=100)
    diverged = np.asarray(res_reg.diverged)
    print("diverged:", int(diverged.sum()), "of 32, from learning rate",
          f"{res_reg.hparams['learning_rate'][diverged].min():.3g}")
    print("step at which each diverged:", np.asarray(res_reg.diverged_at)[diverged])
    res_reg.plot()
    '''),
    md("""
    ## 2. A grid: learning rate × L2

    `jc.grid_product` crosses axes; `l1` and `l2` are penalty strengths added
    to the loss ($\\ell_2 \\tfrac12\\sum w^2$ here), on the weights only.
    """),
    code('''
    lr_axis = np.logspace(-3, 0, 10)
    l2_axis = np.concatenate([[0.0], np.logspace(-4, -1, 5)])
    grid = jc.grid_product(learning_rate=lr_axis, l2=l2_axis)  # 60 members
    res2 = jc.sweep(model.loss, params, jc.adam, ds.train, grid=grid, steps=200,
                    batch_size=128, penalty_mask=jc.weights_only_mask,
                    eval_fn=validate, eval_data=ds.val, rank_by="accuracy", rank_mode="max")
    res2.plot()  # two hyperparameters, every pair once: a heatmap of the final accuracy
    '''),
    md("""
    The same sweep as lines: accuracy against the L2 strength (a linear axis,
    since it includes 0), one colour per learning rate.
    """),
    code('res2.plot(x="l2", hue="learning_rate")'),
    md("""
    ## 3. Members across devices

    The member axis is sharded over the devices (`devices=`, default all): each
    device trains its share of the members with its own copy of the data. The
    stacked params stay on the devices, sharded the same way; the losses and
    evaluations come back as NumPy arrays on the host. Members are independent:
    nothing is reduced across them, so the numbers depend on the device count
    only through float rounding (XLA compiles 16 members per device differently
    from 64 on one).
    """),
    code('''
    print(jax.devices())
    res4 = jc.sweep(model.loss, params, jc.sgd, ds.train, grid={"learning_rate": lrs},
                    steps=200, batch_size=128, devices=jax.devices())
    biases = res4.params["b"]  # [64 members, 10 classes]
    print(biases.sharding)
    for shard in biases.addressable_shards:
        print(shard.device, "members", shard.index[0], "shape", shard.data.shape)
    jax.debug.visualize_array_sharding(biases)
    '''),
    code('''
    res1 = jc.sweep(model.loss, params, jc.sgd, ds.train, grid={"learning_rate": lrs},
                    steps=200, batch_size=128, devices=jax.devices()[:1])
    one, many = np.asarray(res1.losses), np.asarray(res4.losses)
    rel = np.abs(one - many) / np.abs(one)
    print("one device:", res1.params["b"].sharding.device_set)
    print(f"relative difference, 1 vs {len(jax.devices())} devices: first step "
          f"{rel[:, 0].max():.1e}, all steps {np.nanmax(rel):.1e} (rounding grows in "
          "the noisiest members)")
    '''),
    md("""
    For more members than fit in memory at once, `chunk_size=` runs them in
    chunks through the same compiled program.

    ## 4. Save, load, plot again

    `save` writes one `.npz` file (arrays, hyperparameters, versions and your
    `config`; no pickle, checksummed); `jc.load_result` gives the result back,
    bit for bit, with every method working, so a figure can be redrawn later
    without training again.
    """),
    code('''
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "lr_x_l2.npz"
    res2.save(path, config={"dataset": "digits", "optimizer": "adam", "steps": 200})
    back = jc.load_result(path)
    meta = jc.load_metadata(path)
    print(meta.kind, meta.members, "members,", meta.steps, "steps, grid", meta.hparams)
    print("config:", meta.config)
    print("losses identical:", np.array_equal(back.losses, res2.losses, equal_nan=True))
    back.plot(metric="val_loss")
    '''),
    md("""
    ## 5. A sweep that survives interruption

    With `checkpoint_dir`, the sweep saves every member's params, optimizer
    state, data order, losses and evaluations so far (with orbax-checkpoint)
    every `checkpoint_every` steps. After a crash, a killed kernel or a
    `kill -9`, the *same call* resumes from the last complete checkpoint and
    returns exactly what an uninterrupted run returns. Below, a crash after
    step 150 is simulated by deleting the last checkpoint.

    Interrupting the kernel (Stop, or Ctrl-C in a terminal) stops the sweep at
    the next checkpoint and raises `jc.Interrupted` with the partial result:

        try:
            res = jc.sweep(..., checkpoint_dir=ckpt, checkpoint_every=50)
        except jc.Interrupted as stop:
            stop.partial.losses.shape, stop.steps_trained   # then run the cell again
    """),
    code('''
    import shutil

    ckpt = Path(tempfile.mkdtemp()) / "ckpt"
    run = dict(grid={"learning_rate": lrs}, steps=200, batch_size=128, eval_fn=validate,
               eval_data=ds.val, eval_every=20, rank_by="accuracy", rank_mode="max",
               checkpoint_dir=ckpt, checkpoint_every=50)
    first = jc.sweep(model.loss, params, jc.sgd, ds.train, **run)
    print("in", ckpt.name, ":", sorted(p.name for p in ckpt.iterdir()))
    shutil.rmtree(ckpt / "200")  # as if the process died during the last 50 steps
    resumed = jc.sweep(model.loss, params, jc.sgd, ds.train, **run)  # the same call
    print("resumed from step 150; identical to the uninterrupted run:",
          np.array_equal(resumed.losses, first.losses, equal_nan=True)
          and np.array_equal(resumed.evals["accuracy"], first.evals["accuracy"],
                             equal_nan=True))
    '''),
]


REGULARIZATION = [
    md("""
    # L2, L1 and proximal steps

    Penalties are stated once: $\\ell_1 \\sum_i |w_i|$ and
    $\\ell_2 \\tfrac12 \\sum_i w_i^2$. An L2 penalty is smooth and gradient
    steps handle it. An L1 penalty is not: its subgradient makes weights
    hover around zero without reaching it. A *proximal* step
    (soft-thresholding) sets them to exactly zero.
    """),
    code(INSTALL),
    code(imports()),
    md("""
    A sparse regression problem: 50 features, 6 of which matter. The features
    are standardized and the target centred, so no intercept is needed (and the
    problem is exactly scikit-learn's Lasso below).
    """),
    code('''
    rng = np.random.default_rng(0)
    n, d = 200, 50
    X = rng.standard_normal((n, d))
    X = (X - X.mean(0)) / X.std(0)
    w_true = np.zeros(d)
    w_true[rng.choice(d, 6, replace=False)] = rng.choice([-1, 1], 6) * rng.uniform(0.5, 2, 6)
    y = X @ w_true + 0.3 * rng.standard_normal(n)
    y = y - y.mean()
    X, y = X.astype(np.float32), y.astype(np.float32)


    def f(w, batch):
        """Half the mean squared error: sklearn's Lasso objective without the penalty."""
        x, t = batch
        return 0.5 * jnp.mean((x @ w - t) ** 2)
    '''),
    md("""
    ## 1. Four ways to regularize

    Same data, 500 full-batch steps from zero each.
    """),
    code('''
    w0, data, steps, lr, l1 = jnp.zeros(d), (X, y), 500, 0.2, 0.05

    runs = {
        "SGD on f + L2 (l2=0.5)": (jc.regularized(f, l2=0.5), jc.sgd(lr)),
        "SGD on f + L1 (subgradient)": (jc.regularized(f, l1=l1), jc.sgd(lr)),
        "proximal gradient (ISTA)": (f, jc.proximal_gradient(lr, l1=l1)),
        "accelerated (FISTA)": (f, jc.proximal_gradient(lr, l1=l1, acceleration=True)),
    }
    weights = {}
    for name, (loss, opt) in runs.items():
        weights[name] = np.asarray(jc.fit(loss, w0, opt, data, steps=steps).params)
        w = weights[name]
        print(f"{name:>28}: exact zeros {int(np.sum(w == 0)):2d}/{d}, "
              f"|w| < 1e-3: {int(np.sum(np.abs(w) < 1e-3)):2d}, "
              f"truly zero: {int(np.sum(w_true == 0))}")

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2), sharey=True)
    for ax, (name, w) in zip(axes, weights.items()):
        ax.stem(w_true, linefmt="C7-", markerfmt="C7o", basefmt=" ", label="true")
        ax.plot(np.arange(d), w, "C3.", ms=7, label="fitted")
        ax.plot(np.flatnonzero(w == 0), np.zeros(np.sum(w == 0)), "kx", ms=4,
                label="exactly 0")
        ax.set(title=name, xlabel="feature")
    axes[0].legend(fontsize="small")
    plt.show()
    '''),
    md("""
    Zoom in on the weights that should be zero: the L1 subgradient leaves
    them oscillating at the scale of the step size; the proximal methods put
    them at exactly 0. (`jc.chain(any_optimizer, jc.proximal_step(lr, l1=...))`
    adds the same soft-thresholding after any optimizer, such as Adam; see its
    docstring for what that does and does not solve.)
    """),
    code('''
    off = w_true == 0
    plt.figure(figsize=(6, 3.5))
    for name, w in weights.items():
        mags = np.sort(np.abs(w[off]))[::-1]
        plt.semilogy(np.maximum(mags, 1e-12), "o-", ms=3, label=name)
    plt.axhline(1e-12, color="k", lw=0.5)
    plt.ylabel("|w| on the 44 irrelevant features\\n(exact zeros drawn at 1e-12)")
    plt.xlabel("rank")
    plt.legend(fontsize="small")
    plt.show()
    '''),
    md("""
    ## 2. The proximal operator

    `jc.prox_l1(w, s)` is soft-thresholding, $\\operatorname{sign}(w)\\max(|w| - s, 0)$,
    on any pytree; `jc.proximal_gradient` takes a gradient step and then this
    prox with $s = \\eta\\,\\ell_1$.
    """),
    code('''
    v = jnp.linspace(-3, 3, 601)
    plt.figure(figsize=(4.5, 3.5))
    for s in (0.5, 1.0, 2.0):
        plt.plot(v, jc.prox_l1(v, s), label=f"prox_l1(w, {s})")
    plt.plot(v, v, "k:", lw=1)
    plt.xlabel("w")
    plt.legend()
    plt.show()
    '''),
    md("""
    ## 3. A Lasso path, checked against scikit-learn

    `jc.regularization_path` solves the problem for a whole vector of L1
    strengths in one vmapped, compiled call (FISTA, step size from the
    Hessian's top eigenvalue). scikit-learn's `lasso_path` solves the same
    objective, $\\frac{1}{2n}\\|y - Xw\\|^2 + \\alpha\\|w\\|_1$, by coordinate descent.
    """),
    code('''
    from sklearn.linear_model import lasso_path


    def f_xy(w, X, y):
        return f(w, (X, y))


    alpha_max = float(np.max(np.abs(X.T @ y)) / n)  # the smallest alpha with w = 0
    alphas = alpha_max * np.logspace(0, -3, 30)  # decreasing, as lasso_path orders them

    path = jc.regularization_path(f_xy, jnp.zeros(d), alphas, args=(X, y), steps=3000)
    _, coefs_sk, _ = lasso_path(X.astype(np.float64), y.astype(np.float64), alphas=alphas,
                                tol=1e-10, max_iter=100_000)
    coefs_jc = np.asarray(path.params)  # [n_alphas, d]
    print("max |jaxopt_core - sklearn| over the path:", np.abs(coefs_jc - coefs_sk.T).max())
    print("largest residual (0 at a minimizer):", float(path.residuals.max()))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    for j in range(d):
        ax1.semilogx(alphas, coefs_jc[:, j], color=f"C{j % 10}", lw=3, alpha=0.5)
        ax1.semilogx(alphas, coefs_sk[j], "k--", lw=0.8)
    ax1.set(xlabel="alpha (= l1)", ylabel="coefficient",
            title="Lasso path: jaxopt_core (colour) and sklearn (dashed)")
    ax2.semilogx(alphas, np.asarray(path.nonzeros), "o-", ms=3, label="jaxopt_core")
    ax2.semilogx(alphas, (coefs_sk != 0).sum(0), "k--", label="sklearn")
    ax2.axhline(np.sum(w_true != 0), color="C7", lw=0.8, label="true support size")
    ax2.set(xlabel="alpha", ylabel="non-zero coefficients", title="sparsity along the path")
    ax2.legend()
    plt.show()
    '''),
]


MODELS = [
    md("""
    # jaxopt_core with flax and equinox

    jaxopt_core optimizers have optax's shape, so they plug into
    `flax.nnx.Optimizer` and into equinox's filtered training loops unchanged.
    And since their hyperparameters are data, a flax model's learning rate can
    be swept with `jc.sweep`. Data: scikit-learn's bundled digits.
    """),
    code(INSTALL),
    code(imports("import equinox as eqx", "import jax", "import optax", "from flax import nnx",
                 first_party=("from jaxopt_core.app.datasets import load_dataset",)), "", '''
    ds = load_dataset("digits")
    x_train, y_train = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    x_val, y_val = jnp.asarray(ds.x_val), jnp.asarray(ds.y_val)


    def cross_entropy(logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


    def accuracy(logits, labels):
        return float(jnp.mean(jnp.argmax(logits, -1) == labels))
    '''),
    md("""
    ## 1. flax nnx

    `nnx.Optimizer(model, jc.adam(...), wrt=nnx.Param)`: the optimizer updates the
    model's `Param` variables in place. We train twice, with `jc.adam` and
    `optax.adam`, and compare.
    """),
    code('''
    class MLP(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.hidden = nnx.Linear(64, 64, rngs=rngs)
            self.out = nnx.Linear(64, 10, rngs=rngs)

        def __call__(self, x):
            return self.out(nnx.relu(self.hidden(x)))


    @nnx.jit
    def nnx_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(x), y))(model)
        optimizer.update(model, grads)
        return loss


    curves = {}
    for name, tx in {"jc.adam": jc.adam(1e-2), "optax.adam": optax.adam(1e-2)}.items():
        model = MLP(nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        curves[name] = np.array([nnx_step(model, optimizer, x_train, y_train)
                                 for _ in range(150)])
        print(f"{name}: validation accuracy {accuracy(model(x_val), y_val):.3f}")

    print("max |loss difference|:", np.abs(curves["jc.adam"] - curves["optax.adam"]).max())
    plt.figure(figsize=(5, 3.5))
    plt.semilogy(curves["jc.adam"], label="jc.adam")
    plt.semilogy(curves["optax.adam"], "--", lw=2.5, alpha=0.6, label="optax.adam")
    plt.xlabel("step")
    plt.ylabel("training loss")
    plt.title("flax nnx MLP, full batch")
    plt.legend()
    plt.show()
    '''),
    md("""
    ## 2. equinox

    Optimize the array leaves of the model (`eqx.filter(model, eqx.is_array)`),
    apply the updates with `eqx.apply_updates`. AdamW's decay goes on the weight
    matrices only: the mask is a function of the params.
    """),
    code('''
    def weights_only(params):
        return jax.tree.map(lambda p: p.ndim >= 2, params)


    opt = jc.adamw(1e-2, weight_decay=1e-3, mask=weights_only)
    model = eqx.nn.MLP(64, 10, width_size=64, depth=1, activation=jax.nn.relu,
                       key=jax.random.key(0))
    state = opt.init(eqx.filter(model, eqx.is_array))


    @eqx.filter_jit
    def eqx_step(model, state, x, y):
        def loss_fn(model):
            return cross_entropy(jax.vmap(model)(x), y)

        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        updates, state = opt.update(grads, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state, loss


    eqx_losses = []
    for _ in range(150):
        model, state, loss = eqx_step(model, state, x_train, y_train)
        eqx_losses.append(float(loss))
    print(f"validation accuracy {accuracy(jax.vmap(model)(x_val), y_val):.3f}")

    plt.figure(figsize=(5, 3.5))
    plt.semilogy(eqx_losses)
    plt.xlabel("step")
    plt.ylabel("training loss")
    plt.title("equinox MLP with jc.adamw")
    plt.show()
    '''),
    md("""
    ## 3. Sweeping a flax model's learning rate

    `nnx.split` gives the model's parameters as a pytree; a loss function that
    `nnx.merge`s them back is all `jc.sweep` needs. 32 learning rates train
    at once, and each member's parameters can be merged back into a model.
    """),
    code('''
    graphdef, params = nnx.split(MLP(nnx.Rngs(0)), nnx.Param)


    def loss_fn(params, batch):
        x, y = batch
        return cross_entropy(nnx.merge(graphdef, params)(x), y)


    def val_accuracy(params):
        logits = nnx.merge(graphdef, params)(x_val)
        return jnp.mean(jnp.argmax(logits, -1) == y_val)


    lrs = np.logspace(-4, 0.5, 32)
    res = jc.sweep(loss_fn, params, jc.adam, (x_train, y_train),
                   grid={"learning_rate": lrs}, steps=150, batch_size=128)
    acc = np.where(res.diverged, np.nan, jax.vmap(val_accuracy)(res.params))
    best = int(np.nanargmax(acc))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    ax1.semilogx(lrs, acc, "o-", ms=3)
    ax1.semilogx(lrs[best], acc[best], "*", ms=16, color="gold", mec="black")
    ax1.set(xlabel="learning rate", ylabel="validation accuracy",
            title=f"MLP, Adam, 150 steps: best lr {lrs[best]:.3g}")
    for i in (0, 8, best, 22):
        ax2.semilogy(res.losses[i], lw=1, label=f"lr {lrs[i]:.2g}")
    ax2.set(xlabel="step", ylabel="minibatch loss", title="some members' curves")
    ax2.legend()
    plt.show()
    '''),
    code('''
    best_model = nnx.merge(graphdef, jax.tree.map(lambda leaf: leaf[best], res.params))
    print("best member as a model again:", accuracy(best_model(x_val), y_val))
    '''),
]


SEARCH = [
    md("""
    # Adaptive search: sampling, successive halving, population-based training

    Hyperparameters are data in `jc.sweep`, so a sweep can do what tuning
    frameworks do with a cluster of processes, inside one compiled program:

    1. **sample** the members instead of crossing a grid (`jc.sample`);
    2. **successive halving**: train everyone briefly, keep the best third,
       train those longer, ... (`search=jc.successive_halving(eta=3)`);
    3. **population-based training**: every few steps the worst members copy
       the best ones and perturb their hyperparameters, inside the `lax.scan`
       (`search=jc.pbt(every)`).
    """),
    code(INSTALL),
    code(imports("import jax", first_party=("from jaxopt_core.app.datasets import load_dataset",
                                            "from jaxopt_core.app.models import make_model"))),
    md("""
    ## 1. Samples cover every axis

    With two hyperparameters a grid of 16 tries only 4 values of each; 16
    random or Sobol points try 16 of each. Sobol points are also spread
    evenly: with K a power of 2 every axis is exactly stratified.
    """),
    code('''
    axes = {"learning_rate": jc.log_uniform(1e-4, 1.0), "b1": jc.uniform(0.5, 0.99)}
    centres = (np.arange(4) + 0.5) / 4
    grid = jc.grid_product(**{n: np.asarray(a.from_unit(centres)) for n, a in axes.items()})
    random = jc.sample(jax.random.key(0), 16, **axes)
    sobol = jc.sample(jax.random.key(0), 16, method="sobol", **axes)

    fig, axs = plt.subplots(1, 3, figsize=(10, 3), sharey=True)
    for ax, (name, g) in zip(axs, [("grid", grid), ("random", random), ("sobol", sobol)]):
        ax.scatter(g["learning_rate"], g["b1"])
        ax.set(xscale="log", title=f"{name}: {len(np.unique(g['learning_rate']))} learning rates",
               xlabel="learning_rate")
    axs[0].set_ylabel("b1");
    '''),
    md("""
    ## 2. Successive halving

    Softmax regression on scikit-learn's digits, adam, 27 members sampled as
    above, 81 steps. With `eta=3` the rungs end at steps 3, 9, 27 and 81: all
    27 members train to step 3, the 9 best by validation accuracy go on to
    step 9, then 3 to step 27 and 1 to the end. Between rungs the survivors
    are gathered into a smaller member axis, so each rung costs in proportion
    to its survivors.
    """),
    code('''
    ds = load_dataset("digits")
    model = make_model("logistic", ds.task, ds.n_features, ds.n_outputs)
    params = model.init(jax.random.key(0))


    def validate(params, data):
        return {"accuracy": model.metric(params, data)}


    grid = jc.sample(jax.random.key(1), 27, **axes)
    res = jc.sweep(model.loss, params, jc.adam, ds.train, grid=grid, steps=81, batch_size=128,
                   eval_fn=validate, eval_data=ds.val, rank_mode="max",
                   search=jc.successive_halving(eta=3))
    ends, counts = np.unique(res.stopped_at, return_counts=True)
    print("stopped at", dict(zip(ends.tolist(), counts.tolist())))
    print(f"member-steps: {res.member_steps} of the full sweep's {res.full_steps} "
          f"({res.member_steps / res.full_steps:.0%})")
    best = res.best_index
    print(f"best: member {best}, lr={grid['learning_rate'][best]:.3g}, b1={grid['b1'][best]:.2f}, "
          f"validation accuracy {res.final_evals()['accuracy'][best]:.3f}")
    '''),
    md("""
    The loss curves stop where the members stopped (their losses are NaN
    after `stopped_at`); `res.params` holds every member's params at its stop.
    """),
    code('''
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    lr = np.log10(grid["learning_rate"])
    colours = plt.cm.viridis((lr - lr.min()) / np.ptp(lr))
    for i in np.argsort(res.stopped_at):
        ax1.plot(np.arange(1, 82), res.losses[i], color=colours[i], lw=2 if i == best else 0.8)
    ax1.set(yscale="log", xscale="log", xlabel="step", ylabel="training loss",
            title="loss curves (colour: log learning rate)")
    ax2.bar([str(e) for e in ends], [int(np.sum(res.stopped_at >= e)) for e in ends])
    ax2.set(xlabel="rung ends at step", ylabel="members trained to that step",
            title="survivors per rung");
    '''),
    md("""
    ## 3. Population-based training

    Minibatch SGD on a noisy linear regression: a constant learning rate
    either converges slowly or stalls at a noise floor, a falling one escapes
    it. PBT finds such a schedule: every 50 steps the worst quarter of the
    members (by the held-out error, evaluated inside the program) copy the
    params and optimizer state of a random member of the best quarter, and
    multiply its learning rate by 0.8 or 1.25. Same members, same steps, same
    compute as the constant sweep.
    """),
    code('''
    kx, kw, ke = jax.random.split(jax.random.key(3), 3)
    scales = jnp.geomspace(1.0, 1 / 30, 20)  # some directions 30x flatter than others
    w_true = jax.random.normal(kw, (20,))
    x = jax.random.normal(kx, (4096, 20)) * scales
    y = x @ w_true + 3.0 * jax.random.normal(ke, (4096,))


    def mse(w, batch):
        xb, yb = batch
        return 0.5 * jnp.mean((xb @ w - yb) ** 2)


    def excess(w, _):  # the population excess error, in closed form
        return {"excess": 0.5 * jnp.sum((scales * (w - w_true)) ** 2)}


    lrs = np.geomspace(1e-3, 1.0, 16)
    runs = {}
    for name, search in [("constant", None),
                         ("PBT", jc.pbt(50, bounds={"learning_rate": (1e-5, 1.0)}))]:
        runs[name] = jc.sweep(mse, jnp.zeros(20), jc.sgd, (x, y), grid={"learning_rate": lrs},
                              steps=2000, batch_size=16, eval_fn=excess, eval_data=None,
                              eval_every=50, search=search)
        best_error = runs[name].final_evals()["excess"][runs[name].best_index]
        print(f"{name:>8}: best held-out excess error {best_error:.4f}")
    pbt = runs["PBT"]
    print("whom each member copied at the first four rounds:")
    print(pbt.parents[:, :4])
    '''),
    code('''
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    history = pbt.hparams_history["learning_rate"]
    rank = pbt.to_dataframe()["rank"].to_numpy()
    colours = plt.cm.viridis((rank - 1) / (len(rank) - 1))
    for i in np.argsort(-rank):
        ax1.step(np.arange(history.shape[1]) * 50, history[i], where="post", color=colours[i])
    ax1.set(yscale="log", xlabel="step", ylabel="learning rate",
            title="PBT learning rates (dark: better final rank)")
    for name, r in runs.items():
        ax2.plot(r.eval_steps, r.evals["excess"][r.best_index], label=f"{name}, best member")
    ax2.set(yscale="log", xlabel="step", title="held-out excess error")
    ax2.legend();
    '''),
    md("""
    The rounds happen inside the compiled `lax.scan`: the hyperparameters are
    part of the carry and the optimizer is rebuilt from them at every step,
    so new values never recompile. `res.parents[i, r]` is the member that
    member `i` copied at round `r` (itself when it did not), and
    `res.hparams_history` the values before the first round and after each.

    From the command line: `jaxopt-core sweep --sample 32 --search halving`
    or `--search pbt --pbt-every 50`.
    """),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_learning_rate_sweep.ipynb": SWEEP,
    "03_regularization.ipynb": REGULARIZATION,
    "04_models.ipynb": MODELS,
    "05_search.ipynb": SEARCH,
}


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook of the given cells, with deterministic cell ids and Colab metadata."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    for i, (kind, source) in enumerate(cells):
        cell = (nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell)(
            source
        )
        cell.id = f"cell-{i:02d}"
        nb.cells.append(cell)
    return nb


def execute(nb: nbformat.NotebookNode) -> float:
    """Run ``nb`` top to bottom in a fresh kernel of this Python (in a temporary
    folder), keeping its outputs; return the seconds it took. Raises on the
    first failing cell, or when an output holds a local path."""
    import nbclient
    from jupyter_client.manager import KernelManager

    os.environ.pop("XLA_FLAGS", None)  # notebook 02 sets its own
    os.environ.pop("MPLBACKEND", None)  # the notebooks draw inline
    km = KernelManager(kernel_name="python3")
    if km.format_kernel_cmd()[0] != sys.executable:
        raise RuntimeError(f"the python3 kernel is {km.format_kernel_cmd()[0]}, not this "
                           f"Python ({sys.executable}): install ipykernel here")
    metadata = dict(nb.metadata)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        # Stored figures at 72 dpi (GitHub shows them narrower than that anyway):
        # half the bytes of matplotlib's default 100.
        Path(folder, "matplotlibrc").write_text("figure.dpi: 72\n")
        os.environ["MATPLOTLIBRC"] = folder
        nbclient.NotebookClient(nb, km=km, timeout=900, record_timing=False,
                                coalesce_streams=True,  # a progress bar's last state
                                resources={"metadata": {"path": folder}}).execute()
    nb.metadata = metadata  # not the kernel's details (version, paths): stable files
    for cell in nb.cells:
        _drop_library_warnings(cell)
    for i, cell in enumerate(nb.cells):
        text = json.dumps(cell.get("outputs", []))
        for local in {str(HERE.parent), tempfile.gettempdir(), os.path.expanduser("~")}:
            if local in text:
                at = text.index(local)
                raise RuntimeError(f"cell {i}: an output holds the local path {local!r}: "
                                   f"...{text[max(0, at - 200):at + 100]}...")
    return time.perf_counter() - start


# A warning raised inside an installed package (e.g. tqdm's "IProgress not
# found" where ipywidgets is missing): its line with the local path, and the
# source line after it. It says something about this machine, not the notebook.
LIBRARY_WARNING = re.compile(r"^\S*site-packages\S*:\d+: \w*Warning: .*\n(  .*\n)?", re.M)


def _drop_library_warnings(cell: nbformat.NotebookNode) -> None:
    kept = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            out.text = LIBRARY_WARNING.sub("", out.text)
            if not out.text:
                continue
        kept.append(out)
    if "outputs" in cell:
        cell.outputs = kept


def _sources(nb: nbformat.NotebookNode) -> list:
    return [(c.cell_type, c.source, c.get("id")) for c in nb.cells]


def _stale(path: Path, cells: list) -> str | None:
    """Why the stored notebook at ``path`` is out of date, or None."""
    if not path.exists():
        return "missing"
    stored = nbformat.read(path, as_version=4)
    if _sources(stored) != _sources(build(cells)):
        return "cells differ from the generator"
    if any(c.cell_type == "code" and c.get("execution_count") is None for c in stored.cells):
        return "stored without outputs"
    return None


def main(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("--")]
    chosen = {n: c for n, c in NOTEBOOKS.items() if not names or any(k in n for k in names)}
    if "--check" in argv:
        stale = {n: why for n, c in chosen.items() if (why := _stale(HERE / n, c))}
        for name, why in stale.items():
            print(f"{name}: {why} (run python notebooks/build_notebooks.py {name[:2]})")
        return 1 if stale else 0
    for name, cells in chosen.items():
        nb = build(cells)
        if "--no-execute" not in argv:
            print(f"{name}: executed in {execute(nb):.0f} s", flush=True)
        (HERE / name).write_text(nbformat.writes(nb) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
