/*
 * kafka.c — the Kafka sink: librdkafka producer, delivery-gated
 * acknowledgements, dead-letter topic, embedded mock broker, exactly-once
 * with Kafka transactions and a checkpoint topic.  See kafka.h.
 *
 * Per-message bookkeeping travels in librdkafka's msg_opaque, so the hot
 * path allocates nothing of its own: the low two bits say what the message
 * is (an event, a dead-letter copy, a checkpoint), the rest is the pipeline
 * sequence (at-least-once) or an index into the open transaction's message
 * table (exactly-once).
 *
 * Order: the producer is idempotent (librdkafka caps max.in.flight at 5 and
 * retries without reordering), the key is the resource key and the
 * partitioner murmur2_random, so each key's changes reach one partition in
 * commit order, also across a broker outage.
 */
#include "sink/kafka.h"
#include "map/jsondiff.h"

#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "decode/relcache.h"

/* What a message is, in the low bits of its msg_opaque. */
enum { TAG_EVENT = 0, TAG_DEADLETTER = 1, TAG_CHECKPOINT = 2 };
#define TAG_BITS 2
#define TAG_MASK ((uintptr_t)3)

#define WAIT_POLL_MS 100          /* rd_kafka_poll slice while blocked (queue full, commit) */
#define WARN_EVERY_MS 10000       /* repeated "still waiting" warnings */
#define EOS_START_TIMEOUT_MS 120000 /* init_transactions / checkpoint read before giving up */
#define CKPT_WINDOW 256           /* checkpoint records read per backward step */

typedef struct {
    char *name;
    rd_kafka_topic_t *rkt;
} topic_t;

/* A message the broker refused for good, copied out of its delivery report
 * (which may not produce) to be dead-lettered or re-sent after poll returns. */
typedef struct {
    uint64_t seq;
    bool retry;                /* timed out (a user-set message.timeout.ms): send again */
    rd_kafka_resp_err_t err;
    char *topic;
    char *key;
    size_t keylen;
    char *value;               /* NULL: a tombstone */
    size_t len;
    rd_kafka_headers_t *hdrs;  /* owned; NULL when none */
} failed_t;

/* Exactly-once: identity of each message of the open Kafka transaction. */
typedef struct {
    uint64_t commit_lsn;
    uint32_t ordinal;
} eos_msg_t;

/* Exactly-once: a change the broker (or the producer) refused inside a
 * transaction; when the server sends it again it is dead-lettered instead
 * of produced, and the dead-letter file, which no transaction covers, gets
 * it once per process. */
typedef struct {
    uint64_t commit_lsn;
    uint32_t ordinal;
    rd_kafka_resp_err_t err;
    unsigned flags;            /* DL_* */
} poison_t;

/* How a message is dead-lettered. */
enum {
    DL_TOPIC_REFUSED = 1, /* the dead-letter topic refused it too: the file only */
    DL_LOCAL_TOO_BIG = 2, /* the producer refused it as larger than message.max.bytes */
    DL_FILED = 4,         /* the dead-letter file has it already */
};

typedef struct {
    crw_sink_t base;
    bool interruptible; /* produce() may give up on a stop request (a new event only) */
    const crw_config_t *conf;
    crw_pipeline_t *pipeline;
    rd_kafka_t *rk;
    rd_kafka_t *mock_rk;       /* embedded: the handle owning the mock cluster */
    rd_kafka_mock_cluster_t *mock;
    char *bootstrap;           /* as resolved (the mock's address when embedded) */
    bool eos;
    bool binary;
    topic_t *topics;
    int ntopics, last_topic;
    crw_buf_t tname;           /* topic name scratch */
    crw_buf_t scratch;         /* CloudEvents splitting, LSN text */
    rd_kafka_topic_t *dl_rkt;  /* deadletter.topic, once used */
    failed_t *failed;
    int nfailed, capfailed;
    bool in_failed;            /* re-entrancy guard of process_failed() */
    bool fatal;
    char fatal_msg[1024];
    uint64_t delivered, deadlettered;
    int64_t last_warn_ms;

    /* the PostgreSQL transaction being emitted */
    bool partial;              /* events of cur_seq were sent but its commit() has not come */
    uint64_t cur_seq, cur_lsn;
    uint32_t cur_events;

    /* exactly-once */
    char *txn_id;
    rd_kafka_topic_t *ckpt_rkt;
    bool inited;               /* init_transactions done */
    bool resumed;              /* the checkpoint was read */
    bool txn_open;
    uint64_t ckpt_lsn;         /* last complete PostgreSQL transaction in the open Kafka transaction */
    uint64_t committed_lsn;    /* the last checkpoint known committed */
    int64_t txn_started_ms;
    uint64_t *seqs;            /* PostgreSQL transactions holding one delivery in the open transaction */
    int nseqs, capseqs;
    eos_msg_t *msgs;
    size_t nmsgs, capmsgs;
    poison_t *poison;
    int npoison, cappoison;
} kafka_sink_t;

static void keepalive(kafka_sink_t *s) {
    const crw_sink_env_t *env = s->base.env;
    if (env->keepalive)
        env->keepalive(env->keepalive_opaque);
}

