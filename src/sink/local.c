/*
 * local.c — the body shared by the local handler sinks (exec, plugin,
 * embedded callbacks): event copies, the workqueue, completions, the
 * dead-letter file, backpressure.  See local.h for the contract.
 */
#include "sink/local.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "core/workqueue.h"

/* Pipeline deliveries an item answers for: its own, plus those of the items it replaced. */
typedef struct {
    uint64_t txn;
    uint32_t n;
} ack_t;

typedef struct hitem {
    crw_wq_node_t node;      /* node.key: "<source>\x1f<key>" in data */
    struct hitem *cnext;     /* completion list */
    crw_wq_outcome_t outcome;
    uint32_t attempts;
    char *reason;            /* DEAD: why (malloc'd) */
    ack_t ack0, *acks;       /* acks == &ack0 until a merge needs more */
    uint32_t nacks, capacks;
    uint64_t commit_lsn;
    uint32_t ordinal;
    uint32_t xid;
    crw_span_t object, old_object; /* inside value */
    size_t size;             /* bytes counted against queue.max.bytes */
    char type[16];
    const char *source, *key, *kind, *value, *id;
    size_t keylen, len;
    char data[];
} hitem_t;

typedef struct {
    crw_buf_t object, old_object;
} scratch_t;

typedef struct hsink {
    crw_sink_t base;
    crw_local_impl_t impl;
    crw_wq_t *wq;
    volatile sig_atomic_t *stop;
    scratch_t *scratch;      /* one per worker */
    int workers;

    pthread_mutex_t mu;      /* guards the completion list */
    pthread_cond_t cond;     /* signalled on each completion */
    hitem_t *done_head, *done_tail;

    /* main thread only */
    size_t pending, pending_bytes, max_events, max_bytes;
    uint64_t handled, dead;
    bool warned_full;
} hsink_t;

#define ITEM(nodep) ((hitem_t *)((char *)(nodep)-offsetof(hitem_t, node)))

/* A NUL-terminated copy of the span of it->value into out; NULL when the event has none. */
static void copy_span(const hitem_t *it, crw_span_t span, crw_buf_t *out, const char **v, size_t *vlen) {
    if (!span.len) {
        *v = NULL;
        *vlen = 0;
        return;
    }
    crw_buf_reset(out);
    crw_buf_put(out, it->value + span.off, span.len);
    *v = out->data;
    *vlen = span.len;
}

/* ---- items ------------------------------------------------------------------ */

static void item_free(hitem_t *it) {
    if (it->acks != &it->ack0)
        free(it->acks);
    free(it->reason);
    free(it);
}

static hitem_t *item_new(const crw_event_t *ev) {
    const char *source = ev->source ? ev->source : "";
    const char *kind = ev->kind ? ev->kind : "";
    size_t sl = strlen(source), kl = strlen(kind);
    size_t need = sl + 1 + ev->keylen + 1 + kl + 1 + ev->len + 1 + ev->idlen + 1;
    hitem_t *it = crw_malloc(sizeof *it + need);
    memset(it, 0, sizeof *it);
    char *p = it->data;
    it->source = p;
    memcpy(p, source, sl);
    p[sl] = '\x1f'; /* the queue key is "<source>\x1f<key>": keys are per table */
    it->key = p + sl + 1;
    if (ev->keylen)
        memcpy(p + sl + 1, ev->key, ev->keylen);
    p[sl + 1 + ev->keylen] = '\0';
    it->node.key = p;
    it->node.keylen = sl + 1 + ev->keylen;
    it->keylen = ev->keylen;
    p += sl + 1 + ev->keylen + 1;
    it->kind = p;
    memcpy(p, kind, kl + 1);
    p += kl + 1;
    it->value = p;
    memcpy(p, ev->value, ev->len);
    p[ev->len] = '\0';
    it->len = ev->len;
    p += ev->len + 1;
    it->id = p;
    if (ev->idlen)
        memcpy(p, ev->id, ev->idlen);
    p[ev->idlen] = '\0';
    snprintf(it->type, sizeof it->type, "%s", ev->type ? ev->type : "");
    it->commit_lsn = ev->lsn;
    it->ordinal = ev->ordinal;
    it->xid = ev->xid;
    it->object = ev->object;
    it->old_object = ev->old_object;
    it->ack0 = (ack_t){ev->txn, 1};
    it->acks = &it->ack0;
    it->nacks = 1;
    it->capacks = 1;
    it->size = sizeof *it + need;
    return it;
}

