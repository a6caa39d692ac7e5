/* Private header of the process backend's pool side (procpool.c: the
 * engine, channels, dispatch, collector; procmap.c: map jobs). */
#ifndef GILFREE_EXT_PROCPOOL_H
#define GILFREE_EXT_PROCPOOL_H

#include "gfext.h"

#define RING_CAPACITY (2u << 20)    /* per direction per worker */
#define MAX_FIFO 256                /* tasks queued on one worker */
#define QUEUED_WORK_NS 4000000      /* ~work queued ahead per worker */
#define MAP_TARGET_NS 1000000       /* adaptive chunk: ~1 ms of work */
#define FN_CACHE_MAX 64             /* functions remembered per pool */
#define JOB_MAX_INFLIGHT_BYTES ((int64_t)64 << 20)  /* per map, beyond one
                                                      * chunk per worker */
#define JOB_CHUNK_BYTES ((int64_t)4 << 20)          /* adaptive chunks of
                                                      * big items */

enum { PT_MAP = 1, PT_APPLY = 2, PT_SUBMIT = 3 };
enum {
    OUT_NONE = 0, OUT_DONE, OUT_DIED, OUT_TIMEDOUT, OUT_CANCELLED,
    OUT_BROKEN,   /* the pool could not send it (error in err_text) */
};
enum { SLOT_EMPTY = 0, SLOT_LIVE, SLOT_DEAD };

/* A worker died in its initializer or its exit function. */
enum { LIFE_DEATH_NONE = 0, LIFE_DEATH_INIT, LIFE_DEATH_EXIT };

/* A LIFE message from a worker, copied by the collector and handled with
 * the GIL (proclife.c). */
typedef struct gfx_life {
    struct gfx_life *next;
    uint32_t slot;
    pid_t pid;
    unsigned char *data;     /* the frame, 8-byte aligned */
    size_t len;
    int *fds;
    uint32_t nfds;
} gfx_life;

typedef struct gfx_fnent {
    struct gfx_fnent *next;
    uint64_t id;
    PyObject *fn;            /* strong; keeps id(fn) unique */
    gfx_msg def;             /* the encoded FUNC message */
    int pins;                /* tasks using it (engine lock) */
    uint64_t last_use;
} gfx_fnent;

typedef struct gfx_sink gfx_sink;

typedef struct gfx_ptask {
    struct gfx_ptask *next;
    uint64_t id;
    int kind;
    int outcome;
    PyObject *owner;         /* AsyncResult / Future (strong), or NULL */
    gfx_sink *sink;          /* map chunks: where the result goes */
    PyObject *items;         /* map over an iterator: the chunk's items */
    int64_t index0;
    uint32_t count;
    uint16_t tflags;
    gfx_fnent *fe;           /* pinned */
    gfx_msg msg;
    int attempts;
    /* Result, filled by the collector. */
    unsigned char *res;
    size_t res_len;
    int *res_fds;
    uint32_t res_nfds;
    gf_exit_t exit;
    int64_t died_index;
    int64_t compute_ns;
    int64_t bytes;           /* encoded size, buffers included */
    pid_t pid;               /* the worker it went to (0: never sent) */
} gfx_ptask;

/* Where a map's chunks arrive.  Refcounted without the GIL: the job holds
 * one reference, every chunk in flight one. */
struct gfx_sink {
    _Atomic long refs;
    pthread_mutex_t lock;
    gfx_ptask *head, *tail;      /* done chunks, lock */
    _Atomic int ndone;
    _Atomic int64_t items_done;  /* items of completed chunks (progress) */
    _Atomic int cancelled;       /* nobody will consume: garbage */
    gf_ec_t ec;
};

