"""gilfree.compat.mpire.WorkerPool: MPIRE's WorkerPool on gilfree.

What is checked is what MPIRE documents (and does): argument unpacking,
result order, lazy maps, apply/apply_async and their callbacks, worker
state, worker ids and shared objects in MPIRE's order, worker_init /
worker_exit / get_exit_results per map call or across maps (keep_alive),
worker_lifespan, timeouts, cpu_ids, the "threading" start method, numpy
input and output, progress bars, iterable_len, insights -- and that
examples/mpire_example.py prints the same with gilfree as with MPIRE.

Most tests run on both kinds of workers: start_method="threading"
(gilfree's threads) and the default (gilfree's worker processes).
"""

from __future__ import annotations

import doctest
import io
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

import gilfree
import mpiresupport as ms
from gilfree.compat import mpire as compat
from gilfree.compat.mpire import WorkerPool

pytestmark = pytest.mark.timeout(60)

N_JOBS = 2
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mpire_example.py"


@pytest.fixture(params=["threading", None], ids=["threading", "processes"])
def start_method(request):
    return request.param


def make(start_method, **options):
    return WorkerPool(N_JOBS, start_method=start_method, **options)


def numpy_or_skip():
    return pytest.importorskip("numpy")


# --------------------------------------------------------------------------
# Argument unpacking and results


def test_argument_unpacking_rules(start_method):
    np = numpy_or_skip()
    items = [
        5,                      # not iterable: one argument
        "ab",                   # str: one argument
        b"xy",                  # bytes: one argument
        (1, 2),                 # tuple: positional arguments
        [3, 4],                 # list: positional arguments
        {"x": 1, "y": 2},       # dict: keyword arguments
        range(2),               # any other iterable: positional arguments
        frozenset({7}),
        (),                     # no argument at all
        ([1, 2],),              # a tuple holding one list: that list is the argument
        None,
        np.arange(2),           # numpy array: one argument, not unpacked
    ]
    with make(start_method) as pool:
        out = pool.map(ms.echo, items)
    assert out[:11] == [
        ((5,), {}),
        (("ab",), {}),
        ((b"xy",), {}),
        ((1, 2), {}),
        ((3, 4), {}),
        ((), {"x": 1, "y": 2}),
        ((0, 1), {}),
        ((7,), {}),
        ((), {}),
        (([1, 2],), {}),
        ((None,), {}),
    ]
    (array,), kwargs = out[11]
    assert kwargs == {} and isinstance(array, np.ndarray) and array.tolist() == [0, 1]


def test_apply_argument_rules(start_method):
    with make(start_method) as pool:
        assert pool.apply(ms.echo, 5) == ((5,), {})
        assert pool.apply(ms.echo, "ab") == (("ab",), {})
        assert pool.apply(ms.echo, (1, 2)) == ((1, 2), {})
        assert pool.apply(ms.echo, [1, 2], {"k": 3}) == ((1, 2), {"k": 3})
        assert pool.apply(ms.echo, kwargs={"k": 3}) == ((), {"k": 3})
        # MPIRE unpacks a dict given as args like any iterable: its keys.
        assert pool.apply(ms.echo, {"a": 1}) == (("a",), {})


def test_map_keeps_input_order_and_map_unordered_has_every_result(start_method):
    with make(start_method) as pool:
        assert pool.map(ms.sleepy_square, range(40), chunk_size=1) == [x * x for x in range(40)]
        unordered = pool.map_unordered(ms.sleepy_square, range(40), chunk_size=1)
        assert isinstance(unordered, list)
        assert sorted(unordered) == [x * x for x in range(40)]
        assert pool.map(ms.add, []) == []


def test_imap_and_imap_unordered(start_method):
    with make(start_method) as pool:
        assert list(pool.imap(ms.sleepy_square, range(30), chunk_size=1)) == [x * x for x in range(30)]
        assert sorted(pool.imap_unordered(ms.add, [(x, 1) for x in range(30)])) == list(range(1, 31))


