/* gilfree._core: module state, initialisation, error conversion and the
 * small argument helpers every method shares.
 *
 * Multi-phase init (PEP 489): all state lives in gfx_state, reached from a
 * type with PyType_GetModuleState(); there are no static PyObject globals, so
 * the module can be loaded in several interpreters. */
#include "gfext.h"

#include <limits.h>
#include <string.h>

static PyObject *import_attr(const char *module, const char *name);

gfx_state *
gfx_state_from_type(PyTypeObject *tp)
{
#if PY_VERSION_HEX >= 0x030B0000
    /* Finds our module through the MRO, so Python subclasses (gilfree.Pool)
     * work, without raising on the way. */
    PyObject *module = PyType_GetModuleByDef(tp, &gfx_module_def);
    return module ? (gfx_state *)PyModule_GetState(module) : NULL;
#else
    /* 3.10: walk the MRO to the first type created from our specs. */
    PyObject *mro = tp->tp_mro;
    Py_ssize_t n = mro ? PyTuple_GET_SIZE(mro) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (base->tp_flags & Py_TPFLAGS_HEAPTYPE) {
            PyObject *module = PyType_GetModule(base);
            if (module != NULL && PyModule_GetDef(module) == &gfx_module_def) {
                return (gfx_state *)PyModule_GetState(module);
            }
            PyErr_Clear();
        }
    }
    return NULL;
#endif
}

/* ---- errors --------------------------------------------------------------- */

PyObject *
gfx_raise(int err, const char *what)
{
    const char *msg = gf_strerror(err);
    switch (err) {
    case GF_ENOMEM:
        return PyErr_NoMemory();
    case GF_ETIMEDOUT:
        PyErr_Format(PyExc_TimeoutError, "%s: %s", what, msg);
        break;
    case GF_EINVAL:
        PyErr_Format(PyExc_ValueError, "%s: %s", what, msg);
        break;
    case GF_ECLOSED:
        PyErr_Format(PyExc_ValueError, "%s: Pool is closed", what);
        break;
    case GF_EFORKED:
        PyErr_Format(PyExc_RuntimeError,
                     "%s: this Pool was created in the parent process before "
                     "fork(); its threads do not exist here. Create a new "
                     "Pool in the child.", what);
        break;
    case GF_EPIPE:
        PyErr_Format(PyExc_BrokenPipeError, "%s: %s", what, msg);
        break;
    case GF_EPROTO:
        PyErr_Format(PyExc_RuntimeError,
                     "%s: malformed message on a channel (%s)", what, msg);
        break;
    case GF_EMSGSIZE:
        PyErr_Format(PyExc_ValueError, "%s: %s", what, msg);
        break;
    case GF_ESRCH:
        PyErr_Format(PyExc_ProcessLookupError, "%s: %s", what, msg);
        break;
    case GF_EINTR:
        /* Only reached if a signal handler did not raise: treat as an OS
         * error so nothing is silently lost. */
        errno = EINTR;
        PyErr_SetFromErrno(PyExc_OSError);
        break;
    default:
        if (err < 0 && err > -4000) {
            /* A negated errno from a system call. */
            errno = -err;
            PyErr_SetFromErrno(PyExc_OSError);
        }
        else {
            PyErr_Format(PyExc_RuntimeError, "%s: %s (%s)", what, msg,
                         gf_err_name(err));
        }
        break;
    }
    return NULL;
}

PyObject *
gfx_cloudpickle_dumps(gfx_state *st)
{
    if (st->cloudpickle_dumps == NULL) {
        PyObject *f = import_attr("cloudpickle", "dumps");
        if (f == NULL) {
            if (PyErr_ExceptionMatches(PyExc_ImportError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_ImportError,
                                "gilfree needs cloudpickle to send this object "
                                "to a worker process: pip install cloudpickle");
            }
            return NULL;
        }
        /* With the GIL (or, free-threaded, racing threads store equal
         * values; the loser's reference is dropped). */
        if (st->cloudpickle_dumps == NULL) {
            st->cloudpickle_dumps = f;
        }
        else {
            Py_DECREF(f);
        }
    }
    return st->cloudpickle_dumps;
}

