/* test_workqueue.c — the keyed work queue: per-key order under parallel workers,
 * coalescing, retry backoff bounds, dead outcomes, the rate limit, shutdown. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/workqueue.h"

#define MAXCALLS 8192

typedef struct item {
    crw_wq_node_t node;
    char key[16];
    int seq;
    int merged_into; /* -1 */
} item_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    /* what the handler saw, in call order */
    char call_key[MAXCALLS][16];
    int call_seq[MAXCALLS];
    uint32_t call_attempt[MAXCALLS];
    int64_t call_us[MAXCALLS];
    int ncalls;
    int done, dead, dropped, merges;
    char last_reason[800];
    /* behaviour */
    crw_wq_result_t result;  /* what to answer */
    int retry_times;         /* answer RETRY to the first N attempts, then result */
    int sleep_us_max;        /* random sleep in the handler */
    bool block_first;        /* the first call waits until released */
    bool released;
    bool wait_for_stop;      /* calls spin until the queue stops */
    crw_wq_t *wq;
    /* concurrency checks */
    atomic_int in_flight, max_in_flight;
    atomic_int key_busy[128];
    atomic_int key_overlap;
} harness_t;

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static crw_wq_result_t handle(void *opaque, int worker, crw_wq_node_t *node, char *reason, size_t n) {
    (void)worker;
    harness_t *h = opaque;
    item_t *it = (item_t *)node;
    int k = atoi(it->key + 1) % 128;
    if (atomic_fetch_add(&h->key_busy[k], 1) != 0)
        atomic_fetch_add(&h->key_overlap, 1);
    int now = atomic_fetch_add(&h->in_flight, 1) + 1;
    for (int m = atomic_load(&h->max_in_flight); now > m && !atomic_compare_exchange_weak(&h->max_in_flight, &m, now);)
        ;
    pthread_mutex_lock(&h->mu);
    int idx = h->ncalls++;
    cr_assert_lt(idx, MAXCALLS);
    snprintf(h->call_key[idx], sizeof h->call_key[idx], "%s", it->key);
    h->call_seq[idx] = it->seq;
    h->call_attempt[idx] = node->attempts;
    h->call_us[idx] = now_us();
    if (h->block_first && idx == 0)
        while (!h->released)
            pthread_cond_wait(&h->cond, &h->mu);
    pthread_mutex_unlock(&h->mu);
    if (h->wait_for_stop)
        while (!crw_wq_stopping(h->wq))
            usleep(1000);
    if (h->sleep_us_max)
        usleep((useconds_t)(rand() % h->sleep_us_max));
    atomic_fetch_sub(&h->in_flight, 1);
    atomic_fetch_sub(&h->key_busy[k], 1);
    if ((int)node->attempts <= h->retry_times) {
        snprintf(reason, n, "try again (%u)", node->attempts);
        return CRW_WQ_RETRY;
    }
    if (h->result != CRW_WQ_OK)
        snprintf(reason, n, "told to %s", h->result == CRW_WQ_RETRY ? "retry" : "fail");
    return h->result;
}

static void done(void *opaque, crw_wq_node_t *node, crw_wq_outcome_t outcome, const char *reason) {
    harness_t *h = opaque;
    pthread_mutex_lock(&h->mu);
    if (outcome == CRW_WQ_DEAD) {
        h->dead++;
        snprintf(h->last_reason, sizeof h->last_reason, "%s", reason);
    } else
        h->done++;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mu);
    free(node);
}

static void merge(void *opaque, crw_wq_node_t *newer, crw_wq_node_t *older) {
    harness_t *h = opaque;
    ((item_t *)older)->merged_into = ((item_t *)newer)->seq;
    h->merges++; /* under the queue's lock, on the adding thread */
    free(older);
}

static void drop(void *opaque, crw_wq_node_t *node) {
    harness_t *h = opaque;
    h->dropped++;
    free(node);
}

static harness_t *harness_new(void) {
    harness_t *h = calloc(1, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cond, NULL);
    h->result = CRW_WQ_OK;
    return h;
}

