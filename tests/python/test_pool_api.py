"""Every public call of the gilfree API (docs/api-contract.md), on every backend.

Results are checked for correctness and order; speed is never checked here."""

from __future__ import annotations

import asyncio
import builtins
import collections
import concurrent.futures as cf
import functools
import operator
import os
import threading

import pytest

import gilfree
from gfsupport import (
    CallableAdder,
    Multiplier,
    Recorder,
    add,
    add_one,
    count_args,
    current_thread_name,
    identity,
    join_args,
    kw_echo,
    map_on,
    nested_oneshot,
    nested_pool_sum,
    record_and_return,
    return_none,
    sleep_return,
    square,
)

pytestmark = pytest.mark.timeout(30)

MAP_METHODS = ["map", "imap", "imap_unordered", "gilfree.map"]


def run_map(pool, method, func, iterable, chunksize=None):
    """Run one of the map-like calls and return its results as a list."""
    if method == "map":
        return pool.map(func, iterable, chunksize=chunksize)
    if method == "imap":
        return list(pool.imap(func, iterable, chunksize=chunksize))
    if method == "imap_unordered":
        return list(pool.imap_unordered(func, iterable, chunksize=chunksize))
    if method == "gilfree.map":
        return gilfree.map(func, iterable, chunksize=chunksize, workers=2, backend=pool.backend)
    raise AssertionError(method)


def check_results(method, got, expected):
    if method == "imap_unordered":
        # Same multiset; results may be unhashable, so compare their reprs.
        assert collections.Counter(map(repr, got)) == collections.Counter(map(repr, expected))
        assert len(got) == len(expected)
    else:
        assert got == expected


def gen(n, scale=1):
    for i in range(n):
        yield i * scale


# Factories: each call builds a fresh iterable (generators are single use).
ITERABLES = {
    "list": lambda: [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5],
    "tuple": lambda: (3, 1, 4, 1, 5),
    "list_of_objects": lambda: [None, 1.5, "x", (1, 2), [3], {"k": 1}, 2**100, -0.0, b"b"],
    "range": lambda: range(50),
    "range_step": lambda: range(1, 100, 7),
    "range_negative_step": lambda: range(10, -10, -3),
    "range_negative_values": lambda: range(-25, -5),
    "range_huge": lambda: range(2**64, 2**64 + 40),
    "range_across_int64_max": lambda: range(2**63 - 5, 2**63 + 5),
    "range_across_int64_min_desc": lambda: range(-(2**63) + 5, -(2**63) - 5, -1),
    "range_huge_negative_step": lambda: range(2**70, -(2**70), -(2**64 + 12345)),
    "range_huge_step_one_item": lambda: range(0, 2**100, 2**99 + 1),
    "generator": lambda: gen(30, 3),
    "generator_expression": lambda: (x * x for x in range(17)),
    "iterator": lambda: iter([7, 8, 9]),
    "map_object": lambda: builtins.map(abs, [-1, -2, -3]),
    "dict": lambda: {"b": 1, "a": 2, "c": 3},
    "dict_values": lambda: {"b": 1, "a": 2}.values(),
    "set": lambda: {5, 3, 1000, 7, -1},
    "frozenset_of_str": lambda: frozenset({"x", "yy", "zzz"}),
    "str": lambda: "hello, world",
    "bytes": lambda: b"\x00\xffabc",
    "deque": lambda: collections.deque([4, 5, 6]),
    "single_item": lambda: [42],
    "empty_list": list,
    "empty_tuple": tuple,
    "empty_range": lambda: range(5, 5),
    "empty_generator": lambda: (x for x in ()),
    "empty_dict": dict,
    "empty_set": set,
    "empty_str": str,
}


@pytest.mark.parametrize("method", MAP_METHODS)
@pytest.mark.parametrize("kind", list(ITERABLES))
def test_map_like_over_iterable_kinds(pool, method, kind):
    data = ITERABLES[kind]()
    if kind in ("set", "frozenset_of_str", "dict", "dict_values"):
        # Iteration order of a given container object is fixed: compare with it.
        expected = [repr(x) for x in data]
    else:
        expected = [repr(x) for x in ITERABLES[kind]()]
    got = run_map(pool, method, repr, data)
    assert isinstance(got, list)
    check_results(method, got, expected)