def test_imap_is_lazy_and_can_stop_early(start_method):
    pulled = []

    def source():
        for x in range(1000):
            pulled.append(x)
            yield x

    with make(start_method) as pool:
        results = pool.imap(ms.square, source(), chunk_size=1)
        time.sleep(0.05)
        assert pulled == []                         # nothing runs before the first next()
        assert [next(results) for _ in range(3)] == [0, 1, 4]
        results.close()                             # stopping early cancels the rest
        assert len(pulled) < 1000
        assert pool.map(ms.square, range(5)) == [0, 1, 4, 9, 16]   # the pool goes on


def test_map_inside_a_running_imap_is_refused(start_method):
    with make(start_method) as pool:
        results = pool.imap(ms.square, range(10))
        assert next(results) == 0
        with pytest.raises(RuntimeError, match="another map is running"):
            pool.map(ms.square, range(3))
        assert list(results) == [x * x for x in range(1, 10)]


def test_lambdas_and_closures_run_on_processes():
    offset = 100
    with WorkerPool(N_JOBS) as pool:
        assert pool.map(lambda x: x + offset, range(5)) == [100, 101, 102, 103, 104]


def test_iterable_len_with_a_generator(start_method):
    with make(start_method) as pool:
        # iterable_len gives a generator its length -- and takes no more than that.
        out = pool.map(ms.square, (x for x in range(100)), iterable_len=10, n_splits=3)
        assert out == [x * x for x in range(10)]
        assert pool.map(ms.square, list(range(100)), iterable_len=4) == [0, 1, 4, 9]
        assert sorted(pool.imap_unordered(ms.square, iter(range(1000)), iterable_len=5)) == [0, 1, 4, 9, 16]


# --------------------------------------------------------------------------
# apply / apply_async


def test_apply_async_result_and_callbacks(start_method):
    results, errors = [], []
    with make(start_method) as pool:
        good = pool.apply_async(ms.add, (2, 3), callback=results.append, error_callback=errors.append)
        bad = pool.apply_async(ms.fail_on, (3,), callback=results.append, error_callback=errors.append)
        slow = pool.apply_async(ms.sleep_then, (0.5, "late"))
        assert good.get(timeout=10) == 5
        with pytest.raises(ZeroDivisionError, match="input 3 is bad"):
            bad.get(timeout=10)
        bad.wait()
        assert good.ready() and good.successful()
        assert bad.ready() and not bad.successful()
        with pytest.raises(TimeoutError):
            slow.get(timeout=0.01)
        with pytest.raises(ValueError):
            slow.successful()             # not ready yet
        assert slow.get(timeout=10) == "late"
        assert pool.apply(ms.square, (7,)) == 49
        pool.stop_and_join()
    assert results == [5]
    assert len(errors) == 1 and isinstance(errors[0], ZeroDivisionError)


def test_apply_async_workers_run_worker_init_and_exit(start_method):
    with make(start_method, use_worker_state=True) as pool:
        pending = [pool.apply_async(ms.count, (x,), worker_init=ms.init_life, worker_exit=ms.exit_life)
                   for x in range(8)]
        out = [r.get(timeout=10) for r in pending]
        pool.stop_and_join()
        exits = pool.get_exit_results()
    assert [x for *_, x in out] == list(range(8))
    assert sum(n for _, n in exits) == 8
    assert {life for life, *_ in out} == {life for life, _ in exits}


# --------------------------------------------------------------------------
# worker id, shared objects, worker state, worker_init / worker_exit


def test_pass_worker_id(start_method):
    with make(start_method, pass_worker_id=True) as pool:
        out = pool.map(ms.wid_and_who, range(60), chunk_size=1)
    ids = defaultdict(set)
    for worker_id, identity in out:
        ids[worker_id].add(identity)
    assert set(ids) <= set(range(N_JOBS))
    assert all(len(identities) == 1 for identities in ids.values())


def test_shared_objects(start_method):
    with make(start_method, shared_objects={"base": 1000}) as pool:
        assert pool.map(ms.shared_sum, range(5)) == [1000, 1001, 1002, 1003, 1004]
        assert pool.apply(ms.shared_sum, (5,)) == 1005


