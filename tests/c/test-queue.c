/* Tests: the bounded MPMC queue. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/core/internal.h"
#include "runner.h"

TEST_IMPL(queue_capacity_validation)
{
    ASSERT_EQ(gf_queue_footprint(0), 0);
    ASSERT_EQ(gf_queue_footprint(1), 0);
    ASSERT_EQ(gf_queue_footprint(3), 0);
    ASSERT_EQ(gf_queue_footprint(100), 0);
    ASSERT_EQ(gf_queue_footprint(GF_QUEUE_MAX_CAPACITY * 2u), 0);
    ASSERT_EQ(gf_queue_footprint(UINT32_MAX), 0);
    ASSERT_GT(gf_queue_footprint(2), 0);
    ASSERT_GT(gf_queue_footprint(GF_QUEUE_MAX_CAPACITY), gf_queue_footprint(2));
    ASSERT_EQ(gf_queue_footprint(1024) - gf_queue_footprint(512), 512 * 16);

    gf_queue_t *q = NULL;
    ASSERT_ERR(gf_queue_new(0, &q), GF_EINVAL);
    ASSERT_ERR(gf_queue_new(6, &q), GF_EINVAL);
    ASSERT_ERR(gf_queue_new(8, NULL), GF_EINVAL);
    ASSERT_NULL(q);

    size_t bytes = gf_queue_footprint(8);
    unsigned char *mem = gf_aligned_alloc(bytes + 64);
    ASSERT_NOT_NULL(mem);
    ASSERT_ERR(gf_queue_init(NULL, 8), GF_EINVAL);
    ASSERT_ERR(gf_queue_init(mem + 8, 8), GF_EINVAL); /* misaligned */
    ASSERT_ERR(gf_queue_init(mem, 12), GF_EINVAL);

    /* attach validates what init wrote */
    ASSERT_OK(gf_queue_init(mem, 8));
    ASSERT_OK(gf_queue_attach(mem, &q));
    ASSERT_PTR_EQ(q, mem);
    ASSERT_EQ(gf_queue_capacity(q), 8);
    ASSERT_ERR(gf_queue_attach(NULL, &q), GF_EINVAL);
    ASSERT_ERR(gf_queue_attach(mem, NULL), GF_EINVAL);
    ASSERT_ERR(gf_queue_attach(mem + 8, &q), GF_EINVAL);
    uint32_t *words = (uint32_t *)mem;
    uint32_t saved = words[0];
    words[0] ^= 1; /* magic */
    ASSERT_ERR(gf_queue_attach(mem, &q), GF_EINVAL);
    words[0] = saved;
    saved = words[1];
    words[1] = 99; /* version */
    ASSERT_ERR(gf_queue_attach(mem, &q), GF_EINVAL);
    words[1] = saved;
    saved = words[2];
    words[2] = 7; /* capacity */
    ASSERT_ERR(gf_queue_attach(mem, &q), GF_EINVAL);
    words[2] = saved;
    ASSERT_OK(gf_queue_attach(mem, &q));
    gf_aligned_free(mem);
}

TEST_IMPL(queue_single_thread)
{
    enum { CAP = 4 };
    gf_queue_t *q;
    ASSERT_OK(gf_queue_new(CAP, &q));
    ASSERT_EQ(gf_queue_capacity(q), CAP);
    ASSERT_EQ(gf_queue_size_approx(q), 0);
    ASSERT_EQ(gf_queue_is_closed(q), 0);
    uint64_t v = 12345;
    ASSERT_ERR(gf_queue_try_pop(q, &v), GF_EAGAIN);
    ASSERT_U64_EQ(v, 12345); /* untouched on failure */

    uint64_t next_in = 0, next_out = 0;
    for (int lap = 0; lap < 50; lap++) {
        /* fill, in a lap-dependent phase so the ring wraps at every offset */
        int n = CAP - (lap % CAP);
        for (int i = 0; i < n; i++) {
            ASSERT_OK(gf_queue_try_push(q, next_in++));
        }
        if (n == CAP) {
            ASSERT_ERR(gf_queue_try_push(q, 999), GF_EAGAIN);
            ASSERT_EQ(gf_queue_size_approx(q), CAP);
        }
        ASSERT_EQ(gf_queue_size_approx(q), n);
        for (int i = 0; i < n; i++) {
            ASSERT_OK(gf_queue_try_pop(q, &v));
            ASSERT_U64_EQ(v, next_out++);
        }
        ASSERT_ERR(gf_queue_try_pop(q, &v), GF_EAGAIN);
    }

    /* full values survive, including 0 and UINT64_MAX */
    ASSERT_OK(gf_queue_try_push(q, UINT64_MAX));
    ASSERT_OK(gf_queue_try_push(q, 0));
    ASSERT_OK(gf_queue_try_pop(q, &v));
    ASSERT_U64_EQ(v, UINT64_MAX);
    ASSERT_OK(gf_queue_try_pop(q, &v));
    ASSERT_U64_EQ(v, 0);
    gf_queue_free(q);
}

