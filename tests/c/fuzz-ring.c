/* libFuzzer target: the ring consumer's frame decoding.
 *
 *   clang -fsanitize=fuzzer,address,undefined ... (tools/run-c-tests fuzz)
 *   build/c-fuzz/tests/c/fuzz-ring -max_total_time=20 CORPUS_DIR
 *
 * The consumer must survive anything a peer can leave in shared memory:
 * every peek yields a frame inside the ring, GF_EAGAIN, GF_EPROTO or (when
 * closed) GF_EPIPE, and draining always ends.  The ring lives in a heap block
 * of exactly its footprint, so AddressSanitizer flags any access outside it.
 *
 * Input: byte 0 picks the mode and options, the rest feeds it.
 *   bits 0-1  mode: 0, 3  raw: the input is the ring (positions + frame area)
 *                   1     script + corruption: frames written by the real
 *                         producer, interleaved with receives, then bytes of
 *                         the area and the positions flipped, and one more
 *                         reservation filled by the producer
 *                   2     script only: every frame must arrive intact, in
 *                         order (an oracle for the happy path)
 *   bit 2     close the ring before draining
 *   bits 3-4  capacity: 128, 256, 1024 or 4096 bytes
 *   bit 5     raw mode: fold the positions into the valid range (aligned,
 *             tail - head <= capacity) so that frame parsing is reached
 */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size);

#define GFZ_CHECK(cond)            \
    do {                           \
        if (!(cond)) {             \
            __builtin_trap();      \
        }                          \
    } while (0)

typedef struct gfz_reader {
    const uint8_t *p;
    size_t left;
} gfz_reader_t;

static uint8_t
gfz_u8(gfz_reader_t *rd)
{
    if (rd->left == 0) {
        return 0;
    }
    rd->left--;
    return *rd->p++;
}

static uint64_t
gfz_u64(gfz_reader_t *rd)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)gfz_u8(rd) << (8 * i);
    }
    return v;
}

/* Payload byte j of frame seq. */
static uint8_t
gfz_byte(uint64_t seq, uint32_t j)
{
    uint32_t x = (uint32_t)seq * 2654435761u + j * 40503u;
    return (uint8_t)(x ^ (x >> 13));
}

/* Drain the consumer; only the allowed results, frames inside the area, and
 * an end within capacity / 16 + 1 frames.  Returns the final result. */
static int
gfz_drain(gf_ring_t *c, unsigned char *data, uint32_t cap, int closed)
{
    uint32_t maxp = gf_ring_max_payload(c);
    volatile uint8_t sink = 0;
    for (uint32_t n = 0; n <= cap / 16 + 1; n++) {
        gf_ring_frame_t f;
        int rc = gf_ring_try_peek(c, &f);
        if (rc != 0) {
            GFZ_CHECK(rc == GF_EAGAIN || rc == GF_EPROTO || (closed && rc == GF_EPIPE));
            GFZ_CHECK(rc != GF_EAGAIN || !closed);
            if (rc == GF_EPROTO) {
                GFZ_CHECK(gf_ring_try_peek(c, &f) == GF_EPROTO); /* sticky */
            }
            return rc;
        }
        unsigned char *d = f.data;
        GFZ_CHECK(d >= data + GF_RING_FRAME_HEADER);
        GFZ_CHECK(d + f.len <= data + cap);
        GFZ_CHECK((uintptr_t)d % GF_RING_ALIGN == 0);
        GFZ_CHECK(f.len <= maxp);
        GFZ_CHECK(f.kind <= GF_RING_KIND_MAX);
        for (uint32_t i = 0; i < f.len; i++) {
            sink = (uint8_t)(sink + d[i]);
        }
        GFZ_CHECK(gf_ring_release(c) == 0);
    }
    (void)sink;
    GFZ_CHECK(0); /* each frame advances by >= 16 bytes: cannot get here */
    return 0;
}

static void
gfz_raw(gfz_reader_t *rd, unsigned char *mem, size_t size, uint32_t cap, uint8_t flags)
{
    gf__ring_shared_t *s = (gf__ring_shared_t *)(void *)mem;
    uint64_t head = gfz_u64(rd);
    uint64_t tail = gfz_u64(rd);
    if (flags & 0x20) {
        head &= ~(uint64_t)(GF_RING_ALIGN - 1);
        tail = head + ((tail % ((uint64_t)cap + 1)) & ~(uint64_t)(GF_RING_ALIGN - 1));
    }
    atomic_store_explicit(&s->head, head, memory_order_relaxed);
    atomic_store_explicit(&s->tail, tail, memory_order_relaxed);
    size_t n = rd->left < cap ? rd->left : cap;
    memcpy(s->data, rd->p, n);
    gf_ring_t *c;
    int rc = gf_ring_attach(mem, size, &c);
    if (rc != 0) {
        GFZ_CHECK(rc == GF_EPROTO && !(flags & 0x20));
        return;
    }
    int closed = (flags & 0x04) != 0;
    if (closed) {
        gf_ring_close(c);
    }
    gfz_drain(c, s->data, cap, closed);
    gf_ring_detach(c);
}

