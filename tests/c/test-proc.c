/* Tests: process handles, the supervisor, the worker's parent watch.
 *
 * Every process these tests start is a real fork()ed child that ends in a
 * real way (exit code, SIGKILL, SIGSEGV, _exit); the helpers gate them on a
 * pipe so that each test decides when they end.  Forked helpers use _exit
 * only (no atexit work, no sanitizer leak check in a copy of the test).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/core/internal.h"
#include "runner.h"

/* --- helpers ------------------------------------------------------------------ */

static double
gft_multiplier(void)
{
    const char *text = getenv("GF_TEST_TIMEOUT_MULTIPLIER");
    double m = text != NULL ? strtod(text, NULL) : 1.0;
    return m > 0.0 ? m : 1.0;
}

/* A generous bound for "promptly", scaled for slow (sanitizer) runs. */
static int64_t
gft_ms(int64_t ms)
{
    return (int64_t)((double)ms * gft_multiplier());
}

static int64_t
gft_elapsed_ms(int64_t start_ns)
{
    return (gf_now_ns() - start_ns) / 1000000;
}

static int
gft_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        return -1;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n; /* includes the directory's own descriptor, every time */
}

/* Nonzero when pid is no child of ours any more (reaped: no zombie). */
static int
gft_reaped(pid_t pid)
{
    int status;
    return waitpid(pid, &status, WNOHANG) < 0 && errno == ECHILD;
}

/* waitpid with a time limit (ms); fails the test when it runs out. */
static int
gft_waitpid_ms(pid_t pid, int64_t ms)
{
    int64_t start = gf_now_ns();
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            return status;
        }
        if (r < 0 && errno != EINTR) {
            gft_fail(__FILE__, __LINE__, "waitpid(%d): %s", (int)pid, strerror(errno));
        }
        if (gft_elapsed_ms(start) > ms) {
            gft_fail(__FILE__, __LINE__, "process %d still running after %" PRId64 " ms",
                     (int)pid, ms);
        }
        gft_sleep_ms(1);
    }
}

/* Read one int from a pipe, waiting at most ms. */
static int
gft_read_int(int fd, int64_t ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    int r;
    while ((r = poll(&p, 1, (int)ms)) < 0 && errno == EINTR) {
    }
    if (r != 1) {
        gft_fail(__FILE__, __LINE__, "nothing to read from the pipe after %" PRId64 " ms", ms);
    }
    int v;
    if (read(fd, &v, sizeof(v)) != (ssize_t)sizeof(v)) {
        gft_fail(__FILE__, __LINE__, "short read from the pipe");
    }
    return v;
}

static void
gft_write_int(int fd, int v)
{
    ssize_t r = write(fd, &v, sizeof(v));
    (void)r;
}

/* How a helper child ends once its gate opens. */
enum {
    GFT_END_CODE,    /* exit(arg) */
    GFT_END_KILL,    /* raise(SIGKILL) */
    GFT_END_SEGV,    /* a real segfault (raise(SIGSEGV) with the default action) */
    GFT_END_UEXIT0,  /* _exit(0), like os._exit(0) */
    GFT_END_SLEEP,   /* sleep until killed */
};

typedef struct gft_child {
    pid_t pid;
    int gate; /* write end: close it (or write) to let the child go on */
} gft_child_t;

GFT_NORETURN static void
gft_child_end(int how, int arg)
{
    switch (how) {
    case GFT_END_CODE:
        _exit(arg);
    case GFT_END_KILL:
        raise(SIGKILL);
        break;
    case GFT_END_SEGV:
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
        break;
    case GFT_END_UEXIT0:
        _exit(0);
    default:
        for (;;) {
            pause();
        }
    }
    _exit(99);
}

/* Close every descriptor from fd up (in a forked child). */
static void
gft_close_from(int fd)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)fd, ~0u, 0u) == 0) {
        return;
    }
#endif
    for (int i = fd; i < 4096; i++) { /* before Linux 5.9 */
        close(i);
    }
}

/* Fork a child that waits for its gate (EOF on a pipe), then ends `how`. */
static gft_child_t
gft_spawn(int how, int arg)
{
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        /* Keep only our gate's read end (as fd 3): siblings forked later
         * must not hold our gate's write end, or closing it would not
         * release us. */
        if (p[0] != 3 && dup2(p[0], 3) != 3) {
            _exit(98);
        }
        gft_close_from(4);
        char c;
        while (read(3, &c, 1) < 0 && errno == EINTR) {
        }
        gft_child_end(how, arg);
    }
    close(p[0]);
    gft_child_t c = {pid, p[1]};
    return c;
}

static void
gft_release(gft_child_t *c)
{
    if (c->gate >= 0) {
        close(c->gate);
        c->gate = -1;
    }
}

/* Kernel version >= major.minor?  (PIDFD_INFO_EXIT: 6.15.) */
static int
gft_kernel_at_least(int major, int minor)
{
    struct utsname u;
    if (uname(&u) != 0) {
        return 0;
    }
    int ma = 0, mi = 0;
    if (sscanf(u.release, "%d.%d", &ma, &mi) != 2) {
        return 0;
    }
    return ma > major || (ma == major && mi >= minor);
}

static int
gft_have_pidfds(void)
{
    gf_proc_t self;
    int rc = gf_proc_open(getpid(), &self);
    if (rc == GF_ENOSYS) {
        return 0;
    }
    ASSERT_OK(rc);
    ASSERT_OK(gf_proc_close(&self));
    return 1;
}

#define GFT_NEED_PIDFDS()                                               \
    do {                                                                \
        if (!gft_have_pidfds()) {                                       \
            TEST_SKIP("no pidfd_open on this system (Linux 5.3+)");     \
        }                                                               \
    } while (0)

/* --- descriptions ------------------------------------------------------------------ */

static void
gft_expect_describe(const gf_exit_t *e, const char *want)
{
    char buf[128];
    int len = gf_exit_describe(e, buf, sizeof(buf));
    ASSERT_STR_EQ(buf, want);
    ASSERT_EQ(len, (int64_t)strlen(want));
}

