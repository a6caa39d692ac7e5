/* AsyncResult: the handle of one apply_async() call, and its own task.
 *
 * One allocation per call: the object embeds the gfx_task that the core
 * queues, so apply_async() costs an object, a queue push, and a wake-up only
 * if a worker is parked.  The queue holds a strong reference from push until
 * a worker (or terminate) is done with it.
 *
 * `state` is the only field shared without the GIL (or, free-threaded,
 * without the object's critical section):
 *   QUEUED -> RUNNING   claimed by exactly one thread (CAS): a worker that
 *                       popped it, a worker of the same pool that waits on it
 *                       and runs it inline instead (no nested deadlock), or
 *                       terminate() cancelling it;
 *   RUNNING -> DONE_*   published with release order after `value` is set, so
 *                       a reader that sees DONE_* (acquire) sees the value.
 * Waiters park on `ec`; the runner notifies only if someone is parked. */
#include "gfext.h"

enum { AR_QUEUED = 0, AR_RUNNING = 1, AR_DONE_OK = 2, AR_DONE_ERR = 3 };

typedef struct {
    PyObject_HEAD
    gfx_task task;
    gf_pool_t *core;            /* to recognise our own workers (compared,
                                 * never dereferenced) */
    unsigned int fork_gen;      /* gfx_fork_generation at creation */
    gfx_lc *lc;                 /* the pool's worker lifecycle, or NULL
                                 * (used only by its workers) */
    PyObject *fn;               /* cleared after the call */
    PyObject *args;             /* tuple or NULL (no arguments) */
    PyObject *kwds;             /* dict or NULL */
    PyObject *callback;
    PyObject *error_callback;
    PyObject *value;            /* result or exception, once DONE_* */
    _Atomic int state;
    _Atomic int external;       /* 1: settled from Python (_settle_result);
                                 * 2: that settling has begun */
    int decorated;              /* exception already given cause/note */
    gf_ec_t ec;
    PyObject *weakreflist;
} AsyncResultObject;

#define AR_CAST(op) ((AsyncResultObject *)(op))
#define AR_FROM_TASK(t) \
    ((AsyncResultObject *)((char *)(t) - offsetof(AsyncResultObject, task)))

static int
ar_ready(void *arg)
{
    AsyncResultObject *self = arg;
    /* acquire: pairs with the release store that publishes `value`. */
    return atomic_load_explicit(&self->state, memory_order_acquire) >=
           AR_DONE_OK;
}

static void
ar_publish(AsyncResultObject *self, int state)
{
    atomic_store_explicit(&self->state, state, memory_order_release);
    gf_ec_notify_all(&self->ec);
}

/* Run the call; we are attached and own the RUNNING claim. */
static void
ar_execute(AsyncResultObject *self)
{
    /* fn stays until the result is dropped: an exception's note names it. */
    PyObject *fn = Py_NewRef(self->fn), *args = self->args, *kwds = self->kwds;
    self->args = self->kwds = NULL;
    PyObject *res;
    int prev = gfx_interruptible_begin();
    if (self->lc != NULL) {
        res = gfx_lc_call_tuple(self->lc, fn, args, kwds);
    }
    else if (args == NULL && kwds == NULL) {
        res = PyObject_CallNoArgs(fn);
    }
    else if (args == NULL) {
        PyObject *empty = PyTuple_New(0);
        res = empty ? PyObject_Call(fn, empty, kwds) : NULL;
        Py_XDECREF(empty);
    }
    else {
        res = PyObject_Call(fn, args, kwds);
    }
    gfx_interruptible_end(prev);
    if (gfx__cur_stats != NULL) {
        gfx_stats_add(&gfx__cur_stats->tasks, 1);
        gfx_stats_add(&gfx__cur_stats->chunks, 1);
    }
    Py_DECREF(fn);
    Py_XDECREF(args);
    Py_XDECREF(kwds);

    PyObject *callback = self->callback, *error_callback = self->error_callback;
    self->callback = self->error_callback = NULL;
    int state;
    if (res != NULL) {
        self->value = res;
        state = AR_DONE_OK;
        if (callback != NULL) {
            PyObject *r = PyObject_CallOneArg(callback, res);
            if (r == NULL) {
                PyErr_WriteUnraisable(callback);
            }
            Py_XDECREF(r);
        }
    }
    else {
        self->value = gfx_fetch_task_exception(
            gfx_state_from_type(Py_TYPE(self)));
        state = AR_DONE_ERR;
        if (error_callback != NULL && self->value != NULL) {
            PyObject *r = PyObject_CallOneArg(error_callback, self->value);
            if (r == NULL) {
                PyErr_WriteUnraisable(error_callback);
            }
            Py_XDECREF(r);
        }
    }
    Py_XDECREF(callback);
    Py_XDECREF(error_callback);
    ar_publish(self, state);
}

