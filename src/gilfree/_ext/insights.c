/* Insights: where each worker's time goes (Pool(insights=True)).
 *
 * One gfx_wstats per worker life, written only by that worker and read at
 * any moment by pool.insights():
 *
 *   threads    allocated by the pool, one per worker thread; the worker
 *              entry point (pool.c) times its GIL acquisition, the stretch
 *              it runs tasks attached (wall and thread CPU time) and the
 *              gaps between (waiting for work); map jobs count the calls.
 *   processes  in the worker's channel memory, right after its control
 *              block, so the pool reads it without asking the worker; the
 *              worker loop times waiting on its ring, decoding, calling,
 *              encoding and sending.  When a worker life ends, the pool
 *              keeps a snapshot.
 *
 * Besides the counters, a ring of the most recent GFX_STATS_SEGS segments
 * (what ran from when to when) feeds the timeline plot.  Every field is a
 * relaxed atomic: one writer, readers that only need each value whole.
 * With insights off none of this exists and the hot paths test one NULL
 * pointer per task (not per item). */
#include "gfext.h"

#include <string.h>
#include <time.h>

_Thread_local gfx_wstats *gfx__cur_stats;

#define LOAD(f) atomic_load_explicit(&(f), memory_order_relaxed)

void
gfx_stats_init(gfx_wstats *s)
{
    memset((void *)s, 0, sizeof *s);
    s->magic = GFX_STATS_MAGIC;
}

int64_t
gfx_thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
        return 0;
    }
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void
gfx_stats_seg(gfx_wstats *s, unsigned kind, int64_t start, int64_t end,
              int64_t items, int64_t cpu_ns)
{
    uint32_t permille = GFX_CPU_UNKNOWN;
    if (cpu_ns >= 0 && end > start) {
        int64_t p = cpu_ns * 1000 / (end - start);
        permille = (uint32_t)(p > 1000 ? 1000 : p);
    }
    uint64_t n = LOAD(s->nsegs);
    gfx_segrec *r = &s->segs[n % GFX_STATS_SEGS];
    atomic_store_explicit(&r->start_ns, start, memory_order_relaxed);
    atomic_store_explicit(&r->end_ns, end, memory_order_relaxed);
    atomic_store_explicit(&r->kind, kind, memory_order_relaxed);
    atomic_store_explicit(&r->items,
                          (uint32_t)(items > UINT32_MAX ? UINT32_MAX : items),
                          memory_order_relaxed);
    atomic_store_explicit(&r->cpu_permille, permille, memory_order_relaxed);
    /* release: a reader that sees n + 1 sees the record. */
    atomic_store_explicit(&s->nsegs, n + 1, memory_order_release);
}

static int
set_i64(PyObject *d, const char *key, int64_t v)
{
    PyObject *o = PyLong_FromLongLong((long long)v);
    int rc = o ? PyDict_SetItemString(d, key, o) : -1;
    Py_XDECREF(o);
    return rc;
}

PyObject *
gfx_stats_snapshot(const gfx_wstats *s)
{
    if (s == NULL || s->magic != GFX_STATS_MAGIC) {
        return PyDict_New();
    }
    gfx_wstats *m = (gfx_wstats *)s;  /* atomics are read, never written */
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    if (set_i64(d, "tasks", LOAD(m->tasks)) < 0 ||
        set_i64(d, "chunks", LOAD(m->chunks)) < 0 ||
        set_i64(d, "work_ns", LOAD(m->work_ns)) < 0 ||
        set_i64(d, "cpu_ns", LOAD(m->cpu_ns)) < 0 ||
        set_i64(d, "idle_ns", LOAD(m->idle_ns)) < 0 ||
        set_i64(d, "gil_ns", LOAD(m->gil_ns)) < 0 ||
        set_i64(d, "data_ns", LOAD(m->data_ns)) < 0 ||
        set_i64(d, "init_ns", LOAD(m->init_ns)) < 0 ||
        set_i64(d, "exit_ns", LOAD(m->exit_ns)) < 0 ||
        set_i64(d, "start_ns", LOAD(m->start_ns)) < 0 ||
        set_i64(d, "end_ns", LOAD(m->end_ns)) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    /* The most recent segments.  The oldest slot may be being overwritten
     * (the writer is one ahead): skip it, and drop whatever the writer
     * overtook while we copied. */
    uint64_t n = atomic_load_explicit(&m->nsegs, memory_order_acquire);
    uint64_t first = n > GFX_STATS_SEGS - 1 ? n - (GFX_STATS_SEGS - 1) : 0;
    PyObject *segs = PyList_New(0);
    if (segs == NULL) {
        Py_DECREF(d);
        return NULL;
    }
    for (uint64_t i = first; i < n; i++) {
        gfx_segrec *r = &m->segs[i % GFX_STATS_SEGS];
        uint32_t cpu = LOAD(r->cpu_permille);
        PyObject *t = Py_BuildValue(
            "(ILLIN)", (unsigned)LOAD(r->kind), (long long)LOAD(r->start_ns),
            (long long)LOAD(r->end_ns), (unsigned)LOAD(r->items),
            cpu == GFX_CPU_UNKNOWN ? Py_NewRef(Py_None)
                                   : PyFloat_FromDouble(cpu / 1000.0));
        if (t == NULL || PyList_Append(segs, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(segs);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(t);
    }
    uint64_t after = atomic_load_explicit(&m->nsegs, memory_order_acquire);
    if (after > n && PyList_GET_SIZE(segs) > 0) {
        Py_ssize_t lost = (Py_ssize_t)(after - n);
        if (lost > PyList_GET_SIZE(segs)) {
            lost = PyList_GET_SIZE(segs);
        }
        if (PyList_SetSlice(segs, 0, lost, NULL) < 0) {
            Py_DECREF(segs);
            Py_DECREF(d);
            return NULL;
        }
    }
    int rc = PyDict_SetItemString(d, "segments", segs);
    Py_DECREF(segs);
    if (rc < 0 || set_i64(d, "segments_total", (int64_t)after) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}