TEST_IMPL(queue_close_semantics)
{
    gf_queue_t *q;
    ASSERT_OK(gf_queue_new(4, &q));
    ASSERT_OK(gf_queue_try_push(q, 1));
    ASSERT_OK(gf_queue_try_push(q, 2));
    ASSERT_OK(gf_queue_push(q, 3, -1));
    gf_queue_close(q);
    ASSERT_EQ(gf_queue_is_closed(q), 1);
    gf_queue_close(q); /* idempotent */
    ASSERT_EQ(gf_queue_is_closed(q), 1);
    ASSERT_ERR(gf_queue_try_push(q, 4), GF_ECLOSED);
    ASSERT_ERR(gf_queue_push(q, 4, -1), GF_ECLOSED);
    ASSERT_ERR(gf_queue_push(q, 4, 0), GF_ECLOSED);
    ASSERT_EQ(gf_queue_size_approx(q), 3);

    /* items pushed before close are still delivered, in order */
    uint64_t v;
    ASSERT_OK(gf_queue_try_pop(q, &v));
    ASSERT_U64_EQ(v, 1);
    ASSERT_OK(gf_queue_pop(q, &v, -1));
    ASSERT_U64_EQ(v, 2);
    ASSERT_OK(gf_queue_pop(q, &v, 0));
    ASSERT_U64_EQ(v, 3);
    ASSERT_ERR(gf_queue_try_pop(q, &v), GF_ECLOSED);
    ASSERT_ERR(gf_queue_pop(q, &v, -1), GF_ECLOSED);
    ASSERT_ERR(gf_queue_pop(q, &v, 0), GF_ECLOSED);
    ASSERT_EQ(gf_queue_size_approx(q), 0);
    gf_queue_free(q);

    /* A full queue that is closed says GF_ECLOSED, not GF_EAGAIN. */
    ASSERT_OK(gf_queue_new(2, &q));
    ASSERT_OK(gf_queue_try_push(q, 1));
    ASSERT_OK(gf_queue_try_push(q, 2));
    ASSERT_ERR(gf_queue_try_push(q, 3), GF_EAGAIN);
    gf_queue_close(q);
    ASSERT_ERR(gf_queue_try_push(q, 3), GF_ECLOSED);
    ASSERT_OK(gf_queue_try_pop(q, &v));
    ASSERT_OK(gf_queue_try_pop(q, &v));
    ASSERT_ERR(gf_queue_try_pop(q, &v), GF_ECLOSED);
    gf_queue_free(q);

    /* Closing an empty queue. */
    ASSERT_OK(gf_queue_new(2, &q));
    gf_queue_close(q);
    ASSERT_ERR(gf_queue_try_pop(q, &v), GF_ECLOSED);
    gf_queue_free(q);
}

TEST_IMPL(queue_timeouts)
{
    gf_queue_t *q;
    ASSERT_OK(gf_queue_new(2, &q));
    uint64_t v;

    int64_t t0 = gf_now_ns();
    ASSERT_ERR(gf_queue_pop(q, &v, 0), GF_ETIMEDOUT);
    ASSERT_LT(gf_now_ns() - t0, 1000000000);

    t0 = gf_now_ns();
    ASSERT_ERR(gf_queue_pop(q, &v, 30000000), GF_ETIMEDOUT);
    int64_t elapsed = gf_now_ns() - t0;
    ASSERT_GE(elapsed, 30000000);
    ASSERT_LT(elapsed, 2000000000);

    ASSERT_OK(gf_queue_push(q, 1, 0));
    ASSERT_OK(gf_queue_push(q, 2, 30000000));
    ASSERT_ERR(gf_queue_push(q, 3, 0), GF_ETIMEDOUT);
    t0 = gf_now_ns();
    ASSERT_ERR(gf_queue_push(q, 3, 30000000), GF_ETIMEDOUT);
    elapsed = gf_now_ns() - t0;
    ASSERT_GE(elapsed, 30000000);
    ASSERT_LT(elapsed, 2000000000);
    ASSERT_EQ(gf_queue_size_approx(q), 2);
    gf_queue_free(q);
}

