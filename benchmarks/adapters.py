#!/usr/bin/env python3
"""gilfree's drop-in adapters against the libraries they replace, side by side, in one run.

    python benchmarks/adapters.py [--quick] [--repeat R] [--workers W]
                                  [--group cf mp joblib asyncio] [--case-timeout S]

Four groups, one Markdown table each (W = 2 workers everywhere by default):

    cf       concurrent.futures: gilfree.Executor(W) (auto) and
             gilfree.Executor(W, backend="processes") against ProcessPoolExecutor(W) and
             ThreadPoolExecutor(W): N x submit(noop, i) then wait for all; and
             executor.map(tiny, range(N), chunksize=1 / 1000)
    mp       multiprocessing.Pool: gilfree.compat.multiprocessing.Pool(W) against
             multiprocessing.Pool(W), both with the same start method (forkserver, then
             fork): map(tiny, range(N)) with default chunking; imap(tiny, range(N),
             chunksize=1); N x apply_async(noop, (i,)) then get()
    joblib   joblib.Parallel(n_jobs=W): backend "gilfree" (auto) and
             GilfreeBackend(backend="processes") against "loky" and "threading", on
             delayed(tiny) x N, on ~10 ms pure-Python tasks, and on sha256 of 1 MiB
    asyncio  await gilfree.Pool(W, "threads").amap(tiny, range(N)) against
             asyncio.gather(*[loop.run_in_executor(ThreadPoolExecutor(W), tiny, i) ...])

Method (that of run.py, see README.md beside this file): every timing makes a fresh pool,
warms it (process pools: until every worker has answered) and gives it one small untimed
call of the row's own function, so that start-up, lazy worker starts and backend="auto"'s
first measurement of the function are outside the timer; the pool is shut down after the
timer stops, and only one pool exists while a row is timed.  Each row first runs once as
a warm-up whose result is compared with the serial result (a wrong result turns the row
into an error, not a number); then R rounds, each running every row of the table's
operation once, in an order rotated from round to round.  Reported: the best and the
median time, items/s of the best run, and "vs PEER" = PEER's best time per item / this
row's (above 1.00x: the gilfree adapter is faster).  Slow peers get a smaller N (shown in
each row); the ratios are per item.  Task functions live in aworkloads.py, which worker
processes import by name.
"""

from __future__ import annotations

import os
import sys

# Worker processes import the task functions by module name (aworkloads): this directory
# must be importable in every child, whatever its start method (see run.py).
_HERE = os.path.dirname(os.path.abspath(__file__))
_PATHS = os.environ.get("PYTHONPATH", "").split(os.pathsep)
if _HERE not in _PATHS:
    os.environ["PYTHONPATH"] = os.pathsep.join([_HERE] + [p for p in _PATHS if p])
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import concurrent.futures as cf  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import aworkloads as A  # noqa: E402
import run as R  # noqa: E402  (the harness's timing watchdog, warm-up and formatting helpers)

# The harness's watchdog thread (idle in Condition.wait) is the only other thread of this
# process while fork pools start: gilfree's warning about forking with threads would only
# clutter the tables.
warnings.filterwarnings("ignore", message=r"Pool\(start_method='fork'\): this process runs other threads",
                        category=RuntimeWarning)

# Items per timed call: (full, --quick).  Slow peers get fewer items; every row shows its N
# and every ratio is per item.
SIZES = {
    "submit":          (20_000, 2_000),
    "submit_slow":     (20_000, 1_000),    # ProcessPoolExecutor.submit: ~100 us per call
    "map1":            (100_000, 10_000),
    "map1_slow":       (10_000, 1_000),    # ProcessPoolExecutor.map(chunksize=1): ~100+ us
    "map1000":         (100_000, 10_000),
    "mp_map":          (1_000_000, 100_000),
    "mp_imap":         (100_000, 10_000),
    "mp_apply":        (20_000, 2_000),
    "jl_tiny":         (100_000, 10_000),
    "jl_cpu":          (200, 40),
    "jl_sha":          (200, 40),
    "aio_big":         (100_000, 10_000),
    "aio":             (10_000, 2_000),
}


# ---------------------------------------------------------------------------------------
# Libraries: how to make, warm and shut down each pool (never inside the timer).
# ---------------------------------------------------------------------------------------


