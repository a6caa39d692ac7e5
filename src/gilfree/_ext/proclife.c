/* The process backend's worker lifecycle, pool side (see lifecycle.c for
 * the whole picture, worker.c for the worker side).
 *
 *   gfx_pp_life_setup   the SETUP message, encoded once per pool: every new
 *                       worker (first ones and replacements) finds it first
 *                       in its task ring; large buffers of the shared object
 *                       travel as shared memory, mapped by each worker.
 *   gfx_pp_life_batch   LIFE messages (how an initializer or an exit
 *                       function went), copied by the collector, decoded
 *                       here with the GIL into the pool's gfx_lc: the first
 *                       InitializerError (the pool then refuses new work),
 *                       the exit results, the first WorkerExitError.
 *   gfx_pp_life_death   a worker that died inside its initializer or exit
 *                       function (crash, or killed for init/exit_timeout).
 */
#include "procpool.h"

#include <string.h>
#include <unistd.h>

int
gfx_pp_life_setup(gfx_engine *e)
{
    gf_msg_head_t head = {0};
    /* Fresh segments, not the warm cache: this message is kept for the
     * pool's whole life and would pin cache entries. */
    gfx_segcache *prev = gfx_segcache_use(NULL);
    int rc = gfx_encode(e->st, GF_MSG_SETUP, &head, e->lc->spec, 0,
                        GF_RING_MAX_PAYLOAD(RING_CAPACITY) / 2, &e->setup);
    gfx_segcache_use(prev);
    if (rc < 0) {
        PyObject *why = gfx_fetch_exception();
        PyErr_Format(e->st->PicklingError,
                     "Pool(): cannot send the worker lifecycle (initializer, "
                     "initargs, worker_exit, shared) to worker processes: %S",
                     why ? why : Py_None);
        gfx_chain_cause(why);
        return -1;
    }
    e->has_setup = 1;
    return 0;
}

void
gfx_pp_life_free(gfx_life *l)
{
    for (uint32_t i = 0; l->fds != NULL && i < l->nfds; i++) {
        close(l->fds[i]);
    }
    PyMem_RawFree(l->fds);
    PyMem_RawFree(l->data);
    PyMem_RawFree(l);
}

/* A (message, exception or None, traceback text) payload -> the recorded
 * error of `kind` (0 initializer, 1 exit function). */
static void
record_failure(gfx_engine *e, gfx_life *l, PyObject *payload, int exit_fn)
{
    gfx_lc *lc = e->lc;
    PyObject *cause = NULL, *tb = NULL;
    if (PyTuple_Check(payload) && PyTuple_GET_SIZE(payload) == 2) {
        cause = PyTuple_GET_ITEM(payload, 0);
        tb = PyTuple_GET_ITEM(payload, 1);
    }
    if (cause != NULL && !PyExceptionInstance_Check(cause)) {
        cause = NULL;
    }
    if (cause != NULL && tb != NULL && PyUnicode_Check(tb)) {
        /* The worker's traceback as the cause's __cause__, as for tasks. */
        gfx_decorate_remote(e->st, cause,
                            exit_fn ? lc->worker_exit : lc->initializer, -1,
                            tb, (long)l->pid);
    }
    PyObject *err = gfx_lc_error_new(lc, exit_fn, l->slot, cause,
                                     cause ? NULL : "failed");
    if (err == NULL) {
        PyErr_WriteUnraisable(NULL);
        return;
    }
    if (exit_fn) {
        gfx_lc_set_exit_error(lc, err);
    }
    else {
        gfx_lc_set_error(lc, err);
    }
    Py_DECREF(err);
}

void
gfx_pp_life_batch(gfx_engine *e, gfx_life *list)
{
    while (list != NULL) {
        gfx_life *l = list;
        list = l->next;
        gf_msg_t msg;
        if (e->lc == NULL ||
            gf_msg_parse(GF_MSG_LIFE, l->data, l->len, &msg) < 0) {
            gfx_pp_life_free(l);
            continue;
        }
        PyObject *payload = NULL;
        if (msg.head.codec == GF_CODEC_PICKLE) {
            payload = gfx_decode(e->st, &msg, l->fds, l->nfds);
            l->nfds = 0;  /* consumed */
            if (payload == NULL) {
                /* What the worker sent does not unpickle here: say so as
                 * the failure (or the exit result). */
                payload = gfx_fetch_exception();
                PyObject *tb = PyUnicode_FromString("");
                PyObject *pair = payload && tb
                                     ? PyTuple_Pack(2, payload, tb) : NULL;
                Py_XDECREF(tb);
                Py_XSETREF(payload, pair);
                if (payload == NULL) {
                    PyErr_Clear();
                    gfx_pp_life_free(l);
                    continue;
                }
                if ((msg.head.flags & ~GF_MSG_FLAG_EXT) == GF_LIFE_EXIT_OK) {
                    record_failure(e, l, payload, 1);
                    Py_DECREF(payload);
                    gfx_pp_life_free(l);
                    continue;
                }
            }
        }
        switch (msg.head.flags & ~GF_MSG_FLAG_EXT) {
        case GF_LIFE_INIT_OK:
            if (l->slot < e->lc->n) {
                e->lc->w[l->slot].init_ns += (int64_t)msg.head.aux;
            }
            break;
        case GF_LIFE_INIT_RAISED:
            record_failure(e, l, payload ? payload : Py_None, 0);
            break;
        case GF_LIFE_EXIT_OK:
            if (l->slot < e->lc->n) {
                e->lc->w[l->slot].exit_ns += (int64_t)msg.head.aux;
            }
            if (payload != NULL &&
                PyList_Append(e->lc->exit_results, payload) < 0) {
                PyErr_WriteUnraisable(NULL);
            }
            break;
        case GF_LIFE_EXIT_RAISED:
            record_failure(e, l, payload ? payload : Py_None, 1);
            break;
        default:
            break;
        }
        Py_XDECREF(payload);
        gfx_pp_life_free(l);
    }
}

