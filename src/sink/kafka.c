/*
 * kafka.c — the Kafka sink: its ops, delivery reports and the
 * acknowledgements they drive, dead letters, the embedded mock broker, and
 * the producer's creation (see kafka.h; producing is in kafka_producer.c,
 * topics in kafka_topic.c, exactly-once in kafka_eos.c).
 *
 * Every message carries, in librdkafka's msg_opaque, the identity of the
 * change it came from (kmsg_t: pipeline transaction, position, ordinal,
 * xid, source), taken from a free list and given back by its delivery
 * report: that is what releases the pipeline hold, and what a dead-letter
 * record names, without ever parsing the message.
 *
 * Order: the producer is idempotent (librdkafka caps max.in.flight at 5 and
 * retries without reordering), the key is the resource key and the
 * partitioner murmur2_random, so each key's changes reach one partition in
 * commit order, also across a broker outage.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "core/metrics.h"
#include "sink/kafka_int.h"

/* Errors that concern one message (or its topic), not the producer: the
 * message is dead-lettered and the stream goes on. */
static bool per_message_error(rd_kafka_resp_err_t err) {
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
    case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
        return true;
    default:
        return false;
    }
}

/*
 * Dead-letters one message of change id: a durable record in the dead-letter
 * file first (so it may be confirmed), then a copy to deadletter.topic with
 * the error in headers.  The copy holds id->seq until delivered
 * (at-least-once) or rides in the open transaction (exactly-once).  A value
 * the producer itself refused as too large (DL_LOCAL_TOO_BIG) cannot go to
 * the topic either: that copy carries the headers and no value, and the file
 * has it whole.  flags: DL_*.
 * @returns 0, or CRW_ERR_IO when the file cannot be written (stop: nothing may be lost).
 */
static int dead_letter(kafka_sink_t *s, const kmsg_t *id, const char *topic, const char *key, size_t keylen,
                       const char *value, size_t len, const rd_kafka_headers_t *orig_hdrs, rd_kafka_resp_err_t err,
                       unsigned flags) {
    char reason[512], pglsn[CRW_LSN_BUFSIZE];
    snprintf(reason, sizeof reason, "kafka: %s (%s) producing to topic %s", rd_kafka_err2str(err),
             rd_kafka_err2name(err), topic);
    crw_lsn_format(pglsn, id->lsn);
    crw_deadletter_rec_t rec = {reason, id->source, id->lsn ? pglsn : NULL, id->xid, id->ordinal, value,
                                value ? len : 0};
    crw_warn("kafka: a %zu-byte event for topic %s was refused (%s): dead-lettered", value ? len : 0, topic,
             rd_kafka_err2name(err));
    if (!(flags & DL_FILED)) {
        if (crw_deadletter_write(s->base.env->deadletter, &rec) < 0) {
            kafka_set_fatal(s, "cannot write the dead-letter file %s%s", s->conf->deadletter_file, "");
            return CRW_ERR_IO;
        }
        s->deadlettered++;
    }
    if (!*s->conf->deadletter_topic || (flags & DL_TOPIC_REFUSED))
        return 0;
    /* Made on first use: a topic handle asks for metadata, and a broker that
     * auto-creates topics would make the dead-letter topic before it is needed. */
    if (!s->dl_rkt)
        s->dl_rkt = rd_kafka_topic_new(s->rk, s->conf->deadletter_topic, NULL);
    rd_kafka_headers_t *h = orig_hdrs ? rd_kafka_headers_copy(orig_hdrs) : rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "crwatch_error", -1, rd_kafka_err2str(err), -1);
    rd_kafka_header_add(h, "crwatch_error_code", -1, rd_kafka_err2name(err), -1);
    rd_kafka_header_add(h, "crwatch_topic", -1, topic, -1);
    bool too_big = (flags & DL_LOCAL_TOO_BIG) && err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
    if (too_big) {
        char sz[32];
        snprintf(sz, sizeof sz, "%zu", len);
        rd_kafka_header_add(h, "crwatch_value_bytes", -1, sz, -1);
    }
    if (s->eos)
        s->nmsgs++;
    else
        crw_pipeline_hold(s->pipeline, id->seq, 1);
    rd_kafka_resp_err_t e = kafka_produce(s, s->dl_rkt, RD_KAFKA_PARTITION_UA, key, keylen, too_big ? NULL : value,
                                          too_big ? 0 : len, h, kafka_kmsg_new(s, KMSG_DEADLETTER, id));
    if (e) {
        rd_kafka_headers_destroy(h);
        if (!s->eos)
            crw_pipeline_release(s->pipeline, id->seq, 1);
        crw_error("kafka: the dead-letter topic %s refused it too (%s); the dead-letter file has it",
                  s->conf->deadletter_topic, rd_kafka_err2name(e));
    }
    return 0;
}

