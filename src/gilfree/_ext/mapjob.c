/* MapJob: map, starmap, imap and imap_unordered.
 *
 * A job is shared by its caller and by up to `workers` participant tasks
 * queued on the pool.  Each participant, once a worker runs it, loops taking
 * chunks of the input until none is left, attached to the interpreter the
 * whole time, and calls func on every item with vectorcall.
 *
 * Two modes:
 *
 * DIRECT (map/starmap over a list, tuple or range): the length is known, so
 *   chunks are claimed lock-free from a gf_chunker_t (one CAS per chunk) and
 *   every result is stored straight into its slot of a preallocated list.
 *   The caller sleeps until `done_items` reaches the total.  On a failure,
 *   claims stop at once and items above the failing index are skipped; the
 *   items below it (already claimed) finish, so the exception re-raised,
 *   with its index, is the one of the lowest failing index.
 *
 * STREAM (imap/imap_unordered, and map over any other iterable): input is
 *   pulled lazily, one chunk at a time, under `in_lock`, into one of `nslots`
 *   chunk slots; the slot ring bounds what is in flight.  A participant that
 *   finds no free slot leaves the job; the consumer restarts participants as
 *   it frees slots (see maybe_restart for why no restart is lost).  The
 *   consumer (the caller's next()) delivers chunk by chunk, in input order
 *   or in completion order.  A participant never blocks waiting for the
 *   consumer, so a consumer that also uses the pool cannot deadlock it; a
 *   consumer that finds nothing running computes a chunk itself.
 *
 * Synchronisation (who guards what):
 *   chunker                 its own atomics (chunker.h)
 *   cancelled, done_items,
 *   fail_min, running,
 *   active, exhausted,
 *   total_chunks, live      atomics, documented at each use
 *   results[i]              written once by the participant that claimed i;
 *                           read by the caller after done_items == total
 *                           (acquire/release on done_items)
 *   fail_exc, fail_index    the job's critical section (the GIL before 3.13)
 *   input, next_index,
 *   next_seq, slot FREE->
 *   FILLING                 in_lock
 *   slot items while
 *   FILLING                 the participant that filled it
 *   slot DONE -> FREE,
 *   cur, cur_pos,
 *   consume_seq             written by the consumer (one thread at a time:
 *                           the GIL or the job's critical section); atomic
 *                           because wait predicates read it without either
 */
#include "gfext.h"

#include <string.h>

enum { IN_LIST, IN_TUPLE, IN_RANGE, IN_ITER };
enum { MODE_DIRECT, MODE_STREAM };
enum { SLOT_FREE = 0, SLOT_FILLING = 1, SLOT_DONE = 2 };

/* Stream chunks stay small enough that a slot ring of 4 x workers holds a
 * bounded amount of input (the laziness promise of imap). */
#define STREAM_MAX_CHUNK 4096
#define SLOTS_PER_WORKER 4

typedef struct {
    _Atomic int state;        /* SLOT_*: FREE->FILLING under in_lock,
                               * FILLING->DONE (release) by its participant,
                               * DONE->FREE (release) by the consumer */
    int input_failed;         /* the input raised; errors[count-1] holds it */
    int64_t seq;              /* chunk number in input order */
    int64_t start;            /* input index of items[0] */
    int64_t count;
    PyObject **items;         /* inputs, replaced in place by results */
    PyObject **errors;        /* NULL, or per-item exceptions */
} gfx_chunk;

typedef struct {
    PyObject_HEAD
    PoolObject *pool;
    PyObject *fn;
    gfx_lc *lc;               /* the pool's worker lifecycle, or NULL */
    PyObject *input;          /* list, tuple or iterator */
    const char *method;       /* "map", "imap", ... for messages */
    int flags;
    int input_kind;
    int mode;
    long long r_start, r_step;
    /* Added to the input indices that messages name (gfx_map's
     * index_base); written once before the job is shared. */
    int64_t index_base;
    int64_t total;            /* -1 if unknown */
    int64_t fixed_chunk;      /* 0 = adaptive */
    gf_chunker_t *chunker;    /* cache-line aligned, owned */
    _Atomic int cancelled;      /* Ctrl-C, close(), terminate(): stop now */
    _Atomic int64_t done_items;
    _Atomic int64_t fail_min;   /* DIRECT: lowest failed index, or MAX */
    _Atomic int running;        /* DIRECT: participants inside direct_run */
    unsigned int fork_gen;      /* gfx_fork_generation at creation */
    _Atomic int active;       /* participants queued or running (stream) */
    gf_ec_t ec;               /* the consumer parks here */
    PyObject *results;        /* DIRECT */
    PyObject *fail_exc;       /* DIRECT: first failure by index */
    int64_t fail_index;
    /* STREAM */
    pthread_mutex_t in_lock;
    int64_t next_index;
    int64_t next_seq;
    _Atomic int exhausted;
    _Atomic int64_t total_chunks;
    gfx_chunk *slots;
    uint32_t nslots;
    _Atomic uint32_t live;
    _Atomic int64_t consume_seq;
    gfx_chunk *cur;
    int64_t cur_pos;
} MapJobObject;

typedef struct {
    gfx_task task;
    MapJobObject *job;
} MapTask;

#define JOB_CAST(op) ((MapJobObject *)(op))

static int
job_cancelled(MapJobObject *job)
{
    /* relaxed: cancellation is advisory; at worst one more item runs. */
    return atomic_load_explicit(&job->cancelled, memory_order_relaxed) ||
           gfx_pool_terminated(job->pool);
}

static void
job_cancel(MapJobObject *job)
{
    atomic_store(&job->cancelled, 1);
    gf_chunker_cancel(job->chunker);
    gf_ec_notify_all(&job->ec);
}

/* ---- items and calls (attached) ------------------------------------------------- */

/* New reference to input item i (DIRECT, or STREAM over a sequence), or
 * NULL with an exception. */