TEST_IMPL(proc_exit_describe)
{
    gf_exit_t e;
    gf_exit_from_wait_status(3 << 8, 1234, &e); /* exit(3) */
    ASSERT_EQ(e.kind, GF_EXIT_CODE);
    ASSERT_EQ(e.code, 3);
    ASSERT_EQ(e.pid, 1234);
    ASSERT_EQ(e.timed_out, 0);
    gft_expect_describe(&e, "exited with code 3");

    gf_exit_from_wait_status(SIGKILL, 1, &e);
    ASSERT_EQ(e.kind, GF_EXIT_SIGNAL);
    ASSERT_EQ(e.code, SIGKILL);
    ASSERT_EQ(e.core_dumped, 0);
    gft_expect_describe(&e, "killed by signal 9 (SIGKILL)");

    gf_exit_from_wait_status(SIGSEGV | 0x80, 1, &e); /* dumped core */
    ASSERT_EQ(e.kind, GF_EXIT_SIGNAL);
    ASSERT_EQ(e.code, SIGSEGV);
    ASSERT_EQ(e.core_dumped, 1);
    gft_expect_describe(&e, "killed by signal 11 (SIGSEGV, core dumped)");

    e.kind = GF_EXIT_SIGNAL;
    e.core_dumped = 0;
    e.code = SIGRTMIN + 2;
    char want[64];
    snprintf(want, sizeof(want), "killed by signal %d (SIGRTMIN+2)", SIGRTMIN + 2);
    gft_expect_describe(&e, want);
    e.code = 200; /* no such signal */
    gft_expect_describe(&e, "killed by signal 200");

    gf_exit_from_wait_status(0x137f, 1, &e); /* "stopped by SIGSTOP": not an end */
    ASSERT_EQ(e.kind, GF_EXIT_UNKNOWN);
    gft_expect_describe(&e, "exited (status unknown)");

    ASSERT_STR_EQ(gf_signal_name(SIGTERM), "SIGTERM");
    ASSERT_STR_EQ(gf_signal_name(SIGBUS), "SIGBUS");
    ASSERT_STR_EQ(gf_signal_name(SIGABRT), "SIGABRT");
    ASSERT_NULL(gf_signal_name(0));
    ASSERT_NULL(gf_signal_name(-1));
    ASSERT_NULL(gf_signal_name(SIGRTMIN));

    /* snprintf semantics: cut, NUL-terminated, full length returned. */
    gf_exit_from_wait_status(SIGKILL, 1, &e);
    char small[8];
    int len = gf_exit_describe(&e, small, sizeof(small));
    ASSERT_EQ(len, (int64_t)strlen("killed by signal 9 (SIGKILL)"));
    ASSERT_STR_EQ(small, "killed ");
    ASSERT_EQ(gf_exit_describe(&e, NULL, 0), len);
    ASSERT_ERR(gf_exit_describe(NULL, small, sizeof(small)), GF_EINVAL);
    ASSERT_ERR(gf_exit_describe(&e, NULL, 4), GF_EINVAL);
}

/* --- gf_proc_t --------------------------------------------------------------------- */

static void
gft_check_child(int how, int arg, int kind, int code)
{
    gft_child_t c = gft_spawn(how, arg);
    gf_proc_t p;
    ASSERT_OK(gf_proc_open(c.pid, &p));
    ASSERT_GE(p.fd, 0);
    ASSERT(fcntl(p.fd, F_GETFD) & FD_CLOEXEC);
    ASSERT_EQ(p.pid, c.pid);

    gf_exit_t e;
    ASSERT_ERR(gf_proc_poll_exit(&p, 0, &e), GF_EAGAIN); /* waits at its gate */
    ASSERT_ERR(gf_proc_wait_exit(&p, 1000000, 0, &e), GF_ETIMEDOUT);
    ASSERT_OK(gf_proc_signal(&p, 0)); /* alive */
    gft_release(&c);

    ASSERT_OK(gf_proc_wait_exit(&p, gft_ms(5000) * 1000000, 0, &e));
    ASSERT_EQ(e.kind, kind);
    ASSERT_EQ(e.code, code);
    ASSERT_EQ(e.pid, c.pid);
    if (kind == GF_EXIT_CODE) {
        ASSERT_EQ(e.core_dumped, 0);
    }
    ASSERT(gft_reaped(c.pid));    /* no zombie left */
    ASSERT(p.exited);

    /* Cached: the same answer, although the child is long gone. */
    gf_exit_t again;
    ASSERT_OK(gf_proc_poll_exit(&p, 0, &again));
    ASSERT_EQ(again.kind, kind);
    ASSERT_EQ(again.code, code);
    ASSERT_ERR(gf_proc_signal(&p, SIGKILL), GF_ESRCH);

    int fd = p.fd;
    ASSERT_OK(gf_proc_close(&p));
    ASSERT_EQ(p.fd, -1);
    ASSERT_EQ(fcntl(fd, F_GETFD), -1);
    ASSERT_OK(gf_proc_close(&p)); /* idempotent */
}

TEST_IMPL(proc_child_exit)
{
    GFT_NEED_PIDFDS();
    gft_check_child(GFT_END_CODE, 3, GF_EXIT_CODE, 3);
    gft_check_child(GFT_END_UEXIT0, 0, GF_EXIT_CODE, 0);
    gft_check_child(GFT_END_KILL, 0, GF_EXIT_SIGNAL, SIGKILL);
    gft_check_child(GFT_END_SEGV, 0, GF_EXIT_SIGNAL, SIGSEGV);

    /* A signal sent through the handle. */
    gft_child_t c = gft_spawn(GFT_END_SLEEP, 0);
    gf_proc_t p;
    ASSERT_OK(gf_proc_open(c.pid, &p));
    ASSERT_OK(gf_proc_signal(&p, SIGTERM));
    gf_exit_t e;
    ASSERT_OK(gf_proc_wait_exit(&p, -1, 0, &e));
    ASSERT_EQ(e.kind, GF_EXIT_SIGNAL);
    ASSERT_EQ(e.code, SIGTERM);
    ASSERT(gft_reaped(c.pid));
    ASSERT_OK(gf_proc_close(&p));
    gft_release(&c);
}

