/* Tests: the SPSC frame ring, in one thread, between threads, between
 * processes, against corrupt frames and against a producer killed mid-stream. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/core/internal.h"
#include "runner.h"

/* --- helpers ------------------------------------------------------------------- */

static uint64_t
gft_splitmix(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* Frame content is a function of (seq, index), so a receiver can check every
 * byte without having seen the sender's buffer. */
static void
gft_fill(unsigned char *p, uint32_t len, uint64_t seq)
{
    uint64_t st = seq * 31 + 7;
    uint32_t j = 0;
    while (j < len) {
        uint64_t r = gft_splitmix(&st);
        for (int k = 0; k < 8 && j < len; k++, j++) {
            p[j] = (unsigned char)(r >> (8 * k));
        }
    }
}

static int
gft_check(const unsigned char *p, uint32_t len, uint64_t seq)
{
    uint64_t st = seq * 31 + 7;
    uint32_t j = 0;
    while (j < len) {
        uint64_t r = gft_splitmix(&st);
        for (int k = 0; k < 8 && j < len; k++, j++) {
            if (p[j] != (unsigned char)(r >> (8 * k))) {
                return 0;
            }
        }
    }
    return 1;
}

static uint32_t
gft_frame_bytes(uint32_t len)
{
    return GF_RING_FRAME_HEADER + ((len + GF_RING_ALIGN - 1) & ~(GF_RING_ALIGN - 1));
}

/* A ring in heap memory of exactly its footprint, so that ASan flags any
 * access outside it. */
static void *
gft_ring_mem(uint32_t capacity, size_t *size)
{
    *size = gf_ring_footprint(capacity);
    ASSERT_GT(*size, 0);
    void *mem = aligned_alloc(GF__CACHE_LINE, *size);
    ASSERT_NOT_NULL(mem);
    ASSERT_OK(gf_ring_init(mem, *size, capacity));
    return mem;
}

static gf_ring_t *
gft_attach(void *mem, size_t size)
{
    gf_ring_t *r = NULL;
    ASSERT_OK(gf_ring_attach(mem, size, &r));
    ASSERT_NOT_NULL(r);
    return r;
}

static void
gft_send_pattern(gf_ring_t *r, uint32_t kind, uint32_t len, uint64_t seq)
{
    void *dst;
    ASSERT_OK(gf_ring_try_reserve(r, len, &dst));
    gft_fill(dst, len, seq);
    ASSERT_OK(gf_ring_commit(r, kind, len));
}

static void
gft_recv_pattern(gf_ring_t *r, uint32_t kind, uint32_t len, uint64_t seq)
{
    gf_ring_frame_t f;
    ASSERT_OK(gf_ring_try_peek(r, &f));
    ASSERT_EQ(f.kind, kind);
    ASSERT_EQ(f.len, len);
    ASSERT(gft_check(f.data, f.len, seq));
    ASSERT_OK(gf_ring_release(r));
}

static pid_t
gft_waitpid(pid_t pid, int *status)
{
    pid_t r;
    while ((r = waitpid(pid, status, 0)) < 0 && errno == EINTR) {
    }
    return r;
}

static void
gft_expect_exit0(pid_t pid, const char *who)
{
    int status = 0;
    ASSERT_EQ(gft_waitpid(pid, &status), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        gft_fail(__FILE__, __LINE__, "%s (pid %d) failed: status 0x%x", who, (int)pid,
                 (unsigned)status);
    }
}

/* --- layout -------------------------------------------------------------------- */

TEST_IMPL(ring_layout_validation)
{
    ASSERT_EQ(gf_ring_footprint(0), 0);
    ASSERT_EQ(gf_ring_footprint(64), 0); /* below the minimum */
    ASSERT_EQ(gf_ring_footprint(1000), 0);
    ASSERT_EQ(gf_ring_footprint(GF_RING_MAX_CAPACITY * 2u), 0);
    ASSERT_EQ(gf_ring_footprint(UINT32_MAX), 0);
    size_t hdr = sizeof(gf__ring_shared_t);
    ASSERT_EQ(hdr % GF__CACHE_LINE, 0);
    ASSERT_EQ(gf_ring_footprint(GF_RING_MIN_CAPACITY), hdr + GF_RING_MIN_CAPACITY);
    ASSERT_EQ(gf_ring_footprint(1u << 20), hdr + (1u << 20));
    ASSERT_EQ(GF_RING_MAX_PAYLOAD(256), 112);

    size_t size;
    unsigned char *mem = gft_ring_mem(256, &size);
    gf_ring_t *r = NULL;
    ASSERT_ERR(gf_ring_init(NULL, size, 256), GF_EINVAL);
    ASSERT_ERR(gf_ring_init(mem, size - 1, 256), GF_EINVAL);
    ASSERT_ERR(gf_ring_init(mem, size, 300), GF_EINVAL);
    unsigned char *odd = aligned_alloc(GF__CACHE_LINE, size + GF__CACHE_LINE);
    ASSERT_NOT_NULL(odd);
    ASSERT_ERR(gf_ring_init(odd + 8, size, 256), GF_EINVAL); /* misaligned */
    ASSERT_ERR(gf_ring_attach(odd + 8, size, &r), GF_EINVAL);
    free(odd);

    ASSERT_OK(gf_ring_init(mem, size, 256));
    r = gft_attach(mem, size);
    ASSERT_EQ(gf_ring_capacity(r), 256);
    ASSERT_EQ(gf_ring_max_payload(r), 112);
    ASSERT_PTR_EQ(gf__ring_data(r), mem + hdr);
    gf_ring_detach(r);
    r = NULL;

    ASSERT_ERR(gf_ring_attach(NULL, size, &r), GF_EINVAL);
    ASSERT_ERR(gf_ring_attach(mem, size, NULL), GF_EINVAL);
    /* The mapping must hold the whole ring the header claims: a corrupt or
     * mismatched capacity cannot send us past its end. */
    ASSERT_ERR(gf_ring_attach(mem, size - 16, &r), GF_EINVAL);
    ASSERT_ERR(gf_ring_attach(mem, 64, &r), GF_EINVAL);

    gf__ring_shared_t *s = (gf__ring_shared_t *)(void *)mem;
    uint32_t saved;
#define GFT_BREAK_FIELD(field, value)                        \
    do {                                                     \
        saved = s->field;                                    \
        s->field = (value);                                  \
        ASSERT_ERR(gf_ring_attach(mem, size, &r), GF_EINVAL); \
        s->field = saved;                                    \
    } while (0)
    GFT_BREAK_FIELD(magic, saved ^ 1);
    GFT_BREAK_FIELD(version, 99);
    GFT_BREAK_FIELD(capacity, 512); /* valid, but larger than the memory */
    GFT_BREAK_FIELD(capacity, 200);
    GFT_BREAK_FIELD(capacity, 0);
    GFT_BREAK_FIELD(frame_align, 8);
    GFT_BREAK_FIELD(frame_header, 8);
    GFT_BREAK_FIELD(max_payload, 113);
    GFT_BREAK_FIELD(header_bytes, 128);
#undef GFT_BREAK_FIELD
    ASSERT_NULL(r);

    /* Positions that cannot come from a working peer. */
    atomic_store(&s->tail, 16 + 256 + 16);
    atomic_store(&s->head, 16);
    ASSERT_ERR(gf_ring_attach(mem, size, &r), GF_EPROTO); /* more than full */
    atomic_store(&s->tail, 8);
    atomic_store(&s->head, 8);
    ASSERT_ERR(gf_ring_attach(mem, size, &r), GF_EPROTO); /* misaligned */
    atomic_store(&s->tail, 0);
    atomic_store(&s->head, 32);
    ASSERT_ERR(gf_ring_attach(mem, size, &r), GF_EPROTO); /* head past tail */
    ASSERT_NULL(r);
    atomic_store(&s->tail, 1024 + 48);
    atomic_store(&s->head, 1024);
    r = gft_attach(mem, size); /* a ring that has run for a while */
    gf_ring_detach(r);
    free(mem);
}

/* --- one thread ------------------------------------------------------------------ */

TEST_IMPL(ring_single_thread)
{
    size_t size;
    void *mem = gft_ring_mem(256, &size);
    gf_ring_t *r = gft_attach(mem, size);
    unsigned char *data = gf__ring_data(r);
    gf_ring_frame_t f = {NULL, 99, 99};
    unsigned char buf[256];
    uint32_t kind, len;
    void *dst;

    /* Empty. */
    ASSERT_ERR(gf_ring_try_peek(r, &f), GF_EAGAIN);
    ASSERT_NULL(f.data); /* untouched on failure */
    ASSERT_ERR(gf_ring_release(r), GF_EINVAL);
    ASSERT_ERR(gf_ring_commit(r, 0, 0), GF_EINVAL);
    ASSERT_ERR(gf_ring_try_recv(r, &kind, buf, sizeof(buf), &len), GF_EAGAIN);
    ASSERT_ERR(gf_ring_peek(r, &f, 0), GF_ETIMEDOUT);

    /* A frame by copy, peeked twice, released once. */
    ASSERT_OK(gf_ring_try_send(r, 7, "hello", 5));
    ASSERT_OK(gf_ring_try_peek(r, &f));
    ASSERT_EQ(f.kind, 7);
    ASSERT_EQ(f.len, 5);
    ASSERT_EQ(memcmp(f.data, "hello", 5), 0);
    ASSERT_PTR_EQ(f.data, data + GF_RING_FRAME_HEADER);
    ASSERT_EQ((uintptr_t)f.data % GF_RING_ALIGN, 0);
    gf_ring_frame_t again;
    ASSERT_OK(gf_ring_peek(r, &again, -1));
    ASSERT_PTR_EQ(again.data, f.data);
    ASSERT_OK(gf_ring_release(r));
    ASSERT_ERR(gf_ring_release(r), GF_EINVAL);
    ASSERT_ERR(gf_ring_try_peek(r, &f), GF_EAGAIN);

    /* Zero-length frames, NULL buffer allowed. */
    ASSERT_OK(gf_ring_try_send(r, GF_RING_KIND_MAX, NULL, 0));
    ASSERT_OK(gf_ring_try_recv(r, &kind, NULL, 0, &len));
    ASSERT_EQ(kind, GF_RING_KIND_MAX);
    ASSERT_EQ(len, 0);

    /* Largest frame; one more byte never fits (even blocking: no hang). */
    gft_send_pattern(r, 1, 112, 1);
    gft_recv_pattern(r, 1, 112, 1);
    ASSERT_ERR(gf_ring_try_send(r, 1, buf, 113), GF_EMSGSIZE);
    ASSERT_ERR(gf_ring_send(r, 1, buf, 113, -1), GF_EMSGSIZE);
    ASSERT_ERR(gf_ring_try_reserve(r, UINT32_MAX, &dst), GF_EMSGSIZE);
    ASSERT_ERR(gf_ring_reserve(r, 113, &dst, -1), GF_EMSGSIZE);

    /* Bad arguments. */
    ASSERT_ERR(gf_ring_try_send(r, GF_RING_KIND_MAX + 1, buf, 1), GF_EINVAL);
    ASSERT_ERR(gf_ring_send(r, 0, NULL, 1, 0), GF_EINVAL);
    ASSERT_ERR(gf_ring_try_reserve(r, 1, NULL), GF_EINVAL);
    ASSERT_ERR(gf_ring_try_peek(r, NULL), GF_EINVAL);
    ASSERT_ERR(gf_ring_peek(r, NULL, 0), GF_EINVAL);
    ASSERT_ERR(gf_ring_try_recv(r, NULL, NULL, 1, NULL), GF_EINVAL);

    /* Copy-out into a short buffer: GF_EMSGSIZE, the frame stays. */
    gft_send_pattern(r, 3, 50, 2);
    ASSERT_ERR(gf_ring_try_recv(r, &kind, buf, 10, &len), GF_EMSGSIZE);
    ASSERT_EQ(kind, 3);
    ASSERT_EQ(len, 50);
    ASSERT_OK(gf_ring_recv(r, &kind, buf, 50, &len, -1));
    ASSERT_EQ(len, 50);
    ASSERT(gft_check(buf, 50, 2));

    /* Zero-copy: reserve more than needed, commit less; a second reserve
     * abandons the first; commit checks its arguments and keeps the
     * reservation on a bad one. */
    ASSERT_OK(gf_ring_try_reserve(r, 100, &dst));
    ASSERT_EQ((uintptr_t)dst % GF_RING_ALIGN, 0);
    ASSERT_OK(gf_ring_reserve(r, 90, &dst, 0));
    gft_fill(dst, 40, 3);
    ASSERT_ERR(gf_ring_commit(r, 4, 91), GF_EINVAL);
    ASSERT_ERR(gf_ring_commit(r, GF_RING_KIND_MAX + 1, 40), GF_EINVAL);
    ASSERT_OK(gf_ring_commit(r, 4, 40));
    ASSERT_ERR(gf_ring_commit(r, 4, 40), GF_EINVAL); /* nothing reserved now */
    gft_recv_pattern(r, 4, 40, 3);
    ASSERT_ERR(gf_ring_try_peek(r, &f), GF_EAGAIN);
    gf_ring_detach(r);

    /* Exact fit, full, and wrap with padding, position by position
     * (capacity 256, largest frame 112 bytes + 16 of header = 128). */
    ASSERT_OK(gf_ring_init(mem, size, 256));
    r = gft_attach(mem, size);
    gf__ring_shared_t *s = gf__ring_shared(r);
    gft_send_pattern(r, 0, 100, 10); /* [0, 128) */
    gft_recv_pattern(r, 0, 100, 10);
    gft_send_pattern(r, 0, 112, 11); /* [128, 256): exactly to the end, no padding */
    ASSERT_U64_EQ(atomic_load(&s->tail), 256);
    ASSERT_OK(gf_ring_try_peek(r, &f));
    ASSERT_PTR_EQ(f.data, data + 128 + GF_RING_FRAME_HEADER);
    gft_recv_pattern(r, 0, 112, 11);
    gft_send_pattern(r, 5, 0, 12);   /* [256, 272) at offset 0 */
    gft_send_pattern(r, 6, 112, 13); /* [272, 400) */
    /* Next: 128 bytes do not fit in the 112 left before the end; padding +
     * frame need 240 and only 112 are free. */
    ASSERT_ERR(gf_ring_try_send(r, 7, buf, 112), GF_EAGAIN);
    ASSERT_ERR(gf_ring_send(r, 7, buf, 112, 1000000), GF_ETIMEDOUT);
    gft_recv_pattern(r, 5, 0, 12);
    ASSERT_ERR(gf_ring_try_send(r, 7, buf, 112), GF_EAGAIN); /* 128 free */
    gft_recv_pattern(r, 6, 112, 13);
    gft_send_pattern(r, 7, 112, 14); /* padding [400, 512), frame [512, 640) */
    ASSERT_U64_EQ(atomic_load(&s->tail), 640);
    gf__ring_frame_hdr_t *pad = (gf__ring_frame_hdr_t *)(void *)(data + 144);
    ASSERT_U64_EQ(atomic_load(&pad->kind), GF__RING_PAD_KIND);
    ASSERT_U64_EQ(atomic_load(&pad->len), 112 - GF_RING_FRAME_HEADER);
    ASSERT_U64_EQ(atomic_load(&pad->pos), 400);
    ASSERT_OK(gf_ring_try_peek(r, &f));
    ASSERT_PTR_EQ(f.data, data + GF_RING_FRAME_HEADER);
    gft_recv_pattern(r, 7, 112, 14);
    ASSERT_U64_EQ(atomic_load(&s->head), 640); /* padding released with it */

    /* Full: sixteen 16-byte frames fill 256 bytes exactly. */
    for (uint64_t i = 0; i < 16; i++) {
        ASSERT_OK(gf_ring_try_send(r, (uint32_t)i, NULL, 0));
    }
    ASSERT_ERR(gf_ring_try_send(r, 0, NULL, 0), GF_EAGAIN);
    ASSERT_ERR(gf_ring_try_reserve(r, 0, &dst), GF_EAGAIN);
    ASSERT_OK(gf_ring_try_recv(r, &kind, NULL, 0, &len));
    ASSERT_EQ(kind, 0);
    ASSERT_OK(gf_ring_try_send(r, 16, NULL, 0));
    ASSERT_ERR(gf_ring_try_send(r, 0, NULL, 0), GF_EAGAIN);
    for (uint32_t i = 1; i <= 16; i++) {
        ASSERT_OK(gf_ring_try_recv(r, &kind, NULL, 0, &len));
        ASSERT_EQ(kind, i);
    }
    ASSERT_ERR(gf_ring_try_peek(r, &f), GF_EAGAIN);

    /* An uncontended hand-off makes no system call. */
    uint64_t waits = atomic_load(&gf__futex_wait_calls);
    uint64_t wakes = atomic_load(&gf__futex_wake_calls);
    for (uint64_t i = 0; i < 1000; i++) {
        ASSERT_OK(gf_ring_send(r, 1, buf, (uint32_t)(i % 100), -1));
        ASSERT_OK(gf_ring_recv(r, &kind, buf, sizeof(buf), &len, -1));
        ASSERT_EQ(len, i % 100);
    }
    ASSERT_U64_EQ(atomic_load(&gf__futex_wait_calls), waits);
    ASSERT_U64_EQ(atomic_load(&gf__futex_wake_calls), wakes);
    gf_ring_detach(r);
    free(mem);
}

/* Random sends and receives against an exact model of the positions: every
 * offset wraps, EAGAIN comes exactly when the model says the frame (with
 * its padding) does not fit, and every frame arrives intact and in order. */
TEST_IMPL(ring_model)
{
    enum { CAP = 1024, QMAX = CAP / 16 };
    size_t size;
    void *mem = gft_ring_mem(CAP, &size);
    gf_ring_t *r = gft_attach(mem, size);
    unsigned char *data = gf__ring_data(r);
    uint32_t maxp = gf_ring_max_payload(r);
    struct {
        uint64_t pos, seq;
        uint32_t len, kind;
    } q[QMAX];
    uint32_t qhead = 0, qlen = 0;
    uint64_t mt = 0, mh = 0, seq = 0, rng = 42, wraps = 0, fulls = 0;
    uint64_t ops = (uint64_t)gft_env_int("GF_STRESS_ITEMS", 100000) * 2;
    unsigned char buf[CAP];

    for (uint64_t op = 0; op < ops; op++) {
        uint64_t x = gft_splitmix(&rng);
        if (x % 100 < 55) {
            uint32_t len;
            switch ((x >> 8) % 4) {
            case 0:
                len = 0;
                break;
            case 1:
                len = (uint32_t)((x >> 16) % 32);
                break;
            case 2:
                len = (uint32_t)((x >> 16) % (maxp + 1));
                break;
            default:
                len = maxp - (uint32_t)((x >> 16) % 4);
                break;
            }
            uint64_t total = gft_frame_bytes(len);
            uint64_t room = CAP - (mt % CAP);
            uint64_t frame = mt, need = total;
            if (total > room) {
                frame = mt + room;
                need = room + total;
            }
            int fits = need <= CAP - (mt - mh);
            void *dst = NULL;
            int rc;
            if ((x >> 40) % 2 == 0) {
                rc = gf_ring_try_reserve(r, len, &dst);
                if (rc == 0) {
                    gft_fill(dst, len, seq);
                    rc = gf_ring_commit(r, (uint32_t)(seq & 0xffff), len);
                }
            }
            else {
                gft_fill(buf, len, seq);
                rc = gf_ring_try_send(r, (uint32_t)(seq & 0xffff), buf, len);
            }
            if (!fits) {
                ASSERT_ERR(rc, GF_EAGAIN);
                ASSERT_GT(qlen, 0); /* an empty ring takes any legal frame */
                fulls++;
                continue;
            }
            ASSERT_OK(rc);
            if (dst != NULL) {
                ASSERT_PTR_EQ(dst, data + (frame % CAP) + GF_RING_FRAME_HEADER);
            }
            wraps += frame != mt;
            ASSERT_LT(qlen, QMAX);
            uint32_t at = (qhead + qlen) % QMAX;
            q[at].pos = frame;
            q[at].seq = seq;
            q[at].len = len;
            q[at].kind = (uint32_t)(seq & 0xffff);
            qlen++;
            seq++;
            mt = frame + total;
        }
        else {
            gf_ring_frame_t f;
            int rc = gf_ring_try_peek(r, &f);
            if (qlen == 0) {
                ASSERT_ERR(rc, GF_EAGAIN);
                continue;
            }
            ASSERT_OK(rc);
            ASSERT_PTR_EQ(f.data, data + (q[qhead].pos % CAP) + GF_RING_FRAME_HEADER);
            ASSERT_EQ(f.len, q[qhead].len);
            ASSERT_EQ(f.kind, q[qhead].kind);
            ASSERT(gft_check(f.data, f.len, q[qhead].seq));
            ASSERT_OK(gf_ring_release(r));
            mh = q[qhead].pos + gft_frame_bytes(q[qhead].len);
            ASSERT_U64_EQ(atomic_load(&gf__ring_shared(r)->head), mh);
            qhead = (qhead + 1) % QMAX;
            qlen--;
        }
    }
    ASSERT_GT(wraps, 100);
    ASSERT_GT(fulls, 100);
    printf("%" PRIu64 " ops: %" PRIu64 " frames, %" PRIu64 " wraps with padding, %" PRIu64
           " full\n",
           ops, seq, wraps, fulls);
    gf_ring_detach(r);
    free(mem);
}

TEST_IMPL(ring_close_semantics)
{
    size_t size;
    void *mem = gft_ring_mem(512, &size);
    gf_ring_t *p = gft_attach(mem, size);
    gf_ring_t *c = gft_attach(mem, size);
    void *dst;
    gf_ring_frame_t f;
    uint32_t kind, len;
    unsigned char buf[64];

    for (uint64_t i = 0; i < 3; i++) {
        gft_send_pattern(p, (uint32_t)i, 20, i);
    }
    ASSERT_OK(gf_ring_try_peek(c, &f)); /* peeked before the close */
    ASSERT_OK(gf_ring_try_reserve(p, 10, &dst)); /* reserved before the close */
    ASSERT_EQ(gf_ring_is_closed(p), 0);
    gf_ring_close(p);
    ASSERT_EQ(gf_ring_is_closed(p), 1);
    ASSERT_EQ(gf_ring_is_closed(c), 1);
    gf_ring_close(c); /* idempotent, from either side */
    ASSERT_EQ(gf_ring_is_closed(c), 1);

    /* Producer: everything says EPIPE, including the pending commit. */
    ASSERT_ERR(gf_ring_commit(p, 9, 10), GF_EPIPE);
    ASSERT_ERR(gf_ring_commit(p, 9, 10), GF_EINVAL); /* the reservation is gone */
    ASSERT_ERR(gf_ring_try_send(p, 0, buf, 1), GF_EPIPE);
    ASSERT_ERR(gf_ring_send(p, 0, buf, 1, -1), GF_EPIPE);
    ASSERT_ERR(gf_ring_send(p, 0, buf, 1, 0), GF_EPIPE);
    ASSERT_ERR(gf_ring_try_reserve(p, 1, &dst), GF_EPIPE);
    ASSERT_ERR(gf_ring_reserve(p, 1, &dst, -1), GF_EPIPE);
    ASSERT_ERR(gf_ring_try_send(p, 0, buf, 4000), GF_EMSGSIZE); /* argument first */

    /* Consumer: the peeked frame, then the rest, then EPIPE for good. */
    ASSERT_EQ(f.kind, 0);
    ASSERT_OK(gf_ring_peek(c, &f, -1));
    ASSERT_EQ(f.kind, 0);
    ASSERT(gft_check(f.data, 20, 0));
    ASSERT_OK(gf_ring_release(c));
    gft_recv_pattern(c, 1, 20, 1);
    ASSERT_OK(gf_ring_recv(c, &kind, buf, sizeof(buf), &len, -1));
    ASSERT_EQ(kind, 2);
    ASSERT(gft_check(buf, 20, 2));
    ASSERT_ERR(gf_ring_try_peek(c, &f), GF_EPIPE);
    ASSERT_ERR(gf_ring_peek(c, &f, -1), GF_EPIPE);
    ASSERT_ERR(gf_ring_peek(c, &f, 0), GF_EPIPE);
    ASSERT_ERR(gf_ring_try_recv(c, &kind, buf, sizeof(buf), &len), GF_EPIPE);
    ASSERT_ERR(gf_ring_recv(c, &kind, buf, sizeof(buf), &len, 1000000), GF_EPIPE);
    gf_ring_detach(p);
    gf_ring_detach(c);

    /* The consumer closes (stops listening): the producer learns of it. */
    ASSERT_OK(gf_ring_init(mem, size, 512));
    p = gft_attach(mem, size);
    c = gft_attach(mem, size);
    ASSERT_OK(gf_ring_try_send(p, 1, buf, 8));
    gf_ring_close(c);
    ASSERT_ERR(gf_ring_try_send(p, 1, buf, 8), GF_EPIPE);
    ASSERT_OK(gf_ring_try_recv(c, &kind, buf, sizeof(buf), &len));
    ASSERT_ERR(gf_ring_try_recv(c, &kind, buf, sizeof(buf), &len), GF_EPIPE);

    /* A handle attached after the close sees it too. */
    gf_ring_t *late = gft_attach(mem, size);
    ASSERT_EQ(gf_ring_is_closed(late), 1);
    ASSERT_ERR(gf_ring_try_peek(late, &f), GF_EPIPE);
    gf_ring_detach(late);
    gf_ring_detach(p);
    gf_ring_detach(c);
    free(mem);
}

/* --- blocking -------------------------------------------------------------------- */

enum { GFT_OP_PEEK, GFT_OP_SEND, GFT_OP_RESERVE };

typedef struct gft_rop {
    gf_ring_t *r;
    int op;
    uint32_t len;
    int64_t timeout_ns;
    int result;
    gf_ring_frame_t frame;
    _Atomic int done; /* set after result is written */
} gft_rop_t;

static void *
gft_rop_run(void *arg)
{
    gft_rop_t *o = arg;
    unsigned char buf[512];
    void *dst;
    switch (o->op) {
    case GFT_OP_PEEK:
        o->result = gf_ring_peek(o->r, &o->frame, o->timeout_ns);
        break;
    case GFT_OP_SEND:
        gft_fill(buf, o->len, 77);
        o->result = gf_ring_send(o->r, 77, buf, o->len, o->timeout_ns);
        break;
    default:
        o->result = gf_ring_reserve(o->r, o->len, &dst, o->timeout_ns);
        break;
    }
    atomic_store(&o->done, 1);
    return NULL;
}

static gft_rop_t
gft_rop(gf_ring_t *r, int op, uint32_t len, int64_t timeout_ns)
{
    gft_rop_t o;
    memset(&o, 0, sizeof(o));
    o.r = r;
    o.op = op;
    o.len = len;
    o.timeout_ns = timeout_ns;
    o.result = 99;
    return o;
}

/* Fill the ring with frames of len bytes until it refuses one. */
static int
gft_fill_ring(gf_ring_t *p, uint32_t len)
{
    unsigned char buf[512] = {0};
    int n = 0;
    while (gf_ring_try_send(p, 1, buf, len) == 0) {
        n++;
    }
    return n;
}

TEST_IMPL(ring_blocking)
{
    size_t size;
    void *mem = gft_ring_mem(512, &size);
    gf_ring_t *p = gft_attach(mem, size);
    gf_ring_t *c = gft_attach(mem, size);
    gf__ring_shared_t *s = gf__ring_shared(p);
    pthread_t t;

    /* A consumer parked on an empty ring is woken by a commit. */
    gft_rop_t o = gft_rop(c, GFT_OP_PEEK, 0, -1);
    gft_thread_start(&t, gft_rop_run, &o);
    gft_wait_for_waiters(&s->not_empty, 1);
    gft_send_pattern(p, 5, 33, 5);
    gft_thread_join(t);
    ASSERT_OK(o.result);
    ASSERT_EQ(o.frame.len, 33);
    ASSERT(gft_check(o.frame.data, 33, 5));
    ASSERT_OK(gf_ring_release(c));

    /* A producer parked on a full ring is woken by a release; a finite
     * timeout that is not reached. */
    int n = gft_fill_ring(p, 100);
    ASSERT_GT(n, 0);
    o = gft_rop(p, GFT_OP_SEND, 100, 30 * GF__NS_PER_SEC);
    gft_thread_start(&t, gft_rop_run, &o);
    gft_wait_for_waiters(&s->not_full, 1);
    ASSERT_EQ(atomic_load(&o.done), 0);
    gf_ring_frame_t f;
    ASSERT_OK(gf_ring_try_peek(c, &f));
    ASSERT_OK(gf_ring_release(c));
    gft_thread_join(t);
    ASSERT_OK(o.result);
    for (int i = 0; i < n; i++) { /* n - 1 old frames and the new one */
        ASSERT_OK(gf_ring_try_peek(c, &f));
        ASSERT_EQ(f.len, 100);
        if (i == n - 1) {
            ASSERT_EQ(f.kind, 77);
            ASSERT(gft_check(f.data, 100, 77));
        }
        ASSERT_OK(gf_ring_release(c));
    }
    ASSERT_ERR(gf_ring_try_peek(c, &f), GF_EAGAIN);

    /* Timeouts: at least as long as asked, on both sides. */
    int64_t t0 = gf_now_ns();
    ASSERT_ERR(gf_ring_peek(c, &f, 30000000), GF_ETIMEDOUT);
    int64_t elapsed = gf_now_ns() - t0;
    ASSERT_GE(elapsed, 30000000);
    ASSERT_LT(elapsed, 2 * GF__NS_PER_SEC);
    gft_fill_ring(p, 100);
    void *dst;
    t0 = gf_now_ns();
    ASSERT_ERR(gf_ring_reserve(p, 100, &dst, 30000000), GF_ETIMEDOUT);
    elapsed = gf_now_ns() - t0;
    ASSERT_GE(elapsed, 30000000);
    ASSERT_LT(elapsed, 2 * GF__NS_PER_SEC);
    gf_ring_set_spin_ns(p, 0); /* park at once */
    ASSERT_ERR(gf_ring_reserve(p, 100, &dst, 1000000), GF_ETIMEDOUT);

    /* close() wakes a producer parked on this full ring, and a consumer
     * parked on another, empty one. */
    size_t size2;
    void *mem2 = gft_ring_mem(512, &size2);
    gf_ring_t *c2 = gft_attach(mem2, size2);
    gft_rop_t op_send = gft_rop(p, GFT_OP_RESERVE, 100, -1);
    gft_rop_t op_peek = gft_rop(c2, GFT_OP_PEEK, 0, -1);
    pthread_t t1, t2;
    gft_thread_start(&t1, gft_rop_run, &op_send);
    gft_thread_start(&t2, gft_rop_run, &op_peek);
    gft_wait_for_waiters(&s->not_full, 1);
    gft_wait_for_waiters(&gf__ring_shared(c2)->not_empty, 1);
    gf_ring_close(c);
    gf_ring_close(c2);
    gft_thread_join(t1);
    gft_thread_join(t2);
    ASSERT_ERR(op_send.result, GF_EPIPE);
    ASSERT_ERR(op_peek.result, GF_EPIPE);
    gf_ring_detach(c2);
    free(mem2);
    gf_ring_detach(p);
    gf_ring_detach(c);
    free(mem);
}

TEST_IMPL(ring_eintr)
{
    gft_install_interrupting_handler(SIGUSR1);
    size_t size;
    void *mem = gft_ring_mem(256, &size);
    gf_ring_t *p = gft_attach(mem, size);
    gf_ring_t *c = gft_attach(mem, size);

    /* Consumer side. */
    gft_rop_t o = gft_rop(c, GFT_OP_PEEK, 0, -1);
    pthread_t t;
    gft_thread_start(&t, gft_rop_run, &o);
    gft_wait_for_waiters(&gf__ring_shared(c)->not_empty, 1);
    while (!atomic_load(&o.done)) { /* until one lands during the sleep */
        pthread_kill(t, SIGUSR1);
        gft_sleep_ms(20);
    }
    gft_thread_join(t);
    ASSERT_ERR(o.result, GF_EINTR);

    /* Producer side, with a timeout. */
    gft_fill_ring(p, 100);
    o = gft_rop(p, GFT_OP_SEND, 100, 60 * GF__NS_PER_SEC);
    gft_thread_start(&t, gft_rop_run, &o);
    gft_wait_for_waiters(&gf__ring_shared(p)->not_full, 1);
    while (!atomic_load(&o.done)) {
        pthread_kill(t, SIGUSR1);
        gft_sleep_ms(20);
    }
    gft_thread_join(t);
    ASSERT_ERR(o.result, GF_EINTR);

    /* Still usable. */
    gf_ring_frame_t f;
    ASSERT_OK(gf_ring_peek(c, &f, -1));
    ASSERT_OK(gf_ring_release(c));
    ASSERT_OK(gf_ring_send(p, 1, NULL, 0, -1));
    gf_ring_detach(p);
    gf_ring_detach(c);
    free(mem);
}

/* --- two threads ------------------------------------------------------------------- */

/* Payload of frame seq: [seq u64][checksum u32][bytes from gft_fill], or
 * just bytes when shorter than 12.  Lengths follow from seq, so the consumer
 * knows what to expect. */
static uint32_t
gft_stress_len(uint64_t seq, uint32_t maxp)
{
    uint64_t st = seq ^ UINT64_C(0x5eed);
    uint64_t x = gft_splitmix(&st);
    if (x % 256 == 0) {
        return maxp; /* the largest */
    }
    switch ((x >> 8) % 20) {
    case 0:
        return (uint32_t)((x >> 16) % (GF__MIN(maxp, 2048u) + 1));
    case 1:
    case 2:
    case 3:
    case 4:
        return GF__MIN(64 + (uint32_t)((x >> 16) % 448), maxp);
    default:
        return (uint32_t)((x >> 16) % 64);
    }
}

static uint32_t
gft_fnv(const unsigned char *p, uint32_t len)
{
    uint32_t h = 2166136261u;
    for (uint32_t i = 0; i < len; i++) {
        h = (h ^ p[i]) * 16777619u;
    }
    return h;
}

static void
gft_stress_fill(unsigned char *p, uint32_t len, uint64_t seq)
{
    if (len < 12) {
        gft_fill(p, len, seq);
        return;
    }
    gft_fill(p + 12, len - 12, seq);
    uint32_t sum = gft_fnv(p + 12, len - 12);
    memcpy(p, &seq, 8);
    memcpy(p + 8, &sum, 4);
}

/* 0 if the frame is seq's, else a nonzero reason. */
static int
gft_stress_verify(const unsigned char *p, uint32_t len, uint32_t kind, uint64_t seq,
                  uint32_t maxp)
{
    if (len != gft_stress_len(seq, maxp)) {
        return 1;
    }
    if (kind != (uint32_t)(seq & GF_RING_KIND_MAX)) {
        return 2;
    }
    if (len < 12) {
        return gft_check(p, len, seq) ? 0 : 3;
    }
    uint64_t got_seq;
    uint32_t sum;
    memcpy(&got_seq, p, 8);
    memcpy(&sum, p + 8, 4);
    if (got_seq != seq) {
        return 4;
    }
    if (sum != gft_fnv(p + 12, len - 12)) {
        return 5;
    }
    return gft_check(p + 12, len - 12, seq) ? 0 : 6;
}

static void
gft_backoff(uint32_t *spins)
{
    if (++*spins % 64 == 0) {
        sched_yield();
    }
    else {
        gf_cpu_relax();
    }
}

/* Producer loop, shared by the thread and the process tests: frames 0 ..
 * n-1 by four different paths, then close.  Returns 0 or the failing code. */
static int
gft_stress_produce(gf_ring_t *p, uint64_t n)
{
    uint32_t maxp = gf_ring_max_payload(p);
    unsigned char *buf = malloc(maxp);
    if (buf == NULL) {
        return GF_ENOMEM;
    }
    int rc = 0;
    for (uint64_t seq = 0; seq < n && rc == 0; seq++) {
        uint32_t len = gft_stress_len(seq, maxp);
        uint32_t kind = (uint32_t)(seq & GF_RING_KIND_MAX);
        uint32_t spins = 0;
        void *dst;
        switch (seq % 4) {
        case 0: /* zero-copy, reserving more than it will use */
            rc = gf_ring_reserve(p, GF__MIN(len + 16, maxp), &dst, -1);
            if (rc == 0) {
                gft_stress_fill(dst, len, seq);
                rc = gf_ring_commit(p, kind, len);
            }
            break;
        case 1:
            gft_stress_fill(buf, len, seq);
            rc = gf_ring_send(p, kind, buf, len, -1);
            break;
        case 2:
            gft_stress_fill(buf, len, seq);
            while ((rc = gf_ring_try_send(p, kind, buf, len)) == GF_EAGAIN) {
                gft_backoff(&spins);
            }
            break;
        default:
            gft_stress_fill(buf, len, seq);
            while ((rc = gf_ring_send(p, kind, buf, len, 100000)) == GF_ETIMEDOUT) {
            }
            break;
        }
    }
    free(buf);
    gf_ring_close(p);
    return rc;
}

/* Consumer loop: expects frames 0 .. n-1 in order, then GF_EPIPE.  Returns
 * 0, a GF_E* code, or 1000 + frame verification failure reason. */
static int
gft_stress_consume(gf_ring_t *c, uint64_t n)
{
    uint32_t maxp = gf_ring_max_payload(c);
    unsigned char *buf = malloc(maxp);
    if (buf == NULL) {
        return GF_ENOMEM;
    }
    int rc = 0;
    for (uint64_t seq = 0; seq < n && rc == 0; seq++) {
        gf_ring_frame_t f;
        uint32_t kind, len;
        uint32_t spins = 0;
        switch (seq % 3) {
        case 0:
            rc = gf_ring_peek(c, &f, -1);
            if (rc == 0) {
                int why = gft_stress_verify(f.data, f.len, f.kind, seq, maxp);
                rc = why ? 1000 + why : gf_ring_release(c);
            }
            break;
        case 1:
            rc = gf_ring_recv(c, &kind, buf, maxp, &len, -1);
            if (rc == 0) {
                int why = gft_stress_verify(buf, len, kind, seq, maxp);
                rc = why ? 1000 + why : 0;
            }
            break;
        default:
            while ((rc = gf_ring_try_peek(c, &f)) == GF_EAGAIN) {
                gft_backoff(&spins);
            }
            if (rc == 0) {
                int why = gft_stress_verify(f.data, f.len, f.kind, seq, maxp);
                rc = why ? 1000 + why : gf_ring_release(c);
            }
            break;
        }
    }
    if (rc == 0) {
        gf_ring_frame_t f;
        int end = gf_ring_peek(c, &f, -1);
        rc = end == GF_EPIPE ? 0 : (end == 0 ? 2000 : end);
    }
    free(buf);
    return rc;
}

typedef struct gft_stress_arg {
    gf_ring_t *r;
    uint64_t n;
    int result;
} gft_stress_arg_t;

static void *
gft_stress_producer(void *arg)
{
    gft_stress_arg_t *a = arg;
    a->result = gft_stress_produce(a->r, a->n);
    return NULL;
}

static void *
gft_stress_consumer(void *arg)
{
    gft_stress_arg_t *a = arg;
    a->result = gft_stress_consume(a->r, a->n);
    return NULL;
}

static void
gft_stress_threads(uint32_t capacity, uint64_t n, uint32_t spin_ns)
{
    size_t size;
    void *mem = gft_ring_mem(capacity, &size);
    gft_stress_arg_t pa = {gft_attach(mem, size), n, 99};
    gft_stress_arg_t ca = {gft_attach(mem, size), n, 99};
    gf_ring_set_spin_ns(pa.r, spin_ns);
    gf_ring_set_spin_ns(ca.r, spin_ns);
    uint64_t waits = atomic_load(&gf__futex_wait_calls);
    int64_t t0 = gf_now_ns();
    pthread_t tp, tc;
    gft_thread_start(&tc, gft_stress_consumer, &ca);
    gft_thread_start(&tp, gft_stress_producer, &pa);
    gft_thread_join(tp);
    gft_thread_join(tc);
    int64_t elapsed = gf_now_ns() - t0;
    ASSERT_OK(pa.result);
    if (ca.result != 0) {
        gft_fail(__FILE__, __LINE__, "consumer failed: %d (%s)", ca.result,
                 gf_err_name(ca.result));
    }
    printf("threads, capacity %u, spin %u ns: %" PRIu64 " frames in %.1f ms "
           "(%.0f ns/frame), %" PRIu64 " futex waits\n",
           capacity, spin_ns, n, elapsed / 1e6, (double)elapsed / (double)n,
           atomic_load(&gf__futex_wait_calls) - waits);
    gf_ring_detach(pa.r);
    gf_ring_detach(ca.r);
    free(mem);
}

TEST_IMPL(ring_stress_threads)
{
    uint64_t n = (uint64_t)gft_env_int("GF_STRESS_ITEMS", 100000);
    ASSERT_GT(n, 0);
    /* small ring: constant wrapping, blocking and waking */
    gft_stress_threads(1024, n, 0);
    /* roomier, with the default spin: mostly lock-free hand-offs */
    gft_stress_threads(1u << 16, n, GF__RING_DEFAULT_SPIN_NS);
}

/* --- across processes ---------------------------------------------------------- */

/* Parent -> child on one ring, then child -> parent on another, both in one
 * memfd region that the child maps again at a different address. */
TEST_IMPL(ring_cross_process)
{
    enum { CAP = 4096 };
    uint64_t n = (uint64_t)gft_env_int("GF_STRESS_ITEMS", 100000) / 2;
    size_t ring_bytes = gf_ring_footprint(CAP);
    size_t total = 2 * ring_bytes;
    gf_shm_t shm = GF_SHM_INIT;
    ASSERT_OK(gf_shm_create(total, "gft-ring-xproc", &shm));
    unsigned char *base = shm.addr;
    ASSERT_OK(gf_ring_init(base, ring_bytes, CAP));
    ASSERT_OK(gf_ring_init(base + ring_bytes, ring_bytes, CAP));

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        /* The child: map the same descriptor anew (the inherited mapping
         * still occupies the old address, so the new one differs), drop
         * the inherited mapping, and use only the new one. */
        gf_shm_t mine = GF_SHM_INIT;
        ASSERT_OK(gf_shm_map(shm.fd, total, 0, &mine));
        ASSERT_PTR_NE(mine.addr, shm.addr);
        ASSERT_OK(gf_shm_unmap(&shm));
        unsigned char *mbase = mine.addr;
        gf_ring_t *down = gft_attach(mbase, ring_bytes);
        gf_ring_t *up = gft_attach(mbase + ring_bytes, ring_bytes);
        int rc = gft_stress_consume(down, n);
        if (rc != 0) {
            gft_fail(__FILE__, __LINE__, "child consumer: %d (%s)", rc, gf_err_name(rc));
        }
        rc = gft_stress_produce(up, n);
        if (rc != 0) {
            gft_fail(__FILE__, __LINE__, "child producer: %d (%s)", rc, gf_err_name(rc));
        }
        gf_ring_detach(down);
        gf_ring_detach(up);
        ASSERT_OK(gf_shm_close(&mine));
        _exit(0);
    }
    gf_ring_t *down = gft_attach(base, ring_bytes);
    gf_ring_t *up = gft_attach(base + ring_bytes, ring_bytes);
    int64_t t0 = gf_now_ns();
    ASSERT_OK(gft_stress_produce(down, n));
    int rc = gft_stress_consume(up, n);
    if (rc != 0) {
        gft_fail(__FILE__, __LINE__, "parent consumer: %d (%s)", rc, gf_err_name(rc));
    }
    int64_t elapsed = gf_now_ns() - t0;
    gft_expect_exit0(pid, "child");
    printf("cross-process: %" PRIu64 " frames each way in %.1f ms\n", n, elapsed / 1e6);
    gf_ring_detach(down);
    gf_ring_detach(up);
    ASSERT_OK(gf_shm_close(&shm));
}