static PyObject *
get_item(MapJobObject *job, int64_t i)
{
    switch (job->input_kind) {
    case IN_LIST: {
        PyObject *item = gfx_list_get_ref(job->input, (Py_ssize_t)i);
        if (item == NULL) {
            PyErr_Format(PyExc_RuntimeError,
                         "Pool.%s(): the input list changed size while "
                         "being mapped (index %lld no longer exists)",
                         job->method, (long long)(i + job->index_base));
        }
        return item;
    }
    case IN_TUPLE:
        return Py_NewRef(PyTuple_GET_ITEM(job->input, (Py_ssize_t)i));
    case IN_RANGE:
        return PyLong_FromLongLong(job->r_start + (long long)i * job->r_step);
    default:
        Py_UNREACHABLE();
    }
}

/* func(item) or func(*item); steals `item`.  NULL with an exception. */
static inline PyObject *
call_item(MapJobObject *job, PyObject *item, int64_t index)
{
    PyObject *res;
    if (job->lc != NULL) {
        /* Worker lifecycle: (worker_id, shared, state) go first. */
        if (!(job->flags & GFX_MAP_STAR)) {
            res = gfx_lc_call(job->lc, job->fn, &item, 1, NULL);
            Py_DECREF(item);
            return res;
        }
        if (PyTuple_CheckExact(item)) {
            res = gfx_lc_call_tuple(job->lc, job->fn, item, NULL);
            Py_DECREF(item);
            return res;
        }
    }
    if (!(job->flags & GFX_MAP_STAR)) {
        PyObject *argv[2] = {NULL, item};
        res = PyObject_Vectorcall(job->fn, argv + 1,
                                  1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    else if (PyTuple_CheckExact(item)) {
        res = PyObject_Vectorcall(job->fn, &PyTuple_GET_ITEM(item, 0),
                                  (size_t)PyTuple_GET_SIZE(item), NULL);
    }
    else {
        PyObject *seq = PySequence_Tuple(item);
        if (seq == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError,
                             "Pool.%s(): input index %lld is not an iterable "
                             "of arguments: %R (type %.100s)", job->method,
                             (long long)(index + job->index_base), item,
                             Py_TYPE(item)->tp_name);
            }
            Py_DECREF(item);
            return NULL;
        }
        res = job->lc != NULL
                  ? gfx_lc_call_tuple(job->lc, job->fn, seq, NULL)
                  : PyObject_Vectorcall(job->fn, &PyTuple_GET_ITEM(seq, 0),
                                        (size_t)PyTuple_GET_SIZE(seq), NULL);
        Py_DECREF(seq);
    }
    Py_DECREF(item);
    return res;
}

/* ---- DIRECT mode ---------------------------------------------------------------- */

/* Record the failure of item `index`.  The lowest failing index wins: an
 * item below it may still fail too, so those keep running (every index
 * below a failing one was claimed already: claims go in order), while
 * claims stop and items above it are skipped. */
static void
direct_record_failure(MapJobObject *job, int64_t index)
{
    PyObject *exc = gfx_fetch_task_exception(gfx_state_from_type(Py_TYPE(job)));
    Py_BEGIN_CRITICAL_SECTION(job);
    if (job->fail_exc == NULL || index < job->fail_index) {
        Py_XSETREF(job->fail_exc, exc);
        job->fail_index = index;
        exc = NULL;
    }
    Py_END_CRITICAL_SECTION();
    Py_XDECREF(exc);
    int64_t cur = atomic_load(&job->fail_min);
    while (index < cur &&
           !atomic_compare_exchange_weak(&job->fail_min, &cur, index)) {
    }
    gf_chunker_cancel(job->chunker);
    gf_ec_notify_all(&job->ec);
}

static void
direct_run(MapJobObject *job)
{
    gf_chunker_t *c = job->chunker;
    PyObject *results = job->results;
    int64_t start, count;
    atomic_fetch_add(&job->running, 1);
    int prev = gfx_interruptible_begin();
    while (!gfx_pool_terminated(job->pool) &&
           gf_chunker_claim(c, &start, &count) == 0) {
        int64_t t0 = gf_now_ns();
        int64_t cpu0 = gfx__cur_stats ? gfx_thread_cpu_ns() : 0;
        int64_t end = start + count;
        for (int64_t i = start; i < end; i++) {
            /* relaxed: advisory stops; at worst one more item runs. */
            if (atomic_load_explicit(&job->cancelled, memory_order_relaxed) ||
                i > atomic_load_explicit(&job->fail_min,
                                         memory_order_relaxed)) {
                goto out;
            }
            PyObject *item = get_item(job, i);
            PyObject *res = item ? call_item(job, item, i) : NULL;
            if (res == NULL) {
                direct_record_failure(job, i);
                goto out;
            }
            PyList_SET_ITEM(results, (Py_ssize_t)i, res);
        }
        int64_t t1 = gf_now_ns();
        gf_chunker_report(c, count, t1 - t0);
        if (gfx__cur_stats != NULL) {
            gfx_stats_add(&gfx__cur_stats->tasks, count);
            gfx_stats_add(&gfx__cur_stats->chunks, 1);
            gfx_stats_seg(gfx__cur_stats, GFX_TL_WORK, t0, t1, count,
                          gfx_thread_cpu_ns() - cpu0);
        }
        /* release: our list stores happen-before the caller's acquire load
         * that sees the final count. */
        int64_t done = atomic_fetch_add_explicit(&job->done_items, count,
                                                 memory_order_acq_rel) +
                       count;
        if (done == job->total) {
            gf_ec_notify_all(&job->ec);
        }
    }
out:
    gfx_interruptible_end(prev);
    if (gfx_pool_terminated(job->pool)) {
        job_cancel(job);
    }
    if (atomic_fetch_sub(&job->running, 1) == 1) {
        gf_ec_notify_all(&job->ec);
    }
}

