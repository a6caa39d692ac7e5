"""MPIRE's ``WorkerPool`` on gilfree: change one import line.

An MPIRE program runs on gilfree by replacing::

    from mpire import WorkerPool

with::

    from gilfree.compat.mpire import WorkerPool

The constructor and the methods take MPIRE 2.x's parameters (``map``,
``map_unordered``, ``imap``, ``imap_unordered``, ``apply``, ``apply_async``,
``get_exit_results``, ``get_insights``, ``print_insights``, ``stop_and_join``
/ ``join``, ``terminate``, the ``set_*`` methods, the context manager).  The
work itself is dispatched by :class:`gilfree.Pool`; this module only
translates:

* **Argument unpacking**, as MPIRE does it: an item of ``iterable_of_args``
  that is a ``dict`` is passed as keyword arguments, ``func(**item)``; any
  other iterable except ``str``, ``bytes`` and numpy arrays (a tuple, a
  list, a set, a range, ...) is unpacked as positional arguments,
  ``func(*item)``; anything else is passed as the one argument,
  ``func(item)``.  A numpy array given as ``iterable_of_args`` is cut into
  sub-arrays (``chunk_size`` rows, ``n_splits`` pieces, or ``4 * n_jobs``
  pieces by default) and ``func`` receives one sub-array per call; ``map``
  concatenates array results (``concatenate_numpy_output=True``).
  ``apply``'s ``args`` is unpacked the same way except that a dict is
  unpacked like any other iterable (into its keys; keyword arguments go in
  ``kwargs``), as MPIRE does.
* **Start methods**: ``"threading"`` runs on gilfree's native worker threads
  (``backend="threads"``); ``"fork"``, ``"forkserver"`` and ``"spawn"`` on
  worker processes started that way.  Left out, the workers are processes
  started the gilfree way (``"forkserver"`` on Linux): MPIRE's own default
  is ``"fork"``, which gilfree warns about when the program runs other
  threads.
* **Worker lifecycle**: ``pass_worker_id``, ``shared_objects`` and
  ``use_worker_state`` put ``worker_id``, the shared objects and the
  worker's state dict in front of the task's arguments, in that order, for
  the task function, ``worker_init`` and ``worker_exit``.  Without
  ``keep_alive`` every map call runs on fresh workers (``worker_init`` and
  ``worker_exit`` once per worker and map call, and ``get_exit_results()``
  holds that map's exit results); with ``keep_alive=True`` the workers (and
  their state) last from one map to the next.  As in MPIRE, a worker that
  ran no task calls no ``worker_exit`` and adds no exit result, and an
  exception raised by ``worker_init`` is raised by the map call as it is.
  ``worker_lifespan`` recycles a worker after that many tasks (a fresh
  state, ``worker_init`` again).
* **Errors**: the worker's exception is re-raised in the caller with its
  own type (gilfree chains a :class:`gilfree.RemoteTraceback` with the
  worker's traceback as its ``__cause__``); a task, ``worker_init`` or
  ``worker_exit`` that runs past its timeout raises :class:`TimeoutError`.
  After an error the pool's workers are stopped, and the next call starts
  fresh ones.

>>> from gilfree.compat.mpire import WorkerPool
>>> def add(x, y=0):
...     return x + y
>>> with WorkerPool(n_jobs=2, start_method="threading") as pool:
...     pool.map(add, [(1, 2), {"x": 3, "y": 4}, 5])
[3, 7, 5]

What differs from MPIRE, and why:

* ``worker_init`` runs when a worker starts, not when it receives its first
  task (an idle worker initialises too, but still calls no
  ``worker_exit``).
* ``task_timeout`` needs worker processes: a thread cannot be stopped, so
  ``start_method="threading"`` with ``task_timeout`` raises
  :class:`ValueError`.  The ``task_timeout``, ``worker_init`` and
  ``worker_exit`` given to ``apply``/``apply_async`` apply when that call
  starts the workers (MPIRE likewise ignores the latter two when workers are
  running); workers started by a map keep the map's ``task_timeout``.
* Changing ``worker_init``, ``worker_exit``, ``worker_lifespan`` or a
  timeout between two maps of a ``keep_alive`` pool restarts its workers
  (MPIRE hands the new functions to the running workers, and warns with a
  :class:`RuntimeWarning` that this is unreliable when ``worker_init`` or
  ``worker_exit`` changes; a :class:`RuntimeWarning` is given here too).
* ``n_jobs=None`` starts one worker per CPU this process may use
  (:func:`gilfree.usable_cpus`: affinity and cgroup quota), where MPIRE
  counts every CPU of the machine.
* ``chunk_size``/``n_splits`` become gilfree's ``chunksize``; with neither
  (MPIRE's default of ``64 * n_jobs`` chunks) gilfree adapts the chunk size
  itself, also for inputs of unknown length.  ``max_tasks_active`` is
  checked and otherwise not needed: gilfree's lazy maps already bound the
  work in flight.  ``order_tasks``, ``daemon`` and ``use_dill`` are
  accepted and change nothing (gilfree workers always end with their pool;
  lambdas and closures already travel with cloudpickle).
* Progress bars are gilfree's (tqdm); ``progress_bar_style`` ``"rich"`` and
  ``"dashboard"`` show that bar too.
* Insights come from gilfree's own measurements (``enable_insights=True``):
  the per-worker counts and times MPIRE reports are there (the waiting
  time includes gilfree's time moving data and waiting for the GIL, which
  MPIRE would count there), the five longest tasks and their arguments are
  not recorded (empty lists).
"""

from __future__ import annotations

import collections.abc
import itertools
import logging
import math
import os
import sys
import warnings
from contextlib import contextmanager
from datetime import timedelta
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    NoReturn,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import gilfree

__all__ = ["WorkerPool", "AsyncResult", "START_METHODS", "PROGRESS_BAR_STYLES"]

logger = logging.getLogger(__name__)

CPUList = Sequence[Union[int, Sequence[int]]]
"""MPIRE's ``cpu_ids``: one entry per worker (or one for all), each a CPU id or a list of them."""

START_METHODS: Tuple[str, ...] = ("fork", "forkserver", "spawn", "threading")
"""The ``start_method`` values MPIRE knows (``None``: gilfree's default)."""

PROGRESS_BAR_STYLES: Tuple[Optional[str], ...] = (None, "std", "notebook", "rich", "dashboard")
"""The ``progress_bar_style`` values MPIRE knows; all show gilfree's tqdm bar."""

_PARTS = ("start_up", "init", "waiting", "working", "exit")


# --------------------------------------------------------------------------
# What runs in the workers.  Module level, so that process workers import it
# by reference; the user's functions travel inside (cloudpickle where plain
# pickle cannot).

# Keys of the per-worker dict gilfree keeps when this layer does its own
# bookkeeping (a worker_init or worker_exit was given).
_USER_STATE = "mpire_worker_state"
_TASKS = "tasks_run"
_INIT_ERROR = "worker_init_error"