typedef struct gft_qop {
    gf_queue_t *q;
    uint64_t value;
    int64_t timeout_ns;
    int result;
    _Atomic int done; /* set after result is written */
} gft_qop_t;

static void *
gft_qop_pop(void *arg)
{
    gft_qop_t *op = arg;
    op->result = gf_queue_pop(op->q, &op->value, op->timeout_ns);
    atomic_store(&op->done, 1);
    return NULL;
}

static void *
gft_qop_push(void *arg)
{
    gft_qop_t *op = arg;
    op->result = gf_queue_push(op->q, op->value, op->timeout_ns);
    atomic_store(&op->done, 1);
    return NULL;
}

TEST_IMPL(queue_blocking_handoff)
{
    gf_queue_t *q;
    ASSERT_OK(gf_queue_new(2, &q));

    /* A consumer parked on an empty queue is woken by a push. */
    gft_qop_t op = {q, 0, -1, 99, 0};
    pthread_t t;
    gft_thread_start(&t, gft_qop_pop, &op);
    gft_wait_for_waiters(gf__queue_not_empty(q), 1);
    ASSERT_OK(gf_queue_try_push(q, 42));
    gft_thread_join(t);
    ASSERT_OK(op.result);
    ASSERT_U64_EQ(op.value, 42);

    /* A producer parked on a full queue is woken by a pop. */
    ASSERT_OK(gf_queue_try_push(q, 1));
    ASSERT_OK(gf_queue_try_push(q, 2));
    op = (gft_qop_t){q, 3, -1, 99, 0};
    gft_thread_start(&t, gft_qop_push, &op);
    gft_wait_for_waiters(gf__queue_not_full(q), 1);
    uint64_t v;
    ASSERT_OK(gf_queue_try_pop(q, &v));
    ASSERT_U64_EQ(v, 1);
    gft_thread_join(t);
    ASSERT_OK(op.result);
    ASSERT_OK(gf_queue_try_pop(q, &v));
    ASSERT_U64_EQ(v, 2);
    ASSERT_OK(gf_queue_try_pop(q, &v));
    ASSERT_U64_EQ(v, 3);

    /* A finite timeout that is not reached. */
    op = (gft_qop_t){q, 0, 30 * GF__NS_PER_SEC, 99, 0};
    gft_thread_start(&t, gft_qop_pop, &op);
    gft_wait_for_waiters(gf__queue_not_empty(q), 1);
    ASSERT_OK(gf_queue_push(q, 7, -1));
    gft_thread_join(t);
    ASSERT_OK(op.result);
    ASSERT_U64_EQ(op.value, 7);
    gf_queue_free(q);
}

TEST_IMPL(queue_close_wakes_all)
{
    enum { N = 3 };
    gf_queue_t *empty, *full;
    ASSERT_OK(gf_queue_new(2, &empty));
    ASSERT_OK(gf_queue_new(2, &full));
    ASSERT_OK(gf_queue_try_push(full, 100));
    ASSERT_OK(gf_queue_try_push(full, 101));

    gft_qop_t pops[N], pushes[N];
    pthread_t pt[N], ut[N];
    for (int i = 0; i < N; i++) {
        pops[i] = (gft_qop_t){empty, 0, -1, 99, 0};
        pushes[i] = (gft_qop_t){full, (uint64_t)i, -1, 99, 0};
        gft_thread_start(&pt[i], gft_qop_pop, &pops[i]);
        gft_thread_start(&ut[i], gft_qop_push, &pushes[i]);
    }
    gft_wait_for_waiters(gf__queue_not_empty(empty), N);
    gft_wait_for_waiters(gf__queue_not_full(full), N);
    gf_queue_close(empty);
    gf_queue_close(full);
    for (int i = 0; i < N; i++) {
        gft_thread_join(pt[i]);
        gft_thread_join(ut[i]);
        ASSERT_ERR(pops[i].result, GF_ECLOSED);
        ASSERT_ERR(pushes[i].result, GF_ECLOSED);
    }
    /* the full queue still drains */
    uint64_t v;
    ASSERT_OK(gf_queue_pop(full, &v, -1));
    ASSERT_U64_EQ(v, 100);
    ASSERT_OK(gf_queue_pop(full, &v, -1));
    ASSERT_U64_EQ(v, 101);
    ASSERT_ERR(gf_queue_pop(full, &v, -1), GF_ECLOSED);
    gf_queue_free(empty);
    gf_queue_free(full);
}

