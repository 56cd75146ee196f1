/*
 * kafka.h — the Kafka sink (design.md §3, §4, §7): a librdkafka producer
 * whose delivery reports drive the pipeline's acknowledgements.
 *
 * at-least-once (default): idempotent producer, infinite retries; one
 *   pipeline hold per message, released by its delivery report.  A message
 *   the broker refuses for good (too large, topic not authorized) goes to the
 *   dead-letter file and topic, then is released; anything else fatal stops
 *   the stream with nothing confirmed past it.
 * exactly-once: transactional producer; a Kafka transaction spans one or more
 *   PostgreSQL transactions plus a checkpoint record (slot -> commit LSN) and
 *   holds are released only once it committed.  resume_lsn() reads the last
 *   committed checkpoint so the driver skips what Kafka already has.
 *
 * `kafka.bootstrap.servers=embedded` runs librdkafka's mock cluster inside
 * the process (a quick trial; its data is gone when crwatch exits).
 *
 * Threads: every function here runs on the main thread; librdkafka's own
 * threads only queue delivery reports, applied in rd_kafka_poll().
 */
#ifndef CRW_SINK_KAFKA_H
#define CRW_SINK_KAFKA_H

#include <stddef.h>

#include "core/buf.h"
#include "sink/sink.h"

/*
 * Creates the Kafka sink from env->conf (kafka.<prop>, topic.template,
 * delivery, deadletter.topic, checkpoint.topic, transaction.interval.ms,
 * cloudevents.mode).  Connects nothing synchronously.
 * @returns the sink, or NULL with *err = CRW_ERR_CONFIG (a bad key or value,
 *          named in errstr: exit 2) or CRW_ERR_SINK.  errstr never holds a
 *          secret value (passwords, keys).
 * @locality main thread
 */
crw_sink_t *crw_sink_kafka_new(const crw_sink_env_t *env, int *err, char *errstr, size_t errstr_size);

/* topic.template: @returns 0, or -1 with errstr naming the bad placeholder or character. */
int crw_kafka_template_check(const char *tmpl, char *errstr, size_t errstr_size);

/*
 * Expands {schema}, {table} and {kind} of tmpl into out (reset first).
 * Substituted bytes outside Kafka's topic alphabet [A-Za-z0-9._-] become '_'
 * so a table name can never make an invalid topic name.
 */
void crw_kafka_topic_expand(crw_buf_t *out, const char *tmpl, const char *schema, const char *table,
                            const char *kind);

/* Called once per top-level attribute: value is unescaped for JSON strings, the raw JSON text otherwise. */
typedef void (*crw_kafka_ce_attr_fn)(void *opaque, const char *name, size_t namelen, const char *value,
                                     size_t len);

/*
 * Splits a structured CloudEvents JSON object for binary content mode: fn
 * gets every attribute but "data" (string values unescaped into scratch,
 * valid during the call), and *data and *datalen the raw JSON text of "data"
 * (NULL/0 when absent).
 * @returns 0, or -1 when json is not a well-formed object.
 */
int crw_kafka_ce_split(const char *json, size_t len, crw_buf_t *scratch, crw_kafka_ce_attr_fn fn, void *opaque,
                       const char **data, size_t *datalen);

#endif
