"""Ctrl-C latency: how long after SIGINT does a pool call raise KeyboardInterrupt?

The parent (``measure``) starts this file as a child process; the child makes a pool,
prints ``READY`` and calls ``map`` over many 10 ms sleeping tasks, which would take
minutes.  The parent waits a moment so that the workers are busy and the main thread is
blocked inside ``map``, notes ``time.monotonic()`` and sends SIGINT.  The child prints its
own ``time.monotonic()`` as soon as it catches KeyboardInterrupt; both clocks are
CLOCK_MONOTONIC, so the difference is the latency without pipe or scheduling delay of the
parent.  The child then checks that the pool is still usable (a short ``map`` must
finish, which needs the interrupted call's queued work to have been cancelled) and exits
with ``os._exit`` so that no lingering worker can keep it alive.

Run as ``python ctrlc.py LIBRARY WORKERS`` (the child side); LIBRARY is one of
``gilfree``, ``threadpool``, ``tpe``.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any

LIBRARIES = ("gilfree", "threadpool", "tpe")
SETTLE_S = 0.3  # how long the child's map() runs before SIGINT is sent


def _child(library: str, workers: int) -> None:
    """The child side: block in map() over sleeping tasks until SIGINT arrives."""
    # A parent started in the background may hand us SIGINT ignored; restore Python's own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from workloads import sleep_task

    # 10,000 x 10 ms / workers: far longer than the test, yet short enough to submit well
    # before SIGINT (executor.map submits every item up front, ~10 us each).
    items = range(10_000)
    if library == "gilfree":
        import gilfree

        pool: Any = gilfree.Pool(workers)
        run_map = lambda: pool.map(sleep_task, items)  # noqa: E731
        check = lambda: pool.map(abs, range(-20, 0))  # noqa: E731
    elif library == "threadpool":
        from multiprocessing.pool import ThreadPool

        pool = ThreadPool(workers)
        run_map = lambda: pool.map(sleep_task, items)  # noqa: E731
        check = lambda: pool.map(abs, range(-20, 0))  # noqa: E731
    elif library == "tpe":
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=workers)
        run_map = lambda: list(pool.map(sleep_task, items))  # noqa: E731
        check = lambda: list(pool.map(abs, range(-20, 0)))  # noqa: E731
    else:
        raise SystemExit(f"unknown library {library!r}; choose from {LIBRARIES}")

    check()  # warm: the workers exist and have run something
    print("READY", flush=True)
    try:
        run_map()
        print("FINISHED", flush=True)  # not expected: the parent interrupts long before
    except KeyboardInterrupt:
        print(f"CAUGHT {time.monotonic()!r}", flush=True)
    ok = check() == list(range(20, 0, -1))
    print(f"USABLE {time.monotonic()!r} {ok}", flush=True)
    os._exit(0)


def _reader(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _wait_for(lines: queue.Queue[str | None], prefix: str, deadline: float) -> str | None:
    """The first line starting with ``prefix`` before ``deadline`` (monotonic), or None."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            return None
        if line is None:  # the child's stdout closed
            return None
        if line.startswith(prefix):
            return line


def measure(library: str, workers: int, timeout_s: float = 5.0,
            usable_timeout_s: float = 2.0) -> dict[str, Any]:
    """Run one child, interrupt it, and return the measured latencies.

    Keys: ``latency_ms`` (None if no KeyboardInterrupt within ``timeout_s``),
    ``usable_ms`` (SIGINT to the follow-up map() finishing; None if it did not within
    ``usable_timeout_s`` of the interrupt), ``usable_ok``, ``error`` (a string or None).
    """
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), library, str(workers)],
        cwd=here, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    result: dict[str, Any] = {"latency_ms": None, "usable_ms": None, "usable_ok": None,
                              "error": None}
    try:
        if _wait_for(lines, "READY", time.monotonic() + 30.0) is None:
            result["error"] = "child never became ready"
            return result
        time.sleep(SETTLE_S)
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        caught = _wait_for(lines, "CAUGHT", sent + timeout_s)
        if caught is None:
            return result
        result["latency_ms"] = (float(caught.split()[1]) - sent) * 1e3
        usable = _wait_for(lines, "USABLE", time.monotonic() + usable_timeout_s)
        if usable is not None:
            _, stamp, ok = usable.split()
            result["usable_ms"] = (float(stamp) - sent) * 1e3
            result["usable_ok"] = ok == "True"
        return result
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a kill()ed child exits
            err = ""
        if result["latency_ms"] is None and err.strip():
            tail = err.strip().splitlines()[-1]
            if "KeyboardInterrupt" not in tail:
                result["error"] = (result["error"] + ": " if result["error"] else "") + tail


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))