TEST_IMPL(queue_eintr)
{
    gft_install_interrupting_handler(SIGUSR1);
    gf_queue_t *q;
    ASSERT_OK(gf_queue_new(2, &q));
    gft_qop_t op = {q, 0, -1, 99, 0};
    pthread_t t;
    gft_thread_start(&t, gft_qop_pop, &op);
    gft_wait_for_waiters(gf__queue_not_empty(q), 1);
    /* Re-send until it interrupts the sleep (the first one could land just
     * before the futex call). */
    while (!atomic_load(&op.done)) {
        pthread_kill(t, SIGUSR1);
        gft_sleep_ms(20);
    }
    gft_thread_join(t);
    ASSERT_ERR(op.result, GF_EINTR);
    /* still usable */
    ASSERT_OK(gf_queue_push(q, 5, -1));
    uint64_t v;
    ASSERT_OK(gf_queue_pop(q, &v, -1));
    ASSERT_U64_EQ(v, 5);
    gf_queue_free(q);
}

/* --- MPMC stress ------------------------------------------------------------- */

#define GFT_PRODUCER_SHIFT 40

/* Back-off for the try_ loops: pause, and yield now and then so that
 * spinners cannot starve the threads they wait for on a small machine. */
static void
gft_backoff(uint32_t *spins)
{
    if (++*spins % 64 == 0) {
        sched_yield();
    }
    else {
        gf_cpu_relax();
    }
}

typedef struct gft_mpmc {
    gf_queue_t *q;
    uint32_t producers;
    uint32_t consumers;
    uint64_t per_producer;
    _Atomic uint64_t *seen; /* bitmap over producers * per_producer items */
    _Atomic uint64_t sum;
    _Atomic uint64_t count;
    _Atomic uint64_t dups;
    _Atomic uint64_t order_errors;
    _Atomic uint32_t producers_left;
} gft_mpmc_t;

typedef struct gft_mpmc_arg {
    gft_mpmc_t *m;
    uint32_t id;
    pthread_t thread;
} gft_mpmc_arg_t;

static void *
gft_mpmc_producer(void *arg)
{
    gft_mpmc_arg_t *a = arg;
    gft_mpmc_t *m = a->m;
    for (uint64_t i = 0; i < m->per_producer; i++) {
        uint64_t v = ((uint64_t)a->id << GFT_PRODUCER_SHIFT) | i;
        uint32_t spins;
        int rc;
        switch ((a->id + i) % 3) {
        case 0: /* try + spin */
            spins = 0;
            while ((rc = gf_queue_try_push(m->q, v)) == GF_EAGAIN) {
                gft_backoff(&spins);
            }
            break;
        case 1: /* short timeouts, retried */
            while ((rc = gf_queue_push(m->q, v, 100000)) == GF_ETIMEDOUT) {
            }
            break;
        default:
            rc = gf_queue_push(m->q, v, -1);
            break;
        }
        if (rc != 0) {
            gft_fail(__FILE__, __LINE__, "push failed: %s", gf_err_name(rc));
        }
    }
    if (atomic_fetch_sub(&m->producers_left, 1) == 1) {
        gf_queue_close(m->q);
    }
    return NULL;
}

static void *
gft_mpmc_consumer(void *arg)
{
    gft_mpmc_arg_t *a = arg;
    gft_mpmc_t *m = a->m;
    uint64_t sum = 0, count = 0;
    uint64_t *last = calloc(m->producers, sizeof(uint64_t)); /* last seq + 1 */
    if (last == NULL) {
        gft_fail(__FILE__, __LINE__, "calloc failed");
    }
    for (uint64_t n = 0;; n++) {
        uint64_t v;
        int rc;
        if ((a->id + n) % 2 == 0) {
            rc = gf_queue_pop(m->q, &v, -1);
        }
        else {
            uint32_t spins = 0;
            while ((rc = gf_queue_try_pop(m->q, &v)) == GF_EAGAIN) {
                gft_backoff(&spins);
            }
        }
        if (rc == GF_ECLOSED) {
            break;
        }
        if (rc != 0) {
            gft_fail(__FILE__, __LINE__, "pop failed: %s", gf_err_name(rc));
        }
        uint64_t producer = v >> GFT_PRODUCER_SHIFT;
        uint64_t seq = v & ((UINT64_C(1) << GFT_PRODUCER_SHIFT) - 1);
        if (producer >= m->producers || seq >= m->per_producer) {
            gft_fail(__FILE__, __LINE__, "garbage value %" PRIx64, v);
        }
        /* FIFO: one consumer sees each producer's items in push order. */
        if (seq + 1 <= last[producer]) {
            atomic_fetch_add(&m->order_errors, 1);
        }
        last[producer] = seq + 1;
        uint64_t bit = producer * m->per_producer + seq;
        uint64_t mask = UINT64_C(1) << (bit % 64);
        if (atomic_fetch_or(&m->seen[bit / 64], mask) & mask) {
            atomic_fetch_add(&m->dups, 1);
        }
        sum += v;
        count++;
    }
    free(last);
    atomic_fetch_add(&m->sum, sum);
    atomic_fetch_add(&m->count, count);
    return NULL;
}