/* Applies what delivery reports queued: re-sends and dead-letters (main thread, outside callbacks). */
static void process_failed(kafka_sink_t *s) {
    if (s->in_failed || s->nfailed == 0)
        return;
    s->in_failed = true;
    for (int i = 0; i < s->nfailed; i++) {
        failed_t *f = &s->failed[i];
        if (f->retry && !s->fatal) {
            rd_kafka_topic_t *rkt = rd_kafka_topic_new(s->rk, f->topic, NULL);
            rd_kafka_resp_err_t e = kafka_produce(s, rkt, RD_KAFKA_PARTITION_UA, f->key, f->keylen, f->value, f->len,
                                                  f->hdrs, kafka_kmsg_new(s, KMSG_EVENT, &f->id));
            rd_kafka_topic_destroy(rkt);
            if (!e)
                f->hdrs = NULL; /* consumed */
            else
                kafka_set_fatal(s, "cannot send a timed-out message again: %s%s", rd_kafka_err2str(e), "");
        } else if (!s->fatal) {
            if (dead_letter(s, &f->id, f->topic, f->key, f->keylen, f->value, f->len, f->hdrs, f->err, 0) == 0)
                crw_pipeline_release(s->pipeline, f->id.seq, 1);
        }
        if (f->hdrs)
            rd_kafka_headers_destroy(f->hdrs);
        free(f->topic);
        free(f->key);
        free(f->value);
    }
    s->nfailed = 0;
    s->in_failed = false;
}

static void queue_failed(kafka_sink_t *s, const rd_kafka_message_t *m, const kmsg_t *id, bool retry) {
    if (s->nfailed == s->capfailed) {
        s->capfailed = s->capfailed ? s->capfailed * 2 : 16;
        s->failed = crw_realloc(s->failed, sizeof *s->failed * (size_t)s->capfailed);
    }
    failed_t *f = &s->failed[s->nfailed++];
    *f = (failed_t){*id, retry, m->err, crw_strdup(rd_kafka_topic_name(m->rkt)), NULL, m->key_len, NULL, m->len, NULL};
    if (m->key)
        f->key = crw_strndup(m->key, m->key_len);
    if (m->payload)
        f->value = crw_strndup(m->payload, m->len);
    rd_kafka_headers_t *h;
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR)
        f->hdrs = rd_kafka_headers_copy(h);
}

