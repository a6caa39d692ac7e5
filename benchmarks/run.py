#!/usr/bin/env python3
"""gilfree against its peers, side by side, in one run: absolute numbers and ratios.

    python benchmarks/run.py [--quick] [--group threads|processes|all] [--repeat R]
                             [--only NAME ...] [--workers W] [--json out.json]
                             [--markdown out.md] [--case-timeout S]

Two groups of rows.  The thread group: a serial loop, ``concurrent.futures.
ThreadPoolExecutor``, ``multiprocessing.pool.ThreadPool`` and, when importable, MPIRE's
threading mode, against ``gilfree.Pool(W)``.  The process group: ``multiprocessing`` pools
(fork and forkserver), ``ProcessPoolExecutor``, joblib/loky and MPIRE (fork), against
``gilfree.Pool(W, backend="processes")``.  gilfree is skipped, with the reason, when
``import gilfree`` (or creating a process pool) fails, so the harness runs before the
package is built.  Workloads (``--only`` takes these names or library names):

    tiny      map(inc, range(N)): items/s against a serial list comprehension
    overhead  map(noop, range(N), chunksize=1): microseconds per task
    apply     N x apply_async(noop) then .get() each: tasks/s against TPE submit()+result()
    sha256    sha256 of 8 MB buffers: speed-up over serial (hashlib releases the GIL)
    zlib      zlib.compress of 4 MB text, level 6: speed-up over serial
    matmul    400x400 float64 numpy matmul, BLAS limited to 1 thread: speed-up over serial
    startup   create a pool, run a trivial map, close and join it: milliseconds
    ctrlc     SIGINT while the main thread waits in map(): milliseconds to KeyboardInterrupt

    p-tiny      map(inc, range(N)) on processes: items/s against the best peer and serial
    p-overhead  map(noop, range(N), chunksize=1): microseconds per task
    p-apply     N x apply_async(noop) then .get() each: tasks/s against mp.Pool (fork)
    p-cpu       200 tasks of ~10 ms pure-Python work: speed-up over serial
    p-send      16 MiB float64 array argument per task: GB/s sent
    p-recv      16 MiB float64 array result per task: GB/s received
    p-startup   create a pool, first result of apply_async(noop): milliseconds

README.md beside this file explains the method; ``--markdown`` writes docs/benchmarks.md.
"""

from __future__ import annotations

import os

# BLAS must be single-threaded before numpy is imported (here, or by workloads.py):
# the matmul rows compare 1 thread of BLAS against W threads of the pool.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

# Worker processes unpickle the task functions by module name (workloads, pworkloads), so
# this directory must be importable in every child.  Fork children inherit sys.path, and
# multiprocessing's forkserver and loky hand the parent's sys.path over, but nothing
# obliges other implementations to: the environment, inherited by every child, is sure.
_HERE = os.path.dirname(os.path.abspath(__file__))
_PATHS = os.environ.get("PYTHONPATH", "").split(os.pathsep)
if _HERE not in _PATHS:
    os.environ["PYTHONPATH"] = os.pathsep.join([_HERE] + [p for p in _PATHS if p])

import argparse  # noqa: E402
import datetime  # noqa: E402
import faulthandler  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from multiprocessing.pool import ThreadPool  # noqa: E402
from typing import Any  # noqa: E402

import ctrlc  # noqa: E402
import pworkloads as PW  # noqa: E402
import workloads as W  # noqa: E402
from workloads import inc, noop  # noqa: E402

# ---------------------------------------------------------------------------------------
# Libraries: how to make, warm and shut down each pool.  Pools are made before the timer
# starts and shut down after it stops; exactly one pool exists while a case is timed.
# ---------------------------------------------------------------------------------------


@dataclass
class Library:
    key: str  # used by --only and in JSON
    title: str
    open: Callable[[int], Any] = lambda workers: None
    warm: Callable[[Any, int], Any] = lambda pool, workers: None
    close: Callable[[Any], Any] = lambda pool: None
    why_not: str = ""  # non-empty: not available, rows are skipped with this reason
    version: str = ""
    first: Callable[[Any], Any] = lambda pool: None  # one trivial result (p-startup)


def _import_gilfree() -> tuple[Any, str]:
    """(the gilfree module, "") or (None, why it cannot be measured)."""
    try:
        import gilfree
    except Exception as exc:  # ImportError, or the extension failing to load
        return None, f"import gilfree failed ({type(exc).__name__}: {exc})"
    missing = [name for name in ("Pool", "map", "usable_cpus") if not hasattr(gilfree, name)]
    if missing:
        where = getattr(gilfree, "__file__", None) or list(getattr(gilfree, "__path__", []))
        return None, (f"gilfree imported from {where} has no {', '.join(missing)} "
                      "(not built and installed?)")
    return gilfree, ""


def _dist_version(name: str, module: Any) -> str:
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as dist_version

            version = dist_version(name)
        except Exception:
            version = "?"
    return str(version)


def make_libraries() -> dict[str, Library]:
    libs = {
        "serial": Library("serial", "serial (main thread)"),
        "raw": Library("raw", "plain threading.Thread objects"),
        "threadpool": Library(
            "threadpool", "multiprocessing.pool.ThreadPool",
            open=lambda w: ThreadPool(w),
            warm=lambda p, w: p.map(noop, range(4 * w), chunksize=1),
            close=lambda p: (p.close(), p.join()),
            version=platform.python_version()),
        "tpe": Library(
            "tpe", "concurrent.futures.ThreadPoolExecutor",
            open=lambda w: ThreadPoolExecutor(max_workers=w),
            warm=lambda p, w: list(p.map(noop, range(4 * w))),
            close=lambda p: p.shutdown(wait=True),
            version=platform.python_version()),
    }
    gilfree, why = _import_gilfree()
    libs["gilfree"] = Library("gilfree", "gilfree", why_not=why)
    if gilfree is not None:
        libs["gilfree"] = Library(
            "gilfree", "gilfree",
            open=lambda w: gilfree.Pool(w),
            warm=lambda p, w: p.map(noop, range(4 * w), chunksize=1),
            close=lambda p: (p.close(), p.join()),
            version=_dist_version("gilfree", gilfree))
    try:
        import mpire
        from mpire import WorkerPool
    except ImportError as exc:
        libs["mpire"] = Library("mpire", "MPIRE (threading)",
                                why_not=f"mpire not importable ({exc})")
    else:
        libs["mpire"] = Library(
            "mpire", "MPIRE (threading)",
            open=lambda w: WorkerPool(n_jobs=w, start_method="threading", keep_alive=True),
            warm=lambda p, w: p.map(noop, range(4 * w)),
            close=lambda p: p.stop_and_join(),
            version=_dist_version("mpire", mpire))
    return libs


# The process group: the same Library records, over worker processes.  The keys are those
# of --only; "serial" and "mpire" name the process group's own rows here.

PROCESS_LIBRARY_NAMES = ("serial", "mp-fork", "mp-forkserver", "ppe", "loky", "mpire",
                         "gilfree-proc", "gilfree-proc-fork")


def _warm_all(call: Callable[[int], list[int]], workers: int) -> None:
    """Call ``call(k)`` (k warm-up tasks, each answering its worker's pid) until all
    ``workers`` processes have answered: each has then started and imported the task
    modules (and numpy), so that no timed call pays for a late or lazy worker start."""
    seen: set[int] = set()
    for _ in range(200):  # ~5 ms a try; a library running fewer processes is taken as is
        seen.update(call(2 * workers))
        if len(seen) >= workers:
            return


def _mp_library(method: str) -> Library:
    key, title = f"mp-{method}", f"multiprocessing.get_context({method!r}).Pool"
    try:
        ctx = multiprocessing.get_context(method)
    except ValueError as exc:  # no such start method on this platform
        return Library(key, title, why_not=str(exc))
    if method == "forkserver":
        # The documented way to start forkserver workers fast: the server imports the task
        # modules (and numpy) once.  CPython's forkserver long failed to preload the main
        # script (gh-98552, gh-137996; fixed in 2025 for 3.13+), so each worker re-runs
        # run.py's imports as __mp_main__, as for any script: the preload makes them cache
        # hits (about 130 -> 45 ms to the first result here).  3.11's forkserver ignores
        # the sys_path it is given (gh-117378): the PYTHONPATH set above makes it work.
        ctx.set_forkserver_preload(["workloads", "pworkloads"])
    return Library(
        key, title,
        open=lambda w: ctx.Pool(w),
        warm=lambda p, w: _warm_all(lambda k: p.map(PW.warm_task, range(k), chunksize=1), w),
        close=lambda p: (p.close(), p.join()),
        first=lambda p: p.apply_async(noop, (7,)).get(),
        version=platform.python_version())


