/* Tests: the chunker. */
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "runner.h"

TEST_IMPL(chunker_validation)
{
    gf_chunker_t c;
    ASSERT_ERR(gf_chunker_init(NULL, 10, 0, 1, 0), GF_EINVAL);
    ASSERT_ERR(gf_chunker_init(&c, -2, 0, 1, 0), GF_EINVAL);
    ASSERT_ERR(gf_chunker_init(&c, 10, -1, 1, 0), GF_EINVAL);
    ASSERT_ERR(gf_chunker_init(&c, 10, 0, 0, 0), GF_EINVAL);
    ASSERT_OK(gf_chunker_init(&c, 0, 0, 1, 0));
    int64_t start = -1, count = -1;
    ASSERT_ERR(gf_chunker_claim(&c, &start, &count), GF_ECLOSED);
    ASSERT_OK(gf_chunker_init(&c, -1, 0, 4, 0));
    ASSERT_EQ(c.target_ns, GF_CHUNKER_DEFAULT_TARGET_NS);
    /* unknown length: claim is not the interface */
    ASSERT_ERR(gf_chunker_claim(&c, &start, &count), GF_EINVAL);
    /* target kept inside 1..10 ms */
    ASSERT_OK(gf_chunker_init(&c, 10, 0, 1, 5));
    ASSERT_EQ(c.target_ns, 1000000);
    ASSERT_OK(gf_chunker_init(&c, 10, 0, 1, INT64_C(1000000000)));
    ASSERT_EQ(c.target_ns, 10000000);
}

TEST_IMPL(chunker_fixed_sequential)
{
    gf_chunker_t c;
    ASSERT_OK(gf_chunker_init(&c, 1000, 7, 4, 0));
    int64_t expect = 0, start, count;
    while (gf_chunker_claim(&c, &start, &count) == 0) {
        ASSERT_EQ(start, expect);
        ASSERT_EQ(count, expect + 7 <= 1000 ? 7 : 1000 - expect);
        expect += count;
    }
    ASSERT_EQ(expect, 1000);
    ASSERT_ERR(gf_chunker_claim(&c, &start, &count), GF_ECLOSED);
    /* reports do not change a fixed size */
    gf_chunker_report(&c, 10, 100000000);
    ASSERT_EQ(gf_chunker_suggest(&c, -1), 7);
    ASSERT_EQ(gf_chunker_suggest(&c, 3), 3);
}

typedef struct gft_claimers {
    gf_chunker_t c;
    _Atomic uint32_t *hits; /* per index */
    _Atomic int64_t chunks;
    int report;
} gft_claimers_t;

static void *
gft_claimer(void *arg)
{
    gft_claimers_t *s = arg;
    int64_t start, count;
    while (gf_chunker_claim(&s->c, &start, &count) == 0) {
        if (count < 1 || start < 0 || start + count > s->c.total) {
            gft_fail(__FILE__, __LINE__, "bad chunk [%" PRId64 ", +%" PRId64 ")", start,
                     count);
        }
        for (int64_t i = start; i < start + count; i++) {
            atomic_fetch_add_explicit(&s->hits[i], 1, memory_order_relaxed);
        }
        atomic_fetch_add(&s->chunks, 1);
        if (s->report) {
            /* pretend each item cost 1 us, with some noise */
            gf_chunker_report(&s->c, count, count * (500 + (start % 1000)));
        }
    }
    return NULL;
}