/* --- corruption ------------------------------------------------------------------ */

/* Set up a ring (capacity 256) whose producer and consumer both stand at
 * position start (a multiple of 16), by zero-length frames. */
static void
gft_ring_at(void *mem, size_t size, uint64_t start, gf_ring_t **p, gf_ring_t **c)
{
    ASSERT_OK(gf_ring_init(mem, size, 256));
    *p = gft_attach(mem, size);
    *c = gft_attach(mem, size);
    for (uint64_t pos = 0; pos < start; pos += 16) {
        ASSERT_OK(gf_ring_try_send(*p, 0, NULL, 0));
        ASSERT_OK(gf_ring_try_recv(*c, NULL, NULL, 0, NULL));
    }
    ASSERT_U64_EQ(atomic_load(&gf__ring_shared(*p)->head), start);
}

static gf__ring_frame_hdr_t *
gft_hdr(gf_ring_t *r, uint64_t pos)
{
    return (gf__ring_frame_hdr_t *)(void *)(gf__ring_data(r) + (pos % 256));
}

/* The consumer must say GF_EPROTO, and keep saying it. */
static void
gft_expect_eproto(gf_ring_t *p, gf_ring_t *c, int line)
{
    gf_ring_frame_t f = {NULL, 0, 0};
    int rc = gf_ring_try_peek(c, &f);
    if (rc != GF_EPROTO) {
        gft_fail(__FILE__, line, "expected GF_EPROTO, got %d (%s), len %u kind %u", rc,
                 gf_err_name(rc), f.len, f.kind);
    }
    ASSERT_ERR(gf_ring_peek(c, &f, -1), GF_EPROTO); /* sticky, and no hang */
    ASSERT_ERR(gf_ring_release(c), GF_EINVAL);
    gf_ring_detach(p);
    gf_ring_detach(c);
}

