/* Futures for submit(): real concurrent.futures.Future objects, cheaper.
 *
 * A stock Future builds a threading.Condition in __init__ (a Python-level
 * constructor, an RLock, a deque and five bound methods): most of the cost
 * of submit() in ThreadPoolExecutor.  Most futures are never waited on
 * before they finish, so the Condition is usually wasted.
 *
 * gilfree.Future subclasses concurrent.futures.Future and changes one thing:
 * `_condition` is created on first use (a C property).  Every method of the
 * base class still works unchanged, and so do concurrent.futures.wait,
 * as_completed and asyncio.wrap_future, since each of them goes through
 * `_condition` before it looks at or waits on the state.  That gives the
 * invariant the fast paths rely on:
 *
 *   while no Condition exists, nobody can be waiting, no waiter list or
 *   done-callback can have been added, and nobody can have cancelled.
 *
 * So a worker that finds no Condition may set the state and the result
 * directly; it does so inside the critical section of the future's
 * __dict__ (the GIL before 3.13), the same one that creates the Condition,
 * so it either acts before the Condition exists or sees it and takes the
 * stock path.  The dict, not the future: PyDict_SetItem locks the dict
 * itself, and re-entering the section we already hold cannot suspend it,
 * whereas a nested section on another object could let the creator in
 * between our check and our store.  result(),
 * exception() and done() read a FINISHED state without creating a Condition;
 * anything else goes to the base class.
 *
 * This leans on Future's private attributes, so module exec first checks
 * that a fresh stock Future has exactly the attributes and states we know;
 * if not, submit() hands out stock Futures and this file stays out of the
 * way. */
#include "gfext.h"

static PyObject *
get_dict(PyObject *self)
{
    return PyObject_GenericGetDict(self, NULL);
}

/* 1 if the future's Condition exists, 0 if not, -1 on error. */
static int
has_condition(gfx_state *st, PyObject *dict)
{
    return PyDict_Contains(dict, st->k_gf_condition);
}

static PyObject *
LF_get_condition(PyObject *self, void *closure)
{
    gfx_state *st = gfx_state_from_type(Py_TYPE(self));
    PyObject *dict = get_dict(self);
    if (dict == NULL) {
        return NULL;
    }
    PyObject *cond;
    int r = gfx_dict_get_ref(dict, st->k_gf_condition, &cond);
    if (r != 0) {
        Py_DECREF(dict);
        return r < 0 ? NULL : cond;
    }
    PyObject *fresh = PyObject_CallNoArgs(st->Condition);
    if (fresh == NULL) {
        Py_DECREF(dict);
        return NULL;
    }
    /* Two threads may race to create it; setdefault keeps exactly one. */
    Py_BEGIN_CRITICAL_SECTION(dict);
    cond = gfx_dict_setdefault_ref(dict, st->k_gf_condition, fresh);
    Py_END_CRITICAL_SECTION();
    Py_DECREF(fresh);
    Py_DECREF(dict);
    return cond;
}

static int
LF_set_condition(PyObject *self, PyObject *value, void *closure)
{
    gfx_state *st = gfx_state_from_type(Py_TYPE(self));
    PyObject *dict = get_dict(self);
    if (dict == NULL) {
        return -1;
    }
    int r;
    if (value == NULL) {
        r = PyDict_DelItem(dict, st->k_gf_condition);
    }
    else {
        r = PyDict_SetItem(dict, st->k_gf_condition, value);
    }
    Py_DECREF(dict);
    return r;
}

