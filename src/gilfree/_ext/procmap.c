/* The process backend's map, starmap, imap and imap_unordered: a job that
 * cuts its input into chunks, keeps a bounded number of them in flight on
 * the engine (procpool.c) and hands the results out in input order (or in
 * completion order), re-sending the parts of a chunk around an input that
 * killed its worker. */
#include "procpool.h"

#include <string.h>

/* ---- map / starmap / imap / imap_unordered ------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PoolObject *pool;           /* strong: keeps the engine alive */
    gfx_engine *e;
    PyObject *fn;
    int flags;                  /* GFX_MAP_* */
    const char *method;
    /* input: exactly one of seq / range / iter */
    PyObject *seq;              /* list or tuple */
    int is_range;
    int64_t r_start, r_step;
    PyObject *iter;
    /* Input indices are absolute: they start at `base` (gfx_proc_map's
     * index_base, 0 but for an auto pool mapping the rest of an input whose
     * head it ran itself), so every index a task, a worker message or an
     * error carries is the user's.  Only reading the input subtracts it. */
    int64_t base;
    int64_t total;              /* base + number of items; -1: unknown */
    int64_t next_in;            /* next input index to chunk */
    int exhausted;
    int64_t fixed;              /* chunksize, 0: adaptive */
    gf_chunker_t chunker;
    gfx_sink *sink;
    int64_t inflight;           /* chunks submitted, not yet consumed */
    int64_t inflight_bytes;     /* their encoded size */
    int64_t bytes_per_item;     /* running estimate (0: none yet) */
    int64_t window;
    int draining;               /* join(): feed to the end, no window */
    PyObject *fill_err;         /* what feeding raised during join(),
                                 * raised where the input ended */
    gfx_lazyjob link;           /* in e->lazy_jobs while `linked` */
    int linked;
    gfx_ptask *ready;           /* received, sorted by index0 */
    int64_t next_out;           /* ordered: next index to hand out */
    int stop_feeding;
    int finished;
    /* the chunk being handed out */
    PyObject *cur;              /* list of results */
    PyObject *cur_err;          /* {index: exception} or NULL */
    Py_ssize_t cur_pos;
    int64_t cur_index0;
    uint32_t cur_count;
} ProcMapObject;

#define PM(op) ((ProcMapObject *)(op))

static int
sink_ready(void *arg)
{
    /* Cancelled too: close() from another thread (an asyncio consumer)
     * must wake a next() waiting here. */
    gfx_sink *s = arg;
    return atomic_load(&s->ndone) > 0 || atomic_load(&s->cancelled);
}

/* Encode items [start, start+count) as a task.  `items` is a list of
 * them, or NULL for a range input.  NULL with an exception naming the
 * input index of what did not pickle. */