TEST_IMPL(proc_noreap_and_validation)
{
    GFT_NEED_PIDFDS();
    /* GF_PROC_NOREAP: the status, and the zombie is left to its owner. */
    gft_child_t c = gft_spawn(GFT_END_CODE, 5);
    gf_proc_t p;
    ASSERT_OK(gf_proc_open(c.pid, &p));
    gft_release(&c);
    gf_exit_t e;
    ASSERT_OK(gf_proc_wait_exit(&p, -1, GF_PROC_NOREAP, &e));
    ASSERT_EQ(e.kind, GF_EXIT_CODE);
    ASSERT_EQ(e.code, 5);
    int status = gft_waitpid_ms(c.pid, 1000);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 5);
    ASSERT_OK(gf_proc_close(&p));

    /* Somebody else reaped our child first (multiprocessing's waitpid):
     * the handle still says it ended. */
    c = gft_spawn(GFT_END_CODE, 6);
    ASSERT_OK(gf_proc_open(c.pid, &p));
    gft_release(&c);
    gft_waitpid_ms(c.pid, gft_ms(5000));
    ASSERT_OK(gf_proc_wait_exit(&p, gft_ms(5000) * 1000000, 0, &e));
    if (gft_kernel_at_least(6, 15)) {
        ASSERT_EQ(e.kind, GF_EXIT_CODE); /* PIDFD_INFO_EXIT */
        ASSERT_EQ(e.code, 6);
    }
    else {
        ASSERT_EQ(e.kind, GF_EXIT_UNKNOWN);
    }
    ASSERT_OK(gf_proc_close(&p));

    /* A pid that no longer exists. */
    ASSERT_ERR(gf_proc_open(c.pid, &p), GF_ESRCH);
    ASSERT_EQ(p.fd, -1);

    ASSERT_ERR(gf_proc_open(0, &p), GF_EINVAL);
    ASSERT_ERR(gf_proc_open(-5, &p), GF_EINVAL);
    ASSERT_ERR(gf_proc_open(getpid(), NULL), GF_EINVAL);
    ASSERT_ERR(gf_proc_close(NULL), GF_EINVAL);
    gf_proc_t closed = GF_PROC_INIT;
    ASSERT_ERR(gf_proc_signal(&closed, SIGTERM), GF_EINVAL);
    ASSERT_ERR(gf_proc_poll_exit(&closed, 0, &e), GF_EINVAL);
    ASSERT_OK(gf_proc_open(getpid(), &p));
    ASSERT_ERR(gf_proc_poll_exit(&p, 0x80, &e), GF_EINVAL);
    ASSERT_ERR(gf_proc_poll_exit(&p, 0, NULL), GF_EINVAL);
    ASSERT_ERR(gf_proc_poll_exit(&p, 0, &e), GF_EAGAIN); /* ourselves: running */
    ASSERT_OK(gf_proc_close(&p));
}

typedef struct gft_waiter {
    gf_proc_t *p;
    int64_t timeout_ns;
    int result;
    _Atomic int done;
} gft_waiter_t;

static void *
gft_wait_thread(void *arg)
{
    gft_waiter_t *w = arg;
    gf_exit_t e;
    w->result = gf_proc_wait_exit(w->p, w->timeout_ns, 0, &e);
    atomic_store(&w->done, 1);
    return NULL;
}

/* A signal handler running during the wait ends it with GF_EINTR (the
 * caller checks its signals, e.g. Ctrl-C, and waits again). */
TEST_IMPL(proc_wait_eintr)
{
    GFT_NEED_PIDFDS();
    gft_install_interrupting_handler(SIGUSR1);
    gft_child_t c = gft_spawn(GFT_END_SLEEP, 0);
    gf_proc_t p;
    ASSERT_OK(gf_proc_open(c.pid, &p));
    int64_t timeouts[2] = {-1, 60 * GF__NS_PER_SEC};
    for (int i = 0; i < 2; i++) {
        gft_waiter_t w = {&p, timeouts[i], 0, 0};
        pthread_t t;
        gft_thread_start(&t, gft_wait_thread, &w);
        while (!atomic_load(&w.done)) {
            pthread_kill(t, SIGUSR1);
            gft_sleep_ms(10);
        }
        gft_thread_join(t);
        ASSERT_ERR(w.result, GF_EINTR);
    }
    ASSERT_GE(gft_signal_count(), 1);
    ASSERT_OK(gf_proc_signal(&p, SIGKILL));
    gf_exit_t e;
    ASSERT_OK(gf_proc_wait_exit(&p, -1, 0, &e));
    ASSERT_EQ(e.code, SIGKILL);
    ASSERT_OK(gf_proc_close(&p));
    gft_release(&c);
}

/* A grandchild, reaped by its own parent (as the forkserver reaps the
 * workers): exact status on Linux 6.15+, "unknown" before. */
