/* Private header shared by the files of the gilfree._core extension.
 *
 * The extension is the only layer that touches the CPython C API.  It turns
 * the pure-C core (include/gilfree) into Python objects:
 *
 *   pool.c         Pool: native worker threads (gf_pool_t) that attach to the
 *                  interpreter to run Python callables; apply/submit/close.
 *   asyncresult.c  AsyncResult: one apply_async() call, also its own task.
 *   mapjob.c       MapJob: map/starmap/imap/imap_unordered, chunked work.
 *   failure.c      capture an exception on a worker; re-raise it in the
 *                  caller with the worker traceback and the input index.
 *   wait.c         GIL-free waiting on an eventcount that wakes on Ctrl-C.
 *   procpool.c     the process backend, pool side: channels, dispatch, the
 *                  collector thread, crash isolation, map over processes.
 *   codec.c        objects <-> channel messages (pickle 5, shared memory).
 *   worker.c       the worker loop run in each worker process.
 *   module.c       module state, init, GF_E* -> exception (the one place).
 */
#ifndef GILFREE_EXT_GFEXT_H
#define GILFREE_EXT_GFEXT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdatomic.h>

#include "gilfree/gilfree.h"
#include "compat.h"

/* ---- module state -------------------------------------------------------- */

typedef struct {
    PyTypeObject *Pool_Type;
    PyTypeObject *AsyncResult_Type;
    PyTypeObject *MapJob_Type;
    PyTypeObject *MapIter_Type;
    PyObject *RemoteTraceback;      /* exception class */
    PyObject *PoolTerminated;       /* BaseException: interrupts a running
                                     * call at terminate() */
    PyObject *Future_Type;          /* concurrent.futures.Future */
    PyObject *CancelledError;       /* concurrent.futures.CancelledError */
    PyObject *InvalidStateError;    /* concurrent.futures.InvalidStateError */
    PyObject *format_exception;     /* traceback.format_exception, lazily */
    /* Interned method names used on hot paths. */
    PyObject *str_set_running_or_notify_cancel;
    PyObject *str_set_result;
    PyObject *str_set_exception;
    PyObject *str_cancel;
    PyObject *str_add_note;
    /* future.c: a concurrent.futures.Future subclass whose Condition is
     * created only when someone waits on it.  NULL when this Python's
     * Future internals are not the ones we know (then stock Futures). */
    PyTypeObject *LazyFuture_Type;
    PyObject *Condition;            /* threading.Condition */
    PyObject *base_result;          /* concurrent.futures.Future.result */
    PyObject *base_exception;       /* concurrent.futures.Future.exception */
    PyObject *base_cancel;          /* concurrent.futures.Future.cancel */
    PyObject *k_gf_pool;            /* "_gf_pool": a process submit's pool
                                     * (a weak reference) */
    PyObject *k_condition, *k_gf_condition, *k_state, *k_result,
             *k_exception, *k_waiters, *k_done_callbacks;
    PyObject *PENDING, *RUNNING, *FINISHED;
    /* Process backend (codec.c, procpool.c, worker.c). */
    PyTypeObject *ShmBuffer_Type;
    PyTypeObject *ProcMap_Type;
    PyObject *WorkerDiedError;      /* exception classes */
    PyObject *TaskTimeoutError;
    PyObject *InitializerError;     /* worker lifecycle (lifecycle.c) */
    PyObject *WorkerExitError;
    PyObject *PicklingError;        /* pickle.PicklingError */
    PyObject *pickle_dumps, *pickle_loads;
    PyObject *cloudpickle_dumps;    /* lazily; NULL until first needed */
    PyObject *int_protocol;         /* 5 */
    PyObject *oob_callback;         /* codec.c's buffer callback */
    PyObject *kw_buffer_callback;   /* ("buffer_callback",) */
    PyObject *kw_buffers;           /* ("buffers",) */
    PyObject *LargeBuffer;          /* gilfree._process._LargeBuffer, lazily */
} gfx_state;

/* The module definition (module.c), to find our state from any type. */
extern struct PyModuleDef gfx_module_def;
/* Our module state, from one of our types or a subclass of one. */
gfx_state *gfx_state_from_type(PyTypeObject *tp);

/* Intern `text` into st->field, or return -1 from the enclosing function. */
#define GFX_INTERN(st, field, text)                          \
    do {                                                     \
        (st)->field = PyUnicode_InternFromString(text);      \
        if ((st)->field == NULL) {                           \
            return -1;                                       \
        }                                                    \
    } while (0)

