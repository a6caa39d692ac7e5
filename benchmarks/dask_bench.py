"""backend="dask" against calling Dask directly, on one LocalCluster.

    python benchmarks/dask_bench.py [--workers 2] [--repeat 3]

Workloads: (a) 100,000 tiny tasks (x + 1) -- client.map (one Dask task per
item) is timed on 2,000 of them, as 100,000 would take minutes, and the
comparison is per item; a row with both on 2,000 items is there too;
(b) 200 tasks of ~10 ms of pure Python.  "client.map" is the plain Dask way:
one future per item, then client.gather.  "gilfree faster by" is client.map's
time per item over gilfree's (> 1: gilfree is faster).  Needs the extra:
pip install 'gilfree[dask]'.
"""

from __future__ import annotations

import argparse
import sys
import time

import gilfree


def add_one(x: int) -> int:
    return x + 1


def spin_10ms(x: int) -> int:
    end = time.perf_counter() + 0.01
    n = 0
    while time.perf_counter() < end:
        n += 1
    return x


#: (name, function, items for gilfree, items for client.map).  client.map
#: makes one Dask task per item (about a millisecond of scheduling each), so
#: on the tiny workload it runs on 2,000 items, not 100,000 (minutes): the
#: comparison there is per item.
WORKLOADS = [
    ("tiny tasks (x + 1)", add_one, 100_000, 2_000),
    ("tiny tasks (x + 1), same size", add_one, 2_000, 2_000),
    ("~10 ms tasks (pure Python)", spin_10ms, 200, 200),
]


def best_of(repeat: int, run) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster, \
            Client(cluster) as client, \
            gilfree.Pool(args.workers, backend="dask", client=client) as pool:
        rows = []
        for name, fn, n_ours, n_direct in WORKLOADS:
            ours_data = list(range(n_ours))
            direct_data = list(range(n_direct))
            expected = [fn(x) for x in range(10)]
            assert pool.map(fn, direct_data)[:10] == expected  # warm up (imports on the workers)

            def direct() -> None:
                futures = client.map(fn, direct_data, pure=False)
                assert client.gather(futures)[:10] == expected
                del futures

            def ours() -> None:
                assert pool.map(fn, ours_data)[:10] == expected

            t_direct = best_of(args.repeat, direct)
            t_ours = best_of(args.repeat, ours)
            rows.append((name, n_direct, t_direct, n_ours, t_ours))
            print(f"  done: {name}", file=sys.stderr, flush=True)

    print(f"LocalCluster: {args.workers} worker processes x 1 thread; best of {args.repeat}.\n")
    print("| workload | client.map + gather | gilfree backend=\"dask\" map | per item: client.map "
          "| per item: gilfree | gilfree faster by |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, n_direct, t_direct, n_ours, t_ours in rows:
        per_direct = t_direct / n_direct
        per_ours = t_ours / n_ours
        print(f"| {name} | {n_direct:,} items: {t_direct:.3f} s | {n_ours:,} items: {t_ours:.3f} s "
              f"| {_per(per_direct)} | {_per(per_ours)} | {per_direct / per_ours:.1f}x |")


def _per(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


if __name__ == "__main__":
    main()
