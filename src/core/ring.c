/* gilfree core: SPSC ring of variable-length frames in shared memory.
 *
 * Positions.  head and tail are 64-bit byte counters that only grow (2^64
 * bytes never wrap in practice); the frame area offset of position p is
 * p & (capacity - 1).  tail - head bytes are committed and unread; the
 * producer may write only in [tail, head + capacity).  Both are multiples of
 * GF_RING_ALIGN.  Each side keeps its own position in its handle (local
 * memory) and only publishes it; it never reads it back from shared memory,
 * so a peer that scribbles on it cannot confuse the owner.
 *
 * Frames.  [header 16 B: len u32, kind u32, pos u64][payload len B][pad to
 * 16].  A frame never straddles the end of the frame area: if the next frame
 * does not fit in the bytes left before the end, the producer first writes a
 * padding frame (kind GF__RING_PAD_KIND) that covers exactly those bytes,
 * and the frame goes at offset 0.  Padding and frame are published together
 * by one tail store; the consumer skips the padding and releases both at
 * once.  Since all sizes are multiples of 16 and the header is 16 bytes, the
 * room left before the end is 0 or at least one header, so a padding header
 * always fits.  The largest frame is half the capacity: when the ring is
 * empty, one of "the room before the end" and "the room before our own
 * offset" is at least half, so every legal frame eventually fits.
 *
 * Validation (consumer).  The consumer reads tail (untrusted) and accepts it
 * only if tail - head <= capacity and tail is aligned.  For the frame at
 * head it reads each header field once into locals, then requires: pos ==
 * head (stamp); padding only at a nonzero offset, exactly reaching the end of
 * the area and followed by a committed frame; kind <= GF_RING_KIND_MAX; len
 * <= max payload; the whole frame inside both the area (no straddling) and
 * the committed bytes.  Anything else is GF_EPROTO, sticky for the handle.
 * Offsets come from our own head masked by our own copy of the capacity, so
 * no header value can move a read outside the area, whatever it holds.  The
 * producer likewise validates head before trusting it for free space.
 *
 * Memory orders.
 *   (T) Producer: write payload and header(s) (plain / relaxed), then
 *       tail.store(release).  Consumer: tail.load(acquire), then read
 *       headers and payload.  The acquire synchronises with the release, so
 *       every byte of a committed frame is visible before it is read.
 *   (H) Consumer: read the payload, then head.store(release).  Producer:
 *       head.load(acquire) before reusing that space.  So the consumer's
 *       reads happen before the producer's overwrites (no write-after-read
 *       race on the bytes).
 *   (C) close: closed.store(release), then notify_all on both eventcounts.
 *       A consumer that finds the ring empty loads closed (acquire); if set,
 *       it loads tail (acquire) once more before answering GF_EPIPE.  When
 *       the producer closed, its commits precede its release store of
 *       closed, so that second load sees every one of them: nothing
 *       committed before the close is lost.  (A third party closing for a
 *       dead producer: the producer's last tail store reached memory before
 *       it died; the re-check reads it.)
 *   (W) Blocking: the eventcount protocol (eventcount.c): prepare (acquire),
 *       re-try, wait.  commit notifies not_empty after its tail store,
 *       release notifies not_full after its head store, close notifies both
 *       after its closed store; a waiter either sees the new state on its
 *       re-try or is woken by the notify (seq_cst on epoch and waiters).
 *       The futex is process-shared, so this works across processes.
 *   Producer-side closed check: acquire, but only advisory: a commit that
 *   races with a close may or may not be delivered, which the header
 *   documents; it cannot corrupt anything.
 *
 * The ring never takes a lock, so a peer killed at any instruction leaves at
 * worst an uncommitted frame behind (invisible) and the ring open; the
 * supervisor closes it, and the survivor drains and gets GF_EPIPE.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define GF__RING_MAGIC 0x21524647u /* "GFR!" read as little-endian bytes */
#define GF__RING_VERSION 1u
#define GF__RING_DATA_OFFSET offsetof(gf__ring_shared_t, data)

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");
_Static_assert(sizeof(gf__ring_frame_hdr_t) == GF_RING_FRAME_HEADER,
               "frame header size is part of the format");
