"""What is specific to the process backend: worker crashes, retries, task
timeouts, pickling, out-of-band buffers, start methods, and the life and
death of the worker processes.

The generic API (map, imap, apply_async, submit, errors, Ctrl-C in the
caller, ...) already runs on both backends through conftest.BACKENDS; this
file covers what only a worker *process* can do: die by a signal, exit, hang
in C, refuse to pickle, outlive (or not) its parent.

Every crash is real: the task SIGKILLs or segfaults its own process, calls
os._exit, or the test kills a worker from outside with os.kill().  Tasks
are module-level functions (pickled by reference); tests that need a
different __main__ or a process to kill run a child interpreter
(sys.executable -c SCRIPT).
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import json
import os
import pickle
import re
import resource
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zlib

import pytest

import gilfree
import gfsupport
from gfsupport import record, sleep_return, square

pytestmark = pytest.mark.timeout(60)

WORKERS = 2


# --------------------------------------------------------------------------
# Helpers (test side)


def proc_state(pid: int) -> str | None:
    """The /proc state letter of pid ('R', 'S', 'Z', ...), None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[0]


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    state = proc_state(pid)
    return state is not None and state != "Z"


children_of = gfsupport.children_of


def memfd_mappings() -> int:
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
        return sum(1 for line in f if "memfd:gilfree" in line)


def dev_shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:  # pragma: no cover - no /dev/shm
        return set()


def assert_pool_healthy(pool, dead_pid: int | None = None) -> None:
    """The pool maps correctly and runs `WORKERS` live workers (not dead_pid)."""
    assert pool.map(square, range(20)) == [x * x for x in range(20)]
    # A dead worker is replaced in the background: allow it a moment to start.
    gfsupport.wait_until(
        lambda: len(pool.pids) == WORKERS and all(alive(p) for p in pool.pids), timeout=5
    )
    pids = list(pool.pids)
    assert len(pids) == WORKERS, pids
    assert len(set(pids)) == WORKERS, pids
    if dead_pid is not None:
        assert dead_pid not in pids, (dead_pid, pids)
    assert all(alive(p) for p in pids), {p: proc_state(p) for p in pids}
    assert set(pids) <= gfsupport.descendant_pids(), (pids, gfsupport.descendant_pids())


def assert_died(exc, *, index, signal_name=None, exitcode=None, pid=None, fn_name=None):
    """Check a WorkerDiedError's type, attributes and message."""
    assert isinstance(exc, gilfree.WorkerDiedError), repr(exc)
    assert isinstance(exc, RuntimeError)
    msg = str(exc)
    assert isinstance(exc.pid, int) and exc.pid > 0, exc.pid
    assert str(exc.pid) in msg, msg
    if pid is not None:
        assert exc.pid == pid, (exc.pid, pid)
    assert exc.index == index, (exc.index, msg)
    if index is not None:
        assert re.search(rf"\bindex {index}\b", msg), msg
    if signal_name is not None:
        signum = getattr(signal, signal_name)
        assert exc.signal == signum, (exc.signal, msg)
        assert exc.signal_name == signal_name, (exc.signal_name, msg)
        assert signal_name in msg, msg
        assert exc.exitcode is None, exc.exitcode
    if exitcode is not None:
        assert exc.exitcode == exitcode, (exc.exitcode, msg)
        assert exc.signal is None and exc.signal_name is None, (exc.signal, exc.signal_name)
        assert str(exitcode) in msg, msg
    if fn_name is not None:
        assert fn_name in msg, msg
    assert exc.pid != os.getpid()
    assert not alive(exc.pid), f"worker {exc.pid} reported dead is {proc_state(exc.pid)}"


def child_sys_path() -> str:
    return json.dumps([p for p in sys.path if isinstance(p, str)])


# --------------------------------------------------------------------------
# Tasks (module level: pickled by reference)


def no_core_dump() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))


def crash(how: str) -> None:
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "segfault":
        no_core_dump()
        ctypes.string_at(0)
    elif how == "exit3":
        os._exit(3)
    else:  # pragma: no cover
        raise AssertionError(how)
    time.sleep(30)  # the signal may take a moment to land


def crash_at(how: str, target, x):
    if x == target:
        crash(how)
    return x * 10


def sigkill_at(target, x):
    if x == target:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(30)
    return x * 10


def record_pid_then(path: str, slow, delay: float, x):
    """Record 'x pid'; sleep `delay` if x == slow."""
    record(path, f"{x} {os.getpid()}")
    if x == slow:
        time.sleep(delay)
    return x * 10


def sleep_then_sigkill(delay: float):
    time.sleep(delay)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)


def crash_first_attempt(marker_dir: str, target, x):
    """Die (SIGKILL) the first time input `target` runs; succeed later."""
    record(os.path.join(marker_dir, "attempts.log"), x)
    if x == target:
        marker = os.path.join(marker_dir, f"attempted-{x}")
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(30)
    return x * 10


def always_crash_on(marker_dir: str, target, x):
    record(os.path.join(marker_dir, "attempts.log"), x)
    if x == target:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(30)
    return x * 10


def hang_at(kind: str, target, x):
    if x == target:
        if kind == "sleep":  # blocked inside a C call
            time.sleep(30)
        elif kind == "busy":  # pure Python, holds the GIL, never blocks
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                pass
        elif kind == "lock":  # blocked in C on a lock nobody will release
            lock = threading.Lock()
            lock.acquire()
            lock.acquire(timeout=30)
        elif kind == "sigint-ignored":  # blocked with SIGINT/SIGTERM ignored
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(30)
        else:  # pragma: no cover
            raise AssertionError(kind)
    return x * 10


