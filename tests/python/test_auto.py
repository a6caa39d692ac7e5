"""backend="auto" (the default): threads or processes, chosen by measurement.

The decision is tested on both kinds of function, on small inputs, on errors
inside the probed items, for single calls, for the free-threaded case, and
the PerformanceWarning of an explicit thread pool running a GIL-holding
function.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import time
import warnings

import pytest

import gilfree
from gilfree import _probe

pytestmark = pytest.mark.timeout(120)

DATA = os.urandom(2 << 20)


def holds(n: int) -> int:
    """Pure Python: holds the GIL."""
    total = 0
    for i in range(n):
        total += i % 7
    return total


def releases(i: int) -> str:
    """hashlib over 2 MB: releases the GIL."""
    return hashlib.sha256(DATA + bytes([i % 256])).hexdigest()[:12]


def fails_on_3(n: int) -> int:
    if n == 3:
        raise ValueError("three")
    return holds(20_000)


def test_gil_holding_function_goes_to_processes():
    items = [150_000] * 24
    with gilfree.Pool(2) as pool:
        assert pool.backend == "auto"
        got = pool.map(holds, items)
        assert got == [holds(150_000)] * 24
        assert pool.backend == "processes", pool.decision
        d = pool.decision
        assert isinstance(d, gilfree.Decision)
        assert d.backend == "processes" and d.probe is not None
        assert d.probe.gil_held > 0.5 and not d.probe.releases_gil
        assert d.items_probed >= 1 and d.seconds_per_item > 0
        assert d.probe.function.endswith("holds"), d.probe.function  # the user's function
        assert "GIL" in d.reason and "holds" in str(d) or "held" in str(d)
        assert len(pool.pids) == 2
        # The decision is remembered: the next map of holds goes there directly.
        assert pool.map(holds, list(range(100, 120))) == [holds(n) for n in range(100, 120)]
        assert pool.backend == "processes"


def test_gil_releasing_function_stays_on_threads():
    with gilfree.Pool(2) as pool:
        got = pool.map(releases, range(30))
        assert got == [releases(i) for i in range(30)]
        assert pool.backend == "threads", pool.decision
        assert pool.decision.probe.releases_gil
        assert pool.pids == []  # no process was started


def test_small_input_runs_on_threads():
    with gilfree.Pool(2) as pool:
        assert pool.map(holds, [1000] * 5) == [holds(1000)] * 5
        assert pool.backend == "threads"
        assert "starting processes" in pool.decision.reason or "worth" in pool.decision.reason
        assert pool.pids == []


def test_probed_items_are_not_recomputed(recorder):
    def record_and_hold(n):
        gilfree_record(recorder.path, n)
        return holds(60_000)

    with gilfree.Pool(2) as pool:
        assert len(pool.map(record_and_hold, range(40))) == 40
    lines = recorder.lines()
    assert sorted(int(x) for x in lines) == list(range(40)), "an input ran twice or never"


def gilfree_record(path, tag):
    from gfsupport import record

    record(path, tag)


def test_error_in_a_probed_item_names_its_index():
    with gilfree.Pool(2) as pool:
        with pytest.raises(ValueError, match="three") as info:
            pool.map(fails_on_3, range(10))
        assert any("input index 3" in note for note in getattr(info.value, "__notes__", []))
        # imap raises at that position and continues.
        it = pool.imap(fails_on_3, range(6))
        out = []
        for _ in range(6):
            try:
                out.append(next(it))
            except ValueError:
                out.append("error")
        assert out[3] == "error" and len([x for x in out if x != "error"]) == 5


def quick_fails_at(x: int) -> int:
    """Fast (threads); fails far beyond the probed first items."""
    if x == 1_000_000:
        raise ValueError("quick")
    return x


def holds_fails_at(x: int) -> int:
    """Holds the GIL (~0.5 ms: processes); fails beyond the probed items."""
    if x == 500:
        raise ValueError("slow")
    return holds(5_000) + x


def holds_dies_at(x: int) -> int:
    if x == 500:
        os._exit(7)
    return holds(5_000) + x


def index_note(exc: BaseException) -> str:
    return " ".join(note for note in getattr(exc, "__notes__", []) if "input index" in note)


@pytest.mark.parametrize("kind", [range, lambda n: list(range(n))], ids=["range", "list"])
def test_errors_after_the_probed_items_name_the_users_index(kind):
    # The probe runs the first items in the caller; the rest goes to a
    # backend as a separate input.  Errors must still name the index in
    # the user's input, not one counted from where the rest began.
    with gilfree.Pool(2) as pool:
        with pytest.raises(ValueError, match="quick") as info:
            pool.map(quick_fails_at, kind(1_200_000))
        assert pool.backend == "threads" and 0 < pool.decision.items_probed < 1_000_000
        assert index_note(info.value).endswith("input index 1000000"), info.value.__notes__
        assert "input index 1000000)" in str(info.value.__cause__)
        it = pool.imap(quick_fails_at, kind(1_200_000))
        with pytest.raises(ValueError) as info:
            for _ in it:
                pass
        assert index_note(info.value).endswith("input index 1000000")

        with pytest.raises(ValueError, match="slow") as info:
            pool.map(holds_fails_at, kind(700))
        assert pool.backend == "processes", pool.decision
        assert 0 < pool.decision.items_probed < 500
        assert index_note(info.value).endswith("input index 500"), info.value.__notes__
        it = pool.imap(holds_fails_at, kind(700))
        got = []
        with pytest.raises(ValueError) as info:
            for x in it:
                got.append(x)
        assert len(got) == 500 and index_note(info.value).endswith("input index 500")


def test_a_worker_death_after_the_probed_items_names_the_users_index():
    with gilfree.Pool(2) as pool:
        with pytest.raises(gilfree.WorkerDiedError) as info:
            pool.map(holds_dies_at, range(700))
        assert pool.backend == "processes", pool.decision
        assert info.value.index == 500 and info.value.exitcode == 7
        assert "input index 500" in str(info.value)
        assert pool.map(holds_fails_at, range(10)) == [holds(5_000) + x for x in range(10)]


def test_starmap_bad_item_after_the_probed_items_names_the_users_index():
    items = [(i, 1) for i in range(1_200_000)]
    items[1_000_000] = 5   # not an iterable of arguments; far beyond the probed items
    with gilfree.Pool(2) as pool:
        with pytest.raises(TypeError, match=r"input index 1000000 is not an iterable"):
            pool.starmap(divmod, items)


def sleeps_then_holds(x: int) -> int:
    """Inputs below 1000 wait (release the GIL); the rest compute in pure
    Python (~1 ms, holding it): the probed first items are not like the rest."""
    if x < 1000:
        time.sleep(0.0002)
        return x
    return holds(15_000) + x


def test_a_map_sent_to_threads_moves_to_processes_when_later_items_hold_the_gil():
    items = list(range(4000))   # the first part (~0.25 s of sleeps by the probe) ends well before
    with gilfree.Pool(2) as pool:
        got = pool.map(sleeps_then_holds, items)
        assert got == [x if x < 1000 else holds(15_000) + x for x in items]
        d = pool.decision
        assert d.backend == "processes", d
        assert "re-checked at input index" in d.reason, d.reason
        assert len(pool.pids) == 2
        # Remembered: the next map of it starts on processes.
        assert pool.map(sleeps_then_holds, [1500, 1501]) == [holds(15_000) + 1500, holds(15_000) + 1501]
        assert pool.backend == "processes"


def test_a_map_that_stays_like_its_first_items_stays_on_threads():
    with gilfree.Pool(2) as pool:
        assert pool.map(sleeps_then_holds, range(1000)) == list(range(1000))
        assert pool.backend == "threads" and "re-checked" not in pool.decision.reason
        assert pool.pids == []


def test_errors_and_progress_across_rechecked_parts():
    # The input runs in parts (and may move to processes part-way): the
    # error still names the user's index, progress counts every item once.
    with gilfree.Pool(2) as pool:
        with pytest.raises(ValueError) as info:
            pool.map(fails_beyond_the_parts, range(2600))
        assert index_note(info.value).endswith("input index 2400"), info.value.__notes__
        seen = []
        out = pool.map(sleeps_then_holds, range(2600), progress=lambda n: seen.append(n))
        assert len(out) == 2600 and seen and seen[-1] == 2600 and seen == sorted(seen)


def fails_beyond_the_parts(x: int) -> int:
    if x == 2400:
        raise ValueError("late")
    return sleeps_then_holds(x)


def test_auto_imap_is_the_c_iterator():
    # The probed items' results are handed out by the C iterator itself
    # (no Python frame per item); order, close() and the probed error hold.
    with gilfree.Pool(2) as pool:
        it = pool.imap(quick_fails_at, range(100_000))
        assert type(it) is gilfree.MapIterator
        assert list(it) == list(range(100_000))
        it = pool.imap(quick_fails_at, range(100_000))
        assert next(it) == 0
        it.close()
        assert list(it) == []
        with pytest.raises(RuntimeError, match="twice"):
            pool.imap(abs, [1])._prepend([], None) or it._prepend([], None) or it._prepend([], None)


def test_imap_over_a_generator_keeps_order():
    with gilfree.Pool(2) as pool:
        got = list(pool.imap(holds, (n for n in range(0, 40_000, 1000))))
        assert got == [holds(n) for n in range(0, 40_000, 1000)]
        assert sorted(pool.imap_unordered(releases, range(10))) == sorted(releases(i) for i in range(10))
        assert pool.starmap(divmod, [(7, 2), (9, 4)]) == [(3, 1), (2, 1)]


def test_single_calls_learn_where_a_function_belongs():
    with gilfree.Pool(2) as pool:
        assert pool.apply(holds, (1_000_000,)) == holds(1_000_000)  # measured, on a thread
        assert pool.decision.backend == "processes", repr(pool.decision.probe)
        assert pool.submit(holds, 300_000).result() == holds(300_000)  # now in a process
        assert len(pool.pids) == 2
        fut = pool.submit(releases, 1)
        assert isinstance(fut, cf.Future) and fut.result() == releases(1)


def test_no_gil_means_threads(monkeypatch):
    monkeypatch.setattr(_probe, "gil_enabled", lambda: False)
    with gilfree.Pool(2) as pool:
        assert pool.map(holds, [100_000] * 10) == [holds(100_000)] * 10
        assert pool.backend == "threads"
        assert "GIL is disabled" in pool.decision.reason and pool.decision.probe is None


def test_oneshot_map_defaults_to_auto():
    assert gilfree.map(holds, [200_000] * 8, workers=2) == [holds(200_000)] * 8


def test_closed_auto_pool_refuses_work():
    pool = gilfree.Pool(2)
    pool.close()
    pool.join()
    with pytest.raises(ValueError, match="closed"):
        pool.map(holds, [1, 2])


# --------------------------------------------------------------------------
# PerformanceWarning on an explicit thread pool


def test_threads_backend_warns_once_for_a_gil_holding_function():
    with gilfree.Pool(2, backend="threads") as pool:
        with pytest.warns(gilfree.PerformanceWarning) as record:
            pool.map(holds, [100_000] * 40)
        assert len(record) == 1
        message = str(record[0].message)
        assert "held the GIL" in message and "backend='processes'" in message
        assert "%" in message and "ms" in message  # the measured numbers
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pool.map(holds, [100_000] * 20)  # once per pool
            pool.map(str, range(5))


def test_threads_backend_does_not_warn_for_gil_releasing_or_tiny_work():
    with gilfree.Pool(2, backend="threads") as pool:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pool.map(releases, range(30))
            pool.map(abs, range(200_000))  # tiny items: processes would not help


# --------------------------------------------------------------------------
# Oversubscription: workers x inner threads <= usable CPUs


def blas_threads(_=None):
    import numpy  # noqa: F401 - loads a BLAS (in a worker: after the limits were set)
    import threadpoolctl

    return sorted({d["num_threads"] for d in threadpoolctl.threadpool_info()}), os.environ.get("OMP_NUM_THREADS")


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_inner_threads_are_limited(backend):
    np = pytest.importorskip("numpy")  # noqa: F841 - loads a BLAS
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not threadpoolctl.threadpool_info():
        pytest.skip("no BLAS/OpenMP library loaded here")
    cpus = gilfree.usable_cpus()
    before = blas_threads()
    with gilfree.Pool(cpus, backend=backend) as pool:
        assert pool.inner_threads == 1
        counts, env = pool.apply(blas_threads)
        assert counts == [1], counts
        if backend == "processes":
            assert env == "1"
    with gilfree.Pool(1, backend=backend, inner_threads=2) as pool:
        assert pool.inner_threads == 2
        counts, _ = pool.apply(blas_threads)
        assert max(counts) <= 2
    assert blas_threads() == before  # restored after the pool


def test_inner_threads_argument_checks():
    with pytest.raises(ValueError):
        gilfree.Pool(2, backend="threads", inner_threads=0)
    with pytest.raises(TypeError):
        gilfree.Pool(2, backend="threads", inner_threads=1.5)


def nap(x):
    import time

    time.sleep(0.1)
    return x


def test_no_warning_when_another_thread_keeps_the_gil_busy():
    from gfsupport import busy_python_thread

    with busy_python_thread():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with gilfree.Pool(2, backend="threads") as pool:
                assert pool.map(nap, range(4)) == list(range(4))
        with gilfree.Pool(2) as pool:
            assert pool.map(nap, range(6)) == list(range(6))
            assert pool.backend == "threads", pool.decision


def test_short_single_calls_are_measured_once(monkeypatch):
    """A burst of apply_async/submit of a function too short to measure: one
    call is measured (a sampler thread per call would cost far more than the
    calls), the others run plainly on threads, and the decision sticks."""
    calls = []
    real = _probe._measure

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_probe, "_measure", counting)
    with gilfree.Pool(2) as pool:
        results = [pool.apply_async(abs, (-i,)) for i in range(300)]
        assert [r.get(10) for r in results] == list(range(300))
        assert pool.submit(abs, -5).result(10) == 5
        assert pool.decision is not None and pool.decision.backend == "threads"
        assert "too little to measure" in pool.decision.reason
    assert len(calls) == 1


@pytest.mark.parametrize("option,default", [
    ("initializer", None), ("initargs", ()), ("worker_exit", None), ("worker_state", False),
    ("pass_worker_id", False), ("max_tasks_per_worker", None), ("cpu_affinity", None),
    ("init_timeout", None), ("exit_timeout", None),
])
def test_lifecycle_options_at_their_defaults_keep_the_auto_pool(option, default):
    # Code that passes an option's default explicitly (a wrapper forwarding
    # its own arguments) gets the same pool as code that leaves it out.
    with gilfree.Pool(2, **{option: default}) as pool:
        assert isinstance(pool, gilfree._pool.AutoPool)
        assert pool.map(abs, [-1, -2]) == [1, 2]


def test_unknown_keyword_is_reported_as_pools():
    with pytest.raises(TypeError, match=r"^Pool\(\) got an unexpected keyword argument 'colour'$"):
        gilfree.Pool(2, colour="red")
    with pytest.raises(ValueError, match="initargs given without an initializer"):
        gilfree.Pool(2, initargs=(1,))
