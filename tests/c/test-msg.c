/* Tests: channel messages (gf_msg_parse, gf_msg_write_prefix) and passing
 * descriptors over a socket pair (gf_fd_send, gf_fd_recv). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/core/internal.h"
#include "runner.h"

#define GFT_MS (INT64_C(1000000))

/* --- frames -------------------------------------------------------------------- */

static gf_msg_head_t
gft_head(uint32_t count, uint16_t codec, uint16_t flags, uint32_t nbufs)
{
    gf_msg_head_t h;
    memset(&h, 0, sizeof(h));
    h.id = 77;
    h.aux = 5;
    h.count = count;
    h.codec = codec;
    h.flags = flags;
    h.nbufs = nbufs;
    return h;
}

/* A frame in a heap block of exactly its length (malloc aligns to 16), so
 * that ASan flags any read past its end. */
static unsigned char *
gft_frame(const gf_msg_head_t *h, const uint64_t *buflens, const void *payload,
          size_t plen, size_t *len)
{
    size_t prefix = gf_msg_prefix_size(h->nbufs);
    *len = prefix + plen;
    unsigned char *p = malloc(*len);
    ASSERT_NOT_NULL(p);
    ASSERT_U64_EQ(gf_msg_write_prefix(p, h, buflens), prefix);
    if (plen > 0) {
        memcpy(p + prefix, payload, plen);
    }
    return p;
}

/* Build, parse, free: the parse's result. */
static int
gft_parse(uint32_t kind, const gf_msg_head_t *h, const uint64_t *buflens,
          const void *payload, size_t plen)
{
    size_t len;
    unsigned char *p = gft_frame(h, buflens, payload, plen, &len);
    gf_msg_t m;
    int rc = gf_msg_parse(kind, p, len, &m);
    free(p);
    return rc;
}

/* Parse a valid message and check that every field comes back. */
static void
gft_roundtrip(uint32_t kind, const gf_msg_head_t *h, const uint64_t *buflens,
              const void *payload, size_t plen)
{
    size_t len;
    unsigned char *p = gft_frame(h, buflens, payload, plen, &len);
    size_t prefix = gf_msg_prefix_size(h->nbufs);
    gf_msg_t m;
    ASSERT_OK(gf_msg_parse(kind, p, len, &m));
    ASSERT_EQ(m.kind, kind);
    ASSERT_EQ(memcmp(&m.head, h, sizeof(*h)), 0);
    if (h->nbufs == 0) {
        ASSERT_NULL(m.buflens);
    }
    else {
        ASSERT_PTR_EQ(m.buflens, p + GF_MSG_HEAD_SIZE);
        for (uint32_t i = 0; i < h->nbufs; i++) {
            ASSERT_U64_EQ(m.buflens[i], buflens[i]);
        }
    }
    ASSERT_PTR_EQ(m.payload, p + prefix);
    ASSERT_U64_EQ(m.payload_len, plen);
    if (plen > 0) {
        ASSERT_EQ(memcmp(m.payload, payload, plen), 0);
    }
    /* Writing the parsed head back gives the same prefix. */
    unsigned char *q = malloc(prefix);
    ASSERT_NOT_NULL(q);
    ASSERT_U64_EQ(gf_msg_write_prefix(q, &m.head, m.buflens), prefix);
    ASSERT_EQ(memcmp(q, p, prefix), 0);
    free(q);
    free(p);
}

