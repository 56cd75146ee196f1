/*
 * test_kafka.c — the Kafka sink against a real PostgreSQL and librdkafka's
 * mock cluster in a helper process (crwatch-mock-kafka), so crwatch can be
 * killed and restarted while the broker and its data live: per-key order and
 * partitioning, clean restarts, a broker outage (slot held), exactly-once
 * under repeated kill -9, dead-lettering, binary content mode with the
 * embedded broker, and configuration errors.  Events are read back with a
 * librdkafka consumer and with kcat.
 *
 * The 2.0.2 mock writes no transaction markers and answers Fetch with
 * LastStableOffset = high watermark, so every test runs it with
 * --transactions: a relay in front of it writes the markers and serves
 * read_committed fetches as a broker does (tools/mock_kafka_txn.h).  The
 * first test checks that layer with librdkafka's own transactional producer;
 * the exactly-once tests then read with read_committed consumers (librdkafka
 * and kcat) and count what a real broker would show them.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support/itest.h"

#define EV_TIMEOUT 20000

/* ---- the mock broker helper ------------------------------------------ */

typedef struct {
    pid_t pid;
    int in, out; /* its stdin (commands) and stdout (replies) */
    char bs[128];
} mock_t;

static const char *mock_path(void) {
    static char path[4096];
    const char *env = getenv("CRW_MOCK_KAFKA");
    if (env && *env)
        return env;
    snprintf(path, sizeof path, "%s", it_crwatch_path());
    char *slash = strrchr(path, '/');
    snprintf(slash ? slash + 1 : path, sizeof path - (size_t)(slash ? slash + 1 - path : 0), "crwatch-mock-kafka");
    return path;
}

/* One line from fd (without the newline) into buf; false on timeout or EOF. */
static bool read_line_fd(int fd, char *buf, size_t n, int timeout_ms) {
    size_t len = 0;
    int64_t deadline = it_wall_ms() + timeout_ms;
    while (len + 1 < n) {
        struct pollfd p = {fd, POLLIN, 0};
        int left = (int)(deadline - it_wall_ms());
        if (left <= 0 || poll(&p, 1, left) <= 0)
            return false;
        char c;
        if (read(fd, &c, 1) != 1)
            return false;
        if (c == '\n')
            break;
        buf[len++] = c;
    }
    buf[len] = '\0';
    return true;
}

static mock_t *mock_start(void) {
    const char *path = mock_path();
    cr_assert(access(path, X_OK) == 0, "%s is missing: build the crwatch-mock-kafka target (or set CRW_MOCK_KAFKA)",
              path);
    int to_child[2], from_child[2];
    cr_assert(pipe2(to_child, O_CLOEXEC) == 0 && pipe2(from_child, O_CLOEXEC) == 0);
    pid_t parent = getpid();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(to_child[0], 0);
        dup2(from_child[1], 1);
        execl(path, path, "--transactions", (char *)NULL);
        _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    mock_t *m = calloc(1, sizeof *m);
    m->pid = pid;
    m->in = to_child[1];
    m->out = from_child[0];
    cr_assert(read_line_fd(m->out, m->bs, sizeof m->bs, 10000) && strchr(m->bs, ':'),
              "crwatch-mock-kafka printed no bootstrap address");
    return m;
}

/* Sends one command to the helper; its one-line reply (static buffer). */
static const char *mock_ask(mock_t *m, const char *fmt, va_list ap) {
    static char reply[1024];
    char cmd[256];
    vsnprintf(cmd, sizeof cmd - 1, fmt, ap);
    strcat(cmd, "\n");
    cr_assert(write(m->in, cmd, strlen(cmd)) == (ssize_t)strlen(cmd), "writing to the mock broker helper");
    cr_assert(read_line_fd(m->out, reply, sizeof reply, 10000), "no reply from the mock broker helper to %s", cmd);
    return reply;
}

/* Sends one command to the helper and requires its "ok". */
static void mock_cmd(mock_t *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *reply = mock_ask(m, fmt, ap);
    va_end(ap);
    cr_assert_str_eq(reply, "ok", "mock broker helper: %s -> %s", fmt, reply);
}

/* Sends one command to the helper; the text after its "ok " (static buffer). */
static const char *mock_query(mock_t *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *reply = mock_ask(m, fmt, ap);
    va_end(ap);
    cr_assert(!strncmp(reply, "ok ", 3), "mock broker helper: %s -> %s", fmt, reply);
    return reply + 3;
}

static void mock_stop(mock_t *m) {
    close(m->in); /* the helper exits at the end of its stdin */
    for (int i = 0; i < 100; i++) {
        if (waitpid(m->pid, NULL, WNOHANG) == m->pid)
            goto done;
        it_sleep_ms(50);
    }
    kill(m->pid, SIGKILL);
    waitpid(m->pid, NULL, 0);
done:
    close(m->out);
    free(m);
}

/* ---- reading topics back ------------------------------------------------ */

typedef struct {
    int32_t part;
    int64_t off, ts;
    char *key;   /* NUL-terminated; NULL when none */
    char *val;   /* NUL-terminated; NULL for a null value */
    size_t len;
    rd_kafka_headers_t *hdrs; /* NULL when none */
} kmsg_t;

typedef struct {
    kmsg_t *v;
    int n, cap;
} kmsgs_t;

static void kmsgs_free(kmsgs_t *ms) {
    for (int i = 0; i < ms->n; i++) {
        free(ms->v[i].key);
        free(ms->v[i].val);
        if (ms->v[i].hdrs)
            rd_kafka_headers_destroy(ms->v[i].hdrs);
    }
    free(ms->v);
    memset(ms, 0, sizeof *ms);
}