_Static_assert(GF_RING_FRAME_HEADER % GF_RING_ALIGN == 0,
               "payloads must stay aligned after the header");
_Static_assert(offsetof(gf__ring_shared_t, magic) == 0, "magic must come first");
_Static_assert(offsetof(gf__ring_shared_t, head) - offsetof(gf__ring_shared_t, tail) >=
                   GF__CACHE_LINE,
               "head and tail must not share a cache line");
_Static_assert(offsetof(gf__ring_shared_t, data) % GF__CACHE_LINE == 0,
               "the frame area starts on a cache line");
_Static_assert(GF__RING_PAD_KIND > GF_RING_KIND_MAX, "padding is not a caller kind");
_Static_assert(GF_RING_MAX_PAYLOAD(GF_RING_MIN_CAPACITY) > 0, "minimum capacity too small");

struct gf_ring {
    /* Immutable after attach.  Copied from the validated header: the shared
     * copy is never read again, so a peer cannot change our bounds. */
    gf__ring_shared_t *shared;
    unsigned char *data; /* the frame area, capacity bytes */
    uint64_t mask;       /* capacity - 1 */
    uint32_t capacity;
    uint32_t max_payload;
    /* Set by the owner before the handle is shared between threads. */
    uint32_t spin_ns;

    /* Producer side: touched only by the producing thread.  Own cache
     * line, in case the consuming thread uses the same handle. */
    alignas(GF__CACHE_LINE) uint64_t tail; /* == the shared tail, which only we write */
    uint64_t head_cache;                   /* a consumer position seen; <= the real one */
    uint64_t rsv_frame;                    /* position of the reserved frame's header */
    uint32_t rsv_len;                      /* payload bytes reserved */
    uint8_t rsv_active;
    uint8_t prod_broken; /* GF_EPROTO seen: sticky */

    /* Consumer side: touched only by the consuming thread. */
    alignas(GF__CACHE_LINE) uint64_t head; /* == the shared head, which only we write */
    uint64_t tail_cache;                   /* validated producer position */
    uint64_t next_head;                    /* head after the peeked frame */
    gf_ring_frame_t frame;                 /* the peeked frame */
    uint8_t peeked;
    uint8_t cons_broken; /* GF_EPROTO seen: sticky */
};

static int
gf__ring_capacity_valid(uint32_t capacity)
{
    return capacity >= GF_RING_MIN_CAPACITY && capacity <= GF_RING_MAX_CAPACITY &&
           (capacity & (capacity - 1)) == 0;
}

/* Header + payload rounded up to the alignment. */
static inline uint64_t
gf__ring_frame_bytes(uint32_t len)
{
    return GF_RING_FRAME_HEADER +
           (((uint64_t)len + GF_RING_ALIGN - 1) & ~(uint64_t)(GF_RING_ALIGN - 1));
}

static inline gf__ring_frame_hdr_t *
gf__ring_hdr_at(const gf_ring_t *r, uint64_t pos)
{
    return (gf__ring_frame_hdr_t *)(void *)(r->data + (pos & r->mask));
}

static inline int
gf__ring_closed(const gf_ring_t *r)
{
    /* Acquire: see (C) at the top. */
    return atomic_load_explicit(&r->shared->closed, memory_order_acquire) != 0;
}

/* --- set-up ------------------------------------------------------------------ */

size_t
gf_ring_footprint(uint32_t capacity)
{
    if (!gf__ring_capacity_valid(capacity)) {
        return 0;
    }
    return GF__RING_DATA_OFFSET + (size_t)capacity;
}