@dataclass
class Lib:
    key: str
    title: str  # as the tables name it
    open: Callable[[int], Any]
    close: Callable[[Any], Any]
    warm: Callable[[Any, int], Any]
    processes: bool = False  # has (or may start) worker processes
    peer: bool = False  # a library the adapters replace (not gilfree)


def _thread_warm(call: Callable[[int], Any]) -> Callable[[Any, int], Any]:
    return lambda pool, w: call(pool, 4 * w)


def _executor_libs() -> list[Lib]:
    import gilfree

    def shutdown(ex: Any) -> None:
        ex.shutdown(wait=True)

    def warm_procs(ex: Any, w: int) -> None:
        R._warm_all(lambda k: list(ex.map(A.warm_task, range(k))), w)

    return [
        Lib("gf-auto", "gilfree.Executor(W)  (auto)", lambda w: gilfree.Executor(w),
            shutdown, lambda ex, w: list(ex.map(A.noop, range(4 * w))), processes=True),
        Lib("gf-proc", "gilfree.Executor(W, backend=\"processes\")",
            lambda w: gilfree.Executor(w, backend="processes"), shutdown, warm_procs,
            processes=True),
        Lib("ppe", f"ProcessPoolExecutor(W)  ({multiprocessing.get_start_method()})",
            lambda w: cf.ProcessPoolExecutor(w), shutdown, warm_procs, processes=True,
            peer=True),
        Lib("tpe", "ThreadPoolExecutor(W)", lambda w: cf.ThreadPoolExecutor(w), shutdown,
            lambda ex, w: list(ex.map(A.noop, range(4 * w))), peer=True),
    ]


def _mp_libs() -> list[Lib]:
    from gilfree.compat.multiprocessing import Pool as GilfreeMpPool

    def close(pool: Any) -> None:
        pool.close()
        pool.join()

    def warm(pool: Any, w: int) -> None:
        R._warm_all(lambda k: pool.map(A.warm_task, range(k), chunksize=1), w)

    out = []
    for method in ("forkserver", "fork"):
        if method not in multiprocessing.get_all_start_methods():
            continue
        ctx = multiprocessing.get_context(method)
        out += [
            Lib(f"gf-{method}", f"gilfree.compat.multiprocessing.Pool(W)  ({method})",
                lambda w, ctx=ctx: GilfreeMpPool(w, context=ctx), close, warm, processes=True),
            Lib(f"mp-{method}", f"multiprocessing.Pool(W)  ({method})",
                lambda w, ctx=ctx: ctx.Pool(w), close, warm, processes=True, peer=True),
        ]
    return out


def _parallel_open(w: int, backend: Any) -> Any:
    """A ``joblib.Parallel`` with its ``with`` block entered: one pool for every call."""
    from joblib import Parallel

    par = Parallel(n_jobs=w, backend=backend)
    par.__enter__()
    return par


def _parallel(par: Any, fn: Callable[..., Any], items: Any, *args: Any) -> list[Any]:
    from joblib import delayed

    return par(delayed(fn)(*args, x) for x in items)


def _joblib_libs() -> list[Lib]:
    import gilfree.joblib

    def close(par: Any) -> None:
        par.__exit__(None, None, None)

    def warm_procs(par: Any, w: int) -> None:
        R._warm_all(lambda k: _parallel(par, A.warm_task, range(k)), w)

    return [
        Lib("jl-gilfree", "Parallel(backend=\"gilfree\")  (auto)",
            lambda w: _parallel_open(w, "gilfree"), close,
            lambda par, w: _parallel(par, A.noop, range(4 * w)), processes=True),
        Lib("jl-gilfree-proc", "Parallel(backend=GilfreeBackend(backend=\"processes\"))",
            lambda w: _parallel_open(w, gilfree.joblib.GilfreeBackend(backend="processes")),
            close, warm_procs, processes=True),
        Lib("loky", "Parallel(backend=\"loky\")", R._loky_open, R._loky_close, warm_procs,
            processes=True, peer=True),
        Lib("threading", "Parallel(backend=\"threading\")",
            lambda w: _parallel_open(w, "threading"), close,
            lambda par, w: _parallel(par, A.noop, range(4 * w)), peer=True),
        Lib("serial", "serial (no pool; not a peer)", lambda w: None, lambda p: None,
            lambda p, w: None),
    ]