@pytest.mark.parametrize("method", MAP_METHODS)
@pytest.mark.parametrize(
    "data",
    [
        range(2**64, 2**64 + 40),
        range(2**63 - 5, 2**63 + 5),
        range(-(2**63) - 5, -(2**63) + 5),
        range(2**70, -(2**70), -(2**64 + 12345)),
        range(100, 0, -1),
        range(0, -100, -7),
    ],
    ids=["huge", "across_max", "across_min", "huge_negative_step", "descending", "negative_step"],
)
def test_ranges_compute_exact_values(pool, method, data):
    expected = [x + 1 for x in data]
    check_results(method, run_map(pool, method, add_one, data), expected)


@pytest.mark.parametrize("method", MAP_METHODS)
@pytest.mark.parametrize("chunksize", [None, 1, 2, 7, 100, 10**9])
@pytest.mark.parametrize("source", ["list", "range", "generator"])
def test_chunksizes(pool, method, chunksize, source):
    n = 257
    data = {"list": lambda: list(range(n)), "range": lambda: range(n), "generator": lambda: gen(n)}[source]()
    expected = [x * x for x in range(n)]
    check_results(method, run_map(pool, method, square, data, chunksize=chunksize), expected)


@pytest.mark.parametrize("method", ["map", "imap", "imap_unordered", "starmap"])
@pytest.mark.parametrize("chunksize", [2**31, 2**63, 2**64 + 1], ids=["2^31", "2^63", "2^64+1"])
def test_huge_chunksize_is_accepted(pool, method, chunksize):
    # Any int >= 1 is a valid chunksize (contract); a huge one means "one chunk".
    if method == "starmap":
        assert pool.starmap(add, [(1, 2), (3, 4)], chunksize=chunksize) == [3, 7]
    else:
        check_results(method, run_map(pool, method, square, range(10), chunksize=chunksize), [x * x for x in range(10)])


@pytest.mark.parametrize("method", MAP_METHODS)
def test_results_that_are_none(pool, method):
    got = run_map(pool, method, return_none, range(300))
    assert got == [None] * 300


@pytest.mark.parametrize("method", MAP_METHODS)
@pytest.mark.parametrize("source", ["range", "list", "generator"])
def test_large_input(pool, method, source):
    n = 10**5
    data = {"list": lambda: list(range(n)), "range": lambda: range(n), "generator": lambda: gen(n)}[source]()
    got = run_map(pool, method, square, data)
    check_results(method, got, [x * x for x in range(n)])


@pytest.mark.not_on_dask("100,000 one-item Dask tasks, a scheduler round trip each (~4 ms here, 8 in flight): "
                         "about 7 minutes; test_chunksizes covers chunksize=1 on 257 items")
def test_large_input_chunksize_one(pool):
    n = 10**5
    assert pool.map(add_one, range(n), chunksize=1) == list(range(1, n + 1))


@pytest.mark.parametrize("chunksize", [None, 1, 3])
def test_imap_unordered_same_multiset_with_duplicates(pool, chunksize):
    data = [i % 13 for i in range(1000)]
    got = list(pool.imap_unordered(square, data, chunksize=chunksize))
    assert collections.Counter(got) == collections.Counter(x * x for x in data)


def test_map_returns_a_new_list_each_time(pool):
    a = pool.map(square, [1, 2, 3])
    b = pool.map(square, [1, 2, 3])
    assert a == b == [1, 4, 9]
    assert a is not b
    assert type(a) is list


def test_imap_returns_an_iterator(pool):
    it = pool.imap(square, [1, 2, 3])
    assert iter(it) is it
    assert next(it) == 1
    assert list(it) == [4, 9]
    with pytest.raises(StopIteration):
        next(it)


def test_imap_unordered_returns_an_iterator(pool):
    it = pool.imap_unordered(square, [1, 2, 3])
    assert iter(it) is it
    assert sorted(it) == [1, 4, 9]
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_empty(pool, method):
    it = getattr(pool, method)(square, [])
    with pytest.raises(StopIteration):
        next(it)


# --------------------------------------------------------------------------
# Kinds of callables


