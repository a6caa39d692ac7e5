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

BACKENDS = ["threads", "processes"]

LEAK_GRACE_S = 2.0


def pytest_configure(config):
    # Keep --strict-markers working if pytest-timeout is missing (the marker
    # then does nothing; pip install pytest-timeout to enforce the bounds).
    if not config.pluginmanager.hasplugin("timeout"):
        config.addinivalue_line("markers", "timeout(seconds): per-test time limit (pytest-timeout)")


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


@pytest.fixture(autouse=True)
def _leak_check(_mp_services):
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

    def new_fds():
        now = gfsupport.open_fds()
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


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def in_process(backend) -> bool:
    """True if tasks of this backend share memory (and object identity) with the test."""
    return backend in gfsupport.IN_PROCESS_BACKENDS


@pytest.fixture
def pool(backend, _leak_check):
    """A gilfree.Pool(2, backend=...), terminated and joined afterwards.

    Teardown always calls terminate() then join(), also after a test that
    already closed/terminated/joined the pool: like multiprocessing.Pool, doing
    so again must be harmless."""
    import gilfree

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
