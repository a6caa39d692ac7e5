"""gilfree: run a Python function over many inputs on every CPU core.

A C core with native worker threads, chunked lock-free dispatch and waiting
that never holds the GIL.  The API follows :mod:`multiprocessing.pool` and
:mod:`concurrent.futures`::

    import gilfree

    with gilfree.Pool() as pool:            # one worker per usable CPU
        squares = pool.map(lambda x: x * x, range(10))
        future = pool.submit(sum, squares)  # a concurrent.futures.Future
        print(future.result())              # 285

See ``python -m gilfree demo`` for what it does on this machine.
"""

from __future__ import annotations

from ._core import (
    AsyncResult,
    InitializerError,
    MapIterator,
    PoolTerminated,
    RemoteTraceback,
    TaskTimeoutError,
    WorkerDiedError,
    WorkerExitError,
)
from ._executor import Executor
from ._insights import Insights
from ._pool import Decision, PerformanceWarning, Pool, map, usable_cpus
from ._probe import Probe, probe

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "Decision",
    "Executor",
    "InitializerError",
    "Insights",
    "MapIterator",
    "PerformanceWarning",
    "Pool",
    "Probe",
    "PoolTerminated",
    "RemoteTraceback",
    "TaskTimeoutError",
    "WorkerDiedError",
    "WorkerExitError",
    "__version__",
    "map",
    "probe",
    "usable_cpus",
]