def _callables():
    return {
        "builtin_abs": (abs, [-3, 2, -1], [3, 2, 1]),
        "builtin_str": (str, [1, 2.5, None], ["1", "2.5", "None"]),
        "builtin_len": (len, ["a", "bb", ""], [1, 2, 0]),
        "operator_neg": (operator.neg, [1, -2], [-1, 2]),
        "lambda": (lambda x: x * 10, [1, 2, 3], [10, 20, 30]),
        "bound_method": (Multiplier(3).mul, [1, 2, 3], [3, 6, 9]),
        "classmethod": (Multiplier.cls_name, [1], ["Multiplier:1"]),
        "staticmethod": (Multiplier.static_neg, [4], [-4]),
        "builtin_bound_method": ((2).__add__, [1, 2], [3, 4]),
        "str_method_descriptor": (str.upper, ["ab", "c"], ["AB", "C"]),
        "partial_builtin": (functools.partial(pow, 2), [0, 10, 70], [1, 1024, 2**70]),
        "partial_python": (functools.partial(add, 100), [1, 2], [101, 102]),
        "callable_instance": (CallableAdder(5), [1, 2], [6, 7]),
        "class_as_callable": (Multiplier, [2], None),  # constructor; checked by type
    }


CALLABLE_KINDS = list(_callables())


@pytest.mark.parametrize("kind", CALLABLE_KINDS)
@pytest.mark.parametrize("method", ["map", "imap", "apply", "apply_async", "submit"])
def test_kinds_of_callables(pool, method, kind):
    func, inputs, expected = _callables()[kind]
    if method == "map":
        got = pool.map(func, inputs)
    elif method == "imap":
        got = list(pool.imap(func, inputs))
    elif method == "apply":
        got = [pool.apply(func, (x,)) for x in inputs]
    elif method == "apply_async":
        got = [ar.get(timeout=10) for ar in [pool.apply_async(func, (x,)) for x in inputs]]
    else:
        got = [f.result(timeout=10) for f in [pool.submit(func, x) for x in inputs]]
    if expected is None:
        assert [type(g) for g in got] == [Multiplier] * len(inputs)
        assert [g.k for g in got] == inputs
    else:
        assert got == expected


# --------------------------------------------------------------------------
# starmap


@pytest.mark.parametrize("chunksize", [None, 1, 4, 10**9])
def test_starmap_basic(pool, chunksize):
    args = [(2, 3), (3, 2), (10, 0), (0, 0)]
    assert pool.starmap(pow, args, chunksize=chunksize) == [8, 9, 1, 1]


@pytest.mark.parametrize(
    "make, func, expected",
    [
        (lambda: [(1, 2), (3, 4)], add, [3, 7]),
        (lambda: [[1, 2], [3, 4]], add, [3, 7]),
        (lambda: ((i, i) for i in range(5)), add, [0, 2, 4, 6, 8]),
        (lambda: zip(range(3), range(10, 13)), add, [10, 12, 14]),
        (lambda: {"a": 1, "b": 2}.items(), join_args, ["a1", "b2"]),
        (lambda: [(), (1,), (1, 2, 3), range(5)], count_args, [0, 1, 3, 5]),
        (lambda: ["ab", "cde"], join_args, ["ab", "cde"]),
        (lambda: [iter([1, 2]), (x for x in (3, 4))], add, [3, 7]),
        (lambda: [], add, []),
        (lambda: iter(()), add, []),
        (lambda: [(None,)] * 50, return_none, [None] * 50),
    ],
    ids=[
        "tuples",
        "lists",
        "generator_of_tuples",
        "zip",
        "dict_items",
        "varying_arity",
        "strings_unpack",
        "iterator_items",
        "empty",
        "empty_iterator",
        "none_results",
    ],
)
def test_starmap_inputs(pool, make, func, expected):
    assert pool.starmap(func, make()) == expected


def test_starmap_large(pool):
    n = 10**5
    assert pool.starmap(add, zip(range(n), range(n))) == [2 * i for i in range(n)]


# --------------------------------------------------------------------------
# apply / apply_async / AsyncResult


def test_apply(pool):
    assert pool.apply(pow, (2, 10)) == 1024
    assert pool.apply(count_args) == 0
    assert pool.apply(kw_echo, (1,), {"b": 2}) == ((1,), {"b": 2})
    assert pool.apply(kw_echo, (), None) == ((), {})
    assert pool.apply(kw_echo, kwds={"args": 1, "kwds": 2}) == ((), {"args": 1, "kwds": 2})
    assert pool.apply(return_none) is None


