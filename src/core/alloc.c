/* gilfree core: the replaceable allocator.
 *
 * The four function pointers are plain (non-atomic) statics: the contract
 * (alloc.h) is that the embedder replaces them once, before any core object
 * exists and before any core thread starts, so every later read happens
 * after the write in program order or through pthread_create.
 */
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

static gf_malloc_func gf__malloc_fn = malloc;
static gf_realloc_func gf__realloc_fn = realloc;
static gf_calloc_func gf__calloc_fn = calloc;
static gf_free_func gf__free_fn = free;

int
gf_replace_allocator(gf_malloc_func malloc_func, gf_realloc_func realloc_func,
                     gf_calloc_func calloc_func, gf_free_func free_func)
{
    if (malloc_func == NULL || realloc_func == NULL || calloc_func == NULL ||
        free_func == NULL) {
        return GF_EINVAL;
    }
    gf__malloc_fn = malloc_func;
    gf__realloc_fn = realloc_func;
    gf__calloc_fn = calloc_func;
    gf__free_fn = free_func;
    return 0;
}

void *
gf_malloc(size_t size)
{
    return gf__malloc_fn(size);
}

void *
gf_calloc(size_t count, size_t size)
{
    /* Check the product here too: a replacement calloc might not. */
    if (size != 0 && count > SIZE_MAX / size) {
        return NULL;
    }
    return gf__calloc_fn(count, size);
}

void *
gf_realloc(void *ptr, size_t size)
{
    return gf__realloc_fn(ptr, size);
}

void
gf_free(void *ptr)
{
    if (ptr != NULL) {
        gf__free_fn(ptr);
    }
}

/* Aligned blocks: over-allocate by one cache line plus a pointer, round up,
 * and keep the pointer the allocator returned just below the aligned
 * address. */
void *
gf_aligned_alloc(size_t size)
{
    const size_t extra = GF__CACHE_LINE + sizeof(void *);
    if (size > SIZE_MAX - extra) {
        return NULL;
    }
    void *raw = gf__malloc_fn(size + extra);
    if (raw == NULL) {
        return NULL;
    }
    uintptr_t base = (uintptr_t)raw + sizeof(void *);
    uintptr_t aligned = (base + GF__CACHE_LINE - 1) & ~(uintptr_t)(GF__CACHE_LINE - 1);
    void **slot = (void **)aligned - 1;
    *slot = raw;
    return (void *)aligned;
}

void
gf_aligned_free(void *ptr)
{
    if (ptr == NULL) {
        return;
    }
    void **slot = (void **)ptr - 1;
    gf__free_fn(*slot);
}
