/* gilfree core: process handles, the supervisor thread, and the worker's
 * parent watch (proc.h).
 *
 * Design notes.
 *
 * pidfds, not pids.  Every operation on a process goes through a pidfd,
 * which pins the process's identity: a signal or a wait can never reach a
 * process that reused the pid after ours was reaped.  A pidfd polls readable
 * once the process has ended (a zombie), and on Linux 6.9+ also reports
 * POLLHUP once it has been reaped; we use both.
 *
 * Exit status.  gf__collect() is the one place that turns "the pidfd is
 * readable" into a gf_exit_t:
 *   1. waitid(P_PIDFD, WEXITED | WNOHANG [| WNOWAIT]): exact status of our
 *      own child, which it reaps unless GF_PROC_NOREAP;
 *   2. ECHILD (not our child, or someone else reaped it): ask the kernel
 *      with PIDFD_GET_INFO / PIDFD_INFO_EXIT (Linux 6.15+), which has the
 *      status once the process's parent reaped it.  "Exited but not reaped
 *      yet" is reported as pending: the supervisor then waits for the reap
 *      (POLLHUP) at most GF__PROC_REAP_GRACE_NS before settling for
 *      GF_EXIT_UNKNOWN.  Older kernels: GF_EXIT_UNKNOWN at once.
 *
 * The supervisor.  One thread sleeping in epoll_wait() on the pidfds of the
 * watched processes plus an eventfd (stop, earlier deadline).  epoll rather
 * than poll(): watch/unwatch are an epoll_ctl() each from the calling
 * thread, with no fd array to rebuild or share with the sleeping thread, and
 * a new watch needs no wake-up (epoll picks up readiness of an fd added
 * while someone waits).  Each registration carries the watch's serial
 * number (never the fd, never a pointer), so an event that raced with an
 * unwatch is recognised as stale by a lookup under the lock.  A watch is
 * removed from epoll (EPOLL_CTL_DEL) before its pidfd is closed.
 * Deadlines are kept in the watch table; the thread sleeps until the
 * earliest (epoll_wait timeout, rounded up to whole ms, so it never wakes
 * early; a wake-up that comes early anyway just recomputes), and
 * gf_supervisor_set_deadline() pokes the eventfd only when the new deadline
 * is earlier than the one the thread sleeps until.
 *
 * Locking.  One mutex guards the whole supervisor (table, deadlines,
 * stopping flag, wake_at); it is never held across the callback or
 * epoll_wait().  While a callback runs, its watch stays in the table as
 * DELIVERING, so gf_supervisor_unwatch() from another thread can wait (on the
 * `delivered` condition variable) until the callback has returned.  No
 * atomics: every shared field is read and written under the mutex.
 *
 * Fork.  A pthread_atfork child handler closes every supervisor's inherited
 * descriptors (the epoll fd, the eventfd, the pidfds: a worker started with
 * the "fork" method must not keep its siblings' pidfds) and marks it forked;
 * in the child the calls return GF_EFORKED and gf_supervisor_free() only
 * frees.  prepare takes the registry lock and every supervisor's lock, so
 * the child sees consistent tables.  (Lock order: registry, then a
 * supervisor's lock; nothing takes them the other way round.)
 *
 * The parent watch (worker side) is described in proc.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#if defined(__linux__)
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#endif

#include "internal.h"

/* --- exit descriptions (portable) ------------------------------------------- */

void
gf_exit_from_wait_status(int status, pid_t pid, gf_exit_t *out)
{
    if (out == NULL) {
        return;
    }
    memset(out, 0, sizeof(*out));
    out->pid = pid;
    if (WIFEXITED(status)) {
        out->kind = GF_EXIT_CODE;
        out->code = WEXITSTATUS(status);
    }
    else if (WIFSIGNALED(status)) {
        out->kind = GF_EXIT_SIGNAL;
        out->code = WTERMSIG(status);
#ifdef WCOREDUMP
        out->core_dumped = WCOREDUMP(status) ? 1 : 0;
#endif
    }
    else {
        out->kind = GF_EXIT_UNKNOWN;
    }
}

const char *
gf_signal_name(int sig)
{
    /* A switch over the macros rather than a table indexed by number: the
     * numbers differ between architectures.  (glibc's sigabbrev_np() would
     * do, but is glibc-only and 2.32+.) */
    switch (sig) {
#define GF__SIG(name) \
    case name:        \
        return #name;
        GF__SIG(SIGHUP)
        GF__SIG(SIGINT)
        GF__SIG(SIGQUIT)
        GF__SIG(SIGILL)
        GF__SIG(SIGTRAP)
        GF__SIG(SIGABRT)
        GF__SIG(SIGBUS)
        GF__SIG(SIGFPE)
        GF__SIG(SIGKILL)
        GF__SIG(SIGUSR1)
        GF__SIG(SIGSEGV)
        GF__SIG(SIGUSR2)
        GF__SIG(SIGPIPE)
        GF__SIG(SIGALRM)
        GF__SIG(SIGTERM)
        GF__SIG(SIGCHLD)
        GF__SIG(SIGCONT)
        GF__SIG(SIGSTOP)
        GF__SIG(SIGTSTP)
        GF__SIG(SIGTTIN)
        GF__SIG(SIGTTOU)
        GF__SIG(SIGURG)
        GF__SIG(SIGXCPU)
        GF__SIG(SIGXFSZ)
        GF__SIG(SIGVTALRM)
        GF__SIG(SIGPROF)
        GF__SIG(SIGWINCH)
        GF__SIG(SIGSYS)
#ifdef SIGSTKFLT
        GF__SIG(SIGSTKFLT)
#endif
#ifdef SIGIO
        GF__SIG(SIGIO)
#endif
#if defined(SIGPWR) && (!defined(SIGINFO) || SIGPWR != SIGINFO)
        GF__SIG(SIGPWR)
#endif
#undef GF__SIG
    default:
        return NULL;
    }
}

