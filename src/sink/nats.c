/*
 * nats.c — the NATS JetStream sink (sink=nats, docs/nats.md): every event
 * published to JetStream with libnats (the cnats client), acknowledged to
 * the pipeline only on JetStream's publish acknowledgement.
 *
 * Publishing is asynchronous (js_PublishMsgAsync) through a window of at
 * most nats.max.pending messages: emit() holds the event's pipeline
 * delivery and puts its message at the tail of the window; libnats calls
 * on_ack() on a thread of its own with JetStream's answer, and that only
 * queues it (the sink's mutex); poll(), emit() and drain() apply the
 * answers on the main thread: an acknowledged message releases its hold.
 * A full window waits inside emit(), calling env->keepalive (backpressure).
 *
 * Order and nothing lost.  JetStream stores one publisher's messages in the
 * order they arrive, so each subject (each key) keeps commit order as long
 * as nothing is lost in between.  The messages stay ours until JetStream
 * acknowledged them.  A failed publish (no acknowledgement within
 * nats.publish.timeout.ms, no responders, the connection lost) stops the
 * window: nothing new goes out; once nothing is in flight any more the
 * oldest unacknowledged message is sent again, alone, until JetStream takes
 * it (with the reconnect backoff between tries), then everything after it,
 * in order.  What JetStream had stored already comes back as a duplicate
 * (Nats-Msg-Id within the stream's duplicate window) and is not stored
 * twice.  The connection's reconnect buffer is off (size 0), so nothing
 * published while libnats reconnects can overtake what the lost connection
 * swallowed; a lost connection makes every message in flight ours again at
 * once (js_PublishAsyncGetPendingList).  Nothing is ever handed back to the
 * source (no crw_pipeline_abandon): the slot simply stays where JetStream's
 * acknowledgements put it.  A message JetStream or the client refuses for
 * its size is dead-lettered (the file), its hold released, and the stream
 * goes on.
 *
 * Nats-Msg-Id is "<source>:<id>" (CloudEvents makes source + id unique;
 * two shards into one stream may otherwise meet the same "<LSN>/<n>"), and
 * with event.format=debezium ":<type>" after it (a key change's DELETED and
 * ADDED share their change's id).
 *
 * Subjects: nats.subject.template with {schema}, {table}, {kind} and {key},
 * each value escaped into exactly one subject token (put_token).
 */
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "core/metrics.h"
#include "core/strmap.h"
#include "sink/sink.h"

#include <nats/nats.h>

#define WAIT_SLICE_MS 100    /* waiting for acknowledgements: keepalive at least this often */
#define WARN_EVERY_MS 10000  /* a wait that goes on is reported this often */
#define TOKEN_MAX 256        /* an escaped subject token longer than this is shortened */
#define TOKEN_KEEP 239       /* ... to this many bytes, '~' and 16 hex digits of its hash */
#define API_WAIT_MS 5000     /* JetStream API requests (stream info, create) */

/* ---- the subject template ------------------------------------------------ */

enum { P_LIT = -1, P_SCHEMA, P_TABLE, P_KIND, P_KEY, P_N };
static const char *const placeholder[P_N] = {"{schema}", "{table}", "{kind}", "{key}"};

typedef struct {
    int what;  /* P_* */
    char *lit; /* P_LIT: the literal text */
} tpart_t;

/* A byte of a value that cannot stand in a subject token as it is. */
static bool token_escaped(unsigned char c) {
    return c == '.' || c == '*' || c == '>' || c == '%' || c <= 0x20 || c == 0x7f;
}