/* True once per WARN_EVERY_MS: a wait that goes on is reported, not spammed. */
static bool warn_due(kafka_sink_t *s) {
    int64_t now = crw_clock_mono_ms();
    if (now - s->last_warn_ms < WARN_EVERY_MS)
        return false;
    s->last_warn_ms = now;
    return true;
}

/* ------------------------------------------------------------------ topics */

static bool topic_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
}

static const char *const placeholders[] = {"{schema}", "{table}", "{kind}"};

int crw_kafka_template_check(const char *tmpl, char *errstr, size_t n) {
    if (!*tmpl) {
        snprintf(errstr, n, "topic.template: must not be empty");
        return -1;
    }
    for (const char *p = tmpl; *p;) {
        if (*p == '{') {
            size_t i;
            for (i = 0; i < 3; i++)
                if (!strncmp(p, placeholders[i], strlen(placeholders[i])))
                    break;
            if (i == 3) {
                snprintf(errstr, n, "topic.template: '%s': unknown placeholder at '%.16s' ({schema}, {table}, {kind})",
                         tmpl, p);
                return -1;
            }
            p += strlen(placeholders[i]);
            continue;
        }
        if (!topic_char((unsigned char)*p)) {
            snprintf(errstr, n, "topic.template: '%s': '%c' is not allowed in a Kafka topic name ([A-Za-z0-9._-])",
                     tmpl, *p);
            return -1;
        }
        p++;
    }
    return 0;
}

static void put_topic_part(crw_buf_t *out, const char *v) {
    for (; *v; v++)
        crw_buf_putc(out, topic_char((unsigned char)*v) ? *v : '_');
}

void crw_kafka_topic_expand(crw_buf_t *out, const char *tmpl, const char *schema, const char *table,
                            const char *kind) {
    const char *vals[3] = {schema, table, kind};
    crw_buf_reset(out);
    for (const char *p = tmpl; *p;) {
        if (*p == '{') {
            int i;
            for (i = 0; i < 3; i++)
                if (!strncmp(p, placeholders[i], strlen(placeholders[i])))
                    break;
            if (i < 3) {
                put_topic_part(out, vals[i] ? vals[i] : "");
                p += strlen(placeholders[i]);
                continue;
            }
        }
        crw_buf_putc(out, *p++);
    }
}

static int topic_name_check(const char *key, const char *v, bool may_be_empty, char *errstr, size_t n) {
    if (!*v && !may_be_empty) {
        snprintf(errstr, n, "%s: must not be empty", key);
        return -1;
    }
    for (const char *p = v; *p; p++)
        if (!topic_char((unsigned char)*p)) {
            snprintf(errstr, n, "%s: '%s': '%c' is not allowed in a Kafka topic name ([A-Za-z0-9._-])", key, v, *p);
            return -1;
        }
    if (strlen(v) > 249) {
        snprintf(errstr, n, "%s: longer than Kafka's 249 characters", key);
        return -1;
    }
    return 0;
}

/* The topic handle for ev: the template expanded, then a small cache (a
 * handful of tables; the last hit first) so the hot path does no look-up. */
static rd_kafka_topic_t *topic_for(kafka_sink_t *s, const crw_event_t *ev) {
    const crw_relation_t *rel = ev->rel;
    crw_kafka_topic_expand(&s->tname, s->conf->topic_template, rel ? rel->nspname : "", rel ? rel->relname : "",
                           ev->kind ? ev->kind : rel ? rel->kind : "");
    if (s->last_topic >= 0 && !strcmp(s->topics[s->last_topic].name, s->tname.data))
        return s->topics[s->last_topic].rkt;
    for (int i = 0; i < s->ntopics; i++)
        if (!strcmp(s->topics[i].name, s->tname.data)) {
            s->last_topic = i;
            return s->topics[i].rkt;
        }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(s->rk, s->tname.data, NULL);
    if (!rkt)
        return NULL;
    s->topics = crw_realloc(s->topics, sizeof *s->topics * (size_t)(s->ntopics + 1));
    s->topics[s->ntopics] = (topic_t){crw_strdup(s->tname.data), rkt};
    s->last_topic = s->ntopics++;
    return rkt;
}

/* ------------------------------------------------------ CloudEvents split */

int crw_kafka_ce_split(const char *json, size_t len, crw_buf_t *scratch, crw_kafka_ce_attr_fn fn, void *opaque,
                       const char **data, size_t *datalen) {
    const char *p = json, *end = json + len;
    *data = NULL;
    *datalen = 0;
    p = crw_json_skip_ws(p, end);
    if (p >= end || *p != '{')
        return -1;
    p = crw_json_skip_ws(p + 1, end);
    if (p < end && *p == '}')
        return crw_json_skip_ws(p + 1, end) == end ? 0 : -1;
    for (;;) {
        if (p >= end || *p != '"')
            return -1;
        const char *name = p + 1, *name_end = crw_json_skip_string(p, end);
        if (!name_end)
            return -1;
        size_t namelen = (size_t)(name_end - 1 - name);
        p = crw_json_skip_ws(name_end, end);
        if (p >= end || *p != ':')
            return -1;
        p = crw_json_skip_ws(p + 1, end);
        const char *v = p, *v_end = crw_json_skip_value(p, end);
        if (!v_end)
            return -1;
        if (namelen == 4 && !memcmp(name, "data", 4)) {
            *data = v;
            *datalen = (size_t)(v_end - v);
        } else if (*v == '"') {
            crw_buf_reset(scratch);
            if (crw_json_unescape(scratch, v + 1, (size_t)(v_end - 1 - (v + 1))) < 0)
                return -1;
            fn(opaque, name, namelen, scratch->data, scratch->len);
        } else
            fn(opaque, name, namelen, v, (size_t)(v_end - v));
        p = crw_json_skip_ws(v_end, end);
        if (p < end && *p == ',') {
            p = crw_json_skip_ws(p + 1, end);
            continue;
        }
        if (p >= end || *p != '}')
            return -1;
        return crw_json_skip_ws(p + 1, end) == end ? 0 : -1;
    }
}

