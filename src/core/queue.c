/* gilfree core: bounded MPMC queue (Vyukov), blocking through eventcounts.
 *
 * Cells carry sequence numbers.  For position p (a 63-bit counter that never
 * wraps in practice) the cell is cells[p & mask] and its seq says whose turn
 * it is:
 *   seq == p              free: the producer that claims p may write it;
 *   seq == p + 1          full: the consumer that claims p may read it;
 *   seq == p + capacity   consumed: free again for position p + capacity.
 * A producer claims p by CAS on tail, writes the value, then publishes with a
 * release store of seq = p + 1; a consumer claims p by CAS on head, reads the
 * value, then frees the cell with a release store of seq = p + capacity.
 *
 * Close sets bit 63 of tail (GF__QUEUE_CLOSED) with one atomic RMW.  A push
 * CASes tail from a value without that bit, so every push either took its
 * position before close (and will be delivered) or fails with GF_ECLOSED.
 * Once closed, tail is final: a consumer that finds the cell at head not yet
 * published and tail == head | CLOSED knows nothing more can arrive.
 *
 * The struct holds no pointers, so it may live in memory that processes map
 * at different addresses; the futexes behind its eventcounts are shared.
 */
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define GF__QUEUE_MAGIC 0x21514647u /* "GFQ!" read as little-endian bytes */
#define GF__QUEUE_VERSION 1u
#define GF__QUEUE_CLOSED (UINT64_C(1) << 63)
#define GF__QUEUE_POS_MASK (~GF__QUEUE_CLOSED)

/* Processes sharing a queue must agree on lock-free atomics: an address-based
 * lock table inside one process would not exclude the other. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");

typedef struct gf__cell {
    /* Turn counter, see the top of this file.  Written with release by the
     * side that finishes with the cell, read with acquire by the side that
     * wants it next. */
    _Atomic uint64_t seq;
    /* Guarded by seq: written only by the producer that owns the cell
     * (seq == p after a successful claim), read only by the consumer that
     * owns it (seq == p + 1). */
    uint64_t value;
} gf__cell_t;

struct gf_queue {
    /* Line 0: immutable after gf_queue_init(); magic and version first so a
     * reader can check the layout before trusting anything else. */
    alignas(GF__CACHE_LINE) uint32_t magic;
    uint32_t version;
    uint32_t capacity;     /* power of two */
    uint32_t mask;         /* capacity - 1 */
    uint32_t header_bytes; /* offsetof(cells): catches layout mismatches */
    uint32_t cell_bytes;   /* sizeof(gf__cell_t) */

    /* Producers' position (next position to claim) | GF__QUEUE_CLOSED.  Own
     * cache line: every push CASes it. */
    alignas(GF__CACHE_LINE) _Atomic uint64_t tail;

    /* Consumers' position (next position to claim).  Own cache line. */
    alignas(GF__CACHE_LINE) _Atomic uint64_t head;

    /* Consumers park here; pushes (and close) notify it.  Own line: every
     * push bumps its epoch. */
    alignas(GF__CACHE_LINE) gf_ec_t not_empty;

    /* Producers park here; pops (and close) notify it. */
    alignas(GF__CACHE_LINE) gf_ec_t not_full;

    alignas(GF__CACHE_LINE) gf__cell_t cells[];
};

_Static_assert(offsetof(struct gf_queue, magic) == 0, "magic must come first");
_Static_assert(offsetof(struct gf_queue, head) - offsetof(struct gf_queue, tail) >=
                   GF__CACHE_LINE,
               "head and tail must not share a cache line");

static int
gf__capacity_valid(uint32_t capacity)
{
    return capacity >= 2 && capacity <= GF_QUEUE_MAX_CAPACITY &&
           (capacity & (capacity - 1)) == 0;
}

size_t
gf_queue_footprint(uint32_t capacity)
{
    if (!gf__capacity_valid(capacity)) {
        return 0;
    }
    size_t header = offsetof(struct gf_queue, cells);
    if ((size_t)capacity > (SIZE_MAX - header) / sizeof(gf__cell_t)) {
        return 0;
    }
    return header + (size_t)capacity * sizeof(gf__cell_t);
}

