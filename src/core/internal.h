/* gilfree core: what the core's translation units share.
 *
 * Not installed, not part of the contract in include/gilfree/.  Everything
 * here is either static inline or carries the gf__ prefix.  White-box C tests
 * (tests/c) include this header too.
 *
 * Memory-order conventions used throughout the core:
 *   - relaxed: the value is a hint or a counter whose exact interleaving does
 *     not decide correctness, or ordering comes from another atomic;
 *   - acquire/release: one thread publishes data (release store or RMW) that
 *     another reads after observing the flag (acquire load);
 *   - seq_cst: only where two threads each write one location and then read
 *     the other's ("Dekker" / store-buffering pattern: the eventcount's epoch
 *     versus waiters).  acquire/release cannot order a store before a later
 *     load of a different location; the single total order of seq_cst
 *     operations can.
 */
#ifndef GILFREE_CORE_INTERNAL_H
#define GILFREE_CORE_INTERNAL_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "gilfree/gilfree.h"

#define GF__CACHE_LINE 64

#define GF__MIN(a, b) ((a) < (b) ? (a) : (b))
#define GF__MAX(a, b) ((a) > (b) ? (a) : (b))

#define GF__NS_PER_SEC INT64_C(1000000000)

/* --- futex (src/core/eventcount.c) --------------------------------------- */

/* Sleep while *word == expected, at most timeout_ns (< 0: forever).  Shared
 * (not FUTEX_PRIVATE_FLAG) so that it works for words in memory that several
 * processes map.  Returns 0 (woken, or the word already differed, or a
 * spurious wake-up), GF_ETIMEDOUT, or GF_EINTR. */
int gf__futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns);

/* Wake at most n threads sleeping on word. */
void gf__futex_wake(_Atomic uint32_t *word, int n);

/* Counters of futex system calls made, for tests ("a notify with nobody
 * parked makes no system call").  Relaxed increments: they are statistics and
 * order nothing; a syscall costs three orders of magnitude more. */
extern _Atomic uint64_t gf__futex_wait_calls;
extern _Atomic uint64_t gf__futex_wake_calls;

/* Deadline helpers: GF__NO_DEADLINE for "wait forever". */
#define GF__NO_DEADLINE INT64_MAX

static inline int64_t
gf__deadline_from_timeout(int64_t timeout_ns)
{
    if (timeout_ns < 0) {
        return GF__NO_DEADLINE;
    }
    int64_t now = gf_now_ns();
    if (timeout_ns > GF__NO_DEADLINE - now) {
        return GF__NO_DEADLINE;
    }
    return now + timeout_ns;
}

/* Remaining time until deadline: -1 for no deadline, 0 if it has passed. */
static inline int64_t
gf__remaining_ns(int64_t deadline)
{
    if (deadline == GF__NO_DEADLINE) {
        return -1;
    }
    int64_t left = deadline - gf_now_ns();
    return left > 0 ? left : 0;
}

/* Wait on ec until deadline: gf_ec_wait() with the remaining time. */
int gf__ec_wait_until(gf_ec_t *ec, uint32_t key, int64_t deadline);

/* One non-blocking attempt for gf__ec_block(): 0 or an error on success or
 * a final failure, GF_EAGAIN to keep waiting. */
typedef int (*gf__try_fn)(void *ctx);

/* gf_cpu_relax() calls between re-tries while gf__ec_block() spins. */
#define GF__EC_SPIN_BATCH 32

/* The blocking loop that the queue and the ring share, for a caller whose
 * own first try_once(ctx) said GF_EAGAIN (the caller makes it, inline, so
 * the fast path has no indirect call):
 *   - timeout_ns == 0: return GF_ETIMEDOUT at once, never spin or sleep;
 *     timeout_ns < 0: no deadline;
 *   - spin: if spin_ns > 0, rounds of GF__EC_SPIN_BATCH gf_cpu_relax()
 *     calls, each followed by a try, until spin_ns have passed or the
 *     deadline is reached (the clock is read once per round; at least one
 *     round); spin_ns <= 0 parks at once;
 *   - park: prepare -> try -> wait on ec, so a notify that lands between a
 *     failed try and the wait moves the epoch past the key and the wait
 *     returns; loops until the try stops saying GF_EAGAIN (its result is
 *     returned) or the deadline passes (GF_ETIMEDOUT);
 *   - an interrupted sleep (GF_EINTR) gets one more try: its result if that
 *     is not GF_EAGAIN, else GF_EINTR. */
int gf__ec_block(gf_ec_t *ec, gf__try_fn try_once, void *ctx, int64_t timeout_ns,
                 int64_t spin_ns);

/* --- queue (src/core/queue.c) -------------------------------------------- */

/* The queue's eventcounts, for white-box tests that wait until a thread is
 * parked before acting. */
gf_ec_t *gf__queue_not_empty(gf_queue_t *q);
gf_ec_t *gf__queue_not_full(gf_queue_t *q);

/* Bounded spinning before a blocking queue operation parks: the spin_ns it
 * passes to gf__ec_block(): about the time of 128 gf_cpu_relax() pauses of
 * ~30 ns each. */
#define GF__QUEUE_SPIN_NS 4000

/* --- ring (src/core/ring.c) ----------------------------------------------- */

/* The ring's layout in shared memory.  Here rather than in ring.c so that
 * white-box tests and the fuzz harness can set positions and scribble on
 * frames.  Which side writes what:
 *   line 0   immutable after gf_ring_init(); every handle copies what it
 *            needs at attach and never reads it again;
 *   line 1   the producer: tail (release store per commit) and the epoch of
 *            not_empty (bumped per commit); the consumer bumps not_empty's
 *            waiter count only when it parks;
 *   line 2   the consumer: head (release store per release) and not_full;
 *   line 3   closed: set once, by anyone, read by both.
 * Putting each eventcount on the line its notifier already writes means a
 * commit dirties one line, not two. */
