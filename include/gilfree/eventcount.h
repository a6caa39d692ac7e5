/* gilfree core: eventcount, the one way the core waits.
 *
 * An eventcount lets a thread wait for "something changed" without a lock
 * around the condition: the waiter reads a key with gf_ec_prepare(), re-checks
 * its condition (e.g. tries to pop a queue), and only then calls gf_ec_wait()
 * with the key; the wait returns at once if a notify happened after prepare.
 * A notifier pays a system call only when some waiter is actually parked
 * (ck_ec's idea; CPython's PyMutex "has parked waiters" bit is the same).
 *
 * The whole state is inside the struct and the futex calls are NOT private
 * (no FUTEX_PRIVATE_FLAG), so a gf_ec_t placed in shared memory works between
 * processes too.  No pointers inside: position-independent.
 */
#ifndef GILFREE_EVENTCOUNT_H
#define GILFREE_EVENTCOUNT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gf_ec {
    /* epoch: bumped by every notify.  Futex word. */
    _Atomic uint32_t epoch;
    /* number of threads parked (or about to park) in gf_ec_wait(). */
    _Atomic uint32_t waiters;
} gf_ec_t;

#define GF_EC_INITIALIZER {0, 0}

void gf_ec_init(gf_ec_t *ec);

/* Read the key for a later gf_ec_wait().  Call BEFORE re-checking the
 * condition. */
uint32_t gf_ec_prepare(gf_ec_t *ec);

/* Sleep until the epoch differs from key, a notify wakes us, or timeout_ns
 * elapses (timeout_ns < 0: no timeout; 0: do not sleep).
 * Returns 0 (woken or epoch already moved; spurious returns are allowed, the
 * caller re-checks its condition), GF_ETIMEDOUT, or GF_EINTR when a signal
 * handler ran on this thread during the sleep (the caller checks for signals
 * and decides whether to wait again). */
int gf_ec_wait(gf_ec_t *ec, uint32_t key, int64_t timeout_ns);

/* Bump the epoch; wake one parked waiter if any (no syscall if none). */
void gf_ec_notify_one(gf_ec_t *ec);

/* Bump the epoch; wake every parked waiter (no syscall if none). */
void gf_ec_notify_all(gf_ec_t *ec);

#ifdef __cplusplus
}
#endif
#endif /* GILFREE_EVENTCOUNT_H */