int
gf_queue_init(void *mem, uint32_t capacity)
{
    if (mem == NULL || ((uintptr_t)mem % GF__CACHE_LINE) != 0 ||
        !gf__capacity_valid(capacity)) {
        return GF_EINVAL;
    }
    gf_queue_t *q = mem;
    memset(q, 0, offsetof(struct gf_queue, cells));
    q->capacity = capacity;
    q->mask = capacity - 1;
    q->header_bytes = (uint32_t)offsetof(struct gf_queue, cells);
    q->cell_bytes = (uint32_t)sizeof(gf__cell_t);
    /* Relaxed stores throughout: the queue is not shared yet.  Whatever
     * hands it to other threads or processes (pthread_create, fork, a
     * release store of a pointer, a pipe) orders these writes. */
    atomic_store_explicit(&q->tail, 0, memory_order_relaxed);
    atomic_store_explicit(&q->head, 0, memory_order_relaxed);
    gf_ec_init(&q->not_empty);
    gf_ec_init(&q->not_full);
    for (uint32_t i = 0; i < capacity; i++) {
        atomic_store_explicit(&q->cells[i].seq, i, memory_order_relaxed);
        q->cells[i].value = 0;
    }
    q->version = GF__QUEUE_VERSION;
    q->magic = GF__QUEUE_MAGIC;
    return 0;
}

int
gf_queue_attach(void *mem, gf_queue_t **out)
{
    if (mem == NULL || out == NULL || ((uintptr_t)mem % GF__CACHE_LINE) != 0) {
        return GF_EINVAL;
    }
    gf_queue_t *q = mem;
    if (q->magic != GF__QUEUE_MAGIC || q->version != GF__QUEUE_VERSION ||
        !gf__capacity_valid(q->capacity) || q->mask != q->capacity - 1 ||
        q->header_bytes != offsetof(struct gf_queue, cells) ||
        q->cell_bytes != sizeof(gf__cell_t)) {
        return GF_EINVAL;
    }
    *out = q;
    return 0;
}

int
gf_queue_new(uint32_t capacity, gf_queue_t **out)
{
    if (out == NULL) {
        return GF_EINVAL;
    }
    size_t bytes = gf_queue_footprint(capacity);
    if (bytes == 0) {
        return GF_EINVAL;
    }
    void *mem = gf_aligned_alloc(bytes);
    if (mem == NULL) {
        return GF_ENOMEM;
    }
    int rc = gf_queue_init(mem, capacity);
    if (rc != 0) {
        gf_aligned_free(mem);
        return rc;
    }
    *out = mem;
    return 0;
}

void
gf_queue_free(gf_queue_t *q)
{
    if (q == NULL) {
        return;
    }
    q->magic = 0; /* a stale attach now fails */
    gf_aligned_free(q);
}