static uint64_t fnv1a64(const char *p, size_t n) {
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/*
 * Appends v as one subject token: '.', '*', '>', '%', space and control
 * bytes as %XX (upper-case hex), so the token is NATS-safe and the value can
 * be read back; an empty value as "_"; a token longer than TOKEN_MAX as its
 * first TOKEN_KEEP bytes (never cutting an escape or a UTF-8 character), '~'
 * and the FNV-1a 64 hash of the whole value in 16 hex digits.
 */
static void put_token(crw_buf_t *out, const char *v, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    size_t start = out->len;
    if (n == 0) {
        crw_buf_putc(out, '_');
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (token_escaped(c)) {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            crw_buf_put(out, e, 3);
        } else
            crw_buf_putc(out, (char)c);
    }
    if (out->len - start <= TOKEN_MAX)
        return;
    size_t cut = start + TOKEN_KEEP;
    while (cut > start && ((unsigned char)out->data[cut] & 0xC0) == 0x80)
        cut--; /* not inside a UTF-8 character */
    if (out->data[cut - 1] == '%')
        cut -= 1; /* not inside an escape: every '%' here starts one */
    else if (cut - start >= 2 && out->data[cut - 2] == '%')
        cut -= 2;
    out->len = cut;
    char tail[18];
    snprintf(tail, sizeof tail, "~%016" PRIx64, fnv1a64(v, n));
    crw_buf_puts(out, tail);
}

static void template_free(tpart_t *t, int n) {
    for (int i = 0; i < n; i++)
        free(t[i].lit);
    free(t);
}

/*
 * Parses tmpl into parts, and writes into filter the stream subject that
 * takes every subject it makes (each token holding a placeholder as '*').
 * @returns the number of parts, or -1 with errstr.
 */
static int template_parse(const char *tmpl, tpart_t **parts, crw_buf_t *filter, char *errstr, size_t n) {
    const char *key = "nats.subject.template";
    tpart_t *t = NULL;
    int np = 0;
    crw_buf_t shape = CRW_BUF_INIT; /* the template with every placeholder as 'x': the token structure */
    crw_buf_reset(filter);
    if (!*tmpl) {
        snprintf(errstr, n, "%s: must not be empty", key);
        goto fail;
    }
    for (const char *p = tmpl; *p;) {
        int what = P_LIT;
        if (*p == '{') {
            for (what = 0; what < P_N; what++)
                if (!strncmp(p, placeholder[what], strlen(placeholder[what])))
                    break;
            if (what == P_N) {
                snprintf(errstr, n, "%s: '%s': unknown placeholder at '%.16s' ({schema}, {table}, {kind}, {key})",
                         key, tmpl, p);
                goto fail;
            }
        } else if (*p == '*' || *p == '>' || (unsigned char)*p <= 0x20 || *p == 0x7f) {
            snprintf(errstr, n, "%s: '%s': '%c' cannot be in a subject crwatch publishes to (no wildcards, "
                     "no spaces or control characters)", key, tmpl, (unsigned char)*p > 0x20 ? *p : '?');
            goto fail;
        }
        t = crw_realloc(t, sizeof *t * (size_t)(np + 1));
        if (what != P_LIT) {
            t[np++] = (tpart_t){what, NULL};
            crw_buf_putc(&shape, 'x');
            p += strlen(placeholder[what]);
            continue;
        }
        const char *e = p;
        while (*e && *e != '{' && *e != '*' && *e != '>' && (unsigned char)*e > 0x20 && *e != 0x7f)
            e++;
        t[np++] = (tpart_t){P_LIT, crw_strndup(p, (size_t)(e - p))};
        crw_buf_put(&shape, p, (size_t)(e - p));
        p = e;
    }
    const char *sh = shape.data;
    if (sh[0] == '.' || sh[shape.len - 1] == '.' || strstr(sh, "..")) {
        snprintf(errstr, n, "%s: '%s' makes an empty subject token (a '.' at an end, or '..')", key, tmpl);
        goto fail;
    }
    /* The stream's subject: a token with a placeholder matches any token. */
    for (const char *tok = tmpl; tok;) {
        const char *dot = strchr(tok, '.');
        size_t len = dot ? (size_t)(dot - tok) : strlen(tok);
        if (filter->len)
            crw_buf_putc(filter, '.');
        if (memchr(tok, '{', len))
            crw_buf_putc(filter, '*');
        else
            crw_buf_put(filter, tok, len);
        tok = dot ? dot + 1 : NULL;
    }
    crw_buf_free(&shape);
    *parts = t;
    return np;
fail:
    crw_buf_free(&shape);
    template_free(t, np);
    return -1;
}

/* True when the stream subject filter `s` takes every subject of the pattern `p` (whose wildcards are '*'). */
static bool subject_covers(const char *s, const char *p) {
    for (;;) {
        const char *sd = strchr(s, '.'), *pd = strchr(p, '.');
        size_t sl = sd ? (size_t)(sd - s) : strlen(s), pl = pd ? (size_t)(pd - p) : strlen(p);
        if (sl == 1 && *s == '>')
            return true;
        if (!(sl == 1 && *s == '*') && (pl == 1 && *p == '*'))
            return false;
        if (!(sl == 1 && *s == '*') && (sl != pl || memcmp(s, p, sl)))
            return false;
        if (!sd || !pd)
            return !sd && !pd;
        s = sd + 1;
        p = pd + 1;
    }
}

/* ---- the sink ------------------------------------------------------------- */

/* Where a message of the window stands. */
enum { E_TOSEND = 0, E_INFLIGHT = 1, E_DONE = 2 };

typedef struct {
    natsMsg *msg;       /* ours unless E_INFLIGHT (libnats'); NULL once E_DONE */
    uint64_t seq;       /* pipeline transaction */
    uint64_t lsn;       /* what a dead-letter record names */
    uint32_t ordinal;
    uint32_t xid;
    const char *source; /* interned */
    int state;          /* E_* */
    bool sent;          /* went out once already: a second time is a retry */
    int64_t sent_ms;    /* when it last went out (E_INFLIGHT) */
} entry_t;

/* One JetStream answer, as on_ack() queued it. */
typedef struct {
    natsMsg *msg;
    natsStatus err;    /* NATS_OK: stored */
    jsErrCode code;    /* JetStream's error code, 0 when none */
    bool duplicate;    /* stored already (the duplicate window dropped this copy) */
} answer_t;

typedef struct nats_sink {
    crw_sink_t base;
    const crw_config_t *conf;
    crw_pipeline_t *pipeline;
    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
    natsStatistics *stats;
    char *servers;      /* nats.url without user information, for logs */
    tpart_t *tmpl;
    int ntmpl;
    crw_buf_t filter;   /* the stream subject the template makes */
    int64_t dup_window_ns;
    bool binary, debezium;
    crw_buf_t subj, msgid, hval, hname; /* scratch */

    /* the window: positions [head, tail) of ring, cap slots */
    entry_t *ring;
    uint64_t cap, head, tail, send_from;
    uint64_t hint;     /* where find() starts: answers come mostly in publish order */
    int64_t inflight;
    bool published;    /* js_PublishMsgAsync was called: libnats has its pending list (before, asking crashes it) */
    bool recovering;   /* a publish failed: one message at a time until JetStream takes one */
    bool down;         /* the connection was seen lost */
    bool stream_ready; /* the stream was found (or made) on this connection */
    uint64_t reconnects_seen;
    int64_t next_try_ms; /* recovering, or the stream not ready: the next try */
    int backoff_ms;
    int64_t last_warn_ms;
    bool fatal;
    int fatal_rc;
    bool started;      /* the constructor returned: a fatal error is logged (before, it is the constructor's) */
    char fatal_msg[1024];
    uint64_t acked, duplicates, resent, deadlettered;

    crw_names_t sources; /* one copy of each event source, for the records to point at */

    /* shared with on_ack() under g_mu */
    answer_t *answers, *work;
    int nanswers, capanswers, capwork;
    int wake_at;       /* on_ack() wakes the main thread once this many answers wait (1: at the first) */
    pthread_cond_t cond;
    char last_err[256];
    struct nats_sink *next_live;
} nats_sink_t;

/*
 * The sinks on_ack() may still hand answers to: libnats' delivery thread
 * may run a callback after the sink is gone, so a callback first checks its
 * closure against this list under g_mu, and destroys the message itself
 * when the sink has left.
 */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static nats_sink_t *g_live;
static int g_reconnect_cap_ms = 30000; /* reconnect.backoff.max.ms, for the reconnect thread */

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
    (void)js;
    nats_sink_t *s = closure, *l;
    pthread_mutex_lock(&g_mu);
    for (l = g_live; l && l != s; l = l->next_live)
        ;
    if (!l) {
        pthread_mutex_unlock(&g_mu);
        natsMsg_Destroy(msg);
        return;
    }
    if (s->nanswers == s->capanswers) {
        s->capanswers = s->capanswers ? s->capanswers * 2 : 256;
        s->answers = crw_realloc(s->answers, sizeof *s->answers * (size_t)s->capanswers);
    }
    answer_t *a = &s->answers[s->nanswers++];
    *a = (answer_t){msg, pa ? NATS_OK : NATS_ERR, pae ? pae->ErrCode : 0, pa && pa->Duplicate};
    if (!pa && pae && pae->Err != NATS_OK)
        a->err = pae->Err;
    if (pae)
        snprintf(s->last_err, sizeof s->last_err, "%s", pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err));
    if (s->nanswers >= s->wake_at || pae)
        pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&g_mu);
}

