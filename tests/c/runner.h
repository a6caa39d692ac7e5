/* gilfree C tests: assertion macros and helpers shared by every test file.
 *
 * Each test is a function `TEST_IMPL(name)` listed in test-list.h.  The
 * runner (runner.c) runs every test in its own fork()ed child with a
 * timeout, so a test may crash, hang or leak threads without affecting the
 * others.  Assertions are never compiled out (they do not use assert()); a
 * failing one prints both operands and ends the child with exit status 1.
 */
#ifndef GILFREE_TESTS_RUNNER_H
#define GILFREE_TESTS_RUNNER_H

#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "gilfree/gilfree.h"

#define TEST_IMPL(name)             \
    void gft_test_##name(void);     \
    void gft_test_##name(void)

/* Exit status a child uses to say "skipped". */
#define GFT_EXIT_SKIP 77

#if defined(__GNUC__)
#define GFT_PRINTF(fmt_index, first_arg) \
    __attribute__((format(printf, fmt_index, first_arg)))
#define GFT_NORETURN __attribute__((noreturn))
#else
#define GFT_PRINTF(fmt_index, first_arg)
#define GFT_NORETURN
#endif

GFT_NORETURN void gft_fail(const char *file, int line, const char *fmt, ...)
    GFT_PRINTF(3, 4);
GFT_NORETURN void gft_skip(const char *fmt, ...) GFT_PRINTF(1, 2);

#define GFT__CMP(type, fmt, a, op, b)                                              \
    do {                                                                           \
        type gft__a = (type)(a);                                                   \
        type gft__b = (type)(b);                                                   \
        if (!(gft__a op gft__b)) {                                                 \
            gft_fail(__FILE__, __LINE__, "ASSERT(%s %s %s) failed: " fmt " %s " fmt, \
                     #a, #op, #b, gft__a, #op, gft__b);                            \
        }                                                                          \
    } while (0)

/* Signed comparisons (operands converted to int64_t). */
#define ASSERT_EQ(a, b) GFT__CMP(int64_t, "%" PRId64, a, ==, b)
#define ASSERT_NE(a, b) GFT__CMP(int64_t, "%" PRId64, a, !=, b)
#define ASSERT_LT(a, b) GFT__CMP(int64_t, "%" PRId64, a, <, b)
#define ASSERT_LE(a, b) GFT__CMP(int64_t, "%" PRId64, a, <=, b)
#define ASSERT_GT(a, b) GFT__CMP(int64_t, "%" PRId64, a, >, b)
#define ASSERT_GE(a, b) GFT__CMP(int64_t, "%" PRId64, a, >=, b)

/* Unsigned 64-bit comparisons. */
#define ASSERT_U64_EQ(a, b) GFT__CMP(uint64_t, "%" PRIu64, a, ==, b)
#define ASSERT_U64_NE(a, b) GFT__CMP(uint64_t, "%" PRIu64, a, !=, b)
#define ASSERT_U64_LE(a, b) GFT__CMP(uint64_t, "%" PRIu64, a, <=, b)

#define ASSERT_PTR_EQ(a, b) GFT__CMP(const void *, "%p", a, ==, b)
#define ASSERT_PTR_NE(a, b) GFT__CMP(const void *, "%p", a, !=, b)
#define ASSERT_NULL(a) ASSERT_PTR_EQ(a, NULL)
#define ASSERT_NOT_NULL(a) ASSERT_PTR_NE(a, NULL)

#define ASSERT(expr)                                                   \
    do {                                                               \
        if (!(expr)) {                                                 \
            gft_fail(__FILE__, __LINE__, "ASSERT(%s) failed", #expr);  \
        }                                                              \
    } while (0)

#define ASSERT_STR_EQ(a, b)                                                         \
    do {                                                                            \
        const char *gft__a = (a);                                                   \
        const char *gft__b = (b);                                                   \
        if (gft__a == NULL || gft__b == NULL || strcmp(gft__a, gft__b) != 0) {      \
            gft_fail(__FILE__, __LINE__,                                            \
                     "ASSERT_STR_EQ(%s, %s) failed: \"%s\" != \"%s\"", #a, #b,      \
                     gft__a ? gft__a : "(null)", gft__b ? gft__b : "(null)");       \
        }                                                                           \
    } while (0)

/* A core call that must return 0. */
#define ASSERT_OK(expr)                                                           \
    do {                                                                          \
        int gft__rc = (expr);                                                     \
        if (gft__rc != 0) {                                                       \
            gft_fail(__FILE__, __LINE__, "ASSERT_OK(%s) failed: %d (%s: %s)",     \
                     #expr, gft__rc, gf_err_name(gft__rc), gf_strerror(gft__rc)); \
        }                                                                         \
    } while (0)

/* A core call that must return a given GF_E* code. */
#define ASSERT_ERR(expr, code)                                                       \
    do {                                                                             \
        int gft__rc = (expr);                                                        \
        int gft__want = (code);                                                      \
        if (gft__rc != gft__want) {                                                  \
            gft_fail(__FILE__, __LINE__, "ASSERT_ERR(%s, %s) failed: got %d (%s), "  \
                     "want %d (%s)", #expr, #code, gft__rc, gf_err_name(gft__rc),    \
                     gft__want, gf_err_name(gft__want));                             \
        }                                                                            \
    } while (0)

#define TEST_SKIP(...) gft_skip(__VA_ARGS__)

/* --- helpers (runner.c) ---------------------------------------------------- */

/* Integer from the environment, or def if unset or unparsable. */
int64_t gft_env_int(const char *name, int64_t def);

void gft_sleep_ms(int64_t ms);

/* pthread_create / pthread_join that fail the test on error. */
void gft_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg);
void gft_thread_join(pthread_t thread);

/* Spin-sleep until ec->waiters >= n, then give the waiters a moment to
 * reach the kernel.  Hangs (and so times out) if they never arrive. */
void gft_wait_for_waiters(gf_ec_t *ec, uint32_t n);

/* Nonzero when built with ThreadSanitizer / AddressSanitizer. */
int gft_under_tsan(void);
int gft_under_asan(void);

/* Install a no-op handler for sig without SA_RESTART, so that it interrupts
 * sleeps with EINTR. */
void gft_install_interrupting_handler(int sig);

/* Times the handler installed above has run (any thread). */
uint64_t gft_signal_count(void);

#endif /* GILFREE_TESTS_RUNNER_H */
