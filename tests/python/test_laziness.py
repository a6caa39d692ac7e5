"""imap/imap_unordered pull their input lazily and stop when abandoned.

Contract: with chunksize=c and w workers at most about 4*w*c items (plus one
chunk) are pulled ahead of what the consumer has taken; with chunksize=None
the read-ahead stays well under 100,000 cheap items; dropping or close()-ing
the iterator cancels its remaining work.  The bounds asserted here are looser
than the contract's (AHEAD_SLACK) so that they test laziness, not tuning."""

from __future__ import annotations

import functools
import gc
import itertools
import math
import time

import pytest

from gfsupport import CountingIterator, add_one, record_and_sleep, square

pytestmark = pytest.mark.timeout(30)

METHODS = ["imap", "imap_unordered"]
AHEAD_SLACK = 64  # the brief's bound; the contract's is 4*w*c + c = 9 for w=2, c=1
SETTLE_S = 0.2  # give a background feeder (if any) time to run ahead


def take(it, k):
    return [next(it) for _ in range(k)]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [1, 10, 200])
def test_read_ahead_bounded_chunksize_one(pool, method, k):
    source = CountingIterator(limit=10**6)
    it = getattr(pool, method)(square, source, chunksize=1)
    got = take(it, k)
    time.sleep(SETTLE_S)
    pulled = source.pulled
    assert pulled <= k + AHEAD_SLACK, f"pulled {pulled} items after taking {k}"
    assert pulled >= k
    if method == "imap":
        assert got == [x * x for x in range(k)]
    else:
        assert len(set(got)) == k
    it.close()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("chunksize", [2, 8])
def test_read_ahead_bounded_fixed_chunksize(pool, method, chunksize):
    source = CountingIterator(limit=10**6)
    it = getattr(pool, method)(square, source, chunksize=chunksize)
    take(it, 5)
    time.sleep(SETTLE_S)
    bound = 5 + 4 * pool.workers * chunksize + chunksize + AHEAD_SLACK
    assert source.pulled <= bound, f"pulled {source.pulled} (bound {bound})"
    it.close()


@pytest.mark.parametrize("method", METHODS)
def test_nothing_pulled_beyond_bound_before_first_next(pool, method):
    source = CountingIterator(limit=10**6)
    it = getattr(pool, method)(square, source, chunksize=1)
    time.sleep(SETTLE_S)
    assert source.pulled <= AHEAD_SLACK, f"pulled {source.pulled} before any next()"
    it.close()


@pytest.mark.parametrize("method", METHODS)
def test_adaptive_chunksize_on_endless_input(pool, method):
    # An "infinite" generator (capped at 2e6 so that an eager implementation
    # fails the bound instead of exhausting memory).
    source = CountingIterator(limit=2 * 10**6)
    it = getattr(pool, method)(add_one, source)
    got = []
    for value in it:
        got.append(value)
        if len(got) == 1000:
            break
    time.sleep(SETTLE_S)
    assert len(got) == 1000
    if method == "imap":
        assert got == list(range(1, 1001))
    assert source.pulled < 100_000, f"pulled {source.pulled} items to produce 1000"
    it.close()
    assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]


@pytest.mark.parametrize("method", METHODS)
def test_itertools_count_input(pool, method):
    it = getattr(pool, method)(square, itertools.count(), chunksize=1)
    got = list(itertools.islice(it, 100))
    if method == "imap":
        assert got == [x * x for x in range(100)]
    else:
        # Completion order: the first 100 to finish are 100 distinct inputs,
        # none further ahead than the read-ahead bound allows.
        roots = sorted(math.isqrt(v) for v in got)
        assert all(r * r == v for r, v in zip(roots, sorted(got)))
        assert len(set(roots)) == 100
        assert roots[-1] < 100 + 4 * pool.workers + 1 + AHEAD_SLACK
    it.close()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("how", ["close", "drop"])
def test_abandoning_iterator_cancels_remaining_work(pool, recorder, method, how):
    total = 400
    func = functools.partial(record_and_sleep, recorder.path, 0.02)
    it = getattr(pool, method)(func, range(total), chunksize=1)
    take(it, 5)
    if how == "close":
        it.close()
    else:
        del it
        gc.collect()
    pool.close()
    pool.join()  # returns once every task that will ever run has run
    ran = recorder.count()
    assert ran < total // 2, f"{ran} of {total} items ran after the iterator was abandoned"


