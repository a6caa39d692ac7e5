"""Worker lifecycle options on both backends: initializer/initargs,
worker_state, pass_worker_id, shared, worker_exit and exit_results(),
max_tasks_per_worker, cpu_affinity, init_timeout and exit_timeout.

What is checked is what the options promise: state really persists per
worker and across calls, recycling really starts a fresh life (new state,
initializer again; a new process on the process backend), exit results come
back, affinity is really applied (read back with os.sched_getaffinity in the
worker), failures and timeouts are reported as InitializerError /
WorkerExitError and never hang.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

import pytest

import gilfree
import gfsupport
import lifesupport as ls

pytestmark = pytest.mark.timeout(60)

WORKERS = 2


def refused_on_dask(options):
    """The options backend='dask' refuses by design (ValueError; see
    docs/api-contract.md and test_dask.py::test_unsupported_options_are_refused)."""
    return pytest.mark.not_on_dask(f"uses {options}, which backend='dask' refuses by design (ValueError)")


def make(backend, **options):
    return gilfree.Pool(WORKERS, backend, **options)


# --------------------------------------------------------------------------
# state, ids, shared, initializer, exit


@refused_on_dask("initializer=, worker_state=, worker_exit=")
def test_state_persists_per_worker_across_calls(backend):
    with make(backend, initializer=ls.init_state, initargs=("t",), worker_state=True,
              worker_exit=ls.exit_state) as pool:
        first = pool.map(ls.count_call_slow, range(40), chunksize=1)
        second = pool.map(ls.count_call_slow, range(40), chunksize=1)
        single = [pool.apply(ls.count_call, (1,)), pool.submit(ls.count_call, 2).result()]
    by_life = defaultdict(list)
    for life, n, who, _x in first + second + single:
        by_life[life].append((n, who))
    # One life per worker (no recycling asked), each counting 1, 2, 3, ...
    # in call order, on one worker only: the dict is that worker's own.
    assert 1 <= len(by_life) <= WORKERS
    for calls in by_life.values():
        ns = sorted(n for n, _ in calls)
        assert ns == list(range(1, len(ns) + 1))
        assert len({who for _, who in calls}) == 1
    assert sum(len(c) for c in by_life.values()) == 82
    # The exit function saw each worker's final count.
    results = dict(pool.exit_results())
    assert set(results) <= set(by_life)
    assert sum(results.values()) == 82


@refused_on_dask("pass_worker_id=")
def test_pass_worker_id_names_each_worker_consistently(backend):
    with make(backend, pass_worker_id=True) as pool:
        out = pool.map(ls.worker_id_and_who, range(60), chunksize=1)
    ids = defaultdict(set)
    for wid, who in out:
        ids[wid].add(who)
    assert set(ids) <= set(range(WORKERS))
    assert all(len(whos) == 1 for whos in ids.values())   # one worker per id
    assert len({next(iter(w)) for w in ids.values()}) == len(ids)  # and vice versa


@refused_on_dask("pass_worker_id=, worker_state=, initializer=, worker_exit=")
def test_prefix_order_on_every_method(backend):
    """(worker_id, shared, state) come first, in that order, on map, imap,
    imap_unordered, starmap, apply, apply_async and submit."""
    opts = dict(pass_worker_id=True, shared={"k": 1}, worker_state=True,
                initializer=ls.init_full, initargs=("tag",), worker_exit=ls.exit_full)
    with make(backend, **opts) as pool:
        mapped = pool.map(ls.full_prefix, range(6))
        lazy = list(pool.imap(ls.full_prefix, range(6)))
        unordered = sorted(pool.imap_unordered(ls.full_prefix, range(6)), key=lambda r: r[-1])
        star = pool.starmap(ls.full_prefix_star, [(1, 2), (3, 4)])
        applied = pool.apply(ls.full_prefix_kw, (3,), {"b": 4})
        async_ = pool.apply_async(ls.full_prefix_kw, (2,), {"b": 5}).get(10)
        submitted = pool.submit(ls.full_prefix_kw, 6, b=7).result(10)
    for rows in (mapped, lazy, unordered):
        assert [r[-1] for r in rows] == list(range(6))
        for wid, shared, tag, n, x in rows:
            assert wid in range(WORKERS)
            assert shared == {"k": 1}
            assert tag == ("tag", wid, {"k": 1})   # the initializer got the prefix too
            assert n >= 1
    assert [r[2] for r in star] == [3, 7]
    assert applied[1:] == ({"k": 1}, 12) and async_[1:] == ({"k": 1}, 10)
    assert submitted[1:] == ({"k": 1}, 42)
    exits = pool.exit_results()
    assert sorted(w for w, _ in exits) == list(range(WORKERS))


@refused_on_dask("initializer=")
def test_initializer_runs_once_per_worker(backend, tmp_path):
    path = str(tmp_path / "log")
    with make(backend, initializer=ls.init_record, initargs=(path, "init")) as pool:
        pool.map(gfsupport.sleep_return, [0.005] * 20, chunksize=1)
        pool.map(gfsupport.sleep_return, [0.005] * 20, chunksize=1)
    lines = gfsupport.Recorder(path).lines()
    # Every worker initialises once when it starts, whatever the number of calls.
    assert len(lines) == WORKERS
    assert len(set(lines)) == WORKERS


@refused_on_dask("initializer=, worker_exit=")
def test_exit_results_one_per_worker(backend, tmp_path):
    path = str(tmp_path / "log")
    with make(backend, worker_exit=ls.exit_record, initializer=ls.init_record,
              initargs=(path, "init")) as pool:
        assert pool.exit_results() == []
        pool.map(gfsupport.square, range(10))
    results = pool.exit_results()
    assert len(results) == WORKERS
    assert len(set(results)) == WORKERS
    assert gfsupport.Recorder(path).lines().count(str(("exit", results[0]))) == 1


@refused_on_dask("initializer=, worker_exit=")
def test_terminate_skips_exit_functions(backend, tmp_path):
    path = str(tmp_path / "log")
    pool = make(backend, worker_exit=ls.exit_record, initializer=ls.init_record, initargs=(path, "i"))
    pool.map(gfsupport.square, range(4))
    pool.terminate()
    pool.join()
    assert pool.exit_results() == []
    assert not any("exit" in line for line in gfsupport.Recorder(path).lines())


@refused_on_dask("max_tasks_per_worker= (test_dask.py::test_shared_is_scattered_once checks shared= on Dask)")
def test_shared_object_is_passed_not_copied_per_task(backend, tmp_path):
    path = str(tmp_path / "pickles")
    gfsupport.Recorder(path)
    obj = ls.CountsPickles(path, 100)
    with make(backend, shared=obj, max_tasks_per_worker=5) as pool:
        out = pool.map(ls.shared_value, range(50), chunksize=1)
        out += [pool.apply(ls.shared_value, (1,))]
    assert out == [100 + x for x in range(50)] + [101]
    pickled = gfsupport.Recorder(path).count("pickled")
    # Threads: never pickled.  Processes: once for the pool, however many
    # tasks, workers and recycled workers (>= 10 lives here).
    assert pickled == (0 if backend == "threads" else 1)


@pytest.mark.not_on_dask("checks the process backend's zero-copy path (the array mapped from the pool's shared memory); Dask sends each worker a copy")
def test_shared_numpy_array_travels_as_shared_memory(backend):
    np = pytest.importorskip("numpy")
    arr = np.arange(1 << 17, dtype=np.float64)  # 1 MiB
    with make(backend, shared=arr) as pool:
        out = pool.map(ls.shared_summary, [0, 5, 1000])
    assert [v for v, _, _ in out] == [0.0, 5.0, 1000.0]
    if backend == "threads":
        assert all(i == id(arr) for _, _, i in out)   # the very object
    else:
        # Mapped from the pool's shared memory, not unpickled bytes.
        assert all(backing[-1] == "ShmBuffer" for _, backing, _ in out)


def test_shared_none_is_a_value(backend):
    with make(backend, shared=None) as pool:
        # count_args(shared, x): None is passed like any other object.
        assert pool.map(gfsupport.count_args, [1, 2]) == [2, 2]


# --------------------------------------------------------------------------
# recycling


@refused_on_dask("max_tasks_per_worker=, initializer=, worker_state=")
def test_max_tasks_per_worker_recycles_with_fresh_state(backend):
    with make(backend, initializer=ls.init_state, initargs=("r",), worker_state=True,
              max_tasks_per_worker=3, worker_exit=ls.exit_state) as pool:
        out = pool.map(ls.count_call, range(20), chunksize=1)
        out += pool.map(ls.count_call, range(7), chunksize=1)
    lives = defaultdict(list)
    for life, n, who, _ in out:
        lives[life].append((n, who))
    assert len(lives) >= 27 // 3
    for calls in lives.values():
        ns = [n for n, _ in calls]
        # A fresh state each life: it counts from 1, never past the limit.
        assert sorted(ns) == list(range(1, len(ns) + 1))
        assert len(ns) <= 3
    if backend == "processes":
        # Each life is a new process.
        pids = [who[0] for calls in lives.values() for _, who in calls[:1]]
        assert len(set(pids)) == len(lives)
    else:
        assert max(len(c) for c in lives.values()) == 3
    exits = dict(pool.exit_results())
    # Every life ended with worker_exit, which saw its final count (a
    # process started to replace a recycled one may end idle, at join).
    assert set(exits) >= set(lives)
    assert {life: exits[life] for life in lives} == {life: len(c) for life, c in lives.items()}
    assert all(n == 0 for life, n in exits.items() if life not in lives)


@refused_on_dask("max_tasks_per_worker=, initializer=, worker_state=")
def test_max_tasks_with_adaptive_chunks_never_exceeds(backend):
    with make(backend, initializer=ls.init_state, initargs=("a",), worker_state=True,
              max_tasks_per_worker=50) as pool:
        out = pool.map(ls.count_call, range(1000))
    assert [x for *_, x in out] == list(range(1000))
    assert max(n for _, n, _, _ in out) <= 50


# --------------------------------------------------------------------------
# affinity


def _two_cpus():
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        pytest.skip("no sched_getaffinity")
    if len(cpus) < 2:
        pytest.skip("needs two usable CPUs")
    return cpus[:2]


@refused_on_dask("cpu_affinity=, pass_worker_id=")
@pytest.mark.parametrize("form", ["per_worker", "spread"])
def test_cpu_affinity_is_applied(backend, form):
    a, b = _two_cpus()
    spec = [[b], [a]] if form == "per_worker" else [b, a]
    with make(backend, pass_worker_id=True, cpu_affinity=spec) as pool:
        out = set(pool.map(ls.worker_affinity, range(40), chunksize=1))
    want = {0: (b,), 1: (a,)}
    assert out <= set(want.items())
    assert out  # at least one worker reported


def test_cpu_affinity_validation():
    with pytest.raises(ValueError, match="CPU 100000"):
        gilfree.Pool(2, "threads", cpu_affinity=[100000])
    with pytest.raises(ValueError, match="3 entries but the pool has 2 workers"):
        gilfree.Pool(2, "threads", cpu_affinity=[[0], [0], [0]])
    with pytest.raises(TypeError, match="cpu_affinity"):
        gilfree.Pool(2, "threads", cpu_affinity="0,1")
    with pytest.raises(ValueError, match="empty"):
        gilfree.Pool(2, "threads", cpu_affinity=[])


# --------------------------------------------------------------------------
# failures and timeouts


@refused_on_dask("initializer=")
def test_initializer_failure_is_reported_and_pool_refuses_work(backend):
    pool = make(backend, initializer=ls.init_fail)
    try:
        with pytest.raises(gilfree.InitializerError) as info:
            pool.map(gfsupport.square, range(10))
        err = info.value
        assert "initializer of worker" in str(err) and "initializer says no" in str(err)
        assert err.worker in range(WORKERS)
        # The user's own exception, with the worker's traceback behind it
        # (processes: as its RemoteTraceback cause), whichever way the
        # caller learnt of it (the worker's report, or a task it refused).
        cause = err.__cause__
        assert isinstance(cause, ValueError) and "initializer says no" in str(cause)
        if backend == "processes":
            assert isinstance(cause.__cause__, gilfree.RemoteTraceback)
            assert "init_fail" in str(cause.__cause__)
        # Not blamed on the mapped function: it never ran.
        assert not any("square failed" in n for n in getattr(err, "__notes__", []))
        # Once known, new work is refused at once, with the same story.
        assert gfsupport.wait_until(lambda: _refuses(pool), timeout=10)
        with pytest.raises(gilfree.InitializerError, match="initializer says no"):
            pool.apply(gfsupport.square, (2,))
    finally:
        pool.terminate()
        pool.join()


def _refuses(pool):
    try:
        pool.submit(gfsupport.square, 1).result(10)
    except gilfree.InitializerError:
        return True
    return False


@refused_on_dask("initializer=, init_timeout=")
def test_init_timeout(backend):
    start = time.monotonic()
    if backend == "threads":
        # A thread cannot be stopped: the constructor waits at most
        # init_timeout and gives up on the pool.
        with pytest.raises(gilfree.InitializerError, match="init_timeout=0.2"):
            make(backend, initializer=ls.init_sleep, initargs=(0.8,), init_timeout=0.2)
    else:
        pool = make(backend, initializer=ls.init_sleep, initargs=(30,), init_timeout=0.3)
        try:
            with pytest.raises(gilfree.InitializerError, match="init_timeout=0.3"):
                pool.map(gfsupport.square, range(4))
        finally:
            pool.terminate()
            pool.join()
    assert time.monotonic() - start < 10


@refused_on_dask("worker_exit=")
def test_exit_function_failure_raised_by_join(backend):
    pool = make(backend, worker_exit=ls.exit_fail)
    pool.map(gfsupport.square, range(4))
    pool.close()
    with pytest.raises(gilfree.WorkerExitError, match="exit says no") as info:
        pool.join()
    assert info.value.worker in range(WORKERS)
    assert pool.state == "joined"


@refused_on_dask("worker_exit=, exit_timeout=")
def test_exit_timeout(backend):
    pool = gilfree.Pool(WORKERS, backend, worker_exit=_exit_sleep_1, exit_timeout=0.3)
    pool.map(gfsupport.square, range(4))
    pool.close()
    start = time.monotonic()
    with pytest.raises(gilfree.WorkerExitError, match="exit_timeout=0.3"):
        pool.join()
    assert time.monotonic() - start < 5
    assert pool.state == "joined"


def _exit_sleep_1():
    return ls.exit_sleep(1.0)


def test_options_are_checked():
    with pytest.raises(TypeError, match="initializer must be callable"):
        gilfree.Pool(1, "threads", initializer=3)
    with pytest.raises(ValueError, match="initargs given without an initializer"):
        gilfree.Pool(1, "threads", initargs=(1,))
    with pytest.raises(TypeError, match="worker_state must be True or False"):
        gilfree.Pool(1, "threads", worker_state=1)
    with pytest.raises(ValueError, match="max_tasks_per_worker must be >= 1"):
        gilfree.Pool(1, "threads", max_tasks_per_worker=0)
    with pytest.raises(ValueError, match="init_timeout must be > 0"):
        gilfree.Pool(1, "threads", initializer=print, init_timeout=0)
    with pytest.raises(ValueError, match="exit_timeout given without worker_exit"):
        gilfree.Pool(1, "threads", exit_timeout=1)


def test_auto_backend_with_lifecycle_settles_on_one_kind():
    with gilfree.Pool(2, worker_state=True, initializer=ls.init_state, initargs=("auto",)) as pool:
        assert pool.backend == ("processes" if gilfree._probe.gil_enabled() else "threads")
        out = pool.map(ls.count_call, range(3), chunksize=1)
    assert out[0][1] == 1


def test_calls_outside_the_workers_are_refused():
    """An imap consumed after join(): nobody is left to hold the state."""
    pool = gilfree.Pool(1, "threads", worker_state=True)
    it = pool.imap(ls.tick, range(200), chunksize=1)
    first = next(it)
    pool.close()
    pool.join()
    assert first == 1
    with pytest.raises(RuntimeError, match="runs its functions only on its own workers"):
        list(it)


SCRIPT_GLOBALS = '''
import gilfree
VALUE = "unset"

def init(v):
    global VALUE
    VALUE = v

def get(_):
    return VALUE

if __name__ == "__main__":
    for method in ("forkserver", "spawn"):
        with gilfree.Pool(1, "processes", start_method=method, initializer=init, initargs=("set",)) as pool:
            print(method, pool.map(get, [0])[0], pool.map(lambda x: x + 1, [1])[0])
'''


def test_script_functions_share_the_initializers_globals(tmp_path):
    """The stdlib idiom: an initializer sets a global of the main script that
    the task function reads.  Functions of a script go by name (the workers
    import the script), so both see the same module; a lambda still goes by
    value."""
    import subprocess
    import sys

    script = tmp_path / "prog.py"
    script.write_text(SCRIPT_GLOBALS)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["forkserver set 2", "spawn set 2"]


def test_join_after_recycling_never_hangs():
    """join() stops every worker, also one the collector is starting to
    replace a recycled one at that moment (that one used to be missed, and
    join() with an exit function waited for it forever)."""
    for _ in range(30):
        with make("processes", initializer=ls.init_state, initargs=("j",), worker_state=True,
                  max_tasks_per_worker=3, worker_exit=ls.exit_state) as pool:
            pool.map(ls.count_call, range(12), chunksize=1)
        assert sum(n for _, n in pool.exit_results()) == 12


@pytest.mark.not_on_dask("the dask backend refuses initializer=")
def test_a_call_queued_before_the_initializer_fails_gets_its_cause(backend):
    # The call was waiting when the initializer failed: its InitializerError
    # still has the initializer's exception as __cause__ (it was replaced
    # by the call's own worker traceback on the thread backend).
    pool = gilfree.Pool(1, backend, initializer=ls.init_sleep_then_fail, initargs=(0.3,))
    try:
        pending = pool.apply_async(abs, (-1,))
        with pytest.raises(gilfree.InitializerError) as info:
            pending.get(timeout=30)
        assert isinstance(info.value.__cause__, LookupError), repr(info.value.__cause__)
        assert "the model file is missing" in str(info.value)
    finally:
        pool.terminate()
        pool.join()
