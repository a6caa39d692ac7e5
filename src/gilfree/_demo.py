"""``python -m gilfree demo``: serial code against gilfree's backends on built-in workloads.

Three kinds of work, chosen to show where a thread pool helps and where it cannot:

* pure-Python CPU work (trial-division prime counting) holds the GIL, so threads give no
  speed-up; the "processes" backend does;
* GIL-releasing work (sha256 and zlib over large buffers, a numpy matrix product with BLAS
  held to one thread) runs in parallel on threads;
* many tiny tasks (``x + 1`` over a million items) measure what the pool itself costs.

Each backend is a column group of the table; ``BACKENDS`` lists them in order and a
backend this build of gilfree does not offer is skipped with a note.  Every task function
is a module-level function of one ``int`` whose data is rebuilt lazily and identically
wherever it runs, so the same table works for a process backend.  The benchmarks proper
(gilfree against its peers) live in ``benchmarks/`` of the source tree.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import random
import sys
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import gilfree

BACKENDS: tuple[str, ...] = ("threads", "processes", "auto")
"""Backends shown as columns, in order."""

PRIME_LIMIT = 20_000
SHA_BYTES = 8 << 20
ZLIB_BYTES = 4 << 20
MATRIX_N = 400
_BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# --- task functions (module level, one int argument) -----------------------------------------

def count_primes(_: int) -> int:
    """Count the primes below ``PRIME_LIMIT`` by trial division: pure Python, holds the GIL."""
    count = 0
    for candidate in range(2, PRIME_LIMIT):
        divisor = 2
        while divisor * divisor <= candidate:
            if candidate % divisor == 0:
                break
            divisor += 1
        else:
            count += 1
    return count


@functools.cache
def _random_bytes(k: int) -> bytes:
    return random.Random(k).randbytes(SHA_BYTES)


@functools.cache
def _text(k: int) -> bytes:
    """``ZLIB_BYTES`` of random words: compressible, but not trivially (about 3:1)."""
    rng = random.Random(100 + k)
    vocab = ["".join(rng.choices("etaoinshrdlcumwfgypbvkjxqz", k=rng.randint(2, 10)))
             for _ in range(4000)]
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    text = " ".join(rng.choices(vocab, weights=weights, k=ZLIB_BYTES // 4)).encode("ascii")
    while len(text) < ZLIB_BYTES:
        text += text
    return text[:ZLIB_BYTES]


@functools.cache
def _matrix(k: int) -> Any:
    import numpy

    return numpy.random.default_rng(k).standard_normal((MATRIX_N, MATRIX_N))


def sha256_task(i: int) -> str:
    """sha256 of an 8 MB buffer; hashlib releases the GIL while it hashes."""
    return hashlib.sha256(_random_bytes(i % 4)).hexdigest()


def zlib_task(i: int) -> int:
    """zlib.compress, level 6, of 4 MB of text; zlib releases the GIL while it deflates."""
    return len(zlib.compress(_text(i % 2), 6))


def matmul_task(i: int) -> float:
    """A 400x400 float64 matrix product; BLAS runs without the GIL."""
    return float((_matrix(i % 4) @ _matrix((i + 1) % 4))[0, 0])


def inc(x: int) -> int:
    """The tiny task: one addition."""
    return x + 1


# --- the workloads ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """One table row: ``func`` applied to ``range(items)``."""

    label: str
    func: Callable[[int], Any]
    items: int
    quick_items: int
    prepare: Callable[[], Any] | None = None  # builds the inputs before anything is timed


def _numpy_available() -> bool:
    """Import numpy with BLAS held to one thread (so "serial" really is one core)."""
    if "numpy" not in sys.modules:
        for var in _BLAS_VARS:
            os.environ[var] = "1"
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def workloads(with_numpy: bool) -> list[Workload]:
    """The demo's rows, in table order."""
    rows = [
        Workload(f"pure Python: count primes < {PRIME_LIMIT:,}", count_primes, 32, 8),
        Workload("GIL-releasing: sha256 of 8 MB", sha256_task, 64, 16,
                 lambda: [_random_bytes(k) for k in range(4)]),
        Workload("GIL-releasing: zlib level 6, 4 MB", zlib_task, 8, 4,
                 lambda: [_text(k) for k in range(2)]),
    ]
    if with_numpy:
        rows.append(Workload(f"GIL-releasing: numpy matmul {MATRIX_N}x{MATRIX_N}",
                             matmul_task, 200, 50, lambda: [_matrix(k) for k in range(4)]))
    rows.append(Workload("tiny tasks: x + 1", inc, 1_000_000, 200_000))
    return rows