/* ---- our own native threads ------------------------------------------------ */

/* First thing in a native thread of ours (collector, probe sampler): every
 * asynchronous signal blocked, so that they stay with the main thread where
 * Ctrl-C is handled, and a name in /proc ("gilfree-*": tests find leaks by
 * it, and the fork warning knows it holds no lock a child could need). */
#include <signal.h>
static inline void
gfx_thread_setup(const char *name)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
#ifdef __linux__
    pthread_setname_np(pthread_self(), name);
#else
    (void)name;
#endif
}

/* The signal mask of the thread that first imported gilfree._core (the
 * main thread, as a rule), captured once in core_exec.  Thread-pool workers
 * run the user's code with it: a process started from a task (subprocess,
 * a multiprocessing forkserver) inherits its creator's mask, and one with
 * every signal blocked never reaps its children and ignores SIGTERM and
 * Ctrl-C.  Linux gives a process-directed signal to the main thread first
 * when it does not block it, so Ctrl-C still lands where it is handled. */
extern sigset_t gfx_user_sigmask;

/* ---- errors (module.c) --------------------------------------------------- */

/* Turn a negative GF_E* code into a Python exception: the one place where
 * core error codes become exceptions.  `what` names the operation.  Returns
 * NULL so callers can `return gfx_raise(...)`. */
PyObject *gfx_raise(int err, const char *what);

/* ---- tasks ----------------------------------------------------------------
 * Everything the extension queues on a core pool starts with a gfx_task, so
 * one worker entry point can run any of them while attached once. */

enum gfx_task_kind {
    GFX_TASK_APPLY = 1,    /* AsyncResult (apply, apply_async) */
    GFX_TASK_SUBMIT = 2,   /* concurrent.futures.Future (submit) */
    GFX_TASK_MAP = 3,      /* one participant in a MapJob */
};

typedef struct gfx_task {
    gf_task_t base;        /* must be first: the core sees only this */
    int kind;
} gfx_task;

/* The run function of every gfx_task: attach, run it and whatever else is
 * queued, detach. */
void gfx__task_entry(gf_task_t *t, gf_worker_t *w);

/* ---- insights (insights.c) ---------------------------------------------------- */

/* What a timeline segment shows. */
enum {
    GFX_TL_INIT = 1,   /* the initializer */
    GFX_TL_WORK = 2,   /* calling the function (threads: attached) */
    GFX_TL_GIL = 3,    /* threads: waiting for the GIL */
    GFX_TL_DATA = 4,   /* processes: decoding, encoding, sending */
    GFX_TL_EXIT = 5,   /* the exit function */
};
#define GFX_STATS_SEGS 16384u
#define GFX_STATS_MAGIC 0x6766737461747331ull

typedef struct {
    _Atomic int64_t start_ns, end_ns;
    _Atomic uint32_t kind, items;
    _Atomic uint32_t cpu_permille;  /* share of it on a CPU, or
                                     * GFX_CPU_UNKNOWN */
    uint32_t pad;
} gfx_segrec;
#define GFX_CPU_UNKNOWN UINT32_MAX

/* One worker life's numbers (ns, monotonic clock).  One writer: that
 * worker; readers load each field whole (relaxed). */
typedef struct {
    uint64_t magic;
    _Atomic int64_t tasks;      /* calls of the function */
    _Atomic int64_t chunks;     /* tasks/chunks taken */
    _Atomic int64_t work_ns;    /* running them */
    _Atomic int64_t cpu_ns;     /* threads: thread CPU time meanwhile */
    _Atomic int64_t idle_ns;    /* waiting for work */
    _Atomic int64_t gil_ns;     /* threads: waiting for the GIL */
    _Atomic int64_t data_ns;    /* processes: (de)serialising, moving */
    _Atomic int64_t init_ns, exit_ns;
    _Atomic int64_t start_ns;   /* the life began */
    _Atomic int64_t end_ns;     /* ... and ended (0: still on) */
    int64_t last_ns;            /* writer only: end of its last stretch */
    _Atomic uint64_t nsegs;     /* segments written; the ring holds the
                                 * last GFX_STATS_SEGS */
    gfx_segrec segs[GFX_STATS_SEGS];
} gfx_wstats;

