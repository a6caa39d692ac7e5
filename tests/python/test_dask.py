"""backend="dask" (issue 7): what the shared suite cannot check -- a worker
killed mid-task, task_timeout, a scheduler that does not answer, the
client's ownership, the pool's own LocalCluster, shared= scattered once,
chunking, and the message without the optional extra.  The shared suite
(conftest's BACKENDS) runs everything else on the session's cluster."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import warnings

import pytest

import gilfree
import gfsupport
from gfsupport import Recorder, add_one, square

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed (pip install gilfree[dask])")

import dasksupport  # noqa: E402

pytestmark = [pytest.mark.timeout(60), pytest.mark.dask]


def run_child(mode: str, timeout: float = 50) -> dict:
    """One scenario in a fresh interpreter: a pool that starts and closes its
    own LocalCluster (this process's default client is not there)."""
    paths = json.dumps([p for p in sys.path if isinstance(p, str)])
    proc = subprocess.run([sys.executable, "-c", dasksupport.CHILD_SCRIPT, paths, mode],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def test_pool_is_a_gilfree_pool(pool_dask):
    assert isinstance(pool_dask, gilfree.Pool)
    assert pool_dask.backend == "dask" and pool_dask.workers == 2
    assert pool_dask.map(square, range(5)) == [0, 1, 4, 9, 16]
    # The C base is never initialised: reaching a C method raises.
    with pytest.raises(ValueError, match="not initialised"):
        gilfree._core.Pool.map(pool_dask, square, [1])
    with pytest.raises(ValueError, match="not initialised"):
        gilfree._core.Pool.submit(pool_dask, square, 1)


@pytest.fixture
def pool_dask(dask_client):
    with gilfree.Pool(2, backend="dask", client=dask_client) as p:
        yield p


def test_user_client_is_left_open(dask_client):
    with gilfree.Pool(backend="dask", client=dask_client) as p:
        assert p.client is dask_client
        assert p.map(add_one, range(3)) == [1, 2, 3]
    assert p.state == "joined"
    assert dask_client.status == "running"
    assert dask_client.submit(add_one, 1).result(timeout=30) == 2


def test_default_client_is_used(dask_client):
    with gilfree.Pool(backend="dask") as p:
        assert p.client is dask_client
        assert p.workers == 2  # the cluster's threads
    assert dask_client.status == "running"


def test_unreachable_scheduler_fails_within_connect_timeout():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    t0 = time.monotonic()
    with pytest.raises(ConnectionError) as excinfo:
        gilfree.Pool(backend="dask", address=address, connect_timeout=1.5)
    elapsed = time.monotonic() - t0
    assert address in str(excinfo.value)
    assert elapsed < 1.5 + 3.0, f"took {elapsed:.1f} s"


def test_client_and_address_together_are_refused(dask_client):
    with pytest.raises(ValueError, match="not both"):
        gilfree.Pool(backend="dask", client=dask_client, address="tcp://127.0.0.1:1")


@pytest.mark.parametrize("option, value", [("initializer", print), ("worker_state", True),
                                           ("max_tasks_per_worker", 3), ("insights", True),
                                           ("start_method", "spawn")])
def test_unsupported_options_are_refused(dask_client, option, value):
    with pytest.raises(ValueError, match=f"{option}= is not supported with backend='dask'"):
        gilfree.Pool(2, backend="dask", client=dask_client, **{option: value})


def test_shared_is_scattered_once(dask_client, tmp_path):
    rec = Recorder(tmp_path / "pickles.log")
    shared = dasksupport.PickleCounter(rec.path, b"x" * 1000)
    with gilfree.Pool(2, backend="dask", client=dask_client, shared=shared) as p:
        assert p.map(dasksupport.shared_len, range(100), chunksize=1) == [1000 + i for i in range(100)]
        assert p.apply(dasksupport.shared_len, (5,)) == 1005
        assert p.submit(dasksupport.shared_len, 6).result(timeout=30) == 1006
    # Once from here, at most once more per worker copying it to another.
    assert rec.count("pickled") <= 1 + p.workers, rec.lines()


def test_many_tiny_items_make_few_tasks(pool_dask, monkeypatch):
    submitted = []
    real = pool_dask._submit_chunk

    def counting(fn, items, *args):
        submitted.append(len(items))
        return real(fn, items, *args)

    monkeypatch.setattr(pool_dask, "_submit_chunk", counting)
    assert pool_dask.map(add_one, range(100_000)) == list(range(1, 100_001))
    assert sum(submitted) == 100_000
    assert len(submitted) <= 40, submitted  # a few probes, then len/(4*workers) per chunk
    submitted.clear()
    it = pool_dask.imap(add_one, iter(range(10**9)))  # endless for our purpose: streamed
    assert [next(it) for _ in range(1000)] == list(range(1, 1001))
    it.close()
    assert sum(submitted) < 100_000, sum(submitted)


def test_missing_extra_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ImportError, match=r"gilfree\[dask\]"):
        gilfree.Pool(2, backend="dask")


def test_import_gilfree_does_not_import_distributed():
    code = "import sys, gilfree; gilfree.Pool; print('distributed' in sys.modules, 'dask' in sys.modules)"
    paths = [p for p in sys.path if isinstance(p, str)]
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.path[:0] = {paths!r}; " + code],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.split() == ["False", "False"]


def test_pool_starts_and_closes_its_own_local_cluster():
    out = run_child("own_cluster")
    assert out["workers"] == 2 and out["cluster"] is True
    assert out["map"] == [3, 2, 1, 0, 1, 2]
    assert len(out["pids"]) == 2
    assert out["alive_after"] == [] and out["children_after"] == []


def test_worker_killed_mid_task_fails_that_input_only():
    out = run_child("killed_worker")
    assert out["map"] == ["died", 3]
    got = out["imap"]
    assert got[:3] == [0, 1, 2] and got[4:] == [4, 5, 6, 7], got
    assert got[3][:3] == ["died", 3, "WorkerDiedError"], got
    assert "input index 3" in got[3][3]
    assert out["apply"] == ["died", None]
    assert out["after"] == [3, 2, 1, 0, 1, 2]  # the cluster replaced its workers


def test_task_timeout_kills_the_worker_and_names_the_input():
    out = run_child("task_timeout")
    assert out["map"] == ["TaskTimeoutError", 4, 1.0, "SIGKILL"]
    assert out["seconds"] < 20, out
    assert out["after"] == [3, 2, 1, 0, 1, 2]


def test_inherited_pool_refuses_work_after_fork(pool_dask):
    # The client's event-loop thread is not in the child and its sockets
    # are the parent's: the child must not use them.
    assert pool_dask.map(square, range(3)) == [0, 1, 4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 3
        try:
            pool_dask.map(square, [1])
        except RuntimeError as exc:
            code = 0 if "inherited through fork()" in str(exc) else 4
        except BaseException:
            code = 5
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert pool_dask.map(square, range(3)) == [0, 1, 4]  # the parent's pool is untouched


def test_pool_inside_a_dask_task_needs_a_client(pool_dask):
    with pytest.raises(RuntimeError, match="inside a Dask task needs client="):
        pool_dask.apply(dasksupport.make_a_dask_pool)


def test_consumer_slower_than_workers_small(pool_dask):
    # test_laziness's test at 400 one-item tasks, not 5,000: the input is
    # read at most a few chunks ahead of the consumer.
    source = gfsupport.CountingIterator(limit=400)
    it = pool_dask.imap(square, source, chunksize=1)
    got = []
    max_ahead = 0
    for value in it:
        got.append(value)
        if len(got) % 50 == 0:
            time.sleep(0.01)
            max_ahead = max(max_ahead, source.pulled - len(got))
    assert got == [x * x for x in range(400)]
    assert max_ahead <= 4 * pool_dask.workers + 1, max_ahead