/* CloudEvents Kafka binding, binary mode: attribute x -> header ce_x, except
 * datacontenttype -> content-type. */
static void add_ce_header(void *opaque, const char *name, size_t namelen, const char *value, size_t len) {
    rd_kafka_headers_t *h = opaque;
    char hn[128];
    if (namelen == 15 && !memcmp(name, "datacontenttype", 15))
        snprintf(hn, sizeof hn, "content-type");
    else
        snprintf(hn, sizeof hn, "ce_%.*s", (int)namelen, name);
    rd_kafka_header_add(h, hn, -1, value, (ssize_t)len);
}

/* Fields of a structured event the dead-letter file record names. */
typedef struct {
    char source[512];
    char pglsn[32];
    uint32_t xid;
} ev_attrs_t;

static void grab_attr(void *opaque, const char *name, size_t namelen, const char *value, size_t len) {
    ev_attrs_t *a = opaque;
    if (namelen == 6 && !memcmp(name, "source", 6))
        snprintf(a->source, sizeof a->source, "%.*s", (int)len, value);
    else if (namelen == 5 && !memcmp(name, "pglsn", 5))
        snprintf(a->pglsn, sizeof a->pglsn, "%.*s", (int)len, value);
    else if (namelen == 5 && !memcmp(name, "pgxid", 5))
        a->xid = (uint32_t)strtoul(value, NULL, 10);
}

/* ------------------------------------------------------------- producing */

/*
 * Produces one message, copying key and value.  On a full queue it waits:
 * serving delivery reports and keeping the replication connection alive,
 * never dropping (backpressure: the stream is not read meanwhile).
 * hdrs is consumed on success only.
 */
static rd_kafka_resp_err_t produce(kafka_sink_t *s, rd_kafka_topic_t *rkt, int32_t partition, const char *key,
                                   size_t keylen, const char *value, size_t len, rd_kafka_headers_t *hdrs,
                                   uintptr_t tag) {
    rd_kafka_vu_t vu[7];
    size_t n = 0;
    vu[n].vtype = RD_KAFKA_VTYPE_RKT;
    vu[n++].u.rkt = rkt;
    vu[n].vtype = RD_KAFKA_VTYPE_PARTITION;
    vu[n++].u.i32 = partition;
    vu[n].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
    vu[n++].u.i = RD_KAFKA_MSG_F_COPY;
    vu[n].vtype = RD_KAFKA_VTYPE_KEY;
    vu[n].u.mem.ptr = keylen ? (void *)key : NULL;
    vu[n++].u.mem.size = keylen;
    vu[n].vtype = RD_KAFKA_VTYPE_VALUE;
    vu[n].u.mem.ptr = (void *)value;
    vu[n++].u.mem.size = value ? len : 0;
    vu[n].vtype = RD_KAFKA_VTYPE_OPAQUE;
    vu[n++].u.ptr = (void *)tag;
    if (hdrs) {
        vu[n].vtype = RD_KAFKA_VTYPE_HEADERS;
        vu[n++].u.headers = hdrs;
    }
    bool waited = false;
    for (;;) {
        rd_kafka_error_t *e = rd_kafka_produceva(s->rk, vu, n);
        if (!e) {
            if (waited)
                crw_info("kafka: producer queue has room again; reading the stream");
            return RD_KAFKA_RESP_ERR_NO_ERROR;
        }
        rd_kafka_resp_err_t err = rd_kafka_error_code(e);
        rd_kafka_error_destroy(e);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return err;
        if (warn_due(s))
            crw_warn("kafka: producer queue full (%d messages waiting for the broker): not reading the stream",
                     rd_kafka_outq_len(s->rk));
        waited = true;
        rd_kafka_poll(s->rk, WAIT_POLL_MS);
        keepalive(s);
        if (s->fatal)
            return RD_KAFKA_RESP_ERR__FATAL;
        /* A stop request ends the wait for a new event (never for a re-send or
         * dead letter of one already acknowledged to nobody). */
        if (s->interruptible && s->base.env->stop && *s->base.env->stop)
            return RD_KAFKA_RESP_ERR__INTR;
    }
}

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

static void set_fatal(kafka_sink_t *s, const char *fmt, const char *a, const char *b) {
    if (s->fatal)
        return;
    s->fatal = true;
    snprintf(s->fatal_msg, sizeof s->fatal_msg, fmt, a, b);
    crw_error("kafka: %s", s->fatal_msg);
}