int
gf_ring_init(void *mem, size_t mem_size, uint32_t capacity)
{
    size_t need = gf_ring_footprint(capacity);
    if (mem == NULL || ((uintptr_t)mem % GF__CACHE_LINE) != 0 || need == 0 ||
        mem_size < need) {
        return GF_EINVAL;
    }
    gf__ring_shared_t *s = mem;
    memset(s, 0, GF__RING_DATA_OFFSET);
    s->capacity = capacity;
    s->frame_align = GF_RING_ALIGN;
    s->frame_header = GF_RING_FRAME_HEADER;
    s->max_payload = GF_RING_MAX_PAYLOAD(capacity);
    s->header_bytes = (uint32_t)GF__RING_DATA_OFFSET;
    /* Relaxed: the ring is not shared yet; whatever hands it to another
     * thread or process (fork, passing the descriptor, pthread_create)
     * orders these stores.  The frame area is not touched: the consumer
     * reads only committed bytes. */
    atomic_store_explicit(&s->tail, 0, memory_order_relaxed);
    atomic_store_explicit(&s->head, 0, memory_order_relaxed);
    atomic_store_explicit(&s->closed, 0, memory_order_relaxed);
    gf_ec_init(&s->not_empty);
    gf_ec_init(&s->not_full);
    s->version = GF__RING_VERSION;
    s->magic = GF__RING_MAGIC;
    return 0;
}

int
gf_ring_attach(void *mem, size_t mem_size, gf_ring_t **out)
{
    if (mem == NULL || out == NULL || ((uintptr_t)mem % GF__CACHE_LINE) != 0 ||
        mem_size < GF__RING_DATA_OFFSET) {
        return GF_EINVAL;
    }
    gf__ring_shared_t *s = mem;
    /* Each field read once; from here on only the local copies count. */
    uint32_t capacity = s->capacity;
    if (s->magic != GF__RING_MAGIC || s->version != GF__RING_VERSION ||
        !gf__ring_capacity_valid(capacity) || s->frame_align != GF_RING_ALIGN ||
        s->frame_header != GF_RING_FRAME_HEADER ||
        s->max_payload != GF_RING_MAX_PAYLOAD(capacity) ||
        s->header_bytes != GF__RING_DATA_OFFSET ||
        gf_ring_footprint(capacity) > mem_size) {
        return GF_EINVAL;
    }
    /* Acquire: pairs with the release stores of a peer that used the ring
     * before we attached (a re-attach), so we start from what it wrote. */
    uint64_t head = atomic_load_explicit(&s->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&s->tail, memory_order_acquire);
    if (((head | tail) & (GF_RING_ALIGN - 1)) != 0 || tail - head > capacity) {
        return GF_EPROTO;
    }
    gf_ring_t *r = gf_aligned_alloc(sizeof(*r));
    if (r == NULL) {
        return GF_ENOMEM;
    }
    memset(r, 0, sizeof(*r));
    r->shared = s;
    r->data = s->data;
    r->capacity = capacity;
    r->mask = (uint64_t)capacity - 1;
    r->max_payload = GF_RING_MAX_PAYLOAD(capacity);
    r->spin_ns = GF__RING_DEFAULT_SPIN_NS;
    r->tail = tail;
    r->head_cache = head;
    r->head = head;
    r->tail_cache = tail;
    *out = r;
    return 0;
}

void
gf_ring_detach(gf_ring_t *ring)
{
    gf_aligned_free(ring);
}

void
gf_ring_set_spin_ns(gf_ring_t *ring, uint32_t spin_ns)
{
    ring->spin_ns = spin_ns;
}

uint32_t
gf_ring_capacity(const gf_ring_t *ring)
{
    return ring->capacity;
}

uint32_t
gf_ring_max_payload(const gf_ring_t *ring)
{
    return ring->max_payload;
}

gf__ring_shared_t *
gf__ring_shared(gf_ring_t *ring)
{
    return ring->shared;
}

unsigned char *
gf__ring_data(gf_ring_t *ring)
{
    return ring->data;
}

/* --- blocking ------------------------------------------------------------------ */

typedef int (*gf__ring_try_fn)(gf_ring_t *ring, void *arg);

typedef struct gf__ring_block_ctx {
    gf_ring_t *r;
    gf__ring_try_fn try_once;
    void *arg;
} gf__ring_block_ctx_t;

static int
gf__ring_block_try(void *ctx)
{
    gf__ring_block_ctx_t *c = ctx;
    return c->try_once(c->r, c->arg);
}

/* try; then gf__ec_block(): spin up to spin_ns, park on ec until try stops
 * saying EAGAIN. */
