/*
 * metrics.h — the process's metrics (docs/operations.md, "Metrics"): one
 * set per process, bumped by any stage with a relaxed atomic operation (no
 * lock and no allocation on the hot path), rendered in the Prometheus text
 * exposition format by the operations endpoint (app/ops.c).
 *
 * Thread-safety: every function may be called from any thread.
 */
#ifndef CRW_METRICS_H
#define CRW_METRICS_H

#include <stdint.h>

#include "core/buf.h"

/* The scalar metrics: counters only grow; gauges are set. */
typedef enum {
    CRW_M_SOURCE_POSITION,       /* gauge: the highest position the source read (an LSN, or a poll batch) */
    CRW_M_CONFIRMED_POSITION,    /* gauge: what every sink acknowledged, as confirmed to the source */
    CRW_M_SLOT_RETAINED_WAL,     /* gauge: bytes of WAL the slot holds (pg_current_wal_lsn() - restart_lsn) */
    CRW_M_SLOT_SAFE_WAL,         /* gauge: bytes before max_slot_wal_keep_size invalidates the slot; -1: no limit */
    CRW_M_QUEUE_EVENTS,          /* gauge: deliveries handed to sinks, not acknowledged yet */
    CRW_M_ACTIVE,                /* gauge: 1 on the instance that streams */
    CRW_M_SOURCE_LAG_US,         /* gauge: now - the commit time of the last heartbeat streamed back (us) */
    CRW_M_TRANSACTIONS,          /* counter: source transactions committed to the sinks */
    CRW_M_RETRIES,               /* counter: deliveries a sink tried again */
    CRW_M_DEADLETTER,            /* counter: records written to the dead-letter file */
    CRW_M_RECONNECTS,            /* counter: source connections rebuilt */
    CRW_M_HEARTBEATS,            /* counter: heartbeats written through the slot */
    CRW_M_STALLS,                /* counter: heartbeats not back in time with the server silent */
    CRW_M_N
} crw_metric_t;

void crw_metric_add(crw_metric_t m, uint64_t n);
void crw_metric_set(crw_metric_t m, int64_t v);
int64_t crw_metric_get(crw_metric_t m);

/* One more event of kind (as the sinks got it) and type (ADDED, ..., SYNC). */
void crw_metric_event(const char *kind, const char *type);

/* A transaction acknowledged by every sink us microseconds after its commit. */
void crw_metric_commit_to_ack(int64_t us);

/* The histograms (docs/operations.md, "Metrics and health"), each with its own buckets. */
typedef enum {
    CRW_H_COMMIT_TO_ACK,    /* crwatch_commit_to_ack_seconds: a transaction's commit -> every sink's ack */
    CRW_H_KAFKA_DELIVERY,   /* crwatch_kafka_delivery_seconds: produce() -> the message's delivery report
                             * (the producer's queue and linger, the broker's acknowledgement) */
    CRW_H_KAFKA_TXN_COMMIT, /* crwatch_kafka_transaction_commit_seconds: exactly-once, one Kafka commit
                             * (flushing what is queued, then EndTxn) */
    CRW_H_N
} crw_hist_t;

/* One observation of us microseconds (negative: counted as 0) in histogram h. */
void crw_metric_observe(crw_hist_t h, int64_t us);

/* The slot's wal_status ("reserved", "extended", "unreserved", "lost"; NULL or "": unknown). */
void crw_metric_wal_status(const char *status);

/* Appends every metric, in the Prometheus text format (version 0.0.4), to out. */
void crw_metrics_render(crw_buf_t *out);

/*
 * Health (the operations endpoint's /healthz and /readyz): the main loop
 * beats each time round; the instance is ready while it streams the slot,
 * connected, as the active one.
 */
void crw_health_beat(void);
/* Milliseconds since the main loop last beat (0 before the first beat). */
int64_t crw_health_age_ms(void);
void crw_health_set_ready(int ready);
int crw_health_ready(void);

/* Forgets every value (tests). */
void crw_metrics_reset(void);

#endif