/* What one delivery report means for the change it came from. */
static void delivered(kafka_sink_t *s, const rd_kafka_message_t *m, const kmsg_t *id) {
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (id->what == KMSG_EVENT) {
            s->delivered++;
            int64_t us = crw_clock_mono_us() - id->produced_us;
            crw_metric_observe(CRW_H_KAFKA_DELIVERY, us);
            if (crw_log_level >= CRW_LOG_DEBUG) { /* bench/latency.sh joins these with a consumer's offsets */
                int64_t at = crw_clock_wall_us() - us;
                crw_debug("kafka: delivered to %s [%" PRId32 "] offset %" PRId64 ", %.3f ms after produce() "
                          "(produced at %lld.%06lld)",
                          rd_kafka_topic_name(m->rkt), m->partition, m->offset, (double)us / 1000.0,
                          (long long)(at / 1000000), (long long)(at % 1000000));
            }
        }
        if (!s->eos && id->what != KMSG_CHECKPOINT)
            crw_pipeline_release(s->pipeline, id->seq, 1);
        return;
    }
    if (m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
        return; /* stopping without delivery: never acknowledged, sent again next time */
    if (s->eos) {
        /* The transaction cannot commit now (librdkafka makes it abortable);
         * remember the change so its second coming is dead-lettered. */
        if (id->what != KMSG_CHECKPOINT && per_message_error(m->err))
            kafka_eos_poison(s, id->position, id->ordinal, m->err,
                             id->what == KMSG_DEADLETTER ? DL_TOPIC_REFUSED | DL_FILED : 0);
        else
            crw_warn("kafka: a message of the open transaction failed: %s", rd_kafka_err2str(m->err));
        return;
    }
    if (m->err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT && id->what == KMSG_EVENT) {
        queue_failed(s, m, id, true);
        return;
    }
    if (per_message_error(m->err)) {
        if (id->what == KMSG_DEADLETTER) {
            crw_error("kafka: the dead-letter topic refused a record (%s); the dead-letter file has it",
                      rd_kafka_err2name(m->err));
            crw_pipeline_release(s->pipeline, id->seq, 1);
        } else
            queue_failed(s, m, id, false);
        return;
    }
    kafka_set_fatal(s, "delivery failed for good: %s (%s); stopping with nothing confirmed past it",
                    rd_kafka_err2str(m->err), rd_kafka_err2name(m->err));
}

/* Delivery report: on the main thread, inside rd_kafka_poll/flush. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    kafka_sink_t *s = opaque;
    kmsg_t *id = m->_private;
    delivered(s, m, id);
    kafka_kmsg_put(s, id);
}

/* Global errors: on the main thread, inside rd_kafka_poll. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    kafka_sink_t *s = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof buf);
        kafka_set_fatal(s, "fatal producer error: %s (%s)", buf, rd_kafka_err2name(orig));
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        crw_warn("kafka: all brokers are down (%s); nothing is confirmed to PostgreSQL until they are back", reason);
    else
        crw_warn("kafka: %s: %s", rd_kafka_err2name(err), reason);
}

/* librdkafka's log lines, from any of its threads, into crwatch's log. */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk;
    crw_log_level_t l = level <= 4 ? CRW_LOG_WARN : level <= 6 ? CRW_LOG_INFO : CRW_LOG_DEBUG;
    CRW_LOG(l, "kafka: [%s] %s", fac, buf);
}

/* ------------------------------------------------------------------ ops */

/* CloudEvents binary content mode: the context attributes as headers, the data as the value. */
static rd_kafka_headers_t *ce_headers(const crw_event_t *ev) {
    rd_kafka_headers_t *h = rd_kafka_headers_new((size_t)ev->nattrs);
    for (int i = 0; i < ev->nattrs; i++) {
        const crw_event_attr_t *a = &ev->attrs[i];
        char name[64];
        crw_kafka_ce_header_name(name, sizeof name, a->name, strlen(a->name));
        rd_kafka_header_add(h, name, -1, a->value, (ssize_t)a->len);
    }
    return h;
}