static int
gf__ring_block(gf_ring_t *r, gf_ec_t *ec, gf__ring_try_fn try_once, void *arg,
               int64_t timeout_ns)
{
    int rc = try_once(r, arg);
    if (rc != GF_EAGAIN) {
        return rc;
    }
    gf__ring_block_ctx_t c = {r, try_once, arg};
    return gf__ec_block(ec, gf__ring_block_try, &c, timeout_ns, (int64_t)r->spin_ns);
}

/* --- producer ------------------------------------------------------------------ */

int
gf_ring_try_reserve(gf_ring_t *r, uint32_t len, void **data)
{
    if (data == NULL) {
        return GF_EINVAL;
    }
    if (len > r->max_payload) {
        return GF_EMSGSIZE;
    }
    if (r->prod_broken) {
        return GF_EPROTO;
    }
    if (gf__ring_closed(r)) {
        r->rsv_active = 0;
        return GF_EPIPE;
    }
    uint64_t total = gf__ring_frame_bytes(len);
    uint64_t tail = r->tail;
    uint64_t room_to_end = r->capacity - (tail & r->mask);
    uint64_t frame = tail;
    uint64_t need = total;
    if (total > room_to_end) {
        /* Wrap: padding to the end, then the frame at offset 0.  need <
         * 2 * total <= capacity, so an empty ring always has room. */
        frame = tail + room_to_end;
        need = room_to_end + total;
    }
    if (need > r->capacity - (tail - r->head_cache)) {
        /* Acquire: (H) at the top: the consumer's reads of the space it
         * released happen before we overwrite it. */
        uint64_t head = atomic_load_explicit(&r->shared->head, memory_order_acquire);
        /* Never trust the peer: head must lie in [tail - capacity, tail]
         * (unsigned, so head > tail fails too) and be aligned. */
        if (tail - head > r->capacity || (head & (GF_RING_ALIGN - 1)) != 0) {
            r->prod_broken = 1;
            r->rsv_active = 0;
            return GF_EPROTO;
        }
        r->head_cache = head;
        if (need > r->capacity - (tail - head)) {
            return GF_EAGAIN;
        }
    }
    r->rsv_frame = frame;
    r->rsv_len = len;
    r->rsv_active = 1;
    *data = r->data + (frame & r->mask) + GF_RING_FRAME_HEADER;
    return 0;
}

typedef struct gf__ring_reserve_args {
    uint32_t len;
    void **data;
} gf__ring_reserve_args_t;

static int
gf__ring_try_reserve_cb(gf_ring_t *r, void *arg)
{
    gf__ring_reserve_args_t *a = arg;
    return gf_ring_try_reserve(r, a->len, a->data);
}

int
gf_ring_reserve(gf_ring_t *r, uint32_t len, void **data, int64_t timeout_ns)
{
    gf__ring_reserve_args_t a = {len, data};
    return gf__ring_block(r, &r->shared->not_full, gf__ring_try_reserve_cb, &a, timeout_ns);
}

int
gf_ring_commit(gf_ring_t *r, uint32_t kind, uint32_t len)
{
    if (!r->rsv_active || len > r->rsv_len || kind > GF_RING_KIND_MAX) {
        return GF_EINVAL;
    }
    if (gf__ring_closed(r)) {
        r->rsv_active = 0;
        return GF_EPIPE;
    }
    uint64_t tail = r->tail;
    uint64_t frame = r->rsv_frame;
    /* Relaxed header stores: published by the release store of tail (T). */
    if (frame != tail) {
        gf__ring_frame_hdr_t *pad = gf__ring_hdr_at(r, tail);
        atomic_store_explicit(&pad->len, (uint32_t)(frame - tail - GF_RING_FRAME_HEADER),
                              memory_order_relaxed);
        atomic_store_explicit(&pad->kind, GF__RING_PAD_KIND, memory_order_relaxed);
        atomic_store_explicit(&pad->pos, tail, memory_order_relaxed);
    }
    gf__ring_frame_hdr_t *h = gf__ring_hdr_at(r, frame);
    atomic_store_explicit(&h->len, len, memory_order_relaxed);
    atomic_store_explicit(&h->kind, kind, memory_order_relaxed);
    atomic_store_explicit(&h->pos, frame, memory_order_relaxed);
    uint64_t new_tail = frame + gf__ring_frame_bytes(len);
    r->tail = new_tail;
    r->rsv_active = 0;
    /* Release: (T) at the top. */
    atomic_store_explicit(&r->shared->tail, new_tail, memory_order_release);
    gf_ec_notify_one(&r->shared->not_empty);
    return 0;
}

