/*
 * test_rabbitmq.c — the RabbitMQ sink against a real PostgreSQL and a real
 * RabbitMQ node: a throwaway node (scripts/rabbitmq) in a temp dir, on free
 * loopback ports, with its own node name, Erlang distribution port, epmd
 * port and cookie, booted once for the whole binary (a report hook of the
 * runner) and stopped at its end.  Each test has its own exchange and
 * queue.  Messages are read back with librabbitmq: a durable queue bound
 * to the test's exchange with '#', consumed after the fact.
 *
 * Covered: a mixed workload arrives whole, keyed, in per-key order, with
 * the CloudEvents attributes and the AMQP properties (message_id, delivery
 * mode, content type), on an exchange crwatch declared; binary content mode
 * with sink=kafka,rabbitmq; the node stopped for 20 s in the middle of a
 * load (the slot does not move while it is down, nothing is lost after);
 * kill -9 of crwatch in the middle of a load (at-least-once); an unroutable
 * message dead-lettered while the stream goes on; configuration errors and
 * a password that is never shown; TLS (amqps) against the node's own CA.
 *
 * When the node cannot be started (no rabbitmq-server installed), every
 * test is skipped, saying why.
 */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "support/itest.h"

#define EV_TIMEOUT 20000

/* ---- the node: one per test binary ------------------------------------- */

static const char *script(void) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/scripts/rabbitmq", CRW_SOURCE_DIR);
    return path;
}

/* scripts/rabbitmq SUB DIR [ARG]: its exit status (output to stderr of the runner). */
static int node_cmd(const char *sub, const char *dir, const char *arg, const char *arg2) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' %s '%s' %s %s >&2", script(), sub, dir, arg ? arg : "", arg2 ? arg2 : "");
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* DIR/env's lines into this process's environment (the workers inherit it). */
static bool load_env(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/env", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        const char *kv = !strncmp(line, "export ", 7) ? line + 7 : line;
        char *eq = strchr(kv, '=');
        if (!eq)
            continue;
        *eq = '\0';
        setenv(kv, eq + 1, 1);
    }
    fclose(f);
    return true;
}

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
    (void)set;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/crw-it-rabbitmq.XXXXXX", getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        setenv("CRW_IT_RMQ_MISSING", "cannot make a temp dir", 1);
        return;
    }
    setenv("CRW_IT_RMQ_DIR", dir, 1);
    if (access("/usr/lib/rabbitmq/bin/rabbitmq-server", X_OK) != 0 && !getenv("RABBITMQ_LIBDIR")) {
        setenv("CRW_IT_RMQ_MISSING", "rabbitmq-server is not installed (scripts/deps installs it)", 1);
        return;
    }
    char owner[32];
    snprintf(owner, sizeof owner, "%d", (int)getpid());
    int64_t t0 = it_wall_ms();
    /* max_message_size 1 MiB: a test sends a larger one */
    char args[128];
    snprintf(args, sizeof args, "%s --tls -c max_message_size=1048576", owner);
    if (node_cmd("start", dir, "--owner", args) != 0 || !load_env(dir)) {
        setenv("CRW_IT_RMQ_MISSING", "scripts/rabbitmq could not start a throwaway node (its output is above)", 1);
        return;
    }
    fprintf(stderr, "test_rabbitmq: a RabbitMQ node in %s, up in %.1f s\n", dir, (double)(it_wall_ms() - t0) / 1000);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats) {
    (void)stats;
    const char *dir = getenv("CRW_IT_RMQ_DIR");
    if (!dir)
        return;
    node_cmd("stop", dir, NULL, NULL);
    if (getenv("IT_KEEP_LOGS")) {
        fprintf(stderr, "test_rabbitmq: the node's logs are kept in %s/log\n", dir);
        return;
    }
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "test_rabbitmq: could not remove %s\n", dir);
}

static void need_node(void) {
    const char *why = getenv("CRW_IT_RMQ_MISSING");
    if (why) /* a failure, not a skip: scripts/deps installs the server, and a skipped test is no pass */
        cr_assert_fail("no RabbitMQ node: %s", why);
}

/* ---- a client: librabbitmq ---------------------------------------------- */

