"""Task functions for tests/python/test_compat_mpire.py (module level, so
that process workers import them by reference).

The functions take MPIRE's leading arguments where a test enables them:
``worker_id``, then the shared objects, then the worker state dict.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any, Dict


def who() -> tuple:
    """What tells two workers apart on either backend: (pid, thread id)."""
    return (os.getpid(), threading.get_ident())


def echo(*args: Any, **kwargs: Any) -> tuple:
    """How the item was passed: (positional args, keyword args)."""
    return (args, kwargs)


def square(x: int) -> int:
    return x * x


def add(x: int, y: int = 0) -> int:
    return x + y


def sleep_then(x: float, value: Any = None) -> Any:
    time.sleep(x)
    return x if value is None else value


def sleepy_square(x: int) -> int:
    """Later inputs finish first: completion order differs from input order."""
    time.sleep(0.002 * (10 - x % 10))
    return x * x


def fail_on(x: int, bad: int = 3) -> int:
    if x == bad:
        raise ZeroDivisionError(f"input {bad} is bad")
    return x


def pid_of(_x: Any) -> int:
    time.sleep(0.002)
    return os.getpid()


def affinity(_x: Any) -> tuple:
    time.sleep(0.01)
    return tuple(sorted(os.sched_getaffinity(0)))


def wid_and_who(worker_id: int, _x: Any) -> tuple:
    time.sleep(0.003)
    return (worker_id, who())


def shared_sum(shared: Dict[str, int], x: int) -> int:
    return shared["base"] + x


# -- state: a "life" id per worker life, a count of its tasks ----------------


def init_life(state: Dict[str, Any]) -> None:
    state["life"] = uuid.uuid4().hex
    state["n"] = 0
    state["who"] = who()


def count(state: Dict[str, Any], x: Any) -> tuple:
    """(life, n-th task of this life, worker identity, x); a state never
    initialised gets its life here."""
    if "life" not in state:
        init_life(state)
    state["n"] += 1
    time.sleep(0.002)
    return (state["life"], state["n"], state["who"], x)


def exit_life(state: Dict[str, Any]) -> tuple:
    return (state.get("life"), state.get("n", 0))


# -- all three leading arguments --------------------------------------------


def init_full(worker_id: int, shared: Any, state: Dict[str, Any]) -> None:
    state["init"] = (worker_id, shared)
    state["n"] = 0


def task_full(worker_id: int, shared: Any, state: Dict[str, Any], x: int, y: int = 0) -> tuple:
    state["n"] += 1
    time.sleep(0.002)
    return (worker_id, shared, state["init"], x + y)


def exit_full(worker_id: int, shared: Any, state: Dict[str, Any]) -> tuple:
    return (worker_id, shared, state["n"])


# -- failing lifecycles -------------------------------------------------------


def init_raises(state: Dict[str, Any]) -> None:
    raise LookupError("worker_init refuses")


def exit_raises(state: Dict[str, Any]) -> None:
    raise KeyError("worker_exit refuses")


def init_sleeps(state: Dict[str, Any]) -> None:
    # Short: a thread cannot be stopped, and the test's leak check waits
    # for it to end (a process is killed at the timeout).
    time.sleep(0.8)


def stateful_identity(state: Dict[str, Any], x: Any) -> Any:
    return x


# -- numpy ------------------------------------------------------------------------


def rows_and_sum(chunk: Any) -> Any:
    """A numpy chunk in, [[rows of this chunk, sum of the chunk]] out."""
    import numpy as np

    return np.array([[chunk.shape[0], int(chunk.sum())]])


def as_pair_array(x: int) -> Any:
    import numpy as np

    return np.array([x, -x])