int
gf_exit_describe(const gf_exit_t *ex, char *buf, size_t n)
{
    if (ex == NULL || (buf == NULL && n > 0)) {
        return GF_EINVAL;
    }
    int len;
    switch (ex->kind) {
    case GF_EXIT_CODE:
        len = snprintf(buf, n, "exited with code %d", ex->code);
        break;
    case GF_EXIT_SIGNAL: {
        const char *core = ex->core_dumped ? ", core dumped" : "";
        const char *name = gf_signal_name(ex->code);
        if (name != NULL) {
            len = snprintf(buf, n, "killed by signal %d (%s%s)", ex->code, name, core);
        }
#ifdef SIGRTMIN
        else if (ex->code >= SIGRTMIN && ex->code <= SIGRTMAX) {
            len = snprintf(buf, n, "killed by signal %d (SIGRTMIN+%d%s)", ex->code,
                           ex->code - SIGRTMIN, core);
        }
#endif
        else if (ex->core_dumped) {
            len = snprintf(buf, n, "killed by signal %d (core dumped)", ex->code);
        }
        else {
            len = snprintf(buf, n, "killed by signal %d", ex->code);
        }
        break;
    }
    default:
        len = snprintf(buf, n, "exited (status unknown)");
        break;
    }
    return len < 0 ? GF_EINVAL : len;
}

#if defined(__linux__) && defined(SYS_pidfd_open) && defined(SYS_pidfd_send_signal)

/* --- pidfd system calls ------------------------------------------------------- */

/* waitid()'s idtype for a pidfd (Linux 5.4).  glibc 2.36 has P_PIDFD as an
 * enumerator, older ones not at all; the value is the kernel's. */
#define GF__P_PIDFD ((idtype_t)3)

/* PIDFD_GET_INFO (Linux 6.13; PIDFD_INFO_EXIT 6.15), declared here because
 * the C library's headers may predate it.  The first version of the struct
 * (PIDFD_INFO_SIZE_VER0, 64 bytes) is all we need; the ioctl accepts any
 * size from that one up and copies what both sides know. */
typedef struct gf__pidfd_info {
    uint64_t mask;
    uint64_t cgroupid;
    uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
    int32_t exit_code;
} gf__pidfd_info_t;

_Static_assert(sizeof(gf__pidfd_info_t) == 64, "PIDFD_INFO_SIZE_VER0");

#define GF__PIDFD_GET_INFO _IOWR(0xFF, 11, gf__pidfd_info_t)
#define GF__PIDFD_INFO_EXIT (UINT64_C(1) << 3)

/* A new close-on-exec pidfd (pidfd_open always sets O_CLOEXEC), or a
 * negated errno: GF_ESRCH, GF_ENOSYS, -EMFILE, ... */
static int
gf__pidfd_open(pid_t pid)
{
    long fd = syscall(SYS_pidfd_open, pid, 0u);
    return fd < 0 ? -errno : (int)fd;
}

static int
gf__pidfd_send_signal(int fd, int sig)
{
    return syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0u) == 0 ? 0 : -errno;
}

static int
gf__close_fd(int fd)
{
    /* No retry on EINTR: on Linux the descriptor is gone either way, and a
     * second close could hit a descriptor someone else just opened. */
    return close(fd) == 0 || errno == EINTR ? 0 : -errno;
}

/* Wait for events on one fd until deadline (GF__NO_DEADLINE: forever).
 * Returns the revents (> 0), 0 when the time is up, GF_EINTR or a negated
 * errno. */
static int
gf__poll_one(int fd, short events, int64_t deadline)
{
    struct pollfd p = {fd, events, 0};
    struct timespec ts, *tsp = NULL;
    if (deadline != GF__NO_DEADLINE) {
        int64_t left = gf__remaining_ns(deadline);
        ts.tv_sec = (time_t)(left / GF__NS_PER_SEC);
        ts.tv_nsec = (long)(left % GF__NS_PER_SEC);
        tsp = &ts;
    }
    int r = ppoll(&p, 1, tsp, NULL);
    if (r < 0) {
        return -errno;
    }
    return r == 0 ? 0 : (p.revents != 0 ? p.revents : POLLIN);
}

static void
gf__exit_unknown(pid_t pid, gf_exit_t *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = GF_EXIT_UNKNOWN;
    out->pid = pid;
}

/* The status the kernel keeps for pidfd holders once the process has been
 * reaped by its parent.  0 (*out filled), GF_EAGAIN (the kernel could tell,
 * but the process is not reaped yet; or a 6.13/6.14 kernel, which has the
 * ioctl but not the exit field) or GF_ENOSYS (the kernel cannot tell). */
static int
gf__pidfd_exit_info(int fd, pid_t pid, gf_exit_t *out)
{
    gf__pidfd_info_t info;
    memset(&info, 0, sizeof(info));
    info.mask = GF__PIDFD_INFO_EXIT;
    int r;
    for (int attempt = 0;; attempt++) {
        r = ioctl(fd, GF__PIDFD_GET_INFO, &info);
        if (r == 0 || errno == EINTR) {
            if (r == 0) {
                break;
            }
            continue;
        }
        /* ESRCH also comes back while the parent is reaping the process
         * right now (the kernel found the task, then its pid was detached
         * before it could report it); once reaped, the same call returns
         * the exit status.  A few tries tell that race from a process in
         * another pid namespace, for which ESRCH is final. */
        if (errno != ESRCH || attempt >= 8) {
            break;
        }
        memset(&info, 0, sizeof(info));
        info.mask = GF__PIDFD_INFO_EXIT;
        sched_yield();
    }
    if (r != 0) {
        /* ENOTTY (no such ioctl: before 6.13), EINVAL, ESRCH (another pid
         * namespace): nothing more to learn. */
        return GF_ENOSYS;
    }
    if (!(info.mask & GF__PIDFD_INFO_EXIT)) {
        return GF_EAGAIN;
    }
    gf_exit_from_wait_status(info.exit_code, pid, out);
    return 0;
}

