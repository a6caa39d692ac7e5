"""Error behaviour from docs/api-contract.md: argument errors raised at the call,
exceptions raised by the function, callbacks, timeouts and closed pools."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import re
import sys
import threading
import time

import pytest

import gilfree
from gfsupport import (
    CustomError,
    Opaque,
    add,
    always_fail,
    fail_on_five,
    fail_on_five_pair,
    generator_then_raise,
    raise_this,
    raise_this_at,
    record_then_fail_at,
    sleep_return,
    square,
)

pytestmark = pytest.mark.timeout(30)

HAS_NOTES = sys.version_info >= (3, 11)


# --------------------------------------------------------------------------
# Argument errors, raised in the caller at the call (even for lazy imap)

# name -> call(pool, func, iterable, **kw); each must raise before returning.
CALLS_WITH_ITERABLE = {
    "map": lambda p, f, it, **kw: p.map(f, it, **kw),
    "starmap": lambda p, f, it, **kw: p.starmap(f, it, **kw),
    "imap": lambda p, f, it, **kw: p.imap(f, it, **kw),
    "imap_unordered": lambda p, f, it, **kw: p.imap_unordered(f, it, **kw),
    "gilfree.map": lambda p, f, it, **kw: gilfree.map(f, it, workers=2, backend=p.backend, **kw),
}

CALLS_WITH_FUNC_ONLY = {
    "apply": lambda p, f: p.apply(f, (1,)),
    "apply_async": lambda p, f: p.apply_async(f, (1,)),
    "submit": lambda p, f: p.submit(f, 1),
}


def _good_iterable(name):
    return [(1, 2), (3, 4)] if name == "starmap" else [1, 2, 3]


def _good_func(name):
    return add if name == "starmap" else square


@pytest.mark.parametrize("name", list(CALLS_WITH_ITERABLE) + list(CALLS_WITH_FUNC_ONLY))
@pytest.mark.parametrize(
    "bad",
    [Opaque("not-callable-7f3a"), 42, "a string", None, [square]],
    ids=["opaque", "int", "str", "none", "list"],
)
def test_func_not_callable(pool, name, bad):
    with pytest.raises(TypeError) as excinfo:
        if name in CALLS_WITH_ITERABLE:
            CALLS_WITH_ITERABLE[name](pool, bad, _good_iterable(name))
        else:
            CALLS_WITH_FUNC_ONLY[name](pool, bad)
    assert repr(bad) in str(excinfo.value)
    # The pool is still fine.
    assert pool.map(square, [3]) == [9]


@pytest.mark.parametrize("name", list(CALLS_WITH_ITERABLE))
@pytest.mark.parametrize(
    "bad",
    [Opaque("not-iterable-91c2"), 12345, None, 3.5],
    ids=["opaque", "int", "none", "float"],
)
def test_iterable_not_iterable(pool, name, bad):
    with pytest.raises(TypeError) as excinfo:
        CALLS_WITH_ITERABLE[name](pool, _good_func(name), bad)
    assert repr(bad) in str(excinfo.value)
    assert pool.map(square, [3]) == [9]


@pytest.mark.parametrize("name", list(CALLS_WITH_ITERABLE))
@pytest.mark.parametrize("chunksize", [0, -1, -(2**70)])
def test_chunksize_too_small(pool, name, chunksize):
    with pytest.raises(ValueError):
        CALLS_WITH_ITERABLE[name](pool, _good_func(name), _good_iterable(name), chunksize=chunksize)


@pytest.mark.parametrize("name", list(CALLS_WITH_ITERABLE))
@pytest.mark.parametrize("chunksize", [1.5, 2.0, "2", True, False, [1]], ids=repr)
def test_chunksize_not_int(pool, name, chunksize):
    with pytest.raises(TypeError):
        CALLS_WITH_ITERABLE[name](pool, _good_func(name), _good_iterable(name), chunksize=chunksize)


@pytest.mark.parametrize("index", [0, 13])
def test_starmap_item_not_iterable(pool, index):
    items = [(i, i) for i in range(20)]
    items[index] = Opaque("item")
    with pytest.raises(TypeError) as excinfo:
        pool.starmap(add, items)
    assert re.search(rf"(?<!\d){index}(?!\d)", str(excinfo.value)), str(excinfo.value)


def test_starmap_item_not_iterable_from_generator(pool):
    def items():
        yield (1, 2)
        yield (3, 4)
        yield 17  # index 2, and a value that differs from the index

    with pytest.raises(TypeError) as excinfo:
        pool.starmap(add, items())
    assert re.search(r"(?<!\d)2(?!\d)", str(excinfo.value)), str(excinfo.value)


# --------------------------------------------------------------------------
# Pool construction


@pytest.mark.parametrize("workers", [0, -1, -(2**70)])
def test_pool_workers_too_small(workers, backend):
    with pytest.raises(ValueError):
        gilfree.Pool(workers, backend=backend)
    with pytest.raises(ValueError):
        gilfree.Pool(workers=workers, backend=backend)


@pytest.mark.parametrize("workers", [1.5, 2.0, "2", True, False, [2]], ids=repr)
def test_pool_workers_not_int(workers, backend):
    with pytest.raises(TypeError):
        gilfree.Pool(workers, backend=backend)


@pytest.mark.parametrize("bad_backend", ["bogus", "THREADS", ""])
def test_pool_unknown_backend(bad_backend):
    with pytest.raises(ValueError) as excinfo:
        gilfree.Pool(2, backend=bad_backend)
    msg = str(excinfo.value)
    assert repr(bad_backend) in msg or (bad_backend and bad_backend in msg), msg
    # Checked in Python before the C core: names every backend.
    assert "available backends: 'auto', 'threads', 'processes', 'dask'" in msg, msg


def test_oneshot_map_bad_arguments():
    with pytest.raises(ValueError):
        gilfree.map(square, [1], workers=0)
    with pytest.raises(TypeError):
        gilfree.map(square, [1], workers=True)
    with pytest.raises(ValueError, match="bogus"):
        gilfree.map(square, [1], backend="bogus")
    with pytest.raises(ValueError):
        gilfree.map(square, [1], chunksize=0)
    with pytest.raises(TypeError):
        gilfree.map(Opaque("x"), [1])


# --------------------------------------------------------------------------
# Exceptions raised by the function


def _run_failing(pool, method):
    """Run fail_on_five over range(20) (index == value) with the given method."""
    if method == "map":
        return pool.map(fail_on_five, range(20))
    if method == "starmap":
        return pool.starmap(fail_on_five_pair, [(i, i) for i in range(20)])
    if method == "imap":
        return list(pool.imap(fail_on_five, range(20)))
    if method == "imap_unordered":
        return list(pool.imap_unordered(fail_on_five, range(20)))
    if method == "gilfree.map":
        return gilfree.map(fail_on_five, range(20), workers=2, backend=pool.backend)
    raise AssertionError(method)


INDEXED_METHODS = ["map", "starmap", "imap", "imap_unordered", "gilfree.map"]


def _func_name(method):
    return "fail_on_five_pair" if method == "starmap" else "fail_on_five"


@pytest.mark.parametrize("method", INDEXED_METHODS)
def test_error_type_message_and_remote_traceback(pool, method):
    with pytest.raises(ValueError, match="bad input 5") as excinfo:
        _run_failing(pool, method)
    exc = excinfo.value
    assert type(exc) is ValueError
    cause = exc.__cause__
    assert isinstance(cause, gilfree.RemoteTraceback), repr(cause)
    text = str(cause)
    assert "input index 5" in text, text
    assert _func_name(method) in text, text  # the worker's frame
    assert "Traceback (most recent call last)" in text, text
    assert "bad input 5" in text, text
    assert pool.map(square, [2]) == [4]  # the pool survives


@pytest.mark.skipif(not HAS_NOTES, reason="PEP 678 notes need Python 3.11")
@pytest.mark.parametrize("method", INDEXED_METHODS)
def test_error_notes(pool, method):
    with pytest.raises(ValueError) as excinfo:
        _run_failing(pool, method)
    notes = getattr(excinfo.value, "__notes__", [])
    assert any(_func_name(method) in n and "input index 5" in n for n in notes), notes


@pytest.mark.parametrize("method", INDEXED_METHODS)
def test_error_is_the_same_object(pool, method, in_process):
    exc = CustomError("custom failure", code=7)
    func = functools.partial(raise_this_at, exc, 3)
    with pytest.raises(CustomError) as excinfo:
        if method == "starmap":
            pool.starmap(func, [(i,) for i in range(10)])
        elif method == "gilfree.map":
            gilfree.map(func, range(10), workers=2, backend=pool.backend)
        elif method == "map":
            pool.map(func, range(10))
        else:
            list(getattr(pool, method)(func, range(10)))
    got = excinfo.value
    assert type(got) is CustomError
    assert got.args == ("custom failure", 7)
    assert got.code == 7
    if in_process:
        assert got is exc
    assert "input index 3" in str(got.__cause__)


@pytest.mark.parametrize("exc_type", [KeyError, ZeroDivisionError, RuntimeError, OSError])
def test_builtin_exception_types(pool, exc_type):
    exc = exc_type("payload")
    with pytest.raises(exc_type):
        pool.map(functools.partial(raise_this_at, exc, 1), range(4))


def test_apply_error(pool, in_process):
    exc = CustomError("apply failure", 3)
    with pytest.raises(CustomError) as excinfo:
        pool.apply(raise_this, (exc,))
    if in_process:
        assert excinfo.value is exc
    cause = excinfo.value.__cause__
    assert isinstance(cause, gilfree.RemoteTraceback), repr(cause)
    assert "raise_this" in str(cause)
    assert "apply failure" in str(cause)


@pytest.mark.skipif(not HAS_NOTES, reason="PEP 678 notes need Python 3.11")
def test_apply_error_notes(pool):
    with pytest.raises(ValueError) as excinfo:
        pool.apply(always_fail)
    notes = getattr(excinfo.value, "__notes__", [])
    assert any("always_fail" in n for n in notes), notes


def test_apply_async_error(pool, in_process):
    exc = CustomError("async failure", 4)
    ar = pool.apply_async(raise_this, (exc,))
    ar.wait(10)
    assert ar.ready()
    assert ar.successful() is False
    for _ in range(2):  # get() re-raises every time
        with pytest.raises(CustomError) as excinfo:
            ar.get(timeout=10)
        if in_process:
            assert excinfo.value is exc
        assert isinstance(excinfo.value.__cause__, gilfree.RemoteTraceback)


def test_submit_future_holds_original_exception(pool, in_process):
    exc = CustomError("future failure", 5)
    fut = pool.submit(raise_this, exc)
    assert isinstance(fut, cf.Future)
    got = fut.exception(timeout=10)
    assert type(got) is CustomError
    assert got.args == ("future failure", 5)
    if in_process:
        assert got is exc
    with pytest.raises(CustomError):
        fut.result()


def test_map_stops_dispatching_after_first_error(pool, recorder):
    n = 10**6
    func = functools.partial(record_then_fail_at, recorder.path, 5)
    with pytest.raises(ValueError, match="bad input 5"):
        pool.map(func, range(n), chunksize=1)
    pool.close()
    pool.join()  # whatever was still running has finished now
    ran = recorder.count()
    assert 6 <= ran < n // 10, f"{ran} of {n} items ran after an error at index 5"


def test_starmap_stops_dispatching_after_first_error(pool, recorder):
    n = 2 * 10**5
    func = functools.partial(record_then_fail_at, recorder.path, 5)
    with pytest.raises(ValueError, match="bad input 5"):
        pool.starmap(func, ((i,) for i in range(n)), chunksize=1)
    pool.close()
    pool.join()
    ran = recorder.count()
    assert ran < n // 2, f"{ran} of {n} items ran after an error at index 5"


def test_oneshot_map_error_cleans_up(backend, recorder):
    func = functools.partial(record_then_fail_at, recorder.path, 5)
    with pytest.raises(ValueError):
        gilfree.map(func, range(10**6), chunksize=1, workers=2, backend=backend)
    ran = recorder.count()
    assert ran < 10**5, ran


def test_imap_raises_at_position_and_continues(pool):
    it = pool.imap(fail_on_five, range(12), chunksize=1)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="bad input 5") as excinfo:
        next(it)
    assert "input index 5" in str(excinfo.value.__cause__)
    assert list(it) == [6, 7, 8, 9, 10, 11]


def test_imap_unordered_raises_and_continues(pool):
    it = pool.imap_unordered(fail_on_five, range(12), chunksize=1)
    results, errors = [], []
    for _ in range(13):  # one more than the items: the last must be StopIteration
        try:
            results.append(next(it))
        except StopIteration:
            break
        except ValueError as exc:
            errors.append(exc)
    else:  # pragma: no cover
        pytest.fail("imap_unordered yielded too many items")
    assert sorted(results) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert len(errors) == 1
    assert "input index 5" in str(errors[0].__cause__)


def test_imap_several_errors(pool):
    it = pool.imap(always_fail, range(3), chunksize=1)
    for i in range(3):
        with pytest.raises(ValueError) as excinfo:
            next(it)
        assert f"input index {i}" in str(excinfo.value.__cause__)
    with pytest.raises(StopIteration):
        next(it)


def test_input_iterator_error_propagates(pool):
    # Not spelled out in the contract; the natural (and multiprocessing) behaviour.
    exc = LookupError("input broke")
    with pytest.raises(LookupError, match="input broke"):
        pool.map(square, generator_then_raise(10, exc))
    assert pool.map(square, [1, 2]) == [1, 4]


# --------------------------------------------------------------------------
# Callbacks


def test_error_callback_receives_exception(pool, in_process):
    exc = CustomError("to the error callback", 9)
    got = []
    done = threading.Event()

    def callback(result):  # pragma: no cover - must not be called
        got.append(("callback", result))
        done.set()

    def error_callback(e):
        got.append(("error", e))
        done.set()

    ar = pool.apply_async(raise_this, (exc,), callback=callback, error_callback=error_callback)
    assert done.wait(10)
    ar.wait(10)
    assert len(got) == 1
    kind, e = got[0]
    assert kind == "error"
    assert type(e) is CustomError and e.args == ("to the error callback", 9)
    if in_process:
        assert e is exc


class _HookRecorder:
    def __init__(self):
        self.calls = []
        self.event = threading.Event()

    def __call__(self, unraisable):
        self.calls.append((unraisable.exc_type, unraisable.exc_value))
        self.event.set()


def _raising_callback(result):
    raise RuntimeError(f"callback failed on {result!r}")


def test_callback_exception_goes_to_unraisablehook(pool, monkeypatch):
    hook = _HookRecorder()
    monkeypatch.setattr(sys, "unraisablehook", hook)
    ar = pool.apply_async(square, (7,), callback=_raising_callback)
    assert hook.event.wait(10), "sys.unraisablehook was not called"
    assert ar.get(timeout=10) == 49  # the result is not lost either
    exc_type, exc_value = hook.calls[0]
    assert exc_type is RuntimeError
    assert "callback failed on 49" in str(exc_value)
    assert pool.map(square, [2]) == [4]


def test_error_callback_exception_goes_to_unraisablehook(pool, monkeypatch):
    hook = _HookRecorder()
    monkeypatch.setattr(sys, "unraisablehook", hook)
    ar = pool.apply_async(always_fail, callback=None, error_callback=_raising_callback)
    assert hook.event.wait(10), "sys.unraisablehook was not called"
    with pytest.raises(ValueError, match="always fails"):
        ar.get(timeout=10)
    exc_type, exc_value = hook.calls[0]
    assert exc_type is RuntimeError
    assert "callback failed on" in str(exc_value)


# --------------------------------------------------------------------------
# AsyncResult timing and state errors


def test_get_timeout_raises_builtin_timeout_error(pool):
    ar = pool.apply_async(sleep_return, (0.5, "late"))
    with pytest.raises(TimeoutError):
        ar.get(timeout=0.05)
    assert not ar.ready()
    with pytest.raises(ValueError):
        ar.successful()
    assert ar.wait(timeout=0.05) is None
    assert ar.get(timeout=10) == "late"
    assert ar.successful()


def test_successful_before_ready_raises_value_error(pool):
    ar = pool.apply_async(sleep_return, (0.5,))
    with pytest.raises(ValueError):
        ar.successful()
    ar.wait(10)
    assert ar.successful() is True


def test_future_timeout(pool):
    fut = pool.submit(sleep_return, 0.5, "x")
    with pytest.raises((TimeoutError, cf.TimeoutError)):  # the same class from 3.11 on
        fut.result(timeout=0.05)
    assert fut.result(timeout=10) == "x"


def test_join_before_close_raises_value_error(pool):
    with pytest.raises(ValueError):
        pool.join()
    assert pool.map(square, [2]) == [4]  # the failed join changed nothing


def test_join_before_close_on_fresh_pool(backend):
    p = gilfree.Pool(1, backend=backend)
    try:
        with pytest.raises(ValueError):
            p.join()
    finally:
        p.close()
        p.join()


# --------------------------------------------------------------------------
# Closed pools

CLOSED_POOL_CALLS = {
    "map": lambda p: p.map(square, [1]),
    "map_empty": lambda p: p.map(square, []),
    "starmap": lambda p: p.starmap(add, [(1, 2)]),
    "imap": lambda p: p.imap(square, [1]),
    "imap_unordered": lambda p: p.imap_unordered(square, [1]),
    "apply": lambda p: p.apply(square, (1,)),
    "apply_async": lambda p: p.apply_async(square, (1,)),
    "submit": lambda p: p.submit(square, 1),
}


@pytest.mark.parametrize("how", ["close", "close_join", "terminate", "with_block"])
@pytest.mark.parametrize("call", list(CLOSED_POOL_CALLS))
def test_closed_pool_rejects_new_work(pool, backend, how, call):
    if how == "close":
        pool.close()
    elif how == "close_join":
        pool.close()
        pool.join()
    elif how == "terminate":
        pool.terminate()
    else:
        with gilfree.Pool(2, backend=backend) as pool:
            pass
    with pytest.raises(ValueError, match="Pool is closed"):
        CLOSED_POOL_CALLS[call](pool)


def test_close_then_terminate_is_allowed(pool):
    pool.close()
    pool.terminate()
    pool.join()


def test_slow_get_with_deadline_is_honoured(pool):
    # get(timeout) must come back near its deadline, not after the task.
    ar = pool.apply_async(sleep_return, (1.0,))
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        ar.get(timeout=0.1)
    elapsed = time.monotonic() - t0
    assert elapsed < 0.9, f"get(timeout=0.1) took {elapsed:.3f} s"