@pytest.mark.parametrize("method", METHODS)
def test_close_is_idempotent_and_ends_iteration(pool, method):
    it = getattr(pool, method)(square, range(100), chunksize=1)
    take(it, 3)
    it.close()
    it.close()
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("chunksize", [None, 1])
def test_huge_range_abandoned_quickly(pool, method, chunksize):
    it = getattr(pool, method)(square, range(10**8), chunksize=chunksize)
    got = list(itertools.islice(it, 1000))
    assert len(got) == 1000
    if method == "imap":
        assert got == [x * x for x in range(1000)]
    it.close()
    pool.close()
    pool.join()  # must not run the other 10**8 items (timeout marker)


@pytest.mark.parametrize("method", METHODS)
def test_range_too_long_for_len(pool, method):
    # len(range(2**65)) raises OverflowError; imap must still work lazily.
    data = range(2**64, 2**64 + 2**65, 3)
    it = getattr(pool, method)(add_one, data, chunksize=None)
    got = list(itertools.islice(it, 50))
    expected = [x + 1 for x in itertools.islice(iter(data), 50)]
    if method == "imap":
        assert got == expected
    else:
        assert len(set(got)) == 50
        for v in got:  # each result belongs to one of the first (bounded) inputs
            q, r = divmod(v - 1 - 2**64, 3)
            assert r == 0 and 0 <= q < 100_000, v
    it.close()


@pytest.mark.not_on_dask('5,000 one-item Dask tasks, a scheduler round trip each (~4 ms here): over 20 s; test_dask.py::test_consumer_slower_than_workers_small checks the same bound on 400')
@pytest.mark.parametrize("method", METHODS)
def test_consumer_slower_than_workers(pool, method):
    source = CountingIterator(limit=5000)
    it = getattr(pool, method)(square, source, chunksize=1)
    got = []
    max_ahead = 0
    for value in it:
        got.append(value)
        if len(got) % 50 == 0:
            time.sleep(0.01)  # the consumer is slow; workers must wait for it
            max_ahead = max(max_ahead, source.pulled - len(got))
    assert len(got) == 5000
    assert max_ahead <= AHEAD_SLACK, f"read ahead up to {max_ahead} items"


# --------------------------------------------------------------------------
# An input that raises, and join() before the results are read


def failing_input(n, at):
    """0..n-1, raising LookupError instead of yielding `at`."""
    for i in range(n):
        if i == at:
            raise LookupError(f"the input broke at {i}")
        yield i


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("chunksize", [None, 1, 7])
def test_input_that_raises_comes_after_the_results_before_it(pool, method, chunksize):
    # Nothing the input gave before it raised is lost, also the items of
    # the chunk it was filling; the error comes where the input ended.
    got = []
    with pytest.raises(LookupError, match="the input broke at 157"):
        for x in getattr(pool, method)(square, failing_input(1000, 157), chunksize):
            got.append(x)
    assert sorted(got) == [i * i for i in range(157)]
    assert pool.map(square, range(4)) == [0, 1, 4, 9]  # the pool carries on


def test_map_over_an_input_that_raises(pool):
    with pytest.raises(LookupError, match="the input broke at 57"):
        pool.map(square, failing_input(1000, 57))
    assert pool.map(square, range(4)) == [0, 1, 4, 9]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("source", ["range", "generator"])
def test_join_finishes_an_imap_that_was_not_read(pool, method, source):
    # As with multiprocessing.Pool: join() waits for all the submitted
    # work, also the part of an imap still held back by its read-ahead
    # bound; the results are read afterwards.
    n = 20_000
    data = range(n) if source == "range" else (i for i in range(n))
    it = getattr(pool, method)(square, data)
    first = next(it)
    pool.close()
    pool.join()
    assert sorted([first, *it]) == [i * i for i in range(n)]


def test_join_then_reading_an_imap_whose_input_raises(pool):
    it = pool.imap(square, failing_input(5000, 4321))
    assert next(it) == 0
    pool.close()
    pool.join()  # the input's error belongs to the reader, not to join()
    got = [0]
    with pytest.raises(LookupError, match="the input broke at 4321"):
        for x in it:
            got.append(x)
    assert got == [i * i for i in range(4321)]
