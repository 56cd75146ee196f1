/*
 * workqueue.c — keyed work queue: per-key FIFOs, a ready list of keys, a
 * min-heap of keys waiting out a retry backoff, a token bucket, workers.
 *
 * Invariants (under mu):
 *   - a key state exists while its key has items (queued, delayed or in
 *     flight); its items form a FIFO, head first;
 *   - a key is in exactly one of: the ready list (head not yet taken),
 *     in flight (a worker holds its head), delayed (in the heap until
 *     not_before_us), or — only while stopping — none;
 *   - only a key's head is ever handed to a worker, so per-key order holds.
 */
#include "core/workqueue.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"

typedef struct keystate {
    struct keystate *hnext; /* hash chain */
    struct keystate *rnext; /* ready list */
    crw_wq_node_t *head, *tail;
    uint64_t hash;
    int64_t not_before_us;  /* delayed: when the head may be retried */
    size_t heap_idx;
    bool ready, in_flight, delayed;
    size_t keylen;
    char key[];             /* a copy: items come and go, the key state stays */
} keystate_t;

typedef struct worker {
    struct crw_wq *wq;
    pthread_t thread;
    int idx;
    bool started;
} worker_t;

struct crw_wq {
    crw_wq_opts_t o;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    atomic_bool stopping;

    keystate_t **buckets;   /* power-of-two hash table */
    size_t nbuckets, nkeys;
    keystate_t *ready_head, *ready_tail;
    keystate_t **heap;      /* delayed keys, earliest not_before_us first */
    size_t nheap, heapcap;
    size_t len;             /* items held: queued, delayed or in flight */

    double tokens;          /* token bucket (rate_limit > 0) */
    int64_t tokens_at_us;
    uint32_t rng;           /* xorshift state for jitter (under mu) */

    worker_t *workers;
};

static struct timespec abs_deadline(int64_t mono_us) {
    /* the condition variable runs on CLOCK_MONOTONIC (see crw_wq_new) */
    return (struct timespec){.tv_sec = mono_us / 1000000, .tv_nsec = (long)(mono_us % 1000000) * 1000};
}

static uint32_t rng_next(crw_wq_t *wq) {
    uint32_t x = wq->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return wq->rng = x;
}

int crw_wq_backoff_ms(int initial_ms, int max_ms, uint32_t retry, uint32_t r) {
    if (retry < 1)
        retry = 1;
    int64_t b = initial_ms;
    for (uint32_t i = 1; i < retry && b < max_ms; i++)
        b *= 2;
    if (b > max_ms)
        b = max_ms;
    int64_t half = b / 2;
    return (int)(b - half + (int64_t)(r % (uint64_t)(half + 1)));
}

/* ---- key table ---------------------------------------------------------- */