static int
gf__ring_send_checks(uint32_t kind, const void *buf, uint32_t len)
{
    if (kind > GF_RING_KIND_MAX || (buf == NULL && len > 0)) {
        return GF_EINVAL;
    }
    return 0;
}

static int
gf__ring_fill(gf_ring_t *r, uint32_t kind, const void *buf, uint32_t len, void *dst)
{
    if (len > 0) {
        memcpy(dst, buf, len);
    }
    return gf_ring_commit(r, kind, len);
}

int
gf_ring_try_send(gf_ring_t *r, uint32_t kind, const void *buf, uint32_t len)
{
    int rc = gf__ring_send_checks(kind, buf, len);
    if (rc != 0) {
        return rc;
    }
    void *dst;
    rc = gf_ring_try_reserve(r, len, &dst);
    if (rc != 0) {
        return rc;
    }
    return gf__ring_fill(r, kind, buf, len, dst);
}

int
gf_ring_send(gf_ring_t *r, uint32_t kind, const void *buf, uint32_t len,
             int64_t timeout_ns)
{
    int rc = gf__ring_send_checks(kind, buf, len);
    if (rc != 0) {
        return rc;
    }
    void *dst;
    rc = gf_ring_reserve(r, len, &dst, timeout_ns);
    if (rc != 0) {
        return rc;
    }
    return gf__ring_fill(r, kind, buf, len, dst);
}

/* --- consumer ------------------------------------------------------------------ */

static int
gf__ring_broken(gf_ring_t *r)
{
    r->cons_broken = 1;
    return GF_EPROTO;
}

/* Load and validate the producer's position into tail_cache. */
static int
gf__ring_load_tail(gf_ring_t *r)
{
    /* Acquire: (T) at the top. */
    uint64_t tail = atomic_load_explicit(&r->shared->tail, memory_order_acquire);
    /* tail - head in [0, capacity] (unsigned: tail < head fails), aligned. */
    if (tail - r->head > r->capacity || (tail & (GF_RING_ALIGN - 1)) != 0) {
        return gf__ring_broken(r);
    }
    r->tail_cache = tail;
    return 0;
}

/* Parse the frame at pos, with avail (a nonzero multiple of GF_RING_ALIGN, at
 * most capacity) committed bytes from pos.  See "Validation" at the top. */
static int
gf__ring_parse(gf_ring_t *r, uint64_t pos, uint64_t avail)
{
    uint64_t off = pos & r->mask;
    /* off is aligned and < capacity, so the 16-byte header is inside. */
    const gf__ring_frame_hdr_t *h = gf__ring_hdr_at(r, pos);
    /* Relaxed: ordered by the acquire load of tail (T).  Read once each. */
    uint32_t len = atomic_load_explicit(&h->len, memory_order_relaxed);
    uint32_t kind = atomic_load_explicit(&h->kind, memory_order_relaxed);
    uint64_t stamp = atomic_load_explicit(&h->pos, memory_order_relaxed);
    if (stamp != pos) {
        return gf__ring_broken(r);
    }
    if (kind == GF__RING_PAD_KIND) {
        uint64_t skip = r->capacity - off;
        /* Padding covers exactly the rest of the area, never the whole of
         * it, and is committed together with the frame after it. */
        if (off == 0 || len != skip - GF_RING_FRAME_HEADER || skip >= avail) {
            return gf__ring_broken(r);
        }
        pos += skip;
        avail -= skip;
        off = 0;
        h = gf__ring_hdr_at(r, pos);
        len = atomic_load_explicit(&h->len, memory_order_relaxed);
        kind = atomic_load_explicit(&h->kind, memory_order_relaxed);
        stamp = atomic_load_explicit(&h->pos, memory_order_relaxed);
        if (stamp != pos) {
            return gf__ring_broken(r);
        }
        /* A second padding frame fails the kind check below. */
    }
    if (kind > GF_RING_KIND_MAX || len > r->max_payload) {
        return gf__ring_broken(r);
    }
    uint64_t total = gf__ring_frame_bytes(len);
    if (total > r->capacity - off || total > avail) {
        return gf__ring_broken(r);
    }
    r->frame.data = r->data + off + GF_RING_FRAME_HEADER;
    r->frame.len = len;
    r->frame.kind = kind;
    r->next_head = pos + total;
    r->peeked = 1;
    return 0;
}

