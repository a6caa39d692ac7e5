"""``multiprocessing.Pool`` on gilfree: change one import line.

A program written for the standard library's pool runs on gilfree's worker
processes by replacing::

    from multiprocessing import Pool

with::

    from gilfree.compat.multiprocessing import Pool

``Pool(processes=None, initializer=None, initargs=(), maxtasksperchild=None,
context=None)`` takes the standard library's parameters, and its methods
have the standard library's signatures and semantics: ``map``,
``map_async``, ``imap``, ``imap_unordered``, ``starmap``,
``starmap_async``, ``apply``, ``apply_async``, ``close``, ``join``,
``terminate`` and the context manager (whose ``__exit__`` calls
``terminate()``, as the standard library's does).  ``apply_async``,
``map_async`` and ``starmap_async`` return an :class:`AsyncResult` with
``get(timeout=None)`` (raising :class:`multiprocessing.TimeoutError`),
``wait``, ``ready`` and ``successful``; ``imap``/``imap_unordered`` return an
:class:`IMapIterator` whose ``next(timeout=None)`` raises
:class:`multiprocessing.TimeoutError` too.  Using the pool after
``close()``/``terminate()`` raises ``ValueError("Pool not running")`` and
``join()`` before them ``ValueError("Pool is still running")``.

The work is dispatched by :class:`gilfree.Pool` with
``backend="processes"``; this module only translates the parameters:

* ``processes=None``: as many workers as the standard library of the running
  Python starts, ``os.process_cpu_count()`` (Python 3.13+) or
  ``os.cpu_count()`` (earlier).  (gilfree's own default,
  :func:`gilfree.usable_cpus`, also honours cgroup CPU quotas; pass
  ``processes=gilfree.usable_cpus()`` for it.)
* ``context``: the workers are started with ``context.get_start_method()``.
  Without a context, the start method set with
  :func:`multiprocessing.set_start_method` (``"spawn"`` or
  ``"forkserver"``), else gilfree's default (``"forkserver"`` on Linux,
  where the standard library of Python < 3.14 forks).  A global ``"fork"``
  is not followed -- Python < 3.14 reports it also when nothing was chosen
  -- so forking needs ``context=multiprocessing.get_context("fork")``.
* ``maxtasksperchild`` is gilfree's ``max_tasks_per_worker``; ``initializer``
  and ``initargs`` are gilfree's.
* Functions of the main script (the task functions and the initializer) are
  sent by name, as the standard library sends them (gilfree does so for any
  function of a script the workers import), so that a global that the
  initializer sets is the one the task functions read.  In a REPL, a
  notebook or ``python -c``, which a worker cannot import, they go by value.

>>> from gilfree.compat.multiprocessing import Pool
>>> with Pool(2) as p:
...     p.map(abs, [-1, 2, -3])
[1, 2, 3]

Where gilfree deliberately differs (each time where the standard library
hangs, or where it would be slower for nothing):

* **A worker that dies** (killed by a signal, a segfault, ``os._exit``) while
  running a task: the call that needed that task raises
  :class:`gilfree.WorkerDiedError` (naming the pid, the signal and the input
  index) as soon as the worker is gone; the worker is replaced and the pool
  goes on working.  The standard library replaces the worker but the task
  is lost and the call waits forever.
* **Arguments that cannot be pickled**: the call raises
  :class:`pickle.PicklingError` naming the type and the input index, at
  once, in the caller (the standard library raises the pickler's
  ``TypeError`` from ``get()``).  A result or a worker's exception that
  cannot be rebuilt in the caller raises :class:`RuntimeError` naming the
  input (the standard library's result-handler thread dies and every later
  call hangs).  Functions and arguments that plain pickle refuses (lambdas,
  closures, functions of ``__main__`` under ``spawn``) go through
  cloudpickle and work.
* **An initializer that raises**: the calls raise
  :class:`gilfree.InitializerError` (its ``__cause__`` is the initializer's
  exception), and so does every later call of that pool.  The standard
  library starts new workers, which fail again, forever, and the call
  hangs.
* **After terminate()**, results that were pending (``get()``, ``wait()``
  then ``get()``, the next item of an ``imap``) raise
  :class:`concurrent.futures.CancelledError` (and ``error_callback`` receives
  it) instead of never becoming ready.
* A worker's exception is re-raised with a :class:`gilfree.RemoteTraceback`
  (the worker-side traceback, and the input index) as its ``__cause__``,
  where the standard library chains its own ``RemoteTraceback``; ``map``
  stops dispatching new chunks after the first failure.
* ``imap``/``imap_unordered`` pull their input lazily (a bounded number of
  items ahead of the consumer) where the standard library reads all of it at
  once; an iterator that is dropped before the end cancels the items not
  yet run (``close()``-ing or ``join()``-ing the pool, however, first runs
  the rest, so that its results can still be read afterwards, as in the
  standard library).
* A ``callback``/``error_callback`` that raises is reported (the threading
  excepthook for ``map_async``/``starmap_async``, ``sys.unraisablehook`` for
  ``apply_async``) and the result still becomes ready; in the standard
  library it kills the pool's result-handler thread.
* Pickling a pool raises ``TypeError``, as gilfree.Pool does and as pickle
  does for any object it cannot send (the standard library's pool uses
  another exception type for it).
"""

