r"""Training data streamed from any iterable of batches, a segment at a time.

:func:`~jaxopt_core.fit` and :func:`~jaxopt_core.sweep` take, instead of
arrays, any *iterable of batches* (a generator, an iterator, a data-loader
object with ``__iter__``): each batch is a pytree of arrays (NumPy or JAX) that
``loss_fn(params, batch)`` receives as it is. ``steps`` then counts batches
consumed, one per step, and every member of a sweep sees the same batch at a
step.

What is a stream. ``data`` is a stream when it is iterable and JAX treats it
as a single leaf: not a list, tuple, dict or other registered pytree node,
not an array (nothing with ``__array__`` or ``__jax_array__``), not a string
(:func:`is_batch_iterable`). So ``(X, y)`` is a data pytree, as before, and
``iter([(X, y), ...])``, a generator or a loader object is a stream (a *list*
of batches is a pytree: pass ``iter(batches)``).

How it runs. The compiled ``lax.scan`` is cut into segments of
``segment_steps`` steps. A background thread pulls a segment's batches, checks
each against the first batch's structure, shapes and dtypes
(:class:`BatchLayout`; the error names the step and what differs), copies them
into one preallocated host array per leaf (``[n, *batch_shape]``), and puts it
on the device (replicated on the sweep's mesh) while the device runs the
previous segment. The queue between them holds one segment, so at most three
segments of batches exist at once: the one running, the one ready, the one
being filled. A segment's batches are given to the compiled segment, which
scans over them: no Python loop over steps, no recompile between segments.

Lengths and compiles. Every full segment has the same length, one compile.
A shorter segment (the remainder of ``steps``, or the batches before a stream
ended with ``allow_short=True``) runs as pieces whose lengths are powers of
two (binary decomposition: 37 = 32 + 4 + 1), so whatever ``steps`` and
wherever a stream ends, the compiled lengths are ``segment_steps`` and at
most ``log2(segment_steps)`` powers of two, each compiled once and then
cached. (Padding to the full length instead would need a masked step in the
program and would spend the padded steps' compute.)

Default segment length: ``min(steps, 100)``, lowered so that one segment of
batches stays under :data:`SEGMENT_BYTES` (64 MiB) of host memory, and at
least 1.

Resuming (checkpoints). :class:`BatchStream` counts the batches it handed
out (``position``). To resume at step ``n`` the source is opened with
``start=n``: an iterable with a ``skip(n)`` method is asked for it
(``skip(n)`` returns the iterable to read from, e.g. a ``tf.data`` or custom
dataset, or returns None after advancing itself); any other is iterated
afresh and its first ``n`` batches are consumed and dropped
(restart-and-fast-forward). Either way the iterable must yield the same
batches in the same order when iterated again; a one-shot iterator (a
generator object) cannot be restarted and needs ``skip``.

Errors. An exception raised by the iterator is re-raised as
:class:`BatchIteratorError` naming the step, chained (``from``) to the
original. A stream that ends before ``steps`` batches raises a ``ValueError``
naming how many batches it gave, or, with ``allow_short=True``, training
stops after the last batch and the result says how many steps were trained.
"""

from __future__ import annotations

import numbers
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np

# Default ceiling on the steps of one segment, and on its host bytes.
DEFAULT_SEGMENT_STEPS = 100
SEGMENT_BYTES = 64 * 2**20


class BatchIteratorError(RuntimeError):
    """The batch iterator raised an exception; the message names the step (the
    original exception is the ``__cause__``)."""


def is_batch_iterable(data: Any) -> bool:
    """Whether ``data`` is a stream of batches rather than a data pytree.

    A stream is iterable and a single pytree leaf that is not an array or a
    string: generators, iterators, loader objects with ``__iter__``. Lists,
    tuples, dicts (any registered pytree node), arrays and scalars are data.

    Example:
        >>> import numpy as np
        >>> from jaxopt_core.training.streaming import is_batch_iterable
        >>> X = np.ones((4, 2))
        >>> is_batch_iterable((X, X)), is_batch_iterable(X), is_batch_iterable([X])
        (False, False, False)
        >>> is_batch_iterable(iter([X])), is_batch_iterable(b for b in [X])
        (True, True)
    """
    if isinstance(data, (str, bytes, np.ndarray, jax.Array, np.generic)):
        return False
    if hasattr(data, "__array__") or hasattr(data, "__jax_array__"):
        return False
    if not (hasattr(data, "__iter__") or hasattr(data, "__next__")):
        return False
    try:  # a registered pytree node (tuple, dict, NamedTuple, ...) is data
        jax.tree_util.flatten_one_level(data)
    except ValueError:
        return True
    return False


def check_stream_args(batch_size: Any, segment_steps: Any, allow_short: Any) -> None:
    """The arguments a stream allows: no ``batch_size``, an int ``segment_steps``
    >= 1 or None, a bool ``allow_short``; errors name the argument."""
    if batch_size is not None:
        raise ValueError(
            f"batch_size must be None when data is an iterable of batches (the iterator "
            f"decides the batches); got batch_size={batch_size!r}"
        )
    if segment_steps is not None and (
        isinstance(segment_steps, bool) or not isinstance(segment_steps, numbers.Integral)
        or segment_steps < 1
    ):
        raise ValueError(f"segment_steps must be None or an int >= 1; got {segment_steps!r}")
    if not isinstance(allow_short, bool):
        raise TypeError(f"allow_short must be a bool; got allow_short={allow_short!r}")


def check_array_args(segment_steps: Any, allow_short: Any) -> None:
    """``segment_steps``/``allow_short`` only mean something for a stream."""
    if segment_steps is not None or allow_short:
        raise ValueError(
            "segment_steps and allow_short apply when data is an iterable of batches; "
            f"data is arrays here (got segment_steps={segment_steps!r}, "
            f"allow_short={allow_short!r})"
        )


def segment_length(steps: int, segment_steps: int | None, batch_bytes: int) -> int:
    """``segment_steps`` capped at ``steps``; by default ``min(steps, 100)``
    lowered to keep one segment under :data:`SEGMENT_BYTES` (at least 1)."""
    if segment_steps is not None:
        return min(int(segment_steps), steps)
    fit_in = max(1, SEGMENT_BYTES // max(1, batch_bytes))
    return min(steps, DEFAULT_SEGMENT_STEPS, fit_in)


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


_END = object()


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
            if self.next() is _END:
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
            return _END
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
    if batch is _END:
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
            if item is _END:
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
            self._send(_END)
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
            if batch is _END:
                break
            for buf, leaf in zip(bufs, layout.leaves(batch, step)):
                buf[got] = leaf
            got += 1
        return layout.treedef.unflatten(bufs), got