static int
ar_claim(AsyncResultObject *self)
{
    int expected = AR_QUEUED;
    /* acq_rel: the winner must see the fields written before the push. */
    return atomic_compare_exchange_strong_explicit(
        &self->state, &expected, AR_RUNNING, memory_order_acq_rel,
        memory_order_acquire);
}

void
gfx_asyncresult_run(gfx_task *task)
{
    AsyncResultObject *self = AR_FROM_TASK(task);
    if (ar_claim(self)) {
        ar_execute(self);
    }
    Py_DECREF(self);  /* the queue's reference */
}

void
gfx_asyncresult_cancel(gfx_task *task, PyObject *why)
{
    AsyncResultObject *self = AR_FROM_TASK(task);
    if (ar_claim(self)) {
        gfx_state *st = gfx_state_from_type(Py_TYPE(self));
        Py_CLEAR(self->args);
        Py_CLEAR(self->kwds);
        Py_CLEAR(self->callback);
        Py_CLEAR(self->error_callback);
        PyObject *msg = why ? Py_NewRef(why) : PyUnicode_FromString(
            "the pool was terminated before this task started");
        self->value = msg ? PyObject_CallOneArg(st->CancelledError, msg)
                          : NULL;
        Py_XDECREF(msg);
        if (self->value == NULL) {
            self->value = gfx_fetch_exception();
        }
        self->decorated = 1;
        ar_publish(self, AR_DONE_ERR);
    }
    Py_DECREF(self);
}

