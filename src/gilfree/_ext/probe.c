/* The GIL probe: how much of a call's time did it hold the GIL?
 *
 * While the caller runs the function, a sampler thread (a native thread
 * attached to the interpreter) loops: pause a little without the GIL, then
 * take the GIL and time how long that took, release it at once.  When the
 * function holds the GIL, the sampler waits until the holder is asked to
 * drop it (the interpreter's switch interval, 5 ms by default); when the
 * function runs in C with the GIL released (sleep, hashlib, zlib, numpy,
 * file reads), the sampler gets it at once.  So
 *
 *     held ~= sum(wait) / sum(wait + pause)
 *
 * is the share of the time the GIL was not available to another thread.
 * That includes other threads holding it; the Python layer caps the share
 * it attributes to the call by the calling thread's own CPU time (a thread
 * cannot hold the GIL for long without running).
 * The sampler's own hold is a few microseconds per cycle, and the forced
 * switches cost the function about one context switch per switch interval.
 *
 * The sampler starts detached and never runs Python code.  On a
 * free-threaded build with the GIL disabled taking the "GIL" (attaching)
 * never waits, and the probe says so (threads are then the right choice).
 */
#include "gfext.h"

#include <signal.h>
#include <time.h>

#define PROBE_PAUSE_NS 100000  /* between two samples: 0.1 ms */

typedef struct {
    PyInterpreterState *interp;
    _Atomic int stop;
    _Atomic int started;
    _Atomic int measuring;      /* the call has begun: samples count */
    /* Written by the sampler only; read after pthread_join. */
    int64_t wait_ns;
    int64_t pause_ns;
    int64_t samples;
    int64_t max_wait_ns;
} sampler;

static void *
sampler_main(void *arg)
{
    sampler *s = arg;
    gfx_thread_setup("gilfree-probe");
    PyThreadState *ts = PyThreadState_New(s->interp);
    atomic_store(&s->started, 1);
    if (ts == NULL) {
        return NULL;
    }
    struct timespec pause = {0, PROBE_PAUSE_NS};
    while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
        int64_t p0 = gf_now_ns();
        nanosleep(&pause, NULL);
        int64_t t0 = gf_now_ns();
        if (atomic_load_explicit(&s->stop, memory_order_relaxed)) {
            break;
        }
        /* Only samples that start once the call has begun count (acquire:
         * pairs with the caller's release store just before the call). */
        int counts = atomic_load_explicit(&s->measuring, memory_order_acquire);
        PyEval_RestoreThread(ts);   /* waits for the GIL */
        int64_t t1 = gf_now_ns();
        PyEval_SaveThread();
        if (!counts) {
            continue;
        }
        s->pause_ns += t0 - p0;
        s->wait_ns += t1 - t0;
        s->samples++;
        if (t1 - t0 > s->max_wait_ns) {
            s->max_wait_ns = t1 - t0;
        }
    }
    PyEval_RestoreThread(ts);
    PyThreadState_Clear(ts);
    PyThreadState_DeleteCurrent();
    return NULL;
}

static int64_t
cpu_ns(clockid_t clock)
{
    struct timespec t;
    if (clock_gettime(clock, &t) != 0) {
        return 0;
    }
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

const char gfx_probe_call_doc[] =
"_probe_call(fn, args, kwargs, /)\n--\n\n"
"Call fn(*args, **kwargs) with the GIL sampler running (internal: see\n"
"gilfree.probe).  Returns (ok, value, wall_ns, thread_cpu_ns, wait_ns,\n"
"pause_ns, samples, max_wait_ns, process_cpu_ns): ok is False when fn\n"
"raised, and value is then the exception.";

PyObject *
gfx_probe_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyTuple_Check(args[1]) ||
        (args[2] != Py_None && !PyDict_Check(args[2]))) {
        PyErr_SetString(PyExc_TypeError,
                        "_probe_call(fn, args: tuple, kwargs: dict | None)");
        return NULL;
    }
    PyObject *fn = args[0], *fargs = args[1];
    PyObject *fkw = args[2] == Py_None ? NULL : args[2];
    sampler *s = PyMem_RawCalloc(1, sizeof *s);
    if (s == NULL) {
        return PyErr_NoMemory();
    }
    s->interp = PyInterpreterState_Get();
    pthread_t th;
    int rc = pthread_create(&th, NULL, sampler_main, s);
    if (rc != 0) {
        PyMem_RawFree(s);
        return gfx_raise(-rc, "gilfree.probe(): starting the sampler thread");
    }
    /* Let the sampler get going (it needs the GIL once it has created its
     * thread state): the measurement starts when it runs. */
    Py_BEGIN_ALLOW_THREADS
    /* A thread starts within microseconds: spin a little, then sleep in
     * 50 us steps rather than burn a core the sampler may need. */
    for (int spins = 0; !atomic_load(&s->started); spins++) {
        if (spins < 2000) {
            gf_cpu_relax();
        }
        else {
            struct timespec nap = {0, 50000};
            nanosleep(&nap, NULL);
        }
    }
    Py_END_ALLOW_THREADS
    int64_t w0 = gf_now_ns(), c0 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
    int64_t tc0 = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    atomic_store_explicit(&s->measuring, 1, memory_order_release);
    PyObject *value = PyObject_Call(fn, fargs, fkw);
    int64_t tc1 = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    int64_t w1 = gf_now_ns(), c1 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
    int ok = value != NULL;
    if (!ok) {
        value = gfx_fetch_exception();
    }
    atomic_store(&s->stop, 1);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    PyObject *res = NULL;
    if (value != NULL) {
        res = Py_BuildValue("(ONLLLLLLL)", ok ? Py_True : Py_False, value,
                            (long long)(w1 - w0), (long long)(tc1 - tc0),
                            (long long)s->wait_ns, (long long)s->pause_ns,
                            (long long)s->samples, (long long)s->max_wait_ns,
                            (long long)(c1 - c0));
    }
    PyMem_RawFree(s);
    return res;
}