typedef struct {
    int state;                   /* SLOT_*, engine lock */
    uint32_t gen;
    gf_shm_t mem;
    gf_ring_t *tx, *rx;
    gfx_ctl *ctl;
    int sock;
    pid_t pid;
    PyObject *process;           /* GIL */
    gfx_ptask *head, *tail;      /* sent, in order (engine lock) */
    uint32_t nfifo;
    int64_t queued_items;
    gfx_fnent **sent_fns;        /* functions this worker has */
    uint32_t nsent_fns, capsent_fns;
    _Atomic int dead;            /* set by the supervisor callback */
    gf_exit_t exit;              /* written before `dead` (release) */
    uint64_t timeout_task;       /* collector: killed for this task */
    int64_t timeout_index;
    int watched;
    int broken;                  /* protocol error: being killed */
    int hello;                   /* the worker said HELLO (collector) */
    uint32_t cancel_next;        /* next ctl->cancel entry (engine lock) */
    /* max_tasks_per_worker (engine lock): items sent to this worker; once
     * retiring it gets nothing more, and STOP once stop_sent. */
    int64_t sent_items;
    int retiring, stop_sent;
    int life_death;              /* LIFE_DEATH_*: set at its death (lock),
                                  * handled with the GIL */
    int life_timed_out;          /* ... killed for init/exit_timeout */
    int64_t start_req_ns;        /* insights: asked to start at */
    int64_t startup_ns;          /* ... and said HELLO this much later */
} gfx_pslot;

struct gfx_engine {
    gfx_state *st;
    PyInterpreterState *interp;
    uint32_t n;
    gfx_pslot *slots;
    gf_shm_t poolmem;
    gf_ec_t *doorbell;
    int pool_pidfd;
    pid_t pool_pid;
    gf_supervisor_t *sup;
    pthread_mutex_t lock;
    gfx_ptask *pend_head, *pend_tail;
    int64_t outstanding;         /* tasks not yet settled (lock) */
    gf_ec_t idle_ec;             /* notified when outstanding drops to 0 */
    _Atomic int64_t outstanding_atomic;
    gfx_fnent *fns;
    uint32_t nfns;
    uint64_t next_fn_id, use_clock;
    _Atomic uint64_t next_task_id;
    _Atomic int64_t avg_item_ns; /* EWMA of compute time per item */
    pthread_t collector;
    int collector_started;
    _Atomic int stop;            /* collector: leave */
    _Atomic int closing;         /* join(): no worker replacement when idle */
    _Atomic int joining;         /* join() is stopping the workers: every
                                  * worker, also one started meanwhile to
                                  * replace another, is sent STOP */
    _Atomic int terminating;     /* terminate(): deaths are ours, tasks are
                                  * cancelled, nobody is replaced */
    int shut;                    /* shut down: nothing more is sent (lock) */
    gfx_ptask *garbage;          /* collector-local lists */
    gfx_ptask *settle_head, *settle_tail;
    uint32_t needs_replace;      /* bitmask would limit us: see replace[] */
    unsigned char *replace;      /* collector-local: slot needs a worker */
    int64_t timeout_ns;
    int retries;
    int startup_failures;        /* workers in a row that died before
                                  * their HELLO (collector) */
    gfx_segcache *segs;          /* warm segments for buffers we send */
    int children;                /* workers are our children (NOREAP) */
    PyObject *starter, *reaper;
    char start_error[256];       /* last failure to start a worker */
    /* Worker lifecycle (pool->lc, or NULL): the SETUP message every new
     * worker gets first, LIFE messages waiting for the GIL (lock). */
    gfx_lc *lc;
    gfx_msg setup;
    int has_setup;
    gfx_life *life_head, *life_tail;
    int64_t init_timeout_ns, exit_timeout_ns;
    /* Insights (Pool(insights=True)). */
    int insights;
    int64_t start_ns;            /* the pool started */
    PyObject *ins_lives;         /* snapshots of ended worker lives (GIL) */
    _Atomic int64_t ins_encode_ns, ins_decode_ns;  /* in the callers */
    /* Open imap/imap_unordered jobs, so that join() can feed them to the
     * end (jobs_lock; the jobs unlink themselves when they are freed). */
    pthread_mutex_t jobs_lock;
    struct gfx_lazyjob *lazy_jobs;
};