typedef struct gf__ring_shared {
    alignas(GF__CACHE_LINE) uint32_t magic;
    uint32_t version;
    uint32_t capacity;     /* bytes in the frame area, a power of two */
    uint32_t frame_align;  /* GF_RING_ALIGN */
    uint32_t frame_header; /* GF_RING_FRAME_HEADER */
    uint32_t max_payload;  /* GF_RING_MAX_PAYLOAD(capacity) */
    uint32_t header_bytes; /* offsetof(data): catches layout mismatches */
    uint32_t reserved0;

    /* Bytes committed since init (a position: frame area offset is
     * tail & (capacity - 1)).  Written only by the producer. */
    alignas(GF__CACHE_LINE) _Atomic uint64_t tail;
    gf_ec_t not_empty; /* the consumer parks here; commit and close notify */

    /* Bytes released since init.  Written only by the consumer. */
    alignas(GF__CACHE_LINE) _Atomic uint64_t head;
    gf_ec_t not_full; /* the producer parks here; release and close notify */

    /* 0 while open, 1 once closed; never goes back. */
    alignas(GF__CACHE_LINE) _Atomic uint32_t closed;

    alignas(GF__CACHE_LINE) unsigned char data[];
} gf__ring_shared_t;

/* The header in front of every frame.  pos is the frame's own position (the
 * full 64-bit counter), a stamp that lets the consumer reject a stale header
 * left from an earlier lap.  Written by the producer with relaxed stores
 * before it publishes tail; the consumer reads each field exactly once, with
 * relaxed loads, into locals that it then validates. */
typedef struct gf__ring_frame_hdr {
    _Atomic uint32_t len;
    _Atomic uint32_t kind;
    _Atomic uint64_t pos;
} gf__ring_frame_hdr_t;

/* kind of a padding frame: runs from its position to the end of the frame
 * area, so that the next frame starts at offset 0.  Outside the caller's
 * kinds (GF_RING_KIND_MAX). */
#define GF__RING_PAD_KIND 0x44415047u /* "GPAD" read as little-endian bytes */

#define GF__RING_DEFAULT_SPIN_NS 20000u

gf__ring_shared_t *gf__ring_shared(gf_ring_t *ring);
unsigned char *gf__ring_data(gf_ring_t *ring);

/* --- proc (src/core/proc.c) ------------------------------------------------ */

/* How long a supervisor (or gf_proc_wait_exit) waits, after a process that
 * is not our child has ended, for its parent to reap it so that the kernel
 * can tell its status (PIDFD_INFO_EXIT, Linux 6.15+).  The forkserver reaps
 * on SIGCHLD, within a millisecond or so; a parent that does not reap costs
 * this delay, after which the exit is reported with GF_EXIT_UNKNOWN. */
#define GF__PROC_REAP_GRACE_NS (250 * INT64_C(1000000))

/* --- fork registries (src/core/registry.c) ------------------------------- */

/* The object that embeds member `member` of type `type` at ptr. */
#define GF__CONTAINER_OF(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Links embedded in each registered object; guarded by the registry's lock. */
typedef struct gf__reg_node {
    struct gf__reg_node *prev;
    struct gf__reg_node *next;
} gf__reg_node_t;

/* A doubly linked list of objects that a module's pthread_atfork handlers
 * walk.  lock guards head and every member's links.  The handlers take lock
 * in prepare and release it in parent and child (in the child the thread
 * that forked holds it), and walk head with it held. */
typedef struct gf__registry {
    pthread_mutex_t lock;
    gf__reg_node_t *head;
} gf__registry_t;

#define GF__REGISTRY_INIT {PTHREAD_MUTEX_INITIALIZER, NULL}

/* Link node at the head of reg, or unlink it (a node must be linked once
 * and unlinked at most once); each takes reg->lock. */
void gf__registry_add(gf__registry_t *reg, gf__reg_node_t *node);
void gf__registry_remove(gf__registry_t *reg, gf__reg_node_t *node);

/* --- threadpool (src/core/threadpool.c) ---------------------------------- */

/* Test hook: when >= 0, the (n+1)-th worker thread creation of the next
 * gf_pool_new() fails with EAGAIN (and the hook resets to -1).  Only tests
 * set it, before any pool exists. */
extern int gf__pool_fail_create_after;

#define GF__POOL_DEFAULT_SPIN_NS 20000u
#define GF__POOL_DEFAULT_CAPACITY 4096u
#define GF__POOL_MAX_THREADS 4096u

/* --- clock (src/core/clock.c) --------------------------------------------- */

/* Parsers for cgroup CPU limits, exposed for tests.  Each returns the limit
 * in CPUs rounded up (>= 1), or 0 for "no limit" or unparsable input. */
int gf__cgroup2_cpu_max_parse(const char *text);
int gf__cgroup1_quota_parse(const char *quota_text, const char *period_text);

/* Number of CPUs in the affinity mask, or 0 if it cannot be read. */
int gf__affinity_cpus(void);

/* In a thread created with every signal blocked: unblock the synchronous
 * ones (SIGSEGV, SIGBUS, ...) so faults are delivered, not held.  Async
 * signals stay blocked so they reach the thread that waits for results. */
void gf__unblock_sync_signals(void);

#endif /* GILFREE_CORE_INTERNAL_H */