TEST_IMPL(msg_parse_roundtrip)
{
    ASSERT_EQ(sizeof(gf_msg_head_t), GF_MSG_HEAD_SIZE);
    ASSERT_U64_EQ(gf_msg_prefix_size(3), GF_MSG_HEAD_SIZE + 24);
    static const char pickle[] = "\x80\x05pickled";
    int64_t ints[3] = {1, -2, INT64_MAX};
    double floats[2] = {0.5, -1e300};
    int64_t range[2] = {10, -3};
    uint64_t lens[3] = {1, 4096, GF_MSG_MAX_BUFLEN};

    gf_msg_head_t h = gft_head(3, GF_CODEC_PICKLE, GF_TASK_STAR, 3);
    h.index0 = 1000;
    gft_roundtrip(GF_MSG_TASK, &h, lens, pickle, sizeof(pickle));
    h = gft_head(3, GF_CODEC_I64, 0, 0);
    gft_roundtrip(GF_MSG_TASK, &h, NULL, ints, sizeof(ints));
    h = gft_head(1, GF_CODEC_PICKLE, GF_TASK_APPLY | GF_TASK_STAR, 0);
    gft_roundtrip(GF_MSG_TASK, &h, NULL, pickle, sizeof(pickle));
    h = gft_head(GF_MSG_MAX_COUNT, GF_CODEC_RANGE, 0, 0);
    gft_roundtrip(GF_MSG_TASK, &h, NULL, range, sizeof(range));
    h = gft_head(9, GF_CODEC_NONE, 0, 0);
    gft_roundtrip(GF_MSG_TASK, &h, NULL, NULL, 0);

    h = gft_head(2, GF_CODEC_F64, GF_RESULT_OK, 0);
    h.aux = 123456789; /* ns computing */
    gft_roundtrip(GF_MSG_RESULT, &h, NULL, floats, sizeof(floats));
    h = gft_head(0, GF_CODEC_PICKLE, GF_RESULT_RAISED, 1);
    h.index0 = 4;
    gft_roundtrip(GF_MSG_RESULT, &h, lens, pickle, sizeof(pickle));
    h = gft_head(0, GF_CODEC_PICKLE, GF_RESULT_BADTASK, 0);
    gft_roundtrip(GF_MSG_RESULT, &h, NULL, pickle, sizeof(pickle));
    h = gft_head(0, GF_CODEC_NONE, GF_RESULT_OK, 0);
    h.index0 = -1; /* only a failing result's offset is checked */
    gft_roundtrip(GF_MSG_RESULT, &h, NULL, NULL, 0);

    h = gft_head(0, GF_CODEC_PICKLE, 0, 0);
    gft_roundtrip(GF_MSG_FUNC, &h, NULL, pickle, 1);

    h = gft_head(0, GF_CODEC_NONE, 0, 0);
    h.id = (uint64_t)getpid();
    h.aux = GF_MSG_VERSION;
    gft_roundtrip(GF_MSG_HELLO, &h, NULL, NULL, 0);
    h = gft_head(0, GF_CODEC_PICKLE, 0, 0);
    gft_roundtrip(GF_MSG_FORGET, &h, NULL, NULL, 0);
    gft_roundtrip(GF_MSG_STOP, &h, NULL, NULL, 0);

    /* The most buffers a message may have. */
    uint64_t *many = malloc(GF_MSG_MAX_BUFS * sizeof(uint64_t));
    ASSERT_NOT_NULL(many);
    for (uint32_t i = 0; i < GF_MSG_MAX_BUFS; i++) {
        many[i] = i + 1;
    }
    h = gft_head(1, GF_CODEC_PICKLE, 0, GF_MSG_MAX_BUFS);
    gft_roundtrip(GF_MSG_RESULT, &h, many, pickle, 2);
    free(many);

    /* A frame that is a prefix of a bigger block parses by len alone. */
    h = gft_head(1, GF_CODEC_I64, 0, 0);
    size_t len;
    int64_t two[2] = {7, 8};
    unsigned char *p = gft_frame(&h, NULL, two, sizeof(two), &len);
    gf_msg_t m;
    ASSERT_ERR(gf_msg_parse(GF_MSG_TASK, p, len, &m), GF_EPROTO); /* 16 != 8 */
    ASSERT_OK(gf_msg_parse(GF_MSG_TASK, p, len - 8, &m));
    ASSERT_U64_EQ(m.payload_len, 8);
    free(p);
}

/* One rule per assertion, each a valid message with one thing changed (the
 * header's list of rules, in its order). */