class _Prefix:
    """How the arguments gilfree puts in front of a call (``worker_id``,
    shared objects, state dict: the ones enabled) become MPIRE's.

    With ``private`` the state dict gilfree passes belongs to this layer: it
    counts the tasks of the worker's life, keeps an exception raised by
    ``worker_init``, and holds the user's state dict under a key of its own.
    """

    __slots__ = ("pass_id", "shared", "user_state", "private", "width")

    def __init__(self, pass_id: bool, shared: bool, user_state: bool, private: bool) -> None:
        self.pass_id = pass_id
        self.shared = shared
        self.user_state = user_state
        self.private = private
        self.width = int(pass_id) + int(shared) + int(user_state or private)

    def __getstate__(self) -> Tuple[bool, bool, bool, bool]:
        return (self.pass_id, self.shared, self.user_state, self.private)

    def __setstate__(self, state: Tuple[bool, bool, bool, bool]) -> None:
        self.__init__(*state)  # type: ignore[misc]

    def user_lead(self, lead: Tuple[Any, ...], book: Dict[str, Any]) -> Tuple[Any, ...]:
        """The arguments MPIRE passes first, from gilfree's (``book`` is the
        private dict, the last of them)."""
        if self.user_state:
            return lead[:-1] + (book.setdefault(_USER_STATE, {}),)
        return lead[:-1]


def _is_ndarray(obj: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, np.ndarray)


def _describe(func: Any) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return str(name) if name else type(func).__name__


class _Task:
    """The task function as gilfree calls it: MPIRE's leading arguments, then
    the item unpacked by MPIRE's rules (map family) or the ``apply`` call's
    own ``args`` and ``kwargs``."""

    __slots__ = ("func", "prefix", "unpack", "__qualname__")

    def __init__(self, func: Callable[..., Any], prefix: _Prefix, unpack: bool) -> None:
        self.func = func
        self.prefix = prefix
        self.unpack = unpack
        # Progress bars and error notes name the user's function.
        self.__qualname__ = _describe(func)

    def __getstate__(self) -> Tuple[Any, _Prefix, bool]:
        return (self.func, self.prefix, self.unpack)

    def __setstate__(self, state: Tuple[Any, _Prefix, bool]) -> None:
        self.__init__(*state)  # type: ignore[misc]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        prefix = self.prefix
        width = prefix.width
        lead = args[:width]
        if prefix.private:
            book = lead[-1]
            error = book.get(_INIT_ERROR)
            if error is not None:
                # worker_init failed on this worker: MPIRE raises its
                # exception in place of the task's.
                raise error
            book[_TASKS] = book.get(_TASKS, 0) + 1
            lead = prefix.user_lead(lead, book)
        func = self.func
        if not self.unpack:
            return func(*lead, *args[width:], **kwargs)
        item = args[width]
        if type(item) is tuple:
            return func(*lead, *item)
        if isinstance(item, dict):
            return func(*lead, **item)
        if isinstance(item, (str, bytes)) or not isinstance(item, collections.abc.Iterable) or _is_ndarray(item):
            return func(*lead, item)
        return func(*lead, *item)

    def __repr__(self) -> str:
        return f"<MPIRE-style call of {self.__qualname__}>"


class _Init:
    """``worker_init`` as gilfree's initializer.  An exception it raises is
    kept in the worker's private dict and raised by the worker's tasks, so
    that the map call raises it with its own type (as MPIRE does) on either
    backend."""

    __slots__ = ("func", "prefix", "__qualname__")

    def __init__(self, func: Callable[..., Any], prefix: _Prefix) -> None:
        self.func = func
        self.prefix = prefix
        self.__qualname__ = _describe(func)

    def __getstate__(self) -> Tuple[Any, _Prefix]:
        return (self.func, self.prefix)

    def __setstate__(self, state: Tuple[Any, _Prefix]) -> None:
        self.__init__(*state)  # type: ignore[misc]

    def __call__(self, *lead: Any) -> None:
        book = lead[-1]
        book[_TASKS] = 0
        try:
            self.func(*self.prefix.user_lead(lead, book))
        except (Exception, SystemExit) as exc:
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(f"gilfree.compat.mpire: raised by worker_init {self.__qualname__}")
            book[_INIT_ERROR] = exc


