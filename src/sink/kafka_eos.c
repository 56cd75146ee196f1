/*
 * kafka_eos.c — the Kafka sink's exactly-once delivery (delivery=exactly-once,
 * docs/kafka.md): a transactional producer; each Kafka transaction holds the
 * events of one or more whole source transactions and a checkpoint record
 * (slot -> commit position) in checkpoint.topic, so what Kafka has and what
 * the slot may confirm move together.  A change the broker refuses inside a
 * transaction is remembered (poison) and dead-lettered when it comes again.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "core/metrics.h"
#include "sink/kafka_int.h"

#define CKPT_WINDOW 256 /* checkpoint records read per backward step */

static void eos_reset(kafka_sink_t *s) {
    s->txn_open = false;
    s->idle_commit = false;
    s->partial = false;
    s->nseqs = 0;
    s->nmsgs = 0;
    s->ckpt_position = 0;
}

/* Waits for a librdkafka transactional call that may time out and be retried. */
typedef rd_kafka_error_t *(*txn_call_fn)(rd_kafka_t *rk, int timeout_ms);

static rd_kafka_error_t *txn_wait(kafka_sink_t *s, txn_call_fn call, const char *what, int64_t deadline) {
    for (;;) {
        rd_kafka_error_t *e = call(s->rk, 1000);
        if (!e || !rd_kafka_error_is_retriable(e) || crw_clock_mono_ms() >= deadline || s->fatal)
            return e;
        if (kafka_warn_due(s))
            crw_warn("kafka: %s is waiting for the broker: %s", what, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        rd_kafka_poll(s->rk, 0);
        kafka_keepalive(s);
    }
}

/*
 * Aborts the open transaction.  Its PostgreSQL transactions were not
 * confirmed; they are abandoned in the pipeline (with everything after
 * them), and the caller must make the stream reconnect so the server sends
 * them again from the confirmed position.
 */
int kafka_eos_abort(kafka_sink_t *s) {
    if (!s->txn_open)
        return 0;
    rd_kafka_error_t *e = txn_wait(s, rd_kafka_abort_transaction, "aborting a transaction",
                                   crw_clock_mono_ms() + EOS_START_TIMEOUT_MS);
    int rc = 0;
    if (e) {
        /* The next producer with this transactional.id fences and aborts it anyway. */
        kafka_set_fatal(s, "cannot abort the Kafka transaction: %s%s", rd_kafka_error_string(e), "");
        rd_kafka_error_destroy(e);
        rc = CRW_ERR_SINK;
    }
    if (s->nseqs > 0)
        crw_pipeline_abandon(s->pipeline, s->seqs[0]);
    crw_warn("kafka: aborted a transaction of %zu messages; they are sent again", s->nmsgs);
    eos_reset(s);
    return rc;
}

/*
 * Commits the open transaction, with the checkpoint record of its last
 * complete PostgreSQL transaction, then releases its holds.
 * @returns 0; CRW_ERR_CONN when it had to be aborted (reconnect: the server
 *          sends its changes again); CRW_ERR_SINK on a fatal error.
 */
int kafka_eos_commit(kafka_sink_t *s, int64_t deadline) {
    if (!s->txn_open)
        return 0;
    int64_t t0 = crw_clock_mono_us();
    if (s->ckpt_position) {
        char v[CRW_LSN_BUFSIZE];
        crw_lsn_format(v, s->ckpt_position);
        const char *slot = kafka_checkpoint_id(s);
        /* Partition 0 always: where the checkpoint is does not depend on the
         * partitioner or on partitions added later. */
        rd_kafka_resp_err_t e = kafka_produce(s, s->ckpt_rkt, 0, slot, strlen(slot), v, strlen(v), NULL,
                                              kafka_kmsg(s, KMSG_CHECKPOINT, NULL));
        if (e) {
            /* __STATE: a message of the transaction failed, which librdkafka
             * has reported already; the transaction can only be aborted. */
            CRW_LOG(e == RD_KAFKA_RESP_ERR__STATE ? CRW_LOG_WARN : CRW_LOG_ERROR,
                    "kafka: the transaction cannot commit (%s producing its checkpoint record)", rd_kafka_err2str(e));
            return kafka_eos_abort(s) < 0 ? CRW_ERR_SINK : CRW_ERR_CONN;
        }
    }
    rd_kafka_error_t *err = txn_wait(s, rd_kafka_commit_transaction, "committing a transaction", deadline);
    if (err) {
        bool abortable = rd_kafka_error_txn_requires_abort(err);
        bool retriable = rd_kafka_error_is_retriable(err);
        crw_warn("kafka: transaction commit failed: %s", rd_kafka_error_string(err));
        rd_kafka_error_destroy(err);
        if (abortable || retriable) /* retriable here: the deadline passed */
            return kafka_eos_abort(s) < 0 ? CRW_ERR_SINK : CRW_ERR_CONN;
        kafka_set_fatal(s, "transaction commit failed for good%s%s", "", "");
        return CRW_ERR_SINK;
    }
    if (s->ckpt_position > s->committed)
        s->committed = s->ckpt_position;
    /* Changes at or below the checkpoint never come again: forget their poison. */
    int kept = 0;
    for (int i = 0; i < s->npoison; i++)
        if (s->poison[i].position > s->committed)
            s->poison[kept++] = s->poison[i];
    s->npoison = kept;
    int64_t took = crw_clock_mono_us() - t0;
    crw_metric_observe(CRW_H_KAFKA_TXN_COMMIT, took);
    s->txn_committed_ms = crw_clock_mono_ms();
    for (int i = 0; i < s->nseqs; i++)
        crw_pipeline_release(s->pipeline, s->seqs[i], 1);
    if (crw_log_level >= CRW_LOG_DEBUG) {
        int64_t at = crw_clock_wall_us();
        crw_debug("kafka: committed a transaction of %zu messages, checkpoint " CRW_LSN_FMT ": open %lld ms, "
                  "the commit took %.3f ms (committed at %lld.%06lld)",
                  s->nmsgs, CRW_LSN_ARGS(s->committed), (long long)(crw_clock_mono_ms() - s->txn_started_ms),
                  (double)took / 1000.0, (long long)(at / 1000000), (long long)(at % 1000000));
    }
    eos_reset(s);
    return 0;
}

int kafka_eos_init(kafka_sink_t *s) {
    if (s->inited)
        return 0;
    /* Fences any earlier producer with this transactional.id and aborts its
     * open transaction, so read_committed readers (ours included) get past it. */
    rd_kafka_error_t *e = txn_wait(s, rd_kafka_init_transactions, "init_transactions",
                                   crw_clock_mono_ms() + EOS_START_TIMEOUT_MS);
    if (e) {
        kafka_set_fatal(s, "cannot initialise transactions (transactional.id %s): %s", s->txn_id,
                  rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return CRW_ERR_SINK;
    }
    s->inited = true;
    crw_info("kafka: transactions ready (transactional.id %s)", s->txn_id);
    return 0;
}

/* Makes sure checkpoint.topic exists; created compacted with one partition
 * when missing (auto-creation would make it a deleting topic that forgets
 * checkpoints after retention.ms). */
void kafka_eos_ensure_checkpoint_topic(kafka_sink_t *s) {
    const rd_kafka_metadata_t *md = NULL;
    const char *name = s->conf->checkpoint_topic;
    if (rd_kafka_metadata(s->rk, 1, NULL, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        bool found = false;
        for (int i = 0; i < md->topic_cnt && !found; i++)
            found = !strcmp(md->topics[i].topic, name) && md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR;
        rd_kafka_metadata_destroy(md);
        if (found)
            return;
    }
    char errstr[256];
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(name, 1, -1, errstr, sizeof errstr);
    if (!nt)
        return;
    rd_kafka_NewTopic_set_config(nt, "cleanup.policy", "compact");
    rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(s->rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(o, 10000, errstr, sizeof errstr);
    rd_kafka_queue_t *q = rd_kafka_queue_new(s->rk);
    rd_kafka_CreateTopics(s->rk, &nt, 1, o, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;
    const char *msg = "no answer";
    if (ev) {
        err = rd_kafka_event_error(ev);
        msg = rd_kafka_event_error_string(ev);
        size_t n = 0;
        const rd_kafka_CreateTopics_result_t *r = rd_kafka_event_CreateTopics_result(ev);
        const rd_kafka_topic_result_t **tr = r ? rd_kafka_CreateTopics_result_topics(r, &n) : NULL;
        if (!err && n == 1) {
            err = rd_kafka_topic_result_error(tr[0]);
            msg = rd_kafka_topic_result_error_string(tr[0]);
        }
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
        crw_info("kafka: created the compacted checkpoint topic %s", name);
    else if (err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
        crw_warn("kafka: cannot create the checkpoint topic %s (%s: %s); create it with cleanup.policy=compact, "
                 "or auto-creation makes one that may forget checkpoints",
                 name, rd_kafka_err2name(err), msg ? msg : "");
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_NewTopic_destroy(nt);
}

/*
 * Reads the last committed checkpoint of this slot: a short-lived
 * read_committed consumer on partition 0 of checkpoint.topic, scanning back
 * from the end in growing windows, so a long-lived (or uncompacted) topic
 * costs only its tail.
 * @returns 0 with *lsn (0: none), or CRW_ERR_SINK.
 */
int kafka_eos_read_checkpoint(kafka_sink_t *s, uint64_t *lsn) {
    char errstr[512];
    *lsn = 0;
    char group[300];
    snprintf(group, sizeof group, "crwatch-checkpoint-reader.%s", kafka_checkpoint_id(s));
    rd_kafka_t *c = kafka_reader_new(s->conf, s->bootstrap, group, "crwatch-checkpoint-reader", kafka_on_log_quiet,
                                     errstr, sizeof errstr);
    if (!c) {
        kafka_set_fatal(s, "checkpoint reader: %s%s", errstr, "");
        return CRW_ERR_SINK;
    }
    const char *topic = s->conf->checkpoint_topic, *slot = kafka_checkpoint_id(s);
    size_t slotlen = strlen(slot);
    int64_t lo = 0, hi = 0, deadline = crw_clock_mono_ms() + EOS_START_TIMEOUT_MS;
    int rc = 0;
    rd_kafka_resp_err_t err;
    while ((err = rd_kafka_query_watermark_offsets(c, topic, 0, &lo, &hi, 5000)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
            lo = hi = 0; /* no topic: no checkpoint */
            break;
        }
        if (crw_clock_mono_ms() >= deadline) {
            kafka_set_fatal(s, "cannot read the checkpoint topic: %s%s", rd_kafka_err2str(err), "");
            rc = CRW_ERR_SINK;
            goto out;
        }
        if (kafka_warn_due(s))
            crw_warn("kafka: reading checkpoint topic %s: %s; retrying", topic, rd_kafka_err2str(err));
        kafka_keepalive(s);
    }
    bool found = false;
    for (int64_t end = hi, step = CKPT_WINDOW; end > lo && !found; step *= 4) {
        int64_t start = end - step > lo ? end - step : lo;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, 0)->offset = start;
        rd_kafka_assign(c, l);
        rd_kafka_topic_partition_list_destroy(l);
        for (;;) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 500);
            if (!m) {
                kafka_keepalive(s);
                if (crw_clock_mono_ms() >= deadline) {
                    kafka_set_fatal(s, "timed out reading the checkpoint topic %s%s", topic, "");
                    rc = CRW_ERR_SINK;
                    goto out;
                }
                continue;
            }
            bool done = false;
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
                done = true;
            else if (m->err) {
                if (kafka_warn_due(s))
                    crw_warn("kafka: reading checkpoint topic %s: %s", topic, rd_kafka_message_errstr(m));
            } else {
                uint64_t v;
                char text[40];
                snprintf(text, sizeof text, "%.*s", (int)(m->len < 39 ? m->len : 39), m->payload ? (char *)m->payload : "");
                /* Every record of this slot at or after start: the last one wins. */
                if (m->key_len == slotlen && !memcmp(m->key, slot, slotlen) && crw_lsn_parse(text, &v) == 0) {
                    *lsn = v;
                    found = true;
                }
                done = m->offset >= hi - 1;
            }
            rd_kafka_message_destroy(m);
            if (done)
                break;
        }
        end = start;
    }
    if (found)
        crw_info("kafka: checkpoint of slot %s is " CRW_LSN_FMT ": changes committed at or below it are in Kafka already",
                 slot, CRW_LSN_ARGS(*lsn));
    else
        crw_info("kafka: no checkpoint of slot %s in %s: nothing to skip", slot, topic);
out:
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return rc;
}

int kafka_eos_begin(kafka_sink_t *s) {
    int rc = kafka_eos_init(s);
    if (rc < 0 || s->txn_open)
        return rc;
    rd_kafka_error_t *e = rd_kafka_begin_transaction(s->rk);
    if (e) {
        kafka_set_fatal(s, "cannot begin a transaction: %s%s", rd_kafka_error_string(e), "");
        rd_kafka_error_destroy(e);
        return CRW_ERR_SINK;
    }
    s->txn_open = true;
    s->txn_started_ms = crw_clock_mono_ms();
    return 0;
}

void kafka_eos_poison(kafka_sink_t *s, uint64_t position, uint32_t ordinal, rd_kafka_resp_err_t err, unsigned flags) {
    for (int i = 0; i < s->npoison; i++)
        if (s->poison[i].position == position && s->poison[i].ordinal == ordinal) {
            s->poison[i].flags |= flags;
            return;
        }
    if (s->npoison == s->cappoison) {
        s->cappoison = s->cappoison ? s->cappoison * 2 : 8;
        s->poison = crw_realloc(s->poison, sizeof *s->poison * (size_t)s->cappoison);
    }
    s->poison[s->npoison++] = (poison_t){position, ordinal, err, flags};
}

int kafka_eos_poisoned(const kafka_sink_t *s, const crw_event_t *ev) {
    for (int i = 0; i < s->npoison; i++)
        if (s->poison[i].position == ev->position && s->poison[i].ordinal == ev->ordinal)
            return i;
    return -1;
}