TEST_IMPL(msg_parse_rejects)
{
    static const char pk[] = "pickle";
    int64_t ints[4] = {1, 2, 3, 4};
    uint64_t lens[2] = {10, 20};
    gf_msg_head_t h;
    gf_msg_t m;
    uint64_t aligned[8] = {0};

    /* Arguments (not the peer's fault). */
    ASSERT_ERR(gf_msg_parse(GF_MSG_STOP, aligned, 40, NULL), GF_EINVAL);
    ASSERT_ERR(gf_msg_parse(GF_MSG_STOP, NULL, 40, &m), GF_EINVAL);
    ASSERT_ERR(gf_msg_parse(GF_MSG_STOP, (char *)aligned + 4, 40, &m), GF_EINVAL);
    ASSERT_OK(gf_msg_parse(GF_MSG_STOP, aligned, 40, &m)); /* all zero: a STOP */

    /* kind in 1..GF_MSG_KIND_MAX */
    h = gft_head(0, GF_CODEC_NONE, 0, 0);
    ASSERT_ERR(gft_parse(0, &h, NULL, NULL, 0), GF_EPROTO);
    ASSERT_ERR(gft_parse(GF_MSG_KIND_MAX + 1, &h, NULL, NULL, 0), GF_EPROTO);
    ASSERT_ERR(gft_parse(UINT32_MAX, &h, NULL, NULL, 0), GF_EPROTO);
    /* len >= GF_MSG_HEAD_SIZE */
    ASSERT_ERR(gf_msg_parse(GF_MSG_STOP, aligned, GF_MSG_HEAD_SIZE - 1, &m), GF_EPROTO);
    ASSERT_ERR(gf_msg_parse(GF_MSG_STOP, aligned, 0, &m), GF_EPROTO);
    /* reserved == 0 */
    h = gft_head(0, GF_CODEC_NONE, 0, 0);
    h.reserved = 1;
    ASSERT_ERR(gft_parse(GF_MSG_STOP, &h, NULL, NULL, 0), GF_EPROTO);

    /* nbufs <= GF_MSG_MAX_BUFS, with every length valid and in the frame */
    uint64_t *many = malloc((GF_MSG_MAX_BUFS + 1) * sizeof(uint64_t));
    ASSERT_NOT_NULL(many);
    for (uint32_t i = 0; i <= GF_MSG_MAX_BUFS; i++) {
        many[i] = 1;
    }
    h = gft_head(1, GF_CODEC_PICKLE, 0, GF_MSG_MAX_BUFS + 1);
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, many, pk, 1), GF_EPROTO);
    free(many);
    /* a huge nbufs in a small frame: no overflow, no read past the end */
    h = gft_head(1, GF_CODEC_PICKLE, 0, 0);
    size_t len;
    unsigned char *p = gft_frame(&h, NULL, pk, sizeof(pk), &len);
    uint32_t huge = UINT32_MAX;
    memcpy(p + offsetof(gf_msg_head_t, nbufs), &huge, sizeof(huge));
    ASSERT_ERR(gf_msg_parse(GF_MSG_TASK, p, len, &m), GF_EPROTO);
    free(p);
    /* nbufs only on TASK and RESULT */
    h = gft_head(0, GF_CODEC_PICKLE, 0, 1);
    ASSERT_ERR(gft_parse(GF_MSG_FUNC, &h, lens, pk, 1), GF_EPROTO);
    h = gft_head(0, GF_CODEC_PICKLE, 0, 1);
    ASSERT_ERR(gft_parse(GF_MSG_HELLO, &h, lens, NULL, 0), GF_EPROTO);
    /* each buflen in 1..GF_MSG_MAX_BUFLEN */
    h = gft_head(1, GF_CODEC_PICKLE, 0, 2);
    ASSERT_OK(gft_parse(GF_MSG_TASK, &h, lens, pk, 1));
    uint64_t zero_len[2] = {10, 0};
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, zero_len, pk, 1), GF_EPROTO);
    uint64_t big_len[2] = {GF_MSG_MAX_BUFLEN + 1, 10};
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, big_len, pk, 1), GF_EPROTO);
    /* the lengths fit in the frame: 2 claimed, room for 1 */
    p = gft_frame(&h, lens, NULL, 0, &len);
    ASSERT_ERR(gf_msg_parse(GF_MSG_TASK, p, len - 8, &m), GF_EPROTO);
    ASSERT_ERR(gf_msg_parse(GF_MSG_TASK, p, GF_MSG_HEAD_SIZE, &m), GF_EPROTO);
    free(p);

    /* count <= GF_MSG_MAX_COUNT */
    h = gft_head(GF_MSG_MAX_COUNT + 1, GF_CODEC_PICKLE, 0, 0);
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, NULL, pk, 1), GF_EPROTO);
    /* codec <= GF_CODEC_MAX */
    h = gft_head(0, GF_CODEC_MAX + 1, 0, 0);
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, NULL, NULL, 0), GF_EPROTO);
    /* the payload length agrees with the codec */
    h = gft_head(4, GF_CODEC_I64, 0, 0);
    ASSERT_OK(gft_parse(GF_MSG_TASK, &h, NULL, ints, 32));
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, NULL, ints, 31), GF_EPROTO);
    h = gft_head(4, GF_CODEC_F64, 0, 0);
    ASSERT_ERR(gft_parse(GF_MSG_RESULT, &h, NULL, ints, 24), GF_EPROTO);
    /* count * 8 would wrap to 8 in 32 bits */
    h = gft_head(0x20000001u, GF_CODEC_I64, 0, 0);
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, NULL, ints, 8), GF_EPROTO);
    h = gft_head(100, GF_CODEC_RANGE, 0, 0);
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, NULL, ints, 24), GF_EPROTO);
    h = gft_head(3, GF_CODEC_NONE, 0, 0);
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, NULL, ints, 1), GF_EPROTO);
    /* nbufs > 0 only with PICKLE */
    h = gft_head(1, GF_CODEC_I64, 0, 1);
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, lens, ints, 8), GF_EPROTO);

    /* TASK flags within GF_TASK_FLAGS_ALL */
    h = gft_head(1, GF_CODEC_PICKLE, GF_TASK_FLAGS_ALL + 1, 0);
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, NULL, pk, 1), GF_EPROTO);
    /* APPLY only with count 1 */
    h = gft_head(2, GF_CODEC_PICKLE, GF_TASK_APPLY, 0);
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, NULL, pk, 1), GF_EPROTO);
    /* RESULT status <= GF_RESULT_STATUS_MAX */
    h = gft_head(0, GF_CODEC_PICKLE, GF_RESULT_STATUS_MAX + 1, 0);
    ASSERT_ERR(gft_parse(GF_MSG_RESULT, &h, NULL, pk, 1), GF_EPROTO);
    /* a failing RESULT's index0 >= 0 */
    h = gft_head(0, GF_CODEC_PICKLE, GF_RESULT_UNPICKLABLE, 0);
    h.index0 = -1;
    ASSERT_ERR(gft_parse(GF_MSG_RESULT, &h, NULL, pk, 1), GF_EPROTO);
    /* FUNC: PICKLE ... */
    h = gft_head(1, GF_CODEC_I64, 0, 0);
    ASSERT_ERR(gft_parse(GF_MSG_FUNC, &h, NULL, ints, 8), GF_EPROTO);
    /* ... with a non-empty payload */
    h = gft_head(0, GF_CODEC_PICKLE, 0, 0);
    ASSERT_ERR(gft_parse(GF_MSG_FUNC, &h, NULL, NULL, 0), GF_EPROTO);
    /* HELLO, FORGET, STOP: no payload */
    ASSERT_ERR(gft_parse(GF_MSG_HELLO, &h, NULL, pk, 1), GF_EPROTO);
    ASSERT_ERR(gft_parse(GF_MSG_FORGET, &h, NULL, pk, 1), GF_EPROTO);
    ASSERT_ERR(gft_parse(GF_MSG_STOP, &h, NULL, pk, 1), GF_EPROTO);

    /* A rejected parse leaves nothing behind that looks valid. */
    ASSERT_EQ(m.kind, 0);
    ASSERT_NULL(m.payload);
}