static crw_wq_t *start(harness_t *h, int workers, bool coalesce, int retry_max, int b0, int bmax, int rate) {
    crw_wq_opts_t o = {.workers = workers,
                       .retry_max = retry_max,
                       .backoff_initial_ms = b0,
                       .backoff_max_ms = bmax,
                       .rate_limit = rate,
                       .rate_burst = 1,
                       .coalesce = coalesce,
                       .handle = handle,
                       .done = done,
                       .merge = merge,
                       .drop = drop,
                       .opaque = h};
    char err[256];
    crw_wq_t *wq = crw_wq_new(&o, err, sizeof err);
    cr_assert(wq, "%s", err);
    h->wq = wq;
    return wq;
}

static void add(crw_wq_t *wq, const char *key, int seq) {
    item_t *it = calloc(1, sizeof *it);
    snprintf(it->key, sizeof it->key, "%s", key);
    it->seq = seq;
    it->merged_into = -1;
    it->node.key = it->key;
    it->node.keylen = strlen(it->key);
    crw_wq_add(wq, &it->node);
}

/* Waits until done + dead reaches n; fails the test after timeout_ms. */
static void wait_finished(harness_t *h, int n, int timeout_ms) {
    int64_t deadline = now_us() + (int64_t)timeout_ms * 1000;
    pthread_mutex_lock(&h->mu);
    while (h->done + h->dead < n && now_us() < deadline) {
        pthread_mutex_unlock(&h->mu);
        usleep(2000);
        pthread_mutex_lock(&h->mu);
    }
    int got = h->done + h->dead;
    pthread_mutex_unlock(&h->mu);
    cr_assert_eq(got, n, "finished %d of %d items within %d ms", got, n, timeout_ms);
}

static void harness_free(harness_t *h) {
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cond);
    free(h);
}

Test(workqueue, per_key_order_holds_while_keys_run_in_parallel) {
    harness_t *h = harness_new();
    h->sleep_us_max = 300;
    crw_wq_t *wq = start(h, 4, false, 0, 10, 10, 0);
    const int keys = 100, per = 20;
    char key[16];
    for (int s = 0; s < per; s++)
        for (int k = 0; k < keys; k++) {
            snprintf(key, sizeof key, "k%d", k);
            add(wq, key, s);
        }
    wait_finished(h, keys * per, 20000);
    cr_assert_eq(crw_wq_len(wq), 0);
    crw_wq_destroy(wq);
    /* Each key's items were handled in the order added, one at a time. */
    int next[100] = {0};
    for (int i = 0; i < h->ncalls; i++) {
        int k = atoi(h->call_key[i] + 1);
        cr_assert_eq(h->call_seq[i], next[k], "key %d: item %d handled when %d was due", k, h->call_seq[i], next[k]);
        next[k]++;
    }
    for (int k = 0; k < keys; k++)
        cr_assert_eq(next[k], per);
    cr_assert_eq(atomic_load(&h->key_overlap), 0, "two items of one key were in flight at once");
    cr_assert_geq(atomic_load(&h->max_in_flight), 2, "the 4 workers never ran in parallel");
    cr_assert_eq(h->dead, 0);
    cr_assert_eq(h->dropped, 0);
    harness_free(h);
}

Test(workqueue, coalescing_keeps_only_the_latest_queued_change_per_key) {
    harness_t *h = harness_new();
    h->block_first = true;
    crw_wq_t *wq = start(h, 1, true, 0, 10, 10, 0);
    add(wq, "a1", 0); /* taken by the worker, blocked: not coalescable */
    while (1) {
        pthread_mutex_lock(&h->mu);
        int n = h->ncalls;
        pthread_mutex_unlock(&h->mu);
        if (n == 1)
            break;
        usleep(1000);
    }
    add(wq, "a1", 1);
    add(wq, "a1", 2); /* replaces 1 */
    add(wq, "a1", 3); /* replaces 2 */
    add(wq, "b2", 10);
    add(wq, "b2", 11); /* replaces 10 */
    cr_assert_eq(h->merges, 3);
    cr_assert_eq(crw_wq_len(wq), 3); /* a1/0 in flight, a1/3, b2/11 */
    pthread_mutex_lock(&h->mu);
    h->released = true;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mu);
    wait_finished(h, 3, 5000);
    crw_wq_destroy(wq);
    cr_assert_eq(h->ncalls, 3);
    cr_assert_str_eq(h->call_key[0], "a1");
    cr_assert_eq(h->call_seq[0], 0);
    /* a1 became ready again after b2 was queued: b2/11 first, then a1/3. */
    cr_assert_str_eq(h->call_key[1], "b2");
    cr_assert_eq(h->call_seq[1], 11);
    cr_assert_str_eq(h->call_key[2], "a1");
    cr_assert_eq(h->call_seq[2], 3);
    harness_free(h);
}