def _loky_open(workers: int, **kwargs: Any) -> Any:
    """A persistent ``joblib.Parallel`` (its ``with`` block entered): one loky executor,
    reused by every call on it."""
    from joblib import Parallel

    par = Parallel(n_jobs=workers, backend="loky", **kwargs)
    par.__enter__()
    return par


def _loky_close(par: Any) -> None:
    """Leave the ``with`` block, then shut the loky executor down.

    Leaving the block alone keeps loky's reusable worker processes alive (300 s idle
    timeout) for the next Parallel; they would then idle beside the next row's pool.  The
    executor is reached through a private attribute (joblib 1.x); without it the workers
    linger."""
    executor = getattr(getattr(par, "_backend", None), "_workers", None)
    par.__exit__(None, None, None)
    if executor is not None:
        executor.shutdown(wait=True)


def _loky_map(par: Any, task: Callable[[Any], Any], items: Any) -> list[Any]:
    from joblib import delayed

    return par(delayed(task)(x) for x in items)


def make_process_libraries(workers: int, case_timeout: float) -> dict[str, Library]:
    """The process group's libraries; gilfree's are probed by making (and closing) a pool,
    under the case timeout."""
    libs = {"serial": Library("serial", "serial (main process)")}
    libs["mp-fork"] = _mp_library("fork")
    libs["mp-forkserver"] = _mp_library("forkserver")
    # ProcessPoolExecutor uses multiprocessing's default context when given none (fork on
    # Linux up to Python 3.13, forkserver from 3.14): it runs as users get it by default.
    ppe_method = multiprocessing.get_start_method()
    libs["ppe"] = Library(
        "ppe", f"concurrent.futures.ProcessPoolExecutor ({ppe_method}, the default)",
        open=lambda w: ProcessPoolExecutor(max_workers=w),
        warm=lambda p, w: _warm_all(lambda k: list(p.map(PW.warm_task, range(k))), w),
        close=lambda p: p.shutdown(wait=True),
        first=lambda p: p.submit(noop, 7).result(),
        version=platform.python_version())
    try:
        import joblib
    except ImportError as exc:
        libs["loky"] = Library("loky", "joblib.Parallel(backend='loky')",
                               why_not=f"joblib not importable ({exc})")
    else:
        libs["loky"] = Library(
            "loky", "joblib.Parallel(backend='loky')",
            open=_loky_open,
            warm=lambda p, w: _warm_all(lambda k: _loky_map(p, PW.warm_task, range(k)), w),
            close=_loky_close,
            first=lambda p: _loky_map(p, noop, [7])[0],
            version=_dist_version("joblib", joblib))
    try:
        import mpire
        from mpire import WorkerPool
    except ImportError as exc:
        libs["mpire"] = Library("mpire", "MPIRE (fork)",
                                why_not=f"mpire not importable ({exc})")
    else:
        libs["mpire"] = Library(
            "mpire", "MPIRE (fork)",
            # keep_alive: MPIRE's default stops the workers after every map call.
            open=lambda w: WorkerPool(n_jobs=w, start_method="fork", keep_alive=True),
            warm=lambda p, w: _warm_all(
                lambda k: p.map(PW.warm_task, range(k), chunk_size=1), w),
            close=lambda p: p.stop_and_join(),
            first=lambda p: p.apply_async(noop, (7,)).get(),
            version=_dist_version("mpire", mpire))
    gilfree, why = _import_gilfree()
    for key, kwargs in (("gilfree-proc", {}), ("gilfree-proc-fork", {"start_method": "fork"})):
        spelled = ", ".join(["W", "backend='processes'"]
                            + [f"{k}={v!r}" for k, v in kwargs.items()])
        title = f"gilfree.Pool({spelled})"
        if gilfree is None:
            libs[key] = Library(key, title, why_not=why)
            continue
        probe_why = _probe_gilfree_processes(gilfree, workers, kwargs, case_timeout)
        if probe_why:
            libs[key] = Library(key, title, why_not=probe_why)
            continue
        libs[key] = Library(
            key, title,
            open=functools.partial(_gilfree_open, gilfree, kwargs),
            warm=lambda p, w: _warm_all(lambda k: p.map(PW.warm_task, range(k), chunksize=1), w),
            close=lambda p: (p.close(), p.join()),
            first=lambda p: p.apply_async(noop, (7,)).get(),
            version=_dist_version("gilfree", gilfree))
    return libs


def _gilfree_open(gilfree: Any, kwargs: dict[str, Any], workers: int) -> Any:
    return gilfree.Pool(workers, backend="processes", **kwargs)


def _probe_gilfree_processes(gilfree: Any, workers: int, kwargs: dict[str, Any],
                             case_timeout: float) -> str:
    """"" if a gilfree process pool can be made and closed here, else why not."""
    spelled = ", ".join([str(workers), "backend='processes'"]
                        + [f"{k}={v!r}" for k, v in kwargs.items()])
    WATCHDOG.arm(case_timeout, f"probing gilfree.Pool({spelled})")
    try:
        pool = _gilfree_open(gilfree, kwargs, workers)
        pool.close()
        pool.join()
    except Exception as exc:
        return f"gilfree.Pool({spelled}) failed ({type(exc).__name__}: {exc})"
    finally:
        WATCHDOG.disarm()
    return ""


# ---------------------------------------------------------------------------------------
# Cases and workloads
# ---------------------------------------------------------------------------------------


@dataclass
class Case:
    """One row: one timed call, ``fn(pool, n)``, processing ``n`` items."""

    label: str
    library: str
    n: int
    fn: Callable[[Any, int], Any]
    baseline: bool = False  # always runs (whatever --only says); its result is the reference
    # ("ratio>=", x): per-item speed vs the baseline at least x; ("us<=", x): at most x us/item;
    # ("ratio>=", x, ref): against the row tagged ref, or the fastest peer row if ref is "peer"
    target: tuple[Any, ...] | None = None
    uses_pool: bool = True  # False: fn makes its own pool inside the timed region
    tag: str = ""  # names this row for targets and extra ratio columns
    peer: bool = False  # one of the peers among which a workload's best peer is chosen
    opener: Callable[[int], Any] | None = None  # makes the pool instead of its library's open
    stretch: float | None = None  # a further goal shown beside the target (not judged)
    times: list[float] = field(default_factory=list)
    skipped: str = ""
    error: str = ""

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


@dataclass
class Workload:
    name: str
    title: str
    call: str  # what one timed call does, for the table's heading
    unit: str  # "items/s", "tasks/s", "us/task" or "ms"
    versus: str  # the baseline row, as the ratio column names it
    cases: list[Case]
    reference: Callable[[int], Any] | None = None  # expected result for n items
    prepare: Callable[[], Any] | None = None
    cleanup: Callable[[], Any] | None = None  # runs after the workload (frees its inputs)
    group: str = "threads"  # or "processes"
    best_peer: bool = False  # the ratio column divides by the fastest peer row
    also_vs: str = ""  # tag of a row that gets a second ratio column (best runs)
    bytes_per_item: int = 0  # for the "GB/s" unit

    def baseline(self) -> Case | None:
        if self.best_peer:
            return self.ref("peer")
        return next((c for c in self.cases if c.baseline and c.times), None)

    def ref(self, tag: str) -> Case | None:
        """The row tagged ``tag`` (with times), or the fastest peer row if ``tag`` is "peer"."""
        if tag == "peer":
            peers = [c for c in self.cases if c.peer and c.times and not c.error]
            return min(peers, key=lambda c: c.best / c.n, default=None)
        return next((c for c in self.cases if c.tag == tag and c.times), None)

    def versus_name(self) -> str:
        base = self.baseline()
        if self.best_peer and base is not None:
            return f"{self.versus} ({base.library})"
        return self.versus