/* EXT: the payload travels as the last buffer; the frame has none and the
 * codec's length rule applies to that buffer.  STOP and CANCELLED. */
TEST_IMPL(msg_parse_ext_and_flags)
{
    uint64_t one[1] = {800};
    uint64_t two[2] = {70000, 4096};
    gf_msg_head_t h;

    /* Accepted. */
    h = gft_head(100, GF_CODEC_I64, GF_MSG_FLAG_EXT, 1);
    one[0] = 800;
    gft_roundtrip(GF_MSG_TASK, &h, one, NULL, 0);
    h = gft_head(3, GF_CODEC_PICKLE, GF_TASK_STAR | GF_TASK_STOP | GF_MSG_FLAG_EXT, 2);
    gft_roundtrip(GF_MSG_TASK, &h, two, NULL, 0);
    h = gft_head(0, GF_CODEC_PICKLE, GF_RESULT_RAISED | GF_MSG_FLAG_EXT, 1);
    gft_roundtrip(GF_MSG_RESULT, &h, one, NULL, 0);
    h = gft_head(0, GF_CODEC_PICKLE, GF_MSG_FLAG_EXT, 1);
    gft_roundtrip(GF_MSG_FUNC, &h, one, NULL, 0);
    h = gft_head(0, GF_CODEC_NONE, GF_RESULT_CANCELLED, 0);
    gft_roundtrip(GF_MSG_RESULT, &h, NULL, NULL, 0);

    /* Rejected: EXT without a buffer, with a frame payload, on a kind
     * without payload; the length rule on the last buffer; buffers other
     * than the EXT one beside a fixed codec; flags on FUNC. */
    unsigned char pay[8] = {0};
    h = gft_head(1, GF_CODEC_PICKLE, GF_MSG_FLAG_EXT, 0);
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, NULL, NULL, 0), GF_EPROTO);
    h = gft_head(1, GF_CODEC_PICKLE, GF_MSG_FLAG_EXT, 1);
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, one, pay, sizeof pay), GF_EPROTO);
    h = gft_head(0, GF_CODEC_NONE, GF_MSG_FLAG_EXT, 1);
    ASSERT_ERR(gft_parse(GF_MSG_STOP, &h, one, NULL, 0), GF_EPROTO);
    h = gft_head(99, GF_CODEC_I64, GF_MSG_FLAG_EXT, 1);  /* 99*8 != 800 */
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, one, NULL, 0), GF_EPROTO);
    h = gft_head(512, GF_CODEC_I64, GF_MSG_FLAG_EXT, 2);
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, two, NULL, 0), GF_EPROTO);
    h = gft_head(0, GF_CODEC_PICKLE, GF_TASK_STAR | GF_MSG_FLAG_EXT, 1);
    ASSERT_ERR(gft_parse(GF_MSG_FUNC, &h, one, NULL, 0), GF_EPROTO);
    h = gft_head(0, GF_CODEC_PICKLE, GF_MSG_FLAG_EXT, 2);
    ASSERT_ERR(gft_parse(GF_MSG_FUNC, &h, two, NULL, 0), GF_EPROTO);
    h = gft_head(0, GF_CODEC_NONE, GF_RESULT_STATUS_MAX + 1, 0);
    ASSERT_ERR(gft_parse(GF_MSG_RESULT, &h, NULL, NULL, 0), GF_EPROTO);
    h = gft_head(1, GF_CODEC_PICKLE, GF_TASK_FLAGS_ALL + 1, 0);
    ASSERT_ERR(gft_parse(GF_MSG_TASK, &h, NULL, pay, sizeof pay), GF_EPROTO);
}

/* SETUP (pool -> worker, the worker lifecycle) and LIFE (worker -> pool,
 * how the initializer or exit function went). */
