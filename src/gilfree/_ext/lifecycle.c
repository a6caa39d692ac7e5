/* Worker lifecycle: initializer, per-worker state, worker ids, the shared
 * object, recycling after max_tasks_per_worker calls, exit functions and
 * CPU affinity.
 *
 * A pool created with any of these options has one gfx_lc: the options,
 * one gfx_wctx per worker, and what the workers report back (the first
 * initializer failure, the exit results, the first exit failure).
 *
 *   threads    the pool's shared block owns the gfx_lc; each worker thread
 *              starts its context in on_start (affinity, state, initializer)
 *              and ends it in on_stop (exit function); pool.c points the
 *              thread-local gfx__cur_wctx at it while the worker runs tasks.
 *   processes  the pool keeps a gfx_lc for the reports (filled by the
 *              collector, with the GIL) and sends the options once to each
 *              new worker (GF_MSG_SETUP); the worker builds its own gfx_lc
 *              with a single context from them (worker.c), so recycling is
 *              the pool's business there: it stops sending to a worker whose
 *              budget is spent and replaces it.
 *
 * Every call of the user's function on such a pool goes through
 * gfx_lc_call(): it finds the worker's context, (re)initialises it when
 * due, and prepends (worker_id, shared, state) -- the enabled ones, in that
 * order -- to the arguments.  Pools without a lifecycle never come here:
 * their hot paths test one pointer.
 *
 * Synchronisation: a gfx_wctx is touched only by its own worker thread (or
 * process), attached; `error`, `exit_error` and the reads of them by other
 * threads are under `lock` (never held across a Python call); the
 * exit_results list is appended to while attached (a list is safe to share
 * on free-threaded builds); `broken` and `starting` are atomics. */
#include "gfext.h"

#include <sched.h>
#include <string.h>

_Thread_local gfx_wctx *gfx__cur_wctx;

/* ---- creation --------------------------------------------------------------- */

gfx_lc *
gfx_lc_new(gfx_state *st, PyObject *spec, uint32_t n, uint32_t id0)
{
    PyObject *init, *initargs, *wexit, *shared, *cpus;
    int use_state, pass_id, has_shared;
    long long max_tasks;
    double init_timeout, exit_timeout;
    if (!PyTuple_Check(spec) ||
        !PyArg_ParseTuple(spec, "OO!OpppOLddO:_lifecycle", &init,
                          &PyTuple_Type, &initargs, &wexit, &use_state,
                          &pass_id, &has_shared, &shared, &max_tasks,
                          &init_timeout, &exit_timeout, &cpus)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError,
                            "Pool(): _lifecycle must be a tuple (use "
                            "gilfree.Pool)");
        }
        return NULL;
    }
    if (cpus != Py_None && !PyTuple_Check(cpus)) {
        PyErr_SetString(PyExc_TypeError, "Pool(): malformed CPU affinity");
        return NULL;
    }
    gfx_lc *lc = PyMem_RawCalloc(1, sizeof *lc);
    gfx_wctx *w = PyMem_RawCalloc(n ? n : 1, sizeof *w);
    if (lc == NULL || w == NULL) {
        PyMem_RawFree(lc);
        PyMem_RawFree(w);
        PyErr_NoMemory();
        return NULL;
    }
    lc->st = st;
    lc->initializer = init == Py_None ? NULL : Py_NewRef(init);
    lc->initargs = Py_NewRef(initargs);
    lc->worker_exit = wexit == Py_None ? NULL : Py_NewRef(wexit);
    lc->use_state = use_state;
    lc->pass_id = pass_id;
    lc->has_shared = has_shared;
    lc->shared = has_shared ? Py_NewRef(shared) : NULL;
    lc->max_tasks = max_tasks > 0 ? (int64_t)max_tasks : 0;
    lc->init_timeout = init_timeout;
    lc->exit_timeout = exit_timeout;
    lc->cpus = cpus == Py_None ? NULL : Py_NewRef(cpus);
    lc->spec = Py_NewRef(spec);
    lc->n = n;
    lc->w = w;
    pthread_mutex_init(&lc->lock, NULL);
    gf_ec_init(&lc->started_ec);
    atomic_store(&lc->starting, n);
    lc->exit_results = PyList_New(0);
    if (lc->exit_results == NULL) {
        gfx_lc_free(lc);
        return NULL;
    }
    for (uint32_t i = 0; i < n; i++) {
        w[i].lc = lc;
        w[i].id = id0 + i;
        w[i].id_obj = PyLong_FromUnsignedLong(id0 + i);
        if (w[i].id_obj == NULL) {
            gfx_lc_free(lc);
            return NULL;
        }
    }
    return lc;
}