# Items per timed call.  Slow peers get fewer items (their rate, not their total time,
# is what the tables compare); every row shows its own N.
SIZES = {
    #                  full      --quick
    "tiny":          (1_000_000, 200_000),
    "tiny_slow":     (100_000, 10_000),      # ThreadPoolExecutor.map, MPIRE: ~6-20 us/item
    "overhead_fast": (200_000, 50_000),
    "overhead":      (50_000, 10_000),
    "overhead_slow": (5_000, 1_000),         # MPIRE with chunk_size=1: ~150 us/task
    "apply":         (20_000, 5_000),
    "apply_slow":    (5_000, 1_000),
    "sha256":        (64, 16),
    "zlib":          (8, 4),
    "matmul":        (200, 50),
    # the process group
    "p-tiny":          (1_000_000, 200_000),
    "p-tiny_slow":     (100_000, 20_000),    # loky, MPIRE: ~3-6 us/item
    "p-overhead_fast": (50_000, 10_000),     # serial call cost, gilfree (target 4 us)
    "p-overhead":      (20_000, 5_000),      # mp.Pool with chunksize=1: ~20-30 us/task
    "p-overhead_slow": (2_000, 500),         # PPE, loky, MPIRE with chunks of 1: ~110-170 us
    "p-apply":         (20_000, 5_000),
    "p-apply_slow":    (5_000, 1_000),       # PPE submit, MPIRE apply_async: ~110 us/task
    "p-cpu":           (200, 40),
    "p-send":          (50, 12),             # 16 MiB arrays, all built up front (800 MB)
    "p-recv":          (50, 12),
}


def _tasks_fn(task: Callable[[int], Any]) -> dict[str, Callable[[Any, int], Any]]:
    """The map call of each library over ``task`` with the library's default chunking."""
    return {
        "serial": lambda _, n: [task(i) for i in range(n)],
        "gilfree": lambda p, n: p.map(task, range(n)),
        "threadpool": lambda p, n: p.map(task, range(n)),
        "tpe": lambda p, n: list(p.map(task, range(n))),
        "mpire": lambda p, n: p.map(task, range(n)),
    }


