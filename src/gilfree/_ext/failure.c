/* Worker exceptions, re-raised in the caller.
 *
 * A worker captures the exception object itself (with its __traceback__) and
 * stores it.  The caller re-raises that same object, so `except ValueError`
 * works and identity is kept.  On the way out we attach what a user needs to
 * find the failing input: a RemoteTraceback as __cause__ with the worker-side
 * traceback text and "input index N", and (3.11+) a PEP 678 note.  Formatting
 * happens here, in the caller, only on the error path. */
#include "gfext.h"

PyObject *
gfx_fetch_task_exception(gfx_state *st)
{
    PyObject *exc = gfx_fetch_exception();
    if (exc == NULL || !PyObject_TypeCheck(exc,
                                           (PyTypeObject *)st->PoolTerminated)) {
        return exc;
    }
    PyObject *cancelled = PyObject_CallFunction(
        st->CancelledError, "s",
        "the pool was terminated while this call was running");
    if (cancelled == NULL) {
        PyErr_Clear();
        return exc;
    }
    PyException_SetCause(cancelled, exc);  /* steals exc */
    return cancelled;
}

PyObject *
gfx_callable_name(PyObject *fn)
{
    PyObject *name = PyObject_GetAttrString(fn, "__qualname__");
    if (name == NULL || !PyUnicode_Check(name)) {
        PyErr_Clear();
        Py_XDECREF(name);
        name = PyObject_Repr(fn);
        if (name == NULL) {
            PyErr_Clear();
            name = PyUnicode_FromString("<callable>");
        }
    }
    return name;
}

PyObject *
gfx_format_traceback(gfx_state *st, PyObject *exc)
{
    PyObject *tb = PyException_GetTraceback(exc);
    PyObject *lines = PyObject_CallFunctionObjArgs(
        st->format_exception, (PyObject *)Py_TYPE(exc), exc,
        tb ? tb : Py_None, NULL);
    Py_XDECREF(tb);
    if (lines == NULL) {
        return NULL;
    }
    PyObject *empty = PyUnicode_FromString("");
    PyObject *text = empty ? PyUnicode_Join(empty, lines) : NULL;
    Py_XDECREF(empty);
    Py_DECREF(lines);
    return text;
}

static int
decorate_with(gfx_state *st, PyObject *exc, PyObject *fn, Py_ssize_t index,
              PyObject *tb_text, long pid)
{
    if (st->InitializerError != NULL &&
        PyObject_TypeCheck(exc, (PyTypeObject *)st->InitializerError)) {
        /* Not the call's own error: a call that was waiting when a worker's
         * initializer failed gets the pool's InitializerError, whose cause
         * (the initializer's exception and traceback) must stay. */
        return 0;
    }
    PyObject *name = fn ? gfx_callable_name(fn) : NULL;
    if (name == NULL) {
        PyErr_Clear();
        name = PyUnicode_FromString("<callable>");
        if (name == NULL) {
            return -1;
        }
    }
    PyObject *text = tb_text ? Py_NewRef(tb_text)
                             : gfx_format_traceback(st, exc);
    if (text == NULL) {
        /* Never lose the user's exception over a formatting problem. */
        PyErr_Clear();
        text = PyUnicode_FromString("<worker traceback unavailable>\n");
        if (text == NULL) {
            Py_XDECREF(name);
            return -1;
        }
    }
    PyObject *where;
    char worker[64] = "worker";
    if (pid > 0) {
        PyOS_snprintf(worker, sizeof worker, "worker process %ld", pid);
    }
    if (index >= 0) {
        where = PyUnicode_FromFormat(
            "\n\"\"\"\n%U\"\"\"\n(raised on a gilfree %s by %U on input "
            "index %zd)", text, worker, name, index);
    }
    else {
        where = PyUnicode_FromFormat(
            "\n\"\"\"\n%U\"\"\"\n(raised on a gilfree %s by %U)", text,
            worker, name);
    }
    Py_DECREF(text);
    if (where == NULL) {
        Py_DECREF(name);
        return -1;
    }
    PyObject *cause = PyObject_CallOneArg(st->RemoteTraceback, where);
    Py_DECREF(where);
    if (cause == NULL) {
        Py_XDECREF(name);
        return -1;
    }
    PyException_SetCause(exc, cause);  /* steals `cause` */

#if PY_VERSION_HEX >= 0x030B0000
    if (name != NULL) {
        PyObject *note = index >= 0
            ? PyUnicode_FromFormat("gilfree: %U failed on input index %zd",
                                   name, index)
            : PyUnicode_FromFormat("gilfree: %U failed on a worker %s",
                                   name, pid > 0 ? "process" : "thread");
        if (note != NULL) {
            PyObject *r = PyObject_CallMethodOneArg(exc, st->str_add_note,
                                                    note);
            Py_DECREF(note);
            Py_XDECREF(r);
        }
        /* add_note can fail on exotic exceptions; the cause still holds
         * the index, so do not replace the user's error with ours. */
        PyErr_Clear();
    }
#endif
    Py_XDECREF(name);
    return 0;
}

static int
decorate(gfx_state *st, PyObject *exc, PyObject *fn, Py_ssize_t index)
{
    return decorate_with(st, exc, fn, index, NULL, 0);
}

void
gfx_decorate_remote(gfx_state *st, PyObject *exc, PyObject *fn,
                    Py_ssize_t index, PyObject *tb_text, long pid)
{
    if (decorate_with(st, exc, fn, index, tb_text, pid) < 0) {
        PyErr_Clear();
    }
}

void
gfx_raise_failure(gfx_state *st, PyObject *exc, PyObject *fn,
                  Py_ssize_t index, int do_decorate)
{
    if (do_decorate && decorate(st, exc, fn, index) < 0) {
        PyErr_Clear();
    }
    gfx_restore_exception(exc);
}

void
gfx_chain_cause(PyObject *why)
{
    PyObject *exc = gfx_fetch_exception();
    if (exc == NULL) {
        Py_XDECREF(why);
        return;
    }
    if (why != NULL) {
        PyException_SetCause(exc, why);  /* steals */
    }
    gfx_restore_exception(exc);
    Py_DECREF(exc);
}