static int
direct_ready(void *arg)
{
    MapJobObject *job = arg;
    if (atomic_load_explicit(&job->done_items, memory_order_acquire) ==
            job->total ||
        atomic_load_explicit(&job->cancelled, memory_order_acquire)) {
        return 1;
    }
    /* After a failure, wait for the items below it (see above). */
    return atomic_load(&job->fail_min) != INT64_MAX &&
           atomic_load(&job->running) == 0;
}

/* ---- STREAM mode ----------------------------------------------------------------- */

static int64_t
stream_chunk_size(MapJobObject *job)
{
    if (job->fixed_chunk > 0) {
        return job->fixed_chunk;
    }
    int64_t remaining = job->total >= 0 ? job->total - job->next_index : -1;
    int64_t n = gf_chunker_suggest(job->chunker, remaining);
    if (n > STREAM_MAX_CHUNK) {
        n = STREAM_MAX_CHUNK;
    }
    return n < 1 ? 1 : n;
}

static gfx_chunk *
find_free_slot(MapJobObject *job)
{
    for (uint32_t k = 0; k < job->nslots; k++) {
        /* acquire: the consumer freed the slot's arrays before releasing. */
        if (atomic_load_explicit(&job->slots[k].state,
                                 memory_order_acquire) == SLOT_FREE) {
            return &job->slots[k];
        }
    }
    return NULL;
}

static int
set_chunk_error(gfx_chunk *ch, int64_t i, PyObject *exc)
{
    if (ch->errors == NULL) {
        ch->errors = PyMem_Calloc((size_t)ch->count, sizeof(PyObject *));
        if (ch->errors == NULL) {
            Py_XDECREF(exc);
            return -1;
        }
    }
    ch->errors[i] = exc;
    return 0;
}

/* Pull the next chunk of input into a free slot and compute it.
 * Returns 1 after a chunk, 0 when no slot is free, -1 when the job is over
 * (input exhausted, cancelled, or out of memory). */
static int
stream_step(MapJobObject *job)
{
    if (job_cancelled(job)) {
        return -1;
    }
    if (gfx_mutex_lock(&job->in_lock) < 0) {
        return -1;  /* Ctrl-C while another thread pulled input */
    }
    if (atomic_load_explicit(&job->exhausted, memory_order_relaxed) ||
        job_cancelled(job)) {
        pthread_mutex_unlock(&job->in_lock);
        return -1;
    }
    gfx_chunk *ch = find_free_slot(job);
    if (ch == NULL) {
        pthread_mutex_unlock(&job->in_lock);
        return 0;
    }
    int64_t want = stream_chunk_size(job);
    if (job->total >= 0 && want > job->total - job->next_index) {
        want = job->total - job->next_index;
    }
    PyObject **items = NULL;
    if (want > 0) {
        items = PyMem_Malloc((size_t)want * sizeof(PyObject *));
        if (items == NULL) {
            pthread_mutex_unlock(&job->in_lock);
            PyErr_NoMemory();
            return -1;
        }
    }
    int64_t got = 0;
    PyObject *input_exc = NULL;
    int ended = (want == 0);
    while (got < want) {
        PyObject *item;
        if (job->input_kind == IN_ITER) {
            item = PyIter_Next(job->input);
        }
        else {
            item = get_item(job, job->next_index + got);
        }
        if (item == NULL) {
            if (PyErr_Occurred()) {
                input_exc = gfx_fetch_exception();
            }
            ended = 1;
            break;
        }
        items[got++] = item;
    }
    if (job->total >= 0 && job->next_index + got >= job->total) {
        ended = 1;
    }
    int64_t count = got + (input_exc != NULL);
    if (count > 0) {
        ch->seq = job->next_seq++;
        ch->start = job->next_index;
        ch->count = count;
        ch->items = items;
        ch->errors = NULL;
        ch->input_failed = 0;
        if (input_exc != NULL) {
            if (items == NULL || count > want) {
                PyObject **grown = PyMem_Realloc(items, (size_t)count *
                                                 sizeof(PyObject *));
                if (grown == NULL) {
                    ch->items = items;
                    ch->count = got;
                    Py_DECREF(input_exc);
                    input_exc = NULL;
                }
                else {
                    ch->items = items = grown;
                }
            }
            if (input_exc != NULL) {
                items[got] = NULL;
                ch->input_failed = 1;
                if (set_chunk_error(ch, got, input_exc) < 0) {
                    ch->input_failed = 0;
                    ch->count = got;
                }
            }
        }
        job->next_index += got;
        atomic_fetch_add_explicit(&job->live, 1, memory_order_relaxed);
        /* relaxed: the slot is published to the consumer by the DONE
         * release store below, and to pullers through in_lock. */
        atomic_store_explicit(&ch->state, SLOT_FILLING, memory_order_relaxed);
    }
    else {
        PyMem_Free(items);
        ch = NULL;
    }
    if (ended) {
        atomic_store_explicit(&job->total_chunks, job->next_seq,
                              memory_order_release);
        /* release after total_chunks: a consumer that sees exhausted
         * (acquire) reads the final chunk count. */
        atomic_store_explicit(&job->exhausted, 1, memory_order_release);
    }
    pthread_mutex_unlock(&job->in_lock);

    if (ch != NULL) {
        int64_t t0 = gf_now_ns();
        int64_t cpu0 = gfx__cur_stats ? gfx_thread_cpu_ns() : 0;
        int64_t n = ch->count - ch->input_failed;
        int prev = gfx_interruptible_begin();
        for (int64_t i = 0; i < n; i++) {
            PyObject *item = ch->items[i];
            ch->items[i] = NULL;
            if (atomic_load_explicit(&job->cancelled, memory_order_relaxed)) {
                Py_DECREF(item);
                continue;
            }
            PyObject *res = call_item(job, item, ch->start + i);
            if (res == NULL) {
                set_chunk_error(ch, i, gfx_fetch_task_exception(
                                           gfx_state_from_type(Py_TYPE(job))));
            }
            ch->items[i] = res;
        }
        gfx_interruptible_end(prev);
        int64_t t1 = gf_now_ns();
        gf_chunker_report(job->chunker, n, t1 - t0);
        if (gfx__cur_stats != NULL) {
            gfx_stats_add(&gfx__cur_stats->tasks, n);
            gfx_stats_add(&gfx__cur_stats->chunks, 1);
            gfx_stats_seg(gfx__cur_stats, GFX_TL_WORK, t0, t1, n,
                          gfx_thread_cpu_ns() - cpu0);
        }
        /* release: items and errors are visible to the consumer that sees
         * DONE with acquire. */
        atomic_store_explicit(&ch->state, SLOT_DONE, memory_order_release);
    }
    gf_ec_notify_all(&job->ec);
    return ch != NULL ? 1 : (ended ? -1 : 0);
}

