/* gilfree core: single-producer/single-consumer ring of variable-length
 * frames, for channels between processes.
 *
 * The ring lives in caller-provided memory, normally a shared-memory region
 * (shm.h) that the parent creates and a worker maps: one ring per direction
 * per worker.  The memory holds a versioned header (magic, version, capacity,
 * frame alignment), the producer's and the consumer's positions on separate
 * cache lines, two eventcounts (gf_ec_t, process-shared futexes) and the
 * frame area.  It holds no pointers, so each process may map it anywhere.
 *
 * Each process works through its own handle (gf_ring_t, from
 * gf_ring_attach()), which keeps that side's positions and caches in local
 * memory.  Exactly one handle may produce and one may consume at a time; a
 * handle may be used by two threads only if one of them only produces and the
 * other only consumes.  No lock exists that a dying peer could hold.
 *
 * Frames: a kind (0 .. GF_RING_KIND_MAX, the caller's tag) and a payload of
 * 0 .. gf_ring_max_payload() bytes (half the capacity, less a frame header).
 * Payloads start GF_RING_ALIGN-aligned, so any C type can be read in place.
 *
 *   producer                              consumer
 *   gf_ring_reserve(len) -> data          gf_ring_peek() -> {data, len, kind}
 *   write up to len bytes at data         read them in place
 *   gf_ring_commit(kind, used)            gf_ring_release()
 *   (or gf_ring_send(kind, buf, len))     (or gf_ring_recv(buf) to copy out)
 *
 * The consumer trusts nothing it reads from the shared memory: a peer may be
 * buggy, hostile or dead mid-write.  Every frame header is checked against the
 * ring's bounds (length, alignment, wrap, kind, position stamp) and anything
 * malformed yields GF_EPROTO; no input makes it read or write outside the
 * ring.  GF_EPROTO is sticky for that handle.
 *
 * Close: either side (or a supervisor holding a handle) may close the ring;
 * that wakes a peer parked in a blocking call.  After close the producer gets
 * GF_EPIPE; the consumer still receives every frame committed before the
 * close, then GF_EPIPE.  A frame whose commit races with the close may or may
 * not be delivered.
 *
 * Blocking calls take timeout_ns (< 0: forever; 0: never sleep), spin
 * briefly, then park on an eventcount.  They return GF_ETIMEDOUT when the
 * time is up and GF_EINTR when a signal handler ran while they slept (the
 * caller checks its signals, e.g. Ctrl-C, and calls again).
 */
#ifndef GILFREE_RING_H
#define GILFREE_RING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gf_ring gf_ring_t;

/* Capacity (bytes of frame area): a power of two in this range. */
#define GF_RING_MIN_CAPACITY 128u
#define GF_RING_MAX_CAPACITY (1u << 30)

/* Frames (header and payload) start at multiples of this; so do payloads. */
#define GF_RING_ALIGN 16u
/* Bytes of frame header in front of every payload. */
#define GF_RING_FRAME_HEADER 16u
/* Largest payload a ring of `capacity` bytes accepts. */
#define GF_RING_MAX_PAYLOAD(capacity) ((uint32_t)(capacity) / 2u - GF_RING_FRAME_HEADER)
/* Frame kinds available to the caller: 0 .. GF_RING_KIND_MAX. */
#define GF_RING_KIND_MAX 0xffffu

/* A frame seen by the consumer.  data points into the ring and stays valid
 * until gf_ring_release(). */
typedef struct gf_ring_frame {
    void *data;
    uint32_t len;
    uint32_t kind;
} gf_ring_frame_t;

/* --- set-up ---------------------------------------------------------------- */

/* Bytes of memory a ring of `capacity` needs (header + frame area); 0 if the
 * capacity is invalid. */
size_t gf_ring_footprint(uint32_t capacity);

/* Lay out an empty, open ring in `mem` (64-byte aligned, mem_size >=
 * gf_ring_footprint(capacity)).  Do it before any other process attaches.
 * Returns 0 or GF_EINVAL. */
int gf_ring_init(void *mem, size_t mem_size, uint32_t capacity);