static int kafka_emit(crw_sink_t *base, const crw_event_t *ev) {
    kafka_sink_t *s = (kafka_sink_t *)base;
    if (s->fatal)
        return CRW_ERR_SINK;
    bool first = !s->partial || s->cur_seq != ev->txn;
    if (first) {
        s->cur_seq = ev->txn;
        s->cur_events = 0;
        s->partial = true;
    }
    s->cur_events++;
    s->cur_position = ev->position;
    kmsg_t id = kafka_identity(s, ev);
    if (s->eos) {
        int rc = kafka_eos_begin(s);
        if (rc < 0)
            return rc;
        /* One hold per source transaction, released at the Kafka commit. */
        if (first) {
            crw_pipeline_hold(s->pipeline, ev->txn, 1);
            if (s->nseqs == s->capseqs) {
                s->capseqs = s->capseqs ? s->capseqs * 2 : 64;
                s->seqs = crw_realloc(s->seqs, sizeof *s->seqs * (size_t)s->capseqs);
            }
            s->seqs[s->nseqs++] = ev->txn;
        }
        int pi = kafka_eos_poisoned(s, ev);
        if (pi >= 0) {
            kafka_topic_for(s, ev);
            if (dead_letter(s, &id, s->tname.data, ev->key, ev->keylen, ev->value, ev->len, NULL, s->poison[pi].err,
                            s->poison[pi].flags) < 0)
                return CRW_ERR_IO;
            s->poison[pi].flags |= DL_FILED; /* by index: delivery reports may have grown the list */
            return 0;
        }
    } else
        crw_pipeline_hold(s->pipeline, ev->txn, 1);

    rd_kafka_topic_t *rkt = kafka_topic_for(s, ev);
    if (!rkt) {
        kafka_set_fatal(s, "cannot create a handle for topic %s: %s", s->tname.data,
                        rd_kafka_err2str(rd_kafka_last_error()));
        return CRW_ERR_SINK;
    }
    const char *value = ev->value;
    size_t len = ev->len;
    rd_kafka_headers_t *hdrs = NULL;
    if (s->binary && value) {
        if (!ev->attrs) {
            kafka_set_fatal(s, "binary content mode: the event to topic %s has no CloudEvents attributes%s",
                            s->tname.data, "");
            return CRW_ERR_SINK;
        }
        hdrs = ce_headers(ev);
        value = ev->value + ev->data.off;
        len = ev->data.len;
    }
    s->interruptible = true;
    rd_kafka_resp_err_t err = kafka_produce(s, rkt, RD_KAFKA_PARTITION_UA, ev->key, ev->keylen, value, len, hdrs,
                                            kafka_kmsg_new(s, KMSG_EVENT, &id));
    s->interruptible = false;
    if (err == RD_KAFKA_RESP_ERR__INTR) {
        /* Stopping while the queue was full: the event was not sent and the
         * transaction stays unconfirmed; the source sends it again. */
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        if (!s->eos)
            crw_pipeline_release(s->pipeline, ev->txn, 1);
        return CRW_ERR_STOPPED;
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (s->eos)
            s->nmsgs++;
        s->unflushed++;
        return 0;
    }
    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    if (per_message_error(err)) {
        /* Refused before it left (larger than message.max.bytes): dead-letter
         * it now; within the open transaction under exactly-once, where it is
         * also remembered, so an aborted transaction's second try does not
         * file it twice. */
        int rc = dead_letter(s, &id, s->tname.data, ev->key, ev->keylen, ev->value, ev->len, NULL, err,
                             DL_LOCAL_TOO_BIG);
        if (!s->eos)
            crw_pipeline_release(s->pipeline, ev->txn, 1);
        else if (rc == 0)
            kafka_eos_poison(s, ev->position, ev->ordinal, err, DL_LOCAL_TOO_BIG | DL_FILED);
        return rc < 0 ? CRW_ERR_IO : 0;
    }
    if (!s->eos)
        crw_pipeline_release(s->pipeline, ev->txn, 1);
    if (err == RD_KAFKA_RESP_ERR__STATE && s->eos) {
        /* The transaction went abortable (a failed message): abort, reconnect, send again. */
        crw_warn("kafka: the transaction cannot continue; aborting it and restarting the stream");
        return kafka_eos_abort(s) < 0 ? CRW_ERR_SINK : CRW_ERR_CONN;
    }
    kafka_set_fatal(s, "cannot produce to %s: %s", s->tname.data, rd_kafka_err2str(err));
    return CRW_ERR_SINK;
}

static int kafka_commit(crw_sink_t *base, uint64_t txn) {
    kafka_sink_t *s = (kafka_sink_t *)base;
    if (s->fatal)
        return CRW_ERR_SINK;
    if (s->partial && s->cur_seq == txn) {
        s->partial = false;
        s->ckpt_position = s->cur_position;
    }
    if (!s->eos)
        return 0; /* in flight: delivery reports release the holds */
    if (s->txn_open && !s->partial && crw_clock_mono_ms() - s->txn_started_ms >= s->conf->transaction_interval_ms)
        return kafka_eos_commit(s, crw_clock_mono_ms() + EOS_START_TIMEOUT_MS); /* a busy stream's bound */
    return 0;
}

