/* gilfree core: process supervision for the process backend.
 *
 * Three building blocks, all on Linux pid file descriptors (pidfds):
 *
 *   gf_proc_t        a handle on one process: signal it, learn whether and
 *                    how it ended (exit code, or signal and core flag);
 *   gf_supervisor_t  one background thread that sleeps in ppoll() on the
 *                    pidfds of every watched process and calls back as soon
 *                    as one ends; optional per-process deadlines, at which it
 *                    SIGKILLs the process (task timeouts);
 *   gf_watch_parent  in a worker: die when the pool process dies, even when
 *                    the pool is SIGKILLed and even when the worker's parent
 *                    is not the pool (multiprocessing's forkserver).
 *
 * Why pidfds: a pidfd names one process for as long as the descriptor is
 * open, so signalling or waiting through it can never hit an unrelated
 * process that reused the pid; it becomes readable when the process ends,
 * so a thread can sleep in poll() on any number of them (no SIGCHLD handler,
 * which Python owns, and no polling loop); and it works for processes that
 * are not our children (workers started by the forkserver are its children,
 * not the pool's).  Linux 5.3+ for gf_proc_t and gf_watch_parent, 5.4+
 * (waitid(P_PIDFD), how we reap) for the supervisor; elsewhere, or on an
 * older kernel, the functions return GF_ENOSYS and the caller falls back to
 * multiprocessing's sentinels.
 *
 * How a process ended, and who reaps it ("reap" = collect the zombie with
 * wait, which is what frees its pid):
 *   - our child: waitid(P_PIDFD) reaps it and gives the exact status.  With
 *     GF_PROC_NOREAP the status is read with WNOWAIT and the zombie is left
 *     for someone else (e.g. multiprocessing's Popen.poll()/join(), which
 *     must be the one to reap a child it started with the "fork" method, or
 *     it believes the child runs forever);
 *   - not our child (forkserver workers): only its parent can reap it.  On
 *     Linux 6.15+ the kernel keeps the status for pidfd holders once the
 *     parent has reaped it (PIDFD_GET_INFO / PIDFD_INFO_EXIT), so the status
 *     is exact as soon as the parent (the forkserver, which reaps on
 *     SIGCHLD) has done so.  On older kernels the status is unknown
 *     (GF_EXIT_UNKNOWN): the process has ended, that is all we can tell, and
 *     the caller may take the code from elsewhere (the forkserver sends it
 *     through multiprocessing's sentinel).
 *
 * Every function returns 0 or a negative GF_E* code; a failing system
 * call's errno passes through negated (e.g. -EMFILE).  Every descriptor the
 * core opens is close-on-exec.
 */
#ifndef GILFREE_PROC_H
#define GILFREE_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- how a process ended ---------------------------------------------------- */

enum {
    GF_EXIT_UNKNOWN = 0, /* it has ended; how is not known (see above) */
    GF_EXIT_CODE = 1,    /* it exited (exit(), _exit(), return from main) */
    GF_EXIT_SIGNAL = 2,  /* a signal killed it */
};

typedef struct gf_exit {
    int kind;        /* GF_EXIT_* */
    int code;        /* GF_EXIT_CODE: the exit status (0..255); GF_EXIT_SIGNAL:
                      * the signal number; GF_EXIT_UNKNOWN: 0 */
    int core_dumped; /* GF_EXIT_SIGNAL: nonzero if it dumped core */
    int timed_out;   /* from a supervisor: nonzero if the supervisor killed
                      * it because its deadline passed (the kill was sent
                      * before it ended; code then says SIGKILL unless it
                      * died of something else first) */
    pid_t pid;       /* the process */
} gf_exit_t;

/* Fill *out from a waitpid()-style status word (WIFEXITED / WIFSIGNALED).
 * timed_out is cleared.  A status that is neither gives GF_EXIT_UNKNOWN. */
void gf_exit_from_wait_status(int status, pid_t pid, gf_exit_t *out);

/* "SIGKILL", "SIGSEGV", ... for the standard signals; NULL for anything else
 * (real-time signals included).  Static strings. */
const char *gf_signal_name(int sig);

/* A short description, without the pid, e.g.
 *   "exited with code 3"
 *   "killed by signal 9 (SIGKILL)"
 *   "killed by signal 11 (SIGSEGV, core dumped)"
 *   "killed by signal 36 (SIGRTMIN+2)"
 *   "exited (status unknown)"
 * written like snprintf: at most n bytes including the NUL (buf may be NULL
 * when n == 0).  Returns the length the full text has (so a return >= n
 * means it was cut), or GF_EINVAL.  Not async-signal-safe. */
int gf_exit_describe(const gf_exit_t *status, char *buf, size_t n);

/* --- one process ---------------------------------------------------------- */

/* Public so that it can be embedded; treat the fields as read-only. */
typedef struct gf_proc {
    int fd;         /* the pidfd, close-on-exec; -1 once closed */
    pid_t pid;
    int exited;     /* nonzero once `exit` holds the final, known status */
    gf_exit_t exit; /* valid when exited */
} gf_proc_t;

#define GF_PROC_INIT {-1, 0, 0, {0, 0, 0, 0, 0}}