# --- measuring and printing ---------------------------------------------------------------------

def _serial_map(func: Callable[[int], Any], n: int) -> list[Any]:
    """The serial baseline: a list comprehension in this thread."""
    return [func(i) for i in range(n)]


def _timed(call: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """(wall time of ``call(*args)``, its result)."""
    start = time.perf_counter()
    result = call(*args)
    return time.perf_counter() - start, result


def _fmt_time(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.0f} ms"


def _fmt_rate(per_second: float) -> str:
    for scale, suffix in ((1e6, " M"), (1e3, " k")):
        if per_second >= scale:
            return f"{per_second / scale:.1f}{suffix}"
    return f"{per_second:.1f}"


class _Table:
    """Fixed-width columns: label, items, serial (time, items/s), then per backend
    (time, speed-up, items/s)."""

    def __init__(self, backends: list[str], workers: int, out: TextIO) -> None:
        self.backends = backends
        self.out = out
        self.widths = [36, 10] + [9, 9] + [9, 9, 9] * len(backends)
        groups = ["", "", "serial"] + [f"{b} ({workers} workers)" for b in backends]
        spans = [1, 1, 2] + [3] * len(backends)
        top, col = [], 0
        for text, span in zip(groups, spans, strict=True):
            width = sum(self.widths[col:col + span]) + 2 * (span - 1)
            top.append(f"{text:^{width}}" if text else " " * width)
            col += span
        self._line("  ".join(top))
        names = ["workload", "items", "time", "items/s"]
        names += ["time", "speed-up", "items/s"] * len(backends)
        self.row(names)
        self._line("-" * (sum(self.widths) + 2 * (len(self.widths) - 1)))

    def _line(self, text: str) -> None:
        print(text.rstrip(), file=self.out, flush=True)

    def row(self, cells: list[str]) -> None:
        parts = [f"{cells[0]:<{self.widths[0]}}"]
        pairs = zip(cells[1:], self.widths[1:], strict=True)
        parts += [f"{cell:>{width}}" for cell, width in pairs]
        self._line("  ".join(parts))


def _open_pools(workers: int, out: TextIO) -> dict[str, Any]:
    """One warmed pool per backend this build offers; the others get a note."""
    pools: dict[str, Any] = {}
    for backend in BACKENDS:
        try:
            pool = gilfree.Pool(workers, backend=backend)
        except ValueError as exc:
            print(f"(backend {backend!r} skipped: {exc})", file=out)
            continue
        pool.map(inc, range(4 * workers), chunksize=1)  # workers started and warm
        pools[backend] = pool
    return pools


def plot_timeline(path: str, workers: int, quick: bool, out: TextIO) -> None:
    """Run the pure-Python and the sha256 workloads on a thread pool, then on a
    process pool, both with insights on, and draw them on one timeline: the
    threads take turns on the GIL for pure Python (orange: off CPU) and run
    sha256 side by side; the processes run both side by side."""
    prime_items = 8 if quick else 16
    sha_items = 16 if quick else 32
    [_random_bytes(k) for k in range(4)]
    raws = []
    for backend in ("threads", "processes"):
        with gilfree.Pool(workers, backend, insights=True) as pool:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", gilfree.PerformanceWarning)
                pool.map(count_primes, range(prime_items), chunksize=1)
                pool.map(sha256_task, range(sha_items), chunksize=1)
        raws.append(pool._insights_raw())
    insights = gilfree.Insights(raws)
    try:
        insights.plot(path, title=(f"{prime_items} x count primes, then {sha_items} x sha256: "
                                   f"{workers} threads, then {workers} processes"))
    except ImportError as exc:
        print(f"(no plot: {exc})", file=out)
        return
    print(file=out)
    print(insights, file=out)
    print(f"timeline written to {path}", file=out)


def run_demo(workers: int | None = None, quick: bool = False, repeat: int | None = None,
             out: TextIO | None = None, plot: str | None = None) -> int:
    """Print the serial-versus-gilfree table; return 0, or 1 if a result was wrong.

    ``workers`` defaults to ``gilfree.usable_cpus()``; ``quick`` shrinks the inputs and
    takes the best of 2 runs instead of 3 (``repeat`` overrides that); ``plot`` writes
    an insights timeline (PNG) of threads and processes on two of the workloads.
    """
    out = sys.stdout if out is None else out
    workers = gilfree.usable_cpus() if workers is None else workers
    repeat = (2 if quick else 3) if repeat is None else repeat
    with_numpy = _numpy_available()
    limits: Any = None
    if with_numpy:
        try:  # hold BLAS to one thread even if numpy was imported before us
            from threadpoolctl import threadpool_limits

            limits = threadpool_limits(limits=1)
        except ImportError:
            pass

    version = getattr(gilfree, "__version__", "?")
    print(f"gilfree {version} demo: {workers} workers, {gilfree.usable_cpus()} usable CPUs, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"best of {repeat} run{'s' if repeat != 1 else ''} per cell", file=out)
    if not with_numpy:
        print("(numpy is not installed: the matmul row is left out)", file=out)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5:
        print(f"(load average {load:.1f}: other programs are using the CPUs, so the "
              "timings will be noisy and speed-ups lower)", file=out)
    pools = _open_pools(workers, out)
    if not pools:
        print("no backend available", file=out)
        return 1
    print(file=out)
    wrong: list[str] = []
    choices: list[tuple[str, Any]] = []
    try:
        table = _Table(list(pools), workers, out)
        for work in workloads(with_numpy):
            n = work.quick_items if quick else work.items
            if work.prepare is not None:
                work.prepare()
            # Best of `repeat` rounds; each round runs serial and every backend once, so
            # that a burst of other load on the machine hits them alike.
            best = dict.fromkeys(["serial", *pools], float("inf"))
            for _ in range(repeat):
                elapsed, expected = _timed(_serial_map, work.func, n)
                best["serial"] = min(best["serial"], elapsed)
                for backend, pool in pools.items():
                    with warnings.catch_warnings():
                        # The threads column runs pure Python on purpose, to
                        # show what the GIL does; no need to warn about it.
                        warnings.simplefilter("ignore", gilfree.PerformanceWarning)
                        elapsed, got = _timed(pool.map, work.func, range(n))
                    best[backend] = min(best[backend], elapsed)
                    if got != expected and f"{work.label} on {backend}" not in wrong:
                        wrong.append(f"{work.label} on {backend}")
            serial = best["serial"]
            cells = [work.label, f"{n:,}", _fmt_time(serial), _fmt_rate(n / serial)]
            for backend in pools:
                cells += [_fmt_time(best[backend]), f"{serial / best[backend]:.2f}x",
                          _fmt_rate(n / best[backend])]
            table.row(cells)
            if "auto" in pools and pools["auto"].decision is not None:
                choices.append((work.label, pools["auto"].decision))
    finally:
        for pool in pools.values():
            pool.close()
            pool.join()
        if limits is not None:
            limits.restore_original_limits()
    print(file=out)
    print(f"speed-up = serial time / pool time (at most {workers}x). Threads speed up "
          "GIL-releasing work, not pure-Python work (it holds the GIL); processes speed up "
          "both, at the price of sending inputs and results between processes.", file=out)
    if choices:
        print("auto measured each function on its first items and chose:", file=out)
        for label, decision in choices:
            print(f"  {label:<36}  {decision.backend:<9}  {decision.reason}", file=out)
    for what in wrong:
        print(f"WRONG RESULT: {what} differs from the serial result", file=out)
    if plot is not None:
        plot_timeline(plot, workers, quick, out)
    return 1 if wrong else 0
