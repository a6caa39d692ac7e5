/* gilfree C tests: the runner.
 *
 *   gilfree-core-tests              run every test
 *   gilfree-core-tests NAME...      run the tests whose names match (shell
 *                                   wildcards allowed: 'queue_*')
 *   gilfree-core-tests --list       print the test names
 *   gilfree-core-tests --no-fork NAME
 *                                   run one test in this process (debugger)
 *
 * Each test runs in a fork()ed child placed in its own process group; the
 * parent kills the group when the test's timeout (test-list.h, multiplied by
 * $GF_TEST_TIMEOUT_MULTIPLIER, default 1) expires.  The last line printed is
 * "N passed, N failed" (skipped tests count as passed and are listed above).
 */
#include <errno.h>
#include <fnmatch.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runner.h"
#include "test-list.h"

#define GFT__DECLARE(name, timeout_s) TEST_IMPL(name);
GFT_TEST_LIST(GFT__DECLARE)
#undef GFT__DECLARE

typedef struct gft_entry {
    const char *name;
    void (*fn)(void);
    double timeout_s;
} gft_entry_t;

static const gft_entry_t gft_tests[] = {
#define GFT__ENTRY(name, timeout_s) {#name, gft_test_##name, timeout_s},
    GFT_TEST_LIST(GFT__ENTRY)
#undef GFT__ENTRY
};

#define GFT_NTESTS (sizeof(gft_tests) / sizeof(gft_tests[0]))

/* --- failure reporting (in the child) -------------------------------------- */

void
gft_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stdout);
    fflush(stderr);
    /* _exit, not exit or abort: other test threads may still run, and we
     * want neither atexit work racing them nor core files. */
    _exit(1);
}

void
gft_skip(const char *fmt, ...)
{
    va_list ap;
    fputs("skip: ", stdout);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    fflush(stderr);
    _exit(GFT_EXIT_SKIP);
}

/* --- helpers ------------------------------------------------------------- */

int64_t
gft_env_int(const char *name, int64_t def)
{
    const char *text = getenv(name);
    if (text == NULL || *text == '\0') {
        return def;
    }
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0') {
        fprintf(stderr, "ignoring %s=%s (not an integer)\n", name, text);
        return def;
    }
    return (int64_t)v;
}

void
gft_sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void
gft_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg)
{
    int rc = pthread_create(thread, NULL, fn, arg);
    if (rc != 0) {
        gft_fail(__FILE__, __LINE__, "pthread_create failed: %s", strerror(rc));
    }
}

void
gft_thread_join(pthread_t thread)
{
    int rc = pthread_join(thread, NULL);
    if (rc != 0) {
        gft_fail(__FILE__, __LINE__, "pthread_join failed: %s", strerror(rc));
    }
}

void
gft_wait_for_waiters(gf_ec_t *ec, uint32_t n)
{
    while (atomic_load(&ec->waiters) < n) {
        gft_sleep_ms(1);
    }
    gft_sleep_ms(20);
}

int
gft_under_tsan(void)
{
#if defined(__SANITIZE_THREAD__)
    return 1;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
    return 1;
#else
    return 0;
#endif
#else
    return 0;
#endif
}

int
gft_under_asan(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return 1;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return 1;
#else
    return 0;
#endif
#else
    return 0;
#endif
}

static _Atomic uint64_t gft_signals_seen;

static void
gft_count_signal(int sig)
{
    (void)sig;
    /* Lock-free atomic: async-signal-safe; errno untouched. */
    atomic_fetch_add_explicit(&gft_signals_seen, 1, memory_order_relaxed);
}

void
gft_install_interrupting_handler(int sig)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = gft_count_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: interrupted sleeps return EINTR */
    if (sigaction(sig, &sa, NULL) != 0) {
        gft_fail(__FILE__, __LINE__, "sigaction failed: %s", strerror(errno));
    }
}

uint64_t
gft_signal_count(void)
{
    return atomic_load_explicit(&gft_signals_seen, memory_order_relaxed);
}

/* --- the runner (parent) --------------------------------------------------- */

static volatile sig_atomic_t gft_child_pid;

