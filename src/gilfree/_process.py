"""Worker processes of the process backend: options, start-up and reaping.

Starting a process reuses :mod:`multiprocessing`'s machinery (its fork,
spawn and forkserver start methods, their ``__main__`` handling and their
descriptor passing); everything after start-up -- the channel, the worker
loop, dispatch, results and crash handling -- is gilfree's own C code.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import threading
import warnings
from multiprocessing import reduction
from typing import Any, Optional, Tuple

__all__ = ["START_METHODS", "default_start_method", "process_options"]

START_METHODS = ("forkserver", "spawn", "fork")


def default_start_method() -> str:
    """``"forkserver"`` where it exists (Linux and most Unix), else ``"spawn"``."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class _Fd:
    """A file descriptor for a worker process.

    With ``fork`` the child inherits it as is.  With ``spawn`` and
    ``forkserver`` multiprocessing pickles the Process object; while it does,
    ``reduction.DupFd`` registers the descriptor to be passed to the child
    (spawn: kept open across exec; forkserver: sent over its Unix socket).
    """

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> Any:
        return (_rebuild_fd, (reduction.DupFd(self.fd),))


def _rebuild_fd(dup: Any) -> _Fd:
    return _Fd(dup.detach())


class _LargeBuffer:
    """Wraps bytes, bytearray or memoryview of 64 KiB and more on their way to
    another process, so that pickle protocol 5 sends their memory out of band
    (in shared memory) instead of inside the pickle stream."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __reduce_ex__(self, protocol: Any) -> Any:
        obj = self.obj
        kind = type(obj).__name__
        if isinstance(obj, memoryview):
            fmt, shape = obj.format, obj.shape
            if not obj.contiguous:
                obj = obj.tobytes()
            return (_rebuild_buffer, (pickle.PickleBuffer(obj), kind, fmt, shape))
        return (_rebuild_buffer, (pickle.PickleBuffer(obj), kind, "B", None))


def _rebuild_buffer(buf: Any, kind: str, fmt: str, shape: Any) -> Any:
    """The receiving side: a memoryview stays a view of the shared memory (no
    copy); bytes and bytearray are rebuilt from it (their types own their bytes)."""
    view = memoryview(buf)
    if kind == "bytes":
        return view.tobytes()
    if kind == "bytearray":
        return bytearray(view)
    view = view.cast("B")
    if shape is not None and (fmt != "B" or len(shape) != 1):
        # typeshed lists only literal format codes; fmt comes from the sender's buffer.
        view = view.cast(fmt, shape)  # type: ignore[call-overload]
    return view


INNER_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "BLIS_NUM_THREADS",
)
"""Environment variables that size BLAS/OpenMP thread pools when a library loads."""


_NATIVE_POOL_LIBS = (b"blas", b"mkl", b"gomp", b"libomp", b"iomp", b"blis", b"lapack", b"tbb")


def _native_pools_loaded() -> bool:
    """Whether this process may have loaded a library with a thread pool
    threadpoolctl knows (True where /proc/self/maps cannot be read)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            maps = f.read()
    except OSError:
        return True
    return any(name in maps for name in _NATIVE_POOL_LIBS)


def limit_inner_threads(n: int, env: bool = True) -> Any:
    """Hold BLAS/OpenMP thread pools to n threads: libraries already loaded
    through threadpoolctl and, with env (a worker process), libraries loaded
    later through the usual environment variables.  Returns threadpoolctl's
    limiter (restore_original_limits() undoes it), or None without
    threadpoolctl."""
    if env:
        for var in INNER_THREAD_VARS:
            os.environ[var] = str(n)
        if not _native_pools_loaded():
            # A fresh worker (forkserver, spawn) has loaded no BLAS/OpenMP
            # library yet: the variables above size the ones it loads, and
            # importing threadpoolctl (~10-15 ms) would only slow its start.
            return None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency, but be kind
        return None
    return threadpool_limits(limits=n)


def _worker_entry(mem: _Fd, pool: _Fd, sock: _Fd, pidfd: Optional[_Fd], pool_pid: int, slot: int,
                  inner_threads: int = 0) -> None:
    from . import _core

    if inner_threads > 0:
        # workers x inner threads <= usable CPUs: no oversubscription when
        # each task calls into BLAS or OpenMP.
        _limits = limit_inner_threads(inner_threads)  # noqa: F841 - kept for the worker's life

    # The pool starts its workers as daemons so that multiprocessing's exit
    # handler in the pool never waits for them; but inside the worker that
    # flag would forbid a task to start processes of its own (a nested
    # pool).  Workers end with the pool anyway (gf_watch_parent), so lift it.
    multiprocessing.current_process()._config["daemon"] = False  # type: ignore[attr-defined]

    _core._worker_main(mem.fd, pool.fd, sock.fd, pidfd.fd if pidfd is not None else -1, pool_pid, slot)