def test_apply_async_result_interface(pool):
    ar = pool.apply_async(pow, (3, 4))
    assert isinstance(ar, gilfree.AsyncResult)
    assert ar.get(timeout=10) == 81
    assert ar.ready() is True
    assert ar.successful() is True
    assert ar.wait() is None
    assert ar.wait(0) is None
    assert ar.get() == 81  # get() can be repeated
    assert ar.get(timeout=0) == 81


def test_apply_async_wait_then_ready(pool):
    ar = pool.apply_async(sleep_return, (0.1, "done"))
    assert ar.wait(timeout=10) is None
    assert ar.ready()
    assert ar.successful()
    assert ar.get() == "done"


def test_apply_async_kwds(pool):
    ar = pool.apply_async(kw_echo, (1, 2), {"x": 3})
    assert ar.get(timeout=10) == ((1, 2), {"x": 3})


def test_apply_async_none_result(pool):
    assert pool.apply_async(return_none).get(timeout=10) is None


def test_apply_async_callback(pool):
    got = []
    done = threading.Event()

    def callback(result):
        got.append(result)
        done.set()

    def error_callback(exc):  # pragma: no cover - must not be called
        got.append(("error", exc))
        done.set()

    ar = pool.apply_async(pow, (2, 5), callback=callback, error_callback=error_callback)
    assert ar.get(timeout=10) == 32
    assert done.wait(10)
    assert got == [32]


def test_apply_async_callback_with_none_result(pool):
    got = []
    done = threading.Event()

    def callback(result):
        got.append(result)
        done.set()

    pool.apply_async(return_none, callback=callback).get(timeout=10)
    assert done.wait(10)
    assert got == [None]


def test_callback_runs_on_a_worker_thread(pool, in_process):
    if not in_process:
        pytest.skip("worker threads of an out-of-process backend are not ours to inspect")
    names = []
    done = threading.Event()

    def callback(result):
        names.append((threading.get_ident(), current_thread_name()))
        done.set()

    pool.apply_async(square, (3,), callback=callback).get(timeout=10)
    assert done.wait(10)
    (ident, name), = names
    assert ident != threading.main_thread().ident
    assert name.startswith("gilfree-"), name


def test_tasks_run_on_gilfree_threads(pool, in_process):
    if not in_process:
        pytest.skip("only in-process backends run tasks on our threads")
    names = set(pool.map(current_thread_name, range(50), chunksize=1))
    assert names, names
    assert all(n.startswith("gilfree-") for n in names), names


def test_many_apply_async(pool):
    results = [pool.apply_async(square, (i,)) for i in range(500)]
    assert [r.get(timeout=10) for r in results] == [i * i for i in range(500)]


# --------------------------------------------------------------------------
# submit and concurrent.futures / asyncio interop


def test_submit_returns_a_real_future(pool):
    fut = pool.submit(pow, 2, 8)
    assert isinstance(fut, cf.Future)
    assert fut.result(timeout=10) == 256
    assert fut.done()
    assert not fut.cancelled()
    assert fut.exception() is None


def test_submit_args_and_kwargs(pool):
    assert pool.submit(kw_echo, 1, 2, a=3).result(timeout=10) == ((1, 2), {"a": 3})
    # fn is positional-only: these names go to the function as keywords.
    assert pool.submit(kw_echo, fn=1, self=2).result(timeout=10) == ((), {"fn": 1, "self": 2})
    assert pool.submit(return_none).result(timeout=10) is None


def test_submit_add_done_callback(pool):
    seen = []
    done = threading.Event()

    def cb(f):
        seen.append(f.result())
        done.set()

    fut = pool.submit(square, 12)
    fut.add_done_callback(cb)
    assert fut.result(timeout=10) == 144
    assert done.wait(10)
    assert seen == [144]


def test_futures_wait(pool):
    futs = [pool.submit(sleep_return, 0.01 * (i % 3), i) for i in range(20)]
    done, not_done = cf.wait(futs, timeout=20)
    assert not not_done
    assert done == set(futs)
    assert sorted(f.result() for f in done) == list(range(20))


def test_futures_wait_first_completed(pool):
    futs = [pool.submit(sleep_return, 0.0, "fast"), pool.submit(sleep_return, 0.3, "slow")]
    done, _ = cf.wait(futs, timeout=20, return_when=cf.FIRST_COMPLETED)
    assert done
    cf.wait(futs, timeout=20)
    assert all(f.done() for f in futs)


