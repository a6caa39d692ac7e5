#!/usr/bin/env python3
"""backend="auto" against the manual choices, side by side in one run.

    python benchmarks/auto.py [--quick] [--repeat R] [--workers W] [--markdown PATH]

For each workload of a mixed suite (pure Python, numpy matmul, hashlib,
zlib, sleep-bound I/O, tiny tasks) it times ``pool.map(task, range(N))`` on
``gilfree.Pool(W, backend=...)`` for "threads", "processes" and "auto", and
reports auto against the best and the worst manual backend of the same run.

Method: for every backend, a fresh pool is created, warmed, and given one
untimed run of the workload (the same for all three: it builds the task's
lazily made inputs in the workers, and it is where auto measures and decides,
as it would on the first call of a long-running program); then the best of R
timed runs is kept.  Auto's first, untimed call (probe, and for processes the
start of the workers) is reported in its own column.  Only one pool exists
while a row is timed.  --markdown appends (or replaces) the "backend='auto'"
section of the given file.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Any, Callable

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # 1 BLAS thread per worker: the comparison is about the pool

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
os.environ["PYTHONPATH"] = HERE + os.pathsep + os.environ.get("PYTHONPATH", "")

import pworkloads as P  # noqa: E402
import workloads as W  # noqa: E402

BACKENDS = ("threads", "processes", "auto")
SECTION = "## backend='auto' against the manual choices"


def sleep_io(_: Any = None) -> None:
    """Sleep-bound I/O stand-in: 5 ms waiting, the GIL released."""
    time.sleep(0.005)


def workloads(quick: bool) -> list[tuple[str, Callable[[int], Any], int, str | None]]:
    spin_iters = P.calibrate_spin(0.005)
    rows: list[tuple[str, Callable[[int], Any], int, str | None]] = [
        ("pure Python (~5 ms per item)", functools.partial(P.spin, spin_iters), 16 if quick else 60, None),
        ("hashlib sha256, 8 MB", W.sha_task, 8 if quick else 32, "sha256"),
        ("zlib level 6, 4 MB", W.zlib_task, 4 if quick else 12, "zlib"),
        ("sleep-bound I/O, 5 ms", sleep_io, 20 if quick else 80, None),
        ("tiny tasks: x + 1", W.inc, 200_000 if quick else 1_000_000, None),
    ]
    try:
        import numpy  # noqa: F401

        rows.insert(2, ("numpy matmul 400x400", W.matmul_task, 40 if quick else 200, "matmul"))
    except ImportError:
        print("(numpy missing: the matmul row is left out)")
    return rows


def time_backend(gilfree: Any, backend: str, task: Callable[[int], Any], n: int, repeat: int,
                 workers: int) -> tuple[float, float, str]:
    """(best timed run, the untimed first run, what auto chose or the backend)."""
    with gilfree.Pool(workers, backend=backend) as pool:
        pool.map(W.noop, range(2 * workers), chunksize=1)  # workers up
        t0 = time.perf_counter()
        pool.map(task, range(n))  # first call: inputs built; auto decides here
        first = time.perf_counter() - t0
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            pool.map(task, range(n))
            best = min(best, time.perf_counter() - t0)
        chosen = pool.backend
        if backend == "auto" and pool.decision is not None:
            chosen = f"{pool.decision.backend}"
    return best, first, chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args(argv)
    import warnings

    import gilfree

    warnings.simplefilter("ignore", gilfree.PerformanceWarning)  # threads on pure Python: on purpose
    repeat = args.repeat or (2 if args.quick else 5)
    rows = []
    header = ("workload", "N", "threads", "processes", "auto", "auto chose", "auto first call",
              "auto vs best", "auto vs worst", "target")
    print(f"gilfree {gilfree.__version__}: backend='auto' vs manual, {args.workers} workers, "
          f"best of {repeat}, {os.cpu_count()} CPUs")
    for label, task, n, kind in workloads(args.quick):
        if kind is not None:
            W.prepare(kind)
        times = {}
        chosen = ""
        first_auto = 0.0
        for backend in BACKENDS:
            best, first, ch = time_backend(gilfree, backend, task, n, repeat, args.workers)
            times[backend] = best
            if backend == "auto":
                chosen, first_auto = ch, first
        manual = {b: times[b] for b in ("threads", "processes")}
        best_b = min(manual, key=manual.get)
        worst_b = max(manual, key=manual.get)
        vs_best = manual[best_b] / times["auto"]
        vs_worst = manual[worst_b] / times["auto"]
        met = "met" if vs_best >= 1 / 1.10 else "MISSED"
        row = (label, f"{n:,}", f"{times['threads'] * 1e3:.1f} ms", f"{times['processes'] * 1e3:.1f} ms",
               f"{times['auto'] * 1e3:.1f} ms", chosen, f"{first_auto * 1e3:.1f} ms",
               f"{vs_best:.2f}x ({best_b})", f"{vs_worst:.2f}x ({worst_b})", f"within 10% of best: {met}")
        rows.append(row)
        print("  " + " | ".join(row), flush=True)
    lines = [SECTION, "",
             f"`python benchmarks/auto.py{' --quick' if args.quick else ''}`: {args.workers} workers, "
             f"best of {repeat} runs after one untimed first call per pool (where auto decides; its "
             "time is the \"auto first call\" column, which includes the probe and, when processes "
             "are chosen, starting them). \"auto vs best/worst\" divide the manual backend's time "
             "by auto's (above 1.00x: auto is faster).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    if args.markdown:
        try:
            with open(args.markdown, encoding="utf-8") as f:
                old = f.read()
        except FileNotFoundError:
            old = ""
        if SECTION in old:
            head, _, tail = old.partition(SECTION)
            nxt = tail.find("\n## ")
            old = head + (tail[nxt + 1:] if nxt >= 0 else "")
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(old.rstrip("\n") + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
