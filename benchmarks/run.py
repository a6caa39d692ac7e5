#!/usr/bin/env python3
"""gilfree against its peers, side by side, in one run: absolute numbers and ratios.

    python benchmarks/run.py [--quick] [--repeat R] [--only NAME ...] [--workers W]
                             [--json out.json] [--markdown out.md]

Peers: a serial loop, ``concurrent.futures.ThreadPoolExecutor``,
``multiprocessing.pool.ThreadPool`` and, when importable, MPIRE's threading mode.  gilfree
itself is skipped, with the reason, when ``import gilfree`` fails, so the harness runs
before the package is built.  Workloads (``--only`` takes these names or library names):

    tiny      map(inc, range(N)): items/s against a serial list comprehension
    overhead  map(noop, range(N), chunksize=1): microseconds per task
    apply     N x apply_async(noop) then .get() each: tasks/s against TPE submit()+result()
    sha256    sha256 of 8 MB buffers: speed-up over serial (hashlib releases the GIL)
    zlib      zlib.compress of 4 MB text, level 6: speed-up over serial
    matmul    400x400 float64 numpy matmul, BLAS limited to 1 thread: speed-up over serial
    startup   create a pool, run a trivial map, close and join it: milliseconds
    ctrlc     SIGINT while the main thread waits in map(): milliseconds to KeyboardInterrupt

README.md beside this file explains the method; ``--markdown`` writes docs/benchmarks.md.
"""

from __future__ import annotations

import os

# BLAS must be single-threaded before numpy is imported (here, or by workloads.py):
# the matmul rows compare 1 thread of BLAS against W threads of the pool.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import faulthandler  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from multiprocessing.pool import ThreadPool  # noqa: E402
from typing import Any  # noqa: E402

import ctrlc  # noqa: E402
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
    baseline: bool = False
    # ("ratio>=", x): per-item speed vs the baseline at least x; ("us<=", x): at most x us/item
    target: tuple[str, float] | None = None
    uses_pool: bool = True  # False: fn makes its own pool inside the timed region
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

    def baseline(self) -> Case | None:
        return next((c for c in self.cases if c.baseline and c.times), None)


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


# ---------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------


def _same(got: Any, want: Any) -> bool:
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return all(_same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(got, float) and isinstance(want, float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    return bool(got == want)


def measure_once(case: Case, lib: Library, workers: int, case_timeout: float) -> tuple[float, Any]:
    """Time ``case.fn`` once on a fresh, warmed pool; return (seconds, result)."""
    faulthandler.dump_traceback_later(case_timeout, exit=True)  # a hang ends the run loudly
    try:
        pool = lib.open(workers) if case.uses_pool else None
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
        faulthandler.cancel_dump_traceback_later()
    return elapsed, result


def run_workload(wl: Workload, libs: dict[str, Library], repeat: int, workers: int,
                 case_timeout: float) -> None:
    for case in wl.cases:
        if libs[case.library].why_not:
            case.skipped = libs[case.library].why_not
    active = [c for c in wl.cases if not c.skipped]
    if wl.prepare is not None:
        wl.prepare()

    # Warm-up round: baseline first; every result is checked against the reference.
    references: dict[int, Any] = {}
    for case in sorted(active, key=lambda c: not c.baseline):
        try:
            _, result = measure_once(case, libs[case.library], workers, case_timeout)
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
                elapsed, _ = measure_once(case, libs[case.library], workers, case_timeout)
            except Exception as exc:
                case.error = f"{type(exc).__name__}: {exc}"
                continue
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
    return _fmt_rate(1 / per_item)


def _ratio(case: Case, base: Case | None, pick: Callable[[Case], float]) -> float | None:
    if base is None or not case.times:
        return None
    return (pick(base) / base.n) / (pick(case) / case.n)


def _fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def _target(case: Case, base: Case | None) -> tuple[str, bool | None]:
    """(description, met?) of a case's target; met is None when not measurable."""
    if case.target is None:
        return "", None
    kind, value = case.target
    if kind == "ratio>=":
        text = f">= {value:g}x"
        ratio = _ratio(case, base, lambda c: c.best)
        return text, None if ratio is None else ratio >= value
    text = f"<= {value:g} us"
    return text, None if not case.times else case.best / case.n * 1e6 <= value


def table_rows(wl: Workload) -> tuple[list[str], list[list[str]]]:
    base = wl.baseline()
    header = ["case", "N", "best", "median", wl.unit, f"vs {wl.versus}", "(median)", "target"]
    rows = []
    for case in wl.cases:
        if case.skipped or case.error or not case.times:
            why = (f"skipped: {case.skipped}" if case.skipped
                   else f"ERROR: {case.error or 'no data'}")
            rows.append([case.label, f"{case.n:,}", why])  # a short row: a note, no numbers
            continue
        best_ratio = _ratio(case, base, lambda c: c.best)
        median_ratio = _ratio(case, base, lambda c: c.median)
        text, met = _target(case, base)
        if case.baseline:
            target = "baseline"
        elif met is None:
            target = text
        else:
            target = f"{text} {'met' if met else 'MISSED'}"
        rows.append([
            case.label, f"{case.n:,}", _fmt_time(case.best), _fmt_time(case.median),
            _rate(wl, case, case.best),
            _fmt_ratio(best_ratio),
            _fmt_ratio(median_ratio),
            target,
        ])
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


def format_markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join([":---"] + ["---:"] * (len(header) - 2) + [":---"]) + "|"]
    for row in rows:
        row = row + [""] * (len(header) - len(row))
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(out)


def machine_info(args: argparse.Namespace, libs: dict[str, Library]) -> dict[str, Any]:
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
        "numpy": W.blas_info(),
        "libraries": {k: (lib.version or f"skipped: {lib.why_not}") for k, lib in libs.items()
                      if k not in ("serial", "raw")},
        "gilfree_path": getattr(gilfree, "__file__", None) if libs["gilfree"].version else None,
    }


