"""asyncio: await pool.amap / async for pool.aimap / await pool.aapply.

Awaiting never blocks the event loop (a ticker coroutine keeps ticking
while the pool works), results and exceptions arrive as with the blocking
methods, and cancelling the awaiting task (or leaving an ``async for``
early) cancels the work not yet started.
"""

from __future__ import annotations

import asyncio
import functools
import threading
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


def test_aapply_submits_at_once_and_gather_makes_no_tasks(backend):
    async def main():
        with gilfree.Pool(2, backend) as pool:
            futures = [pool.aapply(gfsupport.square, i) for i in range(200)]
            # Each is an asyncio.Future of this loop (not a coroutine), so
            # gather has nothing to wrap in a Task.
            assert all(isinstance(f, asyncio.Future) and not isinstance(f, asyncio.Task) for f in futures)
            assert all(f.get_loop() is asyncio.get_running_loop() for f in futures)
            tasks_before = len(asyncio.all_tasks())
            gathering = asyncio.gather(*futures)
            assert len(asyncio.all_tasks()) == tasks_before
            return await gathering

    assert asyncio.run(main()) == [i * i for i in range(200)]


def test_aapply_without_a_running_loop_submits_nothing(tmp_path):
    rec = gfsupport.Recorder(tmp_path / "calls")
    with gilfree.Pool(2, "threads") as pool:
        with pytest.raises(RuntimeError, match="no running event loop"):
            pool.aapply(functools.partial(gfsupport.record_and_sleep, rec.path, 0), 1)
    assert rec.count() == 0


def test_cancelling_an_aapply_future_cancels_the_queued_call(tmp_path):
    rec = gfsupport.Recorder(tmp_path / "calls")

    async def main():
        with gilfree.Pool(1, "threads") as pool:
            busy = pool.aapply(gfsupport.sleep_return, 0.3)
            queued = pool.aapply(functools.partial(gfsupport.record_and_sleep, rec.path, 0), 7)
            await asyncio.sleep(0.05)
            assert queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            await busy

    asyncio.run(main())
    assert rec.count() == 0


def test_results_cross_to_the_loop_in_batches():
    """A consumer that is not waiting costs the producer no loop callback: a
    burst of results is one wake-up, not one per result."""
    from gilfree import _asyncio

    async def main():
        loop = asyncio.get_running_loop()
        handoff = _asyncio._Handoff(loop)
        calls = 0
        real = loop.call_soon_threadsafe

        def counting(*args, **kwargs):
            nonlocal calls
            calls += 1
            return real(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        first = asyncio.create_task(handoff.get())
        await asyncio.sleep(0)           # the consumer finds nothing and sleeps
        assert handoff.asleep
        # A burst from another thread while the loop is busy (blocked here).
        producer = threading.Thread(target=lambda: [handoff.put((i, None)) for i in range(1000)])
        producer.start()
        producer.join()
        got = [(await first)[0]] + [(await handoff.get())[0] for _ in range(999)]
        return got, calls

    got, calls = asyncio.run(main())
    assert got == list(range(1000))
    assert calls == 1, calls


def test_amap_large_input_and_an_error_late(backend):
    async def main():
        with gilfree.Pool(2, backend) as pool:
            n = 20_000 if backend != "dask" else 2_000
            out = await _with_ticker(pool.amap(gfsupport.square, range(n)))
            with pytest.raises(ValueError):
                await pool.amap(gfsupport.fail_on_five, [0] * 3000 + [5] + [0] * 10)
            return n, out

    n, (out, _ticks, _elapsed) = asyncio.run(main())
    assert out == [x * x for x in range(n)]