static int
LF_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "Future() takes no arguments");
        return -1;
    }
    gfx_state *st = gfx_state_from_type(Py_TYPE(self));
    PyObject *dict = get_dict(self);
    if (dict == NULL) {
        return -1;
    }
    PyObject *waiters = PyList_New(0);
    PyObject *callbacks = PyList_New(0);
    int rc = -1;
    if (waiters && callbacks &&
        PyDict_SetItem(dict, st->k_state, st->PENDING) == 0 &&
        PyDict_SetItem(dict, st->k_result, Py_None) == 0 &&
        PyDict_SetItem(dict, st->k_exception, Py_None) == 0 &&
        PyDict_SetItem(dict, st->k_waiters, waiters) == 0 &&
        PyDict_SetItem(dict, st->k_done_callbacks, callbacks) == 0) {
        rc = 0;
    }
    Py_XDECREF(waiters);
    Py_XDECREF(callbacks);
    Py_DECREF(dict);
    return rc;
}

/* Read `_state` (new reference) and whether a Condition exists, in one
 * critical section.  NULL on error. */
static PyObject *
read_state(gfx_state *st, PyObject *self, PyObject *dict, int *has_cond)
{
    PyObject *state = NULL;
    Py_BEGIN_CRITICAL_SECTION(dict);
    *has_cond = has_condition(st, dict);
    if (*has_cond >= 0 && gfx_dict_get_ref(dict, st->k_state, &state) == 0) {
        PyErr_SetString(PyExc_AttributeError, "_state");
    }
    Py_END_CRITICAL_SECTION();
    return state;
}

/* Which of PENDING / RUNNING the future's state is (compared by value:
 * identity is only an optimisation elsewhere).  0, or -1 on error. */
static int
state_is(gfx_state *st, PyObject *self, int *pending, int *running)
{
    PyObject *dict = get_dict(self);
    if (dict == NULL) {
        return -1;
    }
    int has_cond;
    PyObject *state = read_state(st, self, dict, &has_cond);
    Py_DECREF(dict);
    if (state == NULL) {
        return -1;
    }
    *pending = PyObject_RichCompareBool(state, st->PENDING, Py_EQ);
    *running = *pending == 0
                   ? PyObject_RichCompareBool(state, st->RUNNING, Py_EQ) : 0;
    Py_DECREF(state);
    return *pending < 0 || *running < 0 ? -1 : 0;
}

/* If the future is FINISHED, store its `key` entry (new ref) in *out and
 * return 1; 0 if not finished; -1 on error. */
static int
finished_entry(PyObject *self, PyObject *key, PyObject **out)
{
    gfx_state *st = gfx_state_from_type(Py_TYPE(self));
    PyObject *dict = get_dict(self);
    if (dict == NULL) {
        return -1;
    }
    int has_cond;
    PyObject *state = read_state(st, self, dict, &has_cond);
    int r = 0;
    if (state == NULL) {
        r = -1;
    }
    else if (state == st->FINISHED) {
        /* FINISHED is final: no lock needed to read the outcome. */
        r = gfx_dict_get_ref(dict, key, out);
        if (r == 0) {
            PyErr_SetObject(PyExc_AttributeError, key);
            r = -1;
        }
    }
    Py_XDECREF(state);
    Py_DECREF(dict);
    return r;
}

PyDoc_STRVAR(LF_result_doc,
"result($self, /, timeout=None)\n--\n\n"
"Return the call's result (concurrent.futures.Future.result).");

static PyObject *
LF_result(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    gfx_state *st = gfx_state_from_type(Py_TYPE(self));
    if (nargs == 0 && kwnames == NULL) {
        PyObject *exc = NULL;
        int r = finished_entry(self, st->k_exception, &exc);
        if (r < 0) {
            return NULL;
        }
        if (r == 1 && exc == Py_None) {
            Py_DECREF(exc);
            PyObject *res = NULL;
            if (finished_entry(self, st->k_result, &res) < 0) {
                return NULL;
            }
            return res;
        }
        Py_XDECREF(exc);
    }
    /* Not finished, failed, or called with a timeout: the stock method. */
    PyObject *full = PyTuple_New(nargs + 1);
    if (full == NULL) {
        return NULL;
    }
    PyTuple_SET_ITEM(full, 0, Py_NewRef(self));
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyTuple_SET_ITEM(full, i + 1, Py_NewRef(args[i]));
    }
    PyObject *kw = NULL;
    if (kwnames != NULL) {
        kw = PyDict_New();
        for (Py_ssize_t k = 0; kw && k < PyTuple_GET_SIZE(kwnames); k++) {
            if (PyDict_SetItem(kw, PyTuple_GET_ITEM(kwnames, k),
                               args[nargs + k]) < 0) {
                Py_CLEAR(kw);
            }
        }
        if (kw == NULL) {
            Py_DECREF(full);
            return NULL;
        }
    }
    PyObject *res = PyObject_Call(st->base_result, full, kw);
    Py_DECREF(full);
    Py_XDECREF(kw);
    return res;
}

