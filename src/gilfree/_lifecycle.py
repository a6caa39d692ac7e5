"""Worker lifecycle options: checked here, run by the C core.

``gilfree.Pool(initializer=..., initargs=..., worker_exit=...,
worker_state=..., pass_worker_id=..., shared=..., max_tasks_per_worker=...,
cpu_affinity=..., init_timeout=..., exit_timeout=...)`` turns them into the
tuple that ``gilfree._core.Pool`` takes (see ``lifecycle.c``): thread
workers use it in place; process workers receive it once, when they start.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = ["LIFECYCLE_OPTIONS", "lifecycle_spec", "NOT_GIVEN"]


class _NotGiven:
    """Marks ``shared=`` as not given (None is a valid shared object)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<not given>"


NOT_GIVEN: Any = _NotGiven()

LIFECYCLE_OPTIONS = (
    "initializer",
    "initargs",
    "worker_exit",
    "worker_state",
    "pass_worker_id",
    "shared",
    "max_tasks_per_worker",
    "cpu_affinity",
    "init_timeout",
    "exit_timeout",
)

CpuAffinity = Union[Sequence[int], Sequence[Union[int, Sequence[int]]]]


def _callable_or_none(name: str, value: Any) -> Optional[Callable[..., Any]]:
    if value is not None and not callable(value):
        raise TypeError(f"Pool(): {name} must be callable or None, got {value!r} (type {type(value).__name__})")
    return value


def _seconds(name: str, value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Pool(): {name} must be a number of seconds or None, got {value!r}")
    if not value > 0:  # also NaN
        raise ValueError(f"Pool(): {name} must be > 0, got {value!r}")
    return float(value)


def _allowed_cpus() -> Optional[set]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return None


def _cpu_id(value: Any, allowed: Optional[set], where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Pool(): cpu_affinity: {where} must be a CPU id (int), got {value!r}")
    if value < 0 or (allowed is not None and value not in allowed):
        shown = ", ".join(str(c) for c in sorted(allowed)) if allowed is not None else "?"
        raise ValueError(
            f"Pool(): cpu_affinity: CPU {value} ({where}) is not one this process may run on ({shown})"
        )
    return value


def affinity_per_worker(cpu_affinity: Any, workers: int) -> Optional[Tuple[Tuple[int, ...], ...]]:
    """One tuple of CPU ids per worker, or None.

    A list of ints spreads the workers over those CPUs (worker i on
    ``cpus[i % len(cpus)]``); a list with one entry per worker, each an int
    or a list of ints, gives each worker its own set.
    """
    if cpu_affinity is None:
        return None
    if isinstance(cpu_affinity, (str, bytes)) or not isinstance(cpu_affinity, Iterable):
        raise TypeError(f"Pool(): cpu_affinity must be a list of CPU ids or of lists of CPU ids, got {cpu_affinity!r}")
    entries = list(cpu_affinity)
    if not entries:
        raise ValueError("Pool(): cpu_affinity must not be empty")
    allowed = _allowed_cpus()
    if all(isinstance(e, int) and not isinstance(e, bool) for e in entries):
        cpus = [_cpu_id(e, allowed, f"entry {k}") for k, e in enumerate(entries)]
        return tuple((cpus[i % len(cpus)],) for i in range(workers))
    if len(entries) != workers:
        raise ValueError(
            f"Pool(): cpu_affinity has {len(entries)} entries but the pool has {workers} workers: give "
            "a list of CPU ids (spread over the workers) or exactly one entry (a CPU id or a list of "
            "them) per worker"
        )
    out: List[Tuple[int, ...]] = []
    for i, e in enumerate(entries):
        if isinstance(e, int) and not isinstance(e, bool):
            out.append((_cpu_id(e, allowed, f"worker {i}"),))
            continue
        if isinstance(e, (str, bytes)) or not isinstance(e, Iterable):
            raise TypeError(f"Pool(): cpu_affinity: worker {i}'s entry must be a CPU id or a list of them, got {e!r}")
        ids = tuple(_cpu_id(c, allowed, f"worker {i}") for c in e)
        if not ids:
            raise ValueError(f"Pool(): cpu_affinity: worker {i}'s list of CPUs is empty")
        out.append(ids)
    return tuple(out)


def lifecycle_spec(workers: int, options: dict) -> Optional[tuple]:
    """Check the lifecycle options (a dict holding some of
    :data:`LIFECYCLE_OPTIONS`); the tuple ``_core.Pool`` takes, or None when
    none of them asks for anything."""
    initializer = _callable_or_none("initializer", options.get("initializer"))
    worker_exit = _callable_or_none("worker_exit", options.get("worker_exit"))
    initargs = options.get("initargs", ())
    if isinstance(initargs, (str, bytes)) or not isinstance(initargs, Iterable):
        raise TypeError(f"Pool(): initargs must be a tuple of arguments, got {initargs!r}")
    initargs = tuple(initargs)
    if initargs and initializer is None:
        raise ValueError("Pool(): initargs given without an initializer")
    flags = {}
    for name in ("worker_state", "pass_worker_id"):
        value = options.get(name, False)
        if not isinstance(value, bool):
            raise TypeError(f"Pool(): {name} must be True or False, got {value!r}")
        flags[name] = value
    shared = options.get("shared", NOT_GIVEN)
    has_shared = shared is not NOT_GIVEN
    max_tasks = options.get("max_tasks_per_worker")
    if max_tasks is not None:
        if isinstance(max_tasks, bool) or not isinstance(max_tasks, int):
            raise TypeError(f"Pool(): max_tasks_per_worker must be an int or None, got {max_tasks!r}")
        if max_tasks < 1:
            raise ValueError(f"Pool(): max_tasks_per_worker must be >= 1, got {max_tasks!r}")
    init_timeout = _seconds("init_timeout", options.get("init_timeout"))
    exit_timeout = _seconds("exit_timeout", options.get("exit_timeout"))
    if init_timeout and initializer is None:
        raise ValueError("Pool(): init_timeout given without an initializer")
    if exit_timeout and worker_exit is None:
        raise ValueError("Pool(): exit_timeout given without worker_exit")
    cpus = affinity_per_worker(options.get("cpu_affinity"), workers)
    if (
        initializer is None
        and worker_exit is None
        and not flags["worker_state"]
        and not flags["pass_worker_id"]
        and not has_shared
        and max_tasks is None
        and cpus is None
    ):
        return None
    return (
        initializer,
        initargs,
        worker_exit,
        flags["worker_state"],
        flags["pass_worker_id"],
        has_shared,
        None if not has_shared else shared,
        max_tasks or 0,
        init_timeout,
        exit_timeout,
        cpus,
    )
