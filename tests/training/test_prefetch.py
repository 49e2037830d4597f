"""Tests for jaxopt_core.training.prefetch: checking and stacking batches, the
prefetch thread, resuming a stream, and errors at the edges."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import BatchLoader, numpy_batches

from jaxopt_core.training.prefetch import (
    BatchIteratorError,
    BatchLayout,
    BatchStream,
    Ended,
    Segment,
    SegmentFeeder,
    first_batch,
    pieces,
)


def test_pieces_are_powers_of_two_or_the_full_length():
    assert pieces(10, 8, 8) == [(10, 8)]
    assert pieces(0, 37, 100) == [(0, 32), (32, 4), (36, 1)]
    for n in range(1, 64):
        ps = pieces(5, n, 64)
        assert sum(m for _, m in ps) == n and ps[0][0] == 5
        assert all(m & (m - 1) == 0 for _, m in ps)
        assert all(a + m == b for (a, m), (b, _) in zip(ps, ps[1:]))


def test_layout_names_step_and_difference():
    b = numpy_batches(1)[0]
    layout = BatchLayout.of(b)
    assert layout.nbytes == 4 * 3 * 4 + 4 * 4
    layout.leaves(b, 0)
    with pytest.raises(ValueError, match=r"step 7.*batch\[0\].*\(5, 3\).*\(4, 3\)"):
        layout.leaves((np.ones((5, 3), np.float32), b[1]), 7)
    with pytest.raises(ValueError, match=r"step 2.*batch\[1\].*int32"):
        layout.leaves((b[0], np.ones(4, np.int32)), 2)
    with pytest.raises(ValueError, match="step 3.*structure"):
        layout.leaves({"x": b[0]}, 3)


def test_float64_batches_are_stored_in_the_working_dtype():
    layout = BatchLayout.of(np.ones((2, 2)))
    assert layout.dtypes[0] == jnp.ones(1).dtype  # float32 unless x64 is on


def test_stream_position_skip_and_fast_forward():
    s = BatchStream(BatchLoader(list(range(10)))).open(start=4)
    assert (s.next(), s.position) == (4, 5)

    class Skippable(BatchLoader):
        skipped = None

        def skip(self, n):
            self.skipped = n
            return BatchLoader(self.batches[n:])

    src = Skippable(list(range(10)))
    s = BatchStream(src).open(start=6)
    assert src.skipped == 6 and s.position == 6 and s.next() == 6
    with pytest.raises(ValueError, match="resuming at step 5.*ended after 3"):
        BatchStream(BatchLoader([0, 1, 2])).open(start=5)


def test_iterator_exception_names_the_step_and_chains():
    def gen():
        yield 1
        yield 2
        raise KeyError("disk")

    s = BatchStream(gen()).open()
    s.next(), s.next()
    with pytest.raises(BatchIteratorError, match="KeyError.*step 2") as info:
        s.next()
    assert isinstance(info.value.__cause__, KeyError)


def _feed(batches, *, stop, length, start=0):
    stream = BatchStream(iter(batches)).open(start)
    first, layout = first_batch(stream)
    with SegmentFeeder(stream, first, layout, start=start, stop=stop, length=length,
                       put=jax.device_put) as feeder:
        return list(feeder)


def test_feeder_stacks_segments_in_order_on_device():
    batches = numpy_batches(11)
    items = _feed(batches, stop=11, length=4)
    assert [(s.t0, s.n) for s in items] == [(0, 4), (4, 4), (8, 2), (10, 1)]
    assert all(isinstance(s, Segment) for s in items)
    xs = np.concatenate([np.asarray(s.batches[0]) for s in items])
    np.testing.assert_array_equal(xs, np.stack([b[0] for b in batches]))
    assert isinstance(items[0].batches[1], jax.Array)
    assert items[0].batches[1].shape == (4, 4)


def test_feeder_reports_an_early_end():
    items = _feed(numpy_batches(6), stop=10, length=4)
    assert [(s.t0, s.n) for s in items[:-1]] == [(0, 4), (4, 2)]
    assert items[-1] == Ended(6)


def test_feeder_raises_the_iterator_error_in_the_consumer():
    def gen():
        yield from numpy_batches(5)
        raise OSError("disk gone")

    stream = BatchStream(gen()).open()
    first, layout = first_batch(stream)
    seen = []
    with pytest.raises(BatchIteratorError, match="OSError.*step 5") as info:
        with SegmentFeeder(stream, first, layout, start=0, stop=9, length=2,
                           put=lambda t: t) as feeder:
            for item in feeder:
                seen.append((item.t0, item.n))
    assert seen == [(0, 2), (2, 2)]  # the segment holding step 5 never comes
    assert isinstance(info.value.__cause__, OSError)


def test_feeder_close_stops_the_thread_early():
    def endless():
        while True:
            yield from numpy_batches(1)

    stream = BatchStream(endless()).open()
    first, layout = first_batch(stream)
    before = threading.active_count()
    feeder = SegmentFeeder(stream, first, layout, start=0, stop=10**9, length=3,
                           put=lambda t: t)
    next(iter(feeder))
    feeder.close()
    assert threading.active_count() == before
    assert stream.position < 20  # bounded read-ahead: not the whole stream


def test_first_batch_of_an_empty_stream():
    with pytest.raises(ValueError, match="gave no batch"):
        first_batch(BatchStream(iter([])).open())