static void
gft_mpmc_run(uint32_t producers, uint32_t consumers, uint64_t per_producer,
             uint32_t capacity)
{
    gft_mpmc_t m;
    memset(&m, 0, sizeof(m));
    ASSERT_OK(gf_queue_new(capacity, &m.q));
    m.producers = producers;
    m.consumers = consumers;
    m.per_producer = per_producer;
    uint64_t total = (uint64_t)producers * per_producer;
    m.seen = calloc(total / 64 + 1, sizeof(uint64_t));
    ASSERT_NOT_NULL(m.seen);
    atomic_store(&m.producers_left, producers);

    gft_mpmc_arg_t *args = calloc(producers + consumers, sizeof(*args));
    ASSERT_NOT_NULL(args);
    int64_t t0 = gf_now_ns();
    for (uint32_t i = 0; i < consumers; i++) {
        args[i] = (gft_mpmc_arg_t){&m, i, 0};
        gft_thread_start(&args[i].thread, gft_mpmc_consumer, &args[i]);
    }
    for (uint32_t i = 0; i < producers; i++) {
        gft_mpmc_arg_t *a = &args[consumers + i];
        *a = (gft_mpmc_arg_t){&m, i, 0};
        gft_thread_start(&a->thread, gft_mpmc_producer, a);
    }
    for (uint32_t i = 0; i < producers + consumers; i++) {
        gft_thread_join(args[i].thread);
    }
    int64_t elapsed = gf_now_ns() - t0;

    uint64_t expect_sum = 0;
    for (uint64_t p = 0; p < producers; p++) {
        expect_sum += (p << GFT_PRODUCER_SHIFT) * per_producer;
        expect_sum += per_producer * (per_producer - 1) / 2;
    }
    ASSERT_U64_EQ(atomic_load(&m.count), total);
    ASSERT_U64_EQ(atomic_load(&m.dups), 0);
    ASSERT_U64_EQ(atomic_load(&m.order_errors), 0);
    ASSERT_U64_EQ(atomic_load(&m.sum), expect_sum);
    for (uint64_t bit = 0; bit < total; bit++) {
        if (!(atomic_load(&m.seen[bit / 64]) & (UINT64_C(1) << (bit % 64)))) {
            gft_fail(__FILE__, __LINE__, "item %" PRIu64 " never arrived", bit);
        }
    }
    ASSERT_EQ(gf_queue_size_approx(m.q), 0);
    ASSERT_EQ(gf_queue_is_closed(m.q), 1);
    printf("mpmc %ux%u cap %u: %" PRIu64 " items in %.1f ms (%.0f ns/item)\n", producers,
           consumers, capacity, total, elapsed / 1e6, (double)elapsed / (double)total);
    free(args);
    free(m.seen);
    gf_queue_free(m.q);
}

TEST_IMPL(queue_mpmc_stress)
{
    uint32_t producers = (uint32_t)gft_env_int("GF_STRESS_PRODUCERS", 3);
    uint32_t consumers = (uint32_t)gft_env_int("GF_STRESS_CONSUMERS", 3);
    uint64_t items = (uint64_t)gft_env_int("GF_STRESS_ITEMS", 100000);
    ASSERT_GE(producers, 1);
    ASSERT_GE(consumers, 1);
    /* a tiny queue: producers and consumers block and wake constantly */
    gft_mpmc_run(producers, consumers, items, 4);
    /* a roomier one: mostly lock-free hand-offs */
    gft_mpmc_run(producers, consumers, items, 1024);
    /* lopsided */
    gft_mpmc_run(1, consumers + 1, items, 16);
    gft_mpmc_run(producers + 1, 1, items, 16);
}

/* --- across processes ---------------------------------------------------------- */