PyDoc_STRVAR(LF_done_doc,
"done($self, /)\n--\n\n"
"Return True if the future was cancelled or finished executing.");

static PyObject *
LF_done(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    gfx_state *st = gfx_state_from_type(Py_TYPE(self));
    int pending, running;
    if (state_is(st, self, &pending, &running) < 0) {
        return NULL;
    }
    return PyBool_FromLong(!pending && !running);
}

/* ---- used by submit() on the workers (attached) ------------------------------ */

PyObject *
gfx_future_new(gfx_state *st)
{
    if (st->LazyFuture_Type != NULL) {
        return PyObject_CallNoArgs((PyObject *)st->LazyFuture_Type);
    }
    return PyObject_CallNoArgs(st->Future_Type);
}

/* Try the no-Condition fast path: if `fut` is ours and has no Condition,
 * and its state is `expect` (NULL: any), set the entries and return 1.
 * 0: take the stock path.  -1: error. */
static int
fast_transition(gfx_state *st, PyObject *fut, PyObject *expect,
                PyObject *new_state, PyObject *key, PyObject *value)
{
    if (st->LazyFuture_Type == NULL ||
        Py_TYPE(fut) != st->LazyFuture_Type) {
        return 0;
    }
    PyObject *dict = get_dict(fut);
    if (dict == NULL) {
        return -1;
    }
    int r = 0;
    Py_BEGIN_CRITICAL_SECTION(dict);
    int has = has_condition(st, dict);
    if (has < 0) {
        r = -1;
    }
    else if (!has) {
        PyObject *cur = NULL;
        int g = gfx_dict_get_ref(dict, st->k_state, &cur);
        if (g < 0) {
            r = -1;
        }
        else if (g == 1 && (expect == NULL || cur == expect)) {
            if ((key == NULL || PyDict_SetItem(dict, key, value) == 0) &&
                PyDict_SetItem(dict, st->k_state, new_state) == 0) {
                r = 1;
            }
            else {
                r = -1;
            }
        }
        Py_XDECREF(cur);
    }
    Py_END_CRITICAL_SECTION();
    Py_DECREF(dict);
    return r;
}

int
gfx_future_set_running(gfx_state *st, PyObject *fut)
{
    int r = fast_transition(st, fut, st->PENDING, st->RUNNING, NULL, NULL);
    if (r != 0) {
        return r;
    }
    PyObject *ok = PyObject_CallMethodNoArgs(
        fut, st->str_set_running_or_notify_cancel);
    if (ok == NULL) {
        return -1;
    }
    int run = PyObject_IsTrue(ok);
    Py_DECREF(ok);
    return run;
}

int
gfx_future_ensure_running(gfx_state *st, PyObject *fut)
{
    PyObject *dict = get_dict(fut);
    if (dict == NULL) {
        return -1;
    }
    int has_cond;
    PyObject *state = read_state(st, fut, dict, &has_cond);
    Py_DECREF(dict);
    if (state == NULL) {
        return -1;
    }
    int running = PyObject_RichCompareBool(state, st->RUNNING, Py_EQ);
    int finished = running == 0
                       ? PyObject_RichCompareBool(state, st->FINISHED, Py_EQ)
                       : 0;
    Py_DECREF(state);
    if (running != 0 || finished < 0) {
        return running != 0 ? running : -1;
    }
    if (finished) {
        return 0;  /* done already: nothing to start */
    }
    /* PENDING, or cancelled (set_running_or_notify_cancel notifies). */
    return gfx_future_set_running(st, fut);
}