/* ---- argument helpers ------------------------------------------------------ */

int
gfx_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames, const char *const *names, int nnames,
               int nrequired, PyObject **out)
{
    for (int i = 0; i < nnames; i++) {
        out[i] = NULL;
    }
    if (nargs > nnames) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes at most %d arguments (%zd given)", fname,
                     nnames, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        out[i] = args[i];
    }
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nkw; k++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            int found = -1;
            for (int i = 0; i < nnames; i++) {
                if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) {
                    found = i;
                    break;
                }
            }
            if (found < 0) {
                PyErr_Format(PyExc_TypeError,
                             "%s() got an unexpected keyword argument '%U'",
                             fname, key);
                return -1;
            }
            if (out[found] != NULL) {
                PyErr_Format(PyExc_TypeError,
                             "%s() got multiple values for argument '%s'",
                             fname, names[found]);
                return -1;
            }
            out[found] = args[nargs + k];
        }
    }
    for (int i = 0; i < nrequired; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() missing required argument '%s'", fname,
                         names[i]);
            return -1;
        }
    }
    return 0;
}

int
gfx_parse_timeout(PyObject *obj, double *out)
{
    if (obj == NULL || obj == Py_None) {
        *out = -1.0;
        return 0;
    }
    double t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "timeout must be a number or None, not %.100s",
                         Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    if (t != t) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return -1;
    }
    *out = t < 0 ? 0.0 : t;
    return 0;
}

/* ---- module functions -------------------------------------------------------- */

PyDoc_STRVAR(usable_cpus_doc,
"usable_cpus($module, /)\n--\n\n"
"Return the number of CPUs this process may use.\n\n"
"Counts the CPUs in the scheduler affinity mask and lowers that to a cgroup\n"
"CPU quota (containers), rounded up; never less than 1.  This is what\n"
"``Pool(workers=None)`` uses.\n\n"
">>> import gilfree\n"
">>> gilfree.usable_cpus() >= 1\n"
"True");

static PyObject *
usable_cpus(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(gf_usable_cpus());
}

PyDoc_STRVAR(strerror_doc,
"strerror($module, code, /)\n--\n\n"
"Return the message of a core GF_E* error code (for diagnostics).");

static PyObject *
core_strerror(PyObject *module, PyObject *arg)
{
    long code = PyLong_AsLong(arg);
    if (code == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (code < INT_MIN || code > INT_MAX) {
        code = 0;  /* not one of ours: "unknown error" */
    }
    return PyUnicode_FromFormat("%s: %s", gf_err_name((int)code),
                                gf_strerror((int)code));
}

PyDoc_STRVAR(worker_main_doc,
"_worker_main(memfd, poolfd, sockfd, pool_pidfd, pool_pid, slot, /)\n--\n\n"
"Run the process backend's worker loop on the given channel until the\n"
"pool stops it (internal: gilfree._process starts it in a worker).");

/* Pool argument checks for pools that have no C core under them (the
 * Dask backend), so that every backend refuses the same values with the
 * same words. */
static PyObject *
check_workers(PyObject *module, PyObject *workers)
{
    long n;
    if (workers != Py_None && gfx_parse_workers(workers, &n) < 0) {
        return NULL;
    }
    return Py_NewRef(workers);
}

static PyObject *
check_chunksize(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_check_chunksize(chunksize, method)");
        return NULL;
    }
    const char *method = PyUnicode_AsUTF8(args[1]);
    int64_t chunk;
    if (method == NULL || gfx_parse_chunksize(args[0], method, &chunk) < 0) {
        return NULL;
    }
    return Py_NewRef(args[0]);
}