Test(workqueue, without_coalescing_every_change_is_handled) {
    harness_t *h = harness_new();
    h->block_first = true;
    crw_wq_t *wq = start(h, 1, false, 0, 10, 10, 0);
    for (int s = 0; s < 4; s++)
        add(wq, "a1", s);
    cr_assert_eq(h->merges, 0);
    pthread_mutex_lock(&h->mu);
    h->released = true;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mu);
    wait_finished(h, 4, 5000);
    crw_wq_destroy(wq);
    for (int s = 0; s < 4; s++)
        cr_assert_eq(h->call_seq[s], s);
    harness_free(h);
}

Test(workqueue, a_retrying_item_is_not_coalesced_but_what_queues_behind_it_is) {
    harness_t *h = harness_new();
    h->retry_times = 1; /* first attempt of each item: RETRY */
    crw_wq_t *wq = start(h, 1, true, 5, 200, 200, 0);
    add(wq, "a1", 0);
    usleep(50 * 1000); /* a1/0 tried once, now waiting out its 100..200 ms backoff */
    add(wq, "a1", 1);  /* queued behind the retrying head */
    add(wq, "a1", 2);  /* replaces 1 */
    cr_assert_eq(h->merges, 1);
    wait_finished(h, 2, 5000);
    crw_wq_destroy(wq);
    /* a1/0 twice (attempts 1, 2), then a1/2 twice. */
    cr_assert_eq(h->ncalls, 4);
    cr_assert_eq(h->call_seq[0], 0);
    cr_assert_eq(h->call_attempt[0], 1);
    cr_assert_eq(h->call_seq[1], 0);
    cr_assert_eq(h->call_attempt[1], 2);
    cr_assert_eq(h->call_seq[2], 2);
    cr_assert_eq(h->call_seq[3], 2);
    harness_free(h);
}

Test(workqueue, backoff_doubles_up_to_the_cap_with_jitter_in_its_upper_half) {
    for (uint32_t retry = 1; retry <= 20; retry++) {
        int64_t b = 100;
        for (uint32_t i = 1; i < retry; i++)
            b = b * 2 > 3000 ? 3000 : b * 2;
        int lo = (int)(b - b / 2);
        cr_assert_eq(crw_wq_backoff_ms(100, 3000, retry, 0), lo);
        cr_assert_eq(crw_wq_backoff_ms(100, 3000, retry, (uint32_t)(b / 2)), (int)b);
        for (int k = 0; k < 1000; k++) {
            int d = crw_wq_backoff_ms(100, 3000, retry, (uint32_t)rand() * 2654435761u);
            cr_assert(d >= lo && d <= b, "retry %u: %d ms outside [%d, %ld]", retry, d, lo, (long)b);
        }
    }
    /* Large retry counts do not overflow. */
    cr_assert_leq(crw_wq_backoff_ms(1, 86400000, 4000000000u, 0xffffffffu), 86400000);
}

Test(workqueue, retries_are_spaced_by_the_backoff_then_the_item_is_dead) {
    harness_t *h = harness_new();
    h->result = CRW_WQ_RETRY;
    crw_wq_t *wq = start(h, 2, false, 3, 40, 100, 0);
    add(wq, "a1", 0);
    wait_finished(h, 1, 5000);
    crw_wq_destroy(wq);
    cr_assert_eq(h->ncalls, 4, "retry.max=3: 1 attempt + 3 retries, got %d calls", h->ncalls);
    cr_assert_eq(h->dead, 1);
    cr_assert(strstr(h->last_reason, "retry.max (3) exhausted after 4 attempts"), "%s", h->last_reason);
    cr_assert(strstr(h->last_reason, "told to retry"), "%s", h->last_reason);
    /* gaps: retry n waits within [b/2, b], b = 40, 80, 100 (capped); allow 40 ms of scheduling slack */
    const int64_t b[3] = {40, 80, 100};
    for (int i = 1; i < 4; i++) {
        cr_assert_eq(h->call_attempt[i], (uint32_t)i + 1);
        int64_t gap_ms = (h->call_us[i] - h->call_us[i - 1]) / 1000;
        cr_assert(gap_ms >= b[i - 1] / 2 && gap_ms <= b[i - 1] + 40, "retry %d after %ld ms, want [%ld, %ld]", i,
                  (long)gap_ms, (long)(b[i - 1] / 2), (long)b[i - 1]);
    }
    harness_free(h);
}