TEST_IMPL(proc_nonchild_status)
{
    GFT_NEED_PIDFDS();
    for (int delay_ms = 0; delay_ms <= 60; delay_ms += 60) {
        int pids[2], gate[2];
        ASSERT_EQ(pipe(pids), 0);
        ASSERT_EQ(pipe(gate), 0);
        fflush(stdout);
        pid_t mid = fork();
        ASSERT_GE(mid, 0);
        if (mid == 0) {
            /* The intermediate: start the grandchild, reap it (after a
             * delay, the second time round), then exit. */
            pid_t g = fork();
            if (g < 0) {
                _exit(90);
            }
            if (g == 0) {
                char ch;
                close(gate[1]);
                while (read(gate[0], &ch, 1) < 0 && errno == EINTR) {
                }
                _exit(7);
            }
            close(gate[0]);
            close(gate[1]);
            gft_write_int(pids[1], (int)g);
            /* Wait for it to end without reaping (WNOWAIT), pause, reap. */
            siginfo_t si;
            while (waitid(P_PID, (id_t)g, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR) {
            }
            gft_sleep_ms(delay_ms);
            int st;
            while (waitpid(g, &st, 0) < 0 && errno == EINTR) {
            }
            _exit(0);
        }
        close(pids[1]);
        close(gate[0]);
        pid_t g = gft_read_int(pids[0], gft_ms(5000));
        close(pids[0]);
        gf_proc_t p;
        ASSERT_OK(gf_proc_open(g, &p));
        gf_exit_t e;
        ASSERT_ERR(gf_proc_poll_exit(&p, 0, &e), GF_EAGAIN);
        close(gate[1]); /* let it go */
        ASSERT_OK(gf_proc_wait_exit(&p, gft_ms(5000) * 1000000, 0, &e));
        ASSERT_EQ(e.pid, g);
        if (gft_kernel_at_least(6, 15)) {
            ASSERT_EQ(e.kind, GF_EXIT_CODE);
            ASSERT_EQ(e.code, 7);
        }
        else {
            ASSERT_EQ(e.kind, GF_EXIT_UNKNOWN);
        }
        ASSERT_OK(gf_proc_close(&p));
        int st = gft_waitpid_ms(mid, gft_ms(5000));
        ASSERT(WIFEXITED(st));
        ASSERT_EQ(WEXITSTATUS(st), 0);
    }
    if (!gft_kernel_at_least(6, 15)) {
        printf("note: kernel older than 6.15: a non-child's exit status is unknown "
               "(no PIDFD_INFO_EXIT)\n");
    }
}

/* --- the supervisor ------------------------------------------------------------------ */

#define GFT_MAX_EVENTS 16

typedef struct gft_event {
    uint64_t tag;
    gf_exit_t ex;
    int64_t at_ns;
} gft_event_t;

typedef struct gft_log {
    pthread_mutex_t lock;
    gft_event_t events[GFT_MAX_EVENTS];
    int n;
    /* behaviour */
    gf_supervisor_t *sup;
    int sleep_ms;              /* in the callback */
    _Atomic int entered;       /* callbacks entered */
    _Atomic int finished;      /* callbacks returned */
    uint64_t rewatch_tag;      /* on this tag's callback: unwatch it (own), */
    pid_t rewatch_pid;         /* then watch this pid under the same tag */
    _Atomic int rewatch_rc1;
    _Atomic int rewatch_rc2;
    _Atomic int wrong_thread;
} gft_log_t;

static pthread_t gft_main;

static void
gft_log_init(gft_log_t *log)
{
    memset(log, 0, sizeof(*log));
    pthread_mutex_init(&log->lock, NULL);
    gft_main = pthread_self();
}

static void
gft_on_exit(void *userdata, uint64_t tag, const gf_exit_t *ex)
{
    gft_log_t *log = userdata;
    atomic_fetch_add(&log->entered, 1);
    if (pthread_equal(pthread_self(), gft_main)) {
        atomic_store(&log->wrong_thread, 1);
    }
    if (log->sleep_ms > 0) {
        gft_sleep_ms(log->sleep_ms);
    }
    if (log->rewatch_pid > 0 && tag == log->rewatch_tag) {
        atomic_store(&log->rewatch_rc1, gf_supervisor_unwatch(log->sup, tag));
        atomic_store(&log->rewatch_rc2,
                     gf_supervisor_watch(log->sup, log->rewatch_pid, tag, 0));
        log->rewatch_pid = 0;
    }
    pthread_mutex_lock(&log->lock);
    if (log->n < GFT_MAX_EVENTS) {
        log->events[log->n].tag = tag;
        log->events[log->n].ex = *ex;
        log->events[log->n].at_ns = gf_now_ns();
        log->n++;
    }
    pthread_mutex_unlock(&log->lock);
    atomic_fetch_add(&log->finished, 1);
}

static int
gft_log_count(gft_log_t *log)
{
    pthread_mutex_lock(&log->lock);
    int n = log->n;
    pthread_mutex_unlock(&log->lock);
    return n;
}

static void
gft_log_wait(gft_log_t *log, int n, int64_t ms)
{
    int64_t start = gf_now_ns();
    while (gft_log_count(log) < n) {
        if (gft_elapsed_ms(start) > ms) {
            gft_fail(__FILE__, __LINE__, "%d of %d callbacks after %" PRId64 " ms",
                     gft_log_count(log), n, ms);
        }
        gft_sleep_ms(1);
    }
}

static const gft_event_t *
gft_log_find(gft_log_t *log, uint64_t tag)
{
    const gft_event_t *found = NULL;
    pthread_mutex_lock(&log->lock);
    for (int i = 0; i < log->n; i++) {
        if (log->events[i].tag == tag) {
            ASSERT_NULL(found); /* once per watch */
            found = &log->events[i];
        }
    }
    pthread_mutex_unlock(&log->lock);
    if (found == NULL) {
        gft_fail(__FILE__, __LINE__, "no callback for tag %" PRIu64, tag);
    }
    return found;
}

TEST_IMPL(sup_callbacks)
{
    GFT_NEED_PIDFDS();
    /* Fork everything before the supervisor's thread exists. */
    enum { N = 5 };
    static const int how[N] = {GFT_END_CODE, GFT_END_KILL, GFT_END_SEGV, GFT_END_UEXIT0,
                               GFT_END_CODE};
    static const int arg[N] = {3, 0, 0, 0, 42};
    static const int kind[N] = {GF_EXIT_CODE, GF_EXIT_SIGNAL, GF_EXIT_SIGNAL, GF_EXIT_CODE,
                                GF_EXIT_CODE};
    static const int code[N] = {3, SIGKILL, SIGSEGV, 0, 42};
    gft_child_t c[N];
    for (int i = 0; i < N; i++) {
        c[i] = gft_spawn(how[i], arg[i]);
    }
    /* The last one has ended (a zombie) before it is watched. */
    gft_release(&c[N - 1]);
    siginfo_t si;
    ASSERT_EQ(waitid(P_PID, (id_t)c[N - 1].pid, &si, WEXITED | WNOWAIT), 0);

    gft_log_t log;
    gft_log_init(&log);
    gf_supervisor_t *sup;
    ASSERT_OK(gf_supervisor_new(gft_on_exit, &log, &sup));
    log.sup = sup;
    for (int i = 0; i < N; i++) {
        ASSERT_OK(gf_supervisor_watch(sup, c[i].pid, 100 + (uint64_t)i, 0));
    }
    gft_log_wait(&log, 1, gft_ms(5000)); /* the zombie, at once */
    ASSERT_EQ(gft_log_find(&log, 100 + N - 1)->ex.code, 42);

    int64_t start = gf_now_ns();
    for (int i = 0; i < N - 1; i++) {
        gft_release(&c[i]);
    }
    gft_log_wait(&log, N, gft_ms(5000));
    /* Promptly: no polling interval between the exits and the callbacks. */
    ASSERT_LT(gft_elapsed_ms(start), gft_ms(1000));
    for (int i = 0; i < N; i++) {
        const gft_event_t *ev = gft_log_find(&log, 100 + (uint64_t)i);
        ASSERT_EQ(ev->ex.pid, c[i].pid);
        ASSERT_EQ(ev->ex.kind, kind[i]);
        ASSERT_EQ(ev->ex.code, code[i]);
        ASSERT_EQ(ev->ex.timed_out, 0);
        ASSERT(gft_reaped(c[i].pid)); /* the supervisor reaped it */
    }
    ASSERT_EQ(atomic_load(&log.wrong_thread), 0);
    ASSERT_EQ(gf_supervisor_nwatches(sup), 0);
    char text[64];
    gf_exit_describe(&gft_log_find(&log, 102)->ex, text, sizeof(text));
    ASSERT_EQ(strncmp(text, "killed by signal 11 (SIGSEGV", 28), 0);
    gf_supervisor_free(sup);
    pthread_mutex_destroy(&log.lock);
}

TEST_IMPL(sup_unwatch)
{
    GFT_NEED_PIDFDS();
    gft_child_t a = gft_spawn(GFT_END_CODE, 1);
    gft_child_t b = gft_spawn(GFT_END_CODE, 2);
    gft_log_t log;
    gft_log_init(&log);
    gf_supervisor_t *sup;
    ASSERT_OK(gf_supervisor_new(gft_on_exit, &log, &sup));

    ASSERT_OK(gf_supervisor_watch(sup, a.pid, 1, 0));
    ASSERT_OK(gf_supervisor_watch(sup, b.pid, 2, GF_PROC_NOREAP));
    ASSERT_ERR(gf_supervisor_watch(sup, b.pid, 1, 0), GF_EBUSY); /* tag in use */
    ASSERT_ERR(gf_supervisor_watch(sup, 0, 3, 0), GF_EINVAL);
    ASSERT_ERR(gf_supervisor_watch(sup, a.pid, 3, 0x40), GF_EINVAL);
    ASSERT_ERR(gf_supervisor_watch(NULL, a.pid, 3, 0), GF_EINVAL);
    ASSERT_EQ(gf_supervisor_nwatches(sup), 2);

    ASSERT_OK(gf_supervisor_unwatch(sup, 1));
    ASSERT_ERR(gf_supervisor_unwatch(sup, 1), GF_EINVAL);
    ASSERT_ERR(gf_supervisor_unwatch(sup, 999), GF_EINVAL);
    ASSERT_EQ(gf_supervisor_nwatches(sup), 1);

    gft_release(&a);
    gft_release(&b);
    gft_log_wait(&log, 1, gft_ms(5000));
    gft_sleep_ms(50); /* room for a wrong callback for tag 1 */
    ASSERT_EQ(gft_log_count(&log), 1);
    const gft_event_t *ev = gft_log_find(&log, 2);
    ASSERT_EQ(ev->ex.kind, GF_EXIT_CODE);
    ASSERT_EQ(ev->ex.code, 2);

    /* Unwatched: left alone, so its zombie is still ours to reap; and
     * NOREAP left b's zombie too. */
    int st = gft_waitpid_ms(a.pid, gft_ms(5000));
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 1);
    st = gft_waitpid_ms(b.pid, 1000);
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 2);

    /* A pid that is gone. */
    ASSERT_ERR(gf_supervisor_watch(sup, a.pid, 4, 0), GF_ESRCH);
    ASSERT_ERR(gf_supervisor_set_deadline(sup, 4, 1), GF_EINVAL);
    ASSERT_ERR(gf_supervisor_signal(sup, 4, SIGTERM), GF_EINVAL);
    gf_supervisor_free(sup);
    pthread_mutex_destroy(&log.lock);
}