TEST_IMPL(ring_corruption_cases)
{
    size_t size;
    void *mem = gft_ring_mem(256, &size);
    gf_ring_t *p, *c;
    gf__ring_shared_t *s = mem;

    /* Lengths: beyond the largest payload, huge, beyond what is committed. */
    gft_ring_at(mem, size, 0, &p, &c);
    gft_send_pattern(p, 1, 10, 0);
    atomic_store(&gft_hdr(p, 0)->len, 113);
    gft_expect_eproto(p, c, __LINE__);
    gft_ring_at(mem, size, 0, &p, &c);
    gft_send_pattern(p, 1, 10, 0);
    atomic_store(&gft_hdr(p, 0)->len, UINT32_MAX);
    gft_expect_eproto(p, c, __LINE__);
    gft_ring_at(mem, size, 0, &p, &c);
    gft_send_pattern(p, 1, 10, 0); /* 32 bytes committed */
    atomic_store(&gft_hdr(p, 0)->len, 40);
    gft_expect_eproto(p, c, __LINE__);

    /* Kinds: outside the caller's range; padding at offset 0. */
    gft_ring_at(mem, size, 0, &p, &c);
    gft_send_pattern(p, 1, 10, 0);
    atomic_store(&gft_hdr(p, 0)->kind, GF_RING_KIND_MAX + 1);
    gft_expect_eproto(p, c, __LINE__);
    gft_ring_at(mem, size, 256, &p, &c);
    gft_send_pattern(p, 1, 10, 0);
    atomic_store(&gft_hdr(p, 256)->kind, GF__RING_PAD_KIND);
    atomic_store(&gft_hdr(p, 256)->len, 256 - 16);
    gft_expect_eproto(p, c, __LINE__);

    /* A stale header: right bytes, wrong lap. */
    gft_ring_at(mem, size, 64, &p, &c);
    gft_send_pattern(p, 1, 10, 0);
    atomic_store(&gft_hdr(p, 64)->pos, 64 + 256);
    gft_expect_eproto(p, c, __LINE__);

    /* The producer's position: more than full, behind head, misaligned,
     * absurd. */
    uint64_t bad_tails[] = {64 + 256 + 16, 48, 64 + 33, UINT64_MAX, 0};
    for (size_t i = 0; i < sizeof(bad_tails) / sizeof(bad_tails[0]); i++) {
        gft_ring_at(mem, size, 64, &p, &c);
        gft_send_pattern(p, 1, 10, 0);
        atomic_store(&s->tail, bad_tails[i]);
        gft_expect_eproto(p, c, __LINE__);
    }

    /* A frame that would straddle the end of the area, though the bytes
     * are committed: X at 224 claims 64 bytes with 32 left. */
    gft_ring_at(mem, size, 224, &p, &c);
    gft_send_pattern(p, 1, 0, 0);   /* X [224, 240) */
    gft_send_pattern(p, 1, 0, 0);   /* Y [240, 256) */
    gft_send_pattern(p, 1, 100, 0); /* Z [256, 384) */
    atomic_store(&gft_hdr(p, 224)->len, 40);
    gft_expect_eproto(p, c, __LINE__);

    /* Padding: first the real thing, then broken versions of it.  A frame
     * of 128 bytes at 160 leaves padding [160, 256) + frame [256, 384). */
    gft_ring_at(mem, size, 160, &p, &c);
    gft_send_pattern(p, 2, 100, 9);
    ASSERT_U64_EQ(atomic_load(&gft_hdr(p, 160)->kind), GF__RING_PAD_KIND);
    gft_recv_pattern(c, 2, 100, 9);
    gf_ring_detach(p);
    gf_ring_detach(c);
    uint32_t bad_pad_lens[] = {79, 96, 0, 256 - 16, UINT32_MAX};
    for (size_t i = 0; i < sizeof(bad_pad_lens) / sizeof(bad_pad_lens[0]); i++) {
        gft_ring_at(mem, size, 160, &p, &c);
        gft_send_pattern(p, 2, 100, 9);
        atomic_store(&gft_hdr(p, 160)->len, bad_pad_lens[i]);
        gft_expect_eproto(p, c, __LINE__);
    }
    gft_ring_at(mem, size, 160, &p, &c); /* padding alone, nothing after it */
    gft_send_pattern(p, 2, 100, 9);
    atomic_store(&s->tail, 256);
    gft_expect_eproto(p, c, __LINE__);
    gft_ring_at(mem, size, 160, &p, &c); /* padding after padding */
    gft_send_pattern(p, 2, 100, 9);
    atomic_store(&gft_hdr(p, 256)->kind, GF__RING_PAD_KIND);
    gft_expect_eproto(p, c, __LINE__);
    gft_ring_at(mem, size, 160, &p, &c); /* the frame after padding is stale */
    gft_send_pattern(p, 2, 100, 9);
    atomic_store(&gft_hdr(p, 256)->pos, 0);
    gft_expect_eproto(p, c, __LINE__);
    gft_ring_at(mem, size, 160, &p, &c); /* the padding is stale */
    gft_send_pattern(p, 2, 100, 9);
    atomic_store(&gft_hdr(p, 160)->pos, 160 + 256);
    gft_expect_eproto(p, c, __LINE__);

    /* The producer does not trust the consumer's position either. */
    for (int i = 0; i < 4; i++) {
        gft_ring_at(mem, size, 64, &p, &c);
        gft_fill_ring(p, 60); /* full: the next reserve must read head */
        uint64_t tail = atomic_load(&s->tail);
        uint64_t bad_heads[] = {tail + 16, tail - 256 - 16, 64 + 8, UINT64_MAX};
        atomic_store(&s->head, bad_heads[i]);
        void *dst;
        ASSERT_ERR(gf_ring_try_reserve(p, 60, &dst), GF_EPROTO);
        ASSERT_ERR(gf_ring_try_send(p, 0, NULL, 0), GF_EPROTO); /* sticky */
        gf_ring_detach(p);
        gf_ring_detach(c);
    }
    free(mem);
}