HOW_TO_READ = """\
Each row times one call (one `map` over N items, or N `apply_async`/`submit` calls and
their results) on a pool of W worker threads that was created, and warmed with a trivial
call, before the timer started and is shut down after it stopped; no other pool exists
while a row is timed. Every row first runs once as a warm-up whose result is checked
against the serial or expected one; then come R rounds, each running every row once, in an
order rotated from round to round so that machine noise hits all libraries alike. "best"
is the fastest of the R runs, "median" the middle one. The unit column is per item and
computed from the best run. The "vs" columns divide the baseline row's time per item by
this row's (from the best runs, then from the medians): above 1.00x is faster than the
baseline, and every ratio comes from this one run. Slow peers run fewer items (see N); per
item rates remain comparable. Targets are gilfree's goals and are judged on the best-run
ratio. Absolute numbers belong to this machine; only the ratios travel, and only roughly."""


def print_header(info: dict[str, Any], libs: dict[str, Library]) -> None:
    print(f"gilfree benchmarks  {info['date']}")
    print(f"machine: nproc {info['nproc']} (usable {info['usable_cpus']}), "
          f"{info['cpu_model'] or 'cpu model unknown'}, {info['platform']}, "
          f"load average {info['load_average']}")
    if info["load_average"] != "?" and float(info["load_average"]) > 0.5:
        print("  -> other programs are using the CPUs: expect noisy timings")
    print(f"python:  {info['python']}  ({sys.executable})")
    print(f"numpy:   {info['numpy']}")
    print(f"run:     {info['workers']} workers, warm-up + {info['repeat']} rounds"
          f"{', --quick sizes' if info['quick'] else ''}; command: {info['command']}")
    for key, lib in libs.items():
        if key in ("serial", "raw"):
            continue
        state = f"version {lib.version}" if not lib.why_not else f"SKIPPED: {lib.why_not}"
        print(f"  {lib.title:<40} {state}")
    if libs["gilfree"].why_not:
        print("  -> gilfree rows are skipped: build and install the package "
              "(pip install .) to measure it.")
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
                  ctrl: dict[str, list[dict[str, Any]]] | None) -> list[str]:
    if libs["gilfree"].why_not:
        return [f"gilfree was not measured: {libs['gilfree'].why_not}"]
    lines = []
    for wl in workloads:
        base = wl.baseline()
        for case in wl.cases:
            if case.target is None or case.skipped:
                continue
            text, met = _target(case, base)
            if case.error or met is None:
                lines.append(f"[ERROR ] {wl.title}: {case.label}: {case.error or 'no data'}")
                continue
            got = (f"{_ratio(case, base, lambda c: c.best):.2f}x vs {wl.versus}"
                   if case.target[0] == "ratio>=" else f"{case.best / case.n * 1e6:.2f} us/task")
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
           "- Libraries: " + "; ".join(f"{k} {v}" for k, v in info["libraries"].items()),
           "", "## How to read", "", HOW_TO_READ, ""]
    for title, call, table in sections:
        out += [f"## {title}", "", call, "", table, ""]
    if summary:
        out += ["## gilfree targets", ""] + [f"- {line}" for line in summary] + [""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out))


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------

