"""Helpers shared by the gilfree test modules.

Everything a pool runs is a module-level function or class defined here (or in
a test module), so that it pickles: later backends run tasks in other
processes.  Side effects that a test wants to observe from a task go through a
file (``Recorder``), never through a Python object, for the same reason: an
append to a file is visible from any thread or process.

The /proc helpers are Linux-only, like the project.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

# Backends whose tasks run in this process.  Tests that need shared memory with
# the task (object identity, closures, passing a Pool object into a task) check
# membership here rather than naming "threads".
IN_PROCESS_BACKENDS = frozenset({"threads"})
PROCESS_BACKENDS = frozenset({"processes"})

THREAD_PREFIX = "gilfree-"


# --------------------------------------------------------------------------
# /proc inspection


def native_threads(prefix: str = THREAD_PREFIX) -> dict[int, str]:
    """{tid: comm} for the threads of this process whose name starts with prefix."""
    found = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:  # pragma: no cover - not Linux
        return found
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="utf-8", errors="replace") as f:
                comm = f.read().rstrip("\n")
        except OSError:
            continue  # the thread exited while we looked
        if comm.startswith(prefix):
            found[int(tid)] = comm
    return found


def current_thread_name(*_ignored) -> str:
    """The kernel name (comm) of the calling native thread.

    Uses threading.get_native_id(), which, unlike threading.current_thread(),
    does not register a _DummyThread for a foreign thread."""
    with open(f"/proc/self/task/{threading.get_native_id()}/comm", encoding="utf-8") as f:
        return f.read().rstrip("\n")


def open_fds() -> dict[int, str]:
    """{fd: link target} for this process's open file descriptors."""
    result = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            result[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the fd of the listdir itself, already closed
    return result


def child_pids() -> set[int]:
    """Direct children of this process (any thread's), zombies included."""
    pids: set[int] = set()
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:  # pragma: no cover
        return pids
    have_children_file = False
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/children", encoding="ascii") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        except OSError:
            continue
        have_children_file = True
        pids.update(int(p) for p in data.split())
    if have_children_file:
        return pids
    # Kernel without CONFIG_PROC_CHILDREN: scan every process's parent.
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == me:
            pids.add(int(name))
    return pids


def children_of(pid: int) -> set[int]:
    """Direct children of process pid (any of its threads')."""
    found: set[int] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                found.update(int(p) for p in f.read().split())
        except OSError:
            continue
    return found


def mp_service_pids() -> set[int]:
    """multiprocessing's forkserver and resource tracker: helpers shared by the
    whole test session (started once, on first use), not leaks."""
    pids: set[int] = set()
    try:
        from multiprocessing import forkserver

        pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
        if pid:
            pids.add(pid)
    except Exception:  # pragma: no cover
        pass
    try:
        from multiprocessing import resource_tracker

        pid = getattr(resource_tracker._resource_tracker, "_pid", None)
        if pid:
            pids.add(pid)
    except Exception:  # pragma: no cover
        pass
    return pids


def descendant_pids() -> set[int]:
    """Every process below this one (forkserver workers are grandchildren),
    without multiprocessing's shared service processes themselves."""
    seen: set[int] = set()
    todo = list(child_pids())
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children_of(pid))
    return seen - mp_service_pids()


def python_threads() -> dict[int, str]:
    """{ident: name} of live threading.Thread objects other than dummies."""
    return {
        t.ident: t.name
        for t in threading.enumerate()
        if type(t).__name__ != "_DummyThread" and t.ident is not None
    }


