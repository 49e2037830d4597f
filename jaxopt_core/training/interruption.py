"""Ctrl-C during a checkpointed run: stop at the next segment, save, raise :class:`Interrupted`.

While a checkpointed :func:`~jaxopt_core.fit` or :func:`~jaxopt_core.sweep`
runs, :class:`InterruptGuard` replaces the SIGINT handler (in the main thread
only; Python delivers signals there). The first Ctrl-C only sets a flag: the
compiled segment that is running finishes, its checkpoint is saved, and the
call raises :class:`Interrupted` carrying the partial result. A second Ctrl-C
raises ``KeyboardInterrupt`` at once (as soon as Python runs again: a
compiled segment cannot be stopped half-way), skipping the save; the last
complete checkpoint still resumes. Only while a checkpoint save is being
started (tens of milliseconds: :meth:`InterruptGuard.deferring`) is it held
back until the save has started: an exception raised inside orbax's save
leaves its background thread waiting, and the process then cannot exit for
minutes. The previous handler is put back when the call returns or raises.

``Interrupted`` is a ``KeyboardInterrupt``, so code that does not know about
it stops as it would on Ctrl-C; code that does can read ``.partial`` and
``.checkpoint_dir``.

Example:
    >>> import signal
    >>> from jaxopt_core.training.interruption import InterruptGuard
    >>> before = signal.getsignal(signal.SIGINT)
    >>> with InterruptGuard() as guard:
    ...     guard.handle(signal.SIGINT, None)   # what a first Ctrl-C does
    ...     guard.requested
    True
    >>> signal.getsignal(signal.SIGINT) is before   # the caller's handler is back
    True
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Interrupted(KeyboardInterrupt):  # noqa: N818 - the contract's name
    """Raised by a checkpointed ``fit``/``sweep`` stopped by Ctrl-C (SIGINT).

    The run stopped at a segment boundary, after saving its checkpoint: the
    same call with the same ``checkpoint_dir`` resumes from there.

    Attributes:
        partial: the result so far, a :class:`~jaxopt_core.FitResult` or
            :class:`~jaxopt_core.SweepResult` whose ``losses`` cover the steps
            trained (``[steps_done]`` for a fit, ``[K, steps_done]`` for a sweep;
            with ``chunk_size``, the members of the chunks started, NaN after
            each member's steps), the params and optimizer state after those
            steps, and the evaluations taken so far.
        checkpoint_dir: the folder to resume from (a :class:`pathlib.Path`).
        steps_trained: an int array with the steps each member (or the fit)
            trained.

    Example:
        >>> import jaxopt_core as jc
        >>> issubclass(jc.Interrupted, KeyboardInterrupt)
        True
    """

    def __init__(self, partial: Any, checkpoint_dir: str | Path, steps_trained: Any = None):
        self.partial = partial
        self.checkpoint_dir = Path(checkpoint_dir)
        self.steps_trained = steps_trained
        super().__init__(f"interrupted; checkpoint saved in {str(self.checkpoint_dir)!r}: "
                         "call again with the same checkpoint_dir to resume")


class InterruptGuard:
    """A SIGINT handler for the duration of a ``with`` block (see the module notes).

    ``requested`` turns True on the first SIGINT; a second raises
    ``KeyboardInterrupt``. Outside the main thread nothing is installed (a
    Ctrl-C then behaves as it did before).
    """

    def __init__(self):
        self.requested = False
        self._previous: Any = None
        self._installed = False
        self._deferring = False
        self._pending = False

    def handle(self, signum: int, frame: Any) -> None:
        """The handler: note the first interrupt, raise on the second (after
        the save being started, inside :meth:`deferring`)."""
        if not self.requested:
            self.requested = True
        elif self._deferring:
            self._pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """A block that a second Ctrl-C does not break into: its
        ``KeyboardInterrupt`` is raised when the block ends."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._pending:
            self._pending = False
            raise KeyboardInterrupt

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self.handle)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