/* gf_proc_poll_exit / gf_proc_wait_exit / gf_supervisor_watch flag: read the
 * status of our own child without reaping it (waitid WNOWAIT); whoever
 * started it reaps it later. */
#define GF_PROC_NOREAP 0x1u

/* Open a handle on process `pid` (pid > 0).  Returns 0, GF_EINVAL, GF_ESRCH
 * (no such process: it never existed, or it ended and was reaped), GF_ENOSYS
 * (no pidfd_open: not Linux, or a kernel older than 5.3) or a negated errno.
 * A zombie (ended, not yet reaped) can be opened. */
int gf_proc_open(pid_t pid, gf_proc_t *out);

/* Close the pidfd.  Idempotent.  Never reaps: a child that has ended and
 * was not reaped through the handle stays a zombie until someone waits. */
int gf_proc_close(gf_proc_t *p);

/* Send sig (0: just check) to the process through its pidfd: never to
 * another process that reused the pid.  Returns 0, GF_ESRCH (it has
 * ended), GF_EINVAL or a negated errno (-EPERM). */
int gf_proc_signal(gf_proc_t *p, int sig);

/* Non-blocking: has the process ended?  GF_EAGAIN: still running.  0: it has
 * ended and *out says how: for our child, the exact status (the child is
 * reaped unless GF_PROC_NOREAP); for another process, the status if the
 * kernel has it (see the top of this file), else GF_EXIT_UNKNOWN, in which
 * case a later call may still learn it once the process's parent reaped it.
 * A known status is cached in *p (p->exited), so later calls return it
 * again without system calls.  Also GF_EINVAL, GF_ENOSYS. */
int gf_proc_poll_exit(gf_proc_t *p, unsigned flags, gf_exit_t *out);

/* Blocking form: sleep until the process ends or timeout_ns passes
 * (< 0: forever; 0: do not sleep).  For a process that is not our child
 * it also waits (within the timeout, at most ~250 ms) for its parent to reap
 * it, so that the status is known where the kernel can tell it.  Returns as
 * gf_proc_poll_exit, plus GF_ETIMEDOUT and GF_EINTR (a signal handler ran;
 * check signals and call again). */
int gf_proc_wait_exit(gf_proc_t *p, int64_t timeout_ns, unsigned flags, gf_exit_t *out);

/* --- the supervisor (pool side) ---------------------------------------------- */

typedef struct gf_supervisor gf_supervisor_t;

/* Called on the supervisor's thread, once per watch, when the watched
 * process has ended (or was found ended when watched).  The watch is gone
 * by then (its pidfd is closed after the callback returns); `status` is valid
 * only during the call.
 *
 * Rules for the callback:
 *   - keep it short and never block for long: every other exit, and every
 *     deadline, waits until it returns.  Closing the worker's rings
 *     (gf_ring_close) and waking waiters is the intended use;
 *   - it may call gf_supervisor_watch, _unwatch, _set_deadline and _signal
 *     on its own supervisor, but never gf_supervisor_free;
 *   - it must not take a lock that a caller of gf_supervisor_unwatch or
 *     gf_supervisor_free may hold while calling them (in the extension: the
 *     GIL or a critical section — release those around unwatch and free),
 *     because those two wait for a callback in progress to return. */
typedef void (*gf_supervisor_cb)(void *userdata, uint64_t tag, const gf_exit_t *status);

/* Start the supervisor thread (all asynchronous signals blocked, so the
 * process's signals keep reaching the thread that waits for results).
 * Returns 0, GF_EINVAL, GF_ENOMEM, GF_ENOSYS (no pidfds, or no
 * waitid(P_PIDFD): not Linux, or older than 5.4) or a negated errno. */
int gf_supervisor_new(gf_supervisor_cb cb, void *userdata, gf_supervisor_t **out);

/* Watch process `pid` under `tag` (the caller's name for it, e.g. a worker
 * slot; unique among this supervisor's live watches).  flags: 0 or
 * GF_PROC_NOREAP.  The callback fires once, when it ends — at once if it has
 * already ended (a zombie).
 *
 * A pid names the process only while it lives (or is an unreaped zombie):
 * for a process that is not our child (a forkserver worker) that ended and
 * was reaped before this call, the pid may in theory already belong to
 * someone else.  So watch first, then confirm the worker is alive (its
 * first message on the channel, sent after the watch began): from then on
 * the watch provably follows the worker.  (Our own children cannot be
 * confused: their pids stay ours until we reap them.)
 *
 * Returns 0, GF_EINVAL (bad pid or flags),
 * GF_EBUSY (tag in use), GF_ESRCH (no such process: it has ended and been
 * reaped already), GF_EFORKED (called in a forked child), GF_ENOSYS,
 * GF_ENOMEM or a negated errno (-EMFILE). */
int gf_supervisor_watch(gf_supervisor_t *sup, pid_t pid, uint64_t tag, unsigned flags);

/* Stop watching `tag`.  Returns 0 if the watch was removed before its
 * callback ran (it never will run; the process is neither signalled nor
 * reaped), or GF_EINVAL: no such watch (unknown tag, or its callback has
 * already run).  Called from another thread while the tag's callback is
 * running, it first waits for the callback to return, so after unwatch
 * returns the callback is never running or about to run for that watch. */
