"""asyncio: await pool.amap / async for pool.aimap / await pool.aapply.

Awaiting never blocks the event loop (a ticker coroutine keeps ticking
while the pool works), results and exceptions arrive as with the blocking
methods, and cancelling the awaiting task (or leaving an ``async for``
early) cancels the work not yet started.
"""

from __future__ import annotations

import asyncio
import functools
import time

import pytest

import gilfree
import gfsupport

pytestmark = pytest.mark.timeout(60)


async def _with_ticker(coro, period=0.005):
    """Run coro while a ticker counts; (result, ticks, elapsed)."""
    ticks = 0
    done = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(period)

    task = asyncio.create_task(ticker())
    start = time.monotonic()
    try:
        result = await coro
    finally:
        done.set()
        await task
    return result, ticks, time.monotonic() - start


def test_amap_keeps_the_loop_running(backend):
    async def main():
        with gilfree.Pool(2, backend) as pool:
            return await _with_ticker(pool.amap(gfsupport.sleep_return, [0.02] * 20, chunksize=1))

    result, ticks, elapsed = asyncio.run(main())
    assert result == [None] * 20
    # 20 x 20 ms on 2 workers: ~0.2 s; a blocked loop would tick once.
    assert ticks >= 0.4 * elapsed / 0.005, (ticks, elapsed)


def test_aimap_ordered_and_unordered(backend):
    async def main():
        with gilfree.Pool(2, backend) as pool:
            ordered = [x async for x in pool.aimap(gfsupport.square, range(50))]
            unordered = [x async for x in pool.aimap(gfsupport.square, iter(range(50)), ordered=False)]
            return ordered, unordered

    ordered, unordered = asyncio.run(main())
    assert ordered == [x * x for x in range(50)]
    assert sorted(unordered) == ordered


def test_aapply_and_errors(backend):
    async def main():
        with gilfree.Pool(2, backend) as pool:
            value = await pool.aapply(gfsupport.kw_echo, 1, 2, a=3)
            with pytest.raises(ValueError) as info:
                await pool.amap(gfsupport.fail_on_five, range(10))
            with pytest.raises(ZeroDivisionError):
                await pool.aapply(divmod, 1, 0)
            return value, info.value

    value, exc = asyncio.run(main())
    assert value == gfsupport.kw_echo(1, 2, a=3)
    assert isinstance(exc.__cause__, gilfree.RemoteTraceback)


def test_cancelling_the_await_cancels_the_rest(backend, tmp_path):
    rec = gfsupport.Recorder(tmp_path / "calls")

    async def main():
        with gilfree.Pool(2, backend) as pool:
            task = asyncio.create_task(
                pool.amap(functools.partial(gfsupport.record_and_sleep, rec.path, 0.02), range(200), chunksize=1))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The pool is still good for more work.
            return await pool.amap(gfsupport.square, range(5))

    assert asyncio.run(main()) == [0, 1, 4, 9, 16]
    time.sleep(0.3)
    ran = rec.count()
    assert 1 <= ran < 60, ran   # 200 x 20 ms would take 2 s on 2 workers


def test_leaving_async_for_early_cancels_the_rest(backend, tmp_path):
    rec = gfsupport.Recorder(tmp_path / "calls")

    async def main():
        with gilfree.Pool(2, backend) as pool:
            got = []
            agen = pool.aimap(functools.partial(gfsupport.record_and_sleep, rec.path, 0.01), range(300), chunksize=1)
            async for x in agen:
                got.append(x)
                if len(got) == 5:
                    break
            await agen.aclose()
            return got

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    time.sleep(0.3)
    assert rec.count() < 60


def test_amap_on_an_auto_pool():
    async def main():
        with gilfree.Pool(2) as pool:
            return await pool.amap(gfsupport.square, range(100))

    assert asyncio.run(main()) == [x * x for x in range(100)]
