/*
 * metrics.c — the process's metrics and their Prometheus text rendering
 * (metrics.h).  Scalars and histogram buckets are atomics bumped with
 * relaxed order; events_total{kind,type} is a fixed pool of counters in
 * hash chains, each published once (under a mutex, the only one) and then
 * found and counted without it.
 */
#include "core/metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"

typedef struct {
    const char *name;
    const char *type; /* "counter" or "gauge" */
    const char *help;
    double scale;     /* the value rendered is the stored one divided by it */
} scalar_def_t;

static const scalar_def_t scalar_defs[CRW_M_N] = {
    [CRW_M_SOURCE_POSITION] = {"crwatch_source_position", "gauge",
                               "Highest position the source read: a WAL LSN as a number, or the poll batch", 1},
    [CRW_M_CONFIRMED_POSITION] = {"crwatch_confirmed_position", "gauge",
                                  "Position every sink acknowledged, as confirmed to the slot or poll watermark", 1},
    [CRW_M_SLOT_RETAINED_WAL] = {"crwatch_slot_retained_wal_bytes", "gauge",
                                 "WAL the replication slot retains: pg_current_wal_lsn() - restart_lsn", 1},
    [CRW_M_SLOT_SAFE_WAL] = {"crwatch_slot_safe_wal_bytes", "gauge",
                             "WAL that may still be written before max_slot_wal_keep_size invalidates the slot "
                             "(-1: no limit)",
                             1},
    [CRW_M_QUEUE_EVENTS] = {"crwatch_queue_events", "gauge",
                            "Deliveries handed to the sinks and not acknowledged yet", 1},
    [CRW_M_ACTIVE] = {"crwatch_active", "gauge", "1 on the instance that streams the slot, 0 on a standby", 1},
    [CRW_M_SOURCE_LAG_US] = {"crwatch_source_lag_seconds", "gauge",
                             "Age of the last heartbeat when it came back through the stream (now - its commit time)",
                             1e6},
    [CRW_M_TRANSACTIONS] = {"crwatch_transactions_total", "counter",
                            "Source transactions committed to every sink", 1},
    [CRW_M_RETRIES] = {"crwatch_retries_total", "counter", "Deliveries a sink tried again", 1},
    [CRW_M_DEADLETTER] = {"crwatch_deadletter_total", "counter", "Records written to the dead-letter destination", 1},
    [CRW_M_RECONNECTS] = {"crwatch_reconnects_total", "counter", "Source connections rebuilt", 1},
    [CRW_M_HEARTBEATS] = {"crwatch_heartbeats_total", "counter", "Heartbeats written through the replication slot",
                          1},
    [CRW_M_STALLS] = {"crwatch_stalls_total", "counter",
                      "Heartbeats that did not come back in time while the server was silent (the connection was "
                      "rebuilt)",
                      1},
};

static _Atomic int64_t scalars[CRW_M_N];

/* Histograms: upper bounds in microseconds, ascending, ended by 0. */
#define HIST_MAX_BUCKETS 20
static const int64_t commit_to_ack_us[] = {500,    1000,   2500,    5000,    10000,   25000,    50000,   100000,
                                           250000, 500000, 1000000, 2500000, 10000000, 60000000, 0};
/* A sink's own step: finer below a millisecond, where an idle stream's deliveries are. */
static const int64_t sink_step_us[] = {100,    250,    500,     1000,    2500,    5000,     10000,    25000, 50000,
                                       100000, 250000, 500000,  1000000, 2500000, 10000000, 60000000, 0};
_Static_assert(sizeof commit_to_ack_us / sizeof *commit_to_ack_us <= HIST_MAX_BUCKETS + 1, "too many buckets");
_Static_assert(sizeof sink_step_us / sizeof *sink_step_us <= HIST_MAX_BUCKETS + 1, "too many buckets");

typedef struct {
    const char *name;
    const char *help;
    const int64_t *bounds;
} hist_def_t;

static const hist_def_t hist_defs[CRW_H_N] = {
    [CRW_H_COMMIT_TO_ACK] = {"crwatch_commit_to_ack_seconds",
                             "From a transaction's commit in PostgreSQL to every sink's acknowledgement",
                             commit_to_ack_us},
    [CRW_H_KAFKA_DELIVERY] = {"crwatch_kafka_delivery_seconds",
                              "Kafka: from produce() to the message's delivery report (the producer's queue and "
                              "linger, the broker's acknowledgement)",
                              sink_step_us},
    [CRW_H_KAFKA_TXN_COMMIT] = {"crwatch_kafka_transaction_commit_seconds",
                                "Kafka exactly-once: how long one transaction's commit took (flushing what is "
                                "queued, then ending the transaction)",
                                sink_step_us},
};