def _raw_threads(task: Callable[[int], Any], workers: int) -> Callable[[Any, int], Any]:
    """W plain threads, item i on thread i % W: the ceiling for any thread pool."""
    def run(_: Any, n: int) -> list[Any]:
        out: list[Any] = [None] * n

        def part(k: int) -> None:
            for i in range(k, n, workers):
                out[i] = task(i)

        threads = [threading.Thread(target=part, args=(k,)) for k in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return out
    return run


def _submit_all(p: Any, n: int) -> list[Any]:
    futures = [p.submit(noop) for _ in range(n)]
    return [f.result() for f in futures]


def _apply_all(p: Any, n: int) -> list[Any]:
    pending = [p.apply_async(noop) for _ in range(n)]
    return [r.get() for r in pending]


def _lifecycle(lib: Library, workers: int) -> Callable[[Any, int], Any]:
    def run(_: Any, n: int) -> None:
        for _ in range(n):
            pool = lib.open(workers)
            lib.warm(pool, workers)
            lib.close(pool)
    return run


def make_workloads(quick: bool, workers: int, libs: dict[str, Library]) -> list[Workload]:
    size = {key: value[1 if quick else 0] for key, value in SIZES.items()}
    gilfree_mod: Any = sys.modules.get("gilfree")
    out: list[Workload] = []

    n = size["tiny"]
    out.append(Workload(
        "tiny", "(1) Many tiny tasks", "map(inc, range(N)), def inc(x): return x + 1",
        "items/s", "serial", reference=lambda n: list(range(1, n + 1)), cases=[
            Case("serial [inc(x) for x in range(N)]", "serial", n,
                 lambda _, n: W.serial_inc(n), baseline=True),
            Case("serial list(map(inc, range(N)))", "serial", n,
                 lambda _, n: list(map(inc, range(n)))),
            Case("gilfree Pool.map(inc, r)  (default)", "gilfree", n,
                 lambda p, n: p.map(inc, range(n)), target=("ratio>=", 0.95)),
            Case("gilfree Pool.map(inc, r, chunksize=None)", "gilfree", n,
                 lambda p, n: p.map(inc, range(n), chunksize=None), target=("ratio>=", 0.95)),
            Case("gilfree list(Pool.imap(inc, r))", "gilfree", n,
                 lambda p, n: list(p.imap(inc, range(n)))),
            Case("gilfree.map(inc, r)  (one-shot pool, timed)", "gilfree", n,
                 lambda _, n: gilfree_mod.map(inc, range(n), workers=workers),
                 uses_pool=False),
            Case("ThreadPool.map(inc, r)  (default)", "threadpool", n,
                 lambda p, n: p.map(inc, range(n))),
            Case("ThreadPoolExecutor.map(inc, r)", "tpe", size["tiny_slow"],
                 lambda p, n: list(p.map(inc, range(n)))),
            Case("mpire map(inc, r)  (default)", "mpire", size["tiny_slow"],
                 lambda p, n: p.map(inc, range(n))),
        ]))

    out.append(Workload(
        "overhead", "(2) Per-task overhead", "map(noop, range(N), chunksize=1)",
        "us/task", "ThreadPool", reference=lambda n: list(range(n)), cases=[
            Case("serial [noop(x) for x in range(N)]  (call cost)", "serial",
                 size["overhead_fast"], lambda _, n: [noop(x) for x in range(n)]),
            Case("gilfree Pool.map(noop, r, chunksize=1)", "gilfree", size["overhead_fast"],
                 lambda p, n: p.map(noop, range(n), chunksize=1), target=("us<=", 1.0)),
            Case("ThreadPool.map(noop, r, chunksize=1)", "threadpool", size["overhead"],
                 lambda p, n: p.map(noop, range(n), chunksize=1), baseline=True),
            Case("ThreadPoolExecutor.map(noop, r)", "tpe", size["overhead"],
                 lambda p, n: list(p.map(noop, range(n)))),
            Case("mpire map(noop, r, chunk_size=1)", "mpire", size["overhead_slow"],
                 lambda p, n: p.map(noop, range(n), chunk_size=1)),
        ]))

    n = size["apply"]
    out.append(Workload(
        "apply", "(3) Individual async calls",
        "N x apply_async(noop) / submit(noop), then .get() / .result() on each",
        "tasks/s", "TPE submit", reference=lambda n: [None] * n, cases=[
            Case("ThreadPoolExecutor submit()+result()", "tpe", n, _submit_all,
                 baseline=True),
            Case("gilfree apply_async()+get()", "gilfree", n, _apply_all,
                 target=("ratio>=", 10.0)),
            Case("gilfree submit()+result()  (cf.Future)", "gilfree", n, _submit_all,
                 target=("ratio>=", 3.0)),
            Case("ThreadPool apply_async()+get()", "threadpool", n, _apply_all),
            Case("mpire apply_async()+get()", "mpire", size["apply_slow"], _apply_all),
        ]))

    gil = [
        ("sha256", "(4a) GIL-releasing: sha256", "sha256 of an 8 MB buffer per item",
         W.sha_task),
        ("zlib", "(4b) GIL-releasing: zlib", "zlib.compress(4 MB of text, 6) per item",
         W.zlib_task),
    ]
    if W.numpy is not None:
        gil.append(("matmul", "(4c) GIL-releasing: numpy matmul",
                    "400x400 float64 matmul per item, BLAS threads = 1", W.matmul_task))
    for name, title, call, task in gil:
        fns = _tasks_fn(task)
        n = size[name]
        out.append(Workload(
            name, title, call + f"; map(task, range(N)), {workers} workers", "items/s",
            "serial", prepare=functools.partial(W.prepare, name), cases=[
                Case("serial [task(i) for i in range(N)]", "serial", n, fns["serial"],
                     baseline=True),
                Case(f"{workers} threading.Thread, static split (ceiling)", "raw", n,
                     _raw_threads(task, workers)),
                Case("gilfree Pool.map(task, r)", "gilfree", n, fns["gilfree"],
                     target=("ratio>=", 1.8)),
                Case("ThreadPool.map(task, r)", "threadpool", n, fns["threadpool"]),
                Case("ThreadPoolExecutor.map(task, r)", "tpe", n, fns["tpe"]),
                Case("mpire map(task, r)", "mpire", n, fns["mpire"]),
            ]))

    out.append(Workload(
        "startup", "(5) Pool start-up and shutdown",
        "create pool, map(noop, range(4*W), chunksize=1), close + join (all timed)",
        "ms", "ThreadPool", cases=[
            Case(f"{lib.title}", key, 1, _lifecycle(lib, workers), uses_pool=False,
                 baseline=(key == "threadpool"))
            for key, lib in libs.items() if key not in ("serial", "raw")
        ]))
    return out


# --- the process group ----------------------------------------------------------------


@dataclass
class Timed:
    """What a case function returns when it times only part of itself (p-startup: the
    pool's shutdown follows the first result, outside the timed part)."""

    seconds: float
    value: Any


def _mp_chunksize(n: int, workers: int) -> int:
    """multiprocessing.Pool.map's default chunk size: ceil(n / (4 * workers)), at least 1."""
    chunksize, extra = divmod(n, 4 * workers)
    return max(1, chunksize + (1 if extra else 0))


def _pmap_fns(task: Callable[[Any], Any], items: Callable[[int], Any],
              workers: int) -> dict[str, Callable[[Any, int], Any]]:
    """Each process library's map of ``task`` over ``items(n)``, with its own default
    chunking, except ProcessPoolExecutor, whose default (1) would be a different workload:
    it gets multiprocessing.Pool's default chunk size."""
    return {
        "serial": lambda _, n: [task(x) for x in items(n)],
        "mp-fork": lambda p, n: p.map(task, items(n)),
        "mp-forkserver": lambda p, n: p.map(task, items(n)),
        "ppe": lambda p, n: list(p.map(task, items(n), chunksize=_mp_chunksize(n, workers))),
        "loky": lambda p, n: _loky_map(p, task, items(n)),  # auto batching
        "mpire": lambda p, n: p.map(task, items(n)),
        "gilfree-proc": lambda p, n: p.map(task, items(n)),
    }


PEER_LABELS = {
    "mp-fork": "mp.Pool(fork)",
    "mp-forkserver": "mp.Pool(forkserver)",
    "ppe": "ProcessPoolExecutor",
    "loky": "loky Parallel",
    "mpire": "mpire (fork)",
    "gilfree-proc": "gilfree Pool(processes)",
}


def _peer_map_cases(fns: dict[str, Callable[[Any, int], Any]], what: str, n: int,
                    slow_n: int | None = None,
                    wrap: Callable[[Any], Any] | None = None,
                    notes: dict[str, str] | None = None) -> list[Case]:
    """One row per process peer (not gilfree) mapping with its default chunking."""
    notes = {"ppe": "  (chunksize as mp.Pool)", "loky": "  (auto batching)",
             "mpire": "  (default chunks)", "mp-fork": "  (default chunks)",
             "mp-forkserver": "  (default chunks)", **(notes or {})}
    out = []
    for key in ("mp-fork", "mp-forkserver", "ppe", "loky", "mpire"):
        fn = fns[key]
        if wrap is not None:
            fn = (lambda f: lambda p, m: wrap(f(p, m)))(fn)
        rows = slow_n if slow_n is not None and key in ("loky", "mpire") else n
        out.append(Case(f"{PEER_LABELS[key]} {what}{notes[key]}", key, rows, fn, peer=True))
    return out


def _touch(results: list[Any]) -> list[float]:
    """p-recv's caller side: read one element of every array received."""
    return [float(r[-1]) for r in results]


def _first_result(lib: Library, workers: int) -> Callable[[Any, int], Timed]:
    """p-startup: time from creating the pool to its first result; close it untimed."""
    def run(_: Any, n: int) -> Timed:
        start = time.perf_counter()
        pool = lib.open(workers)
        try:
            value = lib.first(pool)
            elapsed = time.perf_counter() - start
        finally:
            lib.close(pool)
        return Timed(elapsed, value)
    return run


def _whole_life(lib: Library, workers: int) -> Callable[[Any, int], Any]:
    """p-startup: create the pool, first result, close and join, all timed."""
    def run(_: Any, n: int) -> Any:
        pool = lib.open(workers)
        try:
            return lib.first(pool)
        finally:
            lib.close(pool)
    return run


PROCESS_WORKLOAD_NAMES = ("p-tiny", "p-overhead", "p-apply", "p-cpu", "p-send", "p-recv",
                          "p-startup")


def make_process_workloads(quick: bool, workers: int,
                           libs: dict[str, Library]) -> list[Workload]:
    size = {key: value[1 if quick else 0] for key, value in SIZES.items()}
    out: list[Workload] = []
    gilfree_title = "gilfree Pool(processes)"

    n = size["p-tiny"]
    fns = _pmap_fns(inc, range, workers)
    out.append(Workload(
        "p-tiny", "(P1) Many tiny tasks, processes",
        "map(inc, range(N)), def inc(x): return x + 1, each library's default chunking",
        "items/s", "best peer", group="processes", best_peer=True, also_vs="serial",
        reference=lambda n: list(range(1, n + 1)), cases=[
            Case("serial [inc(x) for x in range(N)]", "serial", n,
                 lambda _, n: W.serial_inc(n), baseline=True, tag="serial"),
            *_peer_map_cases(fns, "map(inc, r)", n, size["p-tiny_slow"]),
            Case(f"{gilfree_title}.map(inc, r)  (default)", "gilfree-proc", n,
                 fns["gilfree-proc"], target=("ratio>=", 1.5, "peer"), stretch=2.0),
        ]))

    fast, mid, slow = size["p-overhead_fast"], size["p-overhead"], size["p-overhead_slow"]
    out.append(Workload(
        "p-overhead", "(P2) Per-task overhead, processes",
        "map(noop, range(N), chunksize=1) (PPE: chunksize=1; loky: batch_size=1; "
        "mpire: chunk_size=1)",
        "us/task", "best peer", group="processes", best_peer=True,
        reference=lambda n: list(range(n)), cases=[
            Case("serial [noop(x) for x in range(N)]  (call cost)", "serial", fast,
                 lambda _, n: [noop(x) for x in range(n)]),
            Case("mp.Pool(fork).map(noop, r, chunksize=1)", "mp-fork", mid,
                 lambda p, n: p.map(noop, range(n), chunksize=1), peer=True),
            Case("mp.Pool(forkserver).map(noop, r, chunksize=1)", "mp-forkserver", mid,
                 lambda p, n: p.map(noop, range(n), chunksize=1), peer=True),
            Case("ProcessPoolExecutor.map(noop, r, chunksize=1)", "ppe", slow,
                 lambda p, n: list(p.map(noop, range(n), chunksize=1)), peer=True),
            Case("loky Parallel(batch_size=1)(delayed(noop)(x) ...)", "loky", slow,
                 lambda p, n: _loky_map(p, noop, range(n)), peer=True,
                 opener=lambda w: _loky_open(w, batch_size=1)),
            Case("mpire map(noop, r, chunk_size=1)", "mpire", slow,
                 lambda p, n: p.map(noop, range(n), chunk_size=1), peer=True),
            Case(f"{gilfree_title}.map(noop, r, chunksize=1)", "gilfree-proc", fast,
                 lambda p, n: p.map(noop, range(n), chunksize=1), target=("us<=", 4.0)),
        ]))

    n, slow = size["p-apply"], size["p-apply_slow"]
    out.append(Workload(
        "p-apply", "(P3) Individual async calls, processes",
        "N x apply_async(noop) / submit(noop), then .get() / .result() on each",
        "tasks/s", "mp.Pool(fork)", group="processes", reference=lambda n: [None] * n,
        cases=[
            Case("mp.Pool(fork) apply_async()+get()", "mp-fork", n, _apply_all,
                 baseline=True, tag="mp-fork"),
            Case("mp.Pool(forkserver) apply_async()+get()", "mp-forkserver", n, _apply_all),
            Case("ProcessPoolExecutor submit()+result()", "ppe", slow, _submit_all,
                 tag="ppe-submit"),
            Case("loky Parallel", "loky", slow, lambda p, n: None,
                 skipped="joblib.Parallel has no apply_async or submit"),
            Case("mpire apply_async()+get()", "mpire", slow, _apply_all),
            Case(f"{gilfree_title} apply_async()+get()", "gilfree-proc", n, _apply_all,
                 target=("ratio>=", 5.0, "mp-fork")),
            Case(f"{gilfree_title} submit()+result()  (cf.Future)", "gilfree-proc", n,
                 _submit_all, target=("ratio>=", 10.0, "ppe-submit")),
        ]))

    iters = PW.calibrate_spin()
    task = functools.partial(PW.spin, iters)
    n = size["p-cpu"]
    fns = _pmap_fns(task, range, workers)
    out.append(Workload(
        "p-cpu", "(P4) Pure-Python CPU work, processes",
        f"task(i) = {iters:,} steps of a pure-Python loop (~{PW.CPU_TASK_S * 1e3:g} ms, "
        f"calibrated once in the parent; the same count everywhere); map(task, range(N)), "
        f"{workers} workers, default chunking",
        "tasks/s", "serial", group="processes", cases=[
            Case("serial [task(i) for i in range(N)]", "serial", n, fns["serial"],
                 baseline=True),
            *_peer_map_cases(fns, "map(task, r)", n),
            Case(f"{gilfree_title}.map(task, r)", "gilfree-proc", n, fns["gilfree-proc"],
                 target=("ratio>=", 1.95)),
        ]))

    mib = PW.ARRAY_BYTES >> 20
    if PW.numpy is not None:
        n = size["p-send"]
        fns = _pmap_fns(PW.send_task, PW.send_arrays, workers)
        out.append(Workload(
            "p-send", "(P5) Large arguments, processes",
            f"map(task, arrays): N distinct {mib} MiB float64 arrays (array i is full of i), "
            "task(a) = a[0] + a[-1]; GB = 1e9 bytes of array data sent",
            "GB/s", "best peer", group="processes", best_peer=True,
            bytes_per_item=PW.ARRAY_BYTES, reference=lambda n: [2.0 * i for i in range(n)],
            prepare=functools.partial(PW.prepare_send, n), cleanup=PW.release_send, cases=[
                Case("serial: copy each array once  (memcpy rate, not a peer)", "serial", n,
                     lambda _, n: [PW.send_task(a.copy()) for a in PW.send_arrays(n)]),
                *_peer_map_cases(fns, "map(task, arrays)", n),
                Case(f"{gilfree_title}.map(task, arrays)", "gilfree-proc", n,
                     fns["gilfree-proc"], target=("ratio>=", 3.0, "peer")),
            ]))

        n = size["p-recv"]
        fns = _pmap_fns(PW.recv_task, range, workers)
        # MPIRE's map concatenates array results into one array unless told not to.
        fns["mpire"] = lambda p, n: p.map(PW.recv_task, range(n), concatenate_numpy_output=False)
        out.append(Workload(
            "p-recv", "(P6) Large results, processes",
            f"map(task, range(N)), task(i) = np.full({PW.ARRAY_ELEMENTS:,}, i, float64) "
            f"({mib} MiB); the caller reads r[-1] of each result; GB = 1e9 bytes received",
            "GB/s", "best peer", group="processes", best_peer=True,
            bytes_per_item=PW.ARRAY_BYTES, reference=lambda n: [float(i) for i in range(n)],
            cases=[
                Case("serial: make each array in the caller  (no transfer, not a peer)",
                     "serial", n, lambda _, n: _touch(PW.recv_task(i) for i in range(n))),
                *_peer_map_cases(fns, "map(task, r)", n, wrap=_touch, notes={
                    "mpire": "  (concatenate_numpy_output=False)"}),
                Case(f"{gilfree_title}.map(task, r)", "gilfree-proc", n,
                     lambda p, n: _touch(p.map(PW.recv_task, range(n))),
                     target=("ratio>=", 3.0, "peer")),
            ]))

    order = ("mp-fork", "gilfree-proc-fork", "mp-forkserver", "gilfree-proc", "ppe", "loky",
             "mpire")
    goals = {"gilfree-proc-fork": ("ratio>=", 1.0, "mp-fork"),
             "gilfree-proc": ("ratio>=", 1.0, "mp-forkserver")}
    out.append(Workload(
        "p-startup", "(P7) Pool start-up, processes",
        "create the pool, apply_async(noop, (7,)).get() (PPE: submit; loky: a 1-item "
        "Parallel call): time to the first result; then close + join, untimed, or timed "
        "in the whole-life rows",
        "ms", "mp.Pool(fork)", group="processes", cases=[
            *[Case(f"{libs[key].title}: first result", key, 1,
                   _first_result(libs[key], workers), uses_pool=False, tag=key,
                   baseline=(key == "mp-fork"), target=goals.get(key))
              for key in order],
            *[Case(f"{libs[key].title}: whole life", key, 1,
                   _whole_life(libs[key], workers), uses_pool=False)
              for key in order],
        ]))
    return out


# ---------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------


def _same(got: Any, want: Any) -> bool:
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return all(_same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(got, float) and isinstance(want, float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    return bool(got == want)


class Watchdog:
    """Ends the run when one call hangs: every thread's traceback, then this process's
    descendants (pool workers, fork servers) are killed, then the run exits with status 3.

    For process pools a Python thread does that (``arm``/``disarm`` around each call), so
    that hung worker processes neither outlive the run nor keep its output pipe open.  It
    needs the GIL; a call that hangs while holding it is ended by faulthandler's own
    watchdog, 30 s later, which cannot kill the children.  Thread pools have no children:
    for them (``children=False``) faulthandler alone ends the run, at the timeout, and no
    extra Python thread exists while they are timed.
    """

    BACKSTOP_S = 30.0

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._what = ""
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, what: str, children: bool = True) -> None:
        if not children:
            faulthandler.dump_traceback_later(seconds, exit=True)
            return
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bench-watchdog",
                                                daemon=True)
                self._thread.start()
            self._deadline = time.monotonic() + seconds
            self._what = what
            self._cond.notify()
        faulthandler.dump_traceback_later(seconds + self.BACKSTOP_S, exit=True)

    def disarm(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        with self._cond:
            self._deadline = None
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                break
            what = self._what
        sys.stdout.flush()
        print(f"\n\nTIMEOUT: {what} did not finish within the case timeout "
              "(--case-timeout); tracebacks of every thread follow, then the run ends.",
              file=sys.stderr, flush=True)
        faulthandler.dump_traceback(all_threads=True)
        killed = _kill_descendants()
        print(f"killed {len(killed)} descendant process(es): {killed}", file=sys.stderr,
              flush=True)
        os._exit(3)


def _descendants(root: int) -> list[int]:
    """Process ids below ``root`` (Linux /proc), parents before their children."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [p.pid for p in multiprocessing.active_children() if p.pid is not None]
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            out.append(pid)
            todo.append(pid)
    return out


def _kill_descendants() -> list[int]:
    pids = _descendants(os.getpid())
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids


WATCHDOG = Watchdog()
# Python 3.12+ warns when a process with threads forks.  The only thread of the harness's
# own that exists during the process group is the watchdog, idle in Condition.wait and
# holding no lock a child could need; the warning would only clutter the tables.
warnings.filterwarnings("ignore", message=r"This process \(pid=\d+\) is multi-threaded",
                        category=DeprecationWarning)


def measure_once(case: Case, lib: Library, workers: int, case_timeout: float,
                 children: bool = False) -> tuple[float, Any]:
    """Time ``case.fn`` once on a fresh, warmed pool; return (seconds, result).

    A hang ends the run loudly (``Watchdog``); ``children``: kill the run's child
    processes then too (process pools)."""
    WATCHDOG.arm(case_timeout, f"{case.label!r} (N={case.n:,})", children)
    try:
        opener = case.opener or lib.open
        pool = opener(workers) if case.uses_pool else None
        try:
            if pool is not None:
                lib.warm(pool, workers)
            gc.collect()
            start = time.perf_counter()
            result = case.fn(pool, case.n)
            elapsed = time.perf_counter() - start
        finally:
            if pool is not None:
                lib.close(pool)
    finally:
        WATCHDOG.disarm()
    if isinstance(result, Timed):  # the case timed only part of itself
        elapsed, result = result.seconds, result.value
    return elapsed, result


def run_workload(wl: Workload, libs: dict[str, Library], repeat: int, workers: int,
                 case_timeout: float) -> None:
    for case in wl.cases:
        if libs[case.library].why_not:
            case.skipped = libs[case.library].why_not
    active = [c for c in wl.cases if not c.skipped]
    try:
        if active and wl.prepare is not None:
            wl.prepare()
        _run_rounds(wl, active, libs, repeat, workers, case_timeout)
    finally:
        if wl.cleanup is not None:
            wl.cleanup()
        gc.collect()


def _run_rounds(wl: Workload, active: list[Case], libs: dict[str, Library], repeat: int,
                workers: int, case_timeout: float) -> None:
    # Warm-up round: baseline first; every result is checked against the reference.
    references: dict[int, Any] = {}
    for case in sorted(active, key=lambda c: not c.baseline):
        try:
            _, result = measure_once(case, libs[case.library], workers, case_timeout,
                                     children=wl.group == "processes")
        except Exception as exc:
            case.error = f"{type(exc).__name__}: {exc}"
            continue
        if case.baseline and wl.reference is None:
            references[case.n] = result
        if wl.reference is not None or case.n in references:
            if case.n not in references:
                references[case.n] = wl.reference(case.n)  # type: ignore[misc]
            if not _same(result, references[case.n]):
                case.error = "wrong result (differs from the serial/expected one)"
        del result
    active = [c for c in active if not c.error]

    # Timed rounds: every case once per round, the order rotated each round.
    for rnd in range(repeat):
        k = rnd % len(active) if active else 0
        for case in active[k:] + active[:k]:
            if case.error:
                continue
            try:
                elapsed, result = measure_once(case, libs[case.library], workers,
                                               case_timeout, children=wl.group == "processes")
            except Exception as exc:
                case.error = f"{type(exc).__name__}: {exc}"
                continue
            del result  # p-recv's results are 800 MB: not kept alive into the next row
            case.times.append(elapsed)
        print(".", end="", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} us"


def _fmt_rate(per_second: float) -> str:
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if per_second >= scale:
            return f"{per_second / scale:.2f} {suffix}"
    return f"{per_second:.1f}"


def _rate(wl: Workload, case: Case, seconds: float) -> str:
    per_item = seconds / case.n
    if wl.unit == "us/task":
        return f"{per_item * 1e6:.2f}"
    if wl.unit == "ms":
        return f"{per_item * 1e3:.2f}"
    if wl.unit == "GB/s":
        return f"{wl.bytes_per_item / per_item / 1e9:.2f}"
    return _fmt_rate(1 / per_item)


def _ratio(case: Case, base: Case | None, pick: Callable[[Case], float]) -> float | None:
    if base is None or not case.times:
        return None
    return (pick(base) / base.n) / (pick(case) / case.n)


def _fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def _target_ref(case: Case, wl: Workload) -> Case | None:
    """The row a case's ratio target is measured against."""
    if case.target is not None and len(case.target) > 2:
        return wl.ref(case.target[2])
    return wl.baseline()


def _ref_name(case: Case, wl: Workload) -> str:
    """How the summary names the row of ``_target_ref``."""
    if case.target is None or len(case.target) <= 2 or case.target[2] == "peer":
        return wl.versus_name()
    ref = wl.ref(case.target[2])
    return ref.label if ref is not None else case.target[2]


def _target(case: Case, wl: Workload) -> tuple[str, bool | None]:
    """(description, met?) of a case's target; met is None when not measurable."""
    if case.target is None:
        return "", None
    kind, value = case.target[:2]
    if kind == "ratio>=":
        text = f">= {value:g}x"
        if case.stretch is not None:
            text += f" (stretch {case.stretch:g}x)"
        ratio = _ratio(case, _target_ref(case, wl), lambda c: c.best)
        return text, None if ratio is None else ratio >= value
    text = f"<= {value:g} us"
    return text, None if not case.times else case.best / case.n * 1e6 <= value


def table_rows(wl: Workload) -> tuple[list[str], list[list[str]]]:
    base = wl.baseline()
    also = wl.ref(wl.also_vs) if wl.also_vs else None
    header = ["case", "N", "best", "median", wl.unit, f"vs {wl.versus_name()}", "(median)"]
    if wl.also_vs:
        header.append(f"vs {wl.also_vs}")
    header.append("target")
    rows = []
    for case in wl.cases:
        if case.skipped or case.error or not case.times:
            why = (f"skipped: {case.skipped}" if case.skipped
                   else f"ERROR: {case.error or 'no data'}")
            rows.append([case.label, f"{case.n:,}", why])  # a short row: a note, no numbers
            continue
        best_ratio = _ratio(case, base, lambda c: c.best)
        median_ratio = _ratio(case, base, lambda c: c.median)
        text, met = _target(case, wl)
        ref = _target_ref(case, wl)
        if case is base or (base is None and case.baseline):
            target = "baseline"
        elif met is None:
            target = text
        else:
            target = f"{text} {'met' if met else 'MISSED'}"
            if ref is not base and ref is not None:  # measured against another row
                ratio = _ratio(case, ref, lambda c: c.best)
                target = f"{_fmt_ratio(ratio)} vs {ref.tag or ref.label}: {target}"
        row = [
            case.label, f"{case.n:,}", _fmt_time(case.best), _fmt_time(case.median),
            _rate(wl, case, case.best),
            _fmt_ratio(best_ratio),
            _fmt_ratio(median_ratio),
        ]
        if wl.also_vs:
            row.append(_fmt_ratio(_ratio(case, also, lambda c: c.best)))
        rows.append(row + [target])
    return header, rows


def format_text_table(header: list[str], rows: list[list[str]]) -> str:
    """Aligned columns; a row shorter than the header ends in a note spanning the rest."""
    widths = [len(h) for h in header]
    for row in rows:
        cells = row if len(row) == len(header) else row[:-1]
        widths[:len(cells)] = [max(w, len(c)) for w, c in zip(widths, cells, strict=False)]
    lines = []
    for row in [header] + rows:
        if len(row) < len(header):
            cells = [f"{row[0]:<{widths[0]}}"]
            cells += [f"{c:>{w}}" for c, w in zip(row[1:-1], widths[1:], strict=False)]
            lines.append("  " + "  ".join(cells + [row[-1]]))
            continue
        cells = [f"{row[0]:<{widths[0]}}"]
        cells += [f"{cell:>{w}}" for cell, w in zip(row[1:-1], widths[1:-1], strict=True)]
        cells.append(f"{row[-1]:<{widths[-1]}}")
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def format_markdown_table(header: list[str], rows: list[list[str]],
                          right: set[int] | None = None) -> str:
    """A Markdown table; `right`: the columns aligned right (default: all but
    the first and the last)."""
    if right is None:
        right = set(range(1, len(header) - 1))
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if i in right else ":---" for i in range(len(header))) + "|"]
    for row in rows:
        row = row + [""] * (len(header) - len(row))
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(out)