static void
gft_claim_concurrently(int64_t total, int64_t fixed, uint32_t threads, int report)
{
    gft_claimers_t s;
    ASSERT_OK(gf_chunker_init(&s.c, total, fixed, threads, 0));
    s.hits = calloc((size_t)total + 1, sizeof(*s.hits));
    ASSERT_NOT_NULL(s.hits);
    atomic_init(&s.chunks, 0);
    s.report = report;
    pthread_t *t = calloc(threads, sizeof(*t));
    ASSERT_NOT_NULL(t);
    for (uint32_t i = 0; i < threads; i++) {
        gft_thread_start(&t[i], gft_claimer, &s);
    }
    for (uint32_t i = 0; i < threads; i++) {
        gft_thread_join(t[i]);
    }
    for (int64_t i = 0; i < total; i++) {
        if (atomic_load(&s.hits[i]) != 1) {
            gft_fail(__FILE__, __LINE__, "index %" PRId64 " claimed %u times", i,
                     (unsigned)atomic_load(&s.hits[i]));
        }
    }
    printf("total %" PRId64 " fixed %" PRId64 " threads %u report %d: %" PRId64
           " chunks\n",
           total, fixed, threads, report, atomic_load(&s.chunks));
    free(t);
    free(s.hits);
}

TEST_IMPL(chunker_concurrent_exactly_once)
{
    int64_t total = gft_env_int("GF_STRESS_ITEMS", 100000) * 4;
    gft_claim_concurrently(total, 1, 4, 0);
    gft_claim_concurrently(total, 13, 4, 0);
    gft_claim_concurrently(total, 0, 4, 0);
    gft_claim_concurrently(total, 0, 4, 1);
    gft_claim_concurrently(total, 0, 1, 1);
    gft_claim_concurrently(7, 0, 8, 1);
}

TEST_IMPL(chunker_adaptive_shape)
{
    enum { W = 4 };
    gf_chunker_t c;
    int64_t total = 100000;
    ASSERT_OK(gf_chunker_init(&c, total, 0, W, 0));

    /* Probes before any report: 1..16 items. */
    int64_t start, count, claimed = 0;
    for (int i = 0; i < 40; i++) {
        ASSERT_OK(gf_chunker_claim(&c, &start, &count));
        ASSERT_EQ(start, claimed);
        ASSERT_GE(count, 1);
        ASSERT_LE(count, 16);
        claimed += count;
    }
    ASSERT_EQ(count, 16); /* probes grew to the cap */

    /* 100 ns per item, 2 ms target: 20000 items, but never more than
     * remaining / (2 * W). */
    gf_chunker_report(&c, 1000, 100000);
    int64_t prev = INT64_MAX;
    int64_t shrinking = 0;
    while (gf_chunker_claim(&c, &start, &count) == 0) {
        int64_t remaining = total - start;
        ASSERT_EQ(start, claimed);
        ASSERT_GE(count, 1);
        ASSERT_LE(count, 20000);
        int64_t cap = remaining / (2 * W);
        ASSERT_LE(count, cap < 1 ? 1 : cap);
        /* sizes only shrink from here: the remaining/(2W) cap binds */
        ASSERT_LE(count, prev);
        if (count < prev) {
            shrinking++;
        }
        prev = count;
        claimed += count;
    }
    ASSERT_EQ(claimed, total);
    ASSERT_EQ(prev, 1); /* ends with single items */
    ASSERT_GT(shrinking, 10);

    /* Cheap items with lots left: target bound, not the tail bound. */
    ASSERT_OK(gf_chunker_init(&c, INT64_C(1000000000), 0, W, 0));
    gf_chunker_report(&c, 1000, 100000); /* 100 ns/item */
    ASSERT_OK(gf_chunker_claim(&c, &start, &count));
    ASSERT_EQ(count, 20000);
}

typedef struct gft_cancel_claimer {
    gf_chunker_t *c;
    _Atomic int64_t *claimed;
    _Atomic int *running;
} gft_cancel_claimer_t;

static void *
gft_cancel_claimer(void *arg)
{
    gft_cancel_claimer_t *a = arg;
    int64_t start, count;
    atomic_fetch_add(a->running, 1);
    while (gf_chunker_claim(a->c, &start, &count) == 0) {
        atomic_fetch_add(a->claimed, count);
        sched_yield();
    }
    return NULL;
}