def test_leading_arguments_in_mpire_order(start_method):
    """worker_id, shared objects, worker state, then the item's arguments --
    for the task, worker_init and worker_exit alike."""
    shared = ("shared", 42)
    with make(start_method, pass_worker_id=True, shared_objects=shared, use_worker_state=True) as pool:
        out = pool.map(ms.task_full, [(x, 1) for x in range(20)] + [{"x": 5, "y": 5}],
                       worker_init=ms.init_full, worker_exit=ms.exit_full)
        exits = pool.get_exit_results()
    for worker_id, got_shared, init, _value in out:
        assert worker_id in range(N_JOBS) and got_shared == shared and init == (worker_id, shared)
    assert [value for *_, value in out] == list(range(1, 21)) + [10]
    assert {worker_id for worker_id, _, _ in exits} <= set(range(N_JOBS))
    assert all(got_shared == shared for _, got_shared, _ in exits)
    assert sum(n for _, _, n in exits) == 21


def test_worker_init_and_exit_once_per_worker_and_map(start_method):
    with make(start_method, use_worker_state=True) as pool:
        first = pool.map(ms.count, range(30), worker_init=ms.init_life, worker_exit=ms.exit_life, chunk_size=1)
        first_exits = pool.get_exit_results()
        second = pool.map(ms.count, range(30), worker_init=ms.init_life, worker_exit=ms.exit_life, chunk_size=1)
        second_exits = pool.get_exit_results()
    for out, exits in ((first, first_exits), (second, second_exits)):
        lives = defaultdict(list)
        for life, n, _who, _x in out:
            lives[life].append(n)
        assert 1 <= len(lives) <= N_JOBS
        for ns in lives.values():                    # initialised once, counting from 1
            assert sorted(ns) == list(range(1, len(ns) + 1))
        # One exit result per worker that ran tasks, for this map only.
        assert dict(exits) == {life: len(ns) for life, ns in lives.items()}
    # Without keep_alive every map call has fresh workers.
    assert not {life for life, *_ in first} & {life for life, *_ in second}


def test_a_worker_that_ran_no_task_gives_no_exit_result(start_method):
    with make(start_method, use_worker_state=True) as pool:
        out = pool.map(ms.count, [1], worker_init=ms.init_life, worker_exit=ms.exit_life)
        assert pool.get_exit_results() == [(out[0][0], 1)]


def test_keep_alive_keeps_workers_and_state_across_maps(start_method):
    with make(start_method, use_worker_state=True, keep_alive=True) as pool:
        first = pool.map(ms.count, range(20), worker_init=ms.init_life, worker_exit=ms.exit_life, chunk_size=1)
        second = pool.map(ms.count, range(20), worker_init=ms.init_life, worker_exit=ms.exit_life, chunk_size=1)
        assert pool.get_exit_results() == []        # the workers are still alive
        pool.stop_and_join()
        exits = pool.get_exit_results()
    lives = defaultdict(list)
    for life, n, _who, _x in first + second:
        lives[life].append(n)
    assert 1 <= len(lives) <= N_JOBS                # the same workers served both maps
    for ns in lives.values():                        # their state went on counting
        assert sorted(ns) == list(range(1, len(ns) + 1))
    assert dict(exits) == {life: len(ns) for life, ns in lives.items()}


def test_without_keep_alive_processes_are_fresh_per_map():
    with WorkerPool(N_JOBS) as pool:
        first = set(pool.map(ms.pid_of, range(20), chunk_size=1))
        second = set(pool.map(ms.pid_of, range(20), chunk_size=1))
    assert os.getpid() not in first
    assert not first & second


def test_keep_alive_reuses_processes():
    with WorkerPool(N_JOBS, keep_alive=True) as pool:
        first = set(pool.map(ms.pid_of, range(20), chunk_size=1))
        second = set(pool.map(ms.pid_of, range(20), chunk_size=1))
    assert first & second


def test_worker_lifespan_recycles_and_reinitialises(start_method):
    with make(start_method, use_worker_state=True) as pool:
        out = pool.map(ms.count, range(12), worker_init=ms.init_life, worker_exit=ms.exit_life,
                       worker_lifespan=3, chunk_size=1)
        exits = pool.get_exit_results()
    lives = defaultdict(list)
    for life, n, _who, _x in out:
        lives[life].append(n)
    assert [x for *_, x in out] == list(range(12))
    assert len(lives) >= 12 // 3
    for ns in lives.values():                        # fresh state per life, at most 3 tasks
        assert sorted(ns) == list(range(1, len(ns) + 1)) and len(ns) <= 3
    assert dict(exits) == {life: len(ns) for life, ns in lives.items()}


