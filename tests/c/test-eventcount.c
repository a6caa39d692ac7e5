/* Tests: the eventcount. */
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "../../src/core/internal.h"
#include "runner.h"

TEST_IMPL(ec_timeout)
{
    gf_ec_t ec = GF_EC_INITIALIZER;
    gf_ec_init(&ec);

    /* timeout 0 never sleeps */
    uint32_t key = gf_ec_prepare(&ec);
    int64_t t0 = gf_now_ns();
    ASSERT_ERR(gf_ec_wait(&ec, key, 0), GF_ETIMEDOUT);
    ASSERT_LT(gf_now_ns() - t0, 1000000000);

    /* a real timeout sleeps at least that long */
    t0 = gf_now_ns();
    ASSERT_ERR(gf_ec_wait(&ec, key, 30000000), GF_ETIMEDOUT);
    int64_t elapsed = gf_now_ns() - t0;
    ASSERT_GE(elapsed, 30000000);
    ASSERT_LT(elapsed, 2000000000);
    ASSERT_EQ(atomic_load(&ec.waiters), 0);

    /* a stale key returns at once, even with an infinite timeout */
    gf_ec_notify_one(&ec);
    ASSERT_OK(gf_ec_wait(&ec, key, -1));
    ASSERT_OK(gf_ec_wait(&ec, key, 0));
    ASSERT_NE(gf_ec_prepare(&ec), key);
}

TEST_IMPL(ec_notify_no_syscall)
{
    gf_ec_t ec = GF_EC_INITIALIZER;
    uint64_t wakes = atomic_load(&gf__futex_wake_calls);
    uint32_t key = gf_ec_prepare(&ec);
    for (int i = 0; i < 1000; i++) {
        gf_ec_notify_one(&ec);
        gf_ec_notify_all(&ec);
    }
    ASSERT_U64_EQ(atomic_load(&gf__futex_wake_calls), wakes);
    ASSERT_EQ(gf_ec_prepare(&ec) - key, 2000);

    /* An uncontended queue hand-off makes no futex call either. */
    gf_queue_t *q;
    ASSERT_OK(gf_queue_new(8, &q));
    uint64_t waits = atomic_load(&gf__futex_wait_calls);
    for (uint64_t i = 0; i < 100; i++) {
        uint64_t v;
        ASSERT_OK(gf_queue_push(q, i, -1));
        ASSERT_OK(gf_queue_pop(q, &v, -1));
        ASSERT_U64_EQ(v, i);
    }
    ASSERT_U64_EQ(atomic_load(&gf__futex_wake_calls), wakes);
    ASSERT_U64_EQ(atomic_load(&gf__futex_wait_calls), waits);
    gf_queue_free(q);
}

typedef struct gft_ec_waiter {
    gf_ec_t *ec;
    _Atomic int *flag;
    int64_t timeout_ns;
    int result;
    _Atomic int done;
} gft_ec_waiter_t;

/* Wait until *flag becomes nonzero, the eventcount way. */
static void *
gft_ec_wait_flag(void *arg)
{
    gft_ec_waiter_t *w = arg;
    w->result = 0;
    for (;;) {
        uint32_t key = gf_ec_prepare(w->ec);
        if (atomic_load(w->flag)) {
            break;
        }
        int rc = gf_ec_wait(w->ec, key, w->timeout_ns);
        if (rc != 0) {
            w->result = rc;
            break;
        }
    }
    atomic_store(&w->done, 1);
    return NULL;
}

TEST_IMPL(ec_wake_one_and_all)
{
    gf_ec_t ec = GF_EC_INITIALIZER;
    _Atomic int flag = 0;

    /* One waiter, notify_one. */
    gft_ec_waiter_t w = {&ec, &flag, -1, 0, 0};
    pthread_t t;
    gft_thread_start(&t, gft_ec_wait_flag, &w);
    gft_wait_for_waiters(&ec, 1);
    uint64_t wakes = atomic_load(&gf__futex_wake_calls);
    atomic_store(&flag, 1);
    gf_ec_notify_one(&ec);
    gft_thread_join(t);
    ASSERT_OK(w.result);
    ASSERT_GE(atomic_load(&gf__futex_wake_calls), wakes + 1);

    /* Many waiters, notify_all. */
    enum { N = 6 };
    atomic_store(&flag, 0);
    gft_ec_waiter_t ws[N];
    pthread_t ts[N];
    for (int i = 0; i < N; i++) {
        ws[i] = (gft_ec_waiter_t){&ec, &flag, -1, 0, 0};
        gft_thread_start(&ts[i], gft_ec_wait_flag, &ws[i]);
    }
    gft_wait_for_waiters(&ec, N);
    atomic_store(&flag, 1);
    gf_ec_notify_all(&ec);
    for (int i = 0; i < N; i++) {
        gft_thread_join(ts[i]);
        ASSERT_OK(ws[i].result);
    }
    ASSERT_EQ(atomic_load(&ec.waiters), 0);
}

/* Blocked with a handler that interrupts: gf_ec_wait must return GF_EINTR
 * so that the Python layer can run its signal handlers. */
