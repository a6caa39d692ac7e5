"""Task functions and scripts for tests/python/test_dask.py (module-level, so
that Dask workers import them by reference)."""

from __future__ import annotations

import os
import signal
import time

from gfsupport import record


def kill_own_worker_at(target, x):
    """SIGKILL the process running this call when x == target."""
    if x == target:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def sleep_at(target, seconds, x):
    if x == target:
        time.sleep(seconds)
    return x


class PickleCounter:
    """A shared object that records each time it is pickled."""

    def __init__(self, path, payload):
        self.path = path
        self.payload = payload

    def __reduce__(self):
        record(self.path, "pickled")
        return (PickleCounter, (self.path, self.payload))


def make_a_dask_pool():
    """Run as a Dask task: a Pool(backend="dask") with no client."""
    import gilfree

    with gilfree.Pool(2, backend="dask") as pool:
        return pool.map(abs, [-1])


def shared_len(shared, x):
    return len(shared.payload) + x


# A child interpreter: sys.path from argv[1], then one scenario; prints one
# line of results (JSON) for the test to check.
CHILD_SCRIPT = r'''
import functools, json, os, sys, time
sys.path[:0] = json.loads(sys.argv[1])
import gilfree
import dasksupport
from gfsupport import descendant_pids, wait_until


def main(mode):
    out = {}
    if mode == "own_cluster":
        with gilfree.Pool(2, backend="dask") as pool:
            out["workers"] = pool.workers
            out["map"] = pool.map(abs, range(-3, 3))
            out["pids"] = pool.pids
            out["cluster"] = pool._cluster is not None
        out["alive_after"] = [p for p in out["pids"] if os.path.exists(f"/proc/{p}")]
        wait_until(lambda: not descendant_pids(), timeout=5)
        out["children_after"] = sorted(descendant_pids())
    elif mode == "killed_worker":
        with gilfree.Pool(2, backend="dask") as pool:
            killer = functools.partial(dasksupport.kill_own_worker_at, 3)
            try:
                pool.map(killer, range(8))
            except gilfree.WorkerDiedError as exc:
                out["map"] = ["died", exc.index]
            it = pool.imap(killer, range(8))
            got = []
            for _ in range(8):
                try:
                    got.append(next(it))
                except gilfree.WorkerDiedError as exc:
                    got.append(["died", exc.index, type(exc).__name__, str(exc)])
            out["imap"] = got
            try:
                pool.apply(dasksupport.kill_own_worker_at, (1, 1))
            except gilfree.WorkerDiedError as exc:
                out["apply"] = ["died", exc.index]
            out["after"] = pool.map(abs, range(-3, 3))
    elif mode == "task_timeout":
        with gilfree.Pool(2, backend="dask", task_timeout=1.0) as pool:
            t0 = time.monotonic()
            try:
                pool.map(functools.partial(dasksupport.sleep_at, 4, 30), range(10), chunksize=5)
            except gilfree.TaskTimeoutError as exc:
                out["map"] = [type(exc).__name__, exc.index, exc.timeout, exc.signal_name]
            out["seconds"] = time.monotonic() - t0
            out["after"] = pool.map(abs, range(-3, 3))
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[2])
'''