static gfx_ptask *
job_encode(ProcMapObject *j, int64_t start, int64_t count, PyObject *items)
{
    gfx_engine *e = j->e;
    gfx_ptask *t = gfx_pp_ptask_new(e, PT_MAP);
    if (t == NULL) {
        return NULL;
    }
    t->fe = gfx_pp_fn_get(e, j->fn);
    if (t->fe == NULL) {
        gfx_pp_ptask_free(e, t);
        return NULL;
    }
    t->index0 = start;
    t->count = (uint32_t)count;
    t->tflags = ((j->flags & GFX_MAP_STAR) ? GF_TASK_STAR : 0) |
                ((j->flags & GFX_MAP_LAZY) ? 0 : GF_TASK_STOP);
    gf_msg_head_t head = {0};
    head.id = t->id;
    head.aux = t->fe->id;
    head.index0 = start;
    head.flags = t->tflags;
    int rc;
    if (items == NULL) {
        int64_t payload[2] = {j->r_start + (start - j->base) * j->r_step,
                              j->r_step};
        head.codec = GF_CODEC_RANGE;
        head.count = (uint32_t)count;
        rc = gfx_encode_raw(GF_MSG_TASK, &head, payload, sizeof payload,
                            &t->msg);
    }
    else {
        gfx_segcache *prev = gfx_segcache_use(e->segs);
        rc = gfx_encode(e->st, GF_MSG_TASK, &head, items, GFX_ENC_FIXED,
                        GF_RING_MAX_PAYLOAD(RING_CAPACITY) / 2, &t->msg);
        gfx_segcache_use(prev);
        if (rc < 0) {
            /* Find the item that does not pickle, for the message. */
            PyObject *why = gfx_fetch_exception();
            Py_ssize_t n = PyList_GET_SIZE(items), bad = -1;
            for (Py_ssize_t i = 0; i < n && bad < 0; i++) {
                PyObject *one = PyList_New(1);
                if (one == NULL) {
                    break;
                }
                PyList_SET_ITEM(one, 0, Py_NewRef(PyList_GET_ITEM(items, i)));
                gfx_msg probe;
                gf_msg_head_t h = {0};
                if (gfx_encode(e->st, GF_MSG_TASK, &h, one, 0, (size_t)-1,
                               &probe) < 0) {
                    bad = i;
                    Py_XSETREF(why, gfx_fetch_exception());
                }
                else {
                    gfx_msg_clear(&probe);
                }
                Py_DECREF(one);
            }
            if (bad >= 0) {
                PyObject *obj = PyList_GET_ITEM(items, bad);
                PyErr_Format(e->st->PicklingError,
                             "Pool.%s(): cannot send input index %lld (a %s) "
                             "to a worker process: %S", j->method,
                             (long long)(start + bad), Py_TYPE(obj)->tp_name,
                             why ? why : Py_None);
            }
            else {
                PyErr_Format(e->st->PicklingError,
                             "Pool.%s(): cannot send inputs %lld..%lld to a "
                             "worker process: %S", j->method,
                             (long long)start, (long long)(start + count - 1),
                             why ? why : Py_None);
            }
            gfx_chain_cause(why);
        }
    }
    if (rc < 0) {
        gfx_pp_ptask_free(e, t);
        return NULL;
    }
    t->bytes = (int64_t)t->msg.len;
    {
        gf_msg_t pm;
        if (gf_msg_parse(t->msg.kind, t->msg.data, t->msg.len, &pm) == 0) {
            for (uint32_t k = 0; k < pm.head.nbufs; k++) {
                t->bytes += (int64_t)pm.buflens[k];
            }
        }
    }
    j->bytes_per_item = t->bytes / (count > 0 ? count : 1);
    t->sink = j->sink;
    atomic_fetch_add(&j->sink->refs, 1);
    if (j->iter != NULL && items != NULL) {
        t->items = Py_NewRef(items);  /* to re-send a part after a crash */
    }
    return t;
}

/* The items [start, start+count) of a sequence input, as a list
 * (absolute indices: see `base`). */
static PyObject *
job_slice(ProcMapObject *j, int64_t start, int64_t count)
{
    start -= j->base;
    if (PyList_CheckExact(j->seq)) {
        return PyList_GetSlice(j->seq, (Py_ssize_t)start,
                               (Py_ssize_t)(start + count));
    }
    PyObject *sl = PySequence_GetSlice(j->seq, (Py_ssize_t)start,
                                       (Py_ssize_t)(start + count));
    if (sl == NULL) {
        return NULL;
    }
    PyObject *list = PySequence_List(sl);
    Py_DECREF(sl);
    return list;
}

/* starmap: make every item a tuple here, so that a bad item is reported
 * in the caller with its index (as the thread backend does) and the
 * workers get exactly what they unpack. */
static int
job_star_items(ProcMapObject *j, PyObject *items, int64_t start)
{
    Py_ssize_t n = PyList_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (PyTuple_CheckExact(item)) {
            continue;
        }
        PyObject *t = PySequence_Tuple(item);
        if (t == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError,
                             "Pool.%s(): input index %lld is not an iterable "
                             "of arguments: %R (type %.100s)", j->method,
                             (long long)(start + i), item,
                             Py_TYPE(item)->tp_name);
            }
            return -1;
        }
        PyList_SET_ITEM(items, i, t);
        Py_DECREF(item);
    }
    return 0;
}

