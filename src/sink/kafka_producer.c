/*
 * kafka_producer.c — the Kafka sink's producing: produce() with
 * backpressure, the identities of messages in flight (kmsg_t, see
 * kafka_int.h) and the sink's fatal state.  kafka.c (the ops, delivery
 * reports, dead letters) and kafka_eos.c (transactions) both produce
 * through here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "sink/kafka_int.h"

#define KMSG_SLAB 1024 /* message identities allocated at a time */

void kafka_keepalive(kafka_sink_t *s) {
    const crw_sink_env_t *env = s->base.env;
    if (env->keepalive)
        env->keepalive(env->keepalive_opaque);
}

/* True once per WARN_EVERY_MS: a wait that goes on is reported, not spammed. */
bool kafka_warn_due(kafka_sink_t *s) {
    int64_t now = crw_clock_mono_ms();
    if (now - s->last_warn_ms < WARN_EVERY_MS)
        return false;
    s->last_warn_ms = now;
    return true;
}

void kafka_set_fatal(kafka_sink_t *s, const char *fmt, const char *a, const char *b) {
    if (s->fatal)
        return;
    s->fatal = true;
    snprintf(s->fatal_msg, sizeof s->fatal_msg, fmt, a, b);
    crw_error("kafka: %s", s->fatal_msg);
}

/* ---- message identities ---------------------------------------------- */

kmsg_t *kafka_kmsg_new(kafka_sink_t *s, int what, const kmsg_t *from) {
    if (!s->free_kmsgs) {
        kmsg_t *slab = crw_malloc(sizeof *slab * KMSG_SLAB);
        for (int i = 0; i < KMSG_SLAB; i++)
            slab[i].next = i + 1 < KMSG_SLAB ? &slab[i + 1] : NULL;
        s->slabs = crw_realloc(s->slabs, sizeof *s->slabs * (size_t)(s->nslabs + 1));
        s->slabs[s->nslabs++] = slab;
        s->free_kmsgs = slab;
    }
    kmsg_t *m = s->free_kmsgs;
    s->free_kmsgs = m->next;
    *m = from ? *from : (kmsg_t){0};
    m->next = NULL;
    m->what = what;
    return m;
}

void kafka_kmsg_put(kafka_sink_t *s, kmsg_t *m) {
    m->next = s->free_kmsgs;
    s->free_kmsgs = m;
}

/* The identity of ev's change (its source interned). */
kmsg_t kafka_identity(kafka_sink_t *s, const crw_event_t *ev) {
    return (kmsg_t){NULL, KMSG_EVENT, ev->txn, ev->position, ev->lsn, ev->ordinal, ev->xid,
                    crw_names_intern(&s->sources, ev->source), 0};
}

kmsg_t *kafka_kmsg(kafka_sink_t *s, int what, const crw_event_t *ev) {
    kmsg_t id = ev ? kafka_identity(s, ev) : (kmsg_t){0};
    return kafka_kmsg_new(s, what, &id);
}

/*
 * Produces one message, copying key and value.  On a full queue it waits:
 * serving delivery reports and keeping the source's connection alive, never
 * dropping (backpressure: the stream is not read meanwhile).  hdrs is
 * consumed on success only; id always is (its delivery report, or a
 * failure here, gives it back).
 */
rd_kafka_resp_err_t kafka_produce(kafka_sink_t *s, rd_kafka_topic_t *rkt, int32_t partition, const char *key,
                                  size_t keylen, const char *value, size_t len, rd_kafka_headers_t *hdrs, kmsg_t *id) {
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
    vu[n++].u.ptr = id;
    if (hdrs) {
        vu[n].vtype = RD_KAFKA_VTYPE_HEADERS;
        vu[n++].u.headers = hdrs;
    }
    bool waited = false;
    for (;;) {
        id->produced_us = crw_clock_mono_us(); /* read back by its delivery report, on this thread */
        rd_kafka_error_t *e = rd_kafka_produceva(s->rk, vu, n);
        if (!e) {
            if (waited)
                crw_info("kafka: producer queue has room again; reading the stream");
            return RD_KAFKA_RESP_ERR_NO_ERROR;
        }
        rd_kafka_resp_err_t err = rd_kafka_error_code(e);
        rd_kafka_error_destroy(e);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            kafka_kmsg_put(s, id);
            return err;
        }
        if (kafka_warn_due(s))
            crw_warn("kafka: producer queue full (%d messages waiting for the broker): not reading the stream",
                     rd_kafka_outq_len(s->rk));
        waited = true;
        rd_kafka_poll(s->rk, WAIT_POLL_MS);
        kafka_keepalive(s);
        /* A stop request ends the wait for a new event (never for a re-send or
         * dead letter of one already acknowledged to nobody). */
        rd_kafka_resp_err_t stop = RD_KAFKA_RESP_ERR_NO_ERROR;
        if (s->fatal)
            stop = RD_KAFKA_RESP_ERR__FATAL;
        else if (s->interruptible && s->base.env->stop && *s->base.env->stop)
            stop = RD_KAFKA_RESP_ERR__INTR;
        if (stop) {
            kafka_kmsg_put(s, id);
            return stop;
        }
    }
}

/* The mock cluster's and the checkpoint reader's handles: their
 * configuration notices (no bootstrap.servers, producer-only properties)
 * are expected; only debug shows them. */
void kafka_on_log_quiet(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk;
    CRW_LOG(level <= 3 ? CRW_LOG_WARN : CRW_LOG_DEBUG, "kafka: [%s] %s", fac, buf);
}