/* The stats of the worker the calling thread is (NULL: none, or off). */
extern _Thread_local gfx_wstats *gfx__cur_stats;
void gfx_stats_init(gfx_wstats *s);
/* Single writer: a plain read-add-store, atomic only for the readers. */
static inline void
gfx_stats_add(_Atomic int64_t *field, int64_t v)
{
    atomic_store_explicit(field,
                          atomic_load_explicit(field, memory_order_relaxed) + v,
                          memory_order_relaxed);
}
/* Record a segment; cpu_ns < 0: not measured. */
void gfx_stats_seg(gfx_wstats *s, unsigned kind, int64_t start, int64_t end,
                   int64_t items, int64_t cpu_ns);
/* The counters and segments as a dict (new ref). */
PyObject *gfx_stats_snapshot(const gfx_wstats *s);
int64_t gfx_thread_cpu_ns(void);

/* ---- worker lifecycle (lifecycle.c) ------------------------------------------ */

typedef struct gfx_lc gfx_lc;

/* One worker's life: touched only by that worker, attached. */
typedef struct {
    gfx_lc *lc;
    uint32_t id;              /* 0..workers-1 */
    PyObject *id_obj;         /* id as an int */
    PyObject *state;          /* worker_state=True: its dict while live */
    int live;                 /* initialised and not yet finished */
    int64_t calls;            /* calls since the last (re)start */
    int64_t recycled;         /* times max_tasks_per_worker restarted it */
    int64_t init_ns, exit_ns; /* time in the initializer / exit function */
    /* Threads: gf_now_ns() when its exit function started, 0 otherwise
     * (read by join() for exit_timeout). */
    _Atomic int64_t exit_started_ns;
} gfx_wctx;

struct gfx_lc {
    gfx_state *st;
    PyObject *spec;           /* the options tuple gilfree.Pool made */
    PyObject *initializer;    /* or NULL */
    PyObject *initargs;       /* tuple */
    PyObject *worker_exit;    /* or NULL */
    PyObject *shared;         /* or NULL (has_shared == 0) */
    PyObject *cpus;           /* tuple of per-worker tuples of CPU ids, or
                               * NULL */
    int use_state, pass_id, has_shared;
    int64_t max_tasks;        /* calls per worker life; 0: no limit */
    double init_timeout, exit_timeout;  /* seconds; <= 0: none */
    uint32_t n;
    gfx_wctx *w;              /* n contexts */
    PyObject *exit_results;   /* list: what exit functions returned */
    pthread_mutex_t lock;     /* error, exit_error */
    PyObject *error;          /* the first InitializerError, or NULL */
    PyObject *exit_error;     /* the first WorkerExitError, or NULL */
    _Atomic int broken;       /* error is set: no call runs any more */
    int in_worker_process;    /* this is a process worker's own copy */
    _Atomic uint32_t starting;  /* threads: workers still initialising */
    gf_ec_t started_ec;       /* notified as they finish (or break) */
};

/* The context of the worker the calling thread is (NULL: none). */
extern _Thread_local gfx_wctx *gfx__cur_wctx;

/* From the options tuple (see gilfree._pool); n contexts with ids id0...
 * NULL with an exception. */
gfx_lc *gfx_lc_new(gfx_state *st, PyObject *spec, uint32_t n, uint32_t id0);
void gfx_lc_free(gfx_lc *lc);   /* attached */
/* fn(*prefix, *args, **kwargs) on the calling worker: starts or recycles
 * its context first when due. */
PyObject *gfx_lc_call(gfx_lc *lc, PyObject *fn, PyObject *const *args,
                      Py_ssize_t nargs, PyObject *kwargs);
PyObject *gfx_lc_call_tuple(gfx_lc *lc, PyObject *fn, PyObject *args,
                            PyObject *kwargs);
/* Start a context (new state, initializer): 0, or -1 with the
 * InitializerError set (also recorded: the pool is broken). */
int gfx_lc_start(gfx_wctx *w);
/* End it (exit function): 0 with *value (new ref, NULL without an exit
 * function), or -1 with the exit function's exception set. */
int gfx_lc_finish(gfx_wctx *w, PyObject **value);
int gfx_lc_apply_affinity(gfx_wctx *w);
/* Threads: on_start / on_stop of a worker (attached). */
void gfx_lc_thread_begin(gfx_wctx *w);
void gfx_lc_thread_end(gfx_wctx *w);
/* Threads: wait for every initializer (timeout < 0: no limit). */
int gfx_lc_wait_started(gfx_lc *lc, double timeout);
/* Threads: 1 (and *worker) if an exit function has overrun exit_timeout. */
int gfx_lc_exit_overdue(gfx_lc *lc, uint32_t *worker);
/* An InitializerError (exit_fn 0) or WorkerExitError naming the worker,
 * with `cause` as __cause__ and `why` (or the cause) in the message. */