/* Start one more participant if there is work for it.  Returns 1 if one was
 * started (or is not needed), 0 if the pool cannot take it.
 *
 * No restart is lost: a participant that leaves for lack of a free slot
 * first decrements `active`, then re-checks for a free slot; the consumer
 * first frees a slot, then reads `active`.  Both use sequentially
 * consistent operations, so at least one of them sees the other's write and
 * a participant runs whenever a slot is free. */
static int start_participants(MapJobObject *job, int n);

static int
maybe_restart(MapJobObject *job)
{
    if (atomic_load(&job->exhausted) || job_cancelled(job)) {
        return 1;
    }
    int a = atomic_load(&job->active);
    if (a >= (int)job->pool->nworkers) {
        return 1;
    }
    return start_participants(job, 1) > 0;
}

static void
stream_participate(MapJobObject *job)
{
    for (;;) {
        int r = stream_step(job);
        if (r > 0) {
            continue;
        }
        if (r < 0) {
            if (PyErr_Occurred()) {
                /* Out of memory pulling input: nobody to raise it to here;
                 * report it and stop the job rather than lose it quietly. */
                PyErr_WriteUnraisable(NULL);
                job_cancel(job);
            }
            break;
        }
        /* No free slot: leave, then look once more (see maybe_restart). */
        atomic_fetch_sub(&job->active, 1);
        gf_ec_notify_all(&job->ec);
        /* seq_cst fence: the re-check below must not be ordered before the
         * decrement (store-buffering, as in maybe_restart). */
        atomic_thread_fence(memory_order_seq_cst);
        int a = atomic_load(&job->active);
        if (!atomic_load(&job->exhausted) && !job_cancelled(job) &&
            a < (int)job->pool->nworkers && find_free_slot(job) != NULL &&
            atomic_compare_exchange_strong(&job->active, &a, a + 1)) {
            continue;
        }
        return;  /* already counted out */
    }
    atomic_fetch_sub(&job->active, 1);
    gf_ec_notify_all(&job->ec);
}

/* Consumer side ------------------------------------------------------------ */

static gfx_chunk *
find_ready(MapJobObject *job)
{
    int ordered = !(job->flags & GFX_MAP_UNORDERED);
    for (uint32_t k = 0; k < job->nslots; k++) {
        gfx_chunk *ch = &job->slots[k];
        if (atomic_load_explicit(&ch->state, memory_order_acquire) ==
                SLOT_DONE &&
            (!ordered ||
             ch->seq == atomic_load_explicit(&job->consume_seq,
                                             memory_order_relaxed))) {
            return ch;
        }
    }
    return NULL;
}

static int
stream_finished(MapJobObject *job)
{
    return atomic_load_explicit(&job->exhausted, memory_order_acquire) &&
           atomic_load_explicit(&job->consume_seq, memory_order_relaxed) ==
               atomic_load_explicit(&job->total_chunks, memory_order_acquire);
}

static int
stream_ready(void *arg)
{
    MapJobObject *job = arg;
    return find_ready(job) != NULL || stream_finished(job) ||
           atomic_load(&job->active) == 0 ||
           atomic_load_explicit(&job->cancelled, memory_order_relaxed);
}

/* A result to hand out, the end, or cancellation (not "nobody running"). */
static int
stream_have_result(void *arg)
{
    MapJobObject *job = arg;
    return find_ready(job) != NULL || stream_finished(job) ||
           atomic_load_explicit(&job->cancelled, memory_order_relaxed);
}

static void
release_chunk(MapJobObject *job, gfx_chunk *ch)
{
    for (int64_t i = 0; i < ch->count; i++) {
        Py_XDECREF(ch->items[i]);
        if (ch->errors) {
            Py_XDECREF(ch->errors[i]);
        }
    }
    PyMem_Free(ch->items);
    PyMem_Free(ch->errors);
    ch->items = NULL;
    ch->errors = NULL;
    ch->count = 0;
    atomic_fetch_sub_explicit(&job->live, 1, memory_order_relaxed);
    /* seq_cst (see maybe_restart): free the slot before reading active. */
    atomic_store(&ch->state, SLOT_FREE);
}

static PyObject *
raise_cancelled(MapJobObject *job)
{
    gfx_state *st = gfx_state_from_type(Py_TYPE(job));
    PyErr_Format(st->CancelledError,
                 "Pool.%s(): the pool was terminated before the work "
                 "finished", job->method);
    return NULL;
}

/* Next result: a new reference; NULL with no exception at the end; NULL
 * with an exception on failure (the item's own, decorated) or Ctrl-C. */
