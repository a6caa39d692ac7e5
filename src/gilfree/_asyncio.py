"""asyncio on a gilfree pool: ``await pool.amap(...)``, ``async for x in
pool.aimap(...)``, ``await pool.aapply(...)``.

Awaiting never blocks the event loop.

* ``aapply`` submits at once and returns an :class:`asyncio.Future` wrapping
  the ``concurrent.futures.Future`` of ``Pool.submit`` (as
  ``loop.run_in_executor`` does): ``asyncio.gather`` over many of them wraps
  nothing in Tasks.
* ``aimap``/``amap`` run the pool's lazy ``imap`` on a small pump thread.
  Results cross to the loop in batches: the pump appends to a deque and
  schedules one ``loop.call_soon_threadsafe`` wake-up only when the consumer
  is asleep, so a consumer that keeps up costs one loop callback per batch,
  not per result.  ``aimap`` bounds how far the pump reads ahead of the
  consumer (imap's bounded look-ahead is kept); ``amap`` wants every result
  and reads on.

Cancelling the awaiting task -- or leaving an ``async for`` early -- closes
the iterator, which cancels the work not yet started.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any, AsyncGenerator, Callable, Deque, Iterable, List, Optional, Tuple, TypeVar

__all__ = ["aapply", "aimap", "amap"]

R = TypeVar("R")

_END = object()


def aapply(pool: Any, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> "asyncio.Future[R]":
    """Submit ``fn(*args, **kwargs)`` now; an awaitable of its result.
    Cancelling it cancels the call if it has not started.  Needs a running
    event loop (RuntimeError otherwise, before anything is submitted)."""
    loop = asyncio.get_running_loop()
    return asyncio.wrap_future(pool.submit(fn, *args, **kwargs), loop=loop)


class _Handoff:
    """Items from one producer thread to one coroutine on ``loop``.

    ``items`` is a deque (append/popleft are atomic); ``asleep`` -- guarded
    by ``lock`` -- says the consumer found the deque empty and waits on
    ``wake``; only then does the producer pay for a ``call_soon_threadsafe``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: Deque[Tuple[Any, Optional[BaseException]]] = collections.deque()
        self.lock = threading.Lock()
        self.asleep = False
        self.wake = asyncio.Event()

    def put(self, item: Tuple[Any, Optional[BaseException]]) -> bool:
        """Producer side; False once the loop is closed (nobody listens)."""
        self.items.append(item)
        with self.lock:
            if not self.asleep:
                return True
            self.asleep = False
        try:
            self.loop.call_soon_threadsafe(self.wake.set)
        except RuntimeError:  # the loop is closed
            return False
        return True

    async def get(self) -> Tuple[Any, Optional[BaseException]]:
        """Consumer side (on the loop)."""
        while True:
            if self.items:
                return self.items.popleft()
            with self.lock:
                # Checked again under the lock: an item appended after the
                # first look has been seen, or put() will see asleep.
                if self.items:
                    continue
                self.asleep = True
                self.wake.clear()
            await self.wake.wait()


def _start_pump(it: Any, handoff: _Handoff, room: Optional[threading.Semaphore],
                stop: threading.Event) -> threading.Thread:
    def pump() -> None:
        try:
            while not stop.is_set():
                if room is not None:
                    room.acquire()
                    if stop.is_set():
                        break
                try:
                    value = next(it)
                except StopIteration:
                    handoff.put((_END, None))
                    return
                except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                    handoff.put((None, exc))
                    return
                if not handoff.put((value, None)):
                    return
        finally:
            it.close()

    thread = threading.Thread(target=pump, name="gilfree-aimap", daemon=True)
    thread.start()
    return thread


async def aimap(pool: Any, fn: Callable[[Any], R], iterable: Iterable[Any], chunksize: Optional[int] = None,
                *, ordered: bool = True, window: Optional[int] = None) -> AsyncGenerator[R, None]:
    """Results of ``fn`` over ``iterable`` as an async iterator (input order,
    or completion order with ``ordered=False``).  An exception raised by
    ``fn`` ends the iteration there, raised in the consumer."""
    handoff = _Handoff(asyncio.get_running_loop())
    it = (pool.imap if ordered else pool.imap_unordered)(fn, iterable, chunksize)
    # Results the pump may pull ahead of the consumer.
    room = threading.Semaphore(window or max(64, 4 * getattr(pool, "workers", 1)))
    stop = threading.Event()
    _start_pump(it, handoff, room, stop)
    try:
        while True:
            value, exc = await handoff.get()
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
    handoff = _Handoff(asyncio.get_running_loop())
    it = pool.imap(fn, iterable, chunksize)
    stop = threading.Event()
    _start_pump(it, handoff, None, stop)
    out: List[R] = []
    items = handoff.items
    try:
        while True:
            value, exc = await handoff.get()
            # Take what else has arrived without a round trip through the
            # loop's queue, but let other coroutines run now and then.
            taken = 0
            while True:
                if exc is not None:
                    raise exc
                if value is _END:
                    return out
                out.append(value)
                taken += 1
                if not items or taken == 4096:
                    break
                value, exc = items.popleft()
            if taken == 4096:
                await asyncio.sleep(0)
    finally:
        stop.set()
        it.close()