static uint64_t hash_key(const char *k, size_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static void table_grow(crw_wq_t *wq) {
    size_t nb = wq->nbuckets * 2;
    keystate_t **b = crw_calloc(nb, sizeof *b);
    for (size_t i = 0; i < wq->nbuckets; i++)
        for (keystate_t *k = wq->buckets[i], *next; k; k = next) {
            next = k->hnext;
            k->hnext = b[k->hash & (nb - 1)];
            b[k->hash & (nb - 1)] = k;
        }
    free(wq->buckets);
    wq->buckets = b;
    wq->nbuckets = nb;
}

static keystate_t *key_get(crw_wq_t *wq, const char *key, size_t n) {
    uint64_t h = hash_key(key, n);
    for (keystate_t *k = wq->buckets[h & (wq->nbuckets - 1)]; k; k = k->hnext)
        if (k->hash == h && k->keylen == n && !memcmp(k->key, key, n))
            return k;
    if (wq->nkeys >= wq->nbuckets)
        table_grow(wq);
    keystate_t *k = crw_calloc(1, sizeof *k + n + 1);
    memcpy(k->key, key, n);
    k->keylen = n;
    k->hash = h;
    keystate_t **b = &wq->buckets[h & (wq->nbuckets - 1)];
    k->hnext = *b;
    *b = k;
    wq->nkeys++;
    return k;
}

static void key_remove(crw_wq_t *wq, keystate_t *k) {
    for (keystate_t **pp = &wq->buckets[k->hash & (wq->nbuckets - 1)]; *pp; pp = &(*pp)->hnext)
        if (*pp == k) {
            *pp = k->hnext;
            wq->nkeys--;
            free(k);
            return;
        }
}

/* ---- ready list and delay heap ------------------------------------------ */

static void ready_push(crw_wq_t *wq, keystate_t *k) {
    k->ready = true;
    k->rnext = NULL;
    if (wq->ready_tail)
        wq->ready_tail->rnext = k;
    else
        wq->ready_head = k;
    wq->ready_tail = k;
}

static keystate_t *ready_pop(crw_wq_t *wq) {
    keystate_t *k = wq->ready_head;
    if (!k)
        return NULL;
    wq->ready_head = k->rnext;
    if (!wq->ready_head)
        wq->ready_tail = NULL;
    k->ready = false;
    return k;
}

static void heap_swap(crw_wq_t *wq, size_t a, size_t b) {
    keystate_t *t = wq->heap[a];
    wq->heap[a] = wq->heap[b];
    wq->heap[b] = t;
    wq->heap[a]->heap_idx = a;
    wq->heap[b]->heap_idx = b;
}

static void heap_push(crw_wq_t *wq, keystate_t *k) {
    if (wq->nheap == wq->heapcap) {
        wq->heapcap = wq->heapcap ? wq->heapcap * 2 : 16;
        wq->heap = crw_realloc(wq->heap, wq->heapcap * sizeof *wq->heap);
    }
    size_t i = wq->nheap++;
    wq->heap[i] = k;
    k->heap_idx = i;
    k->delayed = true;
    while (i > 0 && wq->heap[(i - 1) / 2]->not_before_us > wq->heap[i]->not_before_us) {
        heap_swap(wq, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static keystate_t *heap_pop(crw_wq_t *wq) {
    keystate_t *top = wq->heap[0];
    wq->nheap--;
    if (wq->nheap > 0) {
        wq->heap[0] = wq->heap[wq->nheap];
        wq->heap[0]->heap_idx = 0;
        size_t i = 0;
        for (;;) {
            size_t l = 2 * i + 1, r = l + 1, m = i;
            if (l < wq->nheap && wq->heap[l]->not_before_us < wq->heap[m]->not_before_us)
                m = l;
            if (r < wq->nheap && wq->heap[r]->not_before_us < wq->heap[m]->not_before_us)
                m = r;
            if (m == i)
                break;
            heap_swap(wq, i, m);
            i = m;
        }
    }
    top->delayed = false;
    return top;
}

/* Moves keys whose backoff is over to the ready list. */
static void promote_due(crw_wq_t *wq, int64_t now) {
    while (wq->nheap > 0 && wq->heap[0]->not_before_us <= now)
        ready_push(wq, heap_pop(wq));
}

/* ---- rate limit --------------------------------------------------------- */

/* Takes a token (possibly going into debt); returns how long to wait for it, in us. */
static int64_t rate_reserve(crw_wq_t *wq, int64_t now) {
    if (wq->o.rate_limit <= 0)
        return 0;
    wq->tokens += (double)(now - wq->tokens_at_us) * wq->o.rate_limit / 1e6;
    if (wq->tokens > wq->o.rate_burst)
        wq->tokens = wq->o.rate_burst;
    wq->tokens_at_us = now;
    wq->tokens -= 1.0;
    return wq->tokens >= 0 ? 0 : (int64_t)(-wq->tokens * 1e6 / wq->o.rate_limit);
}

/* ---- workers ------------------------------------------------------------ */

static void *worker_main(void *arg) {
    worker_t *w = arg;
    crw_wq_t *wq = w->wq;
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, NULL);

    char reason[512], msg[700];
    pthread_mutex_lock(&wq->mu);
    while (!wq->stopping) {
        int64_t now = crw_clock_mono_us();
        promote_due(wq, now);
        keystate_t *k = ready_pop(wq);
        if (!k) {
            if (wq->nheap > 0) {
                struct timespec ts = abs_deadline(wq->heap[0]->not_before_us);
                pthread_cond_timedwait(&wq->cond, &wq->mu, &ts);
            } else
                pthread_cond_wait(&wq->cond, &wq->mu);
            continue;
        }
        crw_wq_node_t *n = k->head;
        k->in_flight = true;
        n->attempts++;
        int64_t wait = rate_reserve(wq, now);
        if (wait > 0) {
            struct timespec ts = abs_deadline(now + wait);
            while (!wq->stopping && crw_clock_mono_us() < now + wait)
                pthread_cond_timedwait(&wq->cond, &wq->mu, &ts);
        }
        if (wq->stopping)
            break; /* the item stays at its key's head and is dropped */
        pthread_mutex_unlock(&wq->mu);

        reason[0] = '\0';
        crw_wq_result_t r = wq->o.handle(wq->o.opaque, w->idx, n, reason, sizeof reason);

        pthread_mutex_lock(&wq->mu);
        k->in_flight = false;
        if (wq->stopping)
            break;
        if (r == CRW_WQ_RETRY && (wq->o.retry_max < 0 || n->attempts <= (uint32_t)wq->o.retry_max)) {
            crw_metric_add(CRW_M_RETRIES, 1);
            int d = crw_wq_backoff_ms(wq->o.backoff_initial_ms, wq->o.backoff_max_ms, n->attempts, rng_next(wq));
            crw_debug("workqueue: retry %u of key %.*s in %d ms: %s", n->attempts, (int)k->keylen, k->key, d,
                      reason);
            k->not_before_us = crw_clock_mono_us() + (int64_t)d * 1000;
            heap_push(wq, k);
            pthread_cond_signal(&wq->cond); /* an idle worker re-arms its timer */
            continue;
        }
        crw_wq_outcome_t outcome = CRW_WQ_DONE;
        msg[0] = '\0';
        if (r == CRW_WQ_RETRY) {
            outcome = CRW_WQ_DEAD;
            snprintf(msg, sizeof msg, "retry.max (%d) exhausted after %u attempts; last: %s", wq->o.retry_max,
                     n->attempts, *reason ? reason : "retry");
        } else if (r != CRW_WQ_OK) {
            outcome = CRW_WQ_DEAD;
            snprintf(msg, sizeof msg, "handler failed: %s", *reason ? reason : "no reason given");
        }
        k->head = n->next;
        if (!k->head)
            k->tail = NULL;
        wq->len--;
        if (k->head) {
            ready_push(wq, k);
            pthread_cond_signal(&wq->cond);
        } else
            key_remove(wq, k);
        pthread_mutex_unlock(&wq->mu);
        n->next = NULL;
        wq->o.done(wq->o.opaque, n, outcome, msg);
        pthread_mutex_lock(&wq->mu);
    }
    pthread_mutex_unlock(&wq->mu);
    return NULL;
}

/* ---- public ------------------------------------------------------------- */

crw_wq_t *crw_wq_new(const crw_wq_opts_t *o, char *errstr, size_t n) {
    if (o->workers < 1 || !o->handle || !o->done || (o->coalesce && !o->merge) || o->backoff_initial_ms < 1 ||
        o->backoff_max_ms < o->backoff_initial_ms || o->rate_limit < 0 || (o->rate_limit > 0 && o->rate_burst < 1)) {
        snprintf(errstr, n, "workqueue: invalid options (workers %d, backoff %d..%d ms, rate %d/%d)", o->workers,
                 o->backoff_initial_ms, o->backoff_max_ms, o->rate_limit, o->rate_burst);
        return NULL;
    }
    crw_wq_t *wq = crw_calloc(1, sizeof *wq);
    wq->o = *o;
    pthread_mutex_init(&wq->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wq->cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&wq->stopping, false);
    wq->nbuckets = 64;
    wq->buckets = crw_calloc(wq->nbuckets, sizeof *wq->buckets);
    wq->tokens = o->rate_burst;
    wq->tokens_at_us = crw_clock_mono_us();
    wq->rng = (uint32_t)crw_clock_mono_us() | 1u;
    wq->workers = crw_calloc((size_t)o->workers, sizeof *wq->workers);
    for (int i = 0; i < o->workers; i++) {
        worker_t *w = &wq->workers[i];
        w->wq = wq;
        w->idx = i;
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0) {
            snprintf(errstr, n, "workqueue: cannot start worker thread %d: %s", i, strerror(rc));
            crw_wq_destroy(wq);
            return NULL;
        }
        w->started = true;
    }
    return wq;
}

void crw_wq_add(crw_wq_t *wq, crw_wq_node_t *node) {
    node->next = NULL;
    node->attempts = 0;
    pthread_mutex_lock(&wq->mu);
    keystate_t *k = key_get(wq, node->key, node->keylen);
    crw_wq_node_t *t = k->tail;
    /* The tail may be replaced unless a worker has it or has tried it. */
    if (wq->o.coalesce && t && !(t == k->head && (k->in_flight || t->attempts > 0))) {
        crw_wq_node_t **pp = &k->head;
        while (*pp != t)
            pp = &(*pp)->next;
        *pp = node;
        k->tail = node;
        wq->o.merge(wq->o.opaque, node, t);
        pthread_mutex_unlock(&wq->mu);
        return;
    }
    if (t)
        t->next = node;
    else
        k->head = node;
    k->tail = node;
    wq->len++;
    if (!k->ready && !k->in_flight && !k->delayed) {
        ready_push(wq, k);
        pthread_cond_signal(&wq->cond);
    }
    pthread_mutex_unlock(&wq->mu);
}

size_t crw_wq_len(crw_wq_t *wq) {
    pthread_mutex_lock(&wq->mu);
    size_t n = wq->len;
    pthread_mutex_unlock(&wq->mu);
    return n;
}

bool crw_wq_stopping(crw_wq_t *wq) { return atomic_load(&wq->stopping); }

void crw_wq_destroy(crw_wq_t *wq) {
    if (!wq)
        return;
    pthread_mutex_lock(&wq->mu);
    atomic_store(&wq->stopping, true);
    pthread_cond_broadcast(&wq->cond);
    pthread_mutex_unlock(&wq->mu);
    if (wq->o.interrupt)
        wq->o.interrupt(wq->o.opaque);
    for (int i = 0; i < wq->o.workers; i++)
        if (wq->workers[i].started)
            pthread_join(wq->workers[i].thread, NULL);
    for (size_t i = 0; i < wq->nbuckets; i++)
        for (keystate_t *k = wq->buckets[i], *next; k; k = next) {
            next = k->hnext;
            for (crw_wq_node_t *it = k->head, *nx; it; it = nx) {
                nx = it->next;
                it->next = NULL;
                if (wq->o.drop)
                    wq->o.drop(wq->o.opaque, it);
            }
            free(k);
        }
    free(wq->buckets);
    free(wq->heap);
    free(wq->workers);
    pthread_cond_destroy(&wq->cond);
    pthread_mutex_destroy(&wq->mu);
    free(wq);
}