PyObject *gfx_lc_error_new(gfx_lc *lc, int exit_fn, uint32_t worker,
                           PyObject *cause, const char *why);
void gfx_lc_set_error(gfx_lc *lc, PyObject *err);
void gfx_lc_set_exit_error(gfx_lc *lc, PyObject *err);
/* A copy of the recorded InitializerError (new ref), or NULL with an
 * exception. */
PyObject *gfx_lc_error_copy(gfx_lc *lc);
/* Raise (a copy of) the recorded InitializerError; returns -1. */
int gfx_lc_raise_broken(gfx_lc *lc);
/* 0, or -1 with InitializerError if the pool is broken (lc may be NULL). */
int gfx_lc_check(gfx_lc *lc);
PyObject *gfx_lc_exit_results(gfx_lc *lc);
/* The recorded WorkerExitError (new ref, cleared), or NULL. */
PyObject *gfx_lc_take_exit_error(gfx_lc *lc);

/* ---- pool (pool.c) -------------------------------------------------------- */

enum gfx_pool_state {
    GFX_POOL_OPEN = 0,
    GFX_POOL_CLOSED = 1,       /* close(): no new work, queued work runs */
    GFX_POOL_TERMINATED = 2,   /* terminate(): queued work cancelled */
};

/* Per worker, shared between the worker thread and the pool object. */
typedef struct {
    /* PyThread_get_thread_ident() of the worker; set once in on_start,
     * read by terminate() (seq_cst, with `busy`). */
    _Atomic unsigned long ident;
    /* 1 while the worker is attached running tasks.  terminate() sets
     * `terminated`, then reads `busy`; the worker sets `busy`, then reads
     * `terminated` (all seq_cst): a task is either cancelled by the worker
     * or interrupted by terminate(), never missed by both. */
    _Atomic int busy;
} gfx_worker_slot;

/* Outlives the worker threads: freed by the pool object after join. */
typedef struct {
    PyInterpreterState *interp;  /* workers attach to this interpreter */
    _Atomic int terminated;
    uint32_t nworkers;
    gfx_lc *lc;                  /* worker lifecycle, or NULL; owned */
    gfx_wstats *stats;           /* insights: nworkers of them, or NULL */
    int64_t start_ns;            /* when the pool started */
    gfx_worker_slot slots[];
} gfx_pool_shared;

typedef struct gfx_engine gfx_engine;

typedef struct {
    PyObject_HEAD
    gf_pool_t *core;             /* NULL until __init__ succeeds (threads) */
    gfx_engine *proc;            /* the process backend, or NULL (also
                                  * after it was joined) */
    gfx_engine *proc_retired;    /* after join/terminate: its memory, kept
                                  * for map jobs until dealloc */
    int backend_proc;            /* 1: backend="processes" */
    /* Worker lifecycle, or NULL.  Threads: shared->lc (owned there, it
     * lives as long as the threads); processes: owned here, the engine's
     * reports land in it. */
    gfx_lc *lc;
    int insights;                /* Pool(insights=True) */
    gfx_pool_shared *shared;     /* with the worker threads */
    uint32_t nworkers;
    /* enum gfx_pool_state.  Written by the owning threads with the GIL (or
     * the object's critical section); read by workers without it, hence
     * atomic.  Only ever grows. */
    _Atomic int state;
    _Atomic int initialised;     /* __init__ ran (once only) */
    _Atomic int joined;          /* every worker thread has been joined */
    PyObject *weakreflist;
} PoolObject;

/* ---- interruptible windows ----------------------------------------------------
 * terminate() interrupts only user code: a worker marks `busy` just around
 * its calls into user callables, never around our own bookkeeping (setting
 * a future's result, callbacks, cancellation), so PoolTerminated cannot
 * land there.  An interrupt that arrives after the call returned is dropped
 * at the end of the window.  Thread-local: set while a worker runs tasks. */
extern _Thread_local gfx_worker_slot *gfx__cur_slot;
extern _Thread_local gfx_pool_shared *gfx__cur_shared;

static inline int
gfx_interruptible_begin(void)
{
    gfx_worker_slot *s = gfx__cur_slot;
    if (s == NULL) {
        return 1;  /* not a worker: nothing to mark */
    }
    int prev = atomic_load_explicit(&s->busy, memory_order_relaxed);
    atomic_store(&s->busy, 1);  /* seq_cst: see gfx_worker_slot */
    return prev;
}