/* Submit chunks until the window is full or the input ends. */
static int
job_fill(ProcMapObject *j)
{
    while (!j->stop_feeding && !j->exhausted &&
           (j->draining ||
            (j->inflight < j->window &&
             (j->inflight < (int64_t)j->e->n ||
              j->inflight_bytes < JOB_MAX_INFLIGHT_BYTES)))) {
        int64_t count = j->fixed;
        if (count <= 0) {
            count = gf_chunker_suggest(&j->chunker,
                                       j->total >= 0 ? j->total - j->next_in
                                                     : -1);
            /* Big items: the copy is the cost the chunker does not see
             * (it measures compute).  Keep chunks to a few MB so that
             * sending, computing and receiving overlap. */
            if (j->bytes_per_item > 0) {
                int64_t cap = JOB_CHUNK_BYTES / j->bytes_per_item;
                count = count < cap ? count : (cap > 0 ? cap : 1);
            }
        }
        if (count > (int64_t)GF_MSG_MAX_COUNT / 2) {
            count = GF_MSG_MAX_COUNT / 2;
        }
        /* max_tasks_per_worker: a chunk fits in one worker's life. */
        if (j->e->lc != NULL && j->e->lc->max_tasks > 0 &&
            count > j->e->lc->max_tasks) {
            count = j->e->lc->max_tasks;
        }
        if (j->total >= 0 && count > j->total - j->next_in) {
            count = j->total - j->next_in;
        }
        PyObject *items = NULL;
        if (j->iter != NULL) {
            items = PyList_New(0);
            if (items == NULL) {
                return -1;
            }
            while (PyList_GET_SIZE(items) < count) {
                PyObject *x = PyIter_Next(j->iter);
                if (x == NULL) {
                    if (PyErr_Occurred()) {
                        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                            Py_DECREF(items);
                            return -1;  /* Ctrl-C: now */
                        }
                        /* The input raised: the items it gave before
                         * still run, and the error is raised where the
                         * input ended, after their results. */
                        j->fill_err = gfx_fetch_exception();
                    }
                    j->exhausted = 1;
                    break;
                }
                int rc = PyList_Append(items, x);
                Py_DECREF(x);
                if (rc < 0) {
                    Py_DECREF(items);
                    return -1;
                }
            }
            count = PyList_GET_SIZE(items);
            if (count == 0) {
                Py_DECREF(items);
                return 0;
            }
        }
        else if (!j->is_range) {
            items = job_slice(j, j->next_in, count);
            if (items == NULL) {
                return -1;
            }
        }
        if (items != NULL && (j->flags & GFX_MAP_STAR) &&
            job_star_items(j, items, j->next_in) < 0) {
            Py_DECREF(items);
            return -1;
        }
        gfx_ptask *t;
        GFX_TIMED(j->e, ins_encode_ns,
                  t = job_encode(j, j->next_in, count, items));
        Py_XDECREF(items);
        if (t == NULL) {
            return -1;
        }
        j->next_in += count;
        if (j->total >= 0 && j->next_in >= j->total) {
            j->exhausted = 1;
        }
        j->inflight++;
        j->inflight_bytes += t->bytes;
        gfx_pp_submit(j->e, t);
    }
    return 0;
}

/* Re-send the parts of a crashed chunk around the input that crashed
 * (lazy maps: the others must still be delivered).  t becomes the
 * one-item failure at died_index. */
static int
job_split_crashed(ProcMapObject *j, gfx_ptask *t)
{
    int64_t d = t->died_index;
    int64_t a = t->index0, b = t->index0 + (int64_t)t->count;
    if (d < a || d >= b) {
        d = a;
    }
    for (int part = 0; part < 2; part++) {
        int64_t s0 = part == 0 ? a : d + 1, s1 = part == 0 ? d : b;
        if (s1 <= s0) {
            continue;
        }
        PyObject *items = NULL;
        if (t->items != NULL) {
            items = PyList_GetSlice(t->items, (Py_ssize_t)(s0 - a),
                                    (Py_ssize_t)(s1 - a));
        }
        else if (!j->is_range) {
            items = job_slice(j, s0, s1 - s0);
            if (items != NULL && (j->flags & GFX_MAP_STAR) &&
                job_star_items(j, items, s0) < 0) {
                Py_CLEAR(items);
            }
        }
        if (items == NULL && !j->is_range) {
            return -1;
        }
        gfx_ptask *nt;
        GFX_TIMED(j->e, ins_encode_ns,
                  nt = job_encode(j, s0, s1 - s0, items));
        Py_XDECREF(items);
        if (nt == NULL) {
            return -1;
        }
        j->inflight++;
        j->inflight_bytes += nt->bytes;
        gfx_pp_submit(j->e, nt);
    }
    t->index0 = d;
    t->count = 1;
    t->died_index = d;
    return 0;
}

