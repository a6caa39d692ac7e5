/* gilfree core: bounded multi-producer multi-consumer queue of 64-bit values.
 *
 * Dmitry Vyukov's design: a power-of-two ring of cells, each with its own
 * sequence number, so producers and consumers touch a shared cache line only
 * when they contend for the same cell.  head (consumers) and tail (producers)
 * sit on separate cache lines.  try_ forms never block; blocking forms spin
 * briefly, then park on an eventcount (gf_ec_t), so an uncontended hand-off
 * costs no system call.  close() wakes every waiter.
 *
 * Values are uint64_t: in one process they carry pointers (cast through
 * uintptr_t), across processes they carry offsets into shared memory.  The
 * queue holds no pointers itself, so gf_queue_init() may place it in memory
 * that several processes map at different addresses.  The layout starts with
 * a magic number and a version (checked by gf_queue_attach()).
 */
#ifndef GILFREE_QUEUE_H
#define GILFREE_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gf_queue gf_queue_t;

#define GF_QUEUE_MAX_CAPACITY (1u << 30)

/* Bytes needed for a queue of `capacity` cells (a power of two, 2 ..
 * GF_QUEUE_MAX_CAPACITY); 0 if capacity is invalid. */
size_t gf_queue_footprint(uint32_t capacity);

/* Initialise a queue in caller-provided memory of gf_queue_footprint(capacity)
 * bytes, aligned to 64 bytes.  Returns 0 or GF_EINVAL. */
int gf_queue_init(void *mem, uint32_t capacity);

/* Validate an already initialised queue (e.g. mapped from shared memory):
 * magic, version and capacity.  Returns 0 or GF_EINVAL. */
int gf_queue_attach(void *mem, gf_queue_t **out);

/* Allocate and initialise a queue with the core allocator. */
int gf_queue_new(uint32_t capacity, gf_queue_t **out);
/* Free a queue from gf_queue_new() (not one placed by gf_queue_init()). */
void gf_queue_free(gf_queue_t *q);

/* 0; GF_EAGAIN when full; GF_ECLOSED once closed. */
int gf_queue_try_push(gf_queue_t *q, uint64_t value);

/* 0; GF_EAGAIN when empty; GF_ECLOSED when closed AND empty (items pushed
 * before close() are still delivered). */
int gf_queue_try_pop(gf_queue_t *q, uint64_t *value);

/* Blocking forms.  timeout_ns < 0 waits forever, 0 never sleeps.
 * Return 0, GF_ECLOSED, GF_ETIMEDOUT, or GF_EINTR if a signal handler ran on
 * this thread while it slept (the caller checks signals and retries). */
int gf_queue_push(gf_queue_t *q, uint64_t value, int64_t timeout_ns);
int gf_queue_pop(gf_queue_t *q, uint64_t *value, int64_t timeout_ns);

/* Refuse further pushes and wake every blocked producer and consumer.
 * Idempotent. */
void gf_queue_close(gf_queue_t *q);
int gf_queue_is_closed(const gf_queue_t *q);

uint32_t gf_queue_capacity(const gf_queue_t *q);
/* Items currently queued; exact only when no operation is in progress. */
uint32_t gf_queue_size_approx(const gf_queue_t *q);

#ifdef __cplusplus
}
#endif
#endif /* GILFREE_QUEUE_H */
