"""The public Pool: a thin Python layer over the C core's thread pool.

Every hot method (map, imap, apply_async, submit, ...) is the C method of
``gilfree._core.Pool`` itself, reached without a Python frame in between.
This module adds what belongs at the API surface: the context manager,
shutting pools down at interpreter exit, fork handling, ResourceWarning for
pools that were never closed, and the one-shot :func:`map`.
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from typing import Any, Callable, Iterable, List, Optional, TypeVar

from . import _core
from ._process import process_options

__all__ = ["Pool", "map", "usable_cpus"]

T = TypeVar("T")
R = TypeVar("R")

usable_cpus = _core.usable_cpus

# Pools that are alive and not yet joined.  At interpreter exit they are
# terminated and joined *before* CPython starts finalising (worker threads
# must not try to attach to a dying interpreter); in a forked child they are
# marked unusable (their threads do not exist there).
_live_pools: "weakref.WeakSet[Pool]" = weakref.WeakSet()
_live_lock = threading.Lock()
_exiting = False


def _shutdown_all_at_exit() -> None:
    global _exiting
    _exiting = True
    with _live_lock:
        pools = list(_live_pools)
    for pool in pools:
        try:
            pool.terminate()
        except BaseException:  # pragma: no cover - best effort at exit
            pass


def _after_fork_in_child() -> None:
    global _live_lock
    # The lock may have been held by another thread at fork time.
    _live_lock = threading.Lock()
    _live_pools.clear()


threading._register_atexit(_shutdown_all_at_exit)  # type: ignore[attr-defined]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Pool(_core.Pool):
    """Run a Python function over many inputs on every CPU core.

    ``Pool(workers=None, backend="threads", *, start_method=None,
    task_timeout=None, retries=0)`` starts *workers* workers (default:
    :func:`usable_cpus`, which honours CPU affinity and cgroup quotas).  The
    methods follow :class:`multiprocessing.pool.Pool` -- ``map``, ``imap``,
    ``imap_unordered``, ``starmap``, ``apply``, ``apply_async`` -- plus
    ``submit`` from :mod:`concurrent.futures`.

    ``backend="threads"``: native worker threads.  Dispatch, chunking, result
    slots and waiting are C; a worker attaches to the interpreter once per
    chunk and calls the function with vectorcall, so the per-item overhead is
    close to a plain loop.  Threads help when the function releases the GIL
    (hashlib, zlib, numpy, I/O) or on free-threaded CPython; on pure-Python
    code under the GIL they cost (almost) nothing but do not speed it up.

    ``backend="processes"``: worker processes (``start_method``
    ``"forkserver"`` by default, ``"spawn"`` or ``"fork"``), each running a
    C loop over shared-memory rings, for Python code that holds the GIL.
    Functions, arguments and results are pickled (cloudpickle for lambdas
    and closures); arrays and buffers of 64 KiB and more travel as shared
    memory.  A worker that dies fails only the input it was running, with
    :class:`WorkerDiedError`, and is replaced; ``retries=n`` re-runs such an
    input up to *n* times; ``task_timeout=s`` kills a worker whose input has
    run for *s* seconds (:class:`TaskTimeoutError`).  Code that creates a
    process pool in a script belongs under ``if __name__ == "__main__":``
    (the workers import the script).

    Use it as a context manager: leaving the block normally waits for the
    submitted work (``close()`` + ``join()``); leaving it with an exception
    cancels queued work (``terminate()``).

    >>> import gilfree
    >>> with gilfree.Pool(2) as pool:
    ...     pool.map(abs, [-1, -2, 3])
    [1, 2, 3]
    >>> with gilfree.Pool(2, backend="processes") as pool:
    ...     pool.map(abs, [-1, -2, 3])
    [1, 2, 3]
    """

    def __init__(
        self,
        workers: Optional[int] = None,
        backend: str = "threads",
        *,
        start_method: Optional[str] = None,
        task_timeout: Optional[float] = None,
        retries: int = 0,
    ) -> None:
        proc = process_options(backend, start_method, task_timeout, retries)
        if proc is None:
            super().__init__(workers, backend)
        else:
            super().__init__(workers, backend, _process=proc)
        with _live_lock:
            _live_pools.add(self)

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            self.join()
        else:
            self.terminate()

    def join(self) -> None:
        super().join()
        self._forget()

    def terminate(self) -> None:
        super().terminate()
        self._forget()

    def _forget(self) -> None:
        with _live_lock:
            _live_pools.discard(self)

    def __repr__(self) -> str:
        return f"<gilfree.Pool backend={self.backend!r} workers={self.workers} state={self.state!r}>"

    def __del__(self) -> None:
        state = getattr(self, "state", "uninitialised")
        if state in ("running", "closed", "terminated") and not _exiting:
            warnings.warn(
                f"unclosed {self!r}: use 'with gilfree.Pool() as pool:' or call "
                "close() and join()",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )
        # The C deallocator then closes the queue without blocking: the threads
        # finish the queued work and exit by themselves.

    def __reduce__(self) -> Any:
        raise TypeError(
            "gilfree.Pool objects cannot be pickled or passed to other processes"
        )


def map(  # noqa: A001 - mirrors the builtin on purpose
    func: Callable[[Any], R],
    iterable: Iterable[Any],
    *,
    chunksize: Optional[int] = None,
    workers: Optional[int] = None,
    backend: str = "threads",
    **options: Any,
) -> List[R]:
    """Return ``[func(x) for x in iterable]`` computed by a one-shot Pool.

    The pool is started, used and joined within the call.

    >>> import gilfree
    >>> gilfree.map(len, ["a", "bb", "ccc"], workers=2)
    [1, 2, 3]
    """
    with Pool(workers, backend, **options) as pool:
        return pool.map(func, iterable, chunksize)