static inline void
gfx_interruptible_end(int prev)
{
    gfx_worker_slot *s = gfx__cur_slot;
    if (prev) {
        return;  /* nested window, or not a worker */
    }
    atomic_store(&s->busy, 0);
    if (atomic_load(&gfx__cur_shared->terminated)) {
        /* Drop a PoolTerminated that was aimed at the finished call. */
        PyThreadState_SetAsyncExc(atomic_load(&s->ident), NULL);
    }
}

/* Bumped in the child after fork(): results and jobs remember the value
 * they were created under and refuse to wait for parent threads. */
extern _Atomic unsigned int gfx_fork_generation;
/* 0, or -1 with RuntimeError if `gen` is from before a fork(). */
int gfx_check_fork(unsigned int gen, const char *what);

/* Process-wide set-up (fork handler); idempotent.  From module exec. */
void gfx_pool_module_init(void);

/* Queue a task on the pool's workers.  May block (GIL released, Ctrl-C
 * honoured) while the queue is full.  Returns 0, or -1 with an exception. */
int gfx_pool_enqueue(PoolObject *pool, gfx_task *task);
/* Non-blocking: 0, or a negative GF_E* code (no exception set). */
int gfx_pool_try_enqueue(PoolObject *pool, gfx_task *task);
/* 1 if the calling thread is one of this pool's workers. */
int gfx_pool_is_own_worker(PoolObject *pool);
/* 0 if new work may be submitted, else -1 with ValueError/RuntimeError. */
int gfx_pool_check_usable(PoolObject *pool, const char *method);
int gfx_pool_terminated(PoolObject *pool);

/* ---- AsyncResult (asyncresult.c) ------------------------------------------ */

PyObject *gfx_apply_async(PoolObject *pool, PyObject *fn, PyObject *args,
                          PyObject *kwds, PyObject *callback,
                          PyObject *error_callback);
/* Run (attached) or cancel (attached) a queued AsyncResult task. */
void gfx_asyncresult_run(gfx_task *task);
void gfx_asyncresult_cancel(gfx_task *task, PyObject *why);
/* Cancel it if no thread has started it yet (apply() interrupted). */
void gfx_asyncresult_abandon(PyObject *ar);
/* Wait for and return the result (new ref) or raise. */
PyObject *gfx_asyncresult_get(PyObject *ar, double timeout);

/* ---- futures (future.c) ---------------------------------------------------- */

/* Set up LazyFuture_Type (or leave it NULL).  Called from module exec. */
int gfx_future_init(PyObject *module, gfx_state *st);
int gfx_future_traverse(gfx_state *st, visitproc visit, void *arg);
void gfx_future_clear(gfx_state *st);
/* A new pending future (a concurrent.futures.Future instance). */
PyObject *gfx_future_new(gfx_state *st);
/* 1: run it; 0: it was cancelled; -1: error. */
int gfx_future_set_running(gfx_state *st, PyObject *fut);
/* Like gfx_future_set_running, but a future already RUNNING (cancel()
 * found its call under way) is fine: 1. */
int gfx_future_ensure_running(gfx_state *st, PyObject *fut);
/* A call that never started was cancelled by terminate(): if the future is
 * still PENDING, cancel it as an executor does (cancel(), then
 * set_running_or_notify_cancel()).  1 if it did, 0 if the future had
 * started or finished, -1 on error. */
int gfx_future_cancel_if_pending(gfx_state *st, PyObject *fut);
/* Process backend: the future of a submit() is bound to its pool, so that
 * cancel() can withdraw the call if it has not been sent. */
int gfx_future_bind_pool(gfx_state *st, PyObject *fut, PyObject *pool);
/* cancel() of a process submit: 1 if the call was withdrawn before it was
 * sent (the future may be cancelled), 0 if not (sent, running or done), -1
 * with an exception. */
int gfx_proc_withdraw_future(PoolObject *pool, PyObject *fut);
/* 1 if that call is still in the pool's queue (not sent), else 0. */
int gfx_proc_future_queued(PoolObject *pool, PyObject *fut);
/* Complete it (steals nothing).  0 or -1 with an exception. */
int gfx_future_set_result(gfx_state *st, PyObject *fut, PyObject *res);
int gfx_future_set_exception(gfx_state *st, PyObject *fut, PyObject *exc);

/* ---- submit (pool.c) ------------------------------------------------------ */