int gf_supervisor_unwatch(gf_supervisor_t *sup, uint64_t tag);

/* Kill the process of `tag` with SIGKILL once gf_now_ns() reaches
 * deadline_ns (absolute, monotonic); 0 clears the deadline.  Setting it
 * again replaces it.  After the kill, the exit callback reports
 * timed_out = 1.  Cheap (a mutex, and a wake-up only when the new deadline
 * is earlier than the one the thread sleeps until), so it can be set per
 * task.  Returns 0, GF_EINVAL (no such watch) or GF_EFORKED. */
int gf_supervisor_set_deadline(gf_supervisor_t *sup, uint64_t tag, int64_t deadline_ns);

/* Send sig to the process of `tag` through its pidfd (never to a process
 * that reused the pid).  Returns 0, GF_EINVAL (no such watch), GF_ESRCH (it
 * has ended; its callback is on its way), GF_EFORKED or a negated errno. */
int gf_supervisor_signal(gf_supervisor_t *sup, uint64_t tag, int sig);

/* Watches not yet delivered or removed. */
size_t gf_supervisor_nwatches(gf_supervisor_t *sup);

/* Stop and join the thread, close every pidfd and free.  Watches still
 * live get no callback; their processes are left alone (neither signalled
 * nor reaped).  Waits for a callback in progress to return; never call it
 * from the callback.  In a forked child (where the thread does not exist)
 * it only frees.  NULL is a no-op. */
void gf_supervisor_free(gf_supervisor_t *sup);

/* --- the worker side ------------------------------------------------------- */

/* gf_watch_parent flags. */
#define GF_WATCH_PARENT_PDEATHSIG 0x1u    /* set PR_SET_PDEATHSIG even when
                                           * the parent is the pool */
#define GF_WATCH_PARENT_NO_PDEATHSIG 0x2u /* never set it */

/* In a worker: make this process exit with status exit_code as soon as the
 * pool process ends, however it ends (SIGKILL included).  The exit is
 * immediate, like os._exit(): no atexit handlers, no buffers flushed (the
 * exit_group system call itself, so that no interposed _exit can delay it).
 * Two mechanisms:
 *
 *   1. a watcher thread (tiny, detached, every signal blocked) that sleeps
 *      in poll() on a pidfd of the pool and exits the process when it
 *      becomes readable.  It watches the pool itself, whoever our parent is:
 *      with the forkserver start method the parent is the forkserver, so
 *      the parent-death signal alone would not fire when the pool dies.  If
 *      the worker's code closes the watcher's descriptor, the watcher
 *      notices (it checks the descriptor's identity before acting) and
 *      reopens one by pid.
 *   2. PR_SET_PDEATHSIG(SIGKILL): the kernel kills us when our parent dies,
 *      with no thread of ours involved.  With the forkserver (parent != the
 *      pool) this adds a second, independent chain: the pool dies -> the
 *      forkserver sees EOF on its alive pipe and exits -> the kernel kills
 *      us.  It is set by default only when the parent is NOT the pool,
 *      because the signal fires when the parent THREAD that forked us exits,
 *      not the parent process: a worker that the pool process forked itself
 *      ("fork"/"spawn") from a short-lived thread would be killed when that
 *      thread ends.  In that case the watcher (1) already watches exactly
 *      our parent.  GF_WATCH_PARENT_PDEATHSIG forces it,
 *      GF_WATCH_PARENT_NO_PDEATHSIG disables it (do that when the parent is
 *      an intermediate that exits before the worker does: the signal would
 *      kill the worker then; the forkserver lives as long as the pool).
 *
 * The pool is named by pool_pidfd (>= 0: a pidfd of the pool that it passed
 * to us, e.g. made with gf_proc_open(getpid()) and passed like the channel's
 * memfds; race-free; on success the watcher owns it and keeps it open for
 * the life of the process) or, if pool_pidfd is -1, by pool_pid alone, in
 * which case a pool that died and whose pid was reused before this call is
 * not detected: confirm the pool is alive AFTER this call (e.g. a handshake
 * on the channel); the pidfd opened here then refers to it.  pool_pid is
 * needed in both cases (to tell whether our parent is the pool).
 *
 * If the pool has already ended, the process exits at once (this call does
 * not return); likewise if the parent dies while the signal is being set.
 * Call it once per process, early in the worker.  A process forked from the
 * worker later inherits neither mechanism.
 *
 * Returns 0, GF_EINVAL, GF_ENOMEM, a negated errno (the watcher thread could
 * not start; nothing was set up), or GF_ENOSYS: no pidfds (not Linux, or a
 * kernel older than 5.3), so there is no watcher and only the parent-death
 * signal was set, whoever the parent is (unless
 * GF_WATCH_PARENT_NO_PDEATHSIG). */
int gf_watch_parent(pid_t pool_pid, int pool_pidfd, int exit_code, unsigned flags);

#ifdef __cplusplus
}
#endif
#endif /* GILFREE_PROC_H */
