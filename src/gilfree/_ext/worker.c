/* The process backend's worker loop, run in each worker process.
 *
 *   wait for a message on the task ring (GIL released, parked on the
 *   ring's eventcount: no system call while the pool keeps it busy)
 *   FUNC   unpickle a callable and cache it under its id
 *   TASK   decode the items, release the frame (the pool may reuse its
 *          room at once), call the cached function on each, encode the
 *          results and send them on the result ring, ring the doorbell
 *   SETUP  the pool's worker lifecycle (first, if the pool has one): CPU
 *          affinity, state, initializer; then every call goes through
 *          gfx_lc_call (worker id, shared object, state first)
 *   FORGET drop a cached callable;  STOP  run the exit function, return
 *
 * Before each call the worker publishes which task and which input index it
 * runs, and since when, in its control block (shared memory): if it dies
 * mid-call, the pool knows exactly which input killed it, and the pool's
 * task_timeout watchdog knows how long the call has run.
 *
 * A worker never outlives the pool: gf_watch_parent() (pidfd watcher thread
 * plus, under the forkserver, the parent-death signal) ends it with
 * os._exit-like immediacy when the pool process ends, however it ends. */
#include "gfext.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    gfx_state *st;
    gf_shm_t mem, poolmem;
    gf_ring_t *rx, *tx;   /* rx: tasks in; tx: results out */
    gfx_ctl *ctl;
    gf_ec_t *doorbell;
    int sock;
    PyObject *funcs;      /* {id: callable, or the exception unpickling it
                           * raised} */
    gfx_segcache *segs;
    int slot;
    gfx_lc *lc;           /* from SETUP, or NULL */
    gfx_wstats *stats;    /* insights (in the channel memory), or NULL */
} worker;

/* Send a message (and its descriptors); 0, or -1 when the pool has gone
 * (the caller then stops). */
static int
send_msg(worker *w, gfx_msg *m)
{
    int rc = 0;
    if (m->nfds > 0) {
        gfx_msg_deliver(m);
        Py_BEGIN_ALLOW_THREADS
        rc = gfx_send_fds(w->sock, m->fds, m->nfds);
        Py_END_ALLOW_THREADS
    }
    if (rc == 0) {
        Py_BEGIN_ALLOW_THREADS
        do {
            rc = gf_ring_send(w->tx, m->kind, m->data, (uint32_t)m->len, -1);
        } while (rc == GF_EINTR);
        Py_END_ALLOW_THREADS
    }
    gfx_msg_clear(m);
    if (rc < 0) {
        return -1;
    }
    gf_ec_notify_all(w->doorbell);
    return 0;
}

/* An exception that pickles for sure, describing one that does not. */
static PyObject *
describe_unpicklable(PyObject *exc, PyObject *why)
{
    PyObject *msg = PyUnicode_FromFormat(
        "%s: %S (the exception could not be sent back from the worker: %S)",
        Py_TYPE(exc)->tp_name, exc, why);
    if (msg == NULL) {
        return NULL;
    }
    PyObject *sub = PyObject_CallOneArg(PyExc_RuntimeError, msg);
    Py_DECREF(msg);
    return sub;
}

/* Encode a RESULT.  `errors` is NULL or a list of (offset, exc, tb_text)
 * tuples, in which case the payload is (results, errors). */