def test_start_method_threading_runs_on_threads():
    with WorkerPool(N_JOBS, start_method="threading") as pool:
        assert set(pool.map(ms.pid_of, range(10))) == {os.getpid()}


def test_cpu_ids_are_applied(start_method):
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs 2 usable CPUs")
    a, b = allowed[:2]
    with make(start_method, cpu_ids=[a, b]) as pool:        # one CPU per worker
        seen = set(pool.map(ms.affinity, range(20), chunk_size=1))
    assert seen <= {(a,), (b,)}
    with make(start_method, cpu_ids=[[a, b]]) as pool:      # one entry: for every worker
        assert set(pool.map(ms.affinity, range(10), chunk_size=1)) == {(a, b)}


def test_cpu_ids_are_checked():
    with pytest.raises(ValueError, match="cpu_ids has 3 entries but n_jobs is 2"):
        WorkerPool(2, cpu_ids=[0, 0, 0])
    with pytest.raises(TypeError, match=r"cpu_ids\[0\]"):
        WorkerPool(2, cpu_ids=["0"])
    with pytest.raises(ValueError, match="out of range"):
        WorkerPool(2, cpu_ids=[100_000])
    with pytest.raises(ValueError, match="out of range"):
        WorkerPool(2, cpu_ids=[[0, -1]])


# --------------------------------------------------------------------------
# Errors and timeouts


def test_task_exception_is_raised_with_its_type_and_the_pool_goes_on(start_method):
    with make(start_method) as pool:
        with pytest.raises(ZeroDivisionError, match="input 3 is bad") as info:
            pool.map(ms.fail_on, range(10))
        assert isinstance(info.value.__cause__, gilfree.RemoteTraceback)
        with pytest.raises(ZeroDivisionError):
            list(pool.imap_unordered(ms.fail_on, range(10)))
        assert pool.map(ms.square, range(4)) == [0, 1, 4, 9]


def test_worker_init_exception_is_raised_with_its_type(start_method):
    with make(start_method, use_worker_state=True) as pool:
        with pytest.raises(LookupError, match="worker_init refuses"):
            pool.map(ms.stateful_identity, range(10), worker_init=ms.init_raises)
        assert pool.map(ms.stateful_identity, range(3)) == [0, 1, 2]


def test_worker_exit_exception_is_raised_with_its_type(start_method):
    with make(start_method, use_worker_state=True) as pool:
        with pytest.raises(KeyError, match="worker_exit refuses"):
            pool.map(ms.stateful_identity, range(10), worker_exit=ms.exit_raises)


def test_worker_init_timeout_raises_timeout_error(start_method):
    with make(start_method, use_worker_state=True) as pool:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            pool.map(ms.stateful_identity, range(4), worker_init=ms.init_sleeps, worker_init_timeout=0.3)
        assert time.monotonic() - started < 4


def test_task_timeout_raises_timeout_error():
    with WorkerPool(N_JOBS) as pool:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            pool.map(ms.sleep_then, [0.01, 10, 0.01], task_timeout=0.3)
        with pytest.raises(TimeoutError):
            pool.apply(ms.sleep_then, (10,), task_timeout=0.3)
        assert time.monotonic() - started < 8
        assert pool.map(ms.square, range(3), task_timeout=5) == [0, 1, 4]


