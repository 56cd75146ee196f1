/*
 * test_nats.c — the NATS JetStream sink (sink=nats) against a real
 * PostgreSQL and a real nats-server -js, each test its own server started
 * with scripts/nats in a temp dir on a free loopback port: every change of
 * a mixed workload keyed and in per-key order with its CloudEvents
 * attributes, the server stopped for 20 s mid-load (the slot holds, nothing
 * is lost), kill -9 of crwatch mid-load (at-least-once, and each event id
 * once in the stream thanks to the duplicate window), binary content mode,
 * subject escaping, dead letters, fan-out with Kafka, authentication and
 * configuration errors.  The stream is read back with a JetStream ordered
 * consumer (libnats), as a consumer of crwatch's events would.
 *
 * nats-server must be installed (scripts/deps installs Debian's
 * nats-server): without it every test fails, saying so.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <nats/nats.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "support/itest.h"

#define EV_TIMEOUT 30000

/* ---- the server: scripts/nats run DIR, a child of the test ------------- */

typedef struct {
    char dir[256];
    char url[128];
    char conf[300]; /* an extra configuration file ("": none) */
    it_proc_t *p;
} srv_t;

static const char *nats_script(void) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/scripts/nats", CRW_SOURCE_DIR);
    return path;
}

/* (Re)starts the server of s->dir (same port, same JetStream store). */
static void srv_run(srv_t *s) {
    const char *argv[] = {"nats", "run", s->dir, *s->conf ? "-c" : NULL, s->conf, NULL};
    s->p = it_proc_spawn(nats_script(), argv);
    if (!it_proc_stderr_wait(s->p, "Server is ready", 20000)) {
        it_proc_dump_stderr(s->p);
        cr_assert_fail("nats-server did not start (is it installed? scripts/deps installs Debian's nats-server)");
    }
    char env[400];
    snprintf(env, sizeof env, "%s/env", s->dir);
    FILE *f = fopen(env, "r");
    cr_assert(f, "scripts/nats wrote no %s", env);
    char line[256];
    s->url[0] = '\0';
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "export NATS_URL=", 16))
            snprintf(s->url, sizeof s->url, "%.*s", (int)strcspn(line + 16, "\n"), line + 16);
    fclose(f);
    cr_assert(s->url[0], "no NATS_URL in %s", env);
}

/* A fresh server in a temp dir; conf_text: an extra configuration file's content (NULL: none). */
static srv_t *srv_start(const char *conf_text) {
    srv_t *s = calloc(1, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s/crw-it-nats.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    cr_assert(mkdtemp(s->dir), "mkdtemp: %s", strerror(errno));
    if (conf_text) {
        snprintf(s->conf, sizeof s->conf, "%s/extra.conf", s->dir);
        FILE *f = fopen(s->conf, "w");
        cr_assert(f);
        fputs(conf_text, f);
        fclose(f);
    }
    srv_run(s);
    return s;
}

/* Stops the server (SIGTERM, as an operator would); the dir stays for srv_run. */
static void srv_down(srv_t *s) {
    it_proc_signal_wait(s->p, SIGTERM, 20000);
    it_proc_free(s->p);
    s->p = NULL;
}

static void srv_stop(srv_t *s) {
    if (s->p)
        srv_down(s);
    const char *argv[] = {"rm", "-rf", s->dir, NULL};
    it_run("/bin/rm", argv, 30000, NULL, NULL);
    free(s);
}

/* ---- reading the stream back: a JetStream ordered consumer -------------- */

typedef struct {
    natsMsg *m;
    uint64_t seq;
} jmsg_t;

typedef struct {
    jmsg_t *v;
    int n;
} jmsgs_t;

static void jmsgs_free(jmsgs_t *ms) {
    for (int i = 0; i < ms->n; i++)
        natsMsg_Destroy(ms->v[i].m);
    free(ms->v);
    memset(ms, 0, sizeof *ms);
}

static jsCtx *js_connect(const char *url, natsConnection **nc) {
    natsStatus st = natsConnection_ConnectTo(nc, url);
    cr_assert_eq(st, NATS_OK, "connecting to %s: %s", url, natsStatus_GetText(st));
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, *nc, NULL), NATS_OK);
    return js;
}

/* The stream's information (NULL when it does not exist); jsStreamInfo_Destroy it. */
static jsStreamInfo *stream_info(const char *url, const char *stream) {
    natsConnection *nc;
    jsCtx *js = js_connect(url, &nc);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    js_GetStreamInfo(&si, js, stream, NULL, &jerr);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return si;
}

/*
 * Waits until the stream holds at least want messages (or timeout_ms), then
 * reads every message it holds, in stream order, with an ordered consumer.
 */
static jmsgs_t js_read(const char *url, const char *stream, int want, int timeout_ms) {
    natsConnection *nc;
    jsCtx *js = js_connect(url, &nc);
    jmsgs_t out = {0};
    int64_t deadline = it_wall_ms() + timeout_ms;
    uint64_t last = 0, msgs = 0;
    char filter[256] = "";
    for (;;) {
        jsStreamInfo *si = NULL;
        jsErrCode jerr = 0;
        if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) == NATS_OK) {
            msgs = si->State.Msgs;
            last = si->State.LastSeq;
            snprintf(filter, sizeof filter, "%s", si->Config->Subjects[0]);
            jsStreamInfo_Destroy(si);
        }
        if ((int64_t)msgs >= want || it_wall_ms() >= deadline)
            break;
        it_sleep_ms(100);
    }
    if (msgs > 0) {
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = stream;
        so.Ordered = true;
        natsSubscription *sub = NULL;
        jsErrCode jerr = 0;
        natsStatus st = js_SubscribeSync(&sub, js, filter, NULL, &so, &jerr);
        cr_assert_eq(st, NATS_OK, "ordered consumer on %s: %s (%d)", stream, natsStatus_GetText(st), (int)jerr);
        out.v = calloc((size_t)msgs, sizeof *out.v);
        uint64_t seen = 0;
        while (seen < last && out.n < (int)msgs && it_wall_ms() < deadline + 30000) {
            natsMsg *m = NULL;
            if (natsSubscription_NextMsg(&m, sub, 1000) != NATS_OK)
                continue;
            jsMsgMetaData *meta = NULL;
            cr_assert_eq(natsMsg_GetMetaData(&meta, m), NATS_OK);
            seen = meta->Sequence.Stream;
            jsMsgMetaData_Destroy(meta);
            out.v[out.n++] = (jmsg_t){m, seen};
        }
        natsSubscription_Destroy(sub);
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return out;
}