static int
encode_result(worker *w, uint64_t id, int64_t index0, int apply,
              int64_t compute_ns, PyObject *results, PyObject *errors,
              int64_t first_error, gfx_msg *m)
{
    gfx_state *st = w->st;
    gf_msg_head_t head = {0};
    head.id = id;
    head.aux = (uint64_t)compute_ns;
    size_t max_inline = gf_ring_max_payload(w->tx);
    if (errors == NULL) {
        head.flags = GF_RESULT_OK;
        head.count = (uint32_t)PyList_GET_SIZE(results);
        if (gfx_encode(st, GF_MSG_RESULT, &head, results, GFX_ENC_FIXED,
                       max_inline, m) == 0) {
            return 0;
        }
    }
    else {
        head.flags = GF_RESULT_RAISED;
        head.index0 = first_error;
        head.count = (uint32_t)PyList_GET_SIZE(results);
        PyObject *pair = PyTuple_Pack(2, results, errors);
        int rc = pair ? gfx_encode(st, GF_MSG_RESULT, &head, pair, 0,
                                   max_inline, m) : -1;
        Py_XDECREF(pair);
        if (rc == 0) {
            return 0;
        }
    }
    /* Something did not pickle: find the first result (or exception) that
     * does not, and report that instead. */
    PyObject *why = gfx_fetch_exception();
    Py_ssize_t n = PyList_GET_SIZE(results), bad = -1;
    PyObject *badobj = NULL;
    for (Py_ssize_t i = 0; i < n && bad < 0; i++) {
        PyObject *item = PyList_GET_ITEM(results, i);
        gfx_msg probe;
        gf_msg_head_t h = {0};
        if (gfx_encode(st, GF_MSG_RESULT, &h, item, 0, (size_t)-1, &probe) < 0) {
            bad = i;
            badobj = item;
            Py_XSETREF(why, gfx_fetch_exception());
        }
        else {
            gfx_msg_clear(&probe);
        }
    }
    PyObject *exc;
    if (bad >= 0 && apply) {
        PyObject *msg = PyUnicode_FromFormat(
            "cannot send the result (a %s) back from the worker process: %S",
            Py_TYPE(badobj)->tp_name, why ? why : Py_None);
        exc = msg ? PyObject_CallOneArg(st->PicklingError, msg) : NULL;
        Py_XDECREF(msg);
    }
    else if (bad >= 0) {
        PyObject *msg = PyUnicode_FromFormat(
            "cannot send the result for input index %lld (a %s) back from "
            "the worker process: %S", (long long)(index0 + bad),
            Py_TYPE(badobj)->tp_name, why ? why : Py_None);
        exc = msg ? PyObject_CallOneArg(st->PicklingError, msg) : NULL;
        Py_XDECREF(msg);
    }
    else {
        /* The results pickle; an exception in `errors` did not. */
        exc = why ? describe_unpicklable(why, why) : NULL;
    }
    /* The worker-side story: the pickling error's own traceback. */
    PyObject *tb = why ? gfx_format_traceback(st, why) : NULL;
    if (tb == NULL) {
        PyErr_Clear();
        tb = PyUnicode_FromString("");
    }
    Py_XDECREF(why);
    if (exc == NULL) {
        Py_XDECREF(tb);
        return -1;
    }
    Py_ssize_t off = bad >= 0 ? bad : (first_error >= 0 ? first_error : 0);
    PyObject *entry = tb ? Py_BuildValue("(nOO)", off, exc, tb) : NULL;
    Py_XDECREF(tb);
    Py_DECREF(exc);
    PyObject *errs = entry ? PyList_New(1) : NULL;
    if (errs == NULL) {
        Py_XDECREF(entry);
        return -1;
    }
    PyList_SET_ITEM(errs, 0, entry);
    PyObject *empty = PyList_New(0);
    PyObject *pair = empty ? PyTuple_Pack(2, empty, errs) : NULL;
    Py_XDECREF(empty);
    Py_DECREF(errs);
    head.flags = GF_RESULT_UNPICKLABLE;
    head.index0 = off;
    head.count = 0;
    int rc = pair ? gfx_encode(st, GF_MSG_RESULT, &head, pair, 0, max_inline, m)
                  : -1;
    Py_XDECREF(pair);
    return rc;
}

