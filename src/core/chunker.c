/* gilfree core: fixed and adaptive (guided) chunking of an index range.
 *
 * Ordering: every atomic here is relaxed.  Claims only partition indices;
 * the atomicity of the CAS on `next` is what makes chunks disjoint, and no
 * data is published through the chunker (the items themselves reach workers
 * through whatever started the map, e.g. a task queue with release/acquire).
 * `cancelled` and `ps_per_item` are advisory (see chunker.h).
 */
#include <stdint.h>

#include "internal.h"

#define GF__TARGET_MIN_NS INT64_C(1000000)   /* 1 ms */
#define GF__TARGET_MAX_NS INT64_C(10000000)  /* 10 ms */
#define GF__PROBE_MAX 16
/* Largest chunk suggested for an input of unknown length: the caller
 * buffers that many items, so keep it bounded even for nanosecond items. */
#define GF__UNKNOWN_MAX_CHUNK (INT64_C(1) << 20)
/* Cost estimates are kept inside [1 ps, 1000 s] per item. */
#define GF__PS_MAX INT64_C(1000000000000000)

int
gf_chunker_init(gf_chunker_t *c, int64_t total, int64_t fixed_chunk, uint32_t workers,
                int64_t target_ns)
{
    if (c == NULL || total < -1 || fixed_chunk < 0 || workers == 0) {
        return GF_EINVAL;
    }
    if (target_ns <= 0) {
        target_ns = GF_CHUNKER_DEFAULT_TARGET_NS;
    }
    target_ns = GF__MAX(target_ns, GF__TARGET_MIN_NS);
    target_ns = GF__MIN(target_ns, GF__TARGET_MAX_NS);

    /* Relaxed stores: the chunker is published to workers by the caller
     * (thread creation or a queue hand-off), which orders them. */
    atomic_store_explicit(&c->next, 0, memory_order_relaxed);
    atomic_store_explicit(&c->cancelled, 0, memory_order_relaxed);
    atomic_store_explicit(&c->ps_per_item, 0, memory_order_relaxed);
    c->total = total;
    c->fixed = fixed_chunk;
    c->target_ns = target_ns;
    c->workers = workers;
    return 0;
}

/* Chunk size for `remaining` items left (-1: unknown) when `claimed` items
 * have been handed out already (-1: unknown). */
static int64_t
gf__chunk_size(const gf_chunker_t *c, int64_t remaining, int64_t claimed)
{
    int64_t size;
    if (c->fixed > 0) {
        size = c->fixed;
        if (remaining > 0) {
            size = GF__MIN(size, remaining);
        }
        return size;
    }

    /* Relaxed: an estimate; any value a report ever stored is acceptable. */
    int64_t ps = atomic_load_explicit(&((gf_chunker_t *)c)->ps_per_item,
                                      memory_order_relaxed);
    if (ps <= 0) {
        /* Probing: start with single items, grow as items are handed out
         * without a report, never above GF__PROBE_MAX. */
        if (claimed < 0) {
            size = 1;
        }
        else {
            size = 1 + claimed / (int64_t)c->workers;
            size = GF__MIN(size, (int64_t)GF__PROBE_MAX);
        }
    }
    else {
        /* target_ns <= 1e7, so target_ns * 1000 cannot overflow. */
        size = c->target_ns * 1000 / ps;
    }

    if (remaining >= 0) {
        /* Guided self-scheduling: leave at least half of what remains for
         * the other workers, so chunks shrink towards the end. */
        int64_t cap = remaining / (2 * (int64_t)c->workers);
        size = GF__MIN(size, cap);
        size = GF__MIN(size, remaining);
    }
    else {
        size = GF__MIN(size, GF__UNKNOWN_MAX_CHUNK);
    }
    return size < 1 ? 1 : size;
}

int
gf_chunker_claim(gf_chunker_t *c, int64_t *start, int64_t *count)
{
    if (c->total < 0) {
        return GF_EINVAL; /* unknown length: use gf_chunker_suggest() */
    }
    /* Relaxed: see the top of the file. */
    int64_t cur = atomic_load_explicit(&c->next, memory_order_relaxed);
    for (;;) {
        if (atomic_load_explicit(&c->cancelled, memory_order_relaxed)) {
            return GF_ECLOSED;
        }
        int64_t remaining = c->total - cur;
        if (remaining <= 0) {
            return GF_ECLOSED;
        }
        int64_t size = gf__chunk_size(c, remaining, cur);
        /* Relaxed CAS: disjointness comes from atomicity alone. */
        if (atomic_compare_exchange_weak_explicit(&c->next, &cur, cur + size,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *start = cur;
            *count = size;
            return 0;
        }
    }
}

void
gf_chunker_report(gf_chunker_t *c, int64_t items, int64_t elapsed_ns)
{
    if (items <= 0 || elapsed_ns < 0) {
        return;
    }
    /* In double: elapsed_ns * 1000 may not fit in 64 bits. */
    double sample_d = (double)elapsed_ns * 1000.0 / (double)items;
    int64_t sample;
    if (sample_d < 1.0) {
        sample = 1;
    }
    else if (sample_d > (double)GF__PS_MAX) {
        sample = GF__PS_MAX;
    }
    else {
        sample = (int64_t)sample_d;
    }
    /* Relaxed load and store, not a CAS: concurrent reports may lose one
     * another's update, which only nudges a chunk size (chunker.h). */
    int64_t old = atomic_load_explicit(&c->ps_per_item, memory_order_relaxed);
    int64_t avg;
    if (old <= 0) {
        avg = sample;
    }
    else {
        /* Exponential moving average, weight 1/4 for the new sample.  Both
         * values are <= GF__PS_MAX (1e15), so nothing overflows. */
        avg = old + (sample - old) / 4;
    }
    if (avg < 1) {
        avg = 1;
    }
    atomic_store_explicit(&c->ps_per_item, avg, memory_order_relaxed);
}

int64_t
gf_chunker_suggest(const gf_chunker_t *c, int64_t remaining)
{
    int64_t claimed = -1;
    if (c->total >= 0 && remaining >= 0 && remaining <= c->total) {
        claimed = c->total - remaining;
    }
    return gf__chunk_size(c, remaining < 0 ? -1 : remaining, claimed);
}

void
gf_chunker_cancel(gf_chunker_t *c)
{
    /* Relaxed: advisory; the worst case is one more chunk claimed. */
    atomic_store_explicit(&c->cancelled, 1, memory_order_relaxed);
}

int
gf_chunker_is_cancelled(const gf_chunker_t *c)
{
    return atomic_load_explicit(&((gf_chunker_t *)c)->cancelled, memory_order_relaxed);
}
