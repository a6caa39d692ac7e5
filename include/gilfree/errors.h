/* gilfree core: error codes.
 *
 * Every core function that can fail returns an int: 0 on success or a negative
 * GF_E* code.  Where a POSIX errno exists the code is the negated errno (as in
 * libuv), so a system call's failure passes through unchanged; codes with no
 * errno equivalent live in a private range below -4000.  gf_strerror() and
 * gf_err_name() are generated from the one X-macro table below, so adding a code
 * means adding one line.
 */
#ifndef GILFREE_ERRORS_H
#define GILFREE_ERRORS_H

#include <errno.h>

#ifdef __cplusplus
extern "C" {
#endif

/* XX(name, value, message) */
#define GF_ERRNO_MAP(XX)                                                     \
    XX(EINVAL, (-EINVAL), "invalid argument")                                \
    XX(ENOMEM, (-ENOMEM), "out of memory")                                   \
    XX(EAGAIN, (-EAGAIN), "resource temporarily unavailable")                \
    XX(ETIMEDOUT, (-ETIMEDOUT), "timed out")                                 \
    XX(EINTR, (-EINTR), "interrupted by a signal")                           \
    XX(EBUSY, (-EBUSY), "resource busy")                                     \
    XX(ECANCELED, (-ECANCELED), "operation canceled")                        \
    XX(ENOSYS, (-ENOSYS), "function not implemented on this platform")       \
    XX(EPIPE, (-EPIPE), "channel closed (peer gone or shut down)")           \
    XX(EPROTO, (-EPROTO), "malformed frame or channel header")               \
    XX(EMSGSIZE, (-EMSGSIZE), "message too long for the channel")            \
    XX(ESRCH, (-ESRCH), "no such process")                                   \
    XX(ECLOSED, (-4080), "closed")                                           \
    XX(EFORKED, (-4081), "object was created before fork() in the parent")

enum {
#define GF__ERR_ENUM(name, value, msg) GF_##name = value,
    GF_ERRNO_MAP(GF__ERR_ENUM)
#undef GF__ERR_ENUM
};

/* A static, human-readable message for a GF_E* code ("unknown error" for
 * anything else, including positive values). Never NULL. */
const char *gf_strerror(int err);

/* The code's symbolic name, e.g. "GF_ETIMEDOUT" ("GF_UNKNOWN" otherwise). */
const char *gf_err_name(int err);

#ifdef __cplusplus
}
#endif
#endif /* GILFREE_ERRORS_H */