PyObject *
gfx_apply_async(PoolObject *pool, PyObject *fn, PyObject *args,
                PyObject *kwds, PyObject *callback, PyObject *error_callback)
{
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError,
                     "Pool.apply_async(): func must be callable, got %R "
                     "(type %.100s)", fn, Py_TYPE(fn)->tp_name);
        return NULL;
    }
    if (callback == Py_None) {
        callback = NULL;
    }
    if (error_callback == Py_None) {
        error_callback = NULL;
    }
    if ((callback && !PyCallable_Check(callback)) ||
        (error_callback && !PyCallable_Check(error_callback))) {
        PyObject *bad = (callback && !PyCallable_Check(callback))
                            ? callback : error_callback;
        PyErr_Format(PyExc_TypeError,
                     "Pool.apply_async(): callbacks must be callable or "
                     "None, got %R", bad);
        return NULL;
    }
    if (gfx_pool_check_usable(pool, "apply_async") < 0) {
        return NULL;
    }
    PyObject *targs = NULL, *tkwds = NULL;
    if (args != NULL && args != Py_None) {
        if (PyTuple_CheckExact(args)) {
            if (PyTuple_GET_SIZE(args) > 0) {
                targs = Py_NewRef(args);
            }
        }
        else {
            targs = PySequence_Tuple(args);
            if (targs == NULL) {
                if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                    PyErr_Clear();
                    PyErr_Format(PyExc_TypeError,
                                 "Pool.apply_async(): args must be a tuple "
                                 "or iterable, got %R", args);
                }
                return NULL;
            }
        }
    }
    if (kwds != NULL && kwds != Py_None) {
        if (PyDict_CheckExact(kwds)) {
            if (PyDict_GET_SIZE(kwds) > 0) {
                tkwds = PyDict_Copy(kwds);
            }
        }
        else {
            tkwds = PyDict_New();
            if (tkwds != NULL && PyDict_Merge(tkwds, kwds, 1) < 0) {
                Py_CLEAR(tkwds);
                if (PyErr_ExceptionMatches(PyExc_AttributeError) ||
                    PyErr_ExceptionMatches(PyExc_TypeError)) {
                    PyErr_Clear();
                    PyErr_Format(PyExc_TypeError,
                                 "Pool.apply_async(): kwds must be a "
                                 "mapping, got %R", kwds);
                }
            }
            if (tkwds == NULL) {
                Py_XDECREF(targs);
                return NULL;
            }
        }
        if (PyErr_Occurred()) {
            Py_XDECREF(targs);
            return NULL;
        }
    }
    if (pool->backend_proc) {
        /* Same checks, then the process backend (procpool.c). */
        PyObject *r = gfx_proc_apply_async(pool, fn, targs, tkwds, callback,
                                           error_callback);
        Py_XDECREF(targs);
        Py_XDECREF(tkwds);
        return r;
    }
    gfx_state *st = gfx_state_from_type(Py_TYPE(pool));
    AsyncResultObject *self =
        PyObject_GC_New(AsyncResultObject, st->AsyncResult_Type);
    if (self == NULL) {
        Py_XDECREF(targs);
        Py_XDECREF(tkwds);
        return NULL;
    }
    self->task.base.run = gfx__task_entry;
    self->task.kind = GFX_TASK_APPLY;
    self->core = pool->core;
    self->lc = pool->lc;
    self->fork_gen = atomic_load(&gfx_fork_generation);
    self->fn = Py_NewRef(fn);
    self->args = targs;
    self->kwds = tkwds;
    self->callback = Py_XNewRef(callback);
    self->error_callback = Py_XNewRef(error_callback);
    self->value = NULL;
    atomic_init(&self->state, AR_QUEUED);
    atomic_init(&self->external, 0);
    self->decorated = 0;
    gf_ec_init(&self->ec);
    self->weakreflist = NULL;
    PyObject_GC_Track(self);

    Py_INCREF(self);  /* the queue's reference */
    if (gfx_pool_enqueue(pool, &self->task) < 0) {
        /* Never queued: take both references back. */
        Py_DECREF(self);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* A result that another process computes (the process backend): it starts
 * RUNNING, so no thread here ever claims it, and core is NULL, so no worker
 * thread tries to run it inline. */
PyObject *
gfx_asyncresult_new_remote(gfx_state *st, PyObject *fn, PyObject *callback,
                           PyObject *error_callback)
{
    /* gfx_apply_async checked the callbacks (None already NULL). */
    AsyncResultObject *self =
        PyObject_GC_New(AsyncResultObject, st->AsyncResult_Type);
    if (self == NULL) {
        return NULL;
    }
    self->task.base.run = NULL;
    self->task.kind = GFX_TASK_APPLY;
    self->core = NULL;
    self->lc = NULL;
    self->fork_gen = atomic_load(&gfx_fork_generation);
    self->fn = Py_NewRef(fn);
    self->args = NULL;
    self->kwds = NULL;
    self->callback = Py_XNewRef(callback);
    self->error_callback = Py_XNewRef(error_callback);
    self->value = NULL;
    atomic_init(&self->state, AR_RUNNING);
    atomic_init(&self->external, 0);
    self->decorated = 1;
    gf_ec_init(&self->ec);
    self->weakreflist = NULL;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

void
gfx_asyncresult_finish(PyObject *op, PyObject *value, int ok)
{
    AsyncResultObject *self = AR_CAST(op);
    if (value == NULL) {
        value = gfx_fetch_exception();
        ok = 0;
    }
    PyObject *callback = self->callback, *error_callback = self->error_callback;
    self->callback = self->error_callback = NULL;
    self->value = value;
    PyObject *cb = ok ? callback : error_callback;
    if (cb != NULL && value != NULL) {
        PyObject *r = PyObject_CallOneArg(cb, value);
        if (r == NULL) {
            PyErr_WriteUnraisable(cb);
        }
        Py_XDECREF(r);
    }
    Py_XDECREF(callback);
    Py_XDECREF(error_callback);
    ar_publish(self, ok ? AR_DONE_OK : AR_DONE_ERR);
}

/* Wait until done.  A worker of the same pool waiting on a task that is
 * still queued runs it itself, so nested apply() cannot deadlock. */
static int
ar_wait(AsyncResultObject *self, double timeout)
{
    if (ar_ready(self)) {
        return 1;
    }
    if (gfx_check_fork(self->fork_gen, "AsyncResult") < 0) {
        return -1;
    }
    gf_worker_t *w = gf_current_worker();
    if (w != NULL && gf_worker_pool(w) == self->core && ar_claim(self)) {
        Py_INCREF(self);
        ar_execute(self);
        Py_DECREF(self);
        return 1;
    }
    return gfx_wait(&self->ec, ar_ready, self, timeout);
}

PyObject *
gfx_asyncresult_get(PyObject *op, double timeout)
{
    AsyncResultObject *self = AR_CAST(op);
    int rc = ar_wait(self, timeout);
    if (rc < 0) {
        return NULL;
    }
    if (rc == 0) {
        PyErr_SetString(PyExc_TimeoutError,
                        "AsyncResult.get(): the result was not ready in time");
        return NULL;
    }
    if (atomic_load_explicit(&self->state, memory_order_acquire) ==
        AR_DONE_OK) {
        return Py_NewRef(self->value);
    }
    gfx_state *st = gfx_state_from_type(Py_TYPE(op));
    int decorate;
    Py_BEGIN_CRITICAL_SECTION(op);
    decorate = !self->decorated;
    self->decorated = 1;
    Py_END_CRITICAL_SECTION();
    gfx_raise_failure(st, self->value, self->fn, -1, decorate);
    return NULL;
}

void
gfx_asyncresult_abandon(PyObject *op)
{
    AsyncResultObject *self = AR_CAST(op);
    if (ar_claim(self)) {
        /* Still queued: cancel it.  The queue keeps its reference until a
         * worker pops the task and finds it already claimed. */
        gfx_state *st = gfx_state_from_type(Py_TYPE(op));
        Py_CLEAR(self->args);
        Py_CLEAR(self->kwds);
        Py_CLEAR(self->callback);
        Py_CLEAR(self->error_callback);
        self->value = PyObject_CallFunction(
            st->CancelledError, "s", "cancelled: the caller was interrupted");
        if (self->value == NULL) {
            self->value = gfx_fetch_exception();
        }
        self->decorated = 1;
        ar_publish(self, AR_DONE_ERR);
    }
}

/* ---- results computed elsewhere, settled from Python ---------------------------------
 * The Dask backend (gilfree/_dask.py) computes calls on a cluster: it makes
 * a remote AsyncResult with _pending_result() and settles it once with
 * _settle_result(); waiting on it is the usual GIL-free, interruptible wait. */

PyObject *
gfx_pending_result(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError,
                        "_pending_result(fn, callback, error_callback)");
        return NULL;
    }
    PyObject *fn = args[0];
    PyObject *cb = args[1] == Py_None ? NULL : args[1];
    PyObject *ecb = args[2] == Py_None ? NULL : args[2];
    if ((cb && !PyCallable_Check(cb)) || (ecb && !PyCallable_Check(ecb))) {
        PyErr_Format(PyExc_TypeError,
                     "Pool.apply_async(): callbacks must be callable or "
                     "None, got %R", (cb && !PyCallable_Check(cb)) ? cb : ecb);
        return NULL;
    }
    gfx_state *st = PyModule_GetState(module);
    PyObject *ar = gfx_asyncresult_new_remote(st, fn, cb, ecb);
    if (ar != NULL) {
        atomic_store(&AR_CAST(ar)->external, 1);
    }
    return ar;
}