/*
 * Dead-letters one message: a durable record in the dead-letter file first
 * (so it may be confirmed), then a copy to deadletter.topic with the error
 * in headers.  The copy holds seq until delivered (at-least-once) or rides
 * in the open transaction (exactly-once).  A value the producer itself
 * refused as too large (DL_LOCAL_TOO_BIG) cannot go to the topic either:
 * that copy carries the headers and no value, and the file has it whole.
 * flags: DL_*.
 * @returns 0, or CRW_ERR_IO when the file cannot be written (stop: nothing may be lost).
 */
static int dead_letter(kafka_sink_t *s, uint64_t seq, const char *topic, const char *key, size_t keylen,
                       const char *value, size_t len, const rd_kafka_headers_t *orig_hdrs, rd_kafka_resp_err_t err,
                       const crw_event_t *ev, unsigned flags) {
    char reason[512];
    snprintf(reason, sizeof reason, "kafka: %s (%s) producing to topic %s", rd_kafka_err2str(err),
             rd_kafka_err2name(err), topic);
    ev_attrs_t a = {{0}, {0}, 0};
    const void *hv;
    size_t hl;
    if (ev) {
        snprintf(a.source, sizeof a.source, "%s", ev->rel && ev->rel->source ? ev->rel->source : "");
        crw_lsn_format(a.pglsn, ev->commit_lsn);
    } else if (orig_hdrs && rd_kafka_header_get_last(orig_hdrs, "ce_source", &hv, &hl) == 0) {
        snprintf(a.source, sizeof a.source, "%.*s", (int)hl, (const char *)hv);
        if (rd_kafka_header_get_last(orig_hdrs, "ce_pglsn", &hv, &hl) == 0)
            snprintf(a.pglsn, sizeof a.pglsn, "%.*s", (int)hl, (const char *)hv);
    } else if (value && s->conf->event_format == CRW_FORMAT_CLOUDEVENTS) {
        const char *d;
        size_t dl;
        crw_kafka_ce_split(value, len, &s->scratch, grab_attr, &a, &d, &dl);
    }
    crw_deadletter_rec_t rec = {reason, a.source[0] ? a.source : NULL, a.pglsn[0] ? a.pglsn : NULL, a.xid,
                                ev ? ev->ordinal : 0, value, value ? len : 0};
    crw_warn("kafka: a %zu-byte event for topic %s was refused (%s): dead-lettered", value ? len : 0, topic,
             rd_kafka_err2name(err));
    if (!(flags & DL_FILED)) {
        if (crw_deadletter_write(s->base.env->deadletter, &rec) < 0) {
            set_fatal(s, "cannot write the dead-letter file %s%s", s->conf->deadletter_file, "");
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
    uintptr_t tag = (uintptr_t)(s->eos ? s->nmsgs : seq) << TAG_BITS | TAG_DEADLETTER;
    if (s->eos && ev) {
        if (s->nmsgs == s->capmsgs) {
            s->capmsgs = s->capmsgs ? s->capmsgs * 2 : 1024;
            s->msgs = crw_realloc(s->msgs, sizeof *s->msgs * s->capmsgs);
        }
        s->msgs[s->nmsgs++] = (eos_msg_t){ev->commit_lsn, ev->ordinal};
    }
    if (!s->eos)
        crw_pipeline_hold(s->pipeline, seq, 1);
    rd_kafka_resp_err_t e = produce(s, s->dl_rkt, RD_KAFKA_PARTITION_UA, key, keylen, too_big ? NULL : value,
                                    too_big ? 0 : len, h, tag);
    if (e) {
        rd_kafka_headers_destroy(h);
        if (!s->eos)
            crw_pipeline_release(s->pipeline, seq, 1);
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
            rd_kafka_resp_err_t e = produce(s, rkt, RD_KAFKA_PARTITION_UA, f->key, f->keylen, f->value, f->len,
                                            f->hdrs, (uintptr_t)f->seq << TAG_BITS | TAG_EVENT);
            rd_kafka_topic_destroy(rkt);
            if (!e)
                f->hdrs = NULL; /* consumed */
            else
                set_fatal(s, "cannot send a timed-out message again: %s%s", rd_kafka_err2str(e), "");
        } else if (!s->fatal) {
            if (dead_letter(s, f->seq, f->topic, f->key, f->keylen, f->value, f->len, f->hdrs, f->err, NULL, 0) == 0)
                crw_pipeline_release(s->pipeline, f->seq, 1);
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

static void queue_failed(kafka_sink_t *s, const rd_kafka_message_t *m, uint64_t seq, bool retry) {
    if (s->nfailed == s->capfailed) {
        s->capfailed = s->capfailed ? s->capfailed * 2 : 16;
        s->failed = crw_realloc(s->failed, sizeof *s->failed * (size_t)s->capfailed);
    }
    failed_t *f = &s->failed[s->nfailed++];
    *f = (failed_t){seq, retry, m->err, crw_strdup(rd_kafka_topic_name(m->rkt)), NULL, m->key_len, NULL, m->len, NULL};
    if (m->key)
        f->key = crw_strndup(m->key, m->key_len);
    if (m->payload)
        f->value = crw_strndup(m->payload, m->len);
    rd_kafka_headers_t *h;
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR)
        f->hdrs = rd_kafka_headers_copy(h);
}

static void poison_add(kafka_sink_t *s, uint64_t lsn, uint32_t ordinal, rd_kafka_resp_err_t err, unsigned flags) {
    for (int i = 0; i < s->npoison; i++)
        if (s->poison[i].commit_lsn == lsn && s->poison[i].ordinal == ordinal) {
            s->poison[i].flags |= flags;
            return;
        }
    if (s->npoison == s->cappoison) {
        s->cappoison = s->cappoison ? s->cappoison * 2 : 8;
        s->poison = crw_realloc(s->poison, sizeof *s->poison * (size_t)s->cappoison);
    }
    s->poison[s->npoison++] = (poison_t){lsn, ordinal, err, flags};
}

/* Delivery report: on the main thread, inside rd_kafka_poll/flush. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    kafka_sink_t *s = opaque;
    uintptr_t tag = (uintptr_t)m->_private;
    int kind = (int)(tag & TAG_MASK);
    uint64_t id = (uint64_t)(tag >> TAG_BITS);
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (kind == TAG_EVENT)
            s->delivered++;
        if (!s->eos && kind != TAG_CHECKPOINT)
            crw_pipeline_release(s->pipeline, id, 1);
        return;
    }
    if (m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
        return; /* stopping without delivery: never acknowledged, sent again next time */
    if (s->eos) {
        /* The transaction cannot commit now (librdkafka makes it abortable);
         * remember the change so its second coming is dead-lettered. */
        if (kind != TAG_CHECKPOINT && per_message_error(m->err) && id < s->nmsgs)
            poison_add(s, s->msgs[id].commit_lsn, s->msgs[id].ordinal, m->err,
                       kind == TAG_DEADLETTER ? DL_TOPIC_REFUSED | DL_FILED : 0);
        else if (kind == TAG_CHECKPOINT || !per_message_error(m->err))
            crw_warn("kafka: a message of the open transaction failed: %s", rd_kafka_err2str(m->err));
        return;
    }
    if (m->err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT && kind == TAG_EVENT) {
        queue_failed(s, m, id, true);
        return;
    }
    if (per_message_error(m->err)) {
        if (kind == TAG_DEADLETTER) {
            crw_error("kafka: the dead-letter topic refused a record (%s); the dead-letter file has it",
                      rd_kafka_err2name(m->err));
            crw_pipeline_release(s->pipeline, id, 1);
        } else
            queue_failed(s, m, id, false);
        return;
    }
    set_fatal(s, "delivery failed for good: %s (%s); stopping with nothing confirmed past it",
              rd_kafka_err2str(m->err), rd_kafka_err2name(m->err));
}

/* Global errors: on the main thread, inside rd_kafka_poll. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    kafka_sink_t *s = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof buf);
        set_fatal(s, "fatal producer error: %s (%s)", buf, rd_kafka_err2name(orig));
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

/* The mock cluster's and the checkpoint reader's handles: their
 * configuration notices (no bootstrap.servers, producer-only properties)
 * are expected; only debug shows them. */
static void on_log_quiet(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk;
    CRW_LOG(level <= 3 ? CRW_LOG_WARN : CRW_LOG_DEBUG, "kafka: [%s] %s", fac, buf);
}

/* ------------------------------------------------------------ exactly-once */

static void eos_reset(kafka_sink_t *s) {
    s->txn_open = false;
    s->partial = false;
    s->nseqs = 0;
    s->nmsgs = 0;
    s->ckpt_lsn = 0;
}

/* Waits for a librdkafka transactional call that may time out and be retried. */
typedef rd_kafka_error_t *(*txn_call_fn)(rd_kafka_t *rk, int timeout_ms);

static rd_kafka_error_t *txn_wait(kafka_sink_t *s, txn_call_fn call, const char *what, int64_t deadline) {
    for (;;) {
        rd_kafka_error_t *e = call(s->rk, 1000);
        if (!e || !rd_kafka_error_is_retriable(e) || crw_clock_mono_ms() >= deadline || s->fatal)
            return e;
        if (warn_due(s))
            crw_warn("kafka: %s is waiting for the broker: %s", what, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        rd_kafka_poll(s->rk, 0);
        keepalive(s);
    }
}

/*
 * Aborts the open transaction.  Its PostgreSQL transactions were not
 * confirmed; they are abandoned in the pipeline (with everything after
 * them), and the caller must make the stream reconnect so the server sends
 * them again from the confirmed position.
 */
static int eos_abort(kafka_sink_t *s) {
    if (!s->txn_open)
        return 0;
    rd_kafka_error_t *e = txn_wait(s, rd_kafka_abort_transaction, "aborting a transaction",
                                   crw_clock_mono_ms() + EOS_START_TIMEOUT_MS);
    int rc = 0;
    if (e) {
        /* The next producer with this transactional.id fences and aborts it anyway. */
        set_fatal(s, "cannot abort the Kafka transaction: %s%s", rd_kafka_error_string(e), "");
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
static int eos_commit(kafka_sink_t *s, int64_t deadline) {
    if (!s->txn_open)
        return 0;
    if (s->ckpt_lsn) {
        char v[CRW_LSN_BUFSIZE];
        crw_lsn_format(v, s->ckpt_lsn);
        const char *slot = s->conf->slot_name;
        /* Partition 0 always: where the checkpoint is does not depend on the
         * partitioner or on partitions added later. */
        rd_kafka_resp_err_t e =
            produce(s, s->ckpt_rkt, 0, slot, strlen(slot), v, strlen(v), NULL, (uintptr_t)TAG_CHECKPOINT);
        if (e) {
            /* __STATE: a message of the transaction failed, which librdkafka
             * has reported already; the transaction can only be aborted. */
            CRW_LOG(e == RD_KAFKA_RESP_ERR__STATE ? CRW_LOG_WARN : CRW_LOG_ERROR,
                    "kafka: the transaction cannot commit (%s producing its checkpoint record)", rd_kafka_err2str(e));
            return eos_abort(s) < 0 ? CRW_ERR_SINK : CRW_ERR_CONN;
        }
    }
    rd_kafka_error_t *err = txn_wait(s, rd_kafka_commit_transaction, "committing a transaction", deadline);
    if (err) {
        bool abortable = rd_kafka_error_txn_requires_abort(err);
        bool retriable = rd_kafka_error_is_retriable(err);
        crw_warn("kafka: transaction commit failed: %s", rd_kafka_error_string(err));
        rd_kafka_error_destroy(err);
        if (abortable || retriable) /* retriable here: the deadline passed */
            return eos_abort(s) < 0 ? CRW_ERR_SINK : CRW_ERR_CONN;
        set_fatal(s, "transaction commit failed for good%s%s", "", "");
        return CRW_ERR_SINK;
    }
    if (s->ckpt_lsn > s->committed_lsn)
        s->committed_lsn = s->ckpt_lsn;
    /* Changes at or below the checkpoint never come again: forget their poison. */
    int kept = 0;
    for (int i = 0; i < s->npoison; i++)
        if (s->poison[i].commit_lsn > s->committed_lsn)
            s->poison[kept++] = s->poison[i];
    s->npoison = kept;
    for (int i = 0; i < s->nseqs; i++)
        crw_pipeline_release(s->pipeline, s->seqs[i], 1);
    crw_debug("kafka: committed a transaction of %zu messages, checkpoint " CRW_LSN_FMT, s->nmsgs,
              CRW_LSN_ARGS(s->committed_lsn));
    eos_reset(s);
    return 0;
}

static int eos_init(kafka_sink_t *s) {
    if (s->inited)
        return 0;
    /* Fences any earlier producer with this transactional.id and aborts its
     * open transaction, so read_committed readers (ours included) get past it. */
    rd_kafka_error_t *e = txn_wait(s, rd_kafka_init_transactions, "init_transactions",
                                   crw_clock_mono_ms() + EOS_START_TIMEOUT_MS);
    if (e) {
        set_fatal(s, "cannot initialise transactions (transactional.id %s): %s", s->txn_id,
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
static void ensure_checkpoint_topic(kafka_sink_t *s) {
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
static int read_checkpoint(kafka_sink_t *s, uint64_t *lsn) {
    char errstr[512];
    *lsn = 0;
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    for (int i = 0; i < s->conf->nkafka; i++) {
        const crw_kv_t *kv = &s->conf->kafka[i];
        /* Producer-only settings are ignored by a consumer (and logged at debug). */
        if (rd_kafka_conf_set(kc, kv->key, kv->value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
            crw_debug("kafka: checkpoint reader: kafka.%s not applied", kv->key);
    }
    char group[300];
    snprintf(group, sizeof group, "crwatch-checkpoint-reader.%s", s->conf->slot_name);
    const char *fixed[][2] = {{"bootstrap.servers", s->bootstrap}, {"group.id", group},
                              {"isolation.level", "read_committed"}, {"enable.partition.eof", "true"},
                              {"enable.auto.commit", "false"},      {"enable.auto.offset.store", "false"},
                              {"client.id", "crwatch-checkpoint-reader"}};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        rd_kafka_conf_set(kc, fixed[i][0], fixed[i][1], errstr, sizeof errstr);
    rd_kafka_conf_set_log_cb(kc, on_log_quiet);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, sizeof errstr);
    if (!c) {
        rd_kafka_conf_destroy(kc);
        set_fatal(s, "checkpoint reader: %s%s", errstr, "");
        return CRW_ERR_SINK;
    }
    const char *topic = s->conf->checkpoint_topic, *slot = s->conf->slot_name;
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
            set_fatal(s, "cannot read the checkpoint topic: %s%s", rd_kafka_err2str(err), "");
            rc = CRW_ERR_SINK;
            goto out;
        }
        if (warn_due(s))
            crw_warn("kafka: reading checkpoint topic %s: %s; retrying", topic, rd_kafka_err2str(err));
        keepalive(s);
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
                keepalive(s);
                if (crw_clock_mono_ms() >= deadline) {
                    set_fatal(s, "timed out reading the checkpoint topic %s%s", topic, "");
                    rc = CRW_ERR_SINK;
                    goto out;
                }
                continue;
            }
            bool done = false;
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
                done = true;
            else if (m->err) {
                if (warn_due(s))
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

/* ------------------------------------------------------------------ ops */

/* The index of ev's entry in the poison list, or -1. */
static int eos_poisoned(const kafka_sink_t *s, const crw_event_t *ev) {
    for (int i = 0; i < s->npoison; i++)
        if (s->poison[i].commit_lsn == ev->commit_lsn && s->poison[i].ordinal == ev->ordinal)
            return i;
    return -1;
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
    s->cur_lsn = ev->commit_lsn;
    if (s->eos) {
        int rc = eos_init(s);
        if (rc < 0)
            return rc;
        if (!s->txn_open) {
            rd_kafka_error_t *e = rd_kafka_begin_transaction(s->rk);
            if (e) {
                set_fatal(s, "cannot begin a transaction: %s%s", rd_kafka_error_string(e), "");
                rd_kafka_error_destroy(e);
                return CRW_ERR_SINK;
            }
            s->txn_open = true;
            s->txn_started_ms = crw_clock_mono_ms();
        }
        /* One hold per PostgreSQL transaction, released at the Kafka commit. */
        if (first) {
            crw_pipeline_hold(s->pipeline, ev->txn, 1);
            if (s->nseqs == s->capseqs) {
                s->capseqs = s->capseqs ? s->capseqs * 2 : 64;
                s->seqs = crw_realloc(s->seqs, sizeof *s->seqs * (size_t)s->capseqs);
            }
            s->seqs[s->nseqs++] = ev->txn;
        }
        int pi = eos_poisoned(s, ev);
        if (pi >= 0) {
            topic_for(s, ev);
            if (dead_letter(s, ev->txn, s->tname.data, ev->key, ev->keylen, ev->value, ev->len, NULL,
                            s->poison[pi].err, ev, s->poison[pi].flags) < 0)
                return CRW_ERR_IO;
            s->poison[pi].flags |= DL_FILED; /* by index: delivery reports may have grown the list */
            return 0;
        }
        if (s->nmsgs == s->capmsgs) {
            s->capmsgs = s->capmsgs ? s->capmsgs * 2 : 1024;
            s->msgs = crw_realloc(s->msgs, sizeof *s->msgs * s->capmsgs);
        }
        s->msgs[s->nmsgs] = (eos_msg_t){ev->commit_lsn, ev->ordinal};
    } else
        crw_pipeline_hold(s->pipeline, ev->txn, 1);

    rd_kafka_topic_t *rkt = topic_for(s, ev);
    if (!rkt) {
        set_fatal(s, "cannot create a handle for topic %s: %s", s->tname.data, rd_kafka_err2str(rd_kafka_last_error()));
        return CRW_ERR_SINK;
    }
    const char *value = ev->value;
    size_t len = ev->len;
    rd_kafka_headers_t *hdrs = NULL;
    if (s->binary && value) {
        const char *data;
        size_t datalen;
        hdrs = rd_kafka_headers_new(10);
        if (crw_kafka_ce_split(ev->value, ev->len, &s->scratch, add_ce_header, hdrs, &data, &datalen) < 0) {
            rd_kafka_headers_destroy(hdrs);
            set_fatal(s, "binary content mode: the event is not a CloudEvents JSON object (topic %s)%s",
                      s->tname.data, "");
            return CRW_ERR_SINK;
        }
        value = data;
        len = datalen;
    }
    uintptr_t tag = (uintptr_t)(s->eos ? s->nmsgs : ev->txn) << TAG_BITS | TAG_EVENT;
    s->interruptible = true;
    rd_kafka_resp_err_t err = produce(s, rkt, RD_KAFKA_PARTITION_UA, ev->key, ev->keylen, value, len, hdrs, tag);
    s->interruptible = false;
    if (err == RD_KAFKA_RESP_ERR__INTR) {
        /* Stopping while the queue was full: the event was not sent and the
         * transaction stays unconfirmed; the server sends it again. */
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        if (!s->eos)
            crw_pipeline_release(s->pipeline, ev->txn, 1);
        return CRW_ERR_STOPPED;
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (s->eos)
            s->nmsgs++;
        return 0;
    }
    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    if (per_message_error(err)) {
        /* Refused before it left (larger than message.max.bytes): dead-letter
         * it now; within the open transaction under exactly-once, where it is
         * also remembered, so an aborted transaction's second try does not
         * file it twice. */
        int rc = dead_letter(s, ev->txn, s->tname.data, ev->key, ev->keylen, ev->value, ev->len, NULL, err, ev,
                             DL_LOCAL_TOO_BIG);
        if (!s->eos)
            crw_pipeline_release(s->pipeline, ev->txn, 1);
        else if (rc == 0)
            poison_add(s, ev->commit_lsn, ev->ordinal, err, DL_LOCAL_TOO_BIG | DL_FILED);
        return rc < 0 ? CRW_ERR_IO : 0;
    }
    if (!s->eos)
        crw_pipeline_release(s->pipeline, ev->txn, 1);
    if (err == RD_KAFKA_RESP_ERR__STATE && s->eos) {
        /* The transaction went abortable (a failed message): abort, reconnect, send again. */
        crw_warn("kafka: the transaction cannot continue; aborting it and restarting the stream");
        return eos_abort(s) < 0 ? CRW_ERR_SINK : CRW_ERR_CONN;
    }
    set_fatal(s, "cannot produce to %s: %s", s->tname.data, rd_kafka_err2str(err));
    return CRW_ERR_SINK;
}

static int kafka_commit(crw_sink_t *base, uint64_t txn) {
    kafka_sink_t *s = (kafka_sink_t *)base;
    if (s->fatal)
        return CRW_ERR_SINK;
    if (s->partial && s->cur_seq == txn) {
        s->partial = false;
        s->ckpt_lsn = s->cur_lsn;
    }
    if (!s->eos)
        return 0; /* in flight: delivery reports release the holds */
    if (s->txn_open && !s->partial && crw_clock_mono_ms() - s->txn_started_ms >= s->conf->transaction_interval_ms)
        return eos_commit(s, crw_clock_mono_ms() + EOS_START_TIMEOUT_MS);
    return 0;
}

static int kafka_poll(crw_sink_t *base, int timeout_ms) {
    kafka_sink_t *s = (kafka_sink_t *)base;
    rd_kafka_poll(s->rk, timeout_ms);
    process_failed(s);
    if (s->fatal)
        return CRW_ERR_SINK;
    /* An idle stream still commits what it has (latency is bounded by the interval). */
    if (s->eos && s->txn_open && !s->partial && crw_clock_mono_ms() - s->txn_started_ms >= s->conf->transaction_interval_ms)
        return eos_commit(s, crw_clock_mono_ms() + EOS_START_TIMEOUT_MS);
    return 0;
}

static int kafka_drain(crw_sink_t *base, int timeout_ms) {
    kafka_sink_t *s = (kafka_sink_t *)base;
    int64_t deadline = crw_clock_mono_ms() + timeout_ms;
    if (s->eos) {
        if (!s->txn_open)
            return s->fatal ? CRW_ERR_SINK : 0;
        if (s->partial) {
            /* Stopped mid-transaction: it is sent again, whole, next time. */
            eos_abort(s);
            return 0;
        }
        return eos_commit(s, deadline) == 0 ? 0 : CRW_ERR_SINK;
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

static int kafka_resume_lsn(crw_sink_t *base, uint64_t *lsn) {
    kafka_sink_t *s = (kafka_sink_t *)base;
    *lsn = 0;
    if (!s->eos)
        return 0;
    /* A reconnect: the server sends again from the slot's confirmed position.
     * A transaction cut in the middle cannot commit; a whole one can. */
    if (s->txn_open) {
        if (s->partial)
            eos_abort(s);
        else
            eos_commit(s, crw_clock_mono_ms() + EOS_START_TIMEOUT_MS);
    }
    int rc = eos_init(s);
    if (rc < 0)
        return rc;
    if (!s->resumed) {
        uint64_t v;
        if ((rc = read_checkpoint(s, &v)) < 0)
            return rc;
        if (v > s->committed_lsn)
            s->committed_lsn = v;
        s->resumed = true;
    }
    *lsn = s->committed_lsn;
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
    for (int i = 0; i < s->ntopics; i++) {
        rd_kafka_topic_destroy(s->topics[i].rkt);
        free(s->topics[i].name);
    }
    free(s->topics);
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
    crw_buf_free(&s->scratch);
    free(s->bootstrap);
    free(s->txn_id);
    free(s->seqs);
    free(s->msgs);
    free(s->poison);
    free(s);
}

static const crw_sink_ops_t kafka_ops = {
    .name = "kafka",
    .emit = kafka_emit,
    .commit = kafka_commit,
    .poll = kafka_poll,
    .drain = kafka_drain,
    .resume_lsn = kafka_resume_lsn,
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

crw_sink_t *crw_sink_kafka_new(const crw_sink_env_t *env, int *err, char *errstr, size_t n) {
    const crw_config_t *c = env->conf;
    *err = CRW_ERR_CONFIG;
    const char *bs = user_prop(c, "bootstrap.servers");
    if (!bs || !*bs) {
        snprintf(errstr, n, "kafka.bootstrap.servers: required with sink=kafka (host:port,... or 'embedded')");
        return NULL;
    }
    bool eos = c->delivery == CRW_DELIVERY_EXACTLY_ONCE;
    if (crw_kafka_template_check(c->topic_template, errstr, n) < 0 ||
        topic_name_check("deadletter.topic", c->deadletter_topic, true, errstr, n) < 0 ||
        (eos && topic_name_check("checkpoint.topic", c->checkpoint_topic, false, errstr, n) < 0))
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
    const char *txn_id = user_prop(c, "transactional.id");
    if (eos) {
        crw_buf_t b = CRW_BUF_INIT;
        if (txn_id)
            crw_buf_puts(&b, txn_id);
        else
            crw_buf_printf(&b, "crwatch.%s", c->slot_name); /* stable across restarts of this slot */
        s->txn_id = b.data;
    }

    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    if (!strcmp(bs, "embedded")) {
        rd_kafka_conf_t *mc = rd_kafka_conf_new();
        rd_kafka_conf_set_log_cb(mc, on_log_quiet);
        char e[256];
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
            ensure_checkpoint_topic(s);
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
