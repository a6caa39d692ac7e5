/* gilfree core: the messages of the process backend's channels, and the
 * passing of file descriptors between processes.
 *
 * A channel between the pool and one worker is two rings (ring.h) in
 * memfd shared memory (shm.h), one per direction, plus a Unix socket pair
 * that carries only file descriptors: the memfds of out-of-band buffers
 * (large arrays) that travel beside a message.  Every ring frame is one
 * message; the frame's kind is the message kind (GF_MSG_*).
 *
 * Layout of a frame's payload, in native byte order (both ends are the same
 * machine):
 *
 *   every kind:
 *     gf_msg_head_t        40 bytes (GF_MSG_HEAD_SIZE)
 *     uint64_t buflen[nbufs]   byte length of each out-of-band buffer
 *     payload              the rest of the frame (encoded with `codec`)
 *
 * The receiver trusts nothing: gf_msg_parse() checks every field against
 * the frame's length and the limits below and answers GF_EPROTO for
 * anything malformed, never reading outside [data, data + len).  A TASK or
 * RESULT with nbufs > 0 has sent nbufs descriptors on the socket, in one
 * gf_fd_send() call made BEFORE the frame was committed, so they are
 * already queued when the frame becomes visible.
 */
#ifndef GILFREE_MSG_H
#define GILFREE_MSG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever the layout below changes; HELLO carries it. */
#define GF_MSG_VERSION 2u

enum gf_msg_kind {
    GF_MSG_HELLO = 1,  /* worker -> pool, first message: id = pid,
                        * aux = GF_MSG_VERSION */
    GF_MSG_FUNC = 2,   /* pool -> worker: id = function id, payload = the
                        * pickled callable (codec PICKLE) */
    GF_MSG_TASK = 3,   /* pool -> worker: run `count` items */
    GF_MSG_RESULT = 4, /* worker -> pool: the results of one TASK */
    GF_MSG_FORGET = 5, /* pool -> worker: drop function `id` */
    GF_MSG_STOP = 6,   /* pool -> worker: exit after the tasks before it */
    GF_MSG_SETUP = 7,  /* pool -> worker, before any FUNC or TASK: the
                        * pool's worker lifecycle (initializer, shared
                        * object, ...), pickled, buffers beside */
    GF_MSG_LIFE = 8,   /* worker -> pool: how its initializer or exit
                        * function went (flags: enum gf_life_event);
                        * payload pickled, or none */
};
#define GF_MSG_KIND_MAX 8

/* LIFE events (in `flags`). */
enum gf_life_event {
    GF_LIFE_INIT_OK = 0,     /* the initializer returned; aux = ns it took */
    GF_LIFE_INIT_RAISED = 1, /* it raised: payload (exception, traceback) */
    GF_LIFE_EXIT_OK = 2,     /* the exit function returned: payload its
                              * value; aux = ns it took */
    GF_LIFE_EXIT_RAISED = 3, /* it raised: payload (exception, traceback) */
};
#define GF_LIFE_EVENT_MAX 3

/* How a payload encodes its items. */
enum gf_codec {
    GF_CODEC_PICKLE = 0, /* pickle protocol 5; out-of-band buffers beside */
    GF_CODEC_I64 = 1,    /* count int64 values (a list of ints) */
    GF_CODEC_F64 = 2,    /* count doubles (a list of floats) */
    GF_CODEC_RANGE = 3,  /* two int64: start, step; item i = start + i*step */
    GF_CODEC_NONE = 4,   /* no payload: count Nones */
};
#define GF_CODEC_MAX 4

/* TASK flags. */
#define GF_TASK_STAR 0x1u   /* call fn(*item) (starmap) */
#define GF_TASK_APPLY 0x2u  /* one item: the pickled pair (args, kwargs) */
#define GF_TASK_STOP 0x4u   /* stop at the first item that raises (map:
                             * the rest would be thrown away) */
#define GF_TASK_FLAGS_ALL 0x7u

/* Flag of any message with a payload (TASK, RESULT, FUNC, SETUP, LIFE), or'ed into
 * `flags`: the payload did not fit in a frame and is the message's LAST
 * out-of-band buffer instead; the frame's own payload is empty and the
 * codec's length rule applies to that buffer's length. */
#define GF_MSG_FLAG_EXT 0x8000u

/* RESULT status (in `flags`). */
enum gf_result_status {
    GF_RESULT_OK = 0,     /* count results */
    GF_RESULT_RAISED = 1, /* item `index0` (offset in the task) raised;
                           * payload: pickled (results_before, exception,
                           * traceback text) */
    GF_RESULT_UNPICKLABLE = 2, /* like RAISED, but pickling a result (or
                                * the exception) failed in the worker;
                                * the exception describes it */
    GF_RESULT_BADTASK = 3,     /* the task could not be decoded (e.g. the
                                * function could not be unpickled);
                                * like RAISED with index0 = 0 */
    GF_RESULT_CANCELLED = 4,   /* the pool withdrew the task before it
                                * started; no results */
};
#define GF_RESULT_STATUS_MAX 4

