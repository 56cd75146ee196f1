/*
 * sink.h — the sink interface: where events go.  One ops table per sink
 * kind; sinks.h opens the configured ones and fans events out to them.
 * Adding a sink is one file behind this interface and one line in the
 * registry of sinks.c (docs/architecture.md, "Adding a sink").
 *
 * Acknowledgement contract (docs/architecture.md, "The ack rule"): a sink
 * that acknowledges asynchronously holds pipeline deliveries for an event
 * in emit() (crw_pipeline_hold on ev->txn) and releases them, on the main
 * thread, in poll() or drain() once the event is durable (or dead-lettered).
 * A synchronous sink makes its events durable in commit().  The driver
 * calls every sink's commit() before it closes the transaction in the
 * pipeline, so no transaction is confirmed before every sink has it.
 *
 * Events (core/event.h) arrive rendered: a sink hands the bytes on and
 * takes everything else it needs (key, topic parts, ids, the object's span)
 * from the event's fields; it never parses the value.
 *
 * Threads: every op is called on the main thread.  A sink with threads of
 * its own (librdkafka, handler workers) hands acknowledgements back to the
 * main thread and applies them in poll().
 *
 * A sink that loses events it held (an aborted Kafka transaction) calls
 * crw_pipeline_abandon on their transaction and returns CRW_ERR_CONN: the
 * driver reconnects and the source sends everything unconfirmed again.
 *
 * Stopping: env->stop turns true on a stop request; a sink waiting inside
 * emit() returns CRW_ERR_STOPPED (what it held stays unconfirmed).
 *
 * Backpressure: a sink that cannot take more (a full producer queue) waits
 * inside emit(), calling env->keepalive(env->keepalive_opaque) at least
 * every second so the source's connection stays alive while nothing is
 * read from it.
 *
 * Idle: when the source has delivered everything it had read, with no
 * transaction open, after at least one commit() since the last time, the
 * driver calls idle(): the stream has caught up, and nothing more is coming
 * right now.  A sink that holds events back to batch them (a producer's
 * linger, an open Kafka transaction) sends them then instead of waiting for
 * its timer, which stays the bound while the stream is busy.  It may wait
 * (a flush, a Kafka commit: a round trip or a few to the broker); the
 * source is not read meanwhile.  A stream that idles often is not
 * necessarily a quiet one (a bulk load idles between its transactions): a
 * sink tells the two apart itself (the Kafka sink: kafka.h).
 */
#ifndef CRW_SINK_H
#define CRW_SINK_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "core/conf.h"
#include "core/deadletter.h"
#include "core/event.h"
#include "core/pipeline.h"

/* What every sink is given: shared services of the stream. */
typedef struct crw_sink_env {
    const crw_config_t *conf;
    crw_pipeline_t *pipeline;
    crw_deadletter_t *deadletter;
    void (*keepalive)(void *opaque); /* keep the source alive while blocked; may be NULL */
    void *keepalive_opaque;
    volatile sig_atomic_t *stop;     /* set when a stop was asked: a blocked emit() returns CRW_ERR_STOPPED */
    /* What a sink's own checkpoint is kept under (exactly-once: the checkpoint record's key and the
     * transactional.id): slot.name for the stream; NULL is slot.name.  A backfill has its own. */
    const char *checkpoint_id;
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
    /* The stream is idle (see above): send what is held back for batching; may be NULL. */
    int (*idle)(crw_sink_t *s);
    /* Exactly-once: *position = the commit position already durable in the sink
     * (changes at or below it are skipped on start); may be NULL (0: skip nothing). */
    int (*resume_position)(crw_sink_t *s, uint64_t *position);
    void (*destroy)(crw_sink_t *s);
} crw_sink_ops_t;

struct crw_sink {
    const crw_sink_ops_t *ops;
    const crw_sink_env_t *env;
};

/*
 * A sink constructor: reads its settings from env->conf.
 * @returns the sink, or NULL with *err (CRW_ERR_CONFIG for a bad setting,
 *          exit 2; CRW_ERR_SINK otherwise) and errstr.
 */
typedef crw_sink_t *(*crw_sink_new_fn)(const crw_sink_env_t *env, int *err, char *errstr, size_t errstr_size);

#define CRW_SINK_CONSTRUCTOR(fn) crw_sink_t *fn(const crw_sink_env_t *env, int *err, char *errstr, size_t errstr_size)

#endif