TEST_IMPL(msg_parse_setup_and_life)
{
    unsigned char pk[16] = {0x80, 5};
    uint64_t lens[2] = {65536, 4096};
    uint64_t one[1] = {900};
    gf_msg_head_t h;

    /* Accepted: a pickled setup with buffers beside it or as EXT. */
    h = gft_head(0, GF_CODEC_PICKLE, 0, 2);
    gft_roundtrip(GF_MSG_SETUP, &h, lens, pk, sizeof pk);
    h = gft_head(0, GF_CODEC_PICKLE, GF_MSG_FLAG_EXT, 1);
    gft_roundtrip(GF_MSG_SETUP, &h, one, NULL, 0);
    /* LIFE: every event, with a pickle or nothing. */
    for (unsigned ev = 0; ev <= GF_LIFE_EVENT_MAX; ev++) {
        h = gft_head(0, GF_CODEC_PICKLE, (uint16_t)ev, 0);
        h.aux = 12345;
        gft_roundtrip(GF_MSG_LIFE, &h, NULL, pk, sizeof pk);
        h = gft_head(0, GF_CODEC_NONE, (uint16_t)ev, 0);
        gft_roundtrip(GF_MSG_LIFE, &h, NULL, NULL, 0);
    }
    h = gft_head(0, GF_CODEC_PICKLE, GF_LIFE_EXIT_OK, 2);
    gft_roundtrip(GF_MSG_LIFE, &h, lens, pk, sizeof pk);

    /* Rejected: SETUP empty, not a pickle, with flags; LIFE with an
     * unknown event, an empty pickle, NONE with a count, a fixed codec. */
    h = gft_head(0, GF_CODEC_PICKLE, 0, 0);
    ASSERT_ERR(gft_parse(GF_MSG_SETUP, &h, NULL, NULL, 0), GF_EPROTO);
    h = gft_head(0, GF_CODEC_NONE, 0, 0);
    ASSERT_ERR(gft_parse(GF_MSG_SETUP, &h, NULL, NULL, 0), GF_EPROTO);
    h = gft_head(0, GF_CODEC_PICKLE, 1, 0);
    ASSERT_ERR(gft_parse(GF_MSG_SETUP, &h, NULL, pk, sizeof pk), GF_EPROTO);
    h = gft_head(0, GF_CODEC_PICKLE, GF_LIFE_EVENT_MAX + 1, 0);
    ASSERT_ERR(gft_parse(GF_MSG_LIFE, &h, NULL, pk, sizeof pk), GF_EPROTO);
    h = gft_head(0, GF_CODEC_PICKLE, GF_LIFE_EXIT_OK, 0);
    ASSERT_ERR(gft_parse(GF_MSG_LIFE, &h, NULL, NULL, 0), GF_EPROTO);
    h = gft_head(3, GF_CODEC_NONE, GF_LIFE_INIT_OK, 0);
    ASSERT_ERR(gft_parse(GF_MSG_LIFE, &h, NULL, NULL, 0), GF_EPROTO);
    unsigned char ints[8] = {0};
    h = gft_head(1, GF_CODEC_I64, GF_LIFE_EXIT_OK, 0);
    ASSERT_ERR(gft_parse(GF_MSG_LIFE, &h, NULL, ints, sizeof ints), GF_EPROTO);
    /* Buffers still only on the kinds that may carry them. */
    h = gft_head(0, GF_CODEC_PICKLE, 0, 2);
    ASSERT_ERR(gft_parse(GF_MSG_FUNC, &h, lens, pk, sizeof pk), GF_EPROTO);
}

/* --- descriptors --------------------------------------------------------------- */

/* Entries in /proc/self/fd (the directory's own descriptor included, the
 * same way each time). */
static int
gft_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        TEST_SKIP("no /proc/self/fd");
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n;
}

static int
gft_cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);
    ASSERT_GE(flags, 0);
    return (flags & FD_CLOEXEC) != 0;
}

static void
gft_same_file(int a, int b)
{
    struct stat sa, sb;
    ASSERT_EQ(fstat(a, &sa), 0);
    ASSERT_EQ(fstat(b, &sb), 0);
    ASSERT_U64_EQ(sa.st_dev, sb.st_dev);
    ASSERT_U64_EQ(sa.st_ino, sb.st_ino);
}

/* A region holding a NUL-terminated text. */
static gf_shm_t
gft_region(const char *text)
{
    gf_shm_t r = GF_SHM_INIT;
    ASSERT_OK(gf_shm_create(4096, "gft-msg", &r));
    snprintf(r.addr, r.size, "%s", text);
    return r;
}

/* Map a received descriptor (taking it over) and check its text. */
static void
gft_expect_region(int fd, const char *text)
{
    gf_shm_t m = GF_SHM_INIT;
    ASSERT_OK(gf_shm_map(fd, 0, GF_SHM_READONLY, &m));
    ASSERT_STR_EQ((const char *)m.addr, text);
    ASSERT_OK(gf_shm_close(&m));
}

TEST_IMPL(msg_fd_validation)
{
    int sv[2];
    int fds[4] = {0, 0, 0, 0};
    uint32_t n = 99;
    ASSERT_ERR(gf_socketpair(NULL), GF_EINVAL);
    ASSERT_OK(gf_socketpair(sv));
    ASSERT(gft_cloexec(sv[0]) && gft_cloexec(sv[1]));
    int type = 0;
    socklen_t tlen = sizeof(type);
    ASSERT_EQ(getsockopt(sv[0], SOL_SOCKET, SO_TYPE, &type, &tlen), 0);
    ASSERT_EQ(type, SOCK_SEQPACKET);

    ASSERT_ERR(gf_fd_send(-1, fds, 1, 0), GF_EINVAL);
    ASSERT_ERR(gf_fd_send(sv[0], NULL, 1, 0), GF_EINVAL);
    ASSERT_ERR(gf_fd_send(sv[0], fds, 0, 0), GF_EINVAL);
    ASSERT_ERR(gf_fd_send(sv[0], fds, GF_FD_MAX_PER_MSG + 1, 0), GF_EINVAL);
    ASSERT_ERR(gf_fd_recv(-1, fds, 4, &n, 0), GF_EINVAL);
    ASSERT_EQ(n, 0);
    ASSERT_ERR(gf_fd_recv(sv[1], NULL, 4, &n, 0), GF_EINVAL);
    ASSERT_ERR(gf_fd_recv(sv[1], fds, 0, &n, 0), GF_EINVAL);
    ASSERT_ERR(gf_fd_recv(sv[1], fds, 4, NULL, 0), GF_EINVAL);

    /* A system call's errno passes through. */
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    ASSERT_ERR(gf_fd_send(p[1], &p[0], 1, 0), -ENOTSOCK);
    ASSERT_ERR(gf_fd_recv(p[0], fds, 4, &n, 0), -ENOTSOCK);
    close(p[0]);
    close(p[1]);
    close(sv[0]);
    close(sv[1]);
}