def return_lock(target, x):
    return threading.Lock() if x == target else x


def _gen():
    yield 1


def return_generator(target, x):
    return _gen() if x == target else x


class LockedCallable:
    """A callable that neither pickle nor cloudpickle can send (it holds a lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, x):
        return x


def array_info(a):
    """Checksum of an array argument, and where its memory comes from."""
    base = a
    while getattr(base, "base", None) is not None:
        base = base.base
    info = (a.shape, a.dtype.str, zlib.crc32(a.tobytes()), type(base).__name__, bool(a.flags.owndata))
    a[:] = -1.0  # writing to the received argument must not reach the caller
    return info


def make_array(n: int, seed: int | None = None):
    """n random float64 (seeded with n unless seed is given)."""
    import numpy as np

    return np.random.default_rng(n if seed is None else seed).random(n)


def reverse_bytes(b):
    return b[::-1]


def type_name(x):
    return type(x).__name__


# --------------------------------------------------------------------------
# 1. A worker that dies during map


@pytest.mark.parametrize("chunksize", [1, 4])
@pytest.mark.parametrize(
    "how, signal_name, exitcode",
    [("sigkill", "SIGKILL", None), ("segfault", "SIGSEGV", None), ("exit3", None, 3)],
)
def test_worker_dies_during_map(how, signal_name, exitcode, chunksize):
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        assert pool.backend == "processes"
        before = list(pool.pids)
        assert len(before) == WORKERS and all(alive(p) for p in before), before
        with pytest.raises(gilfree.WorkerDiedError) as info:
            pool.map(lambda_free_crash_at(how), range(12), chunksize=chunksize)
        exc = info.value
        assert_died(exc, index=7, signal_name=signal_name, exitcode=exitcode, fn_name="crash_at")
        assert exc.pid in before, (exc.pid, before)
        assert exc.timeout is None
        assert not isinstance(exc, gilfree.TaskTimeoutError)
        assert_pool_healthy(pool, dead_pid=exc.pid)


def lambda_free_crash_at(how):
    """crash_at(how, 7, x) as a picklable partial."""
    import functools

    return functools.partial(crash_at, how, 7)


def test_worker_killed_from_outside_during_map(recorder):
    import functools

    slow = 3
    task = functools.partial(record_pid_then, recorder.path, slow, 30.0)
    victim: list[int] = []

    def killer():
        def slow_started():
            for line in recorder.lines():
                x, pid = line.split()
                if int(x) == slow:
                    return int(pid)
            return None

        if gfsupport.wait_until(slow_started, timeout=20):
            pid = slow_started()
            victim.append(pid)
            victim.append(pid in pool.pids)
            time.sleep(0.1)  # it is asleep in the task now
            os.kill(pid, signal.SIGKILL)

    with gilfree.Pool(WORKERS, backend="processes") as pool:
        thread = threading.Thread(target=killer, name="killer")
        thread.start()
        try:
            t0 = time.monotonic()
            with pytest.raises(gilfree.WorkerDiedError) as info:
                pool.map(task, range(8), chunksize=1)
            elapsed = time.monotonic() - t0
        finally:
            thread.join(30)
        assert victim, "the slow task never started"
        pid, was_listed = victim
        assert was_listed, f"pid {pid} that ran the task was not in pool.pids"
        assert elapsed < 10, f"map took {elapsed:.1f} s to notice the kill"
        assert_died(info.value, index=slow, signal_name="SIGKILL", pid=pid)
        assert_pool_healthy(pool, dead_pid=pid)


def test_idle_worker_killed_is_replaced():
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        assert pool.map(square, range(4)) == [0, 1, 4, 9]
        victim = pool.pids[0]
        os.kill(victim, signal.SIGKILL)
        assert gfsupport.wait_until(lambda: victim not in pool.pids, timeout=5), pool.pids
        assert_pool_healthy(pool, dead_pid=victim)
        assert pool.apply(square, (7,)) == 49


# --------------------------------------------------------------------------
# 2. imap / imap_unordered: only the crashed item fails


def drain(iterator, catch=gilfree.WorkerDiedError, tag=True):
    """Consume an imap iterator until StopIteration: its values, and for each
    exception of type `catch` raised by next(), ("error", exc) (or the
    exception itself with tag=False)."""
    out = []
    while True:
        try:
            out.append(next(iterator))
        except StopIteration:
            return out
        except catch as exc:
            out.append(("error", exc) if tag else exc)
        if len(out) > 1000:  # pragma: no cover - a broken iterator
            raise AssertionError("iterator does not end")


@pytest.mark.parametrize("how", ["sigkill", "exit3"])
def test_imap_crash_mid_chunk(how):
    import functools

    k, n = 7, 20
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        out = drain(pool.imap(functools.partial(crash_at, how, k), range(n), chunksize=3))
        assert len(out) == n, out
        errors = [i for i, v in enumerate(out) if isinstance(v, tuple)]
        assert errors == [k], out
        assert_died(out[k][1], index=k, signal_name="SIGKILL" if how == "sigkill" else None,
                    exitcode=3 if how == "exit3" else None)
        assert [v for i, v in enumerate(out) if i != k] == [x * 10 for x in range(n) if x != k]
        assert_pool_healthy(pool, dead_pid=out[k][1].pid)


def test_imap_unordered_crash_mid_chunk():
    import functools

    k, n = 7, 20
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        out = drain(pool.imap_unordered(functools.partial(sigkill_at, k), range(n), chunksize=3))
        errors = [v[1] for v in out if isinstance(v, tuple)]
        values = [v for v in out if not isinstance(v, tuple)]
        assert len(errors) == 1, out
        assert_died(errors[0], index=k, signal_name="SIGKILL")
        assert sorted(values) == [x * 10 for x in range(n) if x != k], out
        assert_pool_healthy(pool, dead_pid=errors[0].pid)


# --------------------------------------------------------------------------
# 3. apply_async / submit


def test_apply_async_only_the_dead_workers_result_fails():
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        errors, values = [], []
        slow = [pool.apply_async(sleep_return, (0.6, f"slow{i}")) for i in range(2)]
        doomed = pool.apply_async(sleep_then_sigkill, (0.2,), callback=values.append,
                                  error_callback=errors.append)
        quick = [pool.apply_async(square, (i,)) for i in range(10)]
        with pytest.raises(gilfree.WorkerDiedError) as info:
            doomed.get(timeout=20)
        assert_died(info.value, index=None, signal_name="SIGKILL", fn_name="sleep_then_sigkill")
        assert doomed.ready() and not doomed.successful()
        assert [r.get(timeout=20) for r in slow] == ["slow0", "slow1"]
        assert [r.get(timeout=20) for r in quick] == [i * i for i in range(10)]
        assert all(r.successful() for r in slow + quick)
        assert gfsupport.wait_until(lambda: errors, timeout=5), "error_callback not called"
        assert errors == [info.value] and values == []
        assert_pool_healthy(pool, dead_pid=info.value.pid)


def test_submit_future_gets_worker_died_error():
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        other = pool.submit(sleep_return, 0.3, "other")
        fut = pool.submit(sleep_then_sigkill, 0.1)
        assert isinstance(fut, cf.Future)
        exc = fut.exception(timeout=20)
        assert_died(exc, index=None, signal_name="SIGKILL")
        with pytest.raises(gilfree.WorkerDiedError):
            fut.result(timeout=1)
        assert other.result(timeout=20) == "other"
        assert_pool_healthy(pool, dead_pid=exc.pid)


# --------------------------------------------------------------------------
# 4. retries


def test_retries_recovers_from_one_crash(tmp_path):
    import functools

    task = functools.partial(crash_first_attempt, str(tmp_path), 4)
    with gilfree.Pool(WORKERS, backend="processes", retries=1) as pool:
        assert pool.map(task, range(8), chunksize=1) == [x * 10 for x in range(8)]
        assert (tmp_path / "attempted-4").exists()
        attempts = gfsupport.Recorder(tmp_path / "attempts.log")
        assert attempts.count("4") == 2, attempts.lines()
        assert_pool_healthy(pool)


def test_retries_zero_reports_the_crash(tmp_path):
    import functools

    task = functools.partial(crash_first_attempt, str(tmp_path), 4)
    with gilfree.Pool(WORKERS, backend="processes", retries=0) as pool:
        with pytest.raises(gilfree.WorkerDiedError) as info:
            pool.map(task, range(8), chunksize=1)
        assert_died(info.value, index=4, signal_name="SIGKILL")
        attempts = gfsupport.Recorder(tmp_path / "attempts.log")
        assert attempts.count("4") == 1, attempts.lines()
        assert_pool_healthy(pool, dead_pid=info.value.pid)


def test_retries_exhausted(tmp_path):
    """retries=1 and a task that always kills its worker: two attempts, then the error."""
    import functools

    task = functools.partial(always_crash_on, str(tmp_path), 2)
    with gilfree.Pool(WORKERS, backend="processes", retries=1) as pool:
        with pytest.raises(gilfree.WorkerDiedError) as info:
            pool.apply(task, (2,))
        assert_died(info.value, index=None, signal_name="SIGKILL")
        attempts = gfsupport.Recorder(tmp_path / "attempts.log")
        assert attempts.count("2") == 2, attempts.lines()
        assert_pool_healthy(pool, dead_pid=info.value.pid)


# --------------------------------------------------------------------------
# 5. task_timeout


@pytest.mark.parametrize("kind", ["sleep", "busy", "lock", "sigint-ignored"])
def test_task_timeout_map(kind):
    import functools

    with gilfree.Pool(WORKERS, backend="processes", task_timeout=0.5) as pool:
        t0 = time.monotonic()
        with pytest.raises(gilfree.TaskTimeoutError) as info:
            pool.map(functools.partial(hang_at, kind, 3), range(6), chunksize=1)
        elapsed = time.monotonic() - t0
        exc = info.value
        assert isinstance(exc, gilfree.WorkerDiedError)
        assert exc.timeout == 0.5
        assert exc.index == 3, (exc.index, str(exc))
        assert "index 3" in str(exc) and "0.5" in str(exc) and str(exc.pid) in str(exc), str(exc)
        assert elapsed < 5, f"the hung task was stopped after {elapsed:.1f} s"
        assert elapsed >= 0.45, f"timed out after {elapsed:.2f} s, before task_timeout"
        assert not alive(exc.pid)
        assert_pool_healthy(pool, dead_pid=exc.pid)


def test_task_timeout_imap_other_items_finish():
    import functools

    k, n = 4, 12
    with gilfree.Pool(WORKERS, backend="processes", task_timeout=0.5) as pool:
        t0 = time.monotonic()
        out = []
        it = pool.imap(functools.partial(hang_at, "sleep", k), range(n), chunksize=2)
        while True:
            try:
                out.append(next(it))
            except StopIteration:
                break
            except gilfree.TaskTimeoutError as exc:
                out.append(("error", exc))
        elapsed = time.monotonic() - t0
        assert elapsed < 5, elapsed
        assert [i for i, v in enumerate(out) if isinstance(v, tuple)] == [k], out
        exc = out[k][1]
        assert exc.index == k and exc.timeout == 0.5
        assert [v for i, v in enumerate(out) if i != k] == [x * 10 for x in range(n) if x != k]
        assert_pool_healthy(pool, dead_pid=exc.pid)


def test_task_timeout_is_per_task_not_per_chunk():
    """Items of 0.2 s in chunks of 4 (0.8 s per chunk) under task_timeout=0.5: no timeout."""
    with gilfree.Pool(WORKERS, backend="processes", task_timeout=0.5) as pool:
        pids = list(pool.pids)
        assert pool.map(sleep_return, [0.2] * 8, chunksize=4) == [None] * 8
        assert pool.apply(sleep_return, (0.3, "ok")) == "ok"
        assert list(pool.pids) == pids, "a worker was killed although no task ran over 0.5 s"


def test_task_timeout_apply_async_and_submit():
    with gilfree.Pool(WORKERS, backend="processes", task_timeout=0.5) as pool:
        ar = pool.apply_async(sleep_return, (30,))
        fut = pool.submit(sleep_return, 30)
        ok = pool.apply_async(sleep_return, (0.1, "fine"))
        t0 = time.monotonic()
        with pytest.raises(gilfree.TaskTimeoutError) as info:
            ar.get(timeout=10)
        exc2 = fut.exception(timeout=10)
        elapsed = time.monotonic() - t0
        assert isinstance(exc2, gilfree.TaskTimeoutError), repr(exc2)
        assert info.value.timeout == 0.5 and exc2.timeout == 0.5
        assert info.value.index is None
        assert elapsed < 5, elapsed
        assert ok.get(timeout=10) == "fine"
        assert_pool_healthy(pool)


# --------------------------------------------------------------------------
# 6. Things that do not pickle


def test_unpicklable_argument():
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        items = [1, 2, 3, threading.Lock(), 5]
        with pytest.raises((pickle.PicklingError, TypeError)) as info:
            pool.map(square, items)
        msg = str(info.value)
        assert "lock" in msg, msg
        assert re.search(r"\bindex 3\b", msg), msg
        with pytest.raises((pickle.PicklingError, TypeError)) as info:
            list(pool.imap(square, items, chunksize=1))
        assert "lock" in str(info.value) and re.search(r"\bindex 3\b", str(info.value)), str(info.value)
        with pytest.raises((pickle.PicklingError, TypeError)) as info:
            pool.apply(square, (threading.Lock(),))
        assert "lock" in str(info.value), str(info.value)
        assert_pool_healthy(pool)


def test_unpicklable_function():
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        fn = LockedCallable()
        for call in (lambda: pool.map(fn, range(4)), lambda: pool.apply(fn, (1,)),
                     lambda: pool.submit(fn, 1).result(timeout=10)):
            with pytest.raises((pickle.PicklingError, TypeError)) as info:
                call()
            msg = str(info.value)
            assert "LockedCallable" in msg, msg
        assert_pool_healthy(pool)


@pytest.mark.parametrize("task, type_word", [(return_lock, "lock"), (return_generator, "generator")])
def test_unpicklable_result(task, type_word):
    import functools

    with gilfree.Pool(WORKERS, backend="processes") as pool:
        with pytest.raises((pickle.PicklingError, TypeError)) as info:
            pool.map(functools.partial(task, 2), range(5), chunksize=1)
        msg = str(info.value)
        assert type_word in msg, msg
        assert re.search(r"\bindex 2\b", msg), msg
        out = drain(pool.imap(functools.partial(task, 2), range(5), chunksize=1), Exception, False)
        assert [v for i, v in enumerate(out) if i != 2] == [0, 1, 3, 4], out
        assert isinstance(out[2], (pickle.PicklingError, TypeError)), out
        with pytest.raises((pickle.PicklingError, TypeError)) as info:
            pool.apply(task, (2, 2))
        assert type_word in str(info.value), str(info.value)
        assert_pool_healthy(pool)


# Objects that pickle fine but cannot be rebuilt on the other side.


def refuse_rebuild(why: str):
    raise ValueError(f"this object cannot be rebuilt here ({why})")


def rebuild_only_in(pid: int):
    if os.getpid() != pid:
        raise ValueError(f"this object cannot be rebuilt here (made in {pid}, not {os.getpid()})")
    return WorkerOnlyObject()


class UnloadableArg:
    """Pickles in the caller; unpickling (in the worker) raises."""

    def __reduce__(self):
        return (refuse_rebuild, ("argument",))


class UnloadableCallable:
    """A callable that pickles in the caller but cannot be rebuilt in a worker."""

    def __call__(self, x):
        return x

    def __reduce__(self):
        return (refuse_rebuild, ("function",))


class WorkerOnlyObject:
    """Made in a worker, it pickles there, but unpickling in another process raises."""

    def __reduce__(self):
        return (rebuild_only_in, (os.getpid(),))


def worker_only_at(target, x):
    return WorkerOnlyObject() if x == target else x


def error_text(exc) -> str:
    """Everything an exception tells a user: message, notes, cause and context."""
    parts = [f"{type(exc).__name__}: {exc}"]
    parts += getattr(exc, "__notes__", [])
    seen = {id(exc)}
    link = exc.__cause__ or exc.__context__
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        parts.append(f"{type(link).__name__}: {link}")
        parts += getattr(link, "__notes__", [])
        link = link.__cause__ or link.__context__
    return "\n".join(parts)


def test_argument_that_cannot_be_rebuilt_in_the_worker():
    """The worker fails to unpickle input 2: the caller gets that error for
    index 2 -- never a shorter result list."""
    items = [0, 1, UnloadableArg(), 3]
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        for chunksize in (None, 1):
            try:
                got = pool.map(identity_task, items, chunksize=chunksize)
            except Exception as exc:  # noqa: BLE001 - inspected below
                text = error_text(exc)
                assert "cannot be rebuilt here" in text, text
                assert re.search(r"\bindex 2\b", text), text
            else:
                pytest.fail(f"map(chunksize={chunksize}) returned {got!r} for 4 inputs "
                            "whose input 2 cannot be unpickled by the worker")
        out = drain(pool.imap(identity_task, items, chunksize=1), Exception, False)
        assert len(out) == 4, out
        assert [out[0], out[1], out[3]] == [0, 1, 3], out
        assert isinstance(out[2], Exception) and "cannot be rebuilt here" in error_text(out[2]), out
        with pytest.raises(Exception) as info:
            pool.apply(identity_task, (UnloadableArg(),))
        assert "cannot be rebuilt here" in error_text(info.value), error_text(info.value)
        assert_pool_healthy(pool)


def test_function_that_cannot_be_rebuilt_in_the_worker():
    """The worker fails to unpickle the function: an error in the caller,
    promptly -- not workers dying and being replaced forever."""
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        pids = list(pool.pids)
        fut = pool.submit(UnloadableCallable(), 1)
        try:
            exc = fut.exception(timeout=10)
        except cf.TimeoutError:
            replaced = len(set(pool.pids) - set(pids))
            pool.terminate()
            pytest.fail("submit() of a function the worker cannot unpickle got no result "
                        f"in 10 s (worker pids now {pool.pids}, {replaced} new)")
        assert exc is not None and "cannot be rebuilt here" in error_text(exc), repr(exc)
        ar = pool.apply_async(UnloadableCallable(), (1,))
        with pytest.raises(Exception) as info:
            ar.get(timeout=10)
        assert "cannot be rebuilt here" in error_text(info.value), error_text(info.value)
        with pytest.raises(Exception) as info:
            pool.map(UnloadableCallable(), range(4))
        assert "cannot be rebuilt here" in error_text(info.value), error_text(info.value)
        assert_pool_healthy(pool)


def identity_task(x):
    return x


# The caller could crash (it did: SIGSEGV in apply), so this runs in a child.
REBUILD_RESULT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path[:0] = json.loads(sys.argv[1])
    import functools, re
    import gilfree
    from test_processes import worker_only_at, error_text

    case = sys.argv[2]
    task = functools.partial(worker_only_at, 2)
    with gilfree.Pool(2, backend="processes") as pool:
        outcome = {"case": case}
        try:
            if case == "map":
                outcome["returned"] = repr(pool.map(task, range(4), chunksize=1))
            elif case == "imap":
                got = []
                it = pool.imap(task, range(4), chunksize=1)
                while True:
                    try:
                        got.append(repr(next(it)))
                    except StopIteration:
                        break
                    except Exception as exc:
                        got.append("ERROR " + error_text(exc))
                outcome["items"] = got
            elif case == "apply":
                outcome["returned"] = repr(pool.apply(task, (2,)))
            elif case == "submit":
                outcome["returned"] = repr(pool.submit(task, 2).result(timeout=10))
        except BaseException as exc:
            outcome["raised"] = error_text(exc)
        print(json.dumps(outcome), flush=True)
        print(json.dumps({"after": pool.map(abs, [-1, -2, -3])}), flush=True)
    """
)