/* The source name, without the key part (for the dead-letter record). */
static void item_source(const hitem_t *it, char *buf, size_t n) {
    size_t sl = (size_t)(it->key - 1 - it->source);
    snprintf(buf, n, "%.*s", (int)sl, it->source);
}

/* ---- workqueue callbacks ------------------------------------------------------ */

static crw_wq_result_t hs_handle(void *opaque, int worker, crw_wq_node_t *node, char *reason, size_t n) {
    hsink_t *s = opaque;
    hitem_t *it = ITEM(node);
    scratch_t *sc = &s->scratch[worker];
    crw_handler_event_t ev = {.type = it->type,
                              .kind = it->kind,
                              .key = it->key,
                              .key_len = it->keylen,
                              .event = it->value,
                              .event_len = it->len,
                              .id = it->id,
                              .commit_lsn = it->commit_lsn,
                              .ordinal = it->ordinal,
                              .attempt = node->attempts,
                              .worker = worker};
    if (s->impl.wants_objects) {
        copy_span(it, it->object, &sc->object, &ev.object, &ev.object_len);
        copy_span(it, it->old_object, &sc->old_object, &ev.old_object, &ev.old_object_len);
    }
    int r = s->impl.deliver(s->impl.impl, &ev, reason, n);
    if (r == CRW_HANDLER_OK)
        return CRW_WQ_OK;
    if (r == CRW_HANDLER_RETRY) {
        crw_debug("%s: event %s (%s %s) attempt %u: retry: %s", s->impl.name, it->id, it->kind, it->key,
                  node->attempts, reason);
        return CRW_WQ_RETRY;
    }
    if (r != CRW_HANDLER_FAIL)
        snprintf(reason, n, "handler returned %d, not OK, RETRY or FAIL", r);
    return CRW_WQ_FAIL;
}

static void hs_done(void *opaque, crw_wq_node_t *node, crw_wq_outcome_t outcome, const char *reason) {
    hsink_t *s = opaque;
    hitem_t *it = ITEM(node);
    it->outcome = outcome;
    it->attempts = node->attempts;
    if (outcome == CRW_WQ_DEAD)
        it->reason = crw_strdup(reason);
    it->cnext = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->done_tail)
        s->done_tail->cnext = it;
    else
        s->done_head = it;
    s->done_tail = it;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

/* Coalescing: newer answers for older's deliveries too (main thread, inside crw_wq_add). */
static void hs_merge(void *opaque, crw_wq_node_t *newer, crw_wq_node_t *older) {
    hsink_t *s = opaque;
    hitem_t *nw = ITEM(newer), *old = ITEM(older);
    for (uint32_t i = 0; i < old->nacks; i++) {
        ack_t a = old->acks[i];
        if (nw->nacks > 0 && nw->acks[nw->nacks - 1].txn == a.txn) {
            nw->acks[nw->nacks - 1].n += a.n;
            continue;
        }
        bool merged = false;
        for (uint32_t j = 0; j < nw->nacks && !merged; j++)
            if (nw->acks[j].txn == a.txn) {
                nw->acks[j].n += a.n;
                merged = true;
            }
        if (merged)
            continue;
        if (nw->nacks == nw->capacks) {
            uint32_t cap = nw->capacks * 2;
            ack_t *v = crw_malloc(cap * sizeof *v);
            memcpy(v, nw->acks, nw->nacks * sizeof *v);
            if (nw->acks != &nw->ack0)
                free(nw->acks);
            nw->acks = v;
            nw->capacks = cap;
        }
        nw->acks[nw->nacks++] = a;
    }
    s->pending--;
    s->pending_bytes -= old->size;
    item_free(old);
}