/* libnats' reconnect delay: 100 ms doubling per pass over the servers, capped, jittered (half to all of it). */
static int64_t reconnect_delay(natsConnection *nc, int attempts, void *closure) {
    (void)nc;
    (void)closure;
    int64_t d = 100, cap = g_reconnect_cap_ms;
    for (int i = 1; i < attempts && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    return d / 2 + (int64_t)((uint64_t)crw_clock_mono_us() % (uint64_t)(d / 2 + 1));
}

static void on_connected(natsConnection *nc, void *closure) {
    (void)nc;
    (void)closure; /* a first connection made in the background: pump() notices it */
}

/* libnats' last error text without its "(file.c:123): " prefix. */
static const char *last_error_text(natsConnection *nc, natsStatus st) {
    const char *t = NULL;
    if (nc)
        natsConnection_GetLastError(nc, &t);
    if (!t || !*t)
        t = nats_GetLastError(NULL);
    if (!t || !*t)
        return natsStatus_GetText(st);
    const char *p = t[0] == '(' ? strstr(t, "): ") : NULL;
    return p ? p + 3 : t;
}

static void set_fatal(nats_sink_t *s, int rc, const char *msg) {
    if (s->fatal)
        return;
    s->fatal = true;
    s->fatal_rc = rc;
    snprintf(s->fatal_msg, sizeof s->fatal_msg, "%s", msg);
    if (s->started)
        crw_error("nats: %s", msg);
}

static bool warn_due(nats_sink_t *s) {
    int64_t now = crw_clock_mono_ms();
    if (now - s->last_warn_ms < WARN_EVERY_MS)
        return false;
    s->last_warn_ms = now;
    return true;
}

static entry_t *at(nats_sink_t *s, uint64_t pos) { return &s->ring[pos % s->cap]; }

/* The in-flight entry of msg, its position in *pos; NULL when none (answered already).  From the last
 * one found on, then from the head: answers come in publish order but for a failure or a reconnect. */
static entry_t *find(nats_sink_t *s, const natsMsg *msg, uint64_t *pos) {
    uint64_t from = s->hint >= s->head && s->hint < s->tail ? s->hint : s->head;
    for (int pass = 0; pass < 2; pass++) {
        uint64_t lo = pass ? s->head : from, hi = pass ? from : s->tail;
        for (uint64_t p = lo; p < hi; p++) {
            entry_t *e = at(s, p);
            if (e->state == E_INFLIGHT && e->msg == msg) {
                *pos = p;
                s->hint = p + 1;
                return e;
            }
        }
    }
    return NULL;
}

static void pop_done(nats_sink_t *s) {
    while (s->head < s->tail && at(s, s->head)->state == E_DONE)
        s->head++;
    if (s->send_from < s->head)
        s->send_from = s->head;
}

/* e (at pos) is ours again and goes out again, in its place. */
static void to_send(nats_sink_t *s, entry_t *e, uint64_t pos) {
    e->state = E_TOSEND;
    if (pos < s->send_from)
        s->send_from = pos;
}

static void done(nats_sink_t *s, entry_t *e) {
    natsMsg_Destroy(e->msg);
    e->msg = NULL;
    e->state = E_DONE;
    crw_pipeline_release(s->pipeline, e->seq, 1);
}

/* The file has it (durably): the hold is released and the stream goes on. */
static void dead_letter(nats_sink_t *s, entry_t *e, const char *why) {
    char reason[512], pglsn[CRW_LSN_BUFSIZE];
    const char *subject = natsMsg_GetSubject(e->msg);
    snprintf(reason, sizeof reason, "nats: %s publishing to subject %s", why, subject);
    crw_lsn_format(pglsn, e->lsn);
    int len = natsMsg_GetDataLength(e->msg);
    crw_deadletter_rec_t rec = {reason, e->source, e->lsn ? pglsn : NULL, e->xid, e->ordinal,
                                natsMsg_GetData(e->msg), len > 0 ? (size_t)len : 0};
    crw_warn("nats: a %d-byte event for subject %s was refused (%s): dead-lettered", len, subject, why);
    if (crw_deadletter_write(s->base.env->deadletter, &rec) < 0) {
        set_fatal(s, CRW_ERR_IO, "cannot write the dead-letter file; stopping with nothing confirmed past it");
        return;
    }
    s->deadlettered++;
    done(s, e);
}

/* A publish failed or its answer did not come: from here on one message at a time. */
static void failed(nats_sink_t *s, const char *subject, const char *why) {
    if (!s->recovering)
        crw_warn("nats: JetStream did not acknowledge a message to %s (%s); what is not acknowledged is sent "
                 "again, in order, once JetStream answers (nothing is confirmed past it)", subject, why);
    s->recovering = true;
    if (!s->next_try_ms)
        s->next_try_ms = crw_clock_mono_ms() + s->backoff_ms;
}

/* Applies what on_ack() queued. */
static void take_answers(nats_sink_t *s) {
    pthread_mutex_lock(&g_mu);
    if (s->nanswers == 0) {
        pthread_mutex_unlock(&g_mu);
        return;
    }
    answer_t *w = s->answers;
    int n = s->nanswers, cap = s->capanswers;
    s->answers = s->work;
    s->capanswers = s->capwork;
    s->nanswers = 0;
    s->work = w;
    s->capwork = cap;
    char why[256];
    snprintf(why, sizeof why, "%s", s->last_err);
    pthread_mutex_unlock(&g_mu);

    for (int i = 0; i < n; i++) {
        const answer_t *a = &w[i];
        uint64_t pos;
        entry_t *e = find(s, a->msg, &pos);
        if (!e) {
            natsMsg_Destroy(a->msg);
            continue;
        }
        s->inflight--;
        if (a->err == NATS_OK) {
            s->acked++;
            s->duplicates += a->duplicate;
            done(s, e);
            if (s->recovering && s->inflight == 0) {
                /* JetStream takes messages again: what waits goes out in order. */
                uint64_t held = 0;
                for (uint64_t p = s->head; p < s->tail; p++)
                    held += at(s, p)->state == E_TOSEND;
                crw_info("nats: JetStream acknowledges again; sending the %" PRIu64 " messages held, in order", held);
                s->recovering = false;
                s->backoff_ms = 100;
                s->next_try_ms = 0;
            }
        } else if (a->code == JSStreamMessageExceedsMaximumErr) {
            dead_letter(s, e, why);
        } else {
            to_send(s, e, pos);
            if (a->err == NATS_NO_RESPONDERS)
                s->stream_ready = false; /* no stream takes the subject: look again (and create it) */
            failed(s, natsMsg_GetSubject(e->msg), a->code ? why : natsStatus_GetText(a->err));
        }
    }
    pop_done(s);
}

/* Every message libnats holds unanswered is ours again (a lost connection swallowed them, or we stop). */
static void reclaim(nats_sink_t *s) {
    natsMsgList l = {0};
    if (!s->js || !s->published || js_PublishAsyncGetPendingList(&l, s->js) != NATS_OK)
        return;
    for (int i = 0; i < l.Count; i++) {
        uint64_t pos;
        entry_t *e = find(s, l.Msgs[i], &pos);
        if (e) {
            s->inflight--;
            to_send(s, e, pos);
            l.Msgs[i] = NULL;
        }
    }
    natsMsgList_Destroy(&l);
}

/*
 * The oldest message in flight waited nats.publish.timeout.ms for its answer:
 * JetStream is not answering, so every message in flight is ours again (an
 * answer that comes after all is dropped by libnats, and what goes again is a
 * duplicate JetStream drops).  @returns true when it did.
 */
static bool timed_out(nats_sink_t *s, int64_t now) {
    if (s->inflight == 0)
        return false;
    for (uint64_t p = s->head; p < s->tail; p++) {
        entry_t *e = at(s, p);
        if (e->state != E_INFLIGHT)
            continue;
        if (now - e->sent_ms < s->conf->nats_publish_timeout_ms)
            return false;
        const char *subject = natsMsg_GetSubject(e->msg);
        char subj[256];
        snprintf(subj, sizeof subj, "%s", subject ? subject : "");
        reclaim(s);
        pthread_mutex_lock(&g_mu);
        snprintf(s->last_err, sizeof s->last_err, "no acknowledgement within nats.publish.timeout.ms");
        pthread_mutex_unlock(&g_mu);
        failed(s, subj, "no acknowledgement within nats.publish.timeout.ms");
        return true;
    }
    return false;
}

static uint64_t reconnects(nats_sink_t *s) {
    uint64_t r = 0;
    if (natsConnection_GetStats(s->nc, s->stats) == NATS_OK)
        natsStatistics_GetCounts(s->stats, NULL, NULL, NULL, NULL, &r);
    return r;
}

/* Publishes e (ours).  @returns 0, or -1 when it could not go out (it stays to send, the window is stopped). */
static int send_one(nats_sink_t *s, entry_t *e, uint64_t pos) {
    natsMsg *m = e->msg;
    s->published = true;
    /* No MaxWait: libnats would arm a timer per message; timed_out() watches the oldest one instead. */
    natsStatus st = js_PublishMsgAsync(s->js, &m, NULL);
    if (st == NATS_OK) {
        if (e->sent) {
            s->resent++;
            crw_metric_add(CRW_M_RETRIES, 1);
        }
        e->sent = true;
        e->sent_ms = crw_clock_mono_ms();
        e->state = E_INFLIGHT;
        s->inflight++;
        return 0;
    }
    if (st == NATS_MAX_PAYLOAD) {
        char why[128];
        snprintf(why, sizeof why, "larger than the server's max_payload");
        dead_letter(s, e, why);
        return s->fatal ? -1 : 0;
    }
    to_send(s, e, pos);
    failed(s, natsMsg_GetSubject(e->msg), natsStatus_GetText(st));
    return -1;
}

/*
 * Looks up nats.stream, creating it when missing and allowed, and checks it
 * takes the template's subjects.  @returns 0 (ready), 1 (JetStream did not
 * answer: try again later) or -1 (fatal, set).
 */
static int ensure_stream(nats_sink_t *s) {
    const crw_config_t *c = s->conf;
    char msg[1024];
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetStreamInfo(&si, s->js, c->nats_stream, NULL, &jerr);
    if (st == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
        if (!c->nats_stream_create) {
            snprintf(msg, sizeof msg, "nats.stream: JetStream has no stream %s (nats.stream.create=false): create "
                     "it with the subjects %s", c->nats_stream, s->filter.data);
            set_fatal(s, CRW_ERR_CONFIG, msg);
            return -1;
        }
        jsStreamConfig sc;
        jsStreamConfig_Init(&sc);
        const char *subjects[1] = {s->filter.data};
        sc.Name = c->nats_stream;
        sc.Description = "crwatch change events";
        sc.Subjects = subjects;
        sc.SubjectsLen = 1;
        sc.Storage = js_FileStorage;
        sc.Replicas = c->nats_stream_replicas;
        sc.Duplicates = s->dup_window_ns;
        jerr = 0;
        st = js_AddStream(&si, s->js, &sc, NULL, &jerr);
        if (st == NATS_OK)
            crw_info("nats: created stream %s: subjects %s, file storage, %d replica%s, duplicate window %s",
                     c->nats_stream, s->filter.data, c->nats_stream_replicas, c->nats_stream_replicas > 1 ? "s" : "",
                     c->nats_stream_duplicate_window);
        else if (jerr == JSStreamNameExistErr) /* made meanwhile (another instance): read it */
            st = js_GetStreamInfo(&si, s->js, c->nats_stream, NULL, &jerr);
        else if (jerr) {
            snprintf(msg, sizeof msg, "nats.stream: JetStream refused to create stream %s with the subjects %s: %s "
                     "(error %d)", c->nats_stream, s->filter.data, last_error_text(NULL, st), (int)jerr);
            set_fatal(s, CRW_ERR_CONFIG, msg);
            return -1;
        }
    }
    if (st != NATS_OK) {
        if (jerr == JSNotEnabledErr || jerr == JSNotEnabledForAccountErr) {
            set_fatal(s, CRW_ERR_CONFIG, "JetStream is not enabled for this account or server (nats-server -js)");
            return -1;
        }
        if (warn_due(s))
            crw_warn("nats: JetStream does not answer (%s%s); trying again, nothing is sent meanwhile",
                     natsStatus_GetText(st),
                     st == NATS_NO_RESPONDERS ? ": is JetStream enabled on the server (nats-server -js)?" : "");
        jsStreamInfo_Destroy(si);
        return 1;
    }
    const jsStreamConfig *sc = si->Config;
    bool covered = false;
    for (int i = 0; sc && i < sc->SubjectsLen && !covered; i++)
        covered = subject_covers(sc->Subjects[i], s->filter.data);
    if (!covered || (sc && sc->NoAck)) {
        crw_buf_t have = CRW_BUF_INIT;
        for (int i = 0; sc && i < sc->SubjectsLen; i++)
            crw_buf_printf(&have, "%s%s", i ? ", " : "", sc->Subjects[i]);
        if (!covered)
            snprintf(msg, sizeof msg, "nats.stream: stream %s takes the subjects %s, not every subject of "
                     "nats.subject.template (%s)", c->nats_stream, have.data ? have.data : "(none)", s->filter.data);
        else
            snprintf(msg, sizeof msg, "nats.stream: stream %s acknowledges nothing (no_ack): crwatch confirms only "
                     "what JetStream acknowledged", c->nats_stream);
        crw_buf_free(&have);
        jsStreamInfo_Destroy(si);
        set_fatal(s, CRW_ERR_CONFIG, msg);
        return -1;
    }
    if (sc && sc->Duplicates < s->dup_window_ns)
        crw_warn("nats: stream %s drops duplicates within %" PRId64 " s only (nats.stream.duplicate.window = %s): "
                 "what crwatch sends again after a restart that takes longer is stored twice",
                 c->nats_stream, sc->Duplicates / 1000000000, c->nats_stream_duplicate_window);
    jsStreamInfo_Destroy(si);
    s->stream_ready = true;
    return 0;
}

/*
 * Moves the window: notices a lost or rebuilt connection, makes sure of the
 * stream, then sends what waits (one message only while recovering).
 */
static void pump(nats_sink_t *s) {
    if (s->fatal)
        return;
    natsConnStatus cs = natsConnection_Status(s->nc);
    if (cs == NATS_CONN_STATUS_CLOSED) {
        char msg[512];
        snprintf(msg, sizeof msg, "the connection is closed for good (%s); stopping with nothing confirmed past "
                 "what JetStream acknowledged", last_error_text(s->nc, NATS_NO_SERVER));
        set_fatal(s, CRW_ERR_SINK, msg);
        return;
    }
    uint64_t rc = cs == NATS_CONN_STATUS_CONNECTED ? reconnects(s) : s->reconnects_seen;
    if (cs != NATS_CONN_STATUS_CONNECTED || rc != s->reconnects_seen) {
        /* Whatever is in flight may be lost with the old connection: ours again, sent again in order. */
        reclaim(s);
        s->recovering = true;
        s->stream_ready = false;
        if (cs != NATS_CONN_STATUS_CONNECTED) {
            if (!s->down)
                crw_warn("nats: the connection to %s is lost; reconnecting (nothing is confirmed past what JetStream "
                         "acknowledged)", s->servers);
            s->down = true;
            return;
        }
        s->reconnects_seen = rc;
        s->next_try_ms = 0;
    }
    if (s->down) {
        char url[256] = "";
        natsConnection_GetConnectedUrl(s->nc, url, sizeof url);
        char *at_sign = strrchr(url, '@'), *scheme = strstr(url, "://");
        crw_info("nats: connected again (%s%s)", scheme && at_sign ? "" : url,
                 scheme && at_sign ? at_sign + 1 : "");
        s->down = false;
    }
    int64_t now = crw_clock_mono_ms();
    timed_out(s, now);
    if (!s->stream_ready) {
        if (now < s->next_try_ms)
            return;
        int r = ensure_stream(s);
        if (r != 0) {
            s->next_try_ms = now + s->backoff_ms;
            s->backoff_ms = s->backoff_ms * 2 > g_reconnect_cap_ms ? g_reconnect_cap_ms : s->backoff_ms * 2;
            return;
        }
        if (!s->recovering) {
            s->backoff_ms = 100;
            s->next_try_ms = 0;
        }
    }
    if (s->recovering) {
        if (s->inflight > 0 || now < s->next_try_ms)
            return;
        for (uint64_t p = s->head; p < s->tail; p++) {
            entry_t *e = at(s, p);
            if (e->state == E_DONE)
                continue;
            if (e->state == E_TOSEND) {
                /* The oldest unacknowledged message, alone: until JetStream takes it. */
                s->next_try_ms = now + s->backoff_ms;
                s->backoff_ms = s->backoff_ms * 2 > g_reconnect_cap_ms ? g_reconnect_cap_ms : s->backoff_ms * 2;
                send_one(s, e, p);
            }
            break;
        }
        return;
    }
    for (uint64_t p = s->send_from; p < s->tail && !s->fatal; p++) {
        entry_t *e = at(s, p);
        if (e->state != E_TOSEND)
            continue;
        if (send_one(s, e, p) < 0)
            return;
    }
    s->send_from = s->tail;
}

/* Waits up to ms for `want` answers from JetStream (or one failure). */
static void wait_answers(nats_sink_t *s, int ms, int want) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&g_mu);
    s->wake_at = want > 0 ? want : 1;
    if (s->nanswers < s->wake_at)
        pthread_cond_timedwait(&s->cond, &g_mu, &ts);
    s->wake_at = 1;
    pthread_mutex_unlock(&g_mu);
}