typedef struct gft_shared_results {
    _Atomic uint64_t sum;
    _Atomic uint64_t count;
} gft_shared_results_t;

static void *
gft_map_shared(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    ASSERT(p != MAP_FAILED);
    return p;
}

static void
gft_wait_child_ok(pid_t pid)
{
    int status;
    pid_t r;
    while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
    }
    ASSERT_EQ(r, pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        gft_fail(__FILE__, __LINE__, "child %d failed: status 0x%x", (int)pid,
                 (unsigned)status);
    }
}

TEST_IMPL(queue_shared_fork)
{
    enum { CHILDREN = 2 };
    uint64_t per_child = (uint64_t)gft_env_int("GF_STRESS_ITEMS", 100000) / 2;
    size_t qbytes = gf_queue_footprint(8);
    size_t qspan = (qbytes + 4095) & ~(size_t)4095;
    /* [queue up][queue down][results] in one MAP_SHARED region */
    unsigned char *region = gft_map_shared(2 * qspan + 4096);
    void *up_mem = region;
    void *down_mem = region + qspan;
    gft_shared_results_t *results = (gft_shared_results_t *)(region + 2 * qspan);
    ASSERT_OK(gf_queue_init(up_mem, 8));
    ASSERT_OK(gf_queue_init(down_mem, 8));
    gf_queue_t *up, *down;
    ASSERT_OK(gf_queue_attach(up_mem, &up));
    ASSERT_OK(gf_queue_attach(down_mem, &down));

    /* Phase 1: children produce, the parent consumes. */
    pid_t pids[CHILDREN];
    for (int c = 0; c < CHILDREN; c++) {
        pids[c] = fork();
        ASSERT_GE(pids[c], 0);
        if (pids[c] == 0) {
            gf_queue_t *q;
            if (gf_queue_attach(up_mem, &q) != 0) {
                _exit(3);
            }
            for (uint64_t i = 0; i < per_child; i++) {
                uint64_t v = ((uint64_t)c << GFT_PRODUCER_SHIFT) | i;
                if (gf_queue_push(q, v, -1) != 0) {
                    _exit(4);
                }
            }
            _exit(0);
        }
    }
    uint64_t next[CHILDREN] = {0};
    for (uint64_t n = 0; n < CHILDREN * per_child; n++) {
        uint64_t v;
        ASSERT_OK(gf_queue_pop(up, &v, -1));
        uint64_t c = v >> GFT_PRODUCER_SHIFT;
        uint64_t seq = v & ((UINT64_C(1) << GFT_PRODUCER_SHIFT) - 1);
        ASSERT_LT(c, CHILDREN);
        ASSERT_U64_EQ(seq, next[c]); /* single consumer: exact FIFO per producer */
        next[c]++;
    }
    for (int c = 0; c < CHILDREN; c++) {
        gft_wait_child_ok(pids[c]);
    }
    uint64_t v;
    ASSERT_ERR(gf_queue_try_pop(up, &v), GF_EAGAIN);

    /* Phase 2: the parent produces, children consume until close. */
    for (int c = 0; c < CHILDREN; c++) {
        pids[c] = fork();
        ASSERT_GE(pids[c], 0);
        if (pids[c] == 0) {
            gf_queue_t *q;
            if (gf_queue_attach(down_mem, &q) != 0) {
                _exit(3);
            }
            uint64_t sum = 0, count = 0, item;
            int rc;
            while ((rc = gf_queue_pop(q, &item, -1)) == 0) {
                sum += item;
                count++;
            }
            if (rc != GF_ECLOSED) {
                _exit(5);
            }
            atomic_fetch_add(&results->sum, sum);
            atomic_fetch_add(&results->count, count);
            _exit(0);
        }
    }
    uint64_t total = CHILDREN * per_child;
    for (uint64_t i = 1; i <= total; i++) {
        ASSERT_OK(gf_queue_push(down, i, -1));
    }
    gf_queue_close(down); /* wakes the children parked on the empty queue */
    for (int c = 0; c < CHILDREN; c++) {
        gft_wait_child_ok(pids[c]);
    }
    ASSERT_U64_EQ(atomic_load(&results->count), total);
    ASSERT_U64_EQ(atomic_load(&results->sum), total * (total + 1) / 2);
    printf("cross-process: %" PRIu64 " items each way; this process made %" PRIu64
           " futex waits, %" PRIu64 " wakes\n",
           total, atomic_load(&gf__futex_wait_calls),
           atomic_load(&gf__futex_wake_calls));
    munmap(region, 2 * qspan + 4096);
}
