"""Task functions and inputs of the process workloads (``p-*``) of the benchmark harness.

Worker processes import this module by name to unpickle the functions they are sent, so
it must be importable in every child, whatever its start method: ``run.py`` puts this
directory on ``PYTHONPATH`` before any pool starts (fork children inherit ``sys.path``
anyway; multiprocessing's forkserver and loky pass the parent's ``sys.path`` along, but
other implementations need not).  Importing this module also imports numpy when it is
installed, so a pool's warm-up call (``warm_task``) pays numpy's import in each worker
before any timer starts.  Nothing here times a pool.
"""

from __future__ import annotations

import os
import time
from typing import Any

from workloads import numpy  # None without numpy (its rows are then skipped)

# p-send / p-recv: one 16 MiB float64 array per task.
ARRAY_ELEMENTS = 2 * 1024 * 1024
ARRAY_BYTES = ARRAY_ELEMENTS * 8
CPU_TASK_S = 0.010  # p-cpu: the calibrated duration of one task in the parent

_SEND_ARRAYS: list[Any] = []  # p-send's inputs, built before the rows are timed


# --- warm-up -----------------------------------------------------------------------------

def warm_task(_: Any = None) -> int:
    """The warm-up task: 5 ms asleep (so that every worker gets a task), then its pid."""
    time.sleep(0.005)
    return os.getpid()


# --- p-cpu: pure-Python CPU work -----------------------------------------------------------

def spin(iters: int, i: int) -> int:
    """``iters`` steps of a 31-bit linear congruential generator seeded by ``i``.

    Pure Python bytecode: it holds the GIL throughout, so only processes run it in parallel.
    Every process is given the same ``iters`` (through ``functools.partial``), so a task
    costs the same everywhere.
    """
    x = i
    for _ in range(iters):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def calibrate_spin(target_s: float = CPU_TASK_S) -> int:
    """The ``iters`` that makes ``spin`` last about ``target_s`` here (best of 5)."""
    probe = 20_000
    best = min(_time_spin(probe) for _ in range(5))
    iters = max(1, round(probe * target_s / best))
    return iters


def _time_spin(iters: int) -> float:
    start = time.perf_counter()
    spin(iters, 1)
    return time.perf_counter() - start


# --- p-send / p-recv: 16 MiB arrays ----------------------------------------------------------

def send_task(arr: Any) -> float:
    """p-send's task: receives a 16 MiB array, returns a scalar from both of its ends."""
    return float(arr[0] + arr[-1])


def recv_task(i: int) -> Any:
    """p-recv's task: returns a fresh 16 MiB float64 array filled with ``i``."""
    return numpy.full(ARRAY_ELEMENTS, i, dtype=numpy.float64)


def prepare_send(n: int) -> None:
    """Build p-send's ``n`` distinct arrays (array i is filled with i) in the parent."""
    if numpy is None:
        raise RuntimeError("numpy is not installed")
    while len(_SEND_ARRAYS) < n:
        _SEND_ARRAYS.append(numpy.full(ARRAY_ELEMENTS, len(_SEND_ARRAYS), dtype=numpy.float64))


def send_arrays(n: int) -> list[Any]:
    """The first ``n`` of p-send's arrays (``prepare_send`` must have built them)."""
    return _SEND_ARRAYS[:n]


def release_send() -> None:
    """Free p-send's arrays, so later forks do not copy their page tables."""
    _SEND_ARRAYS.clear()