PyObject *
gfx_settle_result(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    gfx_state *st = PyModule_GetState(module);
    if (nargs != 3 || !PyObject_TypeCheck(args[0], st->AsyncResult_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "_settle_result(async_result, ok, value)");
        return NULL;
    }
    int ok = PyObject_IsTrue(args[1]);
    if (ok < 0) {
        return NULL;
    }
    if (!ok && !PyExceptionInstance_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "_settle_result(): a failure needs an exception");
        return NULL;
    }
    AsyncResultObject *self = AR_CAST(args[0]);
    int expected = 1;
    if (!atomic_compare_exchange_strong(&self->external, &expected, 2)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "_settle_result(): not a pending result made by "
                        "_pending_result(), or settled already");
        return NULL;
    }
    gfx_asyncresult_finish(args[0], Py_NewRef(args[2]), ok);
    Py_RETURN_NONE;
}

/* ---- Python methods ------------------------------------------------------------------ */

static const char *const timeout_names[] = {"timeout"};

PyDoc_STRVAR(AR_get_doc,
"get($self, /, timeout=None)\n--\n\n"
"Return the result, or raise the exception the call raised.\n\n"
"Raises TimeoutError if the result is not ready within *timeout* seconds.\n"
"Waits with the GIL released; Ctrl-C raises KeyboardInterrupt.\n\n"
">>> import gilfree\n"
">>> with gilfree.Pool(2, \"threads\") as pool:\n"
"...     pool.apply_async(divmod, (7, 2)).get(timeout=5)\n"
"(3, 1)");

static PyObject *
AR_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
       PyObject *kwnames)
{
    PyObject *t;
    double timeout;
    if (gfx_parse_args("AsyncResult.get", args, nargs, kwnames, timeout_names,
                       1, 0, &t) < 0 ||
        gfx_parse_timeout(t, &timeout) < 0) {
        return NULL;
    }
    return gfx_asyncresult_get(op, timeout);
}

PyDoc_STRVAR(AR_wait_doc,
"wait($self, /, timeout=None)\n--\n\n"
"Wait until the result is ready or *timeout* seconds pass.  Returns None.\n\n"
">>> import gilfree\n"
">>> with gilfree.Pool(2, \"threads\") as pool:\n"
"...     result = pool.apply_async(pow, (2, 10))\n"
"...     result.wait(timeout=5)\n"
"...     result.ready()\n"
"True");