TEST_IMPL(msg_fd_pass_one)
{
    int sv[2];
    ASSERT_OK(gf_socketpair(sv));
    gf_shm_t r = gft_region("one region");
    ASSERT_OK(gf_fd_send(sv[0], &r.fd, 1, -1));
    ASSERT(fcntl(r.fd, F_GETFD) >= 0); /* the sender keeps its own */

    int got[4] = {-1, -1, -1, -1};
    uint32_t n = 0;
    ASSERT_OK(gf_fd_recv(sv[1], got, 4, &n, -1));
    ASSERT_EQ(n, 1);
    ASSERT_NE(got[0], r.fd);
    ASSERT_EQ(got[1], -1);
    ASSERT(gft_cloexec(got[0]));
    gft_same_file(got[0], r.fd);

    /* The very same memory, both ways. */
    gf_shm_t m = GF_SHM_INIT;
    ASSERT_OK(gf_shm_map(got[0], 0, 0, &m));
    ASSERT_STR_EQ((const char *)m.addr, "one region");
    ((char *)m.addr)[0] = 'O';
    ASSERT_STR_EQ((const char *)r.addr, "One region");
    ASSERT_OK(gf_shm_close(&m));

    /* Nothing else queued. */
    ASSERT_ERR(gf_fd_recv(sv[1], got, 4, &n, 0), GF_ETIMEDOUT);
    ASSERT_EQ(n, 0);
    ASSERT_OK(gf_shm_close(&r));
    close(sv[0]);
    close(sv[1]);
}

/* Raise the soft descriptor limit to at least want (skip if we may not). */
static void
gft_need_fds(rlim_t want)
{
    struct rlimit rl;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
            TEST_SKIP("RLIMIT_NOFILE hard limit %llu < %llu",
                      (unsigned long long)rl.rlim_max, (unsigned long long)want);
        }
        rl.rlim_cur = want;
        ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
}

TEST_IMPL(msg_fd_pass_many)
{
    int sv[2];
    ASSERT_OK(gf_socketpair(sv));
    int before = gft_count_fds();

    /* Several regions in one message arrive in order. */
    enum { K = 5 };
    gf_shm_t r[K];
    int fds[K];
    char text[K][32];
    for (int i = 0; i < K; i++) {
        snprintf(text[i], sizeof(text[i]), "region %d", i);
        r[i] = gft_region(text[i]);
        fds[i] = r[i].fd;
    }
    ASSERT_OK(gf_fd_send(sv[0], fds, K, -1));
    int got[GF_FD_MAX_PER_MSG];
    uint32_t n = 0;
    ASSERT_OK(gf_fd_recv(sv[1], got, GF_FD_MAX_PER_MSG, &n, -1));
    ASSERT_EQ(n, K);
    for (int i = 0; i < K; i++) {
        ASSERT(gft_cloexec(got[i]));
        gft_same_file(got[i], r[i].fd);
        gft_expect_region(got[i], text[i]);
        ASSERT_OK(gf_shm_close(&r[i]));
    }

    /* The most one message may carry: the same descriptor many times
     * arrives as that many new descriptors. */
    gft_need_fds(1024);
    gf_shm_t one = gft_region("many");
    int same[GF_FD_MAX_PER_MSG];
    for (uint32_t i = 0; i < GF_FD_MAX_PER_MSG; i++) {
        same[i] = one.fd;
    }
    ASSERT_OK(gf_fd_send(sv[0], same, GF_FD_MAX_PER_MSG, -1));
    ASSERT_OK(gf_fd_recv(sv[1], got, GF_FD_MAX_PER_MSG, &n, -1));
    ASSERT_EQ(n, GF_FD_MAX_PER_MSG);
    for (uint32_t i = 0; i < n; i++) {
        ASSERT(gft_cloexec(got[i]));
        gft_same_file(got[i], one.fd);
        close(got[i]);
    }
    ASSERT_OK(gf_shm_close(&one));
    ASSERT_EQ(gft_count_fds(), before);
    close(sv[0]);
    close(sv[1]);
}