/* Run one TASK.  Returns 0, or -1 when the pool has gone. */
static int
run_task(worker *w, const gf_msg_t *msg, int *fds)
{
    gfx_state *st = w->st;
    uint64_t id = msg->head.id;
    int64_t index0 = msg->head.index0;
    unsigned flags = msg->head.flags & ~GF_MSG_FLAG_EXT;
    for (int k = 0; k < GFX_CANCEL_SLOTS; k++) {
        if (atomic_load_explicit(&w->ctl->cancel[k], memory_order_acquire) ==
            id) {
            /* Withdrawn by the pool: say so and skip it. */
            for (uint32_t i = 0; i < msg->head.nbufs; i++) {
                close(fds[i]);
            }
            gf_ring_release(w->rx);
            gf_msg_head_t head = {0};
            head.id = id;
            head.flags = GF_RESULT_CANCELLED;
            head.codec = GF_CODEC_NONE;
            gfx_msg m;
            if (gfx_encode_raw(GF_MSG_RESULT, &head, NULL, 0, &m) < 0) {
                return -1;
            }
            return send_msg(w, &m);
        }
    }
    atomic_store_explicit(&w->ctl->cur_index, index0, memory_order_relaxed);
    atomic_store_explicit(&w->ctl->cur_task, id, memory_order_release);
    int64_t ins_a = w->stats ? gf_now_ns() : 0;

    PyObject *fn = NULL;
    PyObject *key = PyLong_FromUnsignedLongLong(msg->head.aux);
    int found = key ? gfx_dict_get_ref(w->funcs, key, &fn) : -1;
    Py_XDECREF(key);
    PyObject *items = gfx_decode(st, msg, fds, msg->head.nbufs);
    /* The frame's bytes are copied or decoded: give the room back. */
    gf_ring_release(w->rx);

    PyObject *results = PyList_New(0), *errors = NULL;
    int64_t first_error = -1;
    int64_t t0 = gf_now_ns();
    int64_t cpu0 = w->stats ? gfx_thread_cpu_ns() : 0;
    if (w->stats != NULL) {
        gfx_stats_add(&w->stats->data_ns, t0 - ins_a);
        gfx_stats_seg(w->stats, GFX_TL_DATA, ins_a, t0, 0, -1);
    }
    if (results == NULL || found < 0 || items == NULL || found == 0 ||
        PyExceptionInstance_Check(fn)) {
        /* The task cannot run: report why, against its first input. */
        PyObject *exc;
        if (found == 0 && !PyErr_Occurred()) {
            PyErr_Format(PyExc_RuntimeError,
                         "gilfree worker: unknown function id %llu",
                         (unsigned long long)msg->head.aux);
        }
        if (found == 1 && PyExceptionInstance_Check(fn)) {
            exc = Py_NewRef(fn);
        }
        else {
            exc = gfx_fetch_exception();
        }
        PyObject *tb = exc ? gfx_format_traceback(st, exc) : NULL;
        if (tb == NULL) {
            PyErr_Clear();
            tb = PyUnicode_FromString("");
        }
        /* Every item of the task fails with it (imap raises at each). */
        errors = PyList_New(0);
        Py_CLEAR(results);
        results = PyList_New(0);
        for (uint32_t i = 0; errors && results && exc && tb &&
                             i < msg->head.count; i++) {
            PyObject *e = Py_BuildValue("(IOO)", i, exc, tb);
            if (e == NULL || PyList_Append(errors, e) < 0 ||
                PyList_Append(results, Py_None) < 0) {
                PyErr_Clear();
            }
            Py_XDECREF(e);
        }
        if (errors != NULL && PyList_GET_SIZE(errors) == 0 && exc && tb) {
            PyObject *e = Py_BuildValue("(iOO)", 0, exc, tb);
            if (e == NULL || PyList_Append(errors, e) < 0) {
                PyErr_Clear();
            }
            Py_XDECREF(e);
        }
        Py_XDECREF(exc);
        Py_XDECREF(tb);
        first_error = 0;
    }
    else {
        Py_ssize_t n = PyList_GET_SIZE(items);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PyList_GET_ITEM(items, i);
            atomic_store_explicit(&w->ctl->cur_index, index0 + i,
                                  memory_order_relaxed);
            atomic_store_explicit(&w->ctl->cur_start_ns, gf_now_ns(),
                                  memory_order_relaxed);
            PyObject *r;
            if (flags & GF_TASK_APPLY) {
                /* item = (args, kwargs) */
                PyObject *a = PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2
                                  ? PyTuple_GET_ITEM(item, 0) : NULL;
                PyObject *k = a ? PyTuple_GET_ITEM(item, 1) : NULL;
                if (a == NULL || !PyTuple_Check(a) ||
                    (k != Py_None && !PyDict_Check(k))) {
                    PyErr_SetString(PyExc_RuntimeError,
                                    "gilfree worker: malformed apply task");
                    r = NULL;
                }
                else if (w->lc != NULL) {
                    r = gfx_lc_call_tuple(w->lc, fn, a,
                                          k == Py_None ? NULL : k);
                }
                else {
                    r = PyObject_Call(fn, a, k == Py_None ? NULL : k);
                }
            }
            else if (flags & GF_TASK_STAR) {
                PyObject *t = PySequence_Tuple(item);
                r = t == NULL ? NULL
                    : w->lc != NULL ? gfx_lc_call_tuple(w->lc, fn, t, NULL)
                                    : PyObject_Call(fn, t, NULL);
                Py_XDECREF(t);
            }
            else if (w->lc != NULL) {
                r = gfx_lc_call(w->lc, fn, &item, 1, NULL);
            }
            else {
                r = PyObject_CallOneArg(fn, item);
            }
            atomic_store_explicit(&w->ctl->cur_start_ns, 0,
                                  memory_order_relaxed);
            if (r != NULL) {
                int ok = PyList_Append(results, r);
                Py_DECREF(r);
                if (ok == 0) {
                    continue;
                }
            }
            PyObject *exc = gfx_fetch_exception();
            PyObject *tb = exc ? gfx_format_traceback(st, exc) : NULL;
            if (tb == NULL) {
                PyErr_Clear();
                tb = PyUnicode_FromString("");
            }
            if (errors == NULL) {
                errors = PyList_New(0);
                first_error = i;
            }
            PyObject *e = (exc && tb && errors)
                              ? Py_BuildValue("(nOO)", i, exc, tb) : NULL;
            if (e == NULL || PyList_Append(errors, e) < 0) {
                PyErr_Clear();
            }
            Py_XDECREF(e);
            Py_XDECREF(tb);
            Py_XDECREF(exc);
            /* Keep positions: a placeholder where the result would be. */
            if (PyList_Append(results, Py_None) < 0) {
                PyErr_Clear();
            }
            if (flags & GF_TASK_STOP) {
                break;
            }
        }
    }
    int64_t compute_ns = gf_now_ns() - t0;
    if (w->stats != NULL) {
        /* Counted before the result leaves: whoever has the result sees
         * the call counted. */
        int64_t cpu_ns = gfx_thread_cpu_ns() - cpu0;
        uint32_t n = msg->head.count;
        gfx_stats_add(&w->stats->work_ns, compute_ns);
        gfx_stats_add(&w->stats->cpu_ns, cpu_ns);
        gfx_stats_add(&w->stats->tasks, n);
        gfx_stats_add(&w->stats->chunks, 1);
        gfx_stats_seg(w->stats, GFX_TL_WORK, t0, t0 + compute_ns, n, cpu_ns);
    }
    Py_XDECREF(items);
    Py_XDECREF(fn);

    gfx_msg m;
    int rc = -1;
    if (results != NULL) {
        rc = encode_result(w, id, index0, (flags & GF_TASK_APPLY) != 0,
                           compute_ns, results, errors, first_error, &m);
    }
    Py_XDECREF(results);
    Py_XDECREF(errors);
    atomic_store_explicit(&w->ctl->cur_task, 0, memory_order_release);
    if (rc < 0) {
        /* Could not even describe the failure: give up on this worker; the
         * pool reports it as died on this task. */
        PyErr_Print();
        return -1;
    }
    rc = send_msg(w, &m);
    if (w->stats != NULL) {
        int64_t t1 = t0 + compute_ns, t2 = gf_now_ns();
        gfx_stats_add(&w->stats->data_ns, t2 - t1);
        gfx_stats_seg(w->stats, GFX_TL_DATA, t1, t2, 0, -1);
        w->stats->last_ns = t2;
    }
    return rc;
}

