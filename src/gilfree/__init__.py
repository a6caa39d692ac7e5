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

import importlib
from typing import TYPE_CHECKING, Any, List

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

if TYPE_CHECKING:
    from ._executor import Executor
    from ._insights import Insights
    from ._pool import Decision, PerformanceWarning, Pool, map, usable_cpus
    from ._probe import Probe, probe

__version__ = "0.1.0"

# The Python layer is imported on first use of one of its names (PEP 562):
# a worker process, and the forkserver that starts them, import gilfree for
# its C core only, and `import gilfree` stays cheap.
_LAZY = {
    "Executor": "_executor",
    "Insights": "_insights",
    "Decision": "_pool",
    "PerformanceWarning": "_pool",
    "Pool": "_pool",
    "map": "_pool",
    "usable_cpus": "_pool",
    "Probe": "_probe",
    "probe": "_probe",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gilfree' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value   # next time a plain module attribute
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))

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
