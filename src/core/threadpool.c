/* gilfree core: a pool of worker threads fed by a gf_queue_t.
 *
 * Life of a pool:
 *   gf_pool_new()   registers the pool (for fork), starts nthreads workers
 *                   with every signal blocked; each unblocks only the
 *                   synchronous ones, names itself, runs on_start;
 *   workers         pop task pointers: try, spin ~spin_ns, then park on the
 *                   queue's not-empty eventcount; run task->run();
 *   gf_pool_close() closes the queue: workers drain it, see GF_ECLOSED, run
 *                   on_stop, decrement `alive` and notify `exited`;
 *   gf_pool_join()  waits on `exited` until alive == 0 (with a timeout), then
 *                   pthread_join()s every thread once (they are already on
 *                   their way out, so this does not block for long);
 *   gf_pool_free()  unregisters and frees.
 *
 * Fork: a pthread_atfork child handler walks the registry and marks each
 * pool forked (its threads do not exist in the child), sets alive to 0 and
 * re-initialises the pool's mutex.  The registry lock is taken in prepare and
 * released in parent and child, so the registry is consistent in both.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

int gf__pool_fail_create_after = -1;

struct gf_worker {
    /* Immutable after gf_pool_new(). */
    gf_pool_t *pool;
    uint32_t index;
    /* Written by pthread_create() in the creating thread; read only by the
     * joiner, after pthread_create() returned. */
    pthread_t thread;
    /* The embedder's slot: touched only by this worker's thread (hooks and
     * tasks), or by others after the worker has exited and been joined. */
    void *local;
};

struct gf_pool {
    /* Immutable after gf_pool_new(). */
    gf_queue_t *queue;
    gf_worker_t *workers;
    uint32_t nthreads;
    uint32_t started; /* threads created; == nthreads once gf_pool_new() succeeds */
    int64_t spin_ns;
    void *userdata;
    void (*on_start)(gf_worker_t *worker);
    void (*on_stop)(gf_worker_t *worker);
    char name_prefix[16];

    /* Workers not yet exited.  Decremented by each worker with release after
     * its last touch of user state (on_stop); read with acquire by join. */
    _Atomic uint32_t alive;
    /* Notified by each exiting worker after it decremented alive. */
    gf_ec_t exited;
    /* Set once by gf_pool_close() (release); read by join (acquire). */
    _Atomic int closed;
    /* Set in the fork child handler, when the child has a single thread,
     * and read later by that process only: relaxed. */
    _Atomic int forked;

    /* join_lock guards joined (threads pthread_join()ed).  The fork child
     * handler re-initialises it: a parent thread may have held it. */
    pthread_mutex_t join_lock;
    int joined;

    /* Registry links, guarded by gf__pools.lock. */
    gf__reg_node_t reg;
};

/* --- registry and fork ---------------------------------------------------- */

static gf__registry_t gf__pools = GF__REGISTRY_INIT;
static pthread_once_t gf__atfork_once = PTHREAD_ONCE_INIT;
static int gf__atfork_status; /* written once inside pthread_once */

static void
gf__atfork_prepare(void)
{
    pthread_mutex_lock(&gf__pools.lock);
}

static void
gf__atfork_parent(void)
{
    pthread_mutex_unlock(&gf__pools.lock);
}

static void
gf__atfork_child(void)
{
    /* The child has one thread: the one that called fork() and holds the
     * registry lock since prepare. */
    for (gf__reg_node_t *n = gf__pools.head; n != NULL; n = n->next) {
        gf_pool_t *p = GF__CONTAINER_OF(n, gf_pool_t, reg);
        /* Relaxed: no other thread exists to order against; later reads
         * in this process come after these stores in program order. */
        atomic_store_explicit(&p->forked, 1, memory_order_relaxed);
        atomic_store_explicit(&p->alive, 0, memory_order_relaxed);
        pthread_mutex_init(&p->join_lock, NULL);
        p->joined = 1; /* nothing to pthread_join() here */
    }
    pthread_mutex_unlock(&gf__pools.lock);
}

static void
gf__atfork_register(void)
{
    gf__atfork_status = pthread_atfork(gf__atfork_prepare, gf__atfork_parent,
                                       gf__atfork_child);
}

/* --- worker threads -------------------------------------------------------- */

static _Thread_local gf_worker_t *gf__tls_worker;

/* Threads start with every signal blocked (inherited from their creator);
 * unblock the synchronous ones, which the kernel would deliver to this
 * thread anyway and which must not be silently held.  Shared with the
 * supervisor thread (proc.c). */