static PyMethodDef module_methods[] = {
    {"_worker_main", gfx_worker_main, METH_VARARGS, worker_main_doc},
    {"_probe_call", (PyCFunction)(void (*)(void))gfx_probe_call,
     METH_FASTCALL, gfx_probe_call_doc},
    {"usable_cpus", usable_cpus, METH_NOARGS, usable_cpus_doc},
    {"strerror", core_strerror, METH_O, strerror_doc},
    {"_check_workers", check_workers, METH_O,
     "_check_workers(workers, /)\n--\n\n"
     "Return workers if Pool() accepts it (None or an int in 1..4096), else "
     "raise its TypeError/ValueError (internal: the Dask backend)."},
    {"_check_chunksize", (PyCFunction)(void (*)(void))check_chunksize,
     METH_FASTCALL, "_check_chunksize(chunksize, method, /)\n--\n\n"
     "Return chunksize if Pool.<method>() accepts it (None or an int >= 1), "
     "else raise its TypeError/ValueError (internal: the Dask backend)."},
    {"_pending_result", (PyCFunction)(void (*)(void))gfx_pending_result,
     METH_FASTCALL, "_pending_result(fn, callback, error_callback, /)\n--\n\n"
     "An AsyncResult that Python code settles once (internal: the Dask "
     "backend)."},
    {"_settle_result", (PyCFunction)(void (*)(void))gfx_settle_result,
     METH_FASTCALL, "_settle_result(async_result, ok, value, /)\n--\n\n"
     "Settle a _pending_result(): its value, or (ok false) its exception; "
     "runs its callback."},
    {NULL, NULL, 0, NULL},
};

/* ---- init ---------------------------------------------------------------------- */

PyDoc_STRVAR(RemoteTraceback_doc,
"The formatted traceback of an exception raised on a worker.\n\n"
"gilfree re-raises a worker's exception in the caller with this as its\n"
"``__cause__``, so the worker-side frames and the failing input's index\n"
"are shown.\n\n"
">>> import gilfree\n"
">>> with gilfree.Pool(2, \"processes\") as pool:\n"
"...     try:\n"
"...         pool.apply(int, (\"x\",))\n"
"...     except ValueError as exc:\n"
"...         print(type(exc.__cause__).__name__)\n"
"RemoteTraceback");

PyDoc_STRVAR(PoolTerminated_doc,
"Raised inside a call that is still running when Pool.terminate() is\n"
"called, to stop it.  A BaseException, so ``except Exception`` does not\n"
"swallow it.  Callers never see it: the call's result becomes a\n"
"concurrent.futures.CancelledError chained to it.");

PyDoc_STRVAR(WorkerDiedError_doc,
"A worker process died (killed by a signal, crashed, or exited) while\n"
"running a task.  Only the tasks it held fail; the worker is replaced.\n\n"
"Attributes: pid, exitcode (or None), signal and signal_name (or None),\n"
"index (the input index it ran, or None for apply/submit).\n\n"
">>> import os, gilfree\n"
">>> with gilfree.Pool(1, \"processes\") as pool:\n"
"...     try:\n"
"...         pool.apply(os._exit, (3,))\n"
"...     except gilfree.WorkerDiedError as exc:\n"
"...         print(exc.exitcode, exc.signal_name, exc.index)\n"
"...     pool.apply(abs, (-2,))     # a new worker took its place\n"
"3 None None\n"
"2");

PyDoc_STRVAR(TaskTimeoutError_doc,
"A task ran longer than the pool's task_timeout: its worker process was\n"
"killed (which stops C code and sleeps too) and replaced.  Same\n"
"attributes as WorkerDiedError, plus timeout (seconds).\n\n"
">>> import time, gilfree\n"
">>> with gilfree.Pool(1, \"processes\", task_timeout=0.5) as pool:\n"
"...     try:\n"
"...         pool.apply(time.sleep, (30,))\n"
"...     except gilfree.TaskTimeoutError as exc:\n"
"...         print(exc.timeout, exc.signal_name)\n"
"0.5 SIGKILL");