/* Move chunks from the sink to the ready list.  block: wait (GIL
 * released, Ctrl-C honoured) until at least one arrives.  0, or -1. */
static int
job_receive(ProcMapObject *j, int block)
{
    gfx_sink *s = j->sink;
    if (block && !sink_ready(s)) {
        int rc = gfx_wait(&s->ec, sink_ready, s, -1.0);
        if (rc < 0) {
            return -1;
        }
    }
    pthread_mutex_lock(&s->lock);
    gfx_ptask *t = s->head;
    s->head = s->tail = NULL;
    atomic_store(&s->ndone, 0);
    pthread_mutex_unlock(&s->lock);
    while (t != NULL) {
        gfx_ptask *next = t->next;
        t->next = NULL;
        if ((t->outcome == OUT_DIED || t->outcome == OUT_TIMEDOUT) &&
            t->count > 1 && (j->flags & GFX_MAP_LAZY) && !j->stop_feeding) {
            if (job_split_crashed(j, t) < 0) {
                PyErr_WriteUnraisable(NULL);
            }
        }
        /* Keep the ready list sorted by input index. */
        gfx_ptask **pp = &j->ready;
        while (*pp != NULL && (*pp)->index0 < t->index0) {
            pp = &(*pp)->next;
        }
        t->next = *pp;
        *pp = t;
        if (t->outcome == OUT_DONE && t->compute_ns > 0) {
            gf_chunker_report(&j->chunker, t->count, t->compute_ns);
        }
        t = next;
    }
    return 0;
}

static gfx_ptask *
job_take(ProcMapObject *j)
{
    gfx_ptask *t = j->ready;
    if (t == NULL) {
        return NULL;
    }
    if (!(j->flags & GFX_MAP_UNORDERED) && !j->stop_feeding &&
        t->index0 != j->next_out) {
        return NULL;
    }
    j->ready = t->next;
    t->next = NULL;
    j->inflight--;
    j->inflight_bytes -= t->bytes;
    if (t->index0 + (int64_t)t->count > j->next_out) {
        j->next_out = t->index0 + (int64_t)t->count;
    }
    return t;
}

/* Make t the current chunk.  0, or -1 with an exception. */
static int
job_load(ProcMapObject *j, gfx_ptask *t)
{
    Py_CLEAR(j->cur);
    Py_CLEAR(j->cur_err);
    j->cur_pos = 0;
    j->cur_index0 = t->index0;
    j->cur_count = t->count;
    PyObject *errors, *failure;
    int64_t fidx;
    PyObject *res = gfx_pp_ptask_results(j->e, t, j->fn, &errors, &failure, &fidx);
    if (res == NULL && failure == NULL) {
        return -1;
    }
    if (res == NULL) {
        j->cur_err = PyDict_New();
        PyObject *k = PyLong_FromLongLong(fidx);
        if (j->cur_err == NULL || k == NULL ||
            PyDict_SetItem(j->cur_err, k, failure) < 0) {
            Py_XDECREF(k);
            Py_DECREF(failure);
            return -1;
        }
        Py_DECREF(k);
        Py_DECREF(failure);
        if (t->outcome == OUT_CANCELLED || t->outcome == OUT_BROKEN) {
            /* Nothing more will come. */
            j->stop_feeding = 1;
        }
        /* Hand out positions up to the failure as missing: only the
         * failure itself is raised (the parts around it were re-sent). */
        j->cur_index0 = fidx;
        j->cur_count = 1;
        j->cur = PyList_New(1);
        if (j->cur == NULL) {
            return -1;
        }
        PyList_SET_ITEM(j->cur, 0, Py_NewRef(Py_None));
        return 0;
    }
    j->cur = res;
    if (errors != NULL) {
        j->cur_err = PyDict_New();
        for (Py_ssize_t i = 0; j->cur_err && i < PyList_GET_SIZE(errors);
             i++) {
            int64_t idx;
            PyObject *exc = gfx_pp_entry_exception(j->e, t, PyList_GET_ITEM(errors, i),
                                            j->fn, &idx);
            PyObject *k = exc ? PyLong_FromLongLong(idx) : NULL;
            if (k == NULL || PyDict_SetItem(j->cur_err, k, exc) < 0) {
                Py_XDECREF(k);
                Py_XDECREF(exc);
                Py_DECREF(errors);
                return -1;
            }
            Py_DECREF(k);
            Py_DECREF(exc);
        }
        Py_DECREF(errors);
        if (j->cur_err == NULL) {
            return -1;
        }
    }
    return 0;
}

