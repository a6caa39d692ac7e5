"""Task functions for tests/python/test_compat_multiprocessing.py (module
level, so that process workers import them by reference)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

_greeting: Any = None


def square(x: int) -> int:
    return x * x


def add(x: int, y: int = 0) -> int:
    return x + y


def pid(_: Any = None) -> int:
    return os.getpid()


def sleep_then(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return seconds if value is None else value


def fail_on(x: int, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x


def kill_self_on(x: int, bad: int = 3) -> int:
    """SIGKILL this worker process on input *bad*."""
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def remember(greeting: Any, log: str = "") -> None:
    """An initializer: keeps *greeting*; appends this pid to *log* if given."""
    global _greeting
    _greeting = greeting
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")


def greeting(_: Any = None) -> Any:
    return _greeting


def broken_initializer() -> None:
    raise RuntimeError("initializer failed")


class Unrebuildable(Exception):
    """An exception that pickles but cannot be unpickled (its __init__ needs two
    arguments): the standard library's result handler dies on it."""

    def __init__(self, a: Any, b: Any) -> None:
        super().__init__(a)


def raise_unrebuildable(x: Any) -> None:
    raise Unrebuildable(x, 2)