@dataclass
class Loop:
    """An event loop and the pool (or executor) its coroutines use."""

    loop: asyncio.AbstractEventLoop
    pool: Any


async def _gather_run_in_executor(ex: Any, n: int) -> list[Any]:
    loop = asyncio.get_running_loop()
    return await asyncio.gather(*[loop.run_in_executor(ex, A.tiny, i) for i in range(n)])


async def _gather_aapply(pool: Any, n: int) -> list[Any]:
    return await asyncio.gather(*[pool.aapply(A.tiny, i) for i in range(n)])


def _asyncio_libs() -> list[Lib]:
    import gilfree

    def open_gilfree(w: int) -> Loop:
        return Loop(asyncio.new_event_loop(), gilfree.Pool(w, "threads"))

    def close_gilfree(lp: Loop) -> None:
        lp.pool.close()
        lp.pool.join()
        lp.loop.close()

    def open_tpe(w: int) -> Loop:
        return Loop(asyncio.new_event_loop(), cf.ThreadPoolExecutor(w))

    def close_tpe(lp: Loop) -> None:
        lp.pool.shutdown(wait=True)
        lp.loop.close()

    return [
        Lib("aio-gilfree", "gilfree.Pool(W, \"threads\")", open_gilfree, close_gilfree,
            lambda lp, w: lp.loop.run_until_complete(lp.pool.amap(A.noop, range(4 * w)))),
        Lib("aio-tpe", "ThreadPoolExecutor(W)", open_tpe, close_tpe,
            lambda lp, w: lp.loop.run_until_complete(_gather_run_in_executor(lp.pool, 4 * w)),
            peer=True),
    ]


# ---------------------------------------------------------------------------------------
# Rows, operations, groups
# ---------------------------------------------------------------------------------------


@dataclass
class Row:
    """One timed call, ``fn(pool, n)``, of library ``lib`` over ``n`` items; ``prime(pool)``
    is the small untimed call of the same function made before the timer starts."""

    lib: str
    n: int
    fn: Callable[[Any, int], Any]
    prime: Callable[[Any], Any] | None = None
    note: str = ""  # shown after the library's title
    times: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


@dataclass
class Op:
    """One operation, timed on every library of its rows; rows are compared within it."""

    call: str
    rows: list[Row]
    reference: Callable[[int], Any]  # the serial result for n items


@dataclass
class Group:
    key: str
    title: str
    libs: dict[str, Lib]
    ops: list[Op]
    # The ratio columns: (heading, the peer library a gilfree row of this library is
    # compared with, or None for no ratio in that column).
    columns: list[tuple[str, Callable[[str], str | None]]]


def _incs(n: int) -> list[int]:
    return [A.tiny(i) for i in range(n)]


def _ids(n: int) -> list[int]:
    return [A.noop(i) for i in range(n)]


def _submit_wait(ex: Any, n: int) -> list[Any]:
    futures = [ex.submit(A.noop, i) for i in range(n)]
    cf.wait(futures)
    return [f.result() for f in futures]


def _apply_all(pool: Any, n: int) -> list[Any]:
    pending = [pool.apply_async(A.noop, (i,)) for i in range(n)]
    return [r.get() for r in pending]