static void hs_drop(void *opaque, crw_wq_node_t *node) {
    (void)opaque;
    item_free(ITEM(node));
}

static void hs_interrupt(void *opaque) {
    hsink_t *s = opaque;
    if (s->impl.interrupt)
        s->impl.interrupt(s->impl.impl);
}

/* ---- main thread ---------------------------------------------------------------- */

/* Dead-letters failed events and releases every finished event's deliveries. */
static int apply_completions(hsink_t *s) {
    pthread_mutex_lock(&s->mu);
    hitem_t *it = s->done_head;
    s->done_head = s->done_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    int rc = 0;
    const crw_sink_env_t *env = s->base.env;
    while (it) {
        hitem_t *next = it->cnext;
        bool release = true;
        if (it->outcome == CRW_WQ_DEAD) {
            char source[512], lsn[CRW_LSN_BUFSIZE];
            item_source(it, source, sizeof source);
            crw_lsn_format(lsn, it->commit_lsn);
            char reason[900];
            snprintf(reason, sizeof reason, "%s: %s", s->impl.name, it->reason ? it->reason : "failed");
            crw_deadletter_rec_t rec = {reason, source, lsn, it->xid, it->ordinal, it->value, it->len};
            crw_warn("%s: event %s (%s %s) dead-lettered: %s", s->impl.name, it->id, it->kind, it->key,
                     it->reason ? it->reason : "failed");
            if (crw_deadletter_write(env->deadletter, &rec) < 0) {
                /* Not durable: never acknowledge it; the stream stops and it comes again. */
                release = false;
                rc = CRW_ERR_IO;
            } else
                s->dead++;
        } else
            s->handled++;
        if (release)
            for (uint32_t i = 0; i < it->nacks; i++)
                crw_pipeline_release(env->pipeline, it->acks[i].txn, it->acks[i].n);
        s->pending--;
        s->pending_bytes -= it->size;
        item_free(it);
        it = next;
    }
    return rc;
}

