/* The process backend, pool side: turning settled tasks into results and
 * exceptions (with the GIL).  A task that completed carries its worker's
 * RESULT frame; one that did not carries why (died, timed out, cancelled,
 * could not be sent), which becomes WorkerDiedError, TaskTimeoutError,
 * CancelledError or the reason recorded by the engine.  Split from
 * procpool.c, which owns the tasks until they are settled here. */
#include "procpool.h"

#include <string.h>

/* ---- errors for failed tasks (GIL) --------------------------------------------- */

static PyObject *
set_attrs(PyObject *exc, gfx_ptask *t, int64_t index, double timeout)
{
    const gf_exit_t *x = &t->exit;
    PyObject *v;
#define SETA(name, expr)                                           \
    v = (expr);                                                    \
    if (v == NULL || PyObject_SetAttrString(exc, name, v) < 0) {   \
        Py_XDECREF(v);                                             \
        Py_DECREF(exc);                                            \
        return NULL;                                               \
    }                                                              \
    Py_DECREF(v);
    SETA("pid", PyLong_FromLong((long)t->pid));
    SETA("exitcode", x->kind == GF_EXIT_CODE ? PyLong_FromLong(x->code)
                                             : Py_NewRef(Py_None));
    SETA("signal", x->kind == GF_EXIT_SIGNAL ? PyLong_FromLong(x->code)
                                             : Py_NewRef(Py_None));
    const char *sn = x->kind == GF_EXIT_SIGNAL ? gf_signal_name(x->code)
                                               : NULL;
    SETA("signal_name", sn ? PyUnicode_FromString(sn) : Py_NewRef(Py_None));
    SETA("index", index >= 0 ? PyLong_FromLongLong(index)
                             : Py_NewRef(Py_None));
    SETA("timeout", timeout > 0 ? PyFloat_FromDouble(timeout)
                                : Py_NewRef(Py_None));
#undef SETA
    return exc;
}

/* The exception for a task whose worker died (or was killed for its
 * timeout) while running input `index` (-1: apply/submit). */
static PyObject *
died_error(gfx_engine *e, gfx_ptask *t, PyObject *fn, int64_t index)
{
    gfx_state *st = e->st;
    char how[96];
    gf_exit_describe(&t->exit, how, sizeof how);
    PyObject *name = fn ? gfx_callable_name(fn) : NULL;
    if (name == NULL) {
        PyErr_Clear();
        name = PyUnicode_FromString("the function");
        if (name == NULL) {
            return NULL;
        }
    }
    PyObject *msg, *cls;
    double timeout = (double)e->timeout_ns / 1e9;
    if (t->outcome == OUT_TIMEDOUT) {
        cls = st->TaskTimeoutError;
        char secs[32];
        PyOS_snprintf(secs, sizeof secs, "%g", timeout);
        msg = index >= 0
            ? PyUnicode_FromFormat(
                  "%U ran longer than task_timeout=%s s on input index %lld; "
                  "its worker process %ld was killed",
                  name, secs, (long long)index, (long)t->pid)
            : PyUnicode_FromFormat(
                  "%U ran longer than task_timeout=%s s; its worker process "
                  "%ld was killed", name, secs, (long)t->pid);
    }
    else {
        cls = st->WorkerDiedError;
        timeout = 0;
        msg = index >= 0
            ? PyUnicode_FromFormat(
                  "worker process %ld %s while running %U on input index "
                  "%lld", (long)t->pid, how, name, (long long)index)
            : PyUnicode_FromFormat("worker process %ld %s while running %U",
                                   (long)t->pid, how, name);
    }
    Py_DECREF(name);
    if (msg == NULL) {
        return NULL;
    }
    PyObject *exc = PyObject_CallOneArg(cls, msg);
    Py_DECREF(msg);
    if (exc == NULL) {
        return NULL;
    }
    return set_attrs(exc, t, index, timeout);
}

static PyObject *
cancelled_error(gfx_state *st, const char *why)
{
    return PyObject_CallFunction(st->CancelledError, "s", why);
}

/* Decode a settled task.  On success returns the results list (new ref)
 * and sets *errors to NULL or a list of (offset, exc, tb_text); for a
 * task that did not complete, returns NULL with *failure = the exception
 * for its item at *fail_index (no Python error set).  -1/NULL with an
 * exception set on a decoding error. */
