"""gilfree.compat.multiprocessing.Pool: the standard library's Pool on gilfree.

What is checked is what the standard library documents (and does): every
method, AsyncResult semantics (get(timeout) raising
multiprocessing.TimeoutError, successful() before ready -> ValueError),
callbacks, imap's next(timeout), the close/join/terminate rules, the context
manager terminating, maxtasksperchild recycling, contexts, initializers --
plus where gilfree deliberately differs (a killed worker, an unpicklable
argument, a failing initializer, a result that cannot be rebuilt) and that
examples/multiprocessing_example.py prints the same on both.
"""

from __future__ import annotations

import builtins
import doctest
import gc
import multiprocessing
import os
import pickle
import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

import gilfree
import mpsupport as ms
from gilfree.compat import multiprocessing as compat
from gilfree.compat.multiprocessing import Pool

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "multiprocessing_example.py"


@pytest.fixture
def pool():
    p = Pool(2)
    try:
        yield p
    finally:
        p.terminate()
        p.join()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --------------------------------------------------------------------------
# The methods


def test_blocking_methods(pool):
    assert pool.map(ms.square, range(10)) == [x * x for x in range(10)]
    assert pool.map(ms.square, (x for x in range(5)), chunksize=2) == [0, 1, 4, 9, 16]
    assert pool.map(ms.square, []) == []
    assert pool.starmap(ms.add, [(1, 2), (3, 4)]) == [3, 7]
    assert pool.starmap(ms.add, iter([(5,), (6, 1)]), 1) == [5, 7]
    assert pool.apply(ms.add, (1,), {"y": 41}) == 42
    assert pool.apply(ms.square, [3]) == 9
    assert pool.apply(ms.pid) != os.getpid()


def test_worker_exception_reraised(pool):
    with pytest.raises(ValueError, match="bad input 3") as info:
        pool.map(ms.fail_on, range(8), 1)
    assert isinstance(info.value.__cause__, gilfree.RemoteTraceback)
    with pytest.raises(ValueError, match="bad input 3"):
        pool.apply(ms.fail_on, (3,))
    assert pool.map(ms.square, [2]) == [4]  # still usable


def test_lambdas_work(pool):
    offset = 10
    assert pool.map(lambda x: x + offset, [1, 2]) == [11, 12]


def test_apply_async_callbacks(pool):
    seen = []
    r = pool.apply_async(ms.sleep_then, (0.1, "v"), callback=seen.append)
    assert r.get(timeout=10) == "v"
    assert seen == ["v"]  # the callback ran before the result became ready
    assert r.ready() and r.successful()

    errors = []
    r = pool.apply_async(ms.fail_on, (3,), error_callback=errors.append)
    with pytest.raises(ValueError, match="bad input 3"):
        r.get(10)
    assert r.ready() and not r.successful()
    assert len(errors) == 1 and isinstance(errors[0], ValueError)

    r = pool.apply_async(ms.add, kwds={"x": 1, "y": 2})
    r.wait()
    assert r.get() == 3


@pytest.mark.parametrize("method", ["apply_async", "map_async", "starmap_async"])
def test_async_result_timeout_and_not_ready(pool, method):
    if method == "apply_async":
        r = pool.apply_async(ms.sleep_then, (0.6, "done"))
        expected = "done"
    elif method == "map_async":
        r = pool.map_async(ms.sleep_then, [0.6, 0.3])
        expected = [0.6, 0.3]
    else:
        r = pool.starmap_async(ms.sleep_then, [(0.6, 1), (0.3, 2)])
        expected = [1, 2]
    assert not r.ready()
    with pytest.raises(ValueError, match="not ready"):
        r.successful()
    t0 = time.monotonic()
    with pytest.raises(multiprocessing.TimeoutError) as info:
        r.get(timeout=0.05)
    assert time.monotonic() - t0 < 0.5
    assert not isinstance(info.value, builtins.TimeoutError)  # the stdlib's, not the builtin
    assert r.wait(0.01) is None
    r.wait()
    assert r.ready() and r.successful()
    assert r.get(0) == expected


def test_map_async_callbacks(pool):
    got = []
    r = pool.map_async(ms.square, range(6), callback=got.append)
    assert r.get(10) == [0, 1, 4, 9, 16, 25]
    assert got == [[0, 1, 4, 9, 16, 25]]  # the whole list, before ready

    errors, values = [], []
    r = pool.map_async(ms.fail_on, range(6), 1, callback=values.append, error_callback=errors.append)
    with pytest.raises(ValueError, match="bad input 3"):
        r.get(10)
    assert not r.successful()
    assert values == [] and len(errors) == 1 and str(errors[0]) == "bad input 3"

    got = []
    r = pool.starmap_async(ms.add, iter([(1, 1), (2, 2)]), callback=got.append)
    assert r.get(10) == [2, 4] and got == [[2, 4]]


