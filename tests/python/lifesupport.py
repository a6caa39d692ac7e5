"""Worker functions for the worker lifecycle tests (module level, so that
process workers import them by reference)."""

from __future__ import annotations

import os
import threading
import time
import uuid

import gfsupport


def identity_of_worker() -> tuple:
    """What tells two workers apart on either backend: (pid, thread id)."""
    return (os.getpid(), threading.get_ident())


def init_state(state, tag):
    state["tag"] = tag
    state["life"] = uuid.uuid4().hex
    state["who"] = identity_of_worker()
    state["n"] = 0


def count_call(state, x):
    state["n"] += 1
    return (state["life"], state["n"], state["who"], x)


def count_call_slow(state, x):
    time.sleep(0.002)
    return count_call(state, x)


def exit_state(state):
    return (state["life"], state["n"])


def full_prefix(wid, shared, state, x):
    state["n"] = state.get("n", 0) + 1
    return (wid, shared, state.get("tag"), state["n"], x)


def full_prefix_star(wid, shared, state, a, b):
    return (wid, shared, a + b)


def full_prefix_kw(wid, shared, state, a, b=0):
    return (wid, shared, a * b)


def init_full(wid, shared, state, tag):
    state["tag"] = (tag, wid, shared)


def exit_full(wid, shared, state):
    return (wid, state.get("n", 0))


def worker_id_and_who(wid, x):
    time.sleep(0.005)
    return (wid, identity_of_worker())


def worker_affinity(wid, x):
    time.sleep(0.01)
    return (wid, tuple(sorted(os.sched_getaffinity(0))))


_log_path = None


def init_record(path, tag):
    """Record the start; the exit function writes to the same file."""
    global _log_path
    _log_path = path
    gfsupport.record(path, (tag, identity_of_worker()))


def exit_record():
    gfsupport.record(_log_path, ("exit", identity_of_worker()))
    return identity_of_worker()


def init_fail(*args):
    raise ValueError("initializer says no")


def init_sleep(seconds):
    time.sleep(seconds)


def exit_fail():
    raise KeyError("exit says no")


def exit_sleep(seconds):
    time.sleep(seconds)
    return "slept"


def shared_summary(shared, x):
    """What a worker sees of a numpy array passed as shared=."""
    a = shared
    backing = []
    while a is not None:
        backing.append(type(a).__name__)
        a = a.obj if isinstance(a, memoryview) else getattr(a, "base", None)
    return (float(shared[x]), backing, id(shared))


class CountsPickles:
    """A shared object that counts, in a file, how often it is pickled."""

    def __init__(self, path, value):
        self.path = path
        self.value = value

    def __reduce__(self):
        gfsupport.record(self.path, "pickled")
        return (_rebuild_counts, (self.path, self.value))


def _rebuild_counts(path, value):
    obj = CountsPickles.__new__(CountsPickles)
    obj.path = path
    obj.value = value
    return obj


def shared_value(shared, x):
    return shared.value + x


def tick(state, x):
    state["n"] = state.get("n", 0) + 1
    time.sleep(0.001)
    return state["n"]


def init_sleep_then_fail(seconds):
    """An initializer that fails after the first calls have been queued."""
    time.sleep(seconds)
    raise LookupError("the model file is missing")