/* Fill the socket's buffer with one-descriptor messages; returns how many. */
static int
gft_fill_socket(int sock, int fd)
{
    int sndbuf = 1; /* the kernel rounds up to its minimum */
    ASSERT_EQ(setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    int k = 0;
    int rc;
    while ((rc = gf_fd_send(sock, &fd, 1, 0)) == 0) {
        ASSERT_LT(++k, 100000);
    }
    ASSERT_ERR(rc, GF_ETIMEDOUT);
    ASSERT_GT(k, 0);
    return k;
}

static void
gft_drain_socket(int sock)
{
    int got[4];
    uint32_t n;
    int rc;
    while ((rc = gf_fd_recv(sock, got, 4, &n, 0)) == 0) {
        for (uint32_t i = 0; i < n; i++) {
            close(got[i]);
        }
    }
    ASSERT_ERR(rc, GF_ETIMEDOUT);
}

TEST_IMPL(msg_fd_timeouts)
{
    int sv[2];
    ASSERT_OK(gf_socketpair(sv));
    int got[4];
    uint32_t n;

    /* Receive: 0 is one try; a short timeout returns after it, not early
     * and not much later. */
    int64_t t0 = gf_now_ns();
    ASSERT_ERR(gf_fd_recv(sv[0], got, 4, &n, 0), GF_ETIMEDOUT);
    ASSERT_ERR(gf_fd_recv(sv[0], got, 4, &n, 50 * GFT_MS), GF_ETIMEDOUT);
    int64_t dt = gf_now_ns() - t0;
    ASSERT_GE(dt, 50 * GFT_MS);
    ASSERT_LT(dt, 5000 * GFT_MS);

    /* Send: a full buffer times out the same way, then takes a message
     * again once the peer has read one. */
    gf_shm_t r = gft_region("full");
    int k = gft_fill_socket(sv[0], r.fd);
    t0 = gf_now_ns();
    ASSERT_ERR(gf_fd_send(sv[0], &r.fd, 1, 30 * GFT_MS), GF_ETIMEDOUT);
    dt = gf_now_ns() - t0;
    ASSERT_GE(dt, 30 * GFT_MS);
    ASSERT_LT(dt, 5000 * GFT_MS);
    ASSERT_OK(gf_fd_recv(sv[1], got, 4, &n, 0));
    ASSERT_EQ(n, 1);
    close(got[0]);
    ASSERT_OK(gf_fd_send(sv[0], &r.fd, 1, 5000 * GFT_MS));
    printf("socket buffer held %d one-descriptor messages\n", k);
    gft_drain_socket(sv[1]);
    ASSERT_OK(gf_shm_close(&r));
    close(sv[0]);
    close(sv[1]);
}

typedef struct gft_fdop {
    int send; /* 1: gf_fd_send, 0: gf_fd_recv */
    int sock;
    int fd;
    int64_t timeout_ns;
    _Atomic int done;
    int result;
} gft_fdop_t;

static void *
gft_fdop_run(void *arg)
{
    gft_fdop_t *o = arg;
    if (o->send) {
        o->result = gf_fd_send(o->sock, &o->fd, 1, o->timeout_ns);
    }
    else {
        int got[4];
        uint32_t n;
        o->result = gf_fd_recv(o->sock, got, 4, &n, o->timeout_ns);
    }
    atomic_store(&o->done, 1);
    return NULL;
}

/* Signal the thread until its call returns; its result. */
static int
gft_interrupt(gft_fdop_t *o)
{
    pthread_t t;
    gft_thread_start(&t, gft_fdop_run, o);
    while (!atomic_load(&o->done)) { /* until one lands during the wait */
        pthread_kill(t, SIGUSR1);
        gft_sleep_ms(20);
    }
    gft_thread_join(t);
    return o->result;
}

TEST_IMPL(msg_fd_eintr)
{
    gft_install_interrupting_handler(SIGUSR1);
    int sv[2];
    ASSERT_OK(gf_socketpair(sv));
    gft_fdop_t o = {0, sv[1], -1, -1, 0, 0};
    ASSERT_ERR(gft_interrupt(&o), GF_EINTR);

    gf_shm_t r = gft_region("eintr");
    gft_fill_socket(sv[0], r.fd);
    gft_fdop_t s = {1, sv[0], r.fd, 60000 * GFT_MS, 0, 0};
    ASSERT_ERR(gft_interrupt(&s), GF_EINTR);
    ASSERT_GT(gft_signal_count(), 1);

    gft_drain_socket(sv[1]);
    ASSERT_OK(gf_shm_close(&r));
    close(sv[0]);
    close(sv[1]);
}

TEST_IMPL(msg_fd_peer_gone)
{
    /* Default SIGPIPE: a send that raised it would kill the test. */
    signal(SIGPIPE, SIG_DFL);
    gf_shm_t r = gft_region("gone");
    int got[4];
    uint32_t n;

    /* Nothing queued: both calls fail at once, even without a timeout. */
    int sv[2];
    ASSERT_OK(gf_socketpair(sv));
    close(sv[1]);
    ASSERT_ERR(gf_fd_recv(sv[0], got, 4, &n, -1), GF_EPIPE);
    ASSERT_ERR(gf_fd_send(sv[0], &r.fd, 1, -1), GF_EPIPE);
    ASSERT_ERR(gf_fd_recv(sv[0], got, 4, &n, -1), GF_EPIPE); /* and stays so */
    close(sv[0]);

    /* The peer sent, then closed with our message unread (the kernel then
     * reports ECONNRESET once): what it sent still arrives, then GF_EPIPE. */
    ASSERT_OK(gf_socketpair(sv));
    ASSERT_OK(gf_fd_send(sv[1], &r.fd, 1, -1));
    ASSERT_OK(gf_fd_send(sv[0], &r.fd, 1, -1));
    close(sv[1]);
    ASSERT_OK(gf_fd_recv(sv[0], got, 4, &n, -1));
    ASSERT_EQ(n, 1);
    gft_expect_region(got[0], "gone");
    ASSERT_ERR(gf_fd_recv(sv[0], got, 4, &n, 0), GF_EPIPE);
    ASSERT_ERR(gf_fd_send(sv[0], &r.fd, 1, 0), GF_EPIPE);
    close(sv[0]);

    /* A waiting receiver wakes up when the peer goes. */
    ASSERT_OK(gf_socketpair(sv));
    gft_fdop_t o = {0, sv[0], -1, -1, 0, 0};
    pthread_t t;
    gft_thread_start(&t, gft_fdop_run, &o);
    gft_sleep_ms(30);
    close(sv[1]);
    gft_thread_join(t);
    ASSERT_ERR(o.result, GF_EPIPE);
    close(sv[0]);
    ASSERT_OK(gf_shm_close(&r));
}

/* sendmsg() of `bytes` data bytes (0 or 1) with k copies of fd. */
static void
gft_raw_send(int sock, int fd, int k, size_t bytes)
{
    union {
        struct cmsghdr align;
        unsigned char buf[CMSG_SPACE(sizeof(int) * 8)];
    } control;
    memset(&control, 0, sizeof(control));
    char byte = 'x';
    struct iovec iov = {&byte, bytes};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (k > 0) {
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)k);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)k);
        for (int i = 0; i < k; i++) {
            memcpy(CMSG_DATA(cm) + i * sizeof(int), &fd, sizeof(int));
        }
    }
    ASSERT_EQ(sendmsg(sock, &msg, MSG_NOSIGNAL), (ssize_t)bytes);
}