static char *dup_mem(const void *p, size_t n) {
    if (!p)
        return NULL;
    char *s = malloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/*
 * Reads topic from its beginning with a librdkafka consumer until at least
 * want messages arrived and every partition is at its end, or timeout_ms.
 */
static kmsgs_t consume(const char *bs, const char *topic, bool read_committed, int want, int timeout_ms) {
    char err[512], group[64];
    static int n;
    snprintf(group, sizeof group, "it-%d-%d", (int)getpid(), ++n);
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    const char *props[][2] = {{"bootstrap.servers", bs},
                              {"group.id", group},
                              {"enable.partition.eof", "true"},
                              {"enable.auto.commit", "false"},
                              {"isolation.level", read_committed ? "read_committed" : "read_uncommitted"},
                              {"log_level", "3"}};
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
        cr_assert(rd_kafka_conf_set(c, props[i][0], props[i][1], err, sizeof err) == RD_KAFKA_CONF_OK, "%s", err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
    cr_assert(rk, "consumer: %s", err);
    int64_t deadline = it_wall_ms() + timeout_ms;
    int parts = 0;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    while (parts == 0 && it_wall_ms() < deadline) {
        const rd_kafka_metadata_t *md;
        if (rd_kafka_metadata(rk, 0, rkt, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
                parts = md->topics[0].partition_cnt;
            rd_kafka_metadata_destroy(md);
        }
        if (parts == 0)
            it_sleep_ms(100);
    }
    rd_kafka_topic_destroy(rkt);
    kmsgs_t out = {0};
    if (parts == 0) {
        rd_kafka_destroy(rk);
        return out;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    bool *eof = calloc((size_t)parts, sizeof *eof);
    for (;;) {
        int at_end = 0;
        for (int p = 0; p < parts; p++)
            at_end += eof[p];
        if ((out.n >= want && at_end == parts) || it_wall_ms() >= deadline)
            break;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            eof[m->partition] = true;
        else if (!m->err) {
            eof[m->partition] = false;
            if (out.n == out.cap) {
                out.cap = out.cap ? out.cap * 2 : 256;
                out.v = realloc(out.v, sizeof *out.v * (size_t)out.cap);
            }
            kmsg_t *k = &out.v[out.n++];
            k->part = m->partition;
            k->off = m->offset;
            k->ts = rd_kafka_message_timestamp(m, NULL);
            k->key = dup_mem(m->key, m->key_len);
            k->val = dup_mem(m->payload, m->len);
            k->len = m->len;
            rd_kafka_headers_t *h;
            k->hdrs = rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR ? rd_kafka_headers_copy(h) : NULL;
        }
        rd_kafka_message_destroy(m);
    }
    free(eof);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return out;
}

/* Header value as a string (static buffer), NULL when absent. */
static const char *header(const kmsg_t *k, const char *name) {
    static char buf[1024];
    const void *v;
    size_t n;
    if (!k->hdrs || rd_kafka_header_get_last(k->hdrs, name, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    snprintf(buf, sizeof buf, "%.*s", (int)n, v ? (const char *)v : "");
    return buf;
}

static const char *kcat_path(void) {
    static const char *const dirs[] = {"/usr/bin/kcat", "/usr/local/bin/kcat", "/usr/bin/kafkacat"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        if (access(dirs[i], X_OK) == 0)
            return dirs[i];
    cr_assert_fail("kcat is not installed (scripts/deps installs it)");
    return NULL;
}

/* Runs kcat -C on topic to the end; returns its stdout (malloc'd) and line count. */
static char *kcat_consume(const char *bs, const char *topic, const char *fmt, bool read_committed, int *lines) {
    const char *argv[] = {"kcat", "-b", bs, "-C", "-t", topic, "-e", "-q", "-f", fmt, "-X",
                          read_committed ? "isolation.level=read_committed" : "isolation.level=read_uncommitted",
                          NULL};
    char *out = NULL, *err = NULL;
    int st = it_run(kcat_path(), argv, 30000, &out, &err);
    cr_assert_eq(st, 0, "kcat exited %d: %s", st, err);
    free(err);
    *lines = 0;
    for (const char *p = out; *p; p++)
        *lines += *p == '\n';
    return out;
}

/* A transactional producer, initialised. */
static rd_kafka_t *txn_producer(const char *bs, const char *tid) {
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    const char *props[][2] = {{"bootstrap.servers", bs}, {"transactional.id", tid}, {"log_level", "3"}};
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
        cr_assert(rd_kafka_conf_set(c, props[i][0], props[i][1], err, sizeof err) == RD_KAFKA_CONF_OK, "%s", err);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
    cr_assert(p, "producer: %s", err);
    rd_kafka_error_t *e = rd_kafka_init_transactions(p, 10000);
    cr_assert(!e, "init_transactions: %s", e ? rd_kafka_error_string(e) : "");
    return p;
}

enum txn_end { TXN_COMMIT, TXN_ABORT, TXN_LEAVE_OPEN };

/* One transaction of the space-separated keys (values = keys) to topic. */
static void txn_send(rd_kafka_t *p, const char *topic, const char *keys, enum txn_end end) {
    rd_kafka_error_t *e = rd_kafka_begin_transaction(p);
    cr_assert(!e, "begin_transaction: %s", e ? rd_kafka_error_string(e) : "");
    char *copy = strdup(keys), *save = NULL;
    for (char *k = strtok_r(copy, " ", &save); k; k = strtok_r(NULL, " ", &save)) {
        rd_kafka_resp_err_t err = rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(k, strlen(k)),
                                                    RD_KAFKA_V_VALUE(k, strlen(k)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                                    RD_KAFKA_V_END);
        cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s", rd_kafka_err2str(err));
    }
    free(copy);
    cr_assert_eq(rd_kafka_flush(p, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    if (end == TXN_COMMIT)
        e = rd_kafka_commit_transaction(p, 10000);
    else if (end == TXN_ABORT)
        e = rd_kafka_abort_transaction(p, 10000);
    cr_assert(!e, "ending the transaction: %s", e ? rd_kafka_error_string(e) : "");
}

/* The keys of ms, space-separated, in offset order (one partition). */
static char *keys_of(const kmsgs_t *ms) {
    size_t n = 1;
    for (int i = 0; i < ms->n; i++)
        n += strlen(ms->v[i].key ? ms->v[i].key : "-") + 1;
    char *s = calloc(n, 1);
    for (int i = 0; i < ms->n; i++) {
        if (i)
            strcat(s, " ");
        strcat(s, ms->v[i].key ? ms->v[i].key : "-");
    }
    return s;
}

/* The relay in front of the mock (tools/mock_kafka_txn.c) is what the
 * exactly-once tests stand on: check it against librdkafka's own
 * transactional producer and read_committed consumer, and kcat. */
Test(kafka, mock_transaction_layer_serves_read_committed_like_a_broker) {
    mock_t *m = mock_start();
    mock_cmd(m, "create txl 1");
    rd_kafka_t *p1 = txn_producer(m->bs, "txl-test");
    txn_send(p1, "txl", "a1 a2", TXN_COMMIT);
    txn_send(p1, "txl", "b1 b2", TXN_ABORT);
    txn_send(p1, "txl", "c1", TXN_LEAVE_OPEN);

    kmsgs_t rc = consume(m->bs, "txl", true, 3, 3000);
    char *keys = keys_of(&rc);
    cr_assert_str_eq(keys, "a1 a2", "read_committed, one transaction open");
    free(keys);
    kmsgs_free(&rc);
    kmsgs_t ru = consume(m->bs, "txl", false, 5, EV_TIMEOUT);
    keys = keys_of(&ru);
    cr_assert_str_eq(keys, "a1 a2 b1 b2 c1", "read_uncommitted sees everything but the markers");
    free(keys);
    kmsgs_free(&ru);

    /* A second producer with the same transactional.id fences the first:
     * its open transaction is aborted, as a broker does after a crash. */
    rd_kafka_t *p2 = txn_producer(m->bs, "txl-test");
    txn_send(p2, "txl", "d1", TXN_COMMIT);
    rc = consume(m->bs, "txl", true, 3, EV_TIMEOUT);
    keys = keys_of(&rc);
    cr_assert_str_eq(keys, "a1 a2 d1");
    free(keys);
    /* Markers take offsets, as on a broker: a1 a2 COMMIT b1 b2 ABORT c1 ABORT d1 COMMIT. */
    cr_assert_eq(rc.v[2].off, 8, "d1 at offset %lld", (long long)rc.v[2].off);
    kmsgs_free(&rc);
    int lines;
    char *out = kcat_consume(m->bs, "txl", "%k\n", true, &lines);
    cr_assert_str_eq(out, "a1\na2\nd1\n", "kcat read_committed");
    free(out);
    out = kcat_consume(m->bs, "txl", "%k\n", false, &lines);
    cr_assert_str_eq(out, "a1\na2\nb1\nb2\nc1\nd1\n", "kcat read_uncommitted");
    free(out);
    rd_kafka_destroy(p2);
    rd_kafka_destroy(p1);
    mock_stop(m);
}

/* The dead-letter file start_kafka gives crwatch for db (removed first). */
static const char *deadletter_path(const char *db) {
    static char path[256];
    snprintf(path, sizeof path, "%s/crw-it-%s.deadletter.jsonl", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", db);
    return path;
}

/* The subjects of the dead-letter file's records, space-separated (malloc'd);
 * every record must name reason_has in its reason and carry a pglsn. */
static char *deadletter_subjects(const char *path, const char *reason_has) {
    FILE *f = fopen(path, "r");
    cr_assert(f, "no dead-letter file %s", path);
    char *line = NULL, *out = calloc(1, 1);
    size_t cap = 0, len = 0;
    while (getline(&line, &cap, f) > 0) {
        json_object *rec = json_tokener_parse(line);
        cr_assert(rec, "dead-letter record: %s", line);
        cr_assert(strstr(it_json_str(rec, "reason"), reason_has), "reason %s", it_json_str(rec, "reason"));
        cr_assert(it_json_str(rec, "pglsn"), "pglsn missing: %s", line);
        const char *subject = it_json_str(rec, "payload.subject");
        out = realloc(out, len + strlen(subject) + 2);
        len += (size_t)sprintf(out + len, "%s%s", len ? " " : "", subject);
        json_object_put(rec);
    }
    free(line);
    fclose(f);
    return out;
}

/* ---- crwatch ------------------------------------------------------------- */

/* Starts crwatch streaming table t of db into the broker at bs; extra: NULL-terminated -X values. */
static it_proc_t *start_kafka(const char *db, const char *bs, const char *const *extra) {
    char boot[256], dl[300];
    snprintf(boot, sizeof boot, "kafka.bootstrap.servers=%s", bs);
    snprintf(dl, sizeof dl, "deadletter.file=%s", deadletter_path(db));
    const char *const base[] = {"tables=public.t", "sink=kafka", boot, dl, "status.interval.ms=200", NULL};
    return it_crwatch_stream(db, base, extra);
}

/* SIGTERM, exit 0 required; returns how many events crwatch says it sent of a
 * transaction the stop cut in two (at-least-once: those come again). */
static int stop_clean(it_proc_t *p) {
    int st = it_proc_signal_wait(p, SIGTERM, 20000);
    if (st != 0)
        it_proc_dump_stderr(p);
    cr_assert_eq(st, 0, "SIGTERM must drain and exit 0");
    char *log = it_proc_stderr(p);
    const char *cut = strstr(log, "stopped inside a transaction: ");
    int resent = cut ? atoi(cut + strlen("stopped inside a transaction: ")) : 0;
    free(log);
    it_proc_free(p);
    return resent;
}

/* confirmed_flush_lsn of the test's slot >= lsn (text), within timeout_ms. */
static bool slot_reaches(PGconn *c, const char *lsn, int timeout_ms) {
    return it_wait_sql_true(c, timeout_ms,
                            "SELECT confirmed_flush_lsn >= '%s'::pg_lsn FROM pg_replication_slots "
                            "WHERE slot_name = current_database()",
                            lsn);
}

/* Parses a structured event; the test fails when it is not JSON. */
static json_object *event_of(const kmsg_t *k) {
    cr_assert(k->val, "null value where an event was expected");
    json_object *ev = json_tokener_parse(k->val);
    cr_assert(ev, "not JSON: %s", k->val);
    return ev;
}

static uint64_t lsn_of(const char *s) {
    unsigned hi, lo;
    cr_assert(s && sscanf(s, "%X/%X", &hi, &lo) == 2, "not an LSN: %s", s ? s : "(null)");
    return (uint64_t)hi << 32 | lo;
}

/* ---- tests --------------------------------------------------------------- */

TestSuite(kafka, .timeout = 180);

Test(kafka, per_key_order_partitioning_and_kcat) {
    enum { KEYS = 40, ROUNDS = 25 };
    char db[64];
    PGconn *c = it_db_create("korder", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v int)");
    mock_t *m = mock_start();
    it_proc_t *p = start_kafka(db, m->bs, NULL);
    it_exec(c, "INSERT INTO t SELECT g, 0 FROM generate_series(1, %d) g", KEYS);
    for (int r = 1; r <= ROUNDS; r++) {
        it_exec(c, "UPDATE t SET v = %d", r);                         /* one transaction, every key */
        it_exec(c, "UPDATE t SET v = v WHERE id = %d", r % KEYS + 1); /* a same-value change, its own txn */
    }
    const int want = KEYS + KEYS * ROUNDS + ROUNDS;
    kmsgs_t ms = consume(m->bs, "crwatch.public.t", false, want, EV_TIMEOUT);
    cr_assert_eq(ms.n, want, "want %d messages, got %d", want, ms.n);

    /* Per key: one partition, murmur2 of the key (Java's default partitioner), and its changes in order. */
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, rd_kafka_conf_new(), NULL, 0);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, "crwatch.public.t", NULL);
    int last_v[KEYS + 1], part[KEYS + 1], seen[KEYS + 1];
    for (int k = 0; k <= KEYS; k++)
        last_v[k] = -1, part[k] = -1, seen[k] = 0;
    for (int i = 0; i < ms.n; i++) {
        json_object *ev = event_of(&ms.v[i]);
        int k = atoi(it_json_str(ev, "subject"));
        cr_assert(k >= 1 && k <= KEYS, "unexpected key %d", k);
        cr_assert_str_eq(ms.v[i].key, it_json_str(ev, "subject"), "message key must be the subject");
        int32_t want_part = rd_kafka_msg_partitioner_murmur2(rkt, ms.v[i].key, strlen(ms.v[i].key), 4, NULL, NULL);
        cr_assert_eq(ms.v[i].part, want_part, "key %d in partition %d, murmur2 says %d", k, ms.v[i].part, want_part);
        if (part[k] < 0)
            part[k] = ms.v[i].part;
        int v = atoi(it_json_str(ev, "data.object.v"));
        cr_assert(v >= last_v[k], "key %d: v %d after %d (out of order)", k, v, last_v[k]);
        last_v[k] = v;
        seen[k]++;
        json_object_put(ev);
    }
    for (int k = 1; k <= KEYS; k++) {
        cr_assert_eq(last_v[k], ROUNDS, "key %d ended at v=%d", k, last_v[k]);
        cr_assert_geq(seen[k], ROUNDS + 1);
    }
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);

    /* A real Kafka client sees the same: kcat, key and partition per line. */
    int lines;
    char *out = kcat_consume(m->bs, "crwatch.public.t", "%k %p\n", false, &lines);
    cr_assert_eq(lines, want, "kcat read %d messages, want %d", lines, want);
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        int k, pt;
        cr_assert_eq(sscanf(line, "%d %d", &k, &pt), 2, "kcat line '%s'", line);
        cr_assert_eq(pt, part[k], "kcat: key %d in partition %d, expected %d", k, pt, part[k]);
    }
    free(out);
    kmsgs_free(&ms);
    stop_clean(p);
    mock_stop(m);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(kafka, clean_restarts_lose_nothing_and_repeat_nothing) {
    char db[64];
    PGconn *c = it_db_create("krestart", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    mock_t *m = mock_start();
    int id = 0, may_repeat = 0;
    for (int round = 0; round < 3; round++) {
        it_proc_t *p = start_kafka(db, m->bs, NULL);
        for (int i = 0; i < 40; i++)
            it_exec(c, "INSERT INTO t VALUES (%d)", ++id);
        /* Stop at once: what was read must be delivered (drain) before the slot is confirmed.
         * Only a transaction the stop cut in two may come again, and crwatch says so. */
        may_repeat += stop_clean(p);
        for (int i = 0; i < 10; i++) /* written while crwatch is down */
            it_exec(c, "INSERT INTO t VALUES (%d)", ++id);
    }
    it_proc_t *p = start_kafka(db, m->bs, NULL);
    kmsgs_t ms = consume(m->bs, "crwatch.public.t", false, id, EV_TIMEOUT);
    stop_clean(p);
    char *seen = calloc((size_t)id + 1, 1);
    int repeated = 0;
    for (int i = 0; i < ms.n; i++) {
        int k = atoi(ms.v[i].key);
        cr_assert(k >= 1 && k <= id, "unexpected key %s", ms.v[i].key);
        repeated += seen[k];
        seen[k] = 1;
    }
    cr_assert_leq(repeated, may_repeat, "%d events delivered twice across clean restarts; crwatch announced %d",
                  repeated, may_repeat);
    for (int k = 1; k <= id; k++)
        cr_assert(seen[k], "key %d lost across restarts", k);
    free(seen);
    kmsgs_free(&ms);
    mock_stop(m);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(kafka, broker_down_holds_the_slot_then_delivers_in_order) {
    enum { KEYS = 10, ROUNDS = 5 };
    char db[64];
    PGconn *c = it_db_create("kdown", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v int)");
    mock_t *m = mock_start();
    it_proc_t *p = start_kafka(db, m->bs, NULL);
    it_exec(c, "INSERT INTO t SELECT g, 0 FROM generate_series(1, %d) g", KEYS);
    kmsgs_t ms = consume(m->bs, "crwatch.public.t", false, KEYS, EV_TIMEOUT);
    cr_assert_eq(ms.n, KEYS);
    kmsgs_free(&ms);
    char *before = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, before, EV_TIMEOUT), "the slot did not confirm the delivered inserts");

    mock_cmd(m, "down");
    it_sleep_ms(300);
    char *first_end = NULL; /* end of the first transaction written during the outage */
    for (int r = 1; r <= ROUNDS; r++)
        for (int k = 1; k <= KEYS; k++) {
            it_exec(c, "UPDATE t SET v = %d WHERE id = %d", r, k);
            if (!first_end)
                first_end = it_query_value(c, "SELECT pg_current_wal_lsn()");
        }
    char *after = it_query_value(c, "SELECT pg_current_wal_lsn()");
    /* For 3 s (15 status intervals) nothing written during the outage is
     * confirmed.  (The slot may follow unrelated WAL up to it: with nothing
     * in flight the confirmed position tracks the server's keepalives.) */
    for (int i = 0; i < 15; i++) {
        it_sleep_ms(200);
        char *ok = it_query_value(c, "SELECT confirmed_flush_lsn < '%s'::pg_lsn FROM pg_replication_slots "
                                     "WHERE slot_name = current_database()", first_end);
        cr_assert(ok && !strcmp(ok, "t"), "the slot moved past undelivered changes while the broker was down");
        free(ok);
    }
    free(first_end);
    cr_assert(it_proc_running(p), "crwatch must wait for the broker, not exit");

    mock_cmd(m, "up");
    ms = consume(m->bs, "crwatch.public.t", false, KEYS + KEYS * ROUNDS, EV_TIMEOUT * 2);
    cr_assert_eq(ms.n, KEYS + KEYS * ROUNDS, "after the outage: %d messages", ms.n);
    int last[KEYS + 1] = {0};
    for (int i = 0; i < ms.n; i++) {
        json_object *ev = event_of(&ms.v[i]);
        int k = atoi(it_json_str(ev, "subject")), v = atoi(it_json_str(ev, "data.object.v"));
        if (v > 0)
            cr_assert_eq(v, last[k] + 1, "key %d: v %d after %d", k, v, last[k]);
        last[k] = v;
        json_object_put(ev);
    }
    cr_assert(slot_reaches(c, after, EV_TIMEOUT), "the slot did not move once everything was delivered");
    kmsgs_free(&ms);
    free(before);
    free(after);
    stop_clean(p);
    mock_stop(m);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* The writer of the kill -9 test: inserts rows 1, 2, ... (every fifth transaction three at once). */
typedef struct {
    char db[64];
    const char *insert; /* rows %d to %d; NULL: into t (id, h) */
    volatile int stop;
    int written; /* rows committed */
    char err[256];
} writer_t;

/* Each of rows 1..n exactly once among ev, by subject (prefix, then the row's number). */
static void expect_each_once(const kmsgs_t *ev, const char *prefix, int n) {
    size_t pl = strlen(prefix);
    char *count = calloc((size_t)n + 1, 1);
    for (int i = 0; i < ev->n; i++) {
        json_object *e = event_of(&ev->v[i]);
        const char *subject = it_json_str(e, "subject");
        int k = subject && !strncmp(subject, prefix, pl) ? atoi(subject + pl) : -1;
        cr_assert(k >= 1 && k <= n, "unexpected row %s", subject ? subject : "(none)");
        cr_assert_eq(count[k], 0, "row %d delivered twice to read_committed (%s)", k, it_json_str(e, "id"));
        count[k]++;
        json_object_put(e);
    }
    for (int k = 1; k <= n; k++)
        cr_assert_eq(count[k], 1, "row %d of %d lost", k, n);
    free(count);
}

static void *writer_main(void *arg) {
    writer_t *w = arg;
    PGconn *c = it_connect_thread(w->db, w->err, sizeof w->err);
    if (!c)
        return NULL;
    for (int txn = 0; !w->stop; txn++) {
        int n = txn % 5 == 4 ? 3 : 1;
        char sql[160];
        snprintf(sql, sizeof sql, w->insert ? w->insert : "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(%d, %d) g",
                 w->written + 1, w->written + n);
        PGresult *r = PQexec(c, sql);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok) {
            snprintf(w->err, sizeof w->err, "%s", PQerrorMessage(c));
            break;
        }
        w->written += n;
        it_sleep_ms(3);
    }
    PQfinish(c);
    return NULL;
}

Test(kafka, exactly_once_under_repeated_kill_9) {
    enum { KILLS = 5 };
    char db[64];
    PGconn *c = it_db_create("keos", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, h text)");
    mock_t *m = mock_start();
    mock_cmd(m, "create crwatch.checkpoints 1");
    const char *eos[] = {"delivery=exactly-once", "transaction.interval.ms=30", NULL};
    it_proc_t *p = start_kafka(db, m->bs, eos);

    writer_t w = {0};
    snprintf(w.db, sizeof w.db, "%s", db);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer_main, &w), 0);
    unsigned seed = (unsigned)time(NULL);
    cr_log_info("kill -9 timing seed %u", seed);
    for (int i = 0; i < KILLS; i++) {
        it_sleep_ms(300 + (int)(rand_r(&seed) % 900));
        int st = it_proc_signal_wait(p, SIGKILL, 10000);
        cr_assert_eq(st, 128 + SIGKILL);
        it_proc_free(p);
        it_sleep_ms(10);
        p = start_kafka(db, m->bs, eos);
    }
    w.stop = 1;
    pthread_join(th, NULL);
    cr_assert_str_eq(w.err, "", "writer: %s", w.err);
    cr_assert_gt(w.written, 100, "the writer wrote only %d rows", w.written);
    /* Confirmed only after the Kafka commit: a confirmed slot means Kafka has it all. */
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, 30000), "the last crwatch did not confirm the writer's rows");
    free(end);
    stop_clean(p);

    /* What a read_committed consumer gets: every row exactly once. */
    kmsgs_t ev = consume(m->bs, "crwatch.public.t", true, w.written, EV_TIMEOUT);
    kmsgs_t ck = consume(m->bs, "crwatch.checkpoints", true, 1, EV_TIMEOUT);
    cr_assert_gt(ck.n, 0, "no checkpoint records");
    for (int i = 0; i < ck.n; i++)
        cr_assert_eq(ck.v[i].part, 0, "checkpoints go to partition 0");
    expect_each_once(&ev, "", w.written);
    /* The log also holds what the killed processes left in open transactions,
     * aborted when the next one fenced them: read_uncommitted sees it. */
    kmsgs_t raw = consume(m->bs, "crwatch.public.t", false, ev.n, EV_TIMEOUT);
    cr_assert_gt(raw.n, ev.n, "no kill -9 left an open transaction behind: the aborts went unchecked");
    cr_log_info("%d rows exactly once to read_committed; %d messages of aborted transactions in the log", w.written,
                raw.n - ev.n);
    int lines;
    free(kcat_consume(m->bs, "crwatch.public.t", "%k\n", true, &lines));
    cr_assert_eq(lines, w.written, "kcat read_committed read %d messages, want %d", lines, w.written);
    kmsgs_free(&raw);
    kmsgs_free(&ev);
    kmsgs_free(&ck);
    mock_stop(m);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(kafka, exactly_once_skips_what_kafka_has_after_a_crash_kcat_read_committed) {
    char db[64];
    PGconn *c = it_db_create("kskip", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    mock_t *m = mock_start();
    mock_cmd(m, "create crwatch.checkpoints 1");
    /* Status updates only every 100 s: the slot stays behind what Kafka committed. */
    const char *eos[] = {"delivery=exactly-once", "status.interval.ms=100000", NULL};
    it_proc_t *p = start_kafka(db, m->bs, eos);
    for (int i = 1; i <= 30; i++)
        it_exec(c, "INSERT INTO t VALUES (%d)", i);
    char *last = it_query_value(c, "SELECT pg_current_wal_lsn()");
    kmsgs_t first = consume(m->bs, "crwatch.public.t", true, 30, EV_TIMEOUT);
    cr_assert_eq(first.n, 30);
    uint64_t last_pglsn = 0;
    for (int i = 0; i < first.n; i++) {
        json_object *e = event_of(&first.v[i]);
        uint64_t l = lsn_of(it_json_str(e, "pglsn"));
        last_pglsn = l > last_pglsn ? l : last_pglsn;
        json_object_put(e);
    }
    kmsgs_free(&first);
    /* Wait for a checkpoint covering every row, then crash before any status update. */
    bool covered = false;
    for (int tries = 0; tries < 100 && !covered; tries++) {
        kmsgs_t ck = consume(m->bs, "crwatch.checkpoints", true, 1, 2000);
        for (int i = 0; i < ck.n; i++)
            covered |= ck.v[i].key && !strcmp(ck.v[i].key, db) && lsn_of(ck.v[i].val) >= last_pglsn;
        kmsgs_free(&ck);
        if (!covered)
            it_sleep_ms(100);
    }
    cr_assert(covered, "no checkpoint reached the last insert"); /* read_committed: its transaction committed */
    cr_assert_eq(it_proc_signal_wait(p, SIGKILL, 10000), 128 + SIGKILL);
    it_proc_free(p);
    char *behind = it_query_value(c, "SELECT confirmed_flush_lsn < '%s'::pg_lsn FROM pg_replication_slots "
                                     "WHERE slot_name = current_database()", last);
    cr_assert_str_eq(behind, "t", "the slot should lag the checkpoint for this test to mean anything");
    free(behind);

    /* The server sends the 30 rows again; the checkpoint says Kafka has them. */
    p = start_kafka(db, m->bs, (const char *[]){"delivery=exactly-once", NULL});
    cr_assert(it_proc_stderr_wait(p, "changes committed at or below it are in Kafka already", EV_TIMEOUT));
    for (int i = 31; i <= 40; i++)
        it_exec(c, "INSERT INTO t VALUES (%d)", i);
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, EV_TIMEOUT));
    stop_clean(p);

    int lines;
    char *out = kcat_consume(m->bs, "crwatch.public.t", "%k\n", true, &lines);
    cr_assert_eq(lines, 40, "read_committed: want 40 rows exactly once, got %d lines:\n%s", lines, out);
    char seen[41] = {0};
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        int k = atoi(line);
        cr_assert(k >= 1 && k <= 40 && !seen[k], "row %s twice or unexpected", line);
        seen[k] = 1;
    }
    free(out);
    /* The last checkpoint of this slot covers the last row. */
    char *ck = kcat_consume(m->bs, "crwatch.checkpoints", "%k %s\n", true, &lines);
    char *lastck = NULL;
    for (char *line = strtok(ck, "\n"); line; line = strtok(NULL, "\n"))
        if (!strncmp(line, db, strlen(db)) && line[strlen(db)] == ' ')
            lastck = line + strlen(db) + 1;
    cr_assert(lastck && lsn_of(lastck) < lsn_of(end) && lsn_of(lastck) > lsn_of(last), "last checkpoint %s",
              lastck ? lastck : "(none)");
    free(ck);
    free(last);
    free(end);
    mock_stop(m);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* ---- exactly-once with the polling source (docs/poll.md) ------------------------ */

#define POLL_INSERT "INSERT INTO jobs (name, spec) SELECT g::text, '{}' FROM generate_series(%d, %d) g"

/* A database with sql/crwatch.sql and the managed table public.jobs. */
static PGconn *poll_db(const char *prefix, char *db, size_t n) {
    PGconn *c = it_db_create(prefix, db, n);
    it_apply_sql(db, "sql/crwatch.sql");
    it_exec(c, "CREATE TABLE jobs (" IT_CONVENTION_COLUMNS ", PRIMARY KEY (namespace, name))");
    it_exec(c, "SELECT crwatch.manage('public.jobs')");
    return c;
}

static it_proc_t *start_poll_kafka(const char *db, const char *bs, const char *status_ms) {
    char boot[256], dl[300];
    snprintf(boot, sizeof boot, "kafka.bootstrap.servers=%s", bs);
    snprintf(dl, sizeof dl, "deadletter.file=%s", deadletter_path(db));
    const char *const base[] = {"source=poll", "tables=public.jobs", "poll.interval.ms=50", "sink=kafka",
                                "delivery=exactly-once", "transaction.interval.ms=30", boot, dl, status_ms, NULL};
    return it_crwatch_stream(db, base, NULL);
}

/* Every row 1..n exactly once in what a read_committed consumer of crwatch.public.jobs gets. */
static void expect_rows_once(const char *bs, int n) {
    kmsgs_t ev = consume(bs, "crwatch.public.jobs", true, n, EV_TIMEOUT);
    expect_each_once(&ev, "default/", n);
    kmsgs_free(&ev);
}

Test(kafka, exactly_once_with_polling_resumes_from_the_checkpoint_watermark) {
    char db[64];
    PGconn *c = poll_db("kpollskip", db, sizeof db);
    mock_t *m = mock_start();
    mock_cmd(m, "create crwatch.checkpoints 1");
    /* The watermark is stored every 100 s only: crwatch.offsets stays behind what Kafka committed. */
    it_proc_t *p = start_poll_kafka(db, m->bs, "status.interval.ms=100000");
    for (int i = 1; i <= 30; i++)
        it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('%d', '{}')", i);
    expect_rows_once(m->bs, 30); /* read_committed: their Kafka transactions committed */
    it_sleep_ms(300);
    cr_assert_eq(it_proc_signal_wait(p, SIGKILL, 10000), 128 + SIGKILL);
    it_proc_free(p);
    char *stored = it_query_value(c, "SELECT position FROM crwatch.offsets WHERE name = current_database()");
    cr_assert_str_eq(stored, "1", "the watermark should lag the checkpoint for this test to mean anything");
    free(stored);

    /* Polling from the stored watermark would send the 30 again; the checkpoint says Kafka has them. */
    p = start_poll_kafka(db, m->bs, "status.interval.ms=200");
    cr_assert(it_proc_stderr_wait(p, "the sinks hold everything up to poll batch", EV_TIMEOUT), "no resume from "
              "the checkpoint");
    for (int i = 31; i <= 40; i++)
        it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('%d', '{}')", i);
    expect_rows_once(m->bs, 40);
    stop_clean(p);
    expect_rows_once(m->bs, 40);
    /* Confirmed batches leave crwatch.offsets' pending list. */
    char *pending = it_query_value(c, "SELECT jsonb_array_length(pending) FROM crwatch.offsets "
                                      "WHERE name = current_database()");
    cr_assert_str_eq(pending, "0");
    free(pending);
    mock_stop(m);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(kafka, exactly_once_with_polling_under_repeated_kill_9) {
    enum { KILLS = 4 };
    char db[64];
    PGconn *c = poll_db("kpollkill", db, sizeof db);
    mock_t *m = mock_start();
    mock_cmd(m, "create crwatch.checkpoints 1");
    it_proc_t *p = start_poll_kafka(db, m->bs, "status.interval.ms=500");
    writer_t w = {.insert = POLL_INSERT};
    snprintf(w.db, sizeof w.db, "%s", db);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer_main, &w), 0);
    unsigned seed = (unsigned)time(NULL);
    cr_log_info("kill -9 timing seed %u", seed);
    for (int i = 0; i < KILLS; i++) {
        it_sleep_ms(300 + (int)(rand_r(&seed) % 900));
        cr_assert_eq(it_proc_signal_wait(p, SIGKILL, 10000), 128 + SIGKILL);
        it_proc_free(p);
        p = start_poll_kafka(db, m->bs, "status.interval.ms=500");
    }
    w.stop = 1;
    pthread_join(th, NULL);
    cr_assert_str_eq(w.err, "", "writer: %s", w.err);
    cr_assert_gt(w.written, 100, "the writer wrote only %d rows", w.written);
    expect_rows_once(m->bs, w.written);
    stop_clean(p);
    expect_rows_once(m->bs, w.written);
    mock_stop(m);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(kafka, refused_messages_are_dead_lettered_and_the_stream_goes_on) {
    char db[64];
    PGconn *c = it_db_create("kdead", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, pad text)");
    mock_t *m = mock_start();
    const char *dlpath = deadletter_path(db);
    unlink(dlpath);
    const char *small[] = {"kafka.message.max.bytes=2000", NULL};
    it_proc_t *p = start_kafka(db, m->bs, small);
    it_exec(c, "INSERT INTO t VALUES (1, 'small')");
    it_exec(c, "INSERT INTO t VALUES (2, repeat('x', 5000))"); /* over message.max.bytes: refused before sending */
    it_exec(c, "INSERT INTO t VALUES (3, 'small')");
    kmsgs_t dl = consume(m->bs, "crwatch.deadletter", false, 1, EV_TIMEOUT);
    cr_assert_eq(dl.n, 1, "dead-letter topic: %d records", dl.n);
    cr_assert_str_eq(dl.v[0].key, "2");
    cr_assert_str_eq(header(&dl.v[0], "crwatch_error_code"), "MSG_SIZE_TOO_LARGE");
    cr_assert_str_eq(header(&dl.v[0], "crwatch_topic"), "crwatch.public.t");
    cr_assert_null(dl.v[0].val, "an oversized value cannot go to the dead-letter topic either");
    kmsgs_free(&dl);

    /* A broker-side refusal (delivery report) of the next produce request. */
    mock_cmd(m, "error 0 10 1"); /* ApiKey 0 = Produce, 10 = MESSAGE_TOO_LARGE */
    it_exec(c, "INSERT INTO t VALUES (4, 'refused by the broker')");
    dl = consume(m->bs, "crwatch.deadletter", false, 2, EV_TIMEOUT);
    cr_assert_eq(dl.n, 2, "dead-letter topic: %d records", dl.n);
    const kmsg_t *r4 = !strcmp(dl.v[0].key, "4") ? &dl.v[0] : &dl.v[1]; /* partitions: no order between keys */
    cr_assert_str_eq(r4->key, "4");
    cr_assert_str_eq(header(r4, "crwatch_error_code"), "MSG_SIZE_TOO_LARGE");
    json_object *e4 = event_of(r4); /* the broker refused it, the value may still fit the dead-letter topic */
    cr_assert_str_eq(it_json_str(e4, "data.object.pad"), "refused by the broker");
    json_object_put(e4);
    kmsgs_free(&dl);

    it_exec(c, "INSERT INTO t VALUES (5, 'small')");
    kmsgs_t ms = consume(m->bs, "crwatch.public.t", false, 3, EV_TIMEOUT);
    cr_assert_eq(ms.n, 3);
    int keys = 0;
    for (int i = 0; i < ms.n; i++)
        keys |= 1 << atoi(ms.v[i].key);
    cr_assert_eq(keys, (1 << 1) | (1 << 3) | (1 << 5), "delivered keys mask %x", keys);
    kmsgs_free(&ms);
    /* The stream confirms past the dead-lettered changes. */
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, EV_TIMEOUT), "the slot did not move past dead-lettered changes");
    free(end);
    stop_clean(p);

    /* The dead-letter file has both, whole, with the reason. */
    char *subjects = deadletter_subjects(dlpath, "MSG_SIZE_TOO_LARGE");
    cr_assert_str_eq(subjects, "2 4");
    free(subjects);
    unlink(dlpath);
    mock_stop(m);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* Exactly-once: a message the broker refuses makes the Kafka transaction
 * abortable; crwatch aborts it, the server sends the changes again, and the
 * refused one is dead-lettered inside the next transaction.  librdkafka then
 * aborts that one too, to bump its producer epoch (the refused message used a
 * sequence number), so the change comes a third time: the dead-letter file,
 * outside every transaction, must still have it once. */
Test(kafka, exactly_once_refused_message_is_dead_lettered_once) {
    char db[64];
    PGconn *c = it_db_create("keosdl", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, pad text)");
    mock_t *m = mock_start();
    mock_cmd(m, "create crwatch.checkpoints 1");
    mock_cmd(m, "create crwatch.public.t 1");
    const char *dlpath = deadletter_path(db);
    unlink(dlpath);
    it_proc_t *p = start_kafka(db, m->bs, (const char *[]){"delivery=exactly-once", NULL});
    it_exec(c, "INSERT INTO t VALUES (1, 'before')");
    kmsgs_t ms = consume(m->bs, "crwatch.public.t", true, 1, EV_TIMEOUT);
    cr_assert_eq(ms.n, 1, "row 1 was not committed to Kafka");
    kmsgs_free(&ms);

    /* The next Produce request for t: MESSAGE_TOO_LARGE (the checkpoint record's may go first). */
    mock_cmd(m, "refuse crwatch.public.t 10 1");
    it_exec(c, "INSERT INTO t VALUES (2, 'refused by the broker')");
    cr_assert(it_proc_stderr_wait(p, "dead-lettered", EV_TIMEOUT), "row 2 was not dead-lettered");
    it_exec(c, "INSERT INTO t VALUES (3, 'after')");
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, EV_TIMEOUT), "the slot did not move past the dead-lettered change");
    free(end);
    stop_clean(p);

    ms = consume(m->bs, "crwatch.public.t", true, 2, EV_TIMEOUT);
    char *keys = keys_of(&ms);
    cr_assert_str_eq(keys, "1 3", "read_committed events");
    free(keys);
    kmsgs_free(&ms);
    kmsgs_t dl = consume(m->bs, "crwatch.deadletter", true, 1, EV_TIMEOUT);
    keys = keys_of(&dl);
    cr_assert_str_eq(keys, "2", "read_committed dead letters");
    free(keys);
    cr_assert_str_eq(header(&dl.v[0], "crwatch_error_code"), "MSG_SIZE_TOO_LARGE");
    kmsgs_free(&dl);
    char *subjects = deadletter_subjects(dlpath, "MSG_SIZE_TOO_LARGE");
    cr_assert_str_eq(subjects, "2", "the dead-letter file, once per change");
    free(subjects);
    unlink(dlpath);
    mock_stop(m);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* A missing checkpoint topic is created with CreateTopics: one partition,
 * compacted (the relay answers CreateTopics and records what was asked). */
Test(kafka, exactly_once_creates_the_checkpoint_topic_compacted) {
    char db[64];
    PGconn *c = it_db_create("kckpt", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    mock_t *m = mock_start();
    it_proc_t *p = start_kafka(db, m->bs, (const char *[]){"delivery=exactly-once", NULL});
    cr_assert(it_proc_stderr_wait(p, "created the compacted checkpoint topic crwatch.checkpoints", EV_TIMEOUT),
              "no CreateTopics for the checkpoint topic");
    cr_assert_str_eq(mock_query(m, "topic-config crwatch.checkpoints"),
                     "partitions=1 replication=-1 configs=cleanup.policy=compact");
    it_exec(c, "INSERT INTO t VALUES (1)");
    char *end = it_query_value(c, "SELECT pg_current_wal_lsn()");
    cr_assert(slot_reaches(c, end, EV_TIMEOUT));
    free(end);
    stop_clean(p);
    kmsgs_t ck = consume(m->bs, "crwatch.checkpoints", true, 1, EV_TIMEOUT);
    cr_assert_eq(ck.n, 1, "checkpoint records: %d", ck.n);
    cr_assert_str_eq(ck.v[0].key, db);
    kmsgs_free(&ck);

    /* A second start finds it and creates nothing. */
    p = start_kafka(db, m->bs, (const char *[]){"delivery=exactly-once", NULL});
    cr_assert(it_proc_stderr_wait(p, "checkpoint of slot", EV_TIMEOUT));
    char *log = it_proc_stderr(p);
    cr_assert_null(strstr(log, "created the compacted"), "created again:\n%s", log);
    cr_assert_null(strstr(log, "cannot create the checkpoint topic"), "%s", log);
    free(log);
    stop_clean(p);
    mock_stop(m);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(kafka, embedded_broker_binary_content_mode) {
    char db[64];
    PGconn *c = it_db_create("kembed", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id text PRIMARY KEY, n int)");
    const char *bin[] = {"cloudevents.mode=binary", NULL};
    it_proc_t *p = start_kafka(db, "embedded", bin);
    char *log = it_proc_stderr(p);
    const char *at = strstr(log, "embedded broker at ");
    cr_assert(at, "the embedded broker's address is not logged:\n%s", log);
    char bs[128];
    cr_assert_eq(sscanf(at, "embedded broker at %127s", bs), 1);
    free(log);

    it_exec(c, "INSERT INTO t VALUES (E'a\"b/\\u00e9', 7)");
    kmsgs_t ms = consume(bs, "crwatch.public.t", false, 1, EV_TIMEOUT);
    cr_assert_eq(ms.n, 1);
    kmsg_t *k = &ms.v[0];
    cr_assert_str_eq(k->key, "a\"b/\xc3\xa9");
    cr_assert_str_eq(header(k, "ce_specversion"), "1.0");
    cr_assert_str_eq(header(k, "ce_type"), "crwatch.t.added");
    cr_assert_str_eq(header(k, "ce_subject"), "a\"b/\xc3\xa9", "ce_subject must be unescaped");
    char src[128];
    snprintf(src, sizeof src, "/crwatch/%s/public/t", db);
    cr_assert_str_eq(header(k, "ce_source"), src);
    cr_assert_str_eq(header(k, "content-type"), "application/json");
    cr_assert_null(header(k, "ce_datacontenttype"));
    char id[1100]; /* header() returns up to 1023 bytes */
    snprintf(id, sizeof id, "%s/1", header(k, "ce_pglsn"));
    cr_assert_str_eq(header(k, "ce_id"), id);
    cr_assert(header(k, "ce_time") && strlen(header(k, "ce_time")) == 27);
    cr_assert(header(k, "ce_pgxid") && atoi(header(k, "ce_pgxid")) > 0);
    /* The value is the data object alone. */
    json_object *data = event_of(k);
    cr_assert_str_eq(it_json_str(data, "type"), "ADDED");
    cr_assert_str_eq(it_json_str(data, "object.n"), "7");
    cr_assert_not(it_json_exists(data, "specversion"));
    json_object_put(data);
    kmsgs_free(&ms);
    stop_clean(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(kafka, configuration_errors_exit_2_and_never_show_secrets) {
    char db[64];
    PGconn *c = it_db_create("kconf", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    static const struct {
        const char *x[4];
        const char *names;
    } cases[] = {
        {{"kafka.no.such.property=1", "kafka.sasl.password=hunter2", NULL}, "kafka.no.such.property"},
        {{"kafka.sasl.password=hunter2", "kafka.security.protocol=bogus", NULL}, "kafka.security.protocol"},
        {{"kafka.sasl.password=hunter2", "kafka.linger.ms=-7", NULL}, "kafka.linger.ms"},
        {{"kafka.enable.idempotence=false", NULL}, "kafka.enable.idempotence"},
        {{"topic.template=crw.{schema}.{nope}", NULL}, "topic.template"},
        {{"topic.template=crw {table}", NULL}, "topic.template"},
        {{"checkpoint.topic=", "delivery=exactly-once", NULL}, "checkpoint.topic"},
        {{"kafka.transactional.id=x", NULL}, "kafka.transactional.id"},
        {{"cloudevents.mode=both", NULL}, "cloudevents.mode"},
        {{"transaction.interval.ms=0", NULL}, "transaction.interval.ms"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[32];
        int n = 0;
        const char *base[] = {"stream", "-X", "tables=public.t", "-X", "sink=kafka", "-X",
                              "kafka.bootstrap.servers=127.0.0.1:1"};
        for (size_t j = 0; j < sizeof base / sizeof base[0]; j++)
            args[n++] = base[j];
        for (int j = 0; cases[i].x[j]; j++) {
            args[n++] = "-X";
            args[n++] = cases[i].x[j];
        }
        args[n] = NULL;
        char *err = NULL;
        int st = it_run_crwatch(db, args, 20000, NULL, &err);
        cr_assert_eq(st, 2, "case %zu: exit %d, want 2: %s", i, st, err);
        cr_assert(strstr(err, cases[i].names), "case %zu: the error must name %s: %s", i, cases[i].names, err);
        cr_assert_null(strstr(err, "hunter2"), "case %zu: a secret was printed: %s", i, err);
        free(err);
    }
    /* Missing bootstrap servers. */
    char *err = NULL;
    int st = it_run_crwatch(db, (const char *[]){"stream", "-X", "tables=public.t", "-X", "sink=kafka", NULL}, 20000,
                            NULL, &err);
    cr_assert_eq(st, 2);
    cr_assert(strstr(err, "kafka.bootstrap.servers"), "%s", err);
    free(err);

    /* A working run at debug level, librdkafka's own configuration dump included, never shows the secret. */
    const char *dbg[] = {"log.level=debug", "kafka.debug=conf,security", "kafka.sasl.password=hunter2",
                         "kafka.sasl.username=u", NULL};
    it_proc_t *p = start_kafka(db, "embedded", dbg);
    it_exec(c, "INSERT INTO t VALUES (1)");
    cr_assert(it_proc_stderr_wait(p, "status: write", EV_TIMEOUT));
    char *log = it_proc_stderr(p);
    cr_assert(strstr(log, "kafka: [CONF]") || strstr(log, "kafka: ["), "librdkafka's debug output missing:\n%s", log);
    cr_assert_null(strstr(log, "hunter2"), "the SASL password was logged");
    free(log);
    stop_clean(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* ---- backfill into Kafka (src/app/backfill.c) --------------------------- */

/* Counts the events of ms by data.type into added/sync, and how many sync subjects came more than once. */
static void count_types(const kmsgs_t *ms, int n, int *added, int *sync, int *sync_twice) {
    char *seen = calloc((size_t)n + 1, 1);
    *added = *sync = *sync_twice = 0;
    for (int i = 0; i < ms->n; i++) {
        json_object *e = event_of(&ms->v[i]);
        const char *type = it_json_str(e, "data.type"), *subject = it_json_str(e, "subject");
        int k = subject && !strncmp(subject, "default/", 8) ? atoi(subject + 8) : 0;
        if (type && !strcmp(type, "ADDED"))
            (*added)++;
        else if (type && !strcmp(type, "SYNC") && k >= 1 && k <= n) {
            (*sync)++;
            if (seen[k]++)
                (*sync_twice)++;
        }
        json_object_put(e);
    }
    free(seen);
}

static int run_backfill_kafka(const char *db, const char *bs, const char *more, char **err) {
    char boot[256], sf[200];
    snprintf(boot, sizeof boot, "kafka.bootstrap.servers=%s", bs);
    snprintf(sf, sizeof sf, "snapshot.state.file=/tmp/crw-it-%s.state", db);
    const char *args[] = {"backfill", "-X", "tables=public.jobs", "-X", "sink=kafka", "-X", boot, "-X", sf,
                          "-X", "delivery=exactly-once", "-X", "transaction.interval.ms=30", more, NULL};
    return it_run_crwatch(db, args, 120000, NULL, err);
}

Test(kafka, backfill_exactly_once_beside_a_running_stream) {
    char db[64];
    PGconn *c = poll_db("kbackfill", db, sizeof db);
    mock_t *m = mock_start();
    mock_cmd(m, "create crwatch.checkpoints 1");
    it_proc_t *p = start_poll_kafka(db, m->bs, "status.interval.ms=200");
    for (int i = 1; i <= 30; i++)
        it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('%d', '{}')", i);
    expect_rows_once(m->bs, 30);

    /* A backfill with the same slot.name and delivery=exactly-once: its own transactional.id and checkpoint. */
    char *err = NULL;
    cr_assert_eq(run_backfill_kafka(db, m->bs, NULL, &err), 0, "%s", err);
    cr_expect(strstr(err, "transactional.id crwatch.") && strstr(err, ".backfill"), "its own id: %s", err);
    free(err);
    /* The stream was not fenced: it goes on, and after a kill -9 resumes from its own checkpoint. */
    for (int i = 31; i <= 40; i++)
        it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('%d', '{}')", i);
    it_sleep_ms(500);
    cr_assert(it_proc_running(p), "the stream still runs");
    cr_assert_eq(it_proc_signal_wait(p, SIGKILL, 10000), 128 + SIGKILL);
    it_proc_free(p);
    p = start_poll_kafka(db, m->bs, "status.interval.ms=200");
    for (int i = 41; i <= 45; i++)
        it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('%d', '{}')", i);
    kmsgs_t ev = consume(m->bs, "crwatch.public.jobs", true, 45 + 30, EV_TIMEOUT);
    int added, sync, twice;
    count_types(&ev, 45, &added, &sync, &twice);
    cr_expect_eq(added, 45, "each insert once (%d ADDED)", added);
    cr_expect_eq(sync, 30, "each row of the backfill once (%d SYNC)", sync);
    cr_expect_eq(twice, 0);
    kmsgs_free(&ev);
    stop_clean(p);
    mock_stop(m);
    char state[200];
    snprintf(state, sizeof state, "/tmp/crw-it-%s.state", db);
    unlink(state);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(kafka, backfill_exactly_once_under_kill_9_and_resume) {
    char db[64];
    enum { N = 12000 }; /* the mock keeps ~5 MB per partition */
    PGconn *c = poll_db("kbfkill", db, sizeof db);
    it_exec(c, "INSERT INTO jobs (name, uid, generation, resource_version, spec, created_at, updated_at) "
               "SELECT g::text, gen_random_uuid(), 1, g, '{}', now(), now() FROM generate_series(1, %d) g", N);
    it_exec(c, "ANALYZE jobs");
    mock_t *m = mock_start();
    mock_cmd(m, "create crwatch.checkpoints 1");
    char boot[256], sf[200];
    snprintf(boot, sizeof boot, "kafka.bootstrap.servers=%s", m->bs);
    snprintf(sf, sizeof sf, "snapshot.state.file=/tmp/crw-it-%s.state", db);
    const char *args[] = {"backfill", "-X", "tables=public.jobs", "-X", "sink=kafka", "-X", boot, "-X", sf,
                          "-X", "delivery=exactly-once", "-X", "transaction.interval.ms=30", "-X",
                          "snapshot.chunk.rows=200", "-X", "log.level=debug", NULL};
    it_proc_t *p = it_crwatch_start(db, args);
    /* The broker goes away after the first Kafka transaction: the kill comes mid-backfill, with a transaction
     * open. */
    cr_assert(it_proc_stderr_wait(p, "kafka: committed a transaction", 30000), "the backfill started");
    mock_cmd(m, "down");
    it_sleep_ms(300);
    kill(it_proc_pid(p), SIGKILL);
    it_proc_wait(p, 10000);
    char *log = it_proc_stderr(p);
    bool cut_short = !strstr(log, "backfill done");
    free(log);
    it_proc_free(p);
    cr_expect(cut_short, "the kill came before the end (else this test shows little)");
    mock_cmd(m, "up");
    char *err = NULL;
    cr_assert_eq(run_backfill_kafka(db, m->bs, "--resume", &err), 0, "%s", err);
    cr_expect(strstr(err, "the sinks hold everything up to") || strstr(err, "--resume:"), "%s", err);
    free(err);
    kmsgs_t ev = consume(m->bs, "crwatch.public.jobs", true, N, 60000);
    int added, sync, twice;
    count_types(&ev, N, &added, &sync, &twice);
    cr_expect_eq(sync, N, "every row (%d SYNC of %d)", sync, N);
    cr_expect_eq(twice, 0, "%d rows twice for read_committed", twice);
    kmsgs_free(&ev);
    mock_stop(m);
    char state[200];
    snprintf(state, sizeof state, "/tmp/crw-it-%s.state", db);
    unlink(state);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* ---- resync from what the topics hold (src/app/resync.c, src/sink/kafka_view.c) ---- */

static int run_resync_kafka(const char *db, const char *bs, bool dry_run, char **out, char **err) {
    char boot[256];
    snprintf(boot, sizeof boot, "kafka.bootstrap.servers=%s", bs);
    const char *args[] = {"resync", "-X", "tables=public.t", "-X", "sink=kafka", "-X", boot, "-X", "resync.from=kafka",
                          dry_run ? "--dry-run" : NULL, NULL};
    return it_run_crwatch(db, args, 120000, out, err);
}

Test(kafka, resync_from_the_topic_after_the_slot_was_dropped) {
    char db[64];
    PGconn *c = it_db_create("kresync", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    mock_t *m = mock_start();
    it_proc_t *p = start_kafka(db, m->bs, NULL);
    it_exec(c, "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 40) g");
    it_exec(c, "UPDATE t SET v = 'seen' WHERE id <= 3");
    kmsgs_t ev = consume(m->bs, "crwatch.public.t", true, 43, EV_TIMEOUT);
    cr_assert_eq(ev.n, 43);
    kmsgs_free(&ev);
    stop_clean(p);
    char slot[128];
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    const char *drop[] = {"slot", "drop", "-X", slot, NULL};
    cr_assert_eq(it_run_crwatch(db, drop, 30000, NULL, NULL), 0);
    it_exec(c, "INSERT INTO t VALUES (50, 'new'), (51, 'new')");
    it_exec(c, "UPDATE t SET v = 'later' WHERE id IN (5, 6)");
    it_exec(c, "DELETE FROM t WHERE id IN (7, 8)");

    char *out = NULL, *err = NULL;
    cr_assert_eq(run_resync_kafka(db, m->bs, true, &out, &err), 0, "%s", err);
    cr_expect(strstr(err, "2 ADDED, 2 MODIFIED, 2 DELETED, 36 unchanged"), "%s", err);
    int lines = 0;
    for (char *s = out; (s = strchr(s, '\n')); s++)
        lines++;
    cr_expect_eq(lines, 6, "the corrections on stdout: %s", out);
    free(out);
    free(err);
    ev = consume(m->bs, "crwatch.public.t", true, 43, 3000);
    cr_expect_eq(ev.n, 43, "--dry-run sent nothing to the topic");
    kmsgs_free(&ev);

    /* Sent: the topic then holds the tables' state, and a second resync finds nothing. */
    cr_assert_eq(run_resync_kafka(db, m->bs, false, &out, &err), 0, "%s", err);
    free(out);
    free(err);
    ev = consume(m->bs, "crwatch.public.t", true, 49, EV_TIMEOUT);
    cr_expect_eq(ev.n, 49);
    kmsgs_free(&ev);
    cr_assert_eq(run_resync_kafka(db, m->bs, true, &out, &err), 0, "%s", err);
    cr_expect(strstr(err, "0 ADDED, 0 MODIFIED, 0 DELETED, 40 unchanged"), "%s", err);
    free(out);
    free(err);
    mock_stop(m);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* ---- an idle stream is sent at once (src/sink/kafka.c, kafka_idle) ------------------ */

/* A consumer of every partition of topic from its beginning, kept open while the test writes. */
typedef struct {
    rd_kafka_t *rk;
    int n; /* messages read so far */
} reader_t;

static reader_t reader_open(const char *bs, const char *topic, bool read_committed) {
    kmsgs_t first = consume(bs, topic, read_committed, 1, EV_TIMEOUT); /* the topic exists: its partitions */
    cr_assert_geq(first.n, 1, "nothing in %s", topic);
    kmsgs_free(&first);
    char err[512], group[64];
    snprintf(group, sizeof group, "it-reader-%d", (int)getpid());
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    const char *props[][2] = {{"bootstrap.servers", bs},
                              {"group.id", group},
                              {"enable.auto.commit", "false"},
                              {"fetch.wait.max.ms", "10"},
                              {"isolation.level", read_committed ? "read_committed" : "read_uncommitted"},
                              {"log_level", "3"}};
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
        cr_assert(rd_kafka_conf_set(c, props[i][0], props[i][1], err, sizeof err) == RD_KAFKA_CONF_OK, "%s", err);
    reader_t r = {rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err), 0};
    cr_assert(r.rk, "consumer: %s", err);
    const rd_kafka_metadata_t *md;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(r.rk, topic, NULL);
    cr_assert_eq(rd_kafka_metadata(r.rk, 0, rkt, &md, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
    int parts = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(r.rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    return r;
}

/* Reads until want messages in all, or timeout_ms; @returns the milliseconds it took, -1 on timeout. */
static int64_t reader_wait(reader_t *r, int want, int timeout_ms) {
    int64_t t0 = it_wall_ms();
    while (r->n < want) {
        if (it_wall_ms() - t0 > timeout_ms)
            return -1;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, 5);
        if (m && !m->err)
            r->n++;
        if (m)
            rd_kafka_message_destroy(m);
    }
    return it_wall_ms() - t0;
}

static void reader_close(reader_t *r) {
    rd_kafka_consumer_close(r->rk);
    rd_kafka_destroy(r->rk);
}

/* The "delivered to ... X ms after produce()" figures of crwatch's debug log, in order. */
static int delivery_ms(it_proc_t *p, double *out, int max) {
    char *log = it_proc_stderr(p);
    int n = 0;
    const char *needle = " ms after produce()";
    for (char *at = strstr(log, needle); at && n < max; at = strstr(at + 1, needle)) {
        char *num = at;
        while (num > log && (num[-1] == '.' || (num[-1] >= '0' && num[-1] <= '9')))
            num--;
        out[n++] = atof(num);
    }
    free(log);
    return n;
}

/*
 * At-least-once, default settings: a change the stream goes idle after is
 * flushed at once rather than after librdkafka's 5 ms linger.  Timing on a
 * loaded machine is loose, so the test asks only that one of 20 lone changes
 * is delivered within 2.5 ms of produce(), which the linger would never
 * allow.  With kafka.linger.ms set, that wait is the user's: every change
 * waits it out.
 */
Test(kafka, idle_stream_is_flushed_at_once_unless_the_user_set_linger) {
    enum { LONE = 20 };
    char db[64];
    PGconn *c = it_db_create("kidle", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    mock_t *m = mock_start();
    const char *const debug[] = {"log.level=debug", NULL};
    it_proc_t *p = start_kafka(db, m->bs, debug);
    it_exec(c, "INSERT INTO t VALUES (0)");
    reader_t r = reader_open(m->bs, "crwatch.public.t", false);
    for (int i = 1; i <= LONE; i++) {
        it_exec(c, "INSERT INTO t VALUES (%d)", i);
        cr_assert_geq(reader_wait(&r, i + 1, EV_TIMEOUT), 0, "change %d did not arrive", i);
        it_sleep_ms(20); /* alone in the producer's queue: the next one comes well after */
    }
    double ms[LONE + 8];
    int n = delivery_ms(p, ms, LONE + 8), fast = 0;
    char seen[1024] = "";
    for (int i = 0; i < n; i++) {
        fast += ms[i] < 2.5;
        snprintf(seen + strlen(seen), sizeof seen - strlen(seen), " %.2f", ms[i]);
    }
    cr_assert_geq(n, LONE, "delivery lines: %d", n);
    cr_expect_geq(fast, 1, "no change was flushed when the stream went idle (ms after produce():%s)", seen);
    reader_close(&r);
    stop_clean(p);

    /* kafka.linger.ms=1000: the user's linger holds a lone change that long. */
    const char *const linger[] = {"log.level=debug", "kafka.linger.ms=1000", NULL};
    p = start_kafka(db, m->bs, linger);
    r = reader_open(m->bs, "crwatch.public.t", false);
    reader_wait(&r, LONE + 1, EV_TIMEOUT); /* what is there already */
    reader_wait(&r, INT_MAX, 300);         /* and a change at-least-once may have sent twice */
    int there = r.n;
    it_exec(c, "INSERT INTO t VALUES (%d)", LONE + 1);
    int64_t took = reader_wait(&r, there + 1, EV_TIMEOUT);
    cr_assert_geq(took, 0, "the change did not arrive");
    cr_expect_geq(took, 900, "the change arrived %lld ms after its insert, before kafka.linger.ms=1000",
                  (long long)took);
    cr_assert(it_proc_stderr_wait(p, " ms after produce()", EV_TIMEOUT), "no delivery line");
    n = delivery_ms(p, ms, 4);
    cr_assert_eq(n, 1, "one delivery line, got %d", n);
    cr_expect_geq(ms[0], 990.0, "delivered %.2f ms after produce(), before kafka.linger.ms=1000", ms[0]);
    reader_close(&r);
    stop_clean(p);
    mock_stop(m);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/*
 * Exactly-once: an idle stream commits its Kafka transaction at once, not
 * when transaction.interval.ms is up.  The bound is loose (a loaded machine,
 * the mock's relay): a lone change must reach a read_committed consumer in
 * well under the 5 s interval.
 */
Test(kafka, exactly_once_idle_stream_commits_before_the_interval) {
    char db[64];
    PGconn *c = it_db_create("keosidle", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    mock_t *m = mock_start();
    const char *const eos[] = {"delivery=exactly-once", "transaction.interval.ms=5000", NULL};
    it_proc_t *p = start_kafka(db, m->bs, eos);
    it_exec(c, "INSERT INTO t VALUES (0)");
    reader_t r = reader_open(m->bs, "crwatch.public.t", true);
    for (int i = 1; i <= 3; i++) {
        it_exec(c, "INSERT INTO t VALUES (%d)", i);
        int64_t took = reader_wait(&r, i + 1, EV_TIMEOUT);
        cr_assert_geq(took, 0, "change %d did not arrive", i);
        cr_expect_lt(took, 1500, "change %d took %lld ms: committed on the 5 s interval, not when idle", i,
                     (long long)took);
        it_sleep_ms(50);
    }
    reader_close(&r);
    stop_clean(p);
    mock_stop(m);
    PQfinish(c);
    it_db_drop(NULL, db);
}
