"""The GIL probe: how much of a call's time did it hold the GIL?

:func:`probe` runs ``fn(*args, **kwargs)`` in the calling thread while a
native sampler thread (C, ``_ext/probe.c``) keeps trying to take the GIL:
whenever the call holds the GIL the sampler waits (until the interpreter asks
the holder to drop it, every switch interval), whenever the call runs in C
with the GIL released the sampler gets it at once.  The share of the time the
sampler had to wait is the GIL-held fraction.  ``backend="auto"`` uses the
same measurement on the first chunk of a map.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Tuple

from . import _core

__all__ = ["Probe", "probe", "gil_enabled", "HOLDS_GIL_ABOVE"]

HOLDS_GIL_ABOVE = 0.5
"""A call that held the GIL more than this share of its time "holds the GIL"."""

MIN_SAMPLES = 20
"""A call shorter than two switch intervals is measured reliably only if it
let the sampler in this many times (a GIL-holding call shorter than the
switch interval never has to let it in, so its waits say too little)."""


def gil_enabled() -> bool:
    """Whether this interpreter runs with a GIL (False on free-threaded
    CPython started with the GIL disabled)."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def _describe(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    module = getattr(fn, "__module__", None)
    if isinstance(name, str):
        return f"{module}.{name}" if isinstance(module, str) else name
    return repr(fn)


@dataclass(frozen=True, repr=False)
class Probe:
    """What :func:`probe` measured about one call.

    ``wall_time`` and ``cpu_time`` (the calling thread's) are in seconds;
    ``gil_held`` is the share (0.0-1.0) of the call's time during which
    another thread could not get the GIL; ``samples`` is how many times the
    sampler tried.

    >>> import time, gilfree
    >>> p = gilfree.probe(time.sleep, 0.05)
    >>> p.releases_gil, p.recommended_backend
    (True, 'threads')
    """

    function: str
    wall_time: float
    cpu_time: float
    gil_held: float
    samples: int
    gil_enabled: bool
    sampled_time: float = 0.0
    value: Any = field(default=None, compare=False)

    @property
    def releases_gil(self) -> bool:
        """True if the call let other threads have the GIL most of the time."""
        return not self.gil_enabled or self.gil_held <= HOLDS_GIL_ABOVE

    @property
    def recommended_backend(self) -> str:
        """``"threads"`` for a call that releases the GIL (or when there is no
        GIL), else ``"processes"``."""
        return "threads" if self.releases_gil else "processes"

    @property
    def confident(self) -> bool:
        """False when the call was too short to tell: the interpreter asks a
        thread that holds the GIL to drop it only every switch interval
        (``sys.getswitchinterval()``, 5 ms), so a call shorter than two of
        them that did not let the sampler in often is not conclusive."""
        return (
            not self.gil_enabled
            or self.wall_time >= 2 * sys.getswitchinterval()
            or self.samples >= MIN_SAMPLES
        )

    def __repr__(self) -> str:
        return (
            f"Probe({self.function}: wall {self.wall_time * 1e3:.2f} ms, "
            f"cpu {self.cpu_time * 1e3:.2f} ms, GIL held {self.gil_held:.0%} "
            f"({self.samples} samples{'' if self.confident else ', too short to tell'}), "
            f"releases_gil={self.releases_gil}, gil_enabled={self.gil_enabled}, "
            f"recommended_backend={self.recommended_backend!r})"
        )


def _measure(fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Optional[dict],
             own_thread: bool = True) -> Tuple[bool, Any, Probe]:
    """Run the call under the sampler: (ok, value or exception, Probe).

    own_thread (the probe): the call runs Python in this thread, so the
    share of the GIL it held is bounded by how much this thread ran (with a
    margin, see below) -- that keeps other busy threads from being blamed on
    a call that sleeps or waits, and cpu_time is this thread's.  Otherwise (watching a pool's map, whose
    caller only waits) the sampler's share stands and cpu_time is the
    whole process's."""
    (ok, value, wall_ns, thread_cpu_ns, wait_ns, pause_ns, samples, _max_wait,
     process_cpu_ns) = _core._probe_call(fn, args, kwargs or None)
    cpu_ns = thread_cpu_ns if own_thread else process_cpu_ns
    if samples > 0:
        held = wait_ns / max(1, wait_ns + pause_ns)
    else:
        # Too short to sample: a call that kept a CPU busy all along most
        # likely held the GIL (rough; Probe.confident says so).
        held = min(1.0, cpu_ns / wall_ns) if wall_ns > 0 else 1.0
    other_cpu_ns = process_cpu_ns - thread_cpu_ns
    if own_thread and wall_ns > 0 and other_cpu_ns > 0.3 * wall_ns:
        # Other threads of this process ran meanwhile: the GIL the sampler
        # waited for may have been theirs.  A thread that hardly ran cannot
        # have held it most of the time, so bound the call's share by how
        # much it ran (x2: a holder that loses its CPU to other processes
        # still holds the GIL).  When no other thread ran, the GIL was this
        # call's, however often the machine took its CPU away.
        held = min(held, 2.0 * thread_cpu_ns / wall_ns)
    held = 0.0 if math.isnan(held) else max(0.0, min(1.0, held))
    result = Probe(
        function=_describe(fn),
        wall_time=wall_ns / 1e9,
        cpu_time=cpu_ns / 1e9,
        gil_held=held,
        samples=int(samples),
        gil_enabled=gil_enabled(),
        sampled_time=(wait_ns + pause_ns) / 1e9,
        value=value if ok else None,
    )
    return ok, value, result


def probe(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Probe:
    """Run ``fn(*args, **kwargs)`` here and measure how much of its time it
    held the GIL; return a :class:`Probe` (its ``value`` is the call's result).

    An exception raised by the call propagates.  Waits with the GIL released
    apart from the call itself, so other threads keep running.

    >>> import gilfree
    >>> p = gilfree.probe(sum, range(3_000_000))
    >>> p.value, p.releases_gil, p.recommended_backend
    (4499998500000, False, 'processes')
    """
    if not callable(fn):
        raise TypeError(f"gilfree.probe(): fn must be callable, got {fn!r} (type {type(fn).__name__})")
    ok, value, result = _measure(fn, args, kwargs)
    if not ok:
        raise value
    return result