static void
gfz_script(gfz_reader_t *rd, unsigned char *mem, size_t size, uint32_t cap, uint8_t flags,
           int corrupt)
{
    gf__ring_shared_t *s = (gf__ring_shared_t *)(void *)mem;
    gf_ring_t *p, *c;
    GFZ_CHECK(gf_ring_attach(mem, size, &p) == 0);
    GFZ_CHECK(gf_ring_attach(mem, size, &c) == 0);
    uint32_t maxp = gf_ring_max_payload(p);
    uint64_t sent = 0, received = 0;
    uint32_t lens[4096 / 16 + 1];
    uint32_t nlens = sizeof(lens) / sizeof(lens[0]);

    /* Ops: two bytes each, up to the count in the first byte. */
    uint32_t nops = gfz_u8(rd);
    for (uint32_t i = 0; i < nops && rd->left >= 2; i++) {
        uint8_t a = gfz_u8(rd);
        uint8_t b = gfz_u8(rd);
        if ((a & 1) == 0) {
            uint32_t len = (uint32_t)b * maxp / 255u;
            void *dst;
            int rc = gf_ring_try_reserve(p, len, &dst);
            if (rc == GF_EAGAIN) {
                GFZ_CHECK(sent != received); /* an empty ring takes any frame */
                continue;
            }
            GFZ_CHECK(rc == 0);
            for (uint32_t j = 0; j < len; j++) {
                ((uint8_t *)dst)[j] = gfz_byte(sent, j);
            }
            GFZ_CHECK(gf_ring_commit(p, (uint32_t)(sent & GF_RING_KIND_MAX), len) == 0);
            lens[sent % nlens] = len;
            sent++;
        }
        else {
            gf_ring_frame_t f;
            int rc = gf_ring_try_peek(c, &f);
            if (sent == received) {
                GFZ_CHECK(rc == GF_EAGAIN);
                continue;
            }
            GFZ_CHECK(rc == 0);
            GFZ_CHECK(f.len == lens[received % nlens]);
            GFZ_CHECK(f.kind == (uint32_t)(received & GF_RING_KIND_MAX));
            for (uint32_t j = 0; j < f.len; j++) {
                GFZ_CHECK(((uint8_t *)f.data)[j] == gfz_byte(received, j));
            }
            GFZ_CHECK(gf_ring_release(c) == 0);
            received++;
        }
    }

    if (corrupt) {
        /* Patches: [offset lo][offset hi][xor]; offset 0xffff hits tail,
         * 0xfffe head. */
        while (rd->left >= 3) {
            uint32_t off = gfz_u8(rd);
            off |= (uint32_t)gfz_u8(rd) << 8;
            uint8_t x = gfz_u8(rd);
            if (off == 0xffff) {
                atomic_fetch_xor_explicit(&s->tail, x, memory_order_relaxed);
            }
            else if (off == 0xfffe) {
                atomic_fetch_xor_explicit(&s->head, x, memory_order_relaxed);
            }
            else {
                s->data[off % cap] ^= x;
            }
        }
        /* The producer, too, must stay inside the area whatever the
         * consumer's position says: fill what it reserves (ASan checks). */
        void *dst;
        uint32_t want = (uint32_t)(sent * 37 % (maxp + 1));
        int rc = gf_ring_try_reserve(p, want, &dst);
        GFZ_CHECK(rc == 0 || rc == GF_EAGAIN || rc == GF_EPROTO);
        if (rc == 0) {
            GFZ_CHECK((unsigned char *)dst >= s->data + GF_RING_FRAME_HEADER);
            GFZ_CHECK((unsigned char *)dst + want <= s->data + cap);
            memset(dst, 0xEE, want);
        }
    }
    int closed = (flags & 0x04) != 0;
    if (closed) {
        gf_ring_close(p);
    }
    if (corrupt) {
        gfz_drain(c, s->data, cap, closed);
    }
    else {
        /* Untouched: exactly the frames still queued, then empty/closed. */
        while (received < sent) {
            gf_ring_frame_t f;
            GFZ_CHECK(gf_ring_try_peek(c, &f) == 0);
            GFZ_CHECK(f.len == lens[received % nlens]);
            for (uint32_t j = 0; j < f.len; j++) {
                GFZ_CHECK(((uint8_t *)f.data)[j] == gfz_byte(received, j));
            }
            GFZ_CHECK(gf_ring_release(c) == 0);
            received++;
        }
        gf_ring_frame_t f;
        GFZ_CHECK(gf_ring_try_peek(c, &f) == (closed ? GF_EPIPE : GF_EAGAIN));
    }
    gf_ring_detach(p);
    gf_ring_detach(c);
}

int
LLVMFuzzerTestOneInput(const uint8_t *input, size_t size)
{
    static const uint32_t caps[4] = {128, 256, 1024, 4096};
    if (size == 0) {
        return 0;
    }
    gfz_reader_t rd = {input, size};
    uint8_t flags = gfz_u8(&rd);
    uint32_t cap = caps[(flags >> 3) & 3];
    size_t bytes = gf_ring_footprint(cap);
    unsigned char *mem = aligned_alloc(GF__CACHE_LINE, bytes);
    GFZ_CHECK(mem != NULL);
    memset(mem, 0, bytes);
    GFZ_CHECK(gf_ring_init(mem, bytes, cap) == 0);
    switch (flags & 3) {
    case 1:
        gfz_script(&rd, mem, bytes, cap, flags, 1);
        break;
    case 2:
        gfz_script(&rd, mem, bytes, cap, flags, 0);
        break;
    default:
        gfz_raw(&rd, mem, bytes, cap, flags);
        break;
    }
    free(mem);
    return 0;
}