def wait_until(predicate, timeout: float = 2.0, interval: float = 0.01) -> bool:
    """Poll predicate() until it is true or timeout seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(interval)


# --------------------------------------------------------------------------
# Observing task side effects across threads and processes


class Recorder:
    """Counts task calls through an append-only file (works across processes)."""

    def __init__(self, path) -> None:
        self.path = str(path)
        Path(self.path).touch()

    def lines(self) -> list[str]:
        with open(self.path, encoding="utf-8") as f:
            return f.read().splitlines()

    def count(self, tag: str | None = None) -> int:
        lines = self.lines()
        return len(lines) if tag is None else lines.count(tag)

    def __repr__(self) -> str:
        return f"Recorder({self.path!r})"


def record(path: str, tag) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{tag}\n".encode())
    finally:
        os.close(fd)


def record_and_return(path: str, x):
    record(path, x)
    return x


def record_and_sleep(path: str, delay: float, x):
    """Record the call when it starts, then sleep."""
    record(path, x)
    time.sleep(delay)
    return x


def record_sleep_record(path: str, delay: float, x):
    """Record 'start-x', sleep, record 'end-x'."""
    record(path, f"start-{x}")
    time.sleep(delay)
    record(path, f"end-{x}")
    return x


def record_then_fail_at(path: str, fail_at, x):
    record(path, x)
    if x == fail_at:
        raise ValueError(f"bad input {x}")
    return x


# --------------------------------------------------------------------------
# Task functions


def square(x):
    return x * x


def add_one(x):
    return x + 1


def add(a, b):
    return a + b


def identity(x):
    return x


def return_none(*args, **kwargs):
    return None


def count_args(*args):
    return len(args)


def join_args(*args):
    return "".join(map(str, args))


def kw_echo(*args, **kwargs):
    return (args, dict(sorted(kwargs.items())))


def sleep_return(delay, value=None):
    time.sleep(delay)
    return value


def fail_on_five(x):
    if x == 5:
        raise ValueError(f"bad input {x}")
    return x


def fail_on_five_pair(x, y):
    if x == 5:
        raise ValueError(f"bad input {x}")
    return x + y


def always_fail(*args):
    raise ValueError("always fails")


def raise_this_at(exc, target, x):
    """Raise the given exception object when x == target."""
    if x == target:
        raise exc
    return x


def raise_this(exc, *args):
    raise exc


def nested_pool_sum(backend, n):
    """A task that runs its own pool (created inside the task)."""
    import gilfree

    with gilfree.Pool(2, backend=backend) as inner:
        return sum(inner.map(square, range(n)))


def nested_oneshot(backend, n):
    import gilfree

    return gilfree.map(square, range(n), workers=2, backend=backend)


def map_on(other_pool, n):
    """A task that submits to another, already running, pool."""
    return other_pool.map(square, range(n))


class Multiplier:
    def __init__(self, k):
        self.k = k

    def mul(self, x):
        return self.k * x

    @classmethod
    def cls_name(cls, x):
        return f"{cls.__name__}:{x}"

    @staticmethod
    def static_neg(x):
        return -x


class CallableAdder:
    def __init__(self, k):
        self.k = k

    def __call__(self, x):
        return x + self.k


class CustomError(Exception):
    def __init__(self, msg, code=0):
        super().__init__(msg, code)
        self.code = code


class Opaque:
    """Neither callable nor iterable, with a repr a message can be checked for."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __repr__(self) -> str:
        return f"<Opaque {self.tag}>"


class CountingIterator:
    """An iterator over 0, 1, 2, ... that counts how many items were pulled.

    It stops after `limit` items so that a broken, eager implementation fails
    a bound instead of eating all memory."""

    def __init__(self, limit: int = 2_000_000) -> None:
        self.limit = limit
        self.pulled = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.pulled >= self.limit:
            raise StopIteration
        value = self.pulled
        self.pulled += 1
        return value


def generator_then_raise(n, exc):
    yield from range(n)
    raise exc


@contextlib.contextmanager
def busy_python_thread():
    """A Python thread spinning in a pure-Python loop (it keeps the GIL busy)
    for the duration of the block."""
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    t = threading.Thread(target=spin, name="busy")
    t.start()
    try:
        yield t
    finally:
        stop.set()
        t.join()