static void keepalive(nats_sink_t *s) {
    const crw_sink_env_t *env = s->base.env;
    if (env->keepalive)
        env->keepalive(env->keepalive_opaque);
}

/* Reports, at most every WARN_EVERY_MS, what waits for JetStream. */
static void warn_waiting(nats_sink_t *s, const char *what) {
    if (!warn_due(s))
        return;
    char why[256];
    pthread_mutex_lock(&g_mu);
    snprintf(why, sizeof why, "%s", s->last_err);
    pthread_mutex_unlock(&g_mu);
    if (s->down)
        snprintf(why, sizeof why, "the connection is lost");
    else if (!s->recovering)
        snprintf(why, sizeof why, "%s", what ? what : "in flight");
    crw_warn("nats: %" PRIu64 " messages wait for JetStream's acknowledgement (%s); nothing is confirmed past them",
             s->tail - s->head, *why ? why : "publishing failed");
}

static int nats_emit(crw_sink_t *base, const crw_event_t *ev) {
    nats_sink_t *s = (nats_sink_t *)base;
    if (s->fatal)
        return s->fatal_rc;
    if (!ev->value)
        return 0; /* a Debezium tombstone: Kafka's compaction marker, nothing to publish */
    take_answers(s);
    if (s->tail - s->head == s->cap) {
        /* Full: wait until a quarter of the window is acknowledged, so the stream is read in batches
         * rather than one event per acknowledgement. */
        uint64_t low = s->cap - (s->cap + 3) / 4;
        bool waited = false;
        while (s->tail - s->head > low) {
            pump(s);
            if (s->fatal)
                return s->fatal_rc;
            if (s->base.env->stop && *s->base.env->stop)
                return CRW_ERR_STOPPED; /* this event was not taken: it stays unconfirmed */
            keepalive(s);
            warn_waiting(s, "nats.max.pending reached: not reading the stream meanwhile");
            waited = true;
            wait_answers(s, WAIT_SLICE_MS, (int)(s->tail - s->head - low));
            take_answers(s);
        }
        if (waited)
            crw_debug("nats: room in the window again; reading the stream");
    }

    /* The message: subject, the event (or, binary, its data) as the payload, the id, the attributes. */
    crw_buf_reset(&s->subj);
    for (int i = 0; i < s->ntmpl; i++) {
        const tpart_t *t = &s->tmpl[i];
        const char *v = t->what == P_SCHEMA ? ev->schema : t->what == P_TABLE ? ev->table : t->what == P_KIND ? ev->kind
                                                                                                              : NULL;
        if (t->what == P_LIT)
            crw_buf_puts(&s->subj, t->lit);
        else if (t->what == P_KEY)
            put_token(&s->subj, ev->key ? ev->key : "", ev->key ? ev->keylen : 0);
        else
            put_token(&s->subj, v ? v : "", v ? strlen(v) : 0);
    }
    const char *payload = ev->value;
    size_t len = ev->len;
    if (s->binary) {
        if (!ev->attrs) {
            set_fatal(s, CRW_ERR_SINK, "cloudevents.mode=binary: an event has no CloudEvents attributes");
            return s->fatal_rc;
        }
        payload = ev->value + ev->data.off;
        len = ev->data.len;
    }
    natsMsg *m = NULL;
    if (len > (size_t)INT_MAX || natsMsg_Create(&m, s->subj.data, NULL, payload, (int)len) != NATS_OK) {
        set_fatal(s, CRW_ERR_SINK, "cannot make a message (out of memory, or a value over 2 GiB)");
        return s->fatal_rc;
    }
    crw_buf_reset(&s->msgid);
    crw_buf_puts(&s->msgid, ev->source ? ev->source : "");
    crw_buf_putc(&s->msgid, ':');
    crw_buf_put(&s->msgid, ev->id ? ev->id : "", ev->id ? ev->idlen : 0);
    if (s->debezium && ev->type) {
        crw_buf_putc(&s->msgid, ':');
        crw_buf_puts(&s->msgid, ev->type);
    }
    natsStatus hs = natsMsgHeader_Set(m, "Nats-Msg-Id", s->msgid.data);
    for (int i = 0; s->binary && hs == NATS_OK && i < ev->nattrs; i++) {
        const crw_event_attr_t *a = &ev->attrs[i];
        crw_buf_reset(&s->hname);
        if (!strcmp(a->name, "datacontenttype"))
            crw_buf_puts(&s->hname, "Content-Type");
        else
            crw_buf_printf(&s->hname, "ce-%s", a->name);
        /* A header value cannot hold CR or LF: those, and '%', as %XX. */
        crw_buf_reset(&s->hval);
        for (size_t k = 0; k < a->len; k++) {
            char c = a->value[k];
            if (c == '\r' || c == '\n' || c == '%')
                crw_buf_printf(&s->hval, "%%%02X", (unsigned char)c);
            else
                crw_buf_putc(&s->hval, c);
        }
        hs = natsMsgHeader_Set(m, s->hname.data, s->hval.data ? s->hval.data : "");
    }
    if (hs != NATS_OK) {
        natsMsg_Destroy(m);
        set_fatal(s, CRW_ERR_SINK, "cannot set a message header");
        return s->fatal_rc;
    }

    crw_pipeline_hold(s->pipeline, ev->txn, 1);
    entry_t *e = at(s, s->tail++);
    *e = (entry_t){m, ev->txn, ev->lsn, ev->ordinal, ev->xid, crw_names_intern(&s->sources, ev->source), E_TOSEND};
    pump(s);
    return s->fatal ? s->fatal_rc : 0;
}