from __future__ import annotations

import multiprocessing as _mp
from abc import ABC, abstractmethod
import os
import sys
import threading
import warnings
import weakref
from collections import deque
from concurrent.futures import CancelledError
from typing import (
    Any,
    Callable,
    Deque,
    Generic,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
    TypeVar,
)

import gilfree

__all__ = ["Pool", "AsyncResult", "ApplyResult", "MapResult", "IMapIterator", "IMapUnorderedIterator",
           "TimeoutError"]

R = TypeVar("R")

#: The exception ``get(timeout)`` and ``next(timeout)`` raise: the standard
#: library's (not the builtin :class:`TimeoutError`).
TimeoutError = _mp.TimeoutError  # noqa: A001 - the stdlib's name, on purpose

RUN = "RUN"
CLOSE = "CLOSE"
TERMINATE = "TERMINATE"

_END = object()  # an imap fetch found the end of the results

Outcome = Tuple[bool, Any]  # (True, value) or (False, exception)


def _default_processes() -> int:
    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return count or 1


def _start_method(context: Any) -> Optional[str]:
    if context is None:
        # Python < 3.14 reports "fork" both when the program chose it and
        # once anything asked for the default: only a context asks for fork.
        method = _mp.get_start_method(allow_none=True)
        return None if method == "fork" else method
    try:
        return context.get_start_method(allow_none=True)
    except TypeError:  # a context-like object without allow_none
        return context.get_start_method()


def _report_callback_error() -> None:
    """Report the exception being handled (raised by a user callback) the way
    an exception escaping a thread is reported, without ending the thread."""
    exc_type, exc, tb = sys.exc_info()
    threading.excepthook(threading.ExceptHookArgs((exc_type, exc, tb, threading.current_thread())))


class _Helpers:
    """The pool's own short-lived threads (one per running ``map_async`` and
    per pending timed ``imap`` fetch), so that ``join()`` can wait for them.
    It holds no reference to the :class:`Pool`: a dropped pool can be
    collected while they run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: Set[threading.Thread] = set()

    def start(self, target: Callable[[], None], name: str) -> None:
        def run() -> None:
            try:
                target()
            finally:
                with self._lock:
                    self._threads.discard(thread)

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def join(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                others = [t for t in self._threads if t is not me]
            if not others:
                return
            for t in others:
                t.join()


# --------------------------------------------------------------------------
# Results


class AsyncResult(ABC, Generic[R]):
    """The result of ``apply_async``/``map_async``/``starmap_async``, with the
    methods of :class:`multiprocessing.pool.AsyncResult`.

    >>> with Pool(2) as p:
    ...     result = p.apply_async(pow, (2, 10))
    ...     isinstance(result, AsyncResult), result.get(timeout=10)
    (True, 1024)
    """

    @abstractmethod
    def ready(self) -> bool:
        """Whether the call has completed (successfully or not).

        >>> with Pool(2) as p:
        ...     result = p.apply_async(divmod, (7, 2))
        ...     result.wait()
        ...     result.ready()
        True
        """

    @abstractmethod
    def wait(self, timeout: Optional[float] = None) -> None:
        """Wait until the result is ready or *timeout* seconds have passed.

        >>> import time
        >>> with Pool(2) as p:
        ...     result = p.apply_async(time.sleep, (10,))
        ...     result.wait(timeout=0.01)   # returns after 0.01 s
        ...     result.ready()
        False
        """

    @abstractmethod
    def _outcome(self) -> R:
        """The result, or raise the call's exception (ready only)."""

    def successful(self) -> bool:
        """Whether the call completed without raising; :class:`ValueError` if
        it is not ready yet.

        >>> with Pool(2) as p:
        ...     good = p.apply_async(int, ("7",))
        ...     bad = p.apply_async(int, ("seven",))
        ...     good.wait(); bad.wait()
        ...     good.successful(), bad.successful()
        (True, False)
        """
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._successful()

    @abstractmethod
    def _successful(self) -> bool:
        """Whether the call completed without raising (ready only)."""

    def get(self, timeout: Optional[float] = None) -> R:
        """The result; the call's exception is raised again.  If it is not
        ready within *timeout* seconds, :class:`multiprocessing.TimeoutError`.

        >>> with Pool(2) as p:
        ...     p.apply_async(int, ("seven",)).get()   # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: invalid literal for int() with base 10: 'seven'...
        >>> import time
        >>> with Pool(2) as p:
        ...     p.apply_async(time.sleep, (10,)).get(timeout=0.01)
        Traceback (most recent call last):
            ...
        multiprocessing.context.TimeoutError
        """
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError
        return self._outcome()