int
gfx_future_cancel_if_pending(gfx_state *st, PyObject *fut)
{
    int pending, running;
    if (state_is(st, fut, &pending, &running) < 0) {
        return -1;
    }
    if (!pending) {
        return 0;
    }
    /* The base class's cancel(): ours would ask the pool to withdraw the
     * call, and the pool is what is cancelling it. */
    PyObject *r = PyObject_CallOneArg(st->base_cancel, fut);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    r = PyObject_CallMethodNoArgs(fut, st->str_set_running_or_notify_cancel);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 1;
}

int
gfx_future_bind_pool(gfx_state *st, PyObject *fut, PyObject *pool)
{
    if (st->LazyFuture_Type == NULL ||
        !PyObject_TypeCheck(fut, st->LazyFuture_Type)) {
        return 0;  /* stock futures: cancel() cannot reach the pool */
    }
    PyObject *ref = PyWeakref_NewRef(pool, NULL);
    if (ref == NULL) {
        return -1;
    }
    int rc = PyObject_SetAttr(fut, st->k_gf_pool, ref);
    Py_DECREF(ref);
    return rc;
}

int
gfx_future_set_result(gfx_state *st, PyObject *fut, PyObject *res)
{
    int r = fast_transition(st, fut, st->RUNNING, st->FINISHED, st->k_result,
                            res);
    if (r != 0) {
        return r < 0 ? -1 : 0;
    }
    PyObject *x = PyObject_CallMethodOneArg(fut, st->str_set_result, res);
    Py_XDECREF(x);
    return x ? 0 : -1;
}

int
gfx_future_set_exception(gfx_state *st, PyObject *fut, PyObject *exc)
{
    int r = fast_transition(st, fut, st->RUNNING, st->FINISHED,
                            st->k_exception, exc);
    if (r != 0) {
        return r < 0 ? -1 : 0;
    }
    PyObject *x = PyObject_CallMethodOneArg(fut, st->str_set_exception, exc);
    Py_XDECREF(x);
    return x ? 0 : -1;
}

/* ---- type and set-up ------------------------------------------------------------- */

static PyGetSetDef LF_getset[] = {
    {"_condition", LF_get_condition, LF_set_condition,
     "The future's threading.Condition, created on first use.", NULL},
    {NULL},
};

PyDoc_STRVAR(LF_cancel_doc,
"cancel($self, /)\n--\n\n"
"Cancel the call if it has not started (as concurrent.futures.Future).\n\n"
"On a process pool a call counts as started once it has been sent to a\n"
"worker: the future then turns RUNNING and cancel() returns False.");

/* The process pool a submit() future is bound to: 1 with *pool (new ref;
 * None once the pool is gone), 0 if unbound (threads), -1 on error. */
static int
bound_pool(gfx_state *st, PyObject *self, PyObject **pool)
{
    *pool = NULL;
    PyObject *dict = get_dict(self);
    if (dict == NULL) {
        return -1;
    }
    PyObject *ref = NULL;
    int bound = gfx_dict_get_ref(dict, st->k_gf_pool, &ref);
    Py_DECREF(dict);
    if (bound <= 0) {
        return bound;
    }
    /* A weak reference: calling it gives the pool (or None). */
    *pool = PyObject_CallNoArgs(ref);
    Py_DECREF(ref);
    return *pool != NULL ? 1 : -1;
}

