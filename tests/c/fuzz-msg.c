/* libFuzzer target: gf_msg_parse() on arbitrary frames.
 *
 *   clang -fsanitize=fuzzer,address,undefined ... (tools/run-c-tests fuzz)
 *   build/c-fuzz/tests/c/fuzz-msg -max_total_time=10 CORPUS_DIR
 *
 * A worker can put anything in a ring frame; the parser must answer 0 or
 * GF_EPROTO, never read outside the frame, and accept only what the rules
 * in msg.h allow.  The frame is copied into a heap block of exactly its
 * length (malloc aligns to 16, the parser needs 8), so AddressSanitizer
 * flags a read even one byte past the end.
 *
 * Input: bytes 0-3 (little-endian) pick the kind, modulo GF_MSG_KIND_MAX + 2
 * so that both invalid neighbours (0 and GF_MSG_KIND_MAX + 1) come up; the
 * rest is the frame.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gilfree/errors.h"
#include "gilfree/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size);

#define GFZ_CHECK(cond)            \
    do {                           \
        if (!(cond)) {             \
            __builtin_trap();      \
        }                          \
    } while (0)

/* What the rules say about an accepted message, checked independently of
 * the parser's own code. */
static void
gfz_check_accepted(uint32_t kind, const unsigned char *frame, size_t len, const gf_msg_t *m)
{
    const gf_msg_head_t *h = &m->head;
    GFZ_CHECK(m->kind == kind && kind >= 1 && kind <= GF_MSG_KIND_MAX);
    GFZ_CHECK(len >= GF_MSG_HEAD_SIZE);
    GFZ_CHECK(memcmp(h, frame, GF_MSG_HEAD_SIZE) == 0);
    GFZ_CHECK(h->reserved == 0);
    GFZ_CHECK(h->count <= GF_MSG_MAX_COUNT && h->codec <= GF_CODEC_MAX);

    /* Buffer lengths: right after the head, inside the frame, valid. */
    size_t prefix = gf_msg_prefix_size(h->nbufs);
    GFZ_CHECK(h->nbufs <= GF_MSG_MAX_BUFS && prefix <= len);
    if (h->nbufs == 0) {
        GFZ_CHECK(m->buflens == NULL);
    }
    else {
        /* Buffers: TASK, RESULT, SETUP and LIFE, or a FUNC whose payload
         * is EXT; beside a pickle, or only the EXT payload (checked below). */
        GFZ_CHECK(kind == GF_MSG_TASK || kind == GF_MSG_RESULT ||
                  kind == GF_MSG_SETUP || kind == GF_MSG_LIFE ||
                  (kind == GF_MSG_FUNC && (h->flags & GF_MSG_FLAG_EXT)));
        GFZ_CHECK((const unsigned char *)m->buflens == frame + GF_MSG_HEAD_SIZE);
        GFZ_CHECK((const unsigned char *)(m->buflens + h->nbufs) <= frame + len);
        for (uint32_t i = 0; i < h->nbufs; i++) {
            GFZ_CHECK(m->buflens[i] >= 1 && m->buflens[i] <= GF_MSG_MAX_BUFLEN);
        }
    }

    /* Payload: the rest of the frame, exactly. */
    GFZ_CHECK(m->payload == frame + prefix);
    GFZ_CHECK(m->payload_len == len - prefix);
    volatile unsigned char sink = 0;
    for (size_t i = 0; i < m->payload_len; i++) {
        sink = (unsigned char)(sink + m->payload[i]);
    }
    (void)sink;
    /* With EXT the payload is the last buffer: the length rules apply to
     * it, and the frame itself carries none. */
    int ext = (h->flags & GF_MSG_FLAG_EXT) != 0;
    uint64_t eff = m->payload_len;
    if (ext) {
        GFZ_CHECK(kind == GF_MSG_TASK || kind == GF_MSG_RESULT ||
                  kind == GF_MSG_FUNC || kind == GF_MSG_SETUP ||
                  kind == GF_MSG_LIFE);
        GFZ_CHECK(h->nbufs >= 1 && m->payload_len == 0);
        eff = m->buflens[h->nbufs - 1];
    }
    switch (h->codec) {
    case GF_CODEC_I64:
    case GF_CODEC_F64:
        GFZ_CHECK(eff == (uint64_t)h->count * 8u);
        break;
    case GF_CODEC_RANGE:
        GFZ_CHECK(eff == 16);
        break;
    case GF_CODEC_NONE:
        GFZ_CHECK(eff == 0);
        break;
    default:
        break;
    }
    if (h->codec != GF_CODEC_PICKLE) {
        GFZ_CHECK(h->nbufs == (uint32_t)ext);
    }

    unsigned flags = h->flags & ~GF_MSG_FLAG_EXT;
    switch (kind) {
    case GF_MSG_TASK:
        GFZ_CHECK((flags & ~GF_TASK_FLAGS_ALL) == 0);
        GFZ_CHECK(!(flags & GF_TASK_APPLY) || h->count == 1);
        break;
    case GF_MSG_RESULT:
        GFZ_CHECK(flags <= GF_RESULT_STATUS_MAX);
        GFZ_CHECK(flags == GF_RESULT_OK || h->index0 >= 0);
        break;
    case GF_MSG_FUNC:
        GFZ_CHECK(h->codec == GF_CODEC_PICKLE && eff > 0 && flags == 0);
        GFZ_CHECK(h->nbufs == (uint32_t)ext);
        break;
    case GF_MSG_SETUP:
        GFZ_CHECK(h->codec == GF_CODEC_PICKLE && eff > 0 && flags == 0);
        break;
    case GF_MSG_LIFE:
        GFZ_CHECK(flags <= GF_LIFE_EVENT_MAX);
        GFZ_CHECK((h->codec == GF_CODEC_PICKLE && eff > 0) ||
                  (h->codec == GF_CODEC_NONE && h->count == 0));
        break;
    default:
        GFZ_CHECK(m->payload_len == 0 && h->nbufs == 0);
        break;
    }

    /* Writing the parsed head back reproduces the frame's prefix. */
    unsigned char *again = malloc(prefix);
    GFZ_CHECK(again != NULL);
    GFZ_CHECK(gf_msg_write_prefix(again, h, m->buflens) == prefix);
    GFZ_CHECK(memcmp(again, frame, prefix) == 0);
    free(again);
}

int
LLVMFuzzerTestOneInput(const uint8_t *input, size_t size)
{
    if (size < 4) {
        return 0;
    }
    uint32_t raw = (uint32_t)input[0] | (uint32_t)input[1] << 8 |
                   (uint32_t)input[2] << 16 | (uint32_t)input[3] << 24;
    uint32_t kind = raw % (GF_MSG_KIND_MAX + 2);
    size_t len = size - 4;
    /* malloc(0) may give NULL, which the parser would call an argument
     * error: keep a live (if empty) block instead. */
    unsigned char *frame = malloc(len > 0 ? len : 1);
    GFZ_CHECK(frame != NULL);
    memcpy(frame, input + 4, len);

    gf_msg_t m;
    int rc = gf_msg_parse(kind, frame, len, &m);
    if (rc == 0) {
        gfz_check_accepted(kind, frame, len, &m);
    }
    else {
        GFZ_CHECK(rc == GF_EPROTO);
        GFZ_CHECK(m.kind == 0 && m.payload == NULL && m.buflens == NULL);
    }
    free(frame);
    return 0;
}