/* Header name of m (static buffer), NULL when absent. */
static const char *hdr(const jmsg_t *j, const char *name) {
    const char *v = NULL;
    return natsMsgHeader_Get(j->m, name, &v) == NATS_OK ? v : NULL;
}

static json_object *payload_of(const jmsg_t *j) {
    int len = natsMsg_GetDataLength(j->m);
    char *buf = strndup(natsMsg_GetData(j->m) ? natsMsg_GetData(j->m) : "", (size_t)len);
    json_object *o = json_tokener_parse(buf);
    cr_assert(o, "not JSON: %s", buf);
    free(buf);
    return o;
}

/* The subject token crwatch makes of v (docs/nats.md, "Subjects"), written again here. */
static void token_of(char *out, size_t n, const char *v) {
    size_t k = 0;
    if (!*v)
        snprintf(out, n, "_");
    for (const unsigned char *p = (const unsigned char *)v; *p && k + 4 < n; p++) {
        if (*p == '.' || *p == '*' || *p == '>' || *p == '%' || *p <= 0x20 || *p == 0x7f)
            k += (size_t)snprintf(out + k, n - k, "%%%02X", *p);
        else
            out[k++] = (char)*p;
    }
    if (*v)
        out[k] = '\0';
}

/* ---- crwatch ------------------------------------------------------------- */

