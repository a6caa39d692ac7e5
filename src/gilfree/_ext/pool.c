/* Pool: Python callables on native worker threads.
 *
 * The core (gf_pool_t) owns the threads and a bounded MPMC queue of task
 * pointers.  This file gives each worker a Python thread state (created on
 * the worker in on_start, deleted in on_stop) and one entry point for every
 * task the extension queues: the worker attaches to the interpreter once,
 * runs the task, then keeps running whatever else is already queued
 * (gf_worker_try_take) before it detaches.  While no work is queued a worker
 * holds neither the GIL nor a CPU: it spins briefly and parks in the core.
 *
 * Lifecycle: close() refuses new work; join() closes the core queue, lets the
 * workers finish what was queued and waits for them to exit; terminate()
 * also drains the queue, cancelling every task still in it, and makes
 * running map jobs stop at their next item.  Every wait releases the GIL and
 * wakes on Ctrl-C (wait.c). */
#include "gfext.h"

#include <string.h>

#define POOL_CAST(op) ((PoolObject *)(op))
/* Room for 32k queued tasks: 20k apply_async() calls in a row fit without
 * the caller having to wait for the workers. */
#define GFX_QUEUE_CAPACITY (1u << 15)
/* Join and blocking-submit waits are sliced so Ctrl-C is seen. */
#define GFX_SLICE_NS (50 * 1000 * 1000LL)

_Thread_local gfx_worker_slot *gfx__cur_slot;
_Thread_local gfx_pool_shared *gfx__cur_shared;
_Atomic unsigned int gfx_fork_generation;

int
gfx_check_fork(unsigned int gen, const char *what)
{
    if (gen != atomic_load_explicit(&gfx_fork_generation,
                                    memory_order_relaxed)) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s: this result belongs to a Pool of the parent "
                     "process; its worker threads do not exist after fork()",
                     what);
        return -1;
    }
    return 0;
}

/* ---- orphaned pools --------------------------------------------------------------
 * A Pool dropped without join() must not block whoever drops it (a GC pass,
 * a worker of that very pool, interpreter finalisation): its queue is
 * closed, its threads finish what was queued and exit by themselves, and
 * its structs wait on this list until a later, non-blocking reap finds the
 * threads gone.  The list is guarded by orphan_lock, which is only ever held
 * for a few pointer operations and gf_pool_join(core, 0). */

typedef struct gfx_orphan {
    struct gfx_orphan *next;
    gf_pool_t *core;
    gfx_pool_shared *shared;
} gfx_orphan;

static pthread_mutex_t orphan_lock = PTHREAD_MUTEX_INITIALIZER;
static gfx_orphan *orphans;  /* guarded by orphan_lock */

/* Free the block shared with the worker threads (they have exited).
 * With the GIL: the lifecycle holds Python objects. */
static void
shared_free(gfx_pool_shared *sh)
{
    if (sh != NULL) {
        gfx_lc_free(sh->lc);
        PyMem_RawFree(sh->stats);
        PyMem_RawFree(sh);
    }
}

static void
orphan_add(gf_pool_t *core, gfx_pool_shared *sh)
{
    gfx_orphan *o = PyMem_RawMalloc(sizeof(gfx_orphan));
    if (o == NULL) {
        return;  /* out of memory: leak the pool rather than block */
    }
    o->core = core;
    o->shared = sh;
    pthread_mutex_lock(&orphan_lock);
    o->next = orphans;
    orphans = o;
    pthread_mutex_unlock(&orphan_lock);
}

/* Free the orphans whose threads have all exited.  Never blocks. */
static void
orphans_reap(void)
{
    gf_worker_t *me = gf_current_worker();
    pthread_mutex_lock(&orphan_lock);
    gfx_orphan **link = &orphans;
    while (*link != NULL) {
        gfx_orphan *o = *link;
        int forked = gf_pool_is_forked(o->core);
        if (forked || ((me == NULL || gf_worker_pool(me) != o->core) &&
                       gf_pool_join(o->core, 0) == 0)) {
            *link = o->next;
            gf_pool_free(o->core);
            shared_free(o->shared);
            PyMem_RawFree(o);
        }
        else {
            link = &o->next;
        }
    }
    pthread_mutex_unlock(&orphan_lock);
}

static void
atfork_child(void)
{
    /* Only this thread survives: the lock may have died held. */
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    orphan_lock = fresh;
    atomic_fetch_add(&gfx_fork_generation, 1);
}

static void
register_atfork(void)
{
    (void)pthread_atfork(NULL, NULL, atfork_child);
}

void
gfx_pool_module_init(void)
{
    /* Once per process: pthread_atfork handlers cannot be removed. */
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_atfork);
}

/* ---- worker side ------------------------------------------------------------ */

static void
worker_on_start(gf_worker_t *w)
{
    gfx_pool_shared *sh = (gfx_pool_shared *)gf_worker_userdata(w);
    /* The core starts workers with every asynchronous signal blocked; the
     * user's code runs with the user's mask (see gfx_user_sigmask). */
    pthread_sigmask(SIG_SETMASK, &gfx_user_sigmask, NULL);
    atomic_store(&sh->slots[gf_worker_index(w)].ident,
                 PyThread_get_thread_ident());
    /* Documented to work without an attached thread state.  On a GIL build
     * it also binds this thread's PyGILState, so C libraries that call
     * PyGILState_Ensure() from inside a task find our thread state. */
    PyThreadState *ts = PyThreadState_New(sh->interp);
    *gf_worker_local(w) = ts;
    gfx_wstats *stats = sh->stats ? &sh->stats[gf_worker_index(w)] : NULL;
    if (stats != NULL) {
        int64_t now = gf_now_ns();
        atomic_store_explicit(&stats->start_ns, now, memory_order_relaxed);
        stats->last_ns = now;
    }
    if (sh->lc != NULL) {
        gfx_wctx *wc = &sh->lc->w[gf_worker_index(w)];
        if (ts == NULL || GFX_IS_FINALIZING()) {
            /* Nothing can run here: do not keep the pool's creator
             * waiting for this worker's initializer. */
            atomic_fetch_sub(&sh->lc->starting, 1);
            gf_ec_notify_all(&sh->lc->started_ec);
            return;
        }
        /* The worker's life starts here: CPU affinity, state,
         * initializer (failures are recorded in the lifecycle). */
        int64_t t0 = gf_now_ns();
        PyEval_RestoreThread(ts);
        gfx_lc_thread_begin(wc);
        PyEval_SaveThread();
        if (stats != NULL) {
            int64_t t1 = gf_now_ns();
            gfx_stats_add(&stats->init_ns, t1 - t0);
            gfx_stats_seg(stats, GFX_TL_INIT, t0, t1, 0, -1);
            stats->last_ns = t1;
        }
    }
}