/* Build a ring in mem with a random history, corrupt it at random, and
 * drain it: every result must be a frame inside the area, GF_EAGAIN or
 * GF_EPROTO, and the drain must end.  Returns 1 if it ended in GF_EPROTO. */
static int
gft_corrupt_round(unsigned char *mem, size_t size, uint32_t cap, uint64_t *rng)
{
    ASSERT_OK(gf_ring_init(mem, size, cap));
    gf_ring_t *p = gft_attach(mem, size);
    gf_ring_t *c = gft_attach(mem, size);
    gf__ring_shared_t *s = (gf__ring_shared_t *)(void *)mem;
    unsigned char *data = gf__ring_data(p);
    uint32_t maxp = gf_ring_max_payload(p);

    /* A random history, so head sits anywhere. */
    uint64_t pre = gft_splitmix(rng) % 24;
    for (uint64_t i = 0; i < pre; i++) {
        uint32_t len = (uint32_t)(gft_splitmix(rng) % (maxp + 1));
        gft_send_pattern(p, 1, len, i);
        gft_recv_pattern(c, 1, len, i);
    }
    /* Some committed frames (possibly with padding). */
    uint64_t k = 1 + gft_splitmix(rng) % 12;
    for (uint64_t i = 0; i < k; i++) {
        uint32_t len = (uint32_t)(gft_splitmix(rng) % (maxp / 2 + 1));
        void *dst;
        if (gf_ring_try_reserve(p, len, &dst) != 0) {
            break;
        }
        gft_fill(dst, len, i);
        ASSERT_OK(gf_ring_commit(p, (uint32_t)i, len));
    }
    uint64_t head = atomic_load(&s->head);
    uint64_t tail = atomic_load(&s->tail);

    uint64_t x = gft_splitmix(rng);
    static const uint32_t nasty32[] = {0,          1,          15,         16,
                                       111,        112,        113,        0xffff,
                                       0x10000,    0x7fffffff, 0x80000000, 0xffffffff,
                                       GF__RING_PAD_KIND};
    size_t nn = sizeof(nasty32) / sizeof(nasty32[0]);
    switch (x % 7) {
    case 0: { /* flip a few bits among the committed bytes */
        int flips = 1 + (int)((x >> 8) % 4);
        for (int i = 0; i < flips; i++) {
            uint64_t y = gft_splitmix(rng);
            uint64_t at = head + y % (tail - head);
            data[at % cap] ^= (unsigned char)(1u << ((y >> 32) % 8));
        }
        break;
    }
    case 1: { /* a header-aligned slot full of random bytes */
        uint64_t y = gft_splitmix(rng);
        uint64_t at = (head + (y % (tail - head))) & ~(uint64_t)15;
        for (int i = 0; i < 16; i++) {
            data[(at + (uint64_t)i) % cap] = (unsigned char)gft_splitmix(rng);
        }
        break;
    }
    case 2: { /* a nasty value in one field of the first frame */
        gf__ring_frame_hdr_t *h = (gf__ring_frame_hdr_t *)(void *)(data + head % cap);
        uint64_t y = gft_splitmix(rng);
        uint32_t v = nasty32[y % nn];
        switch ((y >> 32) % 3) {
        case 0:
            atomic_store(&h->len, v);
            break;
        case 1:
            atomic_store(&h->kind, v);
            break;
        default:
            atomic_store(&h->pos, head + ((y >> 40) % 2 ? 16 : (uint64_t)0 - 16));
            break;
        }
        break;
    }
    case 3: { /* a nasty producer position */
        uint64_t y = gft_splitmix(rng);
        uint64_t tails[] = {head + cap + 16, head - 16, tail + 1, tail + 16,
                            UINT64_MAX,      0,         head + cap, y};
        atomic_store(&s->tail, tails[y % (sizeof(tails) / sizeof(tails[0]))]);
        break;
    }
    case 4: /* the whole area random */
        for (uint32_t i = 0; i < cap; i++) {
            data[i] = (unsigned char)gft_splitmix(rng);
        }
        break;
    case 5: /* random area and a plausible tail */
        for (uint32_t i = 0; i < cap; i++) {
            data[i] = (unsigned char)gft_splitmix(rng);
        }
        atomic_store(&s->tail, head + ((gft_splitmix(rng) % (cap + 1)) & ~(uint64_t)15));
        break;
    default: /* random header words sprinkled over the whole area */
        for (int i = 0; i < 8; i++) {
            uint64_t y = gft_splitmix(rng);
            uint32_t *w = (uint32_t *)(void *)(data + ((y % cap) & ~(uint64_t)3));
            *w = nasty32[(y >> 32) % nn];
        }
        break;
    }

    volatile unsigned char sink = 0;
    int result = 0;
    uint32_t max_frames = cap / 16 + 1;
    uint32_t n;
    for (n = 0; n <= max_frames; n++) {
        gf_ring_frame_t f;
        int rc = gf_ring_try_peek(c, &f);
        if (rc == 0) {
            unsigned char *d = f.data;
            ASSERT(d >= data + GF_RING_FRAME_HEADER);
            ASSERT(d + f.len <= data + cap);
            ASSERT_EQ((uintptr_t)d % GF_RING_ALIGN, 0);
            ASSERT_LE(f.len, maxp);
            ASSERT_LE(f.kind, GF_RING_KIND_MAX);
            for (uint32_t i = 0; i < f.len; i++) {
                sink = (unsigned char)(sink + d[i]); /* ASan checks each read */
            }
            ASSERT_OK(gf_ring_release(c));
            continue;
        }
        if (rc == GF_EPROTO) {
            result = 1;
            ASSERT_ERR(gf_ring_try_peek(c, &f), GF_EPROTO);
        }
        else {
            ASSERT_ERR(rc, GF_EAGAIN);
        }
        break;
    }
    ASSERT_LE(n, max_frames); /* each frame advances head by >= 16 bytes */
    (void)sink;
    gf_ring_detach(p);
    gf_ring_detach(c);
    return result;
}