static const char *deadletter_path(const char *db) {
    static char path[256];
    snprintf(path, sizeof path, "%s/crw-it-%s.deadletter.jsonl", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", db);
    return path;
}

/* Starts crwatch streaming table t of db into the server at url; extra: NULL-terminated -X values. */
static it_proc_t *start_nats(const char *db, const char *url, const char *const *extra) {
    char u[300], dl[300];
    snprintf(u, sizeof u, "nats.url=%s", url);
    snprintf(dl, sizeof dl, "deadletter.file=%s", deadletter_path(db));
    const char *const base[] = {"tables=public.t", "sink=nats", u, dl, "status.interval.ms=200",
                                "reconnect.backoff.max.ms=1000", "nats.publish.timeout.ms=2000", NULL};
    return it_crwatch_stream(db, base, extra);
}

/* SIGTERM: crwatch drains and exits 0; returns its log (malloc'd). */
static char *stop_clean(it_proc_t *p) {
    int st = it_proc_signal_wait(p, SIGTERM, 30000);
    if (st != 0)
        it_proc_dump_stderr(p);
    cr_assert_eq(st, 0, "SIGTERM must drain and exit 0");
    char *log = it_proc_stderr(p);
    it_proc_free(p);
    return log;
}

static bool slot_reaches(PGconn *c, const char *lsn, int timeout_ms) {
    return it_wait_sql_true(c, timeout_ms,
                            "SELECT confirmed_flush_lsn >= '%s'::pg_lsn FROM pg_replication_slots "
                            "WHERE slot_name = current_database()",
                            lsn);
}

/* Every attribute of a structured CloudEvent, and the message's id and subject, as crwatch makes them. */
static void check_event(const jmsg_t *j, json_object *ev, const char *db, const char *subject_prefix) {
    char src[160], want_id[400];
    snprintf(src, sizeof src, "/crwatch/%s/public/t", db);
    it_expect_str(ev, "specversion", "1.0");
    it_expect_str(ev, "source", src);
    it_expect_str(ev, "datacontenttype", "application/json");
    const char *id = it_json_str(ev, "id"), *key = it_json_str(ev, "subject"), *type = it_json_str(ev, "data.type");
    cr_assert(id && key && type, "id, subject and data.type are required");
    const char *ce_type = it_json_str(ev, "type");
    char lower[32];
    snprintf(lower, sizeof lower, "%s", type);
    for (char *p = lower; *p; p++)
        *p = (char)(*p - 'A' + 'a');
    char want_type[64];
    snprintf(want_type, sizeof want_type, "crwatch.t.%s", lower);
    cr_assert_str_eq(ce_type, want_type);
    const char *time_s = it_json_str(ev, "time");
    cr_assert(time_s && strlen(time_s) == 27 && time_s[26] == 'Z', "time %s", time_s ? time_s : "(none)");
    const char *pglsn = it_json_str(ev, "pglsn");
    cr_assert(pglsn && !strncmp(id, pglsn, strlen(pglsn)) && id[strlen(pglsn)] == '/', "id %s, pglsn %s", id,
              pglsn ? pglsn : "(none)");
    cr_assert(atoi(it_json_str(ev, "pgxid")) > 0);
    snprintf(want_id, sizeof want_id, "%s:%s", src, id);
    cr_assert_str_eq(hdr(j, "Nats-Msg-Id"), want_id, "Nats-Msg-Id");
    if (subject_prefix) {
        char tok[600], want_subject[800];
        token_of(tok, sizeof tok, key);
        snprintf(want_subject, sizeof want_subject, "%s%s", subject_prefix, tok);
        cr_assert_str_eq(natsMsg_GetSubject(j->m), want_subject, "the subject of key '%s'", key);
    }
}

/* ---- tests --------------------------------------------------------------- */

TestSuite(nats, .timeout = 300);

/* What one key went through, as "TYPE:v TYPE:v ...". */
typedef struct {
    char key[64];
    char hist[2048];
    char got[2048];
} keyhist_t;

static keyhist_t *kh_find(keyhist_t *k, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (!strcmp(k[i].key, key))
            return &k[i];
    return NULL;
}

static void kh_add(char *h, const char *type, int v) {
    size_t l = strlen(h);
    snprintf(h + l, 2048 - l, "%s%s:%d", l ? " " : "", type, v);
}

Test(nats, mixed_workload_every_change_keyed_in_order_with_cloudevents) {
    enum { PLAIN = 30, ROUNDS = 12 };
    char db[64];
    PGconn *c = it_db_create("nmixed", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id text PRIMARY KEY, v int)");
    srv_t *s = srv_start(NULL);
    const char *per_key[] = {"nats.subject.template=crwatch.{schema}.{table}.{key}", NULL};
    it_proc_t *p = start_nats(db, s->url, per_key);

    /* Keys a subject token cannot carry as they are, and plain ones. */
    keyhist_t keys[PLAIN + 6] = {{"k.1", "", ""}, {"a b", "", ""}, {"x*y>z", "", ""}, {"100%", "", ""},
                                 {"caf\xc3\xa9", "", ""}, {"tab\there", "", ""}};
    int nk = 6;
    for (int i = 1; i <= PLAIN; i++)
        snprintf(keys[nk++].key, sizeof keys[0].key, "plain-%d", i);
    PGresult *r;
    it_exec(c, "BEGIN");
    for (int i = 0; i < nk; i++) {
        const char *vals[1] = {keys[i].key};
        r = PQexecParams(c, "INSERT INTO t VALUES ($1, 0)", 1, NULL, vals, NULL, NULL, 0);
        cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(c));
        PQclear(r);
        kh_add(keys[i].hist, "ADDED", 0);
    }
    it_exec(c, "COMMIT");
    unsigned seed = 7;
    for (int round = 1; round <= ROUNDS; round++) {
        it_exec(c, "UPDATE t SET v = %d", round); /* one transaction, every key */
        for (int i = 0; i < nk; i++)
            kh_add(keys[i].hist, "MODIFIED", round);
        int k = (int)(rand_r(&seed) % (unsigned)nk); /* a single-row transaction */
        const char *vals[1] = {keys[k].key};
        r = PQexecParams(c, "UPDATE t SET v = v WHERE id = $1", 1, NULL, vals, NULL, NULL, 0);
        PQclear(r);
        kh_add(keys[k].hist, "MODIFIED", round);
        if (round % 3 == 0) { /* a key deleted and added again in one transaction */
            int d = (int)(rand_r(&seed) % (unsigned)nk);
            const char *dv[1] = {keys[d].key};
            it_exec(c, "BEGIN");
            r = PQexecParams(c, "DELETE FROM t WHERE id = $1", 1, NULL, dv, NULL, NULL, 0);
            PQclear(r);
            r = PQexecParams(c, "INSERT INTO t VALUES ($1, -1)", 1, NULL, dv, NULL, NULL, 0);
            PQclear(r);
            it_exec(c, "UPDATE t SET v = %d WHERE v = -1", round);
            it_exec(c, "COMMIT");
            kh_add(keys[d].hist, "DELETED", round);
            kh_add(keys[d].hist, "ADDED", -1);
            kh_add(keys[d].hist, "MODIFIED", round);
        }
    }
    for (int i = 0; i < 3; i++) { /* the end of three keys */
        const char *vals[1] = {keys[nk - 1 - i].key};
        r = PQexecParams(c, "DELETE FROM t WHERE id = $1", 1, NULL, vals, NULL, NULL, 0);
        PQclear(r);
        kh_add(keys[nk - 1 - i].hist, "DELETED", ROUNDS);
    }
    int want = 0;
    for (int i = 0; i < nk; i++)
        for (const char *h = keys[i].hist; *h; h++)
            want += *h == ':';
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, EV_TIMEOUT), "the slot did not confirm the workload");
    free(end);

    jmsgs_t ms = js_read(s->url, "CRWATCH", want, EV_TIMEOUT);
    cr_assert_eq(ms.n, want, "want %d messages in the stream, got %d", want, ms.n);
    char prefix[32] = "crwatch.public.t.";
    for (int i = 0; i < ms.n; i++) {
        json_object *ev = payload_of(&ms.v[i]);
        check_event(&ms.v[i], ev, db, prefix);
        keyhist_t *k = kh_find(keys, nk, it_json_str(ev, "subject"));
        cr_assert(k, "an event of an unknown key '%s'", it_json_str(ev, "subject"));
        const char *v = it_json_str(ev, !strcmp(it_json_str(ev, "data.type"), "DELETED") ? "data.oldObject.v"
                                                                                           : "data.object.v");
        /* a delete without REPLICA IDENTITY FULL has the key only: the test wrote down its round */
        kh_add(k->got, it_json_str(ev, "data.type"),
               v ? atoi(v) : !strcmp(it_json_str(ev, "data.type"), "DELETED") ? -99 : -98);
        json_object_put(ev);
    }
    for (int i = 0; i < nk; i++) {
        /* Deletes carry no v: compare them by type and position only. */
        char want_h[2048] = "", got_h[2048] = "";
        const char *srcs[2] = {keys[i].hist, keys[i].got};
        char *dsts[2] = {want_h, got_h};
        for (int w = 0; w < 2; w++) {
            char *copy = strdup(srcs[w]);
            for (char *save = NULL, *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
                if (!strncmp(t, "DELETED:", 8))
                    t[7] = '\0';
                size_t l = strlen(dsts[w]);
                snprintf(dsts[w] + l, 2048 - l, "%s%s", l ? " " : "", t);
            }
            free(copy);
        }
        cr_assert_str_eq(got_h, want_h, "key '%s': its events in the stream, in order", keys[i].key);
    }
    /* Each event id once. */
    for (int i = 0; i < ms.n; i++)
        for (int j = i + 1; j < ms.n; j++)
            cr_assert_str_neq(hdr(&ms.v[i], "Nats-Msg-Id"), hdr(&ms.v[j], "Nats-Msg-Id"));
    jmsgs_free(&ms);

    /* The stream crwatch made: the template's subjects, file storage, a two-minute duplicate window. */
    jsStreamInfo *si = stream_info(s->url, "CRWATCH");
    cr_assert(si);
    cr_assert_eq(si->Config->SubjectsLen, 1);
    cr_assert_str_eq(si->Config->Subjects[0], "crwatch.*.*.*");
    cr_assert_eq(si->Config->Storage, js_FileStorage);
    cr_assert_eq(si->Config->Duplicates, 120LL * 1000000000LL);
    jsStreamInfo_Destroy(si);
    free(stop_clean(p));
    srv_stop(s);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* The writer of the outage and kill -9 tests: rows 1, 2, ... inserted (every fifth transaction three at once);
 * every fourth transaction also updates the row three before (v 0 -> 1). */