/* Waits up to ms for a completion to arrive (returns at once if one is there). */
static void wait_completion(hsink_t *s, int ms) {
    if (ms <= 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->done_head)
        if (pthread_cond_timedwait(&s->cond, &s->mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&s->mu);
}

static void keepalive(hsink_t *s) {
    const crw_sink_env_t *env = s->base.env;
    if (env->keepalive)
        env->keepalive(env->keepalive_opaque);
}

static int hs_emit(crw_sink_t *base, const crw_event_t *ev) {
    hsink_t *s = (hsink_t *)base;
    if (!ev->value)
        return 0; /* a Kafka tombstone: nothing for a handler */
    int rc = apply_completions(s);
    if (rc < 0)
        return rc;
    int64_t since = crw_clock_mono_ms();
    while (s->pending > 0 && (s->pending >= s->max_events || s->pending_bytes + ev->len > s->max_bytes)) {
        if (s->stop && *s->stop)
            return CRW_ERR_STOPPED;
        if (!s->warned_full && crw_clock_mono_ms() - since > 5000) {
            crw_warn("%s: %zu events (%zu bytes) unfinished; the stream waits for the handler", s->impl.name,
                     s->pending, s->pending_bytes);
            s->warned_full = true;
        }
        wait_completion(s, 100);
        if ((rc = apply_completions(s)) < 0)
            return rc;
        keepalive(s);
    }
    hitem_t *it = item_new(ev);
    crw_pipeline_hold(base->env->pipeline, ev->txn, 1);
    s->pending++;
    s->pending_bytes += it->size;
    crw_wq_add(s->wq, &it->node);
    return 0;
}

static int hs_commit(crw_sink_t *base, uint64_t txn) {
    (void)base;
    (void)txn;
    return 0; /* asynchronous: the holds taken in emit() keep the transaction open */
}

static int hs_poll(crw_sink_t *base, int timeout_ms) {
    hsink_t *s = (hsink_t *)base;
    if (s->pending > 0)
        wait_completion(s, timeout_ms);
    int rc = apply_completions(s);
    if (s->pending < s->max_events / 2)
        s->warned_full = false;
    return rc;
}

static int hs_drain(crw_sink_t *base, int timeout_ms) {
    hsink_t *s = (hsink_t *)base;
    int64_t deadline = crw_clock_mono_ms() + timeout_ms;
    int rc = apply_completions(s);
    while (rc == 0 && s->pending > 0 && crw_clock_mono_ms() < deadline) {
        wait_completion(s, 100);
        rc = apply_completions(s);
        keepalive(s);
    }
    if (rc == 0 && s->pending > 0) {
        crw_warn("%s: %zu events still unfinished after %d ms; they will be delivered again", s->impl.name,
                 s->pending, timeout_ms);
        return CRW_ERR_SINK;
    }
    return rc;
}

static void hs_destroy(crw_sink_t *base) {
    hsink_t *s = (hsink_t *)base;
    crw_wq_destroy(s->wq);
    /* Finished but not applied: not acknowledged, so delivered again next time. */
    for (hitem_t *it = s->done_head, *next; it; it = next) {
        next = it->cnext;
        item_free(it);
    }
    if (s->impl.destroy)
        s->impl.destroy(s->impl.impl);
    crw_info("%s: %" PRIu64 " events handled, %" PRIu64 " dead-lettered", s->impl.name, s->handled, s->dead);
    for (int i = 0; s->scratch && i < s->workers; i++) {
        crw_buf_free(&s->scratch[i].object);
        crw_buf_free(&s->scratch[i].old_object);
    }
    free(s->scratch);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static const crw_sink_ops_t handler_ops = {
    .name = "handler",
    .emit = hs_emit,
    .commit = hs_commit,
    .poll = hs_poll,
    .drain = hs_drain,
    .resume_position = NULL,
    .destroy = hs_destroy,
};

crw_sink_t *crw_local_sink_new(const crw_sink_env_t *env, const crw_local_impl_t *impl, volatile sig_atomic_t *stop,
                               int *err, char *errstr, size_t n) {
    const crw_config_t *c = env->conf;
    if (c->retry_backoff_max_ms < c->retry_backoff_initial_ms) {
        snprintf(errstr, n, "retry.backoff.max.ms (%d) is below retry.backoff.initial.ms (%d)",
                 c->retry_backoff_max_ms, c->retry_backoff_initial_ms);
        *err = CRW_ERR_CONFIG;
        if (impl->destroy)
            impl->destroy(impl->impl);
        return NULL;
    }
    hsink_t *s = crw_calloc(1, sizeof *s);
    s->base.ops = &handler_ops;
    s->base.env = env;
    s->impl = *impl;
    s->stop = stop ? stop : env->stop; /* the embedding's own flag, else the stream's signal flag */
    s->workers = c->workers;
    s->max_events = (size_t)c->queue_max_events;
    s->max_bytes = (size_t)c->queue_max_bytes;
    s->scratch = crw_calloc((size_t)c->workers, sizeof *s->scratch);
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    crw_wq_opts_t o = {.workers = c->workers,
                       .retry_max = c->retry_max,
                       .backoff_initial_ms = c->retry_backoff_initial_ms,
                       .backoff_max_ms = c->retry_backoff_max_ms,
                       .rate_limit = c->rate_limit,
                       .rate_burst = c->rate_burst,
                       .coalesce = c->coalesce,
                       .handle = hs_handle,
                       .done = hs_done,
                       .merge = hs_merge,
                       .interrupt = hs_interrupt,
                       .drop = hs_drop,
                       .opaque = s};
    s->wq = crw_wq_new(&o, errstr, n);
    if (!s->wq) {
        *err = CRW_ERR_SINK;
        hs_destroy(&s->base);
        return NULL;
    }
    crw_info("%s: %d worker%s, retry.max %d, backoff %d..%d ms%s%s", impl->name, c->workers,
             c->workers == 1 ? "" : "s", c->retry_max, c->retry_backoff_initial_ms, c->retry_backoff_max_ms,
             c->coalesce ? ", coalescing" : "", c->rate_limit ? ", rate-limited" : "");
    return &s->base;
}