def test_imap_and_imap_unordered(pool):
    assert list(pool.imap(ms.square, range(20))) == [x * x for x in range(20)]
    assert list(pool.imap(ms.square, range(20), chunksize=4)) == [x * x for x in range(20)]
    assert sorted(pool.imap_unordered(ms.square, range(20), 3)) == sorted(x * x for x in range(20))
    # completion order: a fast item overtakes the slow first one
    assert list(pool.imap_unordered(ms.sleep_then, [0.5, 0.01]))[0] == 0.01
    with pytest.raises(ValueError):
        pool.imap(ms.square, range(3), chunksize=0)


def test_imap_error_then_continues(pool):
    it = pool.imap(ms.fail_on, range(5))
    assert [next(it), next(it), next(it)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad input 3"):
        next(it)
    assert next(it) == 4
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_next_timeout(pool, method):
    it = getattr(pool, method)(ms.sleep_then, [0.6, 0.6])
    assert iter(it) is it
    t0 = time.monotonic()
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.05)
    assert time.monotonic() - t0 < 0.5
    assert it.next(timeout=10) == 0.6  # the result that came late is kept
    assert it.next() == 0.6
    with pytest.raises(StopIteration):
        it.next(timeout=5)
    with pytest.raises(StopIteration):
        it.next()


# --------------------------------------------------------------------------
# close / join / terminate


def test_close_join_rules():
    p = Pool(2)
    try:
        with pytest.raises(ValueError, match="Pool is still running"):
            p.join()
        assert "state=RUN" in repr(p) and "pool_size=2" in repr(p)
        p.close()
        p.close()
        for call in (
            lambda: p.map(ms.square, [1]),
            lambda: p.map_async(ms.square, [1]),
            lambda: p.starmap(ms.add, [(1,)]),
            lambda: p.starmap_async(ms.add, [(1,)]),
            lambda: p.imap(ms.square, [1]),
            lambda: p.imap_unordered(ms.square, [1]),
            lambda: p.apply(ms.square, (1,)),
            lambda: p.apply_async(ms.square, (1,)),
            lambda: p.__enter__(),
        ):
            with pytest.raises(ValueError, match="Pool not running"):
                call()
        p.join()
        p.join()
        p.terminate()
        assert "state=TERMINATE" in repr(p)
    finally:
        p.terminate()
        p.join()


def test_work_submitted_before_close_finishes_before_join():
    p = Pool(2)
    try:
        it = p.imap(ms.square, range(30))
        first = next(it)
        r = p.map_async(ms.sleep_then, [0.2, 0.2, 0.2])
        a = p.apply_async(ms.sleep_then, (0.3, "a"))
        p.close()
        p.join()
        assert r.ready() and r.get(0) == [0.2] * 3
        assert a.ready() and a.get(0) == "a"
        # as in the standard library, imap results stay readable after join()
        assert [first, *it] == [x * x for x in range(30)]
    finally:
        p.terminate()
        p.join()


def test_context_manager_terminates():
    errors = []
    t0 = time.monotonic()
    with Pool(2) as p:
        assert p.map(ms.square, [3]) == [9]
        pids = set(p.map(ms.pid, range(4), 1))
        r = p.apply_async(ms.sleep_then, (30,), error_callback=errors.append)
        m = p.map_async(ms.sleep_then, [30, 30])
    assert time.monotonic() - t0 < 10
    assert "state=TERMINATE" in repr(p)
    with pytest.raises(ValueError, match="Pool not running"):
        p.map(ms.square, [1])
    # gilfree: pending results fail (the standard library's never complete)
    with pytest.raises(CancelledError):
        r.get(5)
    with pytest.raises(CancelledError):
        m.get(5)
    assert len(errors) == 1 and isinstance(errors[0], CancelledError)
    assert not any(alive(pid) for pid in pids)
    p.join()  # harmless after terminate, as in the standard library


def test_terminate_stops_imap():
    p = Pool(2)
    it = p.imap(ms.sleep_then, [0.05] + [30] * 4)
    assert next(it) == 0.05
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.05)  # a fetch is now pending on a helper thread
    t0 = time.monotonic()
    p.terminate()
    assert time.monotonic() - t0 < 10
    with pytest.raises(CancelledError):
        it.next(timeout=5)
    p.join()


def test_dropped_running_pool_warns_and_stops_workers():
    p = Pool(2)
    pids = set(p.map(ms.pid, range(4), 1))
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):
        del p
        gc.collect()
    assert not any(alive(pid) for pid in pids)


def test_pool_cannot_be_pickled(pool):
    # The stdlib raises NotImplementedError; TypeError here, like gilfree.Pool
    # and like pickle for any object it cannot send (documented).
    with pytest.raises(TypeError):
        pickle.dumps(pool)


# --------------------------------------------------------------------------
# Constructor parameters