TEST_IMPL(sup_deadline)
{
    GFT_NEED_PIDFDS();
    gft_child_t a = gft_spawn(GFT_END_SLEEP, 0);
    gft_child_t b = gft_spawn(GFT_END_SLEEP, 0);
    gft_child_t c = gft_spawn(GFT_END_SLEEP, 0);
    gft_log_t log;
    gft_log_init(&log);
    gf_supervisor_t *sup;
    ASSERT_OK(gf_supervisor_new(gft_on_exit, &log, &sup));
    ASSERT_OK(gf_supervisor_watch(sup, a.pid, 1, 0));
    ASSERT_OK(gf_supervisor_watch(sup, b.pid, 2, 0));
    ASSERT_OK(gf_supervisor_watch(sup, c.pid, 3, 0));

    int64_t start = gf_now_ns();
    /* a: a far deadline first, then a near one (the thread must wake up
     * early for it); b: a deadline that is cleared again. */
    ASSERT_OK(gf_supervisor_set_deadline(sup, 1, start + 60 * GF__NS_PER_SEC));
    ASSERT_OK(gf_supervisor_set_deadline(sup, 2, start + 150 * 1000000));
    ASSERT_OK(gf_supervisor_set_deadline(sup, 1, start + 50 * 1000000));
    ASSERT_OK(gf_supervisor_set_deadline(sup, 2, 0));
    ASSERT_ERR(gf_supervisor_set_deadline(sup, 2, -1), GF_EINVAL);
    ASSERT_ERR(gf_supervisor_set_deadline(sup, 99, start), GF_EINVAL);

    gft_log_wait(&log, 1, gft_ms(5000));
    const gft_event_t *ev = gft_log_find(&log, 1);
    ASSERT_EQ(ev->ex.kind, GF_EXIT_SIGNAL);
    ASSERT_EQ(ev->ex.code, SIGKILL);
    ASSERT_EQ(ev->ex.timed_out, 1);
    ASSERT_EQ(ev->ex.pid, a.pid);
    ASSERT_GE(ev->at_ns, start + 50 * 1000000); /* never early */
    ASSERT_LT(ev->at_ns - start, gft_ms(1000) * 1000000);
    ASSERT(gft_reaped(a.pid));

    /* b's deadline was cleared: still alive well after it. */
    while (gf_now_ns() < start + 200 * 1000000) {
        gft_sleep_ms(5);
    }
    ASSERT_EQ(gft_log_count(&log), 1);
    ASSERT_OK(gf_supervisor_signal(sup, 2, SIGTERM));
    gft_log_wait(&log, 2, gft_ms(5000));
    ev = gft_log_find(&log, 2);
    ASSERT_EQ(ev->ex.kind, GF_EXIT_SIGNAL);
    ASSERT_EQ(ev->ex.code, SIGTERM);
    ASSERT_EQ(ev->ex.timed_out, 0);

    /* A deadline already past kills at once. */
    ASSERT_OK(gf_supervisor_set_deadline(sup, 3, gf_now_ns() - 1));
    gft_log_wait(&log, 3, gft_ms(5000));
    ev = gft_log_find(&log, 3);
    ASSERT_EQ(ev->ex.code, SIGKILL);
    ASSERT_EQ(ev->ex.timed_out, 1);
    ASSERT(gft_reaped(b.pid));
    ASSERT(gft_reaped(c.pid));
    gft_release(&a);
    gft_release(&b);
    gft_release(&c);
    gf_supervisor_free(sup);
    pthread_mutex_destroy(&log.lock);
}

/* unwatch from another thread waits for a callback in progress; a callback
 * may unwatch (its own watch: nothing to do) and watch again. */