static amqp_connection_state_t rq_open(void) {
    char *url = strdup(getenv("RABBITMQ_URL"));
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    cr_assert_eq(amqp_parse_url(url, &ci), AMQP_STATUS_OK);
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    cr_assert_eq(amqp_socket_open(s, ci.host, ci.port), AMQP_STATUS_OK, "cannot connect to the node");
    amqp_rpc_reply_t r = amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    cr_assert_eq(r.reply_type, AMQP_RESPONSE_NORMAL, "login to the node failed");
    amqp_channel_open(c, 1);
    cr_assert_eq(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
    free(url);
    return c;
}

static void rq_close(amqp_connection_state_t c) {
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

/* Whether exchange exists (a passive declare, on a connection of its own). */
static bool rq_exchange_exists(const char *exchange) {
    amqp_connection_state_t c = rq_open();
    amqp_exchange_declare(c, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes("topic"), 1, 0, 0, 0,
                          amqp_empty_table);
    bool ok = amqp_get_rpc_reply(c).reply_type == AMQP_RESPONSE_NORMAL;
    amqp_destroy_connection(c);
    return ok;
}

/* A durable queue bound to exchange with binding (declaring the exchange, a durable topic one, when asked). */
static void rq_bind(const char *exchange, bool declare, const char *queue, const char *binding) {
    amqp_connection_state_t c = rq_open();
    if (declare) {
        amqp_exchange_declare(c, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes("topic"), 0, 1, 0, 0,
                              amqp_empty_table);
        cr_assert_eq(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL, "exchange.declare %s", exchange);
    }
    amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
    cr_assert_eq(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL, "queue.declare %s", queue);
    amqp_queue_bind(c, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange), amqp_cstring_bytes(binding),
                    amqp_empty_table);
    cr_assert_eq(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL, "queue.bind %s", queue);
    rq_close(c);
}

static void rq_drop(const char *exchange, const char *queue) {
    amqp_connection_state_t c = rq_open();
    amqp_queue_delete(c, 1, amqp_cstring_bytes(queue), 0, 0);
    amqp_get_rpc_reply(c);
    amqp_exchange_delete(c, 1, amqp_cstring_bytes(exchange), 0);
    amqp_get_rpc_reply(c);
    rq_close(c);
}

#define MAX_HDRS 24

typedef struct {
    char *body, *rk, *exchange, *mid, *ctype, *app;
    int mode; /* delivery_mode */
    int nh;
    char *hk[MAX_HDRS], *hv[MAX_HDRS];
    json_object *json; /* the body, parsed */
} amsg_t;

typedef struct {
    amsg_t *v;
    int n, cap;
} amsgs_t;

static char *dup_bytes(amqp_bytes_t b) {
    char *s = malloc(b.len + 1);
    if (b.len)
        memcpy(s, b.bytes, b.len);
    s[b.len] = '\0';
    return s;
}

static void amsgs_free(amsgs_t *ms) {
    for (int i = 0; i < ms->n; i++) {
        amsg_t *m = &ms->v[i];
        free(m->body), free(m->rk), free(m->exchange), free(m->mid), free(m->ctype), free(m->app);
        for (int h = 0; h < m->nh; h++)
            free(m->hk[h]), free(m->hv[h]);
        if (m->json)
            json_object_put(m->json);
    }
    free(ms->v);
    memset(ms, 0, sizeof *ms);
}

/* Header name's value (NULL when absent). */
static const char *hdr(const amsg_t *m, const char *name) {
    for (int i = 0; i < m->nh; i++)
        if (!strcmp(m->hk[i], name))
            return m->hv[i];
    return NULL;
}

/*
 * Consumes queue until want messages arrived and then quiet_ms passed
 * without another, or timeout_ms in all.  Every body must be JSON.
 */
static amsgs_t rq_consume(const char *queue, int want, int timeout_ms, int quiet_ms) {
    amqp_connection_state_t c = rq_open();
    amqp_basic_qos(c, 1, 0, 2000, 0);
    amqp_basic_consume(c, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
    cr_assert_eq(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL, "basic.consume %s", queue);
    amsgs_t out = {0};
    int64_t deadline = it_wall_ms() + timeout_ms, quiet_until = 0;
    for (;;) {
        int64_t now = it_wall_ms();
        if (now >= deadline || (out.n >= want && quiet_until && now >= quiet_until))
            break;
        amqp_envelope_t e;
        struct timeval tv = {0, 100000};
        amqp_maybe_release_buffers(c);
        amqp_rpc_reply_t r = amqp_consume_message(c, &e, &tv, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            cr_assert(r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT,
                      "consuming %s failed", queue);
            if (out.n >= want && !quiet_until)
                quiet_until = it_wall_ms() + quiet_ms;
            continue;
        }
        if (out.n == out.cap) {
            out.cap = out.cap ? out.cap * 2 : 256;
            out.v = realloc(out.v, sizeof *out.v * (size_t)out.cap);
        }
        amsg_t *m = &out.v[out.n++];
        memset(m, 0, sizeof *m);
        m->body = dup_bytes(e.message.body);
        m->rk = dup_bytes(e.routing_key);
        m->exchange = dup_bytes(e.exchange);
        const amqp_basic_properties_t *p = &e.message.properties;
        m->mid = p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG ? dup_bytes(p->message_id) : NULL;
        m->ctype = p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG ? dup_bytes(p->content_type) : NULL;
        m->app = p->_flags & AMQP_BASIC_APP_ID_FLAG ? dup_bytes(p->app_id) : NULL;
        m->mode = p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG ? p->delivery_mode : 0;
        if (p->_flags & AMQP_BASIC_HEADERS_FLAG)
            for (int h = 0; h < p->headers.num_entries && m->nh < MAX_HDRS; h++) {
                const amqp_table_entry_t *t = &p->headers.entries[h];
                if (t->value.kind != AMQP_FIELD_KIND_UTF8 && t->value.kind != AMQP_FIELD_KIND_BYTES)
                    continue;
                m->hk[m->nh] = dup_bytes(t->key);
                m->hv[m->nh++] = dup_bytes(t->value.value.bytes);
            }
        m->json = json_tokener_parse(m->body);
        cr_assert(m->json, "not JSON: %s", m->body);
        amqp_destroy_envelope(&e);
        quiet_until = out.n >= want ? it_wall_ms() + quiet_ms : 0;
    }
    rq_close(c);
    return out;
}

/* ---- crwatch -------------------------------------------------------------- */

/* The dead-letter file crwatch gets for db. */
static const char *deadletter_path(const char *db) {
    static char path[256];
    snprintf(path, sizeof path, "%s/crw-it-%s.deadletter.jsonl", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", db);
    return path;
}

/* Starts crwatch streaming db's tables (tables=...) into the node, exchange crw_<db>; extra: more -X values. */
static it_proc_t *start_rmq(const char *db, const char *tables, const char *const *extra) {
    static char url[512], dl[300], tb[256], ex[128];
    snprintf(url, sizeof url, "rabbitmq.url=%s", getenv("RABBITMQ_URL"));
    snprintf(dl, sizeof dl, "deadletter.file=%s", deadletter_path(db));
    snprintf(tb, sizeof tb, "tables=%s", tables);
    snprintf(ex, sizeof ex, "rabbitmq.exchange=crw_%s", db);
    const char *const base[] = {tb, "sink=rabbitmq", url, ex, dl, "status.interval.ms=200",
                                "reconnect.backoff.max.ms=1000", NULL};
    return it_crwatch_stream(db, base, extra);
}

static void stop_clean(it_proc_t *p) {
    int st = it_proc_signal_wait(p, SIGTERM, 20000);
    if (st != 0)
        it_proc_dump_stderr(p);
    cr_assert_eq(st, 0, "SIGTERM must drain and exit 0");
    it_proc_free(p);
}

/* confirmed_flush_lsn of the test's slot >= lsn, within timeout_ms. */
static bool slot_reaches(PGconn *c, const char *lsn, int timeout_ms) {
    return it_wait_sql_true(c, timeout_ms,
                            "SELECT confirmed_flush_lsn >= '%s'::pg_lsn FROM pg_replication_slots "
                            "WHERE slot_name = current_database()",
                            lsn);
}

static char *slot_confirmed(PGconn *c) {
    return it_query_value(c, "SELECT confirmed_flush_lsn FROM pg_replication_slots "
                             "WHERE slot_name = current_database()");
}

/* ---- a writer: inserts and updates, one row a transaction ------------------ */

typedef struct {
    char db[64];
    volatile int stop;
    volatile int txns;   /* committed */
    int keys;            /* rows inserted */
    char err[256];
} writer_t;

/* Transaction i: every fourth inserts key keys+1 (v = 0), the others add 1 to v of one key. */
static void *writer_main(void *arg) {
    writer_t *w = arg;
    PGconn *c = it_connect_thread(w->db, w->err, sizeof w->err);
    if (!c)
        return NULL;
    for (int i = 0; !w->stop; i++) {
        char sql[160];
        bool insert = i % 4 == 0 || w->keys == 0;
        if (insert)
            snprintf(sql, sizeof sql, "INSERT INTO t VALUES (%d, 0, md5('%d'))", w->keys + 1, i);
        else
            snprintf(sql, sizeof sql, "UPDATE t SET v = v + 1 WHERE id = %d", i % w->keys + 1);
        PGresult *r = PQexec(c, sql);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok) {
            snprintf(w->err, sizeof w->err, "%s", PQerrorMessage(c));
            break;
        }
        if (insert)
            w->keys++;
        w->txns++;
        it_sleep_ms(2);
    }
    PQfinish(c);
    return NULL;
}

/*
 * Every change of the writer's table arrived, each key's in order: per key,
 * the first coming of each event id (at-least-once repeats are dropped) has
 * v = 0 (ADDED), then 1, 2, ... up to the row's value in the table.
 */
static void expect_every_change_in_order(PGconn *c, const amsgs_t *ms, int *repeats) {
    char *nk = it_query_value(c, "SELECT count(*) FROM t");
    int keys = atoi(nk);
    free(nk);
    int *next = calloc((size_t)keys + 2, sizeof *next);
    json_object *seen = json_object_new_object();
    *repeats = 0;
    for (int i = 0; i < ms->n; i++) {
        const amsg_t *m = &ms->v[i];
        cr_assert(m->mid, "a message without message_id");
        if (json_object_object_get_ex(seen, m->mid, NULL)) {
            (*repeats)++;
            continue;
        }
        json_object_object_add(seen, m->mid, json_object_new_boolean(1));
        int k = atoi(it_json_str(m->json, "subject"));
        cr_assert(k >= 1 && k <= keys, "unexpected key %d", k);
        int v = atoi(it_json_str(m->json, "data.object.v"));
        cr_assert_eq(v, next[k], "key %d: v=%d came where v=%d was due (lost or out of order; id %s)", k, v, next[k],
                     m->mid);
        cr_assert_str_eq(it_json_str(m->json, "data.type"), v == 0 ? "ADDED" : "MODIFIED");
        next[k]++;
    }
    PGresult *r = it_query(c, "SELECT id, v FROM t ORDER BY id");
    for (int i = 0; i < PQntuples(r); i++) {
        int k = atoi(PQgetvalue(r, i, 0)), v = atoi(PQgetvalue(r, i, 1));
        cr_assert_eq(next[k], v + 1, "key %d: the table has v=%d, the queue brought up to v=%d", k, v, next[k] - 1);
    }
    PQclear(r);
    json_object_put(seen);
    free(next);
}

/* ---- tests --------------------------------------------------------------- */

TestSuite(rabbitmq, .timeout = 180, .init = need_node);

Test(rabbitmq, mixed_workload_arrives_keyed_in_order_with_cloudevents) {
    char db[64], ex[80], q[80];
    PGconn *c = it_db_create("rmix", db, sizeof db);
    snprintf(ex, sizeof ex, "crw_%s", db);
    snprintf(q, sizeof q, "q_%s", db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v int, note text);"
               "CREATE TABLE jobs (ns text, name text, phase text, PRIMARY KEY (ns, name))");
    cr_assert_not(rq_exchange_exists(ex), "the exchange exists before crwatch ran");
    it_proc_t *p = start_rmq(db, "public.t,public.jobs",
                             (const char *[]){"rabbitmq.routing.key={schema}.{table}.{kind}", NULL});
    /* crwatch declared it: a durable topic exchange (a declare with other attributes would be refused) */
    cr_assert(rq_exchange_exists(ex), "crwatch did not declare exchange %s", ex);
    rq_bind(ex, true, q, "#");

    enum { KEYS = 30, ROUNDS = 6 };
    it_exec(c, "INSERT INTO t SELECT g, 0, 'n' || g FROM generate_series(1, %d) g", KEYS); /* one txn */
    int want = KEYS;
    for (int r = 1; r <= ROUNDS; r++) {
        it_exec(c, "UPDATE t SET v = %d WHERE id %% 2 = %d", r, r % 2); /* half the keys per txn */
        it_exec(c, "UPDATE t SET v = %d WHERE id %% 2 <> %d", r, r % 2);
        want += KEYS;
    }
    it_exec(c, "BEGIN; INSERT INTO jobs VALUES ('default', 'a', 'Pending'), ('prod', 'a/b', 'Pending');"
               "UPDATE jobs SET phase = 'Running'; COMMIT");
    it_exec(c, "DELETE FROM jobs WHERE ns = 'prod'");
    it_exec(c, "DELETE FROM t WHERE id > %d", KEYS - 5);
    want += 2 + 2 + 1 + 5;
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");

    amsgs_t ms = rq_consume(q, want, EV_TIMEOUT, 500);
    cr_assert_eq(ms.n, want, "want %d messages, got %d", want, ms.n);
    int last_v[KEYS + 1];
    for (int k = 0; k <= KEYS; k++)
        last_v[k] = -1;
    char src_t[128], src_j[128];
    snprintf(src_t, sizeof src_t, "/crwatch/%s/public/t", db);
    snprintf(src_j, sizeof src_j, "/crwatch/%s/public/jobs", db);
    int jobs = 0, deletes = 0;
    const char *jobs_order[5] = {0};
    for (int i = 0; i < ms.n; i++) {
        amsg_t *m = &ms.v[i];
        json_object *e = m->json;
        /* the AMQP properties */
        cr_assert_str_eq(m->exchange, ex);
        cr_assert_eq(m->mode, 2, "delivery_mode must be 2 (persistent)");
        cr_assert_str_eq(m->ctype, "application/cloudevents+json");
        cr_assert_str_eq(m->app, "crwatch");
        cr_assert_str_eq(m->mid, it_json_str(e, "id"), "message_id must be the event id");
        cr_assert_str_eq(hdr(m, "crwatch_key"), it_json_str(e, "subject"), "the key header must be the subject");
        /* the CloudEvents attributes */
        cr_assert_str_eq(it_json_str(e, "specversion"), "1.0");
        cr_assert_str_eq(it_json_str(e, "datacontenttype"), "application/json");
        cr_assert(it_json_str(e, "time") && strlen(it_json_str(e, "time")) == 27);
        cr_assert(it_json_str(e, "pglsn") && atoi(it_json_str(e, "pgxid")) > 0);
        char id[256];
        snprintf(id, sizeof id, "%s/", it_json_str(e, "pglsn"));
        cr_assert(!strncmp(it_json_str(e, "id"), id, strlen(id)), "id %s is not <pglsn>/<n>", it_json_str(e, "id"));
        const char *type = it_json_str(e, "data.type");
        if (!strcmp(type, "DELETED"))
            deletes++;
        if (!strcmp(it_json_str(e, "source"), src_j)) {
            cr_assert_str_eq(m->rk, "public.jobs.jobs");
            cr_assert_str_eq(it_json_str(e, "type"), !strcmp(type, "ADDED")      ? "crwatch.jobs.added"
                                                     : !strcmp(type, "MODIFIED") ? "crwatch.jobs.modified"
                                                                                 : "crwatch.jobs.deleted");
            if (jobs < 5)
                jobs_order[jobs] = strdup(it_json_str(e, "subject"));
            jobs++;
            continue;
        }
        cr_assert_str_eq(it_json_str(e, "source"), src_t);
        cr_assert_str_eq(m->rk, "public.t.t");
        int k = atoi(it_json_str(e, "subject"));
        cr_assert(k >= 1 && k <= KEYS, "unexpected key %d", k);
        if (!strcmp(type, "DELETED")) {
            cr_assert_eq(last_v[k], ROUNDS, "key %d deleted after v=%d", k, last_v[k]);
            last_v[k] = 1000;
            continue;
        }
        int v = atoi(it_json_str(e, "data.object.v"));
        cr_assert_eq(v, last_v[k] + 1, "key %d: v=%d after v=%d (out of order or lost)", k, v, last_v[k]);
        cr_assert_str_eq(type, v == 0 ? "ADDED" : "MODIFIED");
        last_v[k] = v;
    }
    cr_assert_eq(jobs, 5);
    cr_assert_eq(deletes, 6);
    /* one transaction's order: both inserts, both updates; then the delete */
    cr_assert_str_eq(jobs_order[0], "default/a");
    cr_assert_str_eq(jobs_order[1], "prod/a/b");
    cr_assert_str_eq(jobs_order[4], "prod/a/b");
    for (int i = 0; i < 5; i++)
        free((char *)jobs_order[i]);
    for (int k = 1; k <= KEYS; k++)
        cr_assert_eq(last_v[k], k > KEYS - 5 ? 1000 : ROUNDS, "key %d ended at %d", k, last_v[k]);
    cr_assert(slot_reaches(c, end, EV_TIMEOUT), "the slot did not confirm what the broker confirmed");
    free(end);
    amsgs_free(&ms);
    stop_clean(p);
    rq_drop(ex, q);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(rabbitmq, binary_mode_beside_kafka) {
    char db[64], ex[80], q[80];
    PGconn *c = it_db_create("rbin", db, sizeof db);
    snprintf(ex, sizeof ex, "crw_%s", db);
    snprintf(q, sizeof q, "q_%s", db);
    it_exec(c, "CREATE TABLE t (id text PRIMARY KEY, n int)");
    rq_bind(ex, true, q, "public.t");
    const char *more[] = {"sink=kafka,rabbitmq", "kafka.bootstrap.servers=embedded", "cloudevents.mode=binary", NULL};
    it_proc_t *p = start_rmq(db, "public.t", more);
    char *log = it_proc_stderr(p);
    const char *at = strstr(log, "embedded broker at ");
    cr_assert(at, "the embedded broker's address is not logged:\n%s", log);
    char bs[128];
    cr_assert_eq(sscanf(at, "embedded broker at %127s", bs), 1);
    free(log);

    it_exec(c, "INSERT INTO t VALUES (E'a\"b/\\u00e9', 7)");
    it_exec(c, "INSERT INTO t SELECT 'k' || g, g FROM generate_series(1, 20) g");
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    amsgs_t ms = rq_consume(q, 21, EV_TIMEOUT, 300);
    cr_assert_eq(ms.n, 21);
    amsg_t *m = &ms.v[0];
    cr_assert_str_eq(hdr(m, "cloudEvents:specversion"), "1.0");
    cr_assert_str_eq(hdr(m, "cloudEvents:type"), "crwatch.t.added");
    cr_assert_str_eq(hdr(m, "cloudEvents:subject"), "a\"b/\xc3\xa9", "cloudEvents:subject must be unescaped");
    cr_assert_str_eq(hdr(m, "crwatch_key"), "a\"b/\xc3\xa9");
    char src[128];
    snprintf(src, sizeof src, "/crwatch/%s/public/t", db);
    cr_assert_str_eq(hdr(m, "cloudEvents:source"), src);
    cr_assert_str_eq(m->ctype, "application/json", "datacontenttype is the AMQP content-type");
    cr_assert_null(hdr(m, "cloudEvents:datacontenttype"));
    char id[300];
    snprintf(id, sizeof id, "%s/1", hdr(m, "cloudEvents:pglsn"));
    cr_assert_str_eq(hdr(m, "cloudEvents:id"), id);
    cr_assert_str_eq(m->mid, id, "message_id must be the event id");
    cr_assert(hdr(m, "cloudEvents:time") && strlen(hdr(m, "cloudEvents:time")) == 27);
    cr_assert(hdr(m, "cloudEvents:pgxid") && atoi(hdr(m, "cloudEvents:pgxid")) > 0);
    /* the body is the data alone */
    cr_assert_str_eq(it_json_str(m->json, "type"), "ADDED");
    cr_assert_str_eq(it_json_str(m->json, "object.n"), "7");
    cr_assert_not(it_json_exists(m->json, "specversion"));
    for (int i = 1; i < ms.n; i++)
        cr_assert_eq(atoi(it_json_str(ms.v[i].json, "object.n")), i, "message %d out of order", i);
    amsgs_free(&ms);

    /* Kafka has every event too (a confirmed slot means both sinks had them). */
    cr_assert(slot_reaches(c, end, EV_TIMEOUT));
    free(end);
    char *out = NULL;
    int st = it_run("/usr/bin/kcat",
                    (const char *[]){"kcat", "-b", bs, "-C", "-t", "crwatch.public.t", "-e", "-q", "-f", "%k\n", NULL},
                    30000, &out, NULL);
    cr_assert_eq(st, 0, "kcat failed");
    int lines = 0;
    for (const char *s = out; (s = strchr(s, '\n')); s++)
        lines++;
    cr_assert_eq(lines, 21, "kafka has %d messages, want 21:\n%s", lines, out);
    free(out);
    stop_clean(p);
    rq_drop(ex, q);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(rabbitmq, broker_down_20s_mid_load_holds_the_slot_and_loses_nothing) {
    char db[64], ex[80], q[80];
    PGconn *c = it_db_create("rdown", db, sizeof db);
    snprintf(ex, sizeof ex, "crw_%s", db);
    snprintf(q, sizeof q, "q_%s", db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v int, h text)");
    rq_bind(ex, true, q, "#");
    /* a small window: the load fills it during the outage, and emit() waits there */
    it_proc_t *p = start_rmq(db, "public.t", (const char *[]){"rabbitmq.max.unconfirmed=64", NULL});
    writer_t w = {0};
    snprintf(w.db, sizeof w.db, "%s", db);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer_main, &w), 0);
    it_sleep_ms(2000);
    cr_assert_gt(w.txns, 50, "the writer is too slow: %d transactions", w.txns);

    const char *dir = getenv("CRW_IT_RMQ_DIR");
    cr_assert_eq(node_cmd("stop", dir, NULL, NULL), 0, "cannot stop the node");
    int64_t down = it_wall_ms();
    char *first = it_query_value(c, "SELECT pg_current_wal_lsn()"); /* written after the stop */
    it_sleep_ms(1000); /* the last confirms before the stop reach the slot */
    char *held = slot_confirmed(c);
    cr_assert(held, "no slot");
    char *ok = it_query_value(c, "SELECT '%s'::pg_lsn < '%s'::pg_lsn", held, first);
    cr_assert_str_eq(ok, "t", "the slot (%s) is past a change written while the broker was down (%s)", held, first);
    free(ok);
    int txns_down = w.txns;
    while (it_wall_ms() - down < 20000) {
        it_sleep_ms(500);
        char *now = slot_confirmed(c);
        cr_assert_str_eq(now, held, "the slot moved from %s to %s while the broker was down", held, now);
        free(now);
        cr_assert(it_proc_running(p), "crwatch must wait for the broker, not exit");
    }
    cr_log_info("the node was down 20 s; the writer committed %d transactions meanwhile", w.txns - txns_down);
    cr_assert_eq(node_cmd("start", dir, NULL, NULL), 0, "cannot start the node again");
    it_sleep_ms(2000);
    w.stop = 1;
    pthread_join(th, NULL);
    cr_assert_str_eq(w.err, "", "writer: %s", w.err);
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, 60000), "the slot did not reach the end after the broker came back");
    cr_assert(it_proc_stderr_wait(p, "connected again", 1000), "no reconnect in the log");
    free(end);
    free(first);
    free(held);

    amsgs_t ms = rq_consume(q, w.txns, EV_TIMEOUT * 2, 1000);
    int repeats;
    expect_every_change_in_order(c, &ms, &repeats);
    cr_log_info("%d transactions, %d messages (%d repeats of messages unconfirmed at the outage)", w.txns, ms.n,
                repeats);
    amsgs_free(&ms);
    stop_clean(p);
    rq_drop(ex, q);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(rabbitmq, kill_9_mid_load_then_restart_is_at_least_once) {
    enum { KILLS = 3 };
    char db[64], ex[80], q[80];
    PGconn *c = it_db_create("rkill", db, sizeof db);
    snprintf(ex, sizeof ex, "crw_%s", db);
    snprintf(q, sizeof q, "q_%s", db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v int, h text)");
    rq_bind(ex, true, q, "#");
    it_proc_t *p = start_rmq(db, "public.t", NULL);
    writer_t w = {0};
    snprintf(w.db, sizeof w.db, "%s", db);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer_main, &w), 0);
    unsigned seed = (unsigned)time(NULL);
    cr_log_info("kill -9 timing seed %u", seed);
    for (int i = 0; i < KILLS; i++) {
        it_sleep_ms(500 + (int)(rand_r(&seed) % 1000));
        cr_assert_eq(it_proc_signal_wait(p, SIGKILL, 10000), 128 + SIGKILL);
        it_proc_free(p);
        p = start_rmq(db, "public.t", NULL);
    }
    it_sleep_ms(500);
    w.stop = 1;
    pthread_join(th, NULL);
    cr_assert_str_eq(w.err, "", "writer: %s", w.err);
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, 30000), "the last crwatch did not confirm the writer's changes");
    free(end);
    stop_clean(p);
    amsgs_t ms = rq_consume(q, w.txns, EV_TIMEOUT, 1000);
    int repeats;
    expect_every_change_in_order(c, &ms, &repeats);
    cr_log_info("%d transactions, %d messages, %d repeats after %d kills", w.txns, ms.n, repeats, KILLS);
    amsgs_free(&ms);
    rq_drop(ex, q);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* Unroutable (basic.return) and too large (the broker closes the channel): both dead-lettered, the stream goes on. */