void
gf__unblock_sync_signals(void)
{
    static const int sync_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS};
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(sync_signals) / sizeof(sync_signals[0]); i++) {
        sigaddset(&set, sync_signals[i]);
    }
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/* "<prefix><index>", at most 15 bytes plus the NUL (the kernel's limit). */
static void
gf__worker_name(const gf_worker_t *w, char name[16])
{
    char digits[12];
    size_t nd = 0;
    uint32_t v = w->index;
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);

    size_t len = strlen(w->pool->name_prefix);
    for (size_t i = 0; i < len; i++) {
        name[i] = w->pool->name_prefix[i];
    }
    while (nd > 0 && len < 15) {
        name[len++] = digits[--nd];
    }
    name[len] = '\0';
}

/* Next task for a worker: try, spin up to spin_ns, then park.  Returns 0,
 * GF_ECLOSED (queue closed and drained) or GF_EINTR (only a synchronous
 * signal's handler could cause it; the caller just loops). */
static int
gf__worker_next(gf_pool_t *pool, gf_task_t **task)
{
    uint64_t v;
    int rc = gf_queue_try_pop(pool->queue, &v);
    if (rc == GF_EAGAIN && pool->spin_ns > 0) {
        int64_t until = gf_now_ns() + pool->spin_ns;
        for (uint32_t i = 1;; i++) {
            gf_cpu_relax();
            rc = gf_queue_try_pop(pool->queue, &v);
            if (rc != GF_EAGAIN) {
                break;
            }
            /* Read the clock every 32 iterations (~1 us of pauses). */
            if ((i & 31) == 0 && gf_now_ns() >= until) {
                break;
            }
        }
    }
    if (rc == GF_EAGAIN) {
        rc = gf_queue_pop(pool->queue, &v, -1);
    }
    if (rc == 0) {
        *task = (gf_task_t *)(uintptr_t)v;
    }
    return rc;
}

static void *
gf__worker_main(void *arg)
{
    gf_worker_t *w = arg;
    gf_pool_t *pool = w->pool;
    char name[16];

    gf__unblock_sync_signals();
    gf__worker_name(w, name);
#if defined(__linux__)
    pthread_setname_np(pthread_self(), name);
#endif
    gf__tls_worker = w;

    if (pool->on_start != NULL) {
        pool->on_start(w);
    }
    for (;;) {
        gf_task_t *task;
        int rc = gf__worker_next(pool, &task);
        if (rc == GF_ECLOSED) {
            break;
        }
        if (rc == 0) {
            task->run(task, w);
        }
    }
    if (pool->on_stop != NULL) {
        pool->on_stop(w);
    }
    gf__tls_worker = NULL;

    /* Release: everything this thread did (its tasks, on_stop) happens
     * before a joiner's acquire load that sees the decrement. */
    atomic_fetch_sub_explicit(&pool->alive, 1, memory_order_release);
    /* Still safe to touch the pool: it is freed only after a successful
     * join, which pthread_join()s this thread first. */
    gf_ec_notify_all(&pool->exited);
    return NULL;
}

/* --- pool ------------------------------------------------------------------ */

static void
gf__pool_release(gf_pool_t *pool)
{
    pthread_mutex_destroy(&pool->join_lock);
    if (pool->queue != NULL) {
        gf_queue_free(pool->queue);
    }
    gf_free(pool->workers);
    gf_free(pool);
}