static void
gf__exit_from_siginfo(const siginfo_t *si, pid_t pid, gf_exit_t *out)
{
    memset(out, 0, sizeof(*out));
    out->pid = pid;
    switch (si->si_code) {
    case CLD_EXITED:
        out->kind = GF_EXIT_CODE;
        out->code = si->si_status;
        break;
    case CLD_KILLED:
    case CLD_DUMPED:
        out->kind = GF_EXIT_SIGNAL;
        out->code = si->si_status;
        out->core_dumped = si->si_code == CLD_DUMPED;
        break;
    default:
        out->kind = GF_EXIT_UNKNOWN;
        break;
    }
}

/* Has the process behind fd ended, and how?  GF_EAGAIN: still running.
 * 0: ended, *out filled; *pending is set when the status is unknown now but
 * the kernel will know it once the process's parent reaps it. */
static int
gf__collect(int fd, pid_t pid, unsigned flags, gf_exit_t *out, int *pending)
{
    *pending = 0;
    siginfo_t si;
    /* Zero si_pid: with WNOHANG and nothing to report, the kernel returns 0
     * and leaves si_pid 0 (POSIX lets it leave si untouched). */
    memset(&si, 0, sizeof(si));
    int options = WEXITED | WNOHANG | ((flags & GF_PROC_NOREAP) ? WNOWAIT : 0);
    int r;
    while ((r = waitid(GF__P_PIDFD, (id_t)fd, &si, options)) != 0 && errno == EINTR) {
    }
    if (r == 0) {
        if (si.si_pid == 0) {
            return GF_EAGAIN; /* our child, still running */
        }
        gf__exit_from_siginfo(&si, pid, out);
        return 0;
    }
    /* ECHILD: not our child, or already reaped by someone else (e.g.
     * multiprocessing's waitpid, or SIGCHLD ignored).  EINVAL: a 5.3 kernel
     * without P_PIDFD.  Either way, readiness of the pidfd says whether it
     * has ended. */
    if (errno != ECHILD && errno != EINVAL) {
        return -errno;
    }
    r = gf__poll_one(fd, POLLIN, 0);
    if (r < 0) {
        return r == GF_EINTR ? GF_EAGAIN : r;
    }
    if (r == 0) {
        return GF_EAGAIN;
    }
    int rc = gf__pidfd_exit_info(fd, pid, out);
    if (rc == 0) {
        return 0;
    }
    gf__exit_unknown(pid, out);
    /* POLLHUP: reaped already, so a missing status will stay missing (a
     * 6.13/6.14 kernel). */
    *pending = rc == GF_EAGAIN && !(r & POLLHUP);
    return 0;
}

/* --- gf_proc_t ---------------------------------------------------------------- */

int
gf_proc_open(pid_t pid, gf_proc_t *out)
{
    if (out == NULL) {
        return GF_EINVAL;
    }
    gf_proc_t init = GF_PROC_INIT;
    *out = init;
    if (pid <= 0) {
        return GF_EINVAL;
    }
    int fd = gf__pidfd_open(pid);
    if (fd < 0) {
        return fd;
    }
    out->fd = fd;
    out->pid = pid;
    return 0;
}

int
gf_proc_close(gf_proc_t *p)
{
    if (p == NULL) {
        return GF_EINVAL;
    }
    if (p->fd < 0) {
        return 0;
    }
    int rc = gf__close_fd(p->fd);
    p->fd = -1;
    return rc;
}

int
gf_proc_signal(gf_proc_t *p, int sig)
{
    if (p == NULL || p->fd < 0 || sig < 0) {
        return GF_EINVAL;
    }
    return gf__pidfd_send_signal(p->fd, sig);
}

static int
gf__proc_poll(gf_proc_t *p, unsigned flags, gf_exit_t *out, int *pending)
{
    *pending = 0;
    if (p == NULL || out == NULL || (flags & ~GF_PROC_NOREAP) != 0) {
        return GF_EINVAL;
    }
    if (p->exited) {
        *out = p->exit;
        return 0;
    }
    if (p->fd < 0) {
        return GF_EINVAL;
    }
    int rc = gf__collect(p->fd, p->pid, flags, out, pending);
    if (rc == 0 && !*pending) {
        /* Final: either known, or unknowable on this kernel. */
        p->exit = *out;
        p->exited = 1;
    }
    return rc;
}

int
gf_proc_poll_exit(gf_proc_t *p, unsigned flags, gf_exit_t *out)
{
    int pending;
    return gf__proc_poll(p, flags, out, &pending);
}

int
gf_proc_wait_exit(gf_proc_t *p, int64_t timeout_ns, unsigned flags, gf_exit_t *out)
{
    int64_t deadline = gf__deadline_from_timeout(timeout_ns);
    int pending;
    int rc;
    for (;;) {
        rc = gf__proc_poll(p, flags, out, &pending);
        if (rc != GF_EAGAIN) {
            break;
        }
        int r = gf__poll_one(p->fd, POLLIN, deadline);
        if (r < 0) {
            return r;
        }
        if (r == 0) {
            return GF_ETIMEDOUT;
        }
    }
    if (rc == 0 && pending) {
        /* Ended, but its parent has not reaped it yet: wait for the reap
         * (POLLHUP, which poll reports even with no events requested) a
         * little, then ask again. */
        int64_t grace = gf__deadline_from_timeout(GF__PROC_REAP_GRACE_NS);
        int r = gf__poll_one(p->fd, 0, GF__MIN(grace, deadline));
        if (r == GF_EINTR) {
            return r;
        }
        rc = gf__proc_poll(p, flags, out, &pending);
    }
    return rc;
}

/* --- the supervisor ------------------------------------------------------------ */

enum {
    GF__W_ACTIVE,     /* running (as far as we know): epoll waits for POLLIN */
    GF__W_UNREAPED,   /* ended, not our child, not reaped yet: waits for POLLHUP */
    GF__W_DELIVERING, /* its callback is running; out of epoll */
};