int
gfx_pp_life_death(gfx_engine *e, uint32_t slot, gfx_pslot *s)
{
    int init = s->life_death == LIFE_DEATH_INIT;
    s->life_death = LIFE_DEATH_NONE;
    if (e->lc == NULL) {
        return 0;
    }
    char why[160];
    if (s->life_timed_out) {
        PyOS_snprintf(why, sizeof why,
                      "did not finish within %s=%g s: worker process %ld "
                      "was killed", init ? "init_timeout" : "exit_timeout",
                      init ? e->lc->init_timeout : e->lc->exit_timeout,
                      (long)s->exit.pid);
    }
    else {
        char how[96];
        gf_exit_describe(&s->exit, how, sizeof how);
        PyOS_snprintf(why, sizeof why, "killed its worker process (%s)",
                      how);
    }
    PyObject *err = gfx_lc_error_new(e->lc, !init, slot, NULL, why);
    if (err == NULL) {
        PyErr_WriteUnraisable(NULL);
        return init;
    }
    if (init) {
        gfx_lc_set_error(e->lc, err);
        /* If no worker is left, the queue fails with this. */
        PyObject *txt = PyObject_Str(err);
        const char *c = txt ? PyUnicode_AsUTF8(txt) : NULL;
        PyOS_snprintf(e->start_error, sizeof e->start_error, "%s",
                      c ? c : "gilfree: a worker's initializer failed");
        Py_XDECREF(txt);
        PyErr_Clear();
    }
    else {
        gfx_lc_set_exit_error(e->lc, err);
    }
    Py_DECREF(err);
    return init;
}

/* ---- insights ------------------------------------------------------------------ */

PyObject *
gfx_pp_insights(gfx_engine *e, PoolObject *pool)
{
    (void)pool;
    PyObject *lives = e->ins_lives ? PyList_GetSlice(e->ins_lives, 0,
                                                     PY_SSIZE_T_MAX)
                                   : PyList_New(0);
    if (lives == NULL) {
        return NULL;
    }
    /* Lives still going on: read their numbers where they write them. */
    eng_lock(e);
    uint32_t n = e->n;
    eng_unlock(e);
    for (uint32_t i = 0; i < n; i++) {
        gfx_pslot *s = &e->slots[i];
        if (s->state != SLOT_LIVE || s->ctl == NULL) {
            continue;
        }
        PyObject *d = gfx_stats_snapshot(GFX_CTL_STATS(s->ctl));
        if (d == NULL) {
            Py_DECREF(lives);
            return NULL;
        }
        PyObject *v;
        int bad = 0;
#define PUT(key, expr)                                                     \
        v = (expr);                                                        \
        bad |= v == NULL || PyDict_SetItemString(d, key, v) < 0;           \
        Py_XDECREF(v);
        PUT("pid", PyLong_FromLong((long)s->pid));
        PUT("worker", PyLong_FromUnsignedLong(i));
        PUT("startup_ns", PyLong_FromLongLong((long long)s->startup_ns));
#undef PUT
        if (bad || PyList_Append(lives, d) < 0) {
            Py_DECREF(d);
            Py_DECREF(lives);
            return NULL;
        }
        Py_DECREF(d);
    }
    return Py_BuildValue(
        "{s:s,s:I,s:L,s:L,s:N,s:{s:L,s:L}}", "backend", "processes",
        "workers", pool->nworkers, "start_ns", (long long)e->start_ns,
        "now_ns", (long long)gf_now_ns(), "lives", lives, "caller",
        "encode_ns", (long long)atomic_load(&e->ins_encode_ns), "decode_ns",
        (long long)atomic_load(&e->ins_decode_ns));
}