int
gf_pool_new(const gf_pool_config_t *cfg, gf_pool_t **out)
{
    if (cfg == NULL || out == NULL || cfg->nthreads == 0 ||
        cfg->nthreads > GF__POOL_MAX_THREADS) {
        return GF_EINVAL;
    }
    uint32_t capacity = cfg->queue_capacity != 0 ? cfg->queue_capacity
                                                  : GF__POOL_DEFAULT_CAPACITY;
    if (gf_queue_footprint(capacity) == 0) {
        return GF_EINVAL;
    }
    pthread_once(&gf__atfork_once, gf__atfork_register);
    if (gf__atfork_status != 0) {
        return -gf__atfork_status;
    }

    gf_pool_t *pool = gf_calloc(1, sizeof(*pool));
    if (pool == NULL) {
        return GF_ENOMEM;
    }
    int rc = pthread_mutex_init(&pool->join_lock, NULL);
    if (rc != 0) {
        gf_free(pool);
        return -rc;
    }
    pool->workers = gf_calloc(cfg->nthreads, sizeof(gf_worker_t));
    if (pool->workers == NULL) {
        gf__pool_release(pool);
        return GF_ENOMEM;
    }
    rc = gf_queue_new(capacity, &pool->queue);
    if (rc != 0) {
        gf__pool_release(pool);
        return rc;
    }
    pool->nthreads = cfg->nthreads;
    pool->spin_ns = cfg->spin_ns != 0 ? cfg->spin_ns : GF__POOL_DEFAULT_SPIN_NS;
    pool->userdata = cfg->userdata;
    pool->on_start = cfg->on_start;
    pool->on_stop = cfg->on_stop;
    const char *prefix = cfg->name_prefix != NULL ? cfg->name_prefix : "gilfree-";
    size_t plen = strlen(prefix);
    plen = plen > 15 ? 15 : plen;
    memcpy(pool->name_prefix, prefix, plen);
    pool->name_prefix[plen] = '\0';
    /* Relaxed: the threads created below see these through pthread_create. */
    atomic_store_explicit(&pool->alive, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->closed, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->forked, 0, memory_order_relaxed);
    gf_ec_init(&pool->exited);
    for (uint32_t i = 0; i < cfg->nthreads; i++) {
        pool->workers[i].pool = pool;
        pool->workers[i].index = i;
    }
    gf__registry_add(&gf__pools, &pool->reg);

    /* Start the threads with every signal blocked, so that no asynchronous
     * signal can land on a worker before it settles its mask. */
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    int err = 0;
    for (uint32_t i = 0; i < cfg->nthreads; i++) {
        /* Count the thread before it exists, so that its exit can never
         * take alive below zero.  Relaxed: only the count matters. */
        atomic_fetch_add_explicit(&pool->alive, 1, memory_order_relaxed);
        if (gf__pool_fail_create_after >= 0 &&
            i == (uint32_t)gf__pool_fail_create_after) {
            gf__pool_fail_create_after = -1;
            err = EAGAIN;
        }
        else {
            err = pthread_create(&pool->workers[i].thread, NULL, gf__worker_main,
                                 &pool->workers[i]);
        }
        if (err != 0) {
            /* Relaxed: the thread never existed; only the count matters. */
            atomic_fetch_sub_explicit(&pool->alive, 1, memory_order_relaxed);
            break;
        }
        pool->started = i + 1;
    }
    pthread_sigmask(SIG_SETMASK, &saved, NULL);

    if (err != 0) {
        /* Stop what started: close, let them drain (nothing queued) and
         * exit, join them, and leave nothing running. */
        gf_pool_close(pool);
        for (uint32_t i = 0; i < pool->started; i++) {
            pthread_join(pool->workers[i].thread, NULL);
        }
        gf__registry_remove(&gf__pools, &pool->reg);
        gf__pool_release(pool);
        return -err;
    }
    *out = pool;
    return 0;
}

int
gf_pool_try_submit(gf_pool_t *pool, gf_task_t *task)
{
    if (task == NULL || task->run == NULL) {
        return GF_EINVAL;
    }
    /* Relaxed: forked is only ever set in this process by the fork child
     * handler, before any other thread of the child exists. */
    if (atomic_load_explicit(&pool->forked, memory_order_relaxed)) {
        return GF_EFORKED;
    }
    return gf_queue_try_push(pool->queue, (uint64_t)(uintptr_t)task);
}

int
gf_pool_submit(gf_pool_t *pool, gf_task_t *task, int64_t timeout_ns)
{
    if (task == NULL || task->run == NULL) {
        return GF_EINVAL;
    }
    /* Relaxed: forked is only ever set in this process by the fork child
     * handler, before any other thread of the child exists. */
    if (atomic_load_explicit(&pool->forked, memory_order_relaxed)) {
        return GF_EFORKED;
    }
    return gf_queue_push(pool->queue, (uint64_t)(uintptr_t)task, timeout_ns);
}

void
gf_pool_close(gf_pool_t *pool)
{
    /* Release: pairs with join's acquire of closed. */
    atomic_store_explicit(&pool->closed, 1, memory_order_release);
    gf_queue_close(pool->queue);
}