typedef struct {
    char db[64];
    volatile int stop;
    int written;
    unsigned char *updated; /* [id]: set to 1 */
    char err[256];
} writer_t;

#define WRITER_MAX 400000

static void *writer_main(void *arg) {
    writer_t *w = arg;
    PGconn *c = it_connect_thread(w->db, w->err, sizeof w->err);
    if (!c)
        return NULL;
    for (int txn = 0; !w->stop && w->written + 3 < WRITER_MAX; txn++) {
        int n = txn % 5 == 4 ? 3 : 1, upd = txn % 4 == 3 && w->written > 3 ? w->written - 2 : 0;
        char sql[300];
        snprintf(sql, sizeof sql,
                 "BEGIN; INSERT INTO t SELECT g, 0 FROM generate_series(%d, %d) g; UPDATE t SET v = 1 WHERE id = %d; "
                 "COMMIT",
                 w->written + 1, w->written + n, upd);
        PGresult *r = PQexec(c, sql);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok) {
            snprintf(w->err, sizeof w->err, "%s", PQerrorMessage(c));
            break;
        }
        if (upd)
            w->updated[upd] = 1;
        w->written += n;
        it_sleep_ms(3);
    }
    PQfinish(c);
    return NULL;
}

/* The stream holds every row's ADDED (then its MODIFIED when updated), in that order, and each event id once. */
static void expect_rows(const char *url, const writer_t *w) {
    int want = w->written;
    for (int i = 1; i <= w->written; i++)
        want += w->updated[i];
    jmsgs_t ms = js_read(url, "CRWATCH", want, EV_TIMEOUT);
    unsigned char *state = calloc((size_t)w->written + 1, 1); /* 0 none, 1 ADDED, 2 MODIFIED */
    for (int i = 0; i < ms.n; i++) {
        json_object *ev = payload_of(&ms.v[i]);
        int k = atoi(it_json_str(ev, "subject"));
        const char *type = it_json_str(ev, "data.type");
        cr_assert(k >= 1 && k <= w->written, "unexpected row %d", k);
        if (!strcmp(type, "ADDED")) {
            cr_assert_eq(state[k], 0, "row %d: ADDED twice in the stream (id %s)", k, it_json_str(ev, "id"));
            state[k] = 1;
        } else {
            cr_assert_str_eq(type, "MODIFIED");
            cr_assert_eq(state[k], 1, "row %d: MODIFIED %s (id %s)", k, state[k] ? "twice" : "before its ADDED",
                         it_json_str(ev, "id"));
            state[k] = 2;
        }
        json_object_put(ev);
    }
    for (int k = 1; k <= w->written; k++)
        cr_assert_eq(state[k], w->updated[k] ? 2 : 1, "row %d of %d: lost (%s)", k, w->written,
                     state[k] ? "its update" : "its insert");
    cr_assert_eq(ms.n, want, "%d messages for %d changes", ms.n, want);
    free(state);
    jmsgs_free(&ms);
}

static char *slot_position(PGconn *c) {
    return it_query_value(c, "SELECT confirmed_flush_lsn FROM pg_replication_slots "
                             "WHERE slot_name = current_database()");
}

Test(nats, server_stopped_20s_mid_load_holds_the_slot_then_loses_nothing) {
    char db[64];
    PGconn *c = it_db_create("ndown", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v int)");
    srv_t *s = srv_start(NULL);
    /* A small window: the outage fills it, and the stream waits (backpressure). */
    it_proc_t *p = start_nats(db, s->url, (const char *[]){"nats.max.pending=1000", NULL});
    writer_t w = {.updated = calloc(WRITER_MAX + 1, 1)};
    snprintf(w.db, sizeof w.db, "%s", db);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer_main, &w), 0);
    it_sleep_ms(2000);
    cr_assert_gt(w.written, 50, "the writer is writing");

    srv_down(s);
    int64_t down_at = it_wall_ms();
    it_sleep_ms(1000); /* what JetStream acknowledged before it went is confirmed at the next status update */
    char *held = slot_position(c);
    for (int i = 0; i < 19; i++) {
        it_sleep_ms(1000);
        char *now = slot_position(c);
        cr_assert_str_eq(now, held, "the slot moved from %s to %s while the server was down", held, now);
        free(now);
        cr_assert(it_proc_running(p), "crwatch must wait for the server, not exit");
    }
    int during = w.written;
    srv_run(s); /* the same port and store, after 20 s */
    cr_log_info("server down %.1f s; %d rows written by then", (double)(it_wall_ms() - down_at) / 1000, during);
    it_sleep_ms(3000);
    w.stop = 1;
    pthread_join(th, NULL);
    cr_assert_str_eq(w.err, "", "writer: %s", w.err);
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, 90000), "the slot did not reach the end once the server was back");
    char *moved = it_query_value(c, "SELECT '%s'::pg_lsn > '%s'::pg_lsn", end, held);
    cr_assert_str_eq(moved, "t");
    free(moved);
    free(end);
    free(held);
    expect_rows(s->url, &w);
    char *log = stop_clean(p);
    cr_assert(strstr(log, "is lost; reconnecting"), "the outage was not noticed:\n%s", log);
    cr_assert(strstr(log, "JetStream acknowledges again"), "no recovery in the log:\n%s", log);
    free(log);
    free(w.updated);
    srv_stop(s);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* A server that hangs (SIGSTOP) rather than goes: acknowledgements time out while the connection stays; what
 * the server had read is stored when it wakes, and what goes again is dropped as a duplicate, in order. */