static PyObject *
LF_cancel(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    gfx_state *st = gfx_state_from_type(Py_TYPE(self));
    int pending, running;
    if (state_is(st, self, &pending, &running) < 0) {
        return NULL;
    }
    if (!pending) {
        /* Running, done or cancelled: nothing to withdraw, and asking the
         * pool would scan its queue (Executor.map cancels every future it
         * hands out: that made its maps quadratic). */
        return PyObject_CallOneArg(st->base_cancel, self);
    }
    PyObject *pool;
    int bound = bound_pool(st, self, &pool);
    if (bound < 0) {
        return NULL;
    }
    if (bound) {
        int withdrawn = 0;
        if (pool != Py_None) {
            withdrawn = gfx_proc_withdraw_future((PoolObject *)pool, self);
        }
        Py_DECREF(pool);
        if (withdrawn < 0) {
            return NULL;
        }
        if (!withdrawn) {
            /* Sent to a worker (or done): it runs to the end.  Say so, as
             * a ProcessPoolExecutor says so of its call queue. */
            if (gfx_future_ensure_running(st, self) < 0) {
                return NULL;
            }
            PyObject *ok = PyObject_CallOneArg(st->base_cancel, self);
            return ok;   /* False: RUNNING or FINISHED (or True if the
                          * user had cancelled it already) */
        }
    }
    return PyObject_CallOneArg(st->base_cancel, self);
}

PyDoc_STRVAR(LF_running_doc,
"running($self, /)\n--\n\n"
"True if the call is running (on a process pool: sent to a worker).");

static PyObject *
LF_running(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    gfx_state *st = gfx_state_from_type(Py_TYPE(self));
    int pending, running;
    if (state_is(st, self, &pending, &running) < 0) {
        return NULL;
    }
    PyObject *pool = NULL;
    int bound = pending ? bound_pool(st, self, &pool) : 0;
    if (bound < 0) {
        return NULL;
    }
    if (bound) {
        /* Still queued in the pool, or sent to a worker already? */
        int queued = pool == Py_None
                         ? 0 : gfx_proc_future_queued((PoolObject *)pool, self);
        Py_DECREF(pool);
        if (!queued) {
            running = gfx_future_ensure_running(st, self);
            if (running < 0) {
                return NULL;
            }
        }
    }
    return PyBool_FromLong(running > 0);
}