def machine_info(args: argparse.Namespace, libs: dict[str, Library],
                 plibs: dict[str, Library], groups: list[str]) -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    gilfree: Any = sys.modules.get("gilfree")
    return {
        "command": "python " + shlex.join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "load_average": f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?",
        "cpu_model": model,
        "nproc": os.cpu_count(),
        "usable_cpus": usable,
        "gilfree_usable_cpus": gilfree.usable_cpus() if libs["gilfree"].version else None,
        "workers": args.workers,
        "repeat": args.repeat,
        "quick": args.quick,
        "groups": groups,
        "numpy": W.blas_info(),
        "libraries": {k: (lib.version or f"skipped: {lib.why_not}") for k, lib in libs.items()
                      if k not in ("serial", "raw")} if "threads" in groups else {},
        "process_libraries": {k: (f"{lib.title} {lib.version}" if not lib.why_not
                                  else f"skipped: {lib.why_not}")
                              for k, lib in plibs.items() if k != "serial"},
        "gilfree_path": getattr(gilfree, "__file__", None) if libs["gilfree"].version else None,
    }


HOW_TO_READ = """\
Each row times one call (one `map` over N items, or N `apply_async`/`submit` calls and
their results) on a pool of W worker threads (or, in the process group, W worker
processes) that was created, and warmed with a trivial call, before the timer started and
is shut down after it stopped; no other pool exists while a row is timed. Every row first
runs once as a warm-up whose result is checked against the serial or expected one; then
come R rounds, each running every row once, in an order rotated from round to round so
that machine noise hits all libraries alike. "best" is the fastest of the R runs,
"median" the middle one. The unit column is per item and computed from the best run. The
"vs" columns divide the baseline row's time per item by this row's (from the best runs,
then from the medians): above 1.00x is faster than the baseline, and every ratio comes
from this one run. Where the baseline is the "best peer", it is the peer row with the
fastest best run, named in the column's heading. Slow peers run fewer items (see N); per
item rates remain comparable. Targets are gilfree's goals and are judged on the best-run
ratio. Absolute numbers belong to this machine; only the ratios travel, and only roughly. The thread group's
`gilfree` rows use `gilfree.Pool(W)` with its default backend, "auto": each timed map is
the function's first on a fresh pool, so it includes the GIL probe, which runs the first
~15 ms of items (at least one) in the calling thread before the workers take the rest; on
an input of a few large items that is up to one item's time alone (the zlib row: 8 items
of ~135 ms). The next maps of the same function on that pool skip it."""