Test(nats, server_hung_publishes_time_out_and_go_again_in_order) {
    char db[64];
    PGconn *c = it_db_create("nhung", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v int)");
    srv_t *s = srv_start(NULL);
    it_proc_t *p = start_nats(db, s->url, NULL);
    writer_t w = {.updated = calloc(WRITER_MAX + 1, 1)};
    snprintf(w.db, sizeof w.db, "%s", db);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer_main, &w), 0);
    it_sleep_ms(1500);
    kill(it_proc_pid(s->p), SIGSTOP);
    it_sleep_ms(1000);
    char *held = slot_position(c);
    for (int i = 0; i < 7; i++) {
        it_sleep_ms(1000);
        char *now = slot_position(c);
        cr_assert_str_eq(now, held, "the slot moved while the server was stopped");
        free(now);
    }
    free(held);
    kill(it_proc_pid(s->p), SIGCONT);
    it_sleep_ms(2000);
    w.stop = 1;
    pthread_join(th, NULL);
    cr_assert_str_eq(w.err, "", "writer: %s", w.err);
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, 90000), "the slot did not reach the end once the server woke");
    free(end);
    expect_rows(s->url, &w);
    char *log = stop_clean(p);
    cr_assert(strstr(log, "did not acknowledge") || strstr(log, "is lost"), "the hang was not noticed:\n%s", log);
    free(log);
    free(w.updated);
    srv_stop(s);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* crwatch started while no server answers: it streams, holds the slot, and delivers once the server comes. */
Test(nats, started_before_the_server_delivers_once_it_comes) {
    char db[64];
    PGconn *c = it_db_create("nlate", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    srv_t *s = srv_start(NULL);
    srv_down(s);
    it_proc_t *p = start_nats(db, s->url, NULL);
    cr_assert(it_proc_stderr_wait(p, "does not answer yet", 5000), "no word of the missing server");
    char *start = slot_position(c);
    for (int i = 1; i <= 10; i++)
        it_exec(c, "INSERT INTO t VALUES (%d)", i);
    it_sleep_ms(2000);
    char *now = slot_position(c);
    cr_assert_str_eq(now, start, "the slot moved with no server");
    free(now);
    free(start);
    srv_run(s);
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, 30000), "the slot did not move once the server came");
    free(end);
    jmsgs_t ms = js_read(s->url, "CRWATCH", 10, EV_TIMEOUT);
    cr_assert_eq(ms.n, 10);
    for (int i = 0; i < ms.n; i++) {
        json_object *ev = payload_of(&ms.v[i]);
        cr_assert_eq(atoi(it_json_str(ev, "subject")), i + 1, "in commit order");
        json_object_put(ev);
    }
    jmsgs_free(&ms);
    char *log = stop_clean(p);
    cr_assert(strstr(log, "created stream CRWATCH"), "%s", log);
    free(log);
    srv_stop(s);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* The stream deleted under crwatch: publishing finds no responder, and the stream is made again. */