static PyObject *
stream_next(MapJobObject *job)
{
    if (gfx_check_fork(job->fork_gen, job->method) < 0) {
        return NULL;
    }
    for (;;) {
        gfx_chunk *ch = job->cur;
        if (ch != NULL) {
            if (job->cur_pos < ch->count) {
                int64_t i = job->cur_pos++;
                if (ch->errors != NULL && ch->errors[i] != NULL) {
                    PyObject *exc = ch->errors[i];
                    ch->errors[i] = NULL;
                    gfx_state *st = gfx_state_from_type(Py_TYPE(job));
                    if (ch->input_failed && i == ch->count - 1) {
                        gfx_raise_failure(st, exc, NULL, -1, 0);
                    }
                    else {
                        gfx_raise_failure(st, exc, job->fn,
                                          ch->start + i + job->index_base, 1);
                    }
                    Py_DECREF(exc);
                    return NULL;
                }
                PyObject *item = ch->items[i];
                ch->items[i] = NULL;
                if (item != NULL) {
                    return item;
                }
                continue;  /* skipped after cancellation */
            }
            job->cur = NULL;
            atomic_fetch_add_explicit(&job->consume_seq, 1,
                                      memory_order_relaxed);
            release_chunk(job, ch);
            maybe_restart(job);
            continue;
        }
        if (atomic_load(&job->cancelled)) {
            if (gfx_pool_terminated(job->pool)) {
                return raise_cancelled(job);
            }
            return NULL;
        }
        ch = find_ready(job);
        if (ch != NULL) {
            job->cur = ch;
            job->cur_pos = 0;
            continue;
        }
        if (stream_finished(job)) {
            return NULL;
        }
        int own = gfx_pool_is_own_worker(job->pool);
        if (own || atomic_load(&job->active) == 0) {
            if (gfx_pool_terminated(job->pool)) {
                job_cancel(job);
                return raise_cancelled(job);
            }
            if (own || !maybe_restart(job)) {
                /* Nobody can run it (pool joined, or we are one of its
                 * busy workers): compute a chunk here. */
                int r = stream_step(job);
                if (r < 0 && PyErr_Occurred()) {
                    return NULL;
                }
                if (r > 0 || !own) {
                    continue;
                }
                /* A worker of this pool made no progress: the chunk it
                 * needs is being computed by another thread, which needs
                 * the GIL to finish it.  Wait without the GIL. */
                if (gfx_wait(&job->ec, stream_have_result, job, -1.0) < 0) {
                    job_cancel(job);
                    return NULL;
                }
                continue;
            }
        }
        int rc = gfx_wait(&job->ec, stream_ready, job, -1.0);
        if (rc < 0) {
            job_cancel(job);   /* Ctrl-C: drop the queued work */
            return NULL;
        }
    }
}

/* ---- participants ------------------------------------------------------------------ */

static int
start_participants(MapJobObject *job, int n)
{
    int started = 0;
    for (int k = 0; k < n; k++) {
        MapTask *mt = PyMem_Malloc(sizeof(MapTask));
        if (mt == NULL) {
            break;
        }
        mt->task.base.run = gfx__task_entry;
        mt->task.kind = GFX_TASK_MAP;
        mt->job = (MapJobObject *)Py_NewRef(job);
        atomic_fetch_add(&job->active, 1);
        /* The core refuses (GF_ECLOSED) once join/terminate closed it. */
        if (job->pool->core == NULL ||
            gfx_pool_try_enqueue(job->pool, &mt->task) != 0) {
            atomic_fetch_sub(&job->active, 1);
            Py_DECREF(job);
            PyMem_Free(mt);
            break;
        }
        started++;
    }
    return started;
}

void
gfx_mapjob_run(gfx_task *task)
{
    MapTask *mt = (MapTask *)task;
    MapJobObject *job = mt->job;
    PyMem_Free(mt);
    if (job->mode == MODE_DIRECT) {
        direct_run(job);
        atomic_fetch_sub(&job->active, 1);
    }
    else {
        stream_participate(job);
    }
    Py_DECREF(job);
}

void
gfx_mapjob_cancel(gfx_task *task)
{
    MapTask *mt = (MapTask *)task;
    MapJobObject *job = mt->job;
    PyMem_Free(mt);
    job_cancel(job);
    atomic_fetch_sub(&job->active, 1);
    gf_ec_notify_all(&job->ec);
    Py_DECREF(job);
}

static PyObject *mapiter_new(MapJobObject *job);

/* ---- creation ----------------------------------------------------------------------- */

int
gfx_parse_chunksize(PyObject *obj, const char *method, int64_t *out)
{
    if (obj == NULL || obj == Py_None) {
        *out = 0;
        return 0;
    }
    if (PyBool_Check(obj) || !PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "Pool.%s(): chunksize must be an int or None, got %R "
                     "(type %.100s)", method, obj, Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow < 0 || (overflow == 0 && v < 1)) {
        PyErr_Format(PyExc_ValueError,
                     "Pool.%s(): chunksize must be >= 1, got %R", method, obj);
        return -1;
    }
    *out = overflow > 0 ? INT64_MAX / 4 : (int64_t)v;
    return 0;
}

/* Fill r_start/r_step/total for a range whose values fit in long long. */
static int
range_fits(MapJobObject *job, PyObject *r)
{
    PyObject *start = PyObject_GetAttrString(r, "start");
    PyObject *step = PyObject_GetAttrString(r, "step");
    Py_ssize_t len = PyObject_Size(r);
    int ok = 0;
    if (start && step && len >= 0) {
        int o1 = 0, o2 = 0;
        long long s = PyLong_AsLongLongAndOverflow(start, &o1);
        long long st = PyLong_AsLongLongAndOverflow(step, &o2);
        if (!o1 && !o2 && !PyErr_Occurred()) {
            /* the last value, start + (len-1)*step, must fit too */
            long long last;
            if (len == 0 ||
                (!__builtin_mul_overflow((long long)(len - 1), st, &last) &&
                 !__builtin_add_overflow(s, last, &last))) {
                job->r_start = s;
                job->r_step = st;
                job->total = len;
                ok = 1;
            }
        }
    }
    PyErr_Clear();
    Py_XDECREF(start);
    Py_XDECREF(step);
    return ok;
}

