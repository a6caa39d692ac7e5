"""Task functions for tests/python/test_executor.py.

Module level, in an importable module, so that worker processes can unpickle
them.  Tasks that tell the test they have started do it through a file
(visible from any thread or process)."""

from __future__ import annotations

import os
import time
from pathlib import Path

_initialized: "list[object]" = []


def square(x):
    return x * x


def add(a, b):
    return a + b


def power(base, exp=2):
    return base ** exp


def sleep_then(value, delay):
    time.sleep(delay)
    return value


def started_then_sleep(marker, delay, value=None):
    """Create *marker* (a path), sleep *delay* seconds, return *value*."""
    Path(marker).touch()
    time.sleep(delay)
    return value


def raise_value_error(message):
    raise ValueError(message)


class CustomError(Exception):
    pass


def raise_custom(code):
    raise CustomError(code)


def getpid(_=None):
    return os.getpid()


def pid_after(delay):
    time.sleep(delay)
    return os.getpid()


def die(code=1):
    os._exit(code)


def init_remember(value):
    _initialized.append(value)


def initialized(_=None):
    return list(_initialized)


def init_fail():
    raise KeyError("initializer failed on purpose")


def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x