typedef struct {
    _Atomic uint64_t buckets[HIST_MAX_BUCKETS + 1]; /* one per bound, then +Inf only */
    _Atomic int64_t sum_us;
} hist_t;
static hist_t hists[CRW_H_N];

static _Atomic int wal_status_code; /* 0 unknown, else 1 + index in wal_statuses */
static const char *const wal_statuses[] = {"reserved", "extended", "unreserved", "lost"};

/* events_total{kind,type}: NEVENT_BUCKETS hash chains over a pool of NEVENTS counters, taken in order.  A
 * look-up walks one chain, without the lock (a counter is filled, then linked with release); adding one takes
 * the lock.  One chain, not the whole table, is walked whatever the number of kinds (a table watched as a
 * row-shaped resource is a kind: a publication of 1000 tables is 1000 kinds). */
#define NEVENTS 4096
#define NEVENT_BUCKETS 1024
#define KIND_MAX 64
typedef struct event_counter {
    char kind[KIND_MAX];
    char type[16];
    _Atomic uint64_t count;
    struct event_counter *_Atomic next;
} event_counter_t;
static event_counter_t events[NEVENTS];
static event_counter_t *_Atomic event_heads[NEVENT_BUCKETS];
static _Atomic uint32_t nevents; /* events[0..nevents) are in use */
static pthread_mutex_t events_lock = PTHREAD_MUTEX_INITIALIZER;

void crw_metric_add(crw_metric_t m, uint64_t n) { atomic_fetch_add_explicit(&scalars[m], (int64_t)n, memory_order_relaxed); }
void crw_metric_set(crw_metric_t m, int64_t v) { atomic_store_explicit(&scalars[m], v, memory_order_relaxed); }
int64_t crw_metric_get(crw_metric_t m) { return atomic_load_explicit(&scalars[m], memory_order_relaxed); }

void crw_metric_observe(crw_hist_t h, int64_t us) {
    if (us < 0)
        us = 0; /* clocks of two machines */
    const int64_t *b = hist_defs[h].bounds;
    size_t i = 0;
    while (b[i] && us > b[i])
        i++;
    atomic_fetch_add_explicit(&hists[h].buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&hists[h].sum_us, us, memory_order_relaxed);
}

void crw_metric_commit_to_ack(int64_t us) { crw_metric_observe(CRW_H_COMMIT_TO_ACK, us); }

void crw_metric_wal_status(const char *status) {
    int code = 0;
    for (int i = 0; status && i < 4; i++)
        if (!strcmp(status, wal_statuses[i]))
            code = i + 1;
    atomic_store_explicit(&wal_status_code, code, memory_order_relaxed);
}

static uint32_t hash2(const char *a, const char *b) {
    uint32_t h = 2166136261u;
    for (; *a; a++)
        h = (h ^ (unsigned char)*a) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    for (; *b; b++)
        h = (h ^ (unsigned char)*b) * 16777619u;
    return h;
}

static bool same(const event_counter_t *e, const char *kind, const char *type) {
    return !strncmp(e->kind, kind, KIND_MAX) && !strcmp(e->type, type);
}

static event_counter_t *find_event(event_counter_t *e, const char *kind, const char *type) {
    for (; e; e = atomic_load_explicit(&e->next, memory_order_acquire))
        if (same(e, kind, type))
            return e;
    return NULL;
}

void crw_metric_event(const char *kind, const char *type) {
    if (!kind)
        kind = "";
    if (!type)
        type = "";
    if (strlen(kind) >= KIND_MAX)
        kind = "_long"; /* a kind name is a label value, never this long in practice */
    event_counter_t *_Atomic *head = &event_heads[hash2(kind, type) % NEVENT_BUCKETS];
    event_counter_t *e = find_event(atomic_load_explicit(head, memory_order_acquire), kind, type);
    if (!e) {
        pthread_mutex_lock(&events_lock);
        e = find_event(atomic_load_explicit(head, memory_order_acquire), kind, type); /* added meanwhile? */
        uint32_t n = atomic_load_explicit(&nevents, memory_order_relaxed);
        if (!e && n < NEVENTS) {
            e = &events[n];
            snprintf(e->kind, sizeof e->kind, "%s", kind);
            snprintf(e->type, sizeof e->type, "%s", type);
            atomic_store_explicit(&e->count, 0, memory_order_relaxed);
            atomic_store_explicit(&e->next, atomic_load_explicit(head, memory_order_relaxed), memory_order_relaxed);
            atomic_store_explicit(head, e, memory_order_release);
            atomic_store_explicit(&nevents, n + 1, memory_order_release);
        }
        pthread_mutex_unlock(&events_lock);
        if (!e) {
            /* The pool is used up (4096 kind/type pairs): said once, the rest are not counted. */
            static _Atomic bool warned;
            if (!atomic_exchange(&warned, true))
                crw_warn("metrics: more than %d kind/type pairs; crwatch_events_total leaves the rest out", NEVENTS);
            return;
        }
    }
    atomic_fetch_add_explicit(&e->count, 1, memory_order_relaxed);
}

