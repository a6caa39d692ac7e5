/* Waiting without the GIL, and waking on Ctrl-C.
 *
 * Every blocking call of the extension comes here.  The pattern follows
 * CPython's own lock waits (Python/lock.c, _PY_LOCK_HANDLE_SIGNALS): release
 * the GIL, sleep in bounded slices, and after a slice that a signal
 * interrupted (or that simply elapsed) take the GIL back to run
 * PyErr_CheckSignals().  Worker threads block asynchronous signals, so
 * SIGINT lands on a thread that can handle it -- normally the main thread
 * waiting here -- and cuts its futex sleep short (GF_EINTR).  The 50 ms slice
 * is the backstop when the signal was delivered to some other thread. */
#include "gfext.h"

#include <math.h>
#include <time.h>

/* Longest sleep between signal checks: half the 100 ms Ctrl-C budget. */
#define GFX_WAIT_SLICE_NS (50 * 1000 * 1000LL)
/* Spin this long with the GIL released before parking: a cache-line
 * hand-off is ~0.06 us, a futex round trip ~30 us on these VMs. */
#define GFX_WAIT_SPIN_NS (20 * 1000LL)

_Thread_local gfx_progress *gfx__progress;

int
gfx_progress_tick(gfx_progress *p, int force)
{
    int64_t n = p->count(p->arg);
    int64_t now = gf_now_ns();
    if (n == p->last_n || (!force && now - p->last_ns < GFX_PROGRESS_NS)) {
        return 0;
    }
    p->last_n = n;
    p->last_ns = now;
    PyObject *v = PyLong_FromLongLong((long long)n);
    PyObject *r = v ? PyObject_CallOneArg(p->cb, v) : NULL;
    Py_XDECREF(v);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

int
gfx_wait(gf_ec_t *ec, gfx_ready_fn ready, void *arg, double timeout)
{
    if (ready(arg)) {
        return 1;
    }
    int64_t deadline = -1;
    if (timeout >= 0) {
        if (timeout > 1e9) {
            timeout = 1e9;  /* ~30 years: no overflow below */
        }
        deadline = gf_now_ns() + (int64_t)(timeout * 1e9);
    }
    int result = 0;
    int first = 1;
    for (;;) {
        int is_ready = 0;
        int interrupted = 0;
        int timed_out = 0;
        Py_BEGIN_ALLOW_THREADS
        if (first) {
            /* Bounded spin: most waits in a busy pool end here. */
            int64_t spin_end = gf_now_ns() + GFX_WAIT_SPIN_NS;
            for (unsigned i = 0;; i++) {
                if (ready(arg)) {
                    is_ready = 1;
                    break;
                }
                gf_cpu_relax();
                if ((i & 63) == 63 && gf_now_ns() >= spin_end) {
                    break;
                }
            }
        }
        if (!is_ready) {
            uint32_t key = gf_ec_prepare(ec);
            if (ready(arg)) {
                is_ready = 1;
            }
            else {
                int64_t slice = GFX_WAIT_SLICE_NS;
                if (deadline >= 0) {
                    int64_t left = deadline - gf_now_ns();
                    if (left <= 0) {
                        timed_out = 1;
                    }
                    else if (left < slice) {
                        slice = left;
                    }
                }
                if (!timed_out) {
                    int rc = gf_ec_wait(ec, key, slice);
                    if (rc == GF_EINTR) {
                        interrupted = 1;
                    }
                    is_ready = ready(arg);
                }
            }
        }
        Py_END_ALLOW_THREADS
        first = 0;
        if (is_ready) {
            result = 1;
            break;
        }
        /* Back with the GIL: a pending Ctrl-C raises here.  Check after
         * every slice, interrupted or not (the signal may have landed on
         * another thread and only set CPython's flag). */
        (void)interrupted;
        if (PyErr_CheckSignals() < 0) {
            result = -1;
            break;
        }
        if (gfx__progress != NULL && gfx_progress_tick(gfx__progress, 0) < 0) {
            result = -1;
            break;
        }
        if (timed_out || (deadline >= 0 && gf_now_ns() >= deadline)) {
            result = ready(arg) ? 1 : 0;
            break;
        }
    }
    return result;
}

int
gfx_mutex_lock(pthread_mutex_t *m)
{
    if (pthread_mutex_trylock(m) == 0) {
        return 0;
    }
    /* The holder may be waiting for the GIL (e.g. inside an iterator's
     * __next__ that released it): never block on the mutex with the GIL.
     * Sliced, so Ctrl-C is seen while another thread's generator is slow. */
    for (;;) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += GFX_WAIT_SLICE_NS;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec += 1;
            until.tv_nsec -= 1000000000L;
        }
        rc = pthread_mutex_timedlock(m, &until);
        Py_END_ALLOW_THREADS
        if (rc == 0) {
            return 0;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}
