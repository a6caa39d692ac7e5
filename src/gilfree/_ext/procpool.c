/* The process backend, pool side.
 *
 *   caller threads                  collector thread            worker i
 *   --------------                  ----------------            --------
 *   encode a task (GIL)             drain every result ring     worker.c
 *   lock; queue; dispatch; unlock   (no GIL): copy the frame,
 *      dispatch = write FUNC/TASK   pop the slot's FIFO,
 *      frames into a worker's       hand the task to its owner
 *      task ring (and the buffers'  lock; dispatch; unlock
 *      descriptors on its socket)   settle AsyncResults/Futures
 *   map/imap: wait for chunks,        (GIL, once per batch)
 *   decode them (GIL)               deaths, timeouts, new workers
 *
 * Channels: per worker one memfd with a control block and two rings (tasks
 * in, results out) and a socket pair for descriptors; one pool-wide memfd
 * holds the doorbell, an eventcount every worker notifies after a result
 * (and the supervisor after a death), so one collector thread sleeps on all
 * workers at once and is woken by a system call only when it sleeps.
 *
 * Tasks (gfx_ptask) are C structs.  Who owns one at each moment:
 *   pending queue -> a slot's FIFO (sent) -> done: the map sink, or the
 *   collector's settle list (apply/submit), or garbage (owner gone).
 * The engine lock protects the pending queue, the FIFOs, slot states, the
 * function table and `outstanding`.  It is never held while waiting for the
 * GIL, so threads holding the GIL may take it.  Python references in a task
 * are only touched with the GIL, by whoever owns the task at that moment.
 *
 * Workers process their ring in order, so results come back in FIFO order
 * per worker; when a worker dies, the head of its FIFO is the task it held
 * (if its control block says so): that one fails (or is retried), the rest
 * never started and go back to the pending queue. */
#include "procpool.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

/* ---- small helpers ----------------------------------------------------------- */

void
gfx_pp_sink_decref(gfx_sink *s)
{
    if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1) {
        pthread_mutex_destroy(&s->lock);
        PyMem_RawFree(s);
    }
}

static void
fnent_unpin_locked(gfx_fnent *fe)
{
    if (fe != NULL) {
        fe->pins--;
    }
}

/* Free a task: with the GIL (Python references), engine lock NOT held. */
void
gfx_pp_ptask_free(gfx_engine *e, gfx_ptask *t)
{
    if (t == NULL) {
        return;
    }
    if (t->fe != NULL) {
        eng_lock(e);
        fnent_unpin_locked(t->fe);
        eng_unlock(e);
    }
    Py_XDECREF(t->owner);
    Py_XDECREF(t->items);
    gfx_pp_sink_decref(t->sink);
    gfx_msg_clear(&t->msg);
    PyMem_RawFree(t->res);
    for (uint32_t i = 0; i < t->res_nfds; i++) {
        if (t->res_fds[i] >= 0) {
            close(t->res_fds[i]);
        }
    }
    PyMem_RawFree(t->res_fds);
    PyMem_RawFree(t);
}