static void
worker_on_stop(gf_worker_t *w)
{
    PyThreadState *ts = (PyThreadState *)*gf_worker_local(w);
    *gf_worker_local(w) = NULL;
    if (ts == NULL || GFX_IS_FINALIZING()) {
        /* Attaching during finalisation would end this thread inside
         * CPython; the process is exiting, so leave the state behind. */
        return;
    }
    gfx_pool_shared *sh = (gfx_pool_shared *)gf_worker_userdata(w);
    gfx_wstats *stats = sh->stats ? &sh->stats[gf_worker_index(w)] : NULL;
    int64_t t0 = gf_now_ns();
    if (stats != NULL) {
        gfx_stats_add(&stats->idle_ns, t0 - stats->last_ns);
    }
    PyEval_RestoreThread(ts);
    if (sh->lc != NULL && !atomic_load(&sh->terminated)) {
        /* join(): the exit function (not after terminate(): stop now). */
        gfx_lc_thread_end(&sh->lc->w[gf_worker_index(w)]);
        if (stats != NULL) {
            int64_t t1 = gf_now_ns();
            gfx_stats_add(&stats->exit_ns, t1 - t0);
            gfx_stats_seg(stats, GFX_TL_EXIT, t0, t1, 0, -1);
        }
    }
    if (stats != NULL) {
        atomic_store_explicit(&stats->end_ns, gf_now_ns(),
                              memory_order_relaxed);
    }
    PyThreadState_Clear(ts);
    PyThreadState_DeleteCurrent();
}

static void task_cancel(gf_task_t *t, void *arg);

/* Run one task; the caller is attached. */
static void
task_dispatch(gfx_task *task)
{
    switch (task->kind) {
    case GFX_TASK_APPLY:
        gfx_asyncresult_run(task);
        break;
    case GFX_TASK_SUBMIT:
        gfx_submit_run(task);
        break;
    case GFX_TASK_MAP:
        gfx_mapjob_run(task);
        break;
    default:
        Py_UNREACHABLE();
    }
}

/* Every task the extension queues starts here (its base.run). */
void
gfx__task_entry(gf_task_t *t, gf_worker_t *w)
{
    PyThreadState *ts = (PyThreadState *)*gf_worker_local(w);
    if (GFX_IS_FINALIZING()) {
        return;  /* see worker_on_stop */
    }
    if (ts == NULL) {
        /* on_start could not make a thread state (out of memory): make
         * one now rather than drop tasks whose callers would wait. */
        gfx_pool_shared *sh0 = (gfx_pool_shared *)gf_worker_userdata(w);
        ts = PyThreadState_New(sh0->interp);
        if (ts == NULL) {
            return;  /* nothing can run Python on this thread */
        }
        *gf_worker_local(w) = ts;
    }
    gfx_pool_shared *sh = (gfx_pool_shared *)gf_worker_userdata(w);
    gfx_wstats *stats = sh->stats ? &sh->stats[gf_worker_index(w)] : NULL;
    int64_t t0 = 0, t1 = 0, cpu0 = 0, tasks0 = 0;
    uint64_t segs0 = 0;
    if (stats != NULL) {
        t0 = gf_now_ns();
    }
    PyEval_RestoreThread(ts);
    if (stats != NULL) {
        /* Waiting for work until t0; for the GIL until t1. */
        t1 = gf_now_ns();
        gfx_stats_add(&stats->idle_ns, t0 - stats->last_ns);
        gfx_stats_add(&stats->gil_ns, t1 - t0);
        if (t1 - t0 >= 20000) {
            gfx_stats_seg(stats, GFX_TL_GIL, t0, t1, 0, -1);
        }
        cpu0 = gfx_thread_cpu_ns();
        tasks0 = atomic_load_explicit(&stats->tasks, memory_order_relaxed);
        segs0 = atomic_load_explicit(&stats->nsegs, memory_order_relaxed);
    }
    gfx__cur_stats = stats;
    gfx__cur_slot = &sh->slots[gf_worker_index(w)];
    gfx__cur_shared = sh;
    gfx__cur_wctx = sh->lc != NULL ? &sh->lc->w[gf_worker_index(w)] : NULL;
    gfx_task *task = (gfx_task *)t;
    for (;;) {
        if (atomic_load(&sh->terminated)) {
            /* terminate() may have missed this task (popped just before its
             * drain): cancel it rather than start it. */
            task_cancel(&task->base, NULL);
        }
        else {
            task_dispatch(task);
        }
        gf_task_t *next;
        if (gf_worker_try_take(w, &next) != 0) {
            break;
        }
        task = (gfx_task *)next;
    }
    gfx__cur_slot = NULL;
    gfx__cur_shared = NULL;
    gfx__cur_wctx = NULL;
    gfx__cur_stats = NULL;
    if (stats != NULL) {
        int64_t t2 = gf_now_ns(), cpu = gfx_thread_cpu_ns() - cpu0;
        gfx_stats_add(&stats->work_ns, t2 - t1);
        gfx_stats_add(&stats->cpu_ns, cpu);
        if (atomic_load_explicit(&stats->nsegs, memory_order_relaxed) ==
            segs0) {
            /* No map chunk drew itself (apply, submit): one segment. */
            gfx_stats_seg(stats, GFX_TL_WORK, t1, t2,
                          atomic_load_explicit(&stats->tasks,
                                               memory_order_relaxed) - tasks0,
                          cpu);
        }
        stats->last_ns = t2;
    }
    PyEval_SaveThread();
}

/* gf_pool_drain() callback: the caller of terminate() holds the GIL. */
static void
task_cancel(gf_task_t *t, void *arg)
{
    gfx_task *task = (gfx_task *)t;
    switch (task->kind) {
    case GFX_TASK_APPLY:
        gfx_asyncresult_cancel(task, NULL);
        break;
    case GFX_TASK_SUBMIT:
        gfx_submit_cancel(task);
        break;
    case GFX_TASK_MAP:
        gfx_mapjob_cancel(task);
        break;
    default:
        Py_UNREACHABLE();
    }
}