def test_task_timeout_needs_processes():
    with WorkerPool(N_JOBS, start_method="threading") as pool:
        with pytest.raises(ValueError, match="task_timeout needs worker processes"):
            pool.map(ms.square, range(3), task_timeout=1)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="start_method"):
        WorkerPool(2, start_method="telepathy")
    with pytest.raises(ValueError, match="n_jobs"):
        WorkerPool(-1)
    with WorkerPool(N_JOBS, start_method="threading") as pool:
        with pytest.raises(TypeError, match="func must be callable"):
            pool.map(42, range(3))
        with pytest.raises(TypeError, match="iterable_of_args"):
            pool.map(ms.square, 42)
        with pytest.raises(ValueError, match="chunk_size must be >= 1"):
            pool.map(ms.square, range(3), chunk_size=0)
        with pytest.raises(TypeError, match="n_splits"):
            pool.map(ms.square, range(3), n_splits="2")
        with pytest.raises(ValueError, match="worker_lifespan"):
            pool.map(ms.square, range(3), worker_lifespan=0)
        with pytest.raises(ValueError, match="max_tasks_active"):
            pool.imap(ms.square, range(3), max_tasks_active=0)
        with pytest.raises(ValueError, match="progress_bar_style"):
            pool.map(ms.square, range(3), progress_bar_style="fancy")
        assert pool.map(ms.square, range(5), chunk_size=2.5, max_tasks_active=4) == [0, 1, 4, 9, 16]


# --------------------------------------------------------------------------
# numpy


def test_numpy_output_is_concatenated(start_method):
    np = numpy_or_skip()
    with make(start_method) as pool:
        out = pool.map(ms.as_pair_array, range(4))
        assert isinstance(out, np.ndarray) and out.tolist() == [0, 0, 1, -1, 2, -2, 3, -3]
        listed = pool.map(ms.as_pair_array, range(2), concatenate_numpy_output=False)
        assert isinstance(listed, list) and [a.tolist() for a in listed] == [[0, 0], [1, -1]]


def test_numpy_input_is_cut_into_sub_arrays(start_method):
    np = numpy_or_skip()
    data = np.arange(20).reshape(10, 2)
    with make(start_method) as pool:
        by_splits = pool.map(ms.rows_and_sum, data, n_splits=3)      # 10 rows in 3 pieces
        by_size = pool.map(ms.rows_and_sum, data, chunk_size=4)      # 4 rows a piece
        default = pool.map(ms.rows_and_sum, data)                    # 4 * n_jobs pieces
        lazy = list(pool.imap(ms.rows_and_sum, data, chunk_size=5))
    assert by_splits[:, 0].tolist() == [4, 3, 3]
    assert by_size[:, 0].tolist() == [4, 4, 2]
    assert default[:, 0].tolist() == [2, 1, 1, 1, 2, 1, 1, 1]
    for out in (by_splits, by_size, default):
        assert int(out[:, 1].sum()) == int(data.sum())
    assert [chunk.tolist() for chunk in lazy] == [[[5, 45]], [[5, 145]]]


# --------------------------------------------------------------------------
# Progress bars


def test_progress_bar(start_method):
    out = io.StringIO()
    with make(start_method) as pool:
        assert pool.map(ms.square, range(25), progress_bar=True,
                        progress_bar_options={"file": out, "desc": "squares"}) == [x * x for x in range(25)]
        assert sorted(pool.imap_unordered(ms.square, (x for x in range(7)), iterable_len=7, progress_bar=True,
                                          progress_bar_options={"file": out})) == [x * x for x in range(7)]
    text = out.getvalue()
    assert "squares" in text and "25/25" in text
    assert "7/7" in text                             # the generator's total came from iterable_len


def test_progress_bar_total_option_is_overridden_with_a_warning():
    out = io.StringIO()
    with WorkerPool(N_JOBS, start_method="threading") as pool:
        with pytest.warns(RuntimeWarning, match="total"):
            pool.map(ms.square, range(5), progress_bar=True, progress_bar_options={"file": out, "total": 99})
    assert "5/5" in out.getvalue() and "/99" not in out.getvalue()


# --------------------------------------------------------------------------
# Insights


INSIGHT_KEYS = {
    "n_completed_tasks", "top_5_max_task_durations", "top_5_max_task_args", "total_time",
    *(f"{part}_time" for part in compat._PARTS),
    *(f"total_{part}_time" for part in compat._PARTS),
    *(f"{part}_ratio" for part in compat._PARTS),
    *(f"{part}_time_mean" for part in compat._PARTS),
    *(f"{part}_time_std" for part in compat._PARTS),
}