def test_parameter_validation():
    with pytest.raises(ValueError, match="at least 1"):
        Pool(0)
    with pytest.raises(ValueError, match="at least 1"):
        Pool(-3)
    with pytest.raises(ValueError, match="maxtasksperchild"):
        Pool(2, maxtasksperchild=0)
    with pytest.raises(ValueError, match="maxtasksperchild"):
        Pool(2, maxtasksperchild=1.5)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        Pool(2, initializer=5)


def test_default_processes_is_the_stdlib_count():
    expected = getattr(os, "process_cpu_count", os.cpu_count)() or 1
    assert compat._default_processes() == expected


def test_initializer_runs_once_per_worker(tmp_path):
    log = tmp_path / "init.log"
    p = Pool(2, initializer=ms.remember, initargs=("hello", str(log)))
    try:
        assert p.map(ms.greeting, range(6), 1) == ["hello"] * 6
        pids = set(p.map(ms.pid, range(6), 1))
        p.close()
        p.join()
    finally:
        p.terminate()
        p.join()
    inits = log.read_text().split()
    assert len(inits) == 2 and len(set(inits)) == 2
    assert pids <= {int(x) for x in inits}


def test_maxtasksperchild_recycles_workers(tmp_path):
    log = tmp_path / "init.log"
    with Pool(2, initializer=ms.remember, initargs=("x", str(log)), maxtasksperchild=1) as p:
        pids = p.map(ms.pid, range(6), chunksize=1)
        assert len(set(pids)) == 6  # one task per worker life
        assert p.apply(ms.greeting) == "x"  # a fresh worker is initialised
    assert set(pids) <= {int(x) for x in log.read_text().split()}


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_context_start_method(method):
    ctx = multiprocessing.get_context(method)
    with Pool(2, context=ctx) as p:
        assert p.map(ms.square, range(4)) == [0, 1, 4, 9]
        assert p.apply(ms.pid) != os.getpid()


# --------------------------------------------------------------------------
# Deliberate differences


def test_killed_worker_raises_worker_died_error(pool):
    before = set(pool.map(ms.pid, range(4), 1))
    t0 = time.monotonic()
    with pytest.raises(gilfree.WorkerDiedError) as info:
        pool.map(ms.kill_self_on, range(8), 1)
    assert time.monotonic() - t0 < 10
    assert info.value.index == 3 and info.value.signal_name == "SIGKILL"
    # the worker is replaced and the pool goes on
    assert pool.map(ms.square, range(6)) == [0, 1, 4, 9, 16, 25]
    with pytest.raises(gilfree.WorkerDiedError):
        pool.apply_async(ms.kill_self_on, (3,)).get(10)
    it = pool.imap(ms.kill_self_on, range(5))
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(gilfree.WorkerDiedError):
        next(it)
    assert list(it) == [4]
    assert len(set(pool.map(ms.pid, range(4), 1)) - before) >= 1


def test_unpicklable_argument_raises_in_caller(pool):
    lock = threading.Lock()
    with pytest.raises(pickle.PicklingError, match="input index 1"):
        pool.map(ms.square, [1, lock])
    r = pool.map_async(ms.square, [lock])
    with pytest.raises(pickle.PicklingError):
        r.get(10)
    assert pool.map(ms.square, [5]) == [25]


def test_unrebuildable_exception_raises_instead_of_hanging(pool):
    with pytest.raises(RuntimeError, match="cannot rebuild"):
        pool.apply_async(ms.raise_unrebuildable, (1,)).get(10)
    assert pool.apply(ms.square, (4,)) == 16


def test_failing_initializer_raises_initializer_error():
    with Pool(2, initializer=ms.broken_initializer) as p:
        t0 = time.monotonic()
        with pytest.raises(gilfree.InitializerError) as info:
            p.map(ms.square, range(4))
        assert time.monotonic() - t0 < 10
        assert isinstance(info.value.__cause__, RuntimeError)
        assert "initializer failed" in str(info.value.__cause__)
        with pytest.raises(gilfree.InitializerError):
            p.apply(ms.square, (1,))


# --------------------------------------------------------------------------
# Documentation and the example


def test_module_doctest():
    result = doctest.testmod(compat, verbose=False)
    assert result.attempted >= 1 and result.failed == 0


def run_example(source: str, tmp_path: Path) -> str:
    script = tmp_path / "example.py"
    script.write_text(source)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT / "build" / "devpkg"), *sys.path] if p)
    proc = subprocess.run([sys.executable, "-W", "error", str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_example_prints_the_same_as_with_the_stdlib(tmp_path):
    source = EXAMPLE.read_text()
    stdlib_import = "from multiprocessing import Pool\n"
    assert source.count(stdlib_import) == 1
    gilfree_source = source.replace(stdlib_import, "from gilfree.compat.multiprocessing import Pool\n")
    expected = run_example(source, tmp_path)
    assert "words per document: [7, 7, 7, 6, 9, 5]" in expected  # the initializer's globals were seen
    assert run_example(gilfree_source, tmp_path) == expected
