"""The ``jaxopt-core`` command: learning-rate sweeps and single runs on built-in data.

``jaxopt-core sweep`` (also plain ``jaxopt-core`` and ``python -m jaxopt_core``)
trains one model per learning rate (crossed with any ``--l1``/``--l2`` values)
in one compiled, vmapped program, ranks the members on a held-out split and
writes its run folder (``config.json``, ``sweep.npz``, ``sweep.csv``,
``sweep.png``; see :mod:`jaxopt_core.app.report`). ``jaxopt-core fit`` trains
one configuration and writes its loss curve. ``jaxopt-core show DIR`` prints
a saved run's report again and redraws its figure. Run ``jaxopt-core sweep --help``.

Exit status: 0; 2 for bad input (one line on stderr naming the option); 3
when every member diverged; 130 when stopped by Ctrl-C (the partial result
is written; ``--resume DIR`` continues from the last checkpoint: see
:mod:`jaxopt_core.app.resuming`). ``--help`` and the argument checks need only the
base install (jax, optax, chex): the ``cli`` extra (scikit-learn, pandas,
matplotlib, rich, tqdm) is imported once a run starts.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import shutil
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from jaxopt_core.app.arguments import DEFAULT_RUNS, build_parser
from jaxopt_core.app.datasets import CLASSIFICATION


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``jaxopt-core`` and ``python -m jaxopt_core``.

    With no subcommand (no arguments, or options only) it runs ``sweep``.
    Returns the exit status: 0, or 3 when every member diverged; bad input
    exits with status 2.

    Example:
        >>> from jaxopt_core.app.cli import main
        >>> main(["sweep", "--steps", "20", "--lr", "1e-2,1e-1", "--no-progress",
        ...       "--out", "/tmp/jc_doctest_sweep"])  # doctest: +SKIP
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["sweep", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "show":
        return _show(args, args.parser)
    if args.resume is not None:
        from jaxopt_core.app.resuming import resumed_args

        args = resumed_args(args, args.parser)
        print(f"resuming {args.out} with the options of its config.json")
    try:
        run = _prepare(args, args.parser)  # the subcommand's parser, for its error()
        if args.command == "sweep":
            return _run_sweep(run)
        return _run_fit(run)
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C: no traceback
        sys.stderr.write("jaxopt-core: interrupted\n")
        return 130


def _check_extras() -> None:
    """The command needs the ``cli`` extra; say so in one line if it is missing."""
    import importlib.util

    # find_spec is None for a module that is absent (or blocked in sys.modules).
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
    options: dict  # every option as parsed, JSON data (for config.json)
    search: str = "none"  # sweep --search, --eta, --pbt-every, --sample
    eta: int = 3
    pbt_every: int | None = None
    sample: int | None = None
    eval_chunk_size: int | None = None  # sweep --eval-chunk-size
    checkpoint_every: int | None = None  # None: no checkpoints (jaxopt_core.app.resuming)

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
    from jaxopt_core.app.datasets import DATASETS, load_dataset
    from jaxopt_core.app.models import MODELS, make_model

    if args.command == "fit":
        for name in ("lr", "l1", "l2"):
            if len(getattr(args, name)) != 1:
                parser.error(f"argument --{name}: fit takes one value; use sweep for several")
    task = DATASETS[args.dataset][0]
    name = args.model
    if name == "auto":
        name = "logistic" if task == CLASSIFICATION else "linear"
    if task not in MODELS[name]:  # checked before the data (and the cli extra) is needed
        other = " or ".join(m for m, tasks in MODELS.items() if task in tasks)
        parser.error(f"argument --model: model {name!r} cannot do {task}; use {other} "
                     f"({args.dataset} is a {task} dataset)")
    devices = _devices(args, parser)
    searching = _searching(args, parser)
    _check_extras()
    dataset = load_dataset(args.dataset)
    model = make_model(name, dataset.task, dataset.n_features, dataset.n_outputs)
    n = dataset.x_train.shape[0]
    if args.batch_size is not None and args.batch_size > n:
        parser.error(
            f"argument --batch-size: {args.batch_size} exceeds the {n} training examples "
            f"of {args.dataset}; use at most {n} or 'full'"
        )
    out = _output_dir(args.out, args.command, parser)
    from jaxopt_core.app.resuming import checkpoint_every

    every = checkpoint_every(args.checkpoint_every, args.steps, getattr(args, "search", "none"))
    return _Run(
        command=args.command, dataset=dataset, model=model, optimizer=args.optimizer,
        learning_rates=args.lr, l1=args.l1, l2=args.l2,
        steps=args.steps, batch_size=args.batch_size, seed=args.seed, devices=devices,
        out=out, progress=not args.no_progress, top=getattr(args, "top", 0),
        options=_options(args), **searching, checkpoint_every=every,
    )


def _searching(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """``--search``, ``--eta``, ``--pbt-every``, ``--sample`` and ``--eval-chunk-size``
    of a sweep, checked."""
    from jaxopt_core.app.search_options import sample_error, search_error

    if args.command != "sweep":
        return {}
    k = args.sample or len(args.lr) * len(args.l1) * len(args.l2)
    error = sample_error(args.lr, args.sample) or search_error(
        args.search, args.steps, args.eta, args.pbt_every, k)
    if error:
        parser.error(error)
    # A run started before the option existed has no eval_chunk_size in its config.json.
    chunk = getattr(args, "eval_chunk_size", None)
    if chunk is not None:
        import jax

        n_devices = args.devices or len(jax.devices())
        if n_devices > 1:
            parser.error(f"argument --eval-chunk-size: {chunk} needs the members on one "
                         f"device; they would be sharded over {n_devices} (add --devices 1)")
    return {"search": args.search, "eta": args.eta, "pbt_every": args.pbt_every,
            "sample": args.sample, "eval_chunk_size": chunk}


def _devices(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list | None:
    """The devices of ``--devices`` (None: all)."""
    if getattr(args, "devices", None) is None:
        return None
    import jax

    available = jax.devices()
    if args.devices > len(available):
        parser.error(
            f"argument --devices: {args.devices} requested but only {len(available)} "
            f"{available[0].platform} device(s) available"
        )
    return available[: args.devices]


def _options(args: argparse.Namespace) -> dict:
    """Every option as parsed, as JSON data (paths as str)."""
    def plain(value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value

    return {k: plain(v) for k, v in sorted(vars(args).items()) if k != "parser"}


def _config(run: _Run, devices: list) -> dict:
    """The ``config.json`` of a run (also stored inside its result file)."""
    import jaxopt_core
    from jaxopt_core.training.serialization import versions

    return {"command": run.command, "title": run.title(), "metric": run.model.metric_name,
            "dataset": run.dataset.name, "model": run.model.name, "seed": run.seed,
            "device_count": len(devices), "platform": devices[0].platform,
            "options": run.options, "versions": {**versions(), "jaxopt_core":
                                                 jaxopt_core.__version__}}


def _show(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``jaxopt-core show DIR``: the saved run's report again, and its figure redrawn."""
    _check_extras()
    from rich.console import Console

    from jaxopt_core.app.report import draw_run, read_run, show_run

    try:
        result, config = read_run(args.folder)
    except ValueError as err:  # not a run folder, or a damaged result file
        parser.error(f"argument folder: {err}")
    console = Console(soft_wrap=True)
    console.print(f"[bold]{config['command']}[/bold] {config['title']}  ({args.folder})")
    status = show_run(result, config, console, top=args.top)
    from jaxopt_core.app.resuming import partial_note

    note = partial_note(result, config, args.folder)
    if note:
        console.print(note)
    png = args.png or Path(args.folder) / f"{config['command']}.png"
    try:
        draw_run(result, config, png)
    except OSError as err:
        parser.error(f"argument --png: cannot write {str(png)!r}: {err.strerror or err}")
    console.print(f"redrew {png}")
    return status


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


