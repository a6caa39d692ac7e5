/* gilfree core: adaptive chunking of an index range among workers.
 *
 * A map over n items is split into chunks that workers claim with one atomic
 * operation each (no queue traffic per chunk).  With a fixed chunk size the
 * chunker hands out [k*size, (k+1)*size).  With chunk size 0 ("auto") it
 * adapts, the way guided self-scheduling does, from measured cost:
 *   - the first claims are small probes (1..16 items) until some worker has
 *     reported a timing through gf_chunker_report();
 *   - then a chunk aims at target_ns of work (default 2 ms, kept inside
 *     1..10 ms), from the running average cost per item;
 *   - a chunk never exceeds remaining / (2 * workers), so near the end the
 *     chunks shrink and no worker is left straggling with a big one;
 *   - a chunk is never smaller than 1 item.
 * Cancel makes every later claim fail, so workers stop taking new work.
 *
 * For inputs of unknown length (iterators) the caller serialises pulling items
 * itself and asks gf_chunker_suggest() how many to pull next.
 */
#ifndef GILFREE_CHUNKER_H
#define GILFREE_CHUNKER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gf_chunker {
    /* Next unclaimed index; claims CAS it forward.  Own cache line: every
     * worker writes it. */
    _Alignas(64) _Atomic int64_t next;
    /* Set once by gf_chunker_cancel(); claims read it (relaxed is enough:
     * cancellation is advisory, the worst case is one extra chunk). */
    _Alignas(64) _Atomic int cancelled;
    /* Running cost estimate, in picoseconds per item (0 = no sample yet).
     * Updated by reports with relaxed atomics; a torn average only changes a
     * chunk size, never correctness. */
    _Atomic int64_t ps_per_item;
    /* Immutable after gf_chunker_init(). */
    int64_t total;       /* number of items, >= 0; -1 = unknown (iterator) */
    int64_t fixed;       /* > 0: fixed chunk size; 0: adaptive */
    int64_t target_ns;   /* adaptive: wanted work per chunk */
    uint32_t workers;    /* >= 1 */
} gf_chunker_t;

#define GF_CHUNKER_DEFAULT_TARGET_NS 2000000 /* 2 ms */

/* total >= 0 items, or -1 for unknown length; fixed_chunk 0 = adaptive;
 * target_ns <= 0 = default; workers >= 1.  Returns 0 or GF_EINVAL. */
int gf_chunker_init(gf_chunker_t *c, int64_t total, int64_t fixed_chunk,
                    uint32_t workers, int64_t target_ns);

/* Claim the next chunk: 0 with *start, *count (count >= 1) set; GF_ECLOSED
 * when the range is exhausted or the chunker is cancelled.  Lock-free; only
 * valid when total >= 0. */
int gf_chunker_claim(gf_chunker_t *c, int64_t *start, int64_t *count);

/* Feed a measurement: `items` items took `elapsed_ns`.  Thread-safe. */
void gf_chunker_report(gf_chunker_t *c, int64_t items, int64_t elapsed_ns);

/* How many items the next chunk should have, given `remaining` items still
 * to hand out (-1 when unknown).  For iterator inputs; >= 1. */
int64_t gf_chunker_suggest(const gf_chunker_t *c, int64_t remaining);

void gf_chunker_cancel(gf_chunker_t *c);
int gf_chunker_is_cancelled(const gf_chunker_t *c);

#ifdef __cplusplus
}
#endif
#endif /* GILFREE_CHUNKER_H */
