/*
 * kafka.h — the Kafka sink (docs/kafka.md): a librdkafka producer whose
 * delivery reports drive the pipeline's acknowledgements.
 *
 * at-least-once (default): idempotent producer, infinite retries; one
 *   pipeline hold per message, released by its delivery report.  A message
 *   the broker refuses for good (too large, topic not authorized) goes to the
 *   dead-letter file and topic, then is released; anything else fatal stops
 *   the stream with nothing confirmed past it.
 * exactly-once: transactional producer; a Kafka transaction spans one or more
 *   source transactions plus a checkpoint record (slot -> commit position)
 *   and holds are released only once it committed.  resume_position() reads
 *   the last committed checkpoint so the driver skips what Kafka already has.
 *
 * `kafka.bootstrap.servers=embedded` runs librdkafka's mock cluster inside
 * the process (a quick trial; its data is gone when crwatch exits).
 * The sink is crw_sink_kafka_new, listed in sinks.c; its files are named in
 * kafka_int.h.  What this header adds is testable without a broker.
 */
#ifndef CRW_SINK_KAFKA_H
#define CRW_SINK_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/buf.h"
#include "core/conf.h"

/* topic.template: @returns 0, or -1 with errstr naming the bad placeholder or character. */
int crw_kafka_template_check(const char *tmpl, char *errstr, size_t errstr_size);

/*
 * Expands {schema}, {table} and {kind} of tmpl into out (reset first).
 * Substituted bytes outside Kafka's topic alphabet [A-Za-z0-9._-] become '_'
 * so a table name can never make an invalid topic name.
 */
void crw_kafka_topic_expand(crw_buf_t *out, const char *tmpl, const char *schema, const char *table,
                            const char *kind);

/*
 * The Kafka header name of CloudEvents attribute name[0..len) in binary
 * content mode (the CloudEvents Kafka binding): "ce_<name>", except
 * datacontenttype, which is "content-type".  Written into out (n bytes).
 */
void crw_kafka_ce_header_name(char *out, size_t n, const char *name, size_t len);

/*
 * When the stream goes idle (sink.h, idle) the sink sends what linger holds
 * and, exactly-once, commits its Kafka transaction, unless batches are
 * forming: more than CRW_KAFKA_IDLE_BATCH_EVENTS events within
 * CRW_KAFKA_IDLE_BATCH_WINDOW_MS since it last idled (a bulk load idles
 * between its transactions, a stream catching up between its reads).
 * events and elapsed_us: since the stream last idled.
 */
#define CRW_KAFKA_IDLE_BATCH_EVENTS 16
#define CRW_KAFKA_IDLE_BATCH_WINDOW_MS 50
bool crw_kafka_batch_forming(uint64_t events, int64_t elapsed_us);

/*
 * crwatch resync's view of the Kafka sink (kafka_view.c): every topic of
 * topics read with a read_committed consumer (conf's kafka.<prop> keys) from
 * its beginning to its end as of now, each message's value written to out as
 * one line.  A topic that does not exist holds nothing.  *messages counts the
 * lines.  @returns 0, or CRW_ERR_CONFIG / CRW_ERR_SINK with errstr.
 */
int crw_kafka_dump_topics(const crw_config_t *conf, const crw_strlist_t *topics, FILE *out, long *messages,
                          char *errstr, size_t errstr_size);

#endif