typedef struct gf__watch {
    uint64_t tag;
    uint64_t serial;       /* unique per supervisor, never 0 (the eventfd's) */
    int64_t deadline;      /* ACTIVE: SIGKILL then; GF__NO_DEADLINE if none */
    int64_t reap_deadline; /* UNREAPED: settle for "unknown" then */
    pid_t pid;
    int fd;
    unsigned flags;
    int state;
    int timed_out; /* the deadline kill was sent */
} gf__watch_t;

struct gf_supervisor {
    /* Immutable after gf_supervisor_new() (the fork child handler, which
     * runs alone, is the exception). */
    gf_supervisor_cb cb;
    void *userdata;
    int epfd;
    int efd;
    pthread_t thread;

    /* lock guards every field below, and the watches' contents. */
    pthread_mutex_t lock;
    pthread_cond_t delivered; /* broadcast after each callback returns */
    gf__watch_t *watches;
    size_t n;
    size_t cap;
    uint64_t next_serial;
    /* Until when the thread sleeps (its epoll_wait timeout; GF__NO_DEADLINE:
     * until an event), so that set_deadline pokes it only for an earlier
     * deadline.  INT64_MIN while it is awake: it recomputes its timeout
     * under the lock before it sleeps again, so it needs no poke then. */
    int64_t wake_at;
    int stopping;
    int forked;

    /* Registry links, guarded by gf__sups.lock. */
    gf__reg_node_t reg;
};

/* The supervisor whose thread this is (NULL on other threads): lets
 * unwatch know it is called from a callback, without reading
 * sup->thread, which pthread_create() may write after the thread started. */
static _Thread_local gf_supervisor_t *gf__tls_sup;

/* --- registry and fork ---------------------------------------------------------- */

static gf__registry_t gf__sups = GF__REGISTRY_INIT;
static pthread_once_t gf__sup_atfork_once = PTHREAD_ONCE_INIT;
static int gf__sup_atfork_status; /* written once inside pthread_once */

static void
gf__sup_atfork_prepare(void)
{
    pthread_mutex_lock(&gf__sups.lock);
    for (gf__reg_node_t *n = gf__sups.head; n != NULL; n = n->next) {
        gf_supervisor_t *s = GF__CONTAINER_OF(n, gf_supervisor_t, reg);
        pthread_mutex_lock(&s->lock);
    }
}

static void
gf__sup_atfork_parent(void)
{
    for (gf__reg_node_t *n = gf__sups.head; n != NULL; n = n->next) {
        gf_supervisor_t *s = GF__CONTAINER_OF(n, gf_supervisor_t, reg);
        pthread_mutex_unlock(&s->lock);
    }
    pthread_mutex_unlock(&gf__sups.lock);
}

static void
gf__sup_atfork_child(void)
{
    /* One thread here: the one that forked, holding every lock since
     * prepare.  The supervisor threads do not exist. */
    for (gf__reg_node_t *n = gf__sups.head; n != NULL; n = n->next) {
        gf_supervisor_t *s = GF__CONTAINER_OF(n, gf_supervisor_t, reg);
        for (size_t i = 0; i < s->n; i++) {
            if (s->watches[i].fd >= 0) {
                close(s->watches[i].fd);
                s->watches[i].fd = -1;
            }
        }
        s->n = 0;
        close(s->epfd);
        close(s->efd);
        s->epfd = -1;
        s->efd = -1;
        s->forked = 1;
        s->stopping = 1;
        pthread_mutex_unlock(&s->lock);
        /* A parent thread may have been waiting on it. */
        pthread_cond_init(&s->delivered, NULL);
    }
    pthread_mutex_unlock(&gf__sups.lock);
}

static void
gf__sup_atfork_register(void)
{
    gf__sup_atfork_status = pthread_atfork(gf__sup_atfork_prepare, gf__sup_atfork_parent,
                                           gf__sup_atfork_child);
}

/* --- table (all under sup->lock) -------------------------------------------------- */

static gf__watch_t *
gf__sup_find_serial(gf_supervisor_t *sup, uint64_t serial)
{
    for (size_t i = 0; i < sup->n; i++) {
        if (sup->watches[i].serial == serial) {
            return &sup->watches[i];
        }
    }
    return NULL;
}

/* The live (not DELIVERING) watch of tag.  At most one exists; a DELIVERING
 * one with the same tag may coexist (re-watched from its own callback). */
static gf__watch_t *
gf__sup_find_live(gf_supervisor_t *sup, uint64_t tag)
{
    for (size_t i = 0; i < sup->n; i++) {
        if (sup->watches[i].tag == tag && sup->watches[i].state != GF__W_DELIVERING) {
            return &sup->watches[i];
        }
    }
    return NULL;
}

static gf__watch_t *
gf__sup_find_delivering(gf_supervisor_t *sup, uint64_t tag)
{
    for (size_t i = 0; i < sup->n; i++) {
        if (sup->watches[i].tag == tag && sup->watches[i].state == GF__W_DELIVERING) {
            return &sup->watches[i];
        }
    }
    return NULL;
}

/* Take w out of epoll, close its pidfd and drop it from the table (the last
 * entry moves into its place). */