static int
handle_func(worker *w, const gf_msg_t *msg, int *fds)
{
    int64_t t0 = w->stats ? gf_now_ns() : 0;
    PyObject *fn = gfx_decode(w->st, msg, fds, msg->head.nbufs);
    gf_ring_release(w->rx);
    if (w->stats != NULL) {
        int64_t t1 = gf_now_ns();
        gfx_stats_add(&w->stats->data_ns, t1 - t0);
        gfx_stats_seg(w->stats, GFX_TL_DATA, t0, t1, 0, -1);
        w->stats->last_ns = t1;
    }
    if (fn == NULL) {
        /* Remember why: tasks using it report this error. */
        fn = gfx_fetch_exception();
        if (fn == NULL) {
            return -1;
        }
    }
    PyObject *key = PyLong_FromUnsignedLongLong(msg->head.id);
    int rc = key ? PyDict_SetItem(w->funcs, key, fn) : -1;
    Py_XDECREF(key);
    Py_DECREF(fn);
    return rc;
}

/* Tell the pool how the initializer or the exit function went. */
static int
send_life(worker *w, unsigned event, int64_t ns, PyObject *payload)
{
    gf_msg_head_t head = {0};
    head.aux = (uint64_t)ns;
    head.flags = (uint16_t)event;
    gfx_msg m;
    int rc;
    if (payload == NULL) {
        head.codec = GF_CODEC_NONE;
        rc = gfx_encode_raw(GF_MSG_LIFE, &head, NULL, 0, &m);
    }
    else {
        rc = gfx_encode(w->st, GF_MSG_LIFE, &head, payload, 0,
                        gf_ring_max_payload(w->tx), &m);
        if (rc < 0) {
            /* Not picklable (an exit result, or an exception): say so
             * instead, in a form that pickles. */
            PyObject *why = gfx_fetch_exception();
            PyObject *msg = PyUnicode_FromFormat(
                "the %s's %s could not be sent back from the worker "
                "process: %S",
                event >= GF_LIFE_EXIT_OK ? "exit function" : "initializer",
                event == GF_LIFE_EXIT_OK ? "result" : "exception",
                why ? why : Py_None);
            Py_XDECREF(why);
            PyObject *exc = msg ? PyObject_CallOneArg(w->st->PicklingError,
                                                      msg) : NULL;
            Py_XDECREF(msg);
            PyObject *pair = exc ? Py_BuildValue("(Os)", exc, "") : NULL;
            Py_XDECREF(exc);
            if (pair == NULL) {
                return -1;
            }
            head.flags = (uint16_t)(event >= GF_LIFE_EXIT_OK
                                        ? GF_LIFE_EXIT_RAISED
                                        : GF_LIFE_INIT_RAISED);
            rc = gfx_encode(w->st, GF_MSG_LIFE, &head, pair, 0,
                            gf_ring_max_payload(w->tx), &m);
            Py_DECREF(pair);
        }
    }
    if (rc < 0) {
        return -1;
    }
    return send_msg(w, &m);
}

