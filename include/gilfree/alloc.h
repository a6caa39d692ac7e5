/* gilfree core: replaceable allocator.
 *
 * Every allocation the core makes goes through these four functions.  The
 * CPython extension installs PyMem_Raw* (which may be called without an
 * attached thread state) so that Python's tracemalloc sees our memory; C tests
 * use the libc defaults.  As with uv_replace_allocator(), replace the allocator
 * once, before any core object exists.
 */
#ifndef GILFREE_ALLOC_H
#define GILFREE_ALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void *(*gf_malloc_func)(size_t size);
typedef void *(*gf_realloc_func)(void *ptr, size_t size);
typedef void *(*gf_calloc_func)(size_t count, size_t size);
typedef void (*gf_free_func)(void *ptr);

/* Returns 0, or GF_EINVAL if any pointer is NULL. */
int gf_replace_allocator(gf_malloc_func malloc_func, gf_realloc_func realloc_func,
                         gf_calloc_func calloc_func, gf_free_func free_func);

void *gf_malloc(size_t size);
void *gf_calloc(size_t count, size_t size);
void *gf_realloc(void *ptr, size_t size);
void gf_free(void *ptr);

/* Cache-line aligned allocation (for structures with padded atomics).  Freed
 * with gf_aligned_free().  Built on the replaceable allocator. */
void *gf_aligned_alloc(size_t size);
void gf_aligned_free(void *ptr);

#ifdef __cplusplus
}
#endif
#endif /* GILFREE_ALLOC_H */
