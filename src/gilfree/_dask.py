"""``gilfree.Pool(backend="dask")``: the same Pool on a Dask cluster.

gilfree builds no cluster of its own: this backend drives Dask distributed
(``pip install 'gilfree[dask]'``).  It is imported when that backend is
asked for, and it imports ``distributed`` only then, so ``import gilfree``
works without Dask.

Who owns what:

* the ``distributed.Client``: the user's (``client=``, or Dask's current
  default client), left open when the pool closes; or ours (``address=``,
  or a ``LocalCluster`` that we start when there is neither), closed by
  ``join()``/``terminate()``;
* the scattered ``shared=`` object: ours, released at the end;
* Dask futures: one per chunk of a map (at most CHUNKS_PER_WORKER per
  worker at a time: the input is pulled as chunks are submitted) and one
  per ``apply_async``/``submit`` call once it leaves the pool's queue (at
  most two per worker at a time); each is released as soon as its result
  has been handed over.

What cannot be: a task running on a worker cannot be stopped (Dask has no
way), so ``terminate()`` drops its result; the lifecycle options (worker
slots with ids, lives, exit functions) are refused, as the workers are the
cluster's; a pool inherited through ``fork()`` refuses work.

Data flow of a map: the calling thread cuts the input into chunks, submits
each as one Dask task (``_run_chunk``, run on a worker: calls the function
per item, catches each item's exception with its traceback text, times the
calls), waits on a queue that Dask's done-callbacks fill (in 50 ms slices,
so Ctrl-C is seen at once), gathers the finished chunks in one round trip
and hands results out in input order (or in completion order).  Chunk size
(``chunksize=None``): small probe chunks first, then chunks of about 0.1 s
of work measured on the workers, never more than ``len/(4*workers)``.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import math
import os
import pickle
import queue
import signal
import threading
import time
import traceback
import uuid
import warnings
from collections import deque
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional

from . import _core, _pool, _progress
from ._lifecycle import NOT_GIVEN

__all__ = ["DaskPool", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'gilfree[dask]'"

#: Seconds of work a chunk aims at once an item's cost is known: Dask spends
#: about a millisecond per task, so this keeps its overhead near 1%.
TARGET_CHUNK_S = 0.1
#: Items a streamed (length unknown) input may have pulled ahead in all.
STREAM_AHEAD_ITEMS = 48_000
#: Items in one chunk, at most.
MAX_CHUNK_ITEMS = 1_000_000
#: Chunks a map keeps submitted and not yet handed out, per worker.
CHUNKS_PER_WORKER = 4
#: Seconds: the longest a wait holds on before checking for Ctrl-C.
SLICE_S = 0.05
#: Runs more, alone, of an input whose worker died before it is blamed (on
#: top of retries=): Dask fails every task the lost worker held, also those
#: waiting there behind the one that killed it, so a first death proves
#: nothing.
PROBATION_RUNS = 1
#: Default seconds to reach a scheduler given by address=.
CONNECT_TIMEOUT_S = 10.0

_UNSUPPORTED_DEFAULTS: Dict[str, Any] = {
    "start_method": None,
    "inner_threads": None,
    "initializer": None,
    "initargs": (),
    "worker_exit": None,
    "worker_state": False,
    "pass_worker_id": False,
    "max_tasks_per_worker": None,
    "cpu_affinity": None,
    "init_timeout": None,
    "exit_timeout": None,
    "insights": False,
}


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "gilfree: backend='dask' needs the optional packages dask and distributed, "
            f"which are not installed; install them with: {INSTALL_HINT}"
        ) from exc
    return distributed


def _describe(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str) and name:
        return name
    try:
        return repr(fn)
    except Exception:  # pragma: no cover - a broken __repr__
        return "<callable>"


# ---------------------------------------------------------------------------
# Worker side (runs in the Dask workers; module-level so that it pickles by
# reference: workers need gilfree installed, as they need the user's code).


class _Box:
    """Data for a task, opaque to Dask (it would otherwise walk lists and
    tuples looking for futures and task tuples)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> Any:
        return (_Box, (self.value,))


_watch_lock = threading.Lock()
_watched: Dict[int, list] = {}
_watch_thread: Optional[threading.Thread] = None


def _watch_loop() -> None:
    """task_timeout on a worker: a call over its limit has its worker
    process killed (the only way to stop C code and sleeps), after an event
    that tells the pool which input it was."""
    while True:
        time.sleep(0.01)
        now = time.monotonic()
        with _watch_lock:
            over = [entry for entry in _watched.values() if entry[0] <= now]
        if not over:
            continue
        _deadline, index, key, topic, timeout, worker = over[0]
        try:
            worker.log_event(topic, {"key": key, "index": index, "timeout": timeout, "pid": os.getpid()})
        except Exception:  # pragma: no cover - the kill still happens
            pass
        time.sleep(0.3)  # the event leaves with the worker's next batch
        os.kill(os.getpid(), signal.SIGKILL)


def _watch_begin(watch: Any) -> Optional[list]:
    if watch is None:
        return None
    global _watch_thread
    from distributed import get_worker

    timeout, topic, key = watch
    entry = [math.inf, None, key, topic, timeout, get_worker()]
    with _watch_lock:
        _watched[threading.get_ident()] = entry
        if _watch_thread is None:
            _watch_thread = threading.Thread(target=_watch_loop, name="gilfree-dask-watchdog", daemon=True)
            _watch_thread.start()
    return entry