def print_header(info: dict[str, Any], libs: dict[str, Library],
                 plibs: dict[str, Library]) -> None:
    print(f"gilfree benchmarks  {info['date']}")
    print(f"machine: nproc {info['nproc']} (usable {info['usable_cpus']}), "
          f"{info['cpu_model'] or 'cpu model unknown'}, {info['platform']}, "
          f"load average {info['load_average']}")
    if info["load_average"] != "?" and float(info["load_average"]) > 0.5:
        print("  -> other programs are using the CPUs: expect noisy timings")
    print(f"python:  {info['python']}  ({sys.executable})")
    print(f"numpy:   {info['numpy']}")
    print(f"run:     {info['workers']} workers, warm-up + {info['repeat']} rounds"
          f"{', --quick sizes' if info['quick'] else ''}, groups: "
          f"{', '.join(info['groups'])}; command: {info['command']}")
    if "threads" in info["groups"]:
        for key, lib in libs.items():
            if key in ("serial", "raw"):
                continue
            state = f"version {lib.version}" if not lib.why_not else f"SKIPPED: {lib.why_not}"
            print(f"  {lib.title:<40} {state}")
        if libs["gilfree"].why_not:
            print("  -> gilfree rows are skipped: build and install the package "
                  "(pip install .) to measure it.")
    if "processes" in info["groups"]:
        print("process group:")
        for key, lib in plibs.items():
            if key == "serial":
                continue
            state = f"version {lib.version}" if not lib.why_not else f"SKIPPED: {lib.why_not}"
            print(f"  {key:<18} {lib.title:<60} {state}")
    print()


