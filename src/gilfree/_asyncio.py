"""asyncio on a gilfree pool: ``await pool.amap(...)``, ``async for x in
pool.aimap(...)``, ``await pool.aapply(...)``.

Awaiting never blocks the event loop.  ``aapply`` awaits the
``concurrent.futures.Future`` of ``Pool.submit`` through
:func:`asyncio.wrap_future`.  ``aimap``/``amap`` run the pool's lazy
``imap`` and hand results over with ``loop.call_soon_threadsafe`` from a
small pump thread that pulls at most a window of results ahead of the
consumer (so imap's bounded look-ahead is kept).  Cancelling the awaiting
task -- or leaving an ``async for`` early -- closes the iterator, which
cancels the work not yet started.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncGenerator, Callable, Iterable, List, Optional, TypeVar

__all__ = ["aapply", "aimap", "amap"]

R = TypeVar("R")

_END = object()


async def aapply(pool: Any, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """``fn(*args, **kwargs)`` on the pool, awaited.  Cancelling the await
    cancels the call if it has not started."""
    future = pool.submit(fn, *args, **kwargs)
    return await asyncio.wrap_future(future)


async def aimap(pool: Any, fn: Callable[[Any], R], iterable: Iterable[Any], chunksize: Optional[int] = None,
                *, ordered: bool = True, window: Optional[int] = None) -> AsyncGenerator[R, None]:
    """Results of ``fn`` over ``iterable`` as an async iterator (input order,
    or completion order with ``ordered=False``).  An exception raised by
    ``fn`` ends the iteration there, raised in the consumer."""
    loop = asyncio.get_running_loop()
    it = (pool.imap if ordered else pool.imap_unordered)(fn, iterable, chunksize)
    queue: "asyncio.Queue[tuple]" = asyncio.Queue()
    # Results the pump may pull ahead of the consumer.
    room = threading.Semaphore(window or max(2, 4 * getattr(pool, "workers", 1)))
    stop = threading.Event()

    def hand_over(item: tuple) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
            return True
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            return False

    def pump() -> None:
        try:
            while not stop.is_set():
                room.acquire()
                if stop.is_set():
                    break
                try:
                    value = next(it)
                except StopIteration:
                    hand_over((_END, None))
                    return
                except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                    hand_over((None, exc))
                    return
                if not hand_over((value, None)):
                    return
        finally:
            it.close()

    thread = threading.Thread(target=pump, name="gilfree-aimap", daemon=True)
    thread.start()
    try:
        while True:
            value, exc = await queue.get()
            if exc is not None:
                raise exc
            if value is _END:
                return
            room.release()
            yield value
    finally:
        # Done, failed, cancelled or left early: stop the pump and cancel the
        # work not yet started (never waiting here: that would block the loop).
        stop.set()
        room.release()
        it.close()


async def amap(pool: Any, fn: Callable[[Any], R], iterable: Iterable[Any], chunksize: Optional[int] = None) -> List[R]:
    """``[fn(x) for x in iterable]`` on the pool, awaited.  Cancelling the
    await cancels the work not yet started."""
    out: List[R] = []
    agen = aimap(pool, fn, iterable, chunksize)
    try:
        async for value in agen:
            out.append(value)
    finally:
        await agen.aclose()
    return out