def test_futures_as_completed(pool):
    futs = {pool.submit(square, i): i for i in range(30)}
    seen = []
    for f in cf.as_completed(futs, timeout=20):
        assert f.result() == futs[f] ** 2
        seen.append(futs[f])
    assert sorted(seen) == list(range(30))


def test_asyncio_wrap_future(pool):
    async def main():
        wrapped = [asyncio.wrap_future(pool.submit(square, i)) for i in range(20)]
        slow = asyncio.wrap_future(pool.submit(sleep_return, 0.05, "slow"))
        results = await asyncio.gather(*wrapped)
        return results, await asyncio.wait_for(slow, 10)

    results, slow = asyncio.run(main())
    assert results == [i * i for i in range(20)]
    assert slow == "slow"


# --------------------------------------------------------------------------
# Pool attributes, close/join/terminate, context manager


def test_pool_attributes(pool, backend):
    assert pool.workers == 2
    assert pool.backend == backend


def test_workers_default_is_usable_cpus(backend):
    with gilfree.Pool(backend=backend) as p:
        assert p.workers == gilfree.usable_cpus()
        assert p.map(square, range(10)) == [x * x for x in range(10)]
    with gilfree.Pool(None, backend=backend) as p:
        assert p.workers == gilfree.usable_cpus()


@pytest.mark.parametrize("workers", [1, 3, 8])
def test_explicit_worker_counts(backend, workers):
    with gilfree.Pool(workers, backend=backend) as p:
        assert p.workers == workers
        assert p.map(square, range(100), chunksize=1) == [x * x for x in range(100)]
    with gilfree.Pool(workers=workers, backend=backend) as p:
        assert p.workers == workers


def test_default_backend_is_auto():
    # Issue 4: "auto" is the default; it says "auto" until it has measured a
    # function (tests/python/test_auto.py covers the decisions).
    with gilfree.Pool(1) as p:
        assert isinstance(p, gilfree.Pool)
        assert p.backend == "auto" and p.decision is None


def test_usable_cpus():
    n = gilfree.usable_cpus()
    assert type(n) is int
    assert 1 <= n <= len(os.sched_getaffinity(0))
    assert n <= (os.cpu_count() or n)
    assert gilfree.usable_cpus() == n  # stable


def test_public_names():
    assert issubclass(gilfree.RemoteTraceback, Exception)
    assert isinstance(gilfree.AsyncResult, type)
    assert isinstance(gilfree.Pool, type)
    for name in ("map", "usable_cpus"):
        assert callable(getattr(gilfree, name))


def test_close_is_idempotent_and_join_waits_for_queued_work(pool, recorder):
    results = [pool.apply_async(record_and_return, (recorder.path, i)) for i in range(20)]
    pool.close()
    pool.close()
    pool.join()
    assert sorted(int(x) for x in recorder.lines()) == list(range(20))
    assert [r.get(timeout=0) for r in results] == list(range(20))


def test_terminate_then_join(pool):
    assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]
    pool.terminate()
    pool.join()


def test_terminate_cancels_the_futures_of_calls_that_never_started(pool):
    import time

    # At most two calls per worker have started (processes send one call
    # ahead); the rest never did, and terminate() leaves their futures
    # cancelled, as concurrent.futures does: cancelled() is True, wait()
    # and as_completed() see them done.
    futures = [pool.submit(time.sleep, 0.3) for _ in range(12)]
    pool.terminate()
    pool.join()
    done, not_done = cf.wait(futures, timeout=10)
    assert not not_done
    cancelled = [f for f in futures if f.cancelled()]
    assert len(cancelled) >= len(futures) - 2 * pool.workers
    for f in futures:
        if not f.cancelled():
            # Started: it finished, or it was stopped with the pool.
            assert f.exception() is None or isinstance(f.exception(), cf.CancelledError)


def test_context_manager_returns_pool_and_finishes_work(backend, recorder):
    with gilfree.Pool(2, backend=backend) as p:
        assert isinstance(p, gilfree.Pool)
        results = [p.apply_async(record_and_return, (recorder.path, i)) for i in range(20)]
    # __exit__ is close()+join(): everything queued ran.
    assert sorted(int(x) for x in recorder.lines()) == list(range(20))
    assert [r.get(timeout=0) for r in results] == list(range(20))
    with pytest.raises(ValueError, match="Pool is closed"):
        p.map(square, [1])


