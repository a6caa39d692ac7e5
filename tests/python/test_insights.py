"""Pool(insights=True): the numbers add up, they measure what they claim,
and the text table and the PNG timeline are produced."""

from __future__ import annotations

import json
import time

import pytest

import gilfree
import gfsupport
import lifesupport as ls

pytestmark = pytest.mark.timeout(60)

PARTS = ("working_time", "waiting_time", "gil_wait_time", "data_time", "init_time", "exit_time")


def busy(n):
    """Pure Python: holds the GIL the whole time."""
    s = 0
    for i in range(n):
        s += i * i
    return s


@pytest.mark.not_on_dask("uses insights=True, which backend='dask' refuses by design (ValueError; Dask's dashboard shows the workers)")
def test_numbers_add_up_to_the_wall_time(backend):
    start = time.monotonic()
    with gilfree.Pool(2, backend, insights=True, initializer=ls.init_sleep, initargs=(0.02,)) as pool:
        pool.map(gfsupport.sleep_return, [0.01] * 40, chunksize=1)
        pool.map(gfsupport.square, range(2000))
        pool.apply(gfsupport.sleep_return, (0.02,))
    wall = time.monotonic() - start
    d = pool.insights().as_dict()
    assert d["backend"] == backend and d["workers"] == 2
    assert d["totals"]["tasks"] == 40 + 2000 + 1
    assert 0 < d["wall_time"] <= wall * 1.05
    assert len(d["per_worker"]) == 2
    for r in d["per_worker"]:
        accounted = sum(r[k] for k in PARTS)
        # Every part is measured on its own; together they cover the life.
        assert 0.9 * r["lifetime"] <= accounted <= 1.1 * r["lifetime"], r
        assert r["init_time"] >= 0.015
        if backend == "threads":
            # A thread lives as long as the pool.
            assert r["lifetime"] >= 0.9 * d["wall_time"]
    # The sleeping calls are in the working time, not elsewhere.
    assert d["totals"]["working_time"] >= 0.9 * (40 * 0.01 + 0.02)
    json.dumps(d)  # plain data


def test_gil_contention_shows_on_threads():
    with gilfree.Pool(2, "threads", insights=True) as pool:
        with pytest.warns(gilfree.PerformanceWarning):
            pool.map(busy, [20000] * 200)
    t = pool.insights().as_dict()["totals"]
    # Two threads running pure Python take turns: each is on a CPU about
    # half the time it spends in the calls.
    assert t["cpu_time"] < 0.8 * t["working_time"], t
    off_cpu = [s for s in pool.insights().as_dict()["timeline"] if s[1] == "work" and s[5] is not None]
    assert all(s[6] == "threads" for s in off_cpu)
    assert off_cpu and min(s[5] for s in off_cpu) < 0.8


def test_processes_report_data_and_start_up():
    np = pytest.importorskip("numpy")
    arrays = [np.ones(1 << 17) for _ in range(8)]  # 1 MiB each
    with gilfree.Pool(2, "processes", insights=True) as pool:
        out = pool.map(np.sum, arrays, chunksize=1)
    assert out == [float(1 << 17)] * 8
    d = pool.insights().as_dict()
    t = d["totals"]
    assert t["tasks"] == 8
    assert t["data_time"] > 0 and t["start_up_time"] > 0
    assert t["caller_encode_time"] > 0 and t["caller_decode_time"] >= 0
    assert all(r["pids"] and r["lives"] == 1 for r in d["per_worker"])
    kinds = {s[1] for s in d["timeline"]}
    assert {"work", "data", "start"} <= kinds


def test_recycled_workers_have_several_lives():
    with gilfree.Pool(2, "processes", insights=True, max_tasks_per_worker=5) as pool:
        pool.map(gfsupport.square, range(40), chunksize=1)
    d = pool.insights().as_dict()
    assert d["totals"]["tasks"] == 40
    assert sum(r["lives"] for r in d["per_worker"]) >= 8
    assert all(len(set(r["pids"])) == r["lives"] for r in d["per_worker"])


@pytest.mark.not_on_dask("uses insights=True, which backend='dask' refuses by design (ValueError; Dask's dashboard shows the workers)")
def test_insights_while_running_and_text_table(backend):
    pool = gilfree.Pool(2, backend, insights=True)
    try:
        it = pool.imap(gfsupport.sleep_return, [0.02] * 20, chunksize=1)
        next(it)
        live = pool.insights().as_dict()   # mid-way: readable at any time
        assert 1 <= live["totals"]["tasks"] <= 20
        list(it)
        text = str(pool.insights())
    finally:
        pool.close()
        pool.join()
    assert text.startswith(f"gilfree insights: {backend} pool, 2 workers")
    assert "total" in text and "working" in text and "on CPU" in text
    assert "20 tasks" in text or "tasks in" in text
    assert "Insights" in repr(pool.insights())


@pytest.mark.not_on_dask("uses insights=True, which backend='dask' refuses by design (ValueError; Dask's dashboard shows the workers)")
@pytest.mark.filterwarnings("ignore::gilfree.PerformanceWarning")
def test_plot_writes_a_png(tmp_path, backend, warm_matplotlib):
    with gilfree.Pool(2, backend, insights=True) as pool:
        pool.map(busy, [5000] * 100)
        pool.map(gfsupport.sleep_return, [0.005] * 20, chunksize=1)
    path = pool.insights().plot(tmp_path / "timeline.png")
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_insights_need_the_option(backend):
    with gilfree.Pool(2, backend) as pool:
        with pytest.raises(ValueError, match="insights=True"):
            pool.insights()
    with pytest.raises(TypeError, match="insights must be True or False"):
        gilfree.Pool(2, backend, insights="yes")


def test_auto_pool_insights():
    with gilfree.Pool(2, insights=True) as pool:   # backend="auto"
        pool.map(gfsupport.sleep_return, [0.001] * 200)
    d = pool.insights().as_dict()
    assert d["totals"]["tasks"] >= 100
    assert d["backend"].startswith("threads")