uint64_t
gf_pool_drain(gf_pool_t *pool, void (*cancel)(gf_task_t *task, void *arg), void *arg)
{
    uint64_t count = 0;
    uint32_t spins = 0;
    for (;;) {
        uint64_t v;
        int rc = gf_queue_try_pop(pool->queue, &v);
        if (rc == 0) {
            if (cancel != NULL) {
                cancel((gf_task_t *)(uintptr_t)v, arg);
            }
            count++;
            continue;
        }
        if (rc == GF_ECLOSED) {
            break;
        }
        /* GF_EAGAIN.  Open queue: we took what was there.  Closed queue: a
         * push that won its slot before close is still writing; wait for it
         * (never in a forked child, where that writer does not exist). */
        if (!gf_queue_is_closed(pool->queue) ||
            atomic_load_explicit(&pool->forked, memory_order_relaxed)) { /* see submit */
            break;
        }
        if (++spins % 64 == 0) {
            sched_yield();
        }
        else {
            gf_cpu_relax();
        }
    }
    return count;
}

int
gf_pool_join(gf_pool_t *pool, int64_t timeout_ns)
{
    /* Acquire: pairs with the release in close(). */
    if (!atomic_load_explicit(&pool->closed, memory_order_acquire)) {
        return GF_EINVAL;
    }
    gf_worker_t *self = gf__tls_worker;
    if (self != NULL && self->pool == pool) {
        return GF_EINVAL;
    }
    int64_t deadline = gf__deadline_from_timeout(timeout_ns);
    for (;;) {
        uint32_t key = gf_ec_prepare(&pool->exited);
        /* Acquire: pairs with each worker's release decrement. */
        if (atomic_load_explicit(&pool->alive, memory_order_acquire) == 0) {
            break;
        }
        int64_t left = gf__remaining_ns(deadline);
        if (left == 0) {
            return GF_ETIMEDOUT;
        }
        int rc = gf_ec_wait(&pool->exited, key, left);
        if (rc == GF_EINTR) {
            if (atomic_load_explicit(&pool->alive, memory_order_acquire) == 0) {
                break;
            }
            return GF_EINTR;
        }
    }
    pthread_mutex_lock(&pool->join_lock);
    if (!pool->joined) {
        for (uint32_t i = 0; i < pool->started; i++) {
            pthread_join(pool->workers[i].thread, NULL);
        }
        pool->joined = 1;
    }
    pthread_mutex_unlock(&pool->join_lock);
    return 0;
}

void
gf_pool_free(gf_pool_t *pool)
{
    if (pool == NULL) {
        return;
    }
    /* Relaxed: see gf_pool_try_submit(). */
    if (!atomic_load_explicit(&pool->forked, memory_order_relaxed)) {
        pthread_mutex_lock(&pool->join_lock);
        int joined = pool->joined;
        pthread_mutex_unlock(&pool->join_lock);
        if (!joined) {
            /* Contract breach (free before join).  Close and wait rather than
             * free memory under running threads; from one of the pool's own
             * workers that would deadlock, so leak instead. */
            gf_pool_close(pool);
            int rc;
            do {
                rc = gf_pool_join(pool, -1);
            } while (rc == GF_EINTR);
            if (rc != 0) {
                return;
            }
        }
    }
    gf__registry_remove(&gf__pools, &pool->reg);
    gf__pool_release(pool);
}

uint32_t
gf_pool_nthreads(const gf_pool_t *pool)
{
    return pool->nthreads;
}

uint32_t
gf_pool_alive(const gf_pool_t *pool)
{
    /* Relaxed: a snapshot for display; join uses acquire. */
    return atomic_load_explicit(&((gf_pool_t *)pool)->alive, memory_order_relaxed);
}

int
gf_pool_is_forked(const gf_pool_t *pool)
{
    /* Relaxed: see gf_pool_try_submit(). */
    return atomic_load_explicit(&((gf_pool_t *)pool)->forked, memory_order_relaxed);
}

/* --- inside a task --------------------------------------------------------- */

int
gf_worker_try_take(gf_worker_t *worker, gf_task_t **out)
{
    uint64_t v;
    int rc = gf_queue_try_pop(worker->pool->queue, &v);
    if (rc == 0) {
        *out = (gf_task_t *)(uintptr_t)v;
    }
    return rc;
}

uint32_t
gf_worker_index(const gf_worker_t *worker)
{
    return worker->index;
}

gf_pool_t *
gf_worker_pool(const gf_worker_t *worker)
{
    return worker->pool;
}

void *
gf_worker_userdata(const gf_worker_t *worker)
{
    return worker->pool->userdata;
}

void **
gf_worker_local(gf_worker_t *worker)
{
    return &worker->local;
}

gf_worker_t *
gf_current_worker(void)
{
    return gf__tls_worker;
}