class ApplyResult(AsyncResult[R]):
    """``apply_async``'s result: a :class:`gilfree.AsyncResult` whose
    ``get(timeout)`` raises :class:`multiprocessing.TimeoutError`.

    >>> with Pool(2) as p:
    ...     result = p.apply_async(divmod, (7, 2))
    ...     type(result).__name__, result.get()
    ('ApplyResult', (3, 1))
    """

    def __init__(self, inner: "gilfree.AsyncResult[R]") -> None:
        self._inner = inner

    def ready(self) -> bool:
        return self._inner.ready()

    def wait(self, timeout: Optional[float] = None) -> None:
        self._inner.wait(timeout)

    def _successful(self) -> bool:
        return self._inner.successful()

    def _outcome(self) -> R:
        return self._inner.get()


class MapResult(AsyncResult[List[R]]):
    """``map_async``/``starmap_async``'s result: the whole list, or the first
    exception.  The map runs on a helper thread that calls gilfree's ``map``;
    the callback runs there before the result becomes ready.

    >>> with Pool(2) as p:
    ...     result = p.map_async(abs, [-1, -2, 3])
    ...     type(result).__name__, result.get()
    ('MapResult', [1, 2, 3])
    """

    def __init__(self, callback: Optional[Callable[[List[R]], Any]],
                 error_callback: Optional[Callable[[BaseException], Any]]) -> None:
        self._event = threading.Event()
        self._value: Any = None
        self._ok = False
        self._callback = callback
        self._error_callback = error_callback

    def ready(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: Optional[float] = None) -> None:
        self._event.wait(timeout)

    def _successful(self) -> bool:
        return self._ok

    def _outcome(self) -> List[R]:
        if self._ok:
            return self._value
        raise self._value

    def _run(self, call: Callable[[], List[R]]) -> None:
        try:
            value = call()
        except gilfree.PoolTerminated:
            self._finish(False, CancelledError("the pool was terminated before this task finished"))
        except BaseException as exc:  # noqa: B036 - handed to the caller
            self._finish(False, exc)
        else:
            self._finish(True, value)

    def _finish(self, ok: bool, value: Any) -> None:
        callback = self._callback if ok else self._error_callback
        self._callback = self._error_callback = None
        if callback is not None:
            try:
                callback(value)
            except Exception:
                _report_callback_error()
        self._ok, self._value = ok, value
        self._event.set()