class _Skipped:
    """The exit result of a worker life that ran no task (MPIRE calls no
    ``worker_exit`` then); left out of :meth:`WorkerPool.get_exit_results`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no exit result: the worker ran no task>"


class _Exit:
    """``worker_exit`` as gilfree's: called only for a worker life that ran a
    task and whose ``worker_init`` succeeded."""

    __slots__ = ("func", "prefix", "__qualname__")

    def __init__(self, func: Callable[..., Any], prefix: _Prefix) -> None:
        self.func = func
        self.prefix = prefix
        self.__qualname__ = _describe(func)

    def __getstate__(self) -> Tuple[Any, _Prefix]:
        return (self.func, self.prefix)

    def __setstate__(self, state: Tuple[Any, _Prefix]) -> None:
        self.__init__(*state)  # type: ignore[misc]

    def __call__(self, *lead: Any) -> Any:
        book = lead[-1]
        if book.get(_INIT_ERROR) is not None or not book.get(_TASKS, 0):
            return _Skipped()
        return self.func(*self.prefix.user_lead(lead, book))


# --------------------------------------------------------------------------
# Checking arguments (in the caller)


def _fail_type(name: str, expected: str, value: Any) -> NoReturn:
    raise TypeError(f"WorkerPool: {name} must be {expected}, got {value!r} (type {type(value).__name__})")


def _check_callable(name: str, value: Any, none_ok: bool = False) -> Any:
    if value is None and none_ok:
        return None
    if not callable(value):
        _fail_type(name, "callable" + (" or None" if none_ok else ""), value)
    return value


def _check_int(name: str, value: Any, minimum: int) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        _fail_type(name, "an int or None", value)
    if value < minimum:
        raise ValueError(f"WorkerPool: {name} must be >= {minimum}, got {value!r}")
    return value


def _check_number(name: str, value: Any, minimum: float, strict: bool = False) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail_type(name, "a number or None", value)
    if not (value > minimum if strict else value >= minimum):  # also NaN
        raise ValueError(f"WorkerPool: {name} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return value


def _check_n_jobs(n_jobs: Any) -> int:
    if n_jobs is None or (isinstance(n_jobs, int) and not isinstance(n_jobs, bool) and n_jobs == 0):
        return gilfree.usable_cpus()  # MPIRE: n_jobs or cpu_count()
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int):
        _fail_type("n_jobs", "an int or None", n_jobs)
    if n_jobs < 0:
        raise ValueError(f"WorkerPool: n_jobs must be >= 1 (or None: one per usable CPU), got {n_jobs!r}")
    return n_jobs


def _check_cpu_ids(cpu_ids: Any, n_jobs: int) -> Optional[List[List[int]]]:
    """MPIRE's rules: one entry per worker, or one entry for all workers;
    an entry is a CPU id or a list of CPU ids.  Returns one list per worker."""
    if cpu_ids is None or (isinstance(cpu_ids, (list, tuple)) and not cpu_ids):
        return None
    if not isinstance(cpu_ids, (list, tuple)):
        _fail_type("cpu_ids", "a list of CPU ids or of lists of CPU ids", cpu_ids)
    if len(cpu_ids) not in (1, n_jobs):
        raise ValueError(
            f"WorkerPool: cpu_ids has {len(cpu_ids)} entries but n_jobs is {n_jobs}: give one entry per "
            "worker, or a single entry for all workers"
        )
    n_cpus = os.cpu_count() or 1
    per_worker: List[List[int]] = []
    for index, entry in enumerate(cpu_ids):
        if isinstance(entry, int) and not isinstance(entry, bool):
            ids = [entry]
        elif isinstance(entry, (list, tuple)) and all(isinstance(c, int) and not isinstance(c, bool) for c in entry):
            ids = list(entry)
            if not ids:
                raise ValueError(f"WorkerPool: cpu_ids[{index}] is an empty list of CPU ids")
        else:
            _fail_type(f"cpu_ids[{index}]", "a CPU id (int) or a list of CPU ids", entry)
        for cpu in ids:
            if cpu < 0 or cpu >= n_cpus:
                raise ValueError(
                    f"WorkerPool: cpu_ids[{index}]: CPU id {cpu} is out of range (this machine has CPUs 0 to "
                    f"{n_cpus - 1})"
                )
        per_worker.append(ids)
    if len(per_worker) == 1:
        per_worker = [list(per_worker[0]) for _ in range(n_jobs)]
    return per_worker


def _backend_for(start_method: Any) -> Tuple[str, Optional[str]]:
    if start_method is None:
        return "processes", None
    if start_method == "threading":
        return "threads", None
    if start_method in ("fork", "forkserver", "spawn"):
        return "processes", start_method
    raise ValueError(
        f"WorkerPool: unknown start_method {start_method!r}; choose one of "
        + ", ".join(repr(m) for m in START_METHODS)
        + " (or None: processes started the gilfree way)"
    )


class _Lifecycle(NamedTuple):
    """What fixes a set of workers: a map or apply that needs other values
    needs other workers."""

    worker_init: Optional[Callable[..., Any]]
    worker_exit: Optional[Callable[..., Any]]
    worker_lifespan: Optional[int]
    task_timeout: Optional[float]
    worker_init_timeout: Optional[float]
    worker_exit_timeout: Optional[float]


class _Plan(NamedTuple):
    life: _Lifecycle
    items: Any
    chunksize: Optional[int]
    progress: Union[bool, Dict[str, Any]]


def _numpy_chunks(array: Any, iterable_len: Optional[int], chunk_size: Optional[float], n_splits: Optional[int],
                  n_jobs: int) -> List[Any]:
    """Sub-arrays (views) of ``array`` along its first axis, as MPIRE cuts
    them: ``chunk_size`` rows each (a fractional size alternates so that the
    average is right), else ``n_splits`` (default ``4 * n_jobs``) pieces."""
    if iterable_len is not None:
        array = array[:iterable_len]
    n = len(array)
    step = float(chunk_size) if chunk_size is not None else n / (n_splits or 4 * n_jobs)
    chunks = []
    start = 0
    wanted = step
    while start < n:
        size = max(1, math.ceil(wanted))
        chunks.append(array[start:start + size])
        start += size
        wanted += step - math.ceil(wanted)
    return chunks


def _progress_option(progress_bar: Any, options: Any, style: Any,
                     n_tasks: Optional[int]) -> Union[bool, Dict[str, Any]]:
    """gilfree's ``progress=`` for MPIRE's progress bar parameters."""
    if options is not None and not isinstance(options, dict):
        _fail_type("progress_bar_options", "a dict of tqdm options or None", options)
    if style not in PROGRESS_BAR_STYLES:
        raise ValueError(
            f"WorkerPool: unknown progress_bar_style {style!r}; choose one of "
            + ", ".join(repr(s) for s in PROGRESS_BAR_STYLES)
        )
    chosen = dict(options or {})
    for key in ("total", "leave"):
        if key in chosen:
            del chosen[key]
            hint = " (give iterable_len for the number of tasks)" if key == "total" else ""
            warnings.warn(
                f"WorkerPool: progress_bar_options[{key!r}] is ignored: the pool sets it{hint}",
                RuntimeWarning,
                stacklevel=4,
            )
    if not progress_bar:
        return False
    if n_tasks is not None:
        chosen["total"] = n_tasks
    return chosen or True


def _apply_arguments(args: Any, kwargs: Any) -> Tuple[Tuple[Any, ...], Optional[Dict[str, Any]]]:
    """MPIRE's ``apply`` rules: ``args`` that is an iterable other than str,
    bytes or a numpy array is unpacked as positional arguments (a dict too:
    its keys -- keyword arguments go in ``kwargs``); anything else is the one
    argument."""
    if kwargs is not None and not isinstance(kwargs, collections.abc.Mapping):
        _fail_type("kwargs", "a dict of keyword arguments or None", kwargs)
    call_kwargs = dict(kwargs) if kwargs is not None else None
    if isinstance(args, (str, bytes)) or not isinstance(args, collections.abc.Iterable) or _is_ndarray(args):
        return (args,), call_kwargs
    return tuple(args), call_kwargs


def _concatenate(results: List[Any]) -> Any:
    np = sys.modules.get("numpy")
    if np is not None and results and isinstance(results[0], np.ndarray):
        return np.concatenate(results)
    return results


# --------------------------------------------------------------------------
# Errors


def _translate(exc: BaseException) -> BaseException:
    """The exception MPIRE raises for what gilfree raised: TimeoutError for
    timeouts, the user's own exception for a failed worker_init/worker_exit."""
    if isinstance(exc, gilfree.TaskTimeoutError):
        new: BaseException = TimeoutError(f"task timed out (task_timeout={exc.timeout}): {exc}")
        new.__cause__ = exc
        return new
    if isinstance(exc, (gilfree.InitializerError, gilfree.WorkerExitError)):
        cause = exc.__cause__
        if cause is None and "timeout" in str(exc):
            what = "worker_init" if isinstance(exc, gilfree.InitializerError) else "worker_exit"
            new = TimeoutError(f"{what} timed out: {exc}")
            new.__cause__ = exc
            return new
        if isinstance(cause, Exception) and not isinstance(cause, gilfree.RemoteTraceback):
            return cause
    return exc


def _reraise(exc: BaseException) -> NoReturn:
    new = _translate(exc)
    if new is exc:
        raise exc
    raise new


# --------------------------------------------------------------------------
# Insights