def test_insights_disabled_behave_like_mpire(capsys):
    with WorkerPool(N_JOBS, start_method="threading") as pool:
        pool.map(ms.square, range(5))
        assert pool.get_insights() == {}
        pool.print_insights()
    assert "enable_insights=True" in capsys.readouterr().out


def test_insights_conversion_to_mpire_keys():
    """gilfree's insights dict (fixed numbers) under MPIRE's keys."""
    worker = {"init_time": 0.0, "exit_time": 0.0, "gil_wait_time": 0.0, "data_time": 0.0}
    data = {
        "backend": "processes", "workers": 2, "wall_time": 2.0,
        "totals": {"tasks": 30, "working_time": 3.0, "waiting_time": 0.5, "gil_wait_time": 0.0,
                   "data_time": 0.01, "init_time": 0.0, "exit_time": 0.0, "start_up_time": 0.5},
        "per_worker": [
            dict(worker, worker=0, tasks=10, working_time=1.0, waiting_time=0.5, start_up_time=0.25),
            dict(worker, worker=1, tasks=20, working_time=2.0, waiting_time=0.0, start_up_time=0.25,
                 data_time=0.25, gil_wait_time=0.25),   # counted as waiting, as MPIRE would
        ],
    }
    out = compat._mpire_insights(data, 2)
    assert set(out) == INSIGHT_KEYS
    assert out["n_completed_tasks"] == [10, 20]
    assert out["working_time"] == ["0:00:01", "0:00:02"]
    assert out["total_working_time"] == "0:00:03"
    assert out["waiting_time"] == ["0:00:00.500", "0:00:00.500"]
    assert out["waiting_time_mean"] == "0:00:00.500" and out["waiting_time_std"] == "0:00:00"
    assert out["start_up_time_std"] == "0:00:00" and out["total_start_up_time"] == "0:00:00.500"
    assert out["total_time"] == "0:00:04.500"
    assert out["working_ratio"] == pytest.approx(3.0 / 4.5)
    assert sum(out[f"{part}_ratio"] for part in compat._PARTS) == pytest.approx(1.0)
    assert out["top_5_max_task_durations"] == [] and out["top_5_max_task_args"] == []
    text = compat._insights_text(data, 2)
    assert "Tasks completed: 30" in text and "worker 1: 20 tasks" in text


def test_insights_enabled(start_method, capsys):
    with make(start_method, enable_insights=True) as pool:
        assert pool.get_insights() == {}             # nothing has run yet
        pool.map(ms.sleep_then, [0.01] * 20, chunk_size=1)
        insights = pool.get_insights()
        pool.print_insights()
    assert set(insights) == INSIGHT_KEYS
    assert sum(insights["n_completed_tasks"]) == 20 and len(insights["n_completed_tasks"]) == N_JOBS
    assert sum(insights[f"{part}_ratio"] for part in compat._PARTS) == pytest.approx(1.0, abs=1e-3)
    assert insights["working_ratio"] > 0
    assert "Tasks completed: 20" in capsys.readouterr().out


# --------------------------------------------------------------------------
# Docstring examples; the example program: the same output with gilfree as with MPIRE


def test_docstring_examples():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = [t for t in finder.find(compat, "gilfree.compat.mpire") if t.examples]
    assert len(tests) >= 5, [t.name for t in tests]
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0


def _run_example(path: Path) -> str:
    env = dict(os.environ)
    # Where this gilfree is imported from (not resolving symlinks: a
    # development tree links the sources next to the built extension).
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(gilfree.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=50, env=env,
                          cwd=str(path.parent))
    assert done.returncode == 0, f"{path.name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_example_prints_the_same_with_gilfree_and_mpire(tmp_path):
    source = EXAMPLE.read_text(encoding="utf-8")
    first_line, rest = source.split("\n", 1)
    assert first_line == "from gilfree.compat.mpire import WorkerPool"
    ours = _run_example(EXAMPLE)
    assert "map: 200 scores" in ours and "callbacks saw the same values: True" in ours
    try:
        import mpire  # noqa: F401
    except ImportError:
        return
    theirs_path = tmp_path / "mpire_example_with_mpire.py"
    theirs_path.write_text("from mpire import WorkerPool\n" + rest, encoding="utf-8")
    assert _run_example(theirs_path) == ours