TEST_IMPL(sup_callback_rules)
{
    GFT_NEED_PIDFDS();
    gft_child_t a = gft_spawn(GFT_END_CODE, 1);
    gft_child_t b = gft_spawn(GFT_END_CODE, 2);
    gft_child_t spare = gft_spawn(GFT_END_SLEEP, 0);
    gft_log_t log;
    gft_log_init(&log);
    gf_supervisor_t *sup;
    ASSERT_OK(gf_supervisor_new(gft_on_exit, &log, &sup));
    log.sup = sup;
    log.sleep_ms = 100;
    ASSERT_OK(gf_supervisor_watch(sup, a.pid, 1, 0));
    gft_release(&a);
    while (atomic_load(&log.entered) < 1) {
        gft_sleep_ms(1);
    }
    ASSERT_EQ(atomic_load(&log.finished), 0);
    ASSERT_ERR(gf_supervisor_unwatch(sup, 1), GF_EINVAL); /* waited for it */
    ASSERT_EQ(atomic_load(&log.finished), 1);

    /* Re-watch from the callback under the same tag. */
    log.sleep_ms = 0;
    log.rewatch_tag = 2;
    log.rewatch_pid = spare.pid;
    ASSERT_OK(gf_supervisor_watch(sup, b.pid, 2, 0));
    gft_release(&b);
    gft_log_wait(&log, 2, gft_ms(5000));
    ASSERT_ERR(atomic_load(&log.rewatch_rc1), GF_EINVAL);
    ASSERT_OK(atomic_load(&log.rewatch_rc2));
    ASSERT_EQ(gf_supervisor_nwatches(sup), 1);
    ASSERT_OK(gf_supervisor_signal(sup, 2, SIGKILL));
    gft_log_wait(&log, 3, gft_ms(5000));
    pthread_mutex_lock(&log.lock);
    ASSERT_EQ(log.events[1].tag, 2);
    ASSERT_EQ(log.events[1].ex.pid, b.pid);
    ASSERT_EQ(log.events[1].ex.code, 2);
    ASSERT_EQ(log.events[2].tag, 2);
    ASSERT_EQ(log.events[2].ex.pid, spare.pid);
    ASSERT_EQ(log.events[2].ex.code, SIGKILL);
    pthread_mutex_unlock(&log.lock);
    gft_release(&spare);
    gf_supervisor_free(sup);
    pthread_mutex_destroy(&log.lock);
}

/* free() with live watches returns promptly and leaves no descriptor. */
TEST_IMPL(sup_free_no_leak)
{
    GFT_NEED_PIDFDS();
    enum { N = 3 };
    gft_child_t c[N];
    for (int i = 0; i < N; i++) {
        c[i] = gft_spawn(GFT_END_SLEEP, 0);
    }
    int before = gft_count_fds();
    ASSERT_GT(before, 0);
    for (int round = 0; round < 20; round++) {
        gft_log_t log;
        gft_log_init(&log);
        gf_supervisor_t *sup;
        ASSERT_OK(gf_supervisor_new(gft_on_exit, &log, &sup));
        for (int i = 0; i < N; i++) {
            ASSERT_OK(gf_supervisor_watch(sup, c[i].pid, (uint64_t)i, 0));
            ASSERT_OK(gf_supervisor_set_deadline(sup, (uint64_t)i,
                                                 gf_now_ns() + 60 * GF__NS_PER_SEC));
        }
        ASSERT_EQ(gft_count_fds(), before + 2 + N); /* epoll, eventfd, pidfds */
        int64_t start = gf_now_ns();
        gf_supervisor_free(sup);
        ASSERT_LT(gft_elapsed_ms(start), gft_ms(1000));
        ASSERT_EQ(gft_count_fds(), before);
        ASSERT_EQ(gft_log_count(&log), 0); /* no callbacks for live watches */
        pthread_mutex_destroy(&log.lock);
    }
    /* The processes were left alone. */
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(kill(c[i].pid, 0), 0);
        ASSERT_EQ(waitpid(c[i].pid, NULL, WNOHANG), 0);
        kill(c[i].pid, SIGKILL);
        gft_waitpid_ms(c[i].pid, gft_ms(5000));
        gft_release(&c[i]);
    }
    gf_supervisor_free(NULL);
    ASSERT_ERR(gf_supervisor_new(NULL, NULL, &(gf_supervisor_t *){NULL}), GF_EINVAL);
    ASSERT_ERR(gf_supervisor_new(gft_on_exit, NULL, NULL), GF_EINVAL);
}

/* Not our child: exact status once its parent reaps it (6.15+); a parent
 * that never reaps costs the grace period, then "unknown". */
TEST_IMPL(sup_nonchild)
{
    GFT_NEED_PIDFDS();
    int pids[2], gate[2], reap[2];
    ASSERT_EQ(pipe(pids), 0);
    ASSERT_EQ(pipe(gate), 0);
    ASSERT_EQ(pipe(reap), 0);
    fflush(stdout);
    pid_t mid = fork();
    ASSERT_GE(mid, 0);
    if (mid == 0) {
        /* Two grandchildren: the first is reaped at once, the second only
         * when the test says so (a parent that does not reap). */
        close(reap[1]);
        close(pids[0]);
        pid_t g[2];
        for (int i = 0; i < 2; i++) {
            g[i] = fork();
            if (g[i] < 0) {
                _exit(90);
            }
            if (g[i] == 0) {
                char ch;
                close(gate[1]);
                while (read(gate[0], &ch, 1) < 0 && errno == EINTR) {
                }
                _exit(7 + i);
            }
            gft_write_int(pids[1], (int)g[i]);
        }
        close(gate[0]);
        close(gate[1]);
        int st;
        while (waitpid(g[0], &st, 0) < 0 && errno == EINTR) {
        }
        /* Tell the test when g[0] was reaped: under load this process may
         * be scheduled too late for the supervisor's grace period. */
        gft_write_int(pids[1], 1);
        char ch;
        while (read(reap[0], &ch, 1) < 0 && errno == EINTR) {
        }
        while (waitpid(g[1], &st, 0) < 0 && errno == EINTR) {
        }
        _exit(0);
    }
    close(pids[1]);
    close(gate[0]);
    close(reap[0]);
    pid_t g0 = gft_read_int(pids[0], gft_ms(5000));
    pid_t g1 = gft_read_int(pids[0], gft_ms(5000));

    gft_log_t log;
    gft_log_init(&log);
    gf_supervisor_t *sup;
    ASSERT_OK(gf_supervisor_new(gft_on_exit, &log, &sup));
    ASSERT_OK(gf_supervisor_watch(sup, g0, 10, 0));
    ASSERT_OK(gf_supervisor_watch(sup, g1, 11, 0));
    int64_t start = gf_now_ns();
    close(gate[1]);
    ASSERT_EQ(gft_read_int(pids[0], gft_ms(5000)), 1);
    int64_t reaped_after = gf_now_ns() - start;
    close(pids[0]);
    gft_log_wait(&log, 2, gft_ms(5000));
    const gft_event_t *e0 = gft_log_find(&log, 10);
    const gft_event_t *e1 = gft_log_find(&log, 11);
    ASSERT_EQ(e0->ex.pid, g0);
    ASSERT_EQ(e1->ex.pid, g1);
    if (gft_kernel_at_least(6, 15)) {
        if (reaped_after < GF__PROC_REAP_GRACE_NS / 2) {
            ASSERT_EQ(e0->ex.kind, GF_EXIT_CODE);
            ASSERT_EQ(e0->ex.code, 7);
        }
        else {
            /* Its parent reaped it late (a loaded machine): the status
             * may have been given up on, but then only after the grace. */
            printf("note: g0 reaped after %lld ms\n",
                   (long long)(reaped_after / 1000000));
            ASSERT(e0->ex.kind == GF_EXIT_UNKNOWN ||
                   (e0->ex.kind == GF_EXIT_CODE && e0->ex.code == 7));
            if (e0->ex.kind == GF_EXIT_UNKNOWN) {
                ASSERT_GE(e0->at_ns - start,
                          GF__PROC_REAP_GRACE_NS - 20 * 1000000);
            }
        }
        /* Never reaped: reported after the grace period, status unknown. */
        ASSERT_EQ(e1->ex.kind, GF_EXIT_UNKNOWN);
        ASSERT_GE(e1->at_ns - start, GF__PROC_REAP_GRACE_NS - 20 * 1000000);
    }
    else {
        ASSERT_EQ(e0->ex.kind, GF_EXIT_UNKNOWN);
        ASSERT_EQ(e1->ex.kind, GF_EXIT_UNKNOWN);
        printf("note: kernel older than 6.15: statuses of non-children unknown\n");
    }
    ASSERT_LT(e0->at_ns - start,
              reaped_after + GF__PROC_REAP_GRACE_NS + gft_ms(1000) * 1000000);
    close(reap[1]);
    int st = gft_waitpid_ms(mid, gft_ms(5000));
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
    gf_supervisor_free(sup);
    pthread_mutex_destroy(&log.lock);
}