/* (exception, traceback text) of the exception being handled; NULL on
 * failure. */
static PyObject *
failure_pair(worker *w)
{
    PyObject *exc = gfx_fetch_exception();
    if (exc == NULL) {
        return NULL;
    }
    /* The initializer's own exception travels, not our wrapper. */
    PyObject *cause = PyObject_TypeCheck(exc, (PyTypeObject *)
                                         w->st->InitializerError)
                          ? PyException_GetCause(exc) : NULL;
    PyObject *orig = cause != NULL ? cause : Py_NewRef(exc);
    Py_DECREF(exc);
    PyObject *tb = gfx_format_traceback(w->st, orig);
    if (tb == NULL) {
        PyErr_Clear();
        tb = PyUnicode_FromString("");
    }
    PyObject *pair = tb ? PyTuple_Pack(2, orig, tb) : NULL;
    Py_DECREF(orig);
    Py_XDECREF(tb);
    return pair;
}

/* SETUP: build the lifecycle, start it (affinity, state, initializer)
 * under the pool's init_timeout watch, report.  -1: the pool has gone. */
static int
handle_setup(worker *w, const gf_msg_t *msg, int *fds)
{
    PyObject *spec = gfx_decode(w->st, msg, fds, msg->head.nbufs);
    gf_ring_release(w->rx);
    if (spec != NULL && w->lc == NULL) {
        w->lc = gfx_lc_new(w->st, spec, 1, (uint32_t)w->slot);
    }
    Py_XDECREF(spec);
    if (w->lc == NULL) {
        PyObject *pair = failure_pair(w);
        int rc = pair ? send_life(w, GF_LIFE_INIT_RAISED, 0, pair) : -1;
        Py_XDECREF(pair);
        return rc;
    }
    /* Recycling is the pool's business: it stops sending to this worker
     * when its budget is spent. */
    w->lc->max_tasks = 0;
    w->lc->in_worker_process = 1;
    gfx_wctx *wc = &w->lc->w[0];
    gfx__cur_wctx = wc;
    atomic_store_explicit(&w->ctl->cur_start_ns, gf_now_ns(),
                          memory_order_relaxed);
    atomic_store_explicit(&w->ctl->cur_task, GFX_TASK_ID_INIT,
                          memory_order_release);
    int64_t t0 = gf_now_ns();
    int ok = gfx_lc_apply_affinity(wc) == 0 && gfx_lc_start(wc) == 0;
    int64_t took = gf_now_ns() - t0;
    if (w->stats != NULL) {
        gfx_stats_add(&w->stats->init_ns, took);
        gfx_stats_seg(w->stats, GFX_TL_INIT, t0, t0 + took, 0, -1);
        w->stats->last_ns = t0 + took;
    }
    atomic_store_explicit(&w->ctl->cur_start_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&w->ctl->cur_task, 0, memory_order_release);
    if (ok) {
        return send_life(w, GF_LIFE_INIT_OK, took, NULL);
    }
    if (!atomic_load(&w->lc->broken)) {
        /* Not the initializer itself (affinity, memory): every call must
         * still fail, with this as the reason. */
        PyObject *cause = gfx_fetch_exception();
        PyObject *err = gfx_lc_error_new(w->lc, 0, wc->id, cause,
                                         cause ? NULL : "failed");
        if (err != NULL) {
            gfx_lc_set_error(w->lc, err);
            PyErr_SetObject((PyObject *)Py_TYPE(err), err);
            Py_DECREF(err);
        }
        else {
            gfx_restore_exception(cause);
        }
        Py_XDECREF(cause);
    }
    PyObject *pair = failure_pair(w);
    int rc = pair ? send_life(w, GF_LIFE_INIT_RAISED, took, pair) : -1;
    Py_XDECREF(pair);
    return rc;
}