Test(rabbitmq, unroutable_message_is_dead_lettered_and_the_stream_goes_on) {
    char db[64], ex[80], q[80];
    PGconn *c = it_db_create("rdead", db, sizeof db);
    snprintf(ex, sizeof ex, "crw_%s", db);
    snprintf(q, sizeof q, "q_%s", db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, pad text); CREATE TABLE u (id int PRIMARY KEY)");
    rq_bind(ex, true, q, "public.t"); /* nothing is bound for public.u */
    const char *dl = deadletter_path(db);
    unlink(dl);
    it_proc_t *p = start_rmq(db, "public.t,public.u", NULL);
    it_exec(c, "INSERT INTO t VALUES (1)");
    it_exec(c, "INSERT INTO u VALUES (2)");
    it_exec(c, "INSERT INTO t VALUES (3)");
    cr_assert(it_proc_stderr_wait(p, "dead-lettered", EV_TIMEOUT), "nothing was dead-lettered");
    it_exec(c, "INSERT INTO t VALUES (4)");
    it_exec(c, "INSERT INTO t VALUES (5, repeat('x', 1500000))"); /* over the node's max_message_size (1 MiB) */
    it_exec(c, "INSERT INTO t VALUES (6)");
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, EV_TIMEOUT), "the slot did not move past the dead-lettered change");
    free(end);
    amsgs_t ms = rq_consume(q, 4, EV_TIMEOUT, 300);
    char got[64] = "";
    for (int i = 0; i < ms.n; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", i ? " " : "",
                 it_json_str(ms.v[i].json, "subject"));
    /* a message the closed channel cut off comes again: at-least-once, in order */
    cr_assert(!strcmp(got, "1 3 4 6") || !strcmp(got, "1 3 4 6 6"), "the queue got %s", got);
    amsgs_free(&ms);
    stop_clean(p);

    FILE *f = fopen(dl, "r");
    cr_assert(f, "no dead-letter file %s", dl);
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0) {
        json_object *rec = json_tokener_parse(line);
        cr_assert(rec, "dead-letter record: %.300s", line);
        const char *reason = it_json_str(rec, "reason");
        if (n == 0) {
            cr_assert(strstr(reason, "NO_ROUTE") && strstr(reason, "public.u"), "reason: %s", reason);
            cr_assert_str_eq(it_json_str(rec, "payload.subject"), "2");
        } else {
            cr_assert(strstr(reason, "max_message_size"), "reason: %s", reason);
            cr_assert_str_eq(it_json_str(rec, "payload.subject"), "5");
            cr_assert_eq(strlen(it_json_str(rec, "payload.data.object.pad")), 1500000, "the record is whole");
        }
        cr_assert(it_json_str(rec, "pglsn"));
        json_object_put(rec);
        n++;
    }
    free(line);
    fclose(f);
    cr_assert_eq(n, 2, "dead-letter records: %d", n);
    unlink(dl);
    rq_drop(ex, q);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(rabbitmq, configuration_errors_exit_2_and_the_password_is_never_shown) {
    char db[64];
    PGconn *c = it_db_create("rconf", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    const char *pw = getenv("RABBITMQ_PASSWORD");
    char url[512], badurl[512], wrong[512];
    snprintf(url, sizeof url, "rabbitmq.url=%s", getenv("RABBITMQ_URL"));
    snprintf(badurl, sizeof badurl, "rabbitmq.url=http://crwatch:%s@127.0.0.1:1/", pw);
    static const struct {
        const char *x[3];
        const char *names;
    } cases[] = {
        {{NULL}, "rabbitmq.url"},
        {{"rabbitmq.exchange=crw.{nope}", NULL}, "rabbitmq.exchange"},
        {{"rabbitmq.exchange=crw.{key}", NULL}, "rabbitmq.exchange"},
        {{"rabbitmq.exchange=crw ex", NULL}, "rabbitmq.exchange"},
        {{"rabbitmq.routing.key={schema}.{oops}", NULL}, "rabbitmq.routing.key"},
        {{"rabbitmq.max.unconfirmed=0", NULL}, "rabbitmq.max.unconfirmed"},
        {{"rabbitmq.tls.ca.file=/nonexistent.pem", NULL}, "rabbitmq.tls"},
        {{"rabbitmq.tls.cert.file=/x.pem", NULL}, "rabbitmq.tls"},
        {{"rabbitmq.password.file=/nonexistent/pw", NULL}, "rabbitmq.password.file"},
        {{"cloudevents.mode=binary", "event.format=debezium", NULL}, "cloudevents.mode"},
        {{"delivery=exactly-once", NULL}, "delivery"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0] + 1; i++) {
        const char *args[32];
        int n = 0;
        const char *base[] = {"stream", "-X", "tables=public.t", "-X", "sink=rabbitmq"};
        for (size_t j = 0; j < sizeof base / sizeof base[0]; j++)
            args[n++] = base[j];
        bool last = i == sizeof cases / sizeof cases[0]; /* a URL that is not AMQP, its password in it */
        if (i > 0) {
            args[n++] = "-X";
            args[n++] = last ? badurl : url;
        }
        for (int j = 0; !last && cases[i].x[j]; j++) {
            args[n++] = "-X";
            args[n++] = cases[i].x[j];
        }
        args[n] = NULL;
        char *err = NULL;
        int st = it_run_crwatch(db, args, 20000, NULL, &err);
        const char *names = last ? "rabbitmq.url" : cases[i].names;
        cr_assert_eq(st, 2, "case %zu: exit %d, want 2: %s", i, st, err);
        cr_assert(strstr(err, names), "case %zu: the error must name %s: %s", i, names, err);
        cr_assert_null(strstr(err, pw), "case %zu: the password was printed: %s", i, err);
        free(err);
    }

    /* A wrong password: exit 1, naming the user, never the password. */
    char *u = strdup(getenv("RABBITMQ_URL"));
    char *at = strstr(u, pw);
    cr_assert(at);
    at[0] = at[0] == 'x' ? 'y' : 'x';
    snprintf(wrong, sizeof wrong, "rabbitmq.url=%s", u);
    char *err = NULL;
    int st = it_run_crwatch(db, (const char *[]){"stream", "-X", "tables=public.t", "-X", "sink=rabbitmq", "-X", wrong,
                                                 NULL},
                            20000, NULL, &err);
    cr_assert_eq(st, 1, "a refused login: exit %d: %s", st, err);
    cr_assert(strstr(err, "refused the login of user 'crwatch'"), "%s", err);
    char wrong_pw[128];
    snprintf(wrong_pw, sizeof wrong_pw, "%.*s", (int)strlen(pw), at);
    cr_assert_null(strstr(err, wrong_pw), "the wrong password was printed: %s", err);
    free(err);
    free(u);

    /* A working run at debug level, the password in the URL and in a file: never in the log. */
    char pwfile[300];
    snprintf(pwfile, sizeof pwfile, "%s/crw-it-%s.pw", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", db);
    FILE *f = fopen(pwfile, "w");
    cr_assert(f);
    fprintf(f, "%s\n", pw);
    fclose(f);
    char pwkey[400];
    snprintf(pwkey, sizeof pwkey, "rabbitmq.password.file=%s", pwfile);
    it_proc_t *p = start_rmq(db, "public.t", (const char *[]){"log.level=debug", pwkey, NULL});
    it_exec(c, "INSERT INTO t VALUES (1)");
    cr_assert(it_proc_stderr_wait(p, "dead-lettered", EV_TIMEOUT)); /* no queue is bound: it comes back */
    char *log = it_proc_stderr(p);
    cr_assert(strstr(log, "rabbitmq: connected to amqp://crwatch@127.0.0.1:"), "%s", log);
    cr_assert_null(strstr(log, pw), "the password was logged:\n%s", log);
    free(log);
    stop_clean(p);
    unlink(pwfile);
    unlink(deadletter_path(db));
    char ex[80];
    snprintf(ex, sizeof ex, "crw_%s", db);
    rq_drop(ex, "none");
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(rabbitmq, tls_checks_the_server_certificate) {
    char db[64], ex[80], q[80];
    PGconn *c = it_db_create("rtls", db, sizeof db);
    snprintf(ex, sizeof ex, "crw_%s", db);
    snprintf(q, sizeof q, "q_%s", db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    rq_bind(ex, true, q, "#");
    char url[512], ca[512];
    snprintf(url, sizeof url, "rabbitmq.url=%s", getenv("RABBITMQ_TLS_URL"));
    snprintf(ca, sizeof ca, "rabbitmq.tls.ca.file=%s", getenv("RABBITMQ_TLS_CA"));
    it_proc_t *p = start_rmq(db, "public.t", (const char *[]){url, ca, NULL});
    cr_assert(it_proc_stderr_wait(p, "rabbitmq: connected to amqps://crwatch@localhost:", 1000));
    it_exec(c, "INSERT INTO t VALUES (1)");
    amsgs_t ms = rq_consume(q, 1, EV_TIMEOUT, 200);
    cr_assert_eq(ms.n, 1);
    cr_assert_str_eq(it_json_str(ms.v[0].json, "subject"), "1");
    amsgs_free(&ms);
    stop_clean(p);

    /* Without the node's CA (the system's bundle does not have it): refused at start, exit 1. */
    char *err = NULL;
    int st = it_run_crwatch(db, (const char *[]){"stream", "-X", "tables=public.t", "-X", "sink=rabbitmq", "-X", url,
                                                 NULL},
                            20000, NULL, &err);
    cr_assert_eq(st, 1, "exit %d: %s", st, err);
    cr_assert(strstr(err, "verification failed"), "%s", err);
    cr_assert_null(strstr(err, getenv("RABBITMQ_PASSWORD")), "the password was printed: %s", err);
    free(err);
    rq_drop(ex, q);
    PQfinish(c);
    it_db_drop(NULL, db);
}
