"""The command line of ``jaxopt-core``: its options, their parsing and checks.

:func:`build_parser` gives the ``argparse`` parser of the subcommands
(``sweep``, ``fit`` and ``show``); the value types parse ranges such as ``1e-4:1:32``
(log-spaced) and comma lists, and reject bad values with a one-line error
naming the option. What argparse cannot check (the model against the
dataset, the batch size against the data) is checked in
:mod:`jaxopt_core.app.cli`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from jaxopt_core.app.datasets import DATASETS
from jaxopt_core.app.models import MODELS
from jaxopt_core.app.search_options import SEARCHES

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


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; got {value}")
    return value


def _eta(text: str) -> int:
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2; got {value}")
    return value


def _batch_size(text: str) -> int | None:
    return None if text.lower() in ("full", "none") else _positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``jaxopt-core`` (subcommands ``sweep``, ``fit``, ``show``).

    Example:
        >>> from jaxopt_core.app.arguments import build_parser
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
    sub = parser.add_subparsers(dest="command", metavar="{sweep,fit,show}")
    sweep = sub.add_parser(
        "sweep", formatter_class=fmt, help="train one member per hyperparameter value",
        description="Train one model per learning rate (crossed with the --l1/--l2 values) "
        "in one vmapped program; rank the members on the validation split; write the run "
        "folder: config.json (every option, seed, devices, versions), sweep.npz (the "
        "result), sweep.csv (one row per member) and sweep.png (loss curves, validation "
        "accuracy or R² against learning rate). Exit status 3 when every member diverged.",
    )
    fit = sub.add_parser(
        "fit", formatter_class=fmt, help="train one configuration and report its curve",
        description="Train one model; print its loss every so often and its final "
        "train/validation metrics; write config.json, fit.npz (the result), fit.csv "
        "(the loss curve) and fit.png. Exit status 3 when it diverged.",
    )
    for p, lr_default, steps_default in ((sweep, "1e-4:1:32", 300), (fit, "0.01", 500)):
        _add_training_options(p, lr_default, steps_default)
    _add_sweep_options(sweep)
    show = sub.add_parser(
        "show", formatter_class=fmt, help="report a saved run again and redraw its figure",
        description="Print the table (or loss log) of a run folder written by sweep or fit "
        "and redraw its figure from the saved result, without training. Exit status 3 when "
        "every member diverged.",
    )
    _add_show_options(show)
    return parser


def _add_training_options(p: argparse.ArgumentParser, lr_default: str,
                          steps_default: int) -> None:
    """The options ``sweep`` and ``fit`` share: data, model, optimizer, run, checkpoints."""
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
    p.add_argument("--checkpoint-every", type=_non_negative_int, default=None, metavar="N",
                   help="save a checkpoint into OUT/checkpoints every N steps, so Ctrl-C "
                   "or a crash loses at most N steps (default: a quarter of --steps; 0: "
                   "none; with --search halving, at the rung ends that pass a multiple of N)")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the interrupted run in DIR from its last checkpoint, "
                   "with the options in DIR/config.json (other options are ignored but "
                   "--no-progress)")
    p.set_defaults(parser=p)


def _add_sweep_options(sweep: argparse.ArgumentParser) -> None:
    """The options only ``sweep`` has: devices, table size, sampling, search and
    evaluation blocks."""
    sweep.add_argument("--devices", type=_positive_int, default=None,
                       help="number of devices to shard the members over (default: all)")
    sweep.add_argument("--top", type=_non_negative_int, default=10,
                       help="members shown in the table (0: all; the CSV has every member)")
    sweep.add_argument("--sample", type=_positive_int, default=None, metavar="N",
                       help="draw N members at random instead of crossing the values: the "
                       "learning rate log-uniform over the --lr range, --l1/--l2 uniform over "
                       "theirs (default: the grid)")
    sweep.add_argument("--search", choices=SEARCHES, default="none",
                       help="none: every member trains all steps; halving: successive halving "
                       "(at each rung the best 1/eta go on); pbt: population-based training "
                       "(every --pbt-every steps the worst quarter copy the best quarter and "
                       "perturb their learning rates)")
    sweep.add_argument("--eta", type=_eta, default=3,
                       help="successive halving's reduction factor, an int >= 2")
    sweep.add_argument("--pbt-every", type=_positive_int, default=None, metavar="N",
                       help="steps between PBT rounds (default: a tenth of --steps)")
    sweep.add_argument("--eval-chunk-size", type=_positive_int, default=None, metavar="N",
                       help="validate at most N members at a time: far less memory for "
                       "thousands of members, and often faster; needs the members on one "
                       "device (--devices 1 where there are several). Training is the same "
                       "bit for bit; validation metrics may differ in the last bit "
                       "(default: all members at once)")


def _add_show_options(show: argparse.ArgumentParser) -> None:
    """The arguments of ``show``: the run folder, table size, figure path."""
    show.add_argument("folder", type=Path, help="the run folder (it holds sweep.npz or fit.npz)")
    show.add_argument("--top", type=_non_negative_int, default=None,
                      help="members shown in the table (default: as the run; 0: all)")
    show.add_argument("--png", type=Path, default=None,
                      help="where to write the figure (default: the PNG in the run folder)")
    show.set_defaults(parser=show)