static int nats_commit(crw_sink_t *base, uint64_t txn) {
    (void)txn;
    nats_sink_t *s = (nats_sink_t *)base;
    return s->fatal ? s->fatal_rc : 0; /* in flight: JetStream's acknowledgements release the holds */
}

static int nats_poll(crw_sink_t *base, int timeout_ms) {
    nats_sink_t *s = (nats_sink_t *)base;
    take_answers(s);
    pump(s);
    if (timeout_ms > 0 && s->head < s->tail && !s->fatal) {
        wait_answers(s, timeout_ms, 1);
        take_answers(s);
        pump(s);
    }
    if ((s->recovering || s->down) && s->head < s->tail)
        warn_waiting(s, NULL);
    return s->fatal ? s->fatal_rc : 0;
}

static int nats_drain(crw_sink_t *base, int timeout_ms) {
    nats_sink_t *s = (nats_sink_t *)base;
    int64_t deadline = crw_clock_mono_ms() + timeout_ms;
    for (;;) {
        take_answers(s);
        pump(s);
        if (s->head == s->tail || s->fatal || crw_clock_mono_ms() >= deadline)
            break;
        wait_answers(s, 50, 1);
    }
    uint64_t left = s->tail - s->head;
    if (left)
        crw_warn("nats: %" PRIu64 " events not acknowledged by JetStream at stop; they are sent again on restart "
                 "(and dropped as duplicates if JetStream has them)", left);
    return left || s->fatal ? CRW_ERR_SINK : 0;
}

