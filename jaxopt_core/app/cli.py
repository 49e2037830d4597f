"""The ``jaxopt-core`` command: learning-rate sweeps and single runs on built-in data.

``jaxopt-core sweep`` (also plain ``jaxopt-core`` and ``python -m jaxopt_core``)
trains one model per learning rate (crossed with any ``--l1``/``--l2`` values)
in one compiled, vmapped program, ranks the members on a held-out split and
writes ``sweep.csv`` and ``sweep.png``. ``jaxopt-core fit`` trains one
configuration and writes its loss curve. Run ``jaxopt-core sweep --help``.

Bad input exits with status 2 and one line on stderr naming the option.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from jaxopt_core.app.datasets import CLASSIFICATION, DATASETS
from jaxopt_core.app.models import MODELS

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "rmsprop", "adagrad", "proximal_gradient")
DEFAULT_RUNS = Path("jaxopt_core_runs")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` except where the help text says it in words
    (defaults of None) and for on/off flags."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``prog: error: message``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _values(text: str, *, positive: bool) -> list[float]:
    """Parse ``MIN:MAX:N`` (N log-spaced values), ``a,b,c`` or one number."""
    import numpy as np

    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
            if not (0 < lo <= hi and n >= 1 and math.isfinite(hi)):
                raise argparse.ArgumentTypeError(
                    f"range {text!r} needs 0 < MIN <= MAX and N >= 1 (MIN:MAX:N, log-spaced)"
                )
            values = np.logspace(math.log10(lo), math.log10(hi), n).tolist()
        else:
            values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number, a comma list or a MIN:MAX:N range"
        ) from None
    for v in values:
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            kind = "positive" if positive else "non-negative"
            raise argparse.ArgumentTypeError(f"{v!r} in {text!r} is not a finite {kind} number")
    return values


def _learning_rates(text: str) -> list[float]:
    return _values(text, positive=True)


def _strengths(text: str) -> list[float]:
    return _values(text, positive=False)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def _batch_size(text: str) -> int | None:
    return None if text.lower() in ("full", "none") else _positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``jaxopt-core`` (subcommands ``sweep`` and ``fit``).

    Example:
        >>> from jaxopt_core.app.cli import build_parser
        >>> args = build_parser().parse_args(["sweep", "--lr", "1e-3:1e-1:3"])
        >>> [round(v, 4) for v in args.lr], args.l2, args.steps
        ([0.001, 0.01, 0.1], [0.0], 300)
    """
    fmt = _Formatter
    parser = _Parser(
        prog="jaxopt-core",
        description="Sweep learning rates (and L1/L2 strengths) of jaxopt_core optimizers "
        "on built-in datasets, in one compiled program. Without a subcommand: sweep.",
        formatter_class=fmt,
    )
    from jaxopt_core import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{sweep,fit}")
    sweep = sub.add_parser(
        "sweep", formatter_class=fmt, help="train one member per hyperparameter value",
        description="Train one model per learning rate (crossed with the --l1/--l2 values) "
        "in one vmapped program; rank the members on the validation split; write "
        "sweep.csv (one row per member) and sweep.png (loss curves, final losses).",
    )
    fit = sub.add_parser(
        "fit", formatter_class=fmt, help="train one configuration and report its curve",
        description="Train one model; print its loss every so often and its final "
        "train/validation metrics; write fit.csv (the loss curve) and fit.png.",
    )
    for p, lr_default, steps_default in ((sweep, "1e-4:1:32", 300), (fit, "0.01", 500)):
        p.add_argument("--dataset", choices=list(DATASETS), default="digits",
                       help="; ".join(f"{k}: {v[1]}" for k, v in DATASETS.items()))
        p.add_argument("--model", choices=["auto", *MODELS], default="auto",
                       help="auto: logistic for classification, linear for regression; "
                       "mlp: one hidden tanh layer of 32 units")
        p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                       help="momentum is sgd with momentum=0.9; proximal_gradient applies "
                       "--l1/--l2 as exact proximal steps instead of loss penalties")
        # String defaults go through `type` like command-line values, and
        # --help shows them as typed.
        p.add_argument("--lr", type=_learning_rates, default=lr_default, metavar="LR",
                       help="learning rate(s): MIN:MAX:N (N log-spaced values), a comma "
                       "list or one value")
        for name, what in (("l1", "L1 strength l1*sum|w|"), ("l2", "L2 strength l2*sum(w^2)/2")):
            p.add_argument(f"--{name}", type=_strengths, default="0", metavar=name.upper(),
                           help=f"{what} on the weights (not biases): a value, a comma "
                           "list or MIN:MAX:N, crossed with the learning rates")
        p.add_argument("--steps", type=_positive_int, default=steps_default,
                       help="optimizer steps per run")
        p.add_argument("--batch-size", type=_batch_size, default=128, metavar="N",
                       help="minibatch size, or 'full' for full-batch gradient descent")
        p.add_argument("--seed", type=int, default=0,
                       help="seed of the initialization and minibatch order (the "
                       "train/validation split is fixed)")
        p.add_argument("--out", type=Path, default=None,
                       help=f"output folder (default: a new {DEFAULT_RUNS}/{p.prog.split()[-1]}"
                       "-YYYYmmdd-HHMMSS)")
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        p.set_defaults(parser=p)
    sweep.add_argument("--devices", type=_positive_int, default=None,
                       help="number of devices to shard the members over (default: all)")
    sweep.add_argument("--top", type=int, default=10,
                       help="members shown in the table (0: all; the CSV has every member)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``jaxopt-core`` and ``python -m jaxopt_core``.

    With no subcommand (no arguments, or options only) it runs ``sweep``.
    Returns the exit status (0); bad input exits with status 2.

    Example:
        >>> from jaxopt_core.app.cli import main
        >>> main(["sweep", "--steps", "20", "--lr", "1e-2,1e-1", "--no-progress",
        ...       "--out", "/tmp/jc_doctest_sweep"])  # doctest: +SKIP
        0
    """
    _check_extras()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["sweep", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    run = _prepare(args, args.parser)  # the subcommand's parser, for its error()
    if args.command == "sweep":
        _run_sweep(run)
    else:
        _run_fit(run)
    return 0


def _check_extras() -> None:
    """The command needs the ``cli`` extra; say so in one line if it is missing."""
    import importlib.util

    missing = [m for m in ("sklearn", "pandas", "matplotlib", "rich", "tqdm")
               if importlib.util.find_spec(m) is None]
    if missing:
        sys.stderr.write(
            f"jaxopt-core: error: the command needs {', '.join(missing)}: "
            "pip install 'jaxopt-core[cli]'\n"
        )
        raise SystemExit(2)


class _Run(NamedTuple):
    """A checked command line, with its data loaded."""

    command: str
    dataset: Any
    model: Any
    optimizer: str
    learning_rates: list[float]
    l1: list[float]
    l2: list[float]
    steps: int
    batch_size: int | None
    seed: int
    devices: list | None
    out: Path
    progress: bool
    top: int

    def title(self) -> str:
        parts = [self.dataset.name, self.model.name, self.optimizer]
        if self.command == "fit":
            parts += [f"{n} {getattr(self, a)[0]:g}" for n, a in
                      (("lr", "learning_rates"), ("l1", "l1"), ("l2", "l2"))
                      if n == "lr" or getattr(self, a)[0]]
        batch = "full batch" if self.batch_size is None else f"batch {self.batch_size}"
        return " · ".join([*parts, f"{self.steps} steps", batch])


def _prepare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> _Run:
    """Check what argparse cannot (model against dataset, batch size against
    the data, devices, --out) and load the data; every problem is a one-line
    ``parser.error``."""
    from jaxopt_core.app.datasets import load_dataset
    from jaxopt_core.app.models import make_model

    if args.command == "fit":
        for name in ("lr", "l1", "l2"):
            if len(getattr(args, name)) != 1:
                parser.error(f"argument --{name}: fit takes one value; use sweep for several")
    dataset = load_dataset(args.dataset)
    name = args.model
    if name == "auto":
        name = "logistic" if dataset.task == CLASSIFICATION else "linear"
    try:
        model = make_model(name, dataset.task, dataset.n_features, dataset.n_outputs)
    except ValueError as err:  # a model that cannot do this dataset's task
        parser.error(f"argument --model: {err} ({args.dataset} is a {dataset.task} dataset)")
    n = dataset.x_train.shape[0]
    if args.batch_size is not None and args.batch_size > n:
        parser.error(
            f"argument --batch-size: {args.batch_size} exceeds the {n} training examples "
            f"of {args.dataset}; use at most {n} or 'full'"
        )
    devices = None
    if getattr(args, "devices", None) is not None:
        import jax

        available = jax.devices()
        if args.devices > len(available):
            parser.error(
                f"argument --devices: {args.devices} requested but only {len(available)} "
                f"{available[0].platform} device(s) available"
            )
        devices = available[: args.devices]
    out = _output_dir(args.out, args.command, parser)
    return _Run(
        command=args.command, dataset=dataset, model=model, optimizer=args.optimizer,
        learning_rates=args.lr, l1=args.l1, l2=args.l2,
        steps=args.steps, batch_size=args.batch_size, seed=args.seed, devices=devices,
        out=out, progress=not args.no_progress, top=getattr(args, "top", 0),
    )


def _output_dir(out: Path | None, command: str, parser: argparse.ArgumentParser) -> Path:
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = DEFAULT_RUNS / f"{command}-{stamp}"
        for i in range(1, 100):  # two runs in the same second get separate folders
            if not out.exists():
                break
            out = DEFAULT_RUNS / f"{command}-{stamp}-{i}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".jaxopt_core_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        parser.error(f"argument --out: cannot write to {str(out)!r}: {err.strerror or err}")
    return out


def _proximal(learning_rate, prox_l1=0.0, prox_l2=0.0):
    """proximal_gradient with the strengths under names that ``sweep`` passes
    to the optimizer (its ``l1``/``l2`` grid names are loss penalties)."""
    from jaxopt_core.core.masks import weights_only_mask
    from jaxopt_core.regularization.proximal import proximal_gradient

    return proximal_gradient(learning_rate, l1=prox_l1, l2=prox_l2, mask=weights_only_mask)


def _optimizer_fn(name: str):
    import jaxopt_core as jc

    if name == "momentum":
        return functools.partial(jc.sgd, momentum=0.9)
    if name == "proximal_gradient":
        return _proximal
    return getattr(jc, name)


def _strength_names(run: _Run) -> dict[str, str]:
    """Grid name of each strength given on the command line (CSV name -> grid name)."""
    prefix = "prox_" if run.optimizer == "proximal_gradient" else ""
    return {n: prefix + n for n in ("l1", "l2") if getattr(run, n) != [0.0]}


def _evaluate(model, stacked_params, train, val):
    """Train loss, validation loss and validation metric of every member:
    one vmap over the stacked params (which stay sharded over the devices)."""
    import jax

    def one(p):
        return model.loss(p, train), model.loss(p, val), model.metric(p, val)

    return jax.jit(jax.vmap(one))(stacked_params)


def _run_sweep(run: _Run) -> None:
    import jax
    import numpy as np
    from rich.console import Console

    from jaxopt_core.app.report import METRIC_LABELS, plot_sweep, print_sweep_table, rank_members
    from jaxopt_core.core.masks import weights_only_mask
    from jaxopt_core.training.grid import grid_product
    from jaxopt_core.training.sweep import sweep

    console = Console(soft_wrap=True)  # long paths stay whole, for copying
    strengths = _strength_names(run)
    grid = grid_product(learning_rate=run.learning_rates,
                        **{g: getattr(run, n) for n, g in strengths.items()})
    k = len(grid["learning_rate"])
    devices = run.devices or jax.devices()
    console.print(f"[bold]sweep[/bold] {run.title()}")
    console.print(f"{k} members on {len(devices)} {devices[0].platform} device(s)")
    init_key, data_key = jax.random.split(jax.random.key(run.seed))
    start = time.perf_counter()
    result = sweep(
        run.model.loss, run.model.init(init_key), _optimizer_fn(run.optimizer),
        run.dataset.train, grid=grid, steps=run.steps, batch_size=run.batch_size,
        key=data_key, devices=run.devices, progress=run.progress,
        penalty_mask=weights_only_mask,
    )
    train_loss, val_loss, val_metric = _evaluate(
        run.model, result.params, run.dataset.train, run.dataset.val)
    jax.block_until_ready(val_metric)
    seconds = time.perf_counter() - start

    frame = result.to_dataframe().rename(columns={g: n for n, g in strengths.items()})
    bad = frame["diverged"].to_numpy(bool)
    metric = run.model.metric_name
    for name, values in (("train_loss", train_loss), ("val_loss", val_loss),
                         (f"val_{metric}", val_metric)):
        frame[name] = np.where(bad, np.nan, np.asarray(values, dtype=float))
    rank_members(frame, metric)
    names = ["learning_rate", *strengths]
    csv, png = run.out / "sweep.csv", run.out / "sweep.png"
    frame.to_csv(csv, float_format="%.6g")
    plot_sweep(np.asarray(result.losses), frame, names, metric, png, title=run.title())

    print_sweep_table(frame, names, metric, top=run.top, console=console,
                      title=f"members ranked by {METRIC_LABELS[metric]}")
    best = frame.sort_values("rank").iloc[0]
    if bad.all():
        console.print("[red]every member diverged[/red]: try smaller learning rates")
    else:
        setting = ", ".join(f"{n}={best[n]:.4g}" for n in names)
        console.print(f"best: {setting} -> {METRIC_LABELS[metric]} "
                      f"{best[f'val_{metric}']:.4f} (member {best.name})")
    console.print(f"{k} members, {int(bad.sum())} diverged, {seconds:.1f} s "
                  "(compile + train + evaluate)")
    console.print(f"wrote {csv}\n      {png}")


def _run_fit(run: _Run) -> None:
    import jax
    import numpy as np
    from rich.console import Console

    from jaxopt_core.app.report import METRIC_LABELS, plot_fit, print_fit_log
    from jaxopt_core.core.masks import weights_only_mask
    from jaxopt_core.regularization.penalties import regularized
    from jaxopt_core.training.fit import fit

    console = Console(soft_wrap=True)  # long paths stay whole, for copying
    lr, l1, l2 = run.learning_rates[0], run.l1[0], run.l2[0]
    loss_fn = run.model.loss
    if run.optimizer == "proximal_gradient":
        optimizer = _proximal(lr, prox_l1=l1, prox_l2=l2)
    else:
        optimizer = _optimizer_fn(run.optimizer)(learning_rate=lr)
        if l1 or l2:
            loss_fn = regularized(loss_fn, l1=l1, l2=l2, mask=weights_only_mask)
    console.print(f"[bold]fit[/bold] {run.title()}")
    init_key, data_key = jax.random.split(jax.random.key(run.seed))
    start = time.perf_counter()
    result = fit(loss_fn, run.model.init(init_key), optimizer, run.dataset.train,
                 steps=run.steps, batch_size=run.batch_size, key=data_key,
                 progress=run.progress)
    losses = np.asarray(result.losses, dtype=float)
    seconds = time.perf_counter() - start
    print_fit_log(losses, console)
    metric = run.model.metric_name
    train_loss = float(run.model.loss(result.params, run.dataset.train))
    val_loss = float(run.model.loss(result.params, run.dataset.val))
    val_metric = float(run.model.metric(result.params, run.dataset.val))
    if not np.all(np.isfinite(losses)):
        first = int(np.argmax(~np.isfinite(losses)))
        console.print(f"[red]diverged[/red] at step {first}: try a smaller --lr")
    console.print(f"final: train loss {train_loss:.4g}, val loss {val_loss:.4g}, "
                  f"{METRIC_LABELS[metric]} {val_metric:.4f} ({seconds:.1f} s)")
    if l1:  # the point of an L1 penalty: how many weights it removed
        weights = [np.asarray(w) for w, m in zip(
            jax.tree.leaves(result.params), jax.tree.leaves(weights_only_mask(result.params)),
            strict=True) if m]
        zeros = sum(int(np.sum(w == 0)) for w in weights)
        console.print(f"weights exactly 0: {zeros} of {sum(w.size for w in weights)}")
    csv, png = run.out / "fit.csv", run.out / "fit.png"
    np.savetxt(csv, np.column_stack([np.arange(len(losses)), losses]), delimiter=",",
               header="step,loss", comments="", fmt=["%d", "%.8g"])
    plot_fit(losses, png, title=run.title())
    console.print(f"wrote {csv}\n      {png}")