Test(nats, stream_deleted_while_streaming_is_made_again) {
    char db[64];
    PGconn *c = it_db_create("nagain", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    srv_t *s = srv_start(NULL);
    it_proc_t *p = start_nats(db, s->url, NULL);
    for (int i = 1; i <= 5; i++)
        it_exec(c, "INSERT INTO t VALUES (%d)", i);
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, EV_TIMEOUT));
    free(end);
    natsConnection *nc;
    jsCtx *js = js_connect(s->url, &nc);
    cr_assert_eq(js_DeleteStream(js, "CRWATCH", NULL, NULL), NATS_OK);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    for (int i = 6; i <= 10; i++)
        it_exec(c, "INSERT INTO t VALUES (%d)", i);
    end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, EV_TIMEOUT), "the slot did not move past the deleted stream");
    free(end);
    jmsgs_t ms = js_read(s->url, "CRWATCH", 5, EV_TIMEOUT);
    cr_assert_eq(ms.n, 5, "the stream made again holds %d", ms.n);
    for (int i = 0; i < ms.n; i++) {
        json_object *ev = payload_of(&ms.v[i]);
        cr_assert_eq(atoi(it_json_str(ev, "subject")), i + 6, "in commit order");
        json_object_put(ev);
    }
    jmsgs_free(&ms);
    char *log = stop_clean(p);
    const char *first = strstr(log, "created stream CRWATCH");
    cr_assert(first && strstr(first + 1, "created stream CRWATCH"), "not made again:\n%s", log);
    free(log);
    srv_stop(s);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(nats, kill_9_mid_load_at_least_once_and_each_event_id_once_in_the_stream) {
    enum { KILLS = 4 };
    char db[64];
    PGconn *c = it_db_create("nkill", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v int)");
    srv_t *s = srv_start(NULL);
    /* Status updates every 500 ms: a kill leaves published, unconfirmed events the server sends again. */
    const char *slow[] = {"status.interval.ms=500", NULL};
    it_proc_t *p = start_nats(db, s->url, slow);
    writer_t w = {.updated = calloc(WRITER_MAX + 1, 1)};
    snprintf(w.db, sizeof w.db, "%s", db);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer_main, &w), 0);
    unsigned seed = (unsigned)time(NULL);
    cr_log_info("kill -9 timing seed %u", seed);
    for (int i = 0; i < KILLS; i++) {
        it_sleep_ms(500 + (int)(rand_r(&seed) % 1000));
        cr_assert_eq(it_proc_signal_wait(p, SIGKILL, 10000), 128 + SIGKILL);
        it_proc_free(p);
        it_sleep_ms(10);
        p = start_nats(db, s->url, slow);
    }
    it_sleep_ms(500);
    w.stop = 1;
    pthread_join(th, NULL);
    cr_assert_str_eq(w.err, "", "writer: %s", w.err);
    cr_assert_gt(w.written, 100, "the writer wrote only %d rows", w.written);
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, 60000), "the last crwatch did not confirm the writer's rows");
    free(end);
    char *log = stop_clean(p);
    /* The last start got again what the killed one published but had not confirmed; JetStream dropped it. */
    const char *dup = strstr(log, "of them already stored");
    cr_assert(dup, "no summary:\n%s", log);
    const char *open = dup;
    while (open > log && *open != '(')
        open--;
    cr_log_info("last run: %.*s", (int)(dup - open + 22), open);
    cr_expect_gt(atoi(open + 1), 0, "the last start sent nothing again: the duplicate window went unchecked");
    free(log);
    expect_rows(s->url, &w);
    free(w.updated);
    srv_stop(s);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(nats, binary_mode_headers_escaping_and_long_keys) {
    char db[64];
    PGconn *c = it_db_create("nbinary", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id text PRIMARY KEY, n int)");
    srv_t *s = srv_start(NULL);
    it_proc_t *p = start_nats(db, s->url, (const char *[]){"cloudevents.mode=binary", "nats.stream=EVENTS",
                                                           "nats.subject.template=ev.{table}.{kind}.{key}", NULL});
    it_exec(c, "INSERT INTO t VALUES (E'line1\\nline2 50%%', 7)");
    it_exec(c, "INSERT INTO t VALUES (repeat('k.', 200), 8)"); /* 400 bytes, 600 once escaped */
    jmsgs_t ms = js_read(s->url, "EVENTS", 2, EV_TIMEOUT);
    cr_assert_eq(ms.n, 2);
    const jmsg_t *j = &ms.v[0];
    cr_assert_str_eq(natsMsg_GetSubject(j->m), "ev.t.t.line1%0Aline2%2050%25");
    cr_assert_str_eq(hdr(j, "ce-specversion"), "1.0");
    cr_assert_str_eq(hdr(j, "ce-type"), "crwatch.t.added");
    cr_assert_str_eq(hdr(j, "ce-subject"), "line1%0Aline2 50%25", "CR, LF and %% are percent-encoded in headers");
    char src[128], msgid[400];
    snprintf(src, sizeof src, "/crwatch/%s/public/t", db);
    cr_assert_str_eq(hdr(j, "ce-source"), src);
    cr_assert_str_eq(hdr(j, "Content-Type"), "application/json");
    cr_assert_null(hdr(j, "ce-datacontenttype"));
    cr_assert(hdr(j, "ce-time") && strlen(hdr(j, "ce-time")) == 27);
    cr_assert(hdr(j, "ce-pgxid") && atoi(hdr(j, "ce-pgxid")) > 0);
    char id[200];
    snprintf(id, sizeof id, "%s/1", hdr(j, "ce-pglsn"));
    cr_assert_str_eq(hdr(j, "ce-id"), id);
    snprintf(msgid, sizeof msgid, "%s:%s", src, id);
    cr_assert_str_eq(hdr(j, "Nats-Msg-Id"), msgid);
    json_object *data = payload_of(j); /* the payload is the data alone */
    cr_assert_str_eq(it_json_str(data, "type"), "ADDED");
    cr_assert_str_eq(it_json_str(data, "object.n"), "7");
    cr_assert_not(it_json_exists(data, "specversion"));
    json_object_put(data);
    /* A long key: at most its first 239 bytes (never half an escape), '~' and a 64-bit hash, in 16 hex digits. */
    const char *subj = natsMsg_GetSubject(ms.v[1].m);
    const char *tok = subj + strlen("ev.t.t.");
    size_t tl = strlen(tok);
    cr_assert(tl <= 256 && tl >= 250, "token of %zu bytes: %s", tl, tok);
    cr_assert_eq(strncmp(tok, "k%2Ek%2E", 8), 0);
    cr_assert_eq(tok[tl - 17], '~', "token %s", tok);
    cr_assert(tok[tl - 18] != '%' && tok[tl - 19] != '%', "the cut ends after a whole escape: %s", tok);
    cr_assert_null(strchr(tok, '.'));
    jmsgs_free(&ms);
    jsStreamInfo *si = stream_info(s->url, "EVENTS");
    cr_assert(si);
    cr_assert_str_eq(si->Config->Subjects[0], "ev.*.*.*");
    jsStreamInfo_Destroy(si);
    free(stop_clean(p));
    srv_stop(s);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(nats, too_large_for_the_server_is_dead_lettered_and_the_stream_goes_on) {
    char db[64];
    PGconn *c = it_db_create("ndead", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, pad text)");
    srv_t *s = srv_start("max_payload: 4096\n");
    const char *dl = deadletter_path(db);
    unlink(dl);
    it_proc_t *p = start_nats(db, s->url, NULL);
    it_exec(c, "INSERT INTO t VALUES (1, 'small')");
    it_exec(c, "INSERT INTO t VALUES (2, repeat('x', 10000))");
    it_exec(c, "INSERT INTO t VALUES (3, 'small')");
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, EV_TIMEOUT), "the slot did not move past the dead-lettered change");
    free(end);
    jmsgs_t ms = js_read(s->url, "CRWATCH", 2, EV_TIMEOUT);
    cr_assert_eq(ms.n, 2);
    int mask = 0;
    for (int i = 0; i < ms.n; i++) {
        json_object *ev = payload_of(&ms.v[i]);
        mask |= 1 << atoi(it_json_str(ev, "subject"));
        json_object_put(ev);
    }
    cr_assert_eq(mask, (1 << 1) | (1 << 3));
    jmsgs_free(&ms);
    free(stop_clean(p));
    FILE *f = fopen(dl, "r");
    cr_assert(f, "no dead-letter file %s", dl);
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0) {
        json_object *rec = json_tokener_parse(line);
        cr_assert(rec);
        cr_assert(strstr(it_json_str(rec, "reason"), "max_payload"), "%s", it_json_str(rec, "reason"));
        it_expect_str(rec, "payload.subject", "2");
        cr_assert(it_json_str(rec, "pglsn"));
        json_object_put(rec);
        n++;
    }
    free(line);
    fclose(f);
    cr_assert_eq(n, 1);
    unlink(dl);
    srv_stop(s);
    PQfinish(c);
    it_db_drop(NULL, db);
}