static void nats_destroy(crw_sink_t *base) {
    nats_sink_t *s = (nats_sink_t *)base;
    pthread_mutex_lock(&g_mu);
    nats_sink_t **pp = &g_live;
    while (*pp && *pp != s)
        pp = &(*pp)->next_live;
    if (*pp)
        *pp = s->next_live;
    for (int i = 0; i < s->nanswers; i++) /* answered after the last poll: nobody waits for them now */
        natsMsg_Destroy(s->answers[i].msg);
    s->nanswers = 0;
    pthread_mutex_unlock(&g_mu);
    if (s->acked || s->deadlettered)
        crw_info("nats: %" PRIu64 " events acknowledged by JetStream (%" PRIu64 " of them already stored: "
                 "duplicates dropped), %" PRIu64 " sent again, %" PRIu64 " dead-lettered",
                 s->acked, s->duplicates, s->resent, s->deadlettered);
    reclaim(s); /* what libnats still holds is ours to free; it was never acknowledged */
    for (uint64_t p = s->head; s->ring && p < s->tail; p++) {
        entry_t *e = at(s, p);
        if (e->state == E_TOSEND)
            natsMsg_Destroy(e->msg);
    }
    if (s->js)
        jsCtx_Destroy(s->js);
    if (s->nc)
        natsConnection_Destroy(s->nc);
    if (s->opts)
        natsOptions_Destroy(s->opts);
    if (s->stats)
        natsStatistics_Destroy(s->stats);
    pthread_cond_destroy(&s->cond);
    template_free(s->tmpl, s->ntmpl);
    crw_buf_free(&s->filter);
    crw_buf_free(&s->subj);
    crw_buf_free(&s->msgid);
    crw_buf_free(&s->hval);
    crw_buf_free(&s->hname);
    crw_names_free(&s->sources);
    free(s->answers);
    free(s->work);
    free(s->ring);
    free(s->servers);
    free(s);
}

