/* gilfree core: futex wrappers and the eventcount.
 *
 * Protocol (see eventcount.h for the caller's side):
 *
 *   waiter                              notifier
 *   ------                              --------
 *   key = epoch            (P, acquire) make the condition true  (C)
 *   check condition: false              epoch += 1               (N1, seq_cst)
 *   waiters += 1           (W1, seq_cst) if waiters != 0          (N2, seq_cst)
 *   if epoch == key        (W2, seq_cst)     futex_wake(epoch)
 *       futex_wait(epoch, key)
 *   waiters -= 1           (relaxed)
 *
 * No lost wake-up: W1, W2, N1 and N2 are seq_cst, so they appear in one total
 * order S that agrees with each thread's program order.  If N2 reads a
 * waiters value that does not include W1, then N2 precedes W1 in S, hence
 * N1 < N2 < W1 < W2 in S and W2 reads the bumped epoch: the waiter does not
 * sleep.  Otherwise N2 sees the waiter and calls futex_wake after N1; the
 * kernel compares the futex word with key under its bucket lock, so the
 * waiter either is already queued (and is woken) or sees epoch != key and
 * returns at once.  This is the store-buffering (Dekker) pattern, which is why
 * release/acquire would not be enough here.
 *
 * If P already reads the bumped epoch, P (acquire) synchronises with N1 (a
 * release RMW), so the condition check that follows P sees C.  Epoch values
 * wrap at 2^32; a waiter would have to miss exactly 2^32 notifies between
 * prepare and wait to be fooled, as with any counter-based eventcount.
 *
 * A notify with nobody waiting costs one atomic RMW and one load, no system
 * call.
 */
#include <errno.h>
#include <limits.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#include "internal.h"

_Atomic uint64_t gf__futex_wait_calls;
_Atomic uint64_t gf__futex_wake_calls;

#if defined(__linux__)

int
gf__futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
    struct timespec ts;
    struct timespec *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / GF__NS_PER_SEC);
        ts.tv_nsec = (long)(timeout_ns % GF__NS_PER_SEC);
        tsp = &ts;
    }
    /* Statistics only; see internal.h. */
    atomic_fetch_add_explicit(&gf__futex_wait_calls, 1, memory_order_relaxed);
    /* FUTEX_WAIT takes a relative timeout.  No FUTEX_PRIVATE_FLAG: the word
     * may live in memory shared between processes. */
    long rc = syscall(SYS_futex, (void *)word, FUTEX_WAIT, expected, tsp, NULL, 0);
    if (rc == 0) {
        return 0;
    }
    switch (errno) {
    case ETIMEDOUT:
        return GF_ETIMEDOUT;
    case EINTR:
        return GF_EINTR;
    default:
        /* EAGAIN: the word already differed.  Anything else cannot happen
         * with a valid, aligned word; report a spurious wake-up and let the
         * caller re-check. */
        return 0;
    }
}

void
gf__futex_wake(_Atomic uint32_t *word, int n)
{
    atomic_fetch_add_explicit(&gf__futex_wake_calls, 1, memory_order_relaxed);
    (void)syscall(SYS_futex, (void *)word, FUTEX_WAKE, n, NULL, NULL, 0);
}

#else /* !__linux__ */

/* Portable fallback: poll with short sleeps.  Correct because callers accept
 * spurious returns; slow wake-ups are the price off Linux. */
int
gf__futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
    if (atomic_load_explicit(word, memory_order_acquire) != expected) {
        return 0;
    }
    int64_t nap = 200000; /* 0.2 ms */
    int timed_out = 0;
    if (timeout_ns >= 0 && timeout_ns <= nap) {
        nap = timeout_ns;
        timed_out = 1;
    }
    struct timespec ts = {(time_t)(nap / GF__NS_PER_SEC), (long)(nap % GF__NS_PER_SEC)};
    atomic_fetch_add_explicit(&gf__futex_wait_calls, 1, memory_order_relaxed);
    if (nanosleep(&ts, NULL) != 0 && errno == EINTR) {
        return GF_EINTR;
    }
    return timed_out ? GF_ETIMEDOUT : 0;
}

void
gf__futex_wake(_Atomic uint32_t *word, int n)
{
    (void)word;
    (void)n;
    atomic_fetch_add_explicit(&gf__futex_wake_calls, 1, memory_order_relaxed);
}