static MapJobObject *
job_new(PoolObject *pool, PyObject *fn, int flags, const char *method)
{
    gfx_state *st = gfx_state_from_type(Py_TYPE(pool));
    MapJobObject *job = PyObject_GC_New(MapJobObject, st->MapJob_Type);
    if (job == NULL) {
        return NULL;
    }
    /* Everything after the header starts zeroed. */
    memset((char *)job + sizeof(PyObject), 0,
           sizeof(MapJobObject) - sizeof(PyObject));
    job->pool = (PoolObject *)Py_NewRef(pool);
    job->fn = Py_NewRef(fn);
    job->lc = pool->lc;
    job->method = method;
    job->flags = flags;
    job->total = -1;
    job->fail_index = -1;
    atomic_init(&job->fail_min, INT64_MAX);
    job->fork_gen = atomic_load(&gfx_fork_generation);
    gf_ec_init(&job->ec);
    pthread_mutex_init(&job->in_lock, NULL);
    job->chunker = gf_aligned_alloc(sizeof(gf_chunker_t));
    PyObject_GC_Track(job);
    if (job->chunker == NULL) {
        Py_DECREF(job);
        PyErr_NoMemory();
        return NULL;
    }
    return job;
}

static int64_t
direct_count(void *arg)
{
    return atomic_load_explicit(&((MapJobObject *)arg)->done_items,
                                memory_order_relaxed);
}

static int64_t
list_count(void *arg)
{
    return (int64_t)PyList_GET_SIZE((PyObject *)arg);
}

PyObject *
gfx_map(PoolObject *pool, PyObject *fn, PyObject *iterable,
        PyObject *chunksize_obj, int flags, const char *method,
        PyObject *progress, int64_t index_base)
{
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError,
                     "Pool.%s(): func must be callable, got %R (type %.100s)",
                     method, fn, Py_TYPE(fn)->tp_name);
        return NULL;
    }
    int64_t chunk;
    if (gfx_parse_chunksize(chunksize_obj, method, &chunk) < 0 ||
        gfx_pool_check_usable(pool, method) < 0) {
        return NULL;
    }
    MapJobObject *job = job_new(pool, fn, flags, method);
    if (job == NULL) {
        return NULL;
    }
    job->fixed_chunk = chunk;
    job->index_base = index_base;
    if (PyList_CheckExact(iterable)) {
        job->input_kind = IN_LIST;
        job->input = Py_NewRef(iterable);
        job->total = PyList_GET_SIZE(iterable);
    }
    else if (PyTuple_CheckExact(iterable)) {
        job->input_kind = IN_TUPLE;
        job->input = Py_NewRef(iterable);
        job->total = PyTuple_GET_SIZE(iterable);
    }
    else if (PyRange_Check(iterable) && range_fits(job, iterable)) {
        job->input_kind = IN_RANGE;
    }
    else {
        job->input_kind = IN_ITER;
        job->input = PyObject_GetIter(iterable);
        if (job->input == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError,
                             "Pool.%s(): iterable must be iterable, got %R "
                             "(type %.100s)", method, iterable,
                             Py_TYPE(iterable)->tp_name);
            }
            Py_DECREF(job);
            return NULL;
        }
    }
    uint32_t nw = pool->nworkers;
    int direct = !(flags & GFX_MAP_LAZY) && job->input_kind != IN_ITER;
    job->mode = direct ? MODE_DIRECT : MODE_STREAM;
    if (gf_chunker_init(job->chunker, job->total, chunk, nw, 0) < 0) {
        Py_DECREF(job);
        return gfx_raise(GF_EINVAL, method);
    }

    if (direct) {
        if (job->total == 0) {
            Py_DECREF(job);
            return PyList_New(0);
        }
        job->results = PyList_New((Py_ssize_t)job->total);
        if (job->results == NULL) {
            Py_DECREF(job);
            return NULL;
        }
        /* Hidden from the GC (gc.get_objects()) while it still holds NULL
         * slots; tracked again when it is complete. */
        PyObject_GC_UnTrack(job->results);
        int n = job->total < (int64_t)nw ? (int)job->total : (int)nw;
        int own = gfx_pool_is_own_worker(pool);
        if (start_participants(job, n) == 0 && !own) {
            /* The queue is full or closed: work here rather than fail. */
            direct_run(job);
        }
        if (own) {
            direct_run(job);  /* nested map: help instead of waiting */
        }
        gfx_progress prog = {progress, direct_count, job, 0, 0};
        gfx_progress *prev = gfx__progress;
        if (progress != NULL) {
            gfx__progress = &prog;
        }
        int rc = gfx_wait(&job->ec, direct_ready, job, -1.0);
        gfx__progress = prev;
        if (rc == 1 && progress != NULL && gfx_progress_tick(&prog, 1) < 0) {
            rc = -1;
        }
        if (rc < 0) {
            job_cancel(job);
            Py_DECREF(job);
            return NULL;
        }
        PyObject *res = NULL;
        if (gfx_pool_terminated(pool) &&
            atomic_load(&job->done_items) != job->total) {
            raise_cancelled(job);
        }
        else if (atomic_load(&job->fail_min) != INT64_MAX) {
            PyObject *exc = NULL;
            int64_t index;
            Py_BEGIN_CRITICAL_SECTION(job);
            exc = Py_NewRef(job->fail_exc);
            index = job->fail_index;
            Py_END_CRITICAL_SECTION();
            gfx_raise_failure(gfx_state_from_type(Py_TYPE(job)), exc, fn,
                              (Py_ssize_t)(index + job->index_base), 1);
            Py_DECREF(exc);
        }
        else if (atomic_load(&job->done_items) != job->total) {
            raise_cancelled(job);
        }
        else {
            res = Py_NewRef(job->results);
            PyObject_GC_Track(res);
        }
        Py_DECREF(job);
        return res;
    }

    /* STREAM */
    job->nslots = SLOTS_PER_WORKER * nw;
    if (job->nslots < 2) {
        job->nslots = 2;
    }
    job->slots = PyMem_Calloc(job->nslots, sizeof(gfx_chunk));
    if (job->slots == NULL) {
        Py_DECREF(job);
        return PyErr_NoMemory();
    }
    start_participants(job, (int)nw);
    if (flags & GFX_MAP_LAZY) {
        return mapiter_new(job);  /* steals our reference to job */
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        job_cancel(job);
        Py_DECREF(job);
        return NULL;
    }
    gfx_progress prog = {progress, list_count, out, 0, 0};
    gfx_progress *prev = gfx__progress;
    if (progress != NULL) {
        gfx__progress = &prog;
    }
    for (;;) {
        PyObject *item = stream_next(job);
        if (item == NULL) {
            if (!PyErr_Occurred() && progress != NULL) {
                (void)gfx_progress_tick(&prog, 1);
            }
            if (PyErr_Occurred()) {
                job_cancel(job);
                Py_CLEAR(out);
            }
            break;
        }
        int rc = PyList_Append(out, item);
        Py_DECREF(item);
        if (rc == 0 && progress != NULL) {
            rc = gfx_progress_tick(&prog, 0);
        }
        if (rc < 0) {
            job_cancel(job);
            Py_CLEAR(out);
            break;
        }
    }
    gfx__progress = prev;
    Py_DECREF(job);
    return out;
}