/* The link of an open lazy job in its engine's list (procmap.c). */
typedef struct gfx_lazyjob {
    struct gfx_lazyjob *prev, *next;
    PyObject *job;               /* borrowed: the job unlinks itself */
} gfx_lazyjob;

static inline void
eng_lock(gfx_engine *e)
{
    pthread_mutex_lock(&e->lock);
}

static inline void
eng_unlock(gfx_engine *e)
{
    pthread_mutex_unlock(&e->lock);
}

/* Insights: time the caller spends encoding tasks / decoding results. */
#define GFX_TIMED(e, field, stmt)                                          \
    do {                                                                   \
        int64_t gfx_t0_ = (e)->insights ? gf_now_ns() : 0;                 \
        stmt;                                                              \
        if ((e)->insights) {                                               \
            atomic_fetch_add_explicit(&(e)->field, gf_now_ns() - gfx_t0_,  \
                                      memory_order_relaxed);               \
        }                                                                  \
    } while (0)

/* Insights of a process pool (GIL): the dict pool._insights_raw() returns. */
PyObject *gfx_pp_insights(gfx_engine *e, PoolObject *pool);

/* proclife.c: the worker lifecycle, pool side.  Encode the SETUP message
 * (GIL): 0 or -1 with an exception. */
int gfx_pp_life_setup(gfx_engine *e);
/* Handle the LIFE messages and lifecycle deaths collected so far (GIL). */
void gfx_pp_life_batch(gfx_engine *e, gfx_life *list);
/* A worker died in its initializer or exit function (GIL): record it.
 * Returns 1 if the slot must not be restarted. */
int gfx_pp_life_death(gfx_engine *e, uint32_t slot, gfx_pslot *s);
void gfx_pp_life_free(gfx_life *l);

/* Shared by procpool.c and procmap.c (see their definitions). */
/* 0, or -1 with RuntimeError in a process forked from the pool's. */
int gfx_pp_check_owner(gfx_engine *e, const char *method);
void gfx_pp_submit(gfx_engine *e, gfx_ptask *t);
/* join(): feed every open imap of the engine to the end of its input
 * (procmap.c).  0, or -1 with an exception (Ctrl-C). */
int gfx_procmap_drain(gfx_engine *e);
/* One (offset, exc, tb_text) entry of a result -> the decorated exception;
 * *index gets its input index. */
PyObject *gfx_pp_entry_exception(gfx_engine *e, gfx_ptask *t, PyObject *entry,
                                 PyObject *fn, int64_t *index);
gfx_fnent *gfx_pp_fn_get(gfx_engine *e, PyObject *fn);
void gfx_pp_ptask_free(gfx_engine *e, gfx_ptask *t);
gfx_ptask *gfx_pp_ptask_new(gfx_engine *e, int kind);
/* Decode a settled task: its results list, or NULL with *failure (a task
 * that did not complete) or with an exception set (see procpool.c). */
PyObject *gfx_pp_ptask_results(gfx_engine *e, gfx_ptask *t, PyObject *fn,
                               PyObject **errors, PyObject **failure,
                               int64_t *fail_index);
void gfx_pp_sink_decref(gfx_sink *s);
/* Settle an apply/submit task: finish its AsyncResult or Future (GIL). */
void gfx_pp_settle_one(gfx_engine *e, gfx_ptask *t);
void gfx_pp_withdraw_sent_locked(gfx_pslot *s, gfx_ptask *t);
/* Withdraw the tasks that match: pending ones leave the queue and are
 * returned as a list (no longer counted as outstanding; the caller settles
 * or frees them, with the GIL); sent ones are withdrawn in their worker's
 * control block.  Takes the engine lock. */
typedef int (*gfx_pp_match)(const gfx_ptask *t, const void *arg);
gfx_ptask *gfx_pp_withdraw(gfx_engine *e, gfx_pp_match match, const void *arg);

#endif /* GILFREE_EXT_PROCPOOL_H */