def _optimizer_fn(name: str):
    """The optimizer function of ``--optimizer``. proximal_gradient takes
    ``l1``/``l2`` itself, so ``sweep`` routes those grid entries to its exact
    proximal steps (on the weights, not the biases) instead of the loss."""
    import jaxopt_core as jc

    if name == "momentum":
        return functools.partial(jc.sgd, momentum=0.9)
    if name == "proximal_gradient":
        return functools.partial(jc.proximal_gradient, mask=jc.weights_only_mask)
    return getattr(jc, name)


def _given_strengths(run: _Run) -> list[str]:
    """The strengths given on the command line (``l1``, ``l2``): grid names."""
    return [n for n in ("l1", "l2") if getattr(run, n) != [0.0]]


def _metric_key(model: Any) -> str:
    return f"val_{model.metric_name}"


def _eval_fn(model: Any):
    """The validation of the command, run by ``fit``/``sweep`` inside the
    compiled program (a sweep: ten times along the run; a fit: after the last
    step): ``eval_data`` is ``(train, val)``."""
    key = _metric_key(model)

    def evaluate(params, data):
        train, val = data
        return {key: model.metric(params, val), "val_loss": model.loss(params, val),
                "train_loss": model.loss(params, train)}

    return evaluate


def _run_sweep(run: _Run) -> int:
    import jax
    from rich.console import Console

    from jaxopt_core.app.report import show_run, write_run
    from jaxopt_core.app.search_options import eval_every, search_of, sweep_grid
    from jaxopt_core.core.masks import weights_only_mask
    from jaxopt_core.training.sweep import sweep

    console = Console(soft_wrap=True)  # long paths stay whole, for copying
    grid = sweep_grid(run.learning_rates, {n: getattr(run, n) for n in _given_strengths(run)},
                      run.sample, run.seed)
    k = len(grid["learning_rate"])
    devices = run.devices or jax.devices()
    console.print(f"[bold]sweep[/bold] {run.title()}")
    console.print(f"{k} members on {len(devices)} {devices[0].platform} device(s)"
                  + ("" if run.search == "none" else f", search: {run.search}"))
    init_key, data_key = jax.random.split(jax.random.key(run.seed))
    config = _config(run, devices)
    start = time.perf_counter()
    with _interruptible(run, config, console) as stopped:
        result = sweep(
        run.model.loss, run.model.init(init_key), _optimizer_fn(run.optimizer),
            run.dataset.train, grid=grid, steps=run.steps, batch_size=run.batch_size,
            key=data_key, devices=run.devices, progress=run.progress,
            penalty_mask=weights_only_mask, eval_fn=_eval_fn(run.model),
            eval_data=(run.dataset.train, run.dataset.val), rank_by=_metric_key(run.model),
            rank_mode="max", eval_every=eval_every(run.search, run.steps, run.pbt_every),
            search=search_of(run.search, run.steps, run.eta, run.pbt_every,
                             run.learning_rates), eval_chunk_size=run.eval_chunk_size,
            **_checkpoints(run),
        )
    if stopped:
        return stopped[0]
    seconds = time.perf_counter() - start
    paths = write_run(run.out, result, config)
    _drop_checkpoints(run)  # the run is complete and written: nothing to resume
    status = show_run(result, config, console, seconds=seconds)
    if run.search != "none":
        console.print(f"{run.search}: {result.member_steps} member-steps, "
                      f"{result.member_steps / result.full_steps:.0%} of the full grid's")
    console.print("wrote " + "\n      ".join(str(p) for p in paths))
    return status


