/*
 * kafka_view.c — what the Kafka sink holds, read back for crwatch resync
 * (see kafka.h): each topic from its beginning until every partition reports
 * its end (librdkafka's partition EOF, which read_committed places at the
 * last stable offset), values as lines.  Tombstones (null values) are left
 * out; they only follow Debezium deletes.
 */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "sink/kafka.h"
#include "sink/kafka_int.h"

#define VIEW_TIMEOUT_MS 60000 /* a topic whose partitions do not all reach their end by then: an error */

static void quiet(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk;
    if (level <= 3)
        crw_debug("kafka (resync reader): %s: %s", fac, buf);
}

/* Reads one topic to its end into out. */
static int dump_one(rd_kafka_t *c, const char *topic, FILE *out, long *messages, char *errstr, size_t n) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(c, topic, NULL);
    const rd_kafka_metadata_t *md = NULL;
    int64_t deadline = crw_clock_mono_ms() + VIEW_TIMEOUT_MS;
    rd_kafka_resp_err_t err;
    while ((err = rd_kafka_metadata(c, 0, rkt, &md, 5000)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (crw_clock_mono_ms() >= deadline) {
            snprintf(errstr, n, "resync.from=kafka: no metadata of topic %s: %s", topic, rd_kafka_err2str(err));
            rd_kafka_topic_destroy(rkt);
            return CRW_ERR_SINK;
        }
    }
    int parts = md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR ? md->topics[0].partition_cnt : 0;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    if (parts == 0) {
        crw_info("resync: topic %s does not exist: it holds nothing", topic);
        return 0;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(c, l);
    rd_kafka_topic_partition_list_destroy(l);
    char *at_end = calloc((size_t)parts, 1);
    int ended = 0, rc = 0;
    long before = *messages;
    while (ended < parts) {
        if (crw_clock_mono_ms() >= deadline) {
            snprintf(errstr, n, "resync.from=kafka: topic %s: %d of %d partitions reached their end in %d s", topic,
                     ended, parts, VIEW_TIMEOUT_MS / 1000);
            rc = CRW_ERR_SINK;
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (m->partition >= 0 && m->partition < parts && !at_end[m->partition]) {
                at_end[m->partition] = 1;
                ended++;
            }
        } else if (m->err) {
            crw_warn("resync: reading %s: %s", topic, rd_kafka_message_errstr(m));
        } else if (m->payload && m->len) {
            if (m->partition >= 0 && m->partition < parts && at_end[m->partition]) { /* more came: not at its end */
                at_end[m->partition] = 0;
                ended--;
            }
            fwrite(m->payload, 1, m->len, out);
            fputc('\n', out);
            (*messages)++;
        }
        rd_kafka_message_destroy(m);
    }
    free(at_end);
    rd_kafka_assign(c, NULL);
    crw_info("resync: read %ld events of topic %s (%d partitions)", *messages - before, topic, parts);
    return rc;
}

rd_kafka_t *kafka_reader_new(const crw_config_t *conf, const char *bootstrap, const char *group, const char *client_id,
                             void (*log_cb)(const rd_kafka_t *, int, const char *, const char *), char *errstr,
                             size_t n) {
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    char e[512];
    for (int i = 0; i < conf->nkafka; i++) /* producer-only settings do not apply to a consumer */
        if (rd_kafka_conf_set(kc, conf->kafka[i].key, conf->kafka[i].value, e, sizeof e) != RD_KAFKA_CONF_OK)
            crw_debug("kafka: %s: kafka.%s not applied", client_id, conf->kafka[i].key);
    const char *fixed[][2] = {{"bootstrap.servers", bootstrap},  {"group.id", group},
                              {"isolation.level", "read_committed"}, {"enable.partition.eof", "true"},
                              {"enable.auto.commit", "false"},       {"enable.auto.offset.store", "false"},
                              {"auto.offset.reset", "earliest"},     {"client.id", client_id}};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (fixed[i][1])
            rd_kafka_conf_set(kc, fixed[i][0], fixed[i][1], e, sizeof e);
    rd_kafka_conf_set_log_cb(kc, log_cb);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, n);
    if (!c)
        rd_kafka_conf_destroy(kc);
    return c;
}

int crw_kafka_dump_topics(const crw_config_t *conf, const crw_strlist_t *topics, FILE *out, long *messages,
                          char *errstr, size_t n) {
    *messages = 0;
    const char *bs = NULL;
    for (int i = 0; i < conf->nkafka; i++)
        if (!strcmp(conf->kafka[i].key, "bootstrap.servers"))
            bs = conf->kafka[i].value;
    if (!bs || !*bs) {
        snprintf(errstr, n, "resync.from=kafka needs kafka.bootstrap.servers");
        return CRW_ERR_CONFIG;
    }
    if (!strcmp(bs, "embedded")) {
        snprintf(errstr, n, "resync.from=kafka: the embedded broker lives only inside one crwatch process; there is "
                            "nothing to read back");
        return CRW_ERR_CONFIG;
    }
    if (conf->cloudevents_mode != 0) {
        snprintf(errstr, n, "resync.from=kafka reads structured events: cloudevents.mode=binary is not supported");
        return CRW_ERR_CONFIG;
    }
    char group[300], e[512];
    snprintf(group, sizeof group, "crwatch-resync.%s", conf->slot_name);
    rd_kafka_t *c = kafka_reader_new(conf, NULL, group, "crwatch-resync", quiet, e, sizeof e);
    if (!c) {
        snprintf(errstr, n, "resync.from=kafka: %s", e);
        return CRW_ERR_CONFIG;
    }
    int rc = 0;
    for (int i = 0; rc == 0 && i < topics->n; i++)
        rc = dump_one(c, topics->v[i], out, messages, errstr, n);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    if (rc == 0 && fflush(out) != 0) {
        snprintf(errstr, n, "resync.from=kafka: cannot write the view: %s", strerror(errno));
        rc = CRW_ERR_IO;
    }
    return rc;
}
