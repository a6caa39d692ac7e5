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

# The warm-up and the calibrated pure-Python task are the process benchmarks' own.
from pworkloads import CPU_TASK_S, calibrate_spin, spin, warm_task  # noqa: F401

SHA_BYTES = 1 << 20  # the GIL-releasing row: sha256 of 1 MiB per task

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


def sha_task(i: int) -> str:
    """sha256 of the 1 MiB buffer with the task's index appended (hashlib releases the
    GIL while hashing more than 2 KiB); the hex digest, so that results differ per task."""
    h = hashlib.sha256(SHA_BUFFER)
    h.update(i.to_bytes(4, "little"))
    return h.hexdigest()