static const crw_sink_ops_t nats_ops = {
    .name = "nats",
    .emit = nats_emit,
    .commit = nats_commit,
    .poll = nats_poll,
    .drain = nats_drain,
    .resume_position = NULL,
    .destroy = nats_destroy,
};

/* ---------------------------------------------------------------- create */

/* "2m", "90s", "1500ms", "1h" in nanoseconds; -1 when it is not one (or not above 0). */
static int64_t parse_duration_ns(const char *v) {
    char *end;
    long long n = strtoll(v, &end, 10);
    if (end == v || n <= 0)
        return -1;
    int64_t unit = !strcmp(end, "ms") ? 1000000LL
                   : !strcmp(end, "s") ? 1000000000LL
                   : !strcmp(end, "m") ? 60 * 1000000000LL
                   : !strcmp(end, "h") ? 3600 * 1000000000LL
                                       : 0;
    if (!unit || n > INT64_MAX / unit)
        return -1;
    return (int64_t)n * unit;
}

/* A secret read from a file (its first line, without the newline); NULL with errstr. */
static char *read_secret(const char *key, const char *path, char *errstr, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(errstr, n, "%s: cannot read %s", key, path);
        return NULL;
    }
    char buf[4096];
    size_t r = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[r] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (!*buf) {
        snprintf(errstr, n, "%s: %s is empty", key, path);
        return NULL;
    }
    char *v = crw_strdup(buf);
    memset(buf, 0, sizeof buf);
    return v;
}

/* nats.url without user information (user:password@, token@): what logs may show. */
static char *servers_shown(const char *url) {
    crw_buf_t b = CRW_BUF_INIT;
    const char *p = url;
    while (*p) {
        const char *comma = strchr(p, ','), *end = comma ? comma : p + strlen(p);
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *scheme = strstr(p, "://"), *host = scheme && scheme < end ? scheme + 3 : p;
        const char *at_sign = NULL;
        for (const char *q = host; q < end && *q != '/'; q++)
            if (*q == '@')
                at_sign = q;
        if (b.len)
            crw_buf_putc(&b, ',');
        crw_buf_put(&b, p, (size_t)(host - p));
        if (at_sign) {
            crw_buf_puts(&b, "***@");
            host = at_sign + 1;
        }
        crw_buf_put(&b, host, (size_t)(end - host));
        p = comma ? comma + 1 : end;
    }
    return b.data ? b.data : crw_strdup("");
}

static bool stream_name_ok(const char *v) {
    if (!*v)
        return false;
    for (const char *p = v; *p; p++)
        if (*p == '.' || *p == '*' || *p == '>' || *p == '/' || *p == '\\' || (unsigned char)*p <= 0x20 || *p == 0x7f)
            return false;
    return true;
}

#define NATS_TRY(call, what)                                                                                          \
    do {                                                                                                               \
        natsStatus st_ = (call);                                                                                       \
        if (st_ != NATS_OK) {                                                                                          \
            snprintf(errstr, n, "%s: %s", what, natsStatus_GetText(st_));                                              \
            goto fail;                                                                                                 \
        }                                                                                                              \
    } while (0)