int
gf_queue_try_push(gf_queue_t *q, uint64_t value)
{
    /* Relaxed: tail only picks a candidate position; the cell's seq (acquire)
     * decides whether we may use it, and the CAS decides who gets it. */
    uint64_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
    gf__cell_t *cell;
    for (;;) {
        if (pos & GF__QUEUE_CLOSED) {
            return GF_ECLOSED;
        }
        cell = &q->cells[pos & q->mask];
        /* Acquire: pairs with the consumer's release of seq = pos, so its
         * read of the old value happens before our write of the new one. */
        uint64_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
        int64_t dif = (int64_t)(seq - pos);
        if (dif == 0) {
            /* Relaxed CAS: it only arbitrates between producers; the data
             * is published by the release store of seq below. */
            if (atomic_compare_exchange_weak_explicit(&q->tail, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                break;
            }
            /* pos now holds the current tail; retry. */
        }
        else if (dif < 0) {
            /* The cell still holds the item from one lap ago: full (or a
             * consumer is mid-pop and will notify not_full).  Report
             * GF_ECLOSED over GF_EAGAIN once closed. */
            uint64_t now = atomic_load_explicit(&q->tail, memory_order_relaxed);
            if (now & GF__QUEUE_CLOSED) {
                return GF_ECLOSED;
            }
            if (now == pos) {
                return GF_EAGAIN;
            }
            pos = now;
        }
        else {
            /* Another producer took pos; catch up. */
            pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
        }
    }
    cell->value = value;
    /* Release: publishes value to the consumer that acquires seq == pos+1. */
    atomic_store_explicit(&cell->seq, pos + 1, memory_order_release);
    gf_ec_notify_one(&q->not_empty);
    return 0;
}

int
gf_queue_try_pop(gf_queue_t *q, uint64_t *value)
{
    /* Relaxed: as in try_push, head only picks a candidate. */
    uint64_t pos = atomic_load_explicit(&q->head, memory_order_relaxed);
    gf__cell_t *cell;
    for (;;) {
        cell = &q->cells[pos & q->mask];
        /* Acquire: pairs with the producer's release of seq = pos + 1, so
         * its write of value happens before our read. */
        uint64_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
        int64_t dif = (int64_t)(seq - (pos + 1));
        if (dif == 0) {
            /* Relaxed CAS: arbitration between consumers only. */
            if (atomic_compare_exchange_weak_explicit(&q->head, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                break;
            }
        }
        else if (dif < 0) {
            /* Position pos is not published (seq == pos): nobody has pushed
             * it yet, or a producer claimed it and is still writing.
             * Relaxed load of tail: tail is monotonic and its closed value
             * is final, so reading closed with position == pos proves that
             * no producer holds pos and none ever will; any older value
             * only makes us answer GF_EAGAIN, which is always safe. */
            uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
            if ((tail & GF__QUEUE_CLOSED) && (tail & GF__QUEUE_POS_MASK) == pos) {
                return GF_ECLOSED;
            }
            return GF_EAGAIN;
        }
        else {
            pos = atomic_load_explicit(&q->head, memory_order_relaxed);
        }
    }
    *value = cell->value;
    /* Release: our read of value happens before the next lap's producer,
     * which acquires seq == pos + capacity, overwrites it. */
    atomic_store_explicit(&cell->seq, pos + q->mask + 1, memory_order_release);
    gf_ec_notify_one(&q->not_full);
    return 0;
}

/* The blocking forms share gf__ec_block(): spin a little, then park on the
 * eventcount.  The first try is made here, inline (no indirect call on the
 * fast path). */
typedef struct queue_block_ctx {
    gf_queue_t *q;
    uint64_t *value;
} queue_block_ctx_t;

static int
try_push_ctx(void *ctx)
{
    queue_block_ctx_t *c = ctx;
    return gf_queue_try_push(c->q, *c->value);
}

static int
try_pop_ctx(void *ctx)
{
    queue_block_ctx_t *c = ctx;
    return gf_queue_try_pop(c->q, c->value);
}

int
gf_queue_push(gf_queue_t *q, uint64_t value, int64_t timeout_ns)
{
    int rc = gf_queue_try_push(q, value);
    if (rc != GF_EAGAIN) {
        return rc;
    }
    queue_block_ctx_t c = {q, &value};
    return gf__ec_block(&q->not_full, try_push_ctx, &c, timeout_ns, GF__QUEUE_SPIN_NS);
}

int
gf_queue_pop(gf_queue_t *q, uint64_t *value, int64_t timeout_ns)
{
    int rc = gf_queue_try_pop(q, value);
    if (rc != GF_EAGAIN) {
        return rc;
    }
    queue_block_ctx_t c = {q, value};
    return gf__ec_block(&q->not_empty, try_pop_ctx, &c, timeout_ns, GF__QUEUE_SPIN_NS);
}

void
gf_queue_close(gf_queue_t *q)
{
    /* acq_rel RMW: the closed bit is set exactly once in tail's modification
     * order, after which every push CAS fails.  Blocked threads learn of it
     * through the notifies below: a waiter whose prepare reads the new epoch
     * synchronises with them and so sees this store. */
    atomic_fetch_or_explicit(&q->tail, GF__QUEUE_CLOSED, memory_order_acq_rel);
    gf_ec_notify_all(&q->not_empty);
    gf_ec_notify_all(&q->not_full);
}

int
gf_queue_is_closed(const gf_queue_t *q)
{
    /* Acquire: pairs with the RMW in close(), so a caller that sees closed
     * also sees what the closer did before closing. */
    uint64_t tail = atomic_load_explicit(&((gf_queue_t *)q)->tail, memory_order_acquire);
    return (tail & GF__QUEUE_CLOSED) != 0;
}

uint32_t
gf_queue_capacity(const gf_queue_t *q)
{
    return q->capacity;
}

uint32_t
gf_queue_size_approx(const gf_queue_t *q)
{
    gf_queue_t *mq = (gf_queue_t *)q;
    /* Relaxed: a snapshot of two counters, documented as approximate. */
    uint64_t head = atomic_load_explicit(&mq->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&mq->tail, memory_order_relaxed);
    tail &= GF__QUEUE_POS_MASK;
    if (tail <= head) {
        return 0;
    }
    uint64_t n = tail - head;
    return n > q->capacity ? q->capacity : (uint32_t)n;
}

gf_ec_t *
gf__queue_not_empty(gf_queue_t *q)
{
    return &q->not_empty;
}

gf_ec_t *
gf__queue_not_full(gf_queue_t *q)
{
    return &q->not_full;
}