void gfx_submit_run(gfx_task *task);
void gfx_submit_cancel(gfx_task *task);

/* ---- MapJob (mapjob.c) ----------------------------------------------------- */

enum gfx_map_flags {
    GFX_MAP_STAR = 1,       /* starmap: func(*item) */
    GFX_MAP_LAZY = 2,       /* return an iterator (imap*) */
    GFX_MAP_UNORDERED = 4,  /* completion order (imap_unordered) */
};

/* index_base: added to every input index that an error names (an auto pool
 * maps the rest of an input whose first items it ran itself). */
PyObject *gfx_map(PoolObject *pool, PyObject *fn, PyObject *iterable,
                  PyObject *chunksize, int flags, const char *method,
                  PyObject *progress, int64_t index_base);
void gfx_mapjob_run(gfx_task *task);
void gfx_mapjob_cancel(gfx_task *task);

/* ---- failures (failure.c) -------------------------------------------------- */

/* The exception a task just raised (the error indicator is cleared).  A
 * PoolTerminated that terminate() sent into the call becomes a
 * CancelledError, chained to it, so callers never receive a BaseException
 * meant for the worker. */
PyObject *gfx_fetch_task_exception(gfx_state *st);

/* Re-raise a captured worker exception in the caller: sets __cause__ to a
 * RemoteTraceback holding the worker traceback, adds a note naming the
 * function and the input index (index < 0: none), and restores it as the
 * current exception.  `decorate` = 0 re-raises as is (already decorated). */
void gfx_raise_failure(gfx_state *st, PyObject *exc, PyObject *fn,
                       Py_ssize_t index, int decorate);

/* The exception being raised gets `why` (stolen; may be NULL) as its
 * __cause__: "cannot send X: <why>" errors keep the pickling error. */
void gfx_chain_cause(PyObject *why);

/* traceback.format_exception(exc) joined into one str, or NULL. */
PyObject *gfx_format_traceback(gfx_state *st, PyObject *exc);

/* A readable name for a callable, for messages. */
PyObject *gfx_callable_name(PyObject *fn);

/* ---- waiting (wait.c) ------------------------------------------------------ */

typedef int (*gfx_ready_fn)(void *arg);

/* Wait, with the GIL released, until ready(arg) returns non-zero.  Spins
 * briefly, then parks on `ec` in slices of at most 50 ms, checking for
 * signals (Ctrl-C) after every interrupted or elapsed slice.  ready() is
 * called with and without the GIL, so it may only read atomics.
 * timeout < 0: no limit.  Returns 1 ready, 0 timed out, -1 exception set. */
int gfx_wait(gf_ec_t *ec, gfx_ready_fn ready, void *arg, double timeout);

/* Progress of a blocking map (progress=): while its caller waits, every
 * wait slice (and each stretch of results) reports how many items are done
 * to cb(done), at most every GFX_PROGRESS_NS unless forced.  Set for the
 * duration of the map on the calling thread, so gfx_wait() finds it. */
typedef struct gfx_progress {
    PyObject *cb;
    int64_t (*count)(void *arg);   /* items done so far; called attached */
    void *arg;
    int64_t last_n, last_ns;
} gfx_progress;
#define GFX_PROGRESS_NS (50 * 1000 * 1000LL)
extern _Thread_local gfx_progress *gfx__progress;
/* Report if the count moved (force: also within GFX_PROGRESS_NS).  0, or
 * -1 with the callback's exception. */
int gfx_progress_tick(gfx_progress *p, int force);

/* Take a pthread mutex from a thread that holds the GIL without risking a
 * deadlock with a thread that holds the mutex and waits for the GIL.
 * 0, or -1 with an exception (Ctrl-C while waiting). */
int gfx_mutex_lock(pthread_mutex_t *m);

/* ---- argument helpers (module.c) ------------------------------------------- */

/* Parse vectorcall arguments into out[0..nnames) (borrowed, NULL = absent).
 * names are ASCII keyword names; the first `npos` may be positional.
 * Returns 0 or -1 with TypeError naming `fname`. */
int gfx_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames, const char *const *names, int nnames,
                   int nrequired, PyObject **out);

/* Parse chunksize: None -> 0 (adaptive), else an int >= 1 (huge values
 * clamp).  0 or -1 with TypeError/ValueError naming Pool.<method>(). */
int gfx_parse_chunksize(PyObject *obj, const char *method, int64_t *out);
/* Pool(workers=): None (NULL) -> the usable CPUs; else an int in 1..4096. */
int gfx_parse_workers(PyObject *workers, long *out);

