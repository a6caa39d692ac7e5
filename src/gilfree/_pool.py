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
import traceback
import warnings
import weakref
from typing import TYPE_CHECKING, Any, AsyncGenerator, Callable, Iterable, Iterator, List, Mapping, Optional, TypeVar, Union

from . import _auto, _core, _probe, _progress
from ._insights import Insights
from ._auto import Decision, PerformanceWarning
from ._lifecycle import LIFECYCLE_OPTIONS, NOT_GIVEN, lifecycle_spec
from ._process import inner_threads_for, limit_inner_threads, process_options

if TYPE_CHECKING:
    import asyncio

__all__ = ["Pool", "map", "usable_cpus", "Decision", "PerformanceWarning"]

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


BACKENDS = ("auto", "threads", "processes", "dask")


def _check_backend(backend: Any) -> None:
    """Refuse an unknown backend name here, naming every backend (the C
    core only knows its own two)."""
    if backend is None or (isinstance(backend, str) and backend in BACKENDS):
        return
    names = ", ".join(repr(name) for name in BACKENDS)
    raise ValueError(f"Pool(): unknown backend {backend!r}; available backends: {names}")


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

    def __new__(cls, workers: Optional[int] = None, backend: str = "auto", **options: Any) -> "Pool":
        _check_backend(backend)
        if cls is Pool and backend == "dask":
            from ._dask import DaskPool  # imports distributed only when it starts a pool

            cls = DaskPool
        elif cls is Pool and backend == "auto" and not _has_lifecycle(options):
            cls = AutoPool
        return super().__new__(cls)

    def __init__(
        self,
        workers: Optional[int] = None,
        backend: str = "auto",
        *,
        start_method: Optional[str] = None,
        task_timeout: Optional[float] = None,
        retries: int = 0,
        inner_threads: Optional[int] = None,
        initializer: Optional[Callable[..., Any]] = None,
        initargs: Iterable[Any] = (),
        worker_exit: Optional[Callable[..., Any]] = None,
        worker_state: bool = False,
        pass_worker_id: bool = False,
        shared: Any = NOT_GIVEN,
        max_tasks_per_worker: Optional[int] = None,
        cpu_affinity: Optional[Iterable[Any]] = None,
        init_timeout: Optional[float] = None,
        exit_timeout: Optional[float] = None,
        insights: bool = False,
    ) -> None:
        if not isinstance(insights, bool):
            raise TypeError(f"Pool(): insights must be True or False, got {insights!r}")
        n = workers if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1 else usable_cpus()
        spec = lifecycle_spec(n, {
            "initializer": initializer, "initargs": initargs, "worker_exit": worker_exit,
            "worker_state": worker_state, "pass_worker_id": pass_worker_id, "shared": shared,
            "max_tasks_per_worker": max_tasks_per_worker, "cpu_affinity": cpu_affinity,
            "init_timeout": init_timeout, "exit_timeout": exit_timeout,
        })
        if backend == "auto":
            # Workers that keep state, ids or a lifecycle must be of one kind
            # for the pool's whole life, so auto cannot switch per function:
            # threads where the GIL is off, else processes (the safe choice
            # for Python code; pass backend="threads" for GIL-free work).
            backend = "processes" if _probe.gil_enabled() else "threads"
        inner = inner_threads_for(inner_threads, workers)
        proc = process_options(backend, start_method, task_timeout, retries, inner)
        self._inner_limits: Any = None
        if proc is None:
            super().__init__(workers, backend, _lifecycle=spec, _insights=insights)
            # Thread workers share the process's BLAS/OpenMP pools: hold
            # the ones loaded to their share while this pool lives (the
            # environment, which other programs inherit, is left alone).
            self._inner_limits = limit_inner_threads(inner, env=False)
            if spec is not None and init_timeout is not None:
                # Threads cannot be stopped: the only way to bound their
                # initializers is to wait for them here.
                try:
                    self._wait_started(init_timeout)
                except BaseException:
                    self._abandon()
                    self._forget()
                    raise
        else:
            super().__init__(workers, backend, _process=proc, _lifecycle=spec, _insights=insights)
        self.inner_threads = inner
        self._gil_checked: set = set()
        self._gil_warned = False
        with _live_lock:
            _live_pools.add(self)

    # map and starmap are the C methods; on an explicit thread pool the first
    # map of each function runs under the GIL probe, and a function that
    # turns out to hold the GIL gets one PerformanceWarning.  (The overrides
    # differ from the C signatures on purpose: the C methods' private
    # positional progress hook becomes the public keyword `progress`, and
    # imap returns a plain iterator when a bar wraps the C one.)

    def map(self, func: Callable[[Any], R], iterable: Iterable[Any], chunksize: Optional[int] = None, *,  # type: ignore[override]
            progress: _progress.ProgressOption = False) -> List[R]:
        if progress:
            return self._blocking_with_progress(_core.Pool.map, func, iterable, chunksize, progress)
        if self._gil_check_due(func):
            return self._checked(_core.Pool.map, func, iterable, chunksize)
        return _core.Pool.map(self, func, iterable, chunksize)

    def starmap(self, func: Callable[..., R], iterable: Iterable[Iterable[Any]], chunksize: Optional[int] = None, *,  # type: ignore[override]
                progress: _progress.ProgressOption = False) -> List[R]:
        if progress:
            return self._blocking_with_progress(_core.Pool.starmap, func, iterable, chunksize, progress)
        if self._gil_check_due(func):
            return self._checked(_core.Pool.starmap, func, iterable, chunksize)
        return _core.Pool.starmap(self, func, iterable, chunksize)

    def imap(self, func: Callable[[Any], R], iterable: Iterable[Any], chunksize: Optional[int] = None, *,  # type: ignore[override]
             progress: _progress.ProgressOption = False) -> Iterator[R]:
        it = _core.Pool.imap(self, func, iterable, chunksize)
        return _with_progress(it, progress, iterable, func)

    def imap_unordered(self, func: Callable[[Any], R], iterable: Iterable[Any], chunksize: Optional[int] = None, *,  # type: ignore[override]
                       progress: _progress.ProgressOption = False) -> Iterator[R]:
        it = _core.Pool.imap_unordered(self, func, iterable, chunksize)
        return _with_progress(it, progress, iterable, func)

    def _blocking_with_progress(self, method: Any, func: Any, iterable: Any, chunksize: Any,
                                progress: _progress.ProgressOption) -> Any:
        bar = _progress.make_bar(progress, _progress.total_of(iterable), func)
        if bar is None:
            return method(self, func, iterable, chunksize)
        return _progress.run_blocking(lambda cb: method(self, func, iterable, chunksize, _progress=cb), bar)

    def _gil_check_due(self, func: Any) -> bool:
        return (
            not self._gil_warned
            and self.workers > 1
            and _core.Pool.backend.__get__(self) == "threads"
            and id(func) not in self._gil_checked
            and len(self._gil_checked) < 64
            and _probe.gil_enabled()
        )

    def _checked(self, method: Any, func: Any, iterable: Any, chunksize: Any) -> Any:
        self._gil_checked.add(id(func))
        cpu0 = _worker_threads_cpu()
        ok, value, probe = _probe._measure(method, (self, func, iterable, chunksize), None, own_thread=False)
        if not ok:
            raise value
        cpu1 = _worker_threads_cpu()
        workers_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        if _took_turns(probe, workers_cpu, len(value)):
            self._gil_warned = True
            _auto.performance_warning(func, probe, len(value), self.workers)
        return value

    # -- asyncio -------------------------------------------------------------------

    async def amap(self, func: Callable[[Any], R], iterable: Iterable[Any], chunksize: Optional[int] = None) -> List[R]:
        """``map`` for asyncio: awaiting never blocks the event loop;
        cancelling the await cancels the work not yet started.

        >>> import asyncio, gilfree
        >>> async def main():
        ...     with gilfree.Pool(2, "threads") as pool:
        ...         return await pool.amap(abs, [-1, -2, 3])
        >>> asyncio.run(main())
        [1, 2, 3]
        """
        from . import _asyncio  # asyncio is imported on first use: ~25-40 ms that no other path needs

        return await _asyncio.amap(self, func, iterable, chunksize)

    def aimap(self, func: Callable[[Any], R], iterable: Iterable[Any], chunksize: Optional[int] = None, *,
              ordered: bool = True) -> AsyncGenerator[R, None]:
        """``imap`` (``ordered=False``: ``imap_unordered``) as an async
        iterator; leaving the ``async for`` early cancels the rest.

        >>> import asyncio, gilfree
        >>> async def main():
        ...     with gilfree.Pool(2, "threads") as pool:
        ...         return [x async for x in pool.aimap(str, range(3))]
        >>> asyncio.run(main())
        ['0', '1', '2']
        """
        from . import _asyncio

        return _asyncio.aimap(self, func, iterable, chunksize, ordered=ordered)

    def aapply(self, func: Callable[..., R], /, *args: Any, **kwargs: Any) -> "asyncio.Future[R]":
        """``func(*args, **kwargs)`` on a worker, to await: submitted at once
        (like ``loop.run_in_executor``), returned as an :class:`asyncio.Future`
        of the event loop running now (RuntimeError without one).  Cancelling
        it cancels the call if it has not started; ``asyncio.gather`` over
        many calls wraps none of them in a Task.

        >>> import asyncio, gilfree
        >>> async def main():
        ...     with gilfree.Pool(2, "threads") as pool:
        ...         return await pool.aapply(divmod, 7, 2)
        >>> asyncio.run(main())
        (3, 1)
        """
        from . import _asyncio

        return _asyncio.aapply(self, func, *args, **kwargs)

    @property
    def decision(self) -> Optional[Decision]:
        """Why this pool runs its backend: a :class:`Decision` on an auto
        pool once it has measured a function, None when the backend was
        chosen by the caller (there is nothing measured to report).

        >>> import gilfree
        >>> with gilfree.Pool(2, backend="threads") as pool:
        ...     print(pool.decision)
        None
        """
        return None

    def insights(self) -> Insights:
        """What the workers did so far (needs ``Pool(insights=True)``): an
        :class:`Insights` with ``as_dict()``, a table as ``str()`` and
        ``plot(path)`` for a PNG timeline.  Works during and after the work
        (also after ``join()``).

        >>> import gilfree
        >>> with gilfree.Pool(2, "threads", insights=True) as pool:
        ...     _ = pool.map(abs, range(1000))
        >>> pool.insights().as_dict()["totals"]["tasks"]
        1000
        """
        return Insights([self._insights_raw()])

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
        limits, self._inner_limits = getattr(self, "_inner_limits", None), None
        if limits is not None:
            limits.restore_original_limits()

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