@pytest.mark.parametrize("case", ["map", "imap", "apply", "submit"])
def test_result_that_cannot_be_rebuilt_in_the_caller(case):
    """A result that pickles in the worker but whose unpickling raises in the
    caller: that error (naming the index for map/imap); no crash, no lost item."""
    res = run_child(REBUILD_RESULT_SCRIPT, case, timeout=40)
    lines = res.stdout.splitlines()
    assert res.returncode == 0 and len(lines) == 2, (
        f"child exited with {res.returncode}; stdout={res.stdout!r}; stderr tail={res.stderr[-2000:]!r}"
    )
    outcome, after = json.loads(lines[0]), json.loads(lines[1])
    assert after == {"after": [1, 2, 3]}
    if case == "imap":
        items = outcome["items"]
        assert len(items) == 4 and [items[0], items[1], items[3]] == ["0", "1", "3"], items
        assert items[2].startswith("ERROR") and "cannot be rebuilt here" in items[2], items
        assert re.search(r"\bindex 2\b", items[2]), items
        return
    assert "raised" in outcome, f"{case} returned {outcome.get('returned')} instead of raising"
    assert "cannot be rebuilt here" in outcome["raised"], outcome["raised"]
    if case == "map":
        assert re.search(r"\bindex 2\b", outcome["raised"]), outcome["raised"]