/* Parse a timeout (None -> -1.0; negative -> treated as 0, like
 * multiprocessing).  Returns 0 or -1 with TypeError. */
int gfx_parse_timeout(PyObject *obj, double *out);



/* ---- process backend: codecs (codec.c) ------------------------------------- */

/* An encoded message: prefix + payload, and the descriptors of its
 * out-of-band buffers (owned: closed by gfx_msg_clear). */
typedef struct gfx_seg gfx_seg;
typedef struct gfx_segcache gfx_segcache;

typedef struct {
    unsigned char *data;
    size_t len;
    uint32_t kind;
    int *fds;
    gfx_seg **segs;   /* per fd: the cached segment behind it (held), or
                       * NULL */
    uint32_t nfds;
} gfx_msg;

/* Out-of-band buffers travel in segments: a memfd whose first page is a
 * header shared by sender and receivers, data from GFX_SEG_DATA.  A sender
 * keeps its segments warm in a cache and refills one only when no message
 * holds it and no receiver maps it any more: fresh shared memory costs the
 * kernel far more (allocate, zero, fault) than copying into warm pages. */
#define GFX_SEG_DATA 4096u
gfx_segcache *gfx_segcache_new(void);
void gfx_segcache_free(gfx_segcache *c);
/* The cache encodes on this thread use (NULL: fresh segments, no reuse);
 * returns the previous one. */
gfx_segcache *gfx_segcache_use(gfx_segcache *c);
/* Map received buffers populated (set in worker processes). */
extern int gfx_populate_received;

/* A message is about to be delivered to one more receiver: count it in the
 * headers of its segments (the receiver uncounts when it lets go). */
void gfx_msg_deliver(const gfx_msg *m);

#define GFX_ENC_FIXED 0x1  /* try the int/float/None codecs on a list */
#define GFX_ENC_CLOUD 0x2  /* cloudpickle at once */

/* Encode obj into a message of `kind` with header fields from *head (codec,
 * count, nbufs and the EXT flag are filled in).  0, or -1 with an exception
 * (the pickling error, unchanged). */
int gfx_encode(gfx_state *st, uint32_t kind, gf_msg_head_t *head,
               PyObject *obj, int flags, size_t max_inline, gfx_msg *m);
int gfx_encode_raw(uint32_t kind, gf_msg_head_t *head, const void *payload,
                   size_t len, gfx_msg *m);
void gfx_msg_clear(gfx_msg *m);
/* Decode a parsed message's payload; consumes fds[0..nfds). */
PyObject *gfx_decode(gfx_state *st, const gf_msg_t *msg, int *fds,
                     uint32_t nfds);
int gfx_recv_fds(int sock, const gf_msg_t *msg, int *fds);
int gfx_send_fds(int sock, const int *fds, uint32_t n);
/* cloudpickle.dumps (borrowed from the state), imported on first use;
 * NULL with ImportError explaining what to install. */
PyObject *gfx_cloudpickle_dumps(gfx_state *st);
extern PyMethodDef gfx_oob_callback_def;

#define GFX_CANCEL_SLOTS 64

/* A worker's control block: the first GFX_CTL_SIZE bytes of its channel's
 * shared memory, written by the worker, read by the pool. */
typedef struct {
    uint64_t magic;
    /* The task the worker holds (peeked), 0 between tasks; release store
     * after cur_index. */
    _Atomic uint64_t cur_task;
    _Atomic int64_t cur_index;     /* input index of the item it runs */
    _Atomic int64_t cur_start_ns;  /* gf_now_ns() at that item's start; 0
                                    * between items (task_timeout) */
    /* Tasks the pool withdrew after sending them (apply() interrupted, an
     * imap dropped): the worker skips a task whose id is here.  A ring of
     * recent ids written by the pool (release), read by the worker. */
    _Atomic uint64_t cancel[GFX_CANCEL_SLOTS];
    /* Set by the pool before the worker starts: keep the gfx_wstats that
     * follows the control block (GFX_CTL_STATS). */
    _Atomic int insights;
} gfx_ctl;
/* What cur_task says a worker runs besides tasks (task ids count up from
 * 1): its initializer or its exit function (init/exit_timeout watch). */
