"""``backend="auto"``: threads or processes, chosen by measuring the function.

An auto pool starts as a thread pool (cheap).  The first time a map-style call
meets a function, its first items run right here under the GIL probe
(:mod:`gilfree._probe`) for a few milliseconds; their results are kept, not
recomputed.  A function that releases the GIL most of the time stays on
threads; one that holds it goes to a process pool, started on first need --
unless the whole input would take less time serially than starting
processes, in which case threads run it.  The decision is remembered per
function and re-made when a later probe disagrees.  On an interpreter whose
GIL is disabled (free-threaded CPython) threads are always right.
"""

from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

from . import _probe
from ._probe import Probe

__all__ = ["Decision", "PerformanceWarning", "PROBE_SECONDS"]

PROBE_SECONDS = 0.015
"""How long the first items of a map run under the probe, at most (they run
here, one after the other: the probe costs about half of this in lost
parallelism on the first call only)."""

PROCESS_START_SECONDS = 0.1
"""What starting worker processes costs (forkserver, 2 workers, measured here:
~80 ms); inputs cheaper than this run on threads."""


TINY_ITEM_SECONDS = 5e-6
"""Items cheaper than this stay on threads whatever the GIL does: moving them
between processes costs more than running them (measured here: 1e6 x
``x + 1`` runs at ~1.0x serial on threads, ~0.7x on processes)."""


class PerformanceWarning(UserWarning):
    """The chosen backend cannot speed this function up (see the message).

    A ``backend="threads"`` pool gives it (once per pool) when the function
    of a map turns out to hold the GIL.  To silence it where that is known
    and wanted, filter it like any warning:

    >>> import warnings, gilfree
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", gilfree.PerformanceWarning)
    ...     with gilfree.Pool(2, "threads") as pool:
    ...         pool.map(abs, [-1, -2, 3])
    [1, 2, 3]
    """


@dataclass(frozen=True)
class Decision:
    """Why an auto pool runs a function where it does.

    ``backend`` is ``"threads"`` or ``"processes"``; ``reason`` says why in
    words; ``probe`` holds the measurement (None when none was needed, e.g.
    the GIL is disabled); ``items_probed`` and ``seconds_per_item`` describe
    the probed items.  An auto pool's last one is ``pool.decision``.

    >>> import gilfree
    >>> with gilfree.Pool(2) as pool:   # backend="auto"
    ...     _ = pool.map(abs, range(100))
    >>> decision = pool.decision
    >>> decision.function, decision.backend
    ('builtins.abs', 'threads')
    >>> print(decision)   # doctest: +ELLIPSIS
    builtins.abs -> threads: ...
    """

    function: str
    backend: str
    reason: str
    probe: Optional[Probe] = None
    items_probed: int = 0
    seconds_per_item: float = 0.0
    remember: bool = field(default=True, repr=False, compare=False)

    def __str__(self) -> str:
        return f"{self.function} -> {self.backend}: {self.reason}"


def _run_items(fn: Callable[..., Any], items: Iterator[Any], star: bool,
               budget: float) -> Tuple[int, List[Any], Optional[BaseException], List[Any]]:
    """Call fn on items until the budget is spent or they run out.

    Returns (inputs taken, results, the exception of the last one taken or
    None, inputs read but not taken).  Items run in batches between two
    looks at the clock (1, 2, 4 ... up to 1024, never more than the time left
    at the rate so far), so that the probe runs tiny items at nearly the
    speed of a plain loop (a clock read and two appends per item made it
    ~2.5x slower than serial)."""
    results: List[Any] = []
    append = results.append
    start = time.perf_counter()
    deadline = start + budget
    batch = 1
    while True:
        chunk = list(itertools.islice(items, batch))
        if not chunk:
            break
        before = len(results)
        try:
            if star:
                for args in chunk:
                    append(fn(*args))
            else:
                for x in chunk:
                    append(fn(x))
        except Exception as exc:  # noqa: BLE001 - re-raised by the caller, with its index
            failed = len(results) - before   # its position in the chunk
            return len(results) + 1, results, exc, chunk[failed + 1:]
        now = time.perf_counter()
        if now >= deadline:
            break
        per_item = (now - start) / len(results)
        batch = max(1, min(2 * batch, 1024, int((deadline - now) / per_item) if per_item > 0 else 1024))
    return len(results), results, None, []