static int kafka_poll(crw_sink_t *base, int timeout_ms) {
    kafka_sink_t *s = (kafka_sink_t *)base;
    rd_kafka_poll(s->rk, timeout_ms);
    process_failed(s);
    if (s->fatal)
        return CRW_ERR_SINK;
    /* What the stream left open when it went idle (kafka_idle) is committed once due, and whatever is open
     * at transaction.interval.ms. */
    if (s->eos && s->txn_open && !s->partial &&
        (kafka_eos_commit_due(s) || crw_clock_mono_ms() - s->txn_started_ms >= s->conf->transaction_interval_ms))
        return kafka_eos_commit(s, crw_clock_mono_ms() + EOS_START_TIMEOUT_MS);
    return 0;
}

bool crw_kafka_batch_forming(uint64_t events, int64_t elapsed_us) {
    return events > CRW_KAFKA_IDLE_BATCH_EVENTS && elapsed_us < (int64_t)CRW_KAFKA_IDLE_BATCH_WINDOW_MS * 1000;
}

/*
 * Whether batches are forming (kafka.h) over the events since the stream
 * last idled, counting from here on.  A bulk load, or a stream that fell
 * behind and catches up, would only be held up by sending early: linger
 * batches them.
 */
static bool batch_forming(kafka_sink_t *s) {
    int64_t now = crw_clock_mono_us();
    bool forming = crw_kafka_batch_forming(s->unflushed, now - s->idled_us);
    s->unflushed = 0;
    s->idled_us = now;
    return forming;
}

/*
 * The stream caught up (sink.h, idle): what the producer holds back for its
 * linger goes now, and exactly-once commits the open Kafka transaction, at
 * most once every EOS_IDLE_SPACING_MS (a stream that idles between every
 * two of its transactions would otherwise commit a Kafka transaction for
 * each).  While batches are forming (batch_forming), both wait as before:
 * linger.ms, and transaction.interval.ms, the bound of a busy stream.
 *
 * rd_kafka_flush(rk, 0) would not do (librdkafka 2.0.2): the producer
 * ignores linger only while a flush call lasts, and its broker thread,
 * woken by the call, mostly looks after it has returned.  A flush of up to
 * IDLE_FLUSH_MS lasts until the messages are delivered, a round trip to the
 * broker, or that bound against a slow one.  It is left out when the user
 * set linger.ms (their wait is the one they asked for), and when more than
 * IDLE_FLUSH_MAX_QUEUED messages wait for delivery (a slow broker).
 */
static int kafka_idle(crw_sink_t *base) {
    kafka_sink_t *s = (kafka_sink_t *)base;
    if (s->fatal)
        return CRW_ERR_SINK;
    if (s->partial)
        return 0; /* inside a transaction: not idle after all */
    uint64_t fresh = s->unflushed;
    bool forming = batch_forming(s);
    if (s->eos) {
        if (!s->txn_open || forming)
            return 0;
        s->idle_commit = true; /* now, or by kafka_poll once EOS_IDLE_SPACING_MS passed since the last commit */
        return kafka_eos_commit_due(s) ? kafka_eos_commit(s, crw_clock_mono_ms() + EOS_START_TIMEOUT_MS) : 0;
    }
    if (!s->idle_flush || fresh == 0 || forming || rd_kafka_outq_len(s->rk) > IDLE_FLUSH_MAX_QUEUED)
        return 0;
    rd_kafka_flush(s->rk, IDLE_FLUSH_MS); /* what it does not deliver in time stays in flight */
    process_failed(s);
    return s->fatal ? CRW_ERR_SINK : 0;
}