def make_groups(quick: bool, only: list[str]) -> list[Group]:
    size = {key: value[1 if quick else 0] for key, value in SIZES.items()}
    groups: list[Group] = []
    incs, ids = _incs, _ids

    if "cf" in only:
        libs = {lib.key: lib for lib in _executor_libs()}
        ex_keys = ("gf-auto", "gf-proc", "ppe", "tpe")

        def cf_rows(fn: Callable[[Any, int], Any], n: int, slow: int,
                    prime: Callable[[Any], Any], notes: dict[str, str] | None = None) -> list[Row]:
            return [Row(k, slow if k == "ppe" else n, fn, prime, (notes or {}).get(k, ""))
                    for k in ex_keys]

        groups.append(Group(
            "cf", "concurrent.futures: gilfree.Executor", libs, [
                Op("N x submit(noop, i), then wait(futures) and read every result",
                   cf_rows(_submit_wait, size["submit"], size["submit_slow"],
                           lambda ex: ex.submit(A.noop, 0).result()), ids),
                Op("list(executor.map(tiny, range(N), chunksize=1))",
                   cf_rows(lambda ex, n: list(ex.map(A.tiny, range(n), chunksize=1)),
                           size["map1"], size["map1_slow"],
                           lambda ex: list(ex.map(A.tiny, range(8), chunksize=1))), incs),
                Op("list(executor.map(tiny, range(N), chunksize=1000))",
                   cf_rows(lambda ex, n: list(ex.map(A.tiny, range(n), chunksize=1000)),
                           size["map1000"], size["map1000"],
                           lambda ex: list(ex.map(A.tiny, range(2000), chunksize=1000)),
                           {"tpe": "  (ignores chunksize)"}), incs),
            ],
            [("vs ProcessPoolExecutor", lambda k: "ppe" if k.startswith("gf-") else None),
             ("vs ThreadPoolExecutor", lambda k: "tpe" if k.startswith("gf-") else None)]))

    if "mp" in only:
        libs = {lib.key: lib for lib in _mp_libs()}

        def mp_rows(fn: Callable[[Any, int], Any], n: int,
                    prime: Callable[[Any], Any]) -> list[Row]:
            return [Row(k, n, fn, prime) for k in libs]

        groups.append(Group(
            "mp", "multiprocessing.Pool: gilfree.compat.multiprocessing.Pool", libs, [
                Op("pool.map(tiny, range(N))  (each pool's default chunking)",
                   mp_rows(lambda p, n: p.map(A.tiny, range(n)), size["mp_map"],
                           lambda p: p.map(A.tiny, range(8))), incs),
                Op("list(pool.imap(tiny, range(N), chunksize=1))",
                   mp_rows(lambda p, n: list(p.imap(A.tiny, range(n), chunksize=1)),
                           size["mp_imap"], lambda p: list(p.imap(A.tiny, range(8)))), incs),
                Op("N x apply_async(noop, (i,)), then get() on each",
                   mp_rows(_apply_all, size["mp_apply"],
                           lambda p: p.apply_async(A.noop, (0,)).get()), ids),
            ],
            [("vs multiprocessing.Pool, same start method",
              lambda k: "mp-" + k[3:] if k.startswith("gf-") else None)]))

    if "joblib" in only:
        libs = {lib.key: lib for lib in _joblib_libs()}
        iters = A.calibrate_spin()
        jl = ("jl-gilfree", "jl-gilfree-proc", "loky", "threading")

        def jl_rows(fn: Callable[..., Any], args: tuple[Any, ...], n: int,
                    keys: tuple[str, ...]) -> list[Row]:
            rows = []
            for k in keys:
                if k == "serial":
                    rows.append(Row(k, n, lambda _, n: [fn(*args, i) for i in range(n)]))
                    continue
                rows.append(Row(k, n, lambda par, n: _parallel(par, fn, range(n), *args),
                                lambda par: _parallel(par, fn, range(4), *args)))
            return rows

        groups.append(Group(
            "joblib", "joblib: Parallel(n_jobs=W) on the \"gilfree\" backend", libs, [
                Op("Parallel(n_jobs=W)(delayed(tiny)(i) for i in range(N))  (auto batching)",
                   jl_rows(A.tiny, (), size["jl_tiny"], jl), incs),
                Op(f"delayed(spin)({iters:,}, i) for i in range(N): pure Python, ~"
                   f"{A.CPU_TASK_S * 1e3:g} ms a task (calibrated here), holds the GIL",
                   jl_rows(A.spin, (iters,), size["jl_cpu"],
                           ("serial", "jl-gilfree", "jl-gilfree-proc", "loky")),
                   lambda n: [A.spin(iters, i) for i in range(n)]),
                Op("delayed(sha_task)(i) for i in range(N): sha256 of a 1 MiB buffer each "
                   "(built in every process at import; hashlib releases the GIL)",
                   jl_rows(A.sha_task, (), size["jl_sha"], ("serial",) + jl),
                   lambda n: [A.sha_task(i) for i in range(n)]),
            ],
            [("vs loky", lambda k: "loky" if k.startswith("jl-gilfree") else None),
             ("vs threading", lambda k: "threading" if k.startswith("jl-gilfree") else None)]))

    if "asyncio" in only:
        libs = {lib.key: lib for lib in _asyncio_libs()}

        def amap(lp: Loop, n: int) -> list[Any]:
            return lp.loop.run_until_complete(lp.pool.amap(A.tiny, range(n)))

        def prime_amap(lp: Loop) -> Any:
            return lp.loop.run_until_complete(lp.pool.amap(A.tiny, range(8)))

        groups.append(Group(
            "asyncio", "asyncio: await pool.amap / aapply", libs, [
                Op("inside one event loop: await pool.amap(tiny, range(N)), or "
                   "await asyncio.gather(*[...(tiny, i) for i in range(N)])", [
                       Row("aio-gilfree", size["aio_big"], amap, prime_amap,
                           "  await pool.amap(tiny, range(N))"),
                       Row("aio-gilfree", size["aio"], amap, prime_amap,
                           "  await pool.amap(tiny, range(N))"),
                       Row("aio-gilfree", size["aio_big"],
                           lambda lp, n: lp.pool.map(A.tiny, range(n)),
                           lambda lp: lp.pool.map(A.tiny, range(8)),
                           "  pool.map(tiny, range(N)): no asyncio, for reference"),
                       Row("aio-gilfree", size["aio"],
                           lambda lp, n: lp.loop.run_until_complete(_gather_aapply(lp.pool, n)),
                           lambda lp: lp.loop.run_until_complete(_gather_aapply(lp.pool, 8)),
                           "  gather(*[pool.aapply(tiny, i) ...])"),
                       Row("aio-tpe", size["aio"],
                           lambda lp, n: lp.loop.run_until_complete(
                               _gather_run_in_executor(lp.pool, n)),
                           lambda lp: lp.loop.run_until_complete(
                               _gather_run_in_executor(lp.pool, 8)),
                           "  gather(*[loop.run_in_executor(ex, tiny, i) ...])"),
                   ], incs),
            ],
            [("vs run_in_executor(ThreadPoolExecutor)",
              lambda k: "aio-tpe" if k == "aio-gilfree" else None)]))
    return groups