Test(workqueue, fail_is_dead_at_once_and_later_items_of_the_key_go_on) {
    harness_t *h = harness_new();
    h->result = CRW_WQ_FAIL;
    crw_wq_t *wq = start(h, 1, false, 10, 10, 10, 0);
    add(wq, "a1", 0);
    add(wq, "a1", 1);
    wait_finished(h, 2, 5000);
    crw_wq_destroy(wq);
    cr_assert_eq(h->ncalls, 2);
    cr_assert_eq(h->dead, 2);
    cr_assert(strstr(h->last_reason, "handler failed: told to fail"), "%s", h->last_reason);
    harness_free(h);
}

Test(workqueue, retry_then_success_calls_three_times_and_ends_done) {
    harness_t *h = harness_new();
    h->retry_times = 2;
    crw_wq_t *wq = start(h, 1, false, 5, 5, 5, 0);
    add(wq, "a1", 0);
    wait_finished(h, 1, 5000);
    crw_wq_destroy(wq);
    cr_assert_eq(h->ncalls, 3);
    cr_assert_eq(h->done, 1);
    cr_assert_eq(h->dead, 0);
    harness_free(h);
}

Test(workqueue, rate_limit_spaces_calls_across_all_workers) {
    harness_t *h = harness_new();
    crw_wq_t *wq = start(h, 4, false, 0, 10, 10, 100); /* 100 calls/s, burst 1 */
    char key[16];
    int64_t t0 = now_us();
    for (int k = 0; k < 31; k++) {
        snprintf(key, sizeof key, "k%d", k);
        add(wq, key, 0);
    }
    wait_finished(h, 31, 10000);
    int64_t ms = (now_us() - t0) / 1000;
    crw_wq_destroy(wq);
    /* 1 immediate + 30 at 10 ms intervals: at least ~300 ms whatever the worker count. */
    cr_assert(ms >= 280 && ms < 2000, "31 calls at 100/s took %ld ms", (long)ms);
    /* Any 10 intervals span ~100 ms; a worker waking late can shorten one window a little. */
    for (int i = 0; i + 10 < h->ncalls; i++)
        cr_assert_geq(h->call_us[i + 10] - h->call_us[i], 80000, "calls %d..%d within %ld us", i, i + 10,
                      (long)(h->call_us[i + 10] - h->call_us[i]));
    harness_free(h);
}

Test(workqueue, destroy_returns_unfinished_items_and_stops_blocked_handlers) {
    harness_t *h = harness_new();
    h->wait_for_stop = true;
    crw_wq_t *wq = start(h, 1, false, 0, 10, 10, 0);
    for (int s = 0; s < 6; s++)
        add(wq, "a1", s);
    usleep(20 * 1000);
    cr_assert_eq(crw_wq_len(wq), 6);
    crw_wq_destroy(wq);
    cr_assert_eq(h->done + h->dead, 0);
    cr_assert_eq(h->dropped, 6);
    harness_free(h);
}

Test(workqueue, invalid_options_are_refused) {
    crw_wq_opts_t o = {.workers = 0, .backoff_initial_ms = 10, .backoff_max_ms = 10, .handle = handle, .done = done};
    char err[256];
    cr_assert_null(crw_wq_new(&o, err, sizeof err));
    cr_assert(strstr(err, "invalid options"), "%s", err);
    o.workers = 1;
    o.backoff_max_ms = 5;
    cr_assert_null(crw_wq_new(&o, err, sizeof err));
}