void
gfx_lc_free(gfx_lc *lc)
{
    if (lc == NULL) {
        return;
    }
    for (uint32_t i = 0; i < lc->n; i++) {
        Py_CLEAR(lc->w[i].state);
        Py_CLEAR(lc->w[i].id_obj);
    }
    PyMem_RawFree(lc->w);
    Py_CLEAR(lc->initializer);
    Py_CLEAR(lc->initargs);
    Py_CLEAR(lc->worker_exit);
    Py_CLEAR(lc->shared);
    Py_CLEAR(lc->cpus);
    Py_CLEAR(lc->spec);
    Py_CLEAR(lc->exit_results);
    Py_CLEAR(lc->error);
    Py_CLEAR(lc->exit_error);
    pthread_mutex_destroy(&lc->lock);
    PyMem_RawFree(lc);
}

/* ---- reports ------------------------------------------------------------------ */

/* A new exception of `type` with message `msg`, `worker` set and `cause`
 * (may be NULL) as its __cause__.  NULL with an exception on failure. */
static PyObject *
make_error(PyObject *type, PyObject *msg, uint32_t worker, PyObject *cause)
{
    if (msg == NULL) {
        return NULL;
    }
    PyObject *exc = PyObject_CallOneArg(type, msg);
    Py_DECREF(msg);
    if (exc == NULL) {
        return NULL;
    }
    PyObject *id = PyLong_FromUnsignedLong(worker);
    if (id == NULL || PyObject_SetAttrString(exc, "worker", id) < 0) {
        Py_XDECREF(id);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(id);
    if (cause != NULL) {
        PyException_SetCause(exc, Py_NewRef(cause));
    }
    return exc;
}

PyObject *
gfx_lc_error_new(gfx_lc *lc, int exit_fn, uint32_t worker, PyObject *cause,
                 const char *why)
{
    const char *what = exit_fn ? "exit function" : "initializer";
    PyObject *msg;
    if (why != NULL) {
        msg = PyUnicode_FromFormat("gilfree: the %s of worker %u %s", what,
                                   worker, why);
    }
    else if (cause != NULL) {
        msg = PyUnicode_FromFormat("gilfree: the %s of worker %u raised "
                                   "%s: %S", what, worker,
                                   Py_TYPE(cause)->tp_name, cause);
    }
    else {
        msg = PyUnicode_FromFormat("gilfree: the %s of worker %u failed",
                                   what, worker);
    }
    return make_error(exit_fn ? lc->st->WorkerExitError
                              : lc->st->InitializerError,
                      msg, worker, cause);
}

void
gfx_lc_set_error(gfx_lc *lc, PyObject *err)
{
    pthread_mutex_lock(&lc->lock);
    if (lc->error == NULL) {
        lc->error = Py_NewRef(err);
    }
    pthread_mutex_unlock(&lc->lock);
    atomic_store(&lc->broken, 1);
    gf_ec_notify_all(&lc->started_ec);
}

void
gfx_lc_set_exit_error(gfx_lc *lc, PyObject *err)
{
    pthread_mutex_lock(&lc->lock);
    if (lc->exit_error == NULL) {
        lc->exit_error = Py_NewRef(err);
    }
    pthread_mutex_unlock(&lc->lock);
}

static PyObject *
take_ref(gfx_lc *lc, PyObject **field)
{
    pthread_mutex_lock(&lc->lock);
    PyObject *v = Py_XNewRef(*field);
    pthread_mutex_unlock(&lc->lock);
    return v;
}

PyObject *
gfx_lc_error_copy(gfx_lc *lc)
{
    /* A fresh exception each time (the recorded one keeps its own
     * traceback and notes); same message, worker and cause. */
    PyObject *err = take_ref(lc, &lc->error);
    if (err == NULL) {
        return PyObject_CallFunction(lc->st->InitializerError, "s",
                                     "gilfree: a worker's initializer "
                                     "failed");
    }
    PyObject *args = PyObject_GetAttrString(err, "args");
    PyObject *exc = args ? PyObject_Call(lc->st->InitializerError, args,
                                         NULL) : NULL;
    Py_XDECREF(args);
    if (exc != NULL) {
        PyObject *worker = PyObject_GetAttrString(err, "worker");
        if (worker == NULL || PyObject_SetAttrString(exc, "worker",
                                                     worker) < 0) {
            PyErr_Clear();
        }
        Py_XDECREF(worker);
        PyObject *cause = PyException_GetCause(err);
        if (cause != NULL) {
            /* In a worker process the exception will be pickled, which
             * drops __cause__: carry it as an attribute (the pool puts it
             * back, see procresult.c). */
            if (lc->in_worker_process &&
                PyObject_SetAttrString(exc, "_cause", cause) < 0) {
                PyErr_Clear();
            }
            PyException_SetCause(exc, cause);  /* steals */
        }
    }
    Py_DECREF(err);
    return exc;
}

int
gfx_lc_raise_broken(gfx_lc *lc)
{
    PyObject *exc = gfx_lc_error_copy(lc);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return -1;
}

int
gfx_lc_check(gfx_lc *lc)
{
    if (lc != NULL && atomic_load_explicit(&lc->broken, memory_order_acquire)) {
        return gfx_lc_raise_broken(lc);
    }
    return 0;
}

PyObject *
gfx_lc_exit_results(gfx_lc *lc)
{
    if (lc == NULL) {
        return PyList_New(0);
    }
    return PyList_GetSlice(lc->exit_results, 0, PY_SSIZE_T_MAX);
}

PyObject *
gfx_lc_take_exit_error(gfx_lc *lc)
{
    if (lc == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&lc->lock);
    PyObject *v = lc->exit_error;
    lc->exit_error = NULL;
    pthread_mutex_unlock(&lc->lock);
    return v;
}

/* ---- calling with the prefix ------------------------------------------------------ */

#define GFX_LC_SMALL 8

/* fn(*prefix, *args, **kwargs).  The prefix objects are held for the call:
 * a nested call on the same worker may recycle its state meanwhile. */
static PyObject *
call_prefixed(gfx_wctx *w, PyObject *fn, PyObject *const *args,
              Py_ssize_t nargs, PyObject *kwargs)
{
    gfx_lc *lc = w->lc;
    PyObject *pre[3];
    int k = 0;
    if (lc->pass_id) {
        pre[k++] = w->id_obj;
    }
    if (lc->has_shared) {
        pre[k++] = lc->shared;
    }
    if (lc->use_state) {
        pre[k++] = w->state != NULL ? w->state : Py_None;
    }
    PyObject *small[GFX_LC_SMALL] = {NULL};
    PyObject **argv = small;
    Py_ssize_t total = k + nargs;
    if (total > GFX_LC_SMALL) {
        argv = PyMem_Malloc((size_t)total * sizeof *argv);
        if (argv == NULL) {
            return PyErr_NoMemory();
        }
    }
    for (int i = 0; i < k; i++) {
        argv[i] = Py_NewRef(pre[i]);
    }
    if (nargs > 0) {
        memcpy(argv + k, args, (size_t)nargs * sizeof *argv);
    }
    PyObject *r = PyObject_VectorcallDict(fn, argv, (size_t)total, kwargs);
    for (int i = 0; i < k; i++) {
        Py_DECREF(argv[i]);
    }
    if (argv != small) {
        PyMem_Free(argv);
    }
    return r;
}

/* ---- start, finish, recycle ------------------------------------------------------- */

int
gfx_lc_apply_affinity(gfx_wctx *w)
{
#ifdef __linux__
    gfx_lc *lc = w->lc;
    if (lc->cpus == NULL || PyTuple_GET_SIZE(lc->cpus) == 0) {
        return 0;
    }
    PyObject *mine = PyTuple_GET_ITEM(lc->cpus,
                                      (Py_ssize_t)w->id %
                                          PyTuple_GET_SIZE(lc->cpus));
    if (!PyTuple_Check(mine)) {
        PyErr_SetString(PyExc_TypeError, "gilfree: malformed CPU affinity");
        return -1;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mine); i++) {
        long c = PyLong_AsLong(PyTuple_GET_ITEM(mine, i));
        if (c == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (c < 0 || c >= CPU_SETSIZE) {
            PyErr_Format(PyExc_ValueError, "gilfree: CPU id %ld out of range",
                         c);
            return -1;
        }
        CPU_SET((int)c, &set);
    }
    /* pid 0: the calling thread (a worker thread, or a worker process's
     * main thread before it starts any other). */
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
#else
    (void)w;
#endif
    return 0;
}

int
gfx_lc_start(gfx_wctx *w)
{
    gfx_lc *lc = w->lc;
    w->calls = 0;
    Py_CLEAR(w->state);
    if (lc->use_state) {
        w->state = PyDict_New();
        if (w->state == NULL) {
            return -1;
        }
    }
    if (lc->initializer != NULL) {
        int64_t t0 = gf_now_ns();
        PyObject *r = call_prefixed(w, lc->initializer,
                                    &PyTuple_GET_ITEM(lc->initargs, 0),
                                    PyTuple_GET_SIZE(lc->initargs), NULL);
        int64_t took = gf_now_ns() - t0;
        w->init_ns += took;
        PyObject *err = NULL;
        if (r == NULL) {
            PyObject *cause = gfx_fetch_exception();
            err = gfx_lc_error_new(lc, 0, w->id, cause, NULL);
            Py_XDECREF(cause);
        }
        else {
            Py_DECREF(r);
            /* A thread cannot be stopped: an initializer that overran its
             * init_timeout is reported when it returns. */
            if (lc->init_timeout > 0 && (double)took / 1e9 > lc->init_timeout) {
                char why[96];
                PyOS_snprintf(why, sizeof why,
                              "ran %.3f s, longer than init_timeout=%g s",
                              (double)took / 1e9, lc->init_timeout);
                err = gfx_lc_error_new(lc, 0, w->id, NULL, why);
            }
        }
        if (err != NULL || PyErr_Occurred()) {
            if (err != NULL) {
                gfx_lc_set_error(lc, err);
                PyErr_SetObject((PyObject *)Py_TYPE(err), err);
                Py_DECREF(err);
            }
            Py_CLEAR(w->state);
            return -1;
        }
    }
    w->live = 1;
    return 0;
}

int
gfx_lc_finish(gfx_wctx *w, PyObject **value)
{
    gfx_lc *lc = w->lc;
    *value = NULL;
    int rc = 0;
    if (lc->worker_exit != NULL && w->live) {
        int64_t t0 = gf_now_ns();
        *value = call_prefixed(w, lc->worker_exit, NULL, 0, NULL);
        w->exit_ns += gf_now_ns() - t0;
        rc = *value != NULL ? 0 : -1;
    }
    w->live = 0;
    Py_CLEAR(w->state);
    return rc;
}

/* Threads: record how a worker's exit function went (attached). */
static void
record_exit(gfx_wctx *w, int rc, PyObject *value, int64_t took_ns)
{
    gfx_lc *lc = w->lc;
    PyObject *err = NULL;
    if (rc < 0) {
        PyObject *cause = gfx_fetch_exception();
        err = gfx_lc_error_new(lc, 1, w->id, cause, NULL);
        Py_XDECREF(cause);
    }
    else if (lc->exit_timeout > 0 && (double)took_ns / 1e9 > lc->exit_timeout) {
        char why[96];
        PyOS_snprintf(why, sizeof why,
                      "ran %.3f s, longer than exit_timeout=%g s",
                      (double)took_ns / 1e9, lc->exit_timeout);
        err = gfx_lc_error_new(lc, 1, w->id, NULL, why);
    }
    if (value != NULL && PyList_Append(lc->exit_results, value) < 0) {
        err = err ? err : gfx_fetch_exception();
    }
    if (err != NULL) {
        gfx_lc_set_exit_error(lc, err);
        Py_DECREF(err);
    }
    PyErr_Clear();
}

/* max_tasks_per_worker reached (threads): end this worker's life and
 * start a new one, on the same thread. */
static int
recycle(gfx_wctx *w)
{
    PyObject *value;
    int64_t t0 = gf_now_ns();
    int rc = gfx_lc_finish(w, &value);
    record_exit(w, rc, value, gf_now_ns() - t0);
    Py_XDECREF(value);
    w->recycled++;
    return gfx_lc_start(w);
}

PyObject *
gfx_lc_call(gfx_lc *lc, PyObject *fn, PyObject *const *args, Py_ssize_t nargs,
            PyObject *kwargs)
{
    gfx_wctx *w = gfx__cur_wctx;
    if (w == NULL || w->lc != lc) {
        PyErr_SetString(PyExc_RuntimeError,
                        "gilfree: a pool with worker lifecycle options "
                        "(initializer, worker_state, pass_worker_id, shared, "
                        "max_tasks_per_worker) runs its functions only on "
                        "its own workers, and they have exited (an imap "
                        "consumed after join()?)");
        return NULL;
    }
    if (atomic_load_explicit(&lc->broken, memory_order_acquire)) {
        gfx_lc_raise_broken(lc);
        return NULL;
    }
    if (!w->live) {
        if (gfx_lc_start(w) < 0) {
            return NULL;
        }
    }
    else if (lc->max_tasks > 0 && w->calls >= lc->max_tasks) {
        if (recycle(w) < 0) {
            return NULL;
        }
    }
    w->calls++;
    return call_prefixed(w, fn, args, nargs, kwargs);
}

PyObject *
gfx_lc_call_tuple(gfx_lc *lc, PyObject *fn, PyObject *args, PyObject *kwargs)
{
    if (args == NULL) {
        return gfx_lc_call(lc, fn, NULL, 0, kwargs);
    }
    return gfx_lc_call(lc, fn, &PyTuple_GET_ITEM(args, 0),
                       PyTuple_GET_SIZE(args), kwargs);
}

/* ---- the thread backend's hooks ---------------------------------------------------- */

void
gfx_lc_thread_begin(gfx_wctx *w)
{
    gfx_lc *lc = w->lc;
    gfx__cur_wctx = w;
    if (gfx_lc_apply_affinity(w) < 0) {
        PyObject *cause = gfx_fetch_exception();
        PyObject *err = gfx_lc_error_new(lc, 0, w->id, cause,
                                         "could not be given its CPUs");
        Py_XDECREF(cause);
        if (err != NULL) {
            gfx_lc_set_error(lc, err);
            Py_DECREF(err);
        }
    }
    else if (gfx_lc_start(w) < 0 && !atomic_load(&lc->broken)) {
        /* Not an initializer error (out of memory making the state):
         * still a worker that cannot run anything. */
        PyObject *cause = gfx_fetch_exception();
        PyObject *err = gfx_lc_error_new(lc, 0, w->id, cause, NULL);
        Py_XDECREF(cause);
        if (err != NULL) {
            gfx_lc_set_error(lc, err);
            Py_DECREF(err);
        }
    }
    PyErr_Clear();
    gfx__cur_wctx = NULL;
    atomic_fetch_sub(&lc->starting, 1);
    gf_ec_notify_all(&lc->started_ec);
}

void
gfx_lc_thread_end(gfx_wctx *w)
{
    if (!w->live) {
        return;
    }
    gfx__cur_wctx = w;
    atomic_store(&w->exit_started_ns, gf_now_ns());
    PyObject *value;
    int64_t t0 = gf_now_ns();
    int rc = gfx_lc_finish(w, &value);
    record_exit(w, rc, value, gf_now_ns() - t0);
    Py_XDECREF(value);
    atomic_store(&w->exit_started_ns, 0);
    gfx__cur_wctx = NULL;
}

static int
started_ready(void *arg)
{
    gfx_lc *lc = arg;
    return atomic_load(&lc->starting) == 0 || atomic_load(&lc->broken);
}

int
gfx_lc_wait_started(gfx_lc *lc, double timeout)
{
    int rc = gfx_wait(&lc->started_ec, started_ready, lc, timeout);
    if (rc < 0) {
        return -1;
    }
    if (atomic_load(&lc->broken)) {
        return gfx_lc_raise_broken(lc);
    }
    if (rc == 0) {
        char why[96];
        PyOS_snprintf(why, sizeof why,
                      "did not finish within init_timeout=%g s",
                      lc->init_timeout);
        /* Which one: the first that has not finished. */
        uint32_t id = 0;
        for (uint32_t i = 0; i < lc->n; i++) {
            if (!lc->w[i].live) {
                id = lc->w[i].id;
                break;
            }
        }
        PyObject *err = gfx_lc_error_new(lc, 0, id, NULL, why);
        if (err != NULL) {
            gfx_lc_set_error(lc, err);
            PyErr_SetObject((PyObject *)Py_TYPE(err), err);
            Py_DECREF(err);
        }
        return -1;
    }
    return 0;
}

int
gfx_lc_exit_overdue(gfx_lc *lc, uint32_t *worker)
{
    if (lc == NULL || lc->exit_timeout <= 0) {
        return 0;
    }
    int64_t now = gf_now_ns();
    int64_t limit = (int64_t)(lc->exit_timeout * 1e9);
    for (uint32_t i = 0; i < lc->n; i++) {
        int64_t t = atomic_load(&lc->w[i].exit_started_ns);
        if (t != 0 && now - t > limit) {
            *worker = lc->w[i].id;
            return 1;
        }
    }
    return 0;
}
