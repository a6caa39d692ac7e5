"""Task functions of benchmarks/adapters.py (the drop-in adapters against their peers).

Worker processes import this module by name to unpickle the tasks they are sent, so the
tasks live here, at module level, not in the script: ``adapters.py`` puts this directory
on ``PYTHONPATH`` before any pool starts.  Nothing here times anything.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from typing import Any

SHA_BYTES = 1 << 20  # the GIL-releasing row: sha256 of 1 MiB per task
CPU_TASK_S = 0.010  # the pure-Python row: the calibrated duration of one task

# Built at import, identically in every process (about 1 ms), so that no task sends it
# and no worker pays for it inside a timed call.
SHA_BUFFER = random.Random(6).randbytes(SHA_BYTES)


def noop(x: Any = None) -> Any:
    """The no-op of the submit / apply_async rows: returns its argument (so that a
    result from the wrong call cannot pass the check)."""
    return x


def tiny(x: int) -> int:
    """The tiny function of the map rows: as cheap as a Python call gets."""
    return x + 1


def warm_task(_: Any = None) -> int:
    """The warm-up task of process pools: 5 ms asleep (so that every worker gets one),
    then its pid."""
    time.sleep(0.005)
    return os.getpid()


def spin(iters: int, i: int) -> int:
    """``iters`` steps of a 31-bit linear congruential generator seeded by ``i``: pure
    Python, holding the GIL throughout.  Every process is sent the same ``iters``."""
    x = i
    for _ in range(iters):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def calibrate_spin(target_s: float = CPU_TASK_S) -> int:
    """The ``iters`` that makes ``spin`` last about ``target_s`` here (best of 5)."""
    probe = 20_000
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        spin(probe, 1)
        best = min(best, time.perf_counter() - start)
    return max(1, round(probe * target_s / best))


def sha_task(i: int) -> str:
    """sha256 of the 1 MiB buffer with the task's index appended (hashlib releases the
    GIL while hashing more than 2 KiB); the hex digest, so that results differ per task."""
    h = hashlib.sha256(SHA_BUFFER)
    h.update(i.to_bytes(4, "little"))
    return h.hexdigest()