/* Validate a ring laid out by gf_ring_init() (perhaps by another process, at
 * another address) and return a handle for this process.  The header must
 * fit in mem_size, so a corrupt capacity cannot send us past the mapping.
 * Returns 0, GF_EINVAL (bad arguments, magic, version or layout), GF_EPROTO
 * (inconsistent positions) or GF_ENOMEM. */
int gf_ring_attach(void *mem, size_t mem_size, gf_ring_t **out);

/* Free the handle (not the ring's memory, which the caller owns).  NULL is
 * a no-op. */
void gf_ring_detach(gf_ring_t *ring);

/* Spin this long before parking in blocking calls (default ~20 us; 0: park
 * at once).  Per handle. */
void gf_ring_set_spin_ns(gf_ring_t *ring, uint32_t spin_ns);

uint32_t gf_ring_capacity(const gf_ring_t *ring);
uint32_t gf_ring_max_payload(const gf_ring_t *ring);

/* --- producer -------------------------------------------------------------- */

/* Reserve room for a frame of up to len payload bytes; *data receives where
 * to write them (GF_RING_ALIGN-aligned, inside the ring).  Nothing is visible
 * to the consumer until gf_ring_commit().  Reserving again abandons an
 * uncommitted reservation.
 * try_: 0, GF_EAGAIN (not enough room now), GF_EMSGSIZE (len >
 * gf_ring_max_payload(): never fits), GF_EPIPE (closed), GF_EPROTO (the
 * consumer's position in shared memory is corrupt).  Blocking form: also
 * GF_ETIMEDOUT, GF_EINTR. */
int gf_ring_try_reserve(gf_ring_t *ring, uint32_t len, void **data);
int gf_ring_reserve(gf_ring_t *ring, uint32_t len, void **data, int64_t timeout_ns);

/* Publish the reserved frame with `len` (<= the reserved length) payload
 * bytes and the given kind (<= GF_RING_KIND_MAX), and wake the consumer if it
 * sleeps.  Returns 0; GF_EINVAL (no reservation, len too big, bad kind; the
 * reservation is kept); GF_EPIPE (closed: the frame is dropped). */
int gf_ring_commit(gf_ring_t *ring, uint32_t kind, uint32_t len);

/* Reserve + copy + commit.  Same results as reserve (and GF_EINVAL for a bad
 * kind or a NULL buf with len > 0). */
int gf_ring_try_send(gf_ring_t *ring, uint32_t kind, const void *buf, uint32_t len);
int gf_ring_send(gf_ring_t *ring, uint32_t kind, const void *buf, uint32_t len,
                 int64_t timeout_ns);

/* --- consumer -------------------------------------------------------------- */

/* The next frame, in place.  Peeking again before release returns the same
 * frame.  try_: 0, GF_EAGAIN (nothing committed), GF_EPIPE (closed and
 * drained), GF_EPROTO (malformed; sticky).  Blocking form: also GF_ETIMEDOUT,
 * GF_EINTR. */
int gf_ring_try_peek(gf_ring_t *ring, gf_ring_frame_t *frame);
int gf_ring_peek(gf_ring_t *ring, gf_ring_frame_t *frame, int64_t timeout_ns);

/* Give the peeked frame's space back to the producer (waking it if it waits
 * for room).  0, or GF_EINVAL if no frame is peeked. */
int gf_ring_release(gf_ring_t *ring);

/* Peek + copy + release.  *kind and *len receive the frame's kind and length
 * (kind and len may be NULL).  If buf_size < the length, returns GF_EMSGSIZE
 * with *kind and *len set and the frame left in the ring (peeked).  Otherwise
 * the results of peek. */
int gf_ring_try_recv(gf_ring_t *ring, uint32_t *kind, void *buf, size_t buf_size,
                     uint32_t *len);
int gf_ring_recv(gf_ring_t *ring, uint32_t *kind, void *buf, size_t buf_size,
                 uint32_t *len, int64_t timeout_ns);

/* --- either side ----------------------------------------------------------- */

/* Mark the ring closed and wake whoever sleeps on it, on both sides.
 * Idempotent; async-signal-safe. */
void gf_ring_close(gf_ring_t *ring);
int gf_ring_is_closed(const gf_ring_t *ring);

#ifdef __cplusplus
}
#endif
#endif /* GILFREE_RING_H */