/* ---- the job type (internal) ------------------------------------------------------ */

static int
MapJob_traverse(PyObject *op, visitproc visit, void *arg)
{
    MapJobObject *job = JOB_CAST(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(job->pool);
    Py_VISIT(job->fn);
    Py_VISIT(job->input);
    Py_VISIT(job->fail_exc);
    return 0;
}

static int
MapJob_clear(PyObject *op)
{
    MapJobObject *job = JOB_CAST(op);
    /* Only reached for unreachable jobs: no participant holds one. */
    Py_CLEAR(job->fn);
    Py_CLEAR(job->input);
    Py_CLEAR(job->fail_exc);
    return 0;
}

static void
MapJob_dealloc(PyObject *op)
{
    MapJobObject *job = JOB_CAST(op);
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    /* Participants hold references, so when we get here none is running:
     * every slot and array is ours to free. */
    if (job->slots != NULL) {
        for (uint32_t k = 0; k < job->nslots; k++) {
            if (job->slots[k].items != NULL) {
                release_chunk(job, &job->slots[k]);
            }
        }
        PyMem_Free(job->slots);
    }
    MapJob_clear(op);
    Py_CLEAR(job->results);
    Py_CLEAR(job->pool);
    if (job->chunker != NULL) {
        gf_aligned_free(job->chunker);
    }
    pthread_mutex_destroy(&job->in_lock);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyType_Slot MapJob_slots[] = {
    {Py_tp_doc, (void *)"The state shared by a map call and its workers."},
    {Py_tp_dealloc, MapJob_dealloc},
    {Py_tp_traverse, MapJob_traverse},
    {Py_tp_clear, MapJob_clear},
    {0, NULL},
};

PyType_Spec gfx_mapjob_spec = {
    .name = "gilfree._core._MapJob",
    .basicsize = sizeof(MapJobObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = MapJob_slots,
};

/* ---- MapIterator: the caller's handle on a lazy job ----------------------------------
 *
 * Separate from the job so that dropping the iterator cancels the work at
 * once: the participants' references keep the job alive, but only the
 * iterator's reference stands for "someone still wants the results". */

typedef struct {
    PyObject_HEAD
    /* A MapJob (threads) or a _ProcMap (processes, procpool.c). */
    PyObject *job;
    PyObject *weakreflist;
    /* Results computed before the job (an auto pool's probed first items):
     * handed out first, then `prefix_error` is raised if set, then the
     * job's results.  Set once by _prepend() before the first next(); read
     * and cleared under the iterator's critical section. */
    PyObject *prefix;           /* list or NULL */
    Py_ssize_t prefix_pos;
    PyObject *prefix_error;     /* exception or NULL */
} MapIterObject;

static int
is_thread_job(PyObject *job)
{
    gfx_state *st = gfx_state_from_type(Py_TYPE(job));
    return Py_TYPE(job) == st->MapJob_Type;
}

static void
any_job_cancel(PyObject *job)
{
    if (is_thread_job(job)) {
        job_cancel((MapJobObject *)job);
    }
    else {
        gfx_procmap_cancel(job);
    }
}

#define ITER_CAST(op) ((MapIterObject *)(op))

static PyObject *
mapiter_wrap(PyObject *job)
{
    gfx_state *st = gfx_state_from_type(Py_TYPE(job));
    MapIterObject *it = PyObject_GC_New(MapIterObject, st->MapIter_Type);
    if (it == NULL) {
        any_job_cancel(job);
        Py_DECREF(job);
        return NULL;
    }
    it->job = job;
    it->weakreflist = NULL;
    it->prefix = NULL;
    it->prefix_pos = 0;
    it->prefix_error = NULL;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

/* Steals `job` (a _ProcMap). */
PyObject *
gfx_mapiter_wrap(PyObject *job)
{
    return mapiter_wrap(job);
}

static PyObject *
mapiter_new(MapJobObject *job)
{
    return mapiter_wrap((PyObject *)job);
}

/* The next prefix result (new reference), or NULL with an exception set
 * (the prefix error), or NULL without one when the prefix is done. */
static PyObject *
prefix_next(MapIterObject *it)
{
    PyObject *item = NULL;
    Py_BEGIN_CRITICAL_SECTION(it);
    if (it->prefix != NULL) {
        if (it->prefix_pos < PyList_GET_SIZE(it->prefix)) {
            item = Py_NewRef(PyList_GET_ITEM(it->prefix, it->prefix_pos));
            it->prefix_pos++;
        }
        else {
            Py_CLEAR(it->prefix);
        }
    }
    if (item == NULL && it->prefix_error != NULL) {
        PyObject *error = it->prefix_error;
        it->prefix_error = NULL;
        gfx_restore_exception(error);
        Py_DECREF(error);
    }
    Py_END_CRITICAL_SECTION();
    return item;
}

static PyObject *
MapIter_iternext(PyObject *op)
{
    PyObject *any = ITER_CAST(op)->job;
    if (any == NULL) {
        return NULL;
    }
    /* Unlocked look first (the common case has no prefix): _prepend() runs
     * before the iterator is handed to anyone, and the fields only ever go
     * back to NULL, so a stale non-NULL merely takes the locked path. */
    if (ITER_CAST(op)->prefix != NULL || ITER_CAST(op)->prefix_error != NULL) {
        PyObject *item = prefix_next(ITER_CAST(op));
        if (item != NULL || PyErr_Occurred()) {
            return item;
        }
    }
    if (!is_thread_job(any)) {
        PyObject *item;
        Py_BEGIN_CRITICAL_SECTION(any);
        item = gfx_procmap_next(any);
        Py_END_CRITICAL_SECTION();
        return item;
    }
    MapJobObject *job = (MapJobObject *)any;
    PyObject *item;
    /* One consumer at a time: next() from several threads is serialised. */
    Py_BEGIN_CRITICAL_SECTION(job);
    item = stream_next(job);
    Py_END_CRITICAL_SECTION();
    return item;
}

PyDoc_STRVAR(MapIter_close_doc,
"close($self, /)\n--\n\n"
"Stop: cancel the work not yet started; further next() ends iteration.\n\n"
">>> import gilfree\n"
">>> with gilfree.Pool(2, \"threads\") as pool:\n"
"...     it = pool.imap(abs, range(-10**9, 0))   # far more than needed\n"
"...     next(it)\n"
"...     it.close()\n"
"...     list(it)\n"
"1000000000\n"
"[]");

static PyObject *
MapIter_close(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    MapIterObject *it = ITER_CAST(op);
    Py_BEGIN_CRITICAL_SECTION(it);
    Py_CLEAR(it->prefix);
    Py_CLEAR(it->prefix_error);
    Py_END_CRITICAL_SECTION();
    if (it->job != NULL) {
        any_job_cancel(it->job);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(MapIter_prepend_doc,
"_prepend($self, results, error, /)\n--\n\n"
"Internal (auto pools): hand out the list `results` first, then raise\n"
"`error` unless it is None, then this iterator's own results.  Only before\n"
"the first next().");

static PyObject *
MapIter_prepend(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[0]) ||
        (args[1] != Py_None && !PyExceptionInstance_Check(args[1]))) {
        PyErr_SetString(PyExc_TypeError,
                        "_prepend(results: list, error: BaseException | None)");
        return NULL;
    }
    MapIterObject *it = ITER_CAST(op);
    int done = 0;
    Py_BEGIN_CRITICAL_SECTION(it);
    if (it->prefix == NULL && it->prefix_error == NULL) {
        it->prefix = Py_NewRef(args[0]);
        it->prefix_pos = 0;
        it->prefix_error = args[1] == Py_None ? NULL : Py_NewRef(args[1]);
        done = 1;
    }
    Py_END_CRITICAL_SECTION();
    if (!done) {
        PyErr_SetString(PyExc_RuntimeError, "_prepend(): called twice");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
MapIter_repr(PyObject *op)
{
    PyObject *job = ITER_CAST(op)->job;
    const char *method = job == NULL ? "?"
                         : is_thread_job(job) ? ((MapJobObject *)job)->method
                                              : gfx_procmap_method(job);
    return PyUnicode_FromFormat("<gilfree.MapIterator of Pool.%s() at %p>",
                                method, op);
}

static int
MapIter_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(ITER_CAST(op)->job);
    Py_VISIT(ITER_CAST(op)->prefix);
    Py_VISIT(ITER_CAST(op)->prefix_error);
    return 0;
}

static int
MapIter_clear(PyObject *op)
{
    MapIterObject *it = ITER_CAST(op);
    Py_CLEAR(it->prefix);
    Py_CLEAR(it->prefix_error);
    if (it->job != NULL) {
        any_job_cancel(it->job);
        Py_CLEAR(it->job);
    }
    return 0;
}

static void
MapIter_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (ITER_CAST(op)->weakreflist != NULL) {
        PyObject_ClearWeakRefs(op);
    }
    MapIter_clear(op);   /* nobody wants the rest: cancel it */
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef MapIter_methods[] = {
    {"close", MapIter_close, METH_NOARGS, MapIter_close_doc},
    {"_prepend", (PyCFunction)(void (*)(void))MapIter_prepend, METH_FASTCALL,
     MapIter_prepend_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef MapIter_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET,
     offsetof(MapIterObject, weakreflist), Py_READONLY},
    {NULL},
};

PyDoc_STRVAR(MapIter_doc,
"The lazy result of Pool.imap() / imap_unordered(): an iterator.\n\n"
"Input is pulled only as fast as results are consumed (plus a bounded\n"
"look-ahead).  close(), or dropping the iterator, cancels the rest.\n\n"
"    >>> with gilfree.Pool(2) as pool:\n"
"    ...     it = pool.imap(abs, [-1, -2, -3])\n"
"    ...     next(it), list(it)\n"
"    (1, [2, 3])");

static PyType_Slot MapIter_slots[] = {
    {Py_tp_doc, (void *)MapIter_doc},
    {Py_tp_dealloc, MapIter_dealloc},
    {Py_tp_traverse, MapIter_traverse},
    {Py_tp_clear, MapIter_clear},
    {Py_tp_repr, MapIter_repr},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, MapIter_iternext},
    {Py_tp_methods, MapIter_methods},
    {Py_tp_members, MapIter_members},
    {0, NULL},
};

PyType_Spec gfx_mapiter_spec = {
    .name = "gilfree.MapIterator",
    .basicsize = sizeof(MapIterObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = MapIter_slots,
};