/* ---- helpers for the other files ---------------------------------------------- */

int
gfx_pool_is_own_worker(PoolObject *pool)
{
    gf_worker_t *w = gf_current_worker();
    return w != NULL && pool->core != NULL && gf_worker_pool(w) == pool->core;
}

int
gfx_pool_terminated(PoolObject *pool)
{
    /* relaxed: advisory; a worker that misses it runs one more item. */
    return atomic_load_explicit(&pool->state, memory_order_relaxed) ==
           GFX_POOL_TERMINATED;
}

int
gfx_pool_check_usable(PoolObject *pool, const char *method)
{
    if (pool->backend_proc) {
        if (pool->proc == NULL ||
            atomic_load_explicit(&pool->state, memory_order_relaxed) !=
                GFX_POOL_OPEN) {
            PyErr_Format(PyExc_ValueError,
                         "Pool.%s(): Pool is closed (close() or terminate() "
                         "was called); create a new Pool", method);
            return -1;
        }
        return gfx_lc_check(pool->lc);
    }
    if (pool->core == NULL) {
        PyErr_Format(PyExc_ValueError,
                     "Pool.%s(): the pool was not initialised", method);
        return -1;
    }
    int state = atomic_load_explicit(&pool->state, memory_order_relaxed);
    if (state != GFX_POOL_OPEN) {
        PyErr_Format(PyExc_ValueError,
                     "Pool.%s(): Pool is closed (close() or terminate() was "
                     "called); create a new Pool", method);
        return -1;
    }
    if (gf_pool_is_forked(pool->core)) {
        gfx_raise(GF_EFORKED, method);
        return -1;
    }
    return gfx_lc_check(pool->lc);
}

int
gfx_pool_try_enqueue(PoolObject *pool, gfx_task *task)
{
    return gf_pool_try_submit(pool->core, &task->base);
}

int
gfx_pool_enqueue(PoolObject *pool, gfx_task *task)
{
    int rc = gf_pool_try_submit(pool->core, &task->base);
    if (rc == 0) {
        return 0;
    }
    if (rc == GF_EAGAIN && gfx_pool_is_own_worker(pool)) {
        /* The queue is full and we are one of the threads that empty it:
         * waiting could deadlock, so run the task here (we are attached). */
        task_dispatch(task);
        return 0;
    }
    while (rc == GF_EAGAIN || rc == GF_ETIMEDOUT || rc == GF_EINTR) {
        Py_BEGIN_ALLOW_THREADS
        rc = gf_pool_submit(pool->core, &task->base, GFX_SLICE_NS);
        Py_END_ALLOW_THREADS
        if (rc == 0) {
            return 0;
        }
        if (rc != GF_EAGAIN && rc != GF_ETIMEDOUT && rc != GF_EINTR) {
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
    gfx_raise(rc, "Pool: queue work");
    return -1;
}

/* ---- submit(): concurrent.futures.Future tasks ----------------------------------- */

typedef struct {
    gfx_task task;
    gfx_state *st;
    PyObject *fn;
    PyObject *args;     /* tuple */
    PyObject *kwargs;   /* dict or NULL */
    PyObject *future;
    gfx_lc *lc;         /* the pool's worker lifecycle, or NULL */
} SubmitTask;

static void
submit_free(SubmitTask *s)
{
    Py_DECREF(s->fn);
    Py_DECREF(s->args);
    Py_XDECREF(s->kwargs);
    Py_DECREF(s->future);
    PyMem_Free(s);
}

void
gfx_submit_run(gfx_task *task)
{
    SubmitTask *s = (SubmitTask *)task;
    gfx_state *st = s->st;
    int run = gfx_future_set_running(st, s->future);
    if (run <= 0) {   /* cancelled by the user before it started, or error */
        if (run < 0) {
            PyErr_WriteUnraisable(s->future);
        }
        submit_free(s);
        return;
    }
    int prev = gfx_interruptible_begin();
    PyObject *res = s->lc != NULL
                        ? gfx_lc_call_tuple(s->lc, s->fn, s->args, s->kwargs)
                        : PyObject_Call(s->fn, s->args, s->kwargs);
    gfx_interruptible_end(prev);
    if (gfx__cur_stats != NULL) {
        gfx_stats_add(&gfx__cur_stats->tasks, 1);
        gfx_stats_add(&gfx__cur_stats->chunks, 1);
    }
    int rc;
    if (res != NULL) {
        rc = gfx_future_set_result(st, s->future, res);
        Py_DECREF(res);
    }
    else {
        PyObject *exc = gfx_fetch_task_exception(st);
        rc = gfx_future_set_exception(st, s->future, exc);
        Py_XDECREF(exc);
    }
    if (rc < 0) {
        PyErr_WriteUnraisable(s->future);
    }
    submit_free(s);
}

void
gfx_submit_cancel(gfx_task *task)
{
    SubmitTask *s = (SubmitTask *)task;
    /* cancel(), then set_running_or_notify_cancel() as an executor does
     * for a cancelled item it dequeues: that moves the future to
     * CANCELLED_AND_NOTIFIED and wakes wait()/as_completed() waiters. */
    PyObject *r = PyObject_CallMethodNoArgs(s->future, s->st->str_cancel);
    if (r != NULL) {
        Py_DECREF(r);
        r = PyObject_CallMethodNoArgs(s->future,
                                      s->st->str_set_running_or_notify_cancel);
    }
    if (r == NULL) {
        PyErr_WriteUnraisable(s->future);
    }
    Py_XDECREF(r);
    submit_free(s);
}

static int
check_callable(PyObject *fn, const char *method, const char *what)
{
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError,
                     "Pool.%s(): %s must be callable, got %R (type %.100s)",
                     method, what, fn, Py_TYPE(fn)->tp_name);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(Pool_submit_doc,
"submit($self, fn, /, *args, **kwargs)\n--\n\n"
"Schedule ``fn(*args, **kwargs)`` and return a concurrent.futures.Future.\n\n"
"The future is a real :class:`concurrent.futures.Future`, so\n"
"``concurrent.futures.wait``, ``as_completed`` and ``asyncio.wrap_future``\n"
"work with it.\n\n"
"    >>> with gilfree.Pool(2) as pool:\n"
"    ...     pool.submit(pow, 2, 10).result()\n"
"    1024");

static PyObject *
Pool_submit(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
            PyObject *kwnames)
{
    PoolObject *self = POOL_CAST(op);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "Pool.submit() missing required argument 'fn'");
        return NULL;
    }
    PyObject *fn = args[0];
    if (check_callable(fn, "submit", "fn") < 0 ||
        gfx_pool_check_usable(self, "submit") < 0) {
        return NULL;
    }
    gfx_state *st = gfx_state_from_type(Py_TYPE(op));
    PyObject *fargs = PyTuple_New(nargs - 1);
    if (fargs == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 1; i < nargs; i++) {
        PyTuple_SET_ITEM(fargs, i - 1, Py_NewRef(args[i]));
    }
    PyObject *kwargs = NULL;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        kwargs = PyDict_New();
        if (kwargs == NULL) {
            Py_DECREF(fargs);
            return NULL;
        }
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(kwnames); k++) {
            if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, k),
                               args[nargs + k]) < 0) {
                Py_DECREF(fargs);
                Py_DECREF(kwargs);
                return NULL;
            }
        }
    }
    if (self->backend_proc) {
        PyObject *fut = gfx_proc_submit(self, fn, fargs, kwargs);
        Py_DECREF(fargs);
        Py_XDECREF(kwargs);
        return fut;
    }
    PyObject *future = gfx_future_new(st);
    if (future == NULL) {
        Py_DECREF(fargs);
        Py_XDECREF(kwargs);
        return NULL;
    }
    SubmitTask *s = PyMem_Malloc(sizeof(SubmitTask));
    if (s == NULL) {
        Py_DECREF(fargs);
        Py_XDECREF(kwargs);
        Py_DECREF(future);
        return PyErr_NoMemory();
    }
    s->task.base.run = gfx__task_entry;
    s->task.kind = GFX_TASK_SUBMIT;
    s->st = st;
    s->fn = Py_NewRef(fn);
    s->args = fargs;
    s->kwargs = kwargs;
    s->future = Py_NewRef(future);
    s->lc = self->lc;
    if (gfx_pool_enqueue(self, &s->task) < 0) {
        submit_free(s);
        Py_DECREF(future);
        return NULL;
    }
    return future;
}