static void
gft_ec_eintr_case(int64_t timeout_ns)
{
    gf_ec_t ec = GF_EC_INITIALIZER;
    _Atomic int flag = 0;
    gft_ec_waiter_t w = {&ec, &flag, timeout_ns, 0, 0};
    pthread_t t;
    gft_thread_start(&t, gft_ec_wait_flag, &w);
    gft_wait_for_waiters(&ec, 1);
    /* Re-send until it lands while the thread sleeps in the futex. */
    while (!atomic_load(&w.done)) {
        pthread_kill(t, SIGUSR1);
        gft_sleep_ms(20);
    }
    gft_thread_join(t);
    ASSERT_ERR(w.result, GF_EINTR);
    ASSERT_GE(gft_signal_count(), 1);
}

TEST_IMPL(ec_eintr)
{
    gft_install_interrupting_handler(SIGUSR1);
    gft_ec_eintr_case(-1);
    gft_ec_eintr_case(60 * GF__NS_PER_SEC);
}

/* Ping-pong: two threads hand a token back and forth through two
 * eventcounts.  Every round needs a wake-up; a lost one hangs the test
 * (the runner's timeout turns that into a failure). */
typedef struct gft_pingpong {
    gf_ec_t ec[2];
    _Atomic uint64_t turn; /* even: thread 0 may move; odd: thread 1 */
    uint64_t rounds;
} gft_pingpong_t;

typedef struct gft_pp_arg {
    gft_pingpong_t *pp;
    int side;
} gft_pp_arg_t;

static void *
gft_pingpong_thread(void *arg)
{
    gft_pp_arg_t *a = arg;
    gft_pingpong_t *pp = a->pp;
    int side = a->side;
    for (uint64_t i = 0; i < pp->rounds; i++) {
        for (;;) {
            uint32_t key = gf_ec_prepare(&pp->ec[side]);
            if ((atomic_load(&pp->turn) & 1) == (uint64_t)side) {
                break;
            }
            gf_ec_wait(&pp->ec[side], key, -1);
        }
        atomic_fetch_add(&pp->turn, 1);
        gf_ec_notify_one(&pp->ec[!side]);
    }
    return NULL;
}

TEST_IMPL(ec_stress_pingpong)
{
    gft_pingpong_t pp;
    gf_ec_init(&pp.ec[0]);
    gf_ec_init(&pp.ec[1]);
    atomic_init(&pp.turn, 0);
    pp.rounds = (uint64_t)gft_env_int("GF_STRESS_ROUNDS", 50000);
    gft_pp_arg_t a0 = {&pp, 0}, a1 = {&pp, 1};
    pthread_t t0, t1;
    uint64_t wakes = atomic_load(&gf__futex_wake_calls);
    gft_thread_start(&t0, gft_pingpong_thread, &a0);
    gft_thread_start(&t1, gft_pingpong_thread, &a1);
    gft_thread_join(t0);
    gft_thread_join(t1);
    ASSERT_U64_EQ(atomic_load(&pp.turn), 2 * pp.rounds);
    printf("%" PRIu64 " rounds, %" PRIu64 " futex wakes\n", pp.rounds,
           atomic_load(&gf__futex_wake_calls) - wakes);
}

/* Semaphore built on an eventcount with notify_one: P posters add tokens,
 * C takers each take their share.  A lost wake-up leaves a taker asleep with
 * tokens available: the test then hangs and times out. */
typedef struct gft_sem {
    gf_ec_t ec;
    _Atomic int64_t tokens;
    int64_t per_poster;
    int64_t per_taker;
} gft_sem_t;

static void *
gft_sem_poster(void *arg)
{
    gft_sem_t *s = arg;
    for (int64_t i = 0; i < s->per_poster; i++) {
        atomic_fetch_add(&s->tokens, 1);
        gf_ec_notify_one(&s->ec);
        if ((i & 255) == 0) {
            sched_yield();
        }
    }
    return NULL;
}

static void *
gft_sem_taker(void *arg)
{
    gft_sem_t *s = arg;
    for (int64_t i = 0; i < s->per_taker; i++) {
        for (;;) {
            uint32_t key = gf_ec_prepare(&s->ec);
            int64_t n = atomic_load(&s->tokens);
            if (n > 0 && atomic_compare_exchange_strong(&s->tokens, &n, n - 1)) {
                break;
            }
            if (n > 0) {
                continue; /* lost a race for a token; try again */
            }
            /* a finite timeout would hide lost wake-ups: wait forever */
            gf_ec_wait(&s->ec, key, -1);
        }
    }
    return NULL;
}

TEST_IMPL(ec_stress_semaphore)
{
    enum { POSTERS = 2, TAKERS = 3 };
    gft_sem_t s;
    gf_ec_init(&s.ec);
    atomic_init(&s.tokens, 0);
    int64_t total = gft_env_int("GF_STRESS_ROUNDS", 50000) * 3;
    total -= total % (POSTERS * TAKERS);
    s.per_poster = total / POSTERS;
    s.per_taker = total / TAKERS;
    pthread_t p[POSTERS], t[TAKERS];
    for (int i = 0; i < TAKERS; i++) {
        gft_thread_start(&t[i], gft_sem_taker, &s);
    }
    for (int i = 0; i < POSTERS; i++) {
        gft_thread_start(&p[i], gft_sem_poster, &s);
    }
    for (int i = 0; i < POSTERS; i++) {
        gft_thread_join(p[i]);
    }
    for (int i = 0; i < TAKERS; i++) {
        gft_thread_join(t[i]);
    }
    ASSERT_EQ(atomic_load(&s.tokens), 0);
    ASSERT_EQ(atomic_load(&s.ec.waiters), 0);
}