TEST_IMPL(ring_corruption_random)
{
    uint64_t rounds = (uint64_t)gft_env_int("GF_STRESS_ROUNDS", 50000) / 10;
    uint64_t rng = 2024;
    uint64_t protos = 0;

    /* Heap memory of the exact size: ASan reports any stray access. */
    size_t size;
    unsigned char *heap = gft_ring_mem(256, &size);
    for (uint64_t i = 0; i < rounds; i++) {
        protos += (uint64_t)gft_corrupt_round(heap, size, 256, &rng);
    }
    free(heap);

    /* Without ASan: the frame area ends at an inaccessible page, so a read
     * past its end would kill the test with SIGSEGV. */
    long page = sysconf(_SC_PAGESIZE);
    ASSERT_GT(page, 0);
    uint32_t cap = (uint32_t)page;
    size_t fp = gf_ring_footprint(cap);
    size_t span = ((fp + (size_t)page - 1) / (size_t)page) * (size_t)page;
    unsigned char *map = mmap(NULL, span + 2 * (size_t)page, PROT_NONE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT(map != MAP_FAILED);
    ASSERT_EQ(mprotect(map + page, span, PROT_READ | PROT_WRITE), 0);
    unsigned char *ring = map + page + span - fp; /* frame area ends at the guard */
    ASSERT_EQ((uintptr_t)ring % GF__CACHE_LINE, 0);
    for (uint64_t i = 0; i < rounds / 4; i++) {
        protos += (uint64_t)gft_corrupt_round(ring, fp, cap, &rng);
    }
    munmap(map, span + 2 * (size_t)page);
    printf("%" PRIu64 " corrupted rings, %" PRIu64 " rejected with GF_EPROTO\n",
           rounds + rounds / 4, protos);
    ASSERT_GT(protos, rounds / 4);
}

/* --- a producer killed mid-stream ------------------------------------------------ */

typedef struct gft_kill_results {
    _Atomic uint64_t frames; /* verified frames the consumer received */
    _Atomic int end;         /* the consumer's final result */
} gft_kill_results_t;

/* Consume frames 0, 1, ... (gft_stress_* format) until an error; record. */
static void
gft_kill_consumer(gf_ring_t *c, gft_kill_results_t *res)
{
    uint32_t maxp = gf_ring_max_payload(c);
    int rc;
    for (uint64_t seq = 0;; seq++) {
        gf_ring_frame_t f;
        rc = gf_ring_peek(c, &f, -1);
        if (rc != 0) {
            break;
        }
        if (gft_stress_verify(f.data, f.len, f.kind, seq, maxp) != 0) {
            rc = 3000;
            break;
        }
        ASSERT_OK(gf_ring_release(c));
        atomic_store(&res->frames, seq + 1);
    }
    atomic_store(&res->end, rc);
}

static void
gft_kill_case(int die_mid_write, uint64_t frames_before_death)
{
    enum { CAP = 4096 };
    size_t ring_bytes = gf_ring_footprint(CAP);
    gf_shm_t shm = GF_SHM_INIT;
    ASSERT_OK(gf_shm_create(ring_bytes + 4096, "gft-ring-kill", &shm));
    unsigned char *base = shm.addr;
    ASSERT_OK(gf_ring_init(base, ring_bytes, CAP));
    gft_kill_results_t *res = (gft_kill_results_t *)(void *)(base + ring_bytes);
    atomic_store(&res->end, 99);

    fflush(stdout);
    fflush(stderr);
    pid_t consumer = fork();
    ASSERT_GE(consumer, 0);
    if (consumer == 0) {
        gf_ring_t *c = gft_attach(base, ring_bytes);
        gft_kill_consumer(c, res);
        gf_ring_detach(c);
        _exit(0);
    }
    pid_t producer = fork();
    ASSERT_GE(producer, 0);
    if (producer == 0) {
        gf_ring_t *p = gft_attach(base, ring_bytes);
        uint32_t maxp = gf_ring_max_payload(p);
        for (uint64_t seq = 0; !die_mid_write || seq < frames_before_death; seq++) {
            uint32_t len = gft_stress_len(seq, maxp);
            void *dst;
            if (gf_ring_reserve(p, len, &dst, -1) != 0) {
                _exit(3);
            }
            gft_stress_fill(dst, len, seq);
            if (gf_ring_commit(p, (uint32_t)(seq & GF_RING_KIND_MAX), len) != 0) {
                _exit(4);
            }
        }
        /* Die in the middle of writing the next frame: reserved, half
         * written, a plausible header already in place, never committed. */
        uint32_t len = maxp;
        void *dst;
        if (gf_ring_reserve(p, len, &dst, -1) != 0) {
            _exit(5);
        }
        memset(dst, 0xAB, len / 2);
        gf__ring_frame_hdr_t *h =
            (gf__ring_frame_hdr_t *)(void *)((unsigned char *)dst - GF_RING_FRAME_HEADER);
        atomic_store(&h->len, len);
        kill(getpid(), SIGKILL);
        _exit(6);
    }

    if (!die_mid_write) {
        /* Let the stream run, then kill the producer wherever it is. */
        while (atomic_load(&res->frames) < frames_before_death) {
            gft_sleep_ms(1);
        }
        gft_sleep_ms(10);
        ASSERT_EQ(kill(producer, SIGKILL), 0);
    }
    int status;
    ASSERT_EQ(gft_waitpid(producer, &status), producer);
    ASSERT(WIFSIGNALED(status));
    ASSERT_EQ(WTERMSIG(status), SIGKILL);

    /* Supervision noticed the death: close the ring.  The consumer drains
     * what was committed, then gets GF_EPIPE instead of waiting forever. */
    gf_ring_t *sup = gft_attach(base, ring_bytes);
    gf_ring_close(sup);
    gft_expect_exit0(consumer, "consumer");
    int end = atomic_load(&res->end);
    if (end != GF_EPIPE) {
        gft_fail(__FILE__, __LINE__, "consumer ended with %d (%s), want GF_EPIPE", end,
                 gf_err_name(end));
    }
    uint64_t got = atomic_load(&res->frames);
    if (die_mid_write) {
        ASSERT_U64_EQ(got, frames_before_death); /* all committed, nothing more */
    }
    else {
        ASSERT_GE(got, frames_before_death);
    }
    printf("%s: consumer got %" PRIu64 " frames, then GF_EPIPE\n",
           die_mid_write ? "died mid-write" : "killed mid-stream", got);
    gf_ring_detach(sup);
    ASSERT_OK(gf_shm_close(&shm));
}

TEST_IMPL(ring_producer_killed)
{
    gft_kill_case(1, 1000);
    gft_kill_case(0, 2000);
}
