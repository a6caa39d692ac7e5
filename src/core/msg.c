/* gilfree core: channel messages (parsing) and descriptor passing.
 *
 * Parsing.  A frame comes from a peer we do not trust (a worker may be
 * buggy, or killed half-way through a write), so gf_msg_parse() treats every
 * field as hostile: the header is copied out with memcpy (one read of each
 * byte, into memory the peer cannot change under us), every size is checked
 * against len before anything past the header is touched, and all arithmetic
 * is done in uint64_t on values already bounded (nbufs <= 1024, count <=
 * 2^30), so nothing can wrap, not even with a 32-bit size_t.
 *
 * Descriptors.  AF_UNIX SOCK_SEQPACKET keeps message boundaries, so one
 * gf_fd_send() is one gf_fd_recv(): descriptors of two messages are never
 * merged or split.  Each message carries one data byte, because a zero-byte
 * read is how the socket says the peer has gone.  Both calls use
 * MSG_DONTWAIT and wait in ppoll() themselves, so the socket's own blocking
 * mode does not matter and a deadline holds across retries.  The receive
 * buffer has room for the kernel's limit (SCM_MAX_FD), not just for the
 * caller's max, so that a message with too many descriptors arrives whole
 * and we can close every one of them instead of letting the kernel drop some
 * silently (MSG_CTRUNC) while installing the rest in our table.
 */
#include <errno.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__linux__)
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#endif

#include "internal.h"

/* The layout is a wire format between processes: pin it. */
_Static_assert(sizeof(gf_msg_head_t) == GF_MSG_HEAD_SIZE, "gf_msg_head_t size");
_Static_assert(offsetof(gf_msg_head_t, count) == 24, "gf_msg_head_t layout");
_Static_assert(offsetof(gf_msg_head_t, nbufs) == 32, "gf_msg_head_t layout");
_Static_assert(GF_MSG_HEAD_SIZE % alignof(uint64_t) == 0,
               "buflens must stay 8-byte aligned after the head");

/* --- parsing ---------------------------------------------------------------- */

/* The payload length that `codec` implies for `count` items, or UINT64_MAX
 * when any length will do (pickle). */
static uint64_t
gf__codec_payload_len(uint16_t codec, uint32_t count)
{
    switch (codec) {
    case GF_CODEC_I64:
    case GF_CODEC_F64:
        return (uint64_t)count * 8u; /* count <= 2^30: no overflow */
    case GF_CODEC_RANGE:
        return 16u;
    case GF_CODEC_NONE:
        return 0u;
    default:
        return UINT64_MAX;
    }
}

/* The rules that depend on the kind (the header's list, in its order). */
static int
gf__msg_check_kind(uint32_t kind, const gf_msg_head_t *h, uint64_t payload_len)
{
    unsigned flags = h->flags & ~GF_MSG_FLAG_EXT;
    switch (kind) {
    case GF_MSG_TASK:
        if ((flags & ~GF_TASK_FLAGS_ALL) != 0) {
            return GF_EPROTO;
        }
        if ((flags & GF_TASK_APPLY) && h->count != 1) {
            return GF_EPROTO;
        }
        return 0;
    case GF_MSG_RESULT:
        if (flags > GF_RESULT_STATUS_MAX) {
            return GF_EPROTO;
        }
        if (flags != GF_RESULT_OK && h->index0 < 0) {
            return GF_EPROTO;
        }
        return 0;
    case GF_MSG_FUNC:
        return h->codec == GF_CODEC_PICKLE && payload_len > 0 &&
                       (h->flags & ~GF_MSG_FLAG_EXT) == 0
                   ? 0 : GF_EPROTO;
    case GF_MSG_SETUP:
        return h->codec == GF_CODEC_PICKLE && payload_len > 0 && flags == 0
                   ? 0 : GF_EPROTO;
    case GF_MSG_LIFE:
        if (flags > GF_LIFE_EVENT_MAX) {
            return GF_EPROTO;
        }
        if (h->codec == GF_CODEC_PICKLE) {
            return payload_len > 0 ? 0 : GF_EPROTO;
        }
        return h->codec == GF_CODEC_NONE && h->count == 0 ? 0 : GF_EPROTO;
    default: /* HELLO, FORGET, STOP */
        return payload_len == 0 ? 0 : GF_EPROTO;
    }
}