static PyObject *
AR_wait(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
        PyObject *kwnames)
{
    PyObject *t;
    double timeout;
    if (gfx_parse_args("AsyncResult.wait", args, nargs, kwnames,
                       timeout_names, 1, 0, &t) < 0 ||
        gfx_parse_timeout(t, &timeout) < 0) {
        return NULL;
    }
    if (ar_wait(AR_CAST(op), timeout) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(AR_ready_doc,
"ready($self, /)\n--\n\nReturn whether the call has finished.\n\n"
">>> import time, gilfree\n"
">>> with gilfree.Pool(1, \"threads\") as pool:\n"
"...     slow = pool.apply_async(time.sleep, (0.2,))\n"
"...     slow.ready()\n"
"...     slow.get()\n"
"...     slow.ready()\n"
"False\n"
"True");

static PyObject *
AR_ready(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(ar_ready(op));
}

PyDoc_STRVAR(AR_successful_doc,
"successful($self, /)\n--\n\n"
"Return whether the call finished without raising.\n\n"
"Raises ValueError if it has not finished yet.\n\n"
">>> import gilfree\n"
">>> with gilfree.Pool(2, \"threads\") as pool:\n"
"...     good = pool.apply_async(abs, (-1,))\n"
"...     bad = pool.apply_async(int, (\"x\",))\n"
"...     good.wait(5)\n"
"...     bad.wait(5)\n"
"...     good.successful(), bad.successful()\n"
"(True, False)");

static PyObject *
AR_successful(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    if (!ar_ready(op)) {
        PyErr_SetString(PyExc_ValueError,
                        "AsyncResult.successful(): the result is not ready");
        return NULL;
    }
    return PyBool_FromLong(atomic_load(&AR_CAST(op)->state) == AR_DONE_OK);
}

static PyObject *
AR_repr(PyObject *op)
{
    static const char *const names[] = {"queued", "running", "done",
                                        "failed"};
    int s = atomic_load(&AR_CAST(op)->state);
    return PyUnicode_FromFormat("<gilfree.AsyncResult %s at %p>", names[s],
                                op);
}

static int
AR_traverse(PyObject *op, visitproc visit, void *arg)
{
    AsyncResultObject *self = AR_CAST(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->fn);
    Py_VISIT(self->args);
    Py_VISIT(self->kwds);
    Py_VISIT(self->callback);
    Py_VISIT(self->error_callback);
    Py_VISIT(self->value);
    return 0;
}

static int
AR_clear(PyObject *op)
{
    AsyncResultObject *self = AR_CAST(op);
    Py_CLEAR(self->fn);
    Py_CLEAR(self->args);
    Py_CLEAR(self->kwds);
    Py_CLEAR(self->callback);
    Py_CLEAR(self->error_callback);
    Py_CLEAR(self->value);
    return 0;
}

static void
AR_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (AR_CAST(op)->weakreflist != NULL) {
        PyObject_ClearWeakRefs(op);
    }
    AR_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef AR_methods[] = {
    {"get", (PyCFunction)(void (*)(void))AR_get,
     METH_FASTCALL | METH_KEYWORDS, AR_get_doc},
    {"wait", (PyCFunction)(void (*)(void))AR_wait,
     METH_FASTCALL | METH_KEYWORDS, AR_wait_doc},
    {"ready", AR_ready, METH_NOARGS, AR_ready_doc},
    {"successful", AR_successful, METH_NOARGS, AR_successful_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef AR_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET,
     offsetof(AsyncResultObject, weakreflist), Py_READONLY},
    {NULL},
};

PyDoc_STRVAR(AR_doc,
"The pending result of Pool.apply_async(), like multiprocessing's.\n\n"
"    >>> with gilfree.Pool(2) as pool:\n"
"    ...     r = pool.apply_async(sum, ([1, 2, 3],))\n"
"    ...     r.get(timeout=10)\n"
"    6");

static PyType_Slot AR_slots[] = {
    {Py_tp_doc, (void *)AR_doc},
    {Py_tp_dealloc, AR_dealloc},
    {Py_tp_traverse, AR_traverse},
    {Py_tp_clear, AR_clear},
    {Py_tp_repr, AR_repr},
    {Py_tp_methods, AR_methods},
    {Py_tp_members, AR_members},
    {0, NULL},
};

PyType_Spec gfx_asyncresult_spec = {
    .name = "gilfree.AsyncResult",
    .basicsize = sizeof(AsyncResultObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = AR_slots,
};
