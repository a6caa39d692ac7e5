"""pytest configuration for the gilfree Python tests.

* Every behavioural test runs against every backend: request the `pool`
  fixture (a Pool(2, backend=...)) or the `backend` fixture.  Add a backend by
  appending to BACKENDS.
* Every test is checked for leaks (autouse `_leak_check`): after it, no new
  native thread named "gilfree-*", no new Python thread, no more open fds and no
  new child process may remain (each polled for a grace period, since a
  joined thread can linger in /proc for a moment).
* Warnings are errors (pyproject: filterwarnings = error).

`gilfree` is imported lazily here so that tests that do not need the built
package (test_cpylint.py) still run from a plain checkout.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # --import-mode=importlib does not add it
    sys.path.insert(0, str(HERE))

import gfsupport  # noqa: E402



def _dask_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("distributed") is not None


# "dask" runs on one session-wide LocalCluster (the `dask_client` fixture);
# only where the optional extra is installed (pip install gilfree[dask]).
BACKENDS = ["threads", "processes"] + (["dask"] if _dask_installed() else [])

LEAK_GRACE_S = 2.0


def pytest_configure(config):
    # Keep --strict-markers working if pytest-timeout is missing (the marker
    # then does nothing; pip install pytest-timeout to enforce the bounds).
    if not config.pluginmanager.hasplugin("timeout"):
        config.addinivalue_line("markers", "timeout(seconds): per-test time limit (pytest-timeout)")
    config.addinivalue_line(
        "markers", "dask: the test uses the session's Dask cluster (started before its leak baseline)")
    config.addinivalue_line(
        "markers", "not_on_dask(reason): the test cannot apply to backend='dask' (skipped there, with the reason)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("backend") != "dask":
            continue
        marker = item.get_closest_marker("not_on_dask")
        if marker is not None:
            item.add_marker(pytest.mark.skip(reason=f"backend='dask': {marker.args[0]}"))


# --------------------------------------------------------------------------
# Leak check


def _describe(items) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(items.items())) or "-"


@pytest.fixture(scope="session", autouse=True)
def _mp_services():
    """Start multiprocessing's forkserver (and its resource tracker) once, up
    front, the way gilfree does, so that the descriptors and processes they
    keep for the whole session are in place before the first leak check."""
    if "processes" in BACKENDS:
        import multiprocessing
        from multiprocessing import forkserver

        if "forkserver" in multiprocessing.get_all_start_methods():
            multiprocessing.get_context("forkserver").set_forkserver_preload(["gilfree._process"])
            forkserver.ensure_running()
    yield


_dask_running = False  # the session's Dask cluster is up (the dask_client fixture)


def _uses_dask(request) -> bool:
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("backend") == "dask":
        return True
    return request.node.get_closest_marker("dask") is not None


@pytest.fixture(scope="session")
def dask_client():
    """One LocalCluster for the session (2 single-threaded worker processes,
    loopback only, no dashboard), its Client the default one: a
    gilfree.Pool(backend="dask") without client= uses it.  Started on the
    first Dask test, before that test's leak baseline; warmed up so that the
    threads and connections Dask opens on first use are part of it."""
    global _dask_running
    import dask
    import distributed

    import gilfree

    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        # No dashboard; the scheduler's HTTP endpoints on a free loopback
        # port (the default, 8787, may be taken: Dask would warn).
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None,
                                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    client = distributed.Client(cluster)
    _dask_running = True
    with gilfree.Pool(2, backend="dask", client=client, shared=b"x" * 100, task_timeout=60) as warm:
        warm.map(gfsupport.count_args, range(300))
        list(warm.imap_unordered(gfsupport.count_args, range(50), chunksize=1))
        warm.apply_async(gfsupport.count_args, (2,), callback=gfsupport.identity).get(timeout=60)
        warm.submit(gfsupport.count_args, 3).result(timeout=60)
        warm.apply_async(gfsupport.sleep_return, (5,)) and None  # cancelled by terminate() below
        warm.pids
        warm.terminate()
    client.get_events("gilfree-warm-up")
    gfsupport.wait_until(lambda: False, timeout=0.5)
    # The scheduler, nannies and client in this process make the heap large:
    # every test's leak check runs gc.collect(), which would walk all of it
    # (~80 ms a test).  Their objects live as long as the session: out of
    # the collector's sight until the end.
    gc.collect()
    gc.freeze()
    try:
        yield client
    finally:
        gc.unfreeze()
        client.close()
        cluster.close()
        _dask_running = False


@pytest.fixture(autouse=True)
def _leak_check(request, _mp_services):
    if _uses_dask(request):
        request.getfixturevalue("dask_client")
    threads_before = gfsupport.native_threads()
    py_threads_before = gfsupport.python_threads()
    fds_before = gfsupport.open_fds()
    children_before = gfsupport.descendant_pids()

    yield

    gc.collect()

    def new_native():
        now = gfsupport.native_threads()
        return {tid: name for tid, name in now.items() if tid not in threads_before}

    def new_python():
        now = gfsupport.python_threads()
        return {ident: name for ident, name in now.items() if ident not in py_threads_before}

    # The session's Dask cluster lives in this process (scheduler, nannies,
    # client): their connection pools open sockets on demand and keep them
    # for reuse (in Dask tests), and the nannies and the scheduler's system
    # monitor read /proc through psutil every so often, during any test once
    # the cluster is up (/proc/PID/..., /proc/diskstats).  Those are Dask's,
    # not leaks of the test; gilfree itself opens neither.
    dask_kinds = ("socket:", "/proc/") if _uses_dask(request) else ("/proc/",) if _dask_running else ()

    def dasks(fd: int, target: str) -> bool:
        return bool(dask_kinds) and fds_before.get(fd) != target and target.startswith(dask_kinds)

    def new_fds():
        now = gfsupport.open_fds()
        now = {fd: t for fd, t in now.items() if not dasks(fd, t)}
        if len(now) <= len(fds_before):
            return {}
        return {fd: target for fd, target in now.items() if fds_before.get(fd) != target}

    def new_children():
        return gfsupport.descendant_pids() - children_before

    problems = []
    # One shared grace period: poll until everything is clean or time is up.
    gfsupport.wait_until(
        lambda: not (new_native() or new_python() or new_fds() or new_children()),
        timeout=LEAK_GRACE_S,
    )
    leaked = new_native()
    if leaked:
        problems.append(f"gilfree native threads still running: {_describe(leaked)}")
    leaked = new_python()
    if leaked:
        problems.append(f"Python threads still running: {_describe(leaked)}")
    leaked = new_fds()
    if leaked:
        problems.append(
            f"open fds grew from {len(fds_before)} to {len(gfsupport.open_fds())}; "
            f"new: {_describe(leaked)}"
        )
    leaked_children = new_children()
    if leaked_children:
        problems.append(f"child processes remain: {sorted(leaked_children)}")
    if problems:
        pytest.fail("resource leak after test:\n  " + "\n  ".join(problems), pytrace=False)


# --------------------------------------------------------------------------
# Pools and backends


@pytest.fixture(scope="module")
def warm_matplotlib(tmp_path_factory):
    """matplotlib keeps its font files open once it has drawn text: let it
    do so before the leak check's snapshot."""
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    fig.add_subplot(1, 1, 1).set_title("warm-up")
    fig.savefig(tmp_path_factory.mktemp("mpl") / "warm.png")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def in_process(backend) -> bool:
    """True if tasks of this backend share memory (and object identity) with the test."""
    return backend in gfsupport.IN_PROCESS_BACKENDS


@pytest.fixture
def pool(request, backend, _leak_check):
    """A gilfree.Pool(2, backend=...), terminated and joined afterwards.

    Teardown always calls terminate() then join(), also after a test that
    already closed/terminated/joined the pool: like multiprocessing.Pool, doing
    so again must be harmless."""
    import gilfree

    if backend == "dask":
        p = gilfree.Pool(2, backend=backend, client=request.getfixturevalue("dask_client"))
    else:
        p = gilfree.Pool(2, backend=backend)
    try:
        yield p
    finally:
        p.terminate()
        p.join()


@pytest.fixture
def recorder(tmp_path):
    """A gfsupport.Recorder writing to a fresh file (visible across processes)."""
    return gfsupport.Recorder(tmp_path / "calls.log")


@pytest.fixture
def sigint_default():
    """Make sure SIGINT raises KeyboardInterrupt (a shell may start us with it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def pytest_report_header(config):
    return f"gilfree backends under test: {', '.join(BACKENDS)}; pid {os.getpid()}"