PyDoc_STRVAR(InitializerError_doc,
"A worker's initializer raised, timed out (init_timeout) or killed its\n"
"worker.  The pool stops accepting work: calls waiting on that worker and\n"
"later calls raise it.  ``__cause__`` is the initializer's own exception\n"
"(with the worker's traceback), when there is one.  Attribute: worker\n"
"(the worker id).\n\n"
">>> import gilfree\n"
">>> pool = gilfree.Pool(1, \"threads\", initializer=int, initargs=(\"x\",))\n"
">>> try:\n"
"...     pool.apply(abs, (-1,))\n"
"... except gilfree.InitializerError as exc:\n"
"...     print(exc.worker, type(exc.__cause__).__name__)\n"
"0 ValueError\n"
">>> pool.terminate()\n"
">>> pool.join()");

PyDoc_STRVAR(WorkerExitError_doc,
"A worker's exit function (worker_exit=) raised, timed out (exit_timeout)\n"
"or killed its worker.  Raised by join() once every worker has ended;\n"
"the exit results that did come back are in exit_results().\n"
"``__cause__`` is the exit function's own exception, when there is one.\n"
"Attribute: worker (the worker id).\n\n"
">>> import gilfree\n"
">>> pool = gilfree.Pool(1, \"threads\", worker_exit=next)   # next() raises\n"
">>> pool.close()\n"
">>> try:\n"
"...     pool.join()\n"
"... except gilfree.WorkerExitError as exc:\n"
"...     print(exc.worker, type(exc.__cause__).__name__)\n"
"0 TypeError");

static PyObject *
import_attr(const char *module, const char *name)
{
    PyObject *mod = PyImport_ImportModule(module);
    if (mod == NULL) {
        return NULL;
    }
    PyObject *attr = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return attr;
}

static int
add_type(PyObject *module, PyType_Spec *spec, PyTypeObject **slot)
{
    PyObject *tp = PyType_FromModuleAndSpec(module, spec, NULL);
    if (tp == NULL) {
        return -1;
    }
    *slot = (PyTypeObject *)tp;
    return PyModule_AddType(module, (PyTypeObject *)tp);
}


/* Process-wide, not per module: the core allocator is process-wide too.
 * Only read and written by module exec, which runs with the GIL (or, on
 * free-threaded builds, under the import lock). */
static int allocator_installed;

sigset_t gfx_user_sigmask;
static int user_sigmask_captured;