class IMapIterator(Iterator[R]):
    """``imap``'s results, in input order: a :class:`gilfree.MapIterator`
    with the standard library's ``next(timeout=None)``.

    Without a timeout the next result is taken in the calling thread; a
    timed ``next`` hands the wait to a helper thread, whose result (if it
    comes after the timeout) is kept for the next call.

    >>> with Pool(2) as p:
    ...     it = p.imap(abs, [-1, -2, 3])
    ...     type(it).__name__, list(it)
    ('IMapIterator', [1, 2, 3])
    """

    def __init__(self, inner: Iterator[R], helpers: _Helpers) -> None:
        self._inner = inner
        self._helpers = helpers
        self._lock = threading.Lock()  # one consumer at a time
        self._buffer: Deque[Outcome] = deque()  # results taken ahead (by join())
        self._done = False
        self._fetch: Optional[Tuple[threading.Event, List[Any]]] = None

    def __iter__(self) -> "IMapIterator[R]":
        return self

    def next(self, timeout: Optional[float] = None) -> R:
        """The next result (the worker's exception is raised at its position;
        iterating further goes on); :class:`multiprocessing.TimeoutError` if
        it does not come within *timeout* seconds.

        >>> with Pool(2) as p:
        ...     it = p.imap(abs, [-1, -2])
        ...     it.next(), it.next(timeout=10)
        (1, 2)
        >>> import time
        >>> with Pool(1) as p:
        ...     p.imap(time.sleep, [10]).next(timeout=0.01)
        Traceback (most recent call last):
            ...
        multiprocessing.context.TimeoutError
        """
        if not self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            raise TimeoutError
        try:
            ok, value = self._take(timeout)
        finally:
            self._lock.release()
        if ok:
            return value
        raise value

    __next__ = next

    def _take(self, timeout: Optional[float]) -> Outcome:
        if self._buffer:
            return self._buffer.popleft()
        if self._done:
            raise StopIteration
        if self._fetch is None:
            if timeout is None:
                try:
                    return True, next(self._inner)
                except StopIteration:
                    self._done = True
                    raise
            self._fetch = self._start_fetch()
        event, box = self._fetch
        if not event.wait(timeout):
            raise TimeoutError
        self._fetch = None
        outcome = box[0]
        if outcome is _END:
            self._done = True
            raise StopIteration
        return outcome

    def _start_fetch(self) -> Tuple[threading.Event, List[Any]]:
        event = threading.Event()
        box: List[Any] = []
        inner = self._inner

        def fetch() -> None:
            try:
                box.append((True, next(inner)))
            except StopIteration:
                box.append(_END)
            except BaseException as exc:  # noqa: B036 - handed to the consumer
                box.append((False, exc))
            event.set()

        self._helpers.start(fetch, "gilfree.compat.multiprocessing imap")
        return event, box

    def _drain(self) -> None:
        """Take every remaining result now (the pool is closing): they stay
        readable after ``join()``, as in the standard library."""
        with self._lock:
            if self._fetch is not None:
                event, box = self._fetch
                event.wait()
                self._fetch = None
                if box[0] is _END:
                    self._done = True
                else:
                    self._buffer.append(box[0])
            while not self._done:
                try:
                    self._buffer.append((True, next(self._inner)))
                except StopIteration:
                    self._done = True
                except (CancelledError, gilfree.PoolTerminated) as exc:
                    self._buffer.append((False, exc))
                    self._done = True
                except Exception as exc:
                    self._buffer.append((False, exc))


class IMapUnorderedIterator(IMapIterator[R]):
    """``imap_unordered``'s results, in completion order.

    >>> with Pool(2) as p:
    ...     it = p.imap_unordered(abs, [-1, -2, 3])
    ...     type(it).__name__, sorted(it)
    ('IMapUnorderedIterator', [1, 2, 3])
    """


# --------------------------------------------------------------------------
# The pool


