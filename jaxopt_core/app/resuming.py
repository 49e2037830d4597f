"""What keeps a ``jaxopt-core`` run resumable: checkpoints, ``--resume DIR``, Ctrl-C.

A ``sweep`` or ``fit`` run checkpoints into ``<run folder>/checkpoints``
every ``--checkpoint-every`` steps (default: a quarter of ``--steps``; 0: no
checkpoints; successive halving saves at rung ends) and writes its
``config.json`` before training starts, so a killed run can be resumed:
``jaxopt-core sweep --resume DIR`` re-reads every option from
``DIR/config.json`` and makes the same call with the same checkpoint folder,
which continues from the last complete checkpoint (the library guarantees
the result of an uninterrupted run). A run that finishes deletes its
checkpoints once its results are written.

Ctrl-C: the running segment finishes and is checkpointed; the command writes
the partial result into the run folder (the CSV gains a ``steps_trained``
column), says where it is and how to resume, and exits with status 130,
without a traceback. A second Ctrl-C exits at once (status 130); the last
complete checkpoint still resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from jaxopt_core.app.report import CONFIG_FILE

CHECKPOINTS = "checkpoints"
INTERRUPTED = 130  # the shell's status for a process ended by SIGINT


def resumed_args(args: argparse.Namespace, parser: argparse.ArgumentParser
                 ) -> argparse.Namespace:
    """``args`` as the run in ``args.resume`` was started (its config.json
    options), keeping this command line's ``--no-progress``."""
    folder = Path(args.resume)
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        options = dict(config["options"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        parser.error(f"argument --resume: {str(path)!r} is not the config.json of a "
                     f"jaxopt-core run ({type(err).__name__}: {err})")
    if options.get("command") != args.command:
        parser.error(f"argument --resume: {str(folder)!r} is a {options.get('command')!r} "
                     f"run; resume it with jaxopt-core {options.get('command')} --resume")
    if not (folder / CHECKPOINTS).is_dir():
        parser.error(f"argument --resume: {str(folder)!r} has no {CHECKPOINTS} folder "
                     f"({_why_no_checkpoints(folder, options)})")
    options.update(out=folder, resume=None, no_progress=args.no_progress, parser=args.parser)
    return argparse.Namespace(**options)


def _why_no_checkpoints(folder: Path, options: dict) -> str:
    """Why a run folder has no checkpoints: made without, finished (its
    checkpoints deleted), or stopped before the first one."""
    if options.get("checkpoint_every") == 0:
        return "the run was made with --checkpoint-every 0"
    if (folder / f"{options.get('command')}.npz").exists():
        return (f"the run finished and deleted its checkpoints: nothing to resume; "
                f"jaxopt-core show {folder} prints its results")
    return "the run stopped before its first checkpoint: start it again"


def partial_note(result: Any, config: dict, folder: Path) -> str | None:
    """For ``jaxopt-core show``: a line saying that a saved run is partial
    (stopped by Ctrl-C) and how to resume it; None for a finished run."""
    steps = config.get("options", {}).get("steps")
    trained = getattr(result, "steps_trained", None)
    if steps is None or trained is None or int(trained) >= int(steps):
        return None
    how = (f"resume with: jaxopt-core {config['command']} --resume {folder}"
           if (Path(folder) / CHECKPOINTS).is_dir() else "its checkpoints are gone")
    return f"[yellow]partial[/yellow]: trained {int(trained)} of {steps} steps; {how}"


def checkpoint_every(option: int | None, steps: int, search: str = "none") -> int | None:
    """The library's ``checkpoint_every``: ``--checkpoint-every`` (None: a
    quarter of the steps; 0: none); None when not checkpointing. With
    ``search`` "halving" the library rounds it up to rung ends."""
    if option == 0:
        return None
    return max(1, steps // 4) if option is None else option


def write_config(folder: Path, config: dict) -> Path:
    """``folder/config.json`` now, before training (the finished run writes it again)."""
    path = Path(folder) / CONFIG_FILE
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def steps_trained_column(err: Any) -> dict[str, Any]:
    """The CSV column of a partial sweep: the steps each member trained."""
    return {"steps_trained": np.asarray(err.steps_trained)}


def say_interrupted(console: Any, command: str, folder: Path, steps: int, trained: Any,
                    paths: list[Path]) -> int:
    """Tell where the partial results are and how to resume; the exit status."""
    done = int(np.min(trained))
    console.print(f"[yellow]interrupted[/yellow] after {done} of {steps} steps; "
                  "partial results in " + "\n      ".join(str(p) for p in paths))
    console.print(f"resume with: jaxopt-core {command} --resume {folder}")
    return INTERRUPTED
