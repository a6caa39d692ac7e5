"""gilfree.Executor: a :class:`concurrent.futures.Executor` over :class:`gilfree.Pool`.

A thin layer: every call goes to the pool's own ``submit`` (which already
hands out real :class:`concurrent.futures.Future` objects), so code written
for ``ThreadPoolExecutor`` / ``ProcessPoolExecutor`` runs on gilfree by
changing the line that creates the executor.  What this module adds is the
executor protocol around it: ``map`` with the standard library's semantics
(``timeout``, ``chunksize``, ``buffersize``), ``shutdown`` with
``cancel_futures``, the context manager, and the mapping of the standard
constructor arguments onto gilfree's.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import functools
import itertools
import threading
import time
import weakref
from typing import Any, Callable, Deque, Iterable, Iterator, List, Optional, Tuple, TypeVar

from . import _pool

__all__ = ["Executor"]

R = TypeVar("R")

_SHUTDOWN_MESSAGE = "cannot schedule new futures after shutdown"

# Executors that may still have work.  At interpreter exit they are shut
# down with wait=True -- queued work finishes, as with the standard
# library's executors -- *before* gilfree's own exit hook (registered
# earlier, so run later: threading runs these hooks in reverse) terminates
# whatever pools are left.
_live_executors: "weakref.WeakSet[Executor]" = weakref.WeakSet()


def _drain_at_exit() -> None:
    for executor in list(_live_executors):
        try:
            executor.shutdown(wait=True)
        except BaseException:  # pragma: no cover - best effort at exit
            pass


threading._register_atexit(_drain_at_exit)  # type: ignore[attr-defined]


def _run_chunk(fn: Callable[..., R], chunk: Iterable[Tuple[Any, ...]]) -> List[R]:
    """Run ``fn(*args)`` for each args of a chunk (map with chunksize > 1)."""
    return [fn(*args) for args in chunk]


def _batched(iterable: Iterable[Any], n: int) -> Iterator[Tuple[Any, ...]]:
    it = iter(iterable)
    while True:
        chunk = tuple(itertools.islice(it, n))
        if not chunk:
            return
        yield chunk


class _Joiner:
    """Joins the pool once, whoever asks first (shutdown(wait=True), the
    background thread of shutdown(wait=False), the exit hook)."""

    __slots__ = ("pool", "lock", "done")

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.lock = threading.Lock()
        self.done = False

    def join(self) -> None:
        with self.lock:
            if not self.done:
                self.pool.join()
                self.done = True


class Executor(cf.Executor):
    """A :class:`concurrent.futures.Executor` running on a :class:`gilfree.Pool`.

    ``Executor(max_workers=None, backend="auto", *, initializer=None,
    initargs=(), max_tasks_per_child=None, mp_context=None, **pool_options)``
    is a drop-in for ``ThreadPoolExecutor`` and ``ProcessPoolExecutor``:

    * ``submit(fn, /, *args, **kwargs)`` returns a real
      :class:`concurrent.futures.Future` (``wait``, ``as_completed``,
      ``asyncio.wrap_future`` and ``loop.run_in_executor`` work);
    * ``map(fn, *iterables, timeout=None, chunksize=1, buffersize=None)``
      behaves like the standard library's (zip semantics, results in order,
      ``timeout`` counted from the call and raised as :class:`TimeoutError`
      by the iterator, ``buffersize`` as in Python 3.14: the input is read
      lazily with at most that many calls -- chunks when ``chunksize`` > 1 --
      not yet handed out; without it the input is read at once).  Closing or
      dropping the iterator early cancels the calls still pending.
      ``chunksize`` > 1 sends that many calls as one task on every backend;
    * ``shutdown(wait=True, *, cancel_futures=False)``, idempotent; then
      ``submit``/``map`` raise ``RuntimeError``.  As a context manager,
      leaving the block calls ``shutdown(wait=True)``.

    ``max_workers`` and ``backend`` are the pool's ``workers`` and
    ``backend``; any other keyword goes to :class:`gilfree.Pool` as is
    (``task_timeout=``, ``retries=``, ``worker_state=`` ...).  The standard
    arguments map onto gilfree's: ``initializer``/``initargs`` are the pool's;
    ``max_tasks_per_child`` is ``max_tasks_per_worker`` and, as in the
    standard library, needs worker processes (``ValueError`` with
    ``backend="threads"``); ``mp_context`` -- a :mod:`multiprocessing`
    context or a start-method name -- gives the pool's ``start_method`` and
    also needs processes.  Note that with a lifecycle option (an
    initializer, ``max_tasks_per_child``...) ``backend="auto"`` does not
    choose per function: it settles on processes for the pool's life where
    the GIL is enabled (threads on free-threaded Python).

    Deliberate differences from the standard library:

    * a failing initializer does not give ``BrokenExecutor``: the futures
      that needed the worker fail with :class:`gilfree.InitializerError`
      (its ``__cause__`` is the initializer's exception), and so do
      ``submit``/``map`` afterwards;
    * a worker process that dies (a crash, a signal, ``os._exit``) does not
      break the executor (``BrokenProcessPool``): only the future of the call
      it was running fails, with :class:`gilfree.WorkerDiedError` (pid, exit
      code or signal); the worker is replaced, every other future completes
      and the executor keeps accepting work (``retries=`` re-runs such calls,
      ``task_timeout=`` kills overrunning ones with
      :class:`gilfree.TaskTimeoutError`);
    * ``submit``/``map`` after shutdown raise ``RuntimeError`` even for a
      ``map`` over empty iterables.

    Cancellation is the standard library's: a call can be cancelled until it
    starts.  On processes a call counts as started when it is sent to a
    worker, which holds a few milliseconds of calls ahead of the one it runs
    -- one call, when calls are long or their cost is not known yet (like
    the call queue of ``ProcessPoolExecutor``): its future then reports
    ``running()``, ``cancel()`` returns False, and it completes.

    >>> import gilfree
    >>> with gilfree.Executor(2, backend="threads") as ex:
    ...     future = ex.submit(pow, 2, 10)
    ...     print(future.result(), list(ex.map(abs, [-1, -2, 3])))
    1024 [1, 2, 3]
    >>> import concurrent.futures as cf
    >>> with gilfree.Executor(2, backend="processes") as ex:
    ...     futures = [ex.submit(len, s) for s in ("a", "bb", "ccc")]
    ...     sorted(f.result() for f in cf.as_completed(futures))
    [1, 2, 3]
    """

    def __init__(
        self,
        max_workers: Optional[int] = None,
        backend: str = "auto",
        *,
        initializer: Optional[Callable[..., Any]] = None,
        initargs: Iterable[Any] = (),
        max_tasks_per_child: Optional[int] = None,
        mp_context: Any = None,
        **pool_options: Any,
    ) -> None:
        options = dict(pool_options)
        if initializer is not None:
            if not callable(initializer):
                raise TypeError(f"Executor(): initializer must be a callable, got {initializer!r}")
            options["initializer"] = initializer
            options["initargs"] = tuple(initargs)
        if max_tasks_per_child is not None:
            if "max_tasks_per_worker" in options:
                raise TypeError("Executor(): give max_tasks_per_child or max_tasks_per_worker, not both")
            if not isinstance(max_tasks_per_child, int) or isinstance(max_tasks_per_child, bool):
                raise TypeError(
                    f"Executor(): max_tasks_per_child must be an integer, got {max_tasks_per_child!r}")
            if max_tasks_per_child < 1:
                raise ValueError(f"Executor(): max_tasks_per_child must be >= 1, got {max_tasks_per_child!r}")
            if backend == "threads":
                raise ValueError(
                    "Executor(): max_tasks_per_child needs worker processes; it cannot be used with "
                    "backend='threads' (use max_tasks_per_worker= to recycle thread workers)")
            options["max_tasks_per_worker"] = max_tasks_per_child
        if mp_context is not None:
            if "start_method" in options:
                raise TypeError("Executor(): give mp_context or start_method, not both")
            if backend == "threads":
                raise ValueError("Executor(): mp_context needs worker processes; it cannot be used with "
                                 "backend='threads'")
            if isinstance(mp_context, str):
                method = mp_context
            else:
                get = getattr(mp_context, "get_start_method", None)
                if get is None:
                    raise TypeError(
                        "Executor(): mp_context must be a multiprocessing context or a start method name, "
                        f"got {mp_context!r}")
                method = get()
            options["start_method"] = method
        try:
            self._pool: Any = _pool.Pool(max_workers, backend, **options)
        except TypeError as exc:
            if "unexpected keyword argument" not in str(exc):
                raise
            # Name the call the user made, not the one it was passed on to.
            raise TypeError(f"Executor(): {exc}; keywords other than the standard library's "
                            "are gilfree.Pool options") from None
        self._joiner = _Joiner(self._pool)
        self._lock = threading.Lock()
        self._shutdown = False
        # Futures handed out and maybe not started: shutdown(cancel_futures=True)
        # cancels those still queued.  Weak: a finished future the caller
        # dropped goes away by itself.
        self._futures: "weakref.WeakSet[cf.Future[Any]]" = weakref.WeakSet()
        _live_executors.add(self)

    # -- what it runs on -----------------------------------------------------

    @property
    def pool(self) -> Any:
        """The :class:`gilfree.Pool` underneath."""
        return self._pool

    @property
    def workers(self) -> int:
        """The number of workers (``max_workers``, or :func:`gilfree.usable_cpus`)."""
        return int(self._pool.workers)

    @property
    def backend(self) -> str:
        """The pool's backend: "threads", "processes" (or "auto" before an auto pool chose)."""
        return str(self._pool.backend)

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else "running"
        return f"<gilfree.Executor backend={self.backend!r} workers={self.workers} {state}>"

    # -- work --------------------------------------------------------------------

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> "cf.Future[R]":
        """Schedule ``fn(*args, **kwargs)``; return its :class:`concurrent.futures.Future`.

        >>> import gilfree
        >>> with gilfree.Executor(2, backend="threads") as ex:
        ...     ex.submit(divmod, 7, 2).result()
        (3, 1)
        """
        with self._lock:
            if self._shutdown:
                raise RuntimeError(_SHUTDOWN_MESSAGE)
            future = self._pool.submit(fn, *args, **kwargs)
            self._futures.add(future)
        return future

    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
        buffersize: Optional[int] = None,
    ) -> Iterator[R]:
        """Return an iterator over ``fn(*args)`` for ``args`` in ``zip(*iterables)``, in order.

        The calls run concurrently; the iterator raises the first failing
        call's exception at that call's position, and :class:`TimeoutError`
        if a result is not ready *timeout* seconds after ``map`` was called.
        ``chunksize`` > 1 sends calls in groups of that size.  With
        ``buffersize=n`` the input is read lazily, at most *n* calls (or
        chunks) being pending at a time; otherwise it is read at once.
        Closing the iterator (or dropping it) cancels the calls still pending.

        >>> import gilfree
        >>> with gilfree.Executor(2, backend="threads") as ex:
        ...     list(ex.map(pow, [2, 3, 4], [2, 2, 2, 2]))
        [4, 9, 16]
        """
        if buffersize is not None:
            if not isinstance(buffersize, int) or isinstance(buffersize, bool):
                raise TypeError(f"Executor.map(): buffersize must be an integer or None, got {buffersize!r}")
            if buffersize < 1:
                raise ValueError(f"Executor.map(): buffersize must be None or > 0, got {buffersize!r}")
        if not isinstance(chunksize, int) or isinstance(chunksize, bool):
            raise TypeError(f"Executor.map(): chunksize must be an integer, got {chunksize!r}")
        if chunksize < 1:
            raise ValueError(f"Executor.map(): chunksize must be >= 1, got {chunksize!r}")
        if self._shutdown:
            raise RuntimeError(_SHUTDOWN_MESSAGE)
        end_time = None if timeout is None else time.monotonic() + timeout
        source: Iterator[Tuple[Any, ...]] = zip(*iterables)
        chunked = chunksize > 1
        call: Callable[..., Any] = fn
        if chunked:
            # One task per chunk, as ProcessPoolExecutor does; a new partial
            # per map, so that an auto pool measures each function apart.
            source = _batched(source, chunksize)
            call = functools.partial(_run_chunk, fn)
        futures: Deque["cf.Future[Any]"] = collections.deque()
        try:
            for args in source if buffersize is None else itertools.islice(source, buffersize):
                futures.append(self._submit_from_map(call, args, chunked))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        return _MapIterator(
            weakref.ref(self), futures, source if buffersize is not None else None,
            chunked, end_time, call)

    def _submit_from_map(self, call: Callable[..., Any], args: Tuple[Any, ...], chunked: bool) -> "cf.Future[Any]":
        return self.submit(call, args) if chunked else self.submit(call, *args)

    # -- ending --------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more work; free the workers once the queued work is done.

        ``cancel_futures=True`` first cancels the futures that have not
        started.  ``wait=True`` returns when every call has finished and the
        workers are gone; ``wait=False`` returns at once (the pool is joined
        in the background).  Calling it again is harmless.

        >>> import gilfree
        >>> ex = gilfree.Executor(2, backend="threads")
        >>> ex.submit(pow, 2, 5).result()
        32
        >>> ex.shutdown()
        >>> ex.submit(pow, 2, 5)
        Traceback (most recent call last):
            ...
        RuntimeError: cannot schedule new futures after shutdown
        """
        with self._lock:
            first = not self._shutdown
            self._shutdown = True
            queued = list(self._futures) if cancel_futures else []
            if first:
                self._pool.close()
                _live_executors.discard(self)
        # Outside the lock: cancelling runs done-callbacks, which may call us.
        # No future can be added now, and cancel() leaves running ones alone.
        for future in queued:
            future.cancel()
        if wait:
            self._joiner.join()
        elif first:
            # The pool must still be joined (its workers reaped) after the
            # queued work: a helper thread does it.  It holds the joiner, not
            # the executor, which may go away meanwhile.
            thread = threading.Thread(target=self._joiner.join, name="GilfreeExecutorShutdown", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # pragma: no cover - interpreter shutting down
                pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.shutdown(wait=True)

    def __del__(self) -> None:
        # Like the standard library's executors: dropped without shutdown(),
        # the queued work still runs and the workers then exit.
        if getattr(self, "_shutdown", True) or _pool._exiting:
            return
        try:
            self.shutdown(wait=False)
        except BaseException:  # pragma: no cover - best effort
            pass

    def __reduce__(self) -> Any:
        raise TypeError("gilfree.Executor objects cannot be pickled or passed to other processes")


class _MapIterator(Iterator[Any]):
    """The iterator ``Executor.map`` returns: the futures in order, refilled
    from the input when ``buffersize`` is given; pending ones are cancelled
    when it is closed, dropped, runs out of time or raises."""

    def __init__(
        self,
        executor: "weakref.ref[Executor]",
        futures: Deque["cf.Future[Any]"],
        source: Optional[Iterator[Tuple[Any, ...]]],
        chunked: bool,
        end_time: Optional[float],
        call: Callable[..., Any],
    ) -> None:
        self._executor = executor
        self._futures = futures
        self._source = source
        self._chunked = chunked
        self._end_time = end_time
        self._call = call
        self._chunk: Deque[Any] = collections.deque()

    def __iter__(self) -> "_MapIterator":
        return self

    def __next__(self) -> Any:
        if self._chunk:
            return self._chunk.popleft()
        futures = self._futures
        if not futures:
            self.close()
            raise StopIteration
        try:
            if self._source is not None:
                executor = self._executor()
                args = next(self._source, None) if executor is not None else None
                if args is not None:
                    futures.append(executor._submit_from_map(self._call, args, self._chunked))  # type: ignore[union-attr]
                del executor
            future = futures.popleft()
            try:
                if self._end_time is None:
                    result = future.result()
                else:
                    result = future.result(self._end_time - time.monotonic())
            finally:
                future.cancel()  # a no-op unless it timed out
                del future
        except BaseException:
            self.close()
            raise
        if self._chunked:
            self._chunk.extend(result)
            if not self._chunk:  # pragma: no cover - chunks are never empty
                return self.__next__()
            return self._chunk.popleft()
        return result

    def close(self) -> None:
        """Stop: cancel the calls not yet started; the iterator is exhausted."""
        futures, self._futures = self._futures, collections.deque()
        self._source = None
        for future in futures:
            future.cancel()

    def __del__(self) -> None:
        try:
            self.close()
        except BaseException:  # pragma: no cover - best effort
            pass