class Pool:
    """``multiprocessing.Pool`` on gilfree's worker processes (see the module
    documentation for what differs).

    ``processes``: the number of workers (``None``: the standard library's
    count, :func:`os.cpu_count`; < 1: :class:`ValueError`);
    ``initializer(*initargs)`` runs in each new worker;
    ``maxtasksperchild``: a worker ends after that many tasks and a fresh one
    replaces it; ``context``: a :mod:`multiprocessing` context whose start
    method starts the workers.

    >>> import os
    >>> with Pool(2) as p:
    ...     p.apply(os.getpid) != os.getpid()   # another process
    True
    """

    def __init__(
        self,
        processes: Optional[int] = None,
        initializer: Optional[Callable[..., Any]] = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: Optional[int] = None,
        context: Any = None,
    ) -> None:
        self._state = RUN  # __del__ looks at it, even if __init__ fails
        self._gilfree: Optional[gilfree.Pool] = None
        if processes is None:
            processes = _default_processes()
        elif isinstance(processes, bool):
            processes = int(processes)
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or isinstance(maxtasksperchild, bool) or maxtasksperchild <= 0
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._processes = processes
        self._helpers = _Helpers()
        self._iterators: "weakref.WeakSet[IMapIterator[Any]]" = weakref.WeakSet()
        self._lock = threading.Lock()
        self._gilfree = gilfree.Pool(
            processes,
            backend="processes",
            start_method=_start_method(context),
            initializer=initializer,
            initargs=tuple(initargs),
            max_tasks_per_worker=maxtasksperchild,
        )

    # -- helpers -----------------------------------------------------------

    def _check_running(self) -> gilfree.Pool:
        if self._state != RUN or self._gilfree is None:
            raise ValueError("Pool not running")
        return self._gilfree

    @staticmethod
    def _sized(iterable: Iterable[Any]) -> Iterable[Any]:
        return iterable if hasattr(iterable, "__len__") else list(iterable)

    def _map_async(self, method: Callable[..., List[R]], func: Callable[..., Any], iterable: Iterable[Any],
                   chunksize: Optional[int], callback: Optional[Callable[[List[R]], Any]],
                   error_callback: Optional[Callable[[BaseException], Any]]) -> MapResult[R]:
        inner = self._check_running()
        items = self._sized(iterable)
        func = func
        result: MapResult[R] = MapResult(callback, error_callback)
        self._helpers.start(lambda: result._run(lambda: method(inner, func, items, chunksize)),
                            "gilfree.compat.multiprocessing map_async")
        return result

    def _imap(self, method: Callable[..., Iterator[R]], cls: type, func: Callable[..., Any],
              iterable: Iterable[Any], chunksize: int) -> IMapIterator[R]:
        inner = self._check_running()
        it = cls(method(inner, func, iterable, chunksize), self._helpers)
        with self._lock:
            self._iterators.add(it)
        return it

    # -- the standard library's methods ------------------------------------

    def apply(self, func: Callable[..., R], args: Iterable[Any] = (), kwds: Mapping[str, Any] = {}) -> R:  # noqa: B006
        """``func(*args, **kwds)`` in a worker; blocks for the result.

        >>> with Pool(2) as p:
        ...     p.apply(divmod, (7, 2))
        (3, 1)
        """
        return self._check_running().apply(func, tuple(args), dict(kwds))

    def apply_async(self, func: Callable[..., R], args: Iterable[Any] = (), kwds: Mapping[str, Any] = {},  # noqa: B006
                    callback: Optional[Callable[[R], Any]] = None,
                    error_callback: Optional[Callable[[BaseException], Any]] = None) -> ApplyResult[R]:
        """``func(*args, **kwds)`` in a worker, as an :class:`AsyncResult`;
        ``callback(result)`` or ``error_callback(exception)`` runs when it
        completes, before the result becomes ready.

        >>> seen = []
        >>> with Pool(2) as p:
        ...     result = p.apply_async(pow, (2, 10), callback=seen.append)
        ...     result.get(timeout=10), seen
        (1024, [1024])
        """
        inner = self._check_running()
        return ApplyResult(inner.apply_async(func, tuple(args), dict(kwds), callback, error_callback))

    def map(self, func: Callable[[Any], R], iterable: Iterable[Any], chunksize: Optional[int] = None) -> List[R]:
        """``[func(x) for x in iterable]`` on the workers, in order.
        ``chunksize=None`` lets gilfree size the chunks.

        >>> with Pool(2) as p:
        ...     p.map(str.upper, ["a", "b", "c"])
        ['A', 'B', 'C']
        """
        return self._check_running().map(func, self._sized(iterable), chunksize)

    def starmap(self, func: Callable[..., R], iterable: Iterable[Iterable[Any]],
                chunksize: Optional[int] = None) -> List[R]:
        """``[func(*args) for args in iterable]`` on the workers, in order.

        >>> with Pool(2) as p:
        ...     p.starmap(pow, [(2, 3), (3, 2)])
        [8, 9]
        """
        return self._check_running().starmap(func, self._sized(iterable), chunksize)

    def map_async(self, func: Callable[[Any], R], iterable: Iterable[Any], chunksize: Optional[int] = None,
                  callback: Optional[Callable[[List[R]], Any]] = None,
                  error_callback: Optional[Callable[[BaseException], Any]] = None) -> MapResult[R]:
        """``map`` as an :class:`AsyncResult` of the whole list (``callback``
        receives the list, ``error_callback`` the first exception).

        >>> with Pool(2) as p:
        ...     p.map_async(abs, [-1, -2, 3]).get(timeout=10)
        [1, 2, 3]
        """
        return self._map_async(gilfree.Pool.map, func, iterable, chunksize, callback, error_callback)

    def starmap_async(self, func: Callable[..., R], iterable: Iterable[Iterable[Any]],
                      chunksize: Optional[int] = None, callback: Optional[Callable[[List[R]], Any]] = None,
                      error_callback: Optional[Callable[[BaseException], Any]] = None) -> MapResult[R]:
        """``starmap`` as an :class:`AsyncResult` of the whole list.

        >>> with Pool(2) as p:
        ...     p.starmap_async(divmod, [(7, 2), (9, 4)]).get(timeout=10)
        [(3, 1), (2, 1)]
        """
        return self._map_async(gilfree.Pool.starmap, func, iterable, chunksize, callback, error_callback)

    def imap(self, func: Callable[[Any], R], iterable: Iterable[Any], chunksize: int = 1) -> IMapIterator[R]:
        """``map``'s results one by one, in order (an :class:`IMapIterator`).

        >>> with Pool(2) as p:
        ...     for length in p.imap(len, ["a", "bb", "ccc"]):
        ...         print(length)
        1
        2
        3
        """
        return self._imap(gilfree.Pool.imap, IMapIterator, func, iterable, chunksize)

    def imap_unordered(self, func: Callable[[Any], R], iterable: Iterable[Any],
                       chunksize: int = 1) -> IMapUnorderedIterator[R]:
        """Like ``imap``, in the order the results complete.

        >>> with Pool(2) as p:
        ...     sorted(p.imap_unordered(len, ["a", "bb", "ccc"]))
        [1, 2, 3]
        """
        return self._imap(gilfree.Pool.imap_unordered, IMapUnorderedIterator, func, iterable,  # type: ignore[return-value]
                          chunksize)

    def close(self) -> None:
        """No new work; the workers exit when the submitted work is done
        (``join()`` waits for that).

        >>> p = Pool(2)
        >>> result = p.map_async(abs, [-1, -2])
        >>> p.close()   # the submitted map still runs
        >>> p.map(abs, [-3])
        Traceback (most recent call last):
            ...
        ValueError: Pool not running
        >>> p.join()
        >>> result.get()
        [1, 2]
        """
        if self._state == RUN:
            self._state = CLOSE

    def terminate(self) -> None:
        """Stop the workers now; pending results raise
        :class:`concurrent.futures.CancelledError`.

        >>> import time
        >>> p = Pool(2)
        >>> result = p.apply_async(time.sleep, (10,))
        >>> p.terminate()   # does not wait for the sleep
        >>> result.get()   # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
            ...
        concurrent.futures.CancelledError: the pool was terminated before this task finished
        """
        self._state = TERMINATE
        inner = self._gilfree
        if inner is not None:
            inner.terminate()
            inner.join()
        self._helpers.join()

    def join(self) -> None:
        """Wait for the workers to exit; :class:`ValueError` before
        ``close()`` or ``terminate()``.

        >>> p = Pool(2)
        >>> result = p.apply_async(pow, (2, 8))
        >>> p.join()
        Traceback (most recent call last):
            ...
        ValueError: Pool is still running
        >>> p.close()
        >>> p.join()   # the submitted work is done, the workers have exited
        >>> result.ready(), result.get()
        (True, 256)
        """
        if self._state == RUN:
            raise ValueError("Pool is still running")
        inner = self._gilfree
        if self._state == CLOSE:
            # The gilfree pool is closed only now: map_async helpers and
            # imap iterators created before close() still use it.
            self._helpers.join()
            with self._lock:
                iterators = list(self._iterators)
            for it in iterators:
                it._drain()
            if inner is not None:
                inner.close()
        if inner is not None:
            inner.join()
        self._helpers.join()

    def __enter__(self) -> "Pool":
        self._check_running()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.terminate()

    def __reduce__(self) -> Any:
        raise TypeError("pool objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        cls = type(self)
        return f"<{cls.__module__}.{cls.__qualname__} state={self._state} pool_size={self._processes}>"

    def __del__(self) -> None:
        if getattr(self, "_state", None) == RUN and getattr(self, "_gilfree", None) is not None:
            warnings.warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)
        inner = getattr(self, "_gilfree", None)
        if inner is not None and inner.state != "joined":
            # Like the standard library's finalizer: a dropped pool is
            # terminated (without gilfree's own "unclosed" warning).
            try:
                inner.terminate()
                inner.join()
            except Exception:  # pragma: no cover - interpreter shutdown
                pass