static void
gft_on_terminate(int sig)
{
    pid_t pid = gft_child_pid;
    if (pid > 0) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static double
gft_timeout_multiplier(void)
{
    const char *text = getenv("GF_TEST_TIMEOUT_MULTIPLIER");
    if (text == NULL || *text == '\0') {
        return 1.0;
    }
    char *end;
    double m = strtod(text, &end);
    if (*end != '\0' || !(m > 0.0)) {
        fprintf(stderr, "ignoring GF_TEST_TIMEOUT_MULTIPLIER=%s\n", text);
        return 1.0;
    }
    return m;
}

static double
gft_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

enum { GFT_PASS, GFT_FAIL, GFT_SKIP };

/* Run one test in a child; returns GFT_PASS, GFT_FAIL or GFT_SKIP. */
static int
gft_run_one(const gft_entry_t *t, int number, double multiplier)
{
    double timeout = t->timeout_s * multiplier;
    fflush(stdout);
    fflush(stderr);
    double start = gft_now_s();
    pid_t pid = fork();
    if (pid < 0) {
        printf("not ok %d - %s: fork failed: %s\n", number, t->name, strerror(errno));
        return GFT_FAIL;
    }
    if (pid == 0) {
        setpgid(0, 0);
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        t->fn();
        fflush(stdout);
        fflush(stderr);
        exit(0); /* exit, not _exit: sanitizers' leak checks run at exit */
    }
    setpgid(pid, pid); /* also from here, to win the race with kill(-pid) */
    gft_child_pid = pid;

    int status = 0;
    int timed_out = 0;
    int64_t nap_ms = 1;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            break;
        }
        if (r < 0 && errno != EINTR) {
            printf("not ok %d - %s: waitpid failed: %s\n", number, t->name,
                   strerror(errno));
            gft_child_pid = 0;
            return GFT_FAIL;
        }
        if (gft_now_s() - start > timeout) {
            timed_out = 1;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            break;
        }
        gft_sleep_ms(nap_ms);
        if (nap_ms < 20) {
            nap_ms *= 2;
        }
    }
    gft_child_pid = 0;
    /* Reap anything the test left behind in its group (fork tests). */
    kill(-pid, SIGKILL);

    double elapsed_ms = (gft_now_s() - start) * 1000.0;
    if (timed_out) {
        printf("not ok %d - %s: timed out after %.1f s\n", number, t->name, timeout);
        return GFT_FAIL;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("ok %d - %s (%.0f ms)\n", number, t->name, elapsed_ms);
        return GFT_PASS;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == GFT_EXIT_SKIP) {
        printf("ok %d - %s # SKIP (%.0f ms)\n", number, t->name, elapsed_ms);
        return GFT_SKIP;
    }
    if (WIFEXITED(status)) {
        printf("not ok %d - %s: exit status %d\n", number, t->name, WEXITSTATUS(status));
    }
    else if (WIFSIGNALED(status)) {
        printf("not ok %d - %s: killed by signal %d (%s)\n", number, t->name,
               WTERMSIG(status), strsignal(WTERMSIG(status)));
    }
    else {
        printf("not ok %d - %s: status 0x%x\n", number, t->name, (unsigned)status);
    }
    return GFT_FAIL;
}

static int
gft_selected(const char *name, int argc, char **argv, int first)
{
    if (first >= argc) {
        return 1;
    }
    for (int i = first; i < argc; i++) {
        if (fnmatch(argv[i], name, 0) == 0) {
            return 1;
        }
    }
    return 0;
}

static void
gft_usage(const char *prog)
{
    fprintf(stderr, "usage: %s [--list] [--no-fork] [NAME|PATTERN ...]\n", prog);
}

int
main(int argc, char **argv)
{
    int first = 1;
    int no_fork = 0;
    while (first < argc && argv[first][0] == '-') {
        if (strcmp(argv[first], "--list") == 0) {
            for (size_t i = 0; i < GFT_NTESTS; i++) {
                printf("%s\n", gft_tests[i].name);
            }
            return 0;
        }
        else if (strcmp(argv[first], "--no-fork") == 0) {
            no_fork = 1;
        }
        else if (strcmp(argv[first], "--help") == 0 || strcmp(argv[first], "-h") == 0) {
            gft_usage(argv[0]);
            return 0;
        }
        else {
            gft_usage(argv[0]);
            return 2;
        }
        first++;
    }

    /* Unknown names are an error, not a silent "0 passed". */
    for (int i = first; i < argc; i++) {
        int matched = 0;
        for (size_t k = 0; k < GFT_NTESTS; k++) {
            matched |= fnmatch(argv[i], gft_tests[k].name, 0) == 0;
        }
        if (!matched) {
            fprintf(stderr, "no test matches '%s' (see --list)\n", argv[i]);
            return 2;
        }
    }

    if (no_fork) {
        if (argc - first != 1) {
            fprintf(stderr, "--no-fork runs exactly one test\n");
            return 2;
        }
        for (size_t k = 0; k < GFT_NTESTS; k++) {
            if (fnmatch(argv[first], gft_tests[k].name, 0) == 0) {
                gft_tests[k].fn();
                printf("ok - %s\n", gft_tests[k].name);
                return 0;
            }
        }
        return 2;
    }

    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGTERM, gft_on_terminate);
    signal(SIGINT, gft_on_terminate);

    double multiplier = gft_timeout_multiplier();
    int passed = 0;
    int failed = 0;
    int skipped = 0;
    int number = 0;
    for (size_t i = 0; i < GFT_NTESTS; i++) {
        if (!gft_selected(gft_tests[i].name, argc, argv, first)) {
            continue;
        }
        int r = gft_run_one(&gft_tests[i], ++number, multiplier);
        if (r == GFT_FAIL) {
            failed++;
        }
        else {
            passed++;
            skipped += r == GFT_SKIP;
        }
    }
    if (skipped > 0) {
        printf("(%d skipped, counted as passed)\n", skipped);
    }
    printf("%d passed, %d failed\n", passed, failed);
    fflush(stdout);
    return failed == 0 ? 0 : 1;
}