/* STOP: the exit function, under the pool's exit_timeout watch. */
static int
run_exit(worker *w)
{
    if (w->lc == NULL || w->lc->worker_exit == NULL || !w->lc->w[0].live) {
        return 0;
    }
    atomic_store_explicit(&w->ctl->cur_start_ns, gf_now_ns(),
                          memory_order_relaxed);
    atomic_store_explicit(&w->ctl->cur_task, GFX_TASK_ID_EXIT,
                          memory_order_release);
    PyObject *value;
    int64_t t0 = gf_now_ns();
    int rc = gfx_lc_finish(&w->lc->w[0], &value);
    int64_t took = gf_now_ns() - t0;
    if (w->stats != NULL) {
        gfx_stats_add(&w->stats->exit_ns, took);
        gfx_stats_seg(w->stats, GFX_TL_EXIT, t0, t0 + took, 0, -1);
        w->stats->last_ns = t0 + took;
    }
    atomic_store_explicit(&w->ctl->cur_start_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&w->ctl->cur_task, 0, memory_order_release);
    if (rc == 0) {
        rc = send_life(w, GF_LIFE_EXIT_OK, took, value ? value : Py_None);
        Py_XDECREF(value);
        return rc;
    }
    PyObject *pair = failure_pair(w);
    rc = pair ? send_life(w, GF_LIFE_EXIT_RAISED, took, pair) : -1;
    Py_XDECREF(pair);
    return rc;
}