# --------------------------------------------------------------------------
# 7. Lambdas, closures, __main__ functions

MAIN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path[:0] = json.loads(sys.argv[1])
    import gilfree

    def outer(k):
        def inner(x):
            return x * k
        return inner

    def main_fn(x):
        return x - 1

    class MainCallable:
        def __call__(self, x):
            return x + 100

    offset = 1000
    for method in sys.argv[2:]:
        with gilfree.Pool(2, backend="processes", start_method=method) as pool:
            print(method, "lambda", pool.map(lambda x: x + offset, range(5)), flush=True)
            print(method, "closure", pool.map(outer(3), range(5)), flush=True)
            print(method, "main", pool.map(main_fn, range(5)), flush=True)
            print(method, "class", pool.apply(MainCallable(), (1,)), flush=True)
            print(method, "submit", pool.submit(lambda: offset * 2).result(), flush=True)
    """
)


def run_child(script: str, *args: str, timeout: float = 40) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", script, child_sys_path(), *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )


def test_lambdas_closures_and_main_functions():
    methods = ["forkserver", "spawn", "fork"]
    res = run_child(MAIN_SCRIPT, *methods)
    assert res.returncode == 0, f"rc {res.returncode}\nstdout={res.stdout}\nstderr={res.stderr}"
    expected = []
    for m in methods:
        expected += [
            f"{m} lambda [1000, 1001, 1002, 1003, 1004]",
            f"{m} closure [0, 3, 6, 9, 12]",
            f"{m} main [-1, 0, 1, 2, 3]",
            f"{m} class 101",
            f"{m} submit 2000",
        ]
    assert res.stdout.splitlines() == expected, res.stderr


# --------------------------------------------------------------------------
# 8. Out-of-band buffers

MB16 = 2 * 1024 * 1024  # float64 items in 16 MB


def test_large_numpy_argument_arrives_intact():
    np = pytest.importorskip("numpy")
    a = np.random.default_rng(7).random(MB16)
    assert a.nbytes == 16 * 1024 * 1024
    crc = zlib.crc32(a.tobytes())
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        shape, dtype, got_crc, base_type, _owndata = pool.apply(array_info, (a,))
        assert (shape, dtype, got_crc) == (a.shape, a.dtype.str, crc)
        # the worker sees the argument over the shared mapping, not a copy
        assert base_type == "ShmBuffer", base_type
        # map over several large arrays
        arrays = [a, a[::-1].copy(), a * 2]
        got = pool.map(array_info, arrays, chunksize=1)
        assert [g[2] for g in got] == [zlib.crc32(x.tobytes()) for x in arrays]
    # the worker wrote -1 into its argument; ours is untouched
    assert zlib.crc32(a.tobytes()) == crc


def test_large_numpy_result_is_shared_memory():
    np = pytest.importorskip("numpy")
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        r = pool.apply(make_array, (MB16, 11))
        expected = np.random.default_rng(11).random(MB16)
        assert isinstance(r, np.ndarray) and r.dtype == np.float64 and r.shape == (MB16,)
        assert np.array_equal(r, expected)
        base = r
        chain = []
        while getattr(base, "base", None) is not None:
            base = base.base
            chain.append(type(base).__name__)
        assert chain and chain[-1] == "ShmBuffer", chain
        assert not r.flags.owndata
        assert r.flags.writeable
        r[:10] = 5.0
        r[-1] = 7.0
        assert r[0] == 5.0 and r[9] == 5.0 and r[-1] == 7.0 and r[10] == expected[10]
        results = pool.map(make_array, [MB16] * 3, chunksize=1)
        assert all(np.array_equal(x, np.random.default_rng(MB16).random(MB16)) for x in results)
        # each result has its own memory
        results[0][0] = -3.0
        assert results[1][0] != -3.0
        del r, base, results


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_large_bytes_round_trip(kind):
    data = kind(os.urandom(1 << 20))
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        out = pool.apply(reverse_bytes, (data,))
        assert type(out) is kind
        assert out == data[::-1]
        assert pool.apply(type_name, (data,)) == kind.__name__
        outs = pool.map(reverse_bytes, [data, data[::-1]], chunksize=1)
        assert outs == [data[::-1], data]


def memoryview_info(view):
    """(type name, format, shape, type name of the exporting object)."""
    return type(view).__name__, view.format, view.shape, type(view.obj).__name__


def make_view(n):
    return memoryview(bytearray(b"v" * n)).cast("I")


def test_large_memoryviews_travel_out_of_band():
    np = pytest.importorskip("numpy")
    arr = np.arange(64 * 1024, dtype=np.int32).reshape(256, 256)
    view = memoryview(arr)
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        # In the worker the argument is still a memoryview, with its format and
        # shape, over shared memory: no copy into the pickle stream.
        assert pool.apply(memoryview_info, (view,)) == ("memoryview", "i", (256, 256), "ShmBuffer")
        # A non-contiguous view arrives as a contiguous one with the same items.
        sliced = memoryview(arr)[::2]
        assert pool.apply(memoryview_info, (sliced,))[:3] == ("memoryview", "i", (128, 256))
        # A large memoryview result comes back over shared memory too.
        out = pool.apply(make_view, (1 << 20,))
        assert type(out) is memoryview and out.format == "I" and len(out) == (1 << 18)
        assert type(out.obj).__name__ == "ShmBuffer"
        assert out.tobytes() == b"v" * (1 << 20)
        # A small view travels inside the pickle stream, and is still a
        # memoryview on arrival (plain pickle cannot send one at all).
        small = memoryview(b"tiny")
        assert pool.apply(memoryview_info, (small,))[:3] == ("memoryview", "B", (4,))


# --------------------------------------------------------------------------
# 9. Start methods and option checks


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_start_methods_map(method):
    # fork warns exactly when other threads run (numpy's BLAS threads count:
    # a forked worker inherits their locks too).
    expect_warning = method == "fork" and gilfree._process._other_threads_running()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gilfree.Pool(WORKERS, backend="processes", start_method=method) as pool:
            assert pool.map(square, range(50)) == [x * x for x in range(50)]
            assert len(pool.pids) == WORKERS
            if method in ("fork", "spawn"):
                assert set(pool.pids) <= gfsupport.child_pids(), (pool.pids, gfsupport.child_pids())
            assert pool.map(lambda x: -x, range(5)) == [0, -1, -2, -3, -4]
    fork_warnings = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert bool(fork_warnings) == expect_warning, fork_warnings


def test_fork_with_another_thread_warns():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="bystander")
    thread.start()
    try:
        with pytest.warns(RuntimeWarning, match="fork"):
            pool = gilfree.Pool(WORKERS, backend="processes", start_method="fork")
        with pool:
            assert pool.map(square, range(10)) == [x * x for x in range(10)]
    finally:
        stop.set()
        thread.join(10)


def test_invalid_options():
    with pytest.raises(ValueError, match="bogus"):
        gilfree.Pool(WORKERS, backend="processes", start_method="bogus")
    for kwargs in ({"task_timeout": 1.0}, {"retries": 1}, {"start_method": "spawn"},
                   {"start_method": "fork"}):
        with pytest.raises(ValueError):
            gilfree.Pool(WORKERS, backend="threads", **kwargs)
        # The default, "auto", takes them (they apply if it chooses processes).
        with gilfree.Pool(WORKERS, **kwargs) as pool:
            assert pool.backend == "auto"
    with pytest.raises(ValueError, match="bogus"):
        gilfree.Pool(WORKERS, start_method="bogus")
    with pytest.raises((ValueError, TypeError)):
        gilfree.Pool(WORKERS, backend="processes", task_timeout=-1)
    with pytest.raises(ValueError):
        gilfree.Pool(WORKERS, backend="processes", retries=-1)


# --------------------------------------------------------------------------
# 10. Workers die with their parent

PARENT_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    sys.path[:0] = json.loads(sys.argv[1])
    import gilfree

    pool = gilfree.Pool(2, backend="processes", start_method=sys.argv[2])
    assert pool.map(abs, [-1, -2]) == [1, 2]
    print(json.dumps(list(pool.pids)), flush=True)
    pool.map(time.sleep, [30] * 4, chunksize=1)  # killed in here
    """
)