/* In a forked child the supervisor is inert and its descriptors closed. */
TEST_IMPL(sup_fork_child)
{
    GFT_NEED_PIDFDS();
    gft_child_t a = gft_spawn(GFT_END_SLEEP, 0);
    gft_log_t log;
    gft_log_init(&log);
    gf_supervisor_t *sup;
    ASSERT_OK(gf_supervisor_new(gft_on_exit, &log, &sup));
    ASSERT_OK(gf_supervisor_watch(sup, a.pid, 1, 0));
    int before = gft_count_fds();
    fflush(stdout);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (gft_count_fds() != before - 3) { /* epoll, eventfd, one pidfd */
            _exit(10);
        }
        if (gf_supervisor_watch(sup, getppid(), 2, 0) != GF_EFORKED) {
            _exit(11);
        }
        if (gf_supervisor_unwatch(sup, 1) != GF_EFORKED ||
            gf_supervisor_set_deadline(sup, 1, 1) != GF_EFORKED ||
            gf_supervisor_signal(sup, 1, SIGKILL) != GF_EFORKED) {
            _exit(12);
        }
        if (gf_supervisor_nwatches(sup) != 0) {
            _exit(13);
        }
        gf_supervisor_free(sup); /* no thread to join here */
        _exit(0);
    }
    int st = gft_waitpid_ms(pid, gft_ms(5000));
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
    /* The parent's supervisor still works. */
    ASSERT_EQ(gft_count_fds(), before);
    ASSERT_OK(gf_supervisor_signal(sup, 1, SIGKILL));
    gft_log_wait(&log, 1, gft_ms(5000));
    ASSERT_EQ(gft_log_find(&log, 1)->ex.code, SIGKILL);
    gft_release(&a);
    gf_supervisor_free(sup);
    pthread_mutex_destroy(&log.lock);
}

/* --- the worker's parent watch ------------------------------------------------------------ */

enum { GFT_WORKER_EXIT = 42 };

/* In the worker: arm the watch, report our pid, wait to be ended.  With
 * sabotage, the worker's own code then replaces the watcher's descriptor
 * with a readable pipe (dup2 onto its number), as careless code might. */
GFT_NORETURN static void
gft_worker(pid_t pool, int pool_pidfd, unsigned flags, int report_fd, int sabotage)
{
    int rc = gf_watch_parent(pool, pool_pidfd, GFT_WORKER_EXIT, flags);
    if (rc != 0) {
        _exit(80 + (rc < 0 ? 1 : 2));
    }
    if (sabotage) {
        int p2[2];
        if (pipe(p2) != 0 || write(p2[1], "x", 1) != 1 || dup2(p2[0], pool_pidfd) < 0) {
            _exit(85);
        }
        close(p2[0]);
    }
    gft_write_int(report_fd, (int)getpid());
    for (;;) {
        pause();
    }
}

enum {
    GFT_POOL_DIRECT,     /* the pool forks the worker itself */
    GFT_POOL_FORKSERVER, /* pool -> forkserver -> worker */
    GFT_POOL_PIDFD,      /* forkserver, and the pool passes its own pidfd */
    GFT_POOL_SABOTAGE,   /* as PIDFD, and the worker clobbers that descriptor */
};

typedef struct gft_tree {
    pid_t pool;
    pid_t server; /* 0 in the direct case; read from the pool */
    pid_t worker;
} gft_tree_t;

/* Build the tree; this process is a subreaper, so that everything
 * orphaned below ends up as our child and can be reaped here. */
static gft_tree_t
gft_tree(int shape)
{
    ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    int rep_server[2], rep_worker[2];
    ASSERT_EQ(pipe(rep_server), 0);
    ASSERT_EQ(pipe(rep_worker), 0);
    fflush(stdout);
    pid_t pool = fork();
    ASSERT_GE(pool, 0);
    if (pool == 0) {
        close(rep_server[0]);
        close(rep_worker[0]);
        pid_t me = getpid();
        int pidfd = -1;
        if (shape == GFT_POOL_PIDFD || shape == GFT_POOL_SABOTAGE) {
            gf_proc_t self;
            if (gf_proc_open(me, &self) != 0) {
                _exit(70);
            }
            pidfd = self.fd; /* inherited by the worker through both forks */
        }
        if (shape == GFT_POOL_DIRECT) {
            pid_t w = fork();
            if (w == 0) {
                gft_worker(me, pidfd, 0, rep_worker[1], 0);
            }
            gft_write_int(rep_server[1], 0);
        }
        else {
            pid_t server = fork();
            if (server == 0) {
                /* The "forkserver": starts the worker, stays its parent,
                 * reaps it (as multiprocessing's does on SIGCHLD). */
                pid_t w = fork();
                if (w == 0) {
                    gft_worker(me, pidfd, 0, rep_worker[1], shape == GFT_POOL_SABOTAGE);
                }
                int st;
                while (waitpid(w, &st, 0) < 0 && errno == EINTR) {
                }
                for (;;) {
                    pause(); /* outlive the pool: the test reaps us */
                }
            }
            gft_write_int(rep_server[1], (int)server);
        }
        for (;;) {
            pause();
        }
    }
    close(rep_server[1]);
    close(rep_worker[1]);
    gft_tree_t t;
    t.pool = pool;
    t.server = gft_read_int(rep_server[0], gft_ms(5000));
    t.worker = gft_read_int(rep_worker[0], gft_ms(5000));
    close(rep_server[0]);
    close(rep_worker[0]);
    return t;
}