/* ---- construction ------------------------------------------------------------------- */

static int
Pool_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    PoolObject *self = POOL_CAST(op);
    static char *kwlist[] = {"workers", "backend", "_process", "_lifecycle",
                             "_insights", NULL};
    PyObject *workers = Py_None;
    PyObject *backend = NULL;
    PyObject *process = NULL;
    PyObject *lifecycle = NULL;
    int insights = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OO$OOp:Pool", kwlist,
                                     &workers, &backend, &process,
                                     &lifecycle, &insights)) {
        return -1;
    }
    self->insights = insights;
    if (lifecycle == Py_None) {
        lifecycle = NULL;
    }
    int expected = 0;
    if (!atomic_compare_exchange_strong(&self->initialised, &expected, 1)) {
        PyErr_SetString(PyExc_RuntimeError, "Pool is already initialised");
        return -1;
    }
    orphans_reap();
    int want_proc = 0;
    if (backend != NULL && backend != Py_None) {
        if (PyUnicode_Check(backend) &&
            PyUnicode_CompareWithASCIIString(backend, "processes") == 0) {
            want_proc = 1;
        }
        else if (!PyUnicode_Check(backend) ||
                 PyUnicode_CompareWithASCIIString(backend, "threads") != 0) {
            PyErr_Format(PyExc_ValueError,
                         "Pool(): unknown backend %R; available backends: "
                         "'threads', 'processes'", backend);
            return -1;
        }
    }
    gfx_proc_options popt;
    memset(&popt, 0, sizeof popt);
    if (want_proc) {
        /* gilfree.Pool checks the options and passes them, with the
         * callables that start and reap worker processes. */
        if (process == NULL ||
            !PyArg_ParseTuple(process, "pdiOO:_process",
                              &popt.start_method_fork, &popt.task_timeout,
                              &popt.retries, &popt.starter, &popt.reaper)) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError,
                                "Pool(): use gilfree.Pool for "
                                "backend='processes'");
            }
            return -1;
        }
    }
    long n;
    if (gfx_parse_workers(workers, &n) < 0) {
        return -1;
    }
    gfx_state *st = gfx_state_from_type(Py_TYPE(op));
    gfx_lc *lc = NULL;
    if (lifecycle != NULL) {
        lc = gfx_lc_new(st, lifecycle, (uint32_t)n, 0);
        if (lc == NULL) {
            return -1;
        }
    }
    if (want_proc) {
        self->backend_proc = 1;
        self->nworkers = (uint32_t)n;
        self->lc = lc;
        popt.lc = lc;
        popt.insights = insights;
        if (gfx_proc_init(self, (uint32_t)n, &popt) < 0) {
            PyObject *exc = gfx_fetch_exception();
            if (self->proc != NULL) {
                gfx_proc_free(self);
            }
            if (exc != NULL) {
                gfx_restore_exception(exc);
                Py_DECREF(exc);
            }
            return -1;
        }
        atomic_store(&self->state, GFX_POOL_OPEN);
        return 0;
    }
    gfx_pool_shared *sh = PyMem_RawCalloc(
        1, sizeof(gfx_pool_shared) + (size_t)n * sizeof(gfx_worker_slot));
    if (sh == NULL) {
        gfx_lc_free(lc);
        PyErr_NoMemory();
        return -1;
    }
    sh->interp = PyInterpreterState_Get();
    sh->nworkers = (uint32_t)n;
    sh->lc = lc;
    sh->start_ns = gf_now_ns();
    if (insights) {
        sh->stats = PyMem_RawCalloc((size_t)n, sizeof(gfx_wstats));
        if (sh->stats == NULL) {
            shared_free(sh);
            PyErr_NoMemory();
            return -1;
        }
        for (long i = 0; i < n; i++) {
            gfx_stats_init(&sh->stats[i]);
        }
    }
    gf_pool_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.nthreads = (uint32_t)n;
    cfg.queue_capacity = GFX_QUEUE_CAPACITY;
    cfg.userdata = sh;
    cfg.on_start = worker_on_start;
    cfg.on_stop = worker_on_stop;
    cfg.name_prefix = "gilfree-";
    gf_pool_t *core = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gf_pool_new(&cfg, &core);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        shared_free(sh);
        gfx_raise(rc, "Pool(): start worker threads");
        return -1;
    }
    self->core = core;
    self->shared = sh;
    self->lc = lc;
    self->nworkers = (uint32_t)n;
    atomic_store_explicit(&self->state, GFX_POOL_OPEN, memory_order_relaxed);
    return 0;
}

