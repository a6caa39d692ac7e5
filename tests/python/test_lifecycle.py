"""Pool lifecycle: worker threads come and go with the pool; terminate cancels
queued work; garbage collection of an open pool warns and cleans up; fork."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import gc
import os
import re
import select
import signal
import threading
import time
import warnings

import pytest

import gilfree
from gfsupport import (
    native_threads,
    record_and_return,
    record_sleep_record,
    sleep_return,
    square,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)

GRACE_S = 2.0


def new_gilfree_threads(before):
    return {tid: name for tid, name in native_threads().items() if tid not in before}


def assert_threads_gone(before, what):
    gone = wait_until(lambda: not new_gilfree_threads(before), timeout=GRACE_S)
    assert gone, f"gilfree threads still alive after {what}: {new_gilfree_threads(before)}"


# --------------------------------------------------------------------------
# Worker threads


def test_worker_threads_are_named_and_hidden_from_threading(backend, in_process):
    if not in_process:
        pytest.skip("an out-of-process backend has no worker threads here")
    before = set(native_threads())
    py_before = len(threading.enumerate())
    with gilfree.Pool(3, backend=backend) as p:
        assert p.map(square, range(100), chunksize=1) == [x * x for x in range(100)]
        # A thread may name itself a moment after it starts: poll.
        # The first chunk of a thread pool's map may run under the GIL probe
        # (the PerformanceWarning check): its sampler thread, "gilfree-probe",
        # is joined before map returns, but the kernel can list an exited
        # thread in /proc for a moment after pthread_join.  Count workers.
        def workers_now():
            return {tid: name for tid, name in new_gilfree_threads(before).items()
                    if name != "gilfree-probe"}
        wait_until(lambda: len(workers_now()) >= 3, timeout=GRACE_S)
        workers = workers_now()
        assert len(workers) == 3, workers
        assert all(re.fullmatch(r"gilfree-\d+", name) for name in workers.values()), workers
        assert len(set(workers.values())) == 3, workers  # distinct indices
        names = [t.name for t in threading.enumerate()]
        assert not [n for n in names if n.startswith("gilfree")], names
        assert len(threading.enumerate()) == py_before
    assert_threads_gone(before, "the with-block")


def test_no_threads_after_close_join(backend):
    before = set(native_threads())
    p = gilfree.Pool(2, backend=backend)
    assert p.map(square, range(50)) == [x * x for x in range(50)]
    p.close()
    p.join()
    assert_threads_gone(before, "close()+join()")


def test_no_threads_after_terminate(backend):
    before = set(native_threads())
    p = gilfree.Pool(2, backend=backend)
    assert p.map(square, range(50)) == [x * x for x in range(50)]
    p.terminate()  # terminate() joins
    assert_threads_gone(before, "terminate()")
    p.join()


def test_no_threads_after_terminate_of_idle_pool(backend):
    before = set(native_threads())
    p = gilfree.Pool(2, backend=backend)
    p.terminate()
    p.join()
    assert_threads_gone(before, "terminate() of an unused pool")


def test_no_threads_after_with_block(backend):
    before = set(native_threads())
    with gilfree.Pool(2, backend=backend) as p:
        p.map(square, range(10))
    assert_threads_gone(before, "the with-block")


def test_no_threads_after_with_block_exception(backend):
    before = set(native_threads())
    with pytest.raises(ZeroDivisionError):
        with gilfree.Pool(2, backend=backend) as p:
            p.apply_async(sleep_return, (0.2,))
            1 / 0
    assert_threads_gone(before, "a with-block left by an exception")


def test_no_threads_after_oneshot_map(backend):
    before = set(native_threads())
    assert gilfree.map(square, range(100), workers=3, backend=backend) == [x * x for x in range(100)]
    assert_threads_gone(before, "gilfree.map()")


def test_garbage_collected_open_pool_warns_and_cleans_up(backend):
    before = set(native_threads())
    p = gilfree.Pool(2, backend=backend)
    assert p.map(square, range(10)) == [x * x for x in range(10)]
    with pytest.warns(ResourceWarning):
        del p
        gc.collect()
    assert_threads_gone(before, "garbage collection of an unclosed pool")


def test_garbage_collected_unused_pool_warns(backend):
    before = set(native_threads())
    p = gilfree.Pool(2, backend=backend)
    with pytest.warns(ResourceWarning):
        del p
        gc.collect()
    assert_threads_gone(before, "garbage collection of an unused pool")


def test_closed_and_joined_pool_collects_silently(backend):
    p = gilfree.Pool(2, backend=backend)
    p.map(square, range(10))
    p.close()
    p.join()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del p
        gc.collect()


def test_many_pools_in_sequence(backend):
    before = set(native_threads())
    for i in range(20):
        with gilfree.Pool(2, backend=backend) as p:
            assert p.apply(square, (i,)) == i * i
    assert_threads_gone(before, "20 pools")


def test_many_pools_at_once(backend):
    before = set(native_threads())
    pools = [gilfree.Pool(1, backend=backend) for _ in range(10)]
    try:
        assert [p.apply(square, (i,)) for i, p in enumerate(pools)] == [i * i for i in range(10)]
    finally:
        for p in pools:
            p.close()
        for p in pools:
            p.join()
    assert_threads_gone(before, "10 pools")


# --------------------------------------------------------------------------
# close / terminate semantics


def _wait_started(recorder, n, timeout=10):
    ok = wait_until(lambda: sum(1 for l in recorder.lines() if l.startswith("start-")) >= n, timeout)
    assert ok, f"blockers did not start: {recorder.lines()}"


def test_terminate_cancels_queued_async_results(pool, recorder):
    blockers = [pool.apply_async(record_sleep_record, (recorder.path, 0.5, f"b{i}")) for i in range(2)]
    _wait_started(recorder, 2)
    queued = [pool.apply_async(record_and_return, (recorder.path, f"q{i}")) for i in range(20)]
    pool.terminate()
    # Running calls are interrupted at their next bytecode: the blockers'
    # sleep (a C call) finishes, then PoolTerminated stops them before they
    # record their end, and their results say they were cancelled.
    lines = recorder.lines()
    for i in range(2):
        assert f"end-b{i}" not in lines, lines
    for b in blockers:
        with pytest.raises(cf.CancelledError):
            b.get(timeout=5)
    ran = [l for l in lines if l.startswith("q")]
    assert len(ran) < len(queued), f"every queued task ran despite terminate(): {ran}"
    # A cancelled AsyncResult settles with an error instead of hanging.
    failures = 0
    for ar in queued:
        if ar.ready() and ar.successful():
            continue  # it had already started before terminate()
        t0 = time.monotonic()
        try:
            ar.get(timeout=5)
        except TimeoutError:
            pytest.fail(f"get() on a task cancelled by terminate() hung for {time.monotonic() - t0:.1f} s")
        except Exception:
            failures += 1
        else:
            continue
        assert ar.ready()
        assert ar.successful() is False
    assert failures >= 1


def test_terminate_cancels_queued_futures(pool, recorder):
    blockers = [pool.submit(record_sleep_record, recorder.path, 0.5, f"b{i}") for i in range(2)]
    _wait_started(recorder, 2)
    queued = [pool.submit(record_and_return, recorder.path, f"q{i}") for i in range(20)]
    pool.terminate()
    done, not_done = cf.wait(queued + blockers, timeout=5)
    assert not not_done, "futures of cancelled work never completed"
    outcomes = ["cancelled" if f.cancelled() else ("error" if f.exception() else "ok") for f in queued]
    assert outcomes.count("ok") < len(queued), outcomes


def test_terminate_cancels_queued_map_from_other_thread(pool, recorder):
    """terminate() from another thread while the main thread waits in map()."""
    func = functools.partial(record_sleep_record, recorder.path, 0.2)
    timer = threading.Timer(0.3, pool.terminate)
    timer.start()
    try:
        with pytest.raises(Exception):
            pool.map(func, range(200), chunksize=1)
    finally:
        timer.join(10)
    ran = sum(1 for l in recorder.lines() if l.startswith("start-"))
    assert ran < 200


def test_close_runs_queued_work(pool, recorder):
    blockers = [pool.apply_async(record_sleep_record, (recorder.path, 0.2, f"b{i}")) for i in range(2)]
    queued = [pool.apply_async(record_and_return, (recorder.path, f"q{i}")) for i in range(20)]
    pool.close()
    pool.join()
    assert [b.get(timeout=0) for b in blockers] == ["b0", "b1"]
    assert [q.get(timeout=0) for q in queued] == [f"q{i}" for i in range(20)]
    assert recorder.count() == 2 * 2 + 20


def test_join_without_work(backend):
    p = gilfree.Pool(2, backend=backend)
    p.close()
    p.join()
    p.join()  # repeated join returns at once


# --------------------------------------------------------------------------
# fork


def _child_check_fork(pool, backend, wfd):
    """Runs in the forked child.  Never returns: os._exit()."""
    code = 70
    lines = []
    try:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # pytest-timeout's handler is the parent's
        signal.alarm(15)
        warnings.resetwarnings()
        warnings.simplefilter("ignore")
        ok = True
        for name, call in [
            ("map", lambda: pool.map(square, range(10))),
            ("apply", lambda: pool.apply(square, (3,))),
            ("apply_async", lambda: pool.apply_async(square, (3,)).get(timeout=5)),
            ("submit", lambda: pool.submit(square, 3).result(timeout=5)),
            ("imap", lambda: list(pool.imap(square, range(10)))),
        ]:
            try:
                call()
            except (RuntimeError, ValueError) as exc:
                lines.append(f"inherited {name}: {type(exc).__name__}: {exc}")
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                ok = False
                lines.append(f"FAIL inherited {name} raised {type(exc).__name__}: {exc}")
            else:
                ok = False
                lines.append(f"FAIL inherited {name} did not raise")
        try:
            with gilfree.Pool(2, backend=backend) as fresh:
                got = fresh.map(square, range(100))
            if got != [x * x for x in range(100)]:
                ok = False
                lines.append("FAIL new pool gave wrong results")
            got = gilfree.map(square, range(10), workers=2, backend=backend)
            if got != [x * x for x in range(10)]:
                ok = False
                lines.append("FAIL gilfree.map gave wrong results")
        except BaseException as exc:  # noqa: BLE001
            ok = False
            lines.append(f"FAIL new pool raised {type(exc).__name__}: {exc}")
        code = 0 if ok else 1
    except BaseException as exc:  # noqa: BLE001
        lines.append(f"FAIL child crashed: {type(exc).__name__}: {exc}")
        code = 2
    finally:
        try:
            os.write(wfd, "\n".join(lines).encode())
        finally:
            os._exit(code)


@pytest.mark.not_on_dask("the child makes a new pool after fork(): Dask's client (event-loop thread, "
                         "sockets) does not survive fork(); test_dask.py checks the inherited pool refuses work")
@pytest.mark.parametrize("state", ["idle", "busy"])
def test_fork_with_a_pool(pool, backend, state):
    assert pool.map(square, range(10)) == [x * x for x in range(10)]  # workers exist
    slow = pool.apply_async(sleep_return, (0.5, "slow")) if state == "busy" else None
    rfd, wfd = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns (DeprecationWarning) when forking a process with threads.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(rfd)
            _child_check_fork(pool, backend, wfd)
        os.close(wfd)
        wfd = -1
        chunks = []
        deadline = time.monotonic() + 20
        status = None
        while status is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"forked child hung; its report so far: {b''.join(chunks).decode()!r}")
            ready, _, _ = select.select([rfd], [], [], min(remaining, 0.1))
            if ready:
                data = os.read(rfd, 65536)
                if data:
                    chunks.append(data)
            wpid, wstatus = os.waitpid(pid, os.WNOHANG)
            if wpid == pid:
                status = wstatus
        while True:
            data = os.read(rfd, 65536)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(rfd)
        if wfd != -1:
            os.close(wfd)
    report = b"".join(chunks).decode(errors="replace")
    assert os.WIFEXITED(status), f"child died by signal {os.WTERMSIG(status)}; report: {report}"
    assert os.WEXITSTATUS(status) == 0, f"child report:\n{report}"
    # The parent's pool is untouched by the fork.
    assert pool.map(square, range(10)) == [x * x for x in range(10)]
    if slow is not None:
        assert slow.get(timeout=10) == "slow"


def spin_forever_swallowing(_=None):
    """A pure-Python loop that even swallows ordinary exceptions."""
    n = 0
    while True:
        try:
            n += 1
        except Exception:  # noqa: BLE001 - on purpose: terminate must still stop it
            pass


@pytest.mark.not_on_dask("Dask cannot stop a task running on a worker: these never return and would hold "
                         "the session cluster's workers for good")
@pytest.mark.timeout(30)
def test_terminate_interrupts_running_python_calls(backend):
    pool = gilfree.Pool(2, backend=backend)
    running = [pool.apply_async(spin_forever_swallowing) for _ in range(2)]
    queued = pool.apply_async(spin_forever_swallowing)
    future = pool.submit(spin_forever_swallowing)
    time.sleep(0.2)  # both workers are now inside the loops
    started = time.monotonic()
    pool.terminate()  # must not wait for the endless loops
    assert time.monotonic() - started < 5
    assert pool.state == "joined"
    for r in running + [queued]:
        with pytest.raises(cf.CancelledError):
            r.get(timeout=5)
    assert future.cancelled() or isinstance(future.exception(timeout=5), cf.CancelledError)


@pytest.mark.timeout(30)
@pytest.mark.not_on_dask("Dask cannot stop a task running on a worker: these never return and would hold "
                         "the session cluster's workers for good")
def test_terminate_interrupts_a_running_map(backend):
    pool = gilfree.Pool(2, backend=backend)
    killer = threading.Timer(0.2, pool.terminate)
    killer.start()
    try:
        with pytest.raises(cf.CancelledError):
            pool.map(spin_forever_swallowing, range(4), chunksize=1)
    finally:
        killer.join()
    assert pool.state == "joined"


@pytest.mark.timeout(30)
def test_pool_terminated_is_not_an_exception_subclass():
    # So that `except Exception` in user code cannot swallow it.
    assert issubclass(gilfree.PoolTerminated, BaseException)
    assert not issubclass(gilfree.PoolTerminated, Exception)