def _watch_end(entry: Optional[list]) -> None:
    if entry is not None:
        with _watch_lock:
            _watched.pop(threading.get_ident(), None)


def _portable(exc: BaseException) -> BaseException:
    """exc, or a RuntimeError saying what it was if it cannot be pickled."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception as why:
        return RuntimeError(
            f"{type(exc).__module__}.{type(exc).__qualname__}: {exc} "
            f"(the exception itself could not be sent back: {why})"
        )


def _tb_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _run_chunk(fn: Any, box: _Box, start: int, star: bool, has_shared: bool, shared: Any,
               stop_on_error: bool, watch: Any) -> tuple:
    """Call fn on each item of a chunk.  Returns (results, errors, seconds,
    pid); errors is None or a list of (offset, exception, traceback text).
    An exception never leaves: Dask would retry it or fail the whole chunk."""
    items = box.value
    prefix = (shared.value,) if has_shared else ()
    out: List[Any] = []
    errors: Optional[list] = None
    entry = _watch_begin(watch)
    t0 = time.perf_counter()
    try:
        for k, x in enumerate(items):
            if entry is not None:
                entry[1] = start + k
                entry[0] = time.monotonic() + entry[4]
            try:
                out.append(fn(*prefix, *x) if star else fn(*prefix, x))
            except BaseException as exc:  # handed to the caller
                if errors is None:
                    errors = []
                errors.append((k, _portable(exc), _tb_text(exc)))
                out.append(None)
                if stop_on_error:
                    break
    finally:
        _watch_end(entry)
    return out, errors, time.perf_counter() - t0, os.getpid()


def _run_call(fn: Any, box: _Box, has_shared: bool, shared: Any, watch: Any) -> tuple:
    """apply/submit on a worker: ("ok", value, pid) or ("err", exc, tb, pid)."""
    args, kwargs = box.value
    prefix = (shared.value,) if has_shared else ()
    entry = _watch_begin(watch)
    if entry is not None:
        entry[0] = time.monotonic() + entry[4]
    try:
        return ("ok", fn(*prefix, *args, **kwargs), os.getpid())
    except BaseException as exc:  # handed to the caller
        return ("err", _portable(exc), _tb_text(exc), os.getpid())
    finally:
        _watch_end(entry)


# ---------------------------------------------------------------------------
# Caller side: errors


def _decorate(exc: BaseException, fn: Any, index: Optional[int], tb: str, pid: Optional[int]) -> BaseException:
    """As the other backends do: a RemoteTraceback cause with the worker's
    traceback and the input index, and a note."""
    name = _describe(fn)
    where = f"a gilfree Dask worker (process {pid})" if pid else "a gilfree Dask worker"
    text = f'\n"""\n{tb}"""\n(raised on {where} by {name}'
    text += f" on input index {index})" if index is not None else ")"
    exc.__cause__ = _core.RemoteTraceback(text)
    add_note = getattr(exc, "add_note", None)  # Python >= 3.11
    if add_note is not None:
        add_note(f"gilfree: {name} failed on input index {index}" if index is not None
                 else f"gilfree: {name} failed on a Dask worker")
    return exc


def _died_error(fn: Any, index: Optional[int], why: BaseException, timeout_event: Optional[dict]) -> BaseException:
    name = _describe(fn)
    on = f" on input index {index}" if index is not None else ""
    if timeout_event is not None:
        pid = timeout_event.get("pid")
        limit = timeout_event.get("timeout")
        err: BaseException = _core.TaskTimeoutError(
            f"{name} ran longer than task_timeout={limit:g} s{on}; its Dask worker process {pid} was killed")
        attrs = {"pid": pid, "exitcode": None, "signal": signal.SIGKILL, "signal_name": "SIGKILL",
                 "index": index, "timeout": limit}
    else:
        last = getattr(why, "last_worker", None)
        address = getattr(last, "address", None) or "?"
        pid = getattr(last, "pid", None)
        err = _core.WorkerDiedError(f"the Dask worker {address} died while running {name}{on} ({why})")
        attrs = {"pid": pid, "exitcode": None, "signal": None, "signal_name": None, "index": index,
                 "timeout": None}
    for k, v in attrs.items():
        setattr(err, k, v)
    err.__cause__ = why
    return err


def _once(settle: Callable[[bool, Any], None]) -> Callable[[bool, Any], None]:
    """settle, callable once: later calls (terminate() racing a result) do nothing."""
    lock = threading.Lock()
    done = [False]

    def once(ok: bool, value: Any) -> None:
        with lock:
            if done[0]:
                return
            done[0] = True
        settle(ok, value)

    return once


def _is_death(exc: BaseException) -> bool:
    distributed = _import_distributed()
    if isinstance(exc, distributed.KilledWorker):
        return True
    try:
        from distributed.comm.core import CommClosedError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, CommClosedError)


# ---------------------------------------------------------------------------
# The pool


def _probe_tcp(address: str, timeout: float) -> Optional[str]:
    """Why a tcp:// scheduler address cannot be reached (None: it can, or
    it is not plain TCP).  Checked before a Client is made: a Client that
    fails to connect keeps its event loop thread for a while."""
    import socket

    scheme, sep, rest = address.rpartition("://")
    if sep and scheme != "tcp":
        return None
    host, _, port = (rest if sep else address).rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            return None
    except ValueError:
        return None  # not host:port; let Dask say what it thinks
    except OSError as exc:
        return str(exc) or type(exc).__name__


def _in_dask_worker(distributed: Any) -> bool:
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


class DaskPool(_pool.Pool):
    """``gilfree.Pool(workers=None, backend="dask", *, client=None,
    address=None, connect_timeout=10, task_timeout=None, retries=0,
    shared=...)``: the Pool API on a Dask cluster.

    The cluster: ``client=`` a ``distributed.Client`` (left open when the
    pool closes); else ``address=`` a scheduler to connect to (within
    ``connect_timeout`` seconds, else ``ConnectionError`` naming it); else
    Dask's current default client if there is one; else a ``LocalCluster``
    of ``workers`` single-threaded worker processes (default
    :func:`gilfree.usable_cpus`), closed with the pool.  ``pool.workers``:
    how many chunks the pool runs at once (default: the cluster's threads).
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> "DaskPool":
        return _core.Pool.__new__(cls)

    def __init__(self, workers: Optional[int] = None, backend: str = "dask", *, client: Any = None,
                 address: Optional[str] = None, connect_timeout: float = CONNECT_TIMEOUT_S,
                 task_timeout: Optional[float] = None, retries: int = 0, shared: Any = NOT_GIVEN,
                 **options: Any) -> None:
        self._state = "uninitialised"
        self._client: Any = None
        self._cluster: Any = None
        self._owns_client = False
        if backend != "dask":
            raise ValueError(f"DaskPool: backend must be 'dask', got {backend!r}")
        for name, value in options.items():
            if name not in _UNSUPPORTED_DEFAULTS:
                raise TypeError(f"Pool() got an unexpected keyword argument {name!r}")
            default = _UNSUPPORTED_DEFAULTS[name]
            if name == "insights" and not isinstance(value, bool):
                raise TypeError(f"Pool(): insights must be True or False, got {value!r}")
            if value is not default and value != default:
                raise ValueError(
                    f"Pool(): {name}= is not supported with backend='dask' (supported there: client=, "
                    "address=, connect_timeout=, task_timeout=, retries=, shared=)")
        n = _core._check_workers(workers)
        if task_timeout is not None:
            if isinstance(task_timeout, bool) or not isinstance(task_timeout, (int, float)):
                raise TypeError(f"Pool(): task_timeout must be a number of seconds or None, got {task_timeout!r}")
            if not task_timeout > 0:
                raise ValueError(f"Pool(): task_timeout must be > 0, got {task_timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise TypeError(f"Pool(): retries must be an int >= 0, got {retries!r}")
        if retries < 0:
            raise ValueError(f"Pool(): retries must be >= 0, got {retries!r}")
        if client is not None and address is not None:
            raise ValueError("Pool(): give client= or address=, not both")
        distributed = _import_distributed()
        if client is not None:
            if not isinstance(client, distributed.Client):
                raise TypeError(f"Pool(): client must be a distributed.Client, got {client!r}")
            self._client = client
        elif address is not None:
            self._client = self._connect(distributed, address, connect_timeout)
            self._owns_client = True
        else:
            try:
                current = distributed.default_client()
            except ValueError:
                current = None
            if current is not None and current.status == "running":
                self._client = current
            elif _in_dask_worker(distributed):
                raise RuntimeError(
                    "gilfree: Pool(backend='dask') inside a Dask task needs client= or address=: it cannot start "
                    "a LocalCluster in a worker process (and a task that waits on tasks of its own cluster "
                    "holds a worker thread meanwhile: see distributed.secede)")
            else:
                self._start_cluster(distributed, n if n is not None else _core.usable_cpus(), retries)
        if n is None:
            try:
                n = max(1, sum(self._client.nthreads().values()))
            except BaseException:
                self._close_owned()
                raise
        self._workers = n
        self._task_timeout = float(task_timeout) if task_timeout is not None else None
        self._retries = retries
        self._token = uuid.uuid4().hex[:12]
        self._topic = f"gilfree-timeout-{self._token}"
        self._keys = itertools.count()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._calls: Dict[str, _Call] = {}    # key -> apply/submit call that is a Dask task
        self._queued: "deque[_Call]" = deque()  # calls not started yet
        self._call_limit = 2 * n
        self._runs: "set[_MapRun]" = set()
        self._has_shared = shared is not NOT_GIVEN
        self._shared: Any = None
        if self._has_shared:
            try:
                # Boxed: Dask would scatter a list's or a dict's items one
                # by one, and None is a value here.
                self._shared = self._client.scatter(_Box(shared), broadcast=True, hash=False)
            except BaseException:
                self._close_owned()
                raise
        self._pid = os.getpid()
        self._state = "running"
        # Not gilfree's to limit here: the Dask workers' own settings apply.
        self.inner_threads = None  # type: ignore[assignment]
        with _pool._live_lock:
            _pool._live_pools.add(self)

    # -- the cluster --------------------------------------------------------------

    @staticmethod
    def _connect(distributed: Any, address: str, timeout: float) -> Any:
        why = _probe_tcp(address, timeout)
        if why is None:
            try:
                return distributed.Client(address, timeout=timeout, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                why = str(exc)
        # Raised here, not in the handler: the half-made Client (and its
        # event loop thread) must not live on in the exception's context.
        import gc

        gc.collect()
        raise ConnectionError(
            f"gilfree: no Dask scheduler answered at {address!r} within {timeout:g} s (connect_timeout): {why}")

    def _start_cluster(self, distributed: Any, n: int, retries: int) -> None:
        import dask

        # Our cluster, our rules: a task whose worker dies is reported at
        # once (the pool re-runs it alone once, then per retries=, as on the
        # process backend), and the scheduler keeps queued tasks to itself
        # rather than on the workers, so a death fails little else.
        with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                              "distributed.scheduler.worker-saturation": 1.0}):
            self._cluster = distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
        try:
            self._client = distributed.Client(self._cluster, set_as_default=False)
        except BaseException:
            self._cluster.close()
            self._cluster = None
            raise
        self._owns_client = True

    def _close_owned(self) -> None:
        client, cluster = self._client, self._cluster
        self._cluster = None
        if self._owns_client and client is not None:
            self._owns_client = False
            client.close()
        if cluster is not None:
            cluster.close()

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` this pool submits to."""
        return self._client

    # -- attributes ------------------------------------------------------------------

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def backend(self) -> str:
        return "dask"

    @property
    def state(self) -> str:
        return self.__dict__.get("_state", "uninitialised")

    @property
    def pids(self) -> List[int]:
        """Process ids of the cluster's workers (one round trip), [] once closed."""
        if self._state != "running":
            return []
        return sorted(self._client.run(os.getpid).values())

    @property
    def decision(self) -> None:
        return None

    def exit_results(self) -> List[Any]:
        return []

    def insights(self) -> Any:
        raise ValueError("Pool.insights(): needs Pool(insights=True), which backend='dask' does not support "
                         "(Dask's dashboard shows what the workers do)")

    def __repr__(self) -> str:
        return f"<gilfree.Pool backend='dask' workers={self.__dict__.get('_workers')} state={self.state!r}>"

    # -- submitting ------------------------------------------------------------------

    def _forked(self) -> bool:
        """Whether this is a child forked from the process that made the pool."""
        return self.__dict__.get("_pid", os.getpid()) != os.getpid()

    def _check_open(self, method: str) -> None:
        if self._forked():
            # The client's event-loop thread did not survive fork(); its
            # sockets are the parent's: using them would break the parent's.
            raise RuntimeError(f"Pool.{method}(): this backend='dask' pool was inherited through fork(); "
                               "it works only in the process that created it")
        if self._state != "running":
            raise ValueError(f"Pool.{method}(): Pool is closed (close() or terminate() was called); create a new Pool")

    def _key(self, fn: Any) -> str:
        name = _describe(fn).replace(" ", "_")[:60]
        return f"{name}-gilfree-{self._token}-{next(self._keys)}"

    def _watch(self, key: str) -> Any:
        return None if self._task_timeout is None else (self._task_timeout, self._topic, key)

    def _submit_chunk(self, fn: Any, items: Any, start: int, star: bool, stop: bool) -> Any:
        key = self._key(fn)
        return self._client.submit(_run_chunk, fn, _Box(items), start, star, self._has_shared, self._shared,
                                   stop, self._watch(key), key=key, pure=False)

    def _timeout_event(self, key: str) -> Optional[dict]:
        if self._task_timeout is None:
            return None
        try:
            events = self._client.get_events(self._topic)
        except Exception:  # pragma: no cover - the scheduler went away
            return None
        for _ts, msg in events:
            if isinstance(msg, dict) and msg.get("key") == key:
                return msg
        return None

    def _cancel(self, futures: List[Any]) -> None:
        futures = [f for f in futures if f is not None and not f.done()]
        if futures and self._client.status == "running":
            try:
                self._client.cancel(futures)
            except Exception:  # pragma: no cover - the cluster is going away
                pass

    # -- single calls --------------------------------------------------------------------
    #
    # apply_async/submit calls wait in the pool's own queue; at most
    # `_call_limit` of them (one running and one sent ahead per worker, as
    # on the process backend) are Dask tasks at a time.  A call still in
    # the queue has not started: cancel() on its future succeeds and
    # terminate() leaves it cancelled, as in concurrent.futures.

    def _call(self, call: "_Call") -> None:
        with self._lock:
            self._queued.append(call)
        self._pump()

    def _pump(self) -> None:
        """Turn queued calls into Dask tasks while there is room."""
        with self._lock:
            while self._queued and len(self._calls) < self._call_limit and self._state != "terminated":
                call = self._queued.popleft()
                if not call.start():
                    continue  # its future was cancelled while it waited
                self._submit_call(call)
            self._idle.notify_all()

    def _submit_call(self, call: "_Call") -> None:
        # Under self._lock: terminate() sees every submitted call.
        key = self._key(call.fn)
        call.key = key
        self._calls[key] = call
        call.future = self._client.submit(_run_call, call.fn, _Box((call.args, call.kwargs)), self._has_shared,
                                          self._shared, self._watch(key), key=key, pure=False)
        call.future.add_done_callback(lambda f, c=call, k=key: self._call_done(c, k, f))

    def _unqueue(self, call: "_Call") -> bool:
        """Take a call that has not started out of the queue (False: it has)."""
        with self._lock:
            try:
                self._queued.remove(call)
            except ValueError:
                return False
            self._idle.notify_all()
            return True

    def _call_done(self, call: "_Call", key: str, fut: Any) -> None:
        # On Dask's callback thread.
        with self._lock:
            if self._calls.get(key) is not call:
                return  # terminated: settled as cancelled already
        outcome: Optional[tuple] = None
        try:
            if fut.status == "finished":
                out = fut.result()
                if out[0] == "ok":
                    outcome = (True, out[1])
                else:
                    outcome = (False, _decorate(out[1], call.fn, None, out[2], out[3]))
            elif fut.status == "cancelled":
                outcome = (False, cf.CancelledError("the Dask task of this call was cancelled"))
            else:
                exc = fut.exception()
                if not _is_death(exc):
                    outcome = (False, exc)
                else:
                    event = self._timeout_event(key)
                    if (event is None and call.tries < self._retries + PROBATION_RUNS
                            and self._state != "terminated"):
                        call.tries += 1
                        with self._lock:
                            if self._calls.pop(key, None) is call:
                                self._submit_call(call)  # the same slot, a new task
                        return
                    outcome = (False, _died_error(call.fn, None, exc, event))
        except BaseException as exc:  # never leave a result unsettled
            outcome = (False, exc)
        with self._lock:
            mine = self._calls.get(key) is call
        if mine:
            # Settled (its callback run) before join() can see the pool idle.
            call.settle(*outcome)
            with self._lock:
                if self._calls.get(key) is call:
                    del self._calls[key]
        self._pump()

    def _apply(self, func: Any, args: Any, kwds: Any, callback: Any, error_callback: Any) -> "_Call":
        if not callable(func):
            raise TypeError(f"Pool.apply_async(): func must be callable, got {func!r} (type {type(func).__name__})")
        self._check_open("apply_async")
        try:
            args = tuple(args) if args is not None else ()
        except TypeError:
            raise TypeError(f"Pool.apply_async(): args must be a tuple or iterable, got {args!r}") from None
        try:
            kwds = dict(kwds) if kwds is not None else {}
        except (TypeError, ValueError):
            raise TypeError(f"Pool.apply_async(): kwds must be a mapping, got {kwds!r}") from None
        ar = _core._pending_result(func, callback, error_callback)
        call = _Call(func, args, kwds, _once(lambda ok, value: _core._settle_result(ar, ok, value)), _always, ar)
        self._call(call)
        return call

    def apply_async(self, func: Callable[..., Any], args: Iterable[Any] = (),
                    kwds: Optional[Mapping[str, Any]] = None, callback: Any = None,
                    error_callback: Any = None) -> Any:
        return self._apply(func, args, kwds, callback, error_callback).result

    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (),
              kwds: Optional[Mapping[str, Any]] = None) -> Any:
        if not callable(func):  # named as apply's own error
            raise TypeError(f"Pool.apply(): func must be callable, got {func!r} (type {type(func).__name__})")
        call = self._apply(func, args, kwds, None, None)
        try:
            return call.result.get()
        except KeyboardInterrupt:
            # Ctrl-C: nobody waits for this call any more.
            if not self._unqueue(call):
                self._cancel([call.future])
            raise

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        if not callable(fn):
            raise TypeError(f"Pool.submit(): fn must be callable, got {fn!r} (type {type(fn).__name__})")
        self._check_open("submit")
        future: cf.Future = cf.Future()

        def settle(ok: bool, value: Any) -> None:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        call = _Call(fn, args, kwargs, _once(settle), future.set_running_or_notify_cancel, future)

        def cancelled(f: cf.Future) -> None:
            # cancel() succeeds only on a call that has not started: one in
            # the queue (a started one is RUNNING).
            if f.cancelled() and self._unqueue(call):
                f.set_running_or_notify_cancel()  # wait()/as_completed() see it done

        future.add_done_callback(cancelled)
        self._call(call)
        return future

    # -- maps ----------------------------------------------------------------------------

    def _start(self, method: str, func: Any, iterable: Any, chunksize: Any, star: bool, lazy: bool,
               ordered: bool) -> "_MapRun":
        if not callable(func):
            raise TypeError(f"Pool.{method}(): func must be callable, got {func!r} (type {type(func).__name__})")
        size = _core._check_chunksize(chunksize, method)
        self._check_open(method)
        _pool._check_iterable(method, iterable)
        run = _MapRun(self, method, func, iterable, size, star, lazy, ordered)
        with self._lock:
            self._runs.add(run)
        return run

    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: Optional[int] = None, *,  # type: ignore[override]
            progress: _progress.ProgressOption = False) -> List[Any]:
        return self._blocking("map", func, iterable, chunksize, False, progress)

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],  # type: ignore[override]
                chunksize: Optional[int] = None,
                *, progress: _progress.ProgressOption = False) -> List[Any]:
        return self._blocking("starmap", func, iterable, chunksize, True, progress)

    def _blocking(self, method: str, func: Any, iterable: Any, chunksize: Any, star: bool,
                  progress: _progress.ProgressOption) -> List[Any]:
        bar = _progress.make_bar(progress, _progress.total_of(iterable), func) if progress else None
        try:
            run = self._start(method, func, iterable, chunksize, star, False, True)
            return run.collect(bar.update_to if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()

    def imap(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: Optional[int] = None, *,  # type: ignore[override]
             progress: _progress.ProgressOption = False) -> Iterator[Any]:
        run = self._start("imap", func, iterable, chunksize, False, True, True)
        return _pool._with_progress(run, progress, iterable, func)

    def imap_unordered(self, func: Callable[[Any], Any], iterable: Iterable[Any],  # type: ignore[override]
                       chunksize: Optional[int] = None, *,
                       progress: _progress.ProgressOption = False) -> Iterator[Any]:
        run = self._start("imap_unordered", func, iterable, chunksize, False, True, False)
        return _pool._with_progress(run, progress, iterable, func)

    def _run_ended(self, run: "_MapRun") -> None:
        with self._lock:
            self._runs.discard(run)
            self._idle.notify_all()

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        if self._state == "running":
            self._state = "closed"

    def _busy(self) -> bool:
        return bool(self._calls) or bool(self._queued) or any(run.active() for run in self._runs)

    def join(self) -> None:
        state = self.__dict__.get("_state", "uninitialised")
        if state == "running":
            raise ValueError("Pool.join(): Pool is still running; call close() or terminate() first")
        if state in ("joined", "uninitialised"):
            return
        if self._forked():
            self._state = "joined"  # the parent's cluster and futures: not ours to touch
            return
        with self._lock:
            while self._busy():
                self._idle.wait(SLICE_S)
        self._finish()

    def terminate(self) -> None:
        state = self.__dict__.get("_state", "uninitialised")
        if state in ("joined", "uninitialised"):
            return
        if self._forked():
            self._state = "joined"  # the parent's cluster and futures: not ours to touch
            return
        self._state = "terminated"
        with self._lock:
            queued = list(self._queued)
            self._queued.clear()
            calls = list(self._calls.values())
            self._calls.clear()
            runs = list(self._runs)
            self._idle.notify_all()
        for run in runs:
            run.abort()
        self._cancel([call.future for call in calls])
        for call in queued:
            call.never_started()
        for call in calls:
            # Started (sent to Dask): it ends with a CancelledError exception.
            call.settle(False, cf.CancelledError("the pool was terminated before this call finished"))
        self._finish()

    def _finish(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            self._cancel([shared])
            del shared
        self._state = "joined"
        try:
            self._close_owned()
        finally:
            self._forget()

    def _forget(self) -> None:
        with _pool._live_lock:
            _pool._live_pools.discard(self)

    def __del__(self) -> None:
        state = self.__dict__.get("_state", "uninitialised")
        if state in ("running", "closed", "terminated") and not _pool._exiting:
            warnings.warn(
                f"unclosed {self!r}: use 'with gilfree.Pool(backend=\"dask\") as pool:' or call close() and join()",
                ResourceWarning, stacklevel=2, source=self)


def _always() -> bool:
    return True


class _Call:
    """One apply_async/submit call: queued in the pool, then a Dask task."""

    __slots__ = ("fn", "args", "kwargs", "settle", "start", "result", "tries", "key", "future")

    def __init__(self, fn: Any, args: Any, kwargs: Any, settle: Callable[[bool, Any], None],
                 start: Callable[[], bool], result: Any) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.settle = settle
        self.start = start    # marks the call started; False: cancelled while queued
        self.result = result  # the AsyncResult or concurrent.futures.Future handed out
        self.tries = 0
        self.key: Optional[str] = None
        self.future: Any = None

    def never_started(self) -> None:
        """terminate() before this call left the queue: its future ends
        cancelled (cancelled() is True); an AsyncResult gets CancelledError."""
        if isinstance(self.result, cf.Future):
            if self.result.cancel():
                self.result.set_running_or_notify_cancel()
        else:
            self.settle(False, cf.CancelledError("the pool was terminated before this call started"))


class _Chunk:
    __slots__ = ("start", "items", "future", "key", "tries", "done", "results", "errors", "pos")

    def __init__(self, start: int, items: Any, tries: int = 0) -> None:
        self.start = start
        self.items = items
        self.future: Any = None
        self.key: Optional[str] = None
        self.tries = tries
        self.done = False
        self.results: List[Any] = []
        self.errors: Dict[int, BaseException] = {}
        self.pos = 0  # imap: the next offset to hand out


class _MapRun:
    """One map/imap on a Dask pool: feeds chunks, collects results.  Driven
    by the caller's thread (map) or by next() (imap); no thread of its own."""

    def __init__(self, pool: DaskPool, method: str, fn: Any, iterable: Any, chunksize: Optional[int], star: bool,
                 lazy: bool, ordered: bool) -> None:
        self.pool = pool
        self.method = method
        self.fn = fn
        self.star = star
        self.lazy = lazy
        self.ordered = ordered
        self.fixed = chunksize
        self.queue: "queue.SimpleQueue[Optional[_Chunk]]" = queue.SimpleQueue()  # None: abort() woke it
        self.out: "deque[_Chunk]" = deque()  # ordered: submitted, not yet handed out; unordered: running
        self.ready: "deque[tuple]" = deque()  # unordered: (value, error) to hand out
        self.inflight = 0
        self.limit = max(2, CHUNKS_PER_WORKER * pool.workers)
        self.next_index = 0
        self.cost: Optional[float] = None     # seconds per item, measured on the workers
        self.probes = 0
        self.input_error: Optional[BaseException] = None
        self.exhausted = False
        self.failed: Optional[int] = None     # map: lowest failed index
        self.closed = False
        self.aborted = False
        self.done_items = 0
        self.seq: Any = None
        self.it: Any = None
        try:
            n = len(iterable) if isinstance(iterable, (list, tuple, range)) else None
        except OverflowError:  # a range longer than sys.maxsize
            n = None
        if n is not None:
            self.seq = iterable
        else:
            self.it = iter(iterable)
        if n is not None:
            self.bound = max(1, min(MAX_CHUNK_ITEMS, -(-n // (4 * pool.workers))))
        else:
            self.bound = max(16, STREAM_AHEAD_ITEMS // self.limit)
        self.fill()

    # -- feeding -------------------------------------------------------------------------

    def _size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.cost is None:
            size = 1 << min(self.probes, 20)
            self.probes += 1
            return min(size, self.bound)
        return max(1, min(self.bound, int(TARGET_CHUNK_S / max(self.cost, 1e-9))))

    def _take(self, k: int) -> Any:
        start = self.next_index
        if self.seq is not None:
            items = self.seq[start:start + k]
            if len(items) < k:
                self.exhausted = True
            if len(items) == 0:
                return None
            return self._star_items(items, start) if self.star else items
        items = []
        try:
            items.extend(itertools.islice(self.it, k))
        except Exception as exc:
            self.input_error = exc
            self.exhausted = True
        if len(items) < k:
            self.exhausted = True
        if not items:
            return None
        return self._star_items(items, start) if self.star else items

    def _star_items(self, items: Any, start: int) -> List[tuple]:
        out = []
        for k, x in enumerate(items):
            try:
                out.append(tuple(x))
            except TypeError:
                raise TypeError(
                    f"Pool.{self.method}(): the item at input index {start + k} is not iterable: "
                    f"{x!r} (type {type(x).__name__})") from None
        return out

    def _room(self) -> bool:
        if self.ordered and self.lazy:
            return len(self.out) < self.limit  # submitted and not yet handed out
        return self.inflight < self.limit

    def fill(self) -> None:
        while (not self.exhausted and self.failed is None and not self.closed and self._room()
               and not self.aborted):
            if self.fixed is None and self.cost is None and self.inflight >= self.pool.workers:
                break  # the probes are out: size the next chunks on what they measure
            try:
                items = self._take(self._size())
            except BaseException:
                self.cancel()
                raise
            if items is None:
                break
            chunk = _Chunk(self.next_index, items)
            self.next_index += len(items)
            self._submit(chunk)
            self.out.append(chunk)

    def _submit(self, chunk: _Chunk) -> None:
        chunk.future = self.pool._submit_chunk(self.fn, chunk.items, chunk.start, self.star, not self.lazy)
        chunk.key = chunk.future.key
        self.inflight += 1
        q = self.queue
        chunk.future.add_done_callback(lambda _f, c=chunk: q.put(c))

    # -- settling ------------------------------------------------------------------------

    def _wait(self, report: Optional[Callable[[int], Any]] = None) -> None:
        """Block until at least one chunk settles (in short slices, so that
        Ctrl-C is seen), then settle every chunk that has."""
        settled: List[Optional[_Chunk]] = []
        try:
            while not settled:
                try:
                    settled.append(self.queue.get(timeout=SLICE_S))
                except queue.Empty:
                    if report is not None:
                        report(self.done_items)
            while True:
                try:
                    settled.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            self._check_aborted()
            self._settle([c for c in settled if c is not None and c.future is not None and not c.done])
        except BaseException:
            self.cancel()
            raise

    def _settle(self, chunks: List[_Chunk]) -> None:
        finished = [c for c in chunks if c.future.status == "finished"]
        values: List[Any] = []
        if finished:
            try:
                values = self.pool._client.gather([c.future for c in finished])
            except Exception:
                self._check_aborted()  # terminate() cancelled them meanwhile
                # A result went with its worker before we fetched it (Dask
                # then recomputes it, and may blame it for that worker's
                # death): these chunks ran fine once; run them again.
                for c in finished:
                    self._replace(c, [(c.start, c.items)], tries=c.tries)
                finished = []
        for c, value in zip(finished, values):
            self._chunk_done(c, value)
        for c in chunks:
            if c.done or c.future is None:
                continue
            if c.future.status == "cancelled":
                exc: BaseException = cf.CancelledError("the Dask task of this chunk was cancelled")
            else:
                try:
                    exc = c.future.exception()
                except Exception as why:
                    exc = why
            self._chunk_failed(c, exc)

    def _finished(self, c: _Chunk) -> None:
        c.done = True
        c.future = None
        self.inflight -= 1
        if not self.ordered:
            self.out.remove(c)
            for k, r in enumerate(c.results):
                self.ready.append((r, c.errors.get(k)))
            c.results = []

    def _chunk_done(self, c: _Chunk, value: tuple) -> None:
        results, errors, seconds, pid = value
        if results and self.fixed is None:
            cost = seconds / len(results)
            self.cost = cost if self.cost is None else 0.5 * (self.cost + cost)
        for offset, exc, tb in errors or ():
            index = c.start + offset
            c.errors[offset] = _decorate(exc, self.fn, index, tb, pid)
            if not self.lazy and (self.failed is None or index < self.failed):
                self.failed = index
        c.results = results
        self.done_items += len(results)
        self._finished(c)

    def _chunk_failed(self, c: _Chunk, exc: BaseException) -> None:
        """The chunk's task did not run to the end: its worker died (or was
        killed for task_timeout), it was cancelled, or Dask failed it."""
        pool = self.pool
        if _is_death(exc) and pool._state != "terminated" and not self.closed:
            event = pool._timeout_event(c.key) if c.key is not None else None
            count = len(c.items)
            if event is not None and isinstance(event.get("index"), int):
                bad = event["index"] - c.start
                self._replace(c, [(c.start, c.items[:bad]),
                                  (c.start + bad, _died_error(self.fn, c.start + bad, exc, event)),
                                  (c.start + bad + 1, c.items[bad + 1:])])
                return
            if count > 1:
                # Which input was it?  Each runs alone to find out.
                self._replace(c, [(c.start + k, c.items[k:k + 1]) for k in range(count)])
                return
            if c.tries < pool._retries + PROBATION_RUNS:
                self._replace(c, [(c.start, c.items)], tries=c.tries + 1)
                return
            error: BaseException = _died_error(self.fn, c.start, exc, None)
        elif isinstance(exc, cf.CancelledError):
            error = exc
        else:
            error = RuntimeError(f"gilfree: Dask failed the task of inputs {c.start}..{c.start + len(c.items) - 1} "
                                 f"of {_describe(self.fn)}: {exc!r}")
            error.__cause__ = exc
        self._fail_all(c, error)

    def _fail_all(self, c: _Chunk, error: BaseException) -> None:
        count = len(c.items)
        c.results = [None] * count
        c.errors = {k: error for k in range(count)}
        if not self.lazy and (self.failed is None or c.start < self.failed):
            self.failed = c.start
        self.done_items += count
        self._finished(c)

    def _replace(self, c: _Chunk, parts: List[tuple], tries: int = 0) -> None:
        """Put new chunks in c's place: (start, items) runs again,
        (index, error) is an input that failed."""
        c.future = None
        c.done = True
        self.inflight -= 1
        pos = list(self.out).index(c)
        del self.out[pos]
        new: List[_Chunk] = []
        for start, what in parts:
            if isinstance(what, BaseException):
                dead = _Chunk(start, [None])
                self.out.insert(pos + len(new), dead)
                new.append(dead)
                self.inflight += 1
                self._fail_all(dead, what)
                continue
            if len(what) == 0:
                continue
            chunk = _Chunk(start, what, tries)
            self.out.insert(pos + len(new), chunk)
            new.append(chunk)
            self._submit(chunk)

    # -- the blocking map ------------------------------------------------------------------

    def collect(self, report: Optional[Callable[[int], Any]] = None) -> List[Any]:
        try:
            self.fill()
            while self.inflight:
                if self.failed is not None:
                    # Stop feeding; the chunks below the failure finish (one
                    # of them may fail lower), those above are dropped.
                    self._cancel_above(self.failed)
                    if not self.inflight:
                        break
                self._wait(report)
                self.fill()
            if report is not None:
                report(self.done_items)
            if self.failed is not None:
                for c in self.out:
                    error = c.errors.get(self.failed - c.start)
                    if error is not None:
                        raise error
            if self.input_error is not None:
                raise self.input_error
            out: List[Any] = []
            for c in self.out:
                out.extend(c.results)
            return out
        finally:
            self.cancel()

    def _cancel_above(self, index: int) -> None:
        drop = [c for c in self.out if not c.done and c.start > index]
        futures = [c.future for c in drop]
        for c in drop:
            self.out.remove(c)
            c.future = None
            self.inflight -= 1
        self.pool._cancel(futures)

    # -- the lazy map --------------------------------------------------------------------------

    def __iter__(self) -> "_MapRun":
        return self

    def __next__(self) -> Any:
        while not self.closed:
            if self.ordered and self.out and self.out[0].done:
                c = self.out[0]
                k = c.pos
                c.pos += 1
                if c.pos >= len(c.items):
                    self.out.popleft()
                    self.fill()
                error = c.errors.get(k)
                if error is not None:
                    raise error
                return c.results[k]
            if not self.ordered and self.ready:
                value, error = self.ready.popleft()
                self.fill()
                if error is not None:
                    raise error
                return value
            self.fill()
            if not self.inflight:
                error, self.input_error = self.input_error, None
                self.cancel()
                if error is not None:
                    raise error
                break
            self._wait()
        raise StopIteration

    def abort(self) -> None:
        """terminate(), from any thread: cancel the run's Dask tasks and wake
        the thread that drives it, which then raises CancelledError."""
        self.aborted = True
        self.pool._cancel([c.future for c in list(self.out)])
        self.queue.put(None)

    def _check_aborted(self) -> None:
        if self.aborted:
            raise cf.CancelledError(f"Pool.{self.method}(): the pool was terminated before the results were ready")

    def active(self) -> bool:
        """Whether a task of this run may still be running."""
        # A snapshot: join() asks from another thread while the run's own
        # thread may change the deque.
        return not self.closed and any(c.future is not None and not c.future.done() for c in list(self.out))

    def cancel(self) -> None:
        """Cancel what is submitted and not handed out; end the run."""
        if self.closed:
            return
        self.closed = True
        futures = [c.future for c in self.out if c.future is not None]
        for c in self.out:
            c.future = None
        self.out.clear()
        self.ready.clear()
        self.inflight = 0
        self.exhausted = True
        try:
            self.pool._cancel(futures)
        finally:
            self.pool._run_ended(self)

    def close(self) -> None:
        self.cancel()

    def __del__(self) -> None:
        if not self.__dict__.get("closed", True):
            try:
                self.cancel()
            except Exception:  # pragma: no cover - interpreter shutdown
                pass

    def __repr__(self) -> str:
        return f"<gilfree.Pool(backend='dask').{self.method} of {_describe(self.fn)}>"