/* Close the core queue and wait for every worker to exit. */
static int
pool_close_and_join(PoolObject *self)
{
    if (self->core == NULL || atomic_load(&self->joined)) {
        return 0;
    }
    if (gf_pool_is_forked(self->core)) {
        atomic_store(&self->joined, 1);
        return 0;
    }
    if (gfx_pool_is_own_worker(self)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Pool.join(): cannot join a pool from one of its own "
                        "worker threads");
        return -1;
    }
    gf_pool_close(self->core);
    for (;;) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = gf_pool_join(self->core, GFX_SLICE_NS);
        Py_END_ALLOW_THREADS
        if (rc == 0) {
            break;
        }
        if (rc != GF_ETIMEDOUT && rc != GF_EINTR) {
            gfx_raise(rc, "Pool.join()");
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
        uint32_t late;
        if (gfx_lc_exit_overdue(self->lc, &late)) {
            /* A thread cannot be stopped: stop waiting for it.  The pool
             * is left to finish and free itself (see orphans). */
            char why[96];
            PyOS_snprintf(why, sizeof why,
                          "did not finish within exit_timeout=%g s",
                          self->lc->exit_timeout);
            PyObject *err = gfx_lc_error_new(self->lc, 1, late, NULL, why);
            orphan_add(self->core, self->shared);
            self->core = NULL;
            self->shared = NULL;
            self->lc = NULL;
            atomic_store(&self->joined, 1);
            if (err != NULL) {
                PyErr_SetObject((PyObject *)Py_TYPE(err), err);
                Py_DECREF(err);
            }
            return -1;
        }
    }
    atomic_store(&self->joined, 1);
    return 0;
}

static void
Pool_dealloc(PyObject *op)
{
    PoolObject *self = POOL_CAST(op);
    PyTypeObject *tp = Py_TYPE(op);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs(op);
    }
    if (self->proc != NULL || self->proc_retired != NULL) {
        /* Never joined (gilfree.Pool warned): the workers are killed. */
        PyObject *exc = gfx_fetch_exception();
        gfx_proc_dealloc(self);
        if (exc != NULL) {
            gfx_restore_exception(exc);
            Py_DECREF(exc);
        }
    }
    if (self->core != NULL) {
        if (gf_pool_is_forked(self->core) || atomic_load(&self->joined)) {
            gf_pool_free(self->core);
            shared_free(self->shared);
        }
        else {
            /* Never joined (gilfree.Pool warned with ResourceWarning):
             * refuse new work, let the queued work finish, and let the
             * threads go by themselves -- never block here, whichever
             * thread this is (see orphans). */
            int expected = GFX_POOL_OPEN;
            atomic_compare_exchange_strong(&self->state, &expected,
                                           GFX_POOL_CLOSED);
            gf_pool_close(self->core);
            orphan_add(self->core, self->shared);
            if (!GFX_IS_FINALIZING()) {
                orphans_reap();
            }
        }
        self->core = NULL;
        self->shared = NULL;
        self->lc = NULL;  /* the shared block's */
    }
    if (self->lc != NULL) {
        /* Processes: ours. */
        gfx_lc_free(self->lc);
        self->lc = NULL;
    }
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* ---- methods -------------------------------------------------------------------------- */

PyDoc_STRVAR(Pool_close_doc,
"close($self, /)\n--\n\n"
"Refuse new work.  Work already submitted still runs; call join() to wait\n"
"for it and for the worker threads to exit.  Idempotent.\n\n"
">>> import gilfree\n"
">>> pool = gilfree.Pool(2, \"threads\")\n"
">>> pending = pool.apply_async(pow, (2, 10))\n"
">>> pool.close()\n"
">>> pool.join()\n"
">>> pending.get()\n"
"1024");