/* Kill what is left of the tree and reap it all (everything orphaned below
 * us is our child: subreaper). */
static void
gft_tree_cleanup(gft_tree_t *t)
{
    pid_t all[3] = {t->worker, t->server, t->pool};
    for (int i = 0; i < 3; i++) {
        if (all[i] > 0) {
            kill(all[i], SIGKILL);
        }
    }
    for (;;) {
        int st;
        pid_t r = waitpid(-1, &st, 0);
        if (r < 0 && errno != EINTR) {
            break; /* ECHILD: nothing left */
        }
    }
    t->pool = t->server = t->worker = 0;
}

static void
gft_kill_pool_case(int shape)
{
    gft_tree_t t = gft_tree(shape);
    gf_proc_t w;
    ASSERT_OK(gf_proc_open(t.worker, &w));
    gf_exit_t e;
    gft_sleep_ms(20);
    ASSERT_ERR(gf_proc_poll_exit(&w, 0, &e), GF_EAGAIN); /* alive while the pool is */

    int64_t start = gf_now_ns();
    ASSERT_EQ(kill(t.pool, SIGKILL), 0);
    /* Gone within 1 s (scaled for sanitizer runs).  NOREAP: an orphaned
     * worker may have become our child; the checks below reap it. */
    ASSERT_OK(gf_proc_wait_exit(&w, gft_ms(1000) * 1000000, GF_PROC_NOREAP, &e));
    int64_t took = gft_elapsed_ms(start);
    ASSERT_LT(took, gft_ms(1000));
    int st = gft_waitpid_ms(t.pool, gft_ms(5000));
    ASSERT(WIFSIGNALED(st));
    t.pool = 0;
    /* The watcher's _exit(42), not the parent-death signal (with the
     * forkserver alive, that one does not fire). */
    if (e.kind != GF_EXIT_UNKNOWN) {
        ASSERT_EQ(e.kind, GF_EXIT_CODE);
        ASSERT_EQ(e.code, GFT_WORKER_EXIT);
    }
    if (shape == GFT_POOL_DIRECT) {
        /* Orphaned to us: reap it and check how it ended. */
        st = gft_waitpid_ms(t.worker, gft_ms(5000));
        ASSERT(WIFEXITED(st));
        ASSERT_EQ(WEXITSTATUS(st), GFT_WORKER_EXIT);
        t.worker = 0;
    }
    ASSERT_OK(gf_proc_close(&w));
    gft_tree_cleanup(&t);
}

TEST_IMPL(watch_parent_pool_killed)
{
    GFT_NEED_PIDFDS();
    gft_kill_pool_case(GFT_POOL_DIRECT);
    gft_kill_pool_case(GFT_POOL_FORKSERVER);
    gft_kill_pool_case(GFT_POOL_PIDFD);
    gft_kill_pool_case(GFT_POOL_SABOTAGE);
}

/* The second chain: the forkserver dies, the parent-death signal kills the
 * worker (the pool lives on). */
TEST_IMPL(watch_parent_server_killed)
{
    GFT_NEED_PIDFDS();
    gft_tree_t t = gft_tree(GFT_POOL_FORKSERVER);
    gf_proc_t w;
    ASSERT_OK(gf_proc_open(t.worker, &w));
    int64_t start = gf_now_ns();
    ASSERT_EQ(kill(t.server, SIGKILL), 0);
    gf_exit_t e;
    ASSERT_OK(gf_proc_wait_exit(&w, gft_ms(1000) * 1000000, GF_PROC_NOREAP, &e));
    ASSERT_LT(gft_elapsed_ms(start), gft_ms(1000));
    /* Orphaned to us (subreaper): SIGKILL from the kernel. */
    int st = gft_waitpid_ms(t.worker, gft_ms(5000));
    ASSERT(WIFSIGNALED(st));
    ASSERT_EQ(WTERMSIG(st), SIGKILL);
    t.worker = 0;
    ASSERT_OK(gf_proc_close(&w));
    gft_tree_cleanup(&t);
}

TEST_IMPL(watch_parent_already_gone)
{
    GFT_NEED_PIDFDS();
    /* A pool that has ended (a zombie: the pidfd opens, and is readable)
     * and one that is gone entirely (ESRCH): the worker exits at once. */
    for (int reaped = 0; reaped <= 1; reaped++) {
        gft_child_t pool = gft_spawn(GFT_END_CODE, 0);
        gft_release(&pool);
        if (reaped) {
            gft_waitpid_ms(pool.pid, gft_ms(5000));
        }
        else {
            siginfo_t si;
            ASSERT_EQ(waitid(P_PID, (id_t)pool.pid, &si, WEXITED | WNOWAIT), 0);
        }
        fflush(stdout);
        pid_t worker = fork();
        ASSERT_GE(worker, 0);
        if (worker == 0) {
            gf_watch_parent(pool.pid, -1, GFT_WORKER_EXIT, GF_WATCH_PARENT_NO_PDEATHSIG);
            _exit(1); /* not reached */
        }
        int st = gft_waitpid_ms(worker, gft_ms(5000));
        ASSERT(WIFEXITED(st));
        ASSERT_EQ(WEXITSTATUS(st), GFT_WORKER_EXIT);
        if (!reaped) {
            gft_waitpid_ms(pool.pid, 1000);
        }
    }

    /* Arguments (checked before anything is set up). */
    ASSERT_ERR(gf_watch_parent(0, -1, 1, 0), GF_EINVAL);
    ASSERT_ERR(gf_watch_parent(getppid(), -2, 1, 0), GF_EINVAL);
    ASSERT_ERR(gf_watch_parent(getppid(), -1, 1, 0x10), GF_EINVAL);
    ASSERT_ERR(gf_watch_parent(getppid(), -1, 1,
                               GF_WATCH_PARENT_PDEATHSIG | GF_WATCH_PARENT_NO_PDEATHSIG),
               GF_EINVAL);
    int bad = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(bad, 0);
    close(bad); /* a descriptor number that is not open */
    ASSERT_ERR(gf_watch_parent(getppid(), bad, 1, 0), GF_EINVAL);
    int pp[2];
    ASSERT_EQ(pipe(pp), 0); /* open, but not a pidfd */
    ASSERT_ERR(gf_watch_parent(getppid(), pp[0], 1, 0), GF_EINVAL);
    close(pp[0]);
    close(pp[1]);
}