# ---------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------


def measure_once(row: Row, lib: Lib, workers: int, case_timeout: float) -> tuple[float, Any]:
    """Make the pool, warm it, prime it with the row's function, then time ``row.fn``
    alone; the pool is shut down after the timer stops.  A hang ends the run (run.py's
    watchdog: tracebacks, then the run's child processes are killed)."""
    R.WATCHDOG.arm(case_timeout, f"{lib.title}: {row.note.strip() or row.lib} (N={row.n:,})",
                   children=lib.processes)
    try:
        pool = lib.open(workers)
        try:
            lib.warm(pool, workers)
            if row.prime is not None:
                row.prime(pool)
            gc.collect()
            start = time.perf_counter()
            result = row.fn(pool, row.n)
            elapsed = time.perf_counter() - start
        finally:
            lib.close(pool)
    finally:
        R.WATCHDOG.disarm()
    return elapsed, result


def run_op(op: Op, libs: dict[str, Lib], repeat: int, workers: int,
           case_timeout: float) -> None:
    # Warm-up round: every row once, its result checked against the serial one.  The
    # serial results are dropped before the timed rounds (fork children would inherit them).
    references: dict[int, Any] = {}
    for row in op.rows:
        try:
            _, result = measure_once(row, libs[row.lib], workers, case_timeout)
        except Exception as exc:
            row.error = f"{type(exc).__name__}: {exc}"
            continue
        if row.n not in references:
            references[row.n] = op.reference(row.n)
        if not R._same(result, references[row.n]):
            row.error = "wrong result (differs from the serial one)"
        del result
    references.clear()
    gc.collect()
    active = [row for row in op.rows if not row.error]
    # Timed rounds: every row once per round, the order rotated from round to round.
    for rnd in range(repeat):
        k = rnd % len(active) if active else 0
        for row in active[k:] + active[:k]:
            if row.error:
                continue
            try:
                elapsed, result = measure_once(row, libs[row.lib], workers, case_timeout)
            except Exception as exc:
                row.error = f"{type(exc).__name__}: {exc}"
                continue
            del result
            row.times.append(elapsed)
        print(".", end="", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------


def group_table(group: Group) -> str:
    header = ["call", "library", "N", "best", "median", "items/s"] + [h for h, _ in group.columns]
    rows: list[list[str]] = []
    for op in group.ops:
        first = True
        for row in op.rows:
            lib = group.libs[row.lib]
            cells = [f"`{op.call}`" if first else "", lib.title + row.note, f"{row.n:,}"]
            first = False
            if row.error or not row.times:
                rows.append(cells + [f"ERROR: {row.error or 'no data'}"])
                continue
            cells += [R._fmt_time(row.best), R._fmt_time(row.median),
                      R._fmt_rate(row.n / row.best)]
            for _, peer_of in group.columns:
                peer_key = peer_of(row.lib)
                peer = next((r for r in op.rows if r.lib == peer_key), None)
                if peer is None:  # not a gilfree row, or no such peer in this operation
                    cells.append("-")
                    continue
                if peer.error or not peer.times:
                    cells.append("(peer failed)")
                    continue
                cells.append(R._fmt_ratio((peer.best / peer.n) / (row.best / row.n)))
            rows.append(cells)
    return R.format_markdown_table(header, rows, right={2, 3, 4, 5} | set(range(6, len(header))))


def versions() -> str:
    out = [f"CPython {platform.python_version()}" if platform.python_implementation() == "CPython"
           else f"{platform.python_implementation()} {platform.python_version()}"]
    for name in ("gilfree", "joblib"):
        try:
            module = __import__(name)
        except ImportError as exc:
            out.append(f"{name} not importable ({exc})")
            continue
        out.append(f"{name} {R._dist_version(name, module)}")
    return ", ".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="gilfree's drop-in adapters (Executor, compat.multiprocessing.Pool, "
                    "the joblib backend, asyncio amap/aapply) against the libraries they "
                    "replace, in one run; Markdown tables with ratios.")
    parser.add_argument("--quick", action="store_true",
                        help="smaller inputs and 2 rounds: a smoke run of about 30 s")
    parser.add_argument("--repeat", type=int, default=None, metavar="R",
                        help="timed rounds after the warm-up (default 3, --quick 2)")
    parser.add_argument("--workers", type=int, default=2, metavar="W",
                        help="worker threads or processes per pool (default 2)")
    parser.add_argument("--group", nargs="+", choices=("cf", "mp", "joblib", "asyncio"),
                        default=["cf", "mp", "joblib", "asyncio"],
                        help="which tables (default: all four)")
    parser.add_argument("--case-timeout", type=float, default=None, metavar="S",
                        help="abort the run, with every thread's traceback and its child "
                             "processes killed, if one timed call (pool start and shutdown "
                             "included) takes longer (default 120 s, --quick 60 s)")
    args = parser.parse_args(argv)
    repeat = args.repeat if args.repeat is not None else (2 if args.quick else 3)
    timeout = args.case_timeout if args.case_timeout is not None else (60.0 if args.quick
                                                                       else 120.0)
    if repeat < 1 or args.workers < 1:
        parser.error("--repeat and --workers must be at least 1")

    gilfree, why = R._import_gilfree()
    if gilfree is None:
        print(f"gilfree cannot be measured: {why}", file=sys.stderr)
        return 2
    try:
        import joblib  # noqa: F401
    except ImportError as exc:
        if "joblib" in args.group:
            print(f"(joblib not importable, its table is left out: {exc})")
            args.group = [g for g in args.group if g != "joblib"]

    started = time.perf_counter()
    load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"
    print(f"gilfree adapters benchmark  "
          f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}")
    print(f"- command: `python {shlex.join(sys.argv)}`")
    print(f"- machine: {os.cpu_count()} CPUs, {platform.platform()}, load average at start "
          f"{load}" + ("  (other programs are using the CPUs: expect noisy timings)"
                       if load != "?" and float(load) > 0.5 else ""))
    print(f"- {versions()} ({gilfree.__file__})")
    print(f"- {args.workers} workers; warm-up + best of {repeat} rounds"
          f"{', --quick sizes' if args.quick else ''}; multiprocessing's default start "
          f"method: {multiprocessing.get_start_method()}")
    print()
    for group in make_groups(args.quick, args.group):
        print(f"## {group.title}", flush=True)
        print("  running", end="", file=sys.stderr, flush=True)
        for op in group.ops:
            run_op(op, group.libs, repeat, args.workers, timeout)
        print(file=sys.stderr)
        print()
        print(group_table(group))
        print(flush=True)
    print(f"(whole run: {time.perf_counter() - started:.0f} s)  \"vs PEER\" = PEER's best "
          "time per item / this row's: above 1.00x the gilfree adapter is faster.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