int
gf_msg_parse(uint32_t kind, const void *data, size_t len, gf_msg_t *out)
{
    if (out == NULL) {
        return GF_EINVAL;
    }
    memset(out, 0, sizeof(*out));
    /* Misalignment is the caller's bug, not the peer's: buflens is handed
     * out as a uint64_t pointer, which must be aligned to be read. */
    if (data == NULL || (uintptr_t)data % alignof(uint64_t) != 0) {
        return GF_EINVAL;
    }
    if (kind < 1 || kind > GF_MSG_KIND_MAX || len < GF_MSG_HEAD_SIZE) {
        return GF_EPROTO;
    }
    gf_msg_head_t h;
    memcpy(&h, data, sizeof(h));
    if (h.reserved != 0 || h.nbufs > GF_MSG_MAX_BUFS) {
        return GF_EPROTO;
    }
    /* EXT: the payload is the last buffer (kinds with a payload only). */
    int ext = (h.flags & GF_MSG_FLAG_EXT) != 0;
    int buffers = kind == GF_MSG_TASK || kind == GF_MSG_RESULT ||
                  kind == GF_MSG_SETUP || kind == GF_MSG_LIFE;
    int carries = buffers || kind == GF_MSG_FUNC;
    if (ext && (!carries || h.nbufs == 0)) {
        return GF_EPROTO;
    }
    if (h.nbufs > 0 && !buffers &&
        !(kind == GF_MSG_FUNC && ext && h.nbufs == 1)) {
        return GF_EPROTO;
    }
    size_t prefix = gf_msg_prefix_size(h.nbufs); /* <= 40 + 8 KiB */
    if (prefix > len) {
        return GF_EPROTO;
    }
    const unsigned char *bytes = data;
    const uint64_t *buflens = NULL;
    if (h.nbufs > 0) {
        buflens = (const uint64_t *)(const void *)(bytes + GF_MSG_HEAD_SIZE);
        for (uint32_t i = 0; i < h.nbufs; i++) {
            uint64_t b = buflens[i];
            if (b == 0 || b > GF_MSG_MAX_BUFLEN) {
                return GF_EPROTO;
            }
        }
    }
    if (h.count > GF_MSG_MAX_COUNT || h.codec > GF_CODEC_MAX) {
        return GF_EPROTO;
    }
    size_t payload_len = len - prefix;
    /* With EXT the frame carries no payload; the rules apply to the last
     * buffer's length instead. */
    uint64_t eff_len = payload_len;
    if (ext) {
        if (payload_len != 0) {
            return GF_EPROTO;
        }
        eff_len = buflens[h.nbufs - 1];
    }
    uint64_t want = gf__codec_payload_len(h.codec, h.count);
    if (want != UINT64_MAX && want != eff_len) {
        return GF_EPROTO;
    }
    /* Buffers other than an EXT payload only beside a pickle. */
    if (h.nbufs > (uint32_t)ext && h.codec != GF_CODEC_PICKLE) {
        return GF_EPROTO;
    }
    int rc = gf__msg_check_kind(kind, &h, eff_len);
    if (rc != 0) {
        return rc;
    }
    out->kind = kind;
    out->head = h;
    out->buflens = buflens;
    out->payload = bytes + prefix;
    out->payload_len = payload_len;
    return 0;
}

size_t
gf_msg_write_prefix(void *dst, const gf_msg_head_t *head, const uint64_t *buflens)
{
    unsigned char *p = dst;
    size_t lens = (size_t)head->nbufs * sizeof(uint64_t);
    memcpy(p, head, GF_MSG_HEAD_SIZE);
    /* No lengths given: zeros, which the parser rejects, rather than a
     * crash here or garbage there. */
    if (buflens != NULL) {
        memcpy(p + GF_MSG_HEAD_SIZE, buflens, lens);
    }
    else {
        memset(p + GF_MSG_HEAD_SIZE, 0, lens);
    }
    return GF_MSG_HEAD_SIZE + lens;
}

/* --- passing descriptors ---------------------------------------------------- */

#if defined(__linux__)

/* The kernel's SCM_MAX_FD: the most descriptors one message can carry. */
#define GF__SCM_MAX_FD 253

/* Control buffer for receiving: every descriptor a message can carry, plus
 * slack for other control messages (credentials, if someone turned on
 * SO_PASSCRED) so that they never truncate the rights. */
#define GF__FD_CMSG_SPACE (CMSG_SPACE(sizeof(int) * GF__SCM_MAX_FD) + 256)

typedef union gf__cmsg_buf {
    struct cmsghdr align; /* CMSG_* need cmsghdr alignment */
    unsigned char buf[GF__FD_CMSG_SPACE];
} gf__cmsg_buf_t;

/* Wait until fd may be ready for `events`, or until deadline.  Returns 0
 * (ready, hung up, or the time is up: the caller retries its call either
 * way and asks again), GF_ETIMEDOUT once the deadline has passed, GF_EINTR
 * or a negated errno. */
static int
gf__fd_wait(int fd, short events, int64_t deadline)
{
    int64_t left = gf__remaining_ns(deadline);
    if (left == 0) {
        return GF_ETIMEDOUT;
    }
    struct pollfd p = {fd, events, 0};
    struct timespec ts, *tsp = NULL;
    if (left > 0) {
        ts.tv_sec = (time_t)(left / GF__NS_PER_SEC);
        ts.tv_nsec = (long)(left % GF__NS_PER_SEC);
        tsp = &ts;
    }
    if (ppoll(&p, 1, tsp, NULL) < 0) {
        return -errno; /* EINTR included: GF_EINTR */
    }
    return 0;
}