#endif /* __linux__ */

void
gf_ec_init(gf_ec_t *ec)
{
    /* Relaxed: an eventcount is published to other threads (or processes)
     * by whatever hands them the pointer, which orders these stores. */
    atomic_store_explicit(&ec->epoch, 0, memory_order_relaxed);
    atomic_store_explicit(&ec->waiters, 0, memory_order_relaxed);
}

uint32_t
gf_ec_prepare(gf_ec_t *ec)
{
    /* P: acquire, so that if we read a bumped epoch we also see the
     * condition the notifier made true before bumping it. */
    return atomic_load_explicit(&ec->epoch, memory_order_acquire);
}

int
gf_ec_wait(gf_ec_t *ec, uint32_t key, int64_t timeout_ns)
{
    /* Cheap early exit; acquire for the same reason as in prepare. */
    if (atomic_load_explicit(&ec->epoch, memory_order_acquire) != key) {
        return 0;
    }
    if (timeout_ns == 0) {
        return GF_ETIMEDOUT;
    }
    /* W1: seq_cst, announces us before W2 reads the epoch (see top). */
    atomic_fetch_add_explicit(&ec->waiters, 1, memory_order_seq_cst);
    int rc = 0;
    /* W2: seq_cst, pairs with N1/N2 in the single total order. */
    if (atomic_load_explicit(&ec->epoch, memory_order_seq_cst) == key) {
        rc = gf__futex_wait(&ec->epoch, key, timeout_ns);
    }
    /* Relaxed: a notifier that still sees us only makes one harmless extra
     * futex_wake; none can miss us, since we are no longer waiting. */
    atomic_fetch_sub_explicit(&ec->waiters, 1, memory_order_relaxed);
    return rc;
}

int
gf__ec_wait_until(gf_ec_t *ec, uint32_t key, int64_t deadline)
{
    int64_t left = gf__remaining_ns(deadline);
    return gf_ec_wait(ec, key, left);
}

int
gf__ec_block(gf_ec_t *ec, gf__try_fn try_once, void *ctx, int64_t timeout_ns,
             int64_t spin_ns)
{
    if (timeout_ns == 0) {
        return GF_ETIMEDOUT;
    }
    int64_t deadline = gf__deadline_from_timeout(timeout_ns);
    int rc;
    if (spin_ns > 0) {
        int64_t now = gf_now_ns();
        int64_t spin_end = GF__MIN(now + spin_ns, deadline);
        do {
            for (int i = 0; i < GF__EC_SPIN_BATCH; i++) {
                gf_cpu_relax();
            }
            rc = try_once(ctx);
            if (rc != GF_EAGAIN) {
                return rc;
            }
        } while (gf_now_ns() < spin_end);
    }
    for (;;) {
        uint32_t key = gf_ec_prepare(ec);
        rc = try_once(ctx);
        if (rc != GF_EAGAIN) {
            return rc;
        }
        int64_t left = gf__remaining_ns(deadline);
        if (left == 0) {
            return GF_ETIMEDOUT;
        }
        int w = gf_ec_wait(ec, key, left);
        if (w == GF_EINTR) {
            /* A wake-up may have raced with the signal; do not waste it. */
            rc = try_once(ctx);
            return rc != GF_EAGAIN ? rc : GF_EINTR;
        }
        /* 0 or GF_ETIMEDOUT: the top of the loop tries again, then checks
         * the deadline. */
    }
}

static inline void
gf__ec_notify(gf_ec_t *ec, int n)
{
    /* N1: seq_cst RMW; also a release, publishing the caller's condition to
     * a waiter whose prepare (acquire) reads the new epoch. */
    atomic_fetch_add_explicit(&ec->epoch, 1, memory_order_seq_cst);
    /* N2: seq_cst, ordered after N1 in the total order (see top). */
    if (atomic_load_explicit(&ec->waiters, memory_order_seq_cst) != 0) {
        gf__futex_wake(&ec->epoch, n);
    }
}

void
gf_ec_notify_one(gf_ec_t *ec)
{
    gf__ec_notify(ec, 1);
}

void
gf_ec_notify_all(gf_ec_t *ec)
{
    gf__ec_notify(ec, INT_MAX);
}