def _run_fit(run: _Run) -> int:
    import jax
    from rich.console import Console

    from jaxopt_core.app.report import show_run, write_run
    from jaxopt_core.core.masks import weights_only_mask
    from jaxopt_core.regularization.penalties import regularized
    from jaxopt_core.training.fit import fit

    console = Console(soft_wrap=True)  # long paths stay whole, for copying
    lr, l1, l2 = run.learning_rates[0], run.l1[0], run.l2[0]
    loss_fn = run.model.loss
    if run.optimizer == "proximal_gradient":
        optimizer = _optimizer_fn(run.optimizer)(lr, l1=l1, l2=l2)
    else:
        optimizer = _optimizer_fn(run.optimizer)(learning_rate=lr)
        if l1 or l2:
            loss_fn = regularized(loss_fn, l1=l1, l2=l2, mask=weights_only_mask)
    console.print(f"[bold]fit[/bold] {run.title()}")
    init_key, data_key = jax.random.split(jax.random.key(run.seed))
    config = _config(run, jax.devices()[:1])
    start = time.perf_counter()
    with _interruptible(run, config, console) as stopped:
        result = fit(loss_fn, run.model.init(init_key), optimizer, run.dataset.train,
                     steps=run.steps, batch_size=run.batch_size, key=data_key,
                     progress=run.progress, eval_fn=_eval_fn(run.model),
                     eval_data=(run.dataset.train, run.dataset.val), **_checkpoints(run))
    if stopped:
        return stopped[0]
    seconds = time.perf_counter() - start
    paths = write_run(run.out, result, config)
    _drop_checkpoints(run)  # the run is complete and written: nothing to resume
    status = show_run(result, config, console, seconds=seconds)
    console.print("wrote " + "\n      ".join(str(p) for p in paths))
    return status


def _checkpoints(run: _Run) -> dict:
    """``checkpoint_dir``/``checkpoint_every`` of the run (none without checkpoints)."""
    from jaxopt_core.app.resuming import CHECKPOINTS

    if run.checkpoint_every is None:
        return {}
    return {"checkpoint_dir": run.out / CHECKPOINTS, "checkpoint_every": run.checkpoint_every}


def _drop_checkpoints(run: _Run) -> None:
    from jaxopt_core.app.resuming import CHECKPOINTS

    shutil.rmtree(run.out / CHECKPOINTS, ignore_errors=True)


@contextlib.contextmanager
def _interruptible(run: _Run, config: dict, console: Any):
    """Around a checkpointed run: config.json first (``--resume`` reads it);
    on Ctrl-C (:class:`~jaxopt_core.Interrupted`) the partial result is
    written and the exit status (130) is appended to the yielded list."""
    from jaxopt_core.app.report import write_run
    from jaxopt_core.app.resuming import say_interrupted, steps_trained_column, write_config
    from jaxopt_core.training.interruption import Interrupted

    stopped: list[int] = []
    if run.checkpoint_every is not None:
        write_config(run.out, config)
    try:
        yield stopped
    except Interrupted as err:
        columns = steps_trained_column(err) if run.command == "sweep" else None
        paths = write_run(run.out, err.partial, config, columns=columns)
        stopped.append(say_interrupted(console, run.command, run.out, run.steps,
                                       err.steps_trained, paths))