static void
gf__sup_remove(gf_supervisor_t *sup, gf__watch_t *w)
{
    if (w->state != GF__W_DELIVERING) {
        /* DELIVERING watches were taken out of epoll already. */
        epoll_ctl(sup->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    }
    gf__close_fd(w->fd);
    size_t i = (size_t)(w - sup->watches);
    sup->watches[i] = sup->watches[sup->n - 1];
    sup->n--;
}

static void
gf__sup_poke(gf_supervisor_t *sup)
{
    uint64_t one = 1;
    /* EAGAIN (counter saturated) still leaves it readable: fine. */
    ssize_t r = write(sup->efd, &one, sizeof(one));
    (void)r;
}

/* --- the thread --------------------------------------------------------------------- */

/* Run the callback for w (found under the lock, which is held on entry and
 * on return but not during the call), then drop the watch.  The table may
 * change while the lock is released: w is not used after the call; the
 * entry is found again by its serial. */
static void
gf__sup_deliver(gf_supervisor_t *sup, gf__watch_t *w, const gf_exit_t *status)
{
    gf_exit_t ex = *status;
    ex.pid = w->pid;
    ex.timed_out = w->timed_out;
    uint64_t tag = w->tag;
    uint64_t serial = w->serial;
    epoll_ctl(sup->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->state = GF__W_DELIVERING;

    pthread_mutex_unlock(&sup->lock);
    sup->cb(sup->userdata, tag, &ex);
    pthread_mutex_lock(&sup->lock);

    gf__watch_t *again = gf__sup_find_serial(sup, serial);
    if (again != NULL) {
        gf__sup_remove(sup, again);
    }
    pthread_cond_broadcast(&sup->delivered);
}

/* epoll said the pidfd of watch `serial` is ready. */
static void
gf__sup_ready(gf_supervisor_t *sup, uint64_t serial)
{
    gf__watch_t *w = gf__sup_find_serial(sup, serial);
    if (w == NULL || w->state == GF__W_DELIVERING) {
        return; /* stale: unwatched (or delivered) after epoll_wait returned */
    }
    gf_exit_t ex;
    if (w->state == GF__W_UNREAPED) {
        /* POLLHUP: its parent reaped it; the kernel has the status now if
         * it ever will. */
        if (gf__pidfd_exit_info(w->fd, w->pid, &ex) != 0) {
            gf__exit_unknown(w->pid, &ex);
        }
        gf__sup_deliver(sup, w, &ex);
        return;
    }
    int pending;
    int rc = gf__collect(w->fd, w->pid, w->flags, &ex, &pending);
    if (rc == GF_EAGAIN) {
        return; /* spurious: a pidfd signals nothing but the end */
    }
    if (rc != 0) {
        /* The pidfd is readable, so it has ended; say so even if the
         * status could not be read. */
        gf__exit_unknown(w->pid, &ex);
    }
    else if (pending) {
        /* Wait for the reap (POLLHUP, reported even with no events asked
         * for; EPOLLIN stays set for a zombie, so it must go). */
        struct epoll_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.events = 0;
        ev.data.u64 = w->serial;
        if (epoll_ctl(sup->epfd, EPOLL_CTL_MOD, w->fd, &ev) == 0) {
            w->state = GF__W_UNREAPED;
            w->reap_deadline = gf_now_ns() + GF__PROC_REAP_GRACE_NS;
            return;
        }
    }
    gf__sup_deliver(sup, w, &ex);
}

#define GF__SUP_EVENTS 32

static void *
gf__sup_main(void *arg)
{
    gf_supervisor_t *sup = arg;
    gf__tls_sup = sup;
    gf__unblock_sync_signals();
    pthread_setname_np(pthread_self(), "gilfree-sup");

    struct epoll_event events[GF__SUP_EVENTS];
    pthread_mutex_lock(&sup->lock);
    while (!sup->stopping) {
        /* Deadlines: kill what is due, and find the next wake-up.  A
         * delivery releases the lock, so the scan restarts after one. */
        int64_t now = gf_now_ns();
        int64_t next = GF__NO_DEADLINE;
        int restart = 0;
        for (size_t i = 0; i < sup->n && !restart; i++) {
            gf__watch_t *w = &sup->watches[i];
            if (w->state == GF__W_ACTIVE && w->deadline != GF__NO_DEADLINE) {
                if (w->deadline <= now) {
                    w->deadline = GF__NO_DEADLINE;
                    /* ESRCH: it ended on its own just now; not a timeout. */
                    if (gf__pidfd_send_signal(w->fd, SIGKILL) == 0) {
                        w->timed_out = 1;
                    }
                }
                else {
                    next = GF__MIN(next, w->deadline);
                }
            }
            else if (w->state == GF__W_UNREAPED) {
                if (w->reap_deadline <= now) {
                    /* Its parent did not reap it in time: one last look. */
                    gf_exit_t ex;
                    if (gf__pidfd_exit_info(w->fd, w->pid, &ex) != 0) {
                        gf__exit_unknown(w->pid, &ex);
                    }
                    gf__sup_deliver(sup, w, &ex);
                    restart = 1;
                }
                else {
                    next = GF__MIN(next, w->reap_deadline);
                }
            }
        }
        if (restart) {
            continue;
        }
        sup->wake_at = next;
        int timeout_ms = -1;
        if (next != GF__NO_DEADLINE) {
            /* Round up: waking before the deadline would only cost a loop. */
            int64_t ms = (next - now + 999999) / 1000000;
            timeout_ms = (int)GF__MIN(ms, (int64_t)INT_MAX);
        }
        pthread_mutex_unlock(&sup->lock);

        int nev = epoll_wait(sup->epfd, events, GF__SUP_EVENTS, timeout_ms);

        pthread_mutex_lock(&sup->lock);
        sup->wake_at = INT64_MIN; /* awake: see wake_at */
        for (int i = 0; i < nev; i++) {
            if (events[i].data.u64 == 0) {
                uint64_t count;
                ssize_t r = read(sup->efd, &count, sizeof(count));
                (void)r; /* EAGAIN: another wake-up drained it first */
                continue;
            }
            if (sup->stopping) {
                break;
            }
            gf__sup_ready(sup, events[i].data.u64);
        }
        /* nev < 0: EINTR only (signals are blocked, but a debugger or a
         * stop/continue can still cause it); just loop. */
    }
    pthread_mutex_unlock(&sup->lock);
    return NULL;
}

/* --- the supervisor's API ------------------------------------------------------------- */

static void
gf__sup_release(gf_supervisor_t *sup)
{
    for (size_t i = 0; i < sup->n; i++) {
        if (sup->watches[i].fd >= 0) {
            gf__close_fd(sup->watches[i].fd);
        }
    }
    if (sup->efd >= 0) {
        gf__close_fd(sup->efd);
    }
    if (sup->epfd >= 0) {
        gf__close_fd(sup->epfd);
    }
    pthread_cond_destroy(&sup->delivered);
    pthread_mutex_destroy(&sup->lock);
    gf_free(sup->watches);
    gf_free(sup);
}

int
gf_supervisor_new(gf_supervisor_cb cb, void *userdata, gf_supervisor_t **out)
{
    if (out == NULL) {
        return GF_EINVAL;
    }
    *out = NULL;
    if (cb == NULL) {
        return GF_EINVAL;
    }
    /* Fail early on a kernel without pidfds rather than at the first watch:
     * the caller can then fall back to multiprocessing's sentinels.  Also
     * require waitid(P_PIDFD) (5.4; 5.3 has pidfd_open without it), which
     * is how we reap: a supervisor that cannot reap would leave zombies.
     * On our own pidfd it answers ECHILD (we are not our own child) where
     * supported, EINVAL where not. */
    int probe = gf__pidfd_open(getpid());
    if (probe < 0) {
        return probe;
    }
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    int r = waitid(GF__P_PIDFD, (id_t)probe, &si, WEXITED | WNOHANG);
    int probe_errno = r == 0 ? 0 : errno;
    gf__close_fd(probe);
    if (probe_errno == EINVAL) {
        return GF_ENOSYS;
    }

    pthread_once(&gf__sup_atfork_once, gf__sup_atfork_register);
    if (gf__sup_atfork_status != 0) {
        return -gf__sup_atfork_status;
    }
    gf_supervisor_t *sup = gf_calloc(1, sizeof(*sup));
    if (sup == NULL) {
        return GF_ENOMEM;
    }
    sup->cb = cb;
    sup->userdata = userdata;
    sup->epfd = -1;
    sup->efd = -1;
    sup->wake_at = GF__NO_DEADLINE;
    int rc = pthread_mutex_init(&sup->lock, NULL);
    if (rc != 0) {
        gf_free(sup);
        return -rc;
    }
    rc = pthread_cond_init(&sup->delivered, NULL);
    if (rc != 0) {
        pthread_mutex_destroy(&sup->lock);
        gf_free(sup);
        return -rc;
    }
    sup->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (sup->epfd < 0) {
        rc = -errno;
        gf__sup_release(sup);
        return rc;
    }
    sup->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (sup->efd < 0) {
        rc = -errno;
        gf__sup_release(sup);
        return rc;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    if (epoll_ctl(sup->epfd, EPOLL_CTL_ADD, sup->efd, &ev) != 0) {
        rc = -errno;
        gf__sup_release(sup);
        return rc;
    }

    gf__registry_add(&gf__sups, &sup->reg);
    /* Start the thread with every signal blocked, so that no asynchronous
     * signal lands on it before it settles its mask. */
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    rc = pthread_create(&sup->thread, NULL, gf__sup_main, sup);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (rc != 0) {
        gf__registry_remove(&gf__sups, &sup->reg);
        gf__sup_release(sup);
        return -rc;
    }
    *out = sup;
    return 0;
}

int
gf_supervisor_watch(gf_supervisor_t *sup, pid_t pid, uint64_t tag, unsigned flags)
{
    if (sup == NULL || pid <= 0 || (flags & ~GF_PROC_NOREAP) != 0) {
        return GF_EINVAL;
    }
    int fd = gf__pidfd_open(pid);
    if (fd < 0) {
        return fd;
    }
    int rc = 0;
    pthread_mutex_lock(&sup->lock);
    if (sup->forked) {
        rc = GF_EFORKED;
        goto fail;
    }
    if (gf__sup_find_live(sup, tag) != NULL) {
        rc = GF_EBUSY;
        goto fail;
    }
    if (sup->n == sup->cap) {
        size_t cap = sup->cap != 0 ? 2 * sup->cap : 8;
        if (cap > SIZE_MAX / sizeof(gf__watch_t)) {
            rc = GF_ENOMEM;
            goto fail;
        }
        gf__watch_t *grown = gf_realloc(sup->watches, cap * sizeof(gf__watch_t));
        if (grown == NULL) {
            rc = GF_ENOMEM;
            goto fail;
        }
        sup->watches = grown;
        sup->cap = cap;
    }
    gf__watch_t *w = &sup->watches[sup->n];
    memset(w, 0, sizeof(*w));
    w->tag = tag;
    w->serial = ++sup->next_serial;
    w->deadline = GF__NO_DEADLINE;
    w->reap_deadline = GF__NO_DEADLINE;
    w->pid = pid;
    w->fd = fd;
    w->flags = flags;
    w->state = GF__W_ACTIVE;
    /* Level-triggered EPOLLIN: readable once it has ended, including right
     * now for a zombie.  No wake-up needed: epoll reports readiness of an
     * fd added while the thread waits. */
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.u64 = w->serial;
    if (epoll_ctl(sup->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        rc = -errno;
        goto fail;
    }
    sup->n++;
    pthread_mutex_unlock(&sup->lock);
    return 0;

fail:
    pthread_mutex_unlock(&sup->lock);
    gf__close_fd(fd);
    return rc;
}

int
gf_supervisor_unwatch(gf_supervisor_t *sup, uint64_t tag)
{
    if (sup == NULL) {
        return GF_EINVAL;
    }
    int rc = GF_EINVAL;
    pthread_mutex_lock(&sup->lock);
    if (sup->forked) {
        rc = GF_EFORKED;
    }
    else {
        gf__watch_t *w = gf__sup_find_live(sup, tag);
        if (w != NULL) {
            gf__sup_remove(sup, w);
            rc = 0;
        }
        else if (gf__tls_sup != sup) {
            /* Its callback may be running: wait until that one (by serial:
             * the tag may be watched anew meanwhile) has returned. */
            gf__watch_t *d = gf__sup_find_delivering(sup, tag);
            if (d != NULL) {
                uint64_t serial = d->serial;
                while (gf__sup_find_serial(sup, serial) != NULL) {
                    pthread_cond_wait(&sup->delivered, &sup->lock);
                }
            }
        }
    }
    pthread_mutex_unlock(&sup->lock);
    return rc;
}

int
gf_supervisor_set_deadline(gf_supervisor_t *sup, uint64_t tag, int64_t deadline_ns)
{
    if (sup == NULL || deadline_ns < 0) {
        return GF_EINVAL;
    }
    int rc = 0;
    int poke = 0;
    pthread_mutex_lock(&sup->lock);
    gf__watch_t *w = sup->forked ? NULL : gf__sup_find_live(sup, tag);
    if (sup->forked) {
        rc = GF_EFORKED;
    }
    else if (w == NULL) {
        rc = GF_EINVAL;
    }
    else {
        w->deadline = deadline_ns == 0 ? GF__NO_DEADLINE : deadline_ns;
        if (w->state == GF__W_ACTIVE && w->deadline < sup->wake_at) {
            poke = 1;
            sup->wake_at = w->deadline; /* one poke per earlier deadline */
        }
    }
    pthread_mutex_unlock(&sup->lock);
    if (poke) {
        gf__sup_poke(sup);
    }
    return rc;
}

int
gf_supervisor_signal(gf_supervisor_t *sup, uint64_t tag, int sig)
{
    if (sup == NULL || sig < 0) {
        return GF_EINVAL;
    }
    int rc;
    pthread_mutex_lock(&sup->lock);
    gf__watch_t *w = sup->forked ? NULL : gf__sup_find_live(sup, tag);
    if (sup->forked) {
        rc = GF_EFORKED;
    }
    else if (w == NULL) {
        rc = GF_EINVAL;
    }
    else if (w->state == GF__W_UNREAPED) {
        rc = GF_ESRCH;
    }
    else {
        rc = gf__pidfd_send_signal(w->fd, sig);
    }
    pthread_mutex_unlock(&sup->lock);
    return rc;
}

size_t
gf_supervisor_nwatches(gf_supervisor_t *sup)
{
    if (sup == NULL) {
        return 0;
    }
    size_t count = 0;
    pthread_mutex_lock(&sup->lock);
    for (size_t i = 0; i < sup->n; i++) {
        count += sup->watches[i].state != GF__W_DELIVERING;
    }
    pthread_mutex_unlock(&sup->lock);
    return count;
}

void
gf_supervisor_free(gf_supervisor_t *sup)
{
    if (sup == NULL) {
        return;
    }
    /* Out of the registry first, so that a fork from now on leaves it
     * alone. */
    gf__registry_remove(&gf__sups, &sup->reg);
    pthread_mutex_lock(&sup->lock);
    int forked = sup->forked;
    sup->stopping = 1;
    pthread_mutex_unlock(&sup->lock);
    if (!forked) {
        gf__sup_poke(sup);
        pthread_join(sup->thread, NULL);
    }
    gf__sup_release(sup);
}

/* --- the worker's parent watch ---------------------------------------------------------- */

/* End the process now.  The raw exit_group system call rather than
 * _exit(): the pool is gone and nobody will read anything we could still
 * do, and an interposed _exit (sanitizers: ThreadSanitizer sleeps a second
 * at exit while other threads run, and takes its own locks, which another
 * thread may hold) could delay or block the exit. */
_Noreturn static void
gf__exit_now(int code)
{
    for (;;) {
        syscall(SYS_exit_group, code);
    }
}

typedef struct gf__parent_watch {
    int fd;
    pid_t pid;
    int exit_code;
    dev_t dev;
    ino_t ino;
} gf__parent_watch_t;

/* Is fd still the descriptor we opened?  A worker's code could close it
 * and the number be reused (e.g. by a pipe that then polls readable). */
static int
gf__parent_watch_same(const gf__parent_watch_t *w)
{
    struct stat st;
    return fstat(w->fd, &st) == 0 && st.st_dev == w->dev && st.st_ino == w->ino;
}

static int
gf__parent_watch_adopt(gf__parent_watch_t *w, int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return -errno;
    }
    w->fd = fd;
    w->dev = st.st_dev;
    w->ino = st.st_ino;
    return 0;
}

static void *
gf__parent_watch_main(void *arg)
{
    /* Copy and free the heap block at once: this thread never returns in
     * the normal case, and a still-allocated block would look like a leak
     * to anyone who checks at exit. */
    gf__parent_watch_t w = *(gf__parent_watch_t *)arg;
    gf_free(arg);
    pthread_setname_np(pthread_self(), "gilfree-ppwatch");
    for (;;) {
        struct pollfd p = {w.fd, POLLIN, 0};
        int r = poll(&p, 1, -1);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            /* ENOMEM: try again shortly rather than give up the watch. */
            struct timespec nap = {0, 10 * 1000 * 1000};
            nanosleep(&nap, NULL);
            continue;
        }
        if (!(p.revents & POLLNVAL) && gf__parent_watch_same(&w)) {
            /* The pool has ended. */
            gf__exit_now(w.exit_code);
        }
        /* Our descriptor was closed under us: open a new one by pid (the
         * pool is alive, or it is gone and pidfd_open says ESRCH; if it
         * died and its pid was reused in between we would watch a stranger:
         * the best we can do once the original pidfd is lost). */
        int fd = gf__pidfd_open(w.pid);
        if (fd == GF_ESRCH) {
            gf__exit_now(w.exit_code);
        }
        if (fd < 0 || gf__parent_watch_adopt(&w, fd) != 0) {
            if (fd >= 0) {
                gf__close_fd(fd);
            }
            return NULL; /* the parent-death signal, if set, still stands */
        }
    }
}

int
gf_watch_parent(pid_t pool_pid, int pool_pidfd, int exit_code, unsigned flags)
{
    const unsigned known = GF_WATCH_PARENT_PDEATHSIG | GF_WATCH_PARENT_NO_PDEATHSIG;
    if (pool_pid <= 0 || pool_pidfd < -1 || (flags & ~known) != 0 || flags == known) {
        return GF_EINVAL;
    }
    pid_t ppid = getppid();
    int fd = pool_pidfd;
    int owned = 0;
    if (fd < 0) {
        fd = gf__pidfd_open(pool_pid);
        if (fd == GF_ESRCH) {
            gf__exit_now(exit_code); /* the pool is gone already */
        }
        if (fd < 0 && fd != GF_ENOSYS) {
            return fd;
        }
        owned = fd >= 0;
    }
    else {
        /* A descriptor passed to us (pass_fds, SCM_RIGHTS) arrives without
         * close-on-exec; we own it from here on. */
        int fdflags = fcntl(fd, F_GETFD);
        if (fdflags < 0 || fcntl(fd, F_SETFD, fdflags | FD_CLOEXEC) != 0) {
            return errno == EBADF ? GF_EINVAL : -errno;
        }
        /* Is it a pidfd at all?  Signal 0 through it: EBADF for any other
         * kind of descriptor, ESRCH if the pool has ended. */
        int rc = gf__pidfd_send_signal(fd, 0);
        if (rc == GF_ESRCH) {
            gf__exit_now(exit_code);
        }
        if (rc == -EBADF) {
            return GF_EINVAL;
        }
    }
    gf__parent_watch_t *w = NULL;
    if (fd >= 0) {
        /* Has it ended already?  (Readable once it has.)  Checked after
         * the pidfd exists, so no exit can slip between check and watch. */
        int r = gf__poll_one(fd, POLLIN, 0);
        if (r > 0 && !(r & POLLNVAL)) {
            gf__exit_now(exit_code);
        }
        w = gf_malloc(sizeof(*w));
        if (w == NULL) {
            if (owned) {
                gf__close_fd(fd);
            }
            return GF_ENOMEM;
        }
        w->pid = pool_pid;
        w->exit_code = exit_code;
        int rc = gf__parent_watch_adopt(w, fd);
        if (rc != 0) {
            gf_free(w);
            if (owned) {
                gf__close_fd(fd);
            }
            return rc == -EBADF ? GF_EINVAL : rc;
        }
        /* The watcher: detached, small stack, every signal blocked (it
         * must not take the process's signals from the Python thread, and
         * poll() then never sees EINTR). */
        pthread_attr_t attr;
        rc = pthread_attr_init(&attr);
        if (rc == 0) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            size_t stack = GF__MAX((size_t)PTHREAD_STACK_MIN, (size_t)256 * 1024);
            pthread_attr_setstacksize(&attr, stack);
            sigset_t all, saved;
            sigfillset(&all);
            pthread_sigmask(SIG_SETMASK, &all, &saved);
            pthread_t thread;
            rc = pthread_create(&thread, &attr, gf__parent_watch_main, w);
            pthread_sigmask(SIG_SETMASK, &saved, NULL);
            pthread_attr_destroy(&attr);
        }
        if (rc != 0) {
            gf_free(w);
            if (owned) {
                gf__close_fd(fd);
            }
            return -rc;
        }
    }
    /* The parent-death signal (see proc.h for when and why).  Without a
     * watcher (no pidfds) it is all we have, so then it is set whoever the
     * parent is. */
    int pdeathsig;
    if (flags & GF_WATCH_PARENT_NO_PDEATHSIG) {
        pdeathsig = 0;
    }
    else if (flags & GF_WATCH_PARENT_PDEATHSIG) {
        pdeathsig = 1;
    }
    else {
        pdeathsig = ppid != pool_pid || fd < 0;
    }
    if (pdeathsig) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
            return -errno;
        }
        /* The parent may have died before the signal was armed: then we
         * were re-parented and getppid() changed. */
        if (getppid() != ppid) {
            gf__exit_now(exit_code);
        }
    }
    return fd >= 0 ? 0 : GF_ENOSYS;
}