def _with_progress(it: Any, progress: _progress.ProgressOption, iterable: Any, func: Any) -> Any:
    if not progress:
        return it
    try:
        bar = _progress.make_bar(progress, _progress.total_of(iterable), func)
    except BaseException:
        it.close()
        raise
    return it if bar is None else _progress.ProgressIterator(it, bar)


def _check_iterable(method: str, iterable: Any) -> None:
    """TypeError, worded as the C pools word it, unless iterable is iterable."""
    try:
        iter(iterable)
    except TypeError:
        raise TypeError(
            f"Pool.{method}(): iterable must be iterable, got {iterable!r} (type {type(iterable).__name__})"
        ) from None


def _has_lifecycle(options: dict) -> bool:
    """Whether Pool(**options) asks for any worker lifecycle option."""
    for name in LIFECYCLE_OPTIONS:
        if name not in options:
            continue
        value = options[name]
        if name == "shared":
            if value is not NOT_GIVEN:
                return True
        elif name == "initargs":
            continue
        elif value not in (None, False):
            return True
    return False


def _took_turns(probe: Any, workers_cpu: Optional[float], items: int) -> bool:
    """Whether a map that `probe` watched ran its worker threads one at a
    time on substantial items: the GIL was busy AND the workers computed
    about one core's worth between them.  (Another busy thread of the
    program keeps the GIL busy too, but not the workers.)"""
    return bool(
        items
        and workers_cpu is not None
        and probe.gil_held >= 0.7
        and 0.6 * probe.wall_time <= workers_cpu <= 1.4 * probe.wall_time
        and probe.wall_time >= 0.05
        and probe.wall_time / items >= 50e-6  # tiny items: processes would not help
    )