static int kafka_drain(crw_sink_t *base, int timeout_ms) {
    kafka_sink_t *s = (kafka_sink_t *)base;
    int64_t deadline = crw_clock_mono_ms() + timeout_ms;
    if (s->eos) {
        if (!s->txn_open)
            return s->fatal ? CRW_ERR_SINK : 0;
        if (s->partial) {
            /* Stopped mid-transaction: it is sent again, whole, next time. */
            kafka_eos_abort(s);
            return 0;
        }
        return kafka_eos_commit(s, deadline) == 0 ? 0 : CRW_ERR_SINK;
    }
    if (s->partial)
        /* The driver stopped between a BEGIN and its COMMIT: what was sent of
         * that transaction cannot be recalled, and the server sends it whole
         * again (at-least-once). */
        crw_info("kafka: stopped inside a transaction: %u of its events were already sent and come again on "
                 "restart", s->cur_events);
    while (!s->fatal) {
        int left = (int)(deadline - crw_clock_mono_ms());
        rd_kafka_flush(s->rk, left > 0 ? left : 0);
        process_failed(s);
        if (rd_kafka_outq_len(s->rk) == 0 || crw_clock_mono_ms() >= deadline)
            break;
    }
    int out = rd_kafka_outq_len(s->rk);
    if (out > 0)
        crw_warn("kafka: %d messages not delivered at stop; they are sent again on restart", out);
    return out > 0 || s->fatal ? CRW_ERR_SINK : 0;
}

static int kafka_resume_position(crw_sink_t *base, uint64_t *position) {
    kafka_sink_t *s = (kafka_sink_t *)base;
    *position = 0;
    if (!s->eos)
        return 0;
    /* A reconnect: the server sends again from the slot's confirmed position.
     * A transaction cut in the middle cannot commit; a whole one can. */
    if (s->txn_open) {
        if (s->partial)
            kafka_eos_abort(s);
        else
            kafka_eos_commit(s, crw_clock_mono_ms() + EOS_START_TIMEOUT_MS);
    }
    int rc = kafka_eos_init(s);
    if (rc < 0)
        return rc;
    if (!s->resumed) {
        uint64_t v;
        if ((rc = kafka_eos_read_checkpoint(s, &v)) < 0)
            return rc;
        if (v > s->committed)
            s->committed = v;
        s->resumed = true;
    }
    *position = s->committed;
    return s->fatal ? CRW_ERR_SINK : 0;
}