#else /* no pidfds at compile time */

int
gf_proc_open(pid_t pid, gf_proc_t *out)
{
    (void)pid;
    if (out == NULL) {
        return GF_EINVAL;
    }
    gf_proc_t init = GF_PROC_INIT;
    *out = init;
    return GF_ENOSYS;
}

int
gf_proc_close(gf_proc_t *p)
{
    return p == NULL ? GF_EINVAL : 0;
}

int
gf_proc_signal(gf_proc_t *p, int sig)
{
    (void)sig;
    return p == NULL ? GF_EINVAL : GF_ENOSYS;
}

int
gf_proc_poll_exit(gf_proc_t *p, unsigned flags, gf_exit_t *out)
{
    (void)flags;
    return p == NULL || out == NULL ? GF_EINVAL : GF_ENOSYS;
}

int
gf_proc_wait_exit(gf_proc_t *p, int64_t timeout_ns, unsigned flags, gf_exit_t *out)
{
    (void)timeout_ns;
    (void)flags;
    return p == NULL || out == NULL ? GF_EINVAL : GF_ENOSYS;
}

int
gf_supervisor_new(gf_supervisor_cb cb, void *userdata, gf_supervisor_t **out)
{
    (void)cb;
    (void)userdata;
    if (out != NULL) {
        *out = NULL;
    }
    return GF_ENOSYS;
}