WORKLOAD_NAMES = ("tiny", "overhead", "apply", "sha256", "zlib", "matmul", "startup", "ctrlc")
LIBRARY_NAMES = ("serial", "raw", "gilfree", "threadpool", "tpe", "mpire")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark gilfree against serial code, ThreadPoolExecutor, ThreadPool "
                    "and MPIRE (threading) in one run; print absolute numbers and ratios.")
    parser.add_argument("--quick", action="store_true",
                        help="smaller inputs and 3 rounds: a smoke run of well under 30 s")
    parser.add_argument("--repeat", type=int, default=None, metavar="R",
                        help="timed rounds after the warm-up (default 5, --quick 3)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help="run only these workloads and/or libraries: "
                             f"{', '.join(WORKLOAD_NAMES + LIBRARY_NAMES)} "
                             "(baseline rows always run)")
    parser.add_argument("--workers", type=int, default=2, metavar="W",
                        help="worker threads per pool (default 2)")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement as JSON")
    parser.add_argument("--markdown", metavar="PATH",
                        help="also write a Markdown report (docs/benchmarks.md)")
    parser.add_argument("--case-timeout", type=float, default=None, metavar="S",
                        help="abort the run, dumping tracebacks, if one timed call takes "
                             "longer (default 300 s, --quick 60 s)")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 5
    if args.case_timeout is None:
        args.case_timeout = 60.0 if args.quick else 300.0
    if args.repeat < 1 or args.workers < 1:
        parser.error("--repeat and --workers must be at least 1")
    unknown = sorted(set(args.only or ()) - set(WORKLOAD_NAMES + LIBRARY_NAMES))
    if unknown:
        parser.error(f"unknown --only name(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(WORKLOAD_NAMES + LIBRARY_NAMES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = set(args.only or ())
    selected_workloads = (only & set(WORKLOAD_NAMES)) or set(WORKLOAD_NAMES)
    selected_libs = (only & set(LIBRARY_NAMES)) or set(LIBRARY_NAMES)

    libs = make_libraries()
    info = machine_info(args, libs)
    print_header(info, libs)

    workloads = [wl for wl in make_workloads(args.quick, args.workers, libs)
                 if wl.name in selected_workloads]
    if "matmul" in selected_workloads and W.numpy is None:
        print("(4c) numpy matmul: skipped, numpy is not installed\n")
    sections: list[tuple[str, str, str]] = []
    for wl in workloads:
        wl.cases = [c for c in wl.cases if c.baseline or c.library in selected_libs]
        print(f"{wl.title}: {wl.call}", flush=True)
        print("  running", end="", file=sys.stderr, flush=True)
        run_workload(wl, libs, args.repeat, args.workers, args.case_timeout)
        print(file=sys.stderr)
        header, rows = table_rows(wl)
        print(format_text_table(header, rows), end="\n\n", flush=True)
        sections.append((wl.title, f"`{wl.call}` ({args.workers} workers)",
                         format_markdown_table(header, rows)))

    ctrl = None
    if "ctrlc" in selected_workloads:
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

    summary = summary_lines(workloads, libs, ctrl)
    print("gilfree targets:")
    for line in summary:
        print(f"  {line}")
    print()
    print("How to read: " + " ".join(HOW_TO_READ.split()))

    if args.json:
        data = {"machine": info, "how_to_read": " ".join(HOW_TO_READ.split()),
                "workloads": [{
                    "name": wl.name, "title": wl.title, "call": wl.call, "unit": wl.unit,
                    "baseline": next((c.label for c in wl.cases if c.baseline), None),
                    "cases": [{
                        "label": c.label, "library": c.library, "n": c.n,
                        "times_s": c.times, "best_s": c.best if c.times else None,
                        "median_s": c.median if c.times else None,
                        "ratio_best": _ratio(c, wl.baseline(), lambda x: x.best),
                        "ratio_median": _ratio(c, wl.baseline(), lambda x: x.median),
                        "target": c.target, "target_met": _target(c, wl.baseline())[1],
                        "skipped": c.skipped or None, "error": c.error or None,
                    } for c in wl.cases]} for wl in workloads],
                "ctrlc": ctrl, "targets": summary}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
    if args.markdown:
        write_markdown(args.markdown, info, sections, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