def _worker_threads_cpu() -> Optional[float]:
    """CPU seconds used so far by gilfree's native threads ("gilfree-*"), from
    /proc; None where that cannot be read (not Linux)."""
    try:
        tids = os.listdir("/proc/self/task")
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    total = 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="ascii", errors="replace") as f:
                if not f.read().startswith("gilfree-"):
                    continue
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue  # the thread has just exited
        fields = stat[stat.rfind(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / ticks


class _Probed:
    """What an auto pool knows about one function."""

    __slots__ = ("fn", "decision", "uses")

    def __init__(self, fn: Any, decision: Decision) -> None:
        self.fn = fn
        self.decision = decision
        self.uses = 0


class AutoPool(Pool):
    """``gilfree.Pool(backend="auto")`` (the default): threads or processes,
    chosen per function by measurement (see :mod:`gilfree._auto`).

    ``pool.backend`` is the backend of the last decision (``"auto"`` before
    any), ``pool.decision`` its :class:`Decision` (the probe's numbers and
    the reason).  The thread pool exists from the start; the process pool is
    started the first time a function needs it and closed with this pool.

    >>> import gilfree
    >>> with gilfree.Pool(2) as pool:   # backend="auto"
    ...     pool.backend
    ...     pool.map(abs, [-1, -2, 3])
    ...     pool.backend                # abs is too quick for processes
    'auto'
    [1, 2, 3]
    'threads'
    """

    RECHECK_EVERY = 16
    """A remembered decision is measured again every this many maps."""

    RECHECK_SECONDS = 0.25
    """Within a map sent to threads: the estimated wall time of its first
    part, after which threads are checked to be still right; later parts
    double, up to RECHECK_MAX_SECONDS.  Shorter maps run in one part: what
    processes could save on them barely pays for starting processes."""

    RECHECK_MAX_SECONDS = 1.0

    def __init__(
        self,
        workers: Optional[int] = None,
        backend: str = "auto",
        *,
        start_method: Optional[str] = None,
        task_timeout: Optional[float] = None,
        retries: int = 0,
        inner_threads: Optional[int] = None,
        insights: bool = False,
        **lifecycle: Any,
    ) -> None:
        # Pool.__new__ sends here only calls whose lifecycle options are
        # all at their defaults (Pool(initializer=None) is a plain pool);
        # anything else is an unknown keyword, reported as Pool's.
        for name in lifecycle:
            if name not in LIFECYCLE_OPTIONS:
                raise TypeError(f"Pool() got an unexpected keyword argument {name!r}")
        lifecycle_spec(workers if isinstance(workers, int) and not isinstance(workers, bool)
                       and workers >= 1 else usable_cpus(), lifecycle)
        # Check the process options now, although they only apply if
        # processes are chosen (the fork warning comes when they start).
        process_options("processes", start_method, task_timeout, retries, warn_fork=False)
        self._proc_options: "dict[str, Any]" = {"start_method": start_method, "task_timeout": task_timeout, "retries": retries,
                              "inner_threads": inner_threads, "insights": insights}
        self._procs: Optional[Pool] = None
        self._known: "dict[int, _Probed]" = {}
        self._small: "dict[int, Any]" = {}
        self._probing: "dict[int, Any]" = {}   # functions with a measured call in flight
        self._probing_lock = threading.Lock()
        self._last: Optional[Decision] = None
        super().__init__(workers, "threads", inner_threads=inner_threads, insights=insights)

    def insights(self) -> Insights:
        """Both kinds of workers an auto pool may have used (see Pool.insights)."""
        raws = [self._insights_raw()]
        if self._procs is not None:
            raws.append(self._procs._insights_raw())
        return Insights(raws)

    # -- what was chosen ------------------------------------------------------

    @property
    def backend(self) -> str:
        """The backend of the last decision: "threads", "processes", or "auto" before any."""
        return self._last.backend if self._last is not None else "auto"

    @property
    def decision(self) -> Optional[Decision]:
        """The last :class:`Decision` (None before any)."""
        return self._last

    @property
    def pids(self) -> List[int]:
        return self._procs.pids if self._procs is not None else []

    def _processes(self) -> Pool:
        if self._procs is None:
            self._procs = Pool(self.workers, "processes", **self._proc_options)
            self._procs._forget()  # ours: closed, joined or terminated with us
        return self._procs

    def _remember(self, fn: Any, decision: Decision) -> None:
        self._last = decision
        if not decision.remember:
            return
        if len(self._known) >= 64:
            self._known.pop(next(iter(self._known)))
        self._known[id(fn)] = _Probed(fn, decision)
        self._last = decision

    def _cached(self, fn: Any) -> Optional[Decision]:
        known = self._known.get(id(fn))
        if known is None or known.fn is not fn:
            return None
        known.uses += 1
        if known.uses % self.RECHECK_EVERY == 0:
            return None  # measure again: the data may have changed
        self._last = known.decision
        return known.decision

    def _pool_for(self, decision: Decision) -> Any:
        return self._processes() if decision.backend == "processes" else None

    # -- map family -------------------------------------------------------------

    def _auto_map(self, method: str, func: Any, iterable: Any, chunksize: Any, star: bool, lazy: bool,
                  progress: Union[_progress.ProgressOption, Callable[[int], Any]] = False) -> Any:
        if progress and not callable(progress):
            bar = _progress.make_bar(progress, _progress.total_of(iterable), func)
            if bar is not None:
                if lazy:
                    try:
                        it = self._auto_map(method, func, iterable, chunksize, star, lazy)
                    except BaseException:
                        bar.close()
                        raise
                    return _progress.ProgressIterator(it, bar)
                return _progress.run_blocking(
                    lambda cb: self._auto_map(method, func, iterable, chunksize, star, lazy, cb), bar)
        report = progress if callable(progress) else None
        c_method = getattr(_core.Pool, method)
        # The thread pool's own checks first (func, chunksize, closed pool),
        # on an empty input, so that errors read exactly as on any pool.
        empty = c_method(self, func, (), chunksize)
        if lazy:
            empty.close()
        _check_iterable(method, iterable)
        decision = self._cached(func)
        taken = 0
        results: List[Any] = []
        error: Optional[BaseException] = None
        rest: Any = iterable
        if decision is None:
            # A GIL-holding function seen a second time on small inputs: the
            # process start-up is worth paying now, it will be used again.
            again = self._small.get(id(func)) is func
            decision, taken, results, rest_it, error = _auto.probe_first_items(
                func, iterable, star, self._procs is not None or again
            )
            if not decision.remember:
                if len(self._small) >= 64:
                    self._small.pop(next(iter(self._small)))
                self._small[id(func)] = func
            self._remember(func, decision)
            # Keep a list, tuple or range a sequence: the backends take
            # sequences by the fast path (and ranges as two numbers).
            rest = iterable[taken:] if isinstance(iterable, (list, tuple, range)) else rest_it
        if error is not None:
            # As from a worker: the input index in a RemoteTraceback cause
            # and in a note (here the traceback is this thread's own).
            index = taken - 1
            name = _probe._describe(func)
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            error.__cause__ = _core.RemoteTraceback(
                f'\n"""\n{text}"""\n(raised in the calling thread while gilfree measured {name} '
                f"on its first inputs, on input index {index})"
            )
            add_note = getattr(error, "add_note", None)   # Python >= 3.11
            if add_note is not None:
                add_note(f"gilfree: {name} failed on input index {index}")
            if not lazy:
                raise error
        target = self._pool_for(decision)
        owner = target if target is not None else self
        # The rest of the input starts at index `offset`: errors name the
        # user's index, not one counted from the end of the probed items.
        offset = taken
        if not lazy:
            if report is not None:
                report(offset)  # the probed items are done already: count them first

            def run(pool: Any, part: Any, start: int) -> List[Any]:
                """Map `part`, the items of `rest` from `start` on, on `pool`."""
                kwargs: "dict[str, Any]" = {"_offset": offset + start}
                if report is not None:
                    kwargs["_progress"] = lambda k: report(offset + start + k)
                return c_method(pool, func, part, chunksize, **kwargs)

            if target is None and isinstance(rest, (list, tuple, range)) and self._recheck_due(decision):
                out = self._map_rechecked(run, func, rest, decision, offset)
            else:
                out = run(owner, rest, 0)
            if results:  # the probed items' results come first
                out[:0] = results
            return out
        it = c_method(owner, func, rest, chunksize, _offset=offset)
        if results or error is not None:
            # The probed items' results (and error) come first, handed out
            # by the C iterator itself: no Python frame per item.
            it._prepend(results, error)
        return it

    def _recheck_due(self, decision: Decision) -> bool:
        """Whether a map the decision sends to threads is watched as it goes
        (see _map_rechecked): only where processes could do better."""
        return decision.backend == "threads" and self.workers > 1 and _probe.gil_enabled()

    def _map_rechecked(self, run: Callable[[Any, Any, int], List[Any]], func: Any, rest: Any,
                       decision: Decision, offset: int) -> List[Any]:
        """Map `rest` (a sequence; input index `offset` onwards) on threads,
        re-checking as it goes that threads are still right; `run(pool,
        part, start)` maps the part of `rest` that starts at `start`.

        The first items may not be like the rest (inputs sorted by size, a
        cache warm for the first ones, a fast path for small values).  So a
        long input runs in parts: the first worth RECHECK_SECONDS of wall
        time by the probe's estimate, each next one twice as long by the
        time its predecessor measured, up to RECHECK_MAX_SECONDS (an input
        no longer than the first part runs in one: no cost).  Each part but the
        last is watched like an explicit thread pool's map (_took_turns).
        When the workers took turns on the GIL over substantial items, and
        what is left is worth starting processes for, the rest goes to
        processes and the pool remembers the new decision.  A part boundary
        costs the time the last worker takes to finish its last chunk."""
        n = len(rest)
        seconds = self.RECHECK_SECONDS
        item_wall = max(decision.seconds_per_item, 1e-9) / self.workers
        size = max(64, int(seconds / item_wall))
        out: List[Any] = []
        pos = 0
        while pos < n:
            end = n if n - pos <= size else pos + size
            part = rest if pos == 0 and end == n else rest[pos:end]  # no copy of a whole list
            if end == n:
                out += run(self, part, pos)
                break
            cpu0 = _worker_threads_cpu()
            ok, value, probe = _probe._measure(run, (self, part, pos), None, own_thread=False)
            if not ok:
                raise value
            cpu1 = _worker_threads_cpu()
            out += value
            pos = end
            workers_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
            if _took_turns(probe, workers_cpu, len(part)):
                assert workers_cpu is not None
                per_item = workers_cpu / len(part)   # CPU per item: its serial cost
                left = n - pos
                if self._procs is not None or per_item * left >= _auto.PROCESS_START_SECONDS:
                    switched = Decision(
                        _probe._describe(func), "processes",
                        f"re-checked at input index {offset + pos}: the worker threads took turns on the GIL "
                        f"({probe.gil_held:.0%} held; {workers_cpu * 1e3:.0f} ms CPU in "
                        f"{probe.wall_time * 1e3:.0f} ms over {len(part)} items), so the other "
                        f"{left} items went to processes", probe, len(part), per_item)
                    self._remember(func, switched)
                    out += run(self._processes(), rest[pos:], pos)
                    break
            seconds = min(2 * seconds, self.RECHECK_MAX_SECONDS)
            size = max(64, int(seconds / max(probe.wall_time / len(part), 1e-9)))
        return out

    def map(self, func: Callable[[Any], R], iterable: Iterable[Any], chunksize: Optional[int] = None, *,  # type: ignore[override]
            progress: _progress.ProgressOption = False) -> List[R]:
        return self._auto_map("map", func, iterable, chunksize, False, False, progress)

    def starmap(self, func: Callable[..., R], iterable: Iterable[Iterable[Any]], chunksize: Optional[int] = None, *,  # type: ignore[override]
                progress: _progress.ProgressOption = False) -> List[R]:
        return self._auto_map("starmap", func, iterable, chunksize, True, False, progress)

    def imap(self, func: Callable[[Any], R], iterable: Iterable[Any], chunksize: Optional[int] = None, *,  # type: ignore[override]
             progress: _progress.ProgressOption = False) -> Iterator[R]:
        return self._auto_map("imap", func, iterable, chunksize, False, True, progress)

    def imap_unordered(self, func: Callable[[Any], R], iterable: Iterable[Any], chunksize: Optional[int] = None, *,  # type: ignore[override]
                       progress: _progress.ProgressOption = False) -> Iterator[R]:
        return self._auto_map("imap_unordered", func, iterable, chunksize, False, True, progress)

    # -- single calls -------------------------------------------------------------

    def _single_target(self, func: Any) -> Any:
        decision = self._cached(func)
        if decision is None or decision.backend == "threads":
            return None
        return self._processes()

    def apply_async(self, func: Callable[..., R], args: Iterable[Any] = (), kwds: Optional[Mapping[str, Any]] = None,
                    callback: Any = None, error_callback: Any = None) -> Any:
        target = self._single_target(func)
        if target is not None:
            return target.apply_async(func, args, kwds, callback, error_callback)
        if self._probe_due(func):
            # Unknown function: run it on a thread, measured there; the
            # next call goes where the measurement says.
            return _core.Pool.apply_async(self, _ProbedCall(self, func), args, kwds, callback, error_callback)
        return _core.Pool.apply_async(self, func, args, kwds, callback, error_callback)

    def _probe_due(self, func: Any) -> bool:
        """Whether this single call of an unknown function is the one to
        measure: one at a time per function (a burst of calls submitted
        before the first is measured runs plainly on threads meanwhile)."""
        if self._known.get(id(func)) is not None or not callable(func):
            return False
        with self._probing_lock:
            if self._probing.get(id(func)) is func:
                return False
            if len(self._probing) >= 64:
                self._probing.pop(next(iter(self._probing)))
            self._probing[id(func)] = func
        return True

    def _probed(self, func: Any) -> None:
        with self._probing_lock:
            if self._probing.get(id(func)) is func:
                del self._probing[id(func)]

    def apply(self, func: Callable[..., R], args: Iterable[Any] = (), kwds: Optional[Mapping[str, Any]] = None) -> R:
        return self.apply_async(func, args, kwds).get()

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Any:
        return self._submit_as(fn, fn, args, kwargs)

    def _submit_as(self, key: Any, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        """submit(fn, *args, **kwargs), measured and routed as `key`: an
        adapter whose every call is a new wrapper object (a joblib batch)
        passes the function inside it, so that one measurement serves all
        the wrappers of that function."""
        target = self._single_target(key)
        if target is not None:
            return target.submit(fn, *args, **kwargs)
        if self._probe_due(key):
            return _core.Pool.submit(self, _ProbedCall(self, fn, key), *args, **kwargs)
        return _core.Pool.submit(self, fn, *args, **kwargs)

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        super().close()
        if self._procs is not None:
            self._procs.close()

    def join(self) -> None:
        super().join()
        if self._procs is not None:
            self._procs.join()

    def terminate(self) -> None:
        if self._procs is not None:
            self._procs.terminate()
        super().terminate()

    def __repr__(self) -> str:
        return f"<gilfree.Pool backend='auto' ({self.backend}) workers={self.workers} state={self.state!r}>"


class _ProbedCall:
    """fn, run on a worker thread under the GIL probe; the auto pool then
    remembers where fn belongs."""

    __slots__ = ("pool", "fn", "key", "__qualname__")

    def __init__(self, pool: AutoPool, fn: Any, key: Any = None) -> None:
        self.pool = weakref.ref(pool)
        self.fn = fn
        self.key = fn if key is None else key   # what the decision is for
        # Error messages name the user's function, not this wrapper.
        self.__qualname__ = _probe._describe(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            ok, value, probe = _probe._measure(self.fn, args, kwargs)
        finally:
            pool = self.pool()
            if pool is not None:
                pool._probed(self.key)
        if pool is not None and pool._known.get(id(self.key)) is None:
            decision = _auto.decide(self.key, probe, 1, None, pool._procs is not None)
            if not decision.remember and not probe.confident:
                # A call too short to measure: its next calls would be too,
                # and probing each (a sampler thread per call) would cost far
                # more than the calls.  Threads, remembered; a map of it
                # measures it again on a whole input.
                decision = _auto.Decision(
                    decision.function, "threads",
                    f"a call takes ~{probe.wall_time * 1e6:.0f} us, too little to measure; "
                    "threads send nothing", probe, 1, probe.wall_time)
            pool._remember(self.key, decision)
        if not ok:
            raise value
        return value


def map(  # noqa: A001 - mirrors the builtin on purpose
    func: Callable[[Any], R],
    iterable: Iterable[Any],
    *,
    chunksize: Optional[int] = None,
    workers: Optional[int] = None,
    backend: str = "auto",
    progress: _progress.ProgressOption = False,
    **options: Any,
) -> List[R]:
    """Return ``[func(x) for x in iterable]`` computed by a one-shot Pool.

    The pool is started, used and joined within the call.

    >>> import gilfree
    >>> gilfree.map(len, ["a", "bb", "ccc"], workers=2)
    [1, 2, 3]
    """
    with Pool(workers, backend, **options) as pool:
        return pool.map(func, iterable, chunksize, progress=progress)