typedef struct gf_msg_head {
    uint64_t id;     /* TASK/RESULT: task id; FUNC/FORGET: function id;
                      * HELLO: pid */
    uint64_t aux;    /* TASK: function id; RESULT: ns spent computing;
                      * HELLO: GF_MSG_VERSION */
    int64_t index0;  /* TASK: input index of item 0; RESULT: offset of the
                      * failing item in the task (status != OK), else 0 */
    uint32_t count;  /* items (TASK) or results (RESULT) in the payload */
    uint16_t codec;  /* enum gf_codec */
    uint16_t flags;  /* TASK: GF_TASK_*; RESULT: enum gf_result_status */
    uint32_t nbufs;  /* out-of-band buffers (descriptors on the socket) */
    uint32_t reserved; /* 0 */
} gf_msg_head_t;

#define GF_MSG_HEAD_SIZE 40u
/* Limits a parser enforces (a peer could claim anything). */
#define GF_MSG_MAX_BUFS 1024u            /* per message */
#define GF_MSG_MAX_BUFLEN (1ull << 40)  /* bytes per out-of-band buffer */
#define GF_MSG_MAX_COUNT (1u << 30)      /* items per message */

/* A parsed message; pointers point into the frame. */
typedef struct gf_msg {
    uint32_t kind;
    gf_msg_head_t head;          /* copied out of the frame */
    const uint64_t *buflens;     /* head.nbufs entries, or NULL */
    const unsigned char *payload;
    size_t payload_len;
} gf_msg_t;

/* Bytes before the payload of a message with nbufs buffers. */
static inline size_t
gf_msg_prefix_size(uint32_t nbufs)
{
    return GF_MSG_HEAD_SIZE + (size_t)nbufs * sizeof(uint64_t);
}

/* Check a frame (kind, data, len) and fill *out.  data must be 8-byte
 * aligned (ring payloads are; GF_EINVAL otherwise).  With GF_MSG_FLAG_EXT
 * (TASK, RESULT, FUNC, SETUP, LIFE; nbufs >= 1; empty frame payload) the length rules
 * below apply to the last buffer's length.  Rules: kind in 1..GF_MSG_KIND_MAX; len >=
 * GF_MSG_HEAD_SIZE; reserved == 0; nbufs <= GF_MSG_MAX_BUFS and only on
 * TASK/RESULT/SETUP/LIFE (FUNC: only its EXT payload), each buflen in 1..GF_MSG_MAX_BUFLEN and the lengths fit in
 * the frame; count <= GF_MSG_MAX_COUNT; codec <= GF_CODEC_MAX and the
 * payload length agrees with it (I64/F64: count*8, RANGE: 16, NONE: 0;
 * nbufs > 0 only with PICKLE); TASK flags within GF_TASK_FLAGS_ALL and
 * APPLY only with count 1; RESULT status <= GF_RESULT_STATUS_MAX and, when
 * not OK, 0 <= index0 (the failing item's offset); FUNC: PICKLE with a
 * non-empty payload; SETUP: PICKLE, non-empty, flags 0; LIFE: event <=
 * GF_LIFE_EVENT_MAX, PICKLE (non-empty) or NONE with count 0; HELLO,
 * FORGET, STOP: no payload.
 * Returns 0, or GF_EPROTO (malformed) / GF_EINVAL (NULL arguments). */
int gf_msg_parse(uint32_t kind, const void *data, size_t len, gf_msg_t *out);

/* Write a header and the buffer lengths at dst (which has room for
 * gf_msg_prefix_size(head->nbufs) bytes); returns that size. */
size_t gf_msg_write_prefix(void *dst, const gf_msg_head_t *head,
                           const uint64_t *buflens);

/* --- passing descriptors ---------------------------------------------------- */

/* Most descriptors in one gf_fd_send() (below the kernel's SCM_MAX_FD). */
#define GF_FD_MAX_PER_MSG 250u

/* A connected pair of AF_UNIX SOCK_SEQPACKET sockets, both close-on-exec.
 * 0 or a negated errno. */
int gf_socketpair(int sv[2]);

/* Send n (1..GF_FD_MAX_PER_MSG) descriptors as one message.  Blocks while
 * the socket's buffer is full, up to timeout_ns (< 0: forever).  The
 * caller keeps its descriptors (the receiver gets duplicates).  Returns 0,
 * GF_EINVAL, GF_EPIPE (the peer has gone), GF_ETIMEDOUT, GF_EINTR (a
 * signal handler ran; call again) or a negated errno. */
int gf_fd_send(int sock, const int *fds, uint32_t n, int64_t timeout_ns);

/* Receive one message of descriptors into fds[0..max); *n gets how many.
 * The descriptors arrive close-on-exec.  Blocks up to timeout_ns.  A
 * message with more than max descriptors, or none, or truncated control
 * data is GF_EPROTO (every descriptor it carried is closed).  Returns 0,
 * GF_EINVAL, GF_EPIPE (the peer has gone and nothing is queued),
 * GF_ETIMEDOUT, GF_EINTR, GF_EPROTO or a negated errno. */
int gf_fd_recv(int sock, int *fds, uint32_t max, uint32_t *n, int64_t timeout_ns);

#ifdef __cplusplus
}
#endif
#endif /* GILFREE_MSG_H */