static PyObject *
Pool_close(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PoolObject *self = POOL_CAST(op);
    int expected = GFX_POOL_OPEN;
    atomic_compare_exchange_strong(&self->state, &expected, GFX_POOL_CLOSED);
    if (self->proc != NULL) {
        gfx_proc_close(self);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Pool_join_doc,
"join($self, /)\n--\n\n"
"Wait until all submitted work is done and every worker thread has exited.\n\n"
"Must follow close() or terminate() (ValueError otherwise).  Releases the\n"
"GIL while it waits and raises KeyboardInterrupt on Ctrl-C.\n\n"
">>> import gilfree\n"
">>> pool = gilfree.Pool(2, \"threads\")\n"
">>> results = [pool.apply_async(abs, (-i,)) for i in range(3)]\n"
">>> pool.close()\n"
">>> pool.join()               # every call has finished\n"
">>> [r.ready() for r in results]\n"
"[True, True, True]");

static PyObject *
Pool_join(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PoolObject *self = POOL_CAST(op);
    if (atomic_load(&self->state) == GFX_POOL_OPEN) {
        PyErr_SetString(PyExc_ValueError,
                        "Pool.join(): Pool is still running; call close() "
                        "or terminate() first");
        return NULL;
    }
    if (self->backend_proc) {
        if (self->proc != NULL && gfx_proc_join(self) < 0) {
            return NULL;
        }
        atomic_store(&self->joined, 1);
    }
    else if (pool_close_and_join(self) < 0) {
        return NULL;
    }
    /* Every worker has ended: report an exit function that failed. */
    PyObject *err = gfx_lc_take_exit_error(self->lc);
    if (err != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(err), err);
        Py_DECREF(err);
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Pool_exit_results_doc,
"exit_results($self, /)\n--\n\n"
"The values the pool's ``worker_exit`` function returned, one per worker\n"
"life that has ended so far (after ``join()``: every worker; a worker\n"
"recycled by ``max_tasks_per_worker`` adds one per life), in the order\n"
"they ended.  Empty without ``worker_exit``.\n\n"
"    >>> def bye():\n"
"    ...     return 'done'\n"
"    >>> with gilfree.Pool(2, 'threads', worker_exit=bye) as pool:\n"
"    ...     pass\n"
"    >>> pool.exit_results()\n"
"    ['done', 'done']");

static PyObject *
Pool_exit_results(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return gfx_lc_exit_results(POOL_CAST(op)->lc);
}

static PyObject *
Pool_wait_started(PyObject *op, PyObject *arg)
{
    PoolObject *self = POOL_CAST(op);
    double timeout;
    if (gfx_parse_timeout(arg, &timeout) < 0) {
        return NULL;
    }
    if (self->lc == NULL || self->backend_proc) {
        Py_RETURN_NONE;
    }
    if (gfx_lc_wait_started(self->lc, timeout) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Pool_insights_raw(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PoolObject *self = POOL_CAST(op);
    if (self->backend_proc) {
        return gfx_proc_insights(self);
    }
    gfx_pool_shared *sh = self->shared;
    if (!self->insights || sh == NULL || sh->stats == NULL) {
        PyErr_SetString(PyExc_ValueError,
                        self->insights
                            ? "Pool.insights(): this pool's workers are gone"
                            : "Pool.insights(): create the pool with "
                              "insights=True to record them");
        return NULL;
    }
    PyObject *lives = PyList_New(0);
    if (lives == NULL) {
        return NULL;
    }
    for (uint32_t i = 0; i < sh->nworkers; i++) {
        PyObject *d = gfx_stats_snapshot(&sh->stats[i]);
        PyObject *w = d ? PyLong_FromUnsignedLong(i) : NULL;
        PyObject *tid = w ? PyLong_FromUnsignedLong(
                                atomic_load(&sh->slots[i].ident)) : NULL;
        if (tid == NULL || PyDict_SetItemString(d, "worker", w) < 0 ||
            PyDict_SetItemString(d, "thread", tid) < 0 ||
            PyList_Append(lives, d) < 0) {
            Py_XDECREF(d);
            Py_XDECREF(w);
            Py_XDECREF(tid);
            Py_DECREF(lives);
            return NULL;
        }
        Py_DECREF(d);
        Py_DECREF(w);
        Py_DECREF(tid);
    }
    return Py_BuildValue("{s:s,s:I,s:L,s:L,s:N}", "backend", "threads",
                         "workers", sh->nworkers, "start_ns",
                         (long long)sh->start_ns, "now_ns",
                         (long long)gf_now_ns(), "lives", lives);
}

static PyObject *
Pool_abandon(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    /* Threads whose initializer overran init_timeout: refuse work, cancel
     * what is queued and let the threads finish and exit by themselves
     * (they cannot be stopped; joining would wait for them). */
    PoolObject *self = POOL_CAST(op);
    atomic_store(&self->state, GFX_POOL_TERMINATED);
    if (self->backend_proc || self->core == NULL ||
        atomic_load(&self->joined)) {
        Py_RETURN_NONE;
    }
    atomic_store(&self->shared->terminated, 1);
    gf_pool_close(self->core);
    gf_pool_drain(self->core, task_cancel, NULL);
    orphan_add(self->core, self->shared);
    self->core = NULL;
    self->shared = NULL;
    self->lc = NULL;
    atomic_store(&self->joined, 1);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Pool_terminate_doc,
"terminate($self, /)\n--\n\n"
"Stop now: cancel queued work, stop running map jobs at their next item,\n"
"interrupt running calls, and wait for the worker threads to exit.\n\n"
"A running call is interrupted at its next Python bytecode (a call blocked\n"
"inside C code finishes first: threads cannot be killed).\n"
"Cancelled AsyncResults raise concurrent.futures.CancelledError from\n"
"get(); cancelled futures are cancelled.\n\n"
">>> import gilfree\n"
">>> def spin():\n"
"...     while True:             # Python code: it can be interrupted\n"
"...         pass\n"
">>> pool = gilfree.Pool(1, \"threads\")\n"
">>> running = pool.apply_async(spin)\n"
">>> queued = pool.submit(abs, -1)\n"
">>> pool.terminate()\n"
">>> pool.join()\n"
">>> queued.cancelled()\n"
"True");

static PyObject *
Pool_terminate(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PoolObject *self = POOL_CAST(op);
    atomic_store(&self->state, GFX_POOL_TERMINATED);
    if (self->backend_proc) {
        if (self->proc != NULL) {
            gfx_proc_terminate(self);
        }
        atomic_store(&self->joined, 1);
        Py_RETURN_NONE;
    }
    if (self->core != NULL && !atomic_load(&self->joined) &&
        !gf_pool_is_forked(self->core)) {
        gfx_pool_shared *sh = self->shared;
        atomic_store(&sh->terminated, 1);
        gf_pool_close(self->core);
        gf_pool_drain(self->core, task_cancel, NULL);
        /* Interrupt calls still running: PoolTerminated is raised in the
         * worker at its next bytecode (a call blocked inside C finishes
         * first).  It is a BaseException, so `except Exception` in user
         * code does not swallow it. */
        gfx_state *st = gfx_state_from_type(Py_TYPE(op));
        unsigned long me = PyThread_get_thread_ident();
        for (uint32_t i = 0; i < sh->nworkers; i++) {
            unsigned long ident = atomic_load(&sh->slots[i].ident);
            if (ident != 0 && ident != me && atomic_load(&sh->slots[i].busy)) {
                PyThreadState_SetAsyncExc(ident, st->PoolTerminated);
            }
        }
    }
    if (pool_close_and_join(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static const char *const apply_names[] = {"func", "args", "kwds", "callback",
                                          "error_callback"};

PyDoc_STRVAR(Pool_apply_async_doc,
"apply_async($self, /, func, args=(), kwds=None, callback=None,\n"
"            error_callback=None)\n--\n\n"
"Schedule ``func(*args, **kwds)``; return an AsyncResult at once.\n\n"
"``callback(result)`` or ``error_callback(exception)`` runs on the worker\n"
"thread when the call finishes, before get() returns.\n\n"
"    >>> with gilfree.Pool(2) as pool:\n"
"    ...     pool.apply_async(divmod, (7, 2)).get()\n"
"    (3, 1)");

static PyObject *
Pool_apply_async(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    PyObject *a[5];
    if (gfx_parse_args("Pool.apply_async", args, nargs, kwnames, apply_names,
                       5, 1, a) < 0) {
        return NULL;
    }
    return gfx_apply_async(POOL_CAST(op), a[0], a[1], a[2], a[3], a[4]);
}

PyDoc_STRVAR(Pool_apply_doc,
"apply($self, /, func, args=(), kwds=None)\n--\n\n"
"Run ``func(*args, **kwds)`` on a worker and return its result.\n\n"
"    >>> with gilfree.Pool(2) as pool:\n"
"    ...     pool.apply(max, (3, 9))\n"
"    9");

static PyObject *
Pool_apply(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames)
{
    PyObject *a[3];
    if (gfx_parse_args("Pool.apply", args, nargs, kwnames, apply_names, 3, 1,
                       a) < 0) {
        return NULL;
    }
    PyObject *ar = gfx_apply_async(POOL_CAST(op), a[0], a[1], a[2], NULL,
                                   NULL);
    if (ar == NULL) {
        return NULL;
    }
    PyObject *res = gfx_asyncresult_get(ar, -1.0);
    if (res == NULL && PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        PyObject *kbi = gfx_fetch_exception();
        if (POOL_CAST(op)->backend_proc) {
            gfx_proc_abandon(POOL_CAST(op), ar);
        }
        else {
            gfx_asyncresult_abandon(ar);  /* Ctrl-C: drop it if still queued */
        }
        gfx_restore_exception(kbi);
        Py_DECREF(kbi);
    }
    Py_DECREF(ar);
    return res;
}

int
gfx_parse_workers(PyObject *workers, long *out)
{
    if (workers == NULL || workers == Py_None) {
        *out = gf_usable_cpus();
        return 0;
    }
    if (PyBool_Check(workers) || !PyLong_Check(workers)) {
        PyErr_Format(PyExc_TypeError,
                     "Pool(): workers must be an int or None, got %R "
                     "(type %.100s)", workers, Py_TYPE(workers)->tp_name);
        return -1;
    }
    int overflow = 0;
    long n = PyLong_AsLongAndOverflow(workers, &overflow);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow > 0 || n > 4096) {
        PyErr_Format(PyExc_ValueError,
                     "Pool(): workers=%R is too large (at most 4096)",
                     workers);
        return -1;
    }
    if (overflow < 0 || n < 1) {
        PyErr_Format(PyExc_ValueError,
                     "Pool(): workers must be >= 1, got %R", workers);
        return -1;
    }
    *out = n;
    return 0;
}

static int
gfx_parse_offset(PyObject *obj, int64_t *out)
{
    int overflow = 0;
    long long v = PyLong_Check(obj) ? PyLong_AsLongLongAndOverflow(obj, &overflow)
                                    : -1;
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (!PyLong_Check(obj) || overflow || v < 0 || v > INT64_MAX / 2) {
        PyErr_Format(PyExc_ValueError,
                     "_offset must be a non-negative int, got %R", obj);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

/* _progress: a callable told how many results are done (gilfree's
 * progress bars); _offset: the input index of the first item (an auto pool
 * maps the rest of an input whose first items it ran itself), added to the
 * indices that errors name.  Both private. */
static const char *const map_names[] = {"func", "iterable", "chunksize",
                                        "_progress", "_offset"};

#define MAP_METHOD(NAME, FLAGS, DOC)                                          \
    static PyObject *                                                         \
    Pool_##NAME(PyObject *op, PyObject *const *args, Py_ssize_t nargs,        \
                PyObject *kwnames)                                            \
    {                                                                         \
        PyObject *a[5];                                                       \
        if (gfx_parse_args("Pool." #NAME, args, nargs, kwnames, map_names, 5, \
                           2, a) < 0) {                                       \
            return NULL;                                                      \
        }                                                                     \
        if (a[3] == Py_None) {                                                \
            a[3] = NULL;                                                      \
        }                                                                     \
        int64_t base = 0;                                                     \
        if (a[4] != NULL && gfx_parse_offset(a[4], &base) < 0) {              \
            return NULL;                                                      \
        }                                                                     \
        if (POOL_CAST(op)->backend_proc) {                                    \
            if (gfx_pool_check_usable(POOL_CAST(op), #NAME) < 0) {            \
                return NULL;                                                  \
            }                                                                 \
            return gfx_proc_map(POOL_CAST(op), a[0], a[1], a[2], (FLAGS),     \
                                #NAME, a[3], base);                           \
        }                                                                     \
        return gfx_map(POOL_CAST(op), a[0], a[1], a[2], (FLAGS), #NAME, a[3], \
                       base);                                                 \
    }

PyDoc_STRVAR(Pool_map_doc,
"map($self, /, func, iterable, chunksize=None)\n--\n\n"
"Return ``[func(x) for x in iterable]``, computed on the workers.\n\n"
"Results come back in input order.  ``chunksize=None`` adapts: it measures\n"
"the cost of an item and hands out chunks of about 2 ms, smaller near the\n"
"end.  The first exception raised by func stops the dispatch of new work\n"
"and is re-raised here with the failing input's index.\n\n"
"    >>> with gilfree.Pool(2) as pool:\n"
"    ...     pool.map(abs, [-1, 2, -3])\n"
"    [1, 2, 3]");
MAP_METHOD(map, 0, Pool_map_doc)

PyDoc_STRVAR(Pool_starmap_doc,
"starmap($self, /, func, iterable, chunksize=None)\n--\n\n"
"Like map(), but each item is a tuple of arguments: ``func(*item)``.\n\n"
"    >>> with gilfree.Pool(2) as pool:\n"
"    ...     pool.starmap(pow, [(2, 3), (3, 2)])\n"
"    [8, 9]");
MAP_METHOD(starmap, GFX_MAP_STAR, Pool_starmap_doc)

PyDoc_STRVAR(Pool_imap_doc,
"imap($self, /, func, iterable, chunksize=None)\n--\n\n"
"Lazy, ordered map: an iterator of results in input order.\n\n"
"The input is consumed lazily and only a bounded number of items is in\n"
"flight, so an endless generator is fine.  An exception is raised when its\n"
"item's turn comes; iteration can continue after it.\n\n"
"    >>> with gilfree.Pool(2) as pool:\n"
"    ...     list(pool.imap(str, range(3)))\n"
"    ['0', '1', '2']");
MAP_METHOD(imap, GFX_MAP_LAZY, Pool_imap_doc)

PyDoc_STRVAR(Pool_imap_unordered_doc,
"imap_unordered($self, /, func, iterable, chunksize=None)\n--\n\n"
"Like imap(), but yields results as they complete.\n\n"
"    >>> with gilfree.Pool(2) as pool:\n"
"    ...     sorted(pool.imap_unordered(abs, [-2, 1]))\n"
"    [1, 2]");
MAP_METHOD(imap_unordered, GFX_MAP_LAZY | GFX_MAP_UNORDERED,
           Pool_imap_unordered_doc)

static PyObject *
Pool_get_workers(PyObject *op, void *closure)
{
    return PyLong_FromUnsignedLong(POOL_CAST(op)->nworkers);
}

static PyObject *
Pool_get_backend(PyObject *op, void *closure)
{
    return PyUnicode_FromString(POOL_CAST(op)->backend_proc ? "processes"
                                                            : "threads");
}

static PyObject *
Pool_get_pids(PyObject *op, void *closure)
{
    if (!POOL_CAST(op)->backend_proc) {
        return PyList_New(0);
    }
    return gfx_proc_pids(POOL_CAST(op));
}

static PyObject *
Pool_get_state(PyObject *op, void *closure)
{
    PoolObject *self = POOL_CAST(op);
    if (self->backend_proc) {
        int stt = atomic_load(&self->state);
        if (stt == GFX_POOL_OPEN) {
            return PyUnicode_FromString(self->proc ? "running" : "uninitialised");
        }
        if (self->proc == NULL || atomic_load(&self->joined)) {
            return PyUnicode_FromString("joined");
        }
        return PyUnicode_FromString(stt == GFX_POOL_CLOSED ? "closed"
                                                           : "terminated");
    }
    if (self->core == NULL) {
        return PyUnicode_FromString(atomic_load(&self->joined)
                                        ? "joined" : "uninitialised");
    }
    if (gf_pool_is_forked(self->core)) {
        return PyUnicode_FromString("forked");
    }
    switch (atomic_load(&self->state)) {
    case GFX_POOL_OPEN:
        return PyUnicode_FromString("running");
    case GFX_POOL_CLOSED:
        return PyUnicode_FromString(atomic_load(&self->joined) ? "joined"
                                                                : "closed");
    default:
        return PyUnicode_FromString(atomic_load(&self->joined) ? "joined"
                                                                : "terminated");
    }
}

static PyObject *
Pool_get_alive(PyObject *op, void *closure)
{
    PoolObject *self = POOL_CAST(op);
    if (self->core == NULL || atomic_load(&self->joined)) {
        return PyLong_FromLong(0);
    }
    return PyLong_FromUnsignedLong(gf_pool_alive(self->core));
}

static PyGetSetDef Pool_getset[] = {
    {"workers", Pool_get_workers, NULL, "Number of worker threads.", NULL},
    {"backend", Pool_get_backend, NULL,
     "The backend: 'threads' or 'processes'.", NULL},
    {"pids", Pool_get_pids, NULL,
     "Process ids of the live worker processes (processes backend).", NULL},
    {"state", Pool_get_state, NULL,
     "'running', 'closed', 'terminated', 'joined' or 'forked'.", NULL},
    {"_alive_threads", Pool_get_alive, NULL,
     "Worker threads that have not exited yet.", NULL},
    {NULL},
};

static PyMethodDef Pool_methods[] = {
    {"map", (PyCFunction)(void (*)(void))Pool_map,
     METH_FASTCALL | METH_KEYWORDS, Pool_map_doc},
    {"starmap", (PyCFunction)(void (*)(void))Pool_starmap,
     METH_FASTCALL | METH_KEYWORDS, Pool_starmap_doc},
    {"imap", (PyCFunction)(void (*)(void))Pool_imap,
     METH_FASTCALL | METH_KEYWORDS, Pool_imap_doc},
    {"imap_unordered", (PyCFunction)(void (*)(void))Pool_imap_unordered,
     METH_FASTCALL | METH_KEYWORDS, Pool_imap_unordered_doc},
    {"apply", (PyCFunction)(void (*)(void))Pool_apply,
     METH_FASTCALL | METH_KEYWORDS, Pool_apply_doc},
    {"apply_async", (PyCFunction)(void (*)(void))Pool_apply_async,
     METH_FASTCALL | METH_KEYWORDS, Pool_apply_async_doc},
    {"submit", (PyCFunction)(void (*)(void))Pool_submit,
     METH_FASTCALL | METH_KEYWORDS, Pool_submit_doc},
    {"close", Pool_close, METH_NOARGS, Pool_close_doc},
    {"join", Pool_join, METH_NOARGS, Pool_join_doc},
    {"terminate", Pool_terminate, METH_NOARGS, Pool_terminate_doc},
    {"exit_results", Pool_exit_results, METH_NOARGS, Pool_exit_results_doc},
    {"_wait_started", Pool_wait_started, METH_O, NULL},
    {"_abandon", Pool_abandon, METH_NOARGS, NULL},
    {"_insights_raw", Pool_insights_raw, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Pool_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET,
     offsetof(PoolObject, weakreflist), Py_READONLY},
    {NULL},
};

PyDoc_STRVAR(Pool_doc,
"Pool(workers=None, backend='threads')\n--\n\n"
"The C core of gilfree.Pool: native worker threads running Python\n"
"callables.  Use gilfree.Pool, which adds the context manager, exit and\n"
"fork handling.");

static PyType_Slot Pool_slots[] = {
    {Py_tp_doc, (void *)Pool_doc},
    {Py_tp_init, Pool_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, Pool_dealloc},
    {Py_tp_methods, Pool_methods},
    {Py_tp_getset, Pool_getset},
    {Py_tp_members, Pool_members},
    {0, NULL},
};

PyType_Spec gfx_pool_spec = {
    .name = "gilfree._core.Pool",
    .basicsize = sizeof(PoolObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Pool_slots,
};
