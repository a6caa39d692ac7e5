"""gilfree.Executor against the documented behaviour of concurrent.futures.

Written from the concurrent.futures documentation (Executor.submit / map /
shutdown, Future, wait, as_completed, asyncio interoperation) and run on both
backends, 2 workers.  Where gilfree deliberately differs (InitializerError
instead of BrokenExecutor, WorkerDiedError for one future instead of
BrokenProcessPool) the test says so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import gc
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import execsupport as es
import gfsupport
import gilfree

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def executor(backend):
    ex = gilfree.Executor(2, backend=backend)
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _markers(tmp_path, n):
    return [str(tmp_path / f"started-{i}") for i in range(n)]


def _wait_started(paths, timeout=10.0):
    assert gfsupport.wait_until(lambda: all(os.path.exists(p) for p in paths), timeout=timeout), paths


def _busy(ex, tmp_path, delay):
    """Occupy both workers with calls that run *delay* seconds; return their futures
    once both have started."""
    marks = _markers(tmp_path, 2)
    fs = [ex.submit(es.started_then_sleep, m, delay, i) for i, m in enumerate(marks)]
    _wait_started(marks)
    return fs


# --------------------------------------------------------------------------
# submit and futures


def test_is_a_concurrent_futures_executor(executor):
    assert isinstance(executor, cf.Executor)
    f = executor.submit(es.square, 12)
    assert isinstance(f, cf.Future)
    assert f.result(timeout=10) == 144
    assert executor.workers == 2


def test_submit_args_and_kwargs(executor):
    assert executor.submit(es.power, 3, exp=3).result(timeout=10) == 27
    assert executor.submit(es.power, base=2, exp=5).result(timeout=10) == 32


def test_exception_keeps_its_type(executor):
    f = executor.submit(es.raise_custom, 5)
    exc = f.exception(timeout=10)
    assert type(exc) is es.CustomError and exc.args == (5,)
    with pytest.raises(es.CustomError):
        f.result()
    with pytest.raises(ValueError, match="nope"):
        executor.submit(es.raise_value_error, "nope").result(timeout=10)


# Cancellation follows the stdlib: a call can be cancelled until it starts.
# On processes, a call counts as started once it is sent to a worker (each
# worker holds at most one call beyond the one it runs, like the call queue
# of ProcessPoolExecutor): its future then reports running() and completes.


def _check_cancelled_or_ran(futures, marks):
    """Every future was either cancelled -- and its call never ran -- or it
    reported running() when cancel() refused, and completed."""
    for f, m in zip(futures, marks):
        if f.cancelled():
            assert not os.path.exists(m), "a cancelled call ran"
            with pytest.raises(cf.CancelledError):
                f.result()
        else:
            f.result(timeout=10)  # ran to the end


def test_cancel_before_start(executor, backend, tmp_path):
    busy = _busy(executor, tmp_path, 0.4)
    marks = [str(tmp_path / f"queued-{i}") for i in range(6)]
    queued = [executor.submit(es.started_then_sleep, m, 0.0, i) for i, m in enumerate(marks)]
    refused = [f for f in queued if not f.cancel()]
    # Threads: nothing of these has started.  Processes: at most one call
    # per worker was sent ahead; the rest is cancelled.
    assert len(refused) <= (0 if backend in gfsupport.IN_PROCESS_BACKENDS else 2)
    assert all(f.running() or f.done() for f in refused)
    assert sum(f.cancelled() for f in queued) >= 4
    running = busy[0].running()
    cancelled_running = busy[0].cancel()
    assert [f.result(timeout=10) for f in busy] == [0, 1]
    executor.shutdown(wait=True)
    _check_cancelled_or_ran(queued, marks)
    assert running and not cancelled_running  # a running call cannot be cancelled


def test_shutdown_cancel_futures(executor, backend, tmp_path):
    busy = _busy(executor, tmp_path, 0.4)
    marks = [str(tmp_path / f"queued-{i}") for i in range(6)]
    queued = [executor.submit(es.started_then_sleep, m, 0.0, i) for i, m in enumerate(marks)]
    t0 = time.monotonic()
    executor.shutdown(wait=False, cancel_futures=True)
    assert time.monotonic() - t0 < 0.3  # did not wait for the running calls
    assert sum(f.cancelled() for f in queued) >= (6 if backend in gfsupport.IN_PROCESS_BACKENDS else 4)
    executor.shutdown(wait=True)
    _check_cancelled_or_ran(queued, marks)
    assert not any(f.cancelled() for f in busy)
    # The running calls were left to finish.
    assert [f.result(timeout=10) for f in busy] == [0, 1]


def test_shutdown_wait_after_nowait_waits(executor, tmp_path):
    busy = _busy(executor, tmp_path, 0.3)
    queued = [executor.submit(es.sleep_then, i, 0.05) for i in range(4)]
    executor.shutdown(wait=False)
    assert not all(f.done() for f in busy + queued)
    executor.shutdown(wait=True)
    assert all(f.done() for f in busy + queued)
    assert [f.result() for f in queued] == [0, 1, 2, 3]
    executor.shutdown(wait=True)  # idempotent
    executor.shutdown(wait=False, cancel_futures=True)


def test_no_new_work_after_shutdown(executor):
    executor.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.submit(es.square, 2)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.map(es.square, [1, 2])


def test_context_manager_waits(backend):
    with gilfree.Executor(2, backend=backend) as ex:
        assert ex.__enter__() is ex
        fs = [ex.submit(es.sleep_then, i, 0.1) for i in range(4)]
    assert all(f.done() for f in fs)
    assert [f.result() for f in fs] == [0, 1, 2, 3]
    with pytest.raises(RuntimeError):
        ex.submit(es.square, 1)


def test_done_callbacks_run(executor):
    seen = []
    done = threading.Event()

    def callback(fut):
        seen.append(fut.result())
        done.set()

    f = executor.submit(es.sleep_then, "x", 0.05)
    f.add_done_callback(callback)
    assert done.wait(10)
    # Added to a finished future: runs at once, in this thread.
    f.add_done_callback(lambda fut: seen.append(("late", fut.result())))
    assert seen == ["x", ("late", "x")]


def test_as_completed_timeout(executor):
    fast = executor.submit(es.square, 3)
    slow = executor.submit(es.sleep_then, "slow", 0.6)
    got = []
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        for f in cf.as_completed([fast, slow], timeout=0.2):
            got.append(f.result())
    assert got == [9]
    assert time.monotonic() - t0 < 0.5
    assert slow.result(timeout=10) == "slow"


def test_wait_first_completed(executor):
    slow = executor.submit(es.sleep_then, "slow", 0.5)
    fast = executor.submit(es.sleep_then, "fast", 0.01)
    done, not_done = cf.wait([slow, fast], timeout=10, return_when=cf.FIRST_COMPLETED)
    assert fast in done and slow in not_done
    done, not_done = cf.wait([slow, fast], timeout=10)  # ALL_COMPLETED
    assert done == {slow, fast} and not not_done


def test_asyncio_interop(executor):
    async def main():
        loop = asyncio.get_running_loop()
        a = await loop.run_in_executor(executor, es.square, 7)
        b = await asyncio.wrap_future(executor.submit(es.add, 2, 3))
        c = await asyncio.gather(*(loop.run_in_executor(executor, es.sleep_then, i, 0.01) for i in range(4)))
        return a, b, c

    assert asyncio.run(main()) == (49, 5, [0, 1, 2, 3])


# --------------------------------------------------------------------------
# map


def test_map_order_and_several_iterables(executor):
    values = [3, 2, 1, 0]
    assert list(executor.map(es.sleep_then, values, [0.15, 0.1, 0.05, 0.0])) == values
    # zip semantics: the shortest iterable wins.
    assert list(executor.map(es.add, range(5), range(10, 13))) == [10, 12, 14]
    assert list(executor.map(es.square, [])) == []
    assert list(executor.map(es.square, iter(range(20)), chunksize=3)) == [i * i for i in range(20)]


def test_map_raises_at_the_failing_position(executor):
    it = executor.map(es.fail_on, range(6), [3] * 6)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad input 3"):
        next(it)
    with pytest.raises(StopIteration):  # like the standard library's generator: finished
        next(it)
    with pytest.raises(ValueError, match="bad input 3"):
        list(executor.map(es.fail_on, range(6), [3] * 6, chunksize=4))


def test_map_eager_without_buffersize(executor):
    pulled = []

    def source():
        for i in range(50):
            pulled.append(i)
            yield i

    it = executor.map(es.square, source())
    assert len(pulled) == 50  # read at once, as the standard library does
    assert list(it) == [i * i for i in range(50)]


def test_map_timeout(executor):
    t0 = time.monotonic()
    it = executor.map(es.sleep_then, ["a", "b"], [0.0, 0.8], timeout=0.3)
    assert next(it) == "a"
    with pytest.raises(TimeoutError):
        next(it)
    assert time.monotonic() - t0 < 0.7  # measured from the map call
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("chunksize", [1, 3])
def test_map_buffersize_is_lazy(executor, chunksize):
    pulled = []

    def source():
        for i in range(40):
            pulled.append(i)
            yield i

    it = executor.map(es.square, source(), buffersize=2, chunksize=chunksize)
    assert len(pulled) == 2 * chunksize
    got = [next(it) for _ in range(5)]
    assert got == [0, 1, 4, 9, 16]
    # At most buffersize calls (chunks) ahead of what was handed out, plus
    # the one refilled on the way.
    assert len(pulled) <= (2 + 1) * chunksize + 5
    assert got + list(it) == [i * i for i in range(40)]
    assert len(pulled) == 40


@pytest.mark.parametrize("bad,error", [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("2", TypeError)])
def test_map_buffersize_checked(executor, bad, error):
    with pytest.raises(error):
        executor.map(es.square, [1], buffersize=bad)


def test_map_chunksize_checked(executor):
    with pytest.raises(ValueError):
        executor.map(es.square, [1], chunksize=0)


@pytest.mark.parametrize("how", ["close", "gc"])
def test_map_closed_early_cancels_pending(executor, backend, tmp_path, how):
    marks = _markers(tmp_path, 8)
    it = executor.map(es.started_then_sleep, marks, [0.2] * 8)
    assert next(it) is None
    if how == "close":
        it.close()
    else:
        del it
        gc.collect()
    executor.shutdown(wait=True)
    started = sum(os.path.exists(m) for m in marks)
    assert 1 <= started < 8


# --------------------------------------------------------------------------
# constructor arguments


@pytest.mark.not_on_dask("uses initializer=, which backend='dask' refuses by design (ValueError)")
def test_initializer(backend):
    token = f"init-{backend}-{os.getpid()}"
    try:
        with gilfree.Executor(2, backend=backend, initializer=es.init_remember, initargs=(token,)) as ex:
            assert token in ex.submit(es.initialized).result(timeout=10)
    finally:
        es._initialized.clear()


@pytest.mark.not_on_dask("uses initializer=, which backend='dask' refuses by design (ValueError)")
def test_failing_initializer_gives_initializer_error(backend):
    # The standard library would raise BrokenExecutor; gilfree: InitializerError.
    with gilfree.Executor(2, backend=backend, initializer=es.init_fail) as ex:
        try:
            f = ex.submit(es.square, 2)
        except gilfree.InitializerError:
            pass
        else:
            exc = f.exception(timeout=10)
            assert isinstance(exc, gilfree.InitializerError)
            assert isinstance(exc.__cause__, KeyError)

        def refuses():
            try:
                ex.submit(es.square, 2)
            except gilfree.InitializerError:
                return True
            return False

        assert gfsupport.wait_until(refuses, timeout=10)


def test_auto_backend_with_initializer_settles_on_processes():
    if not gilfree.probe(len, "").gil_enabled:  # pragma: no cover - free-threaded build
        pytest.skip("the GIL is disabled: auto settles on threads")
    with gilfree.Executor(2, initializer=es.init_remember, initargs=("auto",)) as ex:
        assert ex.backend == "processes"
        assert ex.submit(es.getpid).result(timeout=10) != os.getpid()


def test_max_tasks_per_child_recycles_processes():
    with gilfree.Executor(2, backend="processes", max_tasks_per_child=1) as ex:
        pids = [ex.submit(es.getpid).result(timeout=10) for _ in range(4)]
        assert len(set(pids)) == 4, pids
        assert list(ex.map(es.square, range(6))) == [i * i for i in range(6)]


def test_max_tasks_per_child_checked():
    with pytest.raises(ValueError, match="processes"):
        gilfree.Executor(2, backend="threads", max_tasks_per_child=2)
    with pytest.raises(ValueError):
        gilfree.Executor(2, backend="processes", max_tasks_per_child=0)
    with pytest.raises(TypeError):
        gilfree.Executor(2, backend="processes", max_tasks_per_child="3")


@pytest.mark.parametrize("context", ["spawn", "forkserver-context"])
def test_mp_context(context):
    mp_context = multiprocessing.get_context("forkserver") if context == "forkserver-context" else context
    with gilfree.Executor(2, backend="processes", mp_context=mp_context) as ex:
        assert ex.submit(es.getpid).result(timeout=30) != os.getpid()


def test_mp_context_needs_processes():
    with pytest.raises(ValueError, match="processes"):
        gilfree.Executor(2, backend="threads", mp_context="spawn")
    with pytest.raises(TypeError):
        gilfree.Executor(2, backend="processes", mp_context=42)


def test_pool_options_pass_through():
    with gilfree.Executor(2, backend="processes", retries=0, task_timeout=30) as ex:
        assert ex.backend == "processes"
        assert ex.submit(es.square, 4).result(timeout=10) == 16


@pytest.mark.parametrize("backend", ["threads", "processes", "auto"])
def test_unknown_keyword_names_the_executor(backend):
    with pytest.raises(TypeError, match=r"^Executor\(\): .*'max_worker'.*gilfree\.Pool options"):
        gilfree.Executor(2, backend, max_worker=3)


def test_auto_backend_default():
    with gilfree.Executor(2) as ex:
        assert ex.submit(es.square, 5).result(timeout=10) == 25
        assert list(ex.map(es.square, range(10))) == [i * i for i in range(10)]


def test_worker_death_fails_only_its_future():
    # The standard library breaks the whole ProcessPoolExecutor
    # (BrokenProcessPool); gilfree fails only the call the worker was running.
    with gilfree.Executor(2, backend="processes") as ex:
        dead = ex.submit(es.die, 1)
        others = [ex.submit(es.sleep_then, i, 0.02) for i in range(6)]
        exc = dead.exception(timeout=20)
        assert isinstance(exc, gilfree.WorkerDiedError), exc
        assert exc.exitcode == 1
        assert [f.result(timeout=20) for f in others] == list(range(6))
        assert ex.submit(es.square, 9).result(timeout=20) == 81
        assert list(ex.map(es.square, range(4))) == [0, 1, 4, 9]


def test_not_picklable_and_repr(executor):
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(executor)
    assert "gilfree.Executor" in repr(executor)


# --------------------------------------------------------------------------
# a program written for concurrent.futures runs unchanged


EXAMPLE = REPO / "examples" / "futures_example.py"
STDLIB_LINE = "from concurrent.futures import ProcessPoolExecutor as PoolExecutor"
GILFREE_LINE = "from gilfree import Executor as PoolExecutor"


def test_futures_example_runs_the_same(tmp_path):
    source = EXAMPLE.read_text()
    assert source.count(STDLIB_LINE) == 1
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    outputs = {}
    for name, line in (("stdlib", STDLIB_LINE), ("gilfree", GILFREE_LINE)):
        script = tmp_path / f"futures_example_{name}.py"
        script.write_text(source.replace(STDLIB_LINE, line))
        proc = subprocess.run([sys.executable, "-W", "error", str(script)], capture_output=True, text=True,
                              timeout=50, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        outputs[name] = proc.stdout
    assert outputs["stdlib"] == outputs["gilfree"]
    assert "timed out" in outputs["gilfree"]