static int
of_sink(const gfx_ptask *t, const void *sink)
{
    return t->sink == sink;
}

/* Withdraw this job's chunks that no worker has started. */
static void
job_cancel_pending(ProcMapObject *j)
{
    if (j->e == NULL) {
        return;
    }
    gfx_ptask *t = gfx_pp_withdraw(j->e, of_sink, j->sink);
    while (t != NULL) {
        gfx_ptask *next = t->next;
        j->inflight--;
        j->inflight_bytes -= t->bytes;
        gfx_pp_ptask_free(j->e, t);
        t = next;
    }
}

static void
job_cancel(ProcMapObject *j)
{
    j->stop_feeding = 1;
    j->finished = 1;
    if (j->sink == NULL) {
        return;
    }
    atomic_store(&j->sink->cancelled, 1);
    gf_ec_notify_all(&j->sink->ec);
    job_cancel_pending(j);
    /* What has arrived already: free it now. */
    pthread_mutex_lock(&j->sink->lock);
    gfx_ptask *t = j->sink->head;
    j->sink->head = j->sink->tail = NULL;
    atomic_store(&j->sink->ndone, 0);
    pthread_mutex_unlock(&j->sink->lock);
    while (t != NULL) {
        gfx_ptask *next = t->next;
        gfx_pp_ptask_free(j->e, t);
        t = next;
    }
    while (j->ready != NULL) {
        gfx_ptask *next = j->ready->next;
        gfx_pp_ptask_free(j->e, j->ready);
        j->ready = next;
    }
    Py_CLEAR(j->cur);
    Py_CLEAR(j->cur_err);
}

/* The next item: a new reference; NULL with an exception (the item's
 * error, Ctrl-C) or NULL without one at the end. */
static PyObject *
job_next(ProcMapObject *j)
{
    for (;;) {
        if (j->cur != NULL && j->cur_pos < (Py_ssize_t)j->cur_count) {
            Py_ssize_t pos = j->cur_pos++;
            int64_t idx = j->cur_index0 + pos;
            if (j->cur_err != NULL) {
                PyObject *k = PyLong_FromLongLong(idx), *exc = NULL;
                int found = k ? gfx_dict_get_ref(j->cur_err, k, &exc) : -1;
                Py_XDECREF(k);
                if (found < 0) {
                    return NULL;
                }
                if (found) {
                    gfx_restore_exception(exc);
                    Py_DECREF(exc);
                    return NULL;
                }
            }
            if (pos < PyList_GET_SIZE(j->cur)) {
                return Py_NewRef(PyList_GET_ITEM(j->cur, pos));
            }
            continue;  /* a map that stopped at an error: no more here */
        }
        Py_CLEAR(j->cur);
        Py_CLEAR(j->cur_err);
        if (j->finished) {
            return NULL;
        }
        if (job_fill(j) < 0) {
            return NULL;
        }
        gfx_ptask *t = job_take(j);
        if (t == NULL) {
            if (j->inflight <= 0 && (j->exhausted || j->stop_feeding)) {
                j->finished = 1;
                if (j->fill_err != NULL) {
                    /* The input failed while join() fed it: here, after
                     * every result before it. */
                    PyObject *exc = j->fill_err;
                    j->fill_err = NULL;
                    gfx_restore_exception(exc);
                    Py_DECREF(exc);
                }
                return NULL;
            }
            if (job_receive(j, 1) < 0) {
                return NULL;
            }
            continue;
        }
        int rc;
        GFX_TIMED(j->e, ins_decode_ns, rc = job_load(j, t));
        gfx_pp_ptask_free(j->e, t);
        if (rc < 0) {
            return NULL;
        }
    }
}

PyObject *
gfx_procmap_next(PyObject *op)
{
    ProcMapObject *j = PM(op);
    /* A job whose pool was shut down still works on the retired engine:
     * what was in flight comes back cancelled, nothing new is sent. */
    PyObject *item = job_next(j);
    if (item == NULL && PyErr_Occurred() &&
        PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        job_cancel(j);
    }
    return item;
}

void
gfx_procmap_cancel(PyObject *op)
{
    ProcMapObject *j = PM(op);
    if (j->e != NULL && j->pool != NULL) {
        job_cancel(j);
    }
    else {
        j->finished = 1;
    }
}

