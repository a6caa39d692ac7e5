#!/usr/bin/env python3
"""What the MPIRE-level features cost, in one run, against MPIRE's own.

    python benchmarks/features.py [--items N] [--repeat R] [--workers W]

For each backend, ``map(inc, range(N))`` (an item costs ~0.05 us, so any
per-item overhead shows) plain, then with ``insights=True``,
``worker_state=True`` (+ initializer), ``progress=True`` (to a pipe), and
``max_tasks_per_worker=N/20`` (recycling: 20+ new worker lives); the same
with MPIRE (``enable_insights``, ``use_worker_state`` + ``worker_init``,
``progress_bar``, ``worker_lifespan``) when it is installed.  Reported: the
best of R wall times and each feature's cost as a ratio to the same
library's plain map.  Pools are created inside the timing (MPIRE starts its
workers per map anyway), so "plain" includes start-up.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fworkloads as fw  # noqa: E402


def best_of(repeat, fn):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def gilfree_cases(backend, n, w):
    import gilfree

    sink = io.StringIO()

    def run(fn, progress=False, **opts):
        def go():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with gilfree.Pool(w, backend, **opts) as pool:
                    out = pool.map(fn, range(n), progress={"file": sink} if progress else False)
            assert out[-1] == n
        return go

    return [
        ("plain", run(fw.inc)),
        ("insights", run(fw.inc, insights=True)),
        ("worker_state+init", run(fw.inc_state, worker_state=True, initializer=fw.init_state)),
        ("progress bar", run(fw.inc, progress=True)),
        (f"recycle every {n // 20}", run(fw.inc, max_tasks_per_worker=n // 20)),
    ]


def mpire_cases(start_method, n, w):
    from mpire import WorkerPool

    def run(fn, pool_opts=None, **map_opts):
        def go():
            with open(os.devnull, "w") as devnull:
                stderr, sys.stderr = sys.stderr, devnull
                try:
                    with WorkerPool(w, start_method=start_method, **(pool_opts or {})) as pool:
                        out = pool.map(fn, range(n), **map_opts)
                finally:
                    sys.stderr = stderr
            assert out[-1] == n
        return go

    return [
        ("plain", run(fw.inc)),
        ("insights", run(fw.inc, {"enable_insights": True})),
        ("worker_state+init", run(fw.inc_state, {"use_worker_state": True}, worker_init=fw.init_state)),
        ("progress bar", run(fw.inc, progress_bar=True)),
        (f"recycle every {n // 20}", run(fw.inc, worker_lifespan=n // 20)),
    ]


GROUPS = {
    "gilfree threads": lambda n, w: gilfree_cases("threads", n, w),
    "gilfree processes": lambda n, w: gilfree_cases("processes", n, w),
    "MPIRE threading": lambda n, w: mpire_cases("threading", n, w),
    "MPIRE fork": lambda n, w: mpire_cases("fork", n, w),
}


def run_case(group, index, n, w, r):
    """One case, in this (fresh) process: prints its best time."""
    label, fn = GROUPS[group](n, w)[index]
    print(f"{best_of(r, fn):.6f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--case-timeout", type=float, default=60.0,
                    help="seconds before a case counts as hung (MPIRE's threading mode never "
                         "finishes with worker_lifespan)")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n, w, r = args.items, args.workers, args.repeat
    if args.case:
        group, index = args.case.rsplit(":", 1)
        run_case(group, int(index), n, w, r)
        return
    names = ["gilfree threads", "gilfree processes"]
    try:
        import mpire  # noqa: F401
        names += ["MPIRE threading", "MPIRE fork"]
    except ImportError:
        print("(mpire not installed: its columns are left out)")
    labels = [label for label, _ in gilfree_cases("threads", n, w)]
    print(f"map(inc, range({n:,})) on {w} workers, best of {r}, pool start-up included; "
          "each case in a fresh process")
    times = {}
    notes = []
    for name in names:
        for i in range(len(labels)):
            cmd = [sys.executable, os.path.abspath(__file__), "--case", f"{name}:{i}", "--items", str(n),
                   "--repeat", str(r), "--workers", str(w)]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.case_timeout)
                if out.returncode == 0:
                    times[name, i] = float(out.stdout.strip().splitlines()[-1])
                else:
                    err = (out.stderr.strip().splitlines() or ["?"])[-1]
                    times[name, i] = None
                    notes.append(f"{name} / {labels[i]}: failed: {err}")
            except subprocess.TimeoutExpired:
                times[name, i] = "hung"
            except (ValueError, IndexError):
                times[name, i] = None
    print(f"{'':<20}" + "".join(f"{name:>26}" for name in names))
    for i, label in enumerate(labels):
        cells = []
        for name in names:
            t, base = times[name, i], times[name, 0]
            if t == "hung":
                cells.append(f"> {args.case_timeout:.0f} s (hung)")
            elif t is None or not isinstance(base, float):
                cells.append("failed")
            else:
                cells.append(f"{t * 1e3:9.1f} ms ({t / base:5.2f}x)")
        print(f"{label:<20}" + "".join(f"{c:>26}" for c in cells))
    print("(x = this row / the same library's plain map; lower is better)")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