static void
gf__close_all(const int *fds, uint32_t n)
{
    /* No retry on EINTR: on Linux the descriptor is gone either way. */
    for (uint32_t i = 0; i < n; i++) {
        close(fds[i]);
    }
}

int
gf_socketpair(int sv[2])
{
    if (sv == NULL) {
        return GF_EINVAL;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        return -errno;
    }
    return 0;
}

int
gf_fd_send(int sock, const int *fds, uint32_t n, int64_t timeout_ns)
{
    if (sock < 0 || fds == NULL || n == 0 || n > GF_FD_MAX_PER_MSG) {
        return GF_EINVAL;
    }
    union {
        struct cmsghdr align;
        unsigned char buf[CMSG_SPACE(sizeof(int) * GF_FD_MAX_PER_MSG)];
    } control;
    memset(&control, 0, sizeof(control));
    unsigned char byte = 0;
    struct iovec iov = {&byte, 1};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);

    int64_t deadline = gf__deadline_from_timeout(timeout_ns);
    for (;;) {
        /* MSG_NOSIGNAL: a dead peer is GF_EPIPE, not a SIGPIPE that would
         * kill the pool.  SEQPACKET sends all or nothing. */
        if (sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0) {
            return 0;
        }
        int err = errno;
        if (err == EPIPE || err == ECONNRESET) {
            return GF_EPIPE;
        }
        if (err != EAGAIN && err != EWOULDBLOCK) {
            return -err; /* EINTR included */
        }
        int rc = gf__fd_wait(sock, POLLOUT, deadline);
        if (rc != 0) {
            return rc;
        }
    }
}

/* Collect the SCM_RIGHTS descriptors of a received message into got[]
 * (room for GF__SCM_MAX_FD); returns how many. */
static uint32_t
gf__collect_fds(struct msghdr *msg, int *got)
{
    uint32_t n = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm != NULL; cm = CMSG_NXTHDR(msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
            cm->cmsg_len < CMSG_LEN(0)) {
            continue;
        }
        size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char *p = CMSG_DATA(cm);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, p + i * sizeof(int), sizeof(int));
            if (n < GF__SCM_MAX_FD) {
                got[n++] = fd;
            }
            else {
                close(fd); /* cannot happen with one sender; never leak */
            }
        }
    }
    return n;
}

int
gf_fd_recv(int sock, int *fds, uint32_t max, uint32_t *n, int64_t timeout_ns)
{
    if (n != NULL) {
        *n = 0;
    }
    if (sock < 0 || fds == NULL || max == 0 || n == NULL) {
        return GF_EINVAL;
    }
    gf__cmsg_buf_t control;
    unsigned char byte;
    struct iovec iov = {&byte, 1};
    struct msghdr msg;
    int64_t deadline = gf__deadline_from_timeout(timeout_ns);
    ssize_t r;
    for (;;) {
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof(control.buf);
        /* MSG_CMSG_CLOEXEC: the descriptors are close-on-exec from the
         * moment they exist, with no window for a concurrent exec. */
        r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (r >= 0) {
            break;
        }
        int err = errno;
        if (err == ECONNRESET) {
            /* The peer closed with messages of ours unread.  Reading the
             * error cleared it; what it sent us before may still be queued,
             * and the next read returns that, or 0 (gone). */
            continue;
        }
        if (err != EAGAIN && err != EWOULDBLOCK) {
            return -err; /* EINTR included */
        }
        int rc = gf__fd_wait(sock, POLLIN, deadline);
        if (rc != 0) {
            return rc;
        }
    }

    int got[GF__SCM_MAX_FD];
    uint32_t k = gf__collect_fds(&msg, got);
    if (r == 0 && k == 0 && !(msg.msg_flags & MSG_CTRUNC)) {
        return GF_EPIPE; /* end of stream: every message has one byte */
    }
    /* A zero-byte message that carries descriptors is not the end of the
     * stream, just not one of ours: malformed, like the rest. */
    if (r == 0 || (msg.msg_flags & MSG_CTRUNC) || k == 0 || k > max) {
        gf__close_all(got, k);
        return GF_EPROTO;
    }
    memcpy(fds, got, sizeof(int) * k);
    *n = k;
    return 0;
}

#else /* !__linux__ */

int
gf_socketpair(int sv[2])
{
    return sv == NULL ? GF_EINVAL : GF_ENOSYS;
}

int
gf_fd_send(int sock, const int *fds, uint32_t n, int64_t timeout_ns)
{
    (void)sock;
    (void)fds;
    (void)n;
    (void)timeout_ns;
    return GF_ENOSYS;
}

int
gf_fd_recv(int sock, int *fds, uint32_t max, uint32_t *n, int64_t timeout_ns)
{
    (void)sock;
    (void)fds;
    (void)max;
    (void)timeout_ns;
    if (n != NULL) {
        *n = 0;
    }
    return GF_ENOSYS;
}

#endif /* __linux__ */
