/* gilfree core: a pool of native worker threads that run C tasks.
 *
 * Tasks are intrusive: the embedder puts a gf_task_t at the start of (or
 * inside) its own struct and passes its address; the pool never allocates per
 * task.  Submission pushes the pointer onto a bounded MPMC queue (gf_queue_t);
 * each worker pops, runs task->run(task, worker), repeats.  An idle worker
 * spins briefly and then parks on the queue's eventcount, so a busy pool pays
 * no system call per task.
 *
 * Hooks let the embedder prepare each worker thread: the CPython extension
 * creates a thread state in on_start and deletes it in on_stop.  A task may
 * pull the next queued task itself with gf_worker_try_take() (the extension
 * does, so that it attaches to the interpreter once for a run of tasks).
 *
 * Workers block asynchronous signals (SIGINT, SIGTERM, ...) so that the
 * process's signals reach the thread that waits for results (the main thread
 * in Python), whose sleep they interrupt.
 *
 * Fork: a pthread_atfork child handler marks every pool that existed in the
 * parent as forked; in the child its threads do not exist, submissions return
 * GF_EFORKED, and gf_pool_free() releases memory without joining.
 */
#ifndef GILFREE_THREADPOOL_H
#define GILFREE_THREADPOOL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gf_pool gf_pool_t;
typedef struct gf_worker gf_worker_t;
typedef struct gf_task gf_task_t;

typedef void (*gf_task_fn)(gf_task_t *task, gf_worker_t *worker);

struct gf_task {
    gf_task_fn run;
};

typedef struct gf_pool_config {
    uint32_t nthreads;        /* >= 1 */
    uint32_t queue_capacity;  /* power of two; 0 = 4096 */
    uint32_t spin_ns;         /* idle spin before parking; 0 = default (~20 us) */
    void *userdata;           /* returned by gf_worker_userdata() */
    /* Called on each worker thread before its first task / before it exits.
     * May be NULL. */
    void (*on_start)(gf_worker_t *worker);
    void (*on_stop)(gf_worker_t *worker);
    /* Thread names are "<prefix><index>" (truncated to 15 bytes); NULL = "gilfree-". */
    const char *name_prefix;
} gf_pool_config_t;

/* Start cfg->nthreads threads.  Returns 0, GF_EINVAL, GF_ENOMEM or a negated
 * pthread_create errno (in which case no thread is left running). */
int gf_pool_new(const gf_pool_config_t *cfg, gf_pool_t **out);

/* Queue a task.  try_: 0, GF_EAGAIN (queue full), GF_ECLOSED, GF_EFORKED.
 * Blocking form waits for room (timeout_ns < 0: forever) and may also return
 * GF_ETIMEDOUT or GF_EINTR (signal while sleeping). */
int gf_pool_try_submit(gf_pool_t *pool, gf_task_t *task);
int gf_pool_submit(gf_pool_t *pool, gf_task_t *task, int64_t timeout_ns);

/* Refuse new tasks.  Workers finish what is queued, then exit.  Idempotent. */
void gf_pool_close(gf_pool_t *pool);

/* After close: pop every task still queued and pass it to cancel(task, arg)
 * instead of running it; returns how many.  Used by terminate(). */
uint64_t gf_pool_drain(gf_pool_t *pool, void (*cancel)(gf_task_t *task, void *arg),
                       void *arg);

/* Wait until every worker thread has exited (only after close).  timeout_ns <
 * 0 waits forever.  Returns 0, GF_ETIMEDOUT, GF_EINTR, or GF_EINVAL if the
 * pool is not closed or this is one of the pool's own workers. */
int gf_pool_join(gf_pool_t *pool, int64_t timeout_ns);

/* Release the pool.  Must follow a successful gf_pool_join(), or be in a
 * forked child. */
void gf_pool_free(gf_pool_t *pool);

uint32_t gf_pool_nthreads(const gf_pool_t *pool);
/* Workers that have not exited yet. */
uint32_t gf_pool_alive(const gf_pool_t *pool);
int gf_pool_is_forked(const gf_pool_t *pool);

/* --- Inside a task or hook ------------------------------------------------ */

/* Non-blocking: pop the next queued task for this worker to run itself.
 * 0 or GF_EAGAIN / GF_ECLOSED. */
int gf_worker_try_take(gf_worker_t *worker, gf_task_t **out);

uint32_t gf_worker_index(const gf_worker_t *worker);
gf_pool_t *gf_worker_pool(const gf_worker_t *worker);
void *gf_worker_userdata(const gf_worker_t *worker);
/* One pointer-sized slot per worker for the embedder (e.g. a PyThreadState). */
void **gf_worker_local(gf_worker_t *worker);

/* The worker running on the calling thread, or NULL if it is not a pool
 * worker. */
gf_worker_t *gf_current_worker(void);

#ifdef __cplusplus
}
#endif
#endif /* GILFREE_THREADPOOL_H */