def decide(fn: Callable[..., Any], probe: Optional[Probe], count: int, remaining: Optional[int],
           processes_running: bool = False) -> Decision:
    """The backend for fn, from the probe of its first `count` items and the
    number of items still to come (None: unknown)."""
    name = _probe._describe(fn)
    if not _probe.gil_enabled():
        return Decision(name, "threads", "the GIL is disabled: threads run Python in parallel")
    assert probe is not None
    per_item = probe.wall_time / max(1, count)
    if not probe.confident:
        # The whole input ran within the probe, too fast to measure: it is
        # done already, and the next input of this function is measured.
        return Decision(name, "threads",
                        f"the input took {probe.wall_time * 1e3:.2f} ms, too little to measure or "
                        "to be worth starting processes for", probe, count, per_item,
                        remember=False)
    if probe.releases_gil:
        return Decision(name, "threads",
                        f"it released the GIL {1 - probe.gil_held:.0%} of the time",
                        probe, count, per_item)
    if not processes_running and remaining is not None and per_item * remaining < PROCESS_START_SECONDS:
        # It holds the GIL, but processes cannot pay for their start-up on
        # so little work.  Not remembered: a bigger input (or this one
        # again, see AutoPool) may well pay for them.
        return Decision(name, "threads",
                        f"it holds the GIL ({probe.gil_held:.0%}), but the rest of the input "
                        f"(~{per_item * remaining * 1e3:.1f} ms serially) costs less than "
                        "starting processes", probe, count, per_item, remember=False)
    if per_item < TINY_ITEM_SECONDS:
        return Decision(name, "threads",
                        f"it holds the GIL ({probe.gil_held:.0%}), but an item takes "
                        f"~{per_item * 1e6:.2f} us: sending items to processes would cost more "
                        "than running them", probe, count, per_item)
    return Decision(name, "processes",
                    f"it held the GIL {probe.gil_held:.0%} of the time: threads would run it "
                    "one at a time", probe, count, per_item)


def probe_first_items(fn: Callable[..., Any], iterable: Iterable[Any], star: bool,
                      processes_running: bool = False) -> Tuple[Decision, int, List[Any], Iterator[Any], Optional[BaseException]]:
    """Run the first items of a map under the probe.

    Returns (decision, how many inputs were taken, their results, an
    iterator over the rest of the input, the exception an item raised or
    None)."""
    remaining_total: Optional[int]
    try:
        remaining_total = len(iterable)  # type: ignore[arg-type]
    except TypeError:
        remaining_total = None
    it = iter(iterable)
    if not _probe.gil_enabled():
        return decide(fn, None, 0, remaining_total), 0, [], it, None
    ok, value, probe = _probe._measure(_run_items, (fn, it, star, PROBE_SECONDS), None)
    if not ok:
        raise value
    taken, results, error, unread = value
    # The probe ran the helper that calls fn item by item: name fn.
    probe = replace(probe, function=_probe._describe(fn))
    remaining = None if remaining_total is None else remaining_total - taken
    decision = decide(fn, probe, max(1, taken), remaining, processes_running)
    rest = itertools.chain(unread, it) if unread else it
    return decision, taken, results, rest, error


def performance_warning(fn: Callable[..., Any], probe: Probe, items: int, workers: int) -> None:
    """Warn that a thread pool ran a GIL-holding function one item at a time."""
    warnings.warn(
        f"gilfree: {_probe._describe(fn)} held the GIL {probe.gil_held:.0%} of the time "
        f"while {workers} worker threads mapped it over {items} items "
        f"({probe.wall_time * 1e3:.0f} ms wall, {probe.cpu_time * 1e3:.0f} ms CPU): "
        "threads run it one at a time. Use backend='processes' (or 'auto', which "
        "measures and chooses).",
        PerformanceWarning,
        stacklevel=4,
    )

