/*
 * sink.h — where events go: an ops table per sink kind, and a fan-out set.
 *
 * Acknowledgement contract (design.md §7): a sink that acknowledges
 * asynchronously holds pipeline deliveries for an event in emit() (with
 * crw_pipeline_hold on ev->txn) and releases them, on the main thread, in
 * poll() or drain() once the event is durable (or dead-lettered).  A
 * synchronous sink makes its events durable in commit().  The driver calls
 * every sink's commit() before it closes the transaction in the pipeline,
 * so no transaction is confirmed before every sink has it.
 *
 * Threads: every op is called on the main thread.  A sink with threads of
 * its own (librdkafka, handler workers) hands acknowledgements back to the
 * main thread and applies them in poll().
 *
 * A sink that loses events it held (an aborted Kafka transaction) calls
 * crw_pipeline_abandon on their transaction and returns CRW_ERR_CONN: the
 * driver reconnects and the server sends everything unconfirmed again.
 *
 * Stopping: env->stop turns true on a stop request; a sink waiting inside
 * emit() returns CRW_ERR_STOPPED (what it held stays unconfirmed).
 *
 * Backpressure: a sink that cannot take more (a full producer queue) waits
 * inside emit(), calling env->keepalive(env->keepalive_opaque) at least
 * every second so the replication connection stays alive while nothing is
 * read from it.
 */
#ifndef CRW_SINK_H
#define CRW_SINK_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "core/conf.h"
#include "core/deadletter.h"
#include "core/pipeline.h"

struct crw_relation;

typedef struct crw_event {
    uint64_t txn;                    /* pipeline sequence of the source transaction */
    uint64_t commit_lsn;             /* the source transaction's commit LSN */
    uint32_t ordinal;                /* position of the change in its transaction (1-based) */
    const char *type;                /* "ADDED", "MODIFIED", "DELETED", "TRUNCATED", "SYNC" */
    const char *key;                 /* resource key (may be empty, e.g. TRUNCATED) */
    size_t keylen;
    const char *value;               /* the encoded event; NULL: a tombstone (Debezium, after a delete) */
    size_t len;
    const struct crw_relation *rel;  /* schema, table (topic templates) */
    const char *kind;                /* the event's kind (in a shared table, the row's own) */
} crw_event_t;

/* What every sink is given: shared services of the stream. */
typedef struct crw_sink_env {
    const crw_config_t *conf;
    crw_pipeline_t *pipeline;
    crw_deadletter_t *deadletter;
    void (*keepalive)(void *opaque); /* keep the source alive while blocked; may be NULL */
    void *keepalive_opaque;
    volatile sig_atomic_t *stop;     /* set when a stop was asked: a blocked emit() returns CRW_ERR_STOPPED */
} crw_sink_env_t;

typedef struct crw_sink crw_sink_t;

typedef struct crw_sink_ops {
    const char *name;
    /* Takes one event (copied as needed); returns 0 or a negative crw_err_t. */
    int (*emit)(crw_sink_t *s, const crw_event_t *ev);
    /* Source transaction txn is complete: make its events durable or in flight. */
    int (*commit)(crw_sink_t *s, uint64_t txn);
    /* Serves delivery callbacks for up to timeout_ms; may be NULL. */
    int (*poll)(crw_sink_t *s, int timeout_ms);
    /* Stopping: waits up to timeout_ms for what is in flight; may be NULL. */
    int (*drain)(crw_sink_t *s, int timeout_ms);
    /* Exactly-once: *lsn = the commit LSN already durable in the sink (changes at
     * or below it are skipped on start); may be NULL (0: skip nothing). */
    int (*resume_lsn)(crw_sink_t *s, uint64_t *lsn);
    void (*destroy)(crw_sink_t *s);
} crw_sink_ops_t;

struct crw_sink {
    const crw_sink_ops_t *ops;
    const crw_sink_env_t *env;
};

/* A stdout sink: one event per line, flushed per transaction. */
crw_sink_t *crw_sink_stdout_new(const crw_sink_env_t *env, int fd, char *errstr, size_t errstr_size);

typedef struct crw_sinks {
    crw_sink_t *v[5]; /* stdout, kafka, exec, plugin, and one embedded */
    int n;
} crw_sinks_t;

/* Opens the sinks env->conf->sinks names; returns 0 or a negative crw_err_t with errstr. */
int crw_sinks_open(crw_sinks_t *ss, const crw_sink_env_t *env, char *errstr, size_t errstr_size);
int crw_sinks_emit(crw_sinks_t *ss, const crw_event_t *ev);
int crw_sinks_commit(crw_sinks_t *ss, uint64_t txn);
int crw_sinks_poll(crw_sinks_t *ss, int timeout_ms);
int crw_sinks_drain(crw_sinks_t *ss, int timeout_ms);
/* The highest resume LSN any sink reports (0 when none does). */
int crw_sinks_resume_lsn(crw_sinks_t *ss, uint64_t *lsn);
void crw_sinks_close(crw_sinks_t *ss);

#endif