def wait_gone(pids, timeout: float) -> dict[int, str | None]:
    """Poll until none of pids is alive (zombies count as gone); the survivors."""
    gfsupport.wait_until(lambda: not any(alive(p) for p in pids), timeout=timeout, interval=0.005)
    return {p: proc_state(p) for p in pids if alive(p)}


def start_child(script: str, *args: str, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, child_sys_path(), *args],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def read_line(proc: subprocess.Popen, timeout: float = 20) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    if proc.poll() is None:
        proc.kill()
    if proc.stdin is not None and proc.stdin.closed:
        proc.stdin = None  # communicate() would flush a closed pipe
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return out, err


@pytest.mark.parametrize("method", ["forkserver", "fork", "spawn"])
def test_workers_die_with_their_parent(method):
    proc = start_child(PARENT_SCRIPT, method)
    worker_pids: list[int] = []
    try:
        line = read_line(proc)
        if not line.startswith("["):
            out, err = finish(proc)
            pytest.fail(f"child did not start: {line!r} {out!r} {err!r}")
        worker_pids = json.loads(line)
        assert len(worker_pids) == 2 and all(alive(p) for p in worker_pids)
        time.sleep(0.3)  # the workers are asleep in their tasks
        os.kill(proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        proc.wait(10)
        survivors = wait_gone(worker_pids, timeout=1.0)
        elapsed = time.monotonic() - t0
        print(f"workers gone {elapsed * 1000:.0f} ms after the parent's death")
        assert not survivors, f"workers {survivors} still alive {elapsed:.2f} s after their parent died"
    finally:
        finish(proc)
        for pid in worker_pids:  # never leave a worker behind, even if the test failed
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------
# 11. Ctrl-C in a program using a process pool

CTRL_C_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, time
    sys.path[:0] = json.loads(sys.argv[1])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import gilfree

    caught = left = None
    try:
        with gilfree.Pool(2, backend="processes", start_method=sys.argv[2]) as pool:
            print(json.dumps(list(pool.pids)), flush=True)
            import faulthandler
            faulthandler.dump_traceback_later(12)  # if Ctrl-C is not handled: where we are
            try:
                pool.map(time.sleep, [0.01] * 100000)
                print("map finished", flush=True)
            except KeyboardInterrupt:
                caught = time.monotonic()
                raise
    except KeyboardInterrupt:
        left = time.monotonic()
    sent = float(sys.stdin.readline())
    print(json.dumps({"latency": caught - sent if caught else None,
                      "left_block": left - sent if left else None,
                      "left_block_at": left}), flush=True)
    sys.stdin.readline()  # stay alive (and a parent of whatever remains) until told
    """
)


class _NoReport(AssertionError):
    pass


@pytest.mark.parametrize("method", ["forkserver", "fork"])
def test_ctrl_c_in_child_program(method):
    # Known issue (see the stop note of issues 3/4): under heavy CI load the
    # child has, rarely, not reported within 30 s; its traceback (faulthandler)
    # is then in the failure message.  One more try before failing.
    try:
        _ctrl_c_once(method)
    except _NoReport as first:
        print(f"first attempt: {first}")
        _ctrl_c_once(method)


def _ctrl_c_once(method):
    proc = start_child(CTRL_C_SCRIPT, method, stdin=subprocess.PIPE)
    worker_pids: list[int] = []
    try:
        line = read_line(proc)
        if not line.startswith("["):
            out, err = finish(proc)
            pytest.fail(f"child did not start: {line!r} {out!r} {err!r}")
        worker_pids = json.loads(line)
        assert len(worker_pids) == 2
        time.sleep(0.4)  # well inside map
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        proc.stdin.write(f"{sent!r}\n")
        proc.stdin.flush()
        line = read_line(proc, timeout=30)
        if not line.startswith("{"):
            out, err = finish(proc)
            raise _NoReport(f"child did not report: {line!r} {out!r} {err!r}")
        report = json.loads(line)
        print(f"child report: {report}")
        assert report["latency"] is not None, report
        assert report["latency"] < 0.1, f"KeyboardInterrupt {report['latency'] * 1000:.0f} ms after SIGINT"
        assert report["left_block"] is not None and report["left_block"] < 1.0, report
        # every worker is gone (not even a zombie) within 1 s of the signal,
        # while the child still runs
        gfsupport.wait_until(lambda: all(proc_state(p) is None for p in worker_pids),
                             timeout=max(0.0, sent + 1.0 - time.monotonic()), interval=0.005)
        states = {p: proc_state(p) for p in worker_pids}
        assert all(s is None for s in states.values()), f"workers 1 s after SIGINT: {states}"
        assert proc.poll() is None
        zombies = {p: proc_state(p) for p in children_of(proc.pid) if proc_state(p) == "Z"}
        for p in children_of(proc.pid):  # the forkserver's children too
            zombies.update({c: "Z" for c in children_of(p) if proc_state(c) == "Z"})
        assert not zombies, f"zombies under the child: {zombies}"
        proc.stdin.write("exit\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "map finished" not in out
    finally:
        finish(proc)
        for pid in worker_pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------
# 12. Create/map/close cycles leak nothing


@pytest.mark.parametrize("method", ["forkserver", "fork"])
def test_create_close_cycles_leak_nothing(method):
    cycles = 100
    gc_fds = gfsupport.open_fds()
    threads = gfsupport.native_threads()
    py_threads = gfsupport.python_threads()
    children = gfsupport.descendant_pids()
    maps = memfd_mappings()
    t0 = time.monotonic()
    for i in range(cycles):
        with warnings.catch_warnings():
            # fork warns when numpy's BLAS threads run here: not this test's point.
            warnings.simplefilter("ignore", RuntimeWarning)
            pool = gilfree.Pool(2, backend="processes", start_method=method)
        assert pool.map(square, range(i, i + 8)) == [x * x for x in range(i, i + 8)]
        pool.close()
        pool.join()
        del pool
    elapsed = time.monotonic() - t0
    import gc

    gc.collect()
    gfsupport.wait_until(lambda: gfsupport.descendant_pids() <= children, timeout=2)
    assert gfsupport.descendant_pids() - children == set()
    assert len(gfsupport.open_fds()) <= len(gc_fds), (gc_fds, gfsupport.open_fds())
    assert gfsupport.wait_until(lambda: set(gfsupport.native_threads()) <= set(threads), timeout=2), (
        gfsupport.native_threads())
    assert gfsupport.python_threads() == py_threads
    assert memfd_mappings() == maps, f"memfd mappings {maps} -> {memfd_mappings()}"
    assert elapsed < 30, f"{cycles} cycles took {elapsed:.1f} s"


# --------------------------------------------------------------------------
# 13. No /dev/shm entries


def test_no_dev_shm_entries():
    np = pytest.importorskip("numpy")
    before = dev_shm()
    maps = memfd_mappings()
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        arrays = [np.full(MB16, float(i)) for i in range(4)]
        sums = pool.map(array_info, arrays, chunksize=1)
        assert len(sums) == 4
        during = dev_shm()
        results = pool.map(make_array, [MB16] * 2, chunksize=1)
        during |= dev_shm()
        assert all(r.shape == (MB16,) for r in results)
        del results, arrays
    after = dev_shm()
    assert during - before == set(), f"/dev/shm gained {sorted(during - before)}"
    assert after - before == set(), f"/dev/shm gained {sorted(after - before)}"
    import gc

    gc.collect()
    assert memfd_mappings() == maps, f"memfd mappings {maps} -> {memfd_mappings()}"


# --------------------------------------------------------------------------
# terminate() from another thread while the caller waits


@pytest.mark.parametrize("method", ["map", "imap"])
def test_terminate_from_another_thread_while_mapping(method):
    pool = gilfree.Pool(WORKERS, backend="processes")
    try:
        pool.map(square, range(4))
        timer = threading.Timer(0.3, pool.terminate)
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(cf.CancelledError):
            if method == "map":
                pool.map(sleep_return, [0.05] * 400, chunksize=1)
            else:
                for _ in pool.imap(sleep_return, [0.05] * 400, chunksize=1):
                    pass
        assert time.monotonic() - t0 < 5
        timer.join()
        assert pool.state in ("terminated", "joined")
        with pytest.raises(ValueError):
            pool.map(square, range(3))
    finally:
        pool.terminate()
        pool.join()


# --------------------------------------------------------------------------
# The function travels once per worker, not once per chunk


class CountedLoads:
    """A callable that records every time a process unpickles it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (_rebuild_counted, (self.path,))

    def __call__(self, x):
        return x + 1


def _rebuild_counted(path: str) -> CountedLoads:
    record(path, f"load {os.getpid()}")
    return CountedLoads(path)


def test_function_is_sent_once_per_worker(recorder):
    fn = CountedLoads(recorder.path)
    with gilfree.Pool(WORKERS, backend="processes") as pool:
        assert pool.map(fn, range(300), chunksize=1) == list(range(1, 301))
        assert pool.map(fn, range(50), chunksize=3) == list(range(1, 51))
        assert [pool.apply(fn, (i,)) for i in range(20)] == list(range(1, 21))
        loads = recorder.lines()
        # 300 + 17 + 20 tasks; each worker unpickled the function once.
        assert 1 <= len(loads) <= WORKERS, loads
        assert len(set(loads)) == len(loads), loads