def _format_seconds(seconds: float) -> str:
    """``H:MM:SS.mmm`` (MPIRE's format for durations)."""
    text = str(timedelta(seconds=max(0.0, float(seconds))))
    whole, dot, fraction = text.partition(".")
    return f"{whole}.{fraction[:3]}" if dot else whole


def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    if not values:
        return 0.0, 0.0
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def _per_worker(data: Dict[str, Any], n_jobs: int) -> Tuple[List[int], Dict[str, List[float]]]:
    tasks = [0] * n_jobs
    times: Dict[str, List[float]] = {part: [0.0] * n_jobs for part in _PARTS}
    for entry in data.get("per_worker", ()):
        worker = int(entry.get("worker", 0))
        while worker >= len(tasks):
            tasks.append(0)
            for part in _PARTS:
                times[part].append(0.0)
        tasks[worker] += int(entry.get("tasks", 0))
        for part in _PARTS:
            times[part][worker] += float(entry.get(f"{part}_time", 0.0))
        # MPIRE's waiting time is the time spent getting the next task,
        # which includes receiving (unpickling) it; gilfree tells apart the
        # time moving data and, on threads, waiting for the GIL to start.
        times["waiting"][worker] += float(entry.get("data_time", 0.0)) + float(entry.get("gil_wait_time", 0.0))
    return tasks, times


def _mpire_insights(data: Dict[str, Any], n_jobs: int) -> Dict[str, Any]:
    """gilfree's insights (``Insights.as_dict()``) under MPIRE's keys.

    Per worker id (summed over its lives): tasks, and the start-up, init,
    waiting (for work, for its data, for the GIL), working and exit times;
    their totals, means, standard deviations and shares of the total."""
    tasks, times = _per_worker(data, n_jobs)
    totals = {part: sum(times[part]) for part in _PARTS}
    total_time = sum(totals.values())
    out: Dict[str, Any] = {"n_completed_tasks": tasks}
    for part in _PARTS:
        out[f"{part}_time"] = [_format_seconds(t) for t in times[part]]
    for part in _PARTS:
        out[f"total_{part}_time"] = _format_seconds(totals[part])
    # gilfree does not record single tasks' durations and arguments.
    out["top_5_max_task_durations"] = []
    out["top_5_max_task_args"] = []
    out["total_time"] = _format_seconds(total_time)
    for part in _PARTS:
        mean, std = _mean_std(times[part])
        out[f"{part}_ratio"] = totals[part] / (total_time + 1e-8)
        out[f"{part}_time_mean"] = _format_seconds(mean)
        out[f"{part}_time_std"] = _format_seconds(std)
    return out


def _insights_text(data: Dict[str, Any], n_jobs: int) -> str:
    mpire = _mpire_insights(data, n_jobs)
    totals = data.get("totals", {})
    lines = [
        f"WorkerPool insights ({data.get('backend', '?')} backend, {data.get('workers', n_jobs)} workers, "
        f"wall time {_format_seconds(data.get('wall_time', 0.0))})",
        "",
        f"Tasks completed: {sum(mpire['n_completed_tasks'])}",
    ]
    for part in _PARTS:
        label = part.replace("_", " ")
        lines.append(
            f"{label:>9} time: {mpire[f'total_{part}_time']} total, mean {mpire[f'{part}_time_mean']}, "
            f"std {mpire[f'{part}_time_std']} per worker ({100.0 * mpire[f'{part}_ratio']:.2f}% of all)"
        )
    lines.append(
        f"    of the waiting time: moving data {_format_seconds(totals.get('data_time', 0.0))}, "
        f"waiting for the GIL {_format_seconds(totals.get('gil_wait_time', 0.0))}"
    )
    if mpire["working_ratio"] < 0.8:
        lines += ["", "Note: the workers spent less than 80% of their time working."]
    lines += ["", "Per worker:"]
    for worker, count in enumerate(mpire["n_completed_tasks"]):
        parts = ", ".join(f"{part.replace('_', ' ')} {mpire[f'{part}_time'][worker]}" for part in _PARTS)
        lines.append(f"  worker {worker}: {count} tasks; {parts}")
    lines += ["", "Longest tasks: not recorded (gilfree does not time single tasks)."]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# The pool


class AsyncResult:
    """What :meth:`WorkerPool.apply_async` returns (MPIRE's ``AsyncResult``).

    ``get(timeout=None)`` returns the result or raises the task's exception
    (:class:`TimeoutError` if ``timeout`` passes first, or if the task ran
    past the pool's ``task_timeout``); ``wait(timeout=None)``, ``ready()``,
    ``successful()`` (:class:`ValueError` while not ready).

    >>> with WorkerPool(2, start_method="threading") as pool:
    ...     result = pool.apply_async(divmod, (7, 2))
    ...     isinstance(result, AsyncResult), result.get()
    (True, (3, 1))
    """

    _counter = itertools.count()

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.job_id = next(AsyncResult._counter)

    def ready(self) -> bool:
        """Whether the task has finished.

        >>> with WorkerPool(2, start_method="threading") as pool:
        ...     result = pool.apply_async(divmod, (7, 2))
        ...     result.wait()
        ...     result.ready()
        True
        """
        return bool(self._inner.ready())

    def successful(self) -> bool:
        """Whether the task finished without an exception; ValueError if not finished.

        >>> with WorkerPool(2, start_method="threading") as pool:
        ...     good = pool.apply_async(int, "7")
        ...     bad = pool.apply_async(int, "seven")
        ...     good.wait(); bad.wait()
        ...     good.successful(), bad.successful()
        (True, False)
        """
        return bool(self._inner.successful())

    def wait(self, timeout: Optional[float] = None) -> None:
        """Wait until the task has finished, or ``timeout`` seconds.

        >>> import time
        >>> with WorkerPool(1) as pool:   # a process: terminated at the end
        ...     result = pool.apply_async(time.sleep, 10)
        ...     result.wait(timeout=0.01)   # returns after 0.01 s
        ...     result.ready()
        False
        """
        self._inner.wait(timeout)

    def get(self, timeout: Optional[float] = None) -> Any:
        """The task's result; its exception is raised; TimeoutError after ``timeout`` seconds.

        >>> with WorkerPool(2, start_method="threading") as pool:
        ...     pool.apply_async(int, "seven").get()   # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: invalid literal for int() with base 10: 'seven'...
        >>> import time
        >>> with WorkerPool(1) as pool:   # a process: terminated at the end
        ...     pool.apply_async(time.sleep, 10).get(timeout=0.01)
        Traceback (most recent call last):
            ...
        TimeoutError: AsyncResult.get(): the result was not ready in time
        """
        try:
            return self._inner.get(timeout)
        except BaseException as exc:
            _reraise(exc)

    def __repr__(self) -> str:
        state = "ready" if self.ready() else "pending"
        return f"<gilfree.compat.mpire.AsyncResult job_id={self.job_id} {state}>"


