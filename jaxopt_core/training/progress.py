"""Progress bars that advance while a compiled training loop runs.

The loop is one ``lax.scan`` inside one compiled program, so the host never
sees a step. Instead the program reports its step count through
``jax.debug.callback`` about a hundred times per run (every
``max(1, steps // 100)`` steps, behind a ``lax.cond``, so the other steps pay
one integer compare). The bar itself lives on the host in a registry keyed by
an integer *token* that the program receives as an argument: the compiled
program does not change from one bar to the next, so ``progress=True`` costs
one compile per problem, not one per call.

tqdm is an optional dependency, imported only when a bar is opened.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import numpy as np

_BARS: dict[int, Any] = {}
_TOKENS = itertools.count(1)


def report_every(steps: int) -> int:
    """How many steps pass between two reports: about 100 reports per run."""
    return max(1, steps // 100)


def tick(token: jax.Array, done: jax.Array, every: int) -> None:
    """Inside compiled code: tell bar ``token`` that ``done`` steps are done,
    when ``done`` is a multiple of ``every`` (a static int)."""

    def report():
        jax.debug.callback(_advance, token, done)

    jax.lax.cond(done % every == 0, report, lambda: None)


def _advance(token, done) -> None:
    bar = _BARS.get(int(token))
    if bar is not None and int(done) > bar.n:
        # Callbacks may arrive out of order (or once per device): only move forward.
        bar.update(int(done) - bar.n)


class ProgressBar:
    """Context manager owning one tqdm bar (or nothing when disabled).

    ``token`` is the value to pass into the compiled program: 0 when disabled.

    Example:
        >>> from jaxopt_core.training.progress import ProgressBar
        >>> with ProgressBar(False, total=10) as bar:
        ...     bar.token
        0
    """

    def __init__(self, enabled: bool, total: int, desc: str = "training"):
        self.token = 0
        self._bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError as err:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "progress=True needs tqdm (an optional dependency): pip install tqdm"
                ) from err
            self._bar = tqdm(total=total, desc=desc, unit="step")
            self.token = next(_TOKENS)
            _BARS[self.token] = self._bar

    def token_array(self) -> np.ndarray:
        """The token as a host int32 (a NumPy scalar is a valid input on every host)."""
        return np.int32(self.token)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is None:
            return
        # Let callbacks still in flight land before the bar goes away.
        jax.effects_barrier()
        if exc[0] is None and self._bar.n < self._bar.total:
            self._bar.update(self._bar.total - self._bar.n)
        self._bar.close()
        _BARS.pop(self.token, None)