TEST_IMPL(chunker_cancel)
{
    gf_chunker_t c;
    ASSERT_OK(gf_chunker_init(&c, 1000, 10, 2, 0));
    int64_t start, count;
    ASSERT_OK(gf_chunker_claim(&c, &start, &count));
    ASSERT_EQ(gf_chunker_is_cancelled(&c), 0);
    gf_chunker_cancel(&c);
    ASSERT_EQ(gf_chunker_is_cancelled(&c), 1);
    ASSERT_ERR(gf_chunker_claim(&c, &start, &count), GF_ECLOSED);
    gf_chunker_cancel(&c);
    ASSERT_ERR(gf_chunker_claim(&c, &start, &count), GF_ECLOSED);

    /* Cancel stops concurrent claimers long before the range ends. */
    enum { T = 4 };
    int64_t total = INT64_C(1) << 40;
    ASSERT_OK(gf_chunker_init(&c, total, 1, T, 0));
    _Atomic int64_t claimed = 0;
    _Atomic int running = 0;
    gft_cancel_claimer_t arg = {&c, &claimed, &running};
    pthread_t t[T];
    for (int i = 0; i < T; i++) {
        gft_thread_start(&t[i], gft_cancel_claimer, &arg);
    }
    while (atomic_load(&running) < T || atomic_load(&claimed) < 100) {
        gft_sleep_ms(1);
    }
    gf_chunker_cancel(&c);
    for (int i = 0; i < T; i++) {
        gft_thread_join(t[i]);
    }
    int64_t at_cancel = atomic_load(&claimed);
    ASSERT_GE(at_cancel, 100);
    ASSERT_LT(at_cancel, total);
    ASSERT_ERR(gf_chunker_claim(&c, &start, &count), GF_ECLOSED);
}

TEST_IMPL(chunker_suggest_bounds)
{
    enum { W = 4 };
    gf_chunker_t c;
    ASSERT_OK(gf_chunker_init(&c, -1, 0, W, 0));
    /* no report yet: probes */
    ASSERT_EQ(gf_chunker_suggest(&c, -1), 1);
    ASSERT_EQ(gf_chunker_suggest(&c, 0), 1);
    ASSERT_GE(gf_chunker_suggest(&c, 1000000), 1);
    ASSERT_LE(gf_chunker_suggest(&c, 1000000), 16);

    /* 1 us per item, 2 ms target -> 2000 items */
    gf_chunker_report(&c, 10, 10000);
    ASSERT_EQ(gf_chunker_suggest(&c, -1), 2000);
    ASSERT_EQ(gf_chunker_suggest(&c, 1000000), 2000);
    ASSERT_EQ(gf_chunker_suggest(&c, 8000), 1000); /* 8000 / (2 * 4) */
    ASSERT_EQ(gf_chunker_suggest(&c, 7), 1);
    ASSERT_EQ(gf_chunker_suggest(&c, 1), 1);
    ASSERT_EQ(gf_chunker_suggest(&c, 0), 1);

    /* the average moves towards new samples */
    for (int i = 0; i < 50; i++) {
        gf_chunker_report(&c, 10, 100000); /* 10 us per item */
    }
    int64_t s = gf_chunker_suggest(&c, -1);
    ASSERT_GE(s, 195);
    ASSERT_LE(s, 210);

    /* extreme reports keep the answer sane */
    gf_chunker_report(&c, 0, 100);   /* ignored */
    gf_chunker_report(&c, 10, -5);   /* ignored */
    ASSERT_EQ(gf_chunker_suggest(&c, -1), s);
    for (int i = 0; i < 100; i++) {
        gf_chunker_report(&c, INT64_MAX, 0); /* free items */
    }
    s = gf_chunker_suggest(&c, -1);
    ASSERT_GE(s, 1);
    ASSERT_LE(s, INT64_C(1) << 20);
    ASSERT_EQ(gf_chunker_suggest(&c, 800), 100);
    for (int i = 0; i < 100; i++) {
        gf_chunker_report(&c, 1, INT64_MAX); /* a very slow item */
    }
    ASSERT_EQ(gf_chunker_suggest(&c, -1), 1);
    ASSERT_EQ(gf_chunker_suggest(&c, 1000000), 1);
}