static int
core_exec(PyObject *module)
{
    gfx_state *st = PyModule_GetState(module);

    /* Route the core's allocations through PyMem_Raw*, usable without an
     * attached thread state, so tracemalloc sees them.  Once per process:
     * the allocator must not change while core objects exist. */
    if (!user_sigmask_captured) {
        user_sigmask_captured = 1;
        pthread_sigmask(SIG_SETMASK, NULL, &gfx_user_sigmask);
    }
    if (!allocator_installed) {
        allocator_installed = 1;
        gf_replace_allocator(PyMem_RawMalloc, PyMem_RawRealloc,
                             PyMem_RawCalloc, PyMem_RawFree);
    }

    gfx_pool_module_init();
    if (add_type(module, &gfx_pool_spec, &st->Pool_Type) < 0 ||
        add_type(module, &gfx_asyncresult_spec, &st->AsyncResult_Type) < 0 ||
        add_type(module, &gfx_mapjob_spec, &st->MapJob_Type) < 0 ||
        add_type(module, &gfx_mapiter_spec, &st->MapIter_Type) < 0) {
        return -1;
    }
    st->RemoteTraceback = PyErr_NewExceptionWithDoc(
        "gilfree.RemoteTraceback", RemoteTraceback_doc, NULL, NULL);
    if (st->RemoteTraceback == NULL ||
        PyModule_AddObjectRef(module, "RemoteTraceback",
                              st->RemoteTraceback) < 0) {
        return -1;
    }
    st->PoolTerminated = PyErr_NewExceptionWithDoc(
        "gilfree.PoolTerminated", PoolTerminated_doc, PyExc_BaseException,
        NULL);
    if (st->PoolTerminated == NULL ||
        PyModule_AddObjectRef(module, "PoolTerminated",
                              st->PoolTerminated) < 0) {
        return -1;
    }
    /* Process backend. */
    if (add_type(module, &gfx_shmbuffer_spec, &st->ShmBuffer_Type) < 0 ||
        add_type(module, &gfx_procmap_spec, &st->ProcMap_Type) < 0) {
        return -1;
    }
    st->WorkerDiedError = PyErr_NewExceptionWithDoc(
        "gilfree.WorkerDiedError", WorkerDiedError_doc, PyExc_RuntimeError,
        NULL);
    if (st->WorkerDiedError == NULL ||
        PyModule_AddObjectRef(module, "WorkerDiedError",
                              st->WorkerDiedError) < 0) {
        return -1;
    }
    st->TaskTimeoutError = PyErr_NewExceptionWithDoc(
        "gilfree.TaskTimeoutError", TaskTimeoutError_doc, st->WorkerDiedError,
        NULL);
    if (st->TaskTimeoutError == NULL ||
        PyModule_AddObjectRef(module, "TaskTimeoutError",
                              st->TaskTimeoutError) < 0) {
        return -1;
    }
    st->InitializerError = PyErr_NewExceptionWithDoc(
        "gilfree.InitializerError", InitializerError_doc, PyExc_RuntimeError,
        NULL);
    if (st->InitializerError == NULL ||
        PyModule_AddObjectRef(module, "InitializerError",
                              st->InitializerError) < 0) {
        return -1;
    }
    st->WorkerExitError = PyErr_NewExceptionWithDoc(
        "gilfree.WorkerExitError", WorkerExitError_doc, PyExc_RuntimeError,
        NULL);
    if (st->WorkerExitError == NULL ||
        PyModule_AddObjectRef(module, "WorkerExitError",
                              st->WorkerExitError) < 0) {
        return -1;
    }
    st->PicklingError = import_attr("pickle", "PicklingError");
    st->pickle_dumps = import_attr("_pickle", "dumps");
    st->pickle_loads = import_attr("_pickle", "loads");
    st->int_protocol = PyLong_FromLong(5);
    st->oob_callback = PyCFunction_NewEx(&gfx_oob_callback_def, module, NULL);
    st->kw_buffer_callback = Py_BuildValue("(s)", "buffer_callback");
    st->kw_buffers = Py_BuildValue("(s)", "buffers");
    if (st->PicklingError == NULL || st->pickle_dumps == NULL ||
        st->pickle_loads == NULL || st->int_protocol == NULL ||
        st->oob_callback == NULL || st->kw_buffer_callback == NULL ||
        st->kw_buffers == NULL) {
        return -1;
    }
    /* Imported now, not on the first error: a lazy set-up would race
     * between threads on free-threaded builds. */
    st->format_exception = import_attr("traceback", "format_exception");
    if (st->format_exception == NULL) {
        return -1;
    }
    st->Future_Type = import_attr("concurrent.futures", "Future");
    st->CancelledError = import_attr("concurrent.futures", "CancelledError");
    st->InvalidStateError =
        import_attr("concurrent.futures", "InvalidStateError");
    if (st->Future_Type == NULL || st->CancelledError == NULL ||
        st->InvalidStateError == NULL) {
        return -1;
    }
    GFX_INTERN(st, str_set_running_or_notify_cancel, "set_running_or_notify_cancel");
    GFX_INTERN(st, str_set_result, "set_result");
    GFX_INTERN(st, str_set_exception, "set_exception");
    GFX_INTERN(st, str_cancel, "cancel");
    GFX_INTERN(st, str_add_note, "add_note");
    if (gfx_future_init(module, st) < 0) {
        return -1;
    }

    if (PyModule_AddIntConstant(module, "GF_VERSION_MAJOR",
                                GF_VERSION_MAJOR) < 0 ||
        PyModule_AddIntConstant(module, "GF_VERSION_MINOR",
                                GF_VERSION_MINOR) < 0) {
        return -1;
    }
    return 0;
}

