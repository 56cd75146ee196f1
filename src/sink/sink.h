/*
 * sink.h — where events go: an ops table per sink kind, and a fan-out set.
 *
 * Acknowledgement contract (design.md §7): a sink that acknowledges
 * asynchronously holds pipeline deliveries for an event in emit() and
 * releases them when the event is durable; a synchronous sink makes its
 * events durable in commit().  The driver calls every sink's commit()
 * before it closes the transaction in the pipeline, so no transaction is
 * confirmed before every sink has it.
 */
#ifndef CRW_SINK_H
#define CRW_SINK_H

#include <stddef.h>
#include <stdint.h>

#include "core/conf.h"
#include "core/pipeline.h"

struct crw_relation;

typedef struct crw_event {
    uint64_t txn;                    /* pipeline sequence of the source transaction */
    const char *key;                 /* resource key (may be empty, e.g. TRUNCATED) */
    size_t keylen;
    const char *value;               /* the encoded event */
    size_t len;
    const struct crw_relation *rel;  /* schema, table, kind (topic templates) */
} crw_event_t;

typedef struct crw_sink crw_sink_t;

typedef struct crw_sink_ops {
    const char *name;
    /* Takes one event (copied as needed); returns 0 or a negative crw_err_t. */
    int (*emit)(crw_sink_t *s, const crw_event_t *ev);
    /* Source transaction txn is complete: make its events durable or in flight. */
    int (*commit)(crw_sink_t *s, uint64_t txn);
    /* Serves delivery callbacks for up to timeout_ms; may be NULL. */
    int (*poll)(crw_sink_t *s, int timeout_ms);
    void (*destroy)(crw_sink_t *s);
} crw_sink_ops_t;

struct crw_sink {
    const crw_sink_ops_t *ops;
    crw_pipeline_t *pipeline;
};

/* A stdout sink: one event per line, flushed per transaction. */
crw_sink_t *crw_sink_stdout_new(crw_pipeline_t *p, int fd, char *errstr, size_t errstr_size);

typedef struct crw_sinks {
    crw_sink_t *v[4];
    int n;
} crw_sinks_t;

/* Opens the sinks conf->sinks names; returns 0 or a negative crw_err_t with errstr. */
int crw_sinks_open(crw_sinks_t *ss, const crw_config_t *conf, crw_pipeline_t *p, char *errstr, size_t errstr_size);
int crw_sinks_emit(crw_sinks_t *ss, const crw_event_t *ev);
int crw_sinks_commit(crw_sinks_t *ss, uint64_t txn);
int crw_sinks_poll(crw_sinks_t *ss, int timeout_ms);
void crw_sinks_close(crw_sinks_t *ss);

#endif