def ctrlc_rows(results: dict[str, list[dict[str, Any]]], timeout_s: float,
               usable_timeout_s: float) -> tuple[list[str], list[list[str]]]:
    header = ["library", "runs", "best", "median", "pool usable after", "target"]
    titles = {"gilfree": "gilfree Pool.map", "threadpool": "ThreadPool.map",
              "tpe": "list(ThreadPoolExecutor.map)"}
    rows = []
    for lib, runs in results.items():
        if runs and "skipped" in runs[0]:
            rows.append([titles[lib], "0", f"skipped: {runs[0]['skipped']}"])
            continue
        lat = [r["latency_ms"] for r in runs if r["latency_ms"] is not None]
        errors = [r["error"] for r in runs if r["error"]]
        if not lat:
            text = f"ERROR: {errors[0]}" if errors else f"no response in {timeout_s:g} s"
            rows.append([titles[lib], str(len(runs)), text])
            continue
        usable = [r["usable_ms"] for r in runs if r["usable_ms"] is not None and r["usable_ok"]]
        if len(usable) == len(runs):
            usable_text = f"yes, {statistics.median(usable):.1f} ms after SIGINT"
        elif usable:
            usable_text = f"{len(usable)}/{len(runs)} runs"
        else:
            usable_text = f"no (map not done {usable_timeout_s:g} s later)"
        missing = len(runs) - len(lat)
        best = f"{min(lat):.2f} ms" + (f" ({missing} runs: no response)" if missing else "")
        target = ""
        if lib == "gilfree":
            target = "< 100 ms, usable " + ("met" if _ctrlc_met(runs) else "MISSED")
        rows.append([titles[lib], str(len(runs)), best, f"{statistics.median(lat):.2f} ms",
                     usable_text, target])
    return header, rows


def _ctrlc_met(runs: list[dict[str, Any]]) -> bool:
    """gilfree's Ctrl-C goal: every run interrupted within 100 ms, the pool usable after."""
    return all(r["latency_ms"] is not None and r["latency_ms"] < 100 and r["usable_ok"]
               for r in runs)


def run_ctrlc(libs: dict[str, Library], selected_libs: set[str], runs: int, workers: int,
              timeout_s: float, usable_timeout_s: float) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    for lib in ctrlc.LIBRARIES:
        if lib in selected_libs or lib == "threadpool":
            results[lib] = [{"skipped": libs[lib].why_not}] if libs[lib].why_not else []
    for _ in range(runs):  # interleaved: one run of each library per round
        for lib, out in results.items():
            if out and "skipped" in out[0]:
                continue
            out.append(ctrlc.measure(lib, workers, timeout_s, usable_timeout_s))
        print(".", end="", file=sys.stderr, flush=True)
    return results


def summary_lines(workloads: list[Workload], libs: dict[str, Library],
                  plibs: dict[str, Library], groups: list[str],
                  ctrl: dict[str, list[dict[str, Any]]] | None) -> list[str]:
    lines = []
    if "threads" in groups and libs["gilfree"].why_not:
        lines.append(f"gilfree was not measured: {libs['gilfree'].why_not}")
    if "processes" in groups:
        whys = {plibs[k].why_not for k in ("gilfree-proc", "gilfree-proc-fork")} - {""}
        lines += [f"gilfree (processes) was not measured: {why}" for why in sorted(whys)]
    for wl in workloads:
        for case in wl.cases:
            if case.target is None or case.skipped:
                continue
            text, met = _target(case, wl)
            if case.error or met is None:
                lines.append(f"[ERROR ] {wl.title}: {case.label}: {case.error or 'no data'}")
                continue
            if case.target[0] == "ratio>=":
                ratio = _ratio(case, _target_ref(case, wl), lambda c: c.best)
                got = f"{ratio:.2f}x vs {_ref_name(case, wl)}"
            else:
                got = f"{case.best / case.n * 1e6:.2f} us/task"
            lines.append(f"[{'met' if met else 'MISSED':<6}] {wl.title}: {case.label}: "
                         f"{got} (target {text})")
    if ctrl and ctrl.get("gilfree") and "skipped" not in ctrl["gilfree"][0]:
        runs = ctrl["gilfree"]
        shown = ", ".join("none" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}"
                          for r in runs)
        usable = sum(1 for r in runs if r["usable_ok"])
        lines.append(f"[{'met' if _ctrlc_met(runs) else 'MISSED':<6}] (6) Ctrl-C latency: "
                     f"{shown} ms, pool usable afterwards in {usable}/{len(runs)} runs "
                     "(target < 100 ms and usable)")
    return lines


def write_markdown(path: str, info: dict[str, Any], sections: list[tuple[str, str, str]],
                   summary: list[str]) -> None:
    out = ["# gilfree benchmarks", "",
           "Generated by `benchmarks/run.py` (see `benchmarks/README.md`); rerun it to refresh "
           "this page. Numbers from another machine are not comparable; ratios roughly are.", "",
           f"- Command: `{info['command']}`",
           f"- Date: {info['date']}",
           f"- Python: {info['python']}",
           f"- CPUs: {info['nproc']} (usable by this process: {info['usable_cpus']}); "
           f"{info['cpu_model'] or 'model unknown'}",
           f"- Platform: {info['platform']}; load average at start {info['load_average']}",
           f"- numpy: {info['numpy']}",
           f"- Workers: {info['workers']}; warm-up + {info['repeat']} rounds"
           f"{' (--quick sizes)' if info['quick'] else ''}",
           f"- Groups: {', '.join(info['groups'])}"]
    if info["libraries"]:
        out.append("- Libraries (threads): "
                   + "; ".join(f"{k} {v}" for k, v in info["libraries"].items()))
    if info["process_libraries"]:
        out.append("- Libraries (processes): "
                   + "; ".join(f"`{k}` {v}" for k, v in info["process_libraries"].items()))
    out += ["", "## How to read", "", HOW_TO_READ, ""]
    for title, call, table in sections:
        out += [f"## {title}", "", call, "", table, ""]
    if summary:
        out += ["## gilfree targets", ""] + [f"- {line}" for line in summary] + [""]
    out += kept_sections(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out))