static int
core_traverse(PyObject *module, visitproc visit, void *arg)
{
    gfx_state *st = PyModule_GetState(module);
    Py_VISIT(st->Pool_Type);
    Py_VISIT(st->AsyncResult_Type);
    Py_VISIT(st->MapJob_Type);
    Py_VISIT(st->MapIter_Type);
    Py_VISIT(st->RemoteTraceback);
    Py_VISIT(st->PoolTerminated);
    Py_VISIT(st->Future_Type);
    Py_VISIT(st->CancelledError);
    Py_VISIT(st->InvalidStateError);
    Py_VISIT(st->format_exception);
    Py_VISIT(st->ShmBuffer_Type);
    Py_VISIT(st->ProcMap_Type);
    Py_VISIT(st->WorkerDiedError);
    Py_VISIT(st->TaskTimeoutError);
    Py_VISIT(st->InitializerError);
    Py_VISIT(st->WorkerExitError);
    Py_VISIT(st->PicklingError);
    Py_VISIT(st->pickle_dumps);
    Py_VISIT(st->pickle_loads);
    Py_VISIT(st->cloudpickle_dumps);
    Py_VISIT(st->int_protocol);
    Py_VISIT(st->oob_callback);
    Py_VISIT(st->kw_buffer_callback);
    Py_VISIT(st->kw_buffers);
    Py_VISIT(st->LargeBuffer);
    return gfx_future_traverse(st, visit, arg);
}

static int
core_clear(PyObject *module)
{
    gfx_state *st = PyModule_GetState(module);
    Py_CLEAR(st->Pool_Type);
    Py_CLEAR(st->AsyncResult_Type);
    Py_CLEAR(st->MapJob_Type);
    Py_CLEAR(st->MapIter_Type);
    Py_CLEAR(st->RemoteTraceback);
    Py_CLEAR(st->PoolTerminated);
    Py_CLEAR(st->Future_Type);
    Py_CLEAR(st->CancelledError);
    Py_CLEAR(st->InvalidStateError);
    Py_CLEAR(st->format_exception);
    Py_CLEAR(st->str_set_running_or_notify_cancel);
    Py_CLEAR(st->str_set_result);
    Py_CLEAR(st->str_set_exception);
    Py_CLEAR(st->str_cancel);
    Py_CLEAR(st->str_add_note);
    Py_CLEAR(st->ShmBuffer_Type);
    Py_CLEAR(st->ProcMap_Type);
    Py_CLEAR(st->WorkerDiedError);
    Py_CLEAR(st->TaskTimeoutError);
    Py_CLEAR(st->InitializerError);
    Py_CLEAR(st->WorkerExitError);
    Py_CLEAR(st->PicklingError);
    Py_CLEAR(st->pickle_dumps);
    Py_CLEAR(st->pickle_loads);
    Py_CLEAR(st->cloudpickle_dumps);
    Py_CLEAR(st->int_protocol);
    Py_CLEAR(st->oob_callback);
    Py_CLEAR(st->kw_buffer_callback);
    Py_CLEAR(st->kw_buffers);
    Py_CLEAR(st->LargeBuffer);
    gfx_future_clear(st);
    return 0;
}

static void
core_free(void *module)
{
    core_clear((PyObject *)module);
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
#ifdef Py_mod_multiple_interpreters
    /* Several interpreters may load us, sharing one GIL.  A per-interpreter
     * GIL is not claimed: it has not been tested yet. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(module_doc,
"gilfree._core: the C extension behind gilfree.\n\n"
"Native worker threads, chunked dispatch, result slots and GIL-free waiting.\n"
"Use the public API in the gilfree package.");

struct PyModuleDef gfx_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gilfree._core",
    .m_doc = module_doc,
    .m_size = sizeof(gfx_state),
    .m_methods = module_methods,
    .m_slots = core_slots,
    .m_traverse = core_traverse,
    .m_clear = core_clear,
    .m_free = core_free,
};

PyMODINIT_FUNC PyInit__core(void);

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&gfx_module_def);
}