CRW_SINK_CONSTRUCTOR(crw_sink_nats_new) {
    const crw_config_t *c = env->conf;
    size_t n = errstr_size;
    *err = CRW_ERR_CONFIG;
    if (!c->nats_url || !*c->nats_url) {
        snprintf(errstr, n, "nats.url: required with sink=nats (nats://host:4222, a comma list for a cluster)");
        return NULL;
    }
    if (c->delivery == CRW_DELIVERY_EXACTLY_ONCE) {
        snprintf(errstr, n, "delivery=exactly-once is Kafka's (transactions); sink=nats is at-least-once, and "
                 "JetStream's duplicate window drops what comes again");
        return NULL;
    }
    if (c->cloudevents_mode == 1 && c->event_format != CRW_FORMAT_CLOUDEVENTS) {
        snprintf(errstr, n, "cloudevents.mode: binary needs event.format=cloudevents");
        return NULL;
    }
    if (!stream_name_ok(c->nats_stream)) {
        snprintf(errstr, n, "nats.stream: '%s' is not a stream name (no '.', '*', '>', '/', '\\' or spaces)",
                 c->nats_stream);
        return NULL;
    }
    int64_t window = parse_duration_ns(c->nats_stream_duplicate_window);
    if (window < 0) {
        snprintf(errstr, n, "nats.stream.duplicate.window: '%s' is not a duration (a whole number with ms, s, m or "
                 "h: 2m, 90s)", c->nats_stream_duplicate_window);
        return NULL;
    }
    const struct {
        const char *key, *path;
    } files[] = {{"nats.creds.file", c->nats_creds_file},   {"nats.tls.ca.file", c->nats_tls_ca_file},
                 {"nats.tls.cert.file", c->nats_tls_cert_file}, {"nats.tls.key.file", c->nats_tls_key_file},
                 {"nats.password.file", c->nats_password_file}, {"nats.token.file", c->nats_token_file}};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (*files[i].path && access(files[i].path, R_OK) != 0) {
            snprintf(errstr, n, "%s: cannot read %s", files[i].key, files[i].path);
            return NULL;
        }
    if (!*c->nats_tls_cert_file != !*c->nats_tls_key_file) {
        snprintf(errstr, n, "%s: set with %s", *c->nats_tls_cert_file ? "nats.tls.cert.file" : "nats.tls.key.file",
                 *c->nats_tls_cert_file ? "nats.tls.key.file" : "nats.tls.cert.file");
        return NULL;
    }

    nats_sink_t *s = crw_calloc(1, sizeof *s);
    s->base.ops = &nats_ops;
    s->base.env = env;
    s->conf = c;
    s->pipeline = env->pipeline;
    s->binary = c->cloudevents_mode == 1;
    s->debezium = c->event_format == CRW_FORMAT_DEBEZIUM;
    s->dup_window_ns = window;
    s->sources = (crw_names_t)CRW_NAMES_INIT;
    s->backoff_ms = 100;
    s->wake_at = 1;
    s->cap = (uint64_t)c->nats_max_pending;
    s->ring = crw_calloc((size_t)s->cap, sizeof *s->ring);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    s->servers = servers_shown(c->nats_url);
    char *password = NULL, *token = NULL;
    const char **urls = NULL;
    int nurls = 0;
    char *urlcopy = crw_strdup(c->nats_url);

    if ((s->ntmpl = template_parse(c->nats_subject_template, &s->tmpl, &s->filter, errstr, n)) < 0) {
        s->ntmpl = 0;
        goto fail;
    }
    bool secure = c->nats_tls || *c->nats_tls_ca_file || *c->nats_tls_cert_file;
    for (char *save = NULL, *u = strtok_r(urlcopy, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
        while (*u == ' ' || *u == '\t')
            u++;
        char *e = u + strlen(u);
        while (e > u && (e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        if (!*u) {
            snprintf(errstr, n, "nats.url: '%s' has an empty item", s->servers);
            goto fail;
        }
        secure |= !strncmp(u, "tls://", 6);
        urls = crw_realloc(urls, sizeof *urls * (size_t)(nurls + 1));
        urls[nurls++] = u;
    }
    if (nurls == 0) {
        snprintf(errstr, n, "nats.url: no server in '%s'", s->servers);
        goto fail;
    }
    if (*c->nats_password_file && !(password = read_secret("nats.password.file", c->nats_password_file, errstr, n)))
        goto fail;
    if (*c->nats_token_file && !(token = read_secret("nats.token.file", c->nats_token_file, errstr, n)))
        goto fail;

    g_reconnect_cap_ms = c->reconnect_max_ms;
    NATS_TRY(natsOptions_Create(&s->opts), "nats");
    NATS_TRY(natsOptions_SetServers(s->opts, urls, nurls), "nats.url");
    NATS_TRY(natsOptions_SetName(s->opts, "crwatch"), "nats");
    NATS_TRY(natsOptions_SetMaxReconnect(s->opts, -1), "nats");
    NATS_TRY(natsOptions_SetCustomReconnectDelay(s->opts, reconnect_delay, NULL), "nats");
    /* No reconnect buffer: nothing published while reconnecting may overtake what the old connection lost. */
    NATS_TRY(natsOptions_SetReconnectBufSize(s->opts, 0), "nats");
    NATS_TRY(natsOptions_SetPingInterval(s->opts, 10000), "nats");
    NATS_TRY(natsOptions_SetMaxPingsOut(s->opts, 3), "nats");
    NATS_TRY(natsOptions_SetWriteDeadline(s->opts, c->nats_publish_timeout_ms), "nats");
    if (*c->nats_user || password)
        NATS_TRY(natsOptions_SetUserInfo(s->opts, *c->nats_user ? c->nats_user : NULL, password),
                 "nats.user/nats.password.file");
    if (token)
        NATS_TRY(natsOptions_SetToken(s->opts, token), "nats.token.file");
    if (*c->nats_creds_file)
        NATS_TRY(natsOptions_SetUserCredentialsFromFiles(s->opts, c->nats_creds_file, NULL), "nats.creds.file");
    if (secure) {
        NATS_TRY(natsOptions_SetSecure(s->opts, true), "nats.tls (this libnats has no TLS?)");
        if (*c->nats_tls_ca_file)
            NATS_TRY(natsOptions_LoadCATrustedCertificates(s->opts, c->nats_tls_ca_file), "nats.tls.ca.file");
        if (*c->nats_tls_cert_file)
            NATS_TRY(natsOptions_LoadCertificatesChain(s->opts, c->nats_tls_cert_file, c->nats_tls_key_file),
                     "nats.tls.cert.file/nats.tls.key.file");
        if (!c->nats_tls_verify)
            NATS_TRY(natsOptions_SkipServerVerification(s->opts, true), "nats.tls.verify");
    }
    NATS_TRY(natsStatistics_Create(&s->stats), "nats");

    pthread_mutex_lock(&g_mu); /* answers may come as soon as something is published */
    s->next_live = g_live;
    g_live = s;
    pthread_mutex_unlock(&g_mu);

    *err = CRW_ERR_SINK;
    /* A first try in the foreground: a refused login or a TLS failure ends here, with the server's words.
     * No server answering is no error: libnats goes on trying in the background. */
    natsStatus st = natsConnection_Connect(&s->nc, s->opts);
    if (st == NATS_NO_SERVER) {
        NATS_TRY(natsOptions_SetRetryOnFailedConnect(s->opts, true, on_connected, NULL), "nats");
        st = natsConnection_Connect(&s->nc, s->opts);
    }
    if (st == NATS_INVALID_ARG || st == NATS_ILLEGAL_STATE) {
        *err = CRW_ERR_CONFIG;
        snprintf(errstr, n, "nats.url: libnats refused the server list %s (%s)", s->servers, natsStatus_GetText(st));
        goto fail;
    }
    if (st != NATS_OK && st != NATS_NOT_YET_CONNECTED) {
        snprintf(errstr, n, "nats: cannot connect to %s: %s", s->servers, last_error_text(NULL, st));
        goto fail;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = API_WAIT_MS;
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.AckHandlerClosure = s;
    NATS_TRY(natsConnection_JetStream(&s->js, s->nc, &jo), "nats: JetStream context");
    if (st == NATS_OK) {
        s->reconnects_seen = reconnects(s);
        if (ensure_stream(s) < 0) {
            *err = s->fatal_rc;
            snprintf(errstr, n, "%s", s->fatal_msg);
            goto fail;
        }
    } else {
        crw_warn("nats: %s does not answer yet; connecting in the background (nothing is confirmed until JetStream "
                 "acknowledges)", s->servers);
        s->down = true;
    }
    crw_info("nats: publishing to %s, subjects %s (stream %s), CloudEvents %s mode, at most %d unacknowledged",
             s->servers, c->nats_subject_template, c->nats_stream, s->binary ? "binary" : "structured",
             c->nats_max_pending);
    free(urls);
    free(urlcopy);
    free(password);
    free(token);
    s->started = true;
    return &s->base;

fail:
    free(urls);
    free(urlcopy);
    free(password);
    free(token);
    nats_destroy(&s->base);
    return NULL;
}
