/* Tests: the replaceable allocator. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "runner.h"

static _Atomic int gft_mallocs, gft_reallocs, gft_callocs, gft_frees;

static void *
gft_count_malloc(size_t size)
{
    atomic_fetch_add(&gft_mallocs, 1);
    return malloc(size);
}

static void *
gft_count_realloc(void *ptr, size_t size)
{
    atomic_fetch_add(&gft_reallocs, 1);
    return realloc(ptr, size);
}

static void *
gft_count_calloc(size_t count, size_t size)
{
    atomic_fetch_add(&gft_callocs, 1);
    return calloc(count, size);
}

static void
gft_count_free(void *ptr)
{
    atomic_fetch_add(&gft_frees, 1);
    free(ptr);
}

TEST_IMPL(alloc_replace)
{
    ASSERT_ERR(gf_replace_allocator(NULL, realloc, calloc, free), GF_EINVAL);
    ASSERT_ERR(gf_replace_allocator(malloc, NULL, calloc, free), GF_EINVAL);
    ASSERT_ERR(gf_replace_allocator(malloc, realloc, NULL, free), GF_EINVAL);
    ASSERT_ERR(gf_replace_allocator(malloc, realloc, calloc, NULL), GF_EINVAL);

    ASSERT_OK(gf_replace_allocator(gft_count_malloc, gft_count_realloc, gft_count_calloc,
                                   gft_count_free));
    void *p = gf_malloc(10);
    ASSERT_NOT_NULL(p);
    p = gf_realloc(p, 100);
    ASSERT_NOT_NULL(p);
    gf_free(p);
    gf_free(NULL); /* no call for NULL */
    int *z = gf_calloc(4, sizeof(int));
    ASSERT_NOT_NULL(z);
    ASSERT_EQ(z[0] | z[1] | z[2] | z[3], 0);
    gf_free(z);
    ASSERT_EQ(atomic_load(&gft_mallocs), 1);
    ASSERT_EQ(atomic_load(&gft_reallocs), 1);
    ASSERT_EQ(atomic_load(&gft_callocs), 1);
    ASSERT_EQ(atomic_load(&gft_frees), 2);

    /* Aligned blocks and core objects go through the replacement too. */
    for (size_t size = 1; size < 5000; size = size * 3 + 1) {
        unsigned char *a = gf_aligned_alloc(size);
        ASSERT_NOT_NULL(a);
        ASSERT_EQ((uintptr_t)a % 64, 0);
        a[0] = 1;
        a[size - 1] = 2;
        gf_aligned_free(a);
    }
    gf_aligned_free(NULL);
    int before = atomic_load(&gft_mallocs) + atomic_load(&gft_callocs);
    gf_queue_t *q;
    ASSERT_OK(gf_queue_new(64, &q));
    ASSERT_GT(atomic_load(&gft_mallocs) + atomic_load(&gft_callocs), before);
    gf_queue_free(q);
    ASSERT_EQ(atomic_load(&gft_mallocs) + atomic_load(&gft_callocs),
              atomic_load(&gft_frees));

    /* Overflowing requests fail instead of wrapping. */
    ASSERT_NULL(gf_calloc(SIZE_MAX / 2, 4));
    ASSERT_NULL(gf_aligned_alloc(SIZE_MAX - 8));

    ASSERT_OK(gf_replace_allocator(malloc, realloc, calloc, free));
    int calls = atomic_load(&gft_mallocs);
    gf_free(gf_malloc(8));
    ASSERT_EQ(atomic_load(&gft_mallocs), calls);
}