static void kafka_destroy(crw_sink_t *base) {
    kafka_sink_t *s = (kafka_sink_t *)base;
    if (s->rk) {
        /* Whatever is still queued was never acknowledged: drop it here, the
         * server sends it again from the confirmed position. */
        rd_kafka_purge(s->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(s->rk, 0);
        if (s->delivered || s->deadlettered)
            crw_info("kafka: %" PRIu64 " events delivered, %" PRIu64 " dead-lettered", s->delivered, s->deadlettered);
    }
    kafka_topics_destroy(s);
    if (s->dl_rkt)
        rd_kafka_topic_destroy(s->dl_rkt);
    if (s->ckpt_rkt)
        rd_kafka_topic_destroy(s->ckpt_rkt);
    s->in_failed = true; /* nothing may be produced any more */
    for (int i = 0; i < s->nfailed; i++) {
        if (s->failed[i].hdrs)
            rd_kafka_headers_destroy(s->failed[i].hdrs);
        free(s->failed[i].topic);
        free(s->failed[i].key);
        free(s->failed[i].value);
    }
    free(s->failed);
    if (s->rk)
        rd_kafka_destroy(s->rk);
    if (s->mock)
        rd_kafka_mock_cluster_destroy(s->mock);
    if (s->mock_rk)
        rd_kafka_destroy(s->mock_rk);
    crw_buf_free(&s->tname);
    free(s->bootstrap);
    free(s->txn_id);
    free(s->seqs);
    free(s->poison);
    for (int i = 0; i < s->nslabs; i++)
        free(s->slabs[i]);
    free(s->slabs);
    crw_names_free(&s->sources);
    free(s);
}

static const crw_sink_ops_t kafka_ops = {
    .name = "kafka",
    .emit = kafka_emit,
    .commit = kafka_commit,
    .poll = kafka_poll,
    .drain = kafka_drain,
    .idle = kafka_idle,
    .resume_position = kafka_resume_position,
    .destroy = kafka_destroy,
};

/* ---------------------------------------------------------------- create */

/* Property values that must never reach a log line or an error message. */
static bool is_secret(const char *prop) {
    return strstr(prop, "password") || strstr(prop, "secret") || strstr(prop, "sasl.oauthbearer.config") ||
           !strcmp(prop, "ssl.key.pem") || !strcmp(prop, "ssl_key") || strstr(prop, "keystore");
}

static int conf_set(rd_kafka_conf_t *kc, const char *prop, const char *value, char *errstr, size_t n) {
    char e[512];
    if (rd_kafka_conf_set(kc, prop, value, e, sizeof e) == RD_KAFKA_CONF_OK)
        return 0;
    if (is_secret(prop))
        snprintf(errstr, n, "kafka.%s: refused by librdkafka (the value is not shown: it is a secret)", prop);
    else
        snprintf(errstr, n, "kafka.%s: %s", prop, e);
    return CRW_ERR_CONFIG;
}

static const char *user_prop(const crw_config_t *c, const char *prop) {
    for (int i = 0; i < c->nkafka; i++)
        if (!strcmp(c->kafka[i].key, prop))
            return c->kafka[i].value;
    return NULL;
}

CRW_SINK_CONSTRUCTOR(crw_sink_kafka_new) {
    const crw_config_t *c = env->conf;
    size_t n = errstr_size;
    *err = CRW_ERR_CONFIG;
    const char *bs = user_prop(c, "bootstrap.servers");
    if (!bs || !*bs) {
        snprintf(errstr, n, "kafka.bootstrap.servers: required with sink=kafka (host:port,... or 'embedded')");
        return NULL;
    }
    bool eos = c->delivery == CRW_DELIVERY_EXACTLY_ONCE;
    if (crw_kafka_template_check(c->topic_template, errstr, n) < 0 ||
        kafka_topic_name_check("deadletter.topic", c->deadletter_topic, true, errstr, n) < 0 ||
        (eos && kafka_topic_name_check("checkpoint.topic", c->checkpoint_topic, false, errstr, n) < 0))
        return NULL;
    const char *idem = user_prop(c, "enable.idempotence");
    if (idem && strcmp(idem, "true") != 0) {
        snprintf(errstr, n, "kafka.enable.idempotence: crwatch needs 'true' (per-key order across retries)");
        return NULL;
    }
    if (!eos && user_prop(c, "transactional.id")) {
        snprintf(errstr, n, "kafka.transactional.id: only with delivery=exactly-once");
        return NULL;
    }
    if (c->cloudevents_mode == 1 && c->event_format != CRW_FORMAT_CLOUDEVENTS) {
        snprintf(errstr, n, "cloudevents.mode: binary needs event.format=cloudevents");
        return NULL;
    }

    kafka_sink_t *s = crw_calloc(1, sizeof *s);
    s->base.ops = &kafka_ops;
    s->base.env = env;
    s->conf = c;
    s->pipeline = env->pipeline;
    s->eos = eos;
    s->binary = c->cloudevents_mode == 1;
    s->last_topic = -1;
    s->sources = (crw_names_t)CRW_NAMES_INIT;
    const char *txn_id = user_prop(c, "transactional.id");
    if (eos) {
        crw_buf_t b = CRW_BUF_INIT;
        const char *ckpt = env->checkpoint_id ? env->checkpoint_id : c->slot_name;
        if (txn_id) /* a run under another checkpoint (a backfill) must not fence the stream's producer */
            crw_buf_printf(&b, "%s%s%s", txn_id, env->checkpoint_id ? "." : "",
                           env->checkpoint_id ? env->checkpoint_id : "");
        else
            crw_buf_printf(&b, "crwatch.%s", ckpt); /* stable across restarts of this slot */
        s->txn_id = b.data;
    }

    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    if (!strcmp(bs, "embedded")) {
        rd_kafka_conf_t *mc = rd_kafka_conf_new();
        rd_kafka_conf_set_log_cb(mc, kafka_on_log_quiet);
        char e[256];
        /* The mock broker's sockets take this handle's settings: without TCP_NODELAY, a response sent
         * right after another waits for the client's delayed ACK (40 ms on Linux), as no broker's does. */
        rd_kafka_conf_set(mc, "socket.nagle.disable", "true", e, sizeof e);
        s->mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, mc, e, sizeof e);
        if (!s->mock_rk || !(s->mock = rd_kafka_mock_cluster_new(s->mock_rk, 1))) {
            if (!s->mock_rk)
                rd_kafka_conf_destroy(mc);
            snprintf(errstr, n, "kafka: cannot start the embedded broker");
            *err = CRW_ERR_SINK;
            goto fail;
        }
        s->bootstrap = crw_strdup(rd_kafka_mock_cluster_bootstraps(s->mock));
        /* The mock cluster has no controller for CreateTopics: make the
         * checkpoint topic here with the one partition crwatch reads. */
        if (eos)
            rd_kafka_mock_topic_create(s->mock, c->checkpoint_topic, 1, 1);
        crw_info("kafka: embedded broker at %s (librdkafka mock cluster: in memory, gone when crwatch exits)",
                 s->bootstrap);
    } else
        s->bootstrap = crw_strdup(bs);

    /* crwatch's defaults first; every kafka.<prop> after, so the user's win. */
    const char *defaults[][2] = {
        {"client.id", "crwatch"},
        {"enable.idempotence", "true"},
        {"partitioner", "murmur2_random"}, /* the Java client's choice: consumers co-partition */
        {"log.connection.close", "false"},
        /* A produce request sent while the previous one is unacknowledged would wait for that ACK (Nagle):
         * requests to several partitions go out back to back. */
        {"socket.nagle.disable", "true"},
        /* at-least-once: retry until delivered, never time a change out */
        {"message.timeout.ms", eos ? NULL : "0"},
        {"transactional.id", s->txn_id},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        if (defaults[i][1] && conf_set(kc, defaults[i][0], defaults[i][1], errstr, n) < 0)
            goto fail_conf;
    for (int i = 0; i < c->nkafka; i++) {
        const crw_kv_t *kv = &c->kafka[i];
        const char *v = !strcmp(kv->key, "bootstrap.servers") ? s->bootstrap : kv->value;
        if (conf_set(kc, kv->key, v, errstr, n) < 0)
            goto fail_conf;
    }
    /* librdkafka's linger (5 ms) batches a busy stream; an idle one flushes at once (kafka_idle), unless
     * the user chose a linger of their own. */
    s->idle_flush = !user_prop(c, "linger.ms") && !user_prop(c, "queue.buffering.max.ms");
    rd_kafka_conf_set_opaque(kc, s);
    rd_kafka_conf_set_dr_msg_cb(kc, on_delivery);
    rd_kafka_conf_set_error_cb(kc, on_error);
    rd_kafka_conf_set_log_cb(kc, on_log);
    char e[512];
    s->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, e, sizeof e);
    if (!s->rk) {
        /* librdkafka names the conflicting properties, never their values. */
        snprintf(errstr, n, "kafka: %s", e);
        goto fail_conf;
    }
    if (eos) {
        /* Before the topic handle: its metadata request would have a broker
         * that auto-creates topics make a deleting one first. */
        if (!s->mock)
            kafka_eos_ensure_checkpoint_topic(s);
        s->ckpt_rkt = rd_kafka_topic_new(s->rk, c->checkpoint_topic, NULL);
    }
    crw_info("kafka: producing to %s, topics %s, %s%s%s, CloudEvents %s mode", s->bootstrap, c->topic_template,
             eos ? "exactly-once, transactional.id " : "at-least-once", eos ? s->txn_id : "",
             eos ? "" : " (idempotent)", s->binary ? "binary" : "structured");
    return &s->base;

fail_conf:
    rd_kafka_conf_destroy(kc);
    kc = NULL;
fail:
    if (kc)
        rd_kafka_conf_destroy(kc);
    kafka_destroy(&s->base);
    return NULL;
}