def kept_sections(path: str) -> list[str]:
    """The lines of the sections of an existing page that other benchmark
    scripts wrote (auto.py, features.py, dask_bench.py, adapters.py): every
    "## " section whose title is not one of ours.  Ours are "How to read",
    "gilfree targets" and the workload sections, whose titles start with "("."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    kept: list[str] = []
    keep = False
    for line in lines:
        if line.startswith("## "):
            title = line[3:].strip()
            keep = not (title.startswith("(") or title in ("How to read", "gilfree targets"))
        if keep:
            kept.append(line)
    return kept + ([""] if kept and kept[-1] != "" else [])


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------

WORKLOAD_NAMES = ("tiny", "overhead", "apply", "sha256", "zlib", "matmul", "startup", "ctrlc")
LIBRARY_NAMES = ("serial", "raw", "gilfree", "threadpool", "tpe", "mpire")
GROUPS = {  # group: (its workloads, its libraries)
    "threads": (WORKLOAD_NAMES, LIBRARY_NAMES),
    "processes": (PROCESS_WORKLOAD_NAMES, PROCESS_LIBRARY_NAMES),
}
ALL_NAMES = tuple(dict.fromkeys(WORKLOAD_NAMES + PROCESS_WORKLOAD_NAMES + LIBRARY_NAMES
                                + PROCESS_LIBRARY_NAMES))
# --only gilfree also selects gilfree's process rows.
ALIASES = {"processes": {"gilfree": ("gilfree-proc", "gilfree-proc-fork")}}


def plan_groups(args: argparse.Namespace) -> list[tuple[str, set[str], set[str]]]:
    """(group, its selected workloads, its selected libraries) for each group to run.

    A group runs if --group includes it and --only, when it names workloads, names one of
    this group's, and, when it names libraries, names one of this group's."""
    only = set(args.only or ())
    all_workloads = set(WORKLOAD_NAMES + PROCESS_WORKLOAD_NAMES)
    named_workloads = only & all_workloads
    named_libs = only - all_workloads
    plan = []
    for group, (workloads, libraries) in GROUPS.items():
        if args.group not in ("all", group):
            continue
        libs = set(named_libs)
        for alias, keys in ALIASES.get(group, {}).items():
            if alias in libs:
                libs.update(keys)
        chosen_workloads = named_workloads & set(workloads)
        chosen_libs = libs & set(libraries)
        if named_workloads and not chosen_workloads:
            continue
        if named_libs and not chosen_libs:
            continue
        plan.append((group, chosen_workloads or set(workloads), chosen_libs or set(libraries)))
    return plan


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark gilfree against serial code and its peers in one run: thread "
                    "pools (ThreadPoolExecutor, ThreadPool, MPIRE threading) and process "
                    "pools (multiprocessing fork/forkserver, ProcessPoolExecutor, loky, "
                    "MPIRE fork); print absolute numbers and ratios.")
    parser.add_argument("--quick", action="store_true",
                        help="smaller inputs and 3 rounds: a smoke run (threads well under "
                             "30 s, processes a minute or two)")
    parser.add_argument("--group", choices=("threads", "processes", "all"), default="all",
                        help="which rows: the thread-pool group, the process-pool group (its "
                             "workload names start with p-), or both (default)")
    parser.add_argument("--repeat", type=int, default=None, metavar="R",
                        help="timed rounds after the warm-up (default 5, --quick 3)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help="run only these workloads and/or libraries: "
                             f"{', '.join(ALL_NAMES)} (baseline rows, and the rows that a "
                             "selected row's target is measured against, always run; "
                             "gilfree also selects gilfree-proc and gilfree-proc-fork)")
    parser.add_argument("--workers", type=int, default=2, metavar="W",
                        help="worker threads or processes per pool (default 2)")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement as JSON")
    parser.add_argument("--markdown", metavar="PATH",
                        help="also write a Markdown report (docs/benchmarks.md)")
    parser.add_argument("--case-timeout", type=float, default=None, metavar="S",
                        help="abort the run, dumping tracebacks and killing the run's child "
                             "processes, if one timed call (with its pool's start and "
                             "shutdown) takes longer (default 300 s, --quick 60 s)")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 5
    if args.case_timeout is None:
        args.case_timeout = 60.0 if args.quick else 300.0
    if args.repeat < 1 or args.workers < 1:
        parser.error("--repeat and --workers must be at least 1")
    unknown = sorted(set(args.only or ()) - set(ALL_NAMES))
    if unknown:
        parser.error(f"unknown --only name(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(ALL_NAMES)}")
    if not plan_groups(args):
        parser.error(f"--only {' '.join(args.only or ())} selects nothing in --group "
                     f"{args.group}")
    return args


def _baseline_label(wl: Workload) -> str | None:
    base = wl.baseline()
    if base is not None:
        return base.label
    return next((c.label for c in wl.cases if c.baseline), None)


def select_cases(wl: Workload, chosen_libs: set[str]) -> list[Case]:
    """The rows of the chosen libraries, the baseline rows, and every row that a chosen
    row's target is measured against (all peers, for a best-peer target)."""
    keep = {id(c) for c in wl.cases if c.baseline or c.library in chosen_libs}
    refs: set[str] = set()
    for case in wl.cases:
        if id(case) in keep and case.target is not None:
            if len(case.target) > 2:
                refs.add(case.target[2])
            elif wl.best_peer:
                refs.add("peer")
    return [c for c in wl.cases
            if id(c) in keep or (c.tag and c.tag in refs) or (c.peer and "peer" in refs)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_groups(args)
    groups = [group for group, _, _ in plan]

    libs = make_libraries()
    plibs = (make_process_libraries(args.workers, args.case_timeout)
             if "processes" in groups else {})
    info = machine_info(args, libs, plibs, groups)
    print_header(info, libs, plibs)

    sections: list[tuple[str, str, str]] = []
    all_workloads: list[Workload] = []
    ctrl = None
    for group, selected_workloads, selected_libs in plan:
        if group == "threads":
            group_libs = libs
            workloads = [wl for wl in make_workloads(args.quick, args.workers, libs)
                         if wl.name in selected_workloads]
            if "matmul" in selected_workloads and W.numpy is None:
                print("(4c) numpy matmul: skipped, numpy is not installed\n")
        else:
            group_libs = plibs
            # The thread group's inputs are freed, so that forked workers do not inherit them.
            for cached in (W.sha_buffer, W.text_buffer, W.matrix):
                cached.cache_clear()
            gc.collect()
            workloads = [wl for wl in make_process_workloads(args.quick, args.workers, plibs)
                         if wl.name in selected_workloads]
            numpy_rows = selected_workloads & {"p-send", "p-recv"}
            if numpy_rows and W.numpy is None:
                print(f"{', '.join(sorted(numpy_rows))}: skipped, numpy is not installed\n")
        all_workloads += workloads
        for wl in workloads:
            wl.cases = select_cases(wl, selected_libs)
            print(f"{wl.title}: {wl.call}", flush=True)
            print("  running", end="", file=sys.stderr, flush=True)
            run_workload(wl, group_libs, args.repeat, args.workers, args.case_timeout)
            print(file=sys.stderr)
            header, rows = table_rows(wl)
            print(format_text_table(header, rows), end="\n\n", flush=True)
            sections.append((wl.title, f"`{wl.call}` ({args.workers} workers)",
                             format_markdown_table(header, rows)))

        if group == "threads" and "ctrlc" in selected_workloads:
            timeout_s, usable_s = (3.0, 1.0) if args.quick else (5.0, 2.0)
            runs = 1 if args.quick else min(args.repeat, 3)
            call = ("SIGINT sent 0.3 s into map() of 10 ms sleeping tasks in a child process; "
                    "time until KeyboardInterrupt is caught, then whether a new map() works")
            print(f"(6) Ctrl-C latency: {call}", flush=True)
            print("  running", end="", file=sys.stderr, flush=True)
            ctrl = run_ctrlc(libs, selected_libs, runs, args.workers, timeout_s, usable_s)
            print(file=sys.stderr)
            header, rows = ctrlc_rows(ctrl, timeout_s, usable_s)
            print(format_text_table(header, rows), end="\n\n")
            sections.append(("(6) Ctrl-C latency", call, format_markdown_table(header, rows)))

    summary = summary_lines(all_workloads, libs, plibs, groups, ctrl)
    print("gilfree targets:")
    for line in summary:
        print(f"  {line}")
    print()
    print("How to read: " + " ".join(HOW_TO_READ.split()))

    if args.json:
        data = {"machine": info, "how_to_read": " ".join(HOW_TO_READ.split()),
                "workloads": [{
                    "name": wl.name, "title": wl.title, "group": wl.group, "call": wl.call,
                    "unit": wl.unit,
                    "baseline": _baseline_label(wl),
                    "cases": [{
                        "label": c.label, "library": c.library, "n": c.n,
                        "times_s": c.times, "best_s": c.best if c.times else None,
                        "median_s": c.median if c.times else None,
                        "ratio_best": _ratio(c, wl.baseline(), lambda x: x.best),
                        "ratio_median": _ratio(c, wl.baseline(), lambda x: x.median),
                        "target": c.target, "target_met": _target(c, wl)[1],
                        "skipped": c.skipped or None, "error": c.error or None,
                    } for c in wl.cases]} for wl in all_workloads],
                "ctrlc": ctrl, "targets": summary}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
    if args.markdown:
        write_markdown(args.markdown, info, sections, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