TEST_IMPL(msg_fd_protocol_errors)
{
    int sv[2];
    ASSERT_OK(gf_socketpair(sv));
    gf_shm_t r = gft_region("proto");
    int five[5] = {r.fd, r.fd, r.fd, r.fd, r.fd};
    int got[8];
    uint32_t n = 99;
    int before = gft_count_fds();

    /* More descriptors than max: all closed. */
    ASSERT_OK(gf_fd_send(sv[0], five, 5, -1));
    ASSERT_ERR(gf_fd_recv(sv[1], got, 4, &n, -1), GF_EPROTO);
    ASSERT_EQ(n, 0);
    ASSERT_EQ(gft_count_fds(), before);
    /* Exactly max is fine. */
    ASSERT_OK(gf_fd_send(sv[0], five, 4, -1));
    ASSERT_OK(gf_fd_recv(sv[1], got, 4, &n, -1));
    ASSERT_EQ(n, 4);
    for (uint32_t i = 0; i < n; i++) {
        close(got[i]);
    }

    /* No descriptors. */
    gft_raw_send(sv[0], -1, 0, 1);
    ASSERT_ERR(gf_fd_recv(sv[1], got, 8, &n, -1), GF_EPROTO);
    /* Descriptors on a zero-byte message (not the end of the stream). */
    gft_raw_send(sv[0], r.fd, 3, 0);
    ASSERT_ERR(gf_fd_recv(sv[1], got, 8, &n, -1), GF_EPROTO);
    ASSERT_EQ(gft_count_fds(), before);

    /* Truncated control data: with room for only two more descriptors in
     * our table, the kernel installs two of five and sets MSG_CTRUNC. */
    int a = dup(r.fd);
    int b = dup(r.fd);
    ASSERT(a >= 0 && b > a);
    close(a);
    close(b);
    struct rlimit rl, tight;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    tight = rl;
    tight.rlim_cur = (rlim_t)b + 1;
    ASSERT_OK(gf_fd_send(sv[0], five, 5, -1));
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &tight), 0);
    int rc = gf_fd_recv(sv[1], got, 8, &n, -1);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    ASSERT_ERR(rc, GF_EPROTO);
    ASSERT_EQ(gft_count_fds(), before);

    /* The channel still works. */
    ASSERT_OK(gf_fd_send(sv[0], &r.fd, 1, -1));
    ASSERT_OK(gf_fd_recv(sv[1], got, 8, &n, -1));
    ASSERT_EQ(n, 1);
    gft_expect_region(got[0], "proto");
    ASSERT_EQ(gft_count_fds(), before);
    ASSERT_OK(gf_shm_close(&r));
    close(sv[0]);
    close(sv[1]);
}

/* Regions both ways between a parent and a fork()ed child. */
TEST_IMPL(msg_fd_fork)
{
    const int64_t timeout = 10000 * GFT_MS;
    int sv[2];
    ASSERT_OK(gf_socketpair(sv));
    gf_shm_t mine = gft_region("to the child");
    fflush(stdout);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        close(sv[0]);
        int fd;
        uint32_t n;
        ASSERT_OK(gf_fd_recv(sv[1], &fd, 1, &n, timeout));
        ASSERT_EQ(n, 1);
        gf_shm_t got = GF_SHM_INIT;
        ASSERT_OK(gf_shm_map(fd, 0, 0, &got));
        ASSERT_STR_EQ((const char *)got.addr, "to the child");
        snprintf(got.addr, got.size, "seen by %d", (int)getpid());
        char text[64];
        snprintf(text, sizeof(text), "from child %d", (int)getpid());
        gf_shm_t theirs = gft_region(text);
        ASSERT_OK(gf_fd_send(sv[1], &theirs.fd, 1, timeout));
        _exit(0);
    }
    close(sv[1]);
    ASSERT_OK(gf_fd_send(sv[0], &mine.fd, 1, timeout));
    int fd;
    uint32_t n;
    ASSERT_OK(gf_fd_recv(sv[0], &fd, 1, &n, timeout));
    ASSERT_EQ(n, 1);
    char text[64];
    snprintf(text, sizeof(text), "from child %d", (int)pid);
    gft_expect_region(fd, text);
    snprintf(text, sizeof(text), "seen by %d", (int)pid);
    ASSERT_STR_EQ((const char *)mine.addr, text);

    int status;
    pid_t w;
    while ((w = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
    }
    ASSERT_EQ(w, pid);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    /* The child's end is gone with it. */
    ASSERT_ERR(gf_fd_recv(sv[0], &fd, 1, &n, timeout), GF_EPIPE);
    ASSERT_OK(gf_shm_close(&mine));
    close(sv[0]);
}