class _Starter:
    """Called by the C engine (with the GIL) to start the worker of a slot."""

    def __init__(self, ctx: Any, inner_threads: int) -> None:
        self._ctx = ctx
        self._inner = inner_threads

    def __call__(self, slot: int, memfd: int, poolfd: int, sockfd: int, pidfd: int, pool_pid: int) -> Tuple[int, Any]:
        proc = self._ctx.Process(
            target=_worker_entry,
            args=(_Fd(memfd), _Fd(poolfd), _Fd(sockfd), _Fd(pidfd) if pidfd >= 0 else None, pool_pid, slot,
                  self._inner),
            name=f"gilfree-worker-{slot}",
            daemon=True,
        )
        proc.start()
        return proc.pid, proc


def _reap(proc: Any, timeout: float) -> Optional[int]:
    """Join a worker that was told to stop or was killed; kill it if it lingers."""
    proc.join(timeout)
    if proc.exitcode is None:  # pragma: no cover - only a stuck worker
        proc.kill()
        proc.join(timeout)
    return proc.exitcode


def _check_number(name: str, value: Any, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Pool(): {name} must be a number of seconds or None, got {value!r}")
    if value != value or value < 0 or (value == 0 and not allow_zero):  # NaN or negative
        raise ValueError(f"Pool(): {name} must be > 0, got {value!r}")
    return float(value)


def inner_threads_for(inner_threads: Optional[int], workers: Optional[int]) -> int:
    """The BLAS/OpenMP threads each worker may use: the value given, or
    usable CPUs // workers (at least 1)."""
    from ._core import usable_cpus

    if inner_threads is not None:
        if isinstance(inner_threads, bool) or not isinstance(inner_threads, int):
            raise TypeError(f"Pool(): inner_threads must be an int or None, got {inner_threads!r}")
        if inner_threads < 1:
            raise ValueError(f"Pool(): inner_threads must be >= 1, got {inner_threads!r}")
        return inner_threads
    cpus = usable_cpus()
    n = workers if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1 else cpus
    return max(1, cpus // n)


def _other_threads_running() -> bool:
    """Whether threads other than the calling one and gilfree's own native
    threads ("gilfree-*": they hold no lock a forked worker could need) are
    alive.  From /proc where it exists: threading.active_count() also counts
    the dummy entries of native threads that once ran Python code and have
    since exited."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return threading.active_count() > 1
    others = 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="ascii", errors="replace") as f:
                if f.read().startswith("gilfree-"):
                    continue
        except OSError:
            continue  # exited meanwhile
        others += 1
    return others > 1


def process_options(
    backend: Any,
    start_method: Optional[str],
    task_timeout: Optional[float],
    retries: int,
    inner_threads: int = 0,
    warn_fork: bool = True,
) -> Optional[tuple]:
    """Check the process-backend options; the tuple ``_core.Pool`` takes, or None for threads."""
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise TypeError(f"Pool(): retries must be an int, got {retries!r}")
    if retries < 0:
        raise ValueError(f"Pool(): retries must be >= 0, got {retries!r}")
    if backend != "processes":
        for name, value, default in (
            ("start_method", start_method, None),
            ("task_timeout", task_timeout, None),
            ("retries", retries, 0),
        ):
            if value != default:
                raise ValueError(
                    f"Pool(): {name} needs backend='processes' (a thread cannot be started "
                    "another way, killed or replaced)"
                )
        return None
    method = default_start_method() if start_method is None else start_method
    if method not in START_METHODS or method not in multiprocessing.get_all_start_methods():
        raise ValueError(
            f"Pool(): unknown start_method {start_method!r}; available here: "
            + ", ".join(repr(m) for m in START_METHODS if m in multiprocessing.get_all_start_methods())
        )
    timeout = 0.0 if task_timeout is None else _check_number("task_timeout", task_timeout, allow_zero=False)
    if warn_fork and method == "fork" and _other_threads_running():
        warnings.warn(
            "Pool(start_method='fork'): this process runs other threads; a forked worker "
            "inherits their locks in whatever state they are and may deadlock. Prefer "
            "'forkserver' (the default) or 'spawn'.",
            RuntimeWarning,
            stacklevel=3,
        )
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        # Workers fork from a server that has gilfree imported already: each
        # new worker is ready in a few milliseconds.  Effective only before
        # the server starts (it is shared by the whole program).
        try:
            ctx.set_forkserver_preload(["gilfree._process"])
        except Exception:  # pragma: no cover - defensive
            pass
    children = method in ("fork", "spawn")
    return (children, timeout, retries, _Starter(ctx, inner_threads), _reap)


def _after_fork_in_child() -> None:
    # A process forked from one that started multiprocessing's forkserver
    # inherits its bookkeeping, but the server is not its child: the next
    # start would fail in waitpid() (ChildProcessError).  Forget it, so that
    # a pool created here starts a server of its own.
    from multiprocessing import forkserver

    fs = getattr(forkserver, "_forkserver", None)
    if fs is None or getattr(fs, "_forkserver_pid", None) is None:
        return
    alive = fs._forkserver_alive_fd
    fs._forkserver_pid = None
    fs._forkserver_address = None
    fs._forkserver_alive_fd = None
    if alive is not None:
        try:
            os.close(alive)
        except OSError:  # pragma: no cover
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


if sys.platform != "linux":  # pragma: no cover - informative only
    _PLATFORM_NOTE = "the process backend needs Linux (memfd, pidfd)"
else:
    _PLATFORM_NOTE = ""