PyObject *
gfx_pp_ptask_results(gfx_engine *e, gfx_ptask *t, PyObject *fn, PyObject **errors,
              PyObject **failure, int64_t *fail_index)
{
    *errors = NULL;
    *failure = NULL;
    *fail_index = -1;
    gfx_state *st = e->st;
    if (t->outcome == OUT_DIED || t->outcome == OUT_TIMEDOUT) {
        int64_t idx = t->died_index;
        if (idx < t->index0 || idx >= t->index0 + (int64_t)t->count) {
            idx = t->index0;
        }
        *fail_index = idx;
        *failure = died_error(e, t, fn, t->kind == PT_MAP ? idx : -1);
        return NULL;
    }
    if (t->outcome == OUT_CANCELLED) {
        *fail_index = t->index0;
        *failure = cancelled_error(st, "the pool was terminated before this "
                                       "task finished");
        return NULL;
    }
    if (t->outcome == OUT_BROKEN && e->lc != NULL &&
        atomic_load(&e->lc->broken)) {
        /* No worker left: their initializers failed. */
        *fail_index = t->index0;
        *failure = gfx_lc_error_copy(e->lc);
        if (*failure == NULL) {
            *failure = gfx_fetch_exception();
        }
        return NULL;
    }
    if (t->outcome == OUT_BROKEN) {
        *fail_index = t->index0;
        *failure = PyObject_CallFunction(
            PyExc_RuntimeError, "s",
            e->start_error[0] ? e->start_error
                              : "gilfree: no worker process could run this "
                                "task");
        return NULL;
    }
    gf_msg_t msg;
    if (gf_msg_parse(GF_MSG_RESULT, t->res, t->res_len, &msg) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "gilfree: malformed result");
        return NULL;
    }
    PyObject *obj = gfx_decode(st, &msg, t->res_fds, t->res_nfds);
    t->res_nfds = 0;  /* consumed */
    if (obj == NULL) {
        /* The worker's answer pickled there but does not unpickle here
         * (e.g. a class that only exists in the worker): say for which
         * input, keep the reason as the cause. */
        PyObject *why = gfx_fetch_exception();
        if (t->kind == PT_MAP && t->count > 1) {
            PyErr_Format(PyExc_RuntimeError,
                         "cannot rebuild the results of inputs %lld..%lld "
                         "received from worker process %ld: %S",
                         (long long)t->index0,
                         (long long)(t->index0 + t->count - 1), (long)t->pid,
                         why ? why : Py_None);
        }
        else if (t->kind == PT_MAP) {
            PyErr_Format(PyExc_RuntimeError,
                         "cannot rebuild the result for input index %lld "
                         "received from worker process %ld: %S",
                         (long long)t->index0, (long)t->pid,
                         why ? why : Py_None);
        }
        else {
            PyErr_Format(PyExc_RuntimeError,
                         "cannot rebuild the result received from worker "
                         "process %ld: %S", (long)t->pid, why ? why : Py_None);
        }
        gfx_chain_cause(why);
        return NULL;
    }
    unsigned status = msg.head.flags & ~GF_MSG_FLAG_EXT;
    if (status == GF_RESULT_OK) {
        if (!PyList_CheckExact(obj)) {
            Py_DECREF(obj);
            PyErr_SetString(PyExc_RuntimeError, "gilfree: malformed result");
            return NULL;
        }
        return obj;
    }
    if (!PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) != 2 ||
        !PyList_Check(PyTuple_GET_ITEM(obj, 0)) ||
        !PyList_Check(PyTuple_GET_ITEM(obj, 1))) {
        Py_DECREF(obj);
        PyErr_SetString(PyExc_RuntimeError, "gilfree: malformed error result");
        return NULL;
    }
    PyObject *res = Py_NewRef(PyTuple_GET_ITEM(obj, 0));
    *errors = Py_NewRef(PyTuple_GET_ITEM(obj, 1));
    Py_DECREF(obj);
    return res;
}

/* Turn one (offset, exc, tb_text) entry into the exception to raise,
 * decorated with the input index.  New reference, or NULL (error set). */
