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
``segment_steps`` steps (:mod:`jaxopt_core.training.segments`). A background
thread (:mod:`jaxopt_core.training.prefetch`) pulls a segment's batches,
checks each against the first batch's structure, shapes and dtypes (the
error names the step and what differs), copies them into one preallocated
host array per leaf (``[n, *batch_shape]``), and puts it on the device
(replicated on the sweep's mesh) while the device runs the previous segment.
The queue between them holds one segment, so at most three segments of
batches exist at once: the one running, the one ready, the one being
filled. The compiled segment scans over its stacked batches: no Python loop
over steps, no recompile between segments.

Lengths and compiles. Every full segment has the same length, one compile. A
shorter segment (the remainder of ``steps``, or the batches before a stream
ended with ``allow_short=True``) runs as pieces whose lengths are powers of
two (binary decomposition: 37 = 32 + 4 + 1), so wherever a stream ends, the
compiled lengths are ``segment_steps`` and the powers of two below it, each
compiled once and then cached: a second call with the same arguments and a
stream of any length compiles nothing. (``steps`` itself is part of the
compiled program, as in the array path. Padding the last segment to the full
length instead would need a masked step in the program and would spend the
padded steps' compute.)

Default segment length: ``min(steps, 100)``, lowered so that one segment of
batches stays under :data:`SEGMENT_BYTES` (64 MiB) of host memory, and at
least 1.

Resuming (checkpoints). The reader counts the batches it handed out
(``BatchStream.position``); a checkpoint taken after a segment needs to store
only the step count ``t_done`` (the batches consumed). To resume, the stream
is opened at ``start=t_done`` (:class:`ResumableStream` does it for a
checkpointed run): an iterable with a ``skip(n)`` method is asked for it
(``skip(n)`` returns the iterable to read from, as ``tf.data``'s does, or
returns None after advancing itself); any other is iterated afresh and its
first ``n`` batches are read and dropped (restart-and-fast-forward). Either
way the data given to the resumed call must yield the same batches in the
same order as the first: a loader object iterated again, or a new generator
built the same way (the resumed call is a new call, so a generator works if
it can be rebuilt).

Errors. An exception raised by the iterator is re-raised as
:class:`~jaxopt_core.BatchIteratorError` (a ``RuntimeError``) naming the step,
chained (``from``) to the original. A stream that ends before ``steps``
batches raises a ``ValueError`` naming how many batches it gave (at once, when
``len(data)`` says so), or, with ``allow_short=True``, training stops after
the last batch and the result says how many steps were trained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np

from jaxopt_core.training.batching import check_batch_size
from jaxopt_core.training.prefetch import (
    BatchStream,
    Ended,
    Segment,
    SegmentFeeder,
    first_batch,
)
from jaxopt_core.training.progress import ProgressBar

# What a checkpoint's fingerprint records for data given as an iterable of batches.
STREAM = "an iterable of batches"
# Default ceiling on the steps of one segment, and on its host bytes.
DEFAULT_SEGMENT_STEPS = 100
SEGMENT_BYTES = 64 * 2**20


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


def check_data(data: Any, batch_size: Any, allow_short: Any) -> bool:
    """Whether ``data`` is a stream of batches (:func:`is_batch_iterable`),
    after checking the arguments that go with it: a stream needs
    ``batch_size=None``; arrays need a valid ``batch_size`` and no
    ``allow_short``. Errors name the argument."""
    if not isinstance(allow_short, bool):
        raise TypeError(f"allow_short must be a bool; got allow_short={allow_short!r}")
    if not is_batch_iterable(data):
        if allow_short:
            raise ValueError(
                "allow_short=True applies when data is an iterable of batches; data is "
                f"a {type(data).__name__} of arrays here"
            )
        check_batch_size(batch_size, data)
        return False
    if batch_size is not None:
        raise ValueError(
            f"batch_size must be None when data is an iterable of batches (the iterator "
            f"decides the batches); got batch_size={batch_size!r}"
        )
    return True


def segment_length(steps: int, segment_steps: int | None, batch_bytes: int) -> int:
    """``segment_steps`` capped at ``steps``; by default ``min(steps, 100)``
    lowered to keep one segment under :data:`SEGMENT_BYTES` (at least 1)."""
    if segment_steps is not None:
        return min(int(segment_steps), steps)
    fit_in = max(1, SEGMENT_BYTES // max(1, batch_bytes))
    return min(steps, DEFAULT_SEGMENT_STEPS, fit_in)

class StreamFeed:
    """The batches of a streamed run, for :func:`~jaxopt_core.training.segments.run_segments`.

    Opens ``data`` at batch ``start`` (see
    :class:`~jaxopt_core.training.prefetch.BatchStream`), reads the first
    batch to learn the layout and the segment length, and starts a
    :class:`~jaxopt_core.training.prefetch.SegmentFeeder`. :meth:`plan` is the
    run's segments ``(t0, n)``, produced as the batches arrive (the ``plan``
    of ``run_segments``); :meth:`batches` gives the current segment's stacked
    batches (pass it as ``batches``). When the stream ends before ``steps``,
    :meth:`plan` raises a ``ValueError`` naming how many batches it gave, or
    with ``allow_short`` stops and sets :attr:`steps_trained`. A checkpoint
    taken after a segment stores the step count ``t_done`` (the batches
    consumed); the resumed run passes it back as ``start``.
    """

    def __init__(self, data: Iterable, *, steps: int, segment_steps: int | None,
                 allow_short: bool, put: Callable[[Any], Any], start: int = 0):
        self.steps, self.allow_short = steps, allow_short
        self.steps_trained = steps
        _check_length(data, steps, allow_short)
        stream = BatchStream(data).open(start)
        first, self.layout = first_batch(stream)
        # From steps, not steps - start: a resumed run compiles the same lengths.
        self.length = segment_length(steps, segment_steps, self.layout.nbytes)
        self._current: Segment | None = None
        self._feeder = SegmentFeeder(stream, first, self.layout, start=start, stop=steps,
                                     length=self.length, put=put)

    def plan(self) -> Iterator[tuple[int, int]]:
        for item in self._feeder:
            if isinstance(item, Ended):
                if not self.allow_short:
                    raise ValueError(
                        f"data: the batch iterator ended after {item.given} batches, but "
                        f"steps={self.steps} needs {self.steps} (pass allow_short=True to "
                        "stop where it ends)"
                    )
                self.steps_trained = item.given
                return
            self._current = item
            yield item.t0, item.n

    def batches(self, t0: int, n: int) -> Any:
        item = self._current
        assert item is not None and (item.t0, item.n) == (t0, n), (item, t0, n)
        self._current = None  # the device arrays go with the segment that uses them
        return item.batches

    def close(self) -> None:
        self._feeder.close()

    def __enter__(self) -> StreamFeed:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_length(data: Any, steps: int, allow_short: bool) -> None:
    """A loader that knows its length and has fewer than ``steps`` batches
    fails before anything runs."""
    try:
        n = len(data)
    except TypeError:
        return
    if n < steps and not allow_short:
        raise ValueError(
            f"data has {n} batches (len(data)), but steps={steps} needs {steps} "
            "(pass allow_short=True to stop where it ends)"
        )


def truncate_evals(evals: dict, taken: np.ndarray, trained: int, steps: int) -> tuple:
    """The evaluations of a run that stopped after ``trained`` of ``steps``
    steps: those taken before ``trained``, then the final one (taken after
    step ``trained``, stored in the last slot); ``(evals, eval_steps)``."""
    if trained >= steps or not len(taken):
        return evals, taken
    keep = [i for i, s in enumerate(taken[:-1]) if s < trained] + [len(taken) - 1]
    cut = {n: np.asarray(v)[..., keep] for n, v in evals.items()}
    return cut, np.asarray([*taken[keep[:-1]], trained], np.int32)


def cut_result(result: Any, trained: int, steps: int) -> Any:
    """A :class:`~jaxopt_core.SweepResult` of a run that stopped after
    ``trained`` of ``steps`` steps: evaluations cut (:func:`truncate_evals`),
    a ``best_step`` at the final evaluation relabelled ``trained`` (it was
    taken after ``trained`` steps), ``steps_trained`` set."""
    evals, taken = truncate_evals(result.evals, result.eval_steps, trained, steps)
    fields = {"evals": evals, "eval_steps": taken, "steps_trained": trained}
    if result.best_step is not None and trained < steps:
        best = np.asarray(result.best_step)
        fields["best_step"] = np.where(best == steps, trained, best)
    return result._replace(**fields)


def run_stream_chunks(run_chunk: Callable, chunks: list, data: Iterable, *, steps: int,
                      segment_steps: int | None, allow_short: bool, put: Callable[[Any], Any],
                      progress: bool) -> tuple[list, int]:
    """A sweep's chunks of members, each fed from its own pass over ``data``
    (a :class:`StreamFeed` per chunk): ``[run_chunk(hp_c, token, base, plan,
    batches=...) for each chunk]`` and the steps trained. With several chunks
    ``data`` must be re-iterable (``iter(data)`` starts a new pass with the
    same batches, as a loader object does), not a one-shot iterator."""
    if len(chunks) > 1 and hasattr(data, "__next__"):
        raise ValueError(
            f"chunk_size: the members run in {len(chunks)} chunks and each reads the batches "
            f"from the start, but data is a one-shot iterator ({type(data).__name__}); pass "
            "an object whose __iter__ starts a new pass (a data loader), or no chunk_size"
        )
    outs, trained = [], None
    with ProgressBar(progress, total=steps * len(chunks), desc="sweep") as bar:
        for c, hp_c in enumerate(chunks):
            with StreamFeed(data, steps=steps, segment_steps=segment_steps,
                            allow_short=allow_short, put=put) as feed:
                outs.append(run_chunk(hp_c, bar.token_array(), np.int32(c * steps),
                                      feed.plan(), batches=feed.batches))
            if trained is not None and feed.steps_trained != trained:
                raise ValueError(
                    f"data gave {trained} batches to the first chunk of members but "
                    f"{feed.steps_trained} to chunk {c}: every pass must yield the same batches"
                )
            trained = feed.steps_trained
        if progress:
            jax.block_until_ready(outs)
    return outs, trained


class ResumableStream:
    """A segmented runner fed from ``data``, for checkpointed runs: a drop-in
    for ``run_fit_segmented`` or ``run_chunk_segmented`` (anything called as
    ``run(*args, plan, state=..., losses=..., after=...)`` that accepts
    ``batches=``) whose ``plan`` may start past step 0.

    Each call opens ``data`` at the plan's first step (``skip(n)`` when the
    iterable has it, else a new pass dropping ``n`` batches: see
    :class:`~jaxopt_core.training.prefetch.BatchStream`) with segments of
    ``length`` steps, so a run resumed from a checkpoint after ``t_done``
    steps reads the batches from ``t_done`` on. The checkpoint needs to store
    nothing about the stream but ``t_done``: the batches consumed. An empty
    plan (the finish of a stopped run) reads nothing. The program functions
    get ``data=None`` (the batches come stacked). ``steps_trained`` is the
    last call's (less than ``steps`` when the stream ended with
    ``allow_short``).

    Example:
        >>> from jaxopt_core.training.streaming import ResumableStream
        >>> def run(plan, state=None, losses=None, after=None, batches=None):
        ...     return [(t0, n, batches(t0, n).tolist()) for t0, n in plan]
        >>> stream = ResumableStream(run, range(100), steps=10, length=4,
        ...                          allow_short=False, put=lambda x: x)
        >>> stream([(4, 4), (8, 2)])   # resumed after 4 steps: batches 4 .. 9
        [(4, 4, [4, 5, 6, 7]), (8, 2, [8, 9])]
    """

    def __init__(self, run_segmented: Callable, data: Iterable, *, steps: int, length: int,
                 allow_short: bool, put: Callable[[Any], Any]):
        self.run_segmented, self.data, self.steps, self.length = run_segmented, data, steps, length
        self.allow_short, self.put = allow_short, put
        self.steps_trained = steps

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        *head, plan = args
        plan = list(plan)
        if not plan:
            return self.run_segmented(*head, plan, **kwargs)
        with StreamFeed(self.data, steps=self.steps, segment_steps=self.length,
                        allow_short=self.allow_short, put=self.put, start=plan[0][0]) as feed:
            out = self.run_segmented(*head, feed.plan(), batches=feed.batches, **kwargs)
        self.steps_trained = feed.steps_trained
        return out