class WorkerPool:
    """MPIRE's ``WorkerPool`` on :class:`gilfree.Pool`.

    ``WorkerPool(n_jobs=None, daemon=True, cpu_ids=None, shared_objects=None,
    pass_worker_id=False, use_worker_state=False, start_method=None,
    keep_alive=False, use_dill=False, enable_insights=False,
    order_tasks=False)``: the parameters of ``mpire.WorkerPool``.
    ``n_jobs=None`` (or 0) starts one worker per usable CPU;
    ``start_method``: ``"threading"`` (threads), ``"fork"``,
    ``"forkserver"``, ``"spawn"`` or None (processes, gilfree's default
    start method); ``cpu_ids`` pins worker *i* to ``cpu_ids[i]`` (a CPU id or
    a list of them), or every worker to ``cpu_ids[0]`` if it is the only
    entry.  See the module's documentation for the semantics and the few
    differences from MPIRE.

    >>> from gilfree.compat.mpire import WorkerPool
    >>> def scaled(shared, x):
    ...     return shared["factor"] * x
    >>> with WorkerPool(2, shared_objects={"factor": 10}, start_method="threading") as pool:
    ...     pool.map(scaled, range(4))
    [0, 10, 20, 30]
    """

    def __init__(
        self,
        n_jobs: Optional[int] = None,
        daemon: bool = True,
        cpu_ids: Optional[CPUList] = None,
        shared_objects: Any = None,
        pass_worker_id: bool = False,
        use_worker_state: bool = False,
        start_method: Optional[str] = None,
        keep_alive: bool = False,
        use_dill: bool = False,
        enable_insights: bool = False,
        order_tasks: bool = False,
    ) -> None:
        self.n_jobs: int = _check_n_jobs(n_jobs)
        self.cpu_ids: Optional[List[List[int]]] = _check_cpu_ids(cpu_ids, self.n_jobs)
        self.backend, self._start_method = _backend_for(start_method)
        self.start_method: Optional[str] = start_method
        self.daemon = bool(daemon)
        self.shared_objects: Any = shared_objects
        self.pass_worker_id = bool(pass_worker_id)
        self.use_worker_state = bool(use_worker_state)
        self.keep_alive = bool(keep_alive)
        self.use_dill = bool(use_dill)
        self.enable_insights = bool(enable_insights)
        self.order_tasks = bool(order_tasks)
        self._pool: Optional[gilfree.Pool] = None
        self._life: Optional[_Lifecycle] = None
        self._config: Tuple[Any, ...] = ()
        self._prefix: Optional[_Prefix] = None
        self._exit_results: List[Any] = []
        self._insights: Any = None
        self._map_running = False
        self._pending: List[AsyncResult] = []
        self._tasks: Dict[Tuple[int, bool], _Task] = {}

    # -- MPIRE's setters ----------------------------------------------------

    def pass_on_worker_id(self, pass_on: bool = True) -> None:
        """Pass the worker id (first) to the task function, worker_init and worker_exit.

        >>> def whose(worker_id, x):
        ...     return worker_id in (0, 1), x
        >>> with WorkerPool(2, start_method="threading") as pool:
        ...     pool.pass_on_worker_id()
        ...     pool.map(whose, [10, 20])
        [(True, 10), (True, 20)]
        """
        self.pass_worker_id = bool(pass_on)

    def set_shared_objects(self, shared_objects: Any = None) -> None:
        """Pass ``shared_objects`` (after the worker id) to every function; None: pass nothing.

        >>> def scaled(shared, x):
        ...     return shared["factor"] * x
        >>> with WorkerPool(2, start_method="threading") as pool:
        ...     pool.set_shared_objects({"factor": 10})
        ...     pool.map(scaled, range(3))
        [0, 10, 20]
        """
        self.shared_objects = shared_objects

    def set_use_worker_state(self, use_worker_state: bool = True) -> None:
        """Give each worker a state dict, passed after the worker id and shared objects.

        >>> def nth(state, x):
        ...     state["n"] = state.get("n", 0) + 1
        ...     return state["n"]
        >>> with WorkerPool(1, start_method="threading") as pool:
        ...     pool.set_use_worker_state()
        ...     pool.map(nth, ["a", "b", "c"])
        [1, 2, 3]
        """
        self.use_worker_state = bool(use_worker_state)

    def set_keep_alive(self, keep_alive: bool = True) -> None:
        """Keep the workers (and their state) alive from one map call to the next.

        >>> def nth(state, x):
        ...     state["n"] = state.get("n", 0) + 1
        ...     return state["n"]
        >>> with WorkerPool(1, use_worker_state=True, start_method="threading") as pool:
        ...     pool.set_keep_alive()
        ...     pool.map(nth, ["a", "b"])
        ...     pool.map(nth, ["c"])   # the same worker, the same state
        [1, 2]
        [3]
        """
        self.keep_alive = bool(keep_alive)

    def set_order_tasks(self, order_tasks: bool = True) -> None:
        """Accepted for MPIRE compatibility; gilfree hands out chunks to whichever worker is free.

        >>> with WorkerPool(2, start_method="threading") as pool:
        ...     pool.set_order_tasks()   # changes nothing: results are in order anyway
        ...     pool.map(abs, [-1, -2, 3])
        [1, 2, 3]
        """
        self.order_tasks = bool(order_tasks)

    # -- workers ------------------------------------------------------------

    def _current_config(self) -> Tuple[Any, ...]:
        return (self.pass_worker_id, self.use_worker_state, self.shared_objects)

    def _same_config(self) -> bool:
        pass_id, user_state, shared = self._config
        return pass_id == self.pass_worker_id and user_state == self.use_worker_state and shared is self.shared_objects

    def _lifecycle(self, worker_init: Any, worker_exit: Any, worker_lifespan: Any, task_timeout: Any,
                   worker_init_timeout: Any, worker_exit_timeout: Any) -> _Lifecycle:
        life = _Lifecycle(
            _check_callable("worker_init", worker_init, none_ok=True),
            _check_callable("worker_exit", worker_exit, none_ok=True),
            _check_int("worker_lifespan", worker_lifespan, 1),
            _check_number("task_timeout", task_timeout, 0.0, strict=True),
            _check_number("worker_init_timeout", worker_init_timeout, 0.0, strict=True),
            _check_number("worker_exit_timeout", worker_exit_timeout, 0.0, strict=True),
        )
        if life.task_timeout is not None and self.backend == "threads":
            raise ValueError(
                "WorkerPool: task_timeout needs worker processes (start_method 'fork', 'forkserver', 'spawn' or "
                "None): a thread running a task cannot be stopped"
            )
        return life

    def _start_pool(self, life: _Lifecycle) -> gilfree.Pool:
        private = life.worker_init is not None or life.worker_exit is not None
        prefix = _Prefix(self.pass_worker_id, self.shared_objects is not None, self.use_worker_state, private)
        options: Dict[str, Any] = {}
        if self.backend == "processes":
            options["start_method"] = self._start_method
            options["task_timeout"] = life.task_timeout
        if prefix.pass_id:
            options["pass_worker_id"] = True
        if prefix.shared:
            options["shared"] = self.shared_objects
        if prefix.user_state or private:
            options["worker_state"] = True
        if life.worker_init is not None:
            options["initializer"] = _Init(life.worker_init, prefix)
            options["init_timeout"] = life.worker_init_timeout
        if life.worker_exit is not None:
            options["worker_exit"] = _Exit(life.worker_exit, prefix)
            options["exit_timeout"] = life.worker_exit_timeout
        if life.worker_lifespan is not None:
            options["max_tasks_per_worker"] = life.worker_lifespan
        if self.cpu_ids is not None:
            options["cpu_affinity"] = self.cpu_ids
        if self.enable_insights:
            options["insights"] = True
        # A new set of workers: MPIRE forgets the previous exit results and insights.
        self._exit_results = []
        self._insights = None
        try:
            pool = gilfree.Pool(self.n_jobs, self.backend, **options)
        except gilfree.InitializerError as exc:  # init_timeout on threads: raised here
            _reraise(exc)
        self._pool, self._life, self._prefix, self._config = pool, life, prefix, self._current_config()
        self._tasks = {}
        return pool

    def _task_for(self, func: Callable[..., Any], unpack: bool) -> _Task:
        """The wrapper of ``func`` for the running workers, the same object
        from call to call (gilfree remembers what it measured per function)."""
        key = (id(func), unpack)
        task = self._tasks.get(key)
        if task is None or task.func is not func:
            assert self._prefix is not None
            if len(self._tasks) >= 64:
                self._tasks.pop(next(iter(self._tasks)))
            task = self._tasks[key] = _Task(func, self._prefix, unpack)
        return task

    def _pool_for(self, life: _Lifecycle) -> gilfree.Pool:
        """The workers for a map with ``life``: the running ones if they fit."""
        if self._pool is not None and (self._life != life or not self._same_config()):
            old = self._life
            if old is not None and (old.worker_init is not life.worker_init or old.worker_exit is not life.worker_exit):
                warnings.warn(
                    "WorkerPool: worker_init or worker_exit differs from the one the running workers started "
                    "with: the workers are restarted (stop_and_join() first to make this explicit)",
                    RuntimeWarning,
                    stacklevel=3,
                )
            self._stop_pool()
        if self._pool is None:
            return self._start_pool(life)
        return self._pool

    def _forget_pool(self) -> Optional[gilfree.Pool]:
        pool, self._pool, self._life, self._prefix = self._pool, None, None, None
        self._pending = []
        self._tasks = {}
        return pool

    def _collect(self, pool: gilfree.Pool) -> None:
        """Keep what a stopped pool leaves: exit results, insights."""
        try:
            self._exit_results = [r for r in pool.exit_results() if not isinstance(r, _Skipped)]
        except Exception:  # pragma: no cover - defensive
            self._exit_results = []
        if self.enable_insights:
            try:
                self._insights = pool.insights()
            except Exception:
                pass

    def _stop_pool(self) -> None:
        """Let the workers finish (worker_exit runs), then keep their results."""
        pool = self._forget_pool()
        if pool is None:
            return
        try:
            pool.close()
            pool.join()
        except BaseException as exc:
            try:
                pool.terminate()
                pool.join()
            finally:
                self._collect(pool)
            _reraise(exc)
        self._collect(pool)

    def _abort(self) -> None:
        """Stop the workers now (an error, Ctrl-C, terminate()): no worker_exit."""
        pool = self._forget_pool()
        if pool is None:
            return
        try:
            pool.terminate()
            pool.join()
        finally:
            self._collect(pool)

    @contextmanager
    def _one_map(self) -> Iterator[None]:
        if self._map_running:
            raise RuntimeError(
                "WorkerPool: another map is running on this pool (an imap/imap_unordered iterator that is not "
                "exhausted yet); finish or close it before starting the next map"
            )
        self._map_running = True
        try:
            yield
        finally:
            self._map_running = False

    def _end_map(self) -> None:
        if not self.keep_alive:
            self._stop_pool()
        if self.enable_insights and logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s", self._insights_string())

    # -- map family ---------------------------------------------------------

    def _plan(self, func: Any, iterable_of_args: Any, iterable_len: Any, max_tasks_active: Any, chunk_size: Any,
              n_splits: Any, worker_lifespan: Any, progress_bar: Any, worker_init: Any, worker_exit: Any,
              task_timeout: Any, worker_init_timeout: Any, worker_exit_timeout: Any, progress_bar_options: Any,
              progress_bar_style: Any) -> _Plan:
        _check_callable("func", func)
        iterable_len = _check_int("iterable_len", iterable_len, 0)
        _check_int("max_tasks_active", max_tasks_active, 1)
        chunk_size = _check_number("chunk_size", chunk_size, 1)
        n_splits = _check_int("n_splits", n_splits, 1)
        life = self._lifecycle(worker_init, worker_exit, worker_lifespan, task_timeout, worker_init_timeout,
                               worker_exit_timeout)
        chunksize: Optional[int]
        if _is_ndarray(iterable_of_args):
            items: Any = _numpy_chunks(iterable_of_args, iterable_len, chunk_size, n_splits, self.n_jobs)
            chunksize = 1
            n_tasks: Optional[int] = len(items)
        else:
            try:
                iter(iterable_of_args)
            except TypeError:
                _fail_type("iterable_of_args", "an iterable (of arguments) or a numpy array", iterable_of_args)
            items = iterable_of_args
            known = len(items) if hasattr(items, "__len__") else None
            n_tasks = known
            if iterable_len is not None:
                n_tasks = iterable_len if known is None else min(known, iterable_len)
                if isinstance(items, (list, tuple, range)):
                    items = items[:iterable_len]
                else:
                    items = itertools.islice(items, iterable_len)
            if chunk_size is not None:
                chunksize = max(1, math.ceil(chunk_size))
            elif n_splits is not None and n_tasks is not None:
                chunksize = max(1, math.ceil(n_tasks / n_splits))
            else:
                chunksize = None  # gilfree adapts the chunk size
        progress = _progress_option(progress_bar, progress_bar_options, progress_bar_style, n_tasks)
        return _Plan(life, items, chunksize, progress)

    def map(
        self,
        func: Callable[..., Any],
        iterable_of_args: Union[Iterable[Any], Any],
        iterable_len: Optional[int] = None,
        max_tasks_active: Optional[int] = None,
        chunk_size: Optional[Union[int, float]] = None,
        n_splits: Optional[int] = None,
        worker_lifespan: Optional[int] = None,
        progress_bar: bool = False,
        concatenate_numpy_output: bool = True,
        worker_init: Optional[Callable[..., Any]] = None,
        worker_exit: Optional[Callable[..., Any]] = None,
        task_timeout: Optional[float] = None,
        worker_init_timeout: Optional[float] = None,
        worker_exit_timeout: Optional[float] = None,
        progress_bar_options: Optional[Dict[str, Any]] = None,
        progress_bar_style: Optional[str] = None,
    ) -> Any:
        """``func`` applied to every item of ``iterable_of_args``, as a list in
        input order (one array, if every result is a numpy array and
        ``concatenate_numpy_output``).

        >>> with WorkerPool(2, start_method="threading") as pool:
        ...     pool.map(pow, [(2, 3), (3, 2)], progress_bar=False)
        [8, 9]
        """
        plan = self._plan(func, iterable_of_args, iterable_len, max_tasks_active, chunk_size, n_splits,
                          worker_lifespan, progress_bar, worker_init, worker_exit, task_timeout,
                          worker_init_timeout, worker_exit_timeout, progress_bar_options, progress_bar_style)
        with self._one_map():
            pool = self._pool_for(plan.life)
            task = self._task_for(func, unpack=True)
            extra = {"progress": plan.progress} if plan.progress else {}
            try:
                results = pool.map(task, plan.items, plan.chunksize, **extra)
            except BaseException as exc:
                self._abort()
                _reraise(exc)
            self._end_map()
        return _concatenate(results) if concatenate_numpy_output else results

    def map_unordered(
        self,
        func: Callable[..., Any],
        iterable_of_args: Union[Iterable[Any], Any],
        iterable_len: Optional[int] = None,
        max_tasks_active: Optional[int] = None,
        chunk_size: Optional[Union[int, float]] = None,
        n_splits: Optional[int] = None,
        worker_lifespan: Optional[int] = None,
        progress_bar: bool = False,
        worker_init: Optional[Callable[..., Any]] = None,
        worker_exit: Optional[Callable[..., Any]] = None,
        task_timeout: Optional[float] = None,
        worker_init_timeout: Optional[float] = None,
        worker_exit_timeout: Optional[float] = None,
        progress_bar_options: Optional[Dict[str, Any]] = None,
        progress_bar_style: Optional[str] = None,
    ) -> List[Any]:
        """Like :meth:`map`, as a list in the order the results came in.

        >>> with WorkerPool(2, start_method="threading") as pool:
        ...     sorted(pool.map_unordered(abs, [-1, -2, 3]))
        [1, 2, 3]
        """
        return list(self.imap_unordered(func, iterable_of_args, iterable_len, max_tasks_active, chunk_size,
                                        n_splits, worker_lifespan, progress_bar, worker_init, worker_exit,
                                        task_timeout, worker_init_timeout, worker_exit_timeout,
                                        progress_bar_options, progress_bar_style))

    def imap(
        self,
        func: Callable[..., Any],
        iterable_of_args: Union[Iterable[Any], Any],
        iterable_len: Optional[int] = None,
        max_tasks_active: Optional[int] = None,
        chunk_size: Optional[Union[int, float]] = None,
        n_splits: Optional[int] = None,
        worker_lifespan: Optional[int] = None,
        progress_bar: bool = False,
        worker_init: Optional[Callable[..., Any]] = None,
        worker_exit: Optional[Callable[..., Any]] = None,
        task_timeout: Optional[float] = None,
        worker_init_timeout: Optional[float] = None,
        worker_exit_timeout: Optional[float] = None,
        progress_bar_options: Optional[Dict[str, Any]] = None,
        progress_bar_style: Optional[str] = None,
    ) -> Iterator[Any]:
        """A lazy iterator of the results, in input order.

        The arguments are checked at the call; the work starts when the
        iterator is first advanced (as MPIRE's generator does), and pulls
        the input lazily.  Closing the iterator early cancels the rest.

        >>> with WorkerPool(2, start_method="threading") as pool:
        ...     for square in pool.imap(pow, [(1, 2), (2, 2), (3, 2)]):
        ...         print(square)
        1
        4
        9
        """
        plan = self._plan(func, iterable_of_args, iterable_len, max_tasks_active, chunk_size, n_splits,
                          worker_lifespan, progress_bar, worker_init, worker_exit, task_timeout,
                          worker_init_timeout, worker_exit_timeout, progress_bar_options, progress_bar_style)
        return self._lazy("imap", func, plan)

    def imap_unordered(
        self,
        func: Callable[..., Any],
        iterable_of_args: Union[Iterable[Any], Any],
        iterable_len: Optional[int] = None,
        max_tasks_active: Optional[int] = None,
        chunk_size: Optional[Union[int, float]] = None,
        n_splits: Optional[int] = None,
        worker_lifespan: Optional[int] = None,
        progress_bar: bool = False,
        worker_init: Optional[Callable[..., Any]] = None,
        worker_exit: Optional[Callable[..., Any]] = None,
        task_timeout: Optional[float] = None,
        worker_init_timeout: Optional[float] = None,
        worker_exit_timeout: Optional[float] = None,
        progress_bar_options: Optional[Dict[str, Any]] = None,
        progress_bar_style: Optional[str] = None,
    ) -> Iterator[Any]:
        """Like :meth:`imap`, the results in the order they come in.

        >>> with WorkerPool(2, start_method="threading") as pool:
        ...     sorted(pool.imap_unordered(pow, [(1, 2), (2, 2), (3, 2)]))
        [1, 4, 9]
        """
        plan = self._plan(func, iterable_of_args, iterable_len, max_tasks_active, chunk_size, n_splits,
                          worker_lifespan, progress_bar, worker_init, worker_exit, task_timeout,
                          worker_init_timeout, worker_exit_timeout, progress_bar_options, progress_bar_style)
        return self._lazy("imap_unordered", func, plan)

    def _lazy(self, method: str, func: Callable[..., Any], plan: _Plan) -> Iterator[Any]:
        with self._one_map():
            pool = self._pool_for(plan.life)
            task = self._task_for(func, unpack=True)
            extra = {"progress": plan.progress} if plan.progress else {}
            try:
                results = getattr(pool, method)(task, plan.items, plan.chunksize, **extra)
            except BaseException as exc:
                self._abort()
                _reraise(exc)
            try:
                for value in results:
                    yield value
            except GeneratorExit:
                # The consumer stopped early: cancel the rest of the work.
                results.close()
                if not self.keep_alive:
                    self._abort()
                raise
            except BaseException as exc:
                results.close()
                self._abort()
                _reraise(exc)
            self._end_map()

    # -- single calls ---------------------------------------------------------

    def apply(
        self,
        func: Callable[..., Any],
        args: Any = (),
        kwargs: Optional[Dict[str, Any]] = None,
        callback: Optional[Callable[[Any], Any]] = None,
        error_callback: Optional[Callable[[BaseException], Any]] = None,
        worker_init: Optional[Callable[..., Any]] = None,
        worker_exit: Optional[Callable[..., Any]] = None,
        task_timeout: Optional[float] = None,
        worker_init_timeout: Optional[float] = None,
        worker_exit_timeout: Optional[float] = None,
    ) -> Any:
        """``func(*args, **kwargs)`` on a worker; waits for the result.

        >>> with WorkerPool(2, start_method="threading") as pool:
        ...     pool.apply(divmod, (7, 2))
        (3, 1)
        """
        return self.apply_async(func, args, kwargs, callback, error_callback, worker_init, worker_exit,
                                task_timeout, worker_init_timeout, worker_exit_timeout).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Any = (),
        kwargs: Optional[Dict[str, Any]] = None,
        callback: Optional[Callable[[Any], Any]] = None,
        error_callback: Optional[Callable[[BaseException], Any]] = None,
        worker_init: Optional[Callable[..., Any]] = None,
        worker_exit: Optional[Callable[..., Any]] = None,
        task_timeout: Optional[float] = None,
        worker_init_timeout: Optional[float] = None,
        worker_exit_timeout: Optional[float] = None,
    ) -> AsyncResult:
        """``func(*args, **kwargs)`` on a worker; returns an :class:`AsyncResult` at once.

        ``args`` follows MPIRE's rules: a tuple, list or other iterable
        (except str, bytes and numpy arrays) is unpacked -- a dict as well,
        into its keys: keyword arguments go in ``kwargs`` -- and any other
        value is the one argument.  ``callback(result)`` or
        ``error_callback(exception)`` run in this process when the task ends.
        Workers started by this call stay until :meth:`stop_and_join`,
        :meth:`terminate` or the end of the ``with`` block (which terminates
        them, as MPIRE's does: get the results inside the block).

        >>> with WorkerPool(2, start_method="threading") as pool:
        ...     result = pool.apply_async(max, ([3, 1, 2],))
        ...     result.get()
        3
        """
        _check_callable("func", func)
        _check_callable("callback", callback, none_ok=True)
        _check_callable("error_callback", error_callback, none_ok=True)
        life = self._lifecycle(worker_init, worker_exit, None, task_timeout, worker_init_timeout,
                               worker_exit_timeout)
        call_args, call_kwargs = _apply_arguments(args, kwargs)
        if self._pool is None or (not self._map_running and not self._same_config()):
            self._stop_pool()
            self._start_pool(life)
        pool = self._pool
        assert pool is not None
        on_error = None
        if error_callback is not None:
            user_error_callback = error_callback

            def on_error(exc: BaseException) -> None:
                user_error_callback(_translate(exc))

        inner = pool.apply_async(self._task_for(func, unpack=False), call_args, call_kwargs,
                                 callback, on_error)
        result = AsyncResult(inner)
        self._pending = [r for r in self._pending if not r.ready()]
        self._pending.append(result)
        return result

    # -- results, insights, shutting down -------------------------------------------

    def get_exit_results(self) -> List[Any]:
        """What ``worker_exit`` returned: one value per worker life that ran
        a task, for the last map call (without ``keep_alive``) or since the
        workers started (with it; complete after :meth:`stop_and_join`).

        >>> def count(state, x):
        ...     state["n"] = state.get("n", 0) + 1
        >>> def tasks_run(state):
        ...     return state["n"]
        >>> with WorkerPool(2, use_worker_state=True, start_method="threading") as pool:
        ...     _ = pool.map(count, range(10), worker_exit=tasks_run)
        ...     sum(pool.get_exit_results())   # one value per worker that ran tasks
        10
        """
        if self._pool is not None:
            return [r for r in self._pool.exit_results() if not isinstance(r, _Skipped)]
        return list(self._exit_results)

    def _insights_data(self) -> Optional[Dict[str, Any]]:
        if not self.enable_insights:
            return None
        source = self._insights
        if self._pool is not None:
            try:
                source = self._pool.insights()
            except Exception:
                pass
        if source is None:
            return None
        data = source.as_dict() if hasattr(source, "as_dict") else source
        return data if isinstance(data, dict) else None

    def get_insights(self) -> Dict[str, Any]:
        """MPIRE's insights dict: per-worker task counts and start-up, init,
        waiting, working and exit times (``H:MM:SS.mmm``), their totals,
        means, standard deviations and ratios.  Empty without
        ``enable_insights=True`` or before the first map.

        >>> with WorkerPool(2, start_method="threading", enable_insights=True) as pool:
        ...     _ = pool.map(abs, range(100))
        ...     insights = pool.get_insights()
        >>> sum(insights["n_completed_tasks"]), insights["total_working_time"]   # doctest: +ELLIPSIS
        (100, '0:00:00...')
        """
        data = self._insights_data()
        return {} if data is None else _mpire_insights(data, self.n_jobs)

    def _insights_string(self) -> str:
        data = self._insights_data()
        if data is None:
            return ("No insights yet: create the WorkerPool with enable_insights=True and run a map "
                    "(or apply) first.")
        return _insights_text(data, self.n_jobs)

    def print_insights(self) -> None:
        """Print a summary of :meth:`get_insights` (and gilfree's GIL and data times).

        >>> with WorkerPool(2, start_method="threading", enable_insights=True) as pool:
        ...     _ = pool.map(abs, range(100))
        ...     pool.print_insights()   # doctest: +ELLIPSIS
        WorkerPool insights (threads backend, 2 workers, wall time ...)
        ...Tasks completed: 100
        ...
        """
        print(self._insights_string())

    def stop_and_join(self, keep_alive: bool = False) -> None:
        """Wait for the submitted work, then stop the workers (``worker_exit``
        runs; :meth:`get_exit_results` has the results).  With
        ``keep_alive=True`` only wait: the workers stay.

        >>> def done():
        ...     return "done"
        >>> with WorkerPool(2, keep_alive=True, start_method="threading") as pool:
        ...     _ = pool.map(abs, [-1, -2, -3, -4], worker_exit=done)
        ...     before = pool.get_exit_results()   # the workers are still alive
        ...     pool.stop_and_join()
        ...     before, set(pool.get_exit_results())
        ([], {'done'})
        """
        if self._pool is None:
            return
        if keep_alive:
            for result in self._pending:
                result.wait()
            self._pending = []
            return
        self._stop_pool()

    join = stop_and_join

    def terminate(self) -> None:
        """Stop the workers now: queued and running tasks are cancelled, no ``worker_exit`` runs.

        >>> import time
        >>> pool = WorkerPool(1)   # a process
        >>> result = pool.apply_async(time.sleep, 10)
        >>> pool.terminate()   # does not wait for the sleep
        >>> result.get()   # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
            ...
        concurrent.futures.CancelledError
        """
        self._abort()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        # As MPIRE's: the workers are stopped at once, whatever is pending.
        self.terminate()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            try:
                pool.terminate()
                pool.join()
            except Exception:  # pragma: no cover - best effort
                pass

    def __repr__(self) -> str:
        state = "running" if self._pool is not None else "idle"
        method = "threading" if self.backend == "threads" else (self._start_method or "default")
        return f"<gilfree.compat.mpire.WorkerPool n_jobs={self.n_jobs} start_method={method!r} {state}>"