static PyMethodDef LF_methods[] = {
    {"cancel", LF_cancel, METH_NOARGS, LF_cancel_doc},
    {"running", LF_running, METH_NOARGS, LF_running_doc},
    {"result", (PyCFunction)(void (*)(void))LF_result,
     METH_FASTCALL | METH_KEYWORDS, LF_result_doc},
    {"done", LF_done, METH_NOARGS, LF_done_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(LF_doc,
"A concurrent.futures.Future returned by gilfree.Pool.submit().\n\n"
"It is a real concurrent.futures.Future (a subclass): wait(),\n"
"as_completed() and asyncio.wrap_future() work with it.  It only creates\n"
"its internal Condition when someone has to wait, which makes submit()\n"
"several times cheaper than ThreadPoolExecutor's.");

static PyType_Slot LF_slots[] = {
    {Py_tp_doc, (void *)LF_doc},
    {Py_tp_init, LF_init},
    {Py_tp_getset, LF_getset},
    {Py_tp_methods, LF_methods},
    {0, NULL},
};

static PyType_Spec LF_spec = {
    .name = "gilfree.Future",
    .basicsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = LF_slots,
};


/* 1 if a stock Future looks exactly as this file assumes. */
static int
stock_future_is_known(gfx_state *st)
{
    PyObject *probe = PyObject_CallNoArgs(st->Future_Type);
    if (probe == NULL) {
        return -1;
    }
    PyObject *dict = get_dict(probe);
    if (dict == NULL) {
        Py_DECREF(probe);
        return -1;
    }
    int known = 0;
    if (dict != NULL && PyDict_GET_SIZE(dict) == 6) {
        PyObject *keys[] = {st->k_condition, st->k_state, st->k_result,
                            st->k_exception, st->k_waiters,
                            st->k_done_callbacks};
        known = 1;
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            int c = PyDict_Contains(dict, keys[i]);
            if (c < 0) {
                known = -1;
                break;
            }
            known &= c;
        }
        PyObject *state = NULL;
        if (known == 1 &&
            gfx_dict_get_ref(dict, st->k_state, &state) == 1) {
            int eq = PyObject_RichCompareBool(state, st->PENDING, Py_EQ);
            known = eq;
        }
        Py_XDECREF(state);
    }
    Py_XDECREF(dict);
    Py_DECREF(probe);
    return known;
}

int
gfx_future_init(PyObject *module, gfx_state *st)
{
    GFX_INTERN(st, k_condition, "_condition");
    GFX_INTERN(st, k_gf_condition, "_gilfree_condition");
    GFX_INTERN(st, k_state, "_state");
    GFX_INTERN(st, k_result, "_result");
    GFX_INTERN(st, k_exception, "_exception");
    GFX_INTERN(st, k_waiters, "_waiters");
    GFX_INTERN(st, k_done_callbacks, "_done_callbacks");
    PyObject *base = PyImport_ImportModule("concurrent.futures._base");
    if (base == NULL) {
        return -1;
    }
    st->PENDING = PyObject_GetAttrString(base, "PENDING");
    st->RUNNING = PyObject_GetAttrString(base, "RUNNING");
    st->FINISHED = PyObject_GetAttrString(base, "FINISHED");
    Py_DECREF(base);
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL) {
        return -1;
    }
    st->Condition = PyObject_GetAttrString(threading, "Condition");
    Py_DECREF(threading);
    st->base_result = PyObject_GetAttrString(st->Future_Type, "result");
    st->base_exception = PyObject_GetAttrString(st->Future_Type, "exception");
    st->base_cancel = PyObject_GetAttrString(st->Future_Type, "cancel");
    st->k_gf_pool = PyUnicode_InternFromString("_gf_pool");
    if (!st->PENDING || !st->RUNNING || !st->FINISHED || !st->Condition ||
        !st->base_result || !st->base_exception || !st->base_cancel ||
        !st->k_gf_pool) {
        return -1;
    }
    /* Identity checks below need the interned state strings. */
    PyUnicode_InternInPlace(&st->PENDING);
    PyUnicode_InternInPlace(&st->RUNNING);
    PyUnicode_InternInPlace(&st->FINISHED);
    int known = stock_future_is_known(st);
    if (known < 0) {
        return -1;
    }
    if (!known) {
        st->LazyFuture_Type = NULL;  /* stock Futures from now on */
        return 0;
    }
    PyObject *bases = PyTuple_Pack(1, st->Future_Type);
    if (bases == NULL) {
        return -1;
    }
    st->LazyFuture_Type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &LF_spec, bases);
    Py_DECREF(bases);
    if (st->LazyFuture_Type == NULL) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "Future",
                                 (PyObject *)st->LazyFuture_Type);
}

int
gfx_future_traverse(gfx_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->LazyFuture_Type);
    Py_VISIT(st->Condition);
    Py_VISIT(st->base_result);
    Py_VISIT(st->base_exception);
    Py_VISIT(st->base_cancel);
    Py_VISIT(st->k_gf_pool);
    return 0;
}

void
gfx_future_clear(gfx_state *st)
{
    Py_CLEAR(st->LazyFuture_Type);
    Py_CLEAR(st->Condition);
    Py_CLEAR(st->base_result);
    Py_CLEAR(st->base_exception);
    Py_CLEAR(st->base_cancel);
    Py_CLEAR(st->k_gf_pool);
    Py_CLEAR(st->k_condition);
    Py_CLEAR(st->k_gf_condition);
    Py_CLEAR(st->k_state);
    Py_CLEAR(st->k_result);
    Py_CLEAR(st->k_exception);
    Py_CLEAR(st->k_waiters);
    Py_CLEAR(st->k_done_callbacks);
    Py_CLEAR(st->PENDING);
    Py_CLEAR(st->RUNNING);
    Py_CLEAR(st->FINISHED);
}
