"""Typed use of gilfree's public API, checked by mypy (never executed).

mypy runs over this file in the test suite (tests/python/test_typing.py):
each annotated assignment states the type a user relies on, so a stub or an
annotation that drifts (a method returning Any, a wrong element type) makes
the check fail.  The second half holds calls that must be *rejected*; each
carries the error code mypy must report (``warn_unused_ignores`` turns a
call that is no longer rejected into an error).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
from typing import AsyncIterator, Iterator, List, Optional

import gilfree
from gilfree.compat.multiprocessing import Pool as MpPool


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def pool_api() -> None:
    with gilfree.Pool(2, backend="threads") as pool:
        squares: List[int] = pool.map(square, range(10))
        sums: List[int] = pool.starmap(add, [(1, 2), (3, 4)])
        lazy: Iterator[int] = pool.imap(square, range(10))
        unordered: Iterator[int] = pool.imap_unordered(square, range(10), chunksize=2)
        one: int = pool.apply(square, (3,))
        pending: gilfree.AsyncResult[int] = pool.apply_async(square, (3,))
        got: int = pending.get(timeout=1.0)
        future: cf.Future[int] = pool.submit(square, 3)
        done: int = future.result()
        workers: int = pool.workers
        backend: str = pool.backend
        print(squares, sums, list(lazy), list(unordered), one, got, done, workers, backend)


def auto_and_map() -> None:
    with gilfree.Pool() as pool:
        decision: Optional[gilfree.Decision] = pool.decision
        print(decision)
    squares: List[int] = gilfree.map(square, range(10), workers=2)
    cpus: int = gilfree.usable_cpus()
    measured: gilfree.Probe = gilfree.probe(square, 3)
    held: float = measured.gil_held
    print(squares, cpus, held)


def executor_api() -> None:
    with gilfree.Executor(max_workers=2) as ex:
        future: cf.Future[int] = ex.submit(square, 2)
        results: Iterator[int] = ex.map(square, range(4), timeout=5.0)
        print(future.result(), list(results))
    # A gilfree.Executor is a concurrent.futures.Executor.
    base: cf.Executor = gilfree.Executor(max_workers=1)
    base.shutdown()


def multiprocessing_api() -> None:
    with MpPool(2) as pool:
        squares: List[int] = pool.map(square, range(4))
        later = pool.map_async(square, range(4))
        values: List[int] = later.get(timeout=5)
        single: int = pool.apply_async(square, (4,)).get()
        print(squares, values, single)


async def asyncio_api() -> None:
    with gilfree.Pool(2, backend="threads") as pool:
        squares: List[int] = await pool.amap(square, range(4))
        agen: AsyncIterator[int] = pool.aimap(square, range(4))
        async for value in agen:
            print(value)
        one: int = await pool.aapply(square, 3)
        pending: "asyncio.Future[int]" = pool.aapply(square, 5)  # submitted at once
        many: List[int] = await asyncio.gather(*[pool.aapply(square, i) for i in range(3)])
        print(squares, one, await pending, many)


def rejected() -> None:
    with gilfree.Pool(2, backend="threads") as pool:
        wrong: List[str] = pool.map(square, range(3))  # type: ignore[arg-type]
        pool.apply(square, 3)  # type: ignore[arg-type]
        print(wrong)


if __name__ == "__main__":  # pragma: no cover - mypy only
    pool_api()
    auto_and_map()
    executor_api()
    multiprocessing_api()
    asyncio.run(asyncio_api())
    rejected()