static const char *kcat_path(void) {
    static const char *const dirs[] = {"/usr/bin/kcat", "/usr/local/bin/kcat", "/usr/bin/kafkacat"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        if (access(dirs[i], X_OK) == 0)
            return dirs[i];
    cr_assert_fail("kcat is not installed (scripts/deps installs it)");
    return NULL;
}

Test(nats, fan_out_with_kafka_confirms_only_what_both_have) {
    char db[64];
    PGconn *c = it_db_create("nfanout", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    srv_t *s = srv_start(NULL);
    const char *both[] = {"sink=kafka,nats", "kafka.bootstrap.servers=embedded", NULL};
    it_proc_t *p = start_nats(db, s->url, both);
    char *log = it_proc_stderr(p);
    const char *at = strstr(log, "embedded broker at ");
    cr_assert(at, "the embedded broker's address is not logged:\n%s", log);
    char bs[128];
    cr_assert_eq(sscanf(at, "embedded broker at %127s", bs), 1);
    free(log);
    for (int i = 1; i <= 20; i++)
        it_exec(c, "INSERT INTO t VALUES (%d)", i);
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, EV_TIMEOUT));
    free(end);

    /* NATS goes away: Kafka takes what comes, the slot waits for JetStream. */
    srv_down(s);
    it_sleep_ms(1000);
    it_exec(c, "INSERT INTO t VALUES (21)");
    char *after21 = it_query_value(c, "SELECT pg_current_wal_lsn()"); /* past the first change held back */
    for (int i = 22; i <= 40; i++)
        it_exec(c, "INSERT INTO t VALUES (%d)", i);
    end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    const char *kargs[] = {"kcat", "-b", bs, "-C", "-t", "crwatch.public.t", "-e", "-q", "-f", "%k\n", NULL};
    int lines = 0;
    for (int tries = 0; tries < 100 && lines < 40; tries++) {
        char *out = NULL;
        cr_assert_eq(it_run(kcat_path(), kargs, 30000, &out, NULL), 0);
        lines = 0;
        for (const char *q = out; *q; q++)
            lines += *q == '\n';
        free(out);
        if (lines < 40)
            it_sleep_ms(200);
    }
    cr_assert_eq(lines, 40, "Kafka has %d of 40 while NATS is down", lines);
    it_sleep_ms(1000);
    /* Until then the slot may follow other databases' WAL (nothing of this one waits), never past row 21. */
    char *past = it_query_value(c, "SELECT confirmed_flush_lsn >= '%s' FROM pg_replication_slots "
                                   "WHERE slot_name = current_database()", after21);
    cr_assert_str_eq(past, "f", "the slot moved past a change JetStream had not acknowledged");
    free(past);
    free(after21);
    srv_run(s);
    cr_assert(slot_reaches(c, end, 60000), "the slot did not move once JetStream was back");
    free(end);
    jmsgs_t ms = js_read(s->url, "CRWATCH", 40, EV_TIMEOUT);
    cr_assert_eq(ms.n, 40, "JetStream has %d of 40", ms.n);
    for (int i = 0; i < ms.n; i++) {
        json_object *ev = payload_of(&ms.v[i]);
        check_event(&ms.v[i], ev, db, NULL);
        cr_assert_str_eq(natsMsg_GetSubject(ms.v[i].m), "crwatch.public.t");
        cr_assert_eq(atoi(it_json_str(ev, "subject")), i + 1, "in commit order");
        json_object_put(ev);
    }
    jmsgs_free(&ms);
    free(stop_clean(p));
    srv_stop(s);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(nats, authentication_from_files_and_secrets_never_logged) {
    char db[64];
    PGconn *c = it_db_create("nauth", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    srv_t *s = srv_start("authorization {\n  user: crw\n  password: hunter2\n}\n");
    char pwfile[400], pwset[420];
    snprintf(pwfile, sizeof pwfile, "%s/password", s->dir);
    FILE *f = fopen(pwfile, "w");
    fputs("hunter2\n", f);
    fclose(f);
    snprintf(pwset, sizeof pwset, "nats.password.file=%s", pwfile);
    it_proc_t *p = start_nats(db, s->url, (const char *[]){"nats.user=crw", pwset, "log.level=debug", NULL});
    it_exec(c, "INSERT INTO t VALUES (1)");
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, EV_TIMEOUT));
    free(end);
    char *log = stop_clean(p);
    cr_assert_null(strstr(log, "hunter2"), "the password was logged:\n%s", log);
    free(log);

    /* The password in the URL: logs show the server without it. */
    char url[300];
    snprintf(url, sizeof url, "nats://crw:hunter2@%s", s->url + strlen("nats://"));
    p = start_nats(db, url, (const char *[]){"log.level=debug", NULL});
    it_exec(c, "INSERT INTO t VALUES (2)");
    end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, EV_TIMEOUT));
    free(end);
    log = stop_clean(p);
    cr_assert(strstr(log, "nats://***@127.0.0.1:"), "the server as logged:\n%s", log);
    cr_assert_null(strstr(log, "hunter2"), "the URL's password was logged:\n%s", log);
    free(log);

    /* A wrong password: crwatch says the server refused, and shows no password. */
    snprintf(url, sizeof url, "nats.url=nats://crw:wrong-secret@%s", s->url + strlen("nats://"));
    char *err = NULL;
    const char *args[] = {"stream", "-X", "tables=public.t", "-X", "sink=nats", "-X", url, NULL};
    int st = it_run_crwatch(db, args, 60000, NULL, &err);
    cr_assert_neq(st, 0, "a refused login must not stream: %s", err);
    cr_assert(strstr(err, "uthoriz"), "the server's refusal is not named: %s", err);
    cr_assert_null(strstr(err, "wrong-secret"), "the password was printed: %s", err);
    free(err);
    srv_stop(s);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(nats, stream_settings_and_configuration_errors) {
    char db[64];
    PGconn *c = it_db_create("nconf", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    srv_t *s = srv_start(NULL);
    char url[200];
    snprintf(url, sizeof url, "nats.url=%s", s->url);
    static const struct {
        const char *x[4];
        const char *names;
    } cases[] = {
        {{"nats.url=", NULL}, "nats.url"},
        {{"nats.subject.template=crw.{schema}.{nope}", NULL}, "nats.subject.template"},
        {{"nats.subject.template=crw.*.{table}", NULL}, "nats.subject.template"},
        {{"nats.subject.template=crw..{table}", NULL}, "nats.subject.template"},
        {{"nats.subject.template=crw {table}", NULL}, "nats.subject.template"},
        {{"nats.stream.duplicate.window=5x", NULL}, "nats.stream.duplicate.window"},
        {{"nats.stream=a.b", NULL}, "nats.stream"},
        {{"nats.stream.replicas=9", NULL}, "nats.stream.replicas"},
        {{"nats.max.pending=0", NULL}, "nats.max.pending"},
        {{"delivery=exactly-once", NULL}, "exactly-once"},
        {{"cloudevents.mode=binary", "event.format=debezium", NULL}, "cloudevents.mode"},
        {{"nats.creds.file=/nonexistent/creds", NULL}, "nats.creds.file"},
        {{"nats.tls.cert.file=/etc/hostname", NULL}, "nats.tls.key.file"},
        {{"nats.stream=MISSING", "nats.stream.create=false", NULL}, "nats.stream"},
        {{"nats.stream=OTHER", NULL}, "nats.stream"},
        {{"nats.bogus=1", NULL}, "nats.bogus"},
    };
    /* A stream of other subjects, which crwatch must not publish into. */
    natsConnection *nc;
    jsCtx *js = js_connect(s->url, &nc);
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[] = {"other.>"};
    sc.Name = "OTHER";
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    jsStreamInfo *si = NULL;
    cr_assert_eq(js_AddStream(&si, js, &sc, NULL, NULL), NATS_OK);
    jsStreamInfo_Destroy(si);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[32];
        int n = 0;
        const char *base[] = {"stream", "-X", "tables=public.t", "-X", "sink=nats", "-X", url};
        for (size_t j = 0; j < sizeof base / sizeof base[0]; j++)
            args[n++] = base[j];
        for (int j = 0; cases[i].x[j]; j++) {
            args[n++] = "-X";
            args[n++] = cases[i].x[j];
        }
        args[n] = NULL;
        char *err = NULL;
        int st = it_run_crwatch(db, args, 30000, NULL, &err);
        cr_assert_eq(st, 2, "case %zu: exit %d, want 2: %s", i, st, err);
        cr_assert(strstr(err, cases[i].names), "case %zu: the error must name %s: %s", i, cases[i].names, err);
        free(err);
    }

    /* An existing stream with a shorter duplicate window: crwatch uses it, and says what that means. */
    sc.Name = "SHORT";
    const char *short_subjects[] = {"short.>"};
    sc.Subjects = short_subjects;
    sc.Duplicates = 10LL * 1000000000LL;
    cr_assert_eq(js_AddStream(&si, js, &sc, NULL, NULL), NATS_OK);
    jsStreamInfo_Destroy(si);
    it_proc_t *p = start_nats(db, s->url, (const char *[]){"nats.stream=SHORT", "nats.subject.template=short.{table}",
                                                           NULL});
    cr_assert(it_proc_stderr_wait(p, "drops duplicates within 10 s only", 5000), "no warning for a short window");
    free(stop_clean(p));

    /* A stream crwatch creates with the settings given. */
    p = start_nats(db, s->url, (const char *[]){"nats.stream=MADE", "nats.subject.template=made.{schema}.{kind}",
                                                "nats.stream.duplicate.window=90s", NULL});
    free(stop_clean(p));
    si = stream_info(s->url, "MADE");
    cr_assert(si, "stream MADE was not created");
    cr_assert_str_eq(si->Config->Subjects[0], "made.*.*");
    cr_assert_eq(si->Config->Duplicates, 90LL * 1000000000LL);
    cr_assert_eq(si->Config->Storage, js_FileStorage);
    cr_assert_eq(si->Config->Replicas, 1);
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    srv_stop(s);
    PQfinish(c);
    it_db_drop(NULL, db);
}