int
gf_ring_try_peek(gf_ring_t *r, gf_ring_frame_t *frame)
{
    if (frame == NULL) {
        return GF_EINVAL;
    }
    if (r->cons_broken) {
        return GF_EPROTO;
    }
    if (r->peeked) {
        *frame = r->frame;
        return 0;
    }
    uint64_t head = r->head;
    if (r->tail_cache == head) {
        int rc = gf__ring_load_tail(r);
        if (rc != 0) {
            return rc;
        }
        if (r->tail_cache == head) {
            if (!gf__ring_closed(r)) {
                return GF_EAGAIN;
            }
            /* Closed and looked empty: (C) at the top, look once more. */
            rc = gf__ring_load_tail(r);
            if (rc != 0) {
                return rc;
            }
            if (r->tail_cache == head) {
                return GF_EPIPE;
            }
        }
    }
    int rc = gf__ring_parse(r, head, r->tail_cache - head);
    if (rc != 0) {
        return rc;
    }
    *frame = r->frame;
    return 0;
}

static int
gf__ring_try_peek_cb(gf_ring_t *r, void *arg)
{
    return gf_ring_try_peek(r, arg);
}

int
gf_ring_peek(gf_ring_t *r, gf_ring_frame_t *frame, int64_t timeout_ns)
{
    if (frame == NULL) {
        return GF_EINVAL;
    }
    return gf__ring_block(r, &r->shared->not_empty, gf__ring_try_peek_cb, frame,
                          timeout_ns);
}

int
gf_ring_release(gf_ring_t *r)
{
    if (!r->peeked) {
        return GF_EINVAL;
    }
    r->peeked = 0;
    r->head = r->next_head;
    /* Release: (H) at the top. */
    atomic_store_explicit(&r->shared->head, r->head, memory_order_release);
    gf_ec_notify_one(&r->shared->not_full);
    return 0;
}

static int
gf__ring_copy_out(gf_ring_t *r, const gf_ring_frame_t *f, uint32_t *kind, void *buf,
                  size_t buf_size, uint32_t *len)
{
    if (kind != NULL) {
        *kind = f->kind;
    }
    if (len != NULL) {
        *len = f->len;
    }
    if (f->len > buf_size) {
        return GF_EMSGSIZE;
    }
    if (f->len > 0) {
        memcpy(buf, f->data, f->len);
    }
    return gf_ring_release(r);
}

int
gf_ring_try_recv(gf_ring_t *r, uint32_t *kind, void *buf, size_t buf_size, uint32_t *len)
{
    if (buf == NULL && buf_size > 0) {
        return GF_EINVAL;
    }
    gf_ring_frame_t f;
    int rc = gf_ring_try_peek(r, &f);
    if (rc != 0) {
        return rc;
    }
    return gf__ring_copy_out(r, &f, kind, buf, buf_size, len);
}

int
gf_ring_recv(gf_ring_t *r, uint32_t *kind, void *buf, size_t buf_size, uint32_t *len,
             int64_t timeout_ns)
{
    if (buf == NULL && buf_size > 0) {
        return GF_EINVAL;
    }
    gf_ring_frame_t f;
    int rc = gf_ring_peek(r, &f, timeout_ns);
    if (rc != 0) {
        return rc;
    }
    return gf__ring_copy_out(r, &f, kind, buf, buf_size, len);
}

/* --- either side ------------------------------------------------------------------ */

void
gf_ring_close(gf_ring_t *r)
{
    /* Release: (C) at the top.  Then wake both sides: (W). */
    atomic_store_explicit(&r->shared->closed, 1, memory_order_release);
    gf_ec_notify_all(&r->shared->not_empty);
    gf_ec_notify_all(&r->shared->not_full);
}

int
gf_ring_is_closed(const gf_ring_t *ring)
{
    return gf__ring_closed(ring);
}