gfx_ptask *
gfx_pp_ptask_new(gfx_engine *e, int kind)
{
    gfx_ptask *t = PyMem_RawCalloc(1, sizeof *t);
    if (t == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    t->id = atomic_fetch_add(&e->next_task_id, 1) + 1;
    t->kind = kind;
    t->died_index = -1;
    return t;
}

/* Send a message without payload (FORGET, STOP) to a worker, without
 * waiting: 0, or GF_EAGAIN when its ring is full.  Engine lock held. */
static int
send_control(gfx_pslot *s, uint32_t kind, uint64_t id)
{
    gf_msg_head_t h = {0};
    h.id = id;
    h.codec = GF_CODEC_NONE;
    unsigned char buf[GF_MSG_HEAD_SIZE];
    gf_msg_write_prefix(buf, &h, NULL);
    return gf_ring_try_send(s->tx, kind, buf, GF_MSG_HEAD_SIZE);
}

/* ---- the function table ----------------------------------------------------------- */

/* 1 if fn is reachable as __main__.<its qualname> and __main__ is a script
 * file (so a worker that imports the script finds the same function). */
static int
main_function_by_name(PyObject *fn)
{
    PyObject *main = PyImport_ImportModule("__main__");
    if (main == NULL) {
        PyErr_Clear();
        return 0;
    }
    int ok = 0;
    PyObject *file = PyObject_GetAttrString(main, "__file__");
    PyObject *qual = file ? PyObject_GetAttrString(fn, "__qualname__") : NULL;
    PyObject *parts = qual && PyUnicode_Check(qual)
                          ? PyObject_CallMethod(qual, "split", "s", ".") : NULL;
    if (parts != NULL && PyList_Check(parts)) {
        PyObject *obj = Py_NewRef(main);
        for (Py_ssize_t i = 0; obj != NULL && i < PyList_GET_SIZE(parts); i++) {
            /* "<locals>" / "<lambda>" parts are not attributes: no. */
            Py_SETREF(obj, PyObject_GetAttr(obj, PyList_GET_ITEM(parts, i)));
        }
        ok = obj == fn;
        Py_XDECREF(obj);
    }
    PyErr_Clear();
    Py_XDECREF(parts);
    Py_XDECREF(qual);
    Py_XDECREF(file);
    Py_DECREF(main);
    return ok;
}

/* The entry for fn, encoding it on first use, pinned for one task.  With
 * the GIL; takes the engine lock. */
gfx_fnent *
gfx_pp_fn_get(gfx_engine *e, PyObject *fn)
{
    eng_lock(e);
    for (gfx_fnent *fe = e->fns; fe != NULL; fe = fe->next) {
        if (fe->fn == fn) {
            fe->pins++;
            fe->last_use = ++e->use_clock;
            eng_unlock(e);
            return fe;
        }
    }
    uint64_t id = ++e->next_fn_id;
    eng_unlock(e);

    gfx_fnent *fe = PyMem_RawCalloc(1, sizeof *fe);
    if (fe == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    /* A function of __main__ goes by name when the main module is a script
     * the workers import too (multiprocessing runs it in spawn/forkserver
     * workers; fork inherits it), so that it shares that module's globals
     * with the initializer, as with the stdlib; otherwise (a REPL, python
     * -c, a notebook, a nested function) by value, with cloudpickle. */
    int flags = 0;
    PyObject *mod = PyObject_GetAttrString(fn, "__module__");
    if (mod == NULL) {
        PyErr_Clear();
    }
    else {
        if (PyUnicode_Check(mod) &&
            PyUnicode_CompareWithASCIIString(mod, "__main__") == 0 &&
            !main_function_by_name(fn)) {
            flags |= GFX_ENC_CLOUD;
        }
        Py_DECREF(mod);
    }
    gf_msg_head_t head = {0};
    head.id = id;
    gfx_segcache *prev = gfx_segcache_use(e->segs);
    int erc = gfx_encode(e->st, GF_MSG_FUNC, &head, fn, flags,
                         GF_RING_MAX_PAYLOAD(RING_CAPACITY), &fe->def);
    gfx_segcache_use(prev);
    if (erc < 0) {
        PyMem_RawFree(fe);
        PyObject *why = gfx_fetch_exception();
        PyObject *name = gfx_callable_name(fn);
        PyErr_Format(e->st->PicklingError,
                     "cannot send the function %S (a %s) to a worker "
                     "process: %S", name ? name : Py_None,
                     Py_TYPE(fn)->tp_name, why ? why : Py_None);
        Py_XDECREF(name);
        gfx_chain_cause(why);
        return NULL;
    }
    fe->id = id;
    fe->fn = Py_NewRef(fn);
    fe->pins = 1;

    PyObject *evicted = NULL;
    eng_lock(e);
    fe->last_use = ++e->use_clock;
    fe->next = e->fns;
    e->fns = fe;
    e->nfns++;
    /* Forget the least recently used unpinned function if over the limit.
     * Workers keep their copy until a FORGET (sent below, in ring order). */
    if (e->nfns > FN_CACHE_MAX) {
        gfx_fnent **victim = NULL;
        for (gfx_fnent **pp = &e->fns; *pp != NULL; pp = &(*pp)->next) {
            if ((*pp)->pins == 0 &&
                (victim == NULL || (*pp)->last_use < (*victim)->last_use)) {
                victim = pp;
            }
        }
        if (victim != NULL) {
            gfx_fnent *v = *victim;
            *victim = v->next;
            e->nfns--;
            for (uint32_t i = 0; i < e->n; i++) {
                gfx_pslot *s = &e->slots[i];
                for (uint32_t k = 0; k < s->nsent_fns; k++) {
                    if (s->sent_fns[k] == v) {
                        s->sent_fns[k] = s->sent_fns[--s->nsent_fns];
                        if (s->state == SLOT_LIVE) {
                            /* Best effort: a full ring only means the
                             * worker keeps a stale function. */
                            (void)send_control(s, GF_MSG_FORGET, v->id);
                        }
                        break;
                    }
                }
            }
            evicted = v->fn;
            gfx_msg_clear(&v->def);
            PyMem_RawFree(v);
        }
    }
    eng_unlock(e);
    Py_XDECREF(evicted);
    return fe;
}

/* ---- dispatch (engine lock held, no GIL needed) -------------------------------------- */

static int
slot_has_fn(gfx_pslot *s, gfx_fnent *fe)
{
    for (uint32_t k = 0; k < s->nsent_fns; k++) {
        if (s->sent_fns[k] == fe) {
            return 1;
        }
    }
    return 0;
}

/* Write one message into a slot's task ring: reserve, send the
 * descriptors, copy, commit.  0, GF_EAGAIN (no room now) or an error. */
static int
slot_write(gfx_pslot *s, const gfx_msg *m)
{
    void *dst;
    int rc = gf_ring_try_reserve(s->tx, (uint32_t)m->len, &dst);
    if (rc < 0) {
        return rc;
    }
    if (m->nfds > 0) {
        gfx_msg_deliver(m);
        rc = gfx_send_fds(s->sock, m->fds, m->nfds);
        if (rc < 0) {
            return rc;
        }
    }
    memcpy(dst, m->data, m->len);
    return gf_ring_commit(s->tx, m->kind, (uint32_t)m->len);
}

static int
slot_accepts(gfx_engine *e, gfx_pslot *s)
{
    if (s->state != SLOT_LIVE || s->broken || s->retiring ||
        atomic_load_explicit(&s->dead, memory_order_relaxed)) {
        return 0;
    }
    if (s->nfifo < 2) {
        return 1;
    }
    /* Until a result tells what an item costs, one call ahead per worker:
     * long calls must not queue up behind each other (cancellation and
     * balance), and short ones bring the first measurement quickly. */
    int64_t avg = atomic_load_explicit(&e->avg_item_ns, memory_order_relaxed);
    if (avg <= 0) {
        return 0;
    }
    return s->nfifo < MAX_FIFO && s->queued_items * avg < QUEUED_WORK_NS;
}

/* max_tasks_per_worker: a worker takes a task only if it fits in what is
 * left of its budget (it never runs more than the limit). */
static int
slot_fits(gfx_engine *e, gfx_pslot *s, gfx_ptask *t)
{
    int64_t max = e->lc != NULL ? e->lc->max_tasks : 0;
    /* A fresh worker takes any task: map chunks are cut to the budget
     * (procmap.c), so only this guard against a hang would exceed it. */
    return max <= 0 || s->sent_items == 0 ||
           s->sent_items + (int64_t)t->count <= max;
}

/* Retiring workers get STOP after their last task (now, or as soon as
 * their ring has room). */
static void
send_stops_locked(gfx_engine *e)
{
    for (uint32_t i = 0; i < e->n; i++) {
        gfx_pslot *s = &e->slots[i];
        if (s->state == SLOT_LIVE && s->retiring && !s->stop_sent &&
            send_control(s, GF_MSG_STOP, 0) == 0) {
            s->stop_sent = 1;
        }
    }
}

/* No worker can take t within its budget: retire those that have used
 * some of theirs (they are replaced, fresh, once they have exited).
 * Returns 1 if one was retired. */
static int
retire_spent_locked(gfx_engine *e, gfx_ptask *t)
{
    int any = 0;
    for (uint32_t i = 0; i < e->n; i++) {
        gfx_pslot *s = &e->slots[i];
        if (slot_accepts(e, s) && !slot_fits(e, s, t) && s->sent_items > 0) {
            s->retiring = 1;
            any = 1;
        }
    }
    send_stops_locked(e);
    return any;
}

static void
dispatch_locked(gfx_engine *e)
{
    send_stops_locked(e);
    while (e->pend_head != NULL) {
        gfx_ptask *t = e->pend_head;
        /* The least loaded worker that accepts work. */
        gfx_pslot *best = NULL;
        for (uint32_t i = 0; i < e->n; i++) {
            gfx_pslot *s = &e->slots[i];
            if (slot_accepts(e, s) && slot_fits(e, s, t) &&
                (best == NULL || s->queued_items < best->queued_items)) {
                best = s;
            }
        }
        if (best == NULL) {
            (void)retire_spent_locked(e, t);
            return;
        }
        int rc = 0;
        if (!slot_has_fn(best, t->fe)) {
            if (best->nsent_fns == best->capsent_fns) {
                uint32_t cap = best->capsent_fns ? 2 * best->capsent_fns : 16;
                gfx_fnent **a = PyMem_RawRealloc(best->sent_fns,
                                                 cap * sizeof *a);
                if (a == NULL) {
                    return;  /* try again later */
                }
                best->sent_fns = a;
                best->capsent_fns = cap;
            }
            rc = slot_write(best, &t->fe->def);
            if (rc == 0) {
                best->sent_fns[best->nsent_fns++] = t->fe;
            }
        }
        if (rc == 0) {
            rc = slot_write(best, &t->msg);
        }
        if (rc == GF_EAGAIN) {
            /* Its ring is full: it will drain.  (Rare: the FIFO limits
             * keep queued work well below the ring's size.) */
                return;
        }
        if (rc < 0) {
            /* The worker is going away (closed ring, broken socket): its
             * death is on its way; the task stays pending. */
            gf_ring_close(best->tx);
            best->broken = 1;
            continue;
        }
        e->pend_head = t->next;
        if (e->pend_head == NULL) {
            e->pend_tail = NULL;
        }
        t->next = NULL;
        if (best->tail) {
            best->tail->next = t;
        }
        else {
            best->head = t;
        }
        best->tail = t;
        best->nfifo++;
        best->queued_items += t->count;
        if (e->lc != NULL && e->lc->max_tasks > 0) {
            best->sent_items += t->count;
            if (best->sent_items >= e->lc->max_tasks) {
                best->retiring = 1;
                send_stops_locked(e);
            }
        }
    }
}

static void
pending_push_locked(gfx_engine *e, gfx_ptask *t, int front)
{
    if (front) {
        t->next = e->pend_head;
        e->pend_head = t;
        if (e->pend_tail == NULL) {
            e->pend_tail = t;
        }
    }
    else {
        t->next = NULL;
        if (e->pend_tail) {
            e->pend_tail->next = t;
        }
        else {
            e->pend_head = t;
        }
        e->pend_tail = t;
    }
}

/* Withdraw a sent task that may not have started: its worker skips it
 * (and answers CANCELLED).  Engine lock held. */
void
gfx_pp_withdraw_sent_locked(gfx_pslot *s, gfx_ptask *t)
{
    if (s->ctl == NULL) {
        return;
    }
    uint32_t k = s->cancel_next++ % GFX_CANCEL_SLOTS;
    atomic_store_explicit(&s->ctl->cancel[k], t->id, memory_order_release);
}

/* Queue a new task and dispatch what can go.  With or without the GIL. */
static void deliver_locked(gfx_engine *e, gfx_ptask *t);

void
gfx_pp_submit(gfx_engine *e, gfx_ptask *t)
{
    eng_lock(e);
    if (e->shut) {
        /* The pool was shut down under us (terminate() from another
         * thread): the task is cancelled at once.  We hold the GIL. */
        eng_unlock(e);
        t->outcome = OUT_CANCELLED;
        if (t->kind == PT_MAP) {
            eng_lock(e);
            e->outstanding++;
            deliver_locked(e, t);
            eng_unlock(e);
        }
        else {
            gfx_pp_settle_one(e, t);
            gfx_pp_ptask_free(e, t);
        }
        return;
    }
    e->outstanding++;
    atomic_store(&e->outstanding_atomic, e->outstanding);
    pending_push_locked(e, t, 0);
    dispatch_locked(e);
    eng_unlock(e);
}

/* ---- settling ---------------------------------------------------------------- */

/* The collector is done with t (outcome set): hand it to its owner.
 * Engine lock held. */
static void
deliver_locked(gfx_engine *e, gfx_ptask *t)
{
    e->outstanding--;
    atomic_store(&e->outstanding_atomic, e->outstanding);
    if (e->outstanding == 0) {
        gf_ec_notify_all(&e->idle_ec);
    }
    t->next = NULL;
    if (t->kind == PT_MAP) {
        gfx_sink *s = t->sink;
        if (atomic_load(&s->cancelled)) {
            t->next = e->garbage;
            e->garbage = t;
            return;
        }
        if (t->outcome == OUT_DONE) {
            atomic_fetch_add_explicit(&s->items_done, t->count,
                                      memory_order_relaxed);
        }
        pthread_mutex_lock(&s->lock);
        if (s->tail) {
            s->tail->next = t;
        }
        else {
            s->head = t;
        }
        s->tail = t;
        atomic_fetch_add(&s->ndone, 1);
        pthread_mutex_unlock(&s->lock);
        gf_ec_notify_all(&s->ec);
        return;
    }
    if (e->settle_tail) {
        e->settle_tail->next = t;
    }
    else {
        e->settle_head = t;
    }
    e->settle_tail = t;
}

/* A worker has died: settle or requeue what it held.  Engine lock held. */
static void
handle_death_locked(gfx_engine *e, gfx_pslot *s)
{
    s->state = SLOT_DEAD;
    if (!s->hello) {
        e->startup_failures++;
    }
    gfx_ptask *t = s->head, *requeue_head = NULL, **rq = &requeue_head;
    uint64_t held = atomic_load_explicit(&s->ctl->cur_task,
                                         memory_order_acquire);
    int64_t held_index = atomic_load_explicit(&s->ctl->cur_index,
                                              memory_order_relaxed);
    s->head = s->tail = NULL;
    s->nfifo = 0;
    s->queued_items = 0;
    if (held == GFX_TASK_ID_INIT || held == GFX_TASK_ID_EXIT) {
        /* Killed (init/exit_timeout) or crashed in its initializer or
         * exit function: reported with the GIL (gfx_pp_life_death). */
        s->life_death = held == GFX_TASK_ID_INIT ? LIFE_DEATH_INIT
                                                 : LIFE_DEATH_EXIT;
        s->life_timed_out = s->timeout_task == held;
        held = 0;
    }
    while (t != NULL) {
        gfx_ptask *next = t->next;
        t->next = NULL;
        int was_held = (t->id == held) || (s->timeout_task == t->id);
        if (atomic_load(&e->terminating)) {
            t->outcome = OUT_CANCELLED;
            t->pid = s->pid;  /* it was sent: it counts as started */
            deliver_locked(e, t);
            t = next;
            continue;
        }
        if (was_held && s->timeout_task == t->id) {
            t->outcome = OUT_TIMEDOUT;
            t->died_index = s->timeout_index;
        }
        else if (was_held && t->attempts < e->retries) {
            t->attempts++;
            was_held = 0;  /* run it again */
        }
        else if (was_held) {
            t->outcome = OUT_DIED;
            t->died_index = held_index;
        }
        if (was_held) {
            t->exit = s->exit;
            t->pid = s->pid;
            deliver_locked(e, t);
        }
        else {
            *rq = t;
            rq = &t->next;
        }
        t = next;
    }
    /* Back to the front of the queue, in their order. */
    if (requeue_head != NULL) {
        gfx_ptask *last = requeue_head;
        while (last->next) {
            last = last->next;
        }
        last->next = e->pend_head;
        e->pend_head = requeue_head;
        if (e->pend_tail == NULL) {
            e->pend_tail = last;
        }
    }
    s->timeout_task = 0;
}

/* ---- the collector thread ---------------------------------------------------- */

/* Consume one frame from slot s.  Engine lock NOT held.  Returns 0, or
 * -1 on a protocol violation (the worker is then killed). */
static int
consume_frame(gfx_engine *e, gfx_pslot *s, gf_ring_frame_t *f)
{
    gf_msg_t msg;
    if (gf_msg_parse(f->kind, f->data, f->len, &msg) < 0) {
        return -1;
    }
    if (msg.kind == GF_MSG_HELLO) {
        gf_ring_release(s->rx);
        s->startup_ns = gf_now_ns() - s->start_req_ns;
        s->hello = 1;
        e->startup_failures = 0;
        return 0;
    }
    if (msg.kind == GF_MSG_LIFE) {
        /* Copied now, decoded with the GIL (gfx_pp_life_batch). */
        gfx_life *l = PyMem_RawCalloc(1, sizeof *l);
        unsigned char *copy = l ? PyMem_RawMalloc(f->len ? f->len : 1) : NULL;
        if (copy == NULL) {
            PyMem_RawFree(l);
            return -1;
        }
        memcpy(copy, f->data, f->len);
        l->data = copy;
        l->len = f->len;
        l->slot = (uint32_t)(s - e->slots);
        l->pid = s->pid;
        if (msg.head.nbufs > 0) {
            l->fds = PyMem_RawMalloc(sizeof(int) * msg.head.nbufs);
            if (l->fds == NULL || gfx_recv_fds(s->sock, &msg, l->fds) < 0) {
                PyMem_RawFree(l->fds);
                l->fds = NULL;
                gfx_pp_life_free(l);
                return -1;
            }
            l->nfds = msg.head.nbufs;
        }
        gf_ring_release(s->rx);
        eng_lock(e);
        if (e->life_tail != NULL) {
            e->life_tail->next = l;
        }
        else {
            e->life_head = l;
        }
        e->life_tail = l;
        eng_unlock(e);
        return 0;
    }
    if (msg.kind != GF_MSG_RESULT) {
        return -1;
    }
    /* Only the collector pops FIFOs, so the head cannot change under us. */
    eng_lock(e);
    gfx_ptask *t = s->head;
    eng_unlock(e);
    if (t == NULL || t->id != msg.head.id) {
        return -1;
    }
    unsigned char *copy = PyMem_RawMalloc(f->len ? f->len : 1);
    int *fds = NULL;
    if (copy == NULL) {
        return -1;
    }
    memcpy(copy, f->data, f->len);
    if (msg.head.nbufs > 0) {
        fds = PyMem_RawMalloc(sizeof(int) * msg.head.nbufs);
        if (fds == NULL || gfx_recv_fds(s->sock, &msg, fds) < 0) {
            PyMem_RawFree(fds);
            PyMem_RawFree(copy);
            return -1;
        }
    }
    gf_ring_release(s->rx);

    /* Learn the cost per item (for chunk sizes and queue depth). */
    if (t->count > 0) {
        int64_t per = (int64_t)(msg.head.aux / t->count);
        int64_t avg = atomic_load_explicit(&e->avg_item_ns,
                                           memory_order_relaxed);
        avg = avg <= 0 ? per : (avg * 7 + per) / 8;
        atomic_store_explicit(&e->avg_item_ns, avg > 0 ? avg : 1,
                              memory_order_relaxed);
    }
    eng_lock(e);
    s->head = t->next;
    if (s->head == NULL) {
        s->tail = NULL;
    }
    s->nfifo--;
    s->queued_items -= t->count;
    t->res = copy;
    t->res_len = f->len;
    t->res_fds = fds;
    t->res_nfds = msg.head.nbufs;
    t->pid = s->pid;
    t->compute_ns = (int64_t)msg.head.aux;
    t->outcome = (msg.head.flags & ~GF_MSG_FLAG_EXT) == GF_RESULT_CANCELLED
                     ? OUT_CANCELLED : OUT_DONE;
    deliver_locked(e, t);
    eng_unlock(e);
    return 0;
}

/* ---- workers: start, watch, retire -------------------------------------------- */

static uint64_t
slot_tag(uint32_t i, uint32_t gen)
{
    return ((uint64_t)gen << 32) | i;
}

/* Supervisor thread: a worker has ended.  No GIL, no engine lock (see
 * proc.h): close its rings (wakes anyone blocked on them), then publish. */
static void
on_exit_cb(void *userdata, uint64_t tag, const gf_exit_t *status)
{
    gfx_engine *e = userdata;
    uint32_t i = (uint32_t)(tag & 0xffffffffu), gen = (uint32_t)(tag >> 32);
    if (i >= e->n) {
        return;
    }
    gfx_pslot *s = &e->slots[i];
    /* gen is written before the watch starts and the slot is not reused
     * until `dead` has been seen, so this read cannot race a reuse. */
    if (s->gen != gen) {
        return;
    }
    s->exit = *status;
    gf_ring_close(s->tx);
    gf_ring_close(s->rx);
    atomic_store_explicit(&s->dead, 1, memory_order_release);
    gf_ec_notify_all(e->doorbell);
}

/* Free a slot's channel (its process is gone or being abandoned).  With
 * the GIL; the slot is not LIVE. */
static void
slot_release(gfx_engine *e, gfx_pslot *s, int reap)
{
    if (e->insights && e->ins_lives != NULL && s->ctl != NULL && s->pid > 0) {
        /* Keep what this worker life did. */
        PyObject *d = gfx_stats_snapshot(GFX_CTL_STATS(s->ctl));
        PyObject *pid = PyLong_FromLong((long)s->pid);
        PyObject *worker = PyLong_FromLong((long)(s - e->slots));
        PyObject *up = PyLong_FromLongLong((long long)s->startup_ns);
        if (d == NULL || pid == NULL || worker == NULL || up == NULL ||
            PyDict_SetItemString(d, "pid", pid) < 0 ||
            PyDict_SetItemString(d, "worker", worker) < 0 ||
            PyDict_SetItemString(d, "startup_ns", up) < 0 ||
            PyList_Append(e->ins_lives, d) < 0) {
            PyErr_WriteUnraisable(NULL);
        }
        Py_XDECREF(d);
        Py_XDECREF(pid);
        Py_XDECREF(worker);
        Py_XDECREF(up);
        s->pid = 0;  /* recorded: a failed restart must not record it again */
    }
    if (s->process != NULL && reap && e->reaper != NULL) {
        PyObject *r = PyObject_CallFunction(e->reaper, "Od", s->process, 2.0);
        if (r == NULL) {
            PyErr_WriteUnraisable(e->reaper);
        }
        Py_XDECREF(r);
    }
    Py_CLEAR(s->process);
    gf_ring_detach(s->tx);
    gf_ring_detach(s->rx);
    s->tx = s->rx = NULL;
    gf_shm_close(&s->mem);
    s->ctl = NULL;
    if (s->sock >= 0) {
        close(s->sock);
        s->sock = -1;
    }
    s->nsent_fns = 0;
}

/* Start a worker in slot i (GIL held, engine lock not held, slot not
 * LIVE).  0, or -1 with an exception. */
static int
slot_start(gfx_engine *e, uint32_t i)
{
    gfx_pslot *s = &e->slots[i];
    uint32_t fp = (uint32_t)gf_ring_footprint(RING_CAPACITY);
    size_t half = ((size_t)fp + 4095) & ~(size_t)4095;
    size_t total = GFX_CTL_SIZE + 2 * half;
    int sv[2] = {-1, -1};
    int rc = gf_shm_create(total, "gilfree-channel", &s->mem);
    if (rc == 0) {
        char *base = (char *)s->mem.addr + GFX_CTL_SIZE;
        s->ctl = (gfx_ctl *)s->mem.addr;
        s->ctl->magic = GFX_CTL_MAGIC;
        rc = gf_ring_init(base, half, RING_CAPACITY);
        if (rc == 0) {
            rc = gf_ring_init(base + half, half, RING_CAPACITY);
        }
        if (rc == 0) {
            rc = gf_ring_attach(base, half, &s->tx);
        }
        if (rc == 0) {
            rc = gf_ring_attach(base + half, half, &s->rx);
        }
        if (rc == 0) {
            rc = gf_socketpair(sv);
        }
    }
    if (rc < 0) {
        slot_release(e, s, 0);
        gfx_raise(rc, "starting a worker process");
        return -1;
    }
    s->sock = sv[0];
    s->start_req_ns = gf_now_ns();
    s->startup_ns = 0;
    if (e->insights) {
        gfx_stats_init(GFX_CTL_STATS(s->ctl));
        atomic_store(&s->ctl->insights, 1);
    }
    s->sent_items = 0;
    /* A worker started while join() stops the others (a replacement already
     * under way) retires at once: the collector sends it STOP. */
    s->retiring = atomic_load(&e->joining);
    s->stop_sent = 0;
    s->life_death = s->life_timed_out = 0;
    if (e->has_setup) {
        /* The worker's first message: its lifecycle (the ring is empty,
         * the descriptors wait in the socket for the worker). */
        rc = slot_write(s, &e->setup);
        if (rc < 0) {
            close(sv[1]);
            slot_release(e, s, 0);
            gfx_raise(rc, "sending the worker lifecycle to a new worker");
            return -1;
        }
    }
    PyObject *r = PyObject_CallFunction(
        e->starter, "IiiiiL", i, s->mem.fd, e->poolmem.fd, sv[1],
        e->pool_pidfd, (long long)e->pool_pid);
    close(sv[1]);
    /* The worker has its own copies now (or inherited them). */
    gf_shm_close_fd(&s->mem);
    long pid = 0;
    PyObject *proc = NULL;
    if (r == NULL || !PyArg_ParseTuple(r, "lO", &pid, &proc) || pid <= 0) {
        if (r != NULL && !PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError,
                            "gilfree: the worker starter returned no pid");
        }
        Py_XDECREF(r);
        slot_release(e, s, 0);
        return -1;
    }
    s->process = Py_NewRef(proc);
    Py_DECREF(r);
    s->pid = (pid_t)pid;
    s->gen++;
    atomic_store(&s->dead, 0);
    s->broken = 0;
    s->hello = 0;
    s->timeout_task = 0;
    eng_lock(e);
    s->state = SLOT_LIVE;
    eng_unlock(e);
    Py_BEGIN_ALLOW_THREADS
    rc = gf_supervisor_watch(e->sup, s->pid, slot_tag(i, s->gen),
                             e->children ? GF_PROC_NOREAP : 0);
    Py_END_ALLOW_THREADS
    if (rc == GF_ESRCH) {
        /* Gone and reaped before we looked: report it dead. */
        gf_exit_t x = {0};
        x.pid = s->pid;
        on_exit_cb(e, slot_tag(i, s->gen), &x);
        rc = 0;
    }
    s->watched = rc == 0;
    if (rc < 0) {
        gfx_raise(rc, "watching a worker process");
        return -1;
    }
    return 0;
}

/* ---- the collector's GIL work -------------------------------------------------- */

static void
fail_all_pending_locked(gfx_engine *e, int outcome)
{
    while (e->pend_head != NULL) {
        gfx_ptask *t = e->pend_head;
        e->pend_head = t->next;
        t->outcome = outcome;
        deliver_locked(e, t);
    }
    e->pend_tail = NULL;
}

/* A slot stays empty (its worker could not be started or replaced; the
 * reason is in start_error).  With no worker left at all, the queue fails
 * with that reason instead of waiting forever. */
static void
give_up_slot(gfx_engine *e, gfx_pslot *s)
{
    eng_lock(e);
    s->state = SLOT_EMPTY;
    int any = 0;
    for (uint32_t k = 0; k < e->n; k++) {
        any |= e->slots[k].state == SLOT_LIVE;
    }
    if (!any) {
        fail_all_pending_locked(e, OUT_BROKEN);
    }
    eng_unlock(e);
}

static void
collector_gil_batch(gfx_engine *e)
{
    /* Settle apply/submit results and free garbage. */
    eng_lock(e);
    gfx_ptask *settle = e->settle_head, *garbage = e->garbage;
    gfx_life *life = e->life_head;
    e->settle_head = e->settle_tail = NULL;
    e->garbage = NULL;
    e->life_head = e->life_tail = NULL;
    eng_unlock(e);
    /* Lifecycle reports first: an initializer's failure is recorded before
     * the tasks it failed are settled. */
    if (life != NULL) {
        gfx_pp_life_batch(e, life);
    }
    while (settle != NULL) {
        gfx_ptask *next = settle->next;
        gfx_pp_settle_one(e, settle);
        gfx_pp_ptask_free(e, settle);
        settle = next;
    }
    while (garbage != NULL) {
        gfx_ptask *next = garbage->next;
        gfx_pp_ptask_free(e, garbage);
        garbage = next;
    }
    /* Replace dead workers (not while shutting down an idle pool). */
    for (uint32_t i = 0; i < e->n; i++) {
        if (!e->replace[i]) {
            continue;
        }
        gfx_pslot *s = &e->slots[i];
        if (s->watched) {
            /* Its callback has run: the watch is gone already. */
            s->watched = 0;
        }
        slot_release(e, s, 1);
        e->replace[i] = 0;
        if (s->life_death != LIFE_DEATH_NONE &&
            gfx_pp_life_death(e, i, s)) {
            /* It died in its initializer: a new one would too. */
            give_up_slot(e, s);
            continue;
        }
        if (atomic_load(&e->stop) || atomic_load(&e->terminating) ||
            (atomic_load(&e->closing) &&
             atomic_load(&e->outstanding_atomic) == 0)) {
            eng_lock(e);
            s->state = SLOT_EMPTY;
            eng_unlock(e);
            continue;
        }
        if (e->startup_failures >= 3) {
            /* Workers die before they can even say hello (an import that
             * crashes, a broken environment): restarting would loop. */
            char how[96];
            gf_exit_describe(&s->exit, how, sizeof how);
            PyOS_snprintf(e->start_error, sizeof e->start_error,
                          "gilfree: worker processes die at start-up (the "
                          "last one %s); see their output on stderr", how);
            give_up_slot(e, s);
            continue;
        }
        if (slot_start(e, i) < 0) {
            PyObject *exc = gfx_fetch_exception();
            PyObject *txt = exc ? PyObject_Str(exc) : NULL;
            const char *c = txt ? PyUnicode_AsUTF8(txt) : NULL;
            PyOS_snprintf(e->start_error, sizeof e->start_error,
                          "gilfree: could not start a worker process: %s",
                          c ? c : "unknown error");
            PyErr_Clear();
            Py_XDECREF(txt);
            Py_XDECREF(exc);
            give_up_slot(e, s);
        }
    }
}

static int
collector_has_gil_work(gfx_engine *e)
{
    eng_lock(e);
    int lists = e->settle_head != NULL || e->garbage != NULL ||
                e->life_head != NULL;
    eng_unlock(e);
    if (lists) {
        return 1;
    }
    for (uint32_t i = 0; i < e->n; i++) {
        if (e->replace[i]) {
            return 1;
        }
    }
    return 0;
}

/* Kill workers whose current item has run past task_timeout; returns how
 * long until the next one could. */
static int64_t
check_timeouts(gfx_engine *e)
{
    int64_t now = gf_now_ns(), next = 50 * 1000000LL;
    for (uint32_t i = 0; i < e->n; i++) {
        gfx_pslot *s = &e->slots[i];
        if (s->state != SLOT_LIVE || s->timeout_task != 0) {
            continue;
        }
        int64_t start = atomic_load_explicit(&s->ctl->cur_start_ns,
                                             memory_order_relaxed);
        if (start == 0) {
            continue;
        }
        /* The task's limit, or the initializer's or exit function's. */
        uint64_t cur = atomic_load_explicit(&s->ctl->cur_task,
                                            memory_order_acquire);
        int64_t limit = cur == GFX_TASK_ID_INIT ? e->init_timeout_ns
                        : cur == GFX_TASK_ID_EXIT ? e->exit_timeout_ns
                                                  : e->timeout_ns;
        if (limit <= 0) {
            continue;
        }
        int64_t left = start + limit - now;
        if (left > 0) {
            next = left < next ? left : next;
            continue;
        }
        s->timeout_task = atomic_load_explicit(&s->ctl->cur_task,
                                               memory_order_acquire);
        s->timeout_index = atomic_load_explicit(&s->ctl->cur_index,
                                                memory_order_relaxed);
        (void)gf_supervisor_signal(e->sup, slot_tag(i, s->gen), SIGKILL);
    }
    return next;
}

static void *
collector_main(void *arg)
{
    gfx_engine *e = arg;
    gfx_thread_setup("gilfree-collect");
    PyThreadState *ts = PyThreadState_New(e->interp);
    for (;;) {
        uint32_t key = gf_ec_prepare(e->doorbell);
        int busy = 0;
        for (uint32_t i = 0; i < e->n; i++) {
            gfx_pslot *s = &e->slots[i];
            if (s->state != SLOT_LIVE) {
                continue;
            }
            int dead = atomic_load_explicit(&s->dead, memory_order_acquire);
            gf_ring_frame_t f;
            int rc;
            while (!s->broken && (rc = gf_ring_try_peek(s->rx, &f)) == 0) {
                busy = 1;
                if (consume_frame(e, s, &f) < 0) {
                    eng_lock(e);
                    s->broken = 1;
                    eng_unlock(e);
                    (void)gf_supervisor_signal(e->sup, slot_tag(i, s->gen),
                                               SIGKILL);
                }
            }
            if (dead) {
                eng_lock(e);
                handle_death_locked(e, s);
                eng_unlock(e);
                e->replace[i] = 1;
                busy = 1;
            }
        }
        int64_t wait_ns = 50 * 1000000LL;
        if (e->timeout_ns > 0 || e->init_timeout_ns > 0 ||
            e->exit_timeout_ns > 0) {
            int64_t t = check_timeouts(e);
            wait_ns = t < wait_ns ? t : wait_ns;
        }
        eng_lock(e);
        dispatch_locked(e);
        eng_unlock(e);
        if (collector_has_gil_work(e) && ts != NULL) {
            PyEval_RestoreThread(ts);
            collector_gil_batch(e);
            PyEval_SaveThread();
            busy = 1;
        }
        if (atomic_load(&e->stop)) {
            break;
        }
        if (!busy) {
            (void)gf_ec_wait(e->doorbell, key, wait_ns);
        }
    }
    if (ts != NULL) {
        PyEval_RestoreThread(ts);
        PyThreadState_Clear(ts);
        PyThreadState_DeleteCurrent();
    }
    return NULL;
}

/* ---- lifecycle -------------------------------------------------------------------- */

int
gfx_proc_init(PoolObject *pool, uint32_t nworkers, const gfx_proc_options *opt)
{
    gfx_state *st = gfx_state_from_type(Py_TYPE(pool));
    gfx_engine *e = PyMem_RawCalloc(1, sizeof *e);
    if (e == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    e->st = st;
    e->interp = PyInterpreterState_Get();
    e->n = nworkers;
    e->slots = PyMem_RawCalloc(nworkers, sizeof *e->slots);
    e->replace = PyMem_RawCalloc(nworkers, 1);
    e->poolmem = (gf_shm_t)GF_SHM_INIT;
    e->pool_pidfd = -1;
    e->pool_pid = getpid();
    e->timeout_ns = opt->task_timeout > 0 ? (int64_t)(opt->task_timeout * 1e9)
                                          : 0;
    e->retries = opt->retries;
    e->children = opt->start_method_fork;
    e->starter = Py_NewRef(opt->starter);
    e->reaper = Py_XNewRef(opt->reaper);
    e->insights = opt->insights;
    e->start_ns = gf_now_ns();
    e->lc = opt->lc;
    if (e->lc != NULL) {
        e->init_timeout_ns = (int64_t)(e->lc->init_timeout * 1e9);
        e->exit_timeout_ns = (int64_t)(e->lc->exit_timeout * 1e9);
    }
    gf_ec_init(&e->idle_ec);
    pthread_mutex_init(&e->lock, NULL);
    pthread_mutex_init(&e->jobs_lock, NULL);
    e->segs = gfx_segcache_new();
    pool->proc = e;
    if (e->slots == NULL || e->replace == NULL || e->segs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (e->insights && (e->ins_lives = PyList_New(0)) == NULL) {
        return -1;
    }
    for (uint32_t i = 0; i < nworkers; i++) {
        e->slots[i].sock = -1;
        e->slots[i].mem = (gf_shm_t)GF_SHM_INIT;
    }
    int rc = gf_shm_create(4096, "gilfree-pool", &e->poolmem);
    if (rc == 0) {
        e->doorbell = (gf_ec_t *)e->poolmem.addr;
        gf_ec_init(e->doorbell);
        gf_proc_t self = GF_PROC_INIT;
        rc = gf_proc_open(getpid(), &self);
        if (rc == 0) {
            e->pool_pidfd = self.fd;
        }
        else if (rc == GF_ENOSYS) {
            rc = 0;  /* workers fall back to watching the pid */
        }
    }
    if (rc == 0) {
        rc = gf_supervisor_new(on_exit_cb, e, &e->sup);
    }
    if (rc < 0) {
        gfx_raise(rc, "Pool(backend='processes')");
        return -1;
    }
    if (e->lc != NULL && gfx_pp_life_setup(e) < 0) {
        return -1;
    }
    for (uint32_t i = 0; i < nworkers; i++) {
        if (slot_start(e, i) < 0) {
            return -1;
        }
    }
    rc = pthread_create(&e->collector, NULL, collector_main, e);
    if (rc != 0) {
        gfx_raise(-rc, "starting the result collector thread");
        return -1;
    }
    e->collector_started = 1;
    return 0;
}

static void
stop_collector(gfx_engine *e)
{
    if (!e->collector_started) {
        return;
    }
    atomic_store(&e->stop, 1);
    gf_ec_notify_all(e->doorbell);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(e->collector, NULL);
    Py_END_ALLOW_THREADS
    e->collector_started = 0;
}

/* Everything after the collector has stopped: cancel what is left, retire
 * the workers, free the engine.  GIL held. */
static void
engine_destroy(PoolObject *pool, int kill_workers)
{
    gfx_engine *e = pool->proc;
    if (e == NULL) {
        return;
    }
    stop_collector(e);
    eng_lock(e);
    for (uint32_t i = 0; i < e->n; i++) {
        gfx_pslot *s = &e->slots[i];
        if (s->state == SLOT_LIVE) {
            if (kill_workers) {
                gf_ring_close(s->tx);
                gf_ring_close(s->rx);
            }
            /* Tasks still on a worker: cancelled. */
            gfx_ptask *t = s->head;
            s->head = s->tail = NULL;
            s->nfifo = 0;
            while (t != NULL) {
                gfx_ptask *next = t->next;
                t->outcome = OUT_CANCELLED;
                t->pid = s->pid;  /* it was sent: it counts as started */
                deliver_locked(e, t);
                t = next;
            }
        }
    }
    fail_all_pending_locked(e, OUT_CANCELLED);
    eng_unlock(e);
    for (uint32_t i = 0; i < e->n; i++) {
        gfx_pslot *s = &e->slots[i];
        if (s->state != SLOT_LIVE && s->process == NULL) {
            continue;
        }
        if (kill_workers && s->watched) {
            (void)gf_supervisor_signal(e->sup, slot_tag(i, s->gen), SIGKILL);
        }
        if (s->watched) {
            Py_BEGIN_ALLOW_THREADS
            (void)gf_supervisor_unwatch(e->sup, slot_tag(i, s->gen));
            Py_END_ALLOW_THREADS
            s->watched = 0;
        }
        slot_release(e, s, 1);
        s->state = SLOT_EMPTY;
    }
    /* Settle what was cancelled (GIL held). */
    collector_gil_batch(e);
    if (e->sup != NULL) {
        gf_supervisor_t *sup = e->sup;
        e->sup = NULL;
        Py_BEGIN_ALLOW_THREADS
        gf_supervisor_free(sup);
        Py_END_ALLOW_THREADS
    }
    /* Functions. */
    while (e->fns != NULL) {
        gfx_fnent *fe = e->fns;
        e->fns = fe->next;
        Py_XDECREF(fe->fn);
        gfx_msg_clear(&fe->def);
        PyMem_RawFree(fe);
    }
    if (e->has_setup) {
        gfx_msg_clear(&e->setup);
        e->has_setup = 0;
    }
    if (e->pool_pidfd >= 0) {
        close(e->pool_pidfd);
    }
    gf_shm_close(&e->poolmem);
    gfx_segcache_free(e->segs);
    e->segs = NULL;
    Py_CLEAR(e->starter);
    Py_CLEAR(e->reaper);
    for (uint32_t i = 0; e->slots && i < e->n; i++) {
        PyMem_RawFree(e->slots[i].sent_fns);
        e->slots[i].sent_fns = NULL;
    }
    /* The struct, its lock and its slots stay until the Pool object goes:
     * map jobs and iterators (which hold the Pool) may still look at them;
     * with `shut` set and no slots nothing can be sent any more. */
    eng_lock(e);
    e->shut = 1;
    e->n = 0;
    eng_unlock(e);
    pool->proc = NULL;
    pool->proc_retired = e;
}

void
gfx_proc_dealloc(PoolObject *pool)
{
    if (pool->proc != NULL) {
        engine_destroy(pool, 1);
    }
    gfx_engine *e = pool->proc_retired;
    pool->proc_retired = NULL;
    if (e != NULL) {
        Py_CLEAR(e->ins_lives);
        PyMem_RawFree(e->slots);
        PyMem_RawFree(e->replace);
        pthread_mutex_destroy(&e->lock);
        pthread_mutex_destroy(&e->jobs_lock);
        PyMem_RawFree(e);
    }
}

int
gfx_proc_terminate(PoolObject *pool)
{
    gfx_engine *e = pool->proc;
    if (e == NULL) {
        return 0;
    }
    /* Kill first (SIGKILL through the supervisor's pidfds), so that
     * nothing more runs, then settle everything as cancelled. */
    atomic_store(&e->terminating, 1);
    for (uint32_t i = 0; i < e->n; i++) {
        gfx_pslot *s = &e->slots[i];
        if (s->state == SLOT_LIVE) {
            gf_ring_close(s->tx);
            (void)gf_supervisor_signal(e->sup, slot_tag(i, s->gen), SIGKILL);
        }
    }
    engine_destroy(pool, 1);
    return 0;
}

void
gfx_proc_free(PoolObject *pool)
{
    if (pool->proc != NULL) {
        engine_destroy(pool, 1);
    }
}

int
gfx_proc_close(PoolObject *pool)
{
    gfx_engine *e = pool->proc;
    if (e != NULL) {
        atomic_store(&e->closing, 1);
    }
    return 0;
}

static int
idle_ready(void *arg)
{
    gfx_engine *e = arg;
    return atomic_load(&e->outstanding_atomic) == 0;
}

int
gfx_proc_join(PoolObject *pool)
{
    gfx_engine *e = pool->proc;
    if (e == NULL) {
        return 0;
    }
    /* join() waits for all the work submitted, as multiprocessing's does:
     * an imap that nobody reads holds back its input (its window is
     * full), so feed it to the end now; its results wait in the job. */
    if (gfx_procmap_drain(e) < 0) {
        return -1;
    }
    int rc = gfx_wait(&e->idle_ec, idle_ready, e, -1.0);
    if (rc < 0) {
        return -1;
    }
    /* Idle: ask every worker to stop (retiring workers get STOP once, from
     * send_stops_locked, which the collector also runs for a worker that
     * starts meanwhile), give them a moment, then the destroy path kills
     * whatever is left. */
    atomic_store(&e->joining, 1);
    eng_lock(e);
    for (uint32_t i = 0; i < e->n; i++) {
        e->slots[i].retiring = 1;
    }
    send_stops_locked(e);
    eng_unlock(e);
    /* Workers with an exit function may take their time (exit_timeout,
     * enforced by the collector, bounds it); others get two seconds.  Wait
     * until the collector has seen each one end: it has then also drained
     * what the worker sent last (its exit function's result). */
    int64_t deadline = (e->lc != NULL && e->lc->worker_exit != NULL)
                           ? INT64_MAX : gf_now_ns() + 2000000000LL;
    int rc_wait = 0;
    for (uint32_t i = 0; i < e->n; i++) {
        gfx_pslot *s = &e->slots[i];
        for (;;) {
            uint32_t key = gf_ec_prepare(e->doorbell);
            eng_lock(e);
            int live = s->state == SLOT_LIVE;
            eng_unlock(e);
            if (!live || gf_now_ns() >= deadline) {
                break;
            }
            Py_BEGIN_ALLOW_THREADS
            (void)gf_ec_wait(e->doorbell, key, 10000000LL);
            Py_END_ALLOW_THREADS
            if (PyErr_CheckSignals() < 0) {
                rc_wait = -1;
                break;
            }
        }
        if (rc_wait < 0) {
            break;
        }
    }
    PyObject *exc = rc_wait < 0 ? gfx_fetch_exception() : NULL;
    engine_destroy(pool, 1);
    if (exc != NULL) {
        gfx_restore_exception(exc);
        Py_DECREF(exc);
        return -1;
    }
    return 0;
}

PyObject *
gfx_proc_pids(PoolObject *pool)
{
    gfx_engine *e = pool->proc;
    PyObject *list = PyList_New(0);
    if (list == NULL || e == NULL) {
        return list;
    }
    eng_lock(e);
    for (uint32_t i = 0; i < e->n; i++) {
        gfx_pslot *s = &e->slots[i];
        if (s->state == SLOT_LIVE && !atomic_load(&s->dead)) {
            PyObject *v = PyLong_FromLong((long)s->pid);
            if (v == NULL || PyList_Append(list, v) < 0) {
                Py_XDECREF(v);
                eng_unlock(e);
                Py_DECREF(list);
                return NULL;
            }
            Py_DECREF(v);
        }
    }
    eng_unlock(e);
    return list;
}

/* ---- apply_async / submit --------------------------------------------------------- */

int
gfx_pp_check_owner(gfx_engine *e, const char *method)
{
    if (e->pool_pid != getpid()) {
        PyErr_Format(PyExc_RuntimeError,
                     "Pool.%s(): this process Pool belongs to the parent "
                     "process (it was created before fork()); create a new "
                     "Pool here", method);
        return -1;
    }
    return 0;
}

/* Encode fn(*args, **kwds) as a task; the caller sets owner and submits. */
static gfx_ptask *
make_apply_task(gfx_engine *e, int kind, PyObject *fn, PyObject *args,
                PyObject *kwds)
{
    gfx_ptask *t = gfx_pp_ptask_new(e, kind);
    if (t == NULL) {
        return NULL;
    }
    t->fe = gfx_pp_fn_get(e, fn);
    if (t->fe == NULL) {
        gfx_pp_ptask_free(e, t);
        return NULL;
    }
    PyObject *targs = args ? (PyTuple_Check(args) ? Py_NewRef(args)
                                                  : PySequence_Tuple(args))
                           : PyTuple_New(0);
    PyObject *pair = targs ? PyTuple_Pack(2, targs, kwds ? kwds : Py_None)
                           : NULL;
    Py_XDECREF(targs);
    if (pair == NULL) {
        gfx_pp_ptask_free(e, t);
        return NULL;
    }
    PyObject *one = PyList_New(1);
    if (one == NULL) {
        Py_DECREF(pair);
        gfx_pp_ptask_free(e, t);
        return NULL;
    }
    PyList_SET_ITEM(one, 0, pair);
    gf_msg_head_t head = {0};
    head.id = t->id;
    head.aux = t->fe->id;
    head.index0 = 0;
    head.flags = GF_TASK_APPLY;
    t->count = 1;
    t->tflags = GF_TASK_APPLY;
    gfx_segcache *prev = gfx_segcache_use(e->segs);
    int rc = gfx_encode(e->st, GF_MSG_TASK, &head, one, 0,
                        GF_RING_MAX_PAYLOAD(RING_CAPACITY) / 2, &t->msg);
    gfx_segcache_use(prev);
    if (rc < 0) {
        /* Say which argument does not pickle. */
        PyObject *why = gfx_fetch_exception();
        PyObject *name = gfx_callable_name(fn);
        PyErr_Format(e->st->PicklingError,
                     "cannot send the arguments of %S to a worker process: "
                     "%S", name ? name : Py_None, why ? why : Py_None);
        Py_XDECREF(name);
        gfx_chain_cause(why);
    }
    Py_DECREF(one);
    if (rc < 0) {
        gfx_pp_ptask_free(e, t);
        return NULL;
    }
    return t;
}

/* apply_async (an AsyncResult) or submit (a Future): one task. */
static PyObject *
proc_call(PoolObject *pool, int kind, PyObject *fn, PyObject *args,
          PyObject *kwds, PyObject *callback, PyObject *error_callback)
{
    gfx_engine *e = pool->proc;
    if (gfx_pp_check_owner(e, kind == PT_APPLY ? "apply_async"
                                               : "submit") < 0) {
        return NULL;
    }
    gfx_ptask *t;
    GFX_TIMED(e, ins_encode_ns, t = make_apply_task(e, kind, fn, args, kwds));
    if (t == NULL) {
        return NULL;
    }
    PyObject *owner = kind == PT_APPLY
        ? gfx_asyncresult_new_remote(e->st, fn, callback, error_callback)
        : gfx_future_new(e->st);
    if (owner == NULL) {
        gfx_pp_ptask_free(e, t);
        return NULL;
    }
    t->owner = Py_NewRef(owner);
    if (kind == PT_SUBMIT &&
        gfx_future_bind_pool(e->st, owner, (PyObject *)pool) < 0) {
        gfx_pp_ptask_free(e, t);
        Py_DECREF(owner);
        return NULL;
    }
    gfx_pp_submit(e, t);
    return owner;
}

PyObject *
gfx_proc_apply_async(PoolObject *pool, PyObject *fn, PyObject *args,
                     PyObject *kwds, PyObject *callback,
                     PyObject *error_callback)
{
    return proc_call(pool, PT_APPLY, fn, args, kwds, callback,
                     error_callback);
}

PyObject *
gfx_proc_submit(PoolObject *pool, PyObject *fn, PyObject *args,
                PyObject *kwds)
{
    return proc_call(pool, PT_SUBMIT, fn, args, kwds, NULL, NULL);
}

/* Take the matching tasks out of the pending queue (never sent).  Engine
 * lock held. */
static gfx_ptask *
withdraw_pending_locked(gfx_engine *e, gfx_pp_match match, const void *arg)
{
    gfx_ptask *drop = NULL, **tail = &drop;
    gfx_ptask **pp = &e->pend_head, *last = NULL;
    while (*pp != NULL) {
        gfx_ptask *t = *pp;
        if (match(t, arg)) {
            *pp = t->next;
            t->next = NULL;
            *tail = t;
            tail = &t->next;
            e->outstanding--;
        }
        else {
            last = t;
            pp = &t->next;
        }
    }
    e->pend_tail = last;
    atomic_store(&e->outstanding_atomic, e->outstanding);
    if (e->outstanding == 0) {
        gf_ec_notify_all(&e->idle_ec);
    }
    return drop;
}

gfx_ptask *
gfx_pp_withdraw(gfx_engine *e, gfx_pp_match match, const void *arg)
{
    eng_lock(e);
    gfx_ptask *drop = withdraw_pending_locked(e, match, arg);
    /* Sent but maybe not started: the worker skips them. */
    for (uint32_t i = 0; i < e->n; i++) {
        gfx_pslot *s = &e->slots[i];
        for (gfx_ptask *t = s->head; s->state == SLOT_LIVE && t; t = t->next) {
            if (match(t, arg)) {
                gfx_pp_withdraw_sent_locked(s, t);
            }
        }
    }
    eng_unlock(e);
    return drop;
}

static int
owned_by(const gfx_ptask *t, const void *owner)
{
    return t->owner == owner;
}

int
gfx_proc_future_queued(PoolObject *pool, PyObject *fut)
{
    gfx_engine *e = pool->proc;
    if (e == NULL || e->pool_pid != getpid()) {
        return 0;
    }
    int found = 0;
    eng_lock(e);
    for (gfx_ptask *t = e->pend_head; t != NULL && !found; t = t->next) {
        found = t->owner == fut;
    }
    eng_unlock(e);
    return found;
}

int
gfx_proc_withdraw_future(PoolObject *pool, PyObject *fut)
{
    gfx_engine *e = pool->proc;
    if (e == NULL || e->pool_pid != getpid()) {
        return 0;
    }
    eng_lock(e);
    gfx_ptask *t = withdraw_pending_locked(e, owned_by, fut);
    eng_unlock(e);
    int n = 0;
    while (t != NULL) {
        /* Never sent: nothing will settle it; the caller cancels the
         * future itself. */
        gfx_ptask *next = t->next;
        gfx_pp_ptask_free(e, t);
        t = next;
        n++;
    }
    return n > 0;
}

void
gfx_proc_abandon(PoolObject *pool, PyObject *ar)
{
    gfx_engine *e = pool->proc;
    if (e == NULL) {
        return;
    }
    gfx_ptask *t = gfx_pp_withdraw(e, owned_by, ar);
    while (t != NULL) {
        /* Never sent: settle it here, cancelled (we hold the GIL). */
        gfx_ptask *next = t->next;
        t->outcome = OUT_CANCELLED;
        gfx_pp_settle_one(e, t);
        gfx_pp_ptask_free(e, t);
        t = next;
    }
}



PyObject *
gfx_proc_insights(PoolObject *pool)
{
    gfx_engine *e = pool->proc != NULL ? pool->proc : pool->proc_retired;
    if (e == NULL || !e->insights) {
        PyErr_SetString(PyExc_ValueError,
                        "Pool.insights(): create the pool with "
                        "insights=True to record them");
        return NULL;
    }
    return gfx_pp_insights(e, pool);
}
