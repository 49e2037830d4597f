r"""The host side of a streamed run: reading, checking, stacking and prefetching batches.

:class:`BatchStream` reads an iterable of batches one at a time and counts
them; :class:`BatchLayout` holds the first batch's structure, shapes and
dtypes and checks every later batch against it; :class:`SegmentFeeder` is
the background thread that fills one host array per leaf with a segment's
batches and places it on the device while the previous segment runs. See
:mod:`jaxopt_core.training.streaming` for how they serve ``fit`` and
``sweep``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np


class BatchIteratorError(RuntimeError):
    """The batch iterator raised an exception; the message names the step (the
    original exception is the ``__cause__``)."""


def pieces(t0: int, n: int, length: int) -> list[tuple[int, int]]:
    """``(t0, n)`` as compiled pieces: itself when ``n == length``, else its
    binary decomposition, largest first (``pieces(0, 5, 8) == [(0, 4), (4, 1)]``)."""
    if n == length:
        return [(t0, n)]
    out = []
    for bit in reversed(range(n.bit_length())):
        if n >> bit & 1:
            out.append((t0, 1 << bit))
            t0 += 1 << bit
    return out


class BatchLayout(NamedTuple):
    """The structure, shapes and dtypes every batch must have (the first batch's)."""

    treedef: Any
    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]

    @classmethod
    def of(cls, batch: Any) -> BatchLayout:
        leaves = jax.tree.leaves_with_path(batch)
        arrays = [np.asarray(x) for _, x in leaves]
        return cls(
            jax.tree.structure(batch),
            tuple("batch" + jax.tree_util.keystr(p) for p, _ in leaves),
            tuple(a.shape for a in arrays),
            tuple(jax.dtypes.canonicalize_dtype(a.dtype) for a in arrays),
        )

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(s)) * d.itemsize for s, d in zip(self.shapes, self.dtypes))

    def leaves(self, batch: Any, step: int) -> list[np.ndarray]:
        """``batch``'s leaves as host arrays, or an error naming ``step`` and
        what differs from the first batch."""
        treedef = jax.tree.structure(batch)
        if treedef != self.treedef:
            raise ValueError(
                f"data: the batch at step {step} has structure {treedef}, "
                f"but the first batch had {self.treedef}"
            )
        arrays = [np.asarray(x) for x in jax.tree.leaves(batch)]
        for name, a, shape, dtype in zip(self.paths, arrays, self.shapes, self.dtypes):
            if a.shape != shape or jax.dtypes.canonicalize_dtype(a.dtype) != dtype:
                raise ValueError(
                    f"data: at step {step}, {name} has shape {a.shape} and dtype {a.dtype}, "
                    f"but in the first batch it had shape {shape} and dtype {dtype}"
                )
        return arrays


# What BatchStream.next returns once the iterable is exhausted.
STREAM_END = object()


class BatchStream:
    """An iterable of batches, read one batch at a time, counting them.

    ``position`` is the number of batches handed out so far, counted from the
    start of the iterable (what a checkpoint stores as the step to resume at).
    ``open(start)`` begins reading at batch ``start``: ``iterable.skip(start)``
    when the iterable has it, else iterating afresh and dropping ``start``
    batches (see the module notes).

    Example:
        >>> from jaxopt_core.training.streaming import BatchStream
        >>> s = BatchStream(range(10)).open(start=3)
        >>> s.next(), s.next(), s.position
        (3, 4, 5)
    """

    def __init__(self, iterable: Iterable):
        self.iterable = iterable
        self.position = 0
        self._it: Iterator | None = None

    def open(self, start: int = 0) -> BatchStream:
        """Start reading at batch ``start``."""
        source = self.iterable
        skip = getattr(source, "skip", None)
        if start and callable(skip):
            skipped = skip(start)
            source = source if skipped is None else skipped
            self.position = start
        try:
            self._it = iter(source)
        except Exception as err:
            raise BatchIteratorError(f"data: iter(data) raised {type(err).__name__}") from err
        while self.position < start:
            if self.next() is STREAM_END:
                raise ValueError(
                    f"data: resuming at step {start} needs the iterable to yield {start} "
                    f"batches again, but it ended after {self.position}"
                )
        return self

    def next(self) -> Any:
        """The next batch, or the module's end marker when the iterable is done."""
        step = self.position
        try:
            batch = next(self._it)
        except StopIteration:
            return STREAM_END
        except Exception as err:
            raise BatchIteratorError(
                f"data: the batch iterator raised {type(err).__name__} while producing the "
                f"batch of step {step}"
            ) from err
        self.position += 1
        return batch


class Segment(NamedTuple):
    """A piece of training: steps ``t0 .. t0 + n - 1`` and their stacked batches."""

    t0: int
    n: int
    batches: Any


class Ended(NamedTuple):
    """The stream ended early: it gave ``given`` batches in all."""

    given: int


def first_batch(stream: BatchStream) -> tuple[Any, BatchLayout]:
    """Read the first batch (to learn the layout before anything is compiled)."""
    step = stream.position
    batch = stream.next()
    if batch is STREAM_END:
        raise ValueError(f"data: the batch iterator gave no batch (at step {step})")
    return batch, BatchLayout.of(batch)


class SegmentFeeder:
    """A background thread that fills, checks and places segments of batches.

    Iterating the feeder yields :class:`Segment` items in step order, then an
    :class:`Ended` item if the stream ended before ``stop``; an error in the
    thread (the iterator's, a layout mismatch) is raised by the iteration.
    ``put(tree)`` places a host tree on the device(s); the queue holds one
    segment, so the thread works at most one segment ahead of the device.
    """

    def __init__(self, stream: BatchStream, first: Any, layout: BatchLayout, *, start: int,
                 stop: int, length: int, put: Callable[[Any], Any]):
        self._stream, self._layout, self._put = stream, layout, put
        self._start, self._stop, self._length = start, stop, length
        self._first = first
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._work, name="jaxopt-core-batches",
                                        daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[Segment | Ended]:
        while True:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is STREAM_END:
                return
            yield item

    def close(self) -> None:
        """Stop the thread (drops what it prepared); safe to call twice."""
        self._closed.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self) -> SegmentFeeder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, item: Any) -> bool:
        """Queue ``item``, waiting for room; False once the feeder is closed."""
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def _work(self) -> None:
        try:
            for t0 in range(self._start, self._stop, self._length):
                n = min(self._length, self._stop - t0)
                host, got = self._fill(t0, n)
                for p0, pn in pieces(t0, got, self._length) if got else []:
                    part = jax.tree.map(lambda x, a=p0 - t0, b=p0 - t0 + pn: x[a:b], host)
                    if not self._send(Segment(p0, pn, self._put(part))):
                        return
                if got < n:
                    self._send(Ended(t0 + got))
                    break
            self._send(STREAM_END)
        except BaseException as err:  # handed to the consumer, raised there
            self._send(err)

    def _fill(self, t0: int, n: int) -> tuple[Any, int]:
        """Host arrays ``[n, ...]`` per leaf holding the batches of steps
        ``t0 ..``, and how many the stream gave (< n when it ended)."""
        layout = self._layout
        bufs = [np.empty((n, *s), d) for s, d in zip(layout.shapes, layout.dtypes)]
        got = 0
        while got < n and not self._closed.is_set():
            step = t0 + got
            if self._first is not None:
                batch, self._first = self._first, None
            else:
                batch = self._stream.next()
            if batch is STREAM_END:
                break
            for buf, leaf in zip(bufs, layout.leaves(batch, step)):
                buf[got] = leaf
            got += 1
        return layout.treedef.unflatten(bufs), got