#define GFX_TASK_ID_INIT UINT64_MAX
#define GFX_TASK_ID_EXIT (UINT64_MAX - 1)
#define GFX_STATS_AREA (((sizeof(gfx_wstats) + 4095u) / 4096u) * 4096u)
#define GFX_CTL_SIZE ((size_t)4096u + GFX_STATS_AREA)
#define GFX_CTL_STATS(ctl) ((gfx_wstats *)((char *)(ctl) + 4096u))
_Static_assert(sizeof(gfx_ctl) <= 4096u, "gfx_ctl must fit in its page");
#define GFX_CTL_MAGIC 0x67666374726c3031ull

/* ---- process backend: pool side (procpool.c) ------------------------------- */

typedef struct {
    int start_method_fork;   /* workers are our children (fork/spawn) */
    double task_timeout;     /* <= 0: none */
    int retries;
    PyObject *starter;       /* callable(slot, memfd, poolfd, sockfd,
                              * pidfd, pid) -> (pid, process) */
    PyObject *reaper;        /* callable(process, timeout) -> exitcode */
    gfx_lc *lc;              /* worker lifecycle (the pool's), or NULL */
    int insights;            /* Pool(insights=True) */
} gfx_proc_options;

int gfx_proc_init(PoolObject *pool, uint32_t nworkers,
                  const gfx_proc_options *opt);
PyObject *gfx_proc_map(PoolObject *pool, PyObject *fn, PyObject *iterable,
                       PyObject *chunksize, int flags, const char *method,
                       PyObject *progress, int64_t index_base);
PyObject *gfx_proc_apply_async(PoolObject *pool, PyObject *fn, PyObject *args,
                               PyObject *kwds, PyObject *callback,
                               PyObject *error_callback);
PyObject *gfx_proc_submit(PoolObject *pool, PyObject *fn, PyObject *args,
                          PyObject *kwds);
int gfx_proc_close(PoolObject *pool);
int gfx_proc_join(PoolObject *pool);
int gfx_proc_terminate(PoolObject *pool);
/* apply() interrupted: withdraw the task of this AsyncResult if it has not
 * started. */
void gfx_proc_abandon(PoolObject *pool, PyObject *ar);
/* Terminate without raising (failed __init__). */
void gfx_proc_free(PoolObject *pool);
/* From dealloc: terminate if needed and free the engine's memory. */
void gfx_proc_dealloc(PoolObject *pool);
PyObject *gfx_proc_pids(PoolObject *pool);
/* pool._insights_raw() of a process pool. */
PyObject *gfx_proc_insights(PoolObject *pool);
/* MapIterator support for process maps. */
PyObject *gfx_procmap_next(PyObject *job);
void gfx_procmap_cancel(PyObject *job);
const char *gfx_procmap_method(PyObject *job);
/* Wrap a _ProcMap in the public MapIterator (mapjob.c); steals `job`. */
PyObject *gfx_mapiter_wrap(PyObject *job);

/* AsyncResult completed by another process (asyncresult.c). */
PyObject *gfx_asyncresult_new_remote(gfx_state *st, PyObject *fn,
                                     PyObject *callback,
                                     PyObject *error_callback);
/* Settle it (steals `value`): ok = result, else an exception already
 * decorated.  Runs the callbacks.  With the GIL. */
void gfx_asyncresult_finish(PyObject *ar, PyObject *value, int ok);
/* _core._pending_result / _core._settle_result (the Dask backend). */
PyObject *gfx_pending_result(PyObject *module, PyObject *const *args,
                             Py_ssize_t nargs);
PyObject *gfx_settle_result(PyObject *module, PyObject *const *args,
                            Py_ssize_t nargs);

/* Decorate an exception from a worker process: __cause__ = RemoteTraceback
 * with `tb_text`, a note with the function and the input index. */
void gfx_decorate_remote(gfx_state *st, PyObject *exc, PyObject *fn,
                         Py_ssize_t index, PyObject *tb_text, long pid);

PyObject *gfx_worker_main(PyObject *module, PyObject *args);

/* probe.c: call with the GIL sampler running (gilfree.probe). */
PyObject *gfx_probe_call(PyObject *module, PyObject *const *args,
                         Py_ssize_t nargs);
extern const char gfx_probe_call_doc[];

/* Type specs, one per file; module.c creates the heap types from them. */
extern PyType_Spec gfx_pool_spec;
extern PyType_Spec gfx_asyncresult_spec;
extern PyType_Spec gfx_mapjob_spec;
extern PyType_Spec gfx_mapiter_spec;
extern PyType_Spec gfx_shmbuffer_spec;
extern PyType_Spec gfx_procmap_spec;
#endif /* GILFREE_EXT_GFEXT_H */