static int
worker_loop(worker *w)
{
    for (;;) {
        gf_ring_frame_t f;
        int rc;
        int64_t idle0 = w->stats ? gf_now_ns() : 0;
        Py_BEGIN_ALLOW_THREADS
        rc = gf_ring_peek(w->rx, &f, 100 * 1000000LL);
        Py_END_ALLOW_THREADS
        if (w->stats != NULL) {
            int64_t now = gf_now_ns();
            gfx_stats_add(&w->stats->idle_ns, now - idle0);
            w->stats->last_ns = now;
        }
        if (rc == GF_ETIMEDOUT) {
            continue;
        }
        if (rc == GF_EINTR) {
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
            continue;
        }
        if (rc == GF_EPIPE) {
            return 0;  /* the pool closed the channel: terminate */
        }
        if (rc < 0) {
            gfx_raise(rc, "gilfree worker: reading the task channel");
            return -1;
        }
        gf_msg_t msg;
        rc = gf_msg_parse(f.kind, f.data, f.len, &msg);
        if (rc < 0) {
            gfx_raise(rc, "gilfree worker: malformed message from the pool");
            return -1;
        }
        int fds[GF_MSG_MAX_BUFS];
        if (msg.head.nbufs > 0) {
            Py_BEGIN_ALLOW_THREADS
            rc = gfx_recv_fds(w->sock, &msg, fds);
            Py_END_ALLOW_THREADS
            if (rc < 0) {
                gfx_raise(rc, "gilfree worker: receiving buffers");
                return -1;
            }
        }
        switch (msg.kind) {
        case GF_MSG_SETUP:
            if (handle_setup(w, &msg, fds) < 0) {
                return PyErr_Occurred() ? -1 : 0;
            }
            break;
        case GF_MSG_FUNC:
            if (handle_func(w, &msg, fds) < 0) {
                return -1;
            }
            break;
        case GF_MSG_TASK:
            if (run_task(w, &msg, fds) < 0) {
                return PyErr_Occurred() ? -1 : 0;
            }
            break;
        case GF_MSG_FORGET: {
            PyObject *key = PyLong_FromUnsignedLongLong(msg.head.id);
            gf_ring_release(w->rx);
            if (key == NULL || (PyDict_DelItem(w->funcs, key) < 0 &&
                                !PyErr_ExceptionMatches(PyExc_KeyError))) {
                Py_XDECREF(key);
                return -1;
            }
            PyErr_Clear();
            Py_DECREF(key);
            break;
        }
        case GF_MSG_STOP:
            gf_ring_release(w->rx);
            if (run_exit(w) < 0) {
                return PyErr_Occurred() ? -1 : 0;
            }
            return 0;
        default:
            gf_ring_release(w->rx);
            PyErr_Format(PyExc_RuntimeError,
                         "gilfree worker: unexpected message kind %u",
                         msg.kind);
            return -1;
        }
    }
}