/* A label value: backslash, double quote and newline escaped. */
static void label_value(crw_buf_t *out, const char *s) {
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            crw_buf_putc(out, '\\');
        if (*s == '\n') {
            crw_buf_puts(out, "\\n");
            continue;
        }
        crw_buf_putc(out, *s);
    }
}

static void header(crw_buf_t *out, const char *name, const char *type, const char *help) {
    crw_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void number(crw_buf_t *out, int64_t v, double scale) {
    if (scale == 1)
        crw_buf_printf(out, "%lld\n", (long long)v);
    else
        crw_buf_printf(out, "%.6f\n", (double)v / scale);
}

static void render_hist(crw_buf_t *out, crw_hist_t h) {
    const hist_def_t *d = &hist_defs[h];
    header(out, d->name, "histogram", d->help);
    uint64_t cum = 0;
    for (size_t i = 0;; i++) {
        cum += atomic_load_explicit(&hists[h].buckets[i], memory_order_relaxed);
        if (!d->bounds[i]) {
            crw_buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", d->name, (unsigned long long)cum);
            break;
        }
        crw_buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", d->name, (double)d->bounds[i] / 1e6,
                       (unsigned long long)cum);
    }
    crw_buf_printf(out, "%s_sum %.6f\n", d->name,
                   (double)atomic_load_explicit(&hists[h].sum_us, memory_order_relaxed) / 1e6);
    /* _count is the +Inf bucket: the same reads, so the two always agree */
    crw_buf_printf(out, "%s_count %llu\n", d->name, (unsigned long long)cum);
}

void crw_metrics_render(crw_buf_t *out) {
    for (int m = 0; m < CRW_M_N; m++) {
        const scalar_def_t *d = &scalar_defs[m];
        header(out, d->name, d->type, d->help);
        crw_buf_printf(out, "%s ", d->name);
        number(out, crw_metric_get((crw_metric_t)m), d->scale);
    }

    header(out, "crwatch_events_total", "counter", "Events handed to the sinks, by kind and type");
    uint32_t n = atomic_load_explicit(&nevents, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++) {
        const event_counter_t *e = &events[i];
        crw_buf_puts(out, "crwatch_events_total{kind=\"");
        label_value(out, e->kind);
        crw_buf_puts(out, "\",type=\"");
        label_value(out, e->type);
        crw_buf_printf(out, "\"} %llu\n", (unsigned long long)atomic_load_explicit(&e->count, memory_order_relaxed));
    }

    render_hist(out, CRW_H_COMMIT_TO_ACK);

    header(out, "crwatch_slot_wal_status", "gauge",
           "The replication slot's wal_status: 1 for the current one (reserved, extended, unreserved, lost)");
    int code = atomic_load_explicit(&wal_status_code, memory_order_relaxed);
    for (int i = 0; i < 4; i++)
        crw_buf_printf(out, "crwatch_slot_wal_status{status=\"%s\"} %d\n", wal_statuses[i], code == i + 1);

    for (int h = 0; h < CRW_H_N; h++)
        if (h != CRW_H_COMMIT_TO_ACK) /* rendered above, where it always was */
            render_hist(out, (crw_hist_t)h);
}

static _Atomic int64_t last_beat_ms;
static _Atomic int ready;

void crw_health_beat(void) { atomic_store_explicit(&last_beat_ms, crw_clock_mono_ms(), memory_order_relaxed); }
int64_t crw_health_age_ms(void) {
    int64_t b = atomic_load_explicit(&last_beat_ms, memory_order_relaxed);
    return b ? crw_clock_mono_ms() - b : 0;
}
void crw_health_set_ready(int r) {
    atomic_store_explicit(&ready, r, memory_order_relaxed);
    crw_metric_set(CRW_M_ACTIVE, r != 0);
}
int crw_health_ready(void) { return atomic_load_explicit(&ready, memory_order_relaxed); }

void crw_metrics_reset(void) {
    for (int m = 0; m < CRW_M_N; m++)
        atomic_store(&scalars[m], 0);
    for (int h = 0; h < CRW_H_N; h++) {
        for (size_t i = 0; i <= HIST_MAX_BUCKETS; i++)
            atomic_store(&hists[h].buckets[i], 0);
        atomic_store(&hists[h].sum_us, 0);
    }
    atomic_store(&wal_status_code, 0);
    atomic_store(&last_beat_ms, 0);
    atomic_store(&ready, 0);
    pthread_mutex_lock(&events_lock);
    for (int i = 0; i < NEVENT_BUCKETS; i++)
        atomic_store(&event_heads[i], NULL);
    atomic_store(&nevents, 0);
    pthread_mutex_unlock(&events_lock);
}