int
gf_supervisor_watch(gf_supervisor_t *sup, pid_t pid, uint64_t tag, unsigned flags)
{
    (void)sup;
    (void)pid;
    (void)tag;
    (void)flags;
    return GF_ENOSYS;
}

int
gf_supervisor_unwatch(gf_supervisor_t *sup, uint64_t tag)
{
    (void)sup;
    (void)tag;
    return GF_ENOSYS;
}

int
gf_supervisor_set_deadline(gf_supervisor_t *sup, uint64_t tag, int64_t deadline_ns)
{
    (void)sup;
    (void)tag;
    (void)deadline_ns;
    return GF_ENOSYS;
}

int
gf_supervisor_signal(gf_supervisor_t *sup, uint64_t tag, int sig)
{
    (void)sup;
    (void)tag;
    (void)sig;
    return GF_ENOSYS;
}

size_t
gf_supervisor_nwatches(gf_supervisor_t *sup)
{
    (void)sup;
    return 0;
}

void
gf_supervisor_free(gf_supervisor_t *sup)
{
    (void)sup;
}

int
gf_watch_parent(pid_t pool_pid, int pool_pidfd, int exit_code, unsigned flags)
{
    (void)pool_pid;
    (void)pool_pidfd;
    (void)exit_code;
    (void)flags;
    return GF_ENOSYS;
}

#endif