PyObject *
gfx_worker_main(PyObject *module, PyObject *args)
{
    int fd, poolfd, sock, pool_pidfd, slot;
    long pool_pid;
    if (!PyArg_ParseTuple(args, "iiiili:_worker_main", &fd, &poolfd, &sock,
                          &pool_pidfd, &pool_pid, &slot)) {
        return NULL;
    }
    gfx_state *st = PyModule_GetState(module);
    worker w;
    memset(&w, 0, sizeof w);
    w.st = st;
    w.sock = sock;
    w.slot = slot;
    w.mem = (gf_shm_t)GF_SHM_INIT;
    w.poolmem = (gf_shm_t)GF_SHM_INIT;

    /* Die with the pool, whoever our parent is.  Before anything else: a
     * pool that is already gone ends us here. */
    int rc = gf_watch_parent((pid_t)pool_pid, pool_pidfd, 0, 0);
    if (rc < 0 && rc != GF_ENOSYS) {
        return gfx_raise(rc, "gilfree worker: watching the pool process");
    }
    /* Ctrl-C in a terminal reaches the whole process group: the pool
     * decides what happens to its workers, so they ignore it. */
    PyOS_setsig(SIGINT, SIG_IGN);

    rc = gf_shm_map(fd, 0, 0, &w.mem);
    if (rc == 0) {
        rc = gf_shm_map(poolfd, 0, 0, &w.poolmem);
    }
    if (rc < 0 || w.mem.size < GFX_CTL_SIZE ||
        w.poolmem.size < sizeof(gf_ec_t)) {
        gf_shm_close(&w.mem);
        return gfx_raise(rc < 0 ? rc : GF_EINVAL,
                         "gilfree worker: mapping the channel");
    }
    w.ctl = (gfx_ctl *)w.mem.addr;
    w.doorbell = (gf_ec_t *)w.poolmem.addr;
    if (atomic_load(&w.ctl->insights) &&
        GFX_CTL_STATS(w.ctl)->magic == GFX_STATS_MAGIC) {
        w.stats = GFX_CTL_STATS(w.ctl);
        int64_t now = gf_now_ns();
        atomic_store_explicit(&w.stats->start_ns, now, memory_order_relaxed);
        w.stats->last_ns = now;
    }
    size_t half = (w.mem.size - GFX_CTL_SIZE) / 2;
    char *base = (char *)w.mem.addr + GFX_CTL_SIZE;
    rc = gf_ring_attach(base, half, &w.rx);
    if (rc == 0) {
        rc = gf_ring_attach(base + half, half, &w.tx);
    }
    PyObject *result = NULL;
    if (rc < 0) {
        gfx_raise(rc, "gilfree worker: attaching the channel");
        goto done;
    }
    w.funcs = PyDict_New();
    w.segs = gfx_segcache_new();
    if (w.funcs == NULL || w.segs == NULL) {
        if (w.segs == NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    /* Results leave through warm segments (this thread encodes them). */
    gfx_segcache_use(w.segs);
    gfx_populate_received = 1;
    gf_msg_head_t head = {0};
    head.id = (uint64_t)getpid();
    head.aux = GF_MSG_VERSION;
    head.codec = GF_CODEC_NONE;
    gfx_msg hello;
    if (gfx_encode_raw(GF_MSG_HELLO, &head, NULL, 0, &hello) < 0 ||
        send_msg(&w, &hello) < 0) {
        if (!PyErr_Occurred()) {
            result = Py_NewRef(Py_None);  /* the pool has gone already */
        }
        goto done;
    }
    if (worker_loop(&w) == 0) {
        result = Py_NewRef(Py_None);
    }
done:
    if (w.stats != NULL) {
        atomic_store_explicit(&w.stats->end_ns, gf_now_ns(),
                              memory_order_relaxed);
    }
    gfx__cur_wctx = NULL;
    gfx_lc_free(w.lc);
    gfx_segcache_use(NULL);
    gfx_segcache_free(w.segs);
    Py_XDECREF(w.funcs);
    gf_ring_detach(w.rx);
    gf_ring_detach(w.tx);
    gf_shm_close(&w.mem);
    gf_shm_close(&w.poolmem);
    close(sock);
    return result;
}