PyObject *
gfx_pp_entry_exception(gfx_engine *e, gfx_ptask *t, PyObject *entry, PyObject *fn,
                int64_t *index)
{
    PyObject *exc, *tb;
    Py_ssize_t off;
    if (!PyTuple_Check(entry) ||
        !PyArg_ParseTuple(entry, "nOO", &off, &exc, &tb) ||
        !PyExceptionInstance_Check(exc)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_RuntimeError, "gilfree: malformed error entry");
        return NULL;
    }
    *index = t->index0 + off;
    if (PyObject_TypeCheck(exc, (PyTypeObject *)e->st->InitializerError) &&
        PyObject_HasAttrString(exc, "_cause")) {
        /* The worker's initializer had failed, so this input never ran:
         * the error is the initializer's, with its own exception as the
         * cause (a pickled exception loses __cause__, so the worker sent
         * it along as _cause). */
        PyObject *cause = PyObject_GetAttrString(exc, "_cause");
        if (cause != NULL && PyExceptionInstance_Check(cause)) {
            gfx_decorate_remote(e->st, cause,
                                e->lc ? e->lc->initializer : NULL, -1,
                                PyUnicode_Check(tb) ? tb : NULL,
                                (long)t->pid);
            PyException_SetCause(exc, Py_NewRef(cause));
        }
        Py_XDECREF(cause);
        if (PyObject_DelAttrString(exc, "_cause") < 0) {
            PyErr_Clear();
        }
        PyErr_Clear();
        return Py_NewRef(exc);
    }
    gfx_decorate_remote(e->st, exc, fn, t->kind == PT_MAP ? *index : -1,
                        PyUnicode_Check(tb) ? tb : NULL, (long)t->pid);
    return Py_NewRef(exc);
}

/* Settle an apply/submit task (GIL; collector or terminate). */
void
gfx_pp_settle_one(gfx_engine *e, gfx_ptask *t)
{
    gfx_state *st = e->st;
    PyObject *fn = t->fe ? t->fe->fn : NULL;
    PyObject *errors, *failure, *value = NULL;
    int64_t fidx;
    int ok = 0;
    PyObject *res;
    GFX_TIMED(e, ins_decode_ns,
              res = gfx_pp_ptask_results(e, t, fn, &errors, &failure, &fidx));
    if (res != NULL) {
        if (errors != NULL && PyList_GET_SIZE(errors) > 0) {
            int64_t idx;
            value = gfx_pp_entry_exception(e, t, PyList_GET_ITEM(errors, 0), fn,
                                    &idx);
        }
        else if (PyList_GET_SIZE(res) == 1) {
            value = Py_NewRef(PyList_GET_ITEM(res, 0));
            ok = 1;
        }
        else {
            PyErr_SetString(PyExc_RuntimeError, "gilfree: malformed result");
        }
        Py_XDECREF(errors);
        Py_DECREF(res);
    }
    else if (failure != NULL) {
        value = failure;
    }
    if (value == NULL) {
        value = gfx_fetch_exception();
    }
    if (value == NULL) {
        value = PyObject_CallFunction(PyExc_RuntimeError, "s",
                                      "gilfree: the result was lost");
        if (value == NULL) {
            value = gfx_fetch_exception();
        }
    }
    if (t->kind == PT_APPLY) {
        gfx_asyncresult_finish(t->owner, value, ok);
    }
    else {
        /* terminate() before it was sent: cancelled, as the thread pool
         * and concurrent.futures leave a call that never started. */
        int cancelled = t->outcome == OUT_CANCELLED && t->pid == 0
                            ? gfx_future_cancel_if_pending(st, t->owner) : 0;
        if (cancelled != 0) {
            if (cancelled < 0) {
                PyErr_WriteUnraisable(t->owner);
            }
            Py_XDECREF(value);
            return;
        }
        /* RUNNING already if cancel() found it sent. */
        int run = gfx_future_ensure_running(st, t->owner);
        int rc = 0;
        if (run > 0) {
            rc = ok ? gfx_future_set_result(st, t->owner, value)
                    : gfx_future_set_exception(st, t->owner, value);
        }
        if (run < 0 || rc < 0) {
            PyErr_WriteUnraisable(t->owner);
        }
        Py_XDECREF(value);
    }
}
