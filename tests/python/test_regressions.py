"""Regression tests for hangs and wrong results found in review.

Each test is the smallest reproduction of a bug that once hung the process,
lost a wake-up or reported the wrong failure.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import os
import sys
import threading
import time

import pytest

import gilfree
from gfsupport import native_threads, wait_until


def slow_first(x):
    if x == 0:
        time.sleep(0.2)  # releases the GIL, then needs it back to finish
    return x


def imap_inside_task(pool, n):
    it = pool.imap(slow_first, range(n), chunksize=1)
    time.sleep(0.05)  # let the other worker take chunk 0
    return list(it)


@pytest.mark.timeout(30)
def test_imap_consumed_on_a_worker_of_the_same_pool():
    # The consumer, a worker of the pool, used to spin holding the GIL while
    # the chunk it needed was being finished by the other worker.
    with gilfree.Pool(2, backend="threads") as pool:
        assert pool.apply(imap_inside_task, (pool, 20)) == list(range(20))


def busy(x):
    s = 0
    for i in range(2000):
        s += i
    return x


def inc(x):
    return x + 1


@pytest.mark.timeout(60)
def test_chained_imaps_on_one_pool():
    for _ in range(3):
        with gilfree.Pool(2, backend="threads") as pool:
            out = list(pool.imap(inc, pool.imap(busy, range(50))))
        assert out == list(range(1, 51))


@pytest.mark.timeout(60)
def test_terminate_never_leaves_a_waited_future_running():
    # PoolTerminated used to land inside Future.set_result (after the user
    # call had returned), leaving the future RUNNING forever.
    for _ in range(10):
        pool = gilfree.Pool(1, backend="threads")
        fut = pool.submit(time.sleep, 0.05)
        waiter = threading.Thread(target=fut.exception)  # creates the Condition
        waiter.start()
        time.sleep(0.01)
        pool.terminate()
        waiter.join(5)
        assert not waiter.is_alive(), fut
        assert fut.done()


def fail_low_late(x):
    if x == 0:
        time.sleep(0.2)
        raise ValueError("index 0")
    raise KeyError(f"index {x}")


@pytest.mark.timeout(30)
def test_map_reports_the_lowest_failing_index():
    with gilfree.Pool(2, backend="threads") as pool:
        with pytest.raises(ValueError) as info:
            pool.map(fail_low_late, list(range(4)), chunksize=1)
    assert "input index 0" in str(info.value.__cause__)


N_GC = 5003


def scan_unfinished_results(x):
    if x == 0:
        for obj in gc.get_objects():
            if type(obj) is list and len(obj) == N_GC:
                sum(1 for _ in obj)  # would crash on the NULL slots
    return x


@pytest.mark.timeout(30)
def test_map_results_are_hidden_from_gc_until_complete():
    with gilfree.Pool(2, backend="threads") as pool:
        assert pool.map(scan_unfinished_results, range(N_GC), chunksize=1) == list(range(N_GC))


@pytest.mark.timeout(30)
def test_dropping_an_unjoined_pool_does_not_block():
    pool = gilfree.Pool(1, backend="threads")
    pool.apply_async(time.sleep, (1.0,))
    started = time.monotonic()
    with pytest.warns(ResourceWarning):
        del pool
        gc.collect()
    assert time.monotonic() - started < 0.5  # the running call is not awaited
    # Its thread still finishes the call and exits by itself.
    assert wait_until(lambda: not native_threads(), timeout=5), native_threads()


def sleep_return(x):
    time.sleep(0.01)
    return x


@pytest.mark.timeout(30)
def test_results_pending_at_fork_raise_in_the_child():
    with gilfree.Pool(2, backend="threads") as pool:
        pending = pool.apply_async(time.sleep, (0.3,))
        it = pool.imap(sleep_return, range(1000))
        next(it)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 0
            try:
                pending.get(timeout=2)
                code |= 1
            except RuntimeError:
                pass
            except BaseException:
                code |= 2
            try:
                next(it)
                code |= 4
            except RuntimeError:
                pass
            except BaseException:
                code |= 8
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        it.close()
        pending.get(timeout=5)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.timeout(30)
def test_cancelled_future_is_seen_by_wait():
    pool = gilfree.Pool(1, backend="threads")
    blocker = pool.submit(time.sleep, 0.3)
    queued = [pool.submit(inc, i) for i in range(5)]
    pool.terminate()
    done, not_done = cf.wait(queued + [blocker], timeout=5)
    assert not not_done


def _child_blocked_signals(_=None):
    """SigBlk of a process started here (it inherits this thread's mask)."""
    import subprocess

    code = ("print([l.split()[1] for l in open('/proc/self/status') "
            "if l.startswith('SigBlk')][0])")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()


def test_a_process_started_from_a_worker_thread_gets_the_users_signal_mask():
    # Worker threads used to run tasks with every signal blocked, and a
    # process started there inherited that: a multiprocessing forkserver
    # started from a task never reaped its children (the program hung at
    # exit) and subprocesses ignored SIGTERM and Ctrl-C.
    with gilfree.Pool(1, backend="threads") as pool:
        assert pool.apply(_child_blocked_signals) == _child_blocked_signals()
