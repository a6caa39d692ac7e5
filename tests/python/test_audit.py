"""gilfree audits itself: no blocking call of the public API holds the GIL
while it waits.

A *ticker* thread runs a pure-Python loop and counts.  Its rate is measured
with the main thread idle in time.sleep() (the *solo* rate), and while the
main thread is blocked in the call under test, waiting for work that itself
releases the GIL (tasks that time.sleep()).  If the call lets other threads
run while it waits, the ticker keeps (nearly) its solo rate; if it held the
GIL, or kept taking it back, the ticker would get about half of it (the GIL
changes hands every switch interval, 5 ms) or less.  The audit requires at
least MIN_RATIO of the solo rate.

The machine may be small (2 cores) and noisy: a single thread's speed drifts
by +-15% from one 0.2 s window to the next, more under outside load.  So:

* each attempt compares the blocked window with the mean of the solo windows
  just before and after it (not with a rate measured seconds earlier);
* the ticker also times its own stalls (gaps of more than STALL_S between
  two units of work: waiting for the GIL, or for a CPU), which gives a
  second ratio that does not depend on the machine's speed: the share of the
  window in which the ticker ran, relative to the same share when solo.  A
  GIL-holding wait gives 0.50 +- 0.01 here on a quiet machine, whatever the
  speed drift does to the counts;
* an attempt passes when BOTH ratios reach MIN_RATIO, and a case passes when
  one of up to ATTEMPTS attempts does;
* an attempt counts only if the ticker ran for SOLO_RUNNING_MIN of its solo
  windows: on a saturated machine a thread waits for a CPU about as much as
  it would wait for a held GIL, and the two cannot be told apart.  A case
  with no such attempt is skipped ("machine too busy"), never passed.

A negative control (a main thread that busy-loops in Python for as long as
the calls block) runs through the same harness and must fail it: the audit
has teeth.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import re
import statistics
import threading
import time
from pathlib import Path

import pytest

import gfsupport

# How long each task sleeps (so, roughly, how long each audited call blocks).
TASK_S = 0.3
# How long each solo measurement lasts.
SOLO_S = 0.2
# A blocking call must keep at least this share of the ticker's solo rate.
MIN_RATIO = 0.80
# Attempts per case (the best one counts); most cases pass at the first.
ATTEMPTS = 5
# A gap longer than this between two units of the ticker's work (each about a
# microsecond) is a stall: it waited for the GIL (5 ms at a time when the main
# thread holds it) or for a CPU.
STALL_S = 0.0002
# An attempt counts only if the ticker ran (had a CPU and the GIL) for at least
# this share of both of its solo windows.  With less, a GIL-holding call could
# score up to 0.5 / SOLO_RUNNING_MIN, so this must stay well above 0.5 / MIN_RATIO.
SOLO_RUNNING_MIN = 0.70
# A call that returns faster than this did not block: a window that short says
# nothing about the ticker's rate (and cannot starve it for longer than that).
MIN_WINDOW_S = 0.15

# The thread backend's bounded task queue (src/gilfree/_ext/pool.c).
_POOL_C = Path(__file__).resolve().parents[2] / "src" / "gilfree" / "_ext" / "pool.c"


def _queue_capacity() -> int:
    try:
        text = _POOL_C.read_text(encoding="utf-8")
    except OSError:  # an installed package without sources: the value of today
        return 1 << 15
    m = re.search(r"#define\s+GFX_QUEUE_CAPACITY\s+\(?\s*(\d+)u?\s*<<\s*(\d+)\s*\)?", text)
    if m:
        return int(m.group(1)) << int(m.group(2))
    m = re.search(r"#define\s+GFX_QUEUE_CAPACITY\s+\(?\s*(\d+)u?\s*\)?", text)
    return int(m.group(1)) if m else 1 << 15


# --------------------------------------------------------------------------
# The harness


class Ticker:
    """A Python thread that counts small units of pure-Python work and adds
    up the gaps between two units longer than STALL_S (time it did not run)."""

    UNIT = 50  # loop iterations per count: about a microsecond

    def __init__(self) -> None:
        self.count = 0
        self.stalled = 0.0
        self._running = True
        self._thread = threading.Thread(target=self._run, name="audit-ticker", daemon=True)

    def _run(self) -> None:
        n = 0
        stalled = 0.0
        unit = range(self.UNIT)
        clock = time.perf_counter
        stall_s = STALL_S
        last = clock()
        while self._running:
            for _ in unit:
                pass
            now = clock()
            if now - last > stall_s:
                stalled += now - last
                self.stalled = stalled
            last = now
            n += 1
            self.count = n

    def snapshot(self) -> tuple[int, float, float]:
        return self.count, self.stalled, time.perf_counter()

    def __enter__(self) -> "Ticker":
        self._thread.start()
        gfsupport.wait_until(lambda: self.count > 0, timeout=5.0)
        return self

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()


class Window:
    """What the ticker did while fn() ran in the main thread."""

    def __init__(self, ticker: Ticker, fn) -> None:
        c0, s0, t0 = ticker.snapshot()
        self.result = fn()
        c1, s1, t1 = ticker.snapshot()
        self.seconds = t1 - t0
        self.rate = (c1 - c0) / self.seconds  # counts per second
        self.running = max(0.0, 1.0 - (s1 - s0) / self.seconds)  # share of the window it ran


class Audit:
    """Attempts, each a blocked window between two solo windows."""

    def __init__(self, ticker: Ticker, what: str) -> None:
        self.ticker = ticker
        self.what = what
        self.attempts: list[dict] = []  # before, blocked, after: Windows

    def _solo(self) -> Window:
        return Window(self.ticker, lambda: time.sleep(SOLO_S))

    def attempt(self, run) -> None:
        """solo window, run(self) (which calls measure() once), solo window."""
        self.attempts.append({"before": self._solo()})
        run(self)
        assert "blocked" in self.attempts[-1], "the case must measure one call"
        self.attempts[-1]["after"] = self._solo()

    def measure(self, fn):
        """Run fn() (the blocking call) in a measured window; return its result."""
        current = self.attempts[-1]
        assert "blocked" not in current, "the case must measure one call only"
        current["blocked"] = Window(self.ticker, fn)
        return current["blocked"].result

    @property
    def last_seconds(self) -> float:
        return self.attempts[-1]["blocked"].seconds

    def rate_ratios(self) -> list[float]:
        """Counts per second while blocked / mean of the adjacent solo windows."""
        return [a["blocked"].rate / ((a["before"].rate + a["after"].rate) / 2) for a in self.attempts]

    def running_ratios(self) -> list[float]:
        """Share of the window the ticker ran, relative to the same when solo."""
        out = []
        for a in self.attempts:
            solo = (a["before"].running + a["after"].running) / 2
            out.append(a["blocked"].running / solo if solo > 0 else 0.0)
        return out

    def valid(self, a: dict) -> bool:
        """Did the ticker have a CPU during the attempt's solo windows?  On a
        saturated machine it does not, and then a GIL held by the main thread
        costs it little more than the CPU it does not get anyway: such an
        attempt cannot tell a GIL-holding call from one that releases it."""
        return min(a["before"].running, a["after"].running) >= SOLO_RUNNING_MIN

    def scores(self) -> list[float | None]:
        """Per attempt, the lower of the two ratios (it passes if that reaches
        MIN_RATIO); None for an attempt that is not valid().  A window shorter
        than MIN_WINDOW_S scores 0: it says nothing (the main thread holds the
        GIL at both of its ends)."""
        out: list[float | None] = []
        for r, s, a in zip(self.rate_ratios(), self.running_ratios(), self.attempts):
            if not self.valid(a):
                out.append(None)
            elif a["blocked"].seconds < MIN_WINDOW_S:
                out.append(0.0)
            else:
                out.append(min(r, s))
        return out

    def best(self) -> float | None:
        valid = [x for x in self.scores() if x is not None]
        return max(valid) if valid else None

    def passed(self) -> bool:
        best = self.best()
        return best is not None and best >= MIN_RATIO

    def describe(self) -> str:
        parts = []
        for r, s, a in zip(self.rate_ratios(), self.running_ratios(), self.attempts):
            part = f"{r:.2f}/{s:.2f} over {a['blocked'].seconds * 1000:.0f} ms"
            if not self.valid(a):
                part += " (not valid: solo running {:.2f})".format(
                    min(a["before"].running, a["after"].running)
                )
            parts.append(part)
        solos = [w.rate for a in self.attempts for w in (a["before"], a["after"])]
        return (
            f"{self.what}: ticker kept {', '.join(parts)} of its solo rate/running time "
            f"(solo {min(solos):,.0f}..{max(solos):,.0f} counts/s)"
        )


@contextlib.contextmanager
def fresh_pool(backend: str):
    import gilfree

    p = gilfree.Pool(2, backend=backend)
    try:
        yield p
    finally:
        p.terminate()
        p.join()


def run_audit(what: str, attempt_once, *, must_block: bool = True) -> Audit:
    """Run attempt_once(audit) up to ATTEMPTS times, each between two solo
    windows, until one blocked window keeps MIN_RATIO of the solo rate.
    attempt_once must call audit.measure() exactly once."""
    with Ticker() as ticker:
        audit = Audit(ticker, what)
        for _ in range(ATTEMPTS):
            audit.attempt(attempt_once)
            if must_block:
                seconds = audit.last_seconds
                assert seconds >= MIN_WINDOW_S, (
                    f"{what} returned after {seconds * 1000:.0f} ms: it should have waited "
                    f"for work that takes {TASK_S * 1000:.0f} ms, so nothing was audited"
                )
            if audit.passed():
                break
            if not must_block and audit.last_seconds < MIN_WINDOW_S:
                break  # it returned at once: nothing to wait for, nothing to audit
    print(f"\n[audit] {audit.describe()}")
    return audit


def _skip_too_busy(audit: Audit):
    pytest.skip(
        f"machine too busy to audit: the ticker did not have a CPU to itself in "
        f"{SOLO_RUNNING_MIN:.0%} of any solo window; {audit.describe()}"
    )


def assert_lets_threads_run(audit: Audit) -> None:
    if audit.best() is None:
        _skip_too_busy(audit)
    assert audit.passed(), (
        f"{audit.describe()}; at least {MIN_RATIO:.0%} expected: the call holds the GIL "
        f"(or keeps taking it) while it waits"
    )


# --------------------------------------------------------------------------
# The blocking calls.  Each case gets a fresh Pool(2) and the Audit, prepares
# its work outside the window, and measures exactly one blocking call that
# waits for tasks sleeping TASK_S seconds (time.sleep releases the GIL).

sleep_return = gfsupport.sleep_return


def case_map(pool, audit):
    assert audit.measure(lambda: pool.map(sleep_return, [TASK_S, TASK_S], chunksize=1)) == [None, None]


def case_starmap(pool, audit):
    args = [(TASK_S, 0), (TASK_S, 1)]
    assert audit.measure(lambda: pool.starmap(sleep_return, args, chunksize=1)) == [0, 1]


def case_imap_next(pool, audit):
    it = pool.imap(sleep_return, [TASK_S, TASK_S], chunksize=1)
    assert audit.measure(lambda: next(it)) is None
    assert list(it) == [None]


def case_imap_unordered_next(pool, audit):
    it = pool.imap_unordered(sleep_return, [TASK_S, TASK_S], chunksize=1)
    assert audit.measure(lambda: next(it)) is None
    assert list(it) == [None]


def case_asyncresult_get(pool, audit):
    ar = pool.apply_async(sleep_return, (TASK_S, 7))
    assert audit.measure(ar.get) == 7


def case_asyncresult_wait(pool, audit):
    ar = pool.apply_async(sleep_return, (TASK_S, 7))
    assert audit.measure(ar.wait) is None
    assert ar.ready() and ar.get(timeout=0) == 7


def case_future_result(pool, audit):
    fut = pool.submit(sleep_return, TASK_S, 7)
    assert audit.measure(fut.result) == 7


def case_apply(pool, audit):
    assert audit.measure(lambda: pool.apply(sleep_return, (TASK_S, 7))) == 7


def case_join(pool, audit):
    ars = [pool.apply_async(sleep_return, (TASK_S, i)) for i in range(2)]
    pool.close()
    audit.measure(pool.join)
    assert [ar.get(timeout=0) for ar in ars] == [0, 1]


def case_cf_wait(pool, audit):
    futs = [pool.submit(sleep_return, TASK_S, i) for i in range(2)]
    done, not_done = audit.measure(lambda: cf.wait(futs))
    assert len(done) == 2 and not not_done


def case_cf_as_completed(pool, audit):
    futs = [pool.submit(sleep_return, TASK_S, i) for i in range(2)]
    done = audit.measure(lambda: list(cf.as_completed(futs)))
    assert sorted(f.result() for f in done) == [0, 1]


CASES = {
    "map": case_map,
    "starmap": case_starmap,
    "imap-next": case_imap_next,
    "imap_unordered-next": case_imap_unordered_next,
    "AsyncResult.get": case_asyncresult_get,
    "AsyncResult.wait": case_asyncresult_wait,
    "Future.result": case_future_result,
    "apply": case_apply,
    "join": case_join,
    "cf.wait": case_cf_wait,
    "cf.as_completed": case_cf_as_completed,
}


@pytest.mark.parametrize("call", list(CASES))
def test_blocking_call_lets_python_threads_run(backend, call):
    case = CASES[call]

    def attempt(audit):
        with fresh_pool(backend) as pool:
            case(pool, audit)

    assert_lets_threads_run(run_audit(f"{call} ({backend})", attempt))


def test_terminate_lets_python_threads_run(backend):
    """terminate() with tasks running: the thread backend cannot interrupt a
    time.sleep (a call blocked in C finishes that call first), so terminate()
    waits for it; the process backend SIGKILLs the workers and returns in a
    few ms.  Whenever it does wait, it must not hold the GIL meanwhile."""

    def attempt(audit):
        with fresh_pool(backend) as pool:
            ars = [pool.apply_async(sleep_return, (TASK_S, i)) for i in range(2)]
            time.sleep(0.05)  # let the workers pick the tasks up
            audit.measure(pool.terminate)
            pool.join()
            assert all(ar.ready() for ar in ars)

    audit = run_audit(f"terminate ({backend})", attempt, must_block=False)
    if audit.last_seconds < MIN_WINDOW_S:
        return  # it did not wait (long enough to be measured): nothing held the GIL for long
    assert_lets_threads_run(audit)


def test_close_returns_at_once(backend):
    """close() only refuses new work: it returns while the tasks still run,
    so it cannot keep other threads from running for longer than that."""
    with fresh_pool(backend) as pool:
        ars = [pool.apply_async(sleep_return, (TASK_S, i)) for i in range(2)]
        seconds = _timed(pool.close)
        assert seconds < 0.1, f"close() took {seconds * 1000:.0f} ms with work still running"
        assert not any(ar.ready() for ar in ars), "close() waited for the running tasks"
        pool.join()
        assert [ar.get(timeout=0) for ar in ars] == [0, 1]


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def test_submit_on_full_queue_lets_python_threads_run():
    """Threads backend: the task queue is bounded (GFX_QUEUE_CAPACITY); a
    submit() that finds it full waits for room.  Fill it behind two workers
    blocked on an Event, then time one more submit while a timer releases
    the workers.

    The process backend has no such wait: its pending queue is an unbounded
    list (the per-worker rings are only filled from it as they drain), so
    submit() there never blocks on a full queue."""
    capacity = _queue_capacity()
    timers = []

    def attempt(audit):
        release = threading.Event()
        with fresh_pool("threads") as pool:
            blockers = [pool.submit(release.wait, 10) for _ in range(2)]
            assert gfsupport.wait_until(lambda: all(f.running() for f in blockers), timeout=5.0)
            # The first two queued tasks sleep too: once the blockers return,
            # the workers take them (making room) and release the GIL again,
            # so the submit that waits for room does not have to win the GIL
            # back from workers racing through the trivial tasks.
            futs = [pool.submit(sleep_return, TASK_S) for _ in range(2)]
            futs += [pool.submit(gfsupport.return_none) for _ in range(capacity - 2)]
            timer = threading.Timer(TASK_S, release.set)
            timers.append(timer)
            timer.start()
            extra = audit.measure(lambda: pool.submit(gfsupport.return_none, "extra"))
            timer.join()
            assert release.is_set()
            pool.close()
            pool.join()
            assert extra.result(timeout=0) is None
            assert all(f.done() for f in futs)
            assert [f.result(timeout=0) for f in blockers] == [True, True]

    try:
        audit = run_audit("submit on a full queue (threads)", attempt)
    finally:
        for t in timers:
            t.cancel()
            t.join()
    assert_lets_threads_run(audit)


def test_probe_lets_python_threads_run():
    import gilfree

    if not hasattr(gilfree, "probe"):
        pytest.skip("gilfree.probe does not exist in this build (not implemented yet)")

    def attempt(audit):
        audit.measure(lambda: gilfree.probe(time.sleep, TASK_S))

    assert_lets_threads_run(run_audit("gilfree.probe(time.sleep, ...)", attempt))


# --------------------------------------------------------------------------
# Negative control: the audit can fail


def _busy_python(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_negative_control_busy_main_thread_fails_the_audit():
    """A main thread that runs Python for TASK_S instead of waiting holds the
    GIL; the ticker gets about half of its solo rate.  The same harness, with
    the same number of attempts, must reject it."""
    with Ticker() as ticker:
        audit = Audit(ticker, "busy Python loop (negative control)")
        for _ in range(ATTEMPTS):
            audit.attempt(lambda a: a.measure(lambda: _busy_python(TASK_S)))
    print(f"\n[audit] {audit.describe()}")
    if audit.best() is None:
        _skip_too_busy(audit)
    assert not audit.passed(), f"the audit would have passed a GIL-holding call: {audit.describe()}"
    valid_rate_ratios = [r for r, a in zip(audit.rate_ratios(), audit.attempts) if audit.valid(a)]
    assert statistics.median(valid_rate_ratios) < 0.60, audit.describe()