def test_context_manager_propagates_exception(backend):
    with pytest.raises(KeyError, match="boom"):
        with gilfree.Pool(2, backend=backend) as p:
            assert p.map(square, [2]) == [4]
            raise KeyError("boom")
    with pytest.raises(ValueError, match="Pool is closed"):
        p.apply(square, (1,))


# --------------------------------------------------------------------------
# gilfree.map one-shot


@pytest.mark.parametrize("chunksize", [None, 1, 1000])
def test_oneshot_map(backend, chunksize):
    got = gilfree.map(square, range(1000), chunksize=chunksize, workers=2, backend=backend)
    assert got == [x * x for x in range(1000)]


def test_oneshot_map_defaults():
    assert gilfree.map(square, [1, 2, 3]) == [1, 4, 9]
    assert gilfree.map(square, []) == []
    assert gilfree.map(square, iter([4])) == [16]


def test_oneshot_map_keyword_only():
    with pytest.raises(TypeError):
        gilfree.map(square, [1, 2], 1)  # chunksize is keyword-only


# --------------------------------------------------------------------------
# Nested use and many callers


@pytest.mark.not_on_dask("inside a Dask task a Pool(backend='dask') needs client= (it cannot start a LocalCluster "
                         "in a worker process: RuntimeError, checked in test_dask.py)")
def test_task_creates_its_own_pool(pool, backend):
    assert pool.map(functools.partial(nested_pool_sum, backend), [10, 20, 0]) == [
        sum(x * x for x in range(10)),
        sum(x * x for x in range(20)),
        0,
    ]


@pytest.mark.not_on_dask("inside a Dask task a Pool(backend='dask') needs client= (it cannot start a LocalCluster "
                         "in a worker process: RuntimeError, checked in test_dask.py)")
def test_task_uses_oneshot_map(pool, backend):
    assert pool.map(functools.partial(nested_oneshot, backend), [3, 4]) == [[0, 1, 4], [0, 1, 4, 9]]


def test_task_submits_to_another_pool(pool, backend, in_process):
    if not in_process:
        pytest.skip("a Pool object cannot be sent to another process")
    with gilfree.Pool(2, backend=backend) as inner:
        got = pool.map(functools.partial(map_on, inner), [5, 3, 0], chunksize=1)
    assert got == [[0, 1, 4, 9, 16], [0, 1, 4], []]


def test_many_concurrent_callers(pool):
    n_threads = 6
    rounds = 8
    barrier = threading.Barrier(n_threads)
    errors = []
    done = []

    def caller(k):
        try:
            barrier.wait(10)
            for r in range(rounds):
                base = k * 1000 + r
                assert pool.map(square, range(base, base + 200)) == [x * x for x in range(base, base + 200)]
                assert pool.starmap(add, [(base, i) for i in range(50)]) == [base + i for i in range(50)]
                assert list(pool.imap(add_one, range(base, base + 100), chunksize=3)) == list(
                    range(base + 1, base + 101)
                )
                assert sorted(pool.imap_unordered(square, range(50))) == [x * x for x in range(50)]
                assert pool.apply(add, (base, 1)) == base + 1
                assert pool.apply_async(add, (base, 2)).get(timeout=20) == base + 2
                assert pool.submit(add, base, 3).result(timeout=20) == base + 3
            done.append(k)
        except BaseException as exc:  # reported below
            errors.append((k, exc))

    threads = [threading.Thread(target=caller, args=(k,), name=f"caller-{k}") for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(25)
    assert not [t.name for t in threads if t.is_alive()], "callers hung"
    assert not errors, errors
    assert sorted(done) == list(range(n_threads))


def test_interleaved_imaps_on_one_pool(pool):
    a = pool.imap(square, range(100), chunksize=1)
    b = pool.imap(add_one, range(100), chunksize=2)
    got_a, got_b = [], []
    for x, y in zip(a, b):
        got_a.append(x)
        got_b.append(y)
    assert got_a == [x * x for x in range(100)]
    assert got_b == list(range(1, 101))


def test_identity_of_results_in_process(pool, in_process):
    if not in_process:
        pytest.skip("objects are copied between processes")
    objs = [object() for _ in range(10)]
    got = pool.map(identity, objs)
    assert all(g is o for g, o in zip(got, objs))


def test_recorder_sanity(recorder):
    # The helper the other tests rely on.
    record_and_return(recorder.path, "a")
    record_and_return(recorder.path, "b")
    assert Recorder(recorder.path).lines() == ["a", "b"]