const char *
gfx_procmap_method(PyObject *op)
{
    return PM(op)->method;
}

/* ---- join(): open lazy jobs -------------------------------------------------------- */

static void
job_link(ProcMapObject *j)
{
    gfx_engine *e = j->e;
    j->link.job = (PyObject *)j;
    j->link.prev = NULL;
    pthread_mutex_lock(&e->jobs_lock);
    j->link.next = e->lazy_jobs;
    if (e->lazy_jobs != NULL) {
        e->lazy_jobs->prev = &j->link;
    }
    e->lazy_jobs = &j->link;
    j->linked = 1;
    pthread_mutex_unlock(&e->jobs_lock);
}

static void
job_unlink(ProcMapObject *j)
{
    if (!j->linked) {
        return;
    }
    gfx_engine *e = j->e;
    pthread_mutex_lock(&e->jobs_lock);
    if (j->link.prev != NULL) {
        j->link.prev->next = j->link.next;
    }
    else {
        e->lazy_jobs = j->link.next;
    }
    if (j->link.next != NULL) {
        j->link.next->prev = j->link.prev;
    }
    j->linked = 0;
    pthread_mutex_unlock(&e->jobs_lock);
}

int
gfx_procmap_drain(gfx_engine *e)
{
    /* Strong references first, under the lock (Py_NewRef cannot run a
     * collection that would free a job and take the lock again); then
     * feed each without it, since feeding runs the input's Python code. */
    Py_ssize_t n = 0;
    pthread_mutex_lock(&e->jobs_lock);
    for (gfx_lazyjob *l = e->lazy_jobs; l != NULL; l = l->next) {
        n++;
    }
    pthread_mutex_unlock(&e->jobs_lock);
    if (n == 0) {
        return 0;
    }
    PyObject **jobs = PyMem_Calloc((size_t)n, sizeof *jobs);
    if (jobs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t got = 0;
    pthread_mutex_lock(&e->jobs_lock);
    for (gfx_lazyjob *l = e->lazy_jobs; l != NULL && got < n; l = l->next) {
        jobs[got++] = Py_NewRef(l->job);
    }
    pthread_mutex_unlock(&e->jobs_lock);
    int rc = 0;
    for (Py_ssize_t i = 0; i < got; i++) {
        ProcMapObject *j = PM(jobs[i]);
        if (rc == 0 && !j->finished && !j->stop_feeding && !j->exhausted) {
            j->draining = 1;
            if (job_fill(j) < 0) {
                PyObject *exc = gfx_fetch_exception();
                if (!PyErr_GivenExceptionMatches(exc, PyExc_Exception)) {
                    /* Ctrl-C (or SystemExit): join() itself stops. */
                    gfx_restore_exception(exc);
                    Py_DECREF(exc);
                    rc = -1;
                }
                else {
                    /* The input's own error (or an unpicklable item) is
                     * the reader's, at the position where it happened. */
                    j->fill_err = exc;
                    j->exhausted = 1;
                }
            }
        }
        Py_DECREF(jobs[i]);
    }
    PyMem_Free(jobs);
    return rc;
}

static int
ProcMap_traverse(PyObject *op, visitproc visit, void *arg)
{
    ProcMapObject *j = PM(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(j->pool);
    Py_VISIT(j->fn);
    Py_VISIT(j->seq);
    Py_VISIT(j->iter);
    Py_VISIT(j->cur);
    Py_VISIT(j->cur_err);
    Py_VISIT(j->fill_err);
    return 0;
}

static int
ProcMap_clear(PyObject *op)
{
    ProcMapObject *j = PM(op);
    job_unlink(j);
    Py_CLEAR(j->fill_err);
    if (j->sink != NULL) {
        gfx_procmap_cancel(op);
        gfx_pp_sink_decref(j->sink);
        j->sink = NULL;
    }
    Py_CLEAR(j->pool);
    Py_CLEAR(j->fn);
    Py_CLEAR(j->seq);
    Py_CLEAR(j->iter);
    Py_CLEAR(j->cur);
    Py_CLEAR(j->cur_err);
    return 0;
}

static void
ProcMap_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    ProcMap_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyType_Slot ProcMap_slots[] = {
    {Py_tp_doc, (void *)"A map over worker processes (internal)."},
    {Py_tp_dealloc, ProcMap_dealloc},
    {Py_tp_traverse, ProcMap_traverse},
    {Py_tp_clear, ProcMap_clear},
    {0, NULL},
};

PyType_Spec gfx_procmap_spec = {
    .name = "gilfree._core._ProcMap",
    .basicsize = sizeof(ProcMapObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = ProcMap_slots,
};

static int64_t
sink_count(void *arg)
{
    return atomic_load_explicit(&((gfx_sink *)arg)->items_done,
                                memory_order_relaxed);
}

PyObject *
gfx_proc_map(PoolObject *pool, PyObject *fn, PyObject *iterable,
             PyObject *chunksize, int flags, const char *method,
             PyObject *progress, int64_t index_base)
{
    gfx_engine *e = pool->proc;
    gfx_state *st = e->st;
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError,
                     "Pool.%s(): func must be callable, got %R (type %.100s)",
                     method, fn, Py_TYPE(fn)->tp_name);
        return NULL;
    }
    int64_t fixed = 0;
    if (gfx_parse_chunksize(chunksize, method, &fixed) < 0) {
        return NULL;
    }
    if (gfx_pp_check_owner(e, method) < 0) {
        return NULL;
    }
    ProcMapObject *j = PyObject_GC_New(ProcMapObject, st->ProcMap_Type);
    if (j == NULL) {
        return NULL;
    }
    memset((char *)j + sizeof(PyObject), 0,
           sizeof(ProcMapObject) - sizeof(PyObject));
    j->pool = (PoolObject *)Py_NewRef(pool);
    j->e = e;
    j->fn = Py_NewRef(fn);
    j->flags = flags;
    j->method = method;
    j->fixed = fixed;
    j->total = -1;
    /* Chunks in flight: adaptive chunks carry ~3 ms of work each, so a
     * few per worker keep everyone busy; small fixed chunks need many
     * more to hide the round trip (the per-worker queues still only take
     * ~4 ms of work each: the rest waits here, so balance is kept). */
    j->window = 3 * (int64_t)e->n < 4 ? 4 : 3 * (int64_t)e->n;
    if (flags & GFX_MAP_LAZY) {
        /* The read-ahead contract of imap (docs/api-contract.md). */
        j->window = 4 * (int64_t)e->n;
    }
    else if (fixed > 0 && fixed < 64) {
        j->window = 64 * (int64_t)e->n / fixed + j->window;
    }
    PyObject_GC_Track(j);
    j->sink = PyMem_RawCalloc(1, sizeof *j->sink);
    if (j->sink == NULL) {
        Py_DECREF(j);
        return PyErr_NoMemory();
    }
    atomic_init(&j->sink->refs, 1);
    pthread_mutex_init(&j->sink->lock, NULL);
    gf_ec_init(&j->sink->ec);

    if (PyRange_Check(iterable)) {
        /* start, step and length as C integers, when they fit. */
        PyObject *a = PyObject_GetAttrString(iterable, "start");
        PyObject *b = PyObject_GetAttrString(iterable, "step");
        Py_ssize_t n = PyObject_Length(iterable);
        int ov1 = 1, ov2 = 1;
        long long sa = a ? PyLong_AsLongLongAndOverflow(a, &ov1) : 0;
        long long sb = b ? PyLong_AsLongLongAndOverflow(b, &ov2) : 0;
        Py_XDECREF(a);
        Py_XDECREF(b);
        if (n < 0 || PyErr_Occurred()) {
            PyErr_Clear();
            ov1 = 1;
        }
        if (!ov1 && !ov2 && !(flags & GFX_MAP_STAR)) {
            /* The last item must fit in int64 as well. */
            long long last;
            if (n == 0 || !__builtin_mul_overflow((long long)(n - 1), sb, &last)
                    ? (n == 0 || !__builtin_add_overflow(sa, last, &last))
                    : 0) {
                j->is_range = 1;
                j->r_start = sa;
                j->r_step = sb;
                j->total = n;
            }
        }
    }
    if (!j->is_range) {
        if (PyList_CheckExact(iterable) || PyTuple_CheckExact(iterable)) {
            j->seq = Py_NewRef(iterable);
            j->total = PySequence_Size(iterable);
        }
        else {
            j->iter = PyObject_GetIter(iterable);
            if (j->iter == NULL) {
                if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                    PyErr_Clear();
                    PyErr_Format(PyExc_TypeError,
                                 "Pool.%s(): iterable must be iterable, got "
                                 "%R (type %.100s)", method, iterable,
                                 Py_TYPE(iterable)->tp_name);
                }
                Py_DECREF(j);
                return NULL;
            }
            Py_ssize_t hint = PyObject_LengthHint(iterable, -1);
            if (hint < 0) {
                PyErr_Clear();
            }
        }
    }
    gf_chunker_init(&j->chunker, j->total, 0, e->n, MAP_TARGET_NS);
    if (j->total == 0) {
        j->exhausted = 1;
    }
    j->base = index_base;
    j->next_in = j->next_out = index_base;
    if (j->total >= 0) {
        j->total += index_base;
    }
    if (flags & GFX_MAP_LAZY) {
        job_link(j);
        /* Start the work now; results are pulled by the iterator. */
        if (job_fill(j) < 0) {
            job_cancel(j);
            Py_DECREF(j);
            return NULL;
        }
        return gfx_mapiter_wrap((PyObject *)j);
    }
    /* map / starmap: the results in input order, or the error of the
     * lowest failing input after the chunks in flight have come back. */
    PyObject *out = PyList_New(0);
    PyObject *first_err = NULL;
    if (out == NULL) {
        job_cancel(j);
        Py_DECREF(j);
        return NULL;
    }
    gfx_progress prog = {progress, sink_count, j->sink, 0, 0};
    gfx_progress *prev = gfx__progress;
    if (progress != NULL) {
        gfx__progress = &prog;
    }
    for (;;) {
        if (first_err == NULL && job_fill(j) < 0) {
            /* Not picklable, or the input raised: stop and report it. */
            first_err = gfx_fetch_exception();
            j->stop_feeding = 1;
            job_cancel_pending(j);
        }
        gfx_ptask *t = job_take(j);
        if (t == NULL) {
            if (j->inflight <= 0 && (j->exhausted || j->stop_feeding)) {
                break;
            }
            if (job_receive(j, 1) < 0) {
                /* Ctrl-C: abandon the job. */
                gfx__progress = prev;
                job_cancel(j);
                Py_XDECREF(first_err);
                Py_DECREF(out);
                Py_DECREF(j);
                return NULL;
            }
            continue;
        }
        if (first_err != NULL) {
            gfx_pp_ptask_free(e, t);  /* draining after an error */
            continue;
        }
        int rc;
        GFX_TIMED(j->e, ins_decode_ns, rc = job_load(j, t));
        gfx_pp_ptask_free(e, t);
        if (rc < 0) {
            first_err = gfx_fetch_exception();
            j->stop_feeding = 1;
            job_cancel_pending(j);
            continue;
        }
        if (j->cur_err != NULL && PyDict_GET_SIZE(j->cur_err) > 0) {
            /* The lowest failing index of this chunk; chunks are taken
             * in order, so it is the lowest overall. */
            PyObject *key, *val, *best = NULL;
            Py_ssize_t pos = 0;
            long long bi = 0;
            while (PyDict_Next(j->cur_err, &pos, &key, &val)) {
                long long k = PyLong_AsLongLong(key);
                if (best == NULL || k < bi) {
                    best = val;
                    bi = k;
                }
            }
            first_err = Py_NewRef(best);
            j->stop_feeding = 1;
            job_cancel_pending(j);
            Py_CLEAR(j->cur);
            Py_CLEAR(j->cur_err);
            continue;
        }
        Py_ssize_t n = PyList_GET_SIZE(out);
        if (PyList_SetSlice(out, n, n, j->cur) < 0) {
            first_err = gfx_fetch_exception();
            j->stop_feeding = 1;
            job_cancel_pending(j);
        }
        Py_CLEAR(j->cur);
    }
    gfx__progress = prev;
    if (first_err == NULL && j->fill_err != NULL) {
        first_err = j->fill_err;  /* the input raised after the last item */
        j->fill_err = NULL;
    }
    if (first_err == NULL && progress != NULL &&
        gfx_progress_tick(&prog, 1) < 0) {
        first_err = gfx_fetch_exception();
    }
    job_cancel(j);
    Py_DECREF(j);
    if (first_err != NULL) {
        Py_DECREF(out);
        gfx_restore_exception(first_err);
        Py_DECREF(first_err);
        return NULL;
    }
    return out;
}
